r"""Sinusoidal embedding of a scalar per sample (a diffusion time step), with its derivatives.

Vaswani et al. 2017 ("Attention Is All You Need", §3.5) encode a position :math:`t` by sines and
cosines of geometrically spaced frequencies; Ho et al. 2020 ("Denoising Diffusion Probabilistic
Models", §4 and Appendix B) feed the diffusion step to the U-Net the same way. With ``d = dim`` even,
``h = d/2`` and :math:`\omega_k = P^{-k/h}` (``P = max_period``):

.. math::
    e(t) = \big[\sin(\omega_0 t), \dots, \sin(\omega_{h-1} t),\ \cos(\omega_0 t), \dots,
    \cos(\omega_{h-1} t)\big],

    \frac{\partial e}{\partial t} = \big[\omega_k \cos(\omega_k t),\ -\omega_k \sin(\omega_k t)\big].
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_like, check_positive
from ..core.module import Module


class SinusoidalEmbedding(Module):
    r"""``x (N,) -> y (N, dim)``: the sines and cosines of ``x`` at ``dim/2`` frequencies.

    ``x`` holds one real number per sample, the diffusion time step :math:`t` (float; integer
    steps are converted by the caller, e.g. ``t.astype(np.float32)``). No trainable arrays. The
    Jacobian is diagonal per sample, so

    .. math::
        \bar x_n = \sum_k \omega_k\big(\bar y_{n,k}\cos(\omega_k x_n)
        - \bar y_{n,h+k}\sin(\omega_k x_n)\big), \qquad
        \dot y_n = \dot x_n\, \partial e/\partial t\,(x_n).

    Cost: ``N·dim`` sines/cosines. Used by :class:`nograd.models.diffusion.UNet`.

    Parameters
    ----------
    dim : even embedding size ``d``.
    max_period : ``P``, the longest period; frequencies run from 1 down to ``P^{-(h-1)/h}``.
    """

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        check_positive(dim, "dim", integer=True)
        if dim % 2:
            raise ValueError(f"dim must be even (sines and cosines in pairs), got {dim}")
        check_positive(max_period, "max_period")
        self.dim, self.max_period = int(dim), float(max_period)
        half = self.dim // 2
        self.freqs = np.exp(-np.log(self.max_period) * np.arange(half) / half)

    def extra_repr(self):
        return f"{self.dim}, max_period={self.max_period:g}"

    def _phase(self, x):
        check_array(x, "x", ndim=1)
        return x[:, None] * self.freqs.astype(x.dtype)

    def forward(self, x, *, train=False, rng=None, params=None):
        self._use(params)
        ph = self._phase(x)
        s, c = np.sin(ph), np.cos(ph)
        return np.concatenate([s, c], axis=1), (s, c)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        s, c = cache
        check_like(dy, (s.shape[0], self.dim))
        if not need_dx:
            return None, {}
        h = self.dim // 2
        w = self.freqs.astype(dy.dtype)
        dx = (dy[:, :h] * c - dy[:, h:] * s) @ w
        return dx.astype(dy.dtype, copy=False), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, (s, c) = self.forward(x, params=params)
        w = self.freqs.astype(x.dtype)
        deriv = np.concatenate([w * c, -w * s], axis=1)
        return self._input_jvp(x, dx, dparams, y, lambda d: d[:, None] * deriv)
