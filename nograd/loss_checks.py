"""Argument checks shared by the losses of :mod:`nograd.losses`, and the stable log-softmax.

Each check takes the value and the argument's name and returns the value validated (and cast to the
prediction's dtype where it says so), or raises a ``TypeError``/``ValueError`` naming the argument
(DESIGN.md §4). Split from :mod:`nograd.losses` to keep that file within its line budget; it
imports only :mod:`nograd.core.checks`.
"""
from __future__ import annotations

import numpy as np

from .core.checks import NonFiniteError, all_finite, check_int


def check_labels(y, n: int, num_classes: int | None = None, name: str = "y", *,
                 ignore_index: int | None = None) -> np.ndarray:
    """Integer class labels of length ``n`` in ``[0, num_classes)``; entries equal to
    ``ignore_index`` (when given) are exempt from the range check."""
    if not isinstance(y, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(y).__name__}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per sample), got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels but the batch has {n} samples")
    kept = y if ignore_index is None else y[y != ignore_index]
    if kept.size and num_classes is not None and (kept.min() < 0 or kept.max() >= num_classes):
        raise ValueError(f"{name} has labels outside [0, {num_classes}): "
                         f"min {kept.min()}, max {kept.max()}"
                         + ("" if ignore_index is None else f" (ignore_index is {ignore_index})"))
    return y


def check_ignore_index(ignore_index) -> int | None:
    """``None`` or an integer label value (never a bool) that a loss leaves out of its mean."""
    return check_int(ignore_index, "ignore_index", allow_none=True)


def kept_labels(y: np.ndarray, ignore_index: int | None):
    """``(rows, labels)`` of the samples whose label is not ``ignore_index``; a ``ValueError``
    when none is left (a mean over no sample would be NaN, as PyTorch returns)."""
    if ignore_index is None:
        return np.arange(y.shape[0]), y
    rows = np.flatnonzero(y != ignore_index)
    if not rows.size:
        raise ValueError(f"every target equals ignore_index ({ignore_index}); the batch has no "
                         f"label to average over")
    return rows, y[rows]


def flatten_tokens(pred: np.ndarray, target, pred_name: str, probabilities: bool):
    """Token form: ``pred`` (..., C) to (N, C) with N the product of the leading axes, and
    ``target`` (...) integer labels to (N,) — or, when ``probabilities``, (..., C) to (N, C)."""
    lead, c = pred.shape[:-1], pred.shape[-1]
    if not isinstance(target, np.ndarray):
        raise TypeError(f"target must be a numpy.ndarray, got {type(target).__name__}")
    n = int(np.prod(lead))
    if target.shape == lead:
        return pred.reshape(n, c), target.reshape(-1)
    if probabilities and target.shape == pred.shape:
        return pred.reshape(n, c), target.reshape(-1, c)
    also = f" or class probabilities of shape {pred.shape}" if probabilities else ""
    raise ValueError(f"target has shape {target.shape} but {pred_name} of shape {pred.shape} "
                     f"need integer labels of shape {lead}{also}")


def check_number(value, name: str) -> float:
    """A finite real number (bools refused), returned as a Python float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not np.isfinite(value):
        raise NonFiniteError(f"{name} must be finite, got {value!r}")
    return float(value)


def check_weights(w, name: str, dtype, shape=None, broadcast_to=None) -> np.ndarray:
    """Non-negative finite weights, cast to ``dtype``; exact ``shape`` or broadcastable."""
    arr = np.asarray(w)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} must have one entry per class, shape {shape}, got {arr.shape}")
    if broadcast_to is not None:
        try:
            ok = np.broadcast_shapes(arr.shape, broadcast_to) == broadcast_to
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{name} of shape {arr.shape} does not broadcast to the logits' "
                             f"shape {broadcast_to}")
    arr = arr.astype(np.float64)
    if not all_finite(arr):
        raise NonFiniteError(f"{name} contains NaN or inf")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must be non-negative, got min {arr.min()}")
    return arr.astype(dtype)


def check_target_like(target, pred: np.ndarray, name: str = "target") -> np.ndarray:
    """A real-valued target of exactly pred's shape, finite, cast to pred's dtype."""
    if not isinstance(target, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(target).__name__}")
    if target.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {target.dtype}")
    if target.shape != pred.shape:
        raise ValueError(f"{name} has shape {target.shape} but the prediction has shape "
                         f"{pred.shape}; they must match exactly")
    if target.dtype.kind == "f" and not all_finite(target):
        raise NonFiniteError(f"{name} contains NaN or inf")
    return target.astype(pred.dtype, copy=False)


def check_probabilities(target: np.ndarray, n: int, c: int, dtype) -> np.ndarray:
    """Rows of class probabilities: shape (n, c), non-negative, each summing to 1 (± 1e-4)."""
    if target.dtype.kind not in "biuf":
        raise TypeError(f"target must hold class probabilities, got dtype {target.dtype}")
    if target.shape != (n, c):
        raise ValueError(f"target must be integer labels of shape ({n},) or class probabilities "
                         f"of shape ({n}, {c}), got shape {target.shape}")
    t = target.astype(np.float64)
    if not all_finite(t):
        raise NonFiniteError("target contains NaN or inf")
    if t.min() < 0:
        raise ValueError(f"target has negative class probabilities (min {t.min():.6g})")
    sums = t.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-4)
    if bad.size:
        raise ValueError(f"target rows must sum to 1 (within 1e-4); row {bad[0]} sums to "
                         f"{sums[bad[0]]:.6g}")
    return target.astype(dtype)


def log_softmax(z: np.ndarray) -> np.ndarray:
    """log softmax over axis 1 by the shifted log-sum-exp: z − m − log Σ exp(z − m), m = max z."""
    s = z - z.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))
