r"""Class re-balancing of a training set: random under-sampling, random over-sampling and SMOTE.

Each function takes features ``X (N, F)`` and integer labels ``y (N,)`` and returns a new pair in
which every class has the same number of samples. They are meant for the *training* part of a
split only: re-balancing before the split puts copies (or interpolations) of the same patient on
both sides of it, and the test score then measures memory, not diagnosis.
:func:`nograd.data.cross_validate` applies them inside the training folds.

>>> import numpy as np
>>> X = np.arange(12, dtype=np.float64).reshape(6, 2)
>>> y = np.array([0, 0, 0, 0, 1, 1])
>>> np.bincount(random_undersample(X, y, rng=0)[1]).tolist()
[2, 2]
>>> np.bincount(random_oversample(X, y, rng=0)[1]).tolist()
[4, 4]
>>> Xs, ys = smote(X, y, k=1, rng=0)       # class 1 is (8, 9) and (10, 11): new points between
>>> np.bincount(ys).tolist()
[4, 4]
>>> bool(np.all((Xs[6:, 0] >= 8) & (Xs[6:, 0] <= 10) & (Xs[6:, 1] - Xs[6:, 0] == 1)))
True
"""
from __future__ import annotations

import numpy as np

from ..core.checks import NonFiniteError, as_rng, check_positive
from .split import _check_labels, _check_same_length

__all__ = ["random_undersample", "random_oversample", "smote", "rebalance", "BALANCE_METHODS"]

#: the names :func:`rebalance` (and ``python -m nograd diabetes --balance``) accept
BALANCE_METHODS = ("none", "under", "over", "smote")


def _check_xy(X, y):
    """2-D finite float features and 1-D labels of the same length."""
    if not isinstance(X, np.ndarray):
        raise TypeError(f"X must be a numpy.ndarray, got {type(X).__name__}")
    if X.ndim != 2:
        raise ValueError(f"X must be a table (N, F) of samples by features, got shape {X.shape}")
    if X.dtype.kind != "f":
        raise TypeError(f"X must be a float array, got dtype {X.dtype}")
    y = _check_labels(y)
    _check_same_length(X, y)
    if len(y) == 0:
        raise ValueError("X and y are empty; there is nothing to re-balance")
    holes = np.isnan(X)
    if holes.any():
        cols = np.flatnonzero(holes.any(axis=0)).tolist()
        raise ValueError(f"X has {int(holes.sum())} missing values (NaN) in columns {cols}; impute "
                         f"them first (e.g. nograd.data.MedianImputer fitted on the training set)")
    if not np.isfinite(X).all():
        raise NonFiniteError("X contains inf")
    return X, y


def _classes(y):
    classes, counts = np.unique(y, return_counts=True)
    return classes, counts


def random_undersample(X, y, *, rng=None, replace=False, return_index=False):
    r"""Keep :math:`n_{\min}` samples of every class, :math:`n_{\min}` the smallest class count.

    A class of :math:`n_{\min}` samples is kept whole. The kept samples of a larger class are a
    uniform draw from ``rng`` — without replacement by default; ``replace=True`` draws with
    replacement (as ``sklearn.utils.resample(majority, replace=True, n_samples=n_min)`` does), so a
    sample may appear twice and others not at all. The output lists the classes in label order,
    each class's rows in the order drawn. ``return_index=True`` also returns the row of ``X`` each
    output row comes from.
    """
    X, y = _check_xy(X, y)
    rng = as_rng(rng)
    classes, counts = _classes(y)
    n_min = int(counts.min())
    parts = []
    for c, n_c in zip(classes, counts):
        members = np.flatnonzero(y == c)
        parts.append(members if n_c == n_min else
                     rng.choice(members, size=n_min, replace=bool(replace)))
    idx = np.concatenate(parts)
    out = (X[idx], y[idx])
    return out + (idx,) if return_index else out


def random_oversample(X, y, *, rng=None, return_index=False):
    r"""Bring every class up to :math:`n_{\max}` samples by repeating its own samples.

    All original rows are kept (first, in their order); class :math:`c` then gets
    :math:`n_{\max} - n_c` extra copies drawn uniformly with replacement from its members.
    ``return_index=True`` also returns the row of ``X`` each output row comes from.
    """
    X, y = _check_xy(X, y)
    rng = as_rng(rng)
    classes, counts = _classes(y)
    n_max = int(counts.max())
    parts = [np.arange(len(y))]
    for c, n_c in zip(classes, counts):
        if n_c < n_max:
            parts.append(rng.choice(np.flatnonzero(y == c), size=n_max - int(n_c), replace=True))
    idx = np.concatenate(parts)
    out = (X[idx], y[idx])
    return out + (idx,) if return_index else out


def _neighbours(Z, k, block=256):
    """Indices ``(n, k)`` of the ``k`` nearest other rows of ``Z`` (Euclidean), nearest first.

    Distances are summed squared differences (exact, no ``|a|² - 2ab + |b|²`` cancellation), a
    block of rows at a time so memory stays at ``block × n × F``; ties go to the lower index.
    """
    n = len(Z)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        diff = Z[start:stop, None, :] - Z[None, :, :]
        d = np.einsum("ijf,ijf->ij", diff, diff)
        d[np.arange(stop - start), np.arange(start, stop)] = np.inf       # not its own neighbour
        out[start:stop] = np.argsort(d, axis=1, kind="stable")[:, :k]   # self (inf) is last
    return out


def smote(X, y, *, k: int = 5, rng=None, scale: bool = True, return_parents: bool = False):
    r"""SMOTE (Chawla, Bowyer, Hall & Kegelmeyer 2002, "SMOTE: Synthetic Minority Over-sampling
    Technique", JAIR 16, §4.2): bring every class up to :math:`n_{\max}` samples with synthetic ones
    placed on segments between a sample and one of its same-class nearest neighbours.

    For a class with :math:`n_c < n_{\max}` samples, :math:`m = n_{\max} - n_c` new points are made.
    Every member is a base point :math:`\lfloor m / n_c\rfloor` times, and a random subset of
    :math:`m \bmod n_c` members once more. For each base point :math:`x_i` a neighbour :math:`x_j`
    is drawn uniformly among its ``k`` nearest members of the same class, and a gap :math:`u \sim
    U[0, 1)`, giving

    .. math::
        x_{\text{new}} = x_i + u\,(x_j - x_i).

    With ``scale=True`` (default) the neighbours are found after dividing each feature by its
    standard deviation over ``X`` (a constant feature by 1), so that a feature measured in large
    units does not decide alone; the new points are interpolated in ``X``'s own units (the same
    points, since scaling commutes with interpolation). ``scale=False`` uses plain Euclidean
    distance, as in the paper. ``k`` is capped at :math:`n_c - 1`; a class that needs new points
    must have at least 2 samples.

    Returns ``X_out, y_out``: the original rows first (in order), then the synthetic rows, class by
    class. ``return_parents=True`` also returns ``parents (N_out, 2)`` and ``gaps (N_out,)`` with
    ``X_out[r] = X[i] + gaps[r] * (X[j] - X[i])`` for ``(i, j) = parents[r]`` (``i = j``, gap 0 for
    the original rows).
    """
    X, y = _check_xy(X, y)
    check_positive(k, "k", integer=True)
    rng = as_rng(rng)
    classes, counts = _classes(y)
    n_max = int(counts.max())
    if scale:
        std = X.std(axis=0)
        Z = X / np.where(std > 0, std, 1.0)
    else:
        Z = X
    base_parts, nb_parts, lab_parts = [], [], []
    for c, n_c in zip(classes, counts):
        n_c = int(n_c)
        m = n_max - n_c
        if m == 0:
            continue
        if n_c < 2:
            raise ValueError(f"SMOTE needs at least 2 samples of class {int(c)} to interpolate "
                             f"between, got {n_c}; use random over-sampling for it")
        members = np.flatnonzero(y == c)
        kk = min(int(k), n_c - 1)
        near = _neighbours(Z[members].astype(np.float64), kk)
        reps = np.full(n_c, m // n_c)
        reps[rng.choice(n_c, size=m % n_c, replace=False)] += 1
        base = np.repeat(np.arange(n_c), reps)
        pick = near[base, rng.integers(0, kk, size=m)]
        base_parts.append(members[base])
        nb_parts.append(members[pick])
        lab_parts.append(np.full(m, c, dtype=y.dtype))
    n = len(y)
    if not base_parts:
        X_out, y_out = X.copy(), y.copy()
        parents, gaps = np.repeat(np.arange(n)[:, None], 2, axis=1), np.zeros(n, dtype=X.dtype)
    else:
        i, j = np.concatenate(base_parts), np.concatenate(nb_parts)
        u = rng.random(len(i)).astype(X.dtype)
        new = X[i] + u[:, None] * (X[j] - X[i])
        X_out = np.concatenate([X, new]).astype(X.dtype, copy=False)
        y_out = np.concatenate([y] + lab_parts)
        parents = np.concatenate([np.repeat(np.arange(n)[:, None], 2, axis=1),
                                  np.stack([i, j], axis=1)])
        gaps = np.concatenate([np.zeros(n, dtype=X.dtype), u])
    return (X_out, y_out, parents, gaps) if return_parents else (X_out, y_out)


def rebalance(X, y, method: str = "none", *, rng=None, **options):
    """Re-balance ``(X, y)`` by name: ``"none"`` (a copy), ``"under"`` (:func:`random_undersample`),
    ``"over"`` (:func:`random_oversample`) or ``"smote"`` (:func:`smote`); ``options`` go to the
    function (``replace=True`` for ``under``, ``k=`` for ``smote``). Apply it to training data only.
    """
    funcs = {"under": random_undersample, "over": random_oversample, "smote": smote}
    if method not in BALANCE_METHODS:
        raise ValueError(f"method must be one of {', '.join(BALANCE_METHODS)}, got {method!r}")
    if method == "none":
        if options:
            raise TypeError(f"rebalance(method='none') takes no options, got {sorted(options)}")
        X, y = _check_xy(X, y)
        return X.copy(), y.copy()
    return funcs[method](X, y, rng=rng, **options)
