r"""Small stateless pieces that gated cells need and :mod:`nograd.layers` does not have.

* :class:`Hadamard` — ``[a, b] ↦ a ⊙ b`` on two blocks of ``n`` columns (LSTM gates);
* :class:`Add` — ``[a, b] ↦ a + b``;
* :class:`Map` — a parameter-free function with its hand-written maps, as a module.

Each states forward, backward, jvp and the second-order :meth:`jet2`.

.. math::
    y = a \odot b:\quad \bar a = \bar y \odot b,\ \bar b = \bar y \odot a,\quad
    \dot y = \dot a \odot b + a \odot \dot b,\quad
    \partial^2 y[u, v] = u_a \odot v_b + v_a \odot u_b.

>>> import numpy as np
>>> z = np.array([[1.0, 2.0, 3.0, 4.0]])
>>> Hadamard(2)(z), Add(2)(z)
(array([[3., 8.]]), array([[4., 6.]]))
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_int, check_like
from ..core.module import Module


class _Pairwise(Module):
    """Base of the two-block maps: input ``(batch, 2n)``, output ``(batch, n)``."""

    def __init__(self, n: int):
        super().__init__()
        self.n = check_int(n, "n", low=1)

    def _halves(self, z, name="x"):
        check_array(z, name, ndim=2)
        if z.shape[1] != 2 * self.n:
            raise ValueError(f"{name} must have {2 * self.n} columns, got shape {z.shape}")
        return z[:, :self.n], z[:, self.n:]

    def extra_repr(self):
        return str(self.n)


class Hadamard(_Pairwise):
    """Entrywise product of the two halves: ``(batch, 2n) -> (batch, n)``."""

    def forward(self, x, *, train=False, rng=None, params=None):
        self._use(params)
        a, b = self._halves(x)
        return a * b, x

    def backward(self, cache, dy, *, params=None, need_dx=True):
        a, b = cache[:, :self.n], cache[:, self.n:]
        check_like(dy, a.shape)
        return (np.concatenate([dy * b, dy * a], 1) if need_dx else None), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        a, b = self._halves(x)
        self._tangents(dparams)
        if dx is None:
            return a * b, np.zeros_like(a)
        da, db = self._halves(check_like(dx, x.shape, "dx"), "dx")
        return a * b, da * b + a * db

    def jet2(self, x, u, v, *, pa=None, pb=None, params=None):
        a, b = self._halves(x)
        ua, ub = u[:, :self.n], u[:, self.n:]
        va, vb = v[:, :self.n], v[:, self.n:]
        return a * b, ua * b + a * ub, va * b + a * vb, ua * vb + va * ub


class Add(_Pairwise):
    """Sum of the two halves: ``(batch, 2n) -> (batch, n)``; linear, so its jvp is itself."""

    def forward(self, x, *, train=False, rng=None, params=None):
        self._use(params)
        a, b = self._halves(x)
        return a + b, x.shape

    def backward(self, cache, dy, *, params=None, need_dx=True):
        check_like(dy, (cache[0], self.n))
        return (np.concatenate([dy, dy], 1) if need_dx else None), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        a, b = self._halves(x)
        self._tangents(dparams)
        if dx is None:
            return a + b, np.zeros_like(a)
        da, db = self._halves(check_like(dx, x.shape, "dx"), "dx")
        return a + b, da + db

    def jet2(self, x, u, v, *, pa=None, pb=None, params=None):
        a, b = self._halves(x)
        n = self.n
        return a + b, u[:, :n] + u[:, n:], v[:, :n] + v[:, n:], np.zeros_like(a)


class Map(Module):
    """A parameter-free function ``f(z)`` with its maps ``jvp(z, dz)`` and ``vjp(z, dy)``.

    Lets a step map be given as plain functions (``Stateful(init, f, n_in, n_out, jvp=, vjp=)``).
    A map left out raises ``TypeError`` when it is needed.
    """

    def __init__(self, f, *, jvp=None, vjp=None):
        super().__init__()
        if not callable(f):
            raise TypeError(f"f must be callable, got {type(f).__name__}")
        self.f, self._jvp, self._vjp = f, jvp, vjp

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x", ndim=2, nonempty=False)
        self._use(params)
        return np.asarray(self.f(x)), x

    def backward(self, cache, dy, *, params=None, need_dx=True):
        if self._vjp is None:
            raise TypeError("this step was given without vjp=, so reverse mode (BPTT) is "
                            "unavailable")
        return np.asarray(self._vjp(cache, dy)), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        if self._jvp is None:
            raise TypeError("this step was given without jvp=, so forward mode (D) is unavailable")
        y = self.forward(x)[0]
        return y, (np.zeros_like(y) if dx is None else np.asarray(self._jvp(x, dx)))

    def extra_repr(self):
        return getattr(self.f, "__name__", "f")
