r"""Plain NumPy references for :mod:`nograd.kernels.invconv` (same signatures, same results).

Same interface as the kernels: NCHW in and out (read and written flipped by ``fh``, ``fw``), the
solution also left in a diagonal-layout buffer (:func:`to_diag`: per channel, pixels ordered by
anti-diagonal ``h + w`` then ``h``, each pixel's samples contiguous), which :func:`kernel_grad`
reads. Inside, the solves work pixel by pixel in raster order instead of over anti-diagonals (both
respect the dependencies); one pixel and one channel at a time, vectorised over the batch and the
``k×k×C`` window of already-solved values. The window is read from a zero-padded copy of the
output, so pixels outside the image contribute 0.
"""
from __future__ import annotations

import numpy as np

ROW_PAD = 272


def buffer(C, H, Wd, N, dtype):
    """A diagonal-layout buffer for ``C`` channels, ``H×Wd`` pixels, ``N`` samples."""
    return np.empty((C, H * Wd * N + ROW_PAD), dtype=dtype)


def diag_order(H, Wd):
    """The raster indices ``h·Wd + w`` of the pixels in diagonal order (``h + w``, then ``h``)."""
    hs, ws = np.meshgrid(np.arange(H), np.arange(Wd), indexing="ij")
    return np.lexsort((hs.ravel(), (hs + ws).ravel()))


def _flip(a, fh, fw):
    axes = tuple(ax for ax, f in ((2, fh), (3, fw)) if f)
    return np.flip(a, axes) if axes else a


def to_diag(a, fh, fw, Z):
    N, C, H, Wd = a.shape
    t = _flip(a, fh, fw).reshape(N, C, H * Wd)[:, :, diag_order(H, Wd)]   # (N, C, P)
    Z[:, :H * Wd * N] = t.transpose(1, 2, 0).reshape(C, -1)
    return Z


def from_diag(Z, fh, fw, out):
    N, C, H, Wd = out.shape
    t = np.empty((N, C, H * Wd), dtype=Z.dtype)
    t[:, :, diag_order(H, Wd)] = Z[:, :H * Wd * N].reshape(C, H * Wd, N).transpose(2, 0, 1)
    out[...] = _flip(t.reshape(N, C, H, Wd), fh, fw)
    return out


def _window_kernel(W, c):
    """Kernel row ``W[c]`` with the last tap's channels ``≥ c`` zeroed (not yet solved, or the
    diagonal, which divides instead)."""
    Wc = W[c].copy()
    Wc[c:, -1, -1] = 0
    return Wc


def _solve_hwcn(u, W, diag, z):
    u = u.transpose(3, 2, 0, 1)                        # (H, W, C, N) -> (N, C, H, W)
    N, C, H, Wd = u.shape
    r = W.shape[2] - 1
    zp = np.zeros((N, C, H + r, Wd + r), dtype=u.dtype)
    for h in range(H):
        for w in range(Wd):
            for c in range(C):
                win = zp[:, :, h:h + r + 1, w:w + r + 1]
                s = np.einsum("noij,oij->n", win, _window_kernel(W, c))
                zp[:, c, h + r, w + r] = (u[:, c, h, w] - s) / diag[c]
    z[...] = zp[:, :, r:, r:].transpose(2, 3, 1, 0)
    return z


def _solve_t_hwcn(v, W, diag, g):
    v = v.transpose(3, 2, 0, 1)
    N, C, H, Wd = v.shape
    r = W.shape[2] - 1
    Wt = W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)   # (o, c, i', j'): tap i' reads pixel h + i'
    gp = np.zeros((N, C, H + r, Wd + r), dtype=v.dtype)
    for h in range(H - 1, -1, -1):
        for w in range(Wd - 1, -1, -1):
            for o in range(C - 1, -1, -1):
                win = gp[:, :, h:h + r + 1, w:w + r + 1]
                Wo = Wt[o].copy()
                Wo[: o + 1, 0, 0] = 0                   # own pixel: only channels c > o
                s = np.einsum("ncij,cij->n", win, Wo)
                gp[:, o, h, w] = (v[:, o, h, w] - s) / diag[o]
    g[...] = gp[:, :, :H, :Wd].transpose(2, 3, 1, 0)
    return g


def _kernel_grad_hwcn(g, z, k, out):
    g, z = g.transpose(3, 2, 0, 1), z.transpose(3, 2, 0, 1)   # to NCHW
    N, C, H, Wd = z.shape
    r = k - 1
    zp = np.zeros((N, C, H + r, Wd + r), dtype=z.dtype)
    zp[:, :, r:, r:] = z
    for i in range(k):
        for j in range(k):
            out[:, :, i, j] = np.einsum("nchw,nohw->co", g, zp[:, :, i:i + H, j:j + Wd])
    return out


def _hwcn(a, fh, fw):
    return np.ascontiguousarray(_flip(a, fh, fw).transpose(2, 3, 1, 0))


def solve(u, W, diag, fh, fw, z, Z):
    """``z = K⁻¹ u`` (NCHW); ``Z`` left holding ``z`` in the diagonal layout."""
    zt = _solve_hwcn(_hwcn(u, fh, fw), W, diag, np.empty(u.shape[2:] + u.shape[1::-1], u.dtype))
    z[...] = _flip(zt.transpose(3, 2, 0, 1), fh, fw)
    to_diag(z, fh, fw, Z)
    return z


def solve_t(v, W, diag, fh, fw, g, G):
    """``g = K⁻ᵀ v`` (NCHW); ``G`` left holding ``g`` in the diagonal layout."""
    gt = _solve_t_hwcn(_hwcn(v, fh, fw), W, diag, np.empty(v.shape[2:] + v.shape[1::-1], v.dtype))
    g[...] = _flip(gt.transpose(3, 2, 0, 1), fh, fw)
    to_diag(g, fh, fw, G)
    return g


def conv(z, W, diag, fh, fw, x, Z):
    """``x = K z`` (NCHW, flipped as :func:`to_diag`), as a sum over the taps of shifted copies of a
    zero-padded ``z``; ``Z`` left holding ``x`` in the diagonal layout."""
    N, C, H, Wd = z.shape
    r = W.shape[2] - 1
    We = W.copy()
    We[:, :, r, r] = np.tril(We[:, :, r, r], -1) + np.diag(diag)
    zp = np.zeros((N, C, H + r, Wd + r), z.dtype)
    zp[:, :, r:, r:] = _flip(z, fh, fw)
    out = np.zeros((N, C, H, Wd), z.dtype)
    for i in range(r + 1):
        for j in range(r + 1):
            out += np.einsum("co,nohw->nchw", We[:, :, i, j], zp[:, :, i:i + H, j:j + Wd])
    x[...] = _flip(out, fh, fw)
    to_diag(x, fh, fw, Z)
    return x


def kernel_grad(G, Z, H, Wd, N, k, out):
    """The causal convolution's weight gradient from ``g`` and ``z`` in the diagonal layout."""
    C = G.shape[0]
    g = from_diag(G, False, False, np.empty((N, C, H, Wd), G.dtype))
    z = from_diag(Z, False, False, np.empty((N, C, H, Wd), Z.dtype))
    return _kernel_grad_hwcn(_hwcn(g, False, False), _hwcn(z, False, False), k, out)


def dense(W, diag, H, Wd):
    """The ``n×n`` matrix (``n = H·Wd·C``) of the causal convolution, pixel-major and channel-minor
    (index ``(h·Wd + w)·C + c``): lower triangular, diagonal ``diag`` repeated per pixel. For tests
    and for the dense baseline of ``bench/invconv.py``; ``W`` is read as in :func:`solve`."""
    C, k = W.shape[0], W.shape[2]
    r = k - 1
    Wm = W.copy()
    for c in range(C):
        Wm[c, c:, r, r] = 0
        Wm[c, c, r, r] = diag[c]
    n = H * Wd * C
    M = np.zeros((n, n), dtype=W.dtype)
    hs, ws = np.meshgrid(np.arange(H), np.arange(Wd), indexing="ij")
    ch = np.arange(C)
    for i in range(k):
        for j in range(k):
            hh, ww = hs - r + i, ws - r + j
            ok = (hh >= 0) & (ww >= 0)
            rows = ((hs[ok] * Wd + ws[ok]) * C)[:, None, None] + ch[None, :, None]
            cols = ((hh[ok] * Wd + ww[ok]) * C)[:, None, None] + ch[None, None, :]
            M[rows, cols] = Wm[:, :, i, j][None]
    return M
