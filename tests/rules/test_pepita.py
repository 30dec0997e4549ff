"""PEPITA and AFA: the update formulas against a hand-written reference, the shared dropout mask,
PEPITA → AFA as ‖Fe‖ → 0, AFA as feedback alignment with -W₁F, weight mirroring."""
import numpy as np
import pytest

from nograd.core import Sequential
from nograd.layers import BatchNorm1d, Conv2d, Dropout, Flatten, Linear, ReLU, Tanh
from nograd.metrics import angle
from nograd.rules import AFA, FA, PEPITA


def net3(dtype=np.float64, act=ReLU, seed=0, sizes=(6, 8, 5, 3), dropout=0.0):
    rng = np.random.default_rng(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(a, b, rng=rng, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(act())
            if dropout:
                layers.append(Dropout(dropout))
    return Sequential(*layers)


def data(n=12, d=6, c=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, c, n)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def test_pepita_updates_match_the_algorithm_written_out():
    """Dellaferrera & Kreiman 2022, Algorithm 1, written directly in NumPy."""
    net = net3()
    x, y = data()
    rule = PEPITA(seed=3)
    g, info = rule.grads(net, x, y, rng=0)
    W1, b1, W2, b2, W3, b3 = (net.params[k] for k in ("0.weight", "0.bias", "2.weight", "2.bias",
                                                        "4.weight", "4.bias"))
    relu = lambda a: np.maximum(a, 0)                                  # noqa: E731

    def passes(inp):
        h1 = relu(inp @ W1.T + b1)
        h2 = relu(h1 @ W2.T + b2)
        return h1, h2, h2 @ W3.T + b3

    onehot = np.eye(3)[y]
    h1, h2, z = passes(x)
    e = softmax(z) - onehot
    F = rule.F
    assert F.shape == (6, 3) and np.abs(F).max() <= 0.05 * np.sqrt(6 / 6)
    x_mod = x + e @ F.T
    m1, m2, z_mod = passes(x_mod)
    e_mod = softmax(z_mod) - onehot
    n = len(x)
    want = {"0.weight": (h1 - m1).T @ x_mod / n, "0.bias": (h1 - m1).mean(0),
            "2.weight": (h2 - m2).T @ m1 / n, "2.bias": (h2 - m2).mean(0),
            "4.weight": e_mod.T @ m2 / n, "4.bias": e_mod.mean(0)}
    for k, v in want.items():
        np.testing.assert_allclose(g[k], v, rtol=1e-10, atol=1e-14, err_msg=k)
    np.testing.assert_allclose(info["output"], z)


def test_pepita_uses_the_same_dropout_mask_in_both_passes():
    """With F = 0 the two passes are identical only if the masks agree: hidden updates vanish."""
    net = net3(dropout=0.5)
    x, y = data()
    g, _ = PEPITA(f_scale=0.0).grads(net, x, y, rng=np.random.default_rng(0))
    keys = list(net.params)                  # 0.weight, 0.bias, 3.weight, 3.bias, 6.weight, 6.bias
    for k in keys[:4]:
        assert np.abs(g[k]).max() == 0, k
    assert np.abs(g[keys[4]]).max() > 0
    g, _ = PEPITA(f_scale=1.0).grads(net, x, y, rng=np.random.default_rng(0))
    assert np.abs(g[keys[0]]).max() > 0


def test_pepita_first_layer_approaches_afa_as_the_modulation_vanishes():
    net = net3(act=Tanh, dropout=0.2)
    x, y = data()
    errs = []
    for eps in (1e-1, 1e-2, 1e-3, 1e-4):
        gp, _ = PEPITA(seed=5, f_scale=eps).grads(net, x, y, rng=np.random.default_rng(2))
        ga, _ = AFA(seed=5, f_scale=eps).grads(net, x, y, rng=np.random.default_rng(2))
        d = {k: np.linalg.norm(gp[k] - ga[k]) / np.linalg.norm(ga[k]) for k in ("0.weight", "3.weight")}
        errs.append(d)
    for k in ("0.weight", "3.weight"):
        rel = [d[k] for d in errs]
        assert all(b < a / 5 for a, b in zip(rel, rel[1:])), (k, rel)     # first order in ‖Fe‖
        assert rel[-1] < 1e-3, (k, rel)
    # at the paper's scale the two still point the same way
    gp, _ = PEPITA(seed=5).grads(net, x, y, rng=np.random.default_rng(2))
    ga, _ = AFA(seed=5).grads(net, x, y, rng=np.random.default_rng(2))
    assert angle(gp["0.weight"], ga["0.weight"]) < 10


def test_afa_is_feedback_alignment_with_the_adaptive_matrix():
    """One hidden layer: AFA's first layer is FA with B = -W₁F (B enters as dx = dy B, so the FA
    matrix of the output weight is (-W₁F)ᵀ); its output layer is backprop's."""
    net = net3(sizes=(6, 9, 3))
    x, y = data()
    afa = AFA(seed=1)
    g_afa, _ = afa.grads(net, x, y, rng=0)
    B = afa.effective_first_feedback(net)
    np.testing.assert_allclose(B, -net.params["0.weight"] @ afa.F)
    g_fa, _ = FA(feedback={"0.weight": net.params["0.weight"].copy(),
                           "2.weight": B.T.copy()}).grads(net, x, y, rng=0)
    for k in g_fa:
        np.testing.assert_allclose(g_afa[k], g_fa[k], rtol=1e-10, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("cls", [PEPITA, AFA])
def test_weight_mirroring_turns_the_feedback_towards_backprop(cls):
    """With the forward weights held fixed, mirroring drives F towards -W₁ᵀW₂ᵀ, so -W₁F points
    along W₁W₁ᵀW₂ᵀ — as close to backprop's W₂ᵀ as W₁W₁ᵀ is to a multiple of I (the ideal
    below); without mirroring the angle stays near 90°."""
    rng = np.random.default_rng(0)
    net = Sequential(Linear(60, 20, rng=rng, dtype=np.float64), ReLU(),
                     Linear(20, 5, rng=rng, dtype=np.float64))
    W1, W2 = net.params["0.weight"], net.params["2.weight"]
    ideal = angle(W1 @ W1.T @ W2.T, W2.T)
    x, y = rng.normal(size=(16, 60)), rng.integers(0, 5, 16)
    angles = {}
    for mirror in (False, True):
        rule = cls(seed=0, mirror=mirror)
        for step in range(150):
            rule.grads(net, x, y, rng=step)
        angles[mirror] = angle(rule.effective_first_feedback(net), W2.T)
        assert np.isclose(np.linalg.norm(rule.F), rule._f_norm)     # only the direction learns
    assert angles[False] > 75 and angles[True] < min(ideal + 8, 40), (angles, ideal)


def test_pepita_on_a_conv_net_and_errors():
    rng = np.random.default_rng(0)
    cnn = Sequential(Conv2d(1, 3, 3, rng=rng), ReLU(), Flatten(), Linear(3 * 6 * 6, 4, rng=rng))
    x = rng.random((5, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 5)
    rule = PEPITA()
    g, _ = rule.grads(cnn, x, y, rng=0)
    assert rule.F.shape == (64, 4) and g["0.weight"].shape == (3, 1, 3, 3)
    with pytest.raises(ValueError, match="mirror=True"):
        PEPITA(mirror=True).check_model(cnn)
    with pytest.raises(ValueError, match="BatchNorm1d"):
        PEPITA().check_model(Sequential(Linear(4, 4, rng=rng), BatchNorm1d(4), Linear(4, 2, rng=rng)))
    with pytest.raises(ValueError, match="new rule per model"):
        rule.grads(Sequential(Flatten(), Linear(64, 3, rng=rng)), x, rng.integers(0, 3, 5), rng=0)
    for bad in (dict(f_scale=-1), dict(mirror_lr=float("nan"))):
        with pytest.raises(ValueError):
            PEPITA(**bad)
    with pytest.raises(TypeError, match="mirror"):
        AFA(mirror="yes")
