"""FOTON: equal to backprop's gradient in a linear orthogonal network (and not otherwise), Björck
orthonormalisation, orthogonality kept through training, it learns, seeds, refused models."""
import numpy as np
import pytest

from nograd.core import Sequential
from nograd.core.optim import Adam
from nograd.data import blobs
from nograd.layers import Conv2d, Dropout, Flatten, LayerNorm, Linear, ReLU, Sigmoid, Tanh
from nograd.rules import FOTON, Backprop, available_rules, get_rule
from nograd.rules.foton import bjorck_orthonormalise, polar_factor
from nograd.train import fit


def linear_net(dims, *, bias=False, seed=0, orthogonal=True):
    rng = np.random.default_rng(seed)
    net = Sequential(*[Linear(a, b, bias=bias, rng=rng, dtype=np.float64)
                       for a, b in zip(dims[:-1], dims[1:])])
    for k, p in net.params.items():
        if k.endswith("weight") and orthogonal:
            p[...] = polar_factor(p)
        elif k.endswith("bias"):
            p[...] = rng.normal(size=p.shape)
    return net


def relative_gap(a, b):
    return max(float(np.abs(a[k] - b[k]).max() / np.abs(b[k]).max()) for k in b)


def test_registered():
    assert "foton" in available_rules() and isinstance(get_rule("foton"), FOTON)


@pytest.mark.parametrize("dims, bias", [((6, 6, 6, 6), False),      # square, the paper's case
                                        ((9, 7, 5, 3), False),      # narrowing: W Wᵀ = I
                                        ((9, 7, 5, 3), True),       # biases cancel in h − h_mod
                                        ((5, 5, 5), True)])
@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
def test_equals_backprop_in_a_linear_orthogonal_network(dims, bias, loss):
    rng = np.random.default_rng(1)
    net = linear_net(dims, bias=bias, seed=2)
    x = rng.normal(size=(11, dims[0]))
    y = rng.integers(0, dims[-1], 11)
    target = np.eye(dims[-1])[y] if loss == "mse" else y
    foton, _ = FOTON(loss, temperature=1.0).grads(net, x, target)
    bp, _ = Backprop(loss).grads(net, x, target)
    assert list(foton) == list(bp)
    assert relative_gap(foton, bp) < 1e-12


def test_differs_from_backprop_without_the_assumptions():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(11, 6)), rng.integers(0, 3, 11)
    tanh_net = Sequential(Linear(6, 6, bias=False, dtype=np.float64), Tanh(),
                          Linear(6, 3, bias=False, dtype=np.float64))
    for p in tanh_net.params.values():
        p[...] = polar_factor(p)
    for net in (linear_net((6, 6, 6, 3), orthogonal=False),          # weights not orthogonal
                linear_net((6, 9, 9, 3)),                            # a widening layer
                tanh_net):                                           # a nonlinearity
        foton, _ = FOTON(temperature=1.0).grads(net, x, y)
        bp, _ = Backprop().grads(net, x, y)
        assert relative_gap(foton, bp) > 1e-3


def reference_foton(weights, biases, act, x, labels, temperature):
    r"""FOTON's update for a nonlinear network, written out from the paper and the authors' code
    (Caillon et al. 2025, arXiv:2512.20668, the FOTON rule for nonlinear networks; the authors'
    release github.com/p0lcAi/FOTON, ``model_utils/foton.py``, ``FOTON.modulated_forward``: hidden
    layers from the hooked outputs of ``Linear → activation``, the last from ``e``, and
    ``e = softmax(ce_T · y) − target`` not multiplied by ``ce_T``), rows as samples:

    - clean pass :math:`h_0 = x`, :math:`h_l = f(h_{l-1} W_l^\top + b_l)` (l < L),
      :math:`z = h_{L-1} W_L^\top + b_L`;
    - error :math:`e = \operatorname{softmax}(T z) - Y` (the authors' ``ce_T``);
    - modulated pass from :math:`x - e F`, :math:`F = W_L \cdots W_1`, giving :math:`h_l^{\rm mod}`
      — the *activities*, after the nonlinearity, which is where f′ enters:
      :math:`f(a) - f(a^{\rm mod}) ≈ f'(a) \odot (a - a^{\rm mod})`;
    - :math:`ΔW_l = (h_l - h_l^{\rm mod})^\top h_{l-1} / N` (l < L), :math:`ΔW_L = e^\top h_{L-1} / N`;
      biases (nograd's documented extension) the batch means of the same signals.
    """
    n = len(x)
    hs, h = [x], x
    for w, b in zip(weights[:-1], biases[:-1]):
        h = act(h @ w.T + b)
        hs.append(h)
    z = hs[-1] @ weights[-1].T + biases[-1]
    tz = temperature * z
    p = np.exp(tz - tz.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    e = p - np.eye(z.shape[1])[labels]
    f = weights[0]
    for w in weights[1:]:
        f = w @ f
    h = x - e @ f
    grads = {}
    for i, (w, b) in enumerate(zip(weights[:-1], biases[:-1])):
        h = act(h @ w.T + b)
        d = hs[i + 1] - h
        grads[f"{2 * i}.weight"], grads[f"{2 * i}.bias"] = d.T @ hs[i] / n, d.mean(axis=0)
    last = 2 * (len(weights) - 1)
    grads[f"{last}.weight"], grads[f"{last}.bias"] = e.T @ hs[-1] / n, e.mean(axis=0)
    return grads


@pytest.mark.parametrize("act_cls, act", [(Tanh, np.tanh), (Sigmoid, lambda a: 1 / (1 + np.exp(-a)))])
@pytest.mark.parametrize("temperature", [3.0, 10.0])
def test_equals_the_written_out_rule_in_a_nonlinear_network(act_cls, act, temperature):
    """Exact reference for a 3-hidden-layer tanh/sigmoid net with biases at T ≠ 1: the hidden
    updates use the differences of the *activities* (after f), so dropping f′ (pre-activation
    differences) or applying the temperature to the error changes them and fails here."""
    rng = np.random.default_rng(7)
    dims = (8, 8, 6, 6, 4)
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [Linear(a, b, rng=rng, dtype=np.float64), act_cls()]
    net = Sequential(*layers[:-1])
    for k, p in net.params.items():
        p[...] = polar_factor(p) if k.endswith("weight") else 0.5 * rng.normal(size=p.shape)
    x = 2.0 * rng.normal(size=(13, dims[0]))               # large enough to leave f's linear range
    y = rng.integers(0, dims[-1], 13)
    weights = [net.params[f"{2 * i}.weight"] for i in range(len(dims) - 1)]
    biases = [net.params[f"{2 * i}.bias"] for i in range(len(dims) - 1)]
    got, _ = FOTON(temperature=temperature).grads(net, x, y)
    want = reference_foton(weights, biases, act, x, y, temperature)
    assert sorted(got) == sorted(want)
    assert relative_gap(got, want) < 1e-12


@pytest.mark.parametrize("shape", [(7, 7), (12, 5), (5, 12)])
def test_bjorck_converges_to_the_polar_factor(shape):
    w = np.random.default_rng(0).normal(size=shape)
    q = bjorck_orthonormalise(w, iters=60)
    np.testing.assert_allclose(q, polar_factor(w), atol=1e-10)
    gram = q.T @ q if shape[0] >= shape[1] else q @ q.T
    np.testing.assert_allclose(gram, np.eye(min(shape)), atol=1e-12)
    # near-orthogonal input (the case after an optimizer step): a few iterations suffice
    near = polar_factor(w) + 1e-3 * np.random.default_rng(1).normal(size=shape)
    np.testing.assert_allclose(bjorck_orthonormalise(near, iters=4), polar_factor(near), atol=1e-10)
    assert bjorck_orthonormalise(w.astype(np.float32)).dtype == np.float32


def test_training_keeps_the_layers_orthogonal_and_learns():
    X, y = blobs(800, 4, 12, spread=2.0, rng=3)
    X = (X / np.abs(X).max()).astype(np.float32)
    rng = np.random.default_rng(0)
    model = Sequential(Linear(12, 12, rng=rng), ReLU(), Linear(12, 12, rng=rng), ReLU(),
                       Linear(12, 4, rng=rng))
    rule = FOTON()
    hist = fit(model, rule, Adam(model.params, lr=3e-3), (X[:600], y[:600]),
               val=(X[600:], y[600:]), epochs=10, batch_size=32, rng=0, progress=False)
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert hist["val_accuracy"][-1] >= 0.9                   # chance 0.25
    for k, w in model.params.items():
        if k.endswith("weight"):
            gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
            np.testing.assert_allclose(gram, np.eye(min(w.shape)), atol=1e-4, err_msg=k)


def test_same_seed_same_run():
    X, y = blobs(200, 3, 6, rng=4)

    def run(seed):
        rng = np.random.default_rng(5)
        model = Sequential(Linear(6, 6, rng=rng), ReLU(), Linear(6, 3, rng=rng))
        fit(model, FOTON(), Adam(model.params, lr=1e-2), (X, y), epochs=2, batch_size=16,
            rng=seed, progress=False)
        return model.params

    a, b, c = run(0), run(0), run(1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_models_it_cannot_train_fail_at_once():
    rule = FOTON()
    with pytest.raises(ValueError, match="ends with Tanh"):
        rule.check_model(Sequential(Linear(4, 4), Tanh()))
    with pytest.raises(ValueError, match="cannot train LayerNorm"):
        rule.check_model(Sequential(Linear(4, 4), LayerNorm(4), Linear(4, 2)))
    with pytest.raises(ValueError, match="cannot train Dropout"):
        rule.check_model(Sequential(Linear(4, 4), Dropout(0.2), Linear(4, 2)))
    with pytest.raises(ValueError, match="cannot train Conv2d"):
        rule.check_model(Sequential(Conv2d(1, 2, 3), Flatten(), Linear(8, 2)))
    for kwargs, match in [({"temperature": 0}, "temperature"), ({"bjorck_every": 0}, "bjorck_every"),
                          ({"bjorck_iters": -1}, "bjorck_iters")]:
        with pytest.raises(ValueError, match=match):
            FOTON(**kwargs)
