r"""VCAS: backpropagation with variance-controlled adaptive sampling (Z. Wang, Y. Zhang, J. Chen,
J. Zhu (2024), "Efficient Backpropagation with Variance-Controlled Adaptive Sampling", ICLR;
reference code thu-ml/VCAS).

The forward pass is exact. The backward pass samples (:mod:`nograd.rules.vcas_walk`): samples of
the batch by their cotangent norms before each block (Sec. 4 and Fig. 2 of the paper, keep ratio :math:`\rho_l`) and rows
(tokens) of each dense layer's weight gradient by leverage scores (keep ratio :math:`\nu_l`),
reweighting what it keeps so that the gradient stays unbiased, and skipping what it drops for
real. Every ``freq`` steps a controller (the paper's Algorithm 1) measures, on the step's batch,

.. math::
    V_s = \operatorname{Var}[\bar W_{\text{SGD}}], \qquad
    V_{act} = \mathbb E\,\lVert \bar W_{act} - \bar W\rVert^2, \qquad
    V_{w,l} = \textstyle\sum_t (1/p_t - 1)\lVert g_t\rVert^2\lVert x_t\rVert^2

summed over the sampled dense layers' weights, and moves the ratios: the kept share of the
gradient norm :math:`s \leftarrow s \pm \alpha` (up when :math:`V_{act} > \tau_{act} V_s`), with
:math:`\rho_l` the least fraction of samples holding :math:`s` of the norm at block :math:`l`
(made non-decreasing towards the output and smoothed by an EMA), and
:math:`\nu_l \leftarrow \nu_l / \beta` when :math:`V_{w,l} > \tau_w V_{s,l}`, else
:math:`\nu_l \beta`.
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..core.checks import as_rng, check_seed
from ..losses import get_loss
from .base import Rule, register
from .vcas_sampling import score_variance, top_sum_fraction
from .vcas_control import act_pass
from .vcas_walk import Pass, structure

__all__ = ["VCAS"]


def _ratio(value, name, *, upper=1.0, closed=True):
    """A number in ``(0, upper]`` (``closed``) or ``(0, upper)``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and 0 < v and (v <= upper if closed else v < upper)):
        raise ValueError(f"{name} must be in (0, {upper:g}{']' if closed else ')'}, got {value!r}")
    return v


def _memo(f):
    """``f`` with its values kept by argument (the closed form :math:`V_{w,l}(\\nu)` is read at
    the same :math:`\\nu` by the record and by the update)."""
    seen = {}

    def g(nu):
        if nu not in seen:
            seen[nu] = f(nu)
        return seen[nu]
    return g


def _count(value, name, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


@register("vcas")
class VCAS(Rule):
    r"""Backprop with variance-controlled adaptive sampling (Wang et al. 2024).

    Trains a :class:`~nograd.models.gpt.GPT`, a :class:`~nograd.models.vit.ViT` (the blocks are
    the transformer blocks, the token dimension is the sequence) or a ``Sequential`` MLP/CNN (the
    blocks are its layers with parameters below the output layer; a dense layer's rows are its
    samples, or positions for inputs with more axes). Layers with batch statistics are refused:
    dropping a sample must leave the other samples' backward unchanged. The defaults are those of
    the reference code's ``VcasSampleArguments`` (the paper's settings).

    Parameters
    ----------
    loss : a loss name or callable ``(pred, target) -> (value, dpred)``, as :class:`Backprop`.
    tau_act, tau_w : :math:`\tau_{act}, \tau_w`, the accepted ratio of the activation and weight
        sampling variance to the SGD variance (0.025 each).
    freq : :math:`F`, steps between variance measurements (100). The reference code's README
        advises at most 1/50 of the run's steps; short runs need a smaller value.
    m : :math:`M`, Monte-Carlo repetitions of the measurement (2): the batch is split into ``m``
        parts for :math:`V_s`, and ``m`` activation-sampled passes estimate :math:`V_{act}`.
    s_step : :math:`\alpha`, the step of the norm keep ratio ``s`` (0.01).
    nu_mul : :math:`\beta`, the factor of the weight keep ratios (0.95).
    sched_decay : the EMA factor smoothing the sample-ratio schedule (0.6, the reference code's).
    act_ratio, weight_ratio : the initial :math:`\rho_l` and :math:`\nu_l` (1: training starts
        exact and the controller lowers them). With ``adapt=False`` they stay fixed.
    adapt : run the controller.
    nu_search : instead of one factor :math:`\beta` per measurement, lower :math:`\nu_l` to the
        least :math:`\nu_l\beta^j` whose closed-form :math:`V_{w,l}` stays under
        :math:`\tau_w V_{s,l}` (the constraint the paper's rule approaches one step at a time,
        reached at once; not in the paper — for runs too short for ``F``-spaced single steps).
        Raising :math:`\nu_l` stays one :math:`1/\beta` step. Default False (the paper's rule).
    row_overhead : :math:`\kappa` (13, measured: float32, one BLAS thread). Where sampling a
        weight gradient costs more time than it saves — :math:`\nu_l \ge 1 - \kappa(1/\text{in}
        + 1/\text{out})` for a dense layer ``in → out``: the scores, the water-filling and the
        gathers cost about :math:`\kappa` multiply-adds per entry of a row of ``x`` and ``g``,
        the product saves :math:`(1-\nu_l)` of ``in·out`` per row — the weight gradient is
        computed exactly. That is an unbiased estimate too, with zero added variance (the
        controller still reads the paper's :math:`V_{w,l}(\nu_l)`, an upper bound then), and the
        FLOP counter counts the full product. 0: the paper's sampler whenever :math:`\nu_l < 1`.
    mask_above : when an activation sampler keeps at least this share of the rows being computed
        (0.85), the dropped samples' cotangents are zeroed in place of gathering the kept samples'
        rows of every cache below: the same estimate and random draws, no copies; the FLOP
        counter counts the zero rows computed. Above 1: always gather.
    seed : seed of the generator used when ``grads`` gets ``rng=None``.
    **loss_options : passed to the loss.

    ``info`` of a step: ``loss``, ``output``, ``flops`` (unit → ``(done, exact)`` backward FLOPs of
    its matrix products), ``bp_flops``, ``bp_flops_exact``, ``forward_flops``,
    ``backward_seconds`` (wall), ``backward_cpu_seconds`` (this thread's CPU time), the ratios
    ``s``, ``act_ratio``, ``weight_ratio`` (mean), ``totals`` (running sums over the steps, also
    :attr:`totals`) and ``controller`` (the measurement of this step, or None; all of them are
    in :attr:`log`). A controller step updates with the exact
    gradient it computed for the measurement, and its FLOPs count every pass it ran. The
    controller's state (step count, ``s``, the ratios keyed by block and layer name) lives on the
    rule: each ``grads`` call counts as a training step.
    """

    defaults = {"optimizer": "adam", "lr": 1e-3, "epochs": 20}

    def __init__(self, loss="cross-entropy", *, tau_act=0.025, tau_w=0.025, freq=100, m=2,
                 s_step=0.01, nu_mul=0.95, sched_decay=0.6, act_ratio=1.0, weight_ratio=1.0,
                 adapt=True, nu_search=False, row_overhead=13.0, mask_above=0.85, seed=0,
                 **loss_options):
        self.loss = get_loss(loss)
        self.loss_options = loss_options
        self.tau_act = _ratio(tau_act, "tau_act", upper=math.inf)
        self.tau_w = _ratio(tau_w, "tau_w", upper=math.inf)
        self.freq = _count(freq, "freq", 1)
        self.m = _count(m, "m", 2)
        self.s_step = _ratio(s_step, "s_step", closed=False)
        self.nu_mul = _ratio(nu_mul, "nu_mul", closed=False)
        if isinstance(sched_decay, bool) or not isinstance(sched_decay, (int, float)) \
                or not 0 <= sched_decay < 1:
            raise ValueError(f"sched_decay must be in [0, 1), got {sched_decay!r}")
        self.sched_decay = float(sched_decay)
        self.init_act_ratio = _ratio(act_ratio, "act_ratio")
        self.init_weight_ratio = _ratio(weight_ratio, "weight_ratio")
        if not isinstance(adapt, bool):
            raise TypeError(f"adapt must be a bool, got {adapt!r}")
        self.adapt = adapt
        if not isinstance(nu_search, bool):
            raise TypeError(f"nu_search must be a bool, got {nu_search!r}")
        self.nu_search = nu_search
        if isinstance(row_overhead, bool) or not isinstance(row_overhead, (int, float)) \
                or not (math.isfinite(row_overhead) and row_overhead >= 0):
            raise ValueError(f"row_overhead must be a finite number >= 0, got {row_overhead!r}")
        self.row_overhead = float(row_overhead)
        self.mask_above = _ratio(mask_above, "mask_above", upper=math.inf)
        self.seed = check_seed(seed)
        self._rng = np.random.default_rng([self.seed, 23])
        self.s = 1.0
        self.act_ratio: dict[str, float] = {}
        self.weight_ratio: dict[str, float] = {}
        self.steps = 0
        self.totals = {"bp_flops": 0.0, "bp_flops_exact": 0.0, "forward_flops": 0.0,
                       "backward_seconds": 0.0, "backward_cpu_seconds": 0.0, "steps": 0,
                       "controller_steps": 0}
        self.log: list[dict] = []
        self._layout = None
        self._pool: dict = {}                    # gather buffers reused by the passes

    # ------------------------------------------------------------------ the model
    def check_model(self, model) -> None:
        kind, samplers, dense = structure(model)
        if kind is None:
            raise ValueError(f"VCAS walks a GPT, a ViT or a Sequential of layers; got a "
                             f"{type(model).__name__} (its blocks are unknown to the sampler)")
        for name, m in model.modules():
            if m.normalization and m.buffers:
                raise ValueError(f"VCAS cannot train a model with {type(m).__name__} (at "
                                 f"{name!r}): its batch statistics couple the samples that VCAS "
                                 f"drops in the backward pass; use LayerNorm or GroupNorm")
        if not model.params:
            raise ValueError("VCAS: the model has no parameters to train")

    def _setup(self, model):
        kind, samplers, dense = structure(model)
        if self._layout is None or self._layout[1] != samplers or self._layout[2] != dense:
            self.check_model(model)
            self._layout = (kind, samplers, dense)
            self.act_ratio = {n: self.init_act_ratio for n in samplers}
            self.weight_ratio = {n: self.init_weight_ratio for n in dense}
        return self._layout

    # ------------------------------------------------------------------ one step
    def grads(self, model, x, y, *, rng=None):
        kind, samplers, dense = self._setup(model)
        gen = self._rng if rng is None else as_rng(rng)
        out, cache = model.forward(x, train=True, rng=gen)
        value, dout = self.loss(out, y, **self.loss_options)
        self.steps += 1
        n = dout.shape[0]
        t0, c0 = time.perf_counter(), time.thread_time()
        record = None
        if self.adapt and self.steps % self.freq == 0 and n >= self.m:
            grads, done, flops, record = self._control(model, kind, cache, dout, gen)
        else:
            p = self._pass("vcas", n, gen).run(model, kind, cache, dout)
            grads, flops = p.grads, p.flops
            done = sum(f[0] for f in flops.values())
        seconds, cpu = time.perf_counter() - t0, time.thread_time() - c0
        grads = {k: grads[k] if k in grads else np.zeros_like(v) for k, v in model.params.items()}
        exact = sum(f[1] for f in flops.values())
        fwd = sum(f[2] for f in flops.values())
        t = self.totals
        t["bp_flops"] += done
        t["bp_flops_exact"] += exact
        t["forward_flops"] += fwd
        t["backward_seconds"] += seconds
        t["backward_cpu_seconds"] += cpu
        t["steps"] += 1
        t["controller_steps"] += record is not None
        nu = list(self.weight_ratio.values())
        info = {"loss": value, "output": out,
                "flops": {k: (f[0], f[1]) for k, f in flops.items()},
                "bp_flops": done, "bp_flops_exact": exact, "forward_flops": fwd,
                "backward_seconds": seconds, "backward_cpu_seconds": cpu, "s": self.s,
                "act_ratio": dict(self.act_ratio),
                "weight_ratio": float(np.mean(nu)) if nu else 1.0, "totals": dict(t),
                "controller": record,
                # fit writes these into each epoch's History row: the running totals so far
                "record": {"bp_flops": t["bp_flops"], "bp_flops_exact": t["bp_flops_exact"],
                           "forward_flops": t["forward_flops"]}}
        return grads, info

    # ------------------------------------------------------------------ the controller
    def _control(self, model, kind, cache, dout, gen):
        """Measure :math:`V_s, V_{act}, V_{w,l}` on this batch (Algorithm 1), update ``s``,
        :math:`\\rho_l`, :math:`\\nu_l`; returns the exact gradient, the FLOPs done, the per-unit
        FLOPs (done over all the passes; exact and forward of one backward) and the record."""
        exact, done, flops, record, (norms, w_var, sgd) = self.measure(model, kind, cache, dout, gen)
        if record["sgd_var"] > 0:
            self._update(norms, record["act_var"] > self.tau_act * record["sgd_var"], w_var, sgd)
        record.update(s=self.s, act_ratio=dict(self.act_ratio),
                      weight_ratio=dict(self.weight_ratio))
        self.log.append(record)
        return exact, done, flops, record

    def measure(self, model, kind, cache, dout, gen):
        r"""The measurement of Algorithm 1 on one batch at the current ratios; changes nothing.

        ``cache``, ``dout``: the forward cache and output cotangent of a batch of ``N`` samples;
        ``gen``: the Generator of the sampled passes. Returns ``(exact, done, flops, record,
        (norms, w_var, sgd))``: the exact gradient (dotted name → array), the FLOPs done by all
        the passes, the per-unit FLOPs, ``record`` with ``sgd_var`` :math:`V_s`, ``act_var``
        :math:`V_{act}` and ``w_var`` :math:`\sum_l V_{w,l}(\nu_l)` (sums over the sampled dense
        layers' weights), and what the update reads: the samplers' per-sample cotangent norms,
        ``w_var[l](nu)`` (layer ``l``'s closed form) and ``sgd[l]`` (its :math:`V_{s,l}`).

        :math:`V_s` is the variance of the batch gradient, estimated from the mean-loss gradients
        :math:`\hat g_i` of ``m`` parts of the batch as :math:`\sum_i \lVert\hat g_i - \bar g
        \rVert^2 / ((m-1)\,m)`; :math:`V_{act}` is the mean of :math:`\lVert g_{act} - g\rVert^2`
        over ``m`` activation-sampled passes and :math:`V_{w,l}` the mean over the same passes of
        :math:`\sum_t (1/p_t - 1)\lVert\bar y_t\rVert^2\lVert x_t\rVert^2`, the variance that
        leverage sampling adds given the activation sampling. The variance a VCAS gradient adds
        to the exact one is then :math:`V_{act} + \sum_l V_{w,l}` (the weight sampling is unbiased
        given the activation sampling, so the two add).

        Cost (issue #23): one exact backward on the whole batch, in which each sampled dense
        layer's weight product is done per part on row slices (the parts' gradients, whose sum
        is the gradient: no gathers); the ``m`` activation-sampled passes are computed from it
        (:func:`~nograd.rules.vcas_control.act_pass`: a sampled pass only rescales each sample's
        cotangent, so it needs one product per dense layer on the rescaled samples' rows — the
        same random variable as a pass run for real, from the same draws); the closed form is
        evaluated once per layer and ratio.
        """
        n, m = dout.shape[0], self.m
        # one exact pass; each sampled dense layer's weight product is done per contiguous part
        # of the batch (row slices, no gathers): the parts' mean-loss gradients give V_s and
        # their sum is the exact gradient
        p = self._pass("exact", n, gen, parts=m).run(model, kind, cache, dout)
        exact, norms, top = p.grads, p.norms, p.top
        flops = {}
        done = self._merge(flops, p.flops, exact_too=True)
        parts = np.array_split(np.arange(n), m)
        keys = {name: name + ".weight" for name in self.weight_ratio}
        part_grads = p.part_grads
        if any(name not in part_grads for name in keys):     # a dense leaf the walk left opaque
            part_grads = {name: [] for name in keys}
            for part in parts:
                q = self._pass("exact", n, gen, rows=part).run(model, kind, cache, dout)
                done += self._merge(flops, q.flops)
                for name, key in keys.items():
                    part_grads[name].append(q.grads.get(key, np.zeros_like(exact[key])))
        sgd = {}
        for name in keys:
            scaled = [g * (n / len(part)) for part, g in zip(parts, part_grads[name])]
            mean = sum(scaled) / m
            sgd[name] = sum(float(np.sum((s - mean) ** 2)) for s in scaled) / (m - 1) / m
        # without activation sampling the sampled pass is the exact one: V_act = 0, and the
        # leverage scores are those of the exact pass. The sampled passes start from the exact
        # pass's cotangent at the top block and stop below the bottom one (their other arrays
        # are not read)
        runs = m if any(r < 1 for r in self.act_ratio.values()) else 0
        act_var = 0.0
        scores = {name: [] for name in keys} if runs else {k: [v] for k, v in p.scores.items()}
        owner = {d: next(s for s in self.act_ratio if d == s or d.startswith(s + "."))
                 for d in keys}
        from_exact = all(d in p.saved for d in keys)
        for _ in range(runs):
            if from_exact:          # the sampled pass from the exact one (vcas_control)
                dev, sc, fl = act_pass(p, list(self.act_ratio), owner, self.act_ratio, n, gen)
                act_var += dev / runs
                done += self._merge(flops, fl)
                for name, v in sc.items():
                    scores[name].append(v)
                continue
            q = self._pass("act", n, gen).run(model, kind, cache, dout, top=top)
            done += self._merge(flops, q.flops)
            for name, key in keys.items():
                got = q.grads.get(key)
                diff = exact[key] if got is None else got - exact[key]
                act_var += float(np.sum(diff.astype(np.float64) ** 2)) / runs
                if name in q.scores:
                    scores[name].append(q.scores[name])
        # V_w,l(ν): the mean over the passes of the closed form
        w_var = {name: _memo(lambda nu, a=a: sum(score_variance(s, nu) for s in a) / max(len(a), 1))
                 for name, a in scores.items()}     # memo: the record and the update read V_w(ν_l)
        record = {"step": self.steps, "sgd_var": sum(sgd.values()), "act_var": act_var,
                  "w_var": sum(f(self.weight_ratio[name]) for name, f in w_var.items()),
                  "s_before": self.s}
        return exact, done, flops, record, (norms, w_var, sgd)

    def _pass(self, mode, n, gen, **kw):
        return Pass(mode, n, self.act_ratio, self.weight_ratio, gen, row_overhead=self.row_overhead,
                    mask_above=self.mask_above, pool=self._pool, **kw)

    @staticmethod
    def _merge(into, flops, exact_too=False):
        """Add a pass's per-unit FLOPs done to ``into`` (and its exact/forward counts, for the first
        pass: every pass of a measurement stands for one backward); returns the pass's total."""
        for name, f in flops.items():
            g = into.setdefault(name, [0.0, 0.0, 0.0])
            g[0] += f[0]
            if exact_too:
                g[1], g[2] = f[1], f[2]
        return sum(f[0] for f in flops.values())

    def _update(self, norms, act_too_noisy, w_var, sgd):
        """Algorithm 1's update of ``s``, the sample-ratio schedule and the weight ratios."""
        self.s = min(1.0, self.s + self.s_step) if act_too_noisy else max(0.0, self.s - self.s_step)
        names = list(self.act_ratio)                         # bottom to top
        new, low = {}, 0.0
        for name in names:
            low = max(low, top_sum_fraction(norms[name], self.s) if name in norms else 1.0)
            new[name] = low                                  # non-decreasing towards the output
        d = self.sched_decay
        for name in names:
            rho = d * self.act_ratio[name] + (1 - d) * new[name]
            # the EMA approaches 1 but never reaches it; within 1e-6 of 1 it is 1 (no sampler,
            # no sampled measurement passes)
            self.act_ratio[name] = 1.0 if rho > 1 - 1e-6 else rho
        b = self.nu_mul
        for name, var in w_var.items():
            nu, target = self.weight_ratio[name], self.tau_w * sgd[name]
            if var(nu) > target:
                self.weight_ratio[name] = min(1.0, nu / b)
            elif not self.nu_search:
                self.weight_ratio[name] = nu * b
            else:                  # the least ν·β^j (j ≥ 1) still under τ_w V_s,l: V_w falls with ν
                lo, hi = 1, 1
                while nu * b ** hi > 1e-4 and var(nu * b ** hi) <= target:
                    lo, hi = hi, 2 * hi
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    lo, hi = (mid, hi) if var(nu * b ** mid) <= target else (lo, mid)
                self.weight_ratio[name] = nu * b ** lo

    def __repr__(self):
        return (f"VCAS(tau_act={self.tau_act}, tau_w={self.tau_w}, freq={self.freq}, m={self.m}, "
                f"adapt={self.adapt})")
