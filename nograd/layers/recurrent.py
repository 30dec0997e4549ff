r"""Recurrent layers RNN, LSTM and GRU over ``(batch, time, features)``, with backward through time
and forward mode written out step by step.

Shapes: ``x (B, T, F) -> y (B, T, H)``, the hidden state at every step. Weights follow PyTorch:
``weight_ih (G·H, F)``, ``weight_hh (G·H, H)``, ``bias_ih``, ``bias_hh (G·H,)`` with ``G`` = 1
(RNN), 4 (LSTM, gates i, f, g, o) or 3 (GRU, gates r, z, n). The input projection of all steps is
one GEMM, :math:`X_p = x W_{ih}^\top + b_{ih}`; so are its cotangents after the loop,
:math:`\bar W_{ih} = \bar X_p^\top x`, :math:`\bar x = \bar X_p W_{ih}`.

Initial state in, final state out: ``forward(x, state=s0)`` starts from ``s0`` (zeros by default;
an array ``(B, H)`` for RNN/GRU, a pair ``(h, c)`` for LSTM) and ``final_state(cache)`` is the state
after the last step, so a long sequence can be fed in pieces (truncated BPTT). ``backward_state``
also takes the cotangent of the final state and returns that of the initial state; ``jvp_state``
takes and returns state tangents. ``backward`` and ``jvp`` are these with the state parts dropped,
so the layers satisfy the plain module contract (DESIGN.md §2).

Stacks as in PyTorch: ``num_layers`` layers, each reading the previous one's output, and
``bidirectional=True`` adding a second pass over the reversed sequence per layer, its outputs
concatenated after the forward pass's (``y (B, T, 2H)``); ``dropout`` between layers in training.
A stack names its arrays as PyTorch does (``weight_ih_l0``, ``weight_hh_l1_reverse``, ...) and its
states ``(num_layers·directions, B, H)``; see :mod:`nograd.layers.recurrent_stack`. A single
one-directional layer keeps the names without suffix (``weight_ih``) and ``(B, H)`` states.

Backward through time (Werbos 1990) runs the steps in reverse, adding each step's output cotangent
``dy_t`` to the carried cotangent of ``h_t``; forward mode runs them forward, carrying tangents.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..core.checks import as_rng, check_array, check_dtype, check_float, check_int, check_like, check_positive
from ..core.module import Module
from . import recurrent_stack as stack
from .activations import sigmoid
from .linear import affine_tangent


def _sigmoid(a):
    """The gates' logistic function, :func:`nograd.layers.activations.sigmoid` (accurate left tail:
    a saturated gate is σ(a) ≈ e^a, not 0)."""
    return sigmoid(a)


# --------------------------------------------------------------------------- one LSTM cell
# The gates of an LSTM cell (Hochreiter & Schmidhuber 1997; forget gate: Gers et al. 2000), both
# modes, shared with HyperLSTM (nograd.models.hyperlstm: its LSTMs form the pre-activations anew).
def lstm_gates(a, n):
    r"""The gates of an LSTM cell from their pre-activations ``a (B, 4n)``, in PyTorch's order:
    :math:`i = \sigma(a_i),\; f = \sigma(a_f),\; g = \tanh(a_g),\; o = \sigma(a_o)`, each ``(B, n)``."""
    return (_sigmoid(a[:, :n]), _sigmoid(a[:, n:2 * n]), np.tanh(a[:, 2 * n:3 * n]),
            _sigmoid(a[:, 3 * n:]))


def lstm_cell_jvp(gates, da, c_prev, dc_prev):
    r"""Forward mode of the LSTM cell-state update :math:`c = f \odot c_{t-1} + i \odot g`.

    ``gates`` = ``(i, f, g, o)`` from :func:`lstm_gates`, ``da (B, 4n)`` the tangent of their
    pre-activations, ``c_prev``, ``dc_prev (B, n)`` the previous cell state and its tangent.

    .. math::
        \dot i = i(1-i)\,\dot a_i,\; \dot f = f(1-f)\,\dot a_f,\; \dot g = (1-g^2)\,\dot a_g,\;
        \dot o = o(1-o)\,\dot a_o,\qquad
        \dot c = \dot f c_{t-1} + f \dot c_{t-1} + \dot i g + i \dot g.

    Returns ``(c, dc, do)``; the caller finishes :math:`h = o \odot \tanh(\tilde c)` (with
    :math:`\tilde c = c` or a normalised :math:`c`) as :math:`\dot h = \dot o \tanh\tilde c +
    o\,(1-\tanh^2\tilde c)\,\dot{\tilde c}`. Cost: about fifteen elementwise operations on
    ``(B, n)`` arrays.
    """
    i, f, g, o = gates
    n = i.shape[1]
    di = i * (1 - i) * da[:, :n]
    df = f * (1 - f) * da[:, n:2 * n]
    dg = (1 - g * g) * da[:, 2 * n:3 * n]
    do = o * (1 - o) * da[:, 3 * n:]
    c = f * c_prev + i * g
    dc = df * c_prev + f * dc_prev + di * g + i * dg
    return c, dc, do


def lstm_gates_vjp(dh, dc, gates, c_prev, tc):
    r"""Reverse mode of the gates: the cotangent ``(B, 4n)`` of the pre-activations.

    ``dh (B, n)`` is the cotangent of :math:`h = o \odot \tanh\tilde c`, ``dc`` the *total*
    cotangent of :math:`c` (the carried one plus the path through :math:`h`), ``gates`` =
    ``(i, f, g, o)``, ``c_prev`` the previous cell state and ``tc`` = :math:`\tanh\tilde c`.

    .. math::
        \bar a = [\bar c\, g\, i(1-i),\; \bar c\, c_{t-1} f(1-f),\; \bar c\, i(1-g^2),\;
        \bar h \tanh\tilde c\; o(1-o)];

    the cotangent of :math:`c_{t-1}` is :math:`\bar c \odot f`.
    """
    i, f, g, o = gates
    return np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                           dh * tc * o * (1 - o)], axis=1)


class RecurrentBase(Module):
    """Base of the recurrent layers (and of :class:`~nograd.models.hypernet.HyperLSTM`): parameters,
    checks, the input projection, state handling and the time loops.

    A subclass sets ``gates`` and ``state_parts`` and defines one step three ways:
    ``_cell(xp, S, p) -> (S', cache)``, ``_cell_back(cache, dS', p, g) -> (dxp, dS)`` (adding its
    ``weight_hh``/``bias_hh`` gradients to ``g``) and ``_cell_jvp(xp, dxp, S, dS, p, dp) -> (S', dS')``.
    ``S`` is a tuple of ``(B, H)`` arrays whose first entry is the output ``h``. ``_run``,
    ``_run_back`` and ``_run_jvp`` run one layer in one direction over time; a stack
    (``num_layers > 1`` or ``bidirectional``) chains them (:mod:`nograd.layers.recurrent_stack`).
    """

    gates = 1
    state_parts = 1
    num_layers, bidirectional, dropout = 1, False, 0.0
    state_feedback = False      # True: backward_local runs the steps' backward all at once

    def backward_local(self, cache, dy, carry, *, params=None, need_dx=True):
        """Reverse mode with the state cotangents of every step set by ``carry`` and the local VJPs
        of all steps batched over time: ``(dx, grads)`` (:func:`.recurrent_stack.backward_local`)."""
        return stack.backward_local(self, cache, dy, self._use(params), need_dx, carry)

    def __init__(self, input_size, hidden_size, *, num_layers=1, bidirectional=False, dropout=0.0,
                 rng=None, dtype=np.float32):
        super().__init__()
        check_positive(input_size, "input_size", integer=True)
        check_positive(hidden_size, "hidden_size", integer=True)
        self.num_layers = check_int(num_layers, "num_layers", low=1)
        if not isinstance(bidirectional, (bool, np.bool_)):
            raise TypeError(f"bidirectional must be a bool, got {bidirectional!r}")
        self.bidirectional = bool(bidirectional)
        self.dropout = check_float(dropout, "dropout", low=0, high=1, high_open=True)
        if self.dropout and self.num_layers == 1:      # as PyTorch: allowed, but it does nothing
            warnings.warn(f"dropout={dropout} acts between stacked layers and has no effect with "
                          f"num_layers=1; add a Dropout layer after {type(self).__name__} instead", stacklevel=2)
        dt = check_dtype(dtype)
        rng = as_rng(rng)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        for layer, direction, sfx in stack.units(self):
            n_in = self.input_size if layer == 0 else self.hidden_size * stack.directions(self)
            arrays = self._unit_arrays(n_in, rng, dt)
            self._unit_names = list(arrays)
            self._own.update({k + sfx: v for k, v in arrays.items()})

    def _unit_arrays(self, n_in, rng, dt):
        """The arrays of one layer and direction; PyTorch's initialisation: all U(-1/√H, 1/√H)."""
        G, H, k = self.gates, self.hidden_size, 1.0 / np.sqrt(self.hidden_size)
        return {"weight_ih": rng.uniform(-k, k, (G * H, n_in)).astype(dt),
                "weight_hh": rng.uniform(-k, k, (G * H, H)).astype(dt),
                "bias_ih": rng.uniform(-k, k, G * H).astype(dt),
                "bias_hh": rng.uniform(-k, k, G * H).astype(dt)}

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}" + stack.extra_repr(self)

    # ----------------------------------------------------------------- checks and state
    def _check(self, x):
        check_array(x, "x", ndim=3)
        if x.shape[2] != self.input_size:
            raise ValueError(f"x must be (batch, time, {self.input_size}), got shape {x.shape}")

    def _cast(self, p, dtype):
        return {k: (v if v.dtype == dtype else v.astype(dtype)) for k, v in p.items()}

    def _as_tuple(self, state, name):
        if state is None:
            return None
        parts = (state,) if self.state_parts == 1 else state
        if not isinstance(parts, tuple) or len(parts) != self.state_parts:
            raise TypeError(f"{name} must be a tuple of {self.state_parts} arrays (a pair (h, c) for "
                            f"an LSTM) for {type(self).__name__}, "
                            f"got {type(state).__name__}")
        return parts

    def _state_sizes(self):
        return (self.hidden_size,) * self.state_parts

    def _state(self, state, B, dtype, name="state"):
        """The initial state as a tuple (zeros when None), checked against ``(B, H)``."""
        parts = self._as_tuple(state, name)
        sizes = self._state_sizes()
        if parts is None:
            return tuple(np.zeros((B, n), dtype) for n in sizes)
        out = []
        for s, n in zip(parts, sizes):
            check_array(s, name, ndim=2)
            if s.shape != (B, n):
                raise ValueError(f"{name} must have shape {(B, n)}, got {s.shape}")
            out.append(s.astype(dtype, copy=False))
        return tuple(out)

    def _public(self, S):
        return S[0] if self.state_parts == 1 else tuple(S)

    def final_state(self, cache):
        """The state after the last step of the ``forward`` call that made ``cache`` (for a stack,
        each part ``(num_layers·directions, B, H)``)."""
        if stack.stacked(self):
            return stack.final_state(self, cache)
        return self._public(cache[3])

    # ----------------------------------------------------------------- forward and backward
    def forward(self, x, *, train=False, rng=None, params=None, state=None):
        self._check(x)
        p = self._cast(self._use(params), x.dtype)
        if stack.stacked(self):
            return stack.forward(self, x, p, state, train, rng)
        return self._run(x, p, self._state(state, x.shape[0], x.dtype))

    def _project(self, x, p):
        """The input projection of every step at once, ``x W_ihᵀ + b_ih``."""
        return x @ p["weight_ih"].T + p["bias_ih"]

    def _run(self, x, p, S0):
        """One layer, one direction: ``(y, cache)`` from the initial state tuple ``S0``."""
        B, T, _ = x.shape
        xp = self._project(x, p)
        y = np.empty((B, T, self.hidden_size), x.dtype)
        S, steps = S0, []
        for t in range(T):
            S, c = self._cell(xp[:, t], S, p)
            steps.append(c)
            y[:, t] = S[0]
        return y, (x, S0, steps, S)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        dx, grads, _ = self.backward_state(cache, dy, params=params, need_dx=need_dx)
        return dx, grads

    def backward_state(self, cache, dy, *, params=None, need_dx=True, dstate=None):
        """Backward through time: ``(dx, grads, dstate0)``. ``dstate`` is the cotangent of the final
        state (None: zero); ``dstate0`` is the cotangent of the initial state."""
        p = self._use(params)
        if stack.stacked(self):
            return stack.backward(self, cache, dy, p, need_dx, dstate)
        B, T, _ = cache[0].shape
        check_like(dy, (B, T, self.hidden_size))
        dS = self._state(dstate, B, dy.dtype, "dstate")
        dx, g, dS = self._run_back(cache, dy, self._cast(p, dy.dtype), dS, need_dx)
        return dx, {k: g[k].astype(p[k].dtype, copy=False) for k in self._own}, self._public(dS)

    def _run_back(self, cache, dy, q, dS, need_dx):
        """Backward of :meth:`_run` from ``dy`` and the final-state cotangent tuple ``dS``:
        ``(dx, grads, dS0)`` in ``dy``'s dtype, keyed like ``q``."""
        x, S0, steps, ST = cache
        B, T, _ = x.shape
        g = {k: np.zeros(v.shape, dy.dtype) for k, v in q.items() if k not in ("weight_ih", "bias_ih")}
        dxp = np.empty((B, T, q["weight_ih"].shape[0]), dy.dtype)
        for t in range(T - 1, -1, -1):
            dS = (dS[0] + dy[:, t],) + tuple(dS[1:])
            dxp[:, t], dS = self._cell_back(steps[t], dS, q, g)
        dxp2 = dxp.reshape(B * T, -1)
        g["weight_ih"], g["bias_ih"] = dxp2.T @ x.reshape(B * T, -1), dxp2.sum(axis=0)
        dx = dxp @ q["weight_ih"] if need_dx else None
        return dx, g, dS

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None, state=None):
        more = dict(train=train, rng=rng) if stack.stacked(self) else {}
        y, dy, _, _ = self.jvp_state(x, dx, dparams, params=params, state=state, **more)
        return y, dy

    def jvp_state(self, x, dx, dparams=None, *, params=None, state=None, dstate=None, train=False,
                  rng=None):
        """Forward mode through time: ``(y, dy, final_state, final_state_tangent)``; ``train`` and
        ``rng`` matter only to a stack with ``dropout`` (the masks of :meth:`forward`)."""
        self._check(x)
        p = self._cast(self._use(params), x.dtype)
        dp = self._cast(self._tangents(dparams) or {}, x.dtype)
        if dx is not None:
            check_like(dx, x.shape, "dx")
        if stack.stacked(self):
            return stack.jvp(self, x, dx, p, dp, state, dstate, train, rng)
        B = x.shape[0]
        S, dS = self._state(state, B, x.dtype), self._state(dstate, B, x.dtype, "dstate")
        y, dy, S, dS = self._run_jvp(x, dx, p, dp, S, dS)
        return y, dy, self._public(S), self._public(dS)

    def _run_jvp(self, x, dx, p, dp, S, dS):
        """Forward mode of :meth:`_run`: ``(y, dy, S_T, dS_T)`` from the state tuples ``S``, ``dS``."""
        B, T, _ = x.shape
        xp = x @ p["weight_ih"].T + p["bias_ih"]
        dxp = affine_tangent(x, dx, p["weight_ih"], dp.get("weight_ih"), dp.get("bias_ih"))
        y = np.empty((B, T, self.hidden_size), x.dtype)
        dy = np.empty_like(y)
        for t in range(T):
            S, dS = self._cell_jvp(xp[:, t], dxp[:, t], S, dS, p, dp)
            y[:, t], dy[:, t] = S[0], dS[0]
        return y, dy, S, dS

    def _hh(self, h, dh, p, dp):
        """``h W_hhᵀ + b_hh`` and its tangent."""
        a = h @ p["weight_hh"].T + p["bias_hh"]
        da = dh @ p["weight_hh"].T
        if "weight_hh" in dp:
            da += h @ dp["weight_hh"].T
        if "bias_hh" in dp:
            da = da + dp["bias_hh"]
        return a, da

    def _hh_back(self, da, h, p, g, need_dh=True):
        """Accumulate the ``weight_hh``/``bias_hh`` gradients of ``h W_hhᵀ + b_hh``; return ``dh``."""
        g["weight_hh"] += da.T @ h
        g["bias_hh"] += da.sum(axis=0)
        return da @ p["weight_hh"] if need_dh else None


_Recurrent = RecurrentBase          # the former private name, kept for old imports


class RNN(RecurrentBase):
    r"""Elman recurrent layer, :math:`h_t = \tanh(x_t W_{ih}^\top + b_{ih} + h_{t-1} W_{hh}^\top + b_{hh})`.

    Shapes: ``x (B, T, F) -> y (B, T, H)``; state ``h (B, H)``. ``num_layers``, ``bidirectional``,
    ``dropout``: a stack as in PyTorch, ``y (B, T, D·H)``, states ``(num_layers·D, B, H)``.

    .. math::
        \bar a_t = (\bar y_t + \bar h_t) \odot (1 - h_t^2),\quad \bar h_{t-1} = \bar a_t W_{hh},
        \qquad \dot h_t = (1 - h_t^2) \odot \dot a_t.
    """

    gates, state_parts, state_feedback = 1, 1, True

    def _cell(self, xp, S, p):
        h_prev = S[0]
        h = np.tanh(xp + stack.hh_affine(h_prev, p))
        return (h,), (h_prev, h)

    def _cell_back(self, cache, dS, p, g, need_dh=True):
        h_prev, h = cache
        da = dS[0] * (1 - h * h)
        dh_prev = self._hh_back(da, h_prev, p, g, need_dh)
        return da, ((dh_prev,) if need_dh else None)

    def _cell_jvp(self, xp, dxp, S, dS, p, dp):
        a, da = self._hh(S[0], dS[0], p, dp)
        h = np.tanh(xp + a)
        return (h,), ((1 - h * h) * (dxp + da),)


class LSTM(RecurrentBase):
    r"""Long short-term memory (Hochreiter & Schmidhuber 1997; PyTorch's gate order i, f, g, o).

    Shapes: ``x (B, T, F) -> y (B, T, H)``; state ``(h, c)``, each ``(B, H)``. ``num_layers``,
    ``bidirectional``, ``dropout``: a stack as in PyTorch, ``y (B, T, D·H)``, ``h, c (num_layers·D, B, H)``.

    ``layer_norm=True`` normalises, as in Ba et al. (2016) §3.1 and Ha et al. (2016) §3.2, the input
    and recurrent pre-activations (each over its ``4H`` entries) and the cell before the ``tanh``:
    :math:`a = \mathrm{LN}_x(X_{p,t}) + \mathrm{LN}_h(h_{t-1} W_{hh}^\top + b_{hh})`,
    :math:`h_t = o \tanh \mathrm{LN}_c(c_t)`, with gains ``ln_*_weight`` (init 1) and biases ``ln_*_bias`` (init 0).

    .. math::
        a = X_{p,t} + h_{t-1} W_{hh}^\top + b_{hh},\; i, f, o = \sigma(a_{i,f,o}),\; g = \tanh(a_g),\;
        c_t = f c_{t-1} + i g,\; h_t = o \tanh c_t;

        \bar c \mathrel{+}= \bar h\, o (1 - \tanh^2 c_t),\; \bar c_{t-1} = \bar c f,\;
        \bar a = (\bar c g\, i(1-i),\; \bar c c_{t-1} f(1-f),\; \bar c i (1-g^2),\; \bar h \tanh c_t\, o(1-o)).
    """

    gates, state_parts, state_feedback = 4, 2, True
    _run, _fused_local = stack.lstm_run, "lstm"     # time-major caches, fused batched backward

    def __init__(self, input_size, hidden_size, *, layer_norm=False, eps=1e-5, num_layers=1,
                 bidirectional=False, dropout=0.0, rng=None, dtype=np.float32):
        self.layer_norm, self.eps = bool(layer_norm), float(eps)
        super().__init__(input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                         dropout=dropout, rng=rng, dtype=dtype)

    def _unit_arrays(self, n_in, rng, dt):
        arrays = super()._unit_arrays(n_in, rng, dt)
        if self.layer_norm:
            G = 4 * self.hidden_size
            for name, n in (("ln_x", G), ("ln_h", G), ("ln_c", self.hidden_size)):
                arrays[name + "_weight"] = np.ones(n, dt)
                arrays[name + "_bias"] = np.zeros(n, dt)
        return arrays

    def extra_repr(self):
        return super().extra_repr() + (", layer_norm=True" if self.layer_norm else "")

    # layer normalisation over the last axis (Ba et al. 2016, §3.1 for recurrent networks)
    def _ln(self, a, p, name):
        mu = a.mean(axis=1, keepdims=True)
        sd = np.sqrt(((a - mu) ** 2).mean(axis=1, keepdims=True) + self.eps)
        n = (a - mu) / sd
        return n * p[name + "_weight"] + p[name + "_bias"], (n, sd)

    def _ln_back(self, dout, c, p, g, name):
        n, sd = c
        g[name + "_weight"] += (dout * n).sum(axis=0)
        g[name + "_bias"] += dout.sum(axis=0)
        dn = dout * p[name + "_weight"]
        return (dn - dn.mean(axis=1, keepdims=True) - n * (dn * n).mean(axis=1, keepdims=True)) / sd

    def _ln_jvp(self, a, da, p, dp, name):
        out, (n, sd) = self._ln(a, p, name)
        dn = (da - da.mean(axis=1, keepdims=True) - n * (da * n).mean(axis=1, keepdims=True)) / sd
        dout = dn * p[name + "_weight"]
        if name + "_weight" in dp:
            dout = dout + n * dp[name + "_weight"]
        if name + "_bias" in dp:
            dout = dout + dp[name + "_bias"]
        return out, dout

    def _gates(self, a):
        return lstm_gates(a, self.hidden_size)

    def _cell(self, xp, S, p):
        h_prev, c_prev = S
        hp = stack.hh_affine(h_prev, p)
        lc = None
        if self.layer_norm:
            (xp, lx), (hp, lh) = self._ln(xp, p, "ln_x"), self._ln(hp, p, "ln_h")
        i, f, g, o = self._gates(xp + hp)
        c = f * c_prev + i * g
        if self.layer_norm:
            cn, lc = self._ln(c, p, "ln_c")
            tc = np.tanh(cn)
            return (o * tc, c), (h_prev, c_prev, i, f, g, o, tc, (lx, lh, lc))
        tc = np.tanh(c)
        return (o * tc, c), (h_prev, c_prev, i, f, g, o, tc, None)

    def _cell_back(self, cache, dS, p, g_acc, need_dh=True):
        h_prev, c_prev, i, f, g, o, tc, lns = cache
        dh, dc = dS
        dcn = dh * o * (1 - tc * tc)
        dc = dc + (self._ln_back(dcn, lns[2], p, g_acc, "ln_c") if lns else dcn)
        da = lstm_gates_vjp(dh, dc, (i, f, g, o), c_prev, tc)
        dhp = da
        if lns:
            dhp = self._ln_back(da, lns[1], p, g_acc, "ln_h")
            da = self._ln_back(da, lns[0], p, g_acc, "ln_x")
        dh_prev = self._hh_back(dhp, h_prev, p, g_acc, need_dh)
        return da, ((dh_prev, dc * f) if need_dh else None)

    def _cell_dc(self, cache, dh, p):
        """The cotangent of the cell ``c_t`` from its own step's ``h_t = o tanh LN(c_t)`` alone."""
        o, tc, lns = cache[5:8]
        dcn = dh * o * (1 - tc * tc)
        return self._ln_back(dcn, lns[2], p, {"ln_c_weight": 0, "ln_c_bias": 0}, "ln_c") if lns else dcn

    def _cell_jvp(self, xp, dxp, S, dS, p, dp):
        (h_prev, c_prev), (dh_prev, dc_prev) = S, dS
        a, da = self._hh(h_prev, dh_prev, p, dp)
        if self.layer_norm:
            xp, dxp = self._ln_jvp(xp, dxp, p, dp, "ln_x")
            a, da = self._ln_jvp(a, da, p, dp, "ln_h")
        a, da = xp + a, dxp + da
        gates = self._gates(a)
        c, dc, do = lstm_cell_jvp(gates, da, c_prev, dc_prev)
        cn, dcn = self._ln_jvp(c, dc, p, dp, "ln_c") if self.layer_norm else (c, dc)
        tc, o = np.tanh(cn), gates[3]
        return (o * tc, c), (do * tc + o * (1 - tc * tc) * dcn, dc)


class GRU(RecurrentBase):
    r"""Gated recurrent unit (Cho et al. 2014), as PyTorch defines it (gates r, z, n).

    Shapes: ``x (B, T, F) -> y (B, T, H)``; state ``h (B, H)``. ``num_layers``, ``bidirectional``,
    ``dropout``: a stack as in PyTorch, ``y (B, T, D·H)``, states ``(num_layers·D, B, H)``.

    .. math::
        X_p = x_t W_{ih}^\top + b_{ih},\; H_p = h_{t-1} W_{hh}^\top + b_{hh},\;
        r = \sigma(X_{p,r} + H_{p,r}),\; z = \sigma(X_{p,z} + H_{p,z}),\;
        n = \tanh(X_{p,n} + r \odot H_{p,n}),\; h_t = (1 - z) n + z h_{t-1}.
    """

    gates, state_parts, state_feedback = 3, 1, True
    _fused_local = "gru"        # backward_local's fused path (recurrent_stack.FUSED_LOCAL)
    _run = stack.gru_run        # _cell's steps, caches stored time-major (read by backward_local)

    def _cell(self, xp, S, p):
        H, h_prev = self.hidden_size, S[0]
        hp = stack.hh_affine(h_prev, p)
        r = _sigmoid(xp[:, :H] + hp[:, :H])
        z = _sigmoid(xp[:, H:2 * H] + hp[:, H:2 * H])
        n = np.tanh(xp[:, 2 * H:] + r * hp[:, 2 * H:])
        return ((1 - z) * n + z * h_prev,), (h_prev, hp, r, z, n)

    def _cell_back(self, cache, dS, p, g, need_dh=True):
        h_prev, hp, r, z, n = cache
        H, dh = self.hidden_size, dS[0]
        dan = dh * (1 - z) * (1 - n * n)
        dar = dan * hp[:, 2 * H:] * r * (1 - r)
        daz = dh * (h_prev - n) * z * (1 - z)
        dxp = np.concatenate([dar, daz, dan], axis=1)
        dhp = np.concatenate([dar, daz, dan * r], axis=1)
        dh_prev = self._hh_back(dhp, h_prev, p, g, need_dh)
        return dxp, ((dh * z + dh_prev,) if need_dh else None)

    def _cell_jvp(self, xp, dxp, S, dS, p, dp):
        H, h_prev, dh_prev = self.hidden_size, S[0], dS[0]
        hp, dhp = self._hh(h_prev, dh_prev, p, dp)
        r = _sigmoid(xp[:, :H] + hp[:, :H])
        z = _sigmoid(xp[:, H:2 * H] + hp[:, H:2 * H])
        n = np.tanh(xp[:, 2 * H:] + r * hp[:, 2 * H:])
        dr = r * (1 - r) * (dxp[:, :H] + dhp[:, :H])
        dz = z * (1 - z) * (dxp[:, H:2 * H] + dhp[:, H:2 * H])
        dn = (1 - n * n) * (dxp[:, 2 * H:] + dr * hp[:, 2 * H:] + r * dhp[:, 2 * H:])
        h = (1 - z) * n + z * h_prev
        return (h,), (dz * (h_prev - n) + (1 - z) * dn + z * dh_prev,)
