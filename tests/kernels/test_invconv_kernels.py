"""The Numba kernels of InverseConv2d (nograd.kernels.invconv) against the NumPy reference and a dense
triangular solve: channel counts on and off the 4×4 blocks, images smaller than the kernel, every
corner (flip), float32 and float64, batch sizes that are not a multiple of the vector width."""
import itertools

import numpy as np
import pytest

from nograd.kernels import invconv as K
from nograd.kernels import invconv_ref as R

scipy_linalg = pytest.importorskip("scipy.linalg")


def _problem(C, k, H, W, N, dtype, seed=0):
    rng = np.random.default_rng(seed)
    Wt = rng.normal(0.0, 2.0 / (C * k * k), (C, C, k, k))
    r = k - 1
    diag = rng.uniform(0.5, 1.5, C) * rng.choice([-1, 1], C)
    Wt[:, :, r, r] = np.tril(Wt[:, :, r, r], -1) + np.diag(diag)
    x = rng.standard_normal((N, C, H, W))
    v = rng.standard_normal((N, C, H, W))
    return Wt.astype(dtype), diag.astype(dtype), x.astype(dtype), v.astype(dtype)


def _run(mod, Wt, diag, x, v, fh, fw):
    N, C, H, W = x.shape
    k = Wt.shape[2]
    Z, G = mod.buffer(C, H, W, N, x.dtype), mod.buffer(C, H, W, N, x.dtype)
    z = mod.solve(x, Wt, diag, fh, fw, np.empty_like(x), Z)
    g = mod.solve_t(v, Wt, diag, fh, fw, np.empty_like(v), G)
    dW = mod.kernel_grad(G, Z, H, W, N, k, np.empty((C, C, k, k), x.dtype))
    # the buffers back in NCHW: the layout itself is checked by test_diagonal_layout_*
    return z, g, dW, mod.from_diag(Z, fh, fw, np.empty_like(x)), mod.from_diag(G, fh, fw, np.empty_like(v))


def _assert_match(C, k, H, W, N, dtype, fh=False, fw=False, seed=0):
    Wt, diag, x, v = _problem(C, k, H, W, N, dtype, seed)
    got = _run(K, Wt, diag, x, v, fh, fw)
    want = _run(R, Wt, diag, x, v, fh, fw)
    tol = 1e-11 if dtype == np.float64 else 2e-4
    for a, b, name in zip(got, want, ["z", "g", "dW", "Z", "G"]):
        assert a.dtype == dtype, name
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale, err_msg=name)


@pytest.mark.parametrize("C", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_kernels_match_reference_channels_and_kernel_sizes(C, k):
    _assert_match(C, k, 6, 5, 3, np.float64, seed=C * 10 + k)


@pytest.mark.parametrize("H,W", [(1, 1), (1, 7), (7, 1), (2, 2), (2, 6), (6, 2), (3, 3), (9, 4)])
@pytest.mark.parametrize("k", [3, 4])
def test_kernels_match_reference_small_and_thin_images(H, W, k):
    # includes H < k and W < k: no tap reaches the image on one side
    _assert_match(4, k, H, W, 2, np.float64, seed=H * 10 + W)
    _assert_match(3, k, H, W, 2, np.float64, seed=H * 10 + W + 1)


@pytest.mark.parametrize("fh,fw", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_match_reference_corners_and_dtypes(fh, fw, dtype):
    _assert_match(4, 3, 8, 7, 8, dtype, fh, fw, seed=3)
    _assert_match(5, 2, 5, 9, 1, dtype, fh, fw, seed=4)


@pytest.mark.parametrize("N", [1, 7, 8, 9, 24])
def test_kernels_match_reference_batch_sizes(N):
    _assert_match(4, 3, 10, 12, N, np.float32, seed=N)


@pytest.mark.parametrize("C,k,H,W", [(4, 3, 6, 7), (5, 3, 4, 4), (8, 2, 3, 5), (2, 4, 5, 3)])
def test_kernels_match_dense_solve_triangular(C, k, H, W):
    Wt, diag, x, v = _problem(C, k, H, W, 3, np.float64, seed=5)
    M = R.dense(Wt, diag, H, W)
    z, g, _, _, _ = _run(K, Wt, diag, x, v, False, False)
    u = x.transpose(0, 2, 3, 1).reshape(3, -1).T
    want = scipy_linalg.solve_triangular(M, u, lower=True)
    np.testing.assert_allclose(z, want.T.reshape(3, H, W, C).transpose(0, 3, 1, 2), rtol=1e-10, atol=1e-10)
    vv = v.transpose(0, 2, 3, 1).reshape(3, -1).T
    want = scipy_linalg.solve_triangular(M, vv, lower=True, trans="T")
    np.testing.assert_allclose(g, want.T.reshape(3, H, W, C).transpose(0, 3, 1, 2), rtol=1e-10, atol=1e-10)


def test_kernel_grad_is_the_convolution_weight_gradient():
    """``Σ g · (K z)`` is linear in the kernel: its gradient is ``kernel_grad(g, z)``."""
    C, k, H, W, N = 4, 3, 5, 6, 2
    _, _, z, g = _problem(C, k, H, W, N, np.float64, seed=6)
    Z, G = K.buffer(C, H, W, N, z.dtype), K.buffer(C, H, W, N, z.dtype)
    K.to_diag(z, False, False, Z)
    K.to_diag(g, False, False, G)
    dW = K.kernel_grad(G, Z, H, W, N, k, np.empty((C, C, k, k)))
    r = k - 1
    zp = np.zeros((N, C, H + r, W + r))
    zp[:, :, r:, r:] = z
    want = np.zeros_like(dW)
    for i in range(k):
        for j in range(k):
            want[:, :, i, j] = np.einsum("nchw,nohw->co", g, zp[:, :, i:i + H, j:j + W])
    np.testing.assert_allclose(dW, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fh,fw", list(itertools.product([False, True], repeat=2)))
def test_diagonal_layout_round_trip_and_same_as_reference(fh, fw):
    a = np.random.default_rng(7).standard_normal((3, 2, 4, 6))
    for put, get in [(K, K), (K, R), (R, K), (R, R)]:
        Z = put.buffer(2, 4, 6, 3, a.dtype)
        put.to_diag(a, fh, fw, Z)
        np.testing.assert_array_equal(get.from_diag(Z, fh, fw, np.empty_like(a)), a)


@pytest.mark.parametrize("C,k,H,W", [(1, 1, 1, 1), (3, 2, 7, 7), (4, 3, 6, 5), (5, 3, 2, 9),
                                     (8, 4, 5, 4), (4, 4, 2, 2)])
@pytest.mark.parametrize("fh,fw", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_matches_reference_dense_and_undoes_the_solve(C, k, H, W, fh, fw, dtype):
    """conv (x = K z by reverse-order diagonals, in place) against the reference's sum of shifted
    copies, against the dense matrix, and solve(conv(z)) = z."""
    Wt, diag, z, _ = _problem(C, k, H, W, 3, dtype, seed=C + 10 * k + H)
    N = z.shape[0]
    x = K.conv(z, Wt, diag, fh, fw, np.empty_like(z), K.buffer(C, H, W, N, dtype))
    want = R.conv(z, Wt, diag, fh, fw, np.empty_like(z), R.buffer(C, H, W, N, dtype))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(x, want, rtol=tol, atol=tol)
    if not (fh or fw):
        M = R.dense(Wt.astype(np.float64), diag.astype(np.float64), H, W)
        u = z.astype(np.float64).transpose(0, 2, 3, 1).reshape(N, -1)
        dense_x = (u @ M.T).reshape(N, H, W, C).transpose(0, 3, 1, 2)
        np.testing.assert_allclose(x, dense_x, rtol=tol, atol=tol)
    back = K.solve(x, Wt, diag, fh, fw, np.empty_like(z), K.buffer(C, H, W, N, dtype))
    np.testing.assert_allclose(back, z, rtol=10 * tol, atol=10 * tol)
    # a zero diagonal is fine for the convolution (the jvp's tangent kernel has one)
    x0 = K.conv(z, Wt, np.zeros_like(diag), fh, fw, np.empty_like(z), K.buffer(C, H, W, N, dtype))
    w0 = R.conv(z, Wt, np.zeros_like(diag), fh, fw, np.empty_like(z), R.buffer(C, H, W, N, dtype))
    np.testing.assert_allclose(x0, w0, rtol=tol, atol=tol)
