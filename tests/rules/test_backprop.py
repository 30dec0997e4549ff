"""Backprop: equals the gradient from finite differences, trains an MLP, is registered."""
import numpy as np
import pytest

import nograd
from nograd.core import Sequential
from nograd.core.losses import softmax_cross_entropy
from nograd.core.optim import SGD, Adam
from nograd.data import spirals
from nograd.layers import Dropout, Linear, ReLU, Tanh
from nograd.rules import Backprop, available_rules, get_rule


def mlp(seed, dtype=np.float32, hidden=32):
    rng = np.random.default_rng(seed)
    return Sequential(Linear(2, hidden, rng=rng, dtype=dtype), ReLU(),
                      Linear(hidden, hidden, rng=rng, dtype=dtype), ReLU(),
                      Linear(hidden, 3, rng=rng, dtype=dtype))


def test_registered_by_name():
    assert "backprop" in available_rules()
    assert isinstance(get_rule("backprop"), Backprop)
    with pytest.raises(ValueError, match="unknown rule 'nope'"):
        get_rule("nope")


def test_backprop_grads_equal_finite_differences_of_the_loss():
    net = Sequential(Linear(2, 5, rng=0, dtype=np.float64), Tanh(), Linear(5, 3, rng=1, dtype=np.float64))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 2)), rng.integers(0, 3, 7)
    grads, info = Backprop().grads(net, x, y)
    assert np.isclose(info["loss"], softmax_cross_entropy(net(x), y)[0])
    h = 1e-6
    for k, p in net.params.items():
        u = rng.normal(size=p.shape)
        plus = softmax_cross_entropy(net(x, params={k: p + h * u}), y)[0]
        minus = softmax_cross_entropy(net(x, params={k: p - h * u}), y)[0]
        assert np.isclose((plus - minus) / (2 * h), np.sum(grads[k] * u), rtol=1e-6, atol=1e-9), k


@pytest.mark.parametrize("loss", ["cross-entropy", "focal", "mse"])
def test_any_loss_works(loss):
    net = mlp(0, np.float64, hidden=8)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 2)), rng.integers(0, 3, 6)
    target = np.eye(3)[y] if loss == "mse" else y
    grads, info = Backprop(loss).grads(net, x, target)
    assert set(grads) == set(net.params) and np.isfinite(info["loss"])


def test_backprop_trains_an_mlp_on_spirals():
    X, y = spirals(150, 3, noise=0.15, rng=0)
    Xt, yt = spirals(100, 3, noise=0.15, rng=1)
    net = mlp(0, hidden=64)
    opt = Adam(net.params, lr=0.01)
    rule = Backprop()
    rng = np.random.default_rng(0)
    first = None
    for epoch in range(150):
        order = rng.permutation(len(y))
        for i in range(0, len(y), 64):
            idx = order[i:i + 64]
            grads, info = rule.grads(net, X[idx], y[idx], rng=rng)
            opt.step(grads)
            first = info["loss"] if first is None else first
    acc = np.mean(net(Xt).argmax(1) == yt)
    assert info["loss"] < 0.2 * first
    assert acc >= 0.95, acc


def test_dropout_model_is_deterministic_under_a_seed():
    def run():
        net = Sequential(Linear(2, 16, rng=0), ReLU(), Dropout(0.5), Linear(16, 3, rng=1))
        opt = SGD(net.params, lr=0.1, momentum=0.9)
        X, y = spirals(20, 3, rng=0)
        rng = np.random.default_rng(3)
        for _ in range(5):
            opt.step(Backprop().grads(net, X, y, rng=rng)[0])
        return nograd.flatten_params(net.params)
    np.testing.assert_array_equal(run(), run())


def test_bad_labels_name_the_argument():
    net = mlp(0)
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="target"):
        Backprop().grads(net, x, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="target"):
        Backprop().grads(net, x, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="x contains NaN"):
        Backprop().grads(net, np.full((4, 2), np.nan, np.float32), np.array([0, 1, 2, 0]))
