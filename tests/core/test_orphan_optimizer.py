"""No optimizer silently updates arrays the model does not use: after ``Module.astype`` its next
step raises, and ``fit`` refuses an optimizer built over other arrays (before astype, or over
another model's params)."""
import numpy as np
import pytest

from nograd import SGD, Adam, Backprop, Linear, ReLU, Sequential
from nograd.data import blobs
from nograd.rules import Rule
from nograd.rules.zeroth_order import MeZO
from nograd.train import evaluate, fit


def mlp(seed=0):
    return Sequential(Linear(2, 16, rng=seed), ReLU(), Linear(16, 3, rng=seed + 1))


def snapshot(model):
    return {k: v.copy() for k, v in model.params.items()}


def assert_same(before, params):
    assert set(before) == set(params)
    for k in before:
        np.testing.assert_array_equal(before[k], params[k], err_msg=k)


def data():
    return blobs(60, 3, 2, rng=0)


def train(model, opt, rule=None, epochs=3):
    return fit(model, rule or Backprop(), opt, data(), epochs=epochs, batch_size=16, rng=0,
               progress=False)


# --------------------------------------------------------------------------- astype after the optimizer
@pytest.mark.parametrize("opt_cls", [SGD, Adam])
def test_a_step_after_astype_raises_and_changes_nothing(opt_cls):
    net = mlp()
    opt = opt_cls(net.params, lr=0.1)
    old = net.params
    net.astype(np.float64)
    before = snapshot(net)
    X, y = data()
    grads, _ = Backprop().grads(net, X.astype(np.float64), y)
    assert all(g.dtype == np.float64 for g in grads.values())
    with pytest.raises(ValueError, match=r"optimizer cannot update params\['0.weight'\]: it was "
                                         r"made read-only after the optimizer was built, as "
                                         r"Module.astype.*build the optimizer again over "
                                         r"model.params"):
        opt.step(grads)
    assert_same(before, net.params)
    assert all(not a.flags.writeable for a in old.values())       # the retired arrays
    assert all(a.flags.writeable for a in net.params.values())    # the live ones


def test_astype_there_and_back_still_retires_the_first_arrays():
    net = mlp()
    opt = SGD(net.params, lr=0.1)
    net.astype(np.float64).astype(np.float32)                     # same dtype as the optimizer's
    X, y = data()
    grads, _ = Backprop().grads(net, X, y)
    with pytest.raises(ValueError, match="read-only"):
        opt.step(grads)


def test_fit_refuses_an_optimizer_built_before_astype_before_any_epoch():
    net = mlp()
    opt = Adam(net.params, lr=0.01)
    net.astype(np.float64)
    before = snapshot(net)
    with pytest.raises(ValueError, match=r"optimizer updates params\['0.weight'\] but model.params "
                                         r"has another array \(float64; the optimizer's is "
                                         r"float32\).*Module.astype"):
        train(net, opt)
    assert_same(before, net.params)


def test_an_optimizer_built_after_astype_trains_the_model():
    net = mlp()
    net.astype(np.float64)
    X, y = data()
    start = evaluate(net, X, y)["loss"]
    hist = train(net, Adam(net.params, lr=0.02), epochs=5)
    assert all(v.dtype == np.float64 for v in net.params.values())
    assert hist["loss"][-1] < hist["loss"][0] and evaluate(net, X, y)["loss"] < 0.8 * start


def test_astype_to_the_same_dtype_keeps_the_arrays_and_the_optimizer_working():
    net = mlp()
    opt = SGD(net.params, lr=0.1)
    old = net.params
    net.astype(np.float32)
    assert all(net.params[k] is old[k] and old[k].flags.writeable for k in old)
    before = snapshot(net)
    train(net, opt, epochs=1)
    assert any(not np.array_equal(before[k], net.params[k]) for k in before)


def test_astype_keeps_an_array_shared_by_two_layers_shared():
    a, b = Linear(4, 4, rng=0), Linear(4, 4, rng=1)
    b._own["weight"] = a._own["weight"]                            # tied weights
    net = Sequential(a, ReLU(), b)
    net.astype(np.float64)
    assert net.params["0.weight"] is net.params["2.weight"]
    assert net.params["0.weight"].dtype == np.float64


# --------------------------------------------------------------------------- another model's optimizer
def test_fit_refuses_an_optimizer_over_another_models_params():
    net, other = mlp(0), mlp(1)                                    # same names, shapes and dtype
    before, other_before = snapshot(net), snapshot(other)
    with pytest.raises(ValueError, match=r"optimizer updates params\['0.weight'\] but model.params "
                                         r"has another array \(float32; the optimizer's is "
                                         r"float32\): the optimizer was built over another "
                                         r"model's params"):
        train(net, Adam(other.params, lr=0.01))
    assert_same(before, net.params)
    assert_same(other_before, other.params)


def test_fit_refuses_an_optimizer_whose_names_the_model_does_not_have():
    net = mlp()
    opt = SGD({"w": np.zeros(3)}, lr=0.1)
    with pytest.raises(ValueError, match=r"optimizer updates params\['w'\] but model.params has "
                                         r"no array of that name"):
        train(net, opt)


def test_fit_refuses_an_orphaned_sgd_optimizer_with_mezo_too():
    net = mlp()
    opt = SGD(net.params, lr=0.01)                # MeZO reads its lr and updates the model itself
    net.astype(np.float64)
    with pytest.raises(ValueError, match="model.params has another array"):
        train(net, opt, rule=MeZO(exact_restore=True))


# --------------------------------------------------------------------------- what stays allowed
class _HeadOnly(Backprop):
    """Backprop's gradients of the last layer only (the first one frozen, as LoRA freezes)."""

    def grads(self, model, x, y, *, rng=None):
        grads, info = super().grads(model, x, y, rng=rng)
        return {k: g for k, g in grads.items() if k.startswith("2.")}, info


def test_an_optimizer_over_a_subset_of_the_model_is_accepted():
    net = mlp()
    head = {k: v for k, v in net.params.items() if k.startswith("2.")}
    frozen = {k: v.copy() for k, v in net.params.items() if k.startswith("0.")}
    before_head = {k: v.copy() for k, v in head.items()}
    train(net, SGD(head, lr=0.1), rule=_HeadOnly(), epochs=1)
    assert_same(frozen, {k: net.params[k] for k in frozen})
    assert any(not np.array_equal(before_head[k], net.params[k]) for k in head)


class _WithOwnArrays(Backprop):
    """Backprop plus a trainable array of the rule's own, pulled towards 1 (``rule.params``)."""

    def __init__(self):
        super().__init__()
        self.params = {"rule.scale": np.zeros(2, np.float32)}

    def grads(self, model, x, y, *, rng=None):
        grads, info = super().grads(model, x, y, rng=rng)
        grads["rule.scale"] = self.params["rule.scale"] - 1.0
        return grads, info


def test_an_optimizer_that_also_holds_the_rules_arrays_is_accepted():
    net, rule = mlp(), _WithOwnArrays()
    train(net, SGD({**net.params, **rule.params}, lr=0.1), rule=rule, epochs=2)
    assert np.all(rule.params["rule.scale"] > 0)


def test_an_optimizer_over_another_rules_arrays_is_refused():
    net, rule = mlp(), _WithOwnArrays()
    stale = {"rule.scale": np.zeros(2, np.float32)}       # a copy, not the rule's array
    with pytest.raises(ValueError, match=r"params\['rule.scale'\] but model.params \(or "
                                         r"rule.params\) has another array"):
        train(net, SGD({**net.params, **stale}, lr=0.1), rule=rule)


class _NoParams(Rule):
    def grads(self, model, x, y, *, rng=None):
        return {}, {"loss": 0.0}


def test_a_duck_typed_optimizer_without_arrays_is_not_checked():
    class Noop:
        def step(self, grads):
            self.called = True

    opt = Noop()
    train(mlp(), opt, rule=_NoParams(), epochs=1)
    assert opt.called
