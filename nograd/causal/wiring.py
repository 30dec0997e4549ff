r"""Wiring: a stateless map built from column gathers and child modules applied to column blocks.

Every value in :mod:`nograd.causal` is a batch of feature vectors ``(batch, width)``; a tensor
product of objects is a concatenation of columns (``X ⊗ Y`` has ``width(X) + width(Y)`` columns,
the unit object has none). A :class:`Wiring` runs a list of stages on such a block:

* ``gather(idx)`` — ``y = z[:, idx]``: permutations (the symmetry), duplications (copy) and
  omissions (discard) of wires, i.e. the Cartesian structure of C;
* ``apply(m, start, k_in, k_out)`` — the whiskering ``id ⊗ m ⊗ id``: module ``m`` replaces the
  ``k_in`` columns from ``start`` by its ``k_out`` output columns.

Composition, monoidal product and delayed trace in St(C) produce their step maps as wirings of the
factors' step maps (see :mod:`nograd.causal.structure`). Nested wirings are flattened into one
stage list, so the children are numbered ``"0"``, ``"1"``, … in the order they run and parameter
names read like :class:`~nograd.core.Sequential`'s.

Backward is the chain rule over the stages in reverse (a gather's transpose scatters and adds,
so a copied wire receives the sum of its cotangents); jvp runs it forward; :meth:`Wiring.jet2`
carries second-order tangents for :func:`~nograd.causal.second.jet2`.

>>> import numpy as np
>>> from nograd.layers import Tanh
>>> w = Wiring(3).gather([2, 0, 0]).apply(Tanh(), 1, 2, 2)   # [x2, tanh x0, tanh x0]
>>> z = np.array([[0.5, 1.0, -2.0]])
>>> bool(np.allclose(w(z), [[-2.0, np.tanh(0.5), np.tanh(0.5)]]))
True
>>> dz, _ = w.backward(w.forward(z)[1], np.ones((1, 3)))      # the copy adds cotangents
>>> bool(np.allclose(dz, [[2 * (1 - np.tanh(0.5) ** 2), 0.0, 1.0]]))
True
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_int, check_like
from ..core.module import Module
from .second import jet2


class Wiring(Module):
    """A stateless map on ``(batch, n_in)`` blocks: gathers and whiskered child modules.

    Build it with :meth:`gather` and :meth:`apply`, which return new wirings (the receiver is
    left unchanged). ``Wiring(n)`` alone is the identity on ``n`` columns.
    """

    def __init__(self, n_in: int):
        super().__init__()
        self.n_in = self.n_out = check_int(n_in, "n_in", low=0)
        self._stages: list[tuple] = []

    # ------------------------------------------------------------------ building
    def _extended(self, stage, child=None):
        w = Wiring(self.n_in)
        w._stages = list(self._stages)
        w._children = dict(self._children)
        if child is not None:
            name = str(len(w._children))
            w._children[name] = child
            stage = stage[:1] + (name,) + stage[1:]
        w._stages.append(stage)
        w.n_out = stage[-1]
        return w

    def gather(self, idx) -> "Wiring":
        """Output column ``j`` is current column ``idx[j]`` (repeats copy, omissions discard)."""
        idx = np.asarray(idx, dtype=np.intp).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_out):
            raise ValueError(f"gather indices must lie in [0, {self.n_out}), got {idx.tolist()}")
        if idx.size == self.n_out and np.array_equal(idx, np.arange(self.n_out)):
            return self
        perm = idx.size == self.n_out and np.unique(idx).size == idx.size
        return self._extended(("gather", idx, self.n_out, perm, idx.size))

    def apply(self, module: Module, start: int, k_in: int, k_out: int) -> "Wiring":
        """Replace columns ``[start, start + k_in)`` by ``module``'s ``k_out`` output columns."""
        if not isinstance(module, Module):
            raise TypeError(f"module must be a nograd Module, got {type(module).__name__}")
        if start < 0 or k_in < 0 or k_out < 0 or start + k_in > self.n_out:
            raise ValueError(f"block [{start}, {start + k_in}) does not fit in "
                             f"{self.n_out} columns")
        if isinstance(module, Wiring):
            return self._inline(module, start, k_in, k_out)
        return self._extended(("apply", start, k_in, k_out, self.n_out - k_in + k_out), module)

    def _inline(self, inner: "Wiring", start, k_in, k_out):
        if inner.n_in != k_in or inner.n_out != k_out:
            raise ValueError(f"wiring maps {inner.n_in} to {inner.n_out} columns, the block "
                             f"has {k_in} in and {k_out} out")
        w, width = self, k_in
        for st in inner._stages:
            total = w.n_out
            if st[0] == "gather":
                idx = st[1]
                full = np.concatenate([np.arange(start), start + idx,
                                       np.arange(start + width, total)])
                w, width = w.gather(full), idx.size
            else:
                _, name, s, ki, ko, _ = st
                w, width = w.apply(inner._children[name], start + s, ki, ko), width - ki + ko
        return w

    def simplified(self) -> Module:
        """The single child itself when the wiring is just that child on every column."""
        if len(self._stages) == 1 and self._stages[0][0] == "apply":
            _, name, s, ki, ko, _ = self._stages[0]
            if s == 0 and ki == self.n_in and ko == self.n_out:
                return self._children[name]
        return self

    # ------------------------------------------------------------------ the three maps
    def _check_in(self, z, name="x"):
        check_array(z, name, ndim=2, nonempty=False)
        if z.shape[1] != self.n_in:
            raise ValueError(f"{name} must have {self.n_in} columns, got shape {z.shape}")

    def _child_out(self, name, y, ko):
        if y.ndim != 2 or y.shape[1] != ko:
            raise ValueError(f"child {name!r} ({type(self._children[name]).__name__}) must give "
                             f"{ko} columns, gave shape {y.shape}")
        return y

    def forward(self, x, *, train=False, rng=None, params=None):
        self._check_in(x)
        self._check_keys(params)
        z, caches = x, []
        for st in self._stages:
            if st[0] == "gather":
                z, c = z[:, st[1]], None
            else:
                _, name, s, ki, ko, _ = st
                mid, c = self._children[name].forward(z[:, s:s + ki], train=train, rng=rng,
                                                      params=self._split(params, name))
                z = np.concatenate([z[:, :s], self._child_out(name, mid, ko), z[:, s + ki:]], 1)
            caches.append(c)
        return (z.copy() if z is x else z), caches

    def backward(self, cache, dy, *, params=None, need_dx=True):
        check_like(dy, (dy.shape[0], self.n_out))
        grads = {}
        for st, c in zip(reversed(self._stages), reversed(cache)):
            if st[0] == "gather":
                _, idx, w_in, perm, _ = st
                dz = np.zeros((dy.shape[0], w_in), dtype=dy.dtype)
                if perm:
                    dz[:, idx] = dy
                else:
                    np.add.at(dz.T, idx, dy.T)
                dy = dz
            else:
                _, name, s, ki, ko, _ = st
                dmid, g = self._children[name].backward(c, np.ascontiguousarray(dy[:, s:s + ko]),
                                                        params=self._split(params, name))
                grads.update(self._prefixed(g, name))
                dy = np.concatenate([dy[:, :s], dmid, dy[:, s + ko:]], 1)
        return (dy if need_dx else None), {k: grads[k] for k in self.params if k in grads}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        self._check_in(x)
        self._check_keys(params)
        self._check_keys(dparams, "dparams")
        z = x
        dz = np.zeros_like(x) if dx is None else check_like(dx, x.shape, "dx")
        for st in self._stages:
            if st[0] == "gather":
                z, dz = z[:, st[1]], dz[:, st[1]]
            else:
                _, name, s, ki, ko, _ = st
                y, dy = self._children[name].jvp(z[:, s:s + ki], dz[:, s:s + ki],
                                                 self._split(dparams, name), train=train, rng=rng,
                                                 params=self._split(params, name))
                z = np.concatenate([z[:, :s], self._child_out(name, y, ko), z[:, s + ki:]], 1)
                dz = np.concatenate([dz[:, :s], dy, dz[:, s + ki:]], 1)
        return (z.copy() if z is x else z), dz

    def jet2(self, x, a, b, *, pa=None, pb=None, params=None):
        """Second-order forward mode: ``(y, J·a, J·b, ∂²[a, b])`` stage by stage."""
        self._check_in(x)
        vals = [x, a, b, np.zeros_like(x)]
        for st in self._stages:
            if st[0] == "gather":
                vals = [v[:, st[1]] for v in vals]
            else:
                _, name, s, ki, ko, _ = st
                child, sub = self._children[name], self._split(params, name)
                mids = [v[:, s:s + ki] for v in vals]
                y, ya, yb, yab = jet2(child, mids[0], mids[1], mids[2], pa=self._split(pa, name),
                                      pb=self._split(pb, name), params=sub)
                yab = yab + child.jvp(mids[0], mids[3], None, params=sub)[1]
                vals = [np.concatenate([v[:, :s], w, v[:, s + ki:]], 1)
                        for v, w in zip(vals, (y, ya, yb, yab))]
        return tuple(vals)

    def extra_repr(self):
        return f"{self.n_in} -> {self.n_out}, {len(self._stages)} stages"
