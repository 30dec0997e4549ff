r"""Numba kernels for GRANDE's hard tree routing and its straight-through backward.

Marton et al., "GRANDE: Gradient-Based Decision Tree Ensembles for Tabular Data", ICLR 2024,
§3.1–3.3. Same signatures and conventions as the NumPy reference :mod:`.grande_ref` (heap-ordered
complete trees, left child ``2n+1`` taken when ``thr - x_f > 0``).

Per sample a hard tree touches only its path, so the forward costs ``d`` comparisons per
(sample, tree) instead of the ``2^d - 1`` nodes and ``2^d`` leaf products of the dense form, and
the straight-through backward touches the ``d`` path nodes, each with the one other leaf reached
by turning the other way there (see :func:`.grande_ref.backward_route` for the derivation).

Layout: per-(tree, sample) arrays are ``(E, B)`` and the input is used transposed, ``(F, B)``,
so the trees are the outer loop (a tree's parameters stay in cache while the batch streams past)
and the batch is the contiguous, branch-free inner loop: samples are independent, so their
dependent loads along a path overlap instead of forming one long chain. The backward first decides
every node for every sample (one vector compare per node) and builds, bottom-up, the leaf each node
reaches (one vector select per node, int8/int16 scratch that stays in L1); the path is then walked
level by level. Its sums over samples go to four interleaved accumulators, since consecutive
samples mostly share a node. Measured on the shared 2-core machine at depth 5, 256 trees × 256
samples: forward routing ≈ 11 ns and backward ≈ 80 ns per (sample, tree) with 5 features per
tree, ≈ 130 ns with 33 (a first per-sample version with re-walked alternative paths took 300).
Serial (``nogil``), as every kernel here (see :mod:`nograd.kernels`).
"""
from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["backward_route", "combine", "leaf_cotangent", "route"]


@nb.njit(cache=True, nogil=True)
def _route(xT, feat, thr, W, leaf, w, node):
    E, N = feat.shape
    B = xT.shape[1]
    depth = 0
    while (1 << depth) - 1 < N:
        depth += 1
    for e in range(E):
        for b in range(B):
            node[b] = 0
        for _ in range(depth):
            for b in range(B):                     # branch-free: independent samples interleave
                n = node[b]
                node[b] = 2 * n + 2 - np.int64(thr[e, n] - xT[feat[e, n], b] > 0)
        for b in range(B):
            lf = node[b] - N
            leaf[e, b] = lf
            w[e, b] = W[e, lf]


def route(x, feat, thr, W):
    """Leaf ``(E, B)`` int32 reached by every sample in every tree, and ``w = W[e, leaf]``."""
    E = feat.shape[0]
    B = x.shape[0]
    leaf = np.empty((E, B), dtype=np.int32)
    w = np.empty((E, B), dtype=x.dtype)
    _route(np.ascontiguousarray(x.T), feat, thr.astype(x.dtype, copy=False),
           W.astype(x.dtype, copy=False), leaf, w, np.empty(B, dtype=np.int64))
    return leaf, w


@nb.njit(cache=True, nogil=True)
def _combine(omega, leaf, V, yT):
    E, B = leaf.shape
    C = V.shape[2]
    for e in range(E):
        for c in range(C):
            for b in range(B):
                yT[c, b] += omega[e, b] * V[e, leaf[e, b], c]


def combine(omega, leaf, V):
    r""":math:`y_{bc} = \sum_e \omega_{eb} V_{e,\mathrm{leaf}_{eb},c}`, shape ``(B, C)``."""
    yT = np.zeros((V.shape[2], leaf.shape[1]), dtype=omega.dtype)
    _combine(omega, leaf, V.astype(omega.dtype, copy=False), yT)
    return np.ascontiguousarray(yT.T)


@nb.njit(cache=True, nogil=True)
def _leaf_cotangent(dyT, leaf, V, dom):
    E, B = leaf.shape
    C = V.shape[2]
    for e in range(E):
        for b in range(B):
            dom[e, b] = 0
        for c in range(C):
            for b in range(B):
                dom[e, b] += dyT[c, b] * V[e, leaf[e, b], c]


def leaf_cotangent(dy, leaf, V):
    r""":math:`\bar\omega_{eb} = \sum_c \bar y_{bc} V_{e,\mathrm{leaf}_{eb},c}`, shape ``(E, B)``."""
    dom = np.empty(leaf.shape, dtype=dy.dtype)
    _leaf_cotangent(np.ascontiguousarray(dy.T), leaf, V.astype(dy.dtype, copy=False), dom)
    return dom


@nb.njit(cache=True, nogil=True)
def _backward_route(xT, feat, thr, sub, W, V, leaf, dw, om, dy, need_dx, dthr, H, dW, dV, dxT,
                    sT, reach, node, xe, acc_t, acc_h, one, half):
    E, N = feat.shape
    B = xT.shape[1]
    S = sub.shape[1]
    L = N + 1
    C = V.shape[2]
    for lf in range(L):                            # leaves reach themselves
        for b in range(B):
            reach[N + lf, b] = lf
    for e in range(E):
        # every node's hard decision for every sample: contiguous over the batch, branch-free
        for n in range(N):
            t = thr[e, n]
            f = feat[e, n]
            for b in range(B):
                sT[n, b] = t - xT[f, b] > 0
        # the leaf reached from each node by hard routing, bottom-up (vector selects)
        for n in range(N - 1, -1, -1):
            for b in range(B):
                r = reach[2 * n + 2, b]
                reach[n, b] = r + sT[n, b] * (reach[2 * n + 1, b] - r)
        # the subset's features, contiguous per sample (for the feature-choice gradient)
        for b in range(B):
            for j in range(S):
                xe[b, j] = xT[sub[e, j], b]
        # exact gradients of the leaf values and estimator weights (one leaf per sample)
        for b in range(B):
            lf = leaf[e, b]
            dW[e, lf] += dw[e, b]
            for c in range(C):
                dV[e, lf, c] += om[e, b] * dy[b, c]
            node[b] = 0
        # the path, level by level (samples independent): ds = dp(left leaf) - dp(right leaf)
        # with dp = dw W + om <dy, V>, through the softsign surrogate's slope. Sums over samples
        # go to 4 interleaved accumulators (b mod 4): consecutive samples mostly share a node,
        # and one accumulator would chain every update on the previous one's store
        acc_t[:, :] = 0
        acc_h[:, :, :] = 0
        while node[0] < N:
            for b in range(B):
                q = b & 3
                n = node[b]
                l1 = reach[2 * n + 1, b]
                l2 = reach[2 * n + 2, b]
                acc = dw[e, b] * (W[e, l1] - W[e, l2])
                o = om[e, b]
                for c in range(C):
                    acc += o * dy[b, c] * (V[e, l1, c] - V[e, l2, c])
                f = feat[e, n]
                u = thr[e, n] - xT[f, b]
                a = one + abs(u)
                du = half * acc / (a * a)
                acc_t[q, n] += du
                for j in range(S):
                    acc_h[q, n, j] += du * xe[b, j]
                if need_dx:
                    dxT[f, b] -= du
                node[b] = 2 * n + 2 - sT[n, b]
        for q in range(4):
            for n in range(N):
                dthr[e, n] += acc_t[q, n]
                for j in range(S):
                    H[e, n, j] += acc_h[q, n, j]


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
    B, S = x.shape[0], sub.shape[1]
    dxT = np.zeros((x.shape[1], B) if need_dx else (1, 1), dtype=dt)
    reach_dt = np.int16 if N < 2**15 else np.int64
    _backward_route(np.ascontiguousarray(x.T), feat, thr.astype(dt, copy=False), sub,
                    W.astype(dt, copy=False), V.astype(dt, copy=False), leaf,
                    dw.astype(dt, copy=False), om.astype(dt, copy=False),
                    dy.astype(dt, copy=False), bool(need_dx), dthr, H, dW, dV, dxT,
                    np.empty((N, B), np.int8), np.empty((2 * N + 1, B), reach_dt),
                    np.empty(B, np.int64), np.empty((B, S), dt), np.empty((4, N), dt),
                    np.empty((4, N, S), dt), dt.type(1), dt.type(0.5))
    return dthr, H, dW, dV, (np.ascontiguousarray(dxT.T) if need_dx else None)
