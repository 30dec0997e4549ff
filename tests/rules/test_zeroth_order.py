"""Zeroth-order rules: MeZO's in-place probes and update, SPSA, any objective, fit and the CLI;
batch-norm running statistics and refused batches (issue #19, item 7)."""
import json

import numpy as np
import pytest

from nograd.core import Sequential
from nograd.core.checks import NonFiniteError
from nograd.core.losses import softmax_cross_entropy
from nograd.core.optim import SGD, Adam
from nograd.data import blobs, spirals
from nograd.layers import BatchNorm1d, LayerNorm, Linear, ReLU, Tanh
from nograd.metrics import cosine
from nograd.rules import MeZO, SPSA, Backprop, available_rules, get_rule
from nograd.rules.zeroth_order import _CHUNK, loss_objective, select_params, zero_one_loss
from nograd.train import fit


def mlp32(seed=0, width=64):
    rng = np.random.default_rng(seed)
    return Sequential(Linear(20, width, rng=rng), ReLU(), LayerNorm(width),
                      Linear(width, 3, rng=rng))


def batch32(n=16, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 20)).astype(np.float32), rng.integers(0, 3, n)


def snapshot(net):
    return {k: a.copy() for k, a in net.params.items()}


def same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def regression(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    return X, X @ rng.normal(size=(5, 1)).astype(np.float32) + 0.5


def test_registered_by_name():
    assert {"spsa", "mezo"} <= set(available_rules())
    assert isinstance(get_rule("mezo"), MeZO) and isinstance(get_rule("spsa"), SPSA)
    # MeZO updates in place through its own step; SPSA keeps the default (grads, then optimizer.step)
    from nograd.rules.base import Rule

    assert MeZO.step is not Rule.step and SPSA.step is Rule.step


def test_mezo_exact_restore_gives_the_parameters_back_bit_for_bit_when_lr_is_0():
    # a weight larger than one chunk of z, so the chunked regeneration is exercised too
    net = Sequential(Linear(300, 256, rng=0), ReLU(), Linear(256, 3, rng=1))
    assert net.params["0.weight"].size > _CHUNK
    x, y = np.random.default_rng(0).normal(size=(8, 300)).astype(np.float32), np.arange(8) % 3
    before = snapshot(net)
    rule = MeZO(exact_restore=True, n=2)
    for s in range(3):
        info = rule.step(net, x, y, lr=0.0, rng=s)
        assert same(before, net.params)
        assert info["restore_entries"] > 0          # the side table was needed and used
        g, _ = rule.grads(net, x, y, rng=s)
        assert same(before, net.params)


def test_mezo_paper_arithmetic_restores_to_rounding():
    """θ+εz, θ−2εz, θ+εz in float32: equal to θ up to a few ulps (not bit for bit in general)."""
    net, (x, y) = mlp32(), batch32()
    before = snapshot(net)
    MeZO().step(net, x, y, lr=0.0, rng=0)
    for k, a in net.params.items():
        bound = 4 * np.spacing(np.abs(before[k]) + 0.01)        # |2εz| < 0.01 here
        assert np.all(np.abs(a - before[k]) <= bound), k


def test_mezo_step_is_algorithm_1():
    """g = (l+ − l−)/2ε with z regenerated from the seed; θ ← θ − lr (g z + λθ) (biases skip λ)."""
    net, (x, y) = mlp32(), batch32()
    before = snapshot(net)
    lr, wd = 0.01, 0.1
    rule = MeZO(exact_restore=True, weight_decay=wd)
    info = rule.step(net, x, y, lr=lr, rng=0)
    seed, g = info["seed"], info["projected_grads"][0]
    z = {k: np.random.default_rng([seed, 0, i]).standard_normal(a.shape, dtype=np.float32)
         for i, (k, a) in enumerate(before.items())}
    plus = {k: before[k] + np.float32(rule.eps) * z[k] for k in before}
    minus = {k: before[k] - np.float32(rule.eps) * z[k] for k in before}
    lp = softmax_cross_entropy(net(x, params=plus), y)[0]
    lm = softmax_cross_entropy(net(x, params=minus), y)[0]
    assert np.isclose(g, (lp - lm) / (2 * rule.eps), rtol=1e-3)
    for k in before:
        decay = 0.0 if k.endswith("bias") or k.startswith("2.") else wd     # "2." is the LayerNorm
        expect = before[k] - np.float32(lr) * (np.float32(g) * z[k] + np.float32(decay) * before[k])
        np.testing.assert_allclose(net.params[k], expect, rtol=1e-5, atol=1e-7, err_msg=k)


def test_mezo_projected_gradient_is_the_directional_derivative():
    net = Sequential(Linear(20, 16, rng=0, dtype=np.float64), Tanh(),
                     Linear(16, 3, rng=1, dtype=np.float64))
    x, y = batch32()
    x = x.astype(np.float64)
    rule = MeZO(eps=1e-5)
    _, info = rule.grads(net, x, y, rng=0)
    true, _ = Backprop().grads(net, x, y)
    z = {k: np.random.default_rng([info["seed"], 0, i]).standard_normal(a.shape)
         for i, (k, a) in enumerate(net.params.items())}
    exact = sum(float(np.sum(true[k] * z[k])) for k in true)
    assert np.isclose(info["projected_grads"][0], exact, rtol=1e-6)


def test_mezo_converges_on_a_convex_problem():
    X, Y = regression()
    net = Sequential(Linear(5, 1, rng=0))
    rule, rng = MeZO("mse"), np.random.default_rng(1)
    first = rule.step(net, X, Y, lr=0.05, rng=rng)["loss"]
    for _ in range(300):
        last = rule.step(net, X, Y, lr=0.05, rng=rng)["loss"]
    assert last < 1e-4 * first, (first, last)


def test_mezo_same_seed_same_run_through_fit():
    def run(optimizer):
        X, y = spirals(30, 3, rng=0)
        net = Sequential(Linear(2, 16, rng=0), ReLU(), Linear(16, 3, rng=1))
        opt = (SGD(net.params, lr=0.01) if optimizer == "sgd" else Adam(net.params, lr=0.01))
        hist = fit(net, MeZO(), opt, (X, y), epochs=3, batch_size=30, rng=7, progress=False)
        return snapshot(net), hist["loss"]

    for optimizer in ("sgd", "adam"):
        (a, la), (b, lb) = run(optimizer), run(optimizer)
        assert same(a, b) and la == lb


def test_fit_uses_the_in_place_step_and_trains():
    X, y = blobs(150, 3, n_features=2, rng=0)
    net = Sequential(Linear(2, 3, rng=0))
    calls = []

    class Counting(MeZO):
        def grads(self, *a, **k):
            calls.append(1)
            return super().grads(*a, **k)

    hist = fit(net, Counting(eps=1e-2), SGD(net.params, lr=0.02), (X, y), epochs=30,
               batch_size=50, rng=0, progress=False)
    assert not calls
    assert hist["loss"][-1] < 0.5 * hist["loss"][0], hist["loss"][::10]


def test_non_differentiable_objective_is_accepted_and_lowered():
    X, y = blobs(300, 3, n_features=2, rng=0)
    for rule in (MeZO(objective="zero-one", eps=0.1), SPSA(objective="zero-one", eps=0.1)):
        net = Sequential(Linear(2, 3, rng=0))
        start = zero_one_loss(net, X, y)[0]
        rng, opt = np.random.default_rng(1), SGD(net.params, lr=0.5)
        for _ in range(150):
            if isinstance(rule, MeZO):
                rule.step(net, X, y, lr=0.5, rng=rng)
            else:
                opt.step(rule.grads(net, X, y, rng=rng)[0])
        end = zero_one_loss(net, X, y)[0]
        assert start > 0.5 and end < 0.1, (rule, start, end)
    # any callable, returning a bare float
    net = Sequential(Linear(2, 3, rng=0))
    f1 = lambda model, xb, yb: float(np.mean(model(xb).argmax(1) != yb))   # noqa: E731
    info = MeZO(objective=f1).step(net, X, y, lr=0.1, rng=0)
    assert info["output"] is None and 0 <= info["loss"] <= 1


def test_parameter_subset_and_weight_decay_exclusions():
    net, (x, y) = mlp32(), batch32()
    before = snapshot(net)
    MeZO(params="3.*").step(net, x, y, lr=0.01, rng=0)           # others neither probed nor moved
    changed = {k for k in before if not np.array_equal(before[k], net.params[k])}
    assert changed == {"3.weight", "3.bias"}
    # a constant objective: g = 0, so the step is the weight decay alone
    net = mlp32()
    before = snapshot(net)
    MeZO(objective=lambda m, xb, yb: 1.0, weight_decay=0.5,
         exact_restore=True).step(net, x, y, lr=0.1, rng=0)
    for k in before:
        if k.endswith("bias") or k.startswith("2."):          # biases and the LayerNorm: no decay
            assert np.array_equal(before[k], net.params[k]), k
        else:
            np.testing.assert_allclose(net.params[k], 0.95 * before[k], rtol=1e-6)
    with pytest.raises(ValueError, match="selects no parameter"):
        select_params(net, "9.*")


def test_spsa_is_unbiased_restores_exactly_and_converges():
    net = Sequential(Linear(20, 8, rng=0, dtype=np.float64), Tanh(),
                     Linear(8, 3, rng=1, dtype=np.float64))
    x, y = batch32()
    x = x.astype(np.float64)
    before = snapshot(net)
    g, _ = SPSA(eps=1e-4, n=3000).grads(net, x, y, rng=0)
    assert same(before, net.params)
    true, _ = Backprop().grads(net, x, y)
    assert cosine(g, true) > 0.9
    X, Y = regression()
    lin, rule, rng = Sequential(Linear(5, 1, rng=0)), SPSA("mse"), np.random.default_rng(1)
    opt = SGD(lin.params, lr=0.05)
    first = None
    for _ in range(300):
        grads, info = rule.grads(lin, X, Y, rng=rng)
        first = first or info["loss"]
        opt.step(grads)
    assert info["loss"] < 1e-4 * first


def test_divergence_and_bad_arguments():
    net, (x, y) = mlp32(), batch32()
    before = snapshot(net)
    with pytest.raises(FloatingPointError, match="not finite"):
        MeZO(objective=lambda m, xb, yb: float("nan"), exact_restore=True).step(net, x, y, lr=0.1,
                                                                                rng=0)
    assert same(before, net.params)                       # probed, restored, not updated

    def boom(m, xb, yb):
        raise RuntimeError("objective failed")

    for rule in (MeZO(objective=boom, exact_restore=True), SPSA(objective=boom)):
        with pytest.raises(RuntimeError, match="objective failed"):
            rule.grads(net, x, y, rng=0)
        assert same(before, net.params)                   # restored even after a raise
    with pytest.raises(TypeError, match="exactly one"):
        MeZO().step(net, x, y, rng=0)
    with pytest.raises(TypeError, match="objective"):
        MeZO(objective=3)
    with pytest.raises(ValueError, match="eps"):
        SPSA(eps=0)
    with pytest.raises(TypeError, match="number"):
        MeZO(objective=lambda m, xb, yb: "high").step(net, x, y, lr=0.1, rng=0)


def test_compare_cli_runs_mezo_through_fit(capsys):
    from nograd.__main__ import main

    assert main(["compare", "--rules", "mezo,spsa", "--epochs", "1", "--json", "--no-memory"]) == 0
    lines = [json.loads(s) for s in capsys.readouterr().out.strip().splitlines()]
    assert [r["rule"] for r in lines] == ["mezo", "spsa"]
    assert all(0 <= r["test_accuracy"] <= 1 and r["optimizer"] == "sgd" for r in lines)


# --------------------------------------------------------------------------- batch-norm statistics
class Counting(Sequential):
    """A Sequential that records the ``train`` flag of every inference pass (``model(x)``)."""

    def __init__(self, *layers):
        super().__init__(*layers)
        self.passes = []

    def __call__(self, x, *, train=False, rng=None, params=None):
        self.passes.append(bool(train))
        return super().__call__(x, train=train, rng=rng, params=params)


def bn_net(dtype=np.float64, counting=False):
    """Linear → BN → ReLU → Linear → BN → Tanh → Linear, running statistics away from (0, 1)."""
    rng = np.random.default_rng(3)
    net = (Counting if counting else Sequential)(
        Linear(5, 6, rng=rng, dtype=dtype), BatchNorm1d(6, dtype=dtype), ReLU(),
        Linear(6, 4, rng=rng, dtype=dtype), BatchNorm1d(4, dtype=dtype), Tanh(),
        Linear(4, 3, rng=rng, dtype=dtype))
    for k, b in net.buffers.items():                    # a model that has trained a while
        b[...] = rng.uniform(0.5, 1.5, b.shape) if k.endswith("var") else rng.normal(size=b.shape)
    return net


def bn_batch(dtype=np.float64, n=24):
    rng = np.random.default_rng(4)
    return (rng.normal(2.0, 3.0, size=(n, 5)).astype(dtype),       # off-centre, not unit scale
            rng.integers(0, 3, n))


def running_stats_after_a_training_pass(params, buffers, x, momentum=0.1, eps=1e-5):
    """The buffers of ``bn_net`` after one training-mode pass at ``params``, written out from
    Ioffe & Szegedy (2015), "Batch Normalization", Alg. 1 (normalise by the batch mean and biased
    variance in training) and the moving averages that stand for Alg. 2's population statistics
    (PyTorch's convention: m ← (1 − α) m + α μ_B, v ← (1 − α) v + α n/(n − 1) σ²_B, α = 0.1)."""
    def bn(h, name):
        mu, var = h.mean(0), h.var(0)
        out = (h - mu) / np.sqrt(var + eps) * params[f"{name}.weight"] + params[f"{name}.bias"]
        n = len(h)
        moved = {f"{name}.running_mean": (1 - momentum) * buffers[f"{name}.running_mean"] + momentum * mu,
                 f"{name}.running_var": (1 - momentum) * buffers[f"{name}.running_var"]
                 + momentum * var * n / (n - 1)}
        return out, moved

    h, first = bn(x @ params["0.weight"].T + params["0.bias"], "1")
    _, second = bn(np.maximum(h, 0) @ params["3.weight"].T + params["3.bias"], "4")
    return {**first, **second}


@pytest.mark.parametrize("make", [lambda: MeZO(n=2), lambda: MeZO(n=2, exact_restore=True),
                                  lambda: SPSA(n=2)], ids=["mezo", "mezo-exact", "spsa"])
def test_running_statistics_move_once_per_step_from_the_unperturbed_training_pass(make):
    """Issue #19 item 7: the objective runs in evaluation mode, so the probes alone never moved a
    batch norm's running statistics. Now a step moves them once, exactly as one training-mode
    pass at the unperturbed θ does (the deeper norm sees the lower one normalised by the batch)."""
    net, (x, y) = bn_net(), bn_batch()
    theta, buffers = snapshot(net), {k: b.copy() for k, b in net.buffers.items()}
    expect = running_stats_after_a_training_pass(theta, buffers, x)
    rule = make()
    if isinstance(rule, MeZO):
        rule.step(net, x, y, lr=0.05, rng=0)           # θ moves too: the pass is at θ before
        assert not same(theta, net.params)
    else:
        rule.grads(net, x, y, rng=0)
    assert set(expect) == set(net.buffers)
    for k, b in net.buffers.items():
        assert not np.allclose(b, buffers[k]), k                        # they moved ...
        np.testing.assert_allclose(b, expect[k], rtol=1e-12, err_msg=k)  # ... once, from θ


def test_the_statistics_pass_is_one_extra_forward_only_for_models_with_buffers():
    x, y = bn_batch()
    for rule in (MeZO(n=2), SPSA(n=2)):
        net = bn_net(counting=True)
        call = (lambda: rule.step(net, x, y, lr=0.01, rng=0)) if isinstance(rule, MeZO) \
            else (lambda: rule.grads(net, x, y, rng=0))
        call()
        assert net.passes == [True] + [False] * 4, (rule, net.passes)  # then the 2n probes
        plain = Counting(Linear(5, 6, rng=0, dtype=np.float64), Tanh(),
                         Linear(6, 3, rng=1, dtype=np.float64))
        (rule.step(plain, x, y, lr=0.01, rng=0) if isinstance(rule, MeZO)
         else rule.grads(plain, x, y, rng=0))
        assert plain.passes == [False] * 4, (rule, plain.passes)       # no buffers: the probes


def test_update_buffers_false_keeps_the_statistics_frozen_as_the_authors_eval_mode_does():
    x, y = bn_batch()
    for rule in (MeZO(update_buffers=False), SPSA(update_buffers=False)):
        net = bn_net()
        buffers = {k: b.copy() for k, b in net.buffers.items()}
        (rule.step(net, x, y, lr=0.01, rng=0) if isinstance(rule, MeZO)
         else rule.grads(net, x, y, rng=0))
        assert all(np.array_equal(b, buffers[k]) for k, b in net.buffers.items()), rule
    with pytest.raises(TypeError, match="update_buffers"):
        MeZO(update_buffers="yes")
    with pytest.raises(TypeError, match="update_buffers"):
        SPSA(update_buffers=1)


def test_fit_with_mezo_moves_the_running_statistics():
    X, y = bn_batch(np.float32, n=96)
    net = bn_net(np.float32)
    buffers = {k: b.copy() for k, b in net.buffers.items()}
    fit(net, MeZO(), SGD(net.params, lr=1e-3), (X, y), epochs=2, batch_size=32, rng=0,
        progress=False)
    assert all(not np.allclose(b, buffers[k]) for k, b in net.buffers.items())


def test_a_failed_step_puts_the_running_statistics_back():
    x, y = bn_batch()
    net = bn_net()
    theta, buffers = snapshot(net), {k: b.copy() for k, b in net.buffers.items()}
    nan = lambda m, xb, yb: float("nan")                  # noqa: E731
    for rule, diverging in ((MeZO(exact_restore=True), MeZO(exact_restore=True, objective=nan)),
                            (SPSA(), SPSA(objective=nan))):
        with pytest.raises(ValueError, match="target"):       # the loss refuses y of shape (N, 1)
            rule.grads(net, x, y[:, None], rng=0)
        with pytest.raises(FloatingPointError, match="not finite"):
            diverging.grads(net, x, y, rng=0)
        assert all(np.array_equal(b, buffers[k]) for k, b in net.buffers.items()), rule
    assert same(theta, net.params)


# --------------------------------------------------------------------------- refused batches
def _counting_objective(calls):
    inner = loss_objective("cross-entropy")

    def objective(model, x, y):
        calls.append(1)
        return inner(model, x, y)
    return objective


@pytest.mark.parametrize("model", ["mlp", "batch-norm"])
@pytest.mark.parametrize("kind", ["mezo", "mezo-n2", "spsa"])
def test_a_batch_with_a_wrong_y_or_a_nan_is_refused_before_theta_is_touched(kind, model):
    """x must be finite and y must have len(x) targets; both are checked before θ + εz, so MeZO's
    default arithmetic (which restores θ only to an ulp) leaves θ, and the buffers, bit for bit."""
    net = bn_net(np.float32) if model == "batch-norm" else mlp32(width=8)
    x, y = bn_batch(np.float32) if model == "batch-norm" else batch32()
    nan = x.copy()
    nan[2, 1] = np.nan
    theta, buffers = snapshot(net), {k: b.copy() for k, b in net.buffers.items()}
    calls = []
    rule = {"mezo": MeZO, "mezo-n2": lambda **k: MeZO(n=2, **k),
            "spsa": SPSA}[kind](objective=_counting_objective(calls))
    for xb, yb, error, pattern in [(x, y[:-1], ValueError, r"\by\b.*len\(x\)"),
                                   (x, np.concatenate([y, y[:1]]), ValueError, r"\by\b"),
                                   (nan, y, NonFiniteError, r"\bx\b.*NaN")]:
        with pytest.raises(error, match=pattern):
            rule.grads(net, xb, yb, rng=0)
        if isinstance(rule, MeZO):
            with pytest.raises(error, match=pattern):
                rule.step(net, xb, yb, lr=0.1, rng=0)
        assert same(theta, net.params)
        assert all(np.array_equal(b, buffers[k]) for k, b in net.buffers.items())
    assert not calls                                     # the objective never ran


def test_a_nan_regression_target_is_refused_before_theta_is_touched():
    X, Y = regression(32)
    Y[3, 0] = np.nan
    net = Sequential(Linear(5, 1, rng=0))
    theta = snapshot(net)
    for rule in (MeZO("mse"), SPSA("mse")):
        with pytest.raises(NonFiniteError, match=r"\by\b.*NaN"):
            rule.grads(net, X, Y, rng=0)
        assert same(theta, net.params)
