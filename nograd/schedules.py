"""Learning-rate schedules over an optimizer's parameter groups: ``StepLR``, ``CosineLR``,
``LambdaLR`` (the PyTorch semantics: call ``step()`` once per epoch, after the optimizer steps).

A schedule sets every group's ``lr`` from that group's ``initial_lr``, so the groups a rule adds
to the optimizer (``rule.params``) follow it too. :func:`nograd.train.fit` steps a schedule once
per epoch, or after every batch with ``schedule_every="batch"``.

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

import math

from .core.checks import check_positive
from .core.optim import Optimizer

__all__ = ["StepLR", "CosineLR", "LambdaLR", "schedule", "SCHEDULES"]


class _Schedule:
    """Sets every group's ``lr`` to ``factor(t)``-style function of its ``initial_lr``."""

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a nograd Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.last_step = 0
        self._apply()

    def _lr_at(self, base: float, t: int) -> float:
        raise NotImplementedError

    def _apply(self) -> None:
        for group in self.optimizer.groups:
            group["lr"] = self._lr_at(group["initial_lr"], self.last_step)

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

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size = int(check_positive(step_size, "step_size", integer=True))
        self.gamma = float(check_positive(gamma, "gamma"))
        super().__init__(optimizer)

    def _lr_at(self, base, t):
        return base * self.gamma ** (t // self.step_size)


class CosineLR(_Schedule):
    """Cosine annealing without restarts (Loshchilov & Hutter, "SGDR", ICLR 2017, eq. 5):
    :math:`\\eta_t = \\eta_{min} + \\tfrac12(\\eta_0 - \\eta_{min})(1 + \\cos(\\pi\\,t/T))` for
    :math:`t \\le T`, and :math:`\\eta_{min}` after."""

    def __init__(self, optimizer, t_max, eta_min=0.0):
        self.t_max = int(check_positive(t_max, "t_max", integer=True))
        self.eta_min = float(check_positive(eta_min, "eta_min", allow_zero=True))
        super().__init__(optimizer)

    def _lr_at(self, base, t):
        t = min(t, self.t_max)
        return self.eta_min + 0.5 * (base - self.eta_min) * (1.0 + math.cos(math.pi * t / self.t_max))


class LambdaLR(_Schedule):
    """User factor: :math:`\\eta_t = \\eta_0\\, f(t)`, ``f`` returning a finite number ≥ 0."""

    def __init__(self, optimizer, fn):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        self.fn = fn
        super().__init__(optimizer)

    def _lr_at(self, base, t):
        factor = self.fn(t)
        check_positive(factor, f"fn({t})", allow_zero=True)
        return base * float(factor)


SCHEDULES = {"step": StepLR, "cosine": CosineLR, "lambda": LambdaLR}


def schedule(name: str, optimizer: Optimizer, **kw) -> _Schedule:
    """Build a schedule by name: ``"step"`` (:class:`StepLR`), ``"cosine"`` (:class:`CosineLR`),
    ``"lambda"`` (:class:`LambdaLR`)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    cls = SCHEDULES.get(name.lower())
    if cls is None:
        raise ValueError(f"unknown schedule {name!r}; valid names: {', '.join(SCHEDULES)}")
    return cls(optimizer, **kw)
