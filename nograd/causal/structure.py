r"""The structure of St(C): composition, monoidal product, symmetry, delay and the delayed trace.

Objects are wire widths; ``X ⊗ Y`` concatenates columns. Every constructor returns a
:class:`~nograd.causal.Stateful` whose step is a wiring of the given steps, and whose state is the
concatenation of the parts' states (Sprunger & Katsumata 2019, the definition of St(C)):

.. math::
    (i, f) \gg (j, g) &= ((i, j),\ (s, t, x) \mapsto \text{let } (s', h) = f(s, x),\
        (t', y) = g(t, h) \text{ in } (s', t', y)) \\
    (i, f) \otimes (j, g) &= ((i, j),\ (s, t, x, x') \mapsto (s', t', y, y')) \\
    \mathrm{dtr}^{x_0}(i, f) &= ((x_0, i),\ (r, s, x) \mapsto \text{let } (s', r', y) = f(s, (r, x))
        \text{ in } (r', s', y))

The delayed trace feeds the first ``k`` output wires back to the first ``k`` input wires through a
register initialised with ``x0``: at time ``t`` the fed-back value is the one produced at
``t - 1``. Because of that register it is *not* a trace: yanking gives the delay, not the
identity, and dinaturality fails. Every stateful morphism is the delayed trace of its stateless
step (:func:`as_delayed_trace`).

The laws hold up to hiding the state, i.e. as behaviours on sequences (``equivalent``):

>>> import numpy as np
>>> from nograd.causal import delay, delayed_trace, equivalent, identity, swap
>>> yank = delayed_trace(swap(1, 1), [5.0])        # feed the swapped wire back: a register
>>> yank(np.array([[[1.0], [2.0], [3.0]]]))[0, :, 0]
array([5., 1., 2.])
>>> equivalent(yank, delay([5.0])), equivalent(yank, identity(1))
(True, False)
>>> f = delay([1.0]) @ identity(2)
>>> equivalent(swap(1, 2) >> swap(2, 1), identity(3))
True
>>> equivalent(f >> swap(1, 2), swap(1, 2) >> (identity(2) @ delay([1.0])))   # naturality of σ
True
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_int
from ..core.module import Module
from .stateful import Stateful
from .wiring import Wiring


def _check(f, name):
    if not isinstance(f, Stateful):
        raise TypeError(f"{name} must be a Stateful morphism, got {type(f).__name__} "
                        f"(wrap a stateless module with pure(module, n_in, n_out))")


def _width(n, name):
    return check_int(n, name, low=0)      # a wire width


def _blocks(*widths):
    """Column index ranges of consecutive blocks of the given widths."""
    out, start = [], 0
    for w in widths:
        out.append(np.arange(start, start + w))
        start += w
    return out


def pure(module: Module, n_in: int, n_out: int) -> Stateful:
    """A stateless module as a stateful morphism (empty state): the inclusion C → St(C)."""
    return Stateful(np.zeros(0), module, n_in, n_out)


def identity(n: int) -> Stateful:
    """The identity on an ``n``-wide wire."""
    return pure(Wiring(_width(n, "n")), n, n)


def select(n_in: int, idx) -> Stateful:
    """Stateless rewiring: output wire ``j`` is input wire ``idx[j]`` (copy, discard, permute)."""
    w = Wiring(_width(n_in, "n_in")).gather(idx)
    return pure(w, n_in, w.n_out)


def swap(m: int, n: int) -> Stateful:
    """The symmetry ``σ: X ⊗ Y → Y ⊗ X`` for widths ``m`` and ``n``."""
    x, y = _blocks(_width(m, "m"), _width(n, "n"))
    return select(m + n, np.concatenate([y, x]))


def copy(n: int) -> Stateful:
    """The diagonal ``X → X ⊗ X`` of the Cartesian structure."""
    return select(n, np.tile(np.arange(_width(n, "n")), 2))


def discard(n: int) -> Stateful:
    """The map ``X → I`` to the unit (no output wires)."""
    return select(_width(n, "n"), [])


def compose(f: Stateful, g: Stateful) -> Stateful:
    """``f >> g``: run ``f``, feed its output to ``g``; state ``(s_f, s_g)``."""
    _check(f, "f")
    _check(g, "g")
    if f.n_out != g.n_in:
        raise ValueError(f"cannot compose: f gives {f.n_out} wires, g takes {g.n_in}")
    sf, sg, x = _blocks(f.n_state, g.n_state, f.n_in)
    w = Wiring(f.n_state + g.n_state + f.n_in).gather(np.concatenate([sg, sf, x]))
    w = w.apply(f.step, g.n_state, f.n_state + f.n_in, f.n_state + f.n_out)   # [sg, sf', h]
    sg, sf, h = _blocks(g.n_state, f.n_state, f.n_out)
    w = w.gather(np.concatenate([sf, sg, h]))
    w = w.apply(g.step, f.n_state, g.n_state + g.n_in, g.n_state + g.n_out)  # [sf', sg', y]
    return Stateful(np.concatenate([f.init, g.init]), w.simplified(), f.n_in, g.n_out)


def product(f: Stateful, g: Stateful) -> Stateful:
    """``f @ g``: ``f`` on the first ``f.n_in`` wires, ``g`` on the rest; state ``(s_f, s_g)``."""
    _check(f, "f")
    _check(g, "g")
    sf, sg, x1, x2 = _blocks(f.n_state, g.n_state, f.n_in, g.n_in)
    w = Wiring(f.n_state + g.n_state + f.n_in + g.n_in).gather(np.concatenate([sf, x1, sg, x2]))
    w = w.apply(f.step, 0, f.n_state + f.n_in, f.n_state + f.n_out)
    w = w.apply(g.step, f.n_state + f.n_out, g.n_state + g.n_in, g.n_state + g.n_out)
    sf, y1, sg, y2 = _blocks(f.n_state, f.n_out, g.n_state, g.n_out)
    w = w.gather(np.concatenate([sf, sg, y1, y2]))
    return Stateful(np.concatenate([f.init, g.init]), w.simplified(), f.n_in + g.n_in,
                    f.n_out + g.n_out)


def delay(x0) -> Stateful:
    """The one-step register on a ``len(x0)``-wide wire: ``y_0 = x0``, ``y_t = x_{t-1}``.

    Its state is the register; its step swaps state and input.
    """
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
    k = x0.shape[0]
    s, x = _blocks(k, k)
    return Stateful(x0, Wiring(2 * k).gather(np.concatenate([x, s])), k, k)


def delayed_trace(f: Stateful, x0) -> Stateful:
    """Feed ``f``'s first ``len(x0)`` output wires back to its first input wires, delayed.

    ``f: S ⊗ X → S ⊗ Y`` (``S`` the ``k = len(x0)`` fed-back wires, listed first) gives
    ``dtr^{x0}(f): X → Y``; the register starts at ``x0``. State: ``(register, f's state)``.
    """
    _check(f, "f")
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
    k = x0.shape[0]
    if k > min(f.n_in, f.n_out):
        raise ValueError(f"cannot feed back {k} wires: f has {f.n_in} inputs and "
                         f"{f.n_out} outputs")
    r, sf, x = _blocks(k, f.n_state, f.n_in - k)
    w = Wiring(k + f.n_state + f.n_in - k).gather(np.concatenate([sf, r, x]))
    w = w.apply(f.step, 0, f.n_state + f.n_in, f.n_state + f.n_out)           # [sf', r', y]
    sf, r, y = _blocks(f.n_state, k, f.n_out - k)
    w = w.gather(np.concatenate([r, sf, y]))
    return Stateful(np.concatenate([x0, f.init]), w.simplified(), f.n_in - k, f.n_out - k)


def as_delayed_trace(f: Stateful):
    """Any stateful morphism as the delayed trace of a stateless one.

    Returns ``(g, x0)`` with ``g = pure(f.step)`` (stateless, ``S ⊗ X → S ⊗ Y``) and
    ``x0 = f.init``, so that ``delayed_trace(g, x0)`` behaves as ``f`` — its step is ``f``'s own.

    >>> from nograd.causal import delay, equivalent
    >>> g, x0 = as_delayed_trace(delay([2.0]) >> delay([3.0]))
    >>> g.n_state, x0.tolist(), equivalent(delayed_trace(g, x0), delay([2.0]) >> delay([3.0]))
    (0, [2.0, 3.0], True)
    """
    _check(f, "f")
    return pure(f.step, f.n_state + f.n_in, f.n_state + f.n_out), f.init.copy()
