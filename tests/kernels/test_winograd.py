"""Winograd F(2×2, 3×3) (Lavin & Gray, CVPR 2016): kernels against their NumPy references, the
layer's three maps against a direct convolution, and the paper's transform written out here.

Tolerances. On small integers every step of the algorithm is exact in float64 (the transforms
add, subtract and halve; every partial sum is a dyadic rational far below 2⁵³), so float64 is
compared for equality with the direct method. For float32 on random data, each output is reached
through at most ``n + 16`` rounded additions or multiplications — a dot product of depth ``n``
(``C`` for the forward map, ``K`` for the input cotangent, the ``N·TH·TW`` tiles for the weight
gradient) and at most 4 roundings in each of the two 1-D passes of the two transforms on its path
— each of whose operands is bounded by the same algorithm run on absolute values (``|B^T|``,
``|G|``, ``|A^T|``, ``|x|``, ``|w|``, ``|ȳ|``), ``S``. The standard bound for such sums (Higham,
*Accuracy and Stability of Numerical Algorithms*, 2nd ed., §3.1) is then
``|ŷ − y| ≤ γ_{n+16} · S`` with ``γ_m = m·u / (1 − m·u)`` and ``u = 2⁻²⁴``; the tests assert it.
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nograd.kernels import winograd as wk
from nograd.kernels import winograd_planes as wp
from nograd.kernels import winograd_ref as wr
from nograd.layers import Conv2d, MaxPool2d
from nograd.layers import winograd as wt

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)

# Lavin & Gray (2016), §5, F(2×2, 3×3): written out here, independently of the package.
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G_ = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)
U32 = 2.0 ** -24


@st.composite
def geometry(draw):
    g = dict(N=draw(st.integers(1, 3)), C=draw(st.integers(1, 4)), K=draw(st.integers(1, 4)),
             H=draw(st.integers(1, 9)), W=draw(st.integers(1, 9)), p=draw(st.integers(0, 2)),
             seed=draw(st.integers(0, 2**31)))
    g["OH"], g["OW"] = g["H"] + 2 * g["p"] - 2, g["W"] + 2 * g["p"] - 2
    assume(g["OH"] >= 1 and g["OW"] >= 1)
    g["TH"], g["TW"] = (g["OH"] + 1) // 2, (g["OW"] + 1) // 2
    g["P"] = g["N"] * g["TH"] * g["TW"]
    return g


def direct(x, w, p):
    """The 3×3 stride-1 correlation by its definition, one tap at a time (float64)."""
    N, C, H, W = x.shape
    OH, OW = H + 2 * p - 2, W + 2 * p - 2
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    y = np.zeros((N, w.shape[0], OH, OW))
    for i in range(3):
        for j in range(3):
            y += np.einsum("kc,nchw->nkhw", w[:, :, i, j].astype(np.float64), xp[:, :, i:i + OH, j:j + OW])
    return y


def direct_vjp(x, w, p, dy):
    """Input cotangent and weight gradient of :func:`direct`, by its definition (float64)."""
    N, C, H, W = x.shape
    OH, OW = dy.shape[2:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    dxp = np.zeros_like(xp)
    dw = np.zeros(w.shape)
    for i in range(3):
        for j in range(3):
            dxp[:, :, i:i + OH, j:j + OW] += np.einsum("kc,nkhw->nchw", w[:, :, i, j], dy)
            dw[:, :, i, j] = np.einsum("nkhw,nchw->kc", dy, xp[:, :, i:i + OH, j:j + OW])
    return dxp[:, :, p:p + H, p:p + W], dw


def tiles_of(xp, TH, TW):
    return np.stack([np.stack([xp[:, :, 2 * a:2 * a + 4, 2 * b:2 * b + 4] for b in range(TW)], 2)
                     for a in range(TH)], 2)                         # (N, C, TH, TW, 4, 4)


def paper_bounds(x, w, p, dy):
    """The algorithm on absolute values (matrices and data): ``S`` of the module docstring for
    the output, the input cotangent and the weight gradient."""
    bt, g, at = np.abs(B_T), np.abs(G_), np.abs(A_T)
    N, C, H, W = x.shape
    OH, OW = dy.shape[2:]
    TH, TW = (OH + 1) // 2, (OW + 1) // 2
    xp = np.zeros((N, C, 2 * TH + 2, 2 * TW + 2))
    hh, ww = min(H, 2 * TH + 2 - p), min(W, 2 * TW + 2 - p)
    xp[:, :, p:p + hh, p:p + ww] = np.abs(x[:, :, :hh, :ww])
    V = np.einsum("ai,nctuij,bj->nctuab", bt, tiles_of(xp, TH, TW), bt)
    U = np.einsum("ai,kcij,bj->kcab", g, np.abs(w), g)
    dyp = np.zeros((N, dy.shape[1], 2 * TH, 2 * TW))
    dyp[:, :, :OH, :OW] = np.abs(dy)
    Z = np.einsum("ia,nktiuj,jb->nktuab", at, dyp.reshape(N, -1, TH, 2, TW, 2), at)
    Y = np.einsum("ai,nktuij,bj->nktaub", at, np.einsum("kcab,nctuab->nktuab", U, V), at)
    sy = Y.reshape(N, -1, 2 * TH, 2 * TW)[:, :, :OH, :OW]
    sw = np.einsum("ai,kcab,bj->kcij", g, np.einsum("nktuab,nctuab->kcab", Z, V), g)
    t = np.einsum("ai,nctuab,bj->nctuij", bt, np.einsum("kcab,nktuab->nctuab", U, Z), bt)
    dxp = np.zeros_like(xp)
    for a in range(TH):
        for b in range(TW):
            dxp[:, :, 2 * a:2 * a + 4, 2 * b:2 * b + 4] += t[:, :, a, b]
    sx = np.zeros(x.shape)
    sx[:, :, :hh, :ww] = dxp[:, :, p:p + hh, p:p + ww]
    return sy, sx, sw


def gamma(m):
    return m * U32 / (1 - m * U32)


def assert_within_float32_bound(x, w, p, dy, y, dx, dw, P):
    """Forward, input cotangent and weight gradient of a float32 Winograd layer within the rounding
    bounds of the algorithm (``gamma`` of the number of terms summed, times :func:`paper_bounds`)
    of the direct method; ``P`` the tiles summed into the weight gradient."""
    sy, sx, sw = paper_bounds(x, w, p, dy)
    ex, ew = direct_vjp(x, w, p, dy)
    assert np.all(np.abs(y - direct(x, w, p)) <= gamma(x.shape[1] + 16) * sy)
    assert np.all(np.abs(dx - ex) <= gamma(w.shape[0] + 16) * sx)
    assert np.all(np.abs(dw - ew) <= gamma(P + 16) * sw)


def _data(g, dtype, integer):
    rng = np.random.default_rng(g["seed"])
    draw = (lambda s: rng.integers(-5, 6, s)) if integer else rng.standard_normal
    x = draw((g["N"], g["C"], g["H"], g["W"])).astype(dtype)
    w = draw((g["K"], g["C"], 3, 3)).astype(dtype)
    dy = draw((g["N"], g["K"], g["OH"], g["OW"])).astype(dtype)
    return x, w, dy


# -- the kernels against their references: exact on integers --------------------------------------

@SETTINGS
@given(geometry(), st.sampled_from([np.float32, np.float64]))
def test_kernels_match_reference_exactly_on_integers(g, dtype):
    x, _, dy = _data(g, dtype, True)
    rng = np.random.default_rng(g["seed"] + 1)
    args = (g["p"], g["p"], g["TH"], g["TW"])
    Va, Vb = (np.full((16, g["C"], g["P"]), np.nan, dtype) for _ in range(2))
    np.testing.assert_array_equal(wk.input_transform(x, *args, Va), wr.input_transform(x, *args, Vb))
    Za, Zb = (np.full((16, g["K"], g["P"]), np.nan, dtype) for _ in range(2))
    np.testing.assert_array_equal(wk.cotangent_transform(dy, g["TH"], g["TW"], Za),
                                  wr.cotangent_transform(dy, g["TH"], g["TW"], Zb))
    M = rng.integers(-9, 10, (16, g["K"], g["P"])).astype(dtype)
    bias = rng.integers(-3, 4, g["K"]).astype(dtype)
    for relu in (False, True):
        ya, yb = (np.full((g["N"], g["K"], g["OH"], g["OW"]), np.nan, dtype) for _ in range(2))
        np.testing.assert_array_equal(wk.output_transform(M, bias, relu, g["TH"], g["TW"], ya),
                                      wr.output_transform(M, bias, relu, g["TH"], g["TW"], yb))
    Mx = rng.integers(-9, 10, (16, g["C"], g["P"])).astype(dtype)
    da, db = (np.full(x.shape, np.nan, dtype) for _ in range(2))
    np.testing.assert_array_equal(wk.input_grad_transform(Mx, *args, da),
                                  wr.input_grad_transform(Mx, *args, db))


def test_one_tile_is_the_papers_formula():
    """Y = A^T[(G g G^T) ⊙ (B^T d B)]A (Lavin & Gray eq. 8–9 with F(2×2, 3×3)) for one 4×4 tile,
    through the kernels, and both equal the 2×2 correlation."""
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal((4, 4)), rng.standard_normal((3, 3))
    paper = A_T @ ((G_ @ g @ G_.T) * (B_T @ d @ B_T.T)) @ A_T.T
    V = wk.input_transform(d[None, None], 0, 0, 1, 1, np.empty((16, 1, 1)))
    M = wk.filter_transform(g[None, None]) * V
    y = wk.output_transform(M, np.zeros(1), False, 1, 1, np.empty((1, 1, 2, 2)))[0, 0]
    np.testing.assert_allclose(y, paper, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(paper, direct(d[None, None], g[None, None], 0)[0, 0], rtol=1e-13, atol=1e-13)


# -- the layer's maps against the direct method ----------------------------------------------------

def _layer(g, w, dtype):
    layer = Conv2d(g["C"], g["K"], 3, padding=g["p"], bias=False, algorithm="winograd", dtype=dtype)
    layer.params["weight"][...] = w
    return layer


@SETTINGS
@given(geometry())
def test_layer_float64_is_exact_on_integers(g):
    x, w, dy = _data(g, np.float64, True)
    layer = _layer(g, w, np.float64)
    y, cache = layer.forward(x)
    np.testing.assert_array_equal(y, direct(x, w, g["p"]))
    dx, grads = layer.backward(cache, dy)
    ex, ew = direct_vjp(x, w, g["p"], dy)
    np.testing.assert_array_equal(dx, ex)
    np.testing.assert_array_equal(grads["weight"], ew)


@SETTINGS
@given(geometry())
def test_layer_float32_within_the_rounding_bound(g):
    x, w, dy = _data(g, np.float32, False)
    layer = _layer(g, w, np.float32)
    y, cache = layer.forward(x)
    dx, grads = layer.backward(cache, dy)
    assert y.dtype == dx.dtype == grads["weight"].dtype == np.float32
    assert_within_float32_bound(x, w, g["p"], dy, y, dx, grads["weight"], g["P"])


def test_float32_error_at_benchmark_scale():
    """The reference CNN's second convolution (32→64 channels, 16×16, batch 8): Winograd's float32
    error against float64 stays within 4× im2col's (measured about 1.5–2×), and within the bound."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 32, 16, 16)).astype(np.float32)
    w = (rng.standard_normal((64, 32, 3, 3)) / 17).astype(np.float32)
    exact = direct(x, w, 1)
    errs = {}
    for algo in ("winograd", "im2col"):
        layer = Conv2d(32, 64, 3, padding=1, bias=False, algorithm=algo)
        layer.params["weight"][...] = w
        errs[algo] = np.abs(layer(x) - exact).max()
    assert errs["winograd"] <= 4 * errs["im2col"]
    sy = paper_bounds(x, w, 1, np.zeros((8, 64, 16, 16)))[0]
    layer = Conv2d(32, 64, 3, padding=1, bias=False, algorithm="winograd")
    layer.params["weight"][...] = w
    assert np.all(np.abs(layer(x) - exact) <= gamma(32 + 16) * sy)


# -- the option ------------------------------------------------------------------------------------

def test_auto_rule_and_bad_algorithm():
    big, small = (64, 8, 16, 16), (1, 8, 16, 16)         # 4096 and 64 output tiles
    assert Conv2d(8, 4, 3, padding=1).resolve_algorithm(big) == "winograd"
    assert Conv2d(8, 4, 3, padding=1).resolve_algorithm(small) == "im2col"
    assert Conv2d(3, 4, 3, padding=1).resolve_algorithm(big[:1] + (3,) + big[2:]) == "im2col"
    for layer in (Conv2d(8, 4, 3, stride=2), Conv2d(8, 4, 5), Conv2d(8, 4, 3, groups=2),
                  Conv2d(8, 4, 3, dilation=2)):
        assert layer.resolve_algorithm(big) == "im2col"
    assert Conv2d(8, 4, 3, algorithm="winograd").resolve_algorithm(small) == "winograd"
    layer = Conv2d(8, 4, 3, padding=1)
    assert isinstance(layer.forward(np.ones(big, np.float32))[1][0], str)      # the Winograd cache
    with pytest.raises(ValueError, match="algorithm"):
        Conv2d(8, 4, 3, algorithm="fft")
    with pytest.raises(ValueError, match="algorithm='winograd'.*stride"):
        Conv2d(8, 4, 3, stride=2, algorithm="winograd")


def test_algorithms_agree_in_the_layer_float64():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 8, 6, 7))
    a = Conv2d(8, 5, 3, padding=1, rng=0, dtype=np.float64, algorithm="im2col")
    b = Conv2d(8, 5, 3, padding=1, rng=0, dtype=np.float64, algorithm="winograd")
    a.params["bias"][...] = b.params["bias"][...] = rng.standard_normal(5)
    ya, ca = a.forward(x)
    yb, cb = b.forward(x)
    np.testing.assert_allclose(yb, ya, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(ya.shape)
    (dxa, ga), (dxb, gb) = a.backward(ca, dy), b.backward(cb, dy)
    np.testing.assert_allclose(dxb, dxa, rtol=1e-12, atol=1e-12)
    for k in ga:
        np.testing.assert_allclose(gb[k], ga[k], rtol=1e-12, atol=1e-12)
    tx = rng.standard_normal(x.shape)
    tp = {"weight": rng.standard_normal(a.params["weight"].shape), "bias": rng.standard_normal(5)}
    np.testing.assert_allclose(b.jvp(x, tx, tp)[1], a.jvp(x, tx, tp)[1], rtol=1e-12, atol=1e-12)


# -- the layer's chunks of images (nograd.layers.winograd) ------------------------------------------

class _chunked:
    """``with _chunked(g, k):`` the layer runs ``k`` images per chunk (CHUNK_BYTES set to fit ``k``)."""

    def __init__(self, g, per_chunk, itemsize=8):
        self.size = per_chunk * 16 * max(g["C"], g["K"]) * g["TH"] * g["TW"] * itemsize

    def __enter__(self):
        self.old, wt.CHUNK_BYTES = wt.CHUNK_BYTES, self.size

    def __exit__(self, *exc):
        wt.CHUNK_BYTES = self.old


def test_chunks_cover_the_batch_in_whole_images():
    assert wt.chunks(5, wt.CHUNK_BYTES // 2) == [(0, 2), (2, 4), (4, 5)]
    assert wt.chunks(3, 10 * wt.CHUNK_BYTES) == [(0, 1), (1, 2), (2, 3)]      # at least one image
    assert wt.chunks(4, 1) == [(0, 4)]


@SETTINGS
@given(geometry(), st.integers(1, 2), st.booleans())
def test_chunked_layer_is_exact_on_integers(g, per_chunk, bias):
    """One or two images per chunk (so several chunks, the last one shorter when N = 3): forward,
    input cotangent and weight gradient still equal the direct method exactly (float64, integers),
    with a bias; the fused ReLU + 2×2 max pooling path too (against the plain layers)."""
    x, w, dy = _data(g, np.float64, True)
    layer = Conv2d(g["C"], g["K"], 3, padding=g["p"], bias=bias, algorithm="winograd", dtype=np.float64)
    layer.params["weight"][...] = w
    b = np.arange(g["K"], dtype=np.float64) - 1 if bias else 0.0
    if bias:
        layer.params["bias"][...] = b
    with _chunked(g, per_chunk):
        y, cache = layer.forward(x)
        tiles = cache[1]
        assert len(tiles.V) == -(-g["N"] // per_chunk)
        np.testing.assert_array_equal(y, direct(x, w, g["p"]) + np.reshape(b, (-1, 1, 1)))
        dx, grads = layer.backward(cache, dy)
        ex, ew = direct_vjp(x, w, g["p"], dy)
        np.testing.assert_array_equal(dx, ex)
        np.testing.assert_array_equal(grads["weight"], ew)
        if g["OH"] >= 2 and g["OW"] >= 2:
            yp, cp, idx, pos = layer.forward_relu_pool(x, layer.params)
            plain = MaxPool2d(2)
            ref, pcache = plain.forward(np.maximum(y, 0))
            np.testing.assert_array_equal(yp, ref)
            dyp = dy[:, :, :yp.shape[2], :yp.shape[3]]
            dxp, gp = layer.backward_relu_pool(cp, dyp, idx, pos, layer.params)
            dY = plain.backward(pcache, dyp)[0] * (y > 0)
            ex, ew = direct_vjp(x, w, g["p"], dY)
            np.testing.assert_array_equal(dxp, ex)
            np.testing.assert_array_equal(gp["weight"], ew)


def test_winograd_cache_is_not_mistaken_for_a_batch_major_array():
    """With a batch of 16, the transformed input (16, C, P) used to sit in the cache as an array
    whose first axis matched the batch, and VCAS's row gathering would have gathered the 16
    transform components as if they were samples. The cache now holds a Tiles object, which the
    walker refuses (it then scatters the cotangent into the whole batch instead)."""
    from nograd.rules.vcas_walk import NotRowwise, take_rows

    layer = Conv2d(8, 4, 3, padding=1, algorithm="winograd", rng=0)
    x = np.random.default_rng(0).standard_normal((16, 8, 8, 8)).astype(np.float32)
    _, cache = layer.forward(x)
    assert isinstance(cache[1], wt.Tiles)
    with pytest.raises(NotRowwise):
        take_rows(cache, np.arange(4), 16)


# -- the polyphase-plane kernels (nograd.kernels.winograd_planes) ---------------------------------

def _padded(A, N, TH, TW):
    """(16, C, N·TH·TW) in the tile-row layout → the planes layout, zeros in the padding tiles."""
    X, C = A.shape[:2]
    out = np.zeros((X, C, N, TH, TW + 1), A.dtype)
    out[..., :TW] = A.reshape(X, C, N, TH, TW)
    return out.reshape(X, C, -1)


def _real(A, N, TH, TW):
    """The planes layout's real tiles, in the tile-row layout."""
    X, C = A.shape[:2]
    return A.reshape(X, C, N, TH, TW + 1)[..., :TW].reshape(X, C, -1)


@SETTINGS
@given(geometry(), st.sampled_from([np.float32, np.float64]))
def test_plane_kernels_equal_the_tile_row_kernels_exactly_on_integers(g, dtype):
    """Every map of the planes layout equals the tile-row kernels' (themselves checked against the
    NumPy references above) on the real tiles, exactly; the cotangent's padding tiles are zero."""
    x, _, dy = _data(g, dtype, True)
    rng = np.random.default_rng(g["seed"] + 2)
    N, TH, TW = g["N"], g["TH"], g["TW"]
    args = (g["p"], g["p"], TH, TW)
    Pp = N * TH * (TW + 1)
    V = wp.input_transform(x, *args, np.full((16, g["C"], Pp), np.nan, dtype))
    np.testing.assert_array_equal(_real(V, N, TH, TW), wk.input_transform(x, *args, np.empty((16, g["C"], g["P"]), dtype)))
    Z = wp.cotangent_transform(dy, TH, TW, np.full((16, g["K"], Pp), np.nan, dtype))
    np.testing.assert_array_equal(Z, _padded(wk.cotangent_transform(dy, TH, TW, np.empty((16, g["K"], g["P"]), dtype)), N, TH, TW))
    M = rng.integers(-9, 10, (16, g["K"], g["P"])).astype(dtype)
    bias = rng.integers(-3, 4, g["K"]).astype(dtype)
    for relu in (False, True):
        ya, yb = (np.full((N, g["K"], g["OH"], g["OW"]), np.nan, dtype) for _ in range(2))
        np.testing.assert_array_equal(wp.output_transform(_padded(M, N, TH, TW), bias, relu, TH, TW, ya),
                                      wk.output_transform(M, bias, relu, TH, TW, yb))
    Mx = rng.integers(-9, 10, (16, g["C"], g["P"])).astype(dtype)
    da, db = (np.full(x.shape, np.nan, dtype) for _ in range(2))
    np.testing.assert_array_equal(wp.input_grad_transform(_padded(Mx, N, TH, TW), *args, da),
                                  wk.input_grad_transform(Mx, *args, db))


@SETTINGS
@given(geometry(), st.integers(1, 2))
def test_layer_on_planes_is_exact_on_integers(g, per_chunk):
    """The layer with the planes kernels for every row length (PLANES_MIN_TW = 1), one or two images
    per chunk: forward, input cotangent and weight gradient equal the direct method exactly."""
    x, w, dy = _data(g, np.float64, True)
    layer = _layer(g, w, np.float64)
    old = wt.PLANES_MIN_TW
    wt.PLANES_MIN_TW = 1
    try:
        with _chunked(dict(g, TW=g["TW"] + 1), per_chunk):     # a chunk counts the padding tiles
            y, cache = layer.forward(x)
            assert cache[1].layout[0] is wp
            assert len(cache[1].bounds) == -(-g["N"] // per_chunk) and cache[1].V == []   # x kept
            np.testing.assert_array_equal(y, direct(x, w, g["p"]))
            dx, grads = layer.backward(cache, dy)
    finally:
        wt.PLANES_MIN_TW = old
    ex, ew = direct_vjp(x, w, g["p"], dy)
    np.testing.assert_array_equal(dx, ex)
    np.testing.assert_array_equal(grads["weight"], ew)


def test_planes_are_used_from_eight_tiles_a_row_and_agree_in_float32():
    """A 32×32 layer (16 tiles a row) runs on planes, an 8×8 one (4) on tile rows; in float32 the
    planes path is within the rounding bound of the direct method."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 8, 32, 32)).astype(np.float32)
    w = (rng.standard_normal((4, 8, 3, 3)) / 9).astype(np.float32)
    layer = Conv2d(8, 4, 3, padding=1, bias=False, algorithm="winograd")
    layer.params["weight"][...] = w
    y, cache = layer.forward(x)
    assert cache[1].layout[0] is wp
    assert layer.forward(x[:, :, :8, :8])[1][1].layout[0] is wk
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, grads = layer.backward(cache, dy)
    assert_within_float32_bound(x, w, 1, dy, y, dx, grads["weight"], 3 * 16 * 16)


# -- the filter transforms (compiled, tap by tap) ---------------------------------------------------

@SETTINGS
@given(st.integers(1, 9), st.integers(1, 9), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2**31))
def test_filter_transforms_equal_their_references_and_are_adjoint(K, C, dtype, seed):
    """U = G g Gᵀ and its adjoint Gᵀ M G against the einsums of the reference module (exact on
    integers, to rounding on floats), laid out as the layer reads them, and adjoint to each other."""
    rng = np.random.default_rng(seed)
    for draw in (lambda s: rng.integers(-9, 10, s).astype(dtype), lambda s: rng.standard_normal(s).astype(dtype)):
        w, M = draw((K, C, 3, 3)), draw((16, K, C))
        U, gw = wk.filter_transform(w), wk.filter_grad_transform(M)
        assert U.shape == (16, K, C) and gw.shape == (K, C, 3, 3) and U.dtype == gw.dtype == dtype
        assert U.flags.c_contiguous and gw.flags.c_contiguous
        eps = np.finfo(dtype).eps
        tol = dict(rtol=4 * eps, atol=4 * eps)
        np.testing.assert_allclose(U, wr.filter_transform(w), **tol)
        np.testing.assert_allclose(gw, wr.filter_grad_transform(M), **tol)
        for k, c in ((0, 0), (K - 1, C - 1)):                    # one filter, by the paper's matrices
            np.testing.assert_allclose(U[:, k, c].reshape(4, 4), G_ @ w[k, c].astype(np.float64) @ G_.T, **tol)
        lhs, rhs = np.vdot(U.astype(np.float64), M), np.vdot(w.astype(np.float64), gw)
        assert abs(lhs - rhs) <= 64 * eps * (1 + np.vdot(np.abs(U), np.abs(M)))
    ints = rng.integers(-9, 10, (K, C, 3, 3)).astype(dtype)
    np.testing.assert_array_equal(wk.filter_transform(ints), wr.filter_transform(ints))
