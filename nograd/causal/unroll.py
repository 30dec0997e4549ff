r"""Unrolling: a stateful morphism as an ordinary module on sequences of a fixed length ``n``.

The ``n``-th unrolling of ``(i, f)`` is the composite of ``n`` copies of the step with the
initial state plugged in (Sprunger & Katsumata 2019, the unrolling that defines their abstract
BPTT):

.. math::
    (x_0, \dots, x_{n-1}) \mapsto (y_0, \dots, y_{n-1}), \qquad
    s_0 = i,\ (s_{t+1}, y_t) = f(s_t, x_t).

Every copy shares the step's parameters, so a parameter's gradient is the sum over time.
``backward`` is backpropagation through time; ``jvp`` is the forward-mode chain rule through the
``n`` copies (tangent state starts at 0 because ``i`` is a constant).

>>> import numpy as np
>>> from nograd.causal import delay
>>> net = delay([7.0]).unroll(3)
>>> net(np.array([[[1.0], [2.0], [3.0]]]))[0, :, 0]
array([7., 1., 2.])
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_int, check_like
from .stateful import _Delegate


class Unrolled(_Delegate):
    """``n`` chained copies of a stateful morphism's step; input ``(batch, n, n_in)``."""

    def __init__(self, f, n: int):
        super().__init__()
        self.f, self.n = f, check_int(n, "n", low=1)      # the sequence length
        self._children["step"] = f.step

    def _check(self, xs):
        self.f._check_seq(xs)
        if xs.shape[1] != self.n:
            raise ValueError(f"xs must have {self.n} time steps, got shape {xs.shape}")

    def forward(self, x, *, train=False, rng=None, params=None):
        self._check(x)
        f, batch = self.f, x.shape[0]
        s = f.initial_state(batch, x.dtype)
        ys = np.empty((batch, self.n, f.n_out), dtype=x.dtype)
        caches = []
        for t in range(self.n):
            out, c = f.step.forward(np.concatenate([s, x[:, t]], 1), train=train, rng=rng,
                                    params=params)
            s, ys[:, t] = f._split_out(out, batch)
            caches.append(c)
        return ys, (caches, x.shape)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        caches, shape = cache
        f = self.f
        check_like(dy, shape[:2] + (f.n_out,))
        dxs = np.empty(shape, dtype=dy.dtype)
        ds = np.zeros((shape[0], f.n_state), dtype=dy.dtype)
        grads = {}
        for t in range(self.n - 1, -1, -1):
            dz, g = f.step.backward(caches[t], np.concatenate([ds, dy[:, t]], 1), params=params,
                                    need_dx=need_dx or f.n_state > 0)
            for k, v in g.items():
                grads[k] = v if k not in grads else grads[k] + v
            if dz is not None:
                ds, dxs[:, t] = dz[:, :f.n_state], dz[:, f.n_state:]
        return (dxs if need_dx else None), grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        self._check(x)
        f, batch = self.f, x.shape[0]
        dx = np.zeros_like(x) if dx is None else check_like(dx, x.shape, "dx")
        s = f.initial_state(batch, x.dtype)
        ds = np.zeros_like(s)
        ys = np.empty((batch, self.n, f.n_out), dtype=x.dtype)
        dys = np.empty_like(ys)
        for t in range(self.n):
            out, dout = f.step.jvp(np.concatenate([s, x[:, t]], 1),
                                   np.concatenate([ds, dx[:, t]], 1), dparams, train=train,
                                   rng=rng, params=params)
            s, ys[:, t] = f._split_out(out, batch)
            ds, dys[:, t] = dout[:, :f.n_state], dout[:, f.n_state:]
        return ys, dys

    def extra_repr(self):
        return f"n={self.n}, {self.f.extra_repr()}"
