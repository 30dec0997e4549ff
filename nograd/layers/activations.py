r"""Elementwise activations, each defined once as a pair :math:`(f, f')`.

For ``y = f(x)`` applied entrywise, the Jacobian is diagonal, so both modes come from the
same derivative:

.. math::
    \bar x = \bar y \odot f'(x), \qquad \dot y = \dot x \odot f'(x).

A pair is ``f(x) -> y`` and ``df(x, y) -> f'(x)``; ``df`` receives the output too, because
some derivatives are cheapest from it (``tanh' = 1 - y²``, ``σ' = y(1 - y)``).

>>> import numpy as np
>>> y, cache = Tanh().forward(np.array([[0.0, 1.0]]))
>>> dx, _ = Tanh().backward(cache, np.ones((1, 2)))
>>> bool(np.allclose(dx, 1 - np.tanh([[0.0, 1.0]]) ** 2))
True
"""
from __future__ import annotations

import math

import numpy as np

from ..core.checks import check_array, check_float, check_like
from ..core.module import Module


class Activation(Module):
    """``y = f(x)`` entrywise, given the pair ``f(x)`` and ``df(x, y) = f'(x)``.

    Shapes: any ``x``; ``y`` has the same shape and dtype. Declares ``elementwise`` with its
    derivative ``df`` (see :class:`~nograd.core.module.Module`).
    """

    elementwise = True

    def __init__(self, f=None, df=None, name: str | None = None):
        super().__init__()
        if f is not None:
            self.f = f
        if df is not None:
            self.df = df
        self._name = name

    def f(self, x):
        raise NotImplementedError

    def df(self, x, y):
        raise NotImplementedError

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x")
        self._use(params)
        y = self.f(x)
        return y, (x, y)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        x, y = cache
        check_like(dy, x.shape)
        return (dy * self.df(x, y) if need_dx else None), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, _ = self.forward(x, params=params)
        return self._input_jvp(x, dx, dparams, y, lambda d: d * self.df(x, y))

    def extra_repr(self):
        return self._name or ""


class Identity(Activation):
    """``f(x) = x``, ``f'(x) = 1``."""

    def f(self, x):
        return x.copy()

    def df(self, x, y):
        return np.ones_like(x)


class ReLU(Activation):
    r"""Rectified linear unit, :math:`f(x) = \max(x, 0)`, :math:`f'(x) = [x > 0]` (0 at the kink)."""

    def f(self, x):
        return np.maximum(x, 0)

    def df(self, x, y):
        return y > 0


class LeakyReLU(Activation):
    r""":math:`f(x) = x` for :math:`x > 0`, :math:`a x` otherwise (Maas et al. 2013)."""

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def f(self, x):
        return np.where(x > 0, x, x * x.dtype.type(self.negative_slope))

    def df(self, x, y):
        return np.where(x > 0, x.dtype.type(1), x.dtype.type(self.negative_slope))

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Tanh(Activation):
    r""":math:`f = \tanh`, :math:`f' = 1 - f^2`."""

    def f(self, x):
        return np.tanh(x)

    def df(self, x, y):
        return 1 - y * y


class Sigmoid(Activation):
    r"""Logistic :math:`σ(x) = 1/(1 + e^{-x})` by :func:`sigmoid` (no overflow, accurate left tail);
    :math:`σ' = σ(1 - σ)`."""

    def f(self, x):
        return sigmoid(x)

    def df(self, x, y):
        return y * (1 - y)


class Softsign(Activation):
    r""":math:`f(x) = x / (1 + |x|)`, :math:`f'(x) = 1 / (1 + |x|)^2`."""

    def f(self, x):
        return x / (1 + np.abs(x))

    def df(self, x, y):
        d = 1 + np.abs(x)
        return 1 / (d * d)


class Softplus(Activation):
    r""":math:`f(x) = \log(1 + e^{\beta x}) / \beta`, :math:`f'(x) = σ(\beta x)`; stable for large
    :math:`|x|` via ``logaddexp``."""

    def __init__(self, beta: float = 1.0):
        super().__init__()
        if not beta > 0:
            raise ValueError(f"beta must be positive, got {beta!r}")
        self.beta = float(beta)

    def f(self, x):
        b = x.dtype.type(self.beta)
        return np.logaddexp(x.dtype.type(0), b * x) / b

    def df(self, x, y):
        return sigmoid(x * x.dtype.type(self.beta))

    def extra_repr(self):
        return f"beta={self.beta}"


class GELU(Activation):
    r"""Gaussian error linear unit (Hendrycks & Gimpel 2016): :math:`f(x) = x\,Φ(x)`,
    :math:`f'(x) = Φ(x) + x\,φ(x)`.

    ``approximate="tanh"`` uses :math:`Φ(x) ≈ \tfrac12(1 + \tanh(\sqrt{2/π}(x + 0.044715x^3)))`
    and differentiates that formula exactly; ``"none"`` (default) uses the exact ``erf``: libm's in
    float64, and in float32 a vectorised Numba kernel (:mod:`nograd.kernels.gelu`, Abramowitz &
    Stegun 7.1.26, |ΔΦ| ≤ 1e-7) that computes ``y`` and keeps ``Φ`` for the backward in one pass.
    """

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def _cdf(self, x):
        if self.approximate == "tanh":
            c = x.dtype.type(math.sqrt(2 / math.pi))
            u = c * (x + x.dtype.type(0.044715) * x ** 3)
            return u, 0.5 * (1 + np.tanh(u))
        from ..kernels.gelu import normal_cdf  # lazy: keep `import nograd` light

        return None, normal_cdf(x)

    def f(self, x):
        return x * self._cdf(x)[1]

    def _df_from(self, x, cdf):
        """f'(x) from Φ(x) (exact) or its tanh form, so backward reuses the forward's Φ."""
        if self.approximate == "none":
            return cdf + x * np.exp(x * x * x.dtype.type(-0.5)) * x.dtype.type(1 / math.sqrt(2 * math.pi))
        c = x.dtype.type(math.sqrt(2 / math.pi))
        t = 2 * cdf - 1  # tanh(u)
        return cdf + 0.5 * x * (1 - t * t) * c * (1 + x.dtype.type(3 * 0.044715) * x * x)

    def df(self, x, y):
        return self._df_from(x, self._cdf(x)[1])

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x")
        self._use(params)
        slope = None                          # f'(x), kept by the float32 kernel's one pass
        if self.approximate == "none":
            from ..kernels.gelu import gelu_forward, gelu_forward_slope  # lazy: keep `import nograd` light

            if x.dtype == np.float32:
                y, cdf, slope = gelu_forward_slope(x)
            else:
                y, cdf = gelu_forward(x)
        else:
            cdf = self._cdf(x)[1]
            y = x * cdf
        return y, (x, y, cdf, slope)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        x, _, cdf, slope = cache
        check_like(dy, x.shape)
        if not need_dx:
            return None, {}
        if slope is not None and dy.dtype == x.dtype:
            return dy * slope, {}
        if self.approximate == "none" and dy.dtype == x.dtype:
            from ..kernels.gelu import gelu_backward

            return gelu_backward(x, cdf, dy), {}
        return dy * self._df_from(x, cdf), {}

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class SiLU(Activation):
    r"""Sigmoid-weighted linear unit, "Swish" with β = 1 (Elfwing, Uchibe & Doya 2018, §2.1, eq. 1;
    Ramachandran, Zoph & Le 2017, §4):

    .. math::
        f(x) = x\,σ(x), \qquad f'(x) = σ(x)\,\big(1 + x\,(1 - σ(x))\big).

    σ is computed from :math:`e = \exp(-|x|) \le 1` as :math:`1/(1+e)` for :math:`x \ge 0` and
    :math:`e/(1+e)` below, so nothing overflows and the left tail keeps its relative accuracy
    (``(1 + tanh(x/2))/2`` would cancel to 0 there); tails that underflow go quietly to 0, so
    large :math:`|x|` give ``f → max(x, 0)``, ``f' → [x > 0]`` without floating-point warnings.
    Cost: one ``exp`` per entry in each map.
    """

    @staticmethod
    def _sigmoid(x):
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e))

    def f(self, x):
        with np.errstate(under="ignore"):
            return x * self._sigmoid(x)

    def df(self, x, y):
        with np.errstate(under="ignore"):
            s = self._sigmoid(x)
            return s * (1 + x * (1 - s))



class ELU(Activation):
    r"""Exponential linear unit (Clevert, Unterthiner & Hochreiter 2016, eq. 15):

    .. math::
        f(x) = \begin{cases} x & x > 0 \\ α\,(e^{x} - 1) & x \le 0, \end{cases} \qquad
        f'(x) = \begin{cases} 1 & x > 0 \\ α\,e^{x} & x \le 0. \end{cases}

    ``expm1`` keeps :math:`e^x - 1` accurate near 0; the exponent is clipped at 0, so large
    positive inputs raise no overflow warning. :math:`f'` is computed from :math:`x`, not as
    :math:`y + α`, which would cancel in the left tail. Cost: one ``exp`` per entry in each map.
    """

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = check_float(alpha, "alpha")

    def f(self, x):
        neg = np.minimum(x, 0)
        return np.where(x > 0, x, x.dtype.type(self.alpha) * np.expm1(neg))

    def df(self, x, y):
        with np.errstate(under="ignore"):
            return np.where(x > 0, x.dtype.type(1), x.dtype.type(self.alpha) * np.exp(np.minimum(x, 0)))

    def extra_repr(self):
        return f"alpha={self.alpha}"


class Mish(Activation):
    r"""Mish (Misra 2019, eq. 1), :math:`f(x) = x \tanh(\operatorname{softplus}(x))`, with
    :math:`\operatorname{softplus}(x) = \log(1 + e^x)` and :math:`\tfrac{d}{dx}\operatorname{softplus}
    = σ(x)`:

    .. math::
        f'(x) = t + x\,(1 - t^2)\,σ(x), \qquad t = \tanh(\operatorname{softplus}(x)).

    Softplus is ``logaddexp(0, x)`` (no overflow; accurate in the left tail, where
    :math:`f(x) ≈ x e^x`). Cost: an ``exp``/``log`` pair and a ``tanh`` per entry, plus
    :func:`sigmoid` in the derivative.
    """

    @staticmethod
    def _t(x):
        with np.errstate(under="ignore"):
            return np.tanh(np.logaddexp(x.dtype.type(0), x))

    def f(self, x):
        return x * self._t(x)

    def df(self, x, y):
        t = self._t(x)
        with np.errstate(under="ignore"):
            return t + x * (1 - t * t) * sigmoid(x)


class Hardtanh(Activation):
    r""":math:`f(x) = \min(\max(x, a), b)` with :math:`a` = ``min_val`` < :math:`b` = ``max_val``;
    :math:`f'(x) = [a < x < b]` (0 at the two kinks, as in PyTorch)."""

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0):
        super().__init__()
        self.min_val = check_float(min_val, "min_val")
        self.max_val = check_float(max_val, "max_val")
        if not self.min_val < self.max_val:
            raise ValueError(f"min_val must be smaller than max_val, got min_val={min_val!r}, "
                             f"max_val={max_val!r}")

    def f(self, x):
        return np.clip(x, x.dtype.type(self.min_val), x.dtype.type(self.max_val))

    def df(self, x, y):
        return ((x > self.min_val) & (x < self.max_val)).astype(x.dtype)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}"


def sigmoid(x):
    r"""The logistic function :math:`σ(x) = 1/(1 + e^{-x})`, entrywise, accurate to a few ulps over
    the whole range in float32 and float64 (tested against a 50-digit evaluation for |x| ≤ 700).

    With :math:`e = \exp(-|x|) \in (0, 1]` (which cannot overflow),

    .. math::
        σ(x) = \frac{\max(e, [x \ge 0])}{1 + e}
             = \begin{cases} 1/(1 + e) & x \ge 0 \\ e/(1 + e) & x < 0, \end{cases}

    so the left tail keeps its relative accuracy down to the dtype's subnormals instead of
    cancelling as :math:`\tfrac12(1 + \tanh(x/2))` does (0 below −20 in float32, −38 in float64).
    Tails below the dtype's range go quietly to 0, without floating-point warnings; NaN stays NaN.
    Shapes: any; the result has ``x``'s dtype (float64 for integers and Python numbers, returned
    as a scalar). Cost: one ``exp``, one ``max`` and one division per entry (the ``max`` selects
    without a branchy ``np.where``).
    """
    a = np.asarray(x)
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    with np.errstate(under="ignore"):
        e = np.exp(-np.abs(a))
        y = np.maximum(e, a >= 0) / (1 + e)
    return y if isinstance(x, np.ndarray) else y[()]


ACTIVATIONS = {
    "identity": Identity, "relu": ReLU, "leaky_relu": LeakyReLU, "gelu": GELU, "tanh": Tanh,
    "sigmoid": Sigmoid, "softsign": Softsign, "softplus": Softplus, "silu": SiLU, "elu": ELU,
    "mish": Mish, "hardtanh": Hardtanh,
}


def get_activation(name_or_module) -> Activation:
    """An activation module from its name (``"relu"``, ``"tanh"``, …) or a module passed through."""
    if isinstance(name_or_module, Module):
        return name_or_module
    try:
        return ACTIVATIONS[name_or_module]()
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name_or_module!r}; choose from "
                         f"{sorted(ACTIVATIONS)}") from None
