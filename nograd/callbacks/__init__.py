"""Callbacks of :func:`nograd.train.fit`, one per file, and what they build on.

- :class:`Callback` and :class:`TrainState` — the base class with its hooks and what the hooks
  are handed (:mod:`.base`); :class:`History` — the per-epoch records fit returns (:mod:`.history`).
- :class:`EarlyStopping` (:mod:`.early_stopping`), :class:`Checkpoint` (:mod:`.checkpoint`),
  :class:`EpochLogger` (:mod:`.epoch_logger`) — the general-purpose callbacks.
- :class:`AlignmentLogger`, :func:`update_angles`, :func:`feedback_angles` — how far a rule's
  update is from backprop's gradient, and each weight from its feedback matrix
  (:mod:`.alignment`).

This room sits beside :mod:`nograd.train`, above :mod:`nograd.rules`; ``nograd.train`` re-exports
the general-purpose names, so ``from nograd.train import EarlyStopping`` gives the same class.
"""
from .base import Callback, TrainState
from .history import History
from .early_stopping import EarlyStopping
from .checkpoint import Checkpoint
from .epoch_logger import EpochLogger
from .alignment import AlignmentLogger, feedback_angles, update_angles

__all__ = ["Callback", "TrainState", "History", "EarlyStopping", "Checkpoint", "EpochLogger",
           "AlignmentLogger", "update_angles", "feedback_angles"]
