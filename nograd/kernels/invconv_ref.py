r"""Plain NumPy references for :mod:`nograd.kernels.invconv` (same signatures, same results).

Same layout as the kernels (``(H, W, C, N)``, transposed to NCHW inside). Raster order instead of anti-diagonals (both respect the dependencies); one pixel and one channel
at a time, vectorised over the batch and the ``k×k×C`` window of already-solved values. The
window is read from a zero-padded copy of the output, so pixels outside the image contribute 0.
"""
from __future__ import annotations

import numpy as np


def _window_kernel(W, c):
    """Kernel row ``W[c]`` with the last tap's channels ``≥ c`` zeroed (not yet solved, or the
    diagonal, which divides instead)."""
    Wc = W[c].copy()
    Wc[c:, -1, -1] = 0
    return Wc


def solve(u, W, diag, z):
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


def solve_t(v, W, diag, g):
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


def kernel_grad(g, z, k, out):
    g, z = g.transpose(3, 2, 0, 1), z.transpose(3, 2, 0, 1)   # to NCHW
    N, C, H, Wd = z.shape
    r = k - 1
    zp = np.zeros((N, C, H + r, Wd + r), dtype=z.dtype)
    zp[:, :, r:, r:] = z
    for i in range(k):
        for j in range(k):
            out[:, :, i, j] = np.einsum("nchw,nohw->co", g, zp[:, :, i:i + H, j:j + Wd])
    return out


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
