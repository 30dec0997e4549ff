r"""The samplers of VCAS (Wang et al. 2024, "Efficient Backpropagation with Variance-Controlled
Adaptive Sampling", ICLR): unbiased importance sampling with water-filled probabilities, the
leverage-score sampling of a weight gradient's rows, and the two quantities the variance
controller reads.

**Water-filling** (the paper's importance sampling, Sec. 4; the "soft top-k" of the reference code). Given scores
:math:`a_i \ge 0` and a budget :math:`k`, the probabilities

.. math::
    p_i = \min(1,\, c\,a_i), \qquad \textstyle\sum_i p_i = \min(k, \#\{a_i > 0\}),

minimise the variance :math:`\sum_i (1/p_i - 1)\, a_i^2` of the estimate
:math:`\sum_i \frac{m_i}{p_i} v_i` (:math:`m_i \sim \mathrm{Bernoulli}(p_i)` independent,
:math:`\lVert v_i \rVert = a_i`) of :math:`\sum_i v_i` over all :math:`p` with that expected
count. The estimate is unbiased: :math:`\mathbb E[m_i/p_i] = 1`, and a zero score has
:math:`p_i = 0` and contributes nothing anyway.

**Leverage scores** (the weight-gradient sampler). The weight gradient of a dense layer is a sum of rank-one terms over its
rows (tokens) :math:`t`, :math:`\bar W = \sum_t g_t x_t^\top`; sampling rows with
:math:`a_t = \lVert g_t\rVert\,\lVert x_t\rVert` (the Frobenius norm of the term) and the budget
:math:`k = \lfloor \nu R \rfloor` gives :math:`\hat W = \sum_{t\,\text{kept}} g_t x_t^\top / p_t` and
the variance :math:`\mathbb E\lVert \hat W - \bar W\rVert_F^2 = \sum_t (1/p_t - 1)\, a_t^2`.
"""
from __future__ import annotations

import numpy as np

__all__ = ["water_fill", "keep_mask", "top_sum_fraction", "row_norms", "leverage_weight_grad",
           "leverage_variance",
           "score_variance"]


def water_fill(scores, k) -> np.ndarray:
    r"""Keep probabilities ``p (n,)`` for nonnegative ``scores (n,)`` and a budget ``k > 0``, the
    expected number kept (a real number: the activation sampler's budget is :math:`N\rho_l`
    itself, not rounded down): :math:`p_i = \min(1, c\,a_i)` with
    :math:`\sum_i p_i = \min(k, \#\{a_i>0\})`.

    Sorting the scores in decreasing order :math:`a_{(1)} \ge a_{(2)} \ge \dots`, the first ``m``
    are capped at 1 where ``m`` is the least index with
    :math:`(k - m)\, a_{(m+1)} \le \sum_{i > m} a_{(i)}`, and then :math:`c = (k-m)/\sum_{i>m} a_{(i)}`.
    Cost: one sort, ``O(n log n)``.
    """
    a = np.asarray(scores, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"scores must be one-dimensional, got shape {a.shape}")
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError("scores must be finite and nonnegative")
    if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)) \
            or not (np.isfinite(k) and k > 0):
        raise ValueError(f"k must be a positive number, got {k!r}")
    k = float(k)
    positive = a > 0
    if k >= int(positive.sum()):
        return positive.astype(np.float64)
    s = np.sort(a)[::-1]
    tail = np.cumsum(s[::-1])[::-1]                  # tail[m] = sum of s[m:]
    top = int(np.ceil(k))                            # at most ceil(k) - 1 scores are capped
    m_range = np.arange(top)
    ok = (k - m_range) * s[:top] <= tail[:top]       # true at m = ceil(k) - 1 at the latest
    m = int(np.argmax(ok))
    c = (k - m) / tail[m]
    return np.minimum(1.0, c * a)


def keep_mask(p, rng) -> np.ndarray:
    """Independent Bernoulli draws: a boolean mask, True with probability ``p[i]``."""
    return rng.random(len(p)) < p


def top_sum_fraction(values, s: float) -> float:
    r"""The least fraction of the entries of ``values`` (nonnegative) whose largest ones sum to at
    least ``s`` of the total, :math:`\min\{j/n : \sum_{i \le j} v_{(i)} \ge s \sum_i v_i\}` (at
    least ``1/n``). VCAS turns its norm-keep ratio ``s`` into a layer's sample ratio with it
    (Algorithm 1 of the paper; the reference code's ``find_top_sum``)."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())[::-1]
    n = len(v)
    if n == 0:
        raise ValueError("values is empty")
    total = v.sum()
    if total <= 0:
        return 1.0 / n
    count = int(np.count_nonzero(np.cumsum(v) < s * total)) + 1
    return min(count / n, 1.0)


def row_norms(a) -> np.ndarray:
    """Euclidean norm of each row of ``a`` (its first axis), in float64: ``(n,)``."""
    a2 = a.reshape(a.shape[0], -1)
    return np.sqrt(np.einsum("ij,ij->i", a2, a2).astype(np.float64))


def leverage_weight_grad(g, x, ratio: float, rng):
    r"""The sampled weight gradient of a dense layer and the rows it used.

    Shapes: ``g (R, out)`` (output cotangent rows), ``x (R, in)`` (input rows) → ``(dW (out, in),
    rows)``, with :math:`\widehat{\bar W} = \sum_{t\,\text{kept}} g_t x_t^\top / p_t`, ``p`` the
    water-filled leverage probabilities for the budget ``max(1, int(ratio·R))``, and ``rows`` the
    number of rows kept (the GEMM that is done is ``rows × out × in`` instead of ``R × out × in``).
    With the budget at least ``R`` it is the exact ``g.T @ x`` with ``rows = R``.
    """
    R = g.shape[0]
    k = max(1, int(ratio * R))
    if k >= R:
        return g.T @ x, R
    p = water_fill(row_norms(g) * row_norms(x), k)
    idx = np.flatnonzero(keep_mask(p, rng))
    if idx.size == 0:
        return np.zeros((g.shape[1], x.shape[1]), g.dtype), 0
    gs = np.take(g, idx, axis=0)
    gs *= (1.0 / p[idx]).astype(g.dtype)[:, None]
    return gs.T @ np.take(x, idx, axis=0), int(idx.size)


def leverage_variance(g, x, ratio: float) -> float:
    r""":math:`\sum_t (1/p_t - 1)\,\lVert g_t\rVert^2 \lVert x_t\rVert^2`: the expected squared
    Frobenius error of :func:`leverage_weight_grad` at ``ratio`` (0 when it would be exact)."""
    return score_variance(row_norms(g) * row_norms(x), ratio)


def score_variance(scores, ratio: float) -> float:
    r"""The same from the leverage scores :math:`a_t = \lVert g_t\rVert\lVert x_t\rVert` alone:
    :math:`\sum_t (1/p_t - 1)\, a_t^2` with ``p`` water-filled for ``max(1, int(ratio·R))``
    (one pass of :func:`nograd.kernels.vcas.water_variance`, no sort)."""
    from ..kernels.vcas import water_variance  # lazy: `import nograd` stays NumPy-only

    a = np.ascontiguousarray(scores, dtype=np.float64)
    k = max(1, int(ratio * len(a)))
    if k >= len(a):
        return 0.0
    return float(water_variance(a, float(k)))
