r"""Stateful morphisms: the arrows of St(C) (Sprunger & Katsumata, LICS 2019).

A stateful morphism ``X → Y`` is a pair ``(i, f)`` of an initial state :math:`i \in S` (a map
:math:`1 \to S`) and a step map :math:`f : S \times X \to S \times Y` of C. On a sequence it is
a Mealy machine,

.. math::
    s_0 = i, \qquad (s_{t+1}, y_t) = f(s_t, x_t),

so :math:`y_t` depends on :math:`x_0, \dots, x_t` only: it is *causal*. Here C is nograd's modules
and the step is a :class:`~nograd.core.Module` on ``(batch, S + n_in) → (batch, S + n_out)``
blocks, state columns first. Sequences are ``(batch, T, features)``.

A :class:`Stateful` is itself a module on sequences: ``forward`` unrolls the step over the
sequence (:meth:`Stateful.unroll`), ``backward`` is backpropagation through time on that unrolled
network, and ``jvp`` is forward mode *through time without unrolling*: it runs the stateful
morphism ``D(f)`` (see :mod:`nograd.causal.differential`), whose state carries the tangent.

>>> import numpy as np
>>> from nograd.layers import Linear
>>> acc = Stateful([0.0], Linear(2, 2, bias=False, dtype=np.float64), n_in=1, n_out=1)
>>> acc.step.params["weight"][:] = [[1, 1], [1, 1]]     # s' = s + x,  y = s + x
>>> acc.run(np.array([[[1.0], [2.0], [3.0]]]))[0, :, 0]  # running sum
array([1., 3., 6.])
"""
from __future__ import annotations

import numpy as np

from ..core.checks import NonFiniteError, check_array, check_int, check_like
from ..core.module import Module
from .ops import Map


class _Delegate(Module):
    """A module whose parameters are exactly those of its single child ``"step"``, unprefixed."""

    @property
    def params(self):
        return self._children["step"].params

    @property
    def buffers(self):
        return self._children["step"].buffers

    @property
    def step(self) -> Module:
        """The step map ``S × X → S × Y`` (a module on state-first column blocks)."""
        return self._children["step"]


class Stateful(_Delegate):
    """A morphism of St(C): initial state ``init`` and step map ``step: S × X → S × Y``.

    Parameters
    ----------
    init : 1-D array, the initial state :math:`i` (``S = len(init)`` columns; empty for none).
    step : a nograd Module mapping ``(batch, S + n_in)`` to ``(batch, S + n_out)``, state
        columns first; or a function ``f(z)`` together with ``jvp=(z, dz) -> dy`` and
        ``vjp=(z, dy) -> dz``.
    n_in, n_out : widths of the input and output wires.

    ``f >> g`` composes (first ``f``, then ``g``), ``f @ g`` runs them side by side on
    concatenated wires; see :mod:`nograd.causal.structure` for identities, symmetry, delay and
    the delayed trace. The parameters are the step's, under the step's names.
    """

    def __init__(self, init, step, n_in: int, n_out: int, *, jvp=None, vjp=None):
        super().__init__()
        init = np.array(init, dtype=np.float64 if np.asarray(init).dtype.kind in "biu" else None)
        if init.ndim != 1 or init.dtype.kind != "f":
            raise ValueError(f"init must be a 1-D float array (the initial state), got "
                             f"shape {init.shape}, dtype {init.dtype}")
        if not np.isfinite(init).all():
            raise NonFiniteError("init contains NaN or inf")
        check_int(n_in, "n_in", low=0)
        check_int(n_out, "n_out", low=0)
        if not isinstance(step, Module):
            if not callable(step):
                raise TypeError(f"step must be a nograd Module or a function, got "
                                f"{type(step).__name__}")
            step = Map(step, jvp=jvp, vjp=vjp)
        elif jvp is not None or vjp is not None:
            raise TypeError("jvp=/vjp= are for a step given as a function; a Module has its maps")
        self.init = init
        self.n_state, self.n_in, self.n_out = init.shape[0], int(n_in), int(n_out)
        self._children["step"] = step

    # ------------------------------------------------------------------ running
    def initial_state(self, batch: int, dtype=np.float64) -> np.ndarray:
        """The initial state broadcast over a batch: ``(batch, S)``."""
        return np.broadcast_to(self.init.astype(dtype), (batch, self.n_state)).copy()

    def _check_seq(self, xs, name="xs"):
        check_array(xs, name, ndim=3, nonempty=False)
        if xs.shape[0] == 0 or xs.shape[1] == 0:
            raise ValueError(f"{name} must hold at least one sequence of at least one step, "
                             f"got shape {xs.shape}")
        if xs.shape[2] != self.n_in:
            raise ValueError(f"{name} must be (batch, time, {self.n_in}), got shape {xs.shape}")
        return xs

    def _split_out(self, out, batch):
        if out.shape != (batch, self.n_state + self.n_out):
            raise ValueError(f"the step map must return (batch, {self.n_state} + {self.n_out}) "
                             f"= {(batch, self.n_state + self.n_out)}, returned {out.shape}")
        return out[:, :self.n_state], out[:, self.n_state:]

    def run(self, xs, *, state=None, params=None, train=False, rng=None, return_state=False):
        """Outputs ``(batch, T, n_out)`` of the machine on ``xs (batch, T, n_in)``.

        ``state`` (``(batch, S)``) replaces the initial state; with ``return_state=True`` the
        final state is returned too (so a long stream can be fed in pieces).
        """
        self._check_seq(xs)
        batch, steps, _ = xs.shape
        if state is None:
            s = self.initial_state(batch, xs.dtype)
        else:
            s = check_like(state, (batch, self.n_state), "state")
        ys = np.empty((batch, steps, self.n_out), dtype=xs.dtype)
        for t in range(steps):
            out = self.step.forward(np.concatenate([s, xs[:, t]], 1), train=train, rng=rng,
                                    params=params)[0]
            s, ys[:, t] = self._split_out(out, batch)
        return (ys, s) if return_state else ys

    def __call__(self, xs, **kwargs):
        return self.run(xs, **kwargs)

    # ------------------------------------------------------------------ the three maps
    def unroll(self, n: int):
        """The ordinary module on length-``n`` sequences: ``n`` copies of the step, chained."""
        from .unroll import Unrolled

        return Unrolled(self, n)

    def forward(self, xs, *, train=False, rng=None, params=None):
        """The unrolled network's forward pass; the cache keeps what BPTT needs."""
        self._check_seq(xs)
        net = self.unroll(xs.shape[1])
        ys, cache = net.forward(xs, train=train, rng=rng, params=params)
        return ys, (net, cache)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        """Backpropagation through time: the unrolled network's backward pass."""
        net, c = cache
        return net.backward(c, dy, params=params, need_dx=need_dx)

    def jvp(self, xs, dxs, dparams=None, *, train=False, rng=None, params=None):
        """Forward mode without unrolling: run ``D(f)`` on ``[xs, dxs]``, state ``(i, 0)``."""
        from .differential import D

        self._check_seq(xs)
        dxs = np.zeros_like(xs) if dxs is None else check_like(dxs, xs.shape, "dxs")
        out = D(self, dparams).run(np.concatenate([xs, dxs], 2), params=params, train=train,
                                   rng=rng)
        return out[..., :self.n_out], out[..., self.n_out:]

    # ------------------------------------------------------------------ structure
    def __rshift__(self, other):
        from .structure import compose

        return compose(self, other)

    def __matmul__(self, other):
        from .structure import product

        return product(self, other)

    def extra_repr(self):
        return f"n_in={self.n_in}, n_out={self.n_out}, n_state={self.n_state}"
