"""Numba kernels of poset pooling (NCHW), compiled lazily with ``cache=True``.

Same signatures and results as :mod:`nograd.kernels.poset_ref`, which documents the up-set table
``(elem, parent, masks)``. Per window the forward pass costs one addition and one comparison per
up-set (``value[k] = x[elem[k]] + value[parent[k]]``), written as selects so that random data
causes no mispredicted branches; the arg-max is stored as the up-set's bitmask (one byte for a
2×2 window), so backward (a masked scatter) and jvp (a masked gather) need no table.

Serial, like :mod:`nograd.kernels.pool`, and for the same reason: on a 2-core machine a parallel
region started right after an OpenBLAS product waits on its spinning threads.
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, inline="always")
def _best(xs, elem, parent, cand, masks, vals):
    """Largest up-set sum of the window values ``xs`` and its bitmask (first maximum wins)."""
    best = vals[0]
    kbest = 0
    for k in range(1, masks.shape[0]):
        v = xs[elem[k]] + vals[parent[k]]
        vals[k] = v
        take = cand[k] & (v > best)
        best = v if take else best
        kbest = k if take else kbest
    return best, masks[kbest]


@nb.njit(cache=True, nogil=True, inline="always")
def _match(v1, m1, v2, m2):
    """One game of the tournament: the right entry wins only when strictly larger."""
    t = v2 > v1
    return (v2 if t else v1), (m2 if t else m1)


@nb.njit(cache=True, nogil=True)
def _forward_2x2(x, OHi, OWi, ok, y, arg):
    """Windows (2×2, stride 2) wholly inside ``x``, unrolled for any 4-point poset.

    All 16 subset sums, each added lowest position first (``s(U) = x[min U] + s(U - min U)``, as
    the table does); sets that are not up-sets (``ok[mask]`` false) become ``-inf``. A knock-out
    tournament over the sets in the order size, then bitmask, where the left entry wins ties,
    gives the first maximum in that order (it wins every game it plays), with depth 4 instead of
    a chain of 15 dependent comparisons.
    """
    N, C = x.shape[0], x.shape[1]
    o1, o2, o4, o8 = ok[1], ok[2], ok[4], ok[8]
    o3, o5, o6, o9, o10, o12 = ok[3], ok[5], ok[6], ok[9], ok[10], ok[12]
    o7, o11, o13, o14, o15 = ok[7], ok[11], ok[13], ok[14], ok[15]
    zero = x.dtype.type(0)
    ninf = x.dtype.type(-np.inf)
    for n in range(N):
        for c in range(C):
            for oh in range(OHi):
                r = 2 * oh
                for ow in range(OWi):
                    s = 2 * ow                 # a constant stride lets LLVM vectorise the loop
                    a = x[n, c, r, s]
                    b = x[n, c, r, s + 1]
                    e = x[n, c, r + 1, s]
                    d = x[n, c, r + 1, s + 1]
                    s12 = e + d
                    s10 = b + d
                    s6 = b + e
                    s14 = b + s12
                    l1 = a if o1 else ninf
                    l2 = b if o2 else ninf
                    l4 = e if o4 else ninf
                    l8 = d if o8 else ninf
                    l3 = a + b if o3 else ninf
                    l5 = a + e if o5 else ninf
                    l6 = s6 if o6 else ninf
                    l9 = a + d if o9 else ninf
                    l10 = s10 if o10 else ninf
                    l12 = s12 if o12 else ninf
                    l7 = a + s6 if o7 else ninf
                    l11 = a + s10 if o11 else ninf
                    l13 = a + s12 if o13 else ninf
                    l14 = s14 if o14 else ninf
                    l15 = a + s14 if o15 else ninf
                    v0, m0 = _match(zero, 0, l1, 1)
                    v1, m1 = _match(l2, 2, l4, 4)
                    v2, m2 = _match(l8, 8, l3, 3)
                    v3, m3 = _match(l5, 5, l6, 6)
                    v4, m4 = _match(l9, 9, l10, 10)
                    v5, m5 = _match(l12, 12, l7, 7)
                    v6, m6 = _match(l11, 11, l13, 13)
                    v7, m7 = _match(l14, 14, l15, 15)
                    v0, m0 = _match(v0, m0, v1, m1)
                    v2, m2 = _match(v2, m2, v3, m3)
                    v4, m4 = _match(v4, m4, v5, m5)
                    v6, m6 = _match(v6, m6, v7, m7)
                    v0, m0 = _match(v0, m0, v2, m2)
                    v4, m4 = _match(v4, m4, v6, m6)
                    v0, m0 = _match(v0, m0, v4, m4)
                    y[n, c, oh, ow] = v0
                    arg[n, c, oh, ow] = m0
    return y, arg


@nb.njit(cache=True, nogil=True)
def posetpool_forward(x, KH, KW, sh, sw, OH, OW, elem, parent, cand, masks, y, arg):
    N, C, H, W = x.shape
    xs = np.zeros(KH * KW, dtype=x.dtype)
    vals = np.zeros(masks.shape[0], dtype=x.dtype)
    zero = x.dtype.type(0)
    # windows that lie wholly inside the input: no bounds checks
    OHi = min(OH, (H - KH) // sh + 1) if H >= KH else 0
    OWi = min(OW, (W - KW) // sw + 1) if W >= KW else 0
    if KH == 2 and KW == 2 and sh == 2 and sw == 2:
        ok = np.zeros(16, dtype=np.bool_)
        for k in range(masks.shape[0]):
            ok[masks[k]] = cand[k]
        _forward_2x2(x, OHi, OWi, ok, y, arg)
    else:
        for n in range(N):
            for c in range(C):
                for oh in range(OHi):
                    for ow in range(OWi):
                        for i in range(KH):
                            for j in range(KW):
                                xs[i * KW + j] = x[n, c, oh * sh + i, ow * sw + j]
                        y[n, c, oh, ow], arg[n, c, oh, ow] = _best(xs, elem, parent, cand, masks, vals)
    # the rest: windows reaching past the bottom or right edge read zeros there
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OWi if oh < OHi else 0, OW):
                    for i in range(KH):
                        for j in range(KW):
                            r, s = oh * sh + i, ow * sw + j
                            xs[i * KW + j] = x[n, c, r, s] if r < H and s < W else zero
                    y[n, c, oh, ow], arg[n, c, oh, ow] = _best(xs, elem, parent, cand, masks, vals)
    return y, arg


@nb.njit(cache=True, nogil=True)
def posetpool_backward(dy, arg, KH, KW, sh, sw, dx):
    """``dx`` (overwritten; need not be zeroed) gets ``dy`` at the points of each arg-max up-set."""
    N, C, H, W = dx.shape
    OH, OW = dy.shape[2], dy.shape[3]
    zero = dx.dtype.type(0)
    tiled = sh == KH and sw == KW          # every input in exactly one window: write, not add
    if KH == 2 and KW == 2 and tiled and H % 2 == 0 and W % 2 == 0:
        for n in range(N):
            for c in range(C):
                for oh in range(OH):
                    r = 2 * oh
                    for ow in range(OW):
                        s = 2 * ow
                        g = dy[n, c, oh, ow]
                        m = arg[n, c, oh, ow]
                        dx[n, c, r, s] = g if m & 1 else zero
                        dx[n, c, r, s + 1] = g if m & 2 else zero
                        dx[n, c, r + 1, s] = g if m & 4 else zero
                        dx[n, c, r + 1, s + 1] = g if m & 8 else zero
        return dx
    if not tiled:
        dx[...] = zero
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    g = dy[n, c, oh, ow]
                    m = np.int64(arg[n, c, oh, ow])
                    for i in range(KH):
                        r = oh * sh + i
                        if r >= H:
                            break
                        for j in range(KW):
                            s = ow * sw + j
                            if s >= W:
                                break
                            v = g if (m >> (i * KW + j)) & 1 else zero
                            if tiled:
                                dx[n, c, r, s] = v
                            else:
                                dx[n, c, r, s] += v
    return dx


@nb.njit(cache=True, nogil=True)
def posetpool_jvp(dx, arg, KH, KW, sh, sw, out):
    """``out[o] = Σ_{i ∈ arg[o]} dx[window o, i]`` in increasing position order (padding reads 0)."""
    N, C, H, W = dx.shape
    OH, OW = out.shape[2], out.shape[3]
    zero = out.dtype.type(0)
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    m = np.int64(arg[n, c, oh, ow])
                    acc = zero
                    for i in range(KH):
                        for j in range(KW):
                            r, s = oh * sh + i, ow * sw + j
                            inside = r < H and s < W
                            d = dx[n, c, r, s] if inside else zero
                            acc += d if (m >> (i * KW + j)) & 1 else zero
                    out[n, c, oh, ow] = acc
    return out
