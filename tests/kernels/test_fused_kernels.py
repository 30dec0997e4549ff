"""The fused conv → ReLU → 2×2 max-pool kernels (nograd.kernels.fused) against their NumPy references
(exact on small integers, where every step is exact and ties are frequent) and against the unfused
chain of Numba kernels they replace (bit for bit on random floats: the same operations in the same
order, signed zeros included)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nograd.kernels import fused as fk
from nograd.kernels import fused_ref as fr
from nograd.kernels import pool as pk
from nograd.kernels import winograd as wk

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


def same_bits(a, b):
    """Equal entry for entry, the sign of zero and NaNs included."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@st.composite
def planes(draw):
    return dict(N=draw(st.integers(1, 3)), C=draw(st.integers(1, 4)), H=draw(st.integers(2, 9)),
                W=draw(st.integers(2, 9)), seed=draw(st.integers(0, 2**31)),
                dtype=draw(st.sampled_from([np.float32, np.float64])), bias=draw(st.booleans()))


def data(rng, shape, dtype, ints):
    """Small integers (ties and exact zeros, both signs of zero) or normal floats."""
    if ints:
        v = rng.integers(-3, 4, shape).astype(dtype)
        v[rng.random(shape) < 0.1] = -0.0
        return v
    return rng.standard_normal(shape).astype(dtype)


def pool_out(g):
    shape = (g["N"], g["C"], g["H"] // 2, g["W"] // 2)
    return np.empty(shape, g["dtype"]), np.empty(shape, np.int32), np.empty(shape, bool)


@SETTINGS
@given(g=planes(), ints=st.booleans())
def test_relu_maxpool_matches_reference_and_unfused_chain(g, ints):
    rng = np.random.default_rng(g["seed"])
    x = data(rng, (g["N"], g["C"], g["H"], g["W"]), g["dtype"], ints)
    bias = data(rng, (g["C"],), g["dtype"], ints)
    got = fk.relu_maxpool2x2(x, bias, g["bias"], *pool_out(g))
    want = fr.relu_maxpool2x2(x, bias, g["bias"], *pool_out(g))
    assert all(same_bits(a, b) for a, b in zip(got, want))
    # the unfused chain: x (+ b), np.maximum(·, 0), the pooling kernel
    r = np.maximum(x + bias[:, None, None] if g["bias"] else x, 0)
    y, idx, _ = pool_out(g)
    pk.maxpool_forward(r, 2, 2, 2, 2, 0, 0, y.shape[2], y.shape[3], y, idx)
    assert same_bits(got[0], y) and same_bits(got[1], idx) and same_bits(got[2], y > 0)


@SETTINGS
@given(g=planes(), ints=st.booleans())
def test_relu_maxpool_backward_matches_reference_and_unfused_chain(g, ints):
    rng = np.random.default_rng(g["seed"])
    x = data(rng, (g["N"], g["C"], g["H"], g["W"]), g["dtype"], ints)
    y, idx, pos = fk.relu_maxpool2x2(x, np.zeros(1, g["dtype"]), False, *pool_out(g))
    dy = data(rng, y.shape, g["dtype"], ints)
    dx = fk.relu_maxpool2x2_backward(dy, idx, pos, np.full(x.shape, 7, g["dtype"]))   # garbage in dx
    # (the reference's scatter adds into zeros, which turns a -0 of dy into +0: compare values)
    assert np.array_equal(dx, fr.relu_maxpool2x2_backward(dy, idx, pos, np.empty(x.shape, g["dtype"])))
    # the unfused chain: the pooling's scatter, then ReLU's dy * (relu(x) > 0)
    scattered = pk.maxpool_backward_2x2(dy, idx, np.empty(x.shape, g["dtype"]))
    assert same_bits(dx, scattered * (np.maximum(x, 0) > 0))


@st.composite
def tiles(draw):
    g = dict(N=draw(st.integers(1, 3)), K=draw(st.integers(1, 4)), H=draw(st.integers(2, 9)),
             W=draw(st.integers(2, 9)), seed=draw(st.integers(0, 2**31)),
             dtype=draw(st.sampled_from([np.float32, np.float64])))
    g["TH"], g["TW"] = (g["H"] + 1) // 2, (g["W"] + 1) // 2
    g["P"] = g["N"] * g["TH"] * g["TW"]
    return g


@SETTINGS
@given(g=tiles(), ints=st.booleans())
def test_winograd_relu_pool_matches_reference_and_unfused_chain(g, ints):
    rng = np.random.default_rng(g["seed"])
    dt, N, K, H, W, TH, TW = g["dtype"], g["N"], g["K"], g["H"], g["W"], g["TH"], g["TW"]
    M = data(rng, (16, K, g["P"]), dt, ints)
    bias = data(rng, (K,), dt, ints)
    out = lambda: (np.empty((N, K, H // 2, W // 2), dt), np.empty((N, K, H // 2, W // 2), np.int32),  # noqa: E731
                   np.empty((N, K, H // 2, W // 2), bool))
    got = fk.winograd_relu_pool(M, bias, TH, TW, H, W, *out())
    ref = fr.winograd_relu_pool(M, bias, TH, TW, H, W, *out())
    if ints:            # the reference's einsum adds in another order: equal where every sum is exact
        assert all(same_bits(a, b) for a, b in zip(got, ref))
    # unfused: the output transform with bias, np.maximum, the pooling kernel
    z = wk.output_transform(M, bias, False, TH, TW, np.empty((N, K, H, W), dt))
    y, idx, _ = out()
    pk.maxpool_forward(np.maximum(z, 0), 2, 2, 2, 2, 0, 0, H // 2, W // 2, y, idx)
    assert same_bits(got[0], y) and same_bits(got[1], idx)


@SETTINGS
@given(g=tiles(), ints=st.booleans())
def test_winograd_pooled_cotangent_matches_reference_and_unfused_chain(g, ints):
    rng = np.random.default_rng(g["seed"])
    dt, N, K, H, W, TH, TW = g["dtype"], g["N"], g["K"], g["H"], g["W"], g["TH"], g["TW"]
    z = data(rng, (N, K, H, W), dt, ints)
    shape = (N, K, H // 2, W // 2)
    _, idx, pos = fk.relu_maxpool2x2(z, np.zeros(1, dt), False, np.empty(shape, dt), np.empty(shape, np.int32),
                                     np.empty(shape, bool))
    dy = data(rng, shape, dt, ints)
    Z = fk.winograd_pooled_cotangent(dy, idx, pos, H, W, TH, TW, np.full((16, K, g["P"]), 5, dt))
    ref = fr.winograd_pooled_cotangent(dy, idx, pos, H, W, TH, TW, np.empty_like(Z))
    if ints:
        assert np.array_equal(Z, ref)
    else:
        np.testing.assert_allclose(Z, ref, rtol=0, atol=4 * np.finfo(dt).eps * np.abs(dy).max())
    dz = fk.relu_maxpool2x2_backward(dy, idx, pos, np.empty(z.shape, dt))
    assert same_bits(Z, wk.cotangent_transform(dz, TH, TW, np.empty_like(Z)))
    # the bias gradient: the same sum from the pooled cotangent as from the full one
    total = fk.channel_sum(dz)
    assert same_bits(fk.pooled_channel_sum(dy, idx, pos, W), total)
    if ints:
        assert np.array_equal(total, fr.channel_sum(dz))
    else:
        np.testing.assert_allclose(total, fr.channel_sum(dz), rtol=1e-12, atol=1e-12)
