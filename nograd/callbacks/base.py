"""What every :func:`nograd.train.fit` callback builds on: the :class:`TrainState` it is handed and
the :class:`Callback` base class with its three hooks, plus the two helpers of the callbacks that
watch a history column (:func:`monitor_mode`, :func:`monitored_value`).

``fit`` calls, in the order the callbacks were given, ``on_train_begin(state)`` once,
``on_epoch_end(state)`` after each epoch's record is in ``state.history``, and ``on_train_end(state)``
once when training stops (after the last epoch, or after a callback set ``state.stop = True``).
"""
from __future__ import annotations

import sys

__all__ = ["TrainState", "Callback", "monitor_mode", "monitored_value"]


class TrainState:
    """What callbacks see: the model, optimizer, rule, history, the current ``epoch`` (1-based)
    and ``epochs``. Setting ``stop = True`` ends training after this epoch. ``log(text)`` writes a
    line without breaking the progress line."""

    def __init__(self, model, optimizer, rule, history, epochs, progress):
        self.model, self.optimizer, self.rule, self.history = model, optimizer, rule, history
        self.epochs, self.epoch, self.stop = epochs, 0, False
        self._progress = progress

    def log(self, text: str, file=None) -> None:
        self._progress.write(text, sys.stdout if file is None else file)


class Callback:
    """Base class: override any of the hooks; each receives the :class:`TrainState`."""

    def on_train_begin(self, state: TrainState) -> None:
        pass

    def on_epoch_end(self, state: TrainState) -> None:
        pass

    def on_train_end(self, state: TrainState) -> None:
        pass


def monitor_mode(monitor: str, mode: str) -> str:
    """``"min"`` or ``"max"``: ``mode`` itself, or for ``"auto"`` minimise a column whose name ends
    in ``loss`` and maximise any other (accuracies)."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "min" if monitor.endswith("loss") else "max"
    return mode


def monitored_value(state: TrainState, monitor: str, who: str) -> float:
    """The value of column ``monitor`` in the last epoch's record; ``ValueError`` naming ``who`` and
    the columns there are when the column is missing (a ``val_`` column without ``val=`` data)."""
    record = state.history.records[-1]
    if record.get(monitor) is None:
        hint = "; pass val=(X, y) to fit" if monitor.startswith("val_") else ""
        raise ValueError(f"{who} monitors {monitor!r} but the history has only "
                         f"{[k for k, v in record.items() if v is not None]}{hint}")
    return float(record[monitor])
