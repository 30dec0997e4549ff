"""Plain NumPy references for :mod:`nograd.kernels.poset` (same signatures, same results, bit for bit).

A poset filter on a ``KH × KW`` window with ``n = KH·KW`` points is given by a table of point sets:
entry ``k`` (``k = 0`` is the empty set) is the set ``masks[k]`` (bit ``i`` ↔ window position
``i = r·KW + c``), built from its parent entry ``parent[k]`` by adding the point ``elem[k]`` (the
lowest position of the set); ``cand[k]`` says whether it is an up-set of the poset (a candidate
for the maximum) or only a step on the way to one. Parents come before children, so one pass over
the table evaluates every entry::

    value[0] = 0,    value[k] = x[elem[k]] + value[parent[k]].

The output is the largest candidate value; ties go to the first candidate in table order (a
strict ``>`` scan, which is what ``argmax`` does). ``arg`` stores the winning up-set's bitmask.
Windows start at ``(oh·sh, ow·sw)``; positions past the bottom or right edge read 0 (zero padding).
"""
from __future__ import annotations

import numpy as np


def _windows(x, KH, KW, sh, sw, OH, OW):
    """``(N, C, OH, OW, KH·KW)`` window entries, zero past the edges."""
    N, C, H, W = x.shape
    Hp, Wp = (OH - 1) * sh + KH, (OW - 1) * sw + KW
    xp = np.zeros((N, C, max(H, Hp), max(W, Wp)), dtype=x.dtype)
    xp[:, :, :H, :W] = x
    out = np.empty((N, C, OH, OW, KH * KW), dtype=x.dtype)
    for i in range(KH):
        for j in range(KW):
            out[..., i * KW + j] = xp[:, :, i:i + sh * (OH - 1) + 1:sh, j:j + sw * (OW - 1) + 1:sw]
    return out


def posetpool_forward(x, KH, KW, sh, sw, OH, OW, elem, parent, cand, masks, y, arg):
    win = _windows(x, KH, KW, sh, sw, OH, OW)
    vals = np.empty((len(masks),) + win.shape[:-1], dtype=x.dtype)
    vals[0] = 0
    for k in range(1, len(masks)):
        vals[k] = win[..., elem[k]] + vals[parent[k]]
    ks = np.flatnonzero(cand)
    best = vals[ks].argmax(axis=0)                 # the first maximum: ties to the earlier up-set
    y[...] = np.take_along_axis(vals[ks], best[None], axis=0)[0]
    arg[...] = np.asarray(masks)[ks][best]
    return y, arg


def posetpool_backward(dy, arg, KH, KW, sh, sw, dx):
    """``dx`` (overwritten) gets ``dy`` of each window at the points of its arg-max up-set."""
    N, C, H, W = dx.shape
    OH, OW = dy.shape[2:]
    Hp, Wp = (OH - 1) * sh + KH, (OW - 1) * sw + KW
    acc = np.zeros((N, C, max(H, Hp), max(W, Wp)), dtype=dx.dtype)
    bits = arg.astype(np.int64)
    for i in range(KH):
        for j in range(KW):
            on = (bits >> (i * KW + j)) & 1
            acc[:, :, i:i + sh * (OH - 1) + 1:sh, j:j + sw * (OW - 1) + 1:sw] += np.where(on == 1, dy, 0)
    dx[...] = acc[:, :, :H, :W]
    return dx


def posetpool_jvp(dx, arg, KH, KW, sh, sw, out):
    """``out[o] = Σ_{i ∈ arg[o]} dx[window o, i]``, summed in increasing position order."""
    OH, OW = out.shape[2:]
    win = _windows(dx, KH, KW, sh, sw, OH, OW)
    bits = arg.astype(np.int64)
    acc = np.zeros(out.shape, dtype=out.dtype)
    for i in range(KH * KW):
        acc = acc + np.where(((bits >> i) & 1) == 1, win[..., i], 0).astype(out.dtype)
    out[...] = acc
    return out
