"""The per-epoch record of a :func:`nograd.train.fit` run, which callbacks read and extend.

>>> h = History()
>>> h.append({"epoch": 1, "loss": 0.9}); h.append({"epoch": 2, "loss": 0.5, "val_loss": 0.6})
>>> h["loss"], h["val_loss"], h.keys()
([0.9, 0.5], [None, 0.6], ['epoch', 'loss', 'val_loss'])
"""
from __future__ import annotations

import os

__all__ = ["History"]


class History:
    """Per-epoch records of a :func:`fit` run.

    ``records`` is a list of dicts, one per epoch, with ``epoch``, ``loss`` (mean training loss over
    the epoch's batches), ``train_accuracy`` (accuracy of the outputs the rule produced during the
    epoch, while the weights were moving), ``lr``, ``seconds`` (the epoch's wall time, evaluation
    included) and, with validation data, ``val_loss`` and ``val_accuracy``. ``hist["loss"]`` is the
    list of one column. ``info`` holds run-level facts (``train_seconds``, ``stopped_epoch``,
    ``best_epoch``).
    """

    def __init__(self):
        self.records: list[dict] = []
        self.info: dict = {}

    def append(self, record: dict) -> None:
        self.records.append(dict(record))

    def __len__(self):
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, key: str) -> list:
        if not any(key in r for r in self.records):
            raise KeyError(f"history has no column {key!r}; columns: {self.keys()}")
        return [r.get(key) for r in self.records]

    def keys(self) -> list[str]:
        """Column names in first-seen order."""
        out: list[str] = []
        for r in self.records:
            out += [k for k in r if k not in out]
        return out

    @property
    def last(self) -> dict:
        return dict(self.records[-1]) if self.records else {}

    def to_dict(self) -> dict:
        return {"epochs": [dict(r) for r in self.records], **self.info}

    def to_json(self, indent=None) -> str:
        """The history as a JSON string ``{"epochs": [...], <info>}``."""
        import json

        return json.dumps(self.to_dict(), indent=indent)

    def to_csv(self, path) -> None:
        """Write one row per epoch (header: the column names) to ``path``, atomically."""
        import csv
        import tempfile

        if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ValueError(f"path {path!r}: folder {folder!r} does not exist")
        cols = self.keys()
        fd, tmp = tempfile.mkstemp(prefix=".nograd-", suffix=".csv.tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(cols)
                for r in self.records:
                    w.writerow(["" if r.get(c) is None else r[c] for c in cols])
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def __repr__(self):
        return f"History({len(self)} epochs, columns {self.keys()})"
