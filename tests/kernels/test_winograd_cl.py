"""The channels-last Winograd kernels (nograd.kernels.winograd_cl): every map equals the tile-row
kernels' (themselves checked against the NumPy references and the paper's matrices in
test_winograd.py) bit for bit, transposed — on integers and on random floats —; the layer on them
equals the direct convolution exactly on integers (forward, input cotangent, weight gradient; one
or two images per chunk; the fused ReLU + pooling path too) and is within the algorithm's float32
rounding bound; and they are chosen from 32 input and output channels."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fused_kernels import same_bits
from test_winograd import _chunked, _data, assert_within_float32_bound, direct, direct_vjp, geometry

from nograd.core import Sequential
from nograd.kernels import winograd as wk
from nograd.kernels import winograd_cl as wc
from nograd.layers import Conv2d, FusedSequential, MaxPool2d, ReLU
from nograd.layers import winograd as wt

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


def T(A):
    """(16, a, b) → (16, b, a), contiguous: between the two layouts."""
    return np.ascontiguousarray(A.transpose(0, 2, 1))


@SETTINGS
@given(geometry(), st.sampled_from([np.float32, np.float64]), st.booleans())
def test_kernels_equal_the_tile_row_kernels_bit_for_bit(g, dtype, integer):
    x, _, dy = _data(g, dtype, integer)
    rng = np.random.default_rng(g["seed"] + 1)
    draw = (lambda s: rng.integers(-9, 10, s)) if integer else rng.standard_normal
    N, C, K, P = g["N"], g["C"], g["K"], g["P"]
    args = (g["p"], g["p"], g["TH"], g["TW"])
    V = wc.input_transform(x, *args, np.full((16, P, C), np.nan, dtype))
    assert same_bits(T(V), wk.input_transform(x, *args, np.empty((16, C, P), dtype)))
    Z = wc.cotangent_transform(dy, g["TH"], g["TW"], np.full((16, P, K), np.nan, dtype))
    assert same_bits(T(Z), wk.cotangent_transform(dy, g["TH"], g["TW"], np.empty((16, K, P), dtype)))
    M = draw((16, K, P)).astype(dtype)
    bias = draw(K).astype(dtype)
    for relu in (False, True):
        ya, yb = (np.full((N, K, g["OH"], g["OW"]), np.nan, dtype) for _ in range(2))
        assert same_bits(wc.output_transform(T(M), bias, relu, g["TH"], g["TW"], ya),
                         wk.output_transform(M, bias, relu, g["TH"], g["TW"], yb))
    Mx = draw((16, C, P)).astype(dtype)
    da, db = (np.full(x.shape, np.nan, dtype) for _ in range(2))
    assert same_bits(wc.input_grad_transform(T(Mx), *args, da), wk.input_grad_transform(Mx, *args, db))


class everywhere:
    """``with everywhere():`` channels-last for every channel count (CL_MIN_CHANNELS = 1), so that
    small geometries reach it."""

    def __enter__(self):
        self.old, wt.CL_MIN_CHANNELS = wt.CL_MIN_CHANNELS, 1

    def __exit__(self, *exc):
        wt.CL_MIN_CHANNELS = self.old


@SETTINGS
@given(g=geometry(), per_chunk=st.integers(1, 2), bias=st.booleans())
def test_layer_is_exact_on_integers(g, per_chunk, bias):
    x, w, dy = _data(g, np.float64, True)
    layer = Conv2d(g["C"], g["K"], 3, padding=g["p"], bias=bias, algorithm="winograd", dtype=np.float64)
    layer.params["weight"][...] = w
    b = np.arange(g["K"], dtype=np.float64) - 1 if bias else 0.0
    if bias:
        layer.params["bias"][...] = b
    with _chunked(g, per_chunk), everywhere():
        y, cache = layer.forward(x)
        assert cache[1].layout[0] is wc and len(cache[1].V) == -(-g["N"] // per_chunk)
        np.testing.assert_array_equal(y, direct(x, w, g["p"]) + np.reshape(b, (-1, 1, 1)))
        dx, grads = layer.backward(cache, dy)
        ex, ew = direct_vjp(x, w, g["p"], dy)
        np.testing.assert_array_equal(dx, ex)
        np.testing.assert_array_equal(grads["weight"], ew)
        assert layer.backward(cache, dy, need_dx=False)[0] is None
        if g["OH"] >= 2 and g["OW"] >= 2:             # conv → ReLU → pool: the plain chain's bits
            kids = [layer, ReLU(), MaxPool2d(2)]
            yf, cf = FusedSequential(*kids).forward(x)
            yp, cp = Sequential(*kids).forward(x)
            assert same_bits(yf, yp)
            dyp = dy[:, :, :yp.shape[2], :yp.shape[3]].copy()
            (dxf, gf), (dxp, gp) = FusedSequential(*kids).backward(cf, dyp), Sequential(*kids).backward(cp, dyp)
            assert same_bits(dxf, dxp) and all(same_bits(gf[k], gp[k]) for k in gp)


def test_chosen_from_32_channels_and_within_the_float32_bound():
    assert wt.kernels(4, 32, 32)[0] is wc and wt.kernels(16, 32, 64)[0] is wc
    assert wt.kernels(4, 16, 32)[0] is wk and wt.kernels(4, 32, 31)[0] is wk
    # algorithm="auto": Winograd from 256 tiles with channels-last kernels, else from 512
    assert Conv2d(32, 32, 3, padding=1).resolve_algorithm((4, 32, 16, 16)) == "winograd"    # 256
    assert Conv2d(32, 32, 3, padding=1).resolve_algorithm((2, 32, 16, 16)) == "im2col"      # 128
    assert Conv2d(16, 32, 3, padding=1).resolve_algorithm((4, 16, 16, 16)) == "im2col"      # 256
    assert Conv2d(16, 32, 3, padding=1).resolve_algorithm((8, 16, 16, 16)) == "winograd"    # 512
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 32, 9, 8)).astype(np.float32)
    w = (rng.standard_normal((40, 32, 3, 3)) / 9).astype(np.float32)
    layer = Conv2d(32, 40, 3, padding=1, bias=False, algorithm="winograd")
    layer.params["weight"][...] = w
    y, cache = layer.forward(x)
    assert cache[1].layout[0] is wc
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, grads = layer.backward(cache, dy)
    assert_within_float32_bound(x, w, 1, dy, y, dx, grads["weight"], 3 * 5 * 4)


def test_transforming_the_input_again_gives_the_same_bits():
    """KEEP_V_CL = False: the backward transforms the input again instead of reading the kept V —
    the same gradients bit for bit, and nothing kept but the input."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 32, 7, 6)).astype(np.float32)
    layer = Conv2d(32, 33, 3, padding=1, algorithm="winograd", rng=1)
    y, cache = layer.forward(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, g = layer.backward(cache, dy)
    old, wt.KEEP_V_CL = wt.KEEP_V_CL, False
    try:
        y2, cache2 = layer.forward(x)
        assert cache2[1].V == [] and cache2[1].layout[0] is wc and same_bits(y2, y)
        dx2, g2 = layer.backward(cache2, dy)
    finally:
        wt.KEEP_V_CL = old
    assert same_bits(dx2, dx) and all(same_bits(g2[k], g[k]) for k in g)
