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

``W`` passed here is the *effective* kernel: entries of the last tap on and above the channel
diagonal are ignored (the diagonal comes from ``diag``). The loops are serial for the reason given
in :mod:`nograd.kernels.conv` (OpenBLAS threads spinning after NumPy GEMMs); the pixels of a
diagonal form the loop that a parallel version would split. References: :mod:`.invconv_ref`.
"""
from __future__ import annotations

import numba as nb


@nb.njit(cache=True, nogil=True)
def solve(u, W, diag, z):
    N, C, H, Wd = u.shape
    k = W.shape[2]
    r = k - 1
    for n in range(N):
        for d in range(H + Wd - 1):
            h0 = max(0, d - Wd + 1)
            h1 = min(H - 1, d)
            for h in range(h0, h1 + 1):
                w = d - h
                for c in range(C):
                    acc = u[n, c, h, w]
                    for i in range(k):
                        hh = h - r + i
                        if hh < 0:
                            continue
                        for j in range(k):
                            ww = w - r + j
                            if ww < 0:
                                continue
                            if i == r and j == r:
                                for o in range(c):
                                    acc -= W[c, o, i, j] * z[n, o, hh, ww]
                            else:
                                for o in range(C):
                                    acc -= W[c, o, i, j] * z[n, o, hh, ww]
                    z[n, c, h, w] = acc / diag[c]
    return z


@nb.njit(cache=True, nogil=True)
def solve_t(v, W, diag, g):
    N, C, H, Wd = v.shape
    k = W.shape[2]
    r = k - 1
    for n in range(N):
        for d in range(H + Wd - 2, -1, -1):
            h0 = max(0, d - Wd + 1)
            h1 = min(H - 1, d)
            for h in range(h1, h0 - 1, -1):
                w = d - h
                for o in range(C - 1, -1, -1):
                    acc = v[n, o, h, w]
                    for i in range(k):
                        hh = h + r - i
                        if hh >= H:
                            continue
                        for j in range(k):
                            ww = w + r - j
                            if ww >= Wd:
                                continue
                            if i == r and j == r:
                                for c in range(o + 1, C):
                                    acc -= W[c, o, i, j] * g[n, c, hh, ww]
                            else:
                                for c in range(C):
                                    acc -= W[c, o, i, j] * g[n, c, hh, ww]
                    g[n, o, h, w] = acc / diag[o]
    return g
