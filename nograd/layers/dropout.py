"""Inverted dropout (Srivastava et al. 2014, JMLR 15, §2 with the 1/(1-p) rescaling at training)."""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_array, check_float, check_like
from ..core.module import Module


def dropout_mask(shape, p: float, rng, dtype, who: str = "Dropout"):
    """The inverted-dropout multiplier ``m / (1 - p)``, ``m ~ Bernoulli(1 - p)`` of ``shape``, drawn from
    ``rng`` (required: ``who`` names the caller in the error); shared by every layer with dropout."""
    if rng is None:
        raise ValueError(f"{who} needs rng= (a numpy Generator or seed) when train=True and dropout > 0")
    keep = as_rng(rng).random(shape) >= p
    return keep.astype(dtype) * np.dtype(dtype).type(1 / (1 - p))


class Dropout(Module):
    r"""Zero each entry with probability ``p`` during training and rescale the rest.

    Shapes: any ``x``; ``y`` has the same shape and dtype.

    .. math::
        y = x \odot m / (1 - p), \quad m_i \sim \mathrm{Bernoulli}(1 - p); \qquad
        \bar x = \bar y \odot m / (1 - p), \quad \dot y = \dot x \odot m / (1 - p).

    In evaluation (``train=False``) it is the identity. The mask is drawn from the ``rng`` passed
    to ``forward``/``jvp`` (required when training) and returned in the cache, so a rule can
    replay the same mask (PEPITA's second pass) by passing an identically seeded generator.
    Declares ``elementwise`` (with no fixed derivative: ``df`` is ``None``).
    """

    elementwise = True

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = check_float(p, "p", low=0, high=1, high_open=True)

    def extra_repr(self):
        return f"p={self.p}"

    def _mask(self, x, train, rng):
        if not train or self.p == 0:
            return None
        return dropout_mask(x.shape, self.p, rng, x.dtype)

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x")
        self._use(params)
        mask = self._mask(x, train, rng)
        return (x.copy() if mask is None else x * mask), (mask, x.shape)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        mask, shape = cache
        check_like(dy, shape)
        if not need_dx:
            return None, {}
        return (dy.copy() if mask is None else dy * mask), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, (mask, _) = self.forward(x, train=train, rng=rng, params=params)
        return self._input_jvp(x, dx, dparams, y, lambda d: d.copy() if mask is None else d * mask)


class Dropout2d(Dropout):
    r"""Channel dropout over NCHW images (Tompson et al. 2015, §3.2, "SpatialDropout"): each whole
    feature map is zeroed with probability ``p`` during training and the others are rescaled.

    .. math::
        y_{nc} = x_{nc}\, m_{nc} / (1 - p), \quad m_{nc} \sim \mathrm{Bernoulli}(1 - p)
        \text{ (one draw per sample and channel, shared by all } H \times W \text{ pixels)};

    the backward and the jvp multiply by the same mask. Shapes: ``x (N, C, H, W)``; ``y`` has the
    same shape and dtype. Evaluation (``train=False``) is the identity. Neighbouring pixels of a
    feature map are strongly correlated, so dropping single pixels (:class:`Dropout`) barely
    regularises a convolutional net; dropping whole maps does. The ``rng`` and the cache work as
    in :class:`Dropout`. Cost: one multiplication per entry, ``N·C`` random draws.
    """

    def _mask(self, x, train, rng):
        if not train or self.p == 0:
            return None
        return dropout_mask(x.shape[:2] + (1, 1), self.p, rng, x.dtype, "Dropout2d")

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x", ndim=4)
        return super().forward(x, train=train, rng=rng, params=params)
