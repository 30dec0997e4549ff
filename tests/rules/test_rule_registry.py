"""The battery every registered learning rule runs (DESIGN.md §3, §6), over ``registry.ENTRIES``.

(a) every registered rule has an entry and every entry a registered rule; (b) same seed, same
update — another seed, another update exactly when the rule draws random numbers; (c) a model
the rule cannot train is refused at once by ``check_model`` (and so by ``fit``), with an error
naming the rule and the layer; (d) ``grads`` is keyed like ``model.params`` plus ``rule.params``,
each direction shaped and typed like its array, and changes nothing in the model; (e) float32 and
float64 models both train and keep their dtype; (f) a short ``fit`` run, through ``rule.step`` for
every batch, lowers the training loss to the entry's bar; (g) a wrong ``y`` or a NaN in ``x`` is a
clear error (``NonFiniteError`` for NaN) that leaves the model as it was.

Each check is a function that raises ``AssertionError`` (or pytest's failure) on a rule that breaks
it; ``test_each_check_catches_a_broken_rule`` runs every check on a deliberately broken rule.
"""
import importlib
import math
import pkgutil
import re
from dataclasses import replace
from functools import partial

import numpy as np
import pytest

import nograd.rules
from nograd.core.checks import NonFiniteError
from nograd.rules import FA, Backprop, available_rules
from nograd.rules import base as rules_base
from nograd.train import fit
from rules.registry import BY_NAME, ENTRIES, RuleEntry

#: the checks an entry may list in ``known`` (check name -> reason it fails)
CHECKS = {"determinism", "refusal", "grads-keys", "grads-change-nothing", "dtypes", "fit",
          "bad-input", "refused-batch-changes-nothing"}


def over(check, entries=ENTRIES):
    """The entries as pytest params, ``xfail(strict=True)`` where the entry knows ``check`` fails."""
    return [pytest.param(e, id=e.name, marks=[pytest.mark.xfail(strict=True, reason=e.known[check])]
                         if check in e.known else []) for e in entries]


def _setup(entry, seed=0, dtype=np.float32):
    """``(model, rule, X, y)``: the entry's model and data, the rule checked and prepared on them."""
    model, X, y = entry.build(dtype)
    rule = entry.make(seed)
    rule.check_model(model)
    rule.prepare(model, X)
    return model, rule, X, y


def _snapshot(model):
    return {k: v.copy() for k, v in model.params.items()}


def _unchanged(model, before, what):
    moved = [k for k, v in model.params.items() if not np.array_equal(v, before[k])]
    assert not moved, f"{what} changed model.params {moved}"


class _Untouchable:
    """An optimizer for runs that must stop before the first step."""

    params: dict = {}

    def step(self, grads):
        raise AssertionError("a refused model reached an optimizer step")


# ============================================================================ the checks
def check_registry_complete(registered, entries):
    """(a) Registered names and entry names are the same set, with one entry per name."""
    names = [e.name for e in entries]
    assert len(names) == len(set(names)), f"rules with two entries: {sorted(names)}"
    missing = sorted(set(registered) - set(names))
    extra = sorted(set(names) - set(registered))
    assert not missing, f"registered rules without an entry in tests/rules/registry.py: {missing}"
    assert not extra, f"entries in tests/rules/registry.py for no registered rule: {extra}"


def _run(entry, seed, use_rng):
    model, rule, X, y = _setup(entry, seed)
    return rule.grads(model, X, y, rng=np.random.default_rng(seed) if use_rng else None)


def _same(a, b):
    (ga, ia), (gb, ib) = a, b
    return (list(ga) == list(gb) and all(np.array_equal(ga[k], gb[k]) for k in ga)
            and float(ia["loss"]) == float(ib["loss"]))


def check_determinism(entry):
    """(b) With the seed given (to the rule and as ``rng=``) and with the rule's own seeded generator
    (``rng=None``): the same seed twice gives the same directions and loss, bit for bit; another
    seed gives other directions when ``entry.random``, the same ones otherwise."""
    for use_rng in (True, False):
        how = "rng=default_rng(seed)" if use_rng else "rng=None"
        first, again, other = (_run(entry, s, use_rng) for s in (3, 3, 4))
        assert _same(first, again), f"{entry.name}, {how}: the same seed gave another update"
        if entry.random:
            assert not _same(first, other), f"{entry.name}, {how}: seeds 3 and 4 gave the same " \
                                            f"update, but the entry says the rule is random"
        else:
            assert _same(first, other), f"{entry.name}, {how}: seeds 3 and 4 gave other updates, " \
                                        f"but the entry says the rule draws nothing"


def check_refusal(entry):
    """(c) ``check_model`` refuses ``entry.refuse()`` with a ValueError/TypeError whose message names
    the rule's class and the refused layer; ``fit`` refuses it the same way before any step."""
    rule = entry.make(0, entry.refuse_options)
    bad = entry.refuse()
    with pytest.raises((ValueError, TypeError)) as err:
        rule.check_model(bad)
    msg = str(err.value)
    for word in (type(rule).__name__, entry.refuse_layer):
        if word:
            assert re.search(rf"\b{re.escape(word)}\b", msg), f"the refusal does not name {word}: {msg}"
    before = _snapshot(bad)
    X, y = entry.data(np.float32)
    with pytest.raises(type(err.value), match=re.escape(msg)):
        fit(bad, entry.make(0, entry.refuse_options), _Untouchable(), (X, y), epochs=1,
            batch_size=entry.batch_size, rng=0, progress=False)
    _unchanged(bad, before, "a refused fit")


def check_grads_keys(entry):
    """(d) Directions keyed by names of ``model.params`` or ``rule.params`` (whose names start with
    ``"rule."``), each a finite array of its array's shape and dtype; ``info`` has a finite float
    ``loss`` and an ``output`` (``None`` or one row per sample)."""
    model, rule, X, y = _setup(entry)
    grads, info = rule.grads(model, X, y, rng=np.random.default_rng(0))
    assert grads, "grads returned no direction"
    own = dict(rule.params)
    assert all(k.startswith("rule.") for k in own), f"rule.params names {list(own)}"
    unknown = sorted(set(grads) - set(model.params) - set(own))
    assert not unknown, f"grads has names that are neither model.params nor rule.params: {unknown}"
    for k, g in grads.items():
        p = model.params[k] if k in model.params else own[k]
        assert isinstance(g, np.ndarray), f"grads[{k!r}] is a {type(g).__name__}"
        assert g.shape == p.shape and g.dtype == p.dtype, \
            f"grads[{k!r}] is {g.dtype}{g.shape}, the array {p.dtype}{p.shape}"
        assert np.isfinite(g).all(), f"grads[{k!r}] is not finite"
    assert math.isfinite(float(info["loss"])), info["loss"]
    assert "output" in info
    assert info["output"] is None or len(info["output"]) == len(X)


def check_grads_change_nothing(entry):
    """(d) ``grads`` leaves ``model.params`` bit for bit as they were (the rule contract)."""
    model, rule, X, y = _setup(entry)
    before = _snapshot(model)
    rule.grads(model, X, y, rng=np.random.default_rng(0))
    _unchanged(model, before, f"{entry.name}.grads")


def check_dtypes(entry, dtype):
    """(e) In ``dtype``: directions, the rule's arrays and the output keep it, and one
    ``rule.step`` moves the weights, keeps them finite and keeps their dtype."""
    dtype = np.dtype(dtype)
    model, rule, X, y = _setup(entry, 0, dtype)
    grads, info = rule.grads(model, X, y, rng=np.random.default_rng(0))
    wrong = {k: g.dtype for k, g in {**grads, **rule.params}.items() if g.dtype != dtype}
    assert not wrong, f"{dtype} model: arrays of another dtype {wrong}"
    if info["output"] is not None:
        assert info["output"].dtype == dtype, f"output is {info['output'].dtype}"
    before = _snapshot(model)
    rule.step(model, X, y, optimizer=entry.optimizer(model.params), rng=np.random.default_rng(1))
    assert any(not np.array_equal(v, before[k]) for k, v in model.params.items()), "no weight moved"
    for k, v in {**model.params, **rule.params}.items():
        assert v.dtype == dtype and np.isfinite(v).all(), f"{k}: {v.dtype}, finite {np.isfinite(v).all()}"


def check_fit(entry):
    """(f) ``fit`` calls ``rule.step`` once per batch, and the last epoch's mean training loss is at
    most ``entry.loss_ratio`` times the first epoch's."""
    model, X, y = entry.build()
    rule = entry.make(0)
    steps = []
    step = rule.step

    def counted(*args, **kwargs):
        steps.append(len(args[1]))
        return step(*args, **kwargs)

    rule.step = counted
    hist = fit(model, rule, entry.optimizer(model.params), (X, y), epochs=entry.epochs,
               batch_size=entry.batch_size, rng=0, progress=False)
    assert len(steps) == entry.epochs * math.ceil(len(X) / entry.batch_size)
    assert sum(steps) == entry.epochs * len(X)
    first, last = hist["loss"][0], hist["loss"][-1]
    assert last <= entry.loss_ratio * first, \
        f"{entry.name} ({entry.loss}): epoch 1 {first:.4f}, epoch {entry.epochs} {last:.4f}, " \
        f"ratio {last / first:.3f} > bar {entry.loss_ratio}"


def _bad_batches(X, y):
    """``(what, x, y, error, pattern)``: the batches every rule must refuse."""
    nan = X.copy()
    nan[2, 1] = np.nan
    named_y = r"\b(y|target)\b"
    return [("one label too few", X, y[:-1], ValueError, named_y),
            ("y of shape (N, 1)", X, y[:, None], ValueError, named_y),
            ("a NaN in x", nan, y, NonFiniteError, r"\bx\b.*NaN")]


def check_bad_input(entry):
    """(g) ``grads`` and ``step`` refuse a wrong ``y`` (ValueError naming y, or the loss's
    ``target``) and a NaN in ``x`` (NonFiniteError naming x)."""
    model, rule, X, y = _setup(entry)
    for what, xb, yb, error, pattern in _bad_batches(X, y):
        with pytest.raises(error, match=pattern):
            rule.grads(model, xb, yb, rng=np.random.default_rng(0))
        with pytest.raises(error, match=pattern):
            rule.step(model, xb, yb, optimizer=entry.optimizer(model.params),
                      rng=np.random.default_rng(0))


def check_refused_batch_changes_nothing(entry):
    """(g) After ``grads`` or ``step`` refused a bad batch, ``model.params`` are as they were."""
    model, rule, X, y = _setup(entry)
    before = _snapshot(model)
    for what, xb, yb, error, pattern in _bad_batches(X, y):
        for call in ("grads", "step"):
            with pytest.raises((ValueError, TypeError)):
                if call == "grads":
                    rule.grads(model, xb, yb, rng=np.random.default_rng(0))
                else:
                    rule.step(model, xb, yb, optimizer=entry.optimizer(model.params),
                              rng=np.random.default_rng(0))
            _unchanged(model, before, f"{entry.name}.{call} on {what}")


# ============================================================================ the battery
def test_every_registered_rule_has_an_entry():
    for mod in pkgutil.iter_modules(nograd.rules.__path__):     # a rule file not yet in __init__
        importlib.import_module(f"nograd.rules.{mod.name}")
    check_registry_complete(available_rules(), ENTRIES)
    for e in ENTRIES:
        assert set(e.known) <= CHECKS, f"{e.name}: known failures of unknown checks {e.known}"


@pytest.mark.parametrize("entry", over("determinism"))
def test_same_seed_same_update(entry):
    check_determinism(entry)


@pytest.mark.parametrize("entry", over("refusal", [e for e in ENTRIES if e.refuse]))
def test_a_model_the_rule_cannot_train_is_refused_by_name(entry):
    check_refusal(entry)


@pytest.mark.parametrize("entry", over("grads-keys"))
def test_grads_are_keyed_shaped_and_typed_like_the_arrays(entry):
    check_grads_keys(entry)


@pytest.mark.parametrize("entry", over("grads-change-nothing"))
def test_grads_change_nothing_in_the_model(entry):
    check_grads_change_nothing(entry)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("entry", over("dtypes"))
def test_float32_and_float64_models_train_and_keep_their_dtype(entry, dtype):
    check_dtypes(entry, dtype)


@pytest.mark.parametrize("entry", over("fit"))
def test_a_short_fit_lowers_the_training_loss(entry):
    check_fit(entry)


@pytest.mark.parametrize("entry", over("bad-input"))
def test_bad_batches_are_clear_errors(entry):
    check_bad_input(entry)


@pytest.mark.parametrize("entry", over("refused-batch-changes-nothing"))
def test_a_refused_batch_leaves_the_model_as_it_was(entry):
    check_refused_batch_changes_nothing(entry)


# ============================================================================ the checks can fail
class _Noisy(Backprop):
    """Adds noise from fresh OS entropy: not reproducible from any seed."""

    def grads(self, model, x, y, *, rng=None):
        g, info = super().grads(model, x, y, rng=rng)
        noise = np.random.default_rng()
        return {k: v + noise.standard_normal(v.shape).astype(v.dtype) for k, v in g.items()}, info


class _Float64(Backprop):
    def grads(self, model, x, y, *, rng=None):
        g, info = super().grads(model, x, y, rng=rng)
        return {k: v.astype(np.float64) for k, v in g.items()}, info


class _ExtraName(Backprop):
    def grads(self, model, x, y, *, rng=None):
        g, info = super().grads(model, x, y, rng=rng)
        return {**g, "head.weight": np.zeros(2, np.float32)}, info


class _Frozen(Backprop):
    def grads(self, model, x, y, *, rng=None):
        g, info = super().grads(model, x, y, rng=rng)
        return {k: np.zeros_like(v) for k, v in g.items()}, info


class _SwallowsNaN(Backprop):
    def grads(self, model, x, y, *, rng=None):
        return super().grads(model, np.nan_to_num(x), y, rng=rng)


class _Meddling(Backprop):
    """Moves a weight before it looks at the batch."""

    def grads(self, model, x, y, *, rng=None):
        model.params["0.bias"][0] += 1
        return super().grads(model, x, y, rng=rng)


class _Lenient(FA):
    def check_model(self, model):
        pass


class _Vague(FA):
    def check_model(self, model):
        raise ValueError("cannot train this model")


MUTATIONS = [
    ("unseeded-noise", check_determinism, "backprop", _Noisy, {}),
    ("deterministic-rule-called-random", check_determinism, "backprop", None, {"random": True}),
    ("random-rule-called-deterministic", check_determinism, "fa", None, {"random": False}),
    ("refuses-nothing", check_refusal, "fa", _Lenient, {}),
    ("refusal-names-nothing", check_refusal, "fa", _Vague, {}),
    ("unknown-name", check_grads_keys, "backprop", _ExtraName, {}),
    ("float64-directions", check_grads_keys, "backprop", _Float64, {}),
    ("float64-directions-for-float32", partial(check_dtypes, dtype=np.float32), "backprop",
     _Float64, {}),
    ("grads-moves-a-weight", check_grads_change_nothing, "backprop", _Meddling, {}),
    ("no-learning", check_fit, "backprop", _Frozen, {}),
    ("bar-below-what-it-reaches", check_fit, "backprop", None, {"loss_ratio": 0.01}),
    ("nan-swallowed", check_bad_input, "backprop", _SwallowsNaN, {}),
    ("moves-a-weight-then-refuses", check_refused_batch_changes_nothing, "backprop", _Meddling, {}),
]


@pytest.mark.parametrize("check, name, broken, change", [m[1:] for m in MUTATIONS],
                         ids=[m[0] for m in MUTATIONS])
def test_each_check_catches_a_broken_rule(check, name, broken, change, monkeypatch):
    entry = replace(BY_NAME[name], **change)
    if broken is not None:                    # get_rule(name) now builds the broken class
        monkeypatch.setitem(rules_base._REGISTRY, name, broken)
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        check(entry)


def test_the_completeness_check_catches_a_missing_and_an_extra_entry():
    names = available_rules()
    with pytest.raises(AssertionError, match="without an entry.*'made-up'"):
        check_registry_complete(names + ["made-up"], ENTRIES)
    with pytest.raises(AssertionError, match="for no registered rule.*'made-up'"):
        check_registry_complete(names, ENTRIES + [RuleEntry("made-up")])
    with pytest.raises(AssertionError, match="two entries"):
        check_registry_complete(names, ENTRIES + [ENTRIES[0]])
