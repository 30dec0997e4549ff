"""Early stopping on a history column, with the best epoch's weights restored."""
from __future__ import annotations

from ..core.checks import check_positive
from .base import Callback, monitor_mode, monitored_value

__all__ = ["EarlyStopping"]


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    ``mode="auto"`` minimises a name ending in ``loss`` and maximises anything else. With
    ``restore_best=True`` (default) the parameters and buffers of the best epoch are copied back
    into the model's arrays (in place) when training ends, whether it stopped early or not; the
    history records ``best_epoch`` and ``stopped_epoch``.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, *, min_delta: float = 0.0,
                 mode: str = "auto", restore_best: bool = True):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a history column name, got {monitor!r}")
        self.monitor, self.mode = monitor, monitor_mode(monitor, mode)
        self.patience = int(check_positive(patience, "patience", integer=True, allow_zero=True))
        self.min_delta = float(check_positive(min_delta, "min_delta", allow_zero=True))
        self.restore_best = bool(restore_best)

    def on_train_begin(self, state):
        self.best, self.best_epoch, self.wait, self._snapshot = None, None, 0, None

    def on_epoch_end(self, state):
        value = monitored_value(state, self.monitor, "EarlyStopping")
        better = (self.best is None or
                  (value < self.best - self.min_delta if self.mode == "min"
                   else value > self.best + self.min_delta))
        if better:
            self.best, self.best_epoch, self.wait = value, state.epoch, 0
            if self.restore_best:
                m = state.model
                self._snapshot = ({k: v.copy() for k, v in m.params.items()},
                                  {k: v.copy() for k, v in m.buffers.items()})
        else:
            self.wait += 1
            if self.wait > self.patience:
                state.stop = True
                state.history.info["stopped_epoch"] = state.epoch

    def on_train_end(self, state):
        state.history.info["best_epoch"] = self.best_epoch
        if self.restore_best and self._snapshot is not None and self.best_epoch != state.epoch:
            params, buffers = self._snapshot
            for store, saved in ((state.model.params, params), (state.model.buffers, buffers)):
                for k, v in saved.items():
                    store[k][...] = v
