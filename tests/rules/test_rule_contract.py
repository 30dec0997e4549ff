"""One optimizer path (DESIGN.md §3): ``fit`` always goes through ``rule.step``; a rule's own arrays
(``rule.params``) join the model's optimizer as parameter groups, so schedules reach them; MeZO reads
the optimizer through its public API and follows a schedule; no rule keeps a private optimizer;
FOTON's constraint is an ``after_step`` hook that holds after every step."""
import ast
import pathlib

import numpy as np
import pytest

import nograd.rules
from nograd.core import Sequential
from nograd.core.optim import SGD, Adam, AdamW, Optimizer, StepLR
from nograd.data import blobs
from nograd.layers import Linear, ReLU, Tanh
from nograd.rules import (FOTON, Backprop, ForwardGradient, ForwardGradientLocal, MeZO,
                          MonoForward, Rule)
from nograd.train import Callback, fit

RULES_DIR = pathlib.Path(nograd.rules.__file__).parent


def mlp(seed=0, dtype=np.float32, act=ReLU):
    rng = np.random.default_rng(seed)
    return Sequential(Linear(4, 8, rng=rng, dtype=dtype), act(), Linear(8, 6, rng=rng, dtype=dtype),
                      act(), Linear(6, 3, rng=rng, dtype=dtype))


def data(n=48, dtype=np.float32):
    X, y = blobs(n, 3, 4, rng=0)
    return X.astype(dtype), y


def run(model, rule, opt, epochs=3, batch_size=16, **kw):
    return fit(model, rule, opt, data(dtype=model.dtype), epochs=epochs, batch_size=batch_size,
               rng=0, progress=False, **kw)


# --------------------------------------------------------------------------- fit -> rule.step
class Spy(Backprop):
    """Backprop that counts its steps and grads calls (the default step calls grads once)."""

    def __init__(self):
        super().__init__()
        self.steps, self.grads_calls = 0, 0

    def step(self, model, x, y, *, optimizer, rng=None):
        self.steps += 1
        return super().step(model, x, y, optimizer=optimizer, rng=rng)

    def grads(self, model, x, y, *, rng=None):
        self.grads_calls += 1
        return super().grads(model, x, y, rng=rng)


def test_fit_goes_through_rule_step_for_every_batch():
    net, rule = mlp(), Spy()
    before = {k: v.copy() for k, v in net.params.items()}
    run(net, rule, SGD(net.params, lr=0.1), epochs=2)            # 48 samples / 16 = 3 batches
    assert rule.steps == 6 and rule.grads_calls == 6
    assert any(not np.array_equal(before[k], net.params[k]) for k in before)


def test_a_step_that_does_not_call_grads_is_all_fit_runs():
    class OwnStep(Backprop):
        def grads(self, *a, **k):
            raise AssertionError("fit called grads itself")

        def step(self, model, x, y, *, optimizer, rng=None):
            g, info = Backprop.grads(self, model, x, y, rng=rng)
            optimizer.step(g)
            return info

    net = mlp()
    hist = run(net, OwnStep(), SGD(net.params, lr=0.1), epochs=3)
    assert hist["loss"][-1] < hist["loss"][0]


def test_the_default_step_equals_grads_then_optimizer_step():
    x, y = data()
    a, b = mlp(1), mlp(1)
    oa, ob = Adam(a.params, lr=0.01), Adam(b.params, lr=0.01)
    for _ in range(3):
        Backprop().step(a, x, y, optimizer=oa)
        ob.step(Backprop().grads(b, x, y)[0])
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)


# --------------------------------------------------------------------------- rule.params -> groups
class OwnScale(Backprop):
    """Backprop plus an array of the rule's own, ``rule.scale``, pulled towards 1 (gradient
    ``scale - 1``), created by ``prepare`` — as Mono-Forward's projections are."""

    def __init__(self, **options):
        super().__init__()
        self.options = options
        self.params = {}
        self.seen_in_optimizer = None

    def prepare(self, model, x):
        if not self.params:
            self.params["rule.scale"] = np.zeros(2, dtype=x.dtype)

    def param_options(self):
        return dict(self.options)

    def grads(self, model, x, y, *, rng=None):
        g, info = super().grads(model, x, y, rng=rng)
        return {**g, "rule.scale": self.params["rule.scale"] - 1}, info


class LrLog(Callback):
    def __init__(self, name):
        self.name, self.begin, self.lrs = name, None, []

    def on_train_begin(self, state):
        self.begin = state.optimizer.params.get(self.name)

    def on_epoch_end(self, state):
        self.lrs.append(state.optimizer.lr_of(self.name))


def test_rule_params_join_the_optimizer_before_training_and_the_schedule_reaches_them():
    net, rule = mlp(), OwnScale()
    opt = SGD(net.params, lr=0.1)
    log = LrLog("rule.scale")
    run(net, rule, opt, epochs=3, schedule=StepLR(opt, step_size=1, gamma=0.5), callbacks=[log])
    assert log.begin is rule.params["rule.scale"]            # in the optimizer before epoch 1
    assert len(opt.groups) == 2 and opt.groups[1]["params"] == rule.params
    assert log.lrs == pytest.approx([0.05, 0.025, 0.0125])   # after each epoch's schedule step
    assert np.all(rule.params["rule.scale"] > 0)              # trained towards 1
    # three epochs of 3 steps, lr 0.1, 0.05, 0.025: 1 - s = (1 - lr)^3 per epoch, s0 = 0
    expect = 1 - (0.9 ** 3) * (0.95 ** 3) * (0.975 ** 3)
    np.testing.assert_allclose(rule.params["rule.scale"], expect, rtol=1e-5)


def test_the_rules_group_takes_the_optimizers_defaults_or_the_rules_options():
    net = mlp()
    opt = SGD(net.params, lr=0.1, momentum=0.9, weight_decay=1e-3)
    rule = OwnScale()
    run(net, rule, opt, epochs=1)
    assert opt.hyper("rule.scale") == {**opt.hyper("0.weight")}            # same hyper-parameters
    net2, rule2 = mlp(), OwnScale(lr=0.5, momentum=0.0)
    opt2 = SGD(net2.params, lr=0.1, momentum=0.9)
    run(net2, rule2, opt2, epochs=1)
    assert opt2.lr_of("rule.scale") == 0.5 and opt2.hyper("rule.scale")["momentum"] == 0.0
    assert opt2.lr_of("0.weight") == 0.1


def test_an_optimizer_built_with_the_rules_arrays_is_not_given_them_twice():
    net, rule = mlp(), OwnScale()
    rule.prepare(net, data()[0])
    opt = SGD({**net.params, **rule.params}, lr=0.1)
    run(net, rule, opt, epochs=1)
    assert len(opt.groups) == 1


def test_bad_rule_arrays_are_refused_with_clear_errors():
    net = mlp()
    rule = OwnScale()
    rule.params["scale"] = np.zeros(2, np.float32)                   # no "rule." prefix
    with pytest.raises(ValueError, match=r"params\['scale'\].*start with 'rule.'"):
        rule.add_params_to(SGD(net.params, lr=0.1))
    rule = OwnScale()
    rule.prepare(net, data()[0])
    stale = SGD({**net.params, "rule.scale": np.zeros(2, np.float32)}, lr=0.1)
    with pytest.raises(ValueError, match="holds another array than OwnScale.params"):
        rule.add_params_to(stale)

    class NoGroups:
        params = {}

        def step(self, grads):
            pass

    with pytest.raises(TypeError, match="cannot take them.*add_param_group"):
        rule.add_params_to(NoGroups())
    clash = OwnScale()
    clash.params = {"0.weight": np.zeros(2, np.float32)}
    with pytest.raises(ValueError, match="rule.params and model.params both have"):
        fit(net, clash, SGD(net.params, lr=0.1), data(), epochs=1, batch_size=16, rng=0,
            progress=False)


# --------------------------------------------------------------------------- the optimizer API
def test_add_param_group_extends_the_groups_and_refuses_what_it_holds():
    w, b = np.ones(3), np.zeros(2)
    opt = Adam({"w": w}, lr=0.01, weight_decay=0.1)
    group = opt.add_param_group({"b": b}, lr=0.5)
    assert opt.groups[-1] is group and group["initial_lr"] == 0.5
    assert opt.hyper("b") == {**opt.hyper("w"), "lr": 0.5, "initial_lr": 0.5}
    assert opt.lr_of("w") == 0.01 and set(opt.params) == {"w", "b"}
    opt.step({"b": np.ones(2)})
    assert np.all(b < 0)                                         # the new group is stepped
    for bad, exc, match in [({"w": np.ones(3)}, ValueError, "more than one group"),
                            ({"c": w}, ValueError, r"same array as params\['w'\]"),
                            ({}, ValueError, "needs at least one array"),
                            ([w], TypeError, "dict name -> array")]:
        with pytest.raises(exc, match=match):
            opt.add_param_group(bad)
    with pytest.raises(ValueError, match="unknown hyper-parameter 'momentum'"):
        opt.add_param_group({"c": np.ones(1)}, momentum=0.9)
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"c": np.ones(1)}, lr=-1.0)
    assert len(opt.groups) == 2 and "c" not in opt.params            # refused groups leave nothing
    with pytest.raises(ValueError, match="holds no parameter 'x'"):
        opt.lr_of("x")
    with pytest.raises(ValueError, match="add_param_group"):
        opt.step({"rule.head": np.ones(1)})                           # the hint for rule arrays


def test_plain_sgd_says_when_a_step_is_plain_sgd():
    p = {"w": np.ones(2)}
    assert SGD(p, lr=0.1, weight_decay=0.01).plain_sgd("w") == (0.1, 0.01)
    assert SGD(p, lr=0.1, momentum=0.9).plain_sgd("w") is None
    assert SGD(p, lr=0.1, clip_norm=1.0).plain_sgd("w") is None
    for cls in (Adam, AdamW):
        assert cls(p, lr=0.1).plain_sgd("w") is None
    opt = SGD(p, lr=0.1)
    StepLR(opt, step_size=1, gamma=0.5).step()
    assert opt.plain_sgd("w") == (0.05, 0.0)                           # as the schedule set it
    with pytest.raises(ValueError, match="holds no parameter"):
        opt.plain_sgd("v")


# --------------------------------------------------------------------------- MeZO
class RecordingMeZO(MeZO):
    """MeZO that keeps (θ before, info, θ after) of every step."""

    def __init__(self, **kw):
        super().__init__(exact_restore=True, **kw)
        self.log = []

    def step(self, model, x, y, **kw):
        before = {k: v.copy() for k, v in model.params.items()}
        info = super().step(model, x, y, **kw)
        self.log.append((before, info, {k: v.copy() for k, v in model.params.items()}))
        return info


def test_mezo_through_fit_follows_the_schedule():
    """θ_after = θ_before − lr_t · g z with lr_t the schedule's (z regenerated from the seed)."""
    net, rule = mlp(dtype=np.float64, act=Tanh), RecordingMeZO()
    opt = SGD(net.params, lr=0.2)
    run(net, rule, opt, epochs=3, schedule=StepLR(opt, step_size=1, gamma=0.5))
    assert len(rule.log) == 9
    for t, (before, info, after) in enumerate(rule.log):
        lr = 0.2 * 0.5 ** (t // 3)
        (g,) = info["projected_grads"]
        for i, (k, p) in enumerate(before.items()):
            z = np.random.default_rng([info["seed"], 0, i]).standard_normal(p.shape)
            np.testing.assert_allclose(after[k], p - lr * g * z, rtol=1e-12, atol=1e-15,
                                       err_msg=f"step {t}, {k}")


def test_mezo_hands_the_direction_to_optimizers_that_are_not_plain_sgd():
    x, y = data()
    for make in (lambda p: SGD(p, lr=0.1, momentum=0.9), lambda p: Adam(p, lr=0.01),
                 lambda p: SGD(p, lr=0.1, clip_norm=0.5)):
        a, b = mlp(2), mlp(2)
        oa, ob = make(a.params), make(b.params)
        for s in range(3):
            MeZO(exact_restore=True).step(a, x, y, optimizer=oa, rng=s)
            ob.step(MeZO(exact_restore=True).grads(b, x, y, rng=s)[0])
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)


def test_mezo_refuses_an_optimizer_without_its_arrays():
    net, (x, y) = mlp(), data()
    with pytest.raises(ValueError, match=r"MeZO: the optimizer does not hold parameters \['4"):
        MeZO().step(net, x, y, optimizer=SGD({k: v for k, v in net.params.items()
                                              if not k.startswith("4.")}, lr=0.1), rng=0)


# --------------------------------------------------------------------------- no private optimizers
def _optimizers_in(obj, depth=0):
    """Every Optimizer reachable from ``obj``'s attributes (through lists, tuples, dicts)."""
    if isinstance(obj, Optimizer):
        return [obj]
    if depth > 3:
        return []
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        items = list(obj)
    elif hasattr(obj, "__dict__") and isinstance(obj, Rule):
        items = list(vars(obj).values())
    else:
        return []
    return [o for v in items for o in _optimizers_in(v, depth + 1)]


@pytest.mark.parametrize("make", [lambda: MonoForward(seed=0), lambda: ForwardGradientLocal(),
                                  lambda: ForwardGradient(target="local"),
                                  lambda: ForwardGradientLocal(head_lr=0.03)],
                         ids=["mono-forward", "fg-local", "fg-target-local", "fg-local-head-lr"])
def test_rules_with_arrays_of_their_own_train_them_in_fits_optimizer(make):
    net, rule = mlp(), make()
    opt = Adam(net.params, lr=0.01)
    sched = StepLR(opt, step_size=1, gamma=0.5)
    log = []

    class Heads(Callback):
        def on_train_begin(self, state):
            log.append({k: v.copy() for k, v in rule.params.items()})

    hist = run(net, rule, opt, epochs=2, schedule=sched, callbacks=[Heads()])
    assert rule.params and all(k.startswith("rule.") for k in rule.params)
    assert all(opt.params[k] is v for k, v in rule.params.items())   # in fit's optimizer
    assert log and set(log[0]) == set(rule.params)                    # before the first step
    assert all(not np.array_equal(log[0][k], v) for k, v in rule.params.items())   # trained
    base = getattr(rule, "head_lr", None) or 0.01
    assert all(opt.lr_of(k) == pytest.approx(base * 0.25) for k in rule.params)   # scheduled
    assert not _optimizers_in(rule)                                   # no private optimizer
    assert np.isfinite(hist["loss"]).all()


def test_no_rules_module_builds_an_optimizer():
    """Rules use the optimizer they are given: none imports nograd.core.optim."""
    files = sorted(RULES_DIR.glob("*.py"))
    assert len(files) > 10
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                assert not module.endswith("optim") and "optim" not in {a.name for a in node.names}, \
                    f"{path.name}:{node.lineno} imports {module}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.endswith(".optim") for a in node.names), path.name


# --------------------------------------------------------------------------- FOTON after_step
def _gram_gap(model):
    gaps = []
    for k, w in model.params.items():
        if k.endswith("weight"):
            gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
            gaps.append(float(np.abs(gram - np.eye(min(w.shape))).max()))
    return max(gaps)


def test_fotons_constraint_holds_after_every_fit_step():
    class Checked(FOTON):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.before, self.after = [], []

        def after_step(self, model, optimizer):
            self.before.append(_gram_gap(model))          # the optimizer has just moved the weights
            super().after_step(model, optimizer)
            self.after.append(_gram_gap(model))

    rng = np.random.default_rng(3)
    net = Sequential(Linear(4, 4, rng=rng, dtype=np.float64), ReLU(),
                     Linear(4, 4, rng=rng, dtype=np.float64), ReLU(),
                     Linear(4, 3, rng=rng, dtype=np.float64))
    rule = Checked()
    assert type(rule).step is Rule.step                   # FOTON's step is the contract's
    run(net, rule, Adam(net.params, lr=1e-2), epochs=2)
    assert len(rule.after) == 6
    assert min(rule.before) > 1e-6                         # each step leaves the constraint set
    assert max(rule.after) < 1e-10                         # and after_step puts it back


def test_fotons_start_is_orthogonal_before_the_first_step():
    rng = np.random.default_rng(4)
    net = Sequential(Linear(4, 4, rng=rng), ReLU(), Linear(4, 3, rng=rng))
    rule = FOTON()
    assert _gram_gap(net) > 0.1
    rule.prepare(net, data()[0])
    assert _gram_gap(net) < 1e-5
    w = {k: v.copy() for k, v in net.params.items()}
    rule.prepare(net, data()[0])                         # once per rule
    assert all(np.array_equal(w[k], net.params[k]) for k in w)
