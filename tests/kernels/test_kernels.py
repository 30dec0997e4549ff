"""Every Numba kernel agrees with its NumPy reference: exactly on integer-valued inputs, to
rounding on floats — over hypothesis-drawn geometries."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import nograd
from nograd.kernels import conv, conv_ref, pool, pool_ref

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


@st.composite
def geometry(draw, pool_like=False):
    if pool_like and draw(st.booleans()):      # the 2×2 stride-2 fast path, odd sizes included
        kh = kw = 2
        g = dict(N=draw(st.integers(1, 3)), C=draw(st.integers(1, 3)), H=draw(st.integers(2, 9)),
                 W=draw(st.integers(2, 9)), KH=2, KW=2, sh=2, sw=2, dh=1, dw=1, ph=0, pw=0,
                 seed=draw(st.integers(0, 2**31)))
        g["OH"], g["OW"] = g["H"] // 2, g["W"] // 2
        return g
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    g = dict(N=draw(st.integers(1, 3)), C=draw(st.integers(1, 3)), H=draw(st.integers(1, 9)),
             W=draw(st.integers(1, 9)), KH=kh, KW=kw, sh=draw(st.integers(1, 3)), sw=draw(st.integers(1, 3)),
             dh=1 if pool_like else draw(st.integers(1, 3)), dw=1 if pool_like else draw(st.integers(1, 3)),
             seed=draw(st.integers(0, 2**31)))
    g["ph"] = draw(st.integers(0, kh // 2 if pool_like else 2))
    g["pw"] = draw(st.integers(0, kw // 2 if pool_like else 2))
    g["OH"] = (g["H"] + 2 * g["ph"] - g["dh"] * (kh - 1) - 1) // g["sh"] + 1
    g["OW"] = (g["W"] + 2 * g["pw"] - g["dw"] * (kw - 1) - 1) // g["sw"] + 1
    assume(g["OH"] >= 1 and g["OW"] >= 1)
    return g


def _args(g, *names):
    return [g[n] for n in names]


GEOM = ("KH", "KW", "sh", "sw", "ph", "pw", "dh", "dw", "OH", "OW")


@SETTINGS
@given(geometry(), st.sampled_from([np.float32, np.float64]))
def test_im2col_col2im_match_reference(g, dtype):
    rng = np.random.default_rng(g["seed"])
    x = rng.integers(-9, 9, (g["N"], g["C"], g["H"], g["W"])).astype(dtype)
    shape = (g["N"], g["C"] * g["KH"] * g["KW"], g["OH"] * g["OW"])
    a, b = np.full(shape, np.nan, dtype), np.full(shape, np.nan, dtype)
    conv.im2col(x, *_args(g, *GEOM), a)
    conv_ref.im2col(x, *_args(g, *GEOM), b)
    np.testing.assert_array_equal(a, b)
    cols = rng.integers(-9, 9, shape).astype(dtype)
    da, db = np.zeros_like(x), np.zeros_like(x)
    conv.col2im(cols, *_args(g, *GEOM), da)
    conv_ref.col2im(cols, *_args(g, *GEOM), db)
    np.testing.assert_array_equal(da, db)
    assert np.sum(a.astype(np.float64) * cols) == np.sum(x.astype(np.float64) * da)   # adjoint pair


@SETTINGS
@given(geometry(), st.sampled_from([np.float32, np.float64]))
def test_stride2_im2col_col2im_through_planes_match_reference(g, dtype):
    """``im2col_s2`` / ``col2im_s2`` (stride 2, dilation 1, any kernel and padding, the polyphase
    planes) equal the references exactly; ``col2im_s2`` overwrites its output."""
    g = dict(g, sh=2, sw=2, dh=1, dw=1)
    g["OH"] = (g["H"] + 2 * g["ph"] - g["KH"]) // 2 + 1
    g["OW"] = (g["W"] + 2 * g["pw"] - g["KW"]) // 2 + 1
    assume(g["OH"] >= 1 and g["OW"] >= 1)
    rng = np.random.default_rng(g["seed"])
    x = rng.integers(-9, 9, (g["N"], g["C"], g["H"], g["W"])).astype(dtype)
    shape = (g["N"], g["C"] * g["KH"] * g["KW"], g["OH"] * g["OW"])
    a, b = np.full(shape, np.nan, dtype), np.full(shape, np.nan, dtype)
    s2 = _args(g, "KH", "KW", "ph", "pw", "OH", "OW")
    conv.im2col_s2(x, *s2, a)
    conv_ref.im2col(x, *_args(g, *GEOM), b)
    np.testing.assert_array_equal(a, b)
    cols = rng.integers(-9, 9, shape).astype(dtype)
    da, db = np.full_like(x, np.nan), np.zeros_like(x)
    conv.col2im_s2(cols, *s2, da)
    conv_ref.col2im(cols, *_args(g, *GEOM), db)
    np.testing.assert_array_equal(da, db)


@SETTINGS
@given(geometry(pool_like=True), st.sampled_from([np.float32, np.float64]), st.booleans())
def test_pool_kernels_match_reference(g, dtype, include_pad):
    rng = np.random.default_rng(g["seed"])
    x = rng.integers(-9, 9, (g["N"], g["C"], g["H"], g["W"])).astype(dtype)    # ties included
    out = (g["N"], g["C"], g["OH"], g["OW"])
    geo = _args(g, "KH", "KW", "sh", "sw", "ph", "pw", "OH", "OW")
    ya, yb = np.empty(out, dtype), np.empty(out, dtype)
    ia, ib = np.empty(out, np.int32), np.empty(out, np.int32)
    pool.maxpool_forward(x, *geo, ya, ia)
    pool_ref.maxpool_forward(x, *geo, yb, ib)
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(ia, ib)
    dy = rng.integers(-9, 9, out).astype(dtype)
    np.testing.assert_array_equal(pool.maxpool_backward(dy, ia, np.zeros_like(x)),
                                  pool_ref.maxpool_backward(dy, ib, np.zeros_like(x)))
    if pool.is_2x2(*geo[:6]):
        np.testing.assert_array_equal(pool.maxpool_backward_2x2(dy, ia, np.full_like(x, np.nan)),
                                      pool_ref.maxpool_backward_2x2(dy, ib, np.full_like(x, np.nan)))
    aa, ab = np.empty(out, dtype), np.empty(out, dtype)
    pool.avgpool_forward(x, *geo, include_pad, aa)
    pool_ref.avgpool_forward(x, *geo, include_pad, ab)
    # float sums in another order: equal to rounding (a few ulps of the window sum of |x| <= 9·9)
    tol = dict(rtol=1e-6, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(aa, ab, **tol)
    geo_b = _args(g, "KH", "KW", "sh", "sw", "ph", "pw")
    np.testing.assert_allclose(pool.avgpool_backward(dy, *geo_b, include_pad, np.zeros_like(x)),
                               pool_ref.avgpool_backward(dy, *geo_b, include_pad, np.zeros_like(x)),
                               **tol)
    if pool.is_2x2(*geo_b):     # the fast path writes every input: no zeroed dx needed
        np.testing.assert_allclose(pool.avgpool_backward(dy, *geo_b, include_pad,
                                                         np.full_like(x, np.nan)),
                                   pool_ref.avgpool_backward(dy, *geo_b, include_pad,
                                                             np.zeros_like(x)), **tol)


@pytest.mark.parametrize("H,W", [(4, 6), (5, 7), (2, 3)])
def test_avgpool_2x2_fast_path(H, W):
    rng = np.random.default_rng(H * W)
    x = rng.standard_normal((2, 3, H, W))
    geo = (2, 2, 2, 2, 0, 0, H // 2, W // 2)
    out = (2, 3, H // 2, W // 2)
    np.testing.assert_allclose(pool.avgpool_forward(x, *geo, True, np.empty(out)),
                               pool_ref.avgpool_forward(x, *geo, True, np.empty(out)), rtol=1e-14)
    dy = rng.standard_normal(out)
    np.testing.assert_allclose(pool.avgpool_backward(dy, *geo[:6], True, np.full_like(x, np.nan)),
                               pool_ref.avgpool_backward(dy, *geo[:6], True, np.zeros_like(x)),
                               rtol=1e-14)


@SETTINGS
@given(st.integers(1, 5000), st.sampled_from([np.float32, np.float64]), st.floats(-2, 2))
def test_axpy_matches_reference(n, dtype, a):
    from nograd.kernels.axpy import axpy, axpy_ref
    rng = np.random.default_rng(n)
    x = rng.integers(-9, 9, n).astype(dtype)
    y = rng.integers(-9, 9, n).astype(dtype)
    a = dtype(a)
    np.testing.assert_array_equal(axpy(a, x, y.copy()), axpy_ref(a, x, y.copy()))


def test_optimizer_uses_the_fused_kernel_and_matches_numpy():
    from nograd.core.optim import SGD, _FUSED_MIN_SIZE
    rng = np.random.default_rng(0)
    p = rng.normal(size=_FUSED_MIN_SIZE + 3).astype(np.float32)
    g = rng.normal(size=p.shape).astype(np.float32)
    expected = p - np.float32(0.1) * g
    SGD({"p": p}, lr=0.1).step({"p": g})
    np.testing.assert_array_equal(p, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_cdf_kernel_equals_the_scipy_reference(dtype):
    from nograd.kernels.gelu import normal_cdf, normal_cdf_ref

    x = np.random.default_rng(0).normal(0, 3, (7, 5, 3)).astype(dtype)
    x[0, 0, :] = [0.0, -40.0, 40.0]
    tol = 1e-6 if dtype == np.float32 else 1e-14
    mine = normal_cdf(x)
    assert mine.dtype == x.dtype and mine.shape == x.shape
    np.testing.assert_allclose(mine, normal_cdf_ref(x), rtol=tol, atol=tol)
    np.testing.assert_allclose(normal_cdf(x[:, ::2]), normal_cdf_ref(x[:, ::2]), rtol=tol, atol=tol)


def test_float32_gelu_kernels_are_within_two_units_in_the_last_place_of_the_exact_gelu():
    # Φ by Abramowitz & Stegun 7.1.26 (|Δerf| ≤ 1.5e-7) in float64 registers: |ΔΦ| ≤ 1.5e-7 for every
    # float32 input (float32 spacing below 1 is 6e-8); compared with SciPy's erf in float64
    from scipy.special import erf

    from nograd.kernels.gelu import gelu_backward, gelu_forward, normal_cdf

    x = np.concatenate([np.linspace(-12, 12, 200_001), np.random.default_rng(2).normal(0, 3, 50_000)])
    x32 = x.astype(np.float32)
    xd = x32.astype(np.float64)
    exact = 0.5 * (1 + erf(xd / np.sqrt(2)))
    y, cdf = gelu_forward(x32)
    assert y.dtype == cdf.dtype == np.float32
    np.testing.assert_array_equal(cdf, normal_cdf(x32))
    assert np.max(np.abs(cdf - exact)) <= 1.5e-7
    assert np.max(np.abs(y - xd * exact) / np.maximum(np.abs(xd), 1)) <= 1.5e-7
    dy = np.random.default_rng(3).normal(size=x.shape).astype(np.float32)
    dx = gelu_backward(x32, cdf, dy)
    exact_dx = dy * (exact + xd * np.exp(-xd * xd / 2) / np.sqrt(2 * np.pi))
    assert dx.dtype == np.float32
    assert np.max(np.abs(dx - exact_dx) / np.maximum(np.abs(dy), 1)) <= 3e-7
    assert gelu_forward(np.array([np.inf, -np.inf], np.float32))[1].tolist() == [1.0, 0.0]


def test_float32_gelu_slope_is_the_exact_derivative_and_the_layer_backward_uses_it():
    """gelu_forward_slope: the same y and Φ as gelu_forward, and f'(x) = Φ(x) + xφ(x) to 1.5e-7
    (the A&S bound); the GELU layer's float32 backward is dy·f'(x), within 3e-7·max(|dy|, 1) of
    the exact product, as the kernel's own backward."""
    from scipy.special import erf

    from nograd.kernels.gelu import gelu_forward, gelu_forward_slope

    x = np.concatenate([np.linspace(-12, 12, 100_001), np.random.default_rng(4).normal(0, 3, 20_000)])
    x32 = x.astype(np.float32).reshape(-1, 7)
    xd = x32.astype(np.float64)
    exact_slope = 0.5 * (1 + erf(xd / np.sqrt(2))) + xd * np.exp(-xd * xd / 2) / np.sqrt(2 * np.pi)
    y, cdf, slope = gelu_forward_slope(x32)
    y0, cdf0 = gelu_forward(x32)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(cdf, cdf0)
    assert slope.dtype == np.float32 and slope.shape == x32.shape
    assert np.max(np.abs(slope - exact_slope)) <= 1.5e-7
    layer = nograd.layers.GELU()
    out, cache = layer.forward(x32, train=True)
    np.testing.assert_array_equal(out, y)
    dy = np.random.default_rng(5).normal(size=x32.shape).astype(np.float32)
    dx, _ = layer.backward(cache, dy)
    assert dx.dtype == np.float32
    assert np.max(np.abs(dx - dy * exact_slope) / np.maximum(np.abs(dy), 1)) <= 3e-7
    with pytest.raises(TypeError, match="float32"):
        gelu_forward_slope(xd)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_backward_kernel_equals_the_numpy_reference(dtype):
    from nograd.kernels.gelu import gelu_backward, gelu_backward_ref, normal_cdf_ref

    rng = np.random.default_rng(1)
    x = rng.normal(0, 3, (4, 6, 5)).astype(dtype)
    dy = rng.normal(size=x.shape).astype(dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    mine = gelu_backward(x, normal_cdf_ref(x), dy)
    assert mine.dtype == x.dtype and mine.shape == x.shape
    np.testing.assert_allclose(mine, gelu_backward_ref(x, normal_cdf_ref(x), dy), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", ["none", "gain", "gain+shift"])
def test_layernorm_kernels_equal_the_numpy_reference(dtype, affine):
    from nograd.kernels.layernorm import (layernorm_backward, layernorm_backward_ref, layernorm_forward,
                                          layernorm_forward_ref)

    rng = np.random.default_rng(4)
    x = (rng.normal(size=(37, 24)) * 3 + 5).astype(dtype)
    dy = rng.normal(size=x.shape).astype(dtype)
    g = None if affine == "none" else rng.normal(size=24).astype(dtype)
    b = rng.normal(size=24).astype(dtype) if affine == "gain+shift" else None
    tol = 2e-6 if dtype == np.float32 else 1e-13
    mine, ref = layernorm_forward(x, g, b, 1e-5), layernorm_forward_ref(x, g, b, 1e-5)
    for m, r in zip(mine, ref):
        assert m.dtype == x.dtype
        np.testing.assert_allclose(m, r, rtol=tol, atol=tol)
    xhat, r = ref[1], ref[2]
    for m, rr in zip(layernorm_backward(xhat, r, dy, g), layernorm_backward_ref(xhat, r, dy, g)):
        np.testing.assert_allclose(m, rr, rtol=tol, atol=tol * 40)
    # the defining property: each row of x̂ has mean 0
    np.testing.assert_allclose(mine[1].astype(np.float64).mean(axis=1), 0, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [None, 0, 2, 5])
def test_masked_softmax_kernels_equal_the_numpy_reference(dtype, offset):
    from nograd.kernels.softmax import masked_softmax, masked_softmax_ref, softmax_jvp, softmax_jvp_ref

    rng = np.random.default_rng(5)
    s = (rng.normal(size=(3, 2, 6, 9)) * 20).astype(dtype)       # large scores: the max shift matters
    s[0, 0, 5, 0] = -np.inf                                        # a hidden key gets probability 0
    tol = 1e-7 if dtype == np.float32 else 1e-15
    p = masked_softmax(s, 0.37, offset)
    assert p.dtype == s.dtype and p.shape == s.shape and p[0, 0, 5, 0] == 0
    np.testing.assert_allclose(p, masked_softmax_ref(s, 0.37, offset), rtol=0, atol=tol)
    np.testing.assert_allclose(p.astype(np.float64).sum(axis=-1), 1, atol=10 * tol)
    if offset is not None:             # key j is hidden from query i exactly when j > i + offset
        hidden = np.arange(9)[None, :] > np.arange(6)[:, None] + offset
        assert np.all(p[..., hidden] == 0) and np.all(p[1:][..., ~hidden] > 0)
    v = rng.normal(size=s.shape).astype(dtype)
    np.testing.assert_allclose(softmax_jvp(p, v, 0.37), softmax_jvp_ref(p, v, 0.37), rtol=0, atol=10 * tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_fused_adam_kernel_is_bit_equal_to_the_ufunc_path(dtype, name):
    from nograd.core.optim import get_optimizer
    from nograd.kernels.adam import adam_update, adam_update_ref

    rng = np.random.default_rng(6)
    w0 = rng.normal(size=(7, 5)).astype(dtype)
    fused, plain = {"w": w0.copy()}, {"w": w0.copy()}
    kw = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1, clip_norm=0.5)
    opt_f, opt_p = get_optimizer(name, fused, **kw), get_optimizer(name, plain, **kw)
    for _ in range(4):
        g = rng.normal(size=w0.shape).astype(dtype)
        opt_f.step({"w": g})                        # C-contiguous: the fused kernel
        opt_p.step({"w": np.asfortranarray(g)})     # not C-contiguous: the NumPy ufuncs
    assert np.array_equal(fused["w"], plain["w"]) and not np.array_equal(fused["w"], w0)
    p, g, m, v = (rng.normal(size=50).astype(dtype) for _ in range(4))
    v = np.abs(v)
    a, b = [x.copy() for x in (p, g, m, v)], [x.copy() for x in (p, g, m, v)]
    args = dict(kwd=0.999, scale=0.8, l2=0.01, b1=0.9, b2=0.999, bias_c2=0.05, eps=1e-8, a=-0.01)
    adam_update(*a, **args)
    adam_update_ref(*b, **args)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
