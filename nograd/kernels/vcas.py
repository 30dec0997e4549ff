r"""The leverage-score row sampler of VCAS's weight gradients in one pass (Numba, serial,
``cache=True``), with its NumPy reference :func:`leverage_rows_ref` beside it.

VCAS (Wang et al. 2024, ICLR, "Efficient Backpropagation with Variance-Controlled Adaptive
Sampling", Sec. 4) estimates a dense layer's weight gradient :math:`\bar W = \sum_t g_t x_t^\top`
from rows drawn with the water-filled probabilities

.. math::
    a_t = \lVert g_t\rVert\,\lVert x_t\rVert, \qquad p_t = \min(1, c\,a_t), \qquad
    \textstyle\sum_t p_t = k,

as :math:`\hat W = \sum_{t\,\text{kept}} (g_t / p_t)\, x_t^\top` (row ``t`` kept when its uniform
draw :math:`u_t < p_t`). :func:`leverage_rows` does everything but the final product: the scores,
the water level ``c``, the draws' comparison and the gathers of the kept rows (``g``'s scaled by
:math:`1/p_t`), replacing some fifteen NumPy passes (two norms, a sort, cumulative sums, a mask,
two gathers and a scaling) whose fixed costs exceed the saved product on layers of a few hundred
rows. The caller computes ``gs.T @ xs`` with BLAS.

The water level is found by the fixed point :math:`C_0 = \emptyset`,
:math:`c_j = (k - |C_j|) / \sum_{t \notin C_j} a_t`, :math:`C_{j+1} = \{t : c_j a_t \ge 1\}`:
:math:`c_j` grows and :math:`C_j` only gains rows, so it stops after at most as many rounds as rows
are capped, at the least ``c`` with :math:`\sum_t \min(1, c\,a_t) = k` — the solution the
reference (and :func:`nograd.rules.vcas_sampling.water_fill`) finds by sorting.
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _scores(g, x, rows):
    """``a[i] = ||g[rows[i]]|| * ||x[rows[i]]||``, summed in float64 (reassociated: vectorised)."""
    a = np.empty(rows.size, np.float64)
    for i in range(rows.size):
        r = rows[i]
        sg = 0.0
        for j in range(g.shape[1]):
            v = np.float64(g[r, j])
            sg += v * v
        sx = 0.0
        for j in range(x.shape[1]):
            v = np.float64(x[r, j])
            sx += v * v
        a[i] = np.sqrt(sg) * np.sqrt(sx)
    return a


@nb.njit(cache=True, nogil=True)
def leverage_scores(g, x):
    """The leverage scores of every row, ``a[t] = ||g[t]|| * ||x[t]||`` (float64): ``g (R, out)``,
    ``x (R, in)`` C-contiguous. One pass over both instead of two norms, a root and a product.
    NumPy reference: :func:`leverage_scores_ref`."""
    return _scores(g, x, np.arange(g.shape[0]))


def leverage_scores_ref(g, x):
    return np.sqrt((g.astype(np.float64) ** 2).sum(1)) * np.sqrt((x.astype(np.float64) ** 2).sum(1))


@nb.njit(cache=True, nogil=True)
def _level(a, k):
    """The water level ``c``: ``sum(min(1, c a)) = k`` for ``0 < k < #{a > 0}``."""
    capped = np.zeros(a.size, np.bool_)
    n_cap = 0
    while True:
        rest = 0.0
        for i in range(a.size):
            if not capped[i]:
                rest += a[i]
        c = (k - n_cap) / rest
        grew = False
        for i in range(a.size):
            if not capped[i] and c * a[i] >= 1.0:
                capped[i] = True
                n_cap += 1
                grew = True
        if not grew:
            return c


@nb.njit(cache=True, nogil=True)
def leverage_rows(g, x, rows, u, k):
    """Scores, water-filled probabilities for the budget ``k`` and the kept rows, gathered.

    ``g (R, out)``, ``x (R, in)``: the rows of a dense layer's output cotangent and input (float32
    or float64, C-contiguous); ``rows (L,)`` int64: the candidate rows (the alive ones); ``u (L,)``
    float64 uniforms in [0, 1); ``k``: the expected number kept (``0 < k``). Returns
    ``(gs (K, out), xs (K, in))`` with ``gs[j] = g[t_j] / p[t_j]`` and ``xs[j] = x[t_j]`` for the
    kept rows ``t_j`` in increasing order (``u < p``). With ``k`` at least the number of positive
    scores every such row is kept with weight 1 (the exact product, zero rows left out).
    """
    a = _scores(g, x, rows)
    pos = 0
    for i in range(a.size):
        if a[i] > 0:
            pos += 1
    p = np.empty(a.size, np.float64)
    if k >= pos:
        for i in range(a.size):
            p[i] = 1.0 if a[i] > 0 else 0.0
    else:
        c = _level(a, k)
        for i in range(a.size):
            p[i] = min(1.0, c * a[i])
    kept = 0
    for i in range(a.size):
        if u[i] < p[i]:
            kept += 1
    gs = np.empty((kept, g.shape[1]), g.dtype)
    xs = np.empty((kept, x.shape[1]), x.dtype)
    w = np.empty(1, g.dtype)                   # 1/p rounded to g's dtype, as the reference does
    j = 0
    for i in range(a.size):
        if u[i] < p[i]:
            r = rows[i]
            w[0] = 1.0 / p[i]
            for q in range(g.shape[1]):
                gs[j, q] = g[r, q] * w[0]
            for q in range(x.shape[1]):
                xs[j, q] = x[r, q]
            j += 1
    return gs, xs


def leverage_rows_ref(g, x, rows, u, k):
    """NumPy reference of :func:`leverage_rows`: the water level by sorting (the first ``m``
    sorted scores capped, ``m`` the least with ``(k - m) a_(m+1) <= sum_{i>m} a_(i)``)."""
    gr, xr = g[rows], x[rows]
    a = np.sqrt((gr.astype(np.float64) ** 2).sum(1)) * np.sqrt((xr.astype(np.float64) ** 2).sum(1))
    pos = int(np.count_nonzero(a > 0))
    if k >= pos:
        p = (a > 0).astype(np.float64)
    else:
        s = np.sort(a)[::-1]
        tail = np.cumsum(s[::-1])[::-1]
        top = int(np.ceil(k))
        m = int(np.argmax((k - np.arange(top)) * s[:top] <= tail[:top]))
        p = np.minimum(1.0, (k - m) / tail[m] * a)
    keep = np.flatnonzero(u < p)
    w = (1.0 / p[keep]).astype(g.dtype)
    return gr[keep] * w[:, None], xr[keep]


@nb.njit(cache=True, nogil=True)
def water_variance(a, k):
    r""":math:`\sum_t (1/p_t - 1)\, a_t^2` for the water-filled :math:`p_t = \min(1, c\,a_t)`,
    :math:`\sum_t p_t = k`: the variance the leverage sampler adds at budget ``k`` (the
    controller's closed form :math:`V_{w,l}`). ``a (L,)`` float64 scores; 0 when ``k`` covers
    every positive score."""
    pos = 0
    for i in range(a.size):
        if a[i] > 0:
            pos += 1
    if k >= pos:
        return 0.0
    c = _level(a, k)
    s = 0.0
    for i in range(a.size):
        if a[i] > 0:
            p = min(1.0, c * a[i])
            s += (1.0 / p - 1.0) * a[i] * a[i]
    return s


def water_variance_ref(a, k):
    """NumPy reference of :func:`water_variance` (the water level by sorting)."""
    a = np.asarray(a, np.float64)
    if k >= np.count_nonzero(a > 0):
        return 0.0
    s = np.sort(a)[::-1]
    tail = np.cumsum(s[::-1])[::-1]
    top = int(np.ceil(k))
    m = int(np.argmax((k - np.arange(top)) * s[:top] <= tail[:top]))
    p = np.minimum(1.0, (k - m) / tail[m] * a)
    on = p > 0
    return float(np.sum((1.0 / p[on] - 1.0) * a[on] ** 2))
