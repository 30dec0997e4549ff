r"""Numba kernels for GRANDE's hard tree routing and its straight-through backward.

Marton et al., "GRANDE: Gradient-Based Decision Tree Ensembles for Tabular Data", ICLR 2024,
§3.1–3.3. Same signatures and conventions as the NumPy reference :mod:`.grande_ref` (heap-ordered
complete trees, left child ``2n+1`` taken when ``thr - x_f > 0``).

Per sample a hard tree touches only its path, so the forward costs ``d`` comparisons per
(sample, tree) instead of the ``2^d - 1`` nodes and ``2^d`` leaf products of the dense form, and
the straight-through backward touches the ``d`` path nodes, each with the one other leaf reached
by turning the other way there (see :func:`.grande_ref.backward_route` for the derivation).

Layout: per-(tree, sample) arrays are ``(E, B)`` so the trees are the outer loop and a tree's
parameters stay in cache while the batch streams past; the subset loop of the threshold-choice
gradient is the contiguous innermost loop. Serial (``nogil``), as every kernel here (see
:mod:`nograd.kernels`).
"""
from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["backward_route", "combine", "leaf_cotangent", "route"]


@nb.njit(cache=True, nogil=True)
def _route(x, feat, thr, W, leaf, w):
    E, N = feat.shape
    B = x.shape[0]
    depth = 0
    while (1 << depth) - 1 < N:
        depth += 1
    for e in range(E):
        for b in range(B):
            n = 0
            for _ in range(depth):
                if thr[e, n] - x[b, feat[e, n]] > 0:
                    n = 2 * n + 1
                else:
                    n = 2 * n + 2
            lf = n - N
            leaf[e, b] = lf
            w[e, b] = W[e, lf]


def route(x, feat, thr, W):
    """Leaf ``(E, B)`` int32 reached by every sample in every tree, and ``w = W[e, leaf]``."""
    E = feat.shape[0]
    B = x.shape[0]
    leaf = np.empty((E, B), dtype=np.int32)
    w = np.empty((E, B), dtype=x.dtype)
    _route(x, feat, thr.astype(x.dtype, copy=False), W.astype(x.dtype, copy=False), leaf, w)
    return leaf, w


@nb.njit(cache=True, nogil=True)
def _combine(omega, leaf, V, y):
    E, B = leaf.shape
    C = V.shape[2]
    for e in range(E):
        for b in range(B):
            o = omega[e, b]
            lf = leaf[e, b]
            for c in range(C):
                y[b, c] += o * V[e, lf, c]


def combine(omega, leaf, V):
    r""":math:`y_{bc} = \sum_e \omega_{eb} V_{e,\mathrm{leaf}_{eb},c}`, shape ``(B, C)``."""
    y = np.zeros((leaf.shape[1], V.shape[2]), dtype=omega.dtype)
    _combine(omega, leaf, V.astype(omega.dtype, copy=False), y)
    return y


@nb.njit(cache=True, nogil=True)
def _leaf_cotangent(dy, leaf, V, dom):
    E, B = leaf.shape
    C = V.shape[2]
    for e in range(E):
        for b in range(B):
            lf = leaf[e, b]
            acc = 0.0
            for c in range(C):
                acc += dy[b, c] * V[e, lf, c]
            dom[e, b] = acc


def leaf_cotangent(dy, leaf, V):
    r""":math:`\bar\omega_{eb} = \sum_c \bar y_{bc} V_{e,\mathrm{leaf}_{eb},c}`, shape ``(E, B)``."""
    dom = np.empty(leaf.shape, dtype=dy.dtype)
    _leaf_cotangent(dy, leaf, V.astype(dy.dtype, copy=False), dom)
    return dom


@nb.njit(cache=True, nogil=True)
def _backward_route(x, feat, thr, sub, W, V, leaf, dw, om, dy, need_dx, dthr, H, dW, dV, dx):
    E, N = feat.shape
    B = x.shape[0]
    S = sub.shape[1]
    C = V.shape[2]
    depth = 0
    while (1 << depth) - 1 < N:
        depth += 1
    for e in range(E):
        for b in range(B):
            lf = leaf[e, b]
            g = dw[e, b]
            o = om[e, b]
            dW[e, lf] += g
            for c in range(C):
                dV[e, lf, c] += o * dy[b, c]
            # cotangent of the active leaf's membership
            acc = 0.0
            for c in range(C):
                acc += dy[b, c] * V[e, lf, c]
            dp_active = g * W[e, lf] + o * acc
            n = 0
            for k in range(depth):
                u = thr[e, n] - x[b, feat[e, n]]
                went_left = u > 0
                # the other child, then hard routing down to a leaf
                m = 2 * n + 2 if went_left else 2 * n + 1
                for _ in range(depth - 1 - k):
                    if thr[e, m] - x[b, feat[e, m]] > 0:
                        m = 2 * m + 1
                    else:
                        m = 2 * m + 2
                alt = m - N
                acc = 0.0
                for c in range(C):
                    acc += dy[b, c] * V[e, alt, c]
                dp_alt = g * W[e, alt] + o * acc
                ds = dp_active - dp_alt if went_left else dp_alt - dp_active
                a = 1.0 + abs(u)
                du = ds * 0.5 / (a * a)
                dthr[e, n] += du
                for j in range(S):
                    H[e, n, j] += du * x[b, sub[e, j]]
                if need_dx:
                    dx[b, feat[e, n]] -= du
                n = 2 * n + 1 if went_left else 2 * n + 2


def backward_route(x, feat, thr, sub, W, V, leaf, dw, om, dy, need_dx=True):
    """Straight-through backward of the hard routing; returns ``dthr (E, N)``, ``H (E, N, S)``,
    ``dW (E, L)``, ``dV (E, L, C)`` and ``dx (B, F)`` (None unless ``need_dx``), all in ``x``'s
    dtype. See :func:`.grande_ref.backward_route` for the maths."""
    dt = x.dtype
    E, N = feat.shape
    dthr = np.zeros((E, N), dtype=dt)
    H = np.zeros((E, N, sub.shape[1]), dtype=dt)
    dW = np.zeros(W.shape, dtype=dt)
    dV = np.zeros(V.shape, dtype=dt)
    dx = np.zeros(x.shape if need_dx else (1, 1), dtype=dt)
    _backward_route(x, feat, thr.astype(dt, copy=False), sub, W.astype(dt, copy=False),
                    V.astype(dt, copy=False), leaf, dw.astype(dt, copy=False),
                    om.astype(dt, copy=False), dy.astype(dt, copy=False), bool(need_dx),
                    dthr, H, dW, dV, dx)
    return dthr, H, dW, dV, (dx if need_dx else None)
