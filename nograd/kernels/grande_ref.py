r"""Plain NumPy reference for the GRANDE tree kernels (:mod:`.grande`), and the dense model.

Marton, Lüdtke, Bartelt & Stuckenschmidt, "GRANDE: Gradient-Based Decision Tree Ensembles for
Tabular Data", ICLR 2024, §3.1–3.3. Trees are complete binary trees of depth ``d`` stored in heap
order: internal node ``n`` has children ``2n+1`` (left) and ``2n+2`` (right); leaf ``l`` is node
``l + 2^d - 1``, so the bits of ``l`` from the most significant down are the turns from the root
(0 = left). A node with feature ``f`` and threshold ``t`` sends ``x`` left when
:math:`s = [t - x_f > 0] = 1` (§3.1, the rounded softsign split).

Two groups of functions live here.

*Hard routing* (same signatures as the Numba kernels, which must agree with them):
:func:`route`, :func:`combine`, :func:`leaf_cotangent`, :func:`backward_route`. Shapes:
``x (B, F)``; ``feat (E, N)`` global feature of each node; ``thr (E, N)``; ``sub (E, S)`` the
estimator's feature subset; ``W (E, L)`` leaf-level estimator weights; ``V (E, L, C)`` leaf values;
``leaf, w, omega (E, B)``; ``dy (B, C)``.

*The dense model* :func:`dense_forward` / :func:`dense_backward` / :func:`dense_jvp`: every node
and every leaf of every tree for every sample, as in §3.2 (leaf membership = product of the
path's split decisions). With ``hard=True`` the split decisions are rounded in the forward pass
and differentiated through the softsign surrogate (straight-through), so its backward is what the
kernels compute; with ``hard=False`` it is the smooth surrogate model, which gradient checks can
test against finite differences.

This module imports nothing from the rest of nograd.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "backward_route",
    "combine",
    "dense_backward",
    "dense_forward",
    "dense_jvp",
    "leaf_cotangent",
    "route",
    "tree_paths",
]


# ----------------------------------------------------------------------------- hard routing
def route(x, feat, thr, W):
    """Leaf reached by every sample in every tree and its estimator weight ``W[e, leaf]``.

    Returns ``leaf (E, B)`` int32 and ``w (E, B)`` in ``x``'s dtype.
    """
    E, N = feat.shape
    B = x.shape[0]
    depth = int(np.log2(N + 1))
    e_idx = np.arange(E)[:, None]
    node = np.zeros((E, B), dtype=np.int64)
    for _ in range(depth):
        f = feat[e_idx, node]                                    # (E, B)
        xv = x[np.arange(B)[None, :], f]
        left = thr[e_idx, node] - xv > 0
        node = 2 * node + np.where(left, 1, 2)
    leaf = (node - N).astype(np.int32)
    return leaf, W[e_idx, leaf].astype(x.dtype)


def combine(omega, leaf, V):
    r"""The ensemble output :math:`y_{bc} = \sum_e \omega_{eb} V_{e,\mathrm{leaf}_{eb},c}`."""
    e_idx = np.arange(V.shape[0])[:, None]
    r = V[e_idx, leaf]                                           # (E, B, C)
    return np.einsum("eb,ebc->bc", omega, r).astype(omega.dtype)


def leaf_cotangent(dy, leaf, V):
    r"""The cotangent of the estimator weights: :math:`\bar\omega_{eb} = \sum_c \bar y_{bc} V_{e,\mathrm{leaf},c}`."""
    e_idx = np.arange(V.shape[0])[:, None]
    return np.einsum("bc,ebc->eb", dy, V[e_idx, leaf]).astype(dy.dtype)


def backward_route(x, feat, thr, sub, W, V, leaf, dw, om, dy, need_dx=True):
    r"""Straight-through backward of the hard routing.

    With :math:`p_{ebl}` the (hard) leaf membership, :math:`w = \sum_l W p` and
    :math:`r = \sum_l V p`, the leaf cotangent is
    :math:`\bar p_{ebl} = \bar w_{eb} W_{el} + \omega_{eb}\sum_c \bar y_{bc} V_{elc}`. Since the
    hard factors are 0/1, :math:`\partial p_l/\partial s_n` is ±1 for the two leaves reached from
    ``n``'s children by hard routing when ``n`` lies on the active path and 0 otherwise, so
    :math:`\bar s_n = \bar p_{\text{left leaf}} - \bar p_{\text{right leaf}}` there. Then
    :math:`u = t - x_f`, :math:`\bar u = \bar s\,/(2(1+|u|)^2)` (the softsign surrogate, §3.1).

    Returns ``dthr (E, N)`` (:math:`\sum_b \bar u`), ``H (E, N, S)``
    (:math:`\sum_b \bar u\, x_{b, sub_{ej}}`), ``dW (E, L)``, ``dV (E, L, C)``, ``dx (B, F)``
    or None.
    """
    E, N = feat.shape
    B = x.shape[0]
    L = N + 1
    xv = x.T[feat]                                               # (E, N, B)
    u = thr[:, :, None] - xv
    s = u > 0
    # leaf reached from each node by hard routing, bottom-up
    reach = np.zeros((E, 2 * N + 1, B), dtype=np.int64)
    for n in range(N, 2 * N + 1):
        reach[:, n, :] = n - N
    for n in range(N - 1, -1, -1):
        reach[:, n, :] = np.where(s[:, n, :], reach[:, 2 * n + 1, :], reach[:, 2 * n + 2, :])
    # nodes on the active path
    on = np.zeros((E, N, B), dtype=bool)
    node = np.zeros((E, B), dtype=np.int64)
    depth = int(np.log2(L))
    for _ in range(depth):
        np.put_along_axis(on, node[:, None, :], True, axis=1)
        node = 2 * node + np.where(np.take_along_axis(s, node[:, None, :], axis=1)[:, 0], 1, 2)
    dyV = np.einsum("bc,elc->ebl", dy, V)                        # (E, B, L)
    dp = dw[:, :, None] * W[:, None, :] + om[:, :, None] * dyV    # (E, B, L)
    ds = np.zeros((E, N, B), dtype=x.dtype)
    for n in range(N):
        lft = np.take_along_axis(dp, reach[:, 2 * n + 1, :][:, :, None], axis=2)[:, :, 0]
        rgt = np.take_along_axis(dp, reach[:, 2 * n + 2, :][:, :, None], axis=2)[:, :, 0]
        ds[:, n, :] = np.where(on[:, n, :], lft - rgt, 0)
    du = ds * (0.5 / (1 + np.abs(u)) ** 2)
    dthr = du.sum(axis=2).astype(x.dtype)
    H = np.einsum("enb,ebs->ens", du, x.T[sub].transpose(0, 2, 1)).astype(x.dtype)
    dW = np.zeros(W.shape, dtype=x.dtype)
    dV = np.zeros(V.shape, dtype=x.dtype)
    for e in range(E):
        np.add.at(dW[e], leaf[e], dw[e])
        np.add.at(dV[e], leaf[e], om[e][:, None] * dy)
    dx = None
    if need_dx:
        dx = np.zeros(x.shape, dtype=x.dtype)
        for e in range(E):
            for n in range(N):
                dx[:, feat[e, n]] -= du[e, n]
    return dthr, H, dW, dV, dx


# ----------------------------------------------------------------------------- the dense model
def tree_paths(depth: int):
    """``nodes (L, d)``: the internal node at each depth on the path to leaf ``l``;
    ``right (L, d)``: 1 where that path turns right (the factor is ``1 - s``), else 0."""
    L = 2 ** depth
    nodes = np.zeros((L, depth), dtype=np.int64)
    right = np.zeros((L, depth), dtype=np.int64)
    for leaf in range(L):
        n = 0
        for k in range(depth):
            bit = (leaf >> (depth - 1 - k)) & 1
            nodes[leaf, k], right[leaf, k] = n, bit
            n = 2 * n + 1 + bit
    return nodes, right


def _split(u, hard):
    soft = (u / (1 + np.abs(u)) + 1) / 2
    s = (u > 0).astype(u.dtype) if hard else soft
    return s, 0.5 / (1 + np.abs(u)) ** 2


def dense_forward(x, o, T, sub, W, V, hard):
    r"""Every tree densely: ``x (B, F)``, feature-selection weights ``o (E, N, S)`` (a one-hot or
    an entmax), thresholds ``T (E, N, S)``, subsets ``sub (E, S)``; returns ``w (E, B)``,
    ``r (E, B, C)`` (:math:`\sum_l p V`) and a cache.

    :math:`t = \sum_j o_j T_j`, :math:`x_n = \sum_j o_j x_{sub_j}`, :math:`u = t - x_n`,
    :math:`s = (\operatorname{softsign}(u) + 1)/2` (rounded when ``hard``), leaf membership
    :math:`p_l = \prod_k f_{lk}` with :math:`f = s` on a left turn and :math:`1 - s` on a right one.
    """
    _E, N, _S = o.shape
    depth = int(np.log2(N + 1))
    nodes, right = tree_paths(depth)
    xs = x.T[sub]                                                # (E, S, B)
    t = np.einsum("ens,ens->en", o, T)
    xn = np.einsum("ens,esb->enb", o, xs)
    u = t[:, :, None] - xn                                       # (E, N, B)
    s, ds_du = _split(u, hard)
    f = s[:, nodes, :]                                           # (E, L, d, B)
    f = np.where(right[None, :, :, None] == 1, 1 - f, f)
    p = np.prod(f, axis=2)                                       # (E, L, B)
    w = np.einsum("el,elb->eb", W, p)
    r = np.einsum("elc,elb->ebc", V, p)
    return w, r, (x, o, T, sub, W, V, xs, u, ds_du, f, p, nodes, right)


def _excl_products(f):
    """Products of all factors along axis 2 except one, by prefix and suffix products."""
    d = f.shape[2]
    pre = np.ones_like(f)
    suf = np.ones_like(f)
    for k in range(1, d):
        pre[:, :, k] = pre[:, :, k - 1] * f[:, :, k - 1]
        suf[:, :, d - 1 - k] = suf[:, :, d - k] * f[:, :, d - k]
    return pre * suf


def dense_backward(cache, dw, dr, need_dx=True):
    """Reverse mode of :func:`dense_forward` given ``dw (E, B)`` and ``dr (E, B, C)``; returns
    ``dx, do, dT, dW, dV``."""
    x, o, T, sub, W, V, xs, u, ds_du, f, p, nodes, right = cache
    E, _N, _S = o.shape
    dW = np.einsum("eb,elb->el", dw, p)
    dV = np.einsum("ebc,elb->elc", dr, p)
    dp = W[:, :, None] * dw[:, None, :] + np.einsum("elc,ebc->elb", V, dr)
    sign = np.where(right == 1, -1.0, 1.0)[None, :, :, None]
    df = sign * _excl_products(f) * dp[:, :, None, :]             # d/ds through each factor
    ds = np.zeros(u.shape, dtype=u.dtype)
    L, d = nodes.shape
    for k in range(d):
        for leaf in range(L):
            ds[:, nodes[leaf, k], :] += df[:, leaf, k, :]
    du = ds * ds_du
    dT = np.einsum("enb,ens->ens", du, o)
    do = np.einsum("enb,ens->ens", du, T) - np.einsum("enb,esb->ens", du, xs)
    dx = None
    if need_dx:
        dxs = -np.einsum("enb,ens->esb", du, o)                   # (E, S, B)
        dx = np.zeros(x.shape, dtype=x.dtype)
        for e in range(E):
            np.add.at(dx.T, sub[e], dxs[e])
    return dx, do, dT, dW, dV


def dense_jvp(cache, dx, do, dT, dW, dV):
    """Forward mode of :func:`dense_forward` (the same straight-through linearisation when hard):
    tangents of ``x, o, T, W, V`` (``None`` = 0) to tangents ``(dw, dr)``."""
    _x, o, T, sub, W, V, xs, u, ds_du, f, p, nodes, right = cache
    du = np.zeros(u.shape, dtype=u.dtype)
    if dT is not None:
        du += np.einsum("ens,ens->en", o, dT)[:, :, None]
    if do is not None:
        du += np.einsum("ens,ens->en", do, T)[:, :, None] - np.einsum("ens,esb->enb", do, xs)
    if dx is not None:
        du -= np.einsum("ens,esb->enb", o, dx.T[sub])
    ds = du * ds_du
    sign = np.where(right == 1, -1.0, 1.0)[None, :, :, None]
    dp = np.sum(sign * _excl_products(f) * ds[:, nodes, :], axis=2)   # (E, L, B)
    dw = np.einsum("el,elb->eb", W, dp)
    dr = np.einsum("elc,elb->ebc", V, dp)
    if dW is not None:
        dw += np.einsum("el,elb->eb", dW, p)
    if dV is not None:
        dr += np.einsum("elc,elb->ebc", dV, p)
    return dw, dr
