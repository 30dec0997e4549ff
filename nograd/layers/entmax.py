r"""α-entmax with α = 1.5: a sparse alternative to softmax, forward and both derivatives by hand.

Peters, Niculae & Martins, "Sparse Sequence-to-Sequence Models", ACL 2019, §2 (eq. 7–10) and
Alg. 2 (the exact sort-based evaluation). With :math:`X = z/2` (that is :math:`(\alpha-1)z`),

.. math::
    \operatorname{entmax}_{1.5}(z)_i = [X_i - \tau]_+^2, \qquad \tau \text{ such that }
    \textstyle\sum_i [X_i - \tau]_+^2 = 1 .

Sorting :math:`X` in decreasing order, the support is the largest prefix of size :math:`k` whose
candidate :math:`\tau_k = \bar X_k - \sqrt{(1 - k\,\sigma^2_k)/k}` (mean and variance of the top
:math:`k`) lies below its smallest element. Entries below :math:`\tau` are exactly zero.

Derivative: on the support :math:`p_i = (X_i - \tau)^2`, so with :math:`s = \sqrt p`
(zero off the support) implicit differentiation of :math:`\sum p = 1` gives the symmetric
Jacobian :math:`J = \operatorname{diag}(s) - s s^\top / \textstyle\sum s` with respect to
:math:`z`; the vjp and the jvp are both :math:`v \mapsto s\odot v - s\,\langle s, v\rangle/\sum s`.

>>> import numpy as np
>>> p = entmax15(np.array([3.0, 1.0, -2.0]))
>>> float(p.sum()), bool(p[2] == 0)
(1.0, True)
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_int, check_like
from .softmax import _AlongAxis

__all__ = ["Entmax15", "entmax15", "entmax15_vjp"]


def _axis(z: np.ndarray, axis: int) -> int:
    check_int(axis, "axis")
    if not -z.ndim <= axis < z.ndim:
        raise ValueError(f"axis {axis} is out of range for an array of {z.ndim} dimensions")
    return int(axis) % z.ndim


def entmax15(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """1.5-entmax of ``z`` along ``axis`` (exact, sort-based); same shape and dtype as ``z``."""
    z = np.asarray(z)
    if z.dtype.kind != "f":
        z = z.astype(np.float64)
    ax = _axis(z, axis)
    X = np.moveaxis(z, ax, -1) / 2
    X = X - X.max(axis=-1, keepdims=True)
    srt = -np.sort(-X, axis=-1)                                  # decreasing
    k = np.arange(1, X.shape[-1] + 1, dtype=X.dtype)
    mean = np.cumsum(srt, axis=-1) / k
    mean_sq = np.cumsum(srt * srt, axis=-1) / k
    delta = (1 - k * (mean_sq - mean * mean)) / k
    tau = mean - np.sqrt(np.maximum(delta, 0))
    support = np.sum(tau <= srt, axis=-1, keepdims=True)         # ≥ 1: the top entry always is
    tau_star = np.take_along_axis(tau, support - 1, axis=-1)
    p = np.maximum(X - tau_star, 0)
    p *= p
    return np.moveaxis(p, -1, ax).astype(z.dtype, copy=False)


def entmax15_vjp(p: np.ndarray, dy: np.ndarray, axis: int = -1) -> np.ndarray:
    r"""The product of 1.5-entmax's (symmetric) Jacobian at output ``p`` with ``dy``:
    :math:`s\odot dy - s\,\langle s, dy\rangle/\sum s`, :math:`s = \sqrt p`. It serves as the vjp
    and as the jvp (pass the input tangent as ``dy``)."""
    ax = _axis(p, axis)
    s = np.sqrt(p)
    sd = s * dy
    return sd - s * (sd.sum(axis=ax, keepdims=True) / s.sum(axis=ax, keepdims=True))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` by the shifted exponential."""
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_vjp(p: np.ndarray, dy: np.ndarray, axis: int = -1) -> np.ndarray:
    r"""Softmax's symmetric Jacobian :math:`\operatorname{diag}(p) - pp^\top` applied to ``dy``."""
    pd = p * dy
    return pd - p * pd.sum(axis=axis, keepdims=True)


class Entmax15(_AlongAxis):
    r"""1.5-entmax along ``axis`` as a layer (no parameters).

    Shapes: any ``x`` with at least one axis; ``y`` has the same shape and dtype, non-negative,
    summing to one along ``axis``, with exact zeros for entries far below the largest.

    .. math::
        y = \operatorname{entmax}_{1.5}(x), \qquad \bar x = J\bar y, \qquad \dot y = J\dot x,
        \qquad J = \operatorname{diag}(s) - \frac{s s^\top}{\sum_i s_i},\ s = \sqrt y .

    Peters, Niculae & Martins (2019), §2 and Alg. 2. The map is smooth except where an entry
    enters or leaves the support (:math:`X_i = \tau`).
    """

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x", min_ndim=1)
        self._use(params)
        _axis(x, self.axis)
        y = entmax15(x, self.axis)
        return y, y

    def backward(self, cache, dy, *, params=None, need_dx=True):
        y = cache
        check_like(dy, y.shape)
        return (entmax15_vjp(y, dy, self.axis).astype(y.dtype, copy=False) if need_dx else None), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, _ = self.forward(x, params=params)
        return self._input_jvp(x, dx, dparams, y,
                               lambda d: entmax15_vjp(y, d, self.axis).astype(y.dtype, copy=False))
