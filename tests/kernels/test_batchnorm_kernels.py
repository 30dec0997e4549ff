"""Batch-norm kernels (nograd.kernels.batchnorm) against their NumPy references, the statistics
against float64 two-pass values on data with a large mean, the fused ReLU's mask against the
forward's output, and BatchNorm2d / FusedSequential(BatchNorm2d → ReLU) against the NumPy layer
code they replace (issue 28).

Tolerances: float64 to 1e-12 (relative to the arrays' scale); float32 to 2e-5 for outputs and
input cotangents (relative to their scale), the variance to 1e-5 relative — the reference itself
computes in float32 (its sums over up to 400 values carry ~1e-6), the kernels sum in float64.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nograd.core import Sequential
from nograd.core.checks import NonFiniteError
from nograd.kernels.batchnorm import (batchnorm_backward, batchnorm_backward_ref, batchnorm_forward,
                                      batchnorm_forward_ref)
from nograd.layers import BatchNorm1d, BatchNorm2d, Conv2d, FusedSequential, ReLU

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)
TOL = {np.float64: 1e-12, np.float32: 2e-5}


def close(a, b, tol):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(1.0, float(np.abs(b).max()))
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= tol * scale, (np.abs(a - b).max(), tol * scale)


@st.composite
def case(draw):
    g = dict(N=draw(st.integers(1, 4)), C=draw(st.integers(1, 5)), H=draw(st.integers(1, 7)),
             W=draw(st.integers(1, 7)), dtype=draw(st.sampled_from([np.float32, np.float64])),
             relu=draw(st.booleans()), affine=draw(st.sampled_from(["none", "gamma", "both"])),
             offset=draw(st.sampled_from([0.0, 3.0, -50.0])), seed=draw(st.integers(0, 2**31)))
    if g["N"] * g["H"] * g["W"] < 2:
        g["W"] += 1
    return g


def arrays(g):
    rng = np.random.default_rng(g["seed"])
    dt, C = g["dtype"], g["C"]
    x = (g["offset"] + rng.uniform(0.5, 2, (1, C, 1, 1)) * rng.standard_normal((g["N"], C, g["H"], g["W"])))
    gamma = None if g["affine"] == "none" else rng.uniform(-2, 2, C).astype(dt)
    beta = rng.standard_normal(C).astype(dt) if g["affine"] == "both" else None
    return x.astype(dt), gamma, beta, rng.standard_normal(x.shape).astype(dt)


@SETTINGS
@given(g=case())
def test_kernels_match_the_numpy_reference(g):
    x, gamma, beta, dy = arrays(g)
    tol = TOL[g["dtype"]]
    y, stats = batchnorm_forward(x, gamma, beta, 1e-5, g["relu"])
    y0, (mean0, var0, r0) = batchnorm_forward_ref(x, gamma, beta, 1e-5, g["relu"])
    assert y.dtype == x.dtype and y.shape == x.shape
    close(y, y0, tol)
    close(stats[0], mean0, tol)
    np.testing.assert_allclose(stats[1], var0, rtol=tol if g["dtype"] == np.float64 else 1e-5, atol=1e-30)
    np.testing.assert_allclose(stats[2], r0, rtol=tol if g["dtype"] == np.float64 else 1e-5)
    dx, dgamma, dbeta = batchnorm_backward(x, dy, stats, gamma, g["relu"])
    dx0, dgamma0, dbeta0 = batchnorm_backward_ref(x, dy, gamma, beta, 1e-5, g["relu"])
    assert dx.dtype == x.dtype
    close(dx, dx0, tol)
    close(dgamma, dgamma0, tol)
    close(dbeta, dbeta0, tol)
    none, dgamma1, dbeta1 = batchnorm_backward(x, dy, stats, gamma, g["relu"], need_dx=False)
    assert none is None and np.array_equal(dgamma1, dgamma) and np.array_equal(dbeta1, dbeta)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_statistics_of_data_with_a_large_mean(dtype):
    """1e4 + N(0, 1): the shifted float64 sums give the two-pass mean and variance of the same
    values to 1e-12 (unshifted sums, S₂/n − (S₁/n)², lose ~8 digits here: 2e-8 in float64)."""
    rng = np.random.default_rng(5)
    x = (1e4 + rng.standard_normal((16, 3, 9, 7))).astype(dtype)
    x[:, 1] *= 1e-3                                   # a channel with std 1e-3 around 10
    _, (mean, var, r, _, _) = batchnorm_forward(x, None, None, 1e-5)
    xd = x.astype(np.float64)
    mean64 = xd.mean(axis=(0, 2, 3))
    var64 = ((xd - mean64[None, :, None, None]) ** 2).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(var, var64, rtol=1e-12)
    assert np.all(np.abs(mean - mean64) <= np.spacing(mean))      # the float64 mean, rounded
    assert mean.dtype == r.dtype == dtype and var.dtype == np.float64


def test_strided_input_gives_the_contiguous_results():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    view = base.transpose(1, 0, 3, 2)[:, :, ::2]                   # (4, 3, 3, 5), not contiguous
    dense = np.ascontiguousarray(view)
    gamma, beta = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    dy = rng.standard_normal(view.shape[:3] + (10,)).astype(np.float32)[..., ::2]
    assert not view.flags.c_contiguous and not dy.flags.c_contiguous
    for relu in (False, True):
        (y, st), (y0, st0) = (batchnorm_forward(a, gamma, beta, 1e-5, relu) for a in (view, dense))
        assert np.array_equal(y, y0) and all(np.array_equal(a, b) for a, b in zip(st, st0))
        got = batchnorm_backward(view, dy, st, gamma, relu)
        want = batchnorm_backward(dense, np.ascontiguousarray(dy), st0, gamma, relu)
        assert all(np.array_equal(a, b) for a, b in zip(got, want))


def test_a_constant_channel_normalises_to_exactly_beta():
    x = np.full((4, 2, 3, 3), 7.25)
    x[:, 1] = np.random.default_rng(0).standard_normal((4, 3, 3))
    beta = np.array([0.5, 0.0])
    y, (mean, var, _, _, _) = batchnorm_forward(x, np.array([3.0, 1.0]), beta, 1e-5)
    assert var[0] == 0 and mean[0] == 7.25 and np.all(y[:, 0] == 0.5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_relu_mask_is_the_forward_outputs(dtype):
    """β is set so that many pre-ReLU values are exactly 0 in the forward's float operations; the
    fused backward's recomputed mask must be ``y > 0`` of the forward's own output (an FMA or a
    reordered expression in the backward would flip about half of them, each flip an error of the
    size of ``ȳ``). The sums of the two kernels may differ in order (vectorised differently), so
    the results agree to rounding, not to the bit."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 3, 5, 5)).astype(dtype)
    gamma = rng.uniform(0.5, 2, 3).astype(dtype)
    picks = rng.uniform(-1, 1, 3).astype(dtype)
    x[:, :, ::2] = picks[None, :, None, None]                     # many entries at the kink
    _, (mean, _, _, scale, _) = batchnorm_forward(x, gamma, None, 1e-5)
    beta = -((picks - mean) * scale)                              # in x's dtype, no FMA (NumPy)
    y, stats = batchnorm_forward(x, gamma, beta, 1e-5, relu=True)
    pre, _ = batchnorm_forward(x, gamma, beta, 1e-5, relu=False)
    assert np.array_equal(y, np.maximum(pre, 0)) and (pre == 0).sum() >= 3 * 6 * 3 * 5
    dy = rng.standard_normal(x.shape).astype(dtype)
    fused = batchnorm_backward(x, dy, stats, gamma, relu=True)
    plain = batchnorm_backward(x, dy * (y > 0), stats, gamma, relu=False)
    for a, b in zip(fused, plain):
        close(a, b, 1e-14 if dtype == np.float64 else 1e-6)


def test_bad_input_is_refused_with_the_argument_named():
    bn = BatchNorm2d(3, dtype=np.float64)
    with pytest.raises(ValueError, match="x"):
        bn.forward(np.zeros((1, 3, 1, 1)), train=True)        # one value per channel
    with pytest.raises(ValueError, match="channels"):
        bn.forward(np.zeros((2, 4, 2, 2)), train=True)
    x = np.random.default_rng(0).standard_normal((2, 3, 2, 2))
    _, cache = bn.forward(x, train=True)
    with pytest.raises(ValueError, match="dy"):
        bn.backward(cache, np.zeros((2, 3, 2, 3)))
    fused = FusedSequential(bn, ReLU())
    before = {k: v.copy() for k, v in bn.buffers.items()}
    for value, where in ((np.nan, (1, 2, 0, 1)), (np.inf, (0, 0, 0, 0)), (-np.inf, (1, 1, 1, 1))):
        bad = x.copy()
        bad[where] = value
        for net in (bn, fused):
            with pytest.raises(NonFiniteError, match="x contains NaN or inf"):
                net.forward(bad, train=True)
    assert all(np.array_equal(bn.buffers[k], before[k]) for k in before)   # refused before the update


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_matches_the_numpy_layer_code_and_keeps_its_running_statistics(dtype, affine):
    """BatchNorm2d's training forward/backward (kernels) against BatchNorm1d's (the NumPy code the
    layer ran before), on two layers with the same state; the running averages move the same way."""
    rng = np.random.default_rng(3)
    new, old = BatchNorm2d(4, momentum=0.3, affine=affine, dtype=dtype), BatchNorm2d(4, momentum=0.3,
                                                                                     affine=affine, dtype=dtype)
    if affine:
        for m in (new, old):
            m.params["weight"][...] = [1.5, -0.5, 2.0, 0.25]
            m.params["bias"][...] = [0.1, -0.2, 0.3, 0.0]
    tol = TOL[dtype]
    for step in range(3):
        x = (rng.standard_normal((5, 4, 6, 3)) * (step + 1) + 4).astype(dtype)
        y, cache = new.forward(x, train=True)
        y0, cache0 = BatchNorm1d.forward(old, x, train=True)
        close(y, y0, tol)
        for k in ("running_mean", "running_var"):
            assert new.buffers[k].dtype == dtype
            close(new.buffers[k], old.buffers[k], tol)
        dy = rng.standard_normal(x.shape).astype(dtype)
        dx, g = new.backward(cache, dy)
        dx0, g0 = BatchNorm1d.backward(old, cache0, dy)
        close(dx, dx0, tol)
        assert list(g) == list(g0) and all(g[k].dtype == g0[k].dtype for k in g)
        for k in g:
            close(g[k], g0[k], tol)
    # evaluation keeps the former path: the same numbers to the bit from the same running averages
    x = rng.standard_normal((2, 4, 3, 3)).astype(dtype)
    assert np.array_equal(new(x), BatchNorm1d.forward(new, x)[0])
    close(new(x), old(x), tol)


def _chain(dtype, seed):
    rng = np.random.default_rng(seed)
    kids = [Conv2d(2, 3, 3, padding=1, bias=False, rng=rng, dtype=dtype), BatchNorm2d(3, dtype=dtype),
            ReLU(), Conv2d(3, 3, 3, padding=1, bias=False, rng=rng, dtype=dtype), BatchNorm2d(3, dtype=dtype),
            ReLU()]
    for k in (1, 4):
        kids[k].params["weight"][...] = rng.uniform(0.5, 1.5, 3)
        kids[k].params["bias"][...] = rng.standard_normal(3)
    return kids


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("train", [True, False])
def test_fused_sequential_batchnorm_relu_equals_the_plain_chain(dtype, train):
    """FusedSequential runs BatchNorm2d → ReLU as one pass (training) with the plain chain's
    numbers: outputs equal to the bit, gradients to rounding (the fused kernel's sums may run in
    another order; bit-identical in evaluation, which is not fused), and each child's cache serves
    its own backward."""
    kids = _chain(dtype, 11)
    fused, plain = FusedSequential(*kids), Sequential(*kids)
    assert fused.groups() == [(0, 1), (1, 3), (3, 4), (4, 6)]
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 2, 5, 4)).astype(dtype)
    y, caches = fused.forward(x, train=train)
    y0, caches0 = plain.forward(x, train=train)
    assert np.array_equal(y, y0) and np.array_equal(fused(x, train=train), y0)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, g = fused.backward(caches, dy)
    dx0, g0 = plain.backward(caches0, dy)
    tol = 0 if not train else 1e-14 if dtype == np.float64 else 1e-6
    close(dx, dx0, tol)
    assert list(g) == list(g0)
    for k in g:
        close(g[k], g0[k], tol)
    walked, gw = plain.backward(caches, dy)              # child by child on the fused caches
    assert np.array_equal(walked, dx) and all(np.array_equal(gw[k], g[k]) for k in g)


# ---- split passes for synchronised batch norm (nograd.parallel): a batch held in parts --------
from nograd.kernels.batchnorm import (batchnorm_backward_sums, batchnorm_backward_sums_ref,  # noqa: E402
                                      batchnorm_input_cotangent, batchnorm_input_cotangent_ref,
                                      batchnorm_normalize, batchnorm_normalize_ref, batchnorm_partial_stats,
                                      batchnorm_partial_stats_ref, combine_stats)


def _split(x, parts):
    bounds = np.linspace(0, x.shape[0], parts + 1).astype(int)
    return [x[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


@SETTINGS
@given(g=case(), parts=st.integers(1, 4))
def test_split_passes_match_their_references_and_the_whole_batch_kernels(g, parts):
    """Partial statistics of each part, combined (Chan et al.), against the float64 two-pass
    statistics of the whole batch; the normalising pass and the backward's sums and input
    cotangent against their NumPy references; assembled over the parts, against the one-call
    kernels on the whole batch."""
    x, gamma, beta, dy = arrays(g)
    tol = TOL[g["dtype"]]
    pieces, dys = _split(x, parts), _split(dy, parts)
    partial = [batchnorm_partial_stats(p) for p in pieces]
    for p, (n, mean, m2) in zip(pieces, partial):
        n0, mean0, m20 = batchnorm_partial_stats_ref(p)
        assert n == n0
        np.testing.assert_allclose(mean, mean0, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(m2, m20, rtol=1e-12, atol=1e-12 * max(1.0, float(np.abs(mean0).max())) ** 2)
    total, mean, var = combine_stats(*zip(*partial))
    n0, mean0, m20 = batchnorm_partial_stats_ref(x)
    assert total == n0
    np.testing.assert_allclose(mean, mean0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(var, m20 / n0, rtol=1e-12, atol=1e-12 * max(1.0, float(np.abs(mean0).max())) ** 2)
    whole_y, whole_stats = batchnorm_forward(x, gamma, beta, 1e-5, g["relu"])
    whole_dx, whole_dg, whole_db = batchnorm_backward(x, dy, whole_stats, gamma, g["relu"])
    ys, sums = [], []
    for p, d in zip(pieces, dys):
        y, stats = batchnorm_normalize(p, mean, var, gamma, beta, 1e-5, g["relu"])
        close(y, batchnorm_normalize_ref(p, mean, var, gamma, beta, 1e-5, g["relu"]), tol)
        s = batchnorm_backward_sums(p, d, stats, g["relu"])
        for a, b in zip(s, batchnorm_backward_sums_ref(p, d, stats[0], stats[3], stats[4], g["relu"])):
            close(a, b, tol)
        ys.append(y)
        sums.append(s)
    close(np.concatenate(ys), whole_y, tol)
    sdy, sdyx = np.sum([s[0] for s in sums], axis=0), np.sum([s[1] for s in sums], axis=0)
    close(sdy, whole_db, tol)
    close(sdyx * stats[2].astype(np.float64), whole_dg, tol)
    dxs = []
    for p, d in zip(pieces, dys):
        _, stats = batchnorm_normalize(p, mean, var, gamma, beta, 1e-5, g["relu"])
        dx = batchnorm_input_cotangent(p, d, stats, gamma, sdy, sdyx, total, g["relu"])
        mask = (batchnorm_normalize(p, mean, var, gamma, beta, 1e-5)[0] > 0) if g["relu"] else None
        close(dx, batchnorm_input_cotangent_ref(p, d, stats[0], stats[2], gamma, sdy, sdyx, total, mask), tol)
        assert dx.dtype == x.dtype and dx.shape == p.shape
        dxs.append(dx)
    close(np.concatenate(dxs), whole_dx, tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_one_part_through_the_split_passes_is_the_whole_kernel_bit_for_bit(dtype):
    """The split passes repeat the fused kernels' float operations: one part gives their bits."""
    rng = np.random.default_rng(21)
    x = (3 + rng.standard_normal((5, 3, 4, 4))).astype(dtype)
    gamma, beta = rng.uniform(0.5, 2, 3).astype(dtype), rng.standard_normal(3).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    for relu in (False, True):
        y0, st0 = batchnorm_forward(x, gamma, beta, 1e-5, relu)
        total, mean, var = combine_stats(*zip(batchnorm_partial_stats(x)))
        y, st1 = batchnorm_normalize(x, mean, var, gamma, beta, 1e-5, relu)
        assert np.array_equal(y, y0) and all(np.array_equal(a, b) for a, b in zip(st1, st0))
        dx0, dg0, db0 = batchnorm_backward(x, dy, st0, gamma, relu)
        sdy, sdyx = batchnorm_backward_sums(x, dy, st1, relu)
        assert np.array_equal(sdy, db0) and np.array_equal(sdyx * st1[2].astype(np.float64), dg0)
        assert np.array_equal(batchnorm_input_cotangent(x, dy, st1, gamma, sdy, sdyx, total, relu), dx0)


def test_combined_statistics_of_data_with_a_large_mean():
    """1e4 + N(0, 1) in float32, in four uneven parts: Chan et al.'s combination of the parts'
    centred sums gives the float64 two-pass variance of the whole to 1e-12 (raw sums S₂/n − (S₁/n)²
    in float64 lose ~8 digits here); a channel with std 1e-3 around 10 as well."""
    rng = np.random.default_rng(22)
    x = (1e4 + rng.standard_normal((13, 3, 5, 6))).astype(np.float32)
    x[:, 1] = (10 + 1e-3 * rng.standard_normal((13, 5, 6))).astype(np.float32)
    parts = [x[:2], x[2:3], x[3:9], x[9:]]
    total, mean, var = combine_stats(*zip(*(batchnorm_partial_stats(p) for p in parts)))
    xd = x.astype(np.float64)
    mean64 = xd.mean(axis=(0, 2, 3))
    var64 = ((xd - mean64[None, :, None, None]) ** 2).mean(axis=(0, 2, 3))
    assert total == 13 * 30
    np.testing.assert_allclose(mean, mean64, rtol=1e-14)
    np.testing.assert_allclose(var, var64, rtol=1e-12)
