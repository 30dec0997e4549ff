"""Mono-Forward: each layer's update is the gradient of its own cross-entropy (checked against
backprop on that layer alone), the streaming step equals grads-then-step, it learns, seeds."""
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


def test_each_layer_gets_the_gradient_of_its_own_loss_and_nothing_more():
    rng = np.random.default_rng(0)
    model = net(seed=1, dtype=np.float64, act=Tanh)
    x, y = rng.normal(size=(7, D)), rng.integers(0, K, 7)
    rule = MonoForward(seed=3)
    grads, info = rule.grads(model, x, y)
    M1, M2 = rule.params["rule.0.projection"], rule.params["rule.2.projection"]
    assert M1.shape == (K, 16) and M2.shape == (K, 12)
    W = {k: v.copy() for k, v in model.params.items()}
    # layer 1 alone, with its projection as a bias-free output layer, trained by backprop
    f64 = np.float64
    l1 = Sequential(Linear(D, 16, dtype=f64), Tanh(), Linear(16, K, bias=False, dtype=f64))
    l1.params["0.weight"][...], l1.params["0.bias"][...] = W["0.weight"], W["0.bias"]
    l1.params["2.weight"][...] = M1
    g1, _ = Backprop().grads(l1, x, y)
    a1 = np.tanh(x @ W["0.weight"].T + W["0.bias"])
    # layer 2 alone on a1 (held constant), with projection M2
    l2 = Sequential(Linear(16, 12, dtype=f64), Tanh(), Linear(12, K, bias=False, dtype=f64))
    l2.params["0.weight"][...], l2.params["0.bias"][...] = W["2.weight"], W["2.bias"]
    l2.params["2.weight"][...] = M2
    g2, _ = Backprop().grads(l2, a1, y)
    a2 = np.tanh(a1 @ W["2.weight"].T + W["2.bias"])
    # the output layer alone on a2
    l3 = Sequential(Linear(12, K, dtype=np.float64))
    l3.params["0.weight"][...], l3.params["0.bias"][...] = W["4.weight"], W["4.bias"]
    g3, _ = Backprop().grads(l3, a2, y)
    pairs = [("0.weight", g1["0.weight"]), ("0.bias", g1["0.bias"]), ("2.weight", g2["0.weight"]),
             ("2.bias", g2["0.bias"]), ("4.weight", g3["0.weight"]), ("4.bias", g3["0.bias"])]
    for k, ref in pairs:
        np.testing.assert_allclose(grads[k], ref, rtol=1e-12, atol=1e-14, err_msg=k)
    # one dict: the model's names, then the rule's own (the projections)
    assert list(grads) == list(model.params) + ["rule.0.projection", "rule.2.projection"]
    np.testing.assert_allclose(grads["rule.0.projection"], g1["2.weight"], rtol=1e-12)
    np.testing.assert_allclose(grads["rule.2.projection"], g2["2.weight"], rtol=1e-12)
    # the reported loss is the output layer's, i.e. the model's own cross-entropy
    assert info["loss"] == pytest.approx(Backprop().grads(model, x, y)[1]["loss"])
    assert len(info["layer_losses"]) == 3


def test_streaming_step_equals_grads_then_step():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, D)).astype(np.float32), rng.integers(0, K, 32)
    a, b = net(seed=2, hidden=(16, 16, 16)), net(seed=2, hidden=(16, 16, 16))
    ra, rb = MonoForward(), MonoForward()
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


def test_projections_follow_the_optimizers_learning_rate():
    """The projections are in the model's optimizer (a group of their own): its lr, its
    schedule, or ``projection_lr`` as that group's lr."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, D)).astype(np.float32), rng.integers(0, K, 8)
    model, rule = net(), MonoForward()
    opt = SGD(model.params, lr=0.1)
    sched = StepLR(opt, step_size=1, gamma=0.1)
    rule.step(model, x, y, optimizer=opt)
    assert set(rule.params) == {"rule.0.projection", "rule.2.projection"}
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
    assert not any(isinstance(v, (SGD, Adam)) for r in (rule, fixed) for v in vars(r).values())


def test_learns_a_synthetic_task(task):
    X, y, Xt, yt = task
    model, rule = net(seed=3), MonoForward(seed=0)
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
        rule.grads(net(hidden=(5,)), np.zeros((2, D), np.float32), np.array([0, 1]))
    with pytest.raises(ValueError, match="predict_mode"):
        MonoForward(predict_mode="first")
