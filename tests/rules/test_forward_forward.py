"""Forward-Forward: local losses fall, goodness separates positive from negative data, both
prediction modes beat chance, the hand-written derivatives match finite differences, seeds."""
import numpy as np
import pytest

import nograd
from nograd.core import Sequential
from nograd.core.optim import Adam
from nograd.data import blobs, load_digits
from nograd.layers import Conv2d, Flatten, LayerNorm, Linear, ReLU, Tanh
from nograd.rules import Backprop, ForwardForward, available_rules, get_rule
from nograd.train import evaluate, fit, predictor

K, D = 4, 10                       # the synthetic task: 4 Gaussian blobs in 10-D


@pytest.fixture(scope="module")
def task():
    X, y = blobs(800, K, D, spread=2.5, rng=0)
    X = X / np.abs(X).max()
    return X[:600], y[:600], X[600:], y[600:]


def net(seed=0, d_in=D + K, hidden=(48, 48), dtype=np.float32, act=ReLU):
    rng = np.random.default_rng(seed)
    layers, width = [], d_in
    for h in hidden:
        layers += [Linear(width, h, rng=rng, dtype=dtype), act()]
        width = h
    return Sequential(*layers, Linear(width, K, rng=rng, dtype=dtype))


def train(rule, model, X, y, epochs, lr=3e-3, seed=1):
    opt = Adam(model.params, lr=lr)
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(epochs):
        order = rng.permutation(len(X))
        losses = []
        for i in range(0, len(X), 32):
            idx = order[i:i + 32]
            grads, info = rule.grads(model, X[idx], y[idx], rng=rng)
            opt.step(grads)
            losses.append(info["layer_losses"])
        history.append(np.mean(losses, axis=0))
    return np.array(history)


@pytest.fixture(scope="module")
def trained(task):
    X, y, Xt, yt = task
    model, rule = net(), ForwardForward(seed=0)
    losses = train(rule, model, X, y, epochs=15)
    return model, rule, losses


def test_registered_with_defaults_within_three_times_backprop():
    assert "ff" in available_rules() and isinstance(get_rule("ff"), ForwardForward)
    hp, bp = ForwardForward.hyperparameters(), Backprop.hyperparameters()
    assert hp["epochs"] <= 3 * bp["epochs"]


def test_loss_falls_in_every_layer(trained):
    _, _, losses = trained
    first, last = losses[0], losses[-1]
    assert losses.shape[1] == 2
    assert np.all(last < 0.5 * first), (first, last)


def test_goodness_separates_positive_from_negative_data(trained, task):
    model, rule, _ = trained
    _, _, Xt, yt = task
    wrong = (yt + 1 + np.arange(len(yt)) % (K - 1)) % K
    pos = rule.layer_goodness(model, Xt, yt)
    neg = rule.layer_goodness(model, Xt, wrong)
    for layer, (gp, gn) in enumerate(zip(pos, neg)):
        theta = rule.threshold(48)
        assert gp.mean() > theta > gn.mean(), layer
        assert np.mean(gp > gn) > 0.9, layer


def test_both_prediction_modes_beat_chance_by_a_wide_margin(trained, task):
    model, rule, _ = trained
    _, _, Xt, yt = task
    for mode in ("goodness", "softmax"):
        acc = np.mean(rule.predict(model, Xt, mode=mode).argmax(1) == yt)
        assert acc >= 1 / K + 0.6, (mode, acc)           # chance is 0.25


def test_label_written_over_input_features_on_digits():
    X, y, Xt, yt = load_digits(seed=0)
    model = nograd.get_model("mlp", (64,), 10, rng=0, hidden=(128, 128))
    rule = ForwardForward(seed=0)
    fit(model, rule, Adam(model.params, lr=3e-3), (X, y), epochs=6, batch_size=64, rng=1,
        progress=False)
    # the 10 least-varying pixels of the first batch: the left and right borders of the 8x8 digits
    assert len(rule.label_positions_) == 10
    assert set(np.asarray(rule.label_positions_) % 8) <= {0, 7}
    for mode in ("goodness", "softmax"):
        assert np.mean(rule.predict(model, Xt, mode=mode).argmax(1) == yt) > 0.8   # chance 0.1


@pytest.mark.parametrize("goodness", ["sumsq", "neg-sumsq", "l2"])
def test_layer_gradients_equal_finite_differences_of_the_local_losses(goodness):
    rng = np.random.default_rng(3)
    model = net(seed=2, hidden=(7, 5), dtype=np.float64, act=Tanh)
    x, y = rng.normal(size=(9, D)), rng.integers(0, K, 9)
    rule = ForwardForward(goodness=goodness, peer_normalization=0.3, theta=0.5, seed=0)
    probe = ForwardForward(goodness=goodness, peer_normalization=0.3, theta=0.5, seed=0)
    grads, info = rule.grads(model, x, y, rng=np.random.default_rng(0))
    wrong = rule._wrong_labels(y, info["output"], K, np.random.default_rng(0))   # same draw

    def local_loss(layer):
        gp = probe.layer_goodness(model, x, y)[layer]
        gn = probe.layer_goodness(model, x, wrong)[layer]
        mu = probe.hidden_states(model, x, y)[layer].mean(axis=0)
        peer = 0.3 * np.mean((mu.mean() - mu) ** 2)
        return (np.logaddexp(0, 0.5 - gp).mean() + np.logaddexp(0, gn - 0.5).mean() + peer)

    for layer, prefix in enumerate(["0.", "2."]):
        for name in ("weight", "bias"):
            p = model.params[prefix + name]
            u = rng.normal(size=p.shape)
            keep = p.copy()
            p[...] = keep + 1e-6 * u
            plus = local_loss(layer)
            p[...] = keep - 1e-6 * u
            minus = local_loss(layer)
            p[...] = keep
            fd = (plus - minus) / 2e-6
            assert np.isclose(fd, np.sum(grads[prefix + name] * u), rtol=1e-6, atol=1e-9), \
                (goodness, prefix + name)
    # the head: the softmax cross-entropy gradient on the neutral pass
    assert np.isclose(info["head_loss"], nograd.get_loss("cross-entropy")(info["output"], y)[0])


def test_hard_negatives_are_wrong_and_follow_the_head():
    rule = ForwardForward(negatives="hard")
    y = np.zeros(4000, dtype=np.int64)
    logits = np.tile(np.log([1.0, 6.0, 2.0, 1.0]), (4000, 1))
    neg = rule._wrong_labels(y, logits, 4, np.random.default_rng(0))
    assert not np.any(neg == y)
    share = np.bincount(neg, minlength=4) / len(neg)
    assert np.allclose(share[1:], [6 / 9, 2 / 9, 1 / 9], atol=0.03)


def test_hard_negatives_train(task):
    X, y, Xt, yt = task
    model, rule = net(seed=4), ForwardForward(negatives="hard", seed=0)
    losses = train(rule, model, X, y, epochs=8)
    assert np.all(losses[-1] < losses[0])
    assert np.mean(rule.predict(model, Xt).argmax(1) == yt) > 0.8


def test_greedy_schedule_trains_one_layer_at_a_time(task):
    X, y, _, _ = task
    model = net(seed=5)
    rule = ForwardForward(schedule="greedy", steps_per_layer=3)
    seen = []
    for step in range(8):
        grads, info = rule.grads(model, X[:32], y[:32], rng=step)
        seen.append((info["active_layers"], sorted(grads)))
    head = ["4.bias", "4.weight"]
    assert seen[0] == ([0], sorted(["0.weight", "0.bias"] + head))
    assert seen[3] == ([1], sorted(["2.weight", "2.bias"] + head))
    assert seen[7][0] == [1]                       # the last layer keeps learning


def test_fit_evaluates_through_the_rules_predict(task):
    X, y, Xt, yt = task
    model, rule = net(seed=6), ForwardForward(seed=0)
    hist = fit(model, rule, Adam(model.params, lr=3e-3), (X, y), val=(Xt, yt), epochs=2,
               batch_size=32, rng=0, progress=False)
    expect = np.mean(rule.predict(model, Xt).argmax(1) == yt)
    assert hist["val_accuracy"][-1] == pytest.approx(expect)
    ev = evaluate(model, Xt, yt, predict=predictor(model, rule))
    assert ev["accuracy"] == pytest.approx(expect)
    with pytest.raises(ValueError, match="last axis"):
        evaluate(model, Xt, yt)        # a plain forward pass has no slot for the label


def test_same_seed_same_run_and_other_seed_other_run(task):
    X, y, _, _ = task

    def run(seed):
        model, rule = net(seed=7), ForwardForward(negatives="hard", seed=0)
        fit(model, rule, Adam(model.params, lr=3e-3), (X[:200], y[:200]), epochs=2, batch_size=32,
            rng=seed, progress=False)
        return model.params

    a, b, c = run(0), run(0), run(1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_models_it_cannot_train_fail_at_once():
    rule = ForwardForward()
    with pytest.raises(ValueError, match="ends with ReLU"):
        rule.check_model(Sequential(Linear(14, 8), ReLU(), Linear(8, 4), ReLU()))
    with pytest.raises(ValueError, match="at least one hidden"):
        rule.check_model(Sequential(Linear(14, 4)))
    with pytest.raises(ValueError, match="cannot train LayerNorm"):
        rule.check_model(Sequential(Linear(14, 8), LayerNorm(8), ReLU(), Linear(8, 4)))
    with pytest.raises(ValueError, match="cannot train Conv2d"):
        rule.check_model(Sequential(Conv2d(1, 2, 3), Flatten(), Linear(8, 4)))
    x, y = np.zeros((3, 5), np.float32), np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="x has 5 features"):
        rule.grads(net(), x, y)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        rule.grads(net(), np.zeros((3, D), np.float32), np.array([0, 1, 4]))


@pytest.mark.parametrize("kwargs, match", [
    ({"goodness": "max"}, "goodness must be one of"),
    ({"schedule": "greedy"}, "needs steps_per_layer"),
    ({"steps_per_layer": 5}, "for schedule='greedy' only"),
    ({"peer_momentum": 1.0}, "peer_momentum must be < 1"),
    ({"label_positions": [1, 1, 2]}, "distinct integer indices"),
    ({"norm": "max"}, "norm must be one of"),
])
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ForwardForward(**kwargs)
