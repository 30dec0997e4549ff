"""Splitting, batching and preprocessing: stratified splits, seeded mini-batches, one-hot codes
and standardisation fitted on the training set.

>>> import numpy as np
>>> X = np.arange(20, dtype=np.float32).reshape(10, 2)
>>> y = np.array([0] * 6 + [1] * 4)
>>> X_tr, y_tr, X_te, y_te = stratified_split(X, y, test_size=0.5, rng=0)
>>> np.bincount(y_te).tolist()          # 3 of the 6 zeros and 2 of the 4 ones
[3, 2]
>>> [xb.shape[0] for xb, yb in batches(X, y, 4, rng=0)]
[4, 4, 2]
"""
from __future__ import annotations

import numpy as np

from ..core.checks import NonFiniteError, as_rng, check_positive

__all__ = ["stratified_indices", "stratified_split", "batches", "num_batches", "one_hot",
           "Standardiser", "standardise"]


# --------------------------------------------------------------------------- argument checks
def _check_labels(y, name: str = "y") -> np.ndarray:
    """1-D non-negative integer class labels."""
    if not isinstance(y, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of class labels, got {type(y).__name__}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per sample), got shape {y.shape}")
    if y.size and y.min() < 0:
        raise ValueError(f"{name} has negative labels (min {y.min()}); labels are 0, 1, 2, ...")
    return y


def _check_samples(X, name: str = "X") -> np.ndarray:
    if not isinstance(X, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(X).__name__}")
    if X.ndim == 0:
        raise ValueError(f"{name} must have a sample axis first, got a 0-d array")
    return X


def _check_same_length(X, y, xname="X", yname="y"):
    if len(X) != len(y):
        raise ValueError(f"{xname} has {len(X)} samples but {yname} has {len(y)}; they must match")


def _test_count(n: int, test_size) -> int:
    """Number of test samples from a fraction in (0, 1) or a count in [1, n - 1]."""
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float, np.integer, np.floating)):
        raise TypeError(f"test_size must be a fraction in (0, 1) or an int count, got {test_size!r}")
    if isinstance(test_size, (int, np.integer)):
        t = int(test_size)
        if not 1 <= t <= n - 1:
            raise ValueError(f"test_size={t} must leave at least one sample on each side of the "
                             f"split of {n} samples (1 <= test_size <= {n - 1})")
        return t
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be a fraction in (0, 1) or an int count, got {test_size!r}")
    t = int(np.floor(test_size * n + 0.5))
    if not 1 <= t <= n - 1:
        raise ValueError(f"test_size={test_size} of {n} samples gives {t} test samples; each side "
                         f"of the split needs at least one")
    return t


# --------------------------------------------------------------------------- splits
def stratified_indices(y, test_size=0.25, *, rng=None) -> tuple[np.ndarray, np.ndarray]:
    r"""Indices ``(train_idx, test_idx)`` of a stratified random split of the labels ``y``.

    The test set gets :math:`t` samples in all (``test_size`` is a fraction of ``len(y)``, rounded,
    or a count). Class :math:`c` with :math:`n_c` samples contributes :math:`\lfloor q_c\rfloor` or
    :math:`\lceil q_c\rceil` of them, where :math:`q_c = n_c t / n` is its exact share — the
    largest-remainder method (ties broken at random), so every class is within one sample of
    exact proportion and the counts add up to :math:`t`. Which samples of a class go to the test set
    is a uniform draw from ``rng``. Both index arrays are in random order; together they hold every
    index exactly once. Same ``rng`` seed, same split.
    """
    y = _check_labels(y)
    n = len(y)
    if n < 2:
        raise ValueError(f"y has {n} samples; a split needs at least 2")
    t = _test_count(n, test_size)
    rng = as_rng(rng)
    classes, counts = np.unique(y, return_counts=True)
    share = counts * (t / n)
    take = np.floor(share).astype(np.int64)
    left = t - int(take.sum())
    if left:
        frac = share - take
        order = np.lexsort((rng.random(len(classes)), -frac))   # largest remainder first
        take[order[:left]] += 1
    train_parts, test_parts = [], []
    for c, k in zip(classes, take):
        members = np.flatnonzero(y == c)
        members = members[rng.permutation(len(members))]
        test_parts.append(members[:k])
        train_parts.append(members[k:])
    train_idx = np.concatenate(train_parts)
    test_idx = np.concatenate(test_parts)
    return train_idx[rng.permutation(len(train_idx))], test_idx[rng.permutation(len(test_idx))]


def stratified_split(X, y, test_size=0.25, *, rng=None):
    """Split ``(X, y)`` into ``X_train, y_train, X_test, y_test`` by :func:`stratified_indices`.

    ``X`` is any array with samples on its first axis; the outputs are new arrays (copies).
    """
    X = _check_samples(X)
    y = _check_labels(y)
    _check_same_length(X, y)
    tr, te = stratified_indices(y, test_size, rng=rng)
    return X[tr], y[tr], X[te], y[te]


# --------------------------------------------------------------------------- batches
def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches :func:`batches` yields for ``n`` samples."""
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(X, y, batch_size, rng=None, shuffle=True, drop_last=False):
    """Iterate over mini-batches ``(X_batch, y_batch)`` of ``batch_size`` samples.

    With ``shuffle=True`` the order is a fresh permutation drawn from ``rng`` (required, a
    ``np.random.Generator`` or an int seed), so the same seed gives the same batches; with
    ``shuffle=False`` the samples come in order. The last batch is smaller when ``batch_size`` does
    not divide ``len(X)``, unless ``drop_last=True`` drops it. ``y`` may be ``None`` (then the
    second element of each pair is ``None``). Arguments are checked at the call, before the
    first batch is drawn.
    """
    X = _check_samples(X)
    if y is not None:
        y = _check_samples(y, "y")
        _check_same_length(X, y)
    check_positive(batch_size, "batch_size", integer=True)
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle must be a bool, got {shuffle!r}")
    if not isinstance(drop_last, (bool, np.bool_)):
        raise TypeError(f"drop_last must be a bool, got {drop_last!r}")
    n = len(X)
    if n == 0:
        raise ValueError("X is empty; there is nothing to batch")
    if shuffle:
        if rng is None:
            raise ValueError("batches(shuffle=True) needs rng= (a numpy Generator or an int seed)")
        order = as_rng(rng).permutation(n)
    else:
        order = None
    return _iterate(X, y, int(batch_size), order, bool(drop_last))


def _iterate(X, y, batch_size, order, drop_last):
    n = len(X)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            sl = slice(start, min(start + batch_size, n))
            yield X[sl], (None if y is None else y[sl])
        else:
            idx = order[start:start + batch_size]
            yield X[idx], (None if y is None else y[idx])


# --------------------------------------------------------------------------- encodings
def one_hot(y, num_classes: int | None = None, dtype=np.float32) -> np.ndarray:
    """Rows of the identity: ``out[i, y[i]] = 1``, shape ``(len(y), num_classes)``.

    ``num_classes`` defaults to ``y.max() + 1``; a label at or above it raises ``ValueError``.
    """
    y = _check_labels(y)
    k = int(y.max()) + 1 if y.size else 0
    if num_classes is None:
        num_classes = k
    else:
        check_positive(num_classes, "num_classes", integer=True)
        if k > num_classes:
            raise ValueError(f"y has label {k - 1} but num_classes is {num_classes}")
    out = np.zeros((len(y), int(num_classes)), dtype=dtype)
    out[np.arange(len(y)), y] = 1
    return out


class Standardiser:
    r"""Per-feature standardisation :math:`x \mapsto (x - \mu)/s` fitted on training data only.

    ``fit(X)`` stores ``mean_`` (:math:`\mu`) and ``scale_`` (:math:`s`, the population standard
    deviation; a constant feature gets :math:`s = 1` so it maps to 0 instead of dividing by zero)
    over the first axis. ``transform`` applies them to any array with the same trailing shape,
    keeping its float dtype. Apply the statistics of the training set to the test set, never the
    other way round.
    """

    def __init__(self, eps: float = 1e-12):
        self.eps = float(check_positive(eps, "eps", allow_zero=True))

    def fit(self, X) -> "Standardiser":
        X = self._check(X, "X")
        if len(X) == 0:
            raise ValueError("X is empty; cannot fit a standardiser")
        x64 = X.astype(np.float64)
        self.mean_ = x64.mean(axis=0)
        std = x64.std(axis=0)
        self.scale_ = np.where(std > self.eps, std, 1.0)
        return self

    def transform(self, X, name: str = "X") -> np.ndarray:
        if not hasattr(self, "mean_"):
            raise ValueError("this Standardiser is not fitted; call fit(X_train) first")
        X = self._check(X, name)
        if X.shape[1:] != self.mean_.shape:
            raise ValueError(f"{name} has feature shape {X.shape[1:]} but the standardiser was "
                             f"fitted on {self.mean_.shape}")
        return ((X - self.mean_) / self.scale_).astype(X.dtype, copy=False)

    def fit_transform(self, X) -> np.ndarray:
        return self.fit(X).transform(X)

    @staticmethod
    def _check(X, name):
        X = _check_samples(X, name)
        if X.dtype.kind != "f":
            raise TypeError(f"{name} must be a float array, got dtype {X.dtype}")
        if not np.isfinite(X).all():
            raise NonFiniteError(f"{name} contains NaN or inf")
        return X


def standardise(X_train, *others):
    """Standardise ``X_train`` and each array of ``others`` with the training set's mean and std.

    Returns a tuple ``(X_train_s, *others_s)``. See :class:`Standardiser`.
    """
    s = Standardiser().fit(X_train)
    return (s.transform(X_train, "X_train"),) + tuple(
        s.transform(X, f"others[{i}]") for i, X in enumerate(others))
