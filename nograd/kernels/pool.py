"""Numba pooling kernels (NCHW), compiled lazily with ``cache=True``.

Same signatures as :mod:`nograd.kernels.pool_ref`. Max pooling records the flat in-plane index of
each window's maximum so that backward (a scatter) and jvp (a gather) need no search.

Cost: one pass over the input per map. The comparisons are written as selects
(``a if a >= b else b``), which compile to branch-free code (a data-dependent branch per comparison
is mispredicted half the time on random data). The common 2×2, stride-2, unpadded window has its
own path (max and average pooling) whose backward writes every input once (no zero-fill pass).
Kernels are serial (DESIGN.md §5; measurements in ``docs/notes/performance-notes.md``).
"""
from __future__ import annotations

import numba as nb


@nb.njit(cache=True, nogil=True)
def _is_2x2(KH, KW, sh, sw, ph, pw):
    return KH == 2 and KW == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0


@nb.njit(cache=True, nogil=True, inline="always")
def max2x2(a, b, d, e, r0, c0, W):
    """``(max, flat index)`` of the window ``[[a, b], [d, e]]`` whose top-left input is
    ``(r0, c0)`` of a plane ``W`` wide; ties go to the earlier entry (row-major), as NumPy's
    argmax. Shared by the pooling and the fused conv/ReLU/pool kernels."""
    top = a >= b
    m1 = a if top else b
    k1 = c0 if top else c0 + 1
    bot = d >= e
    m2 = d if bot else e
    k2 = c0 if bot else c0 + 1
    first = m1 >= m2
    return (m1 if first else m2), (r0 * W + k1 if first else (r0 + 1) * W + k2)


@nb.njit(cache=True, nogil=True, inline="always")
def scatter2x2(dx, n, c, r0, c0, W, k, g, zero):
    """Write the 2×2 window at ``(r0, c0)`` of plane ``(n, c)``: ``g`` at flat index ``k``, zero
    elsewhere (each input written once, no zero-fill pass)."""
    base = r0 * W + c0
    dx[n, c, r0, c0] = g if k == base else zero
    dx[n, c, r0, c0 + 1] = g if k == base + 1 else zero
    dx[n, c, r0 + 1, c0] = g if k == base + W else zero
    dx[n, c, r0 + 1, c0 + 1] = g if k == base + W + 1 else zero


@nb.njit(cache=True, nogil=True)
def maxpool_forward(x, KH, KW, sh, sw, ph, pw, OH, OW, y, idx):
    N, C, H, W = x.shape
    if _is_2x2(KH, KW, sh, sw, ph, pw):
        for n in range(N):
            for c in range(C):
                for oh in range(OH):
                    r0 = 2 * oh
                    for ow in range(OW):
                        c0 = 2 * ow
                        y[n, c, oh, ow], idx[n, c, oh, ow] = max2x2(
                            x[n, c, r0, c0], x[n, c, r0, c0 + 1], x[n, c, r0 + 1, c0],
                            x[n, c, r0 + 1, c0 + 1], r0, c0, W)
        return y, idx
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                i_lo = max(0, ph - oh * sh)
                i_hi = min(KH, H + ph - oh * sh)
                for ow in range(OW):
                    j_lo = max(0, pw - ow * sw)
                    j_hi = min(KW, W + pw - ow * sw)
                    ih0 = oh * sh - ph
                    iw0 = ow * sw - pw
                    best = x[n, c, ih0 + i_lo, iw0 + j_lo]
                    arg = (ih0 + i_lo) * W + iw0 + j_lo
                    for i in range(i_lo, i_hi):
                        for j in range(j_lo, j_hi):
                            v = x[n, c, ih0 + i, iw0 + j]
                            take = v > best
                            best = v if take else best
                            arg = (ih0 + i) * W + iw0 + j if take else arg
                    y[n, c, oh, ow] = best
                    idx[n, c, oh, ow] = arg
    return y, idx


@nb.njit(cache=True, nogil=True)
def maxpool_backward(dy, idx, dx):
    """Scatter ``dy`` to the argmax positions, accumulating into ``dx``."""
    N, C, H, W = dx.shape
    OH, OW = dy.shape[2], dy.shape[3]
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    k = idx[n, c, oh, ow]
                    dx[n, c, k // W, k % W] += dy[n, c, oh, ow]
    return dx


@nb.njit(cache=True, nogil=True)
def zero_uncovered(dx, n, c, rows, cols):
    """Zero the rows ``≥ rows`` and the columns ``≥ cols`` of plane ``(n, c)``: the inputs that no
    2×2 stride-2 window covers (odd H or W), so a fast-path backward needs no zeroed ``dx``."""
    H, W = dx.shape[2], dx.shape[3]
    zero = dx.dtype.type(0)
    for r in range(rows, H):
        for s in range(W):
            dx[n, c, r, s] = zero
    for r in range(rows):
        for s in range(cols, W):
            dx[n, c, r, s] = zero


@nb.njit(cache=True, nogil=True)
def maxpool_backward_2x2(dy, idx, dx):
    """Write ``dx`` (need not be zeroed) for 2×2 stride-2 windows: each input written once."""
    N, C, H, W = dx.shape
    OH, OW = dy.shape[2], dy.shape[3]
    zero = dx.dtype.type(0)
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                r0 = 2 * oh
                for ow in range(OW):
                    scatter2x2(dx, n, c, r0, 2 * ow, W, idx[n, c, oh, ow], dy[n, c, oh, ow], zero)
            zero_uncovered(dx, n, c, 2 * OH, 2 * OW)
    return dx


@nb.njit(cache=True, nogil=True)
def avgpool_forward(x, KH, KW, sh, sw, ph, pw, OH, OW, count_include_pad, y):
    N, C, H, W = x.shape
    if _is_2x2(KH, KW, sh, sw, ph, pw):
        for n in range(N):
            for c in range(C):
                for oh in range(OH):
                    r0 = 2 * oh
                    for ow in range(OW):
                        c0 = 2 * ow
                        y[n, c, oh, ow] = 0.25 * ((x[n, c, r0, c0] + x[n, c, r0, c0 + 1])
                                                  + (x[n, c, r0 + 1, c0] + x[n, c, r0 + 1, c0 + 1]))
        return y
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                i_lo = max(0, ph - oh * sh)
                i_hi = min(KH, H + ph - oh * sh)
                for ow in range(OW):
                    j_lo = max(0, pw - ow * sw)
                    j_hi = min(KW, W + pw - ow * sw)
                    ih0 = oh * sh - ph
                    iw0 = ow * sw - pw
                    s = 0.0
                    for i in range(i_lo, i_hi):
                        for j in range(j_lo, j_hi):
                            s += x[n, c, ih0 + i, iw0 + j]
                    cnt = KH * KW if count_include_pad else (i_hi - i_lo) * (j_hi - j_lo)
                    y[n, c, oh, ow] = s / cnt
    return y


@nb.njit(cache=True, nogil=True)
def avgpool_backward(dy, KH, KW, sh, sw, ph, pw, count_include_pad, dx):
    """Accumulate into ``dx`` (zeroed by the caller); the 2×2 stride-2 path writes every input
    once and needs no zeroing."""
    N, C, H, W = dx.shape
    OH, OW = dy.shape[2], dy.shape[3]
    if _is_2x2(KH, KW, sh, sw, ph, pw):
        for n in range(N):
            for c in range(C):
                for oh in range(OH):
                    r0 = 2 * oh
                    for ow in range(OW):
                        c0 = 2 * ow
                        g = 0.25 * dy[n, c, oh, ow]
                        dx[n, c, r0, c0] = g
                        dx[n, c, r0, c0 + 1] = g
                        dx[n, c, r0 + 1, c0] = g
                        dx[n, c, r0 + 1, c0 + 1] = g
                zero_uncovered(dx, n, c, 2 * OH, 2 * OW)
        return dx
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                i_lo = max(0, ph - oh * sh)
                i_hi = min(KH, H + ph - oh * sh)
                for ow in range(OW):
                    j_lo = max(0, pw - ow * sw)
                    j_hi = min(KW, W + pw - ow * sw)
                    ih0 = oh * sh - ph
                    iw0 = ow * sw - pw
                    cnt = KH * KW if count_include_pad else (i_hi - i_lo) * (j_hi - j_lo)
                    g = dy[n, c, oh, ow] / cnt
                    for i in range(i_lo, i_hi):
                        for j in range(j_lo, j_hi):
                            dx[n, c, ih0 + i, iw0 + j] += g
    return dx


def is_2x2(KH, KW, sh, sw, ph, pw):
    """The geometry served by the fast 2×2 paths (plain Python, for callers choosing a kernel)."""
    return KH == 2 and KW == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
