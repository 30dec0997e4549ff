"""Issue #23 (VCAS wall time): the shortcuts of the sampled backward compute the paper's estimator.
Zeroing dropped samples instead of gathering the kept ones gives the same gradients from the same
draws; the controller's activation-sampled passes computed from the exact pass are the sampled
passes run for real (same draws, same V_act terms and leverage scores); a dense layer whose ν is
above the break-even computes its weight gradient exactly and counts it; the measurement's exact
pass with parts is backprop; the gather buffers and the de-duplicated gathers change nothing."""
import numpy as np
import pytest

from nograd.core import Sequential
from nograd.core.losses import get_loss
from nograd.layers import Linear, Tanh
from nograd.models.gpt import GPT
from nograd.models.vit import ViT
from nograd.rules import VCAS, Backprop
from nograd.rules.vcas_control import act_pass
from nograd.rules.vcas_walk import Pass, structure, take_rows

G = np.random.default_rng


def _case(which):
    rng = G(3)
    if which == "mlp":
        r = G(0)
        model = Sequential(Linear(6, 16, rng=r, dtype=np.float64), Tanh(),
                           Linear(16, 16, rng=r, dtype=np.float64), Tanh(),
                           Linear(16, 3, rng=r, dtype=np.float64))
        x, y = rng.normal(size=(16, 6)), rng.integers(0, 3, 16)
    elif which == "gpt":
        model = GPT(11, n_layer=2, n_head=2, n_embd=8, block_size=6, bias=True, rng=0,
                    dtype=np.float64)
        x, y = rng.integers(0, 11, (8, 6)), rng.integers(0, 11, (8, 6))
    else:
        model = ViT((4, 4), 2, 1, 5, dim=8, depth=3, heads=2, pool="cls", dropout=0.1, rng=0,
                    dtype=np.float64)
        x, y = rng.normal(size=(12, 1, 4, 4)), rng.integers(0, 5, 12)
    kind, samplers, dense = structure(model)
    out, cache = model.forward(x, train=True, rng=G(5))
    _, dout = get_loss("cross-entropy")(out, y)
    return model, kind, samplers, dense, cache, dout


WHICH = ["mlp", "gpt", "vit"]


@pytest.mark.parametrize("which", WHICH)
def test_zeroing_the_dropped_samples_is_gathering_the_kept_ones(which):
    """mask_above = 0 (always zero the dropped rows) and 2 (always gather): from the same
    generator state the same samples survive and every gradient agrees to rounding; the zeroed
    pass counts the zero rows it computed, so it reports more FLOPs done."""
    model, kind, samplers, dense, cache, dout = _case(which)
    n = dout.shape[0]
    act = dict(zip(samplers, np.linspace(0.35, 0.8, len(samplers))))
    nu = {d: 0.5 for d in dense}
    for seed in range(4):
        a = Pass("vcas", n, act, nu, G(seed), mask_above=0.0).run(model, kind, cache, dout)
        b = Pass("vcas", n, act, nu, G(seed), mask_above=2.0).run(model, kind, cache, dout)
        np.testing.assert_array_equal(a.idx, b.idx)
        assert 0 < len(b.idx) < n
        assert sorted(a.grads) == sorted(b.grads)
        for k in a.grads:
            np.testing.assert_allclose(a.grads[k], b.grads[k], rtol=1e-10, atol=1e-13, err_msg=k)
        done_a = sum(f[0] for f in a.flops.values())
        done_b = sum(f[0] for f in b.flops.values())
        assert done_a > done_b
        assert [f[1] for f in a.flops.values()] == pytest.approx([f[1] for f in b.flops.values()])


@pytest.mark.parametrize("which", WHICH)
def test_the_controllers_sampled_passes_from_the_exact_pass_are_the_real_ones(which):
    """V_act's terms: ||W_act - W||² summed over the sampled dense weights and the leverage scores
    of the alive rows, from act_pass (per-sample factors on the exact pass's cotangents) and
    from an activation-sampled Pass run for real, with the same generator state: equal to
    rounding, for passes that keep some samples and (at small ratios) none."""
    model, kind, samplers, dense, cache, dout = _case(which)
    n = dout.shape[0]
    owner = {d: next(s for s in samplers if d == s or d.startswith(s + ".")) for d in dense}
    for ratios in (np.linspace(0.3, 0.9, len(samplers)), np.full(len(samplers), 0.95),
                   np.full(len(samplers), 0.02)):
        act = dict(zip(samplers, ratios))
        exact = Pass("exact", n, act, {d: 0.5 for d in dense}, None, parts=2).run(
            model, kind, cache, dout)
        for seed in range(5):
            real = Pass("act", n, act, {d: 0.5 for d in dense}, G(seed)).run(model, kind, cache,
                                                                             dout)
            want = sum(float(((real.grads.get(d + ".weight", 0.0) - exact.grads[d + ".weight"])
                              ** 2).sum()) for d in dense)
            dev, scores, _ = act_pass(exact, samplers, owner, act, n, G(seed))
            assert dev == pytest.approx(want, rel=1e-9, abs=1e-15)
            assert sorted(scores) == sorted(real.scores)
            for d in scores:
                np.testing.assert_allclose(scores[d], real.scores[d], rtol=1e-9, err_msg=d)


def test_a_weight_ratio_above_the_break_even_computes_the_exact_product_and_counts_it():
    """row_overhead κ: a layer in → out with ν ≥ 1 - κ(1/in + 1/out) takes the exact weight
    gradient (zero added variance) and the FLOP counter counts the full product; with κ = 0 the
    paper's sampler runs (fewer FLOPs, a different gradient)."""
    model, kind, samplers, dense, cache, dout = _case("vit")
    n = dout.shape[0]
    act = {s: 1.0 for s in samplers}
    nu = {d: 0.6 for d in dense}
    exact = Pass("exact", n, act, nu, None).run(model, kind, cache, dout)
    fast = Pass("vcas", n, act, nu, G(0), row_overhead=4.0).run(model, kind, cache, dout)
    paper = Pass("vcas", n, act, nu, G(0), row_overhead=0.0).run(model, kind, cache, dout)
    for d in dense:                  # 8 → 24, 8 → 16, ...: 1 - 4 (1/in + 1/out) <= 1/3 < 0.6
        np.testing.assert_allclose(fast.grads[d + ".weight"], exact.grads[d + ".weight"],
                                   rtol=1e-12, err_msg=d)
        assert fast.flops[d][0] == fast.flops[d][1] == exact.flops[d][0]
        assert paper.flops[d][0] < paper.flops[d][1]
    # (the top block's MLP rows other than the class token's have zero cotangents: there the
    # budget covers every positive row and even the paper's sampler is exact)
    assert sum(not np.allclose(paper.grads[d + ".weight"], exact.grads[d + ".weight"])
               for d in dense) >= len(dense) // 2
    # the rule's default κ on a layer 64 → 64 switches at ν = 1 - 13·(2/64) = 0.594
    rule = VCAS()
    assert rule.row_overhead == 13.0
    with pytest.raises(ValueError, match="row_overhead"):
        VCAS(row_overhead=-1)
    with pytest.raises(ValueError, match="mask_above"):
        VCAS(mask_above=0)


@pytest.mark.parametrize("which", WHICH)
def test_the_measurements_exact_pass_with_parts_is_backprop(which):
    """parts=2: the gradient is backprop's; each sampled dense layer's per-part products are the
    backprop gradients of the two halves' summed losses; the sampled passes' top cotangent is
    kept."""
    model, kind, samplers, dense, cache, dout = _case(which)
    n = dout.shape[0]
    p = Pass("exact", n, {}, {d: 0.5 for d in dense}, None, parts=2).run(model, kind, cache, dout)
    _, want = model.backward(cache, dout, need_dx=False)
    for k, v in want.items():
        np.testing.assert_allclose(p.grads[k], v, rtol=1e-10, atol=1e-14, err_msg=k)
    for lo, hi in ((0, n // 2), (n // 2, n)):
        mask = np.zeros((n,) + (1,) * (dout.ndim - 1))
        mask[lo:hi] = 1
        _, half = model.backward(cache, dout * mask, need_dx=False)
        for d in dense:
            np.testing.assert_allclose(p.part_grads[d][lo > 0], half[d + ".weight"], rtol=1e-10,
                                       atol=1e-14, err_msg=d)
    assert p.top is not None and p.top.shape[0] == n
    with pytest.raises(ValueError, match="parts"):
        Pass("vcas", n, {}, {}, None, parts=2)


def test_gathers_into_reused_buffers_and_shared_arrays_change_nothing():
    """The pool of gather buffers (kept by the rule across steps) and the de-duplicated gather of
    an array held twice give the gradients of fresh gathers, step after step."""
    model, kind, samplers, dense, cache, dout = _case("vit")
    n = dout.shape[0]
    act, nu = {s: 0.4 for s in samplers}, {d: 0.5 for d in dense}
    pool = {}
    for seed in range(3):
        a = Pass("vcas", n, act, nu, G(seed), mask_above=2.0, pool=pool).run(model, kind, cache, dout)
        b = Pass("vcas", n, act, nu, G(seed), mask_above=2.0).run(model, kind, cache, dout)
        for k in b.grads:
            np.testing.assert_array_equal(a.grads[k], b.grads[k], err_msg=k)
    assert pool
    shared = np.arange(12.0).reshape(4, 3)
    got = take_rows({"a": shared, "b": (shared, 2.0, None), "c": (4, 3)}, np.array([0, 2]), 4)
    assert got["a"] is got["b"][0] and got["c"] == (2, 3)
    np.testing.assert_array_equal(got["a"], shared[[0, 2]])


def test_the_rule_with_the_shortcuts_trains_like_backprop_at_ratio_one():
    """A controller step (exact pass with parts, no sampled pass at ratios 1) and a sampled step
    at ratios 1 both give backprop's gradient, and the rule reports per-thread CPU seconds."""
    model, kind, samplers, dense, cache, dout = _case("gpt")
    rng = G(2)
    x, y = rng.integers(0, 11, (5, 6)), rng.integers(0, 11, (5, 6))
    want, _ = Backprop().grads(model, x, y, rng=G(7))
    for freq in (1, 2):
        rule = VCAS(freq=freq)
        got, info = rule.grads(model, x, y, rng=G(7))
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-14, err_msg=k)
        assert info["backward_cpu_seconds"] >= 0 and rule.totals["backward_cpu_seconds"] >= 0
        assert (info["controller"] is not None) == (freq == 1)
