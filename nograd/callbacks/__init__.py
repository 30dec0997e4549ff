"""Callbacks for :func:`nograd.train.fit` that need more than the fit loop: they sit above both
:mod:`nograd.rules` and :mod:`nograd.train`. The general-purpose ones (:class:`~nograd.train.EarlyStopping`,
:class:`~nograd.train.Checkpoint`, :class:`~nograd.train.EpochLogger`) live beside ``fit`` in
:mod:`nograd.train`, with the :class:`~nograd.train.Callback` base class.

- :class:`AlignmentLogger`, :func:`update_angles`, :func:`feedback_angles` — how far a rule's
  update is from backprop's gradient, and each weight from its feedback matrix
  (:mod:`nograd.callbacks.alignment`).
"""
from .alignment import AlignmentLogger, feedback_angles, update_angles

__all__ = ["AlignmentLogger", "update_angles", "feedback_angles"]
