r"""Parametric ReLU: a rectifier whose negative slope is learned, one per channel or one in all."""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_dtype, check_float, check_int, check_like
from ..core.module import Module


class PReLU(Module):
    r"""Parametric rectified linear unit (He, Zhang, Ren & Sun 2015, §2.1, eq. 1), PyTorch's layout.

    With the slope :math:`a_c` of channel :math:`c` (axis 1 of ``x``), or one shared slope:

    .. math::
        y = \max(x, 0) + a_c \min(x, 0); \qquad
        \bar x = \bar y \odot \begin{cases} 1 & x > 0 \\ a_c & x \le 0 \end{cases}, \quad
        \bar a_c = \sum_{\text{all axes but } 1} \bar y \odot \min(x, 0), \qquad
        \dot y = \dot x \odot [x > 0 \,?\, 1 : a_c] + \dot a_c \min(x, 0).

    Shapes: ``x (N, C, *) -> y`` of the same shape and dtype, ``weight (num_parameters,)`` with
    ``num_parameters`` 1 (any ``x``) or ``C`` (``x`` at least 2-D with ``C`` entries in axis 1).
    ``init`` is every slope's initial value (PyTorch's 0.25). Declares ``elementwise`` (each
    :math:`y_i` depends on :math:`x_i` alone) with no fixed derivative (``df`` is ``None``): the
    slope is trained, so rules that need a fixed activation refuse it. Cost: a few elementwise
    passes and one reduction per map.
    """

    elementwise = True

    def __init__(self, num_parameters: int = 1, init: float = 0.25, *, dtype=np.float32):
        super().__init__()
        self.num_parameters = check_int(num_parameters, "num_parameters", low=1)
        init = check_float(init, "init")
        self._own["weight"] = np.full(self.num_parameters, init, dtype=check_dtype(dtype))

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"

    def _slope(self, w, x):
        """The slope broadcastable against ``x``, in ``x``'s dtype."""
        w = w.astype(x.dtype, copy=False)
        n = self.num_parameters
        if n == 1:
            return w.reshape((1,) * x.ndim)
        if x.ndim < 2 or x.shape[1] != n:
            raise ValueError(f"x must have {n} channels in axis 1 (one per slope of PReLU), "
                             f"got shape {x.shape}")
        return w.reshape((1, n) + (1,) * (x.ndim - 2))

    def _axes(self, ndim):
        return None if self.num_parameters == 1 else (0,) + tuple(range(2, ndim))

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x")
        p = self._use(params)
        a = self._slope(p["weight"], x)
        return np.where(x > 0, x, a * x), x

    def backward(self, cache, dy, *, params=None, need_dx=True):
        x = cache
        check_like(dy, x.shape)
        p = self._use(params)
        W = p["weight"]
        dw = (dy * np.minimum(x, 0)).sum(axis=self._axes(x.ndim))
        grads = {"weight": np.reshape(dw, W.shape).astype(W.dtype, copy=False)}
        dx = dy * np.where(x > 0, dy.dtype.type(1), self._slope(W, dy)) if need_dx else None
        return dx, grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, _ = self.forward(x, params=params)
        dparams = self._tangents(dparams) or {}
        dy = np.zeros_like(y)
        if dx is not None:
            check_like(dx, x.shape, "dx")
            dy += dx * np.where(x > 0, x.dtype.type(1), self._slope(self._use(params)["weight"], x))
        if "weight" in dparams:
            dy += self._slope(dparams["weight"], x) * np.minimum(x, 0)
        return y, dy
