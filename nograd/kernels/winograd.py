r"""Numba transforms of Winograd's minimal filtering F(2×2, 3×3) for stride-1 3×3 convolutions (NCHW).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016, §4 (eq. 8–10)
and §5 (F(2×2, 3×3)). A 2×2 output tile ``Y`` of a 3×3 correlation of a 4×4 input tile ``d`` with a
filter ``g`` is

.. math::
    Y = A^\top \big[(G g G^\top) \odot (B^\top d B)\big] A,

    B^\top = \begin{bmatrix}1&0&-1&0\\0&1&1&0\\0&-1&1&0\\0&1&0&-1\end{bmatrix},\quad
    G = \begin{bmatrix}1&0&0\\ \tfrac12&\tfrac12&\tfrac12\\ \tfrac12&-\tfrac12&\tfrac12\\0&0&1\end{bmatrix},\quad
    A^\top = \begin{bmatrix}1&1&1&0\\0&1&-1&-1\end{bmatrix}.

Summed over input channels, the 16 element-wise products of a tile become 16 matrix products
(eq. 10): with ``U[ξν] = (G g G^T)[ξν]`` of shape ``(K, C)`` and ``V[ξν] = (B^T d B)[ξν]`` of shape
``(C, P)`` over all ``P = N·TH·TW`` tiles, ``M[ξν] = U[ξν] V[ξν]`` and the output transform gives
``Y``: 16·K·C·P = 4·K·C·N·OH·OW multiply-adds where im2col needs 9·K·C·N·OH·OW (2.25× fewer).

The derivatives follow from the bilinear form (the transposition principle, Lavin & Gray §4): with
``Z = A Ȳ A^T`` the transformed output cotangent of a tile,

.. math::
    \bar g = G^\top \Big[\textstyle\sum_{\text{tiles}} Z \odot V\Big] G, \qquad
    \bar d = B \,\big[U \odot Z\big]\, B^\top,

so the weight gradient is 16 products ``Z[ξν] V[ξν]^T`` and the input cotangent 16 products
``U[ξν]^T Z[ξν]``, each followed by a transform; the input cotangent tiles overlap by two pixels
and are added.

Kernels here (same signatures as :mod:`nograd.kernels.winograd_ref`):

- :func:`input_transform` ``x (N, C, H, W) -> V (16, C, P)``, the input zero-padded by ``(ph, pw)``;
- :func:`output_transform` ``M (16, K, P) -> y (N, K, OH, OW)``, adding ``bias (K,)`` and
  optionally applying ReLU in the same write;
- :func:`cotangent_transform` ``dy (N, K, OH, OW) -> Z (16, K, P)``;
- :func:`input_grad_transform` ``Mx (16, C, P) -> dx (N, C, H, W)`` (overwrites ``dx``).

Tiles: ``TH = ⌈OH/2⌉``, ``TW = ⌈OW/2⌉``, tile ``p = (n·TH + th)·TW + tw`` covers output rows
``2th, 2th+1`` and padded input rows ``2th … 2th+3``. Each kernel copies one channel plane at a
time into a zero-bordered scratch plane of ``(2TH+2, 2TW+2)`` so the tile loops need no bounds
tests, and works on a whole tile row at a time: first the row pass of the transform over the
plane's width, then each of the column-pass outputs as its own loop over the tiles. Each loop then
has one output stream and at most four inputs, which LLVM vectorises (one loop computing all 16
outputs of a tile did not vectorise, and was 5× slower on the benchmark's layer). Every kernel
makes one pass over its input and output. Serial, as every kernel (DESIGN.md §5).
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def input_transform(x, ph, pw, TH, TW, V):
    N, C, H, W = x.shape
    HP, WP = 2 * TH + 2, 2 * TW + 2
    buf = np.zeros((HP, WP), dtype=V.dtype)
    s = np.empty((4, WP), dtype=V.dtype)
    hi_h, hi_w = min(H, HP - ph), min(W, WP - pw)
    for n in range(N):
        for c in range(C):
            for i in range(hi_h):
                for j in range(hi_w):
                    buf[ph + i, pw + j] = x[n, c, i, j]
            for th in range(TH):
                r = 2 * th
                base = (n * TH + th) * TW
                # rows of B^T d for every tile of this tile row at once
                for j in range(WP):
                    s[0, j] = buf[r, j] - buf[r + 2, j]
                for j in range(WP):
                    s[1, j] = buf[r + 1, j] + buf[r + 2, j]
                for j in range(WP):
                    s[2, j] = buf[r + 2, j] - buf[r + 1, j]
                for j in range(WP):
                    s[3, j] = buf[r + 1, j] - buf[r + 3, j]
                # columns: (B^T d) B; tile tw reads columns 2tw … 2tw+3
                for a in range(4):
                    sa = s[a]
                    v = V[4 * a, c, base:base + TW]
                    for tw in range(TW):
                        v[tw] = sa[2 * tw] - sa[2 * tw + 2]
                    v = V[4 * a + 1, c, base:base + TW]
                    for tw in range(TW):
                        v[tw] = sa[2 * tw + 1] + sa[2 * tw + 2]
                    v = V[4 * a + 2, c, base:base + TW]
                    for tw in range(TW):
                        v[tw] = sa[2 * tw + 2] - sa[2 * tw + 1]
                    v = V[4 * a + 3, c, base:base + TW]
                    for tw in range(TW):
                        v[tw] = sa[2 * tw + 1] - sa[2 * tw + 3]
    return V


@nb.njit(cache=True, nogil=True)
def output_rows(M, k, base, TW, s):
    """The row half of ``Aᵀ m A``: from the 16 transformed products ``M[:, k, base:base + TW]`` of
    channel ``k``'s ``TW`` tiles write ``s (8, TW)``, rows ``0..3`` the first row of ``Aᵀ m`` and
    ``4..7`` the second. Shared by :func:`output_transform` and the fused pooling's forward
    (:mod:`nograd.kernels.fused`)."""
    for j in range(4):
        m0 = M[j, k, base:base + TW]
        m1 = M[4 + j, k, base:base + TW]
        m2 = M[8 + j, k, base:base + TW]
        m3 = M[12 + j, k, base:base + TW]
        for tw in range(TW):
            s[j, tw] = m0[tw] + m1[tw] + m2[tw]
        for tw in range(TW):
            s[4 + j, tw] = m1[tw] - m2[tw] - m3[tw]


@nb.njit(cache=True, nogil=True)
def output_transform(M, bias, relu, TH, TW, y):
    N, K, OH, OW = y.shape
    buf = np.empty((2 * TH, 2 * TW), dtype=y.dtype)
    s = np.empty((8, TW), dtype=y.dtype)
    zero = y.dtype.type(0)
    for n in range(N):
        for k in range(K):
            for th in range(TH):
                r = 2 * th
                base = (n * TH + th) * TW
                output_rows(M, k, base, TW, s)     # rows: A^T m (2×4) for every tile of the row
                # columns: (A^T m) A, written to rows r, r+1
                for a in range(2):
                    for tw in range(TW):
                        buf[r + a, 2 * tw] = s[4 * a, tw] + s[4 * a + 1, tw] + s[4 * a + 2, tw]
                    for tw in range(TW):
                        buf[r + a, 2 * tw + 1] = s[4 * a + 1, tw] - s[4 * a + 2, tw] - s[4 * a + 3, tw]
            b = bias[k]
            for i in range(OH):
                if relu:
                    for j in range(OW):
                        v = buf[i, j] + b
                        y[n, k, i, j] = v if v > zero else zero
                else:
                    for j in range(OW):
                        y[n, k, i, j] = buf[i, j] + b
    return y


@nb.njit(cache=True, nogil=True)
def cotangent_columns(s, Z, k, base, TW):
    """The column half of ``A Ȳ Aᵀ``: from the row-transformed strip ``s (4, 2·TW)`` write the 16
    transformed cotangents of channel ``k``'s ``TW`` tiles at ``Z[:, k, base:base + TW]`` (tile
    ``tw`` reads columns ``2tw, 2tw + 1``). Shared by :func:`cotangent_transform` and the fused
    pooling's backward (:mod:`nograd.kernels.fused`)."""
    for a in range(4):
        sa = s[a]
        z = Z[4 * a, k, base:base + TW]
        for tw in range(TW):
            z[tw] = sa[2 * tw]
        z = Z[4 * a + 1, k, base:base + TW]
        for tw in range(TW):
            z[tw] = sa[2 * tw] + sa[2 * tw + 1]
        z = Z[4 * a + 2, k, base:base + TW]
        for tw in range(TW):
            z[tw] = sa[2 * tw] - sa[2 * tw + 1]
        z = Z[4 * a + 3, k, base:base + TW]
        for tw in range(TW):
            z[tw] = -sa[2 * tw + 1]


@nb.njit(cache=True, nogil=True)
def cotangent_transform(dy, TH, TW, Z):
    N, K, OH, OW = dy.shape
    WB = 2 * TW
    buf = np.zeros((2 * TH, WB), dtype=Z.dtype)
    s = np.empty((4, WB), dtype=Z.dtype)
    for n in range(N):
        for k in range(K):
            for i in range(OH):
                for j in range(OW):
                    buf[i, j] = dy[n, k, i, j]
            for th in range(TH):
                r = 2 * th
                base = (n * TH + th) * TW
                # rows of A Ȳ (A = (A^T)^T is 4×2): Ȳ_0, Ȳ_0 + Ȳ_1, Ȳ_0 − Ȳ_1, −Ȳ_1
                for j in range(WB):
                    s[0, j] = buf[r, j]
                for j in range(WB):
                    s[1, j] = buf[r, j] + buf[r + 1, j]
                for j in range(WB):
                    s[2, j] = buf[r, j] - buf[r + 1, j]
                for j in range(WB):
                    s[3, j] = -buf[r + 1, j]
                # columns: (A Ȳ) A^T; tile tw reads columns 2tw, 2tw+1
                cotangent_columns(s, Z, k, base, TW)
    return Z


@nb.njit(cache=True, nogil=True)
def input_grad_transform(Mx, ph, pw, TH, TW, dx):
    N, C, H, W = dx.shape
    HP, WP = 2 * TH + 2, 2 * TW + 2
    buf = np.empty((HP, WP), dtype=dx.dtype)
    t = np.empty((16, TW), dtype=dx.dtype)
    zero = dx.dtype.type(0)
    hi_h, hi_w = min(H, HP - ph), min(W, WP - pw)
    for n in range(N):
        for c in range(C):
            for i in range(HP):
                for j in range(WP):
                    buf[i, j] = zero
            for th in range(TH):
                r = 2 * th
                base = (n * TH + th) * TW
                # rows: B m (B = (B^T)^T), t[4a + j] is row a, column j of every tile
                for j in range(4):
                    m0 = Mx[j, c, base:base + TW]
                    m1 = Mx[4 + j, c, base:base + TW]
                    m2 = Mx[8 + j, c, base:base + TW]
                    m3 = Mx[12 + j, c, base:base + TW]
                    for tw in range(TW):
                        t[j, tw] = m0[tw]
                    for tw in range(TW):
                        t[4 + j, tw] = m1[tw] - m2[tw] + m3[tw]
                    for tw in range(TW):
                        t[8 + j, tw] = m1[tw] + m2[tw] - m0[tw]
                    for tw in range(TW):
                        t[12 + j, tw] = -m3[tw]
                # columns: (B m) B^T added onto the 4×4 input tiles, which overlap by two
                # columns: first the left halves (columns 2tw, 2tw+1), then the right halves
                for a in range(4):
                    row = buf[r + a]
                    for tw in range(TW):
                        row[2 * tw] += t[4 * a, tw]
                        row[2 * tw + 1] += t[4 * a + 1, tw] - t[4 * a + 2, tw] + t[4 * a + 3, tw]
                    for tw in range(TW):
                        row[2 * tw + 2] += t[4 * a + 1, tw] + t[4 * a + 2, tw] - t[4 * a, tw]
                        row[2 * tw + 3] -= t[4 * a + 3, tw]
            for i in range(H):
                for j in range(W):
                    dx[n, c, i, j] = buf[ph + i, pw + j] if (i < hi_h and j < hi_w) else zero
    return dx


# The transform matrices (Lavin & Gray 2016, §5), for the references and the tests.
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


@nb.njit(cache=True, nogil=True)
def _filter_transform(wt, U):
    # wt (3, 3, L): tap (i, j) of every filter, L = K·C; U (16, L). Rows G g, then columns (G g) Gᵀ;
    # each entry ½-scaled term by term, as a product with G computes it (scaling by ½ is exact)
    L = wt.shape[2]
    half = U.dtype.type(0.5)
    t = np.empty((4, 3, L), dtype=U.dtype)
    for j in range(3):
        g0, g1, g2 = wt[0, j], wt[1, j], wt[2, j]
        r0, r1, r2, r3 = t[0, j], t[1, j], t[2, j], t[3, j]
        for q in range(L):
            r0[q] = g0[q]
        for q in range(L):
            r1[q] = half * g0[q] + half * g1[q] + half * g2[q]
        for q in range(L):
            r2[q] = half * g0[q] - half * g1[q] + half * g2[q]
        for q in range(L):
            r3[q] = g2[q]
    for a in range(4):
        t0, t1, t2 = t[a, 0], t[a, 1], t[a, 2]
        u0, u1, u2, u3 = U[4 * a], U[4 * a + 1], U[4 * a + 2], U[4 * a + 3]
        for q in range(L):
            u0[q] = t0[q]
        for q in range(L):
            u1[q] = half * t0[q] + half * t1[q] + half * t2[q]
        for q in range(L):
            u2[q] = half * t0[q] - half * t1[q] + half * t2[q]
        for q in range(L):
            u3[q] = t2[q]
    return U


@nb.njit(cache=True, nogil=True)
def _filter_grad_transform(Mw, out):
    # Mw (16, L); out (3, 3, L). Rows Gᵀ m (m₀ + ½m₁ + ½m₂, ½m₁ − ½m₂, ½m₁ + ½m₂ + m₃), then columns
    L = Mw.shape[1]
    half = out.dtype.type(0.5)
    t = np.empty((3, 4, L), dtype=out.dtype)
    for b in range(4):
        m0, m1, m2, m3 = Mw[b], Mw[4 + b], Mw[8 + b], Mw[12 + b]
        r0, r1, r2 = t[0, b], t[1, b], t[2, b]
        for q in range(L):
            r0[q] = m0[q] + half * m1[q] + half * m2[q]
        for q in range(L):
            r1[q] = half * m1[q] - half * m2[q]
        for q in range(L):
            r2[q] = half * m1[q] + half * m2[q] + m3[q]
    for i in range(3):
        s0, s1, s2, s3 = t[i, 0], t[i, 1], t[i, 2], t[i, 3]
        o0, o1, o2 = out[i, 0], out[i, 1], out[i, 2]
        for q in range(L):
            o0[q] = s0[q] + half * s1[q] + half * s2[q]
        for q in range(L):
            o1[q] = half * s1[q] - half * s2[q]
        for q in range(L):
            o2[q] = half * s1[q] + half * s2[q] + s3[q]
    return out


def filter_transform(w):
    """``U = G g Gᵀ`` of every filter: ``w (K, C, 3, 3) -> U (16, K, C)`` in ``w``'s dtype, entry
    ``U[4a + b, k, c] = (G g_kc Gᵀ)[a, b]`` (compiled loops over all filters at once, tap by tap;
    reference: :func:`nograd.kernels.winograd_ref.filter_transform`, an einsum with ``G``)."""
    K, C = w.shape[:2]
    wt = np.ascontiguousarray(w.reshape(K * C, 9).T).reshape(3, 3, K * C)
    return _filter_transform(wt, np.empty((16, K * C), dtype=w.dtype)).reshape(16, K, C)


def filter_grad_transform(Mw):
    """``ḡ = Gᵀ Mw G`` per filter: ``Mw (16, K, C) -> (K, C, 3, 3)``, the adjoint of
    :func:`filter_transform` (reference: :func:`nograd.kernels.winograd_ref.filter_grad_transform`)."""
    K, C = Mw.shape[1:]
    out = _filter_grad_transform(np.ascontiguousarray(Mw).reshape(16, K * C),
                                 np.empty((3, 3, K * C), dtype=Mw.dtype))
    return np.ascontiguousarray(out.reshape(9, K * C).T).reshape(K, C, 3, 3)
