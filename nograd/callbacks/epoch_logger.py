"""One line of text per epoch: loss, accuracies and seconds."""
from __future__ import annotations

from ..core.checks import check_positive
from .base import Callback

__all__ = ["EpochLogger"]


class EpochLogger(Callback):
    """Write one line per epoch (every ``every`` epochs, and the last): epoch, loss, accuracies,
    seconds — to ``file`` (default stdout). ``val_name`` labels the validation columns."""

    def __init__(self, every: int = 1, file=None, val_name: str = "val"):
        self.every = int(check_positive(every, "every", integer=True))
        self.file, self.val_name = file, val_name

    def on_epoch_end(self, state):
        if state.epoch % self.every and state.epoch != state.epochs and not state.stop:
            return
        r = state.history.records[-1]
        width = len(str(state.epochs))
        parts = [f"epoch {state.epoch:{width}d}/{state.epochs}", f"loss {r['loss']:.4f}"]
        if r.get("train_accuracy") is not None:
            parts.append(f"train acc {r['train_accuracy']:.3f}")
        if r.get("val_loss") is not None:
            parts += [f"{self.val_name} loss {r['val_loss']:.4f}",
                      f"{self.val_name} acc {r['val_accuracy']:.3f}"]
        parts.append(f"{r['seconds']:.2f} s")
        state.log("  ".join(parts), self.file)
