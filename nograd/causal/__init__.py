r"""St(C): causal stateful computations over nograd modules, the delayed trace and its derivative.

After Sprunger & Katsumata, "Differentiable Causal Computations via Delayed Trace" (LICS 2019).
C is nograd's modules (each with a hand-written jvp and backward); a morphism of St(C) is a
:class:`Stateful` pair (initial state, step map ``S × X → S × Y``) — a machine that turns input
sequences into output sequences, output ``t`` depending on inputs ``≤ t`` only.

* ``Stateful(init, step, n_in, n_out)`` — a morphism; ``run(xs)``, ``unroll(n)``,
  ``forward``/``backward`` (BPTT on the unrolled network), ``jvp`` (through ``D``);
* ``f >> g``, ``f @ g`` — composition and monoidal product (wires concatenate);
* ``identity``, ``swap``, ``copy``, ``discard``, ``select``, ``pure`` — structure, C ↪ St(C);
* ``delay(x0)`` — the one-step register;
* ``delayed_trace(f, x0)`` — feedback through a register; ``as_delayed_trace`` inverts it;
* ``D(f)`` — the differential operator: forward mode through time; ``jet2`` — second order;
* ``equivalent``, ``behaviour_gap`` — equality up to hiding the state, on behaviour;
* ``elman``, ``lstm`` — recurrent networks as delayed traces of stateless cells.

The laws, executable (they hold up to hiding the state):

>>> import numpy as np
>>> from nograd.layers import Linear, Tanh
>>> from nograd.core import Sequential
>>> def machine(seed, s=2):   # a random stateful morphism 1 → 1 with s state wires
...     net = Sequential(Linear(s + 1, 4, rng=seed, dtype=np.float64), Tanh(),
...                      Linear(4, s + 1, rng=seed + 1, dtype=np.float64))
...     return Stateful(np.full(s, 0.1 * seed), net, 1, 1)
>>> f, g, h = machine(1), machine(2), machine(3)
>>> equivalent((f >> g) >> h, f >> (g >> h))                          # associativity
True
>>> equivalent(identity(1) >> f, f) and equivalent(f >> identity(1), f)  # units
True
>>> equivalent((f @ g) >> (h @ f), (f >> h) @ (g >> f))              # interchange
True
>>> equivalent(delayed_trace(swap(1, 1), [0.0]), identity(1))          # yanking fails ...
False
>>> equivalent(delayed_trace(swap(1, 1), [0.0]), delay([0.0]))         # ... it gives the delay
True
>>> k, x0 = as_delayed_trace(f)                    # every f is the dtr of a stateless map
>>> equivalent(delayed_trace(k, x0), f)
True

Forward mode through time equals the jvp of the unrolled network; reverse mode is BPTT:

>>> xs, dxs = np.random.default_rng(0).normal(size=(2, 3, 5, 1))
>>> out = D(f).run(np.concatenate([xs, dxs], 2))
>>> ys, dys = f.unroll(5).jvp(xs, dxs)
>>> bool(np.allclose(out[..., 1:], dys))
True
>>> from nograd.testing import check_adjoint
>>> check_adjoint(f, xs) < 1e-10                                      # <BPTT(v), u> = <v, D(f)u>
True
"""
from .cells import elman, elman_cell, lstm, lstm_cell
from .differential import D, Tangent
from .equivalence import behaviour_gap, equivalent
from .ops import Add, Hadamard, Map
from .second import jet2
from .stateful import Stateful
from .structure import (as_delayed_trace, compose, copy, delay, delayed_trace, discard, identity,
                        product, pure, select, swap)
from .unroll import Unrolled
from .wiring import Wiring

__all__ = ["Stateful", "Unrolled", "Wiring", "Tangent", "D", "jet2", "pure", "identity", "select",
           "swap", "copy", "discard", "compose", "product", "delay", "delayed_trace",
           "as_delayed_trace", "equivalent", "behaviour_gap", "elman", "elman_cell", "lstm",
           "lstm_cell", "Hadamard", "Add", "Map"]
