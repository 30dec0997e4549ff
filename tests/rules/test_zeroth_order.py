"""Zeroth-order rules: MeZO's in-place probes and update, SPSA, any objective, fit and the CLI."""
import json

import numpy as np
import pytest

from nograd.core import Sequential
from nograd.core.losses import softmax_cross_entropy
from nograd.core.optim import SGD, Adam
from nograd.data import blobs, spirals
from nograd.layers import LayerNorm, Linear, ReLU, Tanh
from nograd.metrics import cosine
from nograd.rules import MeZO, SPSA, Backprop, available_rules, get_rule
from nograd.rules.zeroth_order import _CHUNK, select_params, zero_one_loss
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
