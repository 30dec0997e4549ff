"""Saving the model during training: every few epochs, or when a history column improves."""
from __future__ import annotations

import os

from ..core.checks import check_positive
from ..serialize import save        # the core saver plus the sweep of our stale temporaries
from .base import Callback, monitor_mode, monitored_value

__all__ = ["Checkpoint"]


class Checkpoint(Callback):
    """Save the model with :func:`nograd.save` (``.npz``, atomic) during training.

    Without ``monitor`` the model is saved every ``every`` epochs (and after the last); with
    ``monitor`` (e.g. ``"val_accuracy"``) only when that column improves. ``path`` may contain
    ``{epoch}``, filled in for each save. ``saved`` lists the files written.
    """

    def __init__(self, path, *, monitor: str | None = None, mode: str = "auto", every: int = 1):
        if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self.path = os.fspath(path)
        self.monitor = monitor
        self.mode = None if monitor is None else monitor_mode(monitor, mode)
        self.every = int(check_positive(every, "every", integer=True))
        self.saved: list[str] = []

    def on_train_begin(self, state):
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise ValueError(f"Checkpoint path {self.path!r}: folder {folder!r} does not exist")
        self.best = None

    def on_epoch_end(self, state):
        if self.monitor is None:
            if state.epoch % self.every and not (state.stop or state.epoch == state.epochs):
                return
        else:
            value = monitored_value(state, self.monitor, "Checkpoint")
            if self.best is not None and not (value < self.best if self.mode == "min"
                                              else value > self.best):
                return
            self.best = value
        target = self.path.format(epoch=state.epoch)
        save(state.model, target)
        self.saved.append(target)
