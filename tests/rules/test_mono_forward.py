"""Mono-Forward (Gong, Li & Abdulla 2025, arXiv:2501.09238): the paper's structure — every hidden
layer i learns from the cross-entropy of its own projection M_i, and the network's output is the
last layer's projection M_L (the model's final Linear) — written out from the paper's equations and
compared; the readout variant (output="readout"), the streaming step, learning, seeds, errors."""
import numpy as np
import pytest

from nograd.core import Sequential
from nograd.core.optim import SGD, Adam, StepLR
from nograd.data import blobs
from nograd.layers import Dropout, Flatten, Linear, ReLU, Tanh
from nograd.rules import Backprop, MonoForward, available_rules, get_rule
from nograd.train import fit

K, D = 4, 10


def net(seed=0, hidden=(16, 12), dtype=np.float32, act=ReLU):
    rng = np.random.default_rng(seed)
    layers, width = [], D
    for h in hidden:
        layers += [Linear(width, h, rng=rng, dtype=dtype), act()]
        width = h
    return Sequential(*layers, Linear(width, K, rng=rng, dtype=dtype))


@pytest.fixture(scope="module")
def task():
    X, y = blobs(800, K, D, spread=2.0, rng=1)
    X = X / np.abs(X).max()
    return X[:600], y[:600], X[600:], y[600:]


def test_registered():
    assert "mono-forward" in available_rules()
    assert isinstance(get_rule("mono-forward"), MonoForward)
    assert MonoForward.hyperparameters()["epochs"] <= 3 * Backprop.hyperparameters()["epochs"]


def _softmax(g):
    e = np.exp(g - g.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _paper_layer(a_prev, W, b, M, y, bias_out=None):
    """One Mono-Forward layer as Gong et al. (2025) write it in their method section, tanh units:
    a = f(a_prev Wᵀ + b), G = a Mᵀ, L = CE(softmax(G), y); the gradients of L in W, b and M with
    a_prev held constant. ``bias_out``: the bias of the model's output Linear (not in the paper's
    M_L; nograd adds it when the output layer has one). Returns (a, G, L, {name: gradient})."""
    n = len(y)
    a = np.tanh(a_prev @ W.T + b)
    G = a @ M.T + (0 if bias_out is None else bias_out)
    P, Y = _softmax(G), np.eye(M.shape[0])[y]
    loss = -np.mean(np.log(P[np.arange(n), y]))
    dG = (P - Y) / n                               # ∂L/∂G
    dz = (dG @ M) * (1 - a ** 2)                   # ∂L/∂(a_prev Wᵀ + b), through M and f'
    grads = {"W": dz.T @ a_prev, "b": dz.sum(0), "M": dG.T @ a, "c": dG.sum(0)}
    return a, G, loss, grads


def test_the_output_is_the_last_layers_projection_and_each_layer_learns_from_its_own():
    """The paper's structure: layer 1 (weights "0.") learns through a projection M_1 on the rule;
    layer 2 (the last hidden layer, "2.") learns through M_2 = the model's final Linear ("4."),
    which learns from the same loss; no error crosses a layer boundary."""
    rng = np.random.default_rng(0)
    model = net(seed=1, dtype=np.float64, act=Tanh)
    x, y = rng.normal(size=(7, D)), rng.integers(0, K, 7)
    rule = MonoForward(seed=3)
    grads, info = rule.grads(model, x, y)
    assert list(rule.params) == ["rule.0.projection"]          # M_1 only: M_2 is the model's
    M1, P = rule.params["rule.0.projection"], model.params
    assert M1.shape == (K, 16)
    a1, G1, L1, g1 = _paper_layer(x, P["0.weight"], P["0.bias"], M1, y)
    a2, G2, L2, g2 = _paper_layer(a1, P["2.weight"], P["2.bias"], P["4.weight"], y,
                                  bias_out=P["4.bias"])
    want = {"0.weight": g1["W"], "0.bias": g1["b"], "2.weight": g2["W"], "2.bias": g2["b"],
            "4.weight": g2["M"], "4.bias": g2["c"], "rule.0.projection": g1["M"]}
    assert list(grads) == list(model.params) + ["rule.0.projection"]
    for k, ref in want.items():
        np.testing.assert_allclose(grads[k], ref, rtol=1e-12, atol=1e-14, err_msg=k)
    # the prediction is the last layer's goodness G_L = the model's output (BP-style)
    np.testing.assert_allclose(info["output"], G2, rtol=1e-12)
    np.testing.assert_allclose(model(x), G2, rtol=1e-12)
    np.testing.assert_allclose(info["layer_losses"], [L1, L2], rtol=1e-12)
    assert info["loss"] == pytest.approx(L2, rel=1e-12)          # the model's own cross-entropy
    # FF-style prediction: the sum of every layer's goodness
    np.testing.assert_allclose(rule.predict(model, x, mode="sum"), G1 + G2, rtol=1e-12)


def test_with_one_hidden_layer_mono_forward_is_backprop():
    """With L = 1 the only layer's loss is the network's own (its projection is the output), so
    the paper's update is backprop's gradient exactly."""
    rng = np.random.default_rng(1)
    model = net(seed=2, hidden=(9,), dtype=np.float64, act=Tanh)
    x, y = rng.normal(size=(11, D)), rng.integers(0, K, 11)
    rule = MonoForward(seed=0)
    grads, info = rule.grads(model, x, y)
    ref, ref_info = Backprop().grads(model, x, y)
    assert rule.params == {}
    assert set(grads) == set(model.params)
    for k in model.params:
        np.testing.assert_allclose(grads[k], ref[k], rtol=1e-12, atol=1e-15, err_msg=k)
    assert info["loss"] == pytest.approx(ref_info["loss"], rel=1e-12)


def test_readout_option_trains_the_output_layer_on_frozen_activity():
    """``output="readout"``: every hidden layer (the last included) has a projection on the rule,
    and the model's final Linear is a softmax readout trained on the frozen last activity."""
    rng = np.random.default_rng(0)
    model = net(seed=1, dtype=np.float64, act=Tanh)
    x, y = rng.normal(size=(7, D)), rng.integers(0, K, 7)
    rule = MonoForward(output="readout", seed=3)
    grads, info = rule.grads(model, x, y)
    assert list(rule.params) == ["rule.0.projection", "rule.2.projection"]
    P, M1, M2 = model.params, rule.params["rule.0.projection"], rule.params["rule.2.projection"]
    a1, G1, L1, g1 = _paper_layer(x, P["0.weight"], P["0.bias"], M1, y)
    a2, G2, L2, g2 = _paper_layer(a1, P["2.weight"], P["2.bias"], M2, y)
    out = a2 @ P["4.weight"].T + P["4.bias"]
    dout = (_softmax(out) - np.eye(K)[y]) / len(y)
    want = {"0.weight": g1["W"], "0.bias": g1["b"], "2.weight": g2["W"], "2.bias": g2["b"],
            "4.weight": dout.T @ a2, "4.bias": dout.sum(0), "rule.0.projection": g1["M"],
            "rule.2.projection": g2["M"]}
    assert list(grads) == list(model.params) + ["rule.0.projection", "rule.2.projection"]
    for k, ref in want.items():
        np.testing.assert_allclose(grads[k], ref, rtol=1e-12, atol=1e-14, err_msg=k)
    assert len(info["layer_losses"]) == 3
    np.testing.assert_allclose(info["layer_losses"][:2], [L1, L2], rtol=1e-12)
    np.testing.assert_allclose(rule.predict(model, x, mode="sum"), G1 + G2 + out, rtol=1e-12)


@pytest.mark.parametrize("output", ["projection", "readout"])
def test_streaming_step_equals_grads_then_step(output):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, D)).astype(np.float32), rng.integers(0, K, 32)
    a, b = net(seed=2, hidden=(16, 16, 16)), net(seed=2, hidden=(16, 16, 16))
    ra, rb = MonoForward(output=output), MonoForward(output=output)
    oa, ob = Adam(a.params, lr=1e-2), Adam(b.params, lr=1e-2)
    for _ in range(4):
        ra.step(a, x, y, optimizer=oa)
        grads, _ = rb.grads(b, x, y)
        rb.add_params_to(ob)                 # the projections join the model's optimizer
        ob.step(grads)
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k
    for k in ra.params:
        assert np.array_equal(ra.params[k], rb.params[k]), k
    assert len(ra.params) == (2 if output == "projection" else 3)


def test_projections_follow_the_optimizers_learning_rate():
    """The projections are in the model's optimizer (a group of their own): its lr, its
    schedule, or ``projection_lr`` as that group's lr."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, D)).astype(np.float32), rng.integers(0, K, 8)
    model, rule = net(), MonoForward()
    opt = SGD(model.params, lr=0.1)
    sched = StepLR(opt, step_size=1, gamma=0.1)
    rule.step(model, x, y, optimizer=opt)
    assert set(rule.params) == {"rule.0.projection"}
    assert all(opt.params[k] is v for k, v in rule.params.items())       # the same optimizer
    assert all(opt.lr_of(k) == 0.1 for k in rule.params)
    moved = {k: v.copy() for k, v in rule.params.items()}
    sched.step()                                                         # the schedule reaches them
    assert all(opt.lr_of(k) == pytest.approx(0.01) for k in rule.params)
    rule.step(model, x, y, optimizer=opt)
    assert not any(np.array_equal(moved[k], rule.params[k]) for k in rule.params)
    other = net()
    fixed, opt2 = MonoForward(projection_lr=0.5), SGD(other.params, lr=0.1)
    fixed.step(other, x, y, optimizer=opt2)
    assert all(opt2.lr_of(k) == 0.5 for k in fixed.params)
    assert opt2.lr_of("0.weight") == 0.1
    assert opt2.lr_of("4.weight") == 0.1                                  # M_L is the model's
    assert not any(isinstance(v, (SGD, Adam)) for r in (rule, fixed) for v in vars(r).values())


@pytest.mark.parametrize("output", ["projection", "readout"])
def test_learns_a_synthetic_task(task, output):
    X, y, Xt, yt = task
    model, rule = net(seed=3), MonoForward(output=output, seed=0)
    hist = fit(model, rule, Adam(model.params, lr=3e-3), (X, y), val=(Xt, yt), epochs=12,
               batch_size=32, rng=0, progress=False)
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert hist["val_accuracy"][-1] >= 0.9                      # chance 0.25
    bp_model = net(seed=3)
    bp = fit(bp_model, Backprop(), Adam(bp_model.params, lr=3e-3), (X, y), val=(Xt, yt),
             epochs=12, batch_size=32, rng=0, progress=False)
    assert hist["val_accuracy"][-1] >= bp["val_accuracy"][-1] - 0.03
    assert np.mean(model(Xt).argmax(1) == yt) == pytest.approx(hist["val_accuracy"][-1])
    assert np.mean(rule.predict(model, Xt, mode="sum").argmax(1) == yt) >= 0.9


def test_same_seed_same_run(task):
    X, y, _, _ = task

    def run(seed):
        model, rule = net(seed=4), MonoForward(seed=seed)
        fit(model, rule, Adam(model.params, lr=3e-3), (X[:200], y[:200]), epochs=2,
            batch_size=32, rng=0, progress=False)
        return model.params

    a, b, c = run(0), run(0), run(1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)        # other projections


def test_models_it_cannot_train_fail_at_once():
    rule = MonoForward()
    with pytest.raises(ValueError, match="ends with ReLU"):
        rule.check_model(Sequential(Linear(D, 8), ReLU()))
    with pytest.raises(ValueError, match="cannot train Dropout"):
        rule.check_model(Sequential(Linear(D, 8), ReLU(), Dropout(0.5), Linear(8, K)))
    with pytest.raises(ValueError, match="cannot train Flatten"):
        rule.check_model(Sequential(Linear(D, 8), Flatten(), Linear(8, K)))
    rule.grads(net(), np.zeros((2, D), np.float32), np.array([0, 1]))
    with pytest.raises(ValueError, match="use a new rule per model"):
        rule.grads(net(hidden=(5, 7)), np.zeros((2, D), np.float32), np.array([0, 1]))
    with pytest.raises(ValueError, match="predict_mode"):
        MonoForward(predict_mode="first")
    with pytest.raises(ValueError, match="output must be 'projection' or 'readout'"):
        MonoForward(output="head")
