r"""Winograd F(2×2, 3×3)'s four transforms with the channels innermost: ``V (16, P, C)``.

The same maps as :mod:`nograd.kernels.winograd` (Lavin & Gray 2016, §4–5: ``V = Bᵀ d B``,
``y = Aᵀ M A``, ``Z = A Ȳ Aᵀ``, ``x̄ = B M_x Bᵀ`` overlap-added), the same tiles in the same order
(``p = (n·TH + th)·TW + tw``), but the transformed arrays are **channels-last**: ``V[ξ, p, :]`` is
one tile's ξ-th entry for every channel, contiguous. Each image is first turned channels-last
into a zero-bordered scratch image ``(2TH + 2, 2TW + 2, C)`` (one pass; ``(8×8, 64 channels)`` is
16 kB, in the core's L1 cache), then every transform pass is a loop over the channels with the
tile's pixels as fixed rows of that scratch — long unit-stride loops even when an image has only
four tiles a row, where the tile-row kernels' loops are four long and the polyphase planes'
twenty (:mod:`nograd.kernels.winograd_planes`). The outputs are turned back to NCHW the same way.

The products that go with this layout (:mod:`nograd.layers.winograd`) are ``M = V Uᵀ``
``(16, P, K)``, ``Ū = Zᵀ V`` and ``M_x = Z U``.

The arithmetic is the tile-row kernels', in the same order (the rows of ``Bᵀ d`` then its columns;
``(m₀ + m₁) + m₂`` then the bias; the input cotangent's left tile halves of a tile row before its
right halves), so the results are theirs bit for bit, transposed. Serial, ``nogil``, compiled on
first use (``cache=True``). Reference: the tile-row kernels (``tests/kernels/test_winograd_cl.py``
compares every map with theirs, exactly, on hypothesis-drawn geometries).
"""
from __future__ import annotations

import numba as nb
import numpy as np

#: the layout flag :mod:`nograd.layers.winograd` reads to orient the products
CHANNELS_LAST = True


@nb.njit(cache=True, nogil=True, inline="always")
def _turn(img, rows, cols, oh, ow, out):
    """``out[oh + i, ow + j, c] = img[c, i, j]`` for ``i < rows``, ``j < cols``: one image
    ``(C, H, W)`` into the channels-last scratch ``out``."""
    C = img.shape[0]
    for i in range(rows):
        for j in range(cols):
            dst = out[oh + i, ow + j]
            for c in range(C):
                dst[c] = img[c, i, j]


@nb.njit(cache=True, nogil=True)
def input_transform(x, ph, pw, TH, TW, V):
    """``x (N, C, H, W)`` → ``V (16, N·TH·TW, C)``, the input zero-padded by ``(ph, pw)``."""
    N, C, H, W = x.shape
    HP, WP = 2 * TH + 2, 2 * TW + 2
    xt = np.zeros((HP, WP, C), dtype=V.dtype)            # the border stays zero for every image
    hi_h, hi_w = min(H, HP - ph), min(W, WP - pw)
    for n in range(N):
        _turn(x[n], hi_h, hi_w, ph, pw, xt)
        for th in range(TH):
            r = 2 * th
            for tw in range(TW):
                p = (n * TH + th) * TW + tw
                q = 2 * tw
                for a in range(4):
                    # row a of Bᵀ d: d₀ − d₂, d₁ + d₂, d₂ − d₁, d₁ − d₃ (rows r .. r+3)
                    if a == 0:
                        s, t = xt[r], xt[r + 2]
                    elif a == 1:
                        s, t = xt[r + 1], xt[r + 2]
                    elif a == 2:
                        s, t = xt[r + 2], xt[r + 1]
                    else:
                        s, t = xt[r + 1], xt[r + 3]
                    s0, s1, s2, s3 = s[q], s[q + 1], s[q + 2], s[q + 3]
                    t0, t1, t2, t3 = t[q], t[q + 1], t[q + 2], t[q + 3]
                    v0, v1, v2, v3 = V[4 * a, p], V[4 * a + 1, p], V[4 * a + 2, p], V[4 * a + 3, p]
                    if a == 1:      # two loops, not one with s + sg·t: the product cost 25–30 % here
                        for c in range(C):
                            e0, e1, e2, e3 = s0[c] + t0[c], s1[c] + t1[c], s2[c] + t2[c], s3[c] + t3[c]
                            v0[c] = e0 - e2
                            v1[c] = e1 + e2
                            v2[c] = e2 - e1
                            v3[c] = e1 - e3
                    else:
                        for c in range(C):
                            e0, e1, e2, e3 = s0[c] - t0[c], s1[c] - t1[c], s2[c] - t2[c], s3[c] - t3[c]
                            v0[c] = e0 - e2
                            v1[c] = e1 + e2
                            v2[c] = e2 - e1
                            v3[c] = e1 - e3
    return V


@nb.njit(cache=True, nogil=True)
def output_transform(M, bias, relu, TH, TW, y):
    """``M (16, N·TH·TW, K)`` → ``y (N, K, OH, OW)``, plus ``bias (K,)``, then ``max(·, 0)`` if
    ``relu``."""
    N, K, OH, OW = y.shape
    yt = np.empty((2 * TH, 2 * TW, K), dtype=y.dtype)
    zero, one = y.dtype.type(0), y.dtype.type(1)
    for n in range(N):
        for th in range(TH):
            r = 2 * th
            for tw in range(TW):
                p = (n * TH + th) * TW + tw
                q = 2 * tw
                for a in range(2):
                    # row a of Aᵀ m, per column j: m₀ⱼ + m₁ⱼ + m₂ⱼ (a = 0), m₁ⱼ − m₂ⱼ − m₃ⱼ (a = 1),
                    # i.e. f + sg·g + sg·h with rows f, g, h = a, a + 1, a + 2 (sg·g exact)
                    f0, f1, f2, f3 = M[4 * a, p], M[4 * a + 1, p], M[4 * a + 2, p], M[4 * a + 3, p]
                    g0, g1, g2, g3 = M[4 * a + 4, p], M[4 * a + 5, p], M[4 * a + 6, p], M[4 * a + 7, p]
                    h0, h1, h2, h3 = M[4 * a + 8, p], M[4 * a + 9, p], M[4 * a + 10, p], M[4 * a + 11, p]
                    sg = one if a == 0 else -one
                    out0, out1 = yt[r + a, q], yt[r + a, q + 1]
                    for k in range(K):
                        s1, s2 = f1[k] + sg * g1[k] + sg * h1[k], f2[k] + sg * g2[k] + sg * h2[k]
                        out0[k] = f0[k] + sg * g0[k] + sg * h0[k] + s1 + s2
                        out1[k] = s1 - s2 - (f3[k] + sg * g3[k] + sg * h3[k])
        for k in range(K):                               # back to NCHW, the bias, ReLU
            b = bias[k]
            for i in range(OH):
                row = yt[i]
                if relu:
                    for j in range(OW):
                        v = row[j, k] + b
                        y[n, k, i, j] = v if v > zero else zero
                else:
                    for j in range(OW):
                        y[n, k, i, j] = row[j, k] + b
    return y


@nb.njit(cache=True, nogil=True)
def cotangent_transform(dy, TH, TW, Z):
    """``ȳ (N, K, OH, OW)`` → ``Z (16, N·TH·TW, K)``."""
    N, K, OH, OW = dy.shape
    dt = np.zeros((2 * TH, 2 * TW, K), dtype=Z.dtype)    # beyond OH, OW: zero for every image
    for n in range(N):
        _turn(dy[n], OH, OW, 0, 0, dt)
        for th in range(TH):
            r = 2 * th
            for tw in range(TW):
                p = (n * TH + th) * TW + tw
                q = 2 * tw
                a0, a1 = dt[r, q], dt[r, q + 1]          # Ȳ₀ (row r), Ȳ₁ (row r+1), columns q, q+1
                b0, b1 = dt[r + 1, q], dt[r + 1, q + 1]
                for a in range(4):
                    # row a of A Ȳ: Ȳ₀, Ȳ₀ + Ȳ₁, Ȳ₀ − Ȳ₁, −Ȳ₁; then its columns the same way
                    z0, z1, z2, z3 = Z[4 * a, p], Z[4 * a + 1, p], Z[4 * a + 2, p], Z[4 * a + 3, p]
                    if a == 0:
                        for k in range(K):
                            s0, s1 = a0[k], a1[k]
                            z0[k], z1[k], z2[k], z3[k] = s0, s0 + s1, s0 - s1, -s1
                    elif a == 1:
                        for k in range(K):
                            s0, s1 = a0[k] + b0[k], a1[k] + b1[k]
                            z0[k], z1[k], z2[k], z3[k] = s0, s0 + s1, s0 - s1, -s1
                    elif a == 2:
                        for k in range(K):
                            s0, s1 = a0[k] - b0[k], a1[k] - b1[k]
                            z0[k], z1[k], z2[k], z3[k] = s0, s0 + s1, s0 - s1, -s1
                    else:
                        for k in range(K):
                            s0, s1 = -b0[k], -b1[k]
                            z0[k], z1[k], z2[k], z3[k] = s0, s0 + s1, s0 - s1, -s1
    return Z


@nb.njit(cache=True, nogil=True)
def _rows_b(Mx, p, T):
    """``T (4, 4, C)``: row u, column j of ``B m`` for tile ``p`` — ``m_j``, ``m₁ⱼ − m₂ⱼ + m₃ⱼ``,
    ``m₁ⱼ + m₂ⱼ − m₀ⱼ``, ``−m₃ⱼ`` with ``m_ij = M_x[4i + j, p]``."""
    C = T.shape[2]
    for j in range(4):
        m0, m1, m2, m3 = Mx[j, p], Mx[4 + j, p], Mx[8 + j, p], Mx[12 + j, p]
        t0, t1, t2, t3 = T[0, j], T[1, j], T[2, j], T[3, j]
        for c in range(C):
            t0[c] = m0[c]
            t1[c] = m1[c] - m2[c] + m3[c]
            t2[c] = m1[c] + m2[c] - m0[c]
            t3[c] = -m3[c]


@nb.njit(cache=True, nogil=True)
def input_grad_transform(Mx, ph, pw, TH, TW, dx):
    """``M_x (16, N·TH·TW, C)`` → ``x̄ (N, C, H, W)`` (overwritten): ``B m Bᵀ`` of every tile added
    onto its 4×4 window of the padded image, the border then dropped."""
    N, C, H, W = dx.shape
    HP, WP = 2 * TH + 2, 2 * TW + 2
    buf = np.empty((HP, WP, C), dtype=dx.dtype)
    T = np.empty((TW, 4, 4, C), dtype=dx.dtype)
    zero = dx.dtype.type(0)
    hi_h, hi_w = min(H, HP - ph), min(W, WP - pw)
    flat = buf.reshape(-1)
    for n in range(N):
        for i in range(flat.size):
            flat[i] = zero
        for th in range(TH):
            r = 2 * th
            for tw in range(TW):
                _rows_b(Mx, (n * TH + th) * TW + tw, T[tw])
            for a in range(4):                           # columns: (B m) Bᵀ; left halves first
                row = buf[r + a]
                for tw in range(TW):
                    t = T[tw, a]
                    u0, u1 = row[2 * tw], row[2 * tw + 1]
                    for c in range(C):
                        u0[c] += t[0, c]
                        u1[c] += t[1, c] - t[2, c] + t[3, c]
                for tw in range(TW):
                    t = T[tw, a]
                    u2, u3 = row[2 * tw + 2], row[2 * tw + 3]
                    for c in range(C):
                        u2[c] += t[1, c] + t[2, c] - t[0, c]
                        u3[c] -= t[3, c]
        for c in range(C):                               # back to NCHW, the border dropped
            for i in range(H):
                for j in range(W):
                    dx[n, c, i, j] = buf[ph + i, pw + j, c] if (i < hi_h and j < hi_w) else zero
    return dx
