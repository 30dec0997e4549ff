r"""Representation analysis: how sparse, and how category-specific, hidden activities are.

The measures of Tosato et al. (2023), "Emergent representations in networks trained with the
Forward-Forward algorithm" (arXiv:2305.18353), for a layer's activities ``h`` of shape
``(N, J)`` — one row per sample, usually the correctly classified test samples:

- :func:`sparsity` — Hoyer's sparsity of each sample's activity vector (:func:`nograd.metrics.
  hoyer_sparsity`: 1 for a single active unit, 0 when every unit is equally active);
  :func:`sparsity_by_class` averages it over the samples of each class;
- :func:`active_fraction` — the fraction of units above a threshold, per sample;
- :func:`class_means` and :func:`category_ensembles` — the mean activity of every unit for every
  class, and for each class the *ensemble* of units whose class mean exceeds a threshold, with the
  overlap of the ensembles across classes;
- :func:`representation_report` — all of it for a list of layers, as plain dicts and floats.

>>> import numpy as np
>>> h = np.array([[0.0, 0.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
>>> sparsity(h).tolist()
[1.0, 0.0]
>>> active_fraction(h).tolist()
[0.25, 1.0]
"""
from __future__ import annotations

import numpy as np

from .core.checks import NonFiniteError, check_float
from .core.module import Module
from .metrics import hoyer_sparsity

__all__ = ["hidden_activities", "sparsity", "sparsity_by_class", "active_fraction", "class_means",
           "category_ensembles", "representation_report"]


def _check_h(h, name="h"):
    if not isinstance(h, np.ndarray) or h.ndim != 2 or h.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real array (samples, units), got "
                        f"{getattr(h, 'shape', type(h).__name__)}")
    if h.shape[0] == 0 or h.shape[1] < 2:
        raise ValueError(f"{name} needs at least one sample and two units, got shape {h.shape}")
    if not np.isfinite(h).all():
        raise NonFiniteError(f"{name} contains NaN or inf")
    return h


def _check_y(y, n, num_classes=None):
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.ndim != 1:
        raise TypeError(f"y must be integer labels (N,), got {getattr(y, 'dtype', type(y).__name__)}")
    if len(y) != n:
        raise ValueError(f"y has {len(y)} labels but h has {n} samples")
    if n and y.min() < 0:
        raise ValueError("y has negative labels")
    k = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if n and y.max() >= k:
        raise ValueError(f"y has labels up to {y.max()} but num_classes is {k}")
    return y, k


def hidden_activities(model, x):
    """The activity of every hidden layer of a ``[Flatten] (Linear, activation)* Linear`` model in
    evaluation mode: ``[(N, J_1), …]``, each taken after the layer's activations (the output layer
    is left out). For Forward-Forward use :meth:`~nograd.rules.ForwardForward.hidden_states`,
    which writes the label into the input and normalises between layers as FF does.

    The model is read through its structural view (:meth:`~nograd.core.module.Module.chain`) and
    what its leaves declare: ``shape_only`` leaves first (their output is flattened to
    ``(N, features)``), then ``dense`` layers, each followed by activations (``elementwise`` with a
    derivative ``df`` and no arrays)."""
    if not isinstance(model, Module):
        raise TypeError(f"hidden_activities: model must be a nograd Module, "
                        f"got {type(model).__name__}")
    steps = model.chain()
    dense = False
    for name, m in steps:
        activation = m.elementwise and m.df is not None and not m.params
        if m.children or not (m.dense or (activation and dense) or (m.shape_only and not dense)):
            raise ValueError(f"hidden_activities cannot read {type(m).__name__} (at "
                             f"{name or 'the model'!r}): it reads a chain [Flatten] (Linear, "
                             f"activation)* of fully connected layers; only Flatten/Reshape may "
                             f"come before the first Linear and only elementwise activations "
                             f"between Linear layers")
        dense = dense or m.dense
    if not dense:
        raise ValueError("hidden_activities: the model has no Linear layer")
    out, z, started = [], x, False
    for _, m in steps:
        if m.dense:
            if started:
                out.append(z)           # the previous layer's activity, after its activations
            else:
                z = z.reshape(z.shape[0], -1)
            started = True
        z = m(z)
    return out


def sparsity(h) -> np.ndarray:
    """Hoyer sparsity of each row of ``h`` ``(N, J)``, shape ``(N,)``; a silent row (all zeros)
    has no sparsity and gets NaN — the summaries here leave such rows out, as Tosato et al. do."""
    h = _check_h(h)
    return np.asarray(hoyer_sparsity(h, axis=1, zero=np.nan), dtype=np.float64)


def sparsity_by_class(h, y, num_classes=None) -> np.ndarray:
    """Mean Hoyer sparsity of the samples of each class, shape ``(C,)`` (NaN for a class without
    a sample with any activity)."""
    s = sparsity(h)
    y, k = _check_y(y, len(s), num_classes)
    out = np.full(k, np.nan)
    for c in range(k):
        v = s[(y == c) & ~np.isnan(s)]
        if len(v):
            out[c] = v.mean()
    return out


def active_fraction(h, threshold: float = 0.0) -> np.ndarray:
    """Fraction of units with activity above ``threshold`` in each row, shape ``(N,)``."""
    h = _check_h(h)
    return np.mean(h > threshold, axis=1)


def class_means(h, y, num_classes=None) -> np.ndarray:
    """Mean activity of every unit over the samples of every class, shape ``(C, J)`` (a class
    without samples gets a row of zeros)."""
    h = _check_h(h)
    y, k = _check_y(y, len(h), num_classes)
    out = np.zeros((k, h.shape[1]))
    for c in range(k):
        if np.any(y == c):
            out[c] = h[y == c].astype(np.float64).mean(axis=0)
    return out


def category_ensembles(h, y, num_classes=None, *, threshold: float = 0.2) -> dict:
    r"""Category-specific ensembles: for each class :math:`c`, the units :math:`j` with
    :math:`\bar h_{cj} \ge τ \max_{c',j'} \bar h_{c'j'}` (class means, :func:`class_means`; the
    threshold :math:`τ` = ``threshold`` is relative to the layer's largest class mean, so layers of
    any scale compare).

    Returns ``{"members": [unit indices per class], "sizes": (C,) ints, "size_fraction": mean
    ensemble size / J, "overlap": (C, C) Jaccard indices |E_a ∩ E_b| / |E_a ∪ E_b|,
    "mean_overlap": mean over pairs a < b, "specific_fraction": share of ensemble units that
    belong to exactly one class}``.
    """
    check_float(threshold, "threshold", low=0, high=1, low_open=True)
    m = class_means(h, y, num_classes)
    k, units = m.shape
    top = m.max()
    member = m >= threshold * top if top > 0 else np.zeros_like(m, dtype=bool)
    sizes = member.sum(axis=1)
    inter = member.astype(np.int64) @ member.T.astype(np.int64)
    union = sizes[:, None] + sizes[None, :] - inter
    overlap = np.divide(inter, union, out=np.zeros((k, k)), where=union > 0)
    pairs = overlap[np.triu_indices(k, 1)]
    count = member.sum(axis=0)
    in_any = count > 0
    return {"members": [np.flatnonzero(r) for r in member], "sizes": sizes,
            "size_fraction": float(sizes.mean() / units),
            "overlap": overlap, "mean_overlap": float(pairs.mean()) if len(pairs) else 0.0,
            "specific_fraction": float(np.mean(count[in_any] == 1)) if in_any.any() else 0.0}


def representation_report(layers, y, num_classes=None, *, mask=None, ensemble_threshold=0.2,
                          active_threshold=0.0) -> list[dict]:
    """One dict per layer of ``layers`` (a list of ``(N, J)`` activities of the same samples):
    ``hoyer`` (mean over samples), ``hoyer_std``, ``hoyer_by_class`` (list), ``active_fraction``
    (mean), ``silent_fraction`` (samples with no active unit), ``ensemble_size_fraction``,
    ``ensemble_overlap``, ``ensemble_specific_fraction``. ``mask`` (bool ``(N,)``) keeps a subset
    of the samples, e.g. the correctly classified ones."""
    if not isinstance(layers, (list, tuple)) or not layers:
        raise TypeError("layers must be a non-empty list of (N, J) arrays")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (len(y),):
            raise ValueError(f"mask must be a boolean array of shape ({len(y)},)")
        if not mask.any():
            raise ValueError("mask keeps no sample")
        layers = [_check_h(h, f"layers[{i}]")[mask] for i, h in enumerate(layers)]
        y = y[mask]
    out = []
    for i, h in enumerate(layers):
        s = sparsity(_check_h(h, f"layers[{i}]"))
        ens = category_ensembles(h, y, num_classes, threshold=ensemble_threshold)
        live = s[~np.isnan(s)]
        out.append({"layer": i + 1,
                    "hoyer": float(live.mean()) if len(live) else float("nan"),
                    "hoyer_std": float(live.std()) if len(live) else float("nan"),
                    "hoyer_by_class": [float(v) for v in sparsity_by_class(h, y, num_classes)],
                    "active_fraction": float(active_fraction(h, active_threshold).mean()),
                    "silent_fraction": float(np.mean(np.isnan(s))),
                    "ensemble_size_fraction": ens["size_fraction"],
                    "ensemble_overlap": ens["mean_overlap"],
                    "ensemble_specific_fraction": ens["specific_fraction"]})
    return out
