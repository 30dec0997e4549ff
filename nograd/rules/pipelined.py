r"""Pipelined backpropagation (PB) at batch size one, with Spike Compensation and Linear Weight
Prediction: A. Kosson, V. Chiley, A. Venigalla, J. Hestness, U. Köster (2021), "Pipelined
Backpropagation at Scale: Training Large Models without Batches", MLSys (arXiv:2003.11666).

**The pipeline.** A chain of blocks is cut into :math:`S` stages. Samples enter stage 1 one per
tick; at every tick every stage runs one forward pass (of one sample) and one backward pass (of an
older sample) and updates its weights at once, without waiting for the pipeline to drain. Sample
:math:`n` is forwarded through stage :math:`s` (1-based) at tick :math:`n + s - 1`; the last stage
computes the loss and runs its backward in the same tick; the gradient then travels back one stage
per tick, reaching stage :math:`s` at tick :math:`n + 2S - s - 1`. Between the forward and the
backward of a sample, stage :math:`s` has therefore been updated

.. math::  D_s = 2\,(S - s)

times (the paper's §3): the first stage of a deep pipeline computes its activations with weights
:math:`2(S-1)` updates old, the last stage has no delay. Without weight stashing the backward pass
uses the stage's weights *at that tick* (newer than those of the forward pass), so the gradient is
not the gradient of any single set of weights.

**The simulation is exact and deterministic.** Counting updates instead of ticks, sample
:math:`n`'s forward through stage :math:`s` sees version :math:`\max(0, n - D_s)` of the stage's
weights (the version after that many updates), and its backward sees version :math:`n` (every older
sample's update is in, its own is not). The rule processes one sample (one micro-batch) per
:meth:`~PipelinedBackprop.step`, in that order: forward with the stale versions it keeps in a short
history (:math:`D_s` copies of stage :math:`s`'s forward weights), loss, backward with the current
weights (or the stashed forward weights), update. A hardware pipeline keeps :math:`D_s` activations
in flight instead of :math:`D_s` weight copies; the arithmetic is the same, and with one stage
(:math:`D = 0`) the rule is plain SGD at batch size one, bit for bit.

**Compensations** (with SGD + momentum :math:`m`, learning rate :math:`\eta`, the velocity
:math:`v_{t+1} = m v_t + g_t`):

- Spike Compensation (SC, the paper's §4.2): a gradient that arrives :math:`D` updates late would,
  without delay, already have moved the weights by :math:`\eta g (1 + m + \dots + m^{D-1})`; SC
  applies that missed part at once and keeps the momentum's later contributions as they would have
  been: :math:`w_{t+1} = w_t - \eta\,(a\,v_{t+1} + b\,g_t)` with :math:`a = m^D`,
  :math:`b = (1 - m^D)/(1 - m)`. (For :math:`D = 1` this is Nesterov's momentum.)
- Linear Weight Prediction (LWP, the paper's §4.3): the forward pass of a stage with delay
  :math:`D` uses the weights predicted :math:`D` updates ahead along the velocity,
  :math:`\hat w_{t+D} = w_t - \eta\,D\,v_t`, so that they are close to the weights the backward
  pass will meet.

**Hyper-parameters at batch size one.** :func:`scale_hyperparameters` turns a batched setting
:math:`(\eta_0, m_0, B_0)` into one for batch size :math:`B` the way the paper transfers its
batched hyper-parameters: the momentum keeps its memory in *samples*
(:math:`m = m_0^{B/B_0}`) and the total step a sample causes, :math:`\eta/(B(1-m))`, stays the
same. :func:`pipeline_utilisation` states the motivation: a fill-and-drain pipeline over a batch of
:math:`B` samples idles a fraction :math:`(S-1)/(B+S-1)` of the time, PB none.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

from ..core.checks import NonFiniteError, all_finite, check_float, check_positive
from ..losses import get_loss
from .base import Rule, register

__all__ = ["PipelinedBackprop", "scale_hyperparameters", "pipeline_utilisation", "stage_delays",
           "COMPENSATIONS"]

#: the values of ``compensation``
COMPENSATIONS = ("none", "sc", "lwp", "sc+lwp")


def stage_delays(stages: int) -> list[int]:
    r"""The delays :math:`D_s = 2(S - s)`, :math:`s = 1, \dots, S`: how many updates a stage's
    weights receive between a sample's forward and backward pass (Kosson et al. 2021, §3).

    >>> stage_delays(4)
    [6, 4, 2, 0]
    """
    S = int(check_positive(stages, "stages", integer=True))
    return [2 * (S - s) for s in range(1, S + 1)]


def scale_hyperparameters(lr, momentum, batch_size, reference_batch_size):
    r"""``(lr, momentum)`` for ``batch_size`` from a setting tuned at ``reference_batch_size``.

    .. math::  m = m_0^{B/B_0},\qquad \eta = \eta_0\,\frac{B}{B_0}\,\frac{1 - m}{1 - m_0}

    The momentum's decay per *sample* is kept (:math:`m^{1/B} = m_0^{1/B_0}`), and so is the total
    step a sample's gradient causes over time, :math:`\eta/(B(1-m)) = \eta_0/(B_0(1-m_0))` (a
    batch averages its samples' gradients). This is how Kosson et al. (2021) reuse batched
    hyper-parameters at batch size one without tuning. With ``momentum = 0`` it is the linear
    scaling rule :math:`\eta = \eta_0 B/B_0`.

    >>> lr, m = scale_hyperparameters(0.1, 0.9, 1, 32)
    >>> round(m ** 32, 12), round(lr / (1 - m), 6) == round(0.1 / (32 * 0.1), 6)
    (0.9, True)
    """
    lr = check_float(lr, "lr", low=0, low_open=True)
    momentum = check_float(momentum, "momentum", low=0, high=1, high_open=True)
    batch_size = check_positive(batch_size, "batch_size", integer=True)
    reference_batch_size = check_positive(reference_batch_size, "reference_batch_size",
                                          integer=True)
    ratio = batch_size / reference_batch_size
    if momentum == 0.0:
        return lr * ratio, 0.0
    m = momentum ** ratio
    return lr * ratio * (1.0 - m) / (1.0 - momentum), m


def pipeline_utilisation(stages, batch_size) -> dict:
    r"""The ideal utilisation of ``stages`` pipeline workers, one stage each, every stage taking
    one tick per sample forward and one backward.

    - Fill and drain (batched SGD split over the stages, as GPipe): a batch of :math:`B` samples
      takes :math:`2(B + S - 1)` ticks for :math:`2B` ticks of work per worker, so the utilisation
      is :math:`B/(B+S-1)`, the bubble :math:`(S-1)/(B+S-1)`, and the throughput
      :math:`B/(2(B+S-1))` samples per tick.
    - Pipelined backpropagation: every worker does one forward and one backward at every tick and
      never drains: utilisation 1 in steady state, throughput :math:`1/2` sample per tick (one
      sample enters per forward-plus-backward time).

    Returns ``{"stages", "batch_size", "fill_drain_utilisation", "fill_drain_bubble",
    "fill_drain_samples_per_tick", "pb_utilisation", "pb_samples_per_tick", "speedup"}``.
    """
    S = int(check_positive(stages, "stages", integer=True))
    B = int(check_positive(batch_size, "batch_size", integer=True))
    util = B / (B + S - 1)
    return {"stages": S, "batch_size": B, "fill_drain_utilisation": util,
            "fill_drain_bubble": 1.0 - util, "fill_drain_samples_per_tick": util / 2,
            "pb_utilisation": 1.0, "pb_samples_per_tick": 0.5, "speedup": 1.0 / util}


_LR1, _M1 = scale_hyperparameters(0.05, 0.9, 1, 32)


@register("pipelined")
class PipelinedBackprop(Rule):
    r"""Pipelined backpropagation over the stages of a chain, simulated exactly
    (Kosson et al. 2021; the schedule and delays :math:`D_s = 2(S-s)` in the module's docstring).

    One :meth:`step` is one sample (or micro-batch) through the pipeline: stage :math:`s` runs
    its forward pass with its weights as they were :math:`D_s` updates ago (predicted forward with
    LWP), the loss is taken at the end, each stage's backward runs with its current weights (or the
    stashed forward weights with ``stash=True``), and every stage is updated. Shapes: ``x`` is a
    micro-batch ``(B, ...)`` the model takes, ``y`` its ``B`` labels (or ``(B, C)`` targets);
    ``B = 1`` is the paper's setting.

    **The update.** With ``compensation="none"`` the gradients go to the optimizer given to
    :meth:`step` (any optimizer: ``optimizer.step(grads)``). With ``"sc"``, ``"lwp"`` or
    ``"sc+lwp"`` the stages with a delay need the velocity, so the rule applies SGD with momentum
    to them itself, in place, as MeZO does: it reads ``lr``, ``momentum`` and ``weight_decay`` of
    each array from the optimizer's public :meth:`~nograd.core.optim.Optimizer.hyper` at every
    step (schedules reach it), keeps the velocity :math:`v \leftarrow m v + (g + \lambda w)` of
    each array (keyed by parameter name), and applies :math:`w \leftarrow w - \eta(a v + b(g +
    \lambda w))` with SC's :math:`a = m^D, b = (1-m^D)/(1-m)`, or :math:`a = 1, b = 0` without SC
    (plain momentum, as ``SGD``). The optimizer must then be SGD (no Nesterov, no dampening, no
    clipping); the last stage (no delay) still goes through ``optimizer.step``.

    **State.** The weight history and the velocities belong to one model (its arrays, by
    identity); a step on another model, or :meth:`reset`, starts an empty pipeline. The pipeline
    is not drained between epochs (the paper's continuous pipeline); the at most :math:`2S - 1`
    samples in flight at the end of training never update the weights, which the simulation
    reflects by simply never running them. :meth:`grads` returns the gradients the next step would
    apply and changes nothing.

    Parameters
    ----------
    loss, **loss_options : the loss (name or callable ``(pred, target) -> (value, dpred)``).
    stages : ``None`` (default) — one stage per block with arrays (parameter-free blocks such as
        activations, pooling and flatten join the stage before them); an int :math:`S` — the blocks
        with arrays split into :math:`S` contiguous groups of near-equal size; or a sequence of
        chain positions where stages 2, 3, … begin (strictly increasing, within the chain).
    compensation : ``"none"`` (plain PB), ``"sc"``, ``"lwp"`` or ``"sc+lwp"`` (default).
    stash : weight stashing: the backward pass uses the weights of the forward pass (PipeDream's
        fix; the gradient is then the exact gradient at the stale weights).
    """

    #: batch size one, SGD with momentum: lr 0.05, momentum 0.9 at batch 32 scaled to batch 1 by
    #: :func:`scale_hyperparameters` (lr ≈ 5.1e-5, momentum ≈ 0.9967)
    defaults = {"optimizer": "sgd", "lr": _LR1, "epochs": 5, "batch_size": 1,
                "optimizer_options": {"momentum": _M1}}

    def __init__(self, loss="cross-entropy", *, stages=None, compensation="sc+lwp", stash=False,
                 **loss_options):
        self.loss = get_loss(loss)
        self.loss_options = loss_options
        self.stages = self._check_stages(stages)
        if compensation not in COMPENSATIONS:
            raise ValueError(f"compensation must be one of {', '.join(COMPENSATIONS)}, "
                             f"got {compensation!r}")
        self.compensation = compensation
        if not isinstance(stash, (bool, np.bool_)):
            raise TypeError(f"stash must be a bool, got {stash!r}")
        self.stash = bool(stash)
        self.reset()

    # ------------------------------------------------------------------ the stages
    @staticmethod
    def _check_stages(stages):
        if stages is None:
            return None
        if isinstance(stages, (bool, np.bool_)):
            raise TypeError(f"stages must be None, an int or a sequence of chain positions, "
                            f"got {stages!r}")
        if isinstance(stages, (int, np.integer)):
            return int(check_positive(stages, "stages", integer=True))
        if not isinstance(stages, (list, tuple)) or not all(
                isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in stages):
            raise TypeError(f"stages must be None, an int or a sequence of chain positions "
                            f"(ints), got {stages!r}")
        bounds = [int(b) for b in stages]
        if any(b <= a for a, b in zip([0] + bounds, bounds)):
            raise ValueError(f"stages: the chain positions where stages begin must be positive "
                             f"and strictly increasing, got {list(stages)}")
        return tuple(bounds)

    def plan(self, model):
        """The stages of ``model``: a list of ``(delay, blocks, names)`` in forward order, where
        ``blocks`` is ``[(prefix, block, keys), ...]`` (from ``model.chain()``, ``keys`` those of
        ``block.params``) and ``names`` the
        stage's keys in ``model.params``. Raises ``ValueError`` (naming the rule) when the model has
        nothing to train or the requested stages do not fit its chain."""
        who = type(self).__name__
        chain = model.chain()
        has = [bool(block.params) for _, block in chain]
        n_param = sum(has)
        if n_param == 0:
            raise ValueError(f"{who}: the model has no trainable arrays; nothing to pipeline")
        if isinstance(self.stages, tuple):
            if self.stages[-1] >= len(chain):
                raise ValueError(f"{who}: stages {list(self.stages)} must begin within the "
                                 f"model's chain of {len(chain)} blocks (positions 1 to "
                                 f"{len(chain) - 1})")
            starts = [0, *self.stages]
        else:
            S = n_param if self.stages is None else self.stages
            if S > n_param:
                raise ValueError(f"{who}: stages={S} but the model's chain has only {n_param} "
                                 f"blocks with trainable arrays")
            param_pos = [i for i, h in enumerate(has) if h]
            # group k takes the blocks with arrays number floor(k n / S) ... (near-equal sizes)
            firsts = [param_pos[(k * n_param) // S] for k in range(S)]
            starts = [0, *firsts[1:]]
        ends = starts[1:] + [len(chain)]
        delays = stage_delays(len(starts))
        out = []
        for d, a, b in zip(delays, starts, ends):
            blocks = [(prefix, block, tuple(block.params)) for prefix, block in chain[a:b]]
            names = [_key(prefix, k) for prefix, _, keys in blocks for k in keys]
            out.append((d, blocks, names))
        return out

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget the pipeline: weight history, velocities and the model they belong to."""
        self._owner = None            # ids of the model's arrays the state belongs to
        self._arrays = {}             # those arrays by name
        self._plan = None
        self._history = {}            # stage index -> deque of {name: forward weights}
        self._velocity = {}           # name -> v
        self.updates = 0              # updates applied so far (the sample count n)

    def check_model(self, model):
        self.plan(model)

    def prepare(self, model, x=None) -> None:
        """Plan the stages of ``model``; a model other than the one the state belongs to (other
        arrays) starts an empty pipeline."""
        arrays = model.params
        owner = tuple(id(a) for a in arrays.values())
        if owner != self._owner:
            self.reset()
            self._plan = self.plan(model)
            self._owner = owner
        self._arrays = arrays

    def _forward_weights(self, k, delay):
        """The weights stage ``k`` runs its forward pass with: ``None`` (the current ones) without
        delay or before its first update, else the oldest version kept (update ``n - D``)."""
        hist = self._history.get(k)
        if delay == 0 or not hist:
            return None
        return hist[0]

    # ------------------------------------------------------------------ one sample
    def _check_batch(self, x, y):
        who = type(self).__name__
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{who}: x must be a numpy array, got {type(x).__name__}")
        if x.dtype.kind == "f" and not all_finite(x):
            raise NonFiniteError(f"{who}: x contains NaN or inf")
        if not hasattr(y, "__len__") or len(y) != len(x):
            n = len(y) if hasattr(y, "__len__") else type(y).__name__
            raise ValueError(f"{who}: y has {n} targets for {len(x)} samples in x; one target "
                             f"per sample is needed")

    def _run(self, model, x, y, rng):
        """Forward through the stages (stale weights), loss, backward (current or stashed
        weights). Returns ``(grads, info)``."""
        self._check_batch(x, y)
        caches, fws, h = [], [], x
        for k, (delay, blocks, _) in enumerate(self._plan):
            fw = self._forward_weights(k, delay)
            fws.append(fw)
            for prefix, block, keys in blocks:
                h, c = block.forward(h, train=True, rng=rng, params=_part(fw, prefix, keys))
                caches.append(c)
        out = h
        value, dh = self.loss(out, y, **self.loss_options)
        grads = {}
        i = len(caches)
        for k in range(len(self._plan) - 1, -1, -1):
            _, blocks, _ = self._plan[k]
            bw = fws[k] if self.stash else None
            for prefix, block, keys in reversed(blocks):
                i -= 1
                dh, g = block.backward(caches[i], dh, params=_part(bw, prefix, keys),
                                       need_dx=i > 0)
                for name, v in g.items():
                    grads[_key(prefix, name)] = v
        order = [n for _, _, names in self._plan for n in names]
        return {n: grads[n] for n in order if n in grads}, {"loss": value, "output": out}

    def grads(self, model, x, y, *, rng=None):
        """The gradients the next :meth:`step` applies for the micro-batch ``(x, y)``: forward
        with each stage's delayed (or predicted) weights, backward with its current (or stashed)
        ones. Changes neither the model nor the pipeline's state."""
        self.prepare(model, x)
        return self._run(model, x, y, rng)

    def step(self, model, x, y, *, optimizer, rng=None) -> dict:
        """One tick of the pipeline for the micro-batch ``(x, y)``: gradients as :meth:`grads`,
        then every stage updated (see the class docstring). Returns the info dict; with a
        non-finite loss nothing is updated."""
        self.prepare(model, x)
        own = self._own_names(optimizer)
        grads, info = self._run(model, x, y, rng)
        if not math.isfinite(float(info["loss"])):
            return info
        for name in own:
            if name in grads and not all_finite(grads[name]):
                raise NonFiniteError(f"{type(self).__name__}: grads[{name!r}] contains NaN or inf")
        params = self._arrays
        pushes = self._new_versions(params, own)
        rest = {n: g for n, g in grads.items() if n not in own}
        if rest:
            optimizer.step(rest)
        for name, (delay, hyper) in own.items():
            if name in grads:
                self._momentum_update(name, params[name], grads[name], delay, hyper)
        for k, version in pushes:
            hist = self._history.get(k)
            if hist is None:
                hist = self._history[k] = deque(maxlen=self._plan[k][0])
            if len(hist) == hist.maxlen:          # reuse the oldest arrays
                old = hist.popleft()
                for n, a in version.items():
                    np.copyto(old[n], a)
                version = old
            hist.append(version)
        self.updates += 1
        self.after_step(model, optimizer)
        return info

    # ------------------------------------------------------------------ updates
    def _own_names(self, optimizer):
        """``{name: (delay, hyper)}`` for the arrays the rule updates itself (compensated stages
        with a delay); checks the optimizer can say what SGD step to take on them."""
        if self.compensation == "none":
            return {}
        who = type(self).__name__
        own = {}
        for delay, _, names in self._plan:
            if delay == 0:
                continue
            for name in names:
                hyper = optimizer.hyper(name)
                if "momentum" not in hyper:
                    raise ValueError(f"{who}: compensation={self.compensation!r} applies SGD with "
                                     f"momentum itself and reads its hyper-parameters from the "
                                     f"optimizer, but {type(optimizer).__name__} has no momentum "
                                     f"for {name!r}; use SGD (momentum > 0) or "
                                     f"compensation='none'")
                if hyper.get("nesterov") or hyper.get("dampening", 0.0) != 0.0:
                    raise ValueError(f"{who}: compensation={self.compensation!r} needs SGD without "
                                     f"Nesterov and dampening (SC's a, b replace them), got "
                                     f"nesterov={hyper.get('nesterov')}, "
                                     f"dampening={hyper.get('dampening')}")
                if getattr(optimizer, "clip_norm", None) is not None:
                    raise ValueError(f"{who}: compensation={self.compensation!r} cannot apply the "
                                     f"optimizer's clip_norm; use an optimizer without clipping")
                own[name] = (delay, hyper)
        return own

    def _momentum_update(self, name, p, g, delay, hyper):
        r""":math:`v \leftarrow m v + d`, :math:`w \leftarrow w - \eta(a v + b d)`, :math:`d = g +
        \lambda w`, in place; SC's :math:`a = m^D, b = (1 - m^D)/(1 - m)` or :math:`a=1, b=0`."""
        lr, m, wd = hyper["lr"], hyper["momentum"], hyper["weight_decay"]
        t = p.dtype.type
        d = g.astype(p.dtype, copy=True)
        if wd:
            d += t(wd) * p
        v = self._velocity.get(name)
        if v is None:
            v = self._velocity[name] = d.copy()
        else:
            v *= t(m)
            v += d
        if "sc" in self.compensation.split("+"):
            a = m ** delay
            b = (1.0 - a) / (1.0 - m)
            p -= t(lr) * (t(a) * v + t(b) * d)
        else:
            p -= t(lr) * v

    def _new_versions(self, params, own):
        """``[(stage, {name: forward weights})]`` for the stages with a delay: the weights of the
        version this step starts from (update ``n``), predicted :math:`D` updates ahead with LWP
        (:math:`\\hat w = w - \\eta D v`; ``own`` gives each array's lr)."""
        lwp = "lwp" in self.compensation.split("+")
        out = []
        for k, (delay, _, names) in enumerate(self._plan):
            if delay == 0:
                continue
            version = {}
            for n in names:
                w = params[n]
                v = self._velocity.get(n) if lwp else None
                if v is None:
                    version[n] = w.copy()
                else:
                    t = w.dtype.type
                    version[n] = w - t(own[n][1]["lr"] * delay) * v
            out.append((k, version))
        return out

    def __repr__(self):
        name = getattr(self.loss, "__name__", repr(self.loss))
        return (f"PipelinedBackprop(loss={name}, stages={self.stages!r}, "
                f"compensation={self.compensation!r}, stash={self.stash})")


def _key(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _part(weights, prefix, keys):
    """The arrays of the block at chain position ``prefix`` (its ``keys``) in ``weights`` (a dict
    keyed like ``model.params``), keyed like the block's params; ``None``: the block's own."""
    if weights is None or not keys:
        return None
    return {k: weights[_key(prefix, k)] for k in keys}
