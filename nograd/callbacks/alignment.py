r"""Alignment metrics of the feedback rules: how far an update is from the true gradient.

- :func:`update_angles` — per parameter, the angle between a rule's update and backprop's gradient
  on the same batch (same dropout masks). Below 90° the update is a descent direction for that
  layer; Lillicrap et al. (2016) and Nøkland (2016) show it falling well below 90°
  as the forward weights come to align with the feedback.
- :func:`feedback_angles` — per weight, the angle between :math:`W` and the feedback matrix
  :math:`B` that replaces it in the backward pass (FA and the sign-symmetry variants), the measure
  BioTorch reports (Sanfiz & Akrout 2021).
- :class:`AlignmentLogger` — a :func:`nograd.fit` callback that adds both to every epoch's record
  (columns ``angle/<param>`` and ``wb_angle/<param>``).

Angles come from :func:`nograd.metrics.angle` (degrees, float64, exact 0 for equal inputs).
This module used to be ``nograd.rules.alignment``; it measures rules but is not one, so it sits
with the :func:`~nograd.train.fit` callbacks, above the rules. The old path still works.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from ..core.checks import check_int
from ..metrics import angle
from ..rules.backprop import Backprop
from .base import Callback

__all__ = ["update_angles", "feedback_angles", "AlignmentLogger"]


def _angle_or_nan(a, b):
    try:
        return angle(a, b)
    except ValueError:          # an all-zero update or gradient has no direction
        return math.nan


def update_angles(rule, model, x, y, *, seed=0, reference=None) -> dict[str, float]:
    """``{param name: degrees}`` between ``rule``'s update and backprop's gradient on ``(x, y)``.

    Both run with generators from the same ``seed`` (so dropout masks agree) on a *copy* of the
    rule, so a rule's state (brSF draws, PEPITA's mirrored F) is not advanced by measuring it.
    ``reference`` replaces backprop (default: ``Backprop`` with the rule's loss and options).
    An all-zero update gives ``nan`` for that parameter.
    """
    if reference is None:
        reference = Backprop(getattr(rule, "loss", "cross-entropy"),
                             **(getattr(rule, "loss_options", None) or {}))
    g_ref, _ = reference.grads(model, x, y, rng=np.random.default_rng(seed))
    g, _ = copy.deepcopy(rule).grads(model, x, y, rng=np.random.default_rng(seed))
    return {k: _angle_or_nan(g[k], g_ref[k]) for k in g_ref}


def feedback_angles(rule, model) -> dict[str, float]:
    """``{weight name: degrees}`` between each weight :math:`W` and its feedback matrix :math:`B`.

    Defined for rules whose feedback matrices have the weights' shapes (:class:`FA`, :class:`USF`,
    :class:`FRSF`, :class:`BRSF`); other rules raise ``TypeError``. Under FA it is the weights
    *above* a hidden layer that turn towards their :math:`B` (Lillicrap et al. 2016); the
    first layer's :math:`B` is never used (nothing lies below it), so its angle stays near 90°.
    """
    fm = getattr(rule, "feedback_matrices", None)
    if not callable(fm):
        raise TypeError(f"{type(rule).__name__} has no feedback matrices shaped like the weights; "
                        f"use update_angles for it")
    params = model.params
    B = copy.deepcopy(rule).feedback_matrices(model, rng=np.random.default_rng(0))
    return {k: _angle_or_nan(params[k], b) for k, b in B.items()}


class AlignmentLogger(Callback):
    """Log per-layer alignment angles into the :class:`~nograd.train.History` of :func:`nograd.fit`.

    Every ``every`` epochs (and after the last) the probe batch ``(x, y)`` is used to compute
    :func:`update_angles`, stored as ``angle/<param>`` in the epoch's record, and — for rules with
    feedback matrices shaped like the weights — :func:`feedback_angles` as ``wb_angle/<param>``.
    ``weights_only`` (default) keeps only the ``weight`` parameters.
    """

    def __init__(self, x, y, *, every: int = 1, seed: int = 0, weights_only: bool = True):
        if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
            raise TypeError("AlignmentLogger needs a probe batch (x, y) of numpy arrays")
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"probe batch x has {len(x)} samples and y has {len(y)}; they must "
                             f"match and be non-empty")
        check_int(every, "every", low=1)
        self.x, self.y, self.every, self.seed = x, y, every, int(seed)
        self.weights_only = bool(weights_only)

    def on_epoch_end(self, state):
        if state.epoch % self.every and state.epoch != state.epochs and not state.stop:
            return
        record = state.history.records[-1]
        keep = (lambda k: k.endswith("weight")) if self.weights_only else (lambda k: True)
        for k, v in update_angles(state.rule, state.model, self.x, self.y, seed=self.seed).items():
            if keep(k):
                record[f"angle/{k}"] = v
        if callable(getattr(state.rule, "feedback_matrices", None)):
            for k, v in feedback_angles(state.rule, state.model).items():
                record[f"wb_angle/{k}"] = v
