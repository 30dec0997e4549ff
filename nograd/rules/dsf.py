r"""Stationary (diagonal) state feedbacks instead of backpropagation through time, and fully
truncated BPTT.

Caillon, Fagnou & Allauzen (2025), "Fast Training of Recurrent Neural Networks with Stationary
State Feedbacks" (arXiv:2503.23104). For a recurrent layer :math:`h_t = F(h_{t-1}, x_t; \theta)`
with output cotangents :math:`e_t = \partial L / \partial h_t` (the direct part), backpropagation
through time (BPTT) carries the total state cotangent backward with the Jacobians of the steps,

.. math::
    \delta_t = e_t + J_{t+1}^\top \delta_{t+1}, \qquad J_{t+1} = \partial h_{t+1} / \partial h_t,
    \qquad \delta_T = 0 \ (\text{after the last step}),

and then :math:`\nabla_\theta L = \sum_t (\partial h_t/\partial\theta)^\top \delta_t`. The recursion
is sequential, with a different dense matrix at every step. Diagonal State Feedbacks (DSF) replace
the time-varying :math:`J_{t+1}^\top` by one fixed diagonal matrix :math:`A = \mathrm{diag}(a)`:

.. math::
    \delta_t = e_t + a \odot \delta_{t+1}
    \;\Longleftrightarrow\; \delta_t = \sum_{k \ge 0} a^k \odot e_{t+k},

a linear time-invariant backward filter, computed for all :math:`t` at once by a prefix scan
(:math:`\lceil\log_2 T\rceil` passes, each parallel over time), by an FFT convolution with the
kernel :math:`K_k = a^k` (:func:`feedback_scan`; also by the compiled recursion, one elementwise
pass per step vectorised over the batch and the units, ``method="recurrence"``); every step's local
VJP then runs for all steps in one batch
(:meth:`nograd.layers.recurrent.RecurrentBase.backward_local`: one GEMM per weight). Fully
truncated BPTT is the special case :math:`a = 0`: :math:`\delta_t = e_t` (:class:`TruncatedBPTT`).

**The feedback A (the paper's choice).** The authors' released code (repository
``p0lcAi/DSF``, ``dsf/dsf.py``, ``DfaRnn.initialize_feedback_matrix``, option ``state_transition =
'diagonal'``, the one their ``train.py`` runs beside BPTT and FT-BPTT) sets :math:`A = \mathrm{diag}(a)` with the entries
evenly spaced from 0 to 1 over the state's units, :math:`a_j = j / (n - 1)`, :math:`j = 0 … n-1`,
the same for every layer, and keeps it fixed (a buffer, never trained); the recursion is
:math:`g_t = e_t + g_{t+1} A` over all steps of the window. This is ``feedback="linspace"`` here,
the default. For an LSTM their state is the concatenation :math:`(h_t, c_t)` of :math:`n = 2H`
units, so :math:`h` gets the first half of the ramp, :math:`[0, \tfrac12)`, and :math:`c` the
second, :math:`[\tfrac12, 1]`; the same split is used here. (The stored copy of the paper we could
read held its abstract and introduction only, so the paper's own equation numbers are not cited;
the definition is the authors' released code.)

The other choices: ``feedback="uniform"``, each entry :math:`a_j = \exp(-\exp(\nu_j))` (the LRU's
exponential parameterisation, Orvieto et al. 2023, §3.3) drawn uniformly in ``[r_min, r_max]``
per unit, layer and direction — this project's earlier guess, kept as an option; a constant; or
given arrays per layer. ``A`` is never trained.

**LSTM.** Its state is :math:`(h_t, c_t)` and :math:`\partial c_{t+1}/\partial c_t =
\mathrm{diag}(f_{t+1})` is already diagonal (but time-varying); the cell cotangent gets its own
stationary feedback :math:`a^c`: :math:`u_t = q_t + a^c \odot u_{t+1}` with :math:`q_t` the
cotangent that :math:`h_t = o_t \tanh c_t` sends to :math:`c_t` from :math:`\delta_t` (a second
scan), and :math:`\delta_t = e_t + a^h \odot \delta_{t+1}` as above.

Shapes: a recurrent layer's output cotangent ``e (B, T, H)``; ``a (H,)`` per pass (a stack has
``num_layers·directions`` passes). Cost of the backward of one layer: the filter, :math:`O(BTH)`
elementwise work (:math:`O(BTH\log T)` by the doubling scan), plus the local VJPs,
:math:`O(BTH(F + H))` in a few large GEMMs (for a GRU: one fused pass for the gate maths and
the bias sums over the step caches the forward stored time-major, then ``weight_hh``,
``weight_ih`` and the input cotangent as GEMMs over all ``T·B`` rows), against BPTT's ``T`` sequential
steps of small GEMMs, which also carry the state cotangent back through ``weight_hh`` (twice the
recurrent GEMM work of DSF).
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_seed
from ..core.module import Module, Residual
from ..losses import get_loss
from .base import Rule, register

__all__ = ["DSF", "TruncatedBPTT", "feedback_scan", "linspace_feedback", "METHODS", "FEEDBACKS"]

#: how :func:`feedback_scan` computes the recursion
METHODS = ("scan", "fft", "sequential", "recurrence")
#: the named ways :class:`DSF` sets its feedback ``A``
FEEDBACKS = ("linspace", "uniform")


def linspace_feedback(n: int) -> np.ndarray:
    r"""The authors' diagonal feedback: :math:`a_j = j / (n - 1)`, :math:`j = 0 … n-1` (``[0.]`` for
    ``n = 1``), float64 ``(n,)`` — ``torch.diag(torch.linspace(0, 1, n))`` in their code
    (``p0lcAi/DSF``, ``dsf/dsf.py``)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return np.arange(n, dtype=np.float64) / max(n - 1, 1)


def feedback_scan(e: np.ndarray, a: np.ndarray, method: str = "scan") -> np.ndarray:
    r"""Solve :math:`\delta_t = e_t + a \odot \delta_{t+1}` (with :math:`\delta_T = 0`) for every t.

    Shapes: ``e (B, T, H)``, ``a (H,)`` → ``δ (B, T, H)`` in ``e``'s dtype.

    - ``"sequential"``: the recursion itself, ``T`` steps from the last (the reference).
    - ``"scan"``: recursive doubling (Hillis & Steele 1986): after the pass of stride ``d``,
      :math:`\delta_t = \sum_{k<2d} a^k e_{t+k}`; each pass is
      :math:`\delta_t \mathrel{+}= a^d \delta_{t+d}`, so :math:`\lceil\log_2 T\rceil` passes, each
      parallel over ``t`` (here a compiled loop, in place on a time-major copy: the result is a
      ``(B, T, H)`` view of ``(T, B, H)`` memory, which :meth:`backward_local` reads without a copy).
    - ``"fft"``: :math:`\delta_t = \sum_{k=0}^{T-1-t} a^k e_{t+k}` is a correlation of ``e`` with the
      kernel :math:`K_k = a^k`; with time reversed it is a causal convolution, computed with real
      FFTs of length ``2T`` (no wrap-around), in float64.
    - ``"recurrence"``: the recursion compiled, one pass from the last step writing time-major
      memory (returned as a ``(B, T, H)`` view, as ``"scan"``'s); each step is ``B·H`` independent
      multiply-adds, so the work is ``O(TBH)`` against the doubling's ``O(TBH \log T)`` — on one
      CPU thread, whose parallelism is the vector lanes across ``B·H``, the cheaper of the two; the
      doubling scan is the form for hardware parallel over ``t``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(e, np.ndarray) or e.ndim != 3:
        raise ValueError(f"e must be an array (batch, time, hidden), got "
                         f"{getattr(e, 'shape', type(e).__name__)}")
    a = np.asarray(a)
    if a.shape != (e.shape[2],):
        raise ValueError(f"a must have shape ({e.shape[2]},) (one entry per hidden unit), got {a.shape}")
    T = e.shape[1]
    if method == "sequential":
        out = np.empty_like(e)
        d = np.zeros_like(e[:, 0])
        for t in range(T - 1, -1, -1):
            d = e[:, t] + a * d
            out[:, t] = d
        return out
    if method == "recurrence":
        out = np.empty((T, e.shape[0], e.shape[2]), e.dtype)
        from ..kernels.recurrent import linear_recurrence    # Numba, on first use

        linear_recurrence(e, a.astype(e.dtype), out)
        return out.transpose(1, 0, 2)
    if method == "scan":
        B, H = e.shape[0], e.shape[2]
        out = np.array(e.transpose(1, 0, 2), order="C")     # time-major (T, B, H): a copy
        from ..kernels.recurrent import doubling_scan    # Numba, on first use

        doubling_scan(out.reshape(T, B * H), np.tile(a.astype(e.dtype), B))
        return out.transpose(1, 0, 2)
    n = 2 * T
    k = np.arange(T)[:, None]
    kernel = np.where(k == 0, 1.0, a.astype(np.float64)[None, :] ** np.maximum(k, 1))  # (T, H)
    rev = e[:, ::-1].astype(np.float64)
    conv = np.fft.irfft(np.fft.rfft(rev, n, axis=1) * np.fft.rfft(kernel, n, axis=0), n, axis=1)
    return np.ascontiguousarray(conv[:, :T][:, ::-1]).astype(e.dtype)


def _skip_body(m):
    """The recurrent layer of a skip connection ``Residual(layer[, shortcut])`` whose shortcut (if
    any) holds no recurrent layer, or None."""
    if isinstance(m, Residual):
        body, short = m._children["body"], m._children.get("shortcut")
        if getattr(body, "state_feedback", False) and (
                short is None or not any(hasattr(leaf, "final_state") for _, leaf in short.modules())):
            return body
    return None


def _blocks(model, who):
    """The model's chain of blocks ``[(prefix, block, recurrent?)]``; refuses what the rule cannot
    train: a recurrent layer without ``state_feedback``, or one inside a block that is not a chain."""
    if not isinstance(model, Module):
        raise TypeError(f"{who}: model must be a nograd Module, got {type(model).__name__}")
    out = []
    for name, m in model.chain():
        where = name or "the model"
        for sub, leaf in m.modules(name):
            if hasattr(leaf, "final_state") and not getattr(leaf, "state_feedback", False):
                raise ValueError(f"{who} cannot train {type(leaf).__name__} (at {sub or 'the model'!r}):"
                                 f" the recurrent layer does not declare state_feedback (its steps "
                                 f"cannot be run backward all at once); RNN, GRU and LSTM do")
            if leaf is not m and getattr(leaf, "state_feedback", False) and leaf is not _skip_body(m):
                raise ValueError(f"{who} cannot train the recurrent layer {type(leaf).__name__} at "
                                 f"{sub!r} inside a {type(m).__name__} block (at {where!r}): the "
                                 f"rule walks a chain of blocks (Sequential) and replaces the "
                                 f"backward of the recurrent blocks of that chain")
        out.append((f"{name}." if name else "", m,
                    bool(getattr(m, "state_feedback", False)) or _skip_body(m) is not None))
    if not any(r for _, _, r in out):
        raise ValueError(f"{who}: the model has no recurrent layer (RNN, GRU or LSTM) in its chain "
                         f"of blocks; use backprop")
    return out


class _StateFeedbackRule(Rule):
    """Shared: the loss, the walk over the model's chain, and the backward with a ``carry``."""

    defaults = {"optimizer": "adam", "lr": 2e-3, "epochs": 20}

    def __init__(self, loss="cross-entropy", **loss_options):
        self.loss = get_loss(loss)
        self.loss_options = loss_options

    def check_model(self, model) -> None:
        _blocks(model, type(self).__name__)

    def _carry(self, prefix, layer, dtype):
        """``carry(k, e, cell)`` for :meth:`RecurrentBase.backward_local` of ``layer``."""
        raise NotImplementedError

    def _prepare(self, model, blocks) -> None:
        """Whatever the rule sets up from the model's blocks before a backward (nothing here)."""

    def forward(self, model, x, *, rng=None):
        """The model's forward in training mode, block by block: ``(output, caches)``."""
        caches, h = [], x
        for _, m, _ in _blocks(model, type(self).__name__):
            h, c = m.forward(h, train=True, rng=rng)
            caches.append(c)
        return h, caches

    def backward(self, model, caches, dout) -> dict:
        """The rule's backward from the output cotangent ``dout``: the recurrent blocks through
        ``backward_local`` with this rule's ``carry``, the others through their own ``backward``.
        Returns the gradients keyed like ``model.params``."""
        blocks = _blocks(model, type(self).__name__)
        self._prepare(model, blocks)
        dy, grads = dout, {}
        for i in range(len(blocks) - 1, -1, -1):
            prefix, m, recurrent = blocks[i]
            body = _skip_body(m)
            if body is not None:            # y = layer(x) + shortcut(x): the two input cotangents add
                cb, cs, _ = caches[i]
                dxb, g = body.backward_local(cb, dy, self._carry(prefix, body, dy.dtype), need_dx=i > 0)
                g = {"body." + k: v for k, v in g.items()}
                short = m._children.get("shortcut")
                if short is None:
                    dxs = dy
                else:
                    dxs, gs = short.backward(cs, dy, need_dx=i > 0)
                    g.update(("shortcut." + k, v) for k, v in gs.items())
                dy = dxb + dxs if i > 0 else None
            elif recurrent:
                dy, g = m.backward_local(caches[i], dy, self._carry(prefix, m, dy.dtype), need_dx=i > 0)
            else:
                dy, g = m.backward(caches[i], dy, need_dx=i > 0)
            grads.update((prefix + k, v) for k, v in g.items())
        return {k: grads[k] for k in model.params if k in grads}

    def grads(self, model, x, y, *, rng=None):
        out, caches = self.forward(model, x, rng=rng)
        value, dout = self.loss(out, y, **self.loss_options)
        return self.backward(model, caches, dout), {"loss": value, "output": out}


@register("dsf")
class DSF(_StateFeedbackRule):
    r"""Diagonal State Feedbacks (Caillon, Fagnou & Allauzen 2025): BPTT with a fixed diagonal feedback.

    The state Jacobians of BPTT are replaced by a fixed diagonal :math:`A`,
    :math:`\delta_t = e_t + a \odot \delta_{t+1}`, solved for all steps at once, then every step's
    local VJP batched over time (see the module docstring).

    Models: a chain (Sequential) of blocks, any of which may be an RNN, GRU or LSTM (stacked and
    bidirectional too; a reverse pass runs its recursion in its own time order) or a skip connection
    around one, ``Residual(layer)`` or ``Residual(layer, shortcut)`` (the authors' models add each
    recurrent layer's input to its output); the other blocks use their own backward (embeddings,
    Linear heads, norms, dropout).

    Parameters
    ----------
    loss, **loss_options : as for :class:`~nograd.rules.Backprop`.
    feedback : ``"linspace"`` (default, the authors' choice): :math:`a_j = j/(n-1)`, evenly spaced
        from 0 to 1 over the ``n = H`` units of a pass (``2H`` for an LSTM, split into ``a_h`` and
        ``a_c``), the same for every pass; ``"uniform"``: each entry :math:`a_j = \exp(-\exp\nu_j)`
        drawn uniform in ``[r_min, r_max]`` from ``seed``; a float in ``[0, 1]``: that value for
        every unit; or a dict ``{layer name: a}`` (the dotted name of the recurrent block, ``""``
        for a bare layer) with ``a`` an array ``(H,)`` or ``(passes, H)`` — for an LSTM a pair
        ``(a_h, a_c)`` — layers not in the dict set as ``"linspace"``. Entries must be finite;
        ``|a| < 1`` is not required there (a test sets ``A`` to a true Jacobian).
    r_min, r_max : the range of the ``"uniform"`` draw, ``0 <= r_min < r_max < 1``; default
        ``[0, 0.5]``.
    method : ``"scan"`` (default: recursive doubling, all steps at once as the issue and the
        paper compute it), ``"recurrence"`` (the compiled recursion: the least work on one CPU
        thread), ``"fft"`` or ``"sequential"`` (the NumPy reference); the same filter by each
        (:func:`feedback_scan`).
    seed : int, the draws of ``A`` (in the order of the model's recurrent layers and passes).
    """

    def __init__(self, loss="cross-entropy", *, feedback="linspace", r_min=0.0, r_max=0.5,
                 method="scan", seed=0, **loss_options):
        super().__init__(loss, **loss_options)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        for name, v in (("r_min", r_min), ("r_max", r_max)):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not 0 <= float(v) < 1:
                raise ValueError(f"{name} must be a number in [0, 1), got {v!r}")
        if not float(r_min) < float(r_max):
            raise ValueError(f"r_min ({r_min}) must be below r_max ({r_max})")
        if isinstance(feedback, str):
            if feedback not in FEEDBACKS:
                raise ValueError(f"feedback must be one of {FEEDBACKS}, a float in [0, 1] or a dict "
                                 f"{{layer name: array}}, got {feedback!r}")
        elif isinstance(feedback, (int, float, np.integer, np.floating)) and not isinstance(feedback, bool):
            if not 0 <= float(feedback) <= 1:
                raise ValueError(f"feedback as a number must be in [0, 1], got {feedback!r}")
        elif isinstance(feedback, dict):
            for k, v in feedback.items():
                parts = v if isinstance(v, tuple) else (v,)
                for part in parts:
                    arr = np.asarray(part)
                    if arr.dtype.kind != "f" or arr.ndim not in (1, 2) or not np.isfinite(arr).all():
                        raise ValueError(f"feedback[{k!r}] must be finite float arrays (H,) or "
                                         f"(passes, H), got {arr.dtype} of shape {arr.shape}")
        else:
            raise TypeError(f"feedback must be one of {FEEDBACKS}, a float or a dict, got "
                            f"{type(feedback).__name__}")
        self.feedback, self.method = feedback, method
        self.r_min, self.r_max = float(r_min), float(r_max)
        self.seed = check_seed(seed)
        self._a: dict = {}           # layer name -> [per pass: tuple of (H,) float64 arrays]

    def _draw(self, layer, n_pass, n_parts, rng):
        H = layer.hidden_size
        # every layer draws from rng (whatever the choice): the "uniform" stream stays fixed
        r = rng.uniform(self.r_min, self.r_max, (n_pass, n_parts, H))
        if self.feedback == "uniform":
            # exponential parameterisation a = exp(-exp(nu)), a ~ U[r_min, r_max] (Orvieto et al. 2023)
            nu = np.log(-np.log(r))
            a = np.exp(-np.exp(nu))
        elif isinstance(self.feedback, (str, dict)):    # "linspace"; layers missing from a dict
            a = np.broadcast_to(linspace_feedback(n_parts * H).reshape(n_parts, H), (n_pass, n_parts, H))
        else:
            a = np.full((n_pass, n_parts, H), float(self.feedback))
        return [tuple(np.array(a[k, j]) for j in range(n_parts)) for k in range(n_pass)]

    def feedbacks(self, model) -> dict:
        """``{layer name: [per pass: (a_h,) or (a_h, a_c)]}``, drawn once per layer from ``seed``
        (given arrays from ``feedback``), float64."""
        rng = np.random.default_rng([self.seed, 27])
        for prefix, m, recurrent in _blocks(model, type(self).__name__):
            name = prefix[:-1]
            if not recurrent:
                continue
            m = _skip_body(m) or m
            n_pass, n_parts = self._size(m)[:2]
            drawn = self._draw(m, n_pass, n_parts, rng)      # every layer draws: a fixed stream
            known = self._a.get(name)
            if known is not None and known[0][0].shape == (m.hidden_size,) and len(known) == n_pass:
                continue
            if isinstance(self.feedback, dict) and name in self.feedback:
                drawn = self._given(name, m, n_pass, n_parts)
            self._a[name] = drawn
        return self._a

    @staticmethod
    def _size(m):
        return (m.num_layers * (2 if m.bidirectional else 1), m.state_parts, m.hidden_size)

    def _given(self, name, m, n_pass, n_parts):
        v = self.feedback[name]
        parts = v if isinstance(v, tuple) else (v,)
        if len(parts) != n_parts:
            raise ValueError(f"feedback[{name!r}] must give {n_parts} array(s) for "
                             f"{type(m).__name__} (one per state part), got {len(parts)}")
        out = []
        for part in parts:
            arr = np.asarray(part, np.float64)
            arr = np.broadcast_to(arr, (n_pass, m.hidden_size)) if arr.shape == (m.hidden_size,) else arr
            if arr.shape != (n_pass, m.hidden_size):
                raise ValueError(f"feedback[{name!r}] must have shape ({m.hidden_size},) or "
                                 f"({n_pass}, {m.hidden_size}), got {np.shape(part)}")
            out.append(arr)
        return [tuple(out[j][k] for j in range(n_parts)) for k in range(n_pass)]

    def prepare(self, model, x) -> None:
        self._prepare(model, _blocks(model, type(self).__name__))

    def _prepare(self, model, blocks) -> None:
        key = tuple((prefix, id(m)) for prefix, m, recurrent in blocks if recurrent)
        if key != getattr(self, "_key", None):           # set A once per model
            self.feedbacks(model)
            self._key = key

    def _carry(self, prefix, layer, dtype):
        per_pass = self._a[prefix[:-1]] if prefix[:-1] in self._a else None
        if per_pass is None:
            raise RuntimeError("internal error: feedbacks not drawn")
        method = self.method

        def carry(k, e, cell):
            a = per_pass[k]
            delta = feedback_scan(e, a[0].astype(dtype), method)
            if cell is None:
                return (delta,)
            q = cell(delta)                          # c_t's cotangent through its own h_t
            u = feedback_scan(q, a[1].astype(dtype), method)
            return delta, u - q                      # the part carried from later steps: a_c u_{t+1}
        return carry

    def __repr__(self):
        fb = self.feedback if not isinstance(self.feedback, dict) else f"{{{', '.join(self.feedback)}}}"
        return (f"DSF(feedback={fb!r}, r_min={self.r_min}, r_max={self.r_max}, "
                f"method={self.method!r}, seed={self.seed})")


@register("tbptt")
class TruncatedBPTT(_StateFeedbackRule):
    r"""Fully truncated backpropagation through time (k = 1): no gradient through the recurrent state.

    No cotangent crosses a recurrent state, :math:`\delta_t = e_t`: each step trains as if its
    previous state were an input.

    The baseline of Caillon et al. (2025) ("FT-BPTT"), and :class:`DSF` with :math:`A = 0`; the local
    VJPs of all steps run in one batch as for DSF. Models and ``loss`` as for :class:`DSF`.

    Parameters
    ----------
    loss, **loss_options : as for :class:`~nograd.rules.Backprop`.
    k : the truncation length; only ``1`` (full truncation) is implemented.
    """

    def __init__(self, loss="cross-entropy", *, k=1, **loss_options):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k != 1:
            raise ValueError(f"k must be 1 (fully truncated BPTT; longer windows are not "
                             f"implemented), got {k!r}")
        super().__init__(loss, **loss_options)
        self.k = 1

    def _carry(self, prefix, layer, dtype):
        def carry(k, e, cell):
            return (e,) if cell is None else (e, np.zeros_like(e))
        return carry

    def __repr__(self):
        return "TruncatedBPTT(k=1)"
