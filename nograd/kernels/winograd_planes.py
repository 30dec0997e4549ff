r"""Winograd F(2×2, 3×3)'s four transforms on polyphase planes, with one padding tile per tile row.

The same maps as :mod:`nograd.kernels.winograd` (Lavin & Gray 2016, §4–5: ``V = Bᵀ d B``,
``y = Aᵀ M A``, ``Z = A Ȳ Aᵀ``, ``x̄ = B M_x Bᵀ`` overlap-added), in a layout where every pass is a
unit-stride loop over all the tiles of a plane instead of short loops over one tile row.

**Layout.** A tile row holds ``TWp = TW + 1`` tiles: the ``TW`` real ones and one padding tile
(``tw = TW``). Tile ``(n, th, tw)`` of a chunk is column ``p = (n·TH + th)·TWp + tw`` of
``V (16, C, P)``, ``M``, ``Z`` and ``M_x``; ``P = N·TH·TWp``. The padding tiles' entries of ``V``
are whatever the formula gives from the zero border (they only ever meet zero entries of ``Z``, so
they add nothing to the weight gradient), ``Z``'s are zero, and ``y``/``x̄`` ignore them.

**Planes.** The zero-padded input plane ``d`` of ``(2TH + 2) × (2TWp)`` is split into its four
polyphase planes ``Q_{rc}[i, m] = d[2i + r, 2m + c]`` of ``(TH + 1) × TWp`` (flat, row stride
``TWp``, one spare zero at the end). Pixel ``(u, v)`` of tile ``(th, tw)`` is then
``Q_{u mod 2, v mod 2}`` at flat index ``q + ⌊u/2⌋·TWp + ⌊v/2⌋`` with ``q = th·TWp + tw``: a fixed
offset per tap. So ``Bᵀ d`` is 8 loops over ``q`` (row pass, one per row ``a`` of ``Bᵀ`` and column
parity) and ``(Bᵀ d) B`` 16 more (column pass), each one output and two inputs at fixed offsets. The
output transform's four results per tile are the four polyphase planes of ``y``, interleaved into
``y`` once; the cotangent transform starts from the four polyphase planes of ``ȳ``; the input
cotangent adds each tap's contribution into its plane at the tap's offset, then interleaves.

Serial, ``nogil``, compiled on first use (``cache=True``). Reference: the tile-row kernels of
:mod:`nograd.kernels.winograd` (themselves checked against :mod:`nograd.kernels.winograd_ref`) —
``tests/kernels/test_winograd.py`` moves their results into this layout (padding tiles inserted or
dropped) and compares them exactly on integers. :func:`split_planes` and :func:`gather_planes`
also serve stride-2 im2col/col2im (:func:`nograd.kernels.conv.im2col_s2`).
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def split_planes(xp, ph, pw, Q4, prow):
    """Scatter the plane ``xp (H, W)``, placed at ``(ph, pw)`` in the zero border, into the
    polyphase planes ``Q4 (2, 2, R, TWp)``: ``Q4[r mod 2, c mod 2, ⌊r/2⌋, ⌊c/2⌋]`` = padded pixel
    ``(r, c)``. ``prow (TWp, 2)`` is a zeroed scratch row (its border entries stay zero). Every
    loop is indexed by its own counters (no computed offsets), so LLVM vectorises it."""
    H, W = xp.shape
    TWp = Q4.shape[3]
    flat = prow.reshape(-1)
    w = min(W, 2 * TWp - pw)
    dst = flat[pw:pw + w]
    rows = min(H, 2 * Q4.shape[2] - ph)
    for i in range(rows):
        for j in range(w):                  # the row, shifted by pw into the padded row
            dst[j] = xp[i, j]
        r = i + ph
        pr, R = r & 1, r >> 1
        for m in range(TWp):                # even and odd padded columns
            Q4[pr, 0, R, m] = prow[m, 0]
        for m in range(TWp):
            Q4[pr, 1, R, m] = prow[m, 1]


@nb.njit(cache=True, nogil=True)
def input_transform(x, ph, pw, TH, TW, V):
    """``x (N, C, H, W)`` → ``V (16, C, N·TH·(TW+1))`` (padded-row layout), input zero-padded by
    ``(ph, pw)``."""
    N, C, H, W = x.shape
    TWp = TW + 1
    L = TH * TWp
    Q4 = np.zeros((2, 2, TH + 2, TWp), dtype=V.dtype)     # rows TH + 1 .. : the spare zeros
    Q = Q4.reshape(2, 2, -1)
    prow = np.zeros((TWp, 2), dtype=V.dtype)
    R = np.empty((4, 2, L + 1), dtype=V.dtype)
    for n in range(N):
        base = n * L
        for c in range(C):
            split_planes(x[n, c], ph, pw, Q4[:, :, :TH + 1], prow)
            for pc in range(2):                          # rows: Bᵀ d, padded rows 2th .. 2th+3
                d0 = Q[0, pc, 0:L + 1]
                d1 = Q[1, pc, 0:L + 1]
                d2 = Q[0, pc, TWp:TWp + L + 1]
                d3 = Q[1, pc, TWp:TWp + L + 1]
                r0, r1, r2, r3 = R[0, pc], R[1, pc], R[2, pc], R[3, pc]
                for q in range(L + 1):
                    r0[q] = d0[q] - d2[q]
                for q in range(L + 1):
                    r1[q] = d1[q] + d2[q]
                for q in range(L + 1):
                    r2[q] = d2[q] - d1[q]
                for q in range(L + 1):
                    r3[q] = d1[q] - d3[q]
            for a in range(4):                           # columns: (Bᵀ d) B, columns 2tw .. 2tw+3
                e0 = R[a, 0, 0:L]
                o0 = R[a, 1, 0:L]
                e1 = R[a, 0, 1:L + 1]
                o1 = R[a, 1, 1:L + 1]
                v = V[4 * a, c, base:base + L]
                for q in range(L):
                    v[q] = e0[q] - e1[q]
                v = V[4 * a + 1, c, base:base + L]
                for q in range(L):
                    v[q] = o0[q] + e1[q]
                v = V[4 * a + 2, c, base:base + L]
                for q in range(L):
                    v[q] = e1[q] - o0[q]
                v = V[4 * a + 3, c, base:base + L]
                for q in range(L):
                    v[q] = o0[q] - o1[q]
    return V


@nb.njit(cache=True, nogil=True)
def output_planes(M, k, base, L, S, Y):
    """The four output planes ``Y (2, 2, L)`` of channel ``k``'s tiles ``base .. base + L`` of
    ``M (16, K, P)``: ``Y[a, b][q]`` is output pixel ``(2th + a, 2tw + b)``. ``S (2, 4, L)`` scratch."""
    for j in range(4):                                   # rows: Aᵀ m
        m0 = M[j, k, base:base + L]
        m1 = M[4 + j, k, base:base + L]
        m2 = M[8 + j, k, base:base + L]
        m3 = M[12 + j, k, base:base + L]
        s0, s1 = S[0, j], S[1, j]
        for q in range(L):
            s0[q] = m0[q] + m1[q] + m2[q]
        for q in range(L):
            s1[q] = m1[q] - m2[q] - m3[q]
    for a in range(2):                                   # columns: (Aᵀ m) A
        t0, t1, t2, t3 = S[a, 0], S[a, 1], S[a, 2], S[a, 3]
        y0, y1 = Y[a, 0], Y[a, 1]
        for q in range(L):
            y0[q] = t0[q] + t1[q] + t2[q]
        for q in range(L):
            y1[q] = t1[q] - t2[q] - t3[q]


@nb.njit(cache=True, nogil=True)
def output_transform(M, bias, relu, TH, TW, y):
    """``M (16, K, N·TH·(TW+1))`` → ``y (N, K, OH, OW)``, plus ``bias (K,)``, then ``max(·, 0)`` if
    ``relu``."""
    N, K, OH, OW = y.shape
    TWp = TW + 1
    L = TH * TWp
    S = np.empty((2, 4, L), dtype=y.dtype)
    Y4 = np.empty((2, 2, TH, TWp), dtype=y.dtype)
    Y = Y4.reshape(2, 2, -1)
    prow = np.empty((TWp, 2), dtype=y.dtype)
    flat = prow.reshape(-1)
    zero = y.dtype.type(0)
    for n in range(N):
        for k in range(K):
            output_planes(M, k, n * L, L, S, Y)
            b = bias[k]
            for i in range(OH):                          # interleave the planes into y, row by row
                a, R = i & 1, i >> 1
                for m in range(TWp):
                    prow[m, 0] = Y4[a, 0, R, m] + b
                for m in range(TWp):
                    prow[m, 1] = Y4[a, 1, R, m] + b
                if relu:
                    for j in range(OW):
                        v = flat[j]
                        y[n, k, i, j] = v if v > zero else zero
                else:
                    for j in range(OW):
                        y[n, k, i, j] = flat[j]
    return y


@nb.njit(cache=True, nogil=True)
def cotangent_transform(dy, TH, TW, Z):
    """``ȳ (N, K, OH, OW)`` → ``Z (16, K, N·TH·(TW+1))``; the padding tiles' entries are zero."""
    N, K, OH, OW = dy.shape
    TWp = TW + 1
    L = TH * TWp
    Y4 = np.zeros((2, 2, TH, TWp), dtype=Z.dtype)      # the planes of ȳ; padding stays zero
    Yb = Y4.reshape(2, 2, -1)
    prow = np.zeros((TWp, 2), dtype=Z.dtype)
    S = np.empty((4, 2, L), dtype=Z.dtype)
    for n in range(N):
        base = n * L
        for k in range(K):
            split_planes(dy[n, k], 0, 0, Y4, prow)
            for b in range(2):                          # rows of A Ȳ: Ȳ0, Ȳ0 + Ȳ1, Ȳ0 − Ȳ1, −Ȳ1
                y0, y1 = Yb[0, b], Yb[1, b]
                s0, s1, s2, s3 = S[0, b], S[1, b], S[2, b], S[3, b]
                for q in range(L):
                    s0[q] = y0[q]
                for q in range(L):
                    s1[q] = y0[q] + y1[q]
                for q in range(L):
                    s2[q] = y0[q] - y1[q]
                for q in range(L):
                    s3[q] = -y1[q]
            for a in range(4):                          # columns: (A Ȳ) Aᵀ, the same four
                t0, t1 = S[a, 0], S[a, 1]
                z = Z[4 * a, k, base:base + L]
                for q in range(L):
                    z[q] = t0[q]
                z = Z[4 * a + 1, k, base:base + L]
                for q in range(L):
                    z[q] = t0[q] + t1[q]
                z = Z[4 * a + 2, k, base:base + L]
                for q in range(L):
                    z[q] = t0[q] - t1[q]
                z = Z[4 * a + 3, k, base:base + L]
                for q in range(L):
                    z[q] = -t1[q]
    return Z


@nb.njit(cache=True, nogil=True)
def gather_planes(Q4, ph, pw, prow, out):
    """The inverse of :func:`split_planes`: ``out (H, W)`` = the window at ``(ph, pw)`` of the padded
    image whose polyphase planes are ``Q4 (2, 2, R, TWp)`` (zero beyond them); ``prow (TWp, 2)``
    scratch."""
    H, W = out.shape
    TWp = Q4.shape[3]
    flat = prow.reshape(-1)
    w = min(W, 2 * TWp - pw)
    src = flat[pw:pw + w]
    zero = out.dtype.type(0)
    for i in range(H):
        r = i + ph
        if r >= 2 * Q4.shape[2]:
            for j in range(W):
                out[i, j] = zero
            continue
        pr, R = r & 1, r >> 1
        for m in range(TWp):
            prow[m, 0] = Q4[pr, 0, R, m]
        for m in range(TWp):
            prow[m, 1] = Q4[pr, 1, R, m]
        for j in range(w):
            out[i, j] = src[j]
        for j in range(w, W):
            out[i, j] = zero


@nb.njit(cache=True, nogil=True)
def input_grad_transform(Mx, ph, pw, TH, TW, dx):
    """``M_x (16, C, N·TH·(TW+1))`` → ``x̄ (N, C, H, W)`` (overwritten): ``B m Bᵀ`` of every tile
    added onto its 4×4 window of the padded plane, the border then dropped. The padding tiles of
    ``M_x`` must be zero (they are when ``Z``'s are).

    Tap ``(u, v)`` of tile ``q`` lands on polyphase plane ``(u mod 2, v mod 2)`` at ``q + ⌊u/2⌋·TWp
    + ⌊v/2⌋``, so each plane is the sum of its four taps' arrays read at those offsets: the taps'
    arrays ``H[u, v]`` are stored after ``TWp + 1`` leading zeros, and plane entry ``i`` reads
    ``H[u, v][TWp + 1 + i − offset]`` — four reads and one write per entry, no accumulation."""
    N, C, H, W = dx.shape
    TWp = TW + 1
    L = TH * TWp
    LQ = (TH + 1) * TWp
    lead = TWp + 1
    Q4 = np.empty((2, 2, TH + 1, TWp), dtype=dx.dtype)
    Q = Q4.reshape(2, 2, -1)
    prow = np.zeros((TWp, 2), dtype=dx.dtype)
    G = np.empty((4, 4, L), dtype=dx.dtype)
    Hb = np.zeros((4, 4, lead + LQ), dtype=dx.dtype)    # zeros before and after each tap's array
    for n in range(N):
        base = n * L
        for c in range(C):
            for j in range(4):                         # rows: B m; G[u, j] is row u, column j
                m0 = Mx[j, c, base:base + L]
                m1 = Mx[4 + j, c, base:base + L]
                m2 = Mx[8 + j, c, base:base + L]
                m3 = Mx[12 + j, c, base:base + L]
                g0, g1, g2, g3 = G[0, j], G[1, j], G[2, j], G[3, j]
                for q in range(L):
                    g0[q] = m0[q]
                for q in range(L):
                    g1[q] = m1[q] - m2[q] + m3[q]
                for q in range(L):
                    g2[q] = m1[q] + m2[q] - m0[q]
                for q in range(L):
                    g3[q] = -m3[q]
            for u in range(4):                         # columns: (B m) Bᵀ, tap (u, v)
                h0, h1, h2, h3 = G[u, 0], G[u, 1], G[u, 2], G[u, 3]
                t = Hb[u, 0, lead:lead + L]
                for q in range(L):
                    t[q] = h0[q]
                t = Hb[u, 1, lead:lead + L]
                for q in range(L):
                    t[q] = h1[q] - h2[q] + h3[q]
                t = Hb[u, 2, lead:lead + L]
                for q in range(L):
                    t[q] = h1[q] + h2[q] - h0[q]
                t = Hb[u, 3, lead:lead + L]
                for q in range(L):
                    t[q] = -h3[q]
            for pr in range(2):                        # each plane: its four taps at their offsets
                for pc in range(2):
                    a = Hb[pr, pc, lead:lead + LQ]                     # offset 0
                    b = Hb[pr, pc + 2, lead - 1:lead - 1 + LQ]         # offset 1
                    e = Hb[pr + 2, pc, lead - TWp:lead - TWp + LQ]     # offset TWp
                    f = Hb[pr + 2, pc + 2, 0:LQ]                       # offset TWp + 1
                    out = Q[pr, pc]
                    for i in range(LQ):
                        out[i] = a[i] + b[i] + e[i] + f[i]
            gather_planes(Q4, ph, pw, prow, dx[n, c])
    return dx
