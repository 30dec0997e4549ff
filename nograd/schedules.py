"""Learning-rate schedules over an optimizer's parameter groups, with PyTorch's semantics (call
``step()`` once per epoch, or per batch, after the optimizer steps; the lr sequences equal those of
``torch.optim.lr_scheduler``).

Closed-form schedules set every group's ``lr`` from that group's ``initial_lr`` and the step count,
so the groups a rule adds to the optimizer (``rule.params``) follow them too: ``StepLR``,
``MultiStepLR``, ``ExponentialLR``, ``CosineLR``, ``LambdaLR``, each with an optional linear
warm-up (``warmup=`` steps first), and ``LinearLR`` (a warm-up on its own). ``OneCycleLR`` sets the
lr (and the momentum) from ``max_lr``; ``ReduceLROnPlateau`` lowers the current lr when a metric
stops improving, ``step(metric)``. :func:`nograd.train.fit` steps a schedule once per epoch
(ReduceLROnPlateau with the epoch's validation loss), or after every batch with
``schedule_every="batch"``.

>>> import numpy as np
>>> from nograd.core.optim import SGD
>>> opt = SGD({"w": np.zeros(2)}, lr=0.1)
>>> sched = StepLR(opt, step_size=2, gamma=0.5)
>>> sched.step(); sched.step(); sched.lr
[0.05]

This module sits beside :mod:`nograd.losses`, on top of the optimizers of :mod:`nograd.core.optim`;
it used to be ``nograd.core.schedules``, and both that path and ``nograd.core.optim`` still give
its names.
"""
from __future__ import annotations

import bisect
import math

from .core.checks import check_float, check_int, check_positive
from .core.optim import Optimizer

__all__ = ["StepLR", "MultiStepLR", "ExponentialLR", "CosineLR", "LambdaLR", "LinearLR",
           "ReduceLROnPlateau", "OneCycleLR", "schedule", "SCHEDULES"]


def _check_optimizer(optimizer) -> Optimizer:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a nograd Optimizer, got {type(optimizer).__name__}")
    return optimizer


def _check_flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def _per_group(value, name: str, n_groups: int, **bounds):
    """One number for every group, or a list of one per group; returns a float or a list."""
    if isinstance(value, (list, tuple)):
        if len(value) != n_groups:
            raise ValueError(f"{name} has {len(value)} entries but the optimizer has {n_groups} "
                             f"parameter groups; give one per group or a single number")
        return [check_float(v, f"{name}[{i}]", **bounds) for i, v in enumerate(value)]
    return check_float(value, name, **bounds)


def _expand(value, name: str, n_groups: int) -> list:
    """A per-group list over the optimizer's groups now (a rule may have added some since)."""
    if not isinstance(value, list):
        return [value] * n_groups
    if len(value) != n_groups:
        raise ValueError(f"{name} has {len(value)} entries but the optimizer now has {n_groups} "
                         f"parameter groups (a rule's arrays joined it); give a single number")
    return value


class _Schedule:
    r"""Sets every group's ``lr`` to a function of its ``initial_lr`` and the step count ``t``.

    ``warmup`` (steps, default 0) puts a linear warm-up first:
    :math:`\eta_t = \eta_0\,(s + (1-s)\,t/w)` for :math:`t < w`, then the schedule runs from its
    own step 0 (:math:`\eta_t = f(t - w)`), as PyTorch's ``SequentialLR([LinearLR(start_factor=s,
    total_iters=w), schedule], milestones=[w])``. ``warmup_start_factor`` :math:`s \in (0, 1]`
    defaults to :math:`1/(w+1)`, so the lr climbs :math:`\eta_0/(w+1), 2\eta_0/(w+1), \dots,
    \eta_0` and no step is wasted at lr 0 (Goyal et al. 2017, "Accurate, Large Minibatch SGD", §2.2).
    """

    def __init__(self, optimizer: Optimizer, *, warmup=0, warmup_start_factor=None):
        self.optimizer = _check_optimizer(optimizer)
        self.warmup = check_int(warmup, "warmup", low=0)
        self.warmup_start_factor = (1.0 / (self.warmup + 1) if warmup_start_factor is None else
                                    check_float(warmup_start_factor, "warmup_start_factor", low=0,
                                                high=1, low_open=True))
        self.last_step = 0
        self._apply()

    def _lr_at(self, base: float, t: int) -> float:
        raise NotImplementedError

    def _apply(self) -> None:
        t, w, s = self.last_step, self.warmup, self.warmup_start_factor
        for group in self.optimizer.groups:
            base = group["initial_lr"]
            group["lr"] = base * (s + (1.0 - s) * t / w) if t < w else self._lr_at(base, t - w)

    def step(self) -> None:
        """Advance the counter by one and set every group's lr."""
        self.last_step += 1
        self._apply()

    def get_lr(self) -> list[float]:
        """The current lr of every group."""
        return [group["lr"] for group in self.optimizer.groups]

    @property
    def lr(self) -> list[float]:
        return self.get_lr()


class StepLR(_Schedule):
    """Step decay: :math:`\\eta_t = \\eta_0\\,\\gamma^{\\lfloor t / s \\rfloor}`."""

    def __init__(self, optimizer, step_size, gamma=0.1, *, warmup=0, warmup_start_factor=None):
        self.step_size = int(check_positive(step_size, "step_size", integer=True))
        self.gamma = float(check_positive(gamma, "gamma"))
        super().__init__(optimizer, warmup=warmup, warmup_start_factor=warmup_start_factor)

    def _lr_at(self, base, t):
        return base * self.gamma ** (t // self.step_size)


class MultiStepLR(_Schedule):
    r"""Decay at milestones: :math:`\eta_t = \eta_0\,\gamma^{|\{m \in M : m \le t\}|}`
    (a milestone given twice counts twice), as ``torch.optim.lr_scheduler.MultiStepLR``."""

    def __init__(self, optimizer, milestones, gamma=0.1, *, warmup=0, warmup_start_factor=None):
        if not isinstance(milestones, (list, tuple)):
            raise TypeError(f"milestones must be a list of non-negative integers, got {milestones!r}")
        if not milestones:
            raise ValueError("milestones must be a non-empty list of non-negative integers")
        self.milestones = sorted(check_int(m, f"milestones[{i}]", low=0)
                                 for i, m in enumerate(milestones))
        self.gamma = float(check_positive(gamma, "gamma"))
        super().__init__(optimizer, warmup=warmup, warmup_start_factor=warmup_start_factor)

    def _lr_at(self, base, t):
        return base * self.gamma ** bisect.bisect_right(self.milestones, t)


class ExponentialLR(_Schedule):
    r"""Exponential decay every step: :math:`\eta_t = \eta_0\,\gamma^t`."""

    def __init__(self, optimizer, gamma, *, warmup=0, warmup_start_factor=None):
        self.gamma = float(check_positive(gamma, "gamma"))
        super().__init__(optimizer, warmup=warmup, warmup_start_factor=warmup_start_factor)

    def _lr_at(self, base, t):
        return base * self.gamma ** t


class LinearLR(_Schedule):
    r"""Linear ramp of the lr factor from ``start_factor`` to ``end_factor`` over ``total_iters``
    steps, then constant: :math:`\eta_t = \eta_0\,(a + (b - a)\min(t, T)/T)` — a linear
    warm-up on its own (``torch.optim.lr_scheduler.LinearLR``; ``start_factor`` in (0, 1],
    ``end_factor`` in [0, 1])."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5):
        self.start_factor = check_float(start_factor, "start_factor", low=0, high=1, low_open=True)
        self.end_factor = check_float(end_factor, "end_factor", low=0, high=1)
        self.total_iters = check_int(total_iters, "total_iters", low=1)
        super().__init__(optimizer)

    def _lr_at(self, base, t):
        a, b, n = self.start_factor, self.end_factor, self.total_iters
        return base * (a + (b - a) * min(n, t) / n)


class CosineLR(_Schedule):
    """Cosine annealing without restarts (Loshchilov & Hutter, "SGDR", ICLR 2017, eq. 5):
    :math:`\\eta_t = \\eta_{min} + \\tfrac12(\\eta_0 - \\eta_{min})(1 + \\cos(\\pi\\,t/T))` for
    :math:`t \\le T`, and :math:`\\eta_{min}` after."""

    def __init__(self, optimizer, t_max, eta_min=0.0, *, warmup=0, warmup_start_factor=None):
        self.t_max = int(check_positive(t_max, "t_max", integer=True))
        self.eta_min = float(check_positive(eta_min, "eta_min", allow_zero=True))
        super().__init__(optimizer, warmup=warmup, warmup_start_factor=warmup_start_factor)

    def _lr_at(self, base, t):
        t = min(t, self.t_max)
        return self.eta_min + 0.5 * (base - self.eta_min) * (1.0 + math.cos(math.pi * t / self.t_max))


class LambdaLR(_Schedule):
    """User factor: :math:`\\eta_t = \\eta_0\\, f(t)`, ``f`` returning a finite number ≥ 0."""

    def __init__(self, optimizer, fn, *, warmup=0, warmup_start_factor=None):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        self.fn = fn
        super().__init__(optimizer, warmup=warmup, warmup_start_factor=warmup_start_factor)

    def _lr_at(self, base, t):
        factor = self.fn(t)
        check_positive(factor, f"fn({t})", allow_zero=True)
        return base * float(factor)


class ReduceLROnPlateau:
    r"""Lower every group's lr by ``factor`` when a metric has not improved for ``patience`` steps
    (``torch.optim.lr_scheduler.ReduceLROnPlateau``); call ``step(metric)`` once per epoch.

    A value :math:`a` improves on the best :math:`b` so far when :math:`a < b(1-\tau)`
    (``mode="min"``, ``threshold_mode="rel"``), :math:`a < b - \tau` (``"abs"``), or
    :math:`a > b(1+\tau)` / :math:`a > b + \tau` with ``mode="max"``. After more than
    ``patience`` steps without improvement each lr becomes :math:`\max(\eta\,f, \eta_{min})`
    (a change smaller than ``eps`` is skipped), then ``cooldown`` steps pass without counting.
    ``min_lr``: one number, or one per parameter group. Unlike the closed-form schedules it starts
    from, and lowers, the lr the groups have now.
    """

    steps_on_metric = True          # fit passes the epoch's validation (else training) loss

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        self.optimizer = _check_optimizer(optimizer)
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor = check_float(factor, "factor", low=0, high=1, low_open=True, high_open=True)
        self.patience = check_int(patience, "patience", low=0)
        self.threshold = check_float(threshold, "threshold", low=0)
        self.cooldown = check_int(cooldown, "cooldown", low=0)
        self.min_lr = _per_group(min_lr, "min_lr", len(optimizer.groups), low=0)
        self.eps = check_float(eps, "eps", low=0)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_steps = self.cooldown_counter = self.last_step = 0

    def _improves(self, a: float) -> bool:
        b, tau = self.best, self.threshold
        if self.mode == "min":
            return a < (b * (1.0 - tau) if self.threshold_mode == "rel" else b - tau)
        return a > (b * (tau + 1.0) if self.threshold_mode == "rel" else b + tau)

    def step(self, metric) -> None:
        """Record one value of the monitored metric (a finite number) and lower the lrs if due."""
        value = check_float(metric, "metric")
        groups = self.optimizer.groups
        floors = _expand(self.min_lr, "min_lr", len(groups))
        self.last_step += 1
        if self._improves(value):
            self.best, self.num_bad_steps = value, 0
        else:
            self.num_bad_steps += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_steps = 0
        if self.num_bad_steps > self.patience:
            for group, floor in zip(groups, floors):
                new = max(group["lr"] * self.factor, floor)
                if group["lr"] - new > self.eps:
                    group["lr"] = new
            self.cooldown_counter, self.num_bad_steps = self.cooldown, 0

    def get_lr(self) -> list[float]:
        """The current lr of every group."""
        return [group["lr"] for group in self.optimizer.groups]

    @property
    def lr(self) -> list[float]:
        return self.get_lr()


class OneCycleLR:
    r"""The 1cycle policy (Smith & Topin, "Super-Convergence", 2019, §3; Smith, "A disciplined
    approach to neural network hyper-parameters", 2018, §4.1), as
    ``torch.optim.lr_scheduler.OneCycleLR``; step it after every batch, ``total_steps`` times
    (or ``epochs * steps_per_epoch``).

    With :math:`\eta_{max}` = ``max_lr`` (one number, or one per group),
    :math:`\eta_0 = \eta_{max}/d` (``div_factor``) and :math:`\eta_{min} = \eta_0/d_f`
    (``final_div_factor``), and :math:`p` = ``pct_start`` of :math:`T` = ``total_steps``: the lr
    rises from :math:`\eta_0` to :math:`\eta_{max}` until step :math:`pT - 1`, then falls to
    :math:`\eta_{min}` at step :math:`T - 1`; with ``three_phase`` it falls back to
    :math:`\eta_0` at :math:`2pT - 2` first. Within a phase from :math:`a` to :math:`b` at a
    fraction :math:`u` of it the value is :math:`b + \tfrac12(a - b)(1 + \cos\pi u)`
    (``anneal_strategy="cos"``) or :math:`a + (b - a)u` (``"linear"``). With ``cycle_momentum``
    the momentum (SGD, RMSprop) or :math:`\beta_1` (Adam, AdamW, NAdam) moves the other way,
    between ``max_momentum`` and ``base_momentum``. It overrides the optimizer's lr.
    """

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False):
        self.optimizer = _check_optimizer(optimizer)
        self.max_lr = _per_group(max_lr, "max_lr", len(optimizer.groups), low=0, low_open=True)
        if total_steps is None and (epochs is None or steps_per_epoch is None):
            raise ValueError("OneCycleLR needs total_steps, or epochs and steps_per_epoch, got "
                             f"epochs={epochs!r}, steps_per_epoch={steps_per_epoch!r}")
        self.total_steps = (check_int(total_steps, "total_steps", low=1) if total_steps is not None
                            else check_int(epochs, "epochs", low=1)
                            * check_int(steps_per_epoch, "steps_per_epoch", low=1))
        pct = check_float(pct_start, "pct_start", low=0, high=1, low_open=True, high_open=True)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        self.cycle_momentum = _check_flag(cycle_momentum, "cycle_momentum")
        three = _check_flag(three_phase, "three_phase")
        self.base_momentum = check_float(base_momentum, "base_momentum", low=0, high=1, high_open=True)
        self.max_momentum = check_float(max_momentum, "max_momentum", low=0, high=1, high_open=True)
        if self.base_momentum > self.max_momentum:
            raise ValueError(f"base_momentum ({base_momentum!r}) must not exceed max_momentum "
                             f"({max_momentum!r})")
        self.div_factor = check_float(div_factor, "div_factor", low=0, low_open=True)
        self.final_div_factor = check_float(final_div_factor, "final_div_factor", low=0, low_open=True)
        n = self.total_steps
        # (last step of the phase, lr from, lr to, momentum from, momentum to)
        self._phases = ([(pct * n - 1, "initial", "max", "max", "base"),
                         (2 * pct * n - 2, "max", "initial", "base", "max"),
                         (n - 1, "initial", "min", "max", "max")] if three else
                        [(pct * n - 1, "initial", "max", "max", "base"),
                         (n - 1, "max", "min", "base", "max")])
        ends = [0.0] + [p[0] for p in self._phases]
        if any(b <= a for a, b in zip(ends, ends[1:])):
            raise ValueError(f"pct_start={pct_start!r} with total_steps={n} leaves a phase without "
                             f"steps; raise total_steps or move pct_start")
        if self.cycle_momentum and not {"momentum", "betas"} & set(optimizer.defaults):
            raise ValueError(f"cycle_momentum=True needs an optimizer with momentum or betas; "
                             f"{type(optimizer).__name__} has neither (pass cycle_momentum=False)")
        self.last_step = 0
        self._apply()

    def _anneal(self, a: float, b: float, u: float) -> float:
        if self.anneal_strategy == "cos":
            return b + (a - b) / 2.0 * (math.cos(math.pi * u) + 1)
        return (b - a) * u + a

    def _apply(self) -> None:
        t = self.last_step
        if t > self.total_steps:
            raise ValueError(f"OneCycleLR stepped {t} times but total_steps is {self.total_steps}; "
                             f"build it with the number of optimizer steps the run makes")
        start = 0.0
        for i, phase in enumerate(self._phases):
            if t <= phase[0] or i == len(self._phases) - 1:
                u = (t - start) / (phase[0] - start)
                break
            start = phase[0]
        _, lr_a, lr_b, m_a, m_b = phase
        moms = {"base": self.base_momentum, "max": self.max_momentum}
        momentum = self._anneal(moms[m_a], moms[m_b], u)
        groups = self.optimizer.groups
        for group, top in zip(groups, _expand(self.max_lr, "max_lr", len(groups))):
            initial = top / self.div_factor
            lrs = {"initial": initial, "max": top, "min": initial / self.final_div_factor}
            group["lr"] = self._anneal(lrs[lr_a], lrs[lr_b], u)
            if self.cycle_momentum and "betas" in group:
                group["betas"] = (momentum, *group["betas"][1:])
            elif self.cycle_momentum:
                group["momentum"] = momentum

    def step(self) -> None:
        """Advance one step (one batch) and set every group's lr (and momentum)."""
        self.last_step += 1
        self._apply()

    def get_lr(self) -> list[float]:
        """The current lr of every group."""
        return [group["lr"] for group in self.optimizer.groups]

    @property
    def lr(self) -> list[float]:
        return self.get_lr()


SCHEDULES = {"step": StepLR, "cosine": CosineLR, "lambda": LambdaLR, "multistep": MultiStepLR,
             "exponential": ExponentialLR, "linear": LinearLR, "plateau": ReduceLROnPlateau,
             "onecycle": OneCycleLR}


def schedule(name: str, optimizer: Optimizer, **kw):
    """Build a schedule by name, a key of :data:`SCHEDULES`: ``"step"`` (:class:`StepLR`),
    ``"multistep"``, ``"exponential"``, ``"cosine"`` (:class:`CosineLR`), ``"lambda"``,
    ``"linear"`` (:class:`LinearLR`), ``"plateau"`` (:class:`ReduceLROnPlateau`), ``"onecycle"``."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    cls = SCHEDULES.get(name.lower())
    if cls is None:
        raise ValueError(f"unknown schedule {name!r}; valid names: {', '.join(SCHEDULES)}")
    return cls(optimizer, **kw)
