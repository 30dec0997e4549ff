"""FA, the sign-symmetry variants, DFA and optical DFA; the alignment metrics. Rules in pepita.py
share the generic tests here (shapes, determinism, learning); their own laws are in test_pepita.py."""
import numpy as np
import pytest

import nograd as ng
from nograd.callbacks import AlignmentLogger, feedback_angles, update_angles
from nograd.core import Residual, Sequential
from nograd.core.optim import Adam
from nograd.data import load_digits
from nograd.layers import (Conv2d, Dropout, Embedding, Flatten, LayerNorm, Linear, MaxPool2d,
                           ReLU, Tanh)
from nograd.metrics import accuracy
from nograd.rules import (AFA, BRSF, DFA, FA, FRSF, PEPITA, USF, Backprop, OpticalDFA,
                          available_rules, get_rule)

RULES = {"fa": FA, "usf": USF, "frsf": FRSF, "brsf": BRSF, "dfa": DFA, "optical-dfa": OpticalDFA,
         "pepita": PEPITA, "afa": AFA}


def mlp(dtype=np.float32, seed=0, hidden=(32, 16), act=ReLU, dropout=0.0):
    rng = np.random.default_rng(seed)
    layers, width = [Flatten()], 64
    for h in hidden:
        layers += [Linear(width, h, rng=rng, dtype=dtype), act()]
        if dropout:
            layers.append(Dropout(dropout))
        width = h
    layers.append(Linear(width, 10, rng=rng, dtype=dtype))
    return Sequential(*layers)


def cnn(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(Conv2d(1, 4, 3, padding=1, rng=rng, dtype=dtype), ReLU(), MaxPool2d(2),
                      Sequential(Conv2d(4, 6, 3, rng=rng, dtype=dtype), Tanh()), Flatten(),
                      Linear(24, 10, rng=rng, dtype=dtype))


def batch(n=16, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8)).astype(dtype), rng.integers(0, 10, n)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_registered_by_name():
    for name, cls in RULES.items():
        assert name in available_rules()
        rule = get_rule(name)
        assert type(rule) is cls and cls.name == name
        hp = cls.hyperparameters()
        assert {"optimizer", "lr", "epochs", "batch_size"} <= set(hp)


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("make", [mlp, cnn], ids=["mlp", "cnn"])
def test_updates_are_shaped_like_the_parameters(name, make):
    net = make() if make is cnn else make(dropout=0.2)
    x, y = batch()
    grads, info = get_rule(name).grads(net, x, y, rng=np.random.default_rng(0))
    assert list(grads) == list(net.params)
    for k, p in net.params.items():
        assert grads[k].shape == p.shape and grads[k].dtype == p.dtype, k
        assert np.isfinite(grads[k]).all(), k
    assert np.isfinite(info["loss"]) and info["output"].shape == (16, 10)
    assert any(np.abs(g).max() > 0 for g in grads.values())


@pytest.mark.parametrize("name", sorted(RULES))
def test_deterministic_under_a_seed(name):
    x, y = batch()
    runs = []
    for seed in (3, 3, 4):
        net = mlp(dropout=0.2)
        g, _ = RULES[name](seed=seed).grads(net, x, y, rng=np.random.default_rng(7))
        g2, _ = RULES[name](seed=seed).grads(net, x, y, rng=np.random.default_rng(7))
        for k in g:
            np.testing.assert_array_equal(g[k], g2[k])
        runs.append(g)
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k])
    if name == "brsf":           # its magnitudes come from the rng of each call, not the seed
        g, _ = BRSF(seed=3).grads(mlp(dropout=0.2), x, y, rng=np.random.default_rng(8))
        g2, _ = BRSF(seed=3).grads(mlp(dropout=0.2), x, y, rng=np.random.default_rng(7))
        assert not np.array_equal(g["1.weight"], g2["1.weight"])
    elif name != "usf":          # uSF's feedback is sign(W): it has no random matrix
        assert any(not np.array_equal(runs[0][k], runs[2][k]) for k in runs[0])


@pytest.mark.parametrize("name", sorted(RULES))
def test_learns_digits(name, digits):
    """Each rule trains a 64-64-10 MLP on the embedded digits above 90% test accuracy in 12
    epochs (backprop reaches ~97%; chance is 10%)."""
    X, y, Xt, yt = digits
    net = mlp(hidden=(64,), seed=1)
    opt = Adam(net.params, lr=3e-3)
    ng.fit(net, RULES[name](seed=0), opt, (X, y), epochs=12, batch_size=32, rng=0, progress=False)
    acc = accuracy(yt, net(Xt))
    assert acc > 0.90, f"{name}: test accuracy {acc:.3f}"


# ----------------------------------------------------------------------------- FA
@pytest.mark.parametrize("make", ["mlp", "cnn", "residual"])
def test_fa_with_b_equal_w_is_backprop_exactly(make):
    if make == "mlp":
        net, (x, y) = mlp(np.float64, dropout=0.3), batch(dtype=np.float64)
    elif make == "cnn":
        net, (x, y) = cnn(np.float64), batch(dtype=np.float64)
    else:
        rng = np.random.default_rng(0)
        net = Sequential(Flatten(), Linear(64, 16, rng=rng, dtype=np.float64),
                         Residual(Sequential(ReLU(), Linear(16, 16, rng=rng, dtype=np.float64))),
                         LayerNorm(16, dtype=np.float64), Linear(16, 10, rng=rng, dtype=np.float64))
        x, y = batch(dtype=np.float64)
    W = {k: v.copy() for k, v in net.params.items() if k.endswith("weight") and v.ndim > 1}
    g_fa, i_fa = FA(feedback=W).grads(net, x, y, rng=np.random.default_rng(5))
    g_bp, i_bp = Backprop().grads(net, x, y, rng=np.random.default_rng(5))
    assert i_fa["loss"] == i_bp["loss"]
    for k in g_bp:
        np.testing.assert_array_equal(g_fa[k], g_bp[k], err_msg=k)


def test_fa_top_layer_exact_lower_layers_not():
    net, (x, y) = mlp(np.float64), batch(dtype=np.float64)
    g_fa, _ = FA(seed=1).grads(net, x, y)
    g_bp, _ = Backprop().grads(net, x, y)
    np.testing.assert_array_equal(g_fa["5.weight"], g_bp["5.weight"])
    np.testing.assert_array_equal(g_fa["5.bias"], g_bp["5.bias"])
    for k in ("1.weight", "3.weight"):
        assert not np.allclose(g_fa[k], g_bp[k]), k


def test_sign_symmetric_feedback_matrices():
    net = mlp(np.float64)
    W = net.params
    B_usf = USF().feedback_matrices(net)
    B_fr = FRSF(seed=2).feedback_matrices(net)
    brsf = BRSF(seed=2)
    B_br1 = brsf.feedback_matrices(net, rng=np.random.default_rng(0))
    B_br2 = brsf.feedback_matrices(net, rng=np.random.default_rng(1))
    B_fa = FA(seed=2).feedback_matrices(net)
    for k, w in W.items():
        if not k.endswith("weight"):
            continue
        np.testing.assert_allclose(B_usf[k], np.sign(w) * np.sqrt(2.0 / w.shape[1]))
        np.testing.assert_array_equal(B_fr[k], np.abs(B_fa[k]) * np.sign(w))   # same |R| as FA
        for B in (B_br1[k], B_br2[k]):
            np.testing.assert_array_equal(np.sign(B), np.sign(w))
        assert not np.array_equal(B_br1[k], B_br2[k])          # redrawn every batch
        a = np.sqrt(6.0 / w.shape[1])
        assert np.abs(B_fa[k]).max() <= a and B_fa[k].shape == w.shape



@pytest.mark.parametrize("make", ["mlp", "cnn"])
def test_usf_is_liaos_sign_feedback_times_a_per_layer_scale(make):
    """Liao, Leibo & Poggio (2016) define uSF as V = sign(W). nograd scales it by
    s = sqrt(2/fan_in) (documented on USF); since the backward pass is linear in the cotangent,
    each layer's update must be exactly prod_{k above} s_k times the update with the paper's
    sign(W) (run here as FA with those matrices given), and the top layer's must be unchanged."""
    if make == "mlp":
        net, (x, y) = mlp(np.float64, hidden=(32, 16, 8)), batch(dtype=np.float64)
    else:
        net, (x, y) = cnn(np.float64), batch(dtype=np.float64)
    W = net.params
    weights = [k for k in W if k.endswith("weight")]               # bottom to top
    paper = {k: np.sign(W[k]) for k in weights}                    # Liao et al.: V = sign(W)
    g_usf, _ = USF().grads(net, x, y)
    g_paper, _ = FA(feedback=paper).grads(net, x, y)
    for i, k in enumerate(weights):
        factor = 1.0
        for above in weights[i + 1:]:
            factor *= np.sqrt(2.0 / np.prod(W[above].shape[1:]))  # fan_in = in (x kh x kw)
        for p in (k, k[:-len("weight")] + "bias"):
            np.testing.assert_allclose(g_usf[p], factor * g_paper[p], rtol=1e-12, err_msg=p)
    assert factor == 1.0                                           # the top layer: exact


# ----------------------------------------------------------------------------- DFA
def test_dfa_one_hidden_layer_with_b_equal_w2t_is_backprop():
    rng = np.random.default_rng(0)
    net = Sequential(Linear(5, 7, rng=rng, dtype=np.float64), Tanh(),
                     Linear(7, 3, rng=rng, dtype=np.float64))
    x, y = rng.normal(size=(9, 5)), rng.integers(0, 3, 9)
    g_dfa, _ = DFA(feedback={"0.weight": net.params["2.weight"].T.copy()}).grads(net, x, y)
    g_bp, _ = Backprop().grads(net, x, y)
    for k in g_bp:
        np.testing.assert_allclose(g_dfa[k], g_bp[k], rtol=1e-13, atol=1e-15, err_msg=k)
    g_rand, _ = DFA(seed=0).grads(net, x, y)           # a random B is not backprop
    assert not np.allclose(g_rand["0.weight"], g_bp["0.weight"])


def test_dfa_conv_projects_to_the_feature_map():
    net = cnn()
    x, y = batch()
    rule = DFA(seed=0)
    rule.grads(net, x, y, rng=0)
    # hidden layers hand on a 4x4x4 pooled map and a 6x2x2 map (flattened: 24)
    assert {k: B.shape for k, B in rule.feedback.items()} == {"0.weight": (64, 10),
                                                              "3.0.weight": (24, 10)}


def test_dfa_learns_from_zero_hidden_weights_where_backprop_cannot(digits):
    """All weights zero, tanh: backprop's hidden signal W_outᵀe is zero, DFA's B e is not."""
    X, y, Xt, yt = digits
    accs = {}
    for name, rule in (("dfa", DFA(seed=0)), ("bp", Backprop())):
        net = mlp(hidden=(64,), act=Tanh)
        for p in net.params.values():
            p[...] = 0
        ng.fit(net, rule, Adam(net.params, lr=3e-3), (X, y), epochs=8, batch_size=32, rng=0,
               progress=False)
        accs[name] = accuracy(yt, net(Xt))
        if name == "bp":
            assert np.abs(net.params["1.weight"]).max() == 0
    assert accs["dfa"] > 0.9 and accs["bp"] < 0.5, accs



class _TopOnly(Backprop):
    """Control: backprop's update for the output Linear only; the conv layers stay at their
    random initial values."""

    def grads(self, model, x, y, *, rng=None):
        g, info = super().grads(model, x, y, rng=rng)
        return {k: (v if k.startswith("7.") else np.zeros_like(v)) for k, v in g.items()}, info


def test_dfa_trains_the_conv_layers_of_a_small_cnn(digits):
    """DFA on a two-conv tanh net (8x8 digits, 8-8 channels, 32 features into the output Linear):
    the projected error must train the conv layers, so DFA has to beat, at every seed, the same
    net whose conv layers stay random and only the output layer learns. Nøkland (2016) trains
    conv nets with DFA to zero training error; the hidden updates must come within 90 degrees of
    the gradient. Measured: DFA 0.898 / 0.904 / 0.862 test accuracy after 10 epochs at seeds
    0 / 1 / 2, the random-feature control 0.760 / 0.764 / 0.771 (backprop ~0.94); the second conv
    layer's update 54-65 degrees from backprop's gradient."""
    X, y, Xt, yt = digits
    X, Xt = X.reshape(-1, 1, 8, 8), Xt.reshape(-1, 1, 8, 8)

    def small_cnn(seed):
        rng = np.random.default_rng(seed)
        return Sequential(Conv2d(1, 8, 3, padding=1, rng=rng), Tanh(), MaxPool2d(2),
                          Conv2d(8, 8, 3, padding=1, rng=rng), Tanh(), MaxPool2d(2), Flatten(),
                          Linear(32, 10, rng=rng))

    gaps, angles = [], []
    for seed in (0, 1, 2):
        accs = {}
        for name, rule in (("dfa", DFA(seed=seed)), ("top", _TopOnly())):
            net = small_cnn(seed)
            ng.fit(net, rule, Adam(net.params, lr=3e-3), (X, y), epochs=10, batch_size=32,
                   rng=seed, progress=False)
            accs[name] = accuracy(yt, net(Xt))
            if name == "dfa":
                angles.append(update_angles(DFA(seed=seed), net, X[:256], y[:256])["3.weight"])
        assert accs["dfa"] > 0.84, (seed, accs)
        gaps.append(accs["dfa"] - accs["top"])
    assert min(gaps) > 0.06 and np.mean(gaps) > 0.08, gaps
    assert np.mean(angles) < 80, angles


# ----------------------------------------------------------------------------- optical DFA
def test_optical_dfa_ideal_device_equals_dfa_to_rounding():
    net, (x, y) = mlp(np.float64, hidden=(32, 16)), batch(dtype=np.float64)
    opt = OpticalDFA(seed=4, quantizer=None, bit_depth=None, noise=0.0)
    g_opt, _ = opt.grads(net, x, y, rng=np.random.default_rng(1))
    B = opt.effective_feedback()
    assert {k: b.shape for k, b in B.items()} == {"1.weight": (32, 10), "3.weight": (16, 10)}
    g_dfa, _ = DFA(feedback=B).grads(net, x, y, rng=np.random.default_rng(1))
    for k in g_dfa:
        np.testing.assert_allclose(g_opt[k], g_dfa[k], rtol=1e-9, atol=1e-13, err_msg=k)
    # the camera breaks the equality
    g_cam, _ = OpticalDFA(seed=4, quantizer=None, bit_depth=4).grads(net, x, y, rng=1)
    assert not np.allclose(g_cam["1.weight"], g_dfa["1.weight"], rtol=1e-3)


def _recovery_error(**kw):
    """Mean and max relative error of the projection recovered from camera frames, against the
    exact linear projection of the same (quantised, centred) code."""
    rule = OpticalDFA(seed=0, **kw)
    sizes = {"a": 256, "b": 256}
    rule._setup(sizes, 10, np.float64)
    e = np.random.default_rng(0).normal(size=(100, 10))
    got = rule._project(e, sizes, np.random.default_rng(1))
    got = np.hstack([got["a"], got["b"]])
    t, s = rule.quantize(e)
    c = t - t.mean(axis=1, keepdims=True)
    B = rule.effective_feedback()
    exact = (c * s[:, None]) @ np.vstack([B["a"], B["b"]]).T
    rel = np.linalg.norm(got - exact, axis=1) / np.linalg.norm(exact, axis=1)
    return rel.mean(), rel.max()


def test_optical_recovery_error_bounds():
    """Documented in docs/notes/performance-notes.md: ~1.7% at 8 bits, ~7% at 6, ~28% at 4; read noise of 1% of full
    scale costs ~16%; an ideal camera is exact."""
    assert _recovery_error(bit_depth=None)[1] < 1e-12
    m8, x8 = _recovery_error(bit_depth=8)
    m6, _ = _recovery_error(bit_depth=6)
    m4, _ = _recovery_error(bit_depth=4)
    mn, _ = _recovery_error(bit_depth=8, noise=0.01)
    assert 1e-3 < m8 < 0.03 and x8 < 0.08
    assert m8 < m6 < 0.12 and m6 < m4 < 0.5
    assert m8 < mn < 0.3


def test_optical_quantizers():
    rule = OpticalDFA(threshold=0.5)
    e = np.array([[0.3, -0.9, 0.5, 0.1], [0.0, 0.2, -0.1, 0.0]])
    t, s = rule.quantize(e)
    np.testing.assert_array_equal(t, [[0, -1, 1, 0], [0, 1, -1, 0]])
    c = t - t.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1) * s, np.linalg.norm(e, axis=1))
    t, _ = OpticalDFA(quantizer="binary").quantize(e)
    assert set(np.unique(t)) == {-1.0, 1.0}
    with pytest.raises(ValueError, match="quantizer"):
        OpticalDFA(quantizer="octal")
    with pytest.raises(ValueError, match="bit_depth"):
        OpticalDFA(bit_depth=0)
    with pytest.raises(ValueError, match="noise"):
        OpticalDFA(noise=-1)


# ----------------------------------------------------------------------------- alignment
def test_alignment_angles_fall_below_90_degrees_during_training(digits):
    """FA on digits: the hidden layer's update starts near 90° from the gradient (B is random)
    and aligns during training (Lillicrap et al. 2016): 92° -> 61° in 6 epochs here."""
    X, y, Xt, yt = digits
    net = mlp(hidden=(64,), seed=2)
    probe = (X[:256], y[:256])
    before = update_angles(FA(seed=0), net, *probe)["1.weight"]
    wb_before = feedback_angles(FA(seed=0), net)["3.weight"]
    rule = FA(seed=0)
    hist = ng.fit(net, rule, Adam(net.params, lr=3e-3), (X, y), epochs=6, batch_size=32, rng=0,
                  progress=False, callbacks=[AlignmentLogger(*probe, every=2)])
    after = hist["angle/1.weight"]
    assert after[0] is None and after[1] is not None          # logged every 2 epochs
    assert hist["angle/3.weight"][-1] == 0.0                  # the top layer is exact
    assert before > 80 and after[-1] < 70 and after[-1] < after[1] < before, (before, after)
    # the output weights turn towards the fixed B that carries their error down (B of the first
    # layer is never used: nothing is below it)
    assert hist["wb_angle/3.weight"][-1] < wb_before - 5


def test_feedback_angles():
    net = mlp(np.float64)
    W = {k: v.copy() for k, v in net.params.items() if k.endswith("weight")}
    assert all(a == 0 for a in feedback_angles(FA(feedback=W), net).values())
    assert all(a < 90 for a in feedback_angles(USF(), net).values())
    with pytest.raises(TypeError, match="update_angles"):
        feedback_angles(DFA(), net)
    x, y = batch(dtype=np.float64)
    angles = update_angles(FA(feedback=W), net, x, y)
    assert set(angles) == set(net.params) and all(a == 0 for a in angles.values())


# ----------------------------------------------------------------------------- bad models
def test_clear_errors_for_models_a_rule_cannot_train():
    rng = np.random.default_rng(0)
    residual = Sequential(Linear(4, 8, rng=rng), Residual(Sequential(ReLU(), Linear(8, 8, rng=rng))),
                          Linear(8, 3, rng=rng))
    for cls in (DFA, OpticalDFA, PEPITA, AFA):
        with pytest.raises(ValueError, match="Residual"):
            cls().check_model(residual)
    FA().check_model(residual)                                # FA walks residual blocks
    embed = Sequential(Embedding(10, 4, rng=rng), Flatten(), Linear(8, 3, rng=rng))
    for cls in RULES.values():
        with pytest.raises(ValueError, match="Embedding"):
            cls().check_model(embed)
    with pytest.raises(ValueError, match="no Linear or Conv2d"):
        FA().check_model(Sequential(ReLU()))
    norm_first = Sequential(LayerNorm(4), Linear(4, 8, rng=rng), ReLU(), Linear(8, 3, rng=rng))
    with pytest.raises(ValueError, match="before the first"):
        DFA().check_model(norm_first)
    with pytest.raises(TypeError, match="model must be a nograd Module"):
        FA().check_model("not a model")
    # feedback matrices of the wrong shape or for an unknown layer
    net = mlp()
    x, y = batch()
    with pytest.raises(ValueError, match="shape"):
        FA(feedback={"1.weight": np.zeros((3, 3), np.float32)}).grads(net, x, y, rng=0)
    with pytest.raises(ValueError, match="not a Linear/Conv2d weight"):
        FA(feedback={"2.weight": np.zeros((3, 3), np.float32)}).check_model(net)
    with pytest.raises(ValueError, match=r"shape \(32, 10\)"):
        DFA(feedback={"1.weight": np.zeros((5, 10), np.float32)}).grads(net, x, y, rng=0)
    rule = DFA()
    rule.grads(net, x, y, rng=0)
    with pytest.raises(ValueError, match="new rule per model"):
        rule.grads(mlp(hidden=(8, 16)), x, y, rng=0)


def test_example_script_runs_and_ends_with_one_json_line():
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = os.path.join(root, "examples", "feedback_alignment.py")
    out = subprocess.run([sys.executable, script, "--epochs", "1", "--rules", "backprop,fa,dfa",
                          "--json"], capture_output=True, text=True, timeout=120, check=True).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert [r["rule"] for r in summary["results"]] == ["backprop", "fa", "dfa"]
    assert summary["results"][1]["update_angles"]["5.weight"] == 0.0
    assert set(summary["targets"]) == {"fa", "dfa"}
