"""CIFAR-10 from the "python version" batches (Krizhevsky 2009, "Learning Multiple Layers of
Features from Tiny Images", https://www.cs.toronto.edu/~kriz/cifar.html).

The batches are Python pickles — that *is* the distributed file format, so they are read with
:mod:`pickle`. Unpickling can run arbitrary code: load only files you trust (the official
``cifar-10-python.tar.gz``, unpacked). nograd never writes pickles itself.
"""
from __future__ import annotations

import os

import numpy as np

from ..core.checks import check_dtype
from ._io import check_path

__all__ = ["load_cifar10"]

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"


def _read_batch(path: str):
    """One pickled batch: a dict with ``data`` (N, 3072) uint8 and ``labels`` (N ints in 0..9)."""
    import pickle

    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError,
            TypeError, ValueError, OSError) as e:
        raise ValueError(f"{path!r} is not a readable CIFAR-10 python batch ({type(e).__name__}: "
                         f"{e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path!r} is not a CIFAR-10 batch: it holds a {type(d).__name__}, "
                         f"expected a dict with 'data' and 'labels'")
    d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise ValueError(f"{path!r} is not a CIFAR-10 batch: keys {sorted(map(str, d))}, expected "
                         f"'data' and 'labels'")
    data, labels = d["data"], np.asarray(d["labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        shape = getattr(data, "shape", type(data).__name__)
        raise ValueError(f"{path!r}: 'data' must be a uint8 array of shape (N, 3072), got {shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(data):
        raise ValueError(f"{path!r}: 'labels' must be {len(data)} integers (one per image), got "
                         f"shape {labels.shape} of {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path!r}: labels must be in 0..9, got {labels.min()}..{labels.max()}")
    return data, labels.astype(np.int64)


def load_cifar10(root, *, dtype=np.float32, flatten=False):
    """CIFAR-10 from a folder of python batches: ``data_batch_1`` … ``data_batch_5`` and
    ``test_batch`` (directly in ``root`` or in ``root/cifar-10-batches-py``).

    Returns ``X_train, y_train, X_test, y_test``; images ``(N, 3, 32, 32)`` (channels first, as the
    file stores them) scaled to [0, 1], or ``(N, 3072)`` with ``flatten=True``; labels int64 in 0..9.
    A missing batch raises ``ValueError`` naming every missing file. Only load batches you trust:
    they are pickles (see the module docstring).
    """
    root = check_path(root, "root", kind="dir")
    dt = check_dtype(dtype)
    sub = os.path.join(root, "cifar-10-batches-py")
    if not os.path.isfile(os.path.join(root, TEST_BATCH)) and os.path.isdir(sub):
        root = sub
    names = TRAIN_BATCHES + (TEST_BATCH,)
    missing = [n for n in names if not os.path.isfile(os.path.join(root, n))]
    if missing:
        raise ValueError(f"CIFAR-10 batches missing from {root!r}: {', '.join(missing)}; unpack "
                         f"the official cifar-10-python.tar.gz there")
    parts = [_read_batch(os.path.join(root, n)) for n in names]

    def images(data):
        X = data.astype(dt) / dt.type(255)
        return X if flatten else X.reshape(len(X), 3, 32, 32)

    X_train = images(np.concatenate([p[0] for p in parts[:-1]]))
    y_train = np.concatenate([p[1] for p in parts[:-1]])
    X_test, y_test = images(parts[-1][0]), parts[-1][1]
    return X_train, y_train, X_test, y_test
