r"""Recurrent networks as delayed traces of stateless cells.

A recurrent network is a stateless cell :math:`c: H \otimes X \to H \otimes Y` with its hidden
wire fed back through a register initialised at :math:`h_0 = 0`,
:math:`\mathrm{dtr}^{h_0}(c)`. The cells are built from nograd layers with the structure of
St(C) (``>>``, ``@``, ``copy``, ``select``), so D, BPTT and the second derivative come for free.

Elman (1990): :math:`h_t = \tanh(W [h_{t-1}, x_t] + b)`, :math:`y_t = V h_t + c`.

LSTM (Hochreiter & Schmidhuber 1997, with a forget gate): state :math:`[h, c]`,

.. math::
    [z_i, z_f, z_o, z_g] = W [h, x] + b,\quad
    c' = σ(z_f) ⊙ c + σ(z_i) ⊙ \tanh z_g,\quad h' = σ(z_o) ⊙ \tanh c',\quad y = V h' + d.

>>> import numpy as np
>>> rnn = elman(2, 5, 1, rng=0, dtype=np.float64)
>>> rnn.n_state, rnn(np.zeros((4, 7, 2))).shape, list(rnn.params)
(5, (4, 7, 1), ['0.0.weight', '0.0.bias', '1.weight', '1.bias'])
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng
from ..core.module import Sequential
from ..layers import Linear, Sigmoid, Tanh
from .ops import Add, Hadamard
from .stateful import Stateful
from .structure import copy, delayed_trace, identity, pure, select


def _blocks(*widths):
    out, start = [], 0
    for w in widths:
        out.append(list(range(start, start + w)))
        start += w
    return out


def elman_cell(n_in, hidden, n_out, *, rng=None, dtype=np.float32) -> Stateful:
    """The stateless Elman cell ``[h, x] ↦ [h', y]``."""
    rng = as_rng(rng)
    update = Sequential(Linear(hidden + n_in, hidden, rng=rng, init="xavier_uniform", dtype=dtype),
                        Tanh())
    readout = Linear(hidden, n_out, rng=rng, init="xavier_uniform", dtype=dtype)
    return (pure(update, hidden + n_in, hidden) >> copy(hidden)
            >> (identity(hidden) @ pure(readout, hidden, n_out)))


def elman(n_in, hidden, n_out, *, rng=None, dtype=np.float32) -> Stateful:
    """Elman RNN ``X → Y`` as ``delayed_trace(elman_cell, h0 = 0)``."""
    return delayed_trace(elman_cell(n_in, hidden, n_out, rng=rng, dtype=dtype), np.zeros(hidden))


def lstm_cell(n_in, hidden, n_out, *, rng=None, dtype=np.float32) -> Stateful:
    """The stateless LSTM cell ``[h, c, x] ↦ [h', c', y]``, wired from layers and gates."""
    rng = as_rng(rng)
    H = hidden
    gates = Linear(H + n_in, 4 * H, rng=rng, init="xavier_uniform", dtype=dtype)
    readout = Linear(H, n_out, rng=rng, init="xavier_uniform", dtype=dtype)
    h, c, x = _blocks(H, H, n_in)
    cell = select(2 * H + n_in, c + h + x)                                # [c, h, x]
    cell = cell >> (identity(H) @ pure(gates, H + n_in, 4 * H))           # [c, zi, zf, zo, zg]
    cell = cell >> (identity(H) @ pure(Sigmoid(), 3 * H, 3 * H)
                    @ pure(Tanh(), H, H))                                 # [c, i, f, o, g]
    c, i, f, o, g = _blocks(H, H, H, H, H)
    cell = cell >> select(5 * H, f + c + i + g + o)                       # [f, c, i, g, o]
    cell = cell >> (pure(Hadamard(H), 2 * H, H) @ pure(Hadamard(H), 2 * H, H)
                    @ identity(H))                                        # [f⊙c, i⊙g, o]
    cell = cell >> (pure(Add(H), 2 * H, H) @ identity(H))                 # [c', o]
    c, o = _blocks(H, H)
    cell = cell >> select(2 * H, o + c + c)                               # [o, c', c']
    cell = cell >> (identity(H) @ pure(Tanh(), H, H) @ identity(H))       # [o, tanh c', c']
    cell = cell >> (pure(Hadamard(H), 2 * H, H) @ identity(H))            # [h', c']
    cell = cell >> select(2 * H, list(range(2 * H)) + list(range(H)))     # [h', c', h']
    return cell >> (identity(2 * H) @ pure(readout, H, n_out))            # [h', c', y]


def lstm(n_in, hidden, n_out, *, rng=None, dtype=np.float32) -> Stateful:
    """LSTM ``X → Y`` as ``delayed_trace(lstm_cell, (h0, c0) = 0)``."""
    return delayed_trace(lstm_cell(n_in, hidden, n_out, rng=rng, dtype=dtype),
                         np.zeros(2 * hidden))
