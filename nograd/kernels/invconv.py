r"""Numba kernels for the inverse of a causal convolution (:class:`nograd.layers.InverseConv2d`).

The causal convolution ``u = K z`` (NCHW, ``k×k`` kernel ``W (C, C, k, k)``, top-left padding)
reads, for output pixel ``(h, w)``, the inputs at ``(h - (k-1) + i, w - (k-1) + j)``; its last tap
``(k-1, k-1)`` is the pixel itself, lower-triangular over channels with diagonal ``diag``. In the
pixel-major, channel-minor ordering the Toeplitz matrix of ``K`` is lower triangular, so:

- :func:`solve` — ``z = K⁻¹ u`` by forward substitution. Pixel ``(h, w)`` depends only on pixels
  with ``h' ≤ h, w' ≤ w``, so the anti-diagonals ``d = h + w`` are solved in increasing order; the
  pixels of one diagonal are independent of each other (Nagar & Varma, AISTATS 2025,
  arXiv:2410.14634, the parallel inverse and its backpropagation), the channels of one pixel are
  solved in order ``c = 0 … C-1``.
- :func:`solve_t` — ``g = K⁻ᵀ v``, the transposed, anti-causal solve: diagonals in decreasing
  order, channels ``C-1 … 0``. This is the input cotangent of ``z = K⁻¹ u``.

Arrays are laid out ``(H, W, C, N)`` — pixel-major, batch innermost — so the innermost loop of
every multiply-add runs over the batch, contiguous and independent: LLVM turns it into vector code
(8 float32 samples per AVX instruction). The layer transposes from and to NCHW around the call.

``W`` passed here is the *effective* kernel: entries of the last tap on and above the channel
diagonal are ignored (the diagonal comes from ``diag``). The loops are serial for the reason given
in :mod:`nograd.kernels.conv` (OpenBLAS threads spinning after NumPy GEMMs); the pixels of a
diagonal form the loop that a parallel version would split. References: :mod:`.invconv_ref`.
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def solve(u, W, diag, z):
    H, Wd, C, N = u.shape
    k = W.shape[2]
    r = k - 1
    acc = np.empty((C, N), dtype=z.dtype)
    for d in range(H + Wd - 1):
        for h in range(max(0, d - Wd + 1), min(H - 1, d) + 1):
            w = d - h
            acc[:, :] = u[h, w]
            # earlier pixels: a small (C × k²C) product, the z vector loaded once for all c
            for i in range(max(0, r - h), k):
                hh = h - r + i
                for j in range(max(0, r - w), k):
                    if i == r and j == r:
                        continue
                    ww = w - r + j
                    for o in range(C):
                        for c in range(C):
                            a = W[c, o, i, j]
                            for n in range(N):
                                acc[c, n] -= a * z[hh, ww, o, n]
            # this pixel: lower-triangular over channels, solved in order
            for c in range(C):
                for o in range(c):
                    a = W[c, o, r, r]
                    for n in range(N):
                        acc[c, n] -= a * z[h, w, o, n]
                inv = 1 / diag[c]
                for n in range(N):
                    z[h, w, c, n] = acc[c, n] * inv
    return z


@nb.njit(cache=True, nogil=True)
def solve_t(v, W, diag, g):
    H, Wd, C, N = v.shape
    k = W.shape[2]
    r = k - 1
    acc = np.empty((C, N), dtype=g.dtype)
    for d in range(H + Wd - 2, -1, -1):
        for h in range(min(H - 1, d), max(0, d - Wd + 1) - 1, -1):
            w = d - h
            acc[:, :] = v[h, w]
            # later pixels (already solved in reverse order), through the transposed kernel
            for i in range(max(0, h + r - H + 1), k):
                hh = h + r - i
                for j in range(max(0, w + r - Wd + 1), k):
                    if i == r and j == r:
                        continue
                    ww = w + r - j
                    for c in range(C):
                        for o in range(C):
                            a = W[c, o, i, j]
                            for n in range(N):
                                acc[o, n] -= a * g[hh, ww, c, n]
            # this pixel: upper-triangular (the transpose), channels in reverse order
            for o in range(C - 1, -1, -1):
                for c in range(o + 1, C):
                    a = W[c, o, r, r]
                    for n in range(N):
                        acc[o, n] -= a * g[h, w, c, n]
                inv = 1 / diag[o]
                for n in range(N):
                    g[h, w, o, n] = acc[o, n] * inv
    return g


@nb.njit(cache=True, nogil=True)
def kernel_grad(g, z, k, out):
    """``out[c, o, i, j] = Σ_{h,w,n} g[h, w, c, n] · z[h-(k-1)+i, w-(k-1)+j, o, n]`` (zero outside):
    the weight gradient of the causal convolution with input ``z`` and output cotangent ``g``."""
    H, Wd, C, N = g.shape
    r = k - 1
    part = np.zeros((C, C, k, k, N), dtype=out.dtype)   # per-sample partial sums, reduced at the end
    for h in range(H):
        for w in range(Wd):
            for i in range(max(0, r - h), k):
                hh = h - r + i
                for j in range(max(0, r - w), k):
                    ww = w - r + j
                    for c in range(C):
                        for o in range(C):
                            for n in range(N):
                                part[c, o, i, j, n] += g[h, w, c, n] * z[hh, ww, o, n]
    for c in range(C):
        for o in range(C):
            for i in range(k):
                for j in range(k):
                    s = out.dtype.type(0)
                    for n in range(N):
                        s += part[c, o, i, j, n]
                    out[c, o, i, j] = s
    return out
