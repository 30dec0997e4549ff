r"""Root mean square layer normalisation (Zhang & Sennrich 2019, "Root Mean Square Layer
Normalization", §3 eq. 4).

RMSNorm rescales each sample by the root mean square of its last axes, without centring it
(LayerNorm's re-centring is dropped, its re-scaling kept) and with a gain but no bias:

.. math::
    r = \Big(\tfrac1n \textstyle\sum_j x_j^2 + ε\Big)^{-1/2}, \qquad \hat x = r x, \qquad
    y = g \odot \hat x,

where the sum runs over the ``n`` entries of the normalised axes. Since
:math:`\partial r / \partial x_j = -r^3 x_j / n`, the Jacobian of :math:`x \mapsto \hat x` is the
symmetric map

.. math::
    J v = r\,\big(v - \hat x\; \overline{\hat x \odot v}\big)

(the bar is the mean over the normalised axes; it is exact with :math:`ε > 0`), so backward and
jvp share :func:`rms_tangent`: :math:`\bar x = J(g \odot \bar y)`,
:math:`\bar g = \sum_{\text{batch}} \bar y \odot \hat x` and
:math:`\dot y = g \odot J \dot x + \dot g \odot \hat x`.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_dtype, check_like, check_positive
from ..core.module import Module


def rms_scale(x, axes, eps):
    """Return ``(x̂, r)`` with ``r = (mean(x², axes) + eps)^{-1/2}`` kept as length-1 dims."""
    ms = np.mean(x * x, axis=axes, keepdims=True)
    r = 1 / np.sqrt(ms + x.dtype.type(eps))
    return x * r, r


def rms_tangent(xhat, r, v, axes):
    """Apply the (symmetric) Jacobian of ``x ↦ x̂`` to ``v``; used for both vjp and jvp."""
    return r * (v - xhat * np.mean(xhat * v, axis=axes, keepdims=True))


class RMSNorm(Module):
    r"""Normalise each sample by the root mean square of its last ``len(normalized_shape)`` axes,
    then scale by a learned gain (Zhang & Sennrich 2019, eq. 4); follows ``torch.nn.RMSNorm``.

    Shapes: ``x (..., *normalized_shape) -> y`` same shape; ``weight normalized_shape``.

    .. math::
        y = \frac{x}{\sqrt{\tfrac1n \sum_j x_j^2 + ε}} \odot g.

    Cost: three passes over ``x`` per map, ``O(x.size)``.

    Parameters
    ----------
    normalized_shape : int or tuple, the trailing shape normalised over.
    eps : added to the mean square; ``None`` (default, as in PyTorch) uses the machine epsilon of
        the input's dtype, ``np.finfo(x.dtype).eps``.
    elementwise_affine : learn the gain ``g`` (``weight``, initialised to ones); there is no bias.
    dtype : float32 (default) or float64 for the weight.
    """

    def __init__(self, normalized_shape, eps: float | None = None, elementwise_affine: bool = True, *,
                 dtype=np.float32):
        super().__init__()
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (int(normalized_shape),)
        try:
            self.normalized_shape = tuple(int(s) for s in normalized_shape)
        except (TypeError, ValueError):
            raise TypeError(f"normalized_shape must be an int or a tuple of ints, "
                            f"got {normalized_shape!r}") from None
        if not self.normalized_shape or min(self.normalized_shape) < 1:
            raise ValueError(f"normalized_shape must be positive sizes, got {normalized_shape!r}")
        self.eps = None if eps is None else float(check_positive(eps, "eps"))
        dt = check_dtype(dtype)
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine:
            self._own["weight"] = np.ones(self.normalized_shape, dtype=dt)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"

    def _axes(self, x):
        k = len(self.normalized_shape)
        return tuple(range(x.ndim - k, x.ndim))

    def _eps(self, dtype):
        return float(np.finfo(dtype).eps) if self.eps is None else self.eps

    def _check(self, x):
        check_array(x, "x", min_ndim=len(self.normalized_shape))
        if x.shape[x.ndim - len(self.normalized_shape):] != self.normalized_shape:
            raise ValueError(f"x must end with shape {self.normalized_shape}, got {x.shape}")

    @staticmethod
    def _gain(p, name, dtype):
        g = p.get(name) if p else None
        return None if g is None else g.astype(dtype, copy=False)

    def forward(self, x, *, train=False, rng=None, params=None):
        self._check(x)
        p = self._use(params)
        xhat, r = rms_scale(x, self._axes(x), self._eps(x.dtype))
        g = self._gain(p, "weight", x.dtype)
        return (xhat if g is None else xhat * g), (xhat, r)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        xhat, r = cache
        check_like(dy, xhat.shape)
        p = self._use(params)
        axes = self._axes(xhat)
        grads = {}
        g = self._gain(p, "weight", dy.dtype)
        if g is not None:
            batch_axes = tuple(range(xhat.ndim - len(axes)))
            grads["weight"] = np.sum(dy * xhat, axis=batch_axes).astype(p["weight"].dtype, copy=False)
        if not need_dx:
            return None, grads
        return rms_tangent(xhat, r, dy if g is None else dy * g, axes), grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, (xhat, r) = self.forward(x, params=params)
        p = self._use(params)
        dparams = self._tangents(dparams) or {}
        if dx is None:
            dy = np.zeros_like(y)
        else:
            check_like(dx, x.shape, "dx")
            dy = rms_tangent(xhat, r, dx, self._axes(x))
            g = self._gain(p, "weight", x.dtype)
            if g is not None:
                dy *= g
        dg = self._gain(dparams, "weight", x.dtype)
        if dg is not None:
            dy += xhat * dg
        return y, dy
