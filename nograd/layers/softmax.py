r"""Softmax and log-softmax along one axis, as functions with their derivatives and as layers.

With :math:`p = \operatorname{softmax}(s)`, :math:`p_i = e^{s_i - m} / \sum_j e^{s_j - m}` for
:math:`m = \max_j s_j` (the shift changes nothing mathematically and keeps ``exp`` from
overflowing), the Jacobian :math:`J = \operatorname{diag}(p) - p p^\top` is symmetric, so one
formula serves both modes:

.. math::
    J v = p \odot \bigl(v - \langle p, v\rangle\bigr)
    \qquad(\bar s = J\bar p, \quad \dot p = J \dot s).

For :math:`\ell = \log\operatorname{softmax}(s) = s - m - \log\sum_j e^{s_j - m}` the Jacobian is
:math:`I - \mathbf 1 p^\top`: :math:`\dot\ell = \dot s - \langle p, \dot s\rangle` and
:math:`\bar s = \bar\ell - p \sum_i \bar\ell_i`.

>>> import numpy as np
>>> s = np.array([[1.0, 2.0, 3.0]])
>>> p = softmax(s)
>>> bool(np.allclose(p.sum(), 1.0)), bool(np.allclose(softmax(s + 1000.0), p))
(True, True)
>>> bool(np.allclose(softmax_tangent(p, np.ones_like(s)), 0.0))   # shifting every logit changes nothing
True
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_like
from ..core.module import Module


def softmax(s, axis=-1):
    """``exp(s - max s) / Σ exp(s - max s)`` along ``axis``; ``-inf`` entries get probability 0."""
    e = s - s.max(axis=axis, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e


def softmax_tangent(p, v, axis=-1):
    r"""The symmetric Jacobian of softmax at ``p`` applied to ``v``: :math:`p \odot (v - \langle p, v\rangle)`.

    It is the vjp (``v`` a cotangent of ``p``) and the jvp (``v`` a tangent of ``s``) alike.
    """
    pv = p * v
    pv -= p * pv.sum(axis=axis, keepdims=True)
    return pv


def log_softmax(s, axis=-1):
    """``s - m - log Σ exp(s - m)`` along ``axis`` with ``m = max s`` (the shifted log-sum-exp)."""
    t = s - s.max(axis=axis, keepdims=True)
    return t - np.log(np.exp(t).sum(axis=axis, keepdims=True))


class _AlongAxis(Module):
    """A parameter-free map along one axis: the axis check, and ``forward`` = ``(f(x), f(x))``."""

    def __init__(self, axis: int = -1):
        super().__init__()
        if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
            raise TypeError(f"axis must be an int, got {axis!r}")
        self.axis = int(axis)

    def extra_repr(self):
        return f"axis={self.axis}"

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x")
        self._use(params)
        if not -x.ndim <= self.axis < x.ndim:
            raise ValueError(f"axis {self.axis} is out of range for x of shape {x.shape}")
        y = self._f(x, self.axis)
        return y, y


class Softmax(_AlongAxis):
    r"""``p = softmax(s)`` along ``axis`` (default the last).

    Shapes: any ``s``; ``p`` has the same shape and dtype. Backward and jvp are both
    :func:`softmax_tangent` (the Jacobian :math:`\operatorname{diag}(p) - pp^\top` is symmetric).
    Bridle (1990), "Probabilistic interpretation of feedforward classification network outputs".
    """

    _f = staticmethod(softmax)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        p = cache
        check_like(dy, p.shape)
        return (softmax_tangent(p, dy, self.axis) if need_dx else None), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        p, _ = self.forward(x, params=params)
        return self._input_jvp(x, dx, dparams, p, lambda d: softmax_tangent(p, d, self.axis))


class LogSoftmax(_AlongAxis):
    r"""``ℓ = log softmax(s)`` along ``axis`` (default the last), by the shifted log-sum-exp.

    Shapes: any ``s``; ``ℓ`` has the same shape and dtype.

    .. math::
        \dot\ell = \dot s - \langle p, \dot s\rangle, \qquad
        \bar s = \bar\ell - p \textstyle\sum_i \bar\ell_i, \qquad p = e^{\ell}.
    """

    _f = staticmethod(log_softmax)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        ell = cache
        check_like(dy, ell.shape)
        if not need_dx:
            return None, {}
        return dy - np.exp(ell) * dy.sum(axis=self.axis, keepdims=True), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        ell, _ = self.forward(x, params=params)
        p = np.exp(ell)
        return self._input_jvp(x, dx, dparams, ell,
                               lambda d: d - (p * d).sum(axis=self.axis, keepdims=True))
