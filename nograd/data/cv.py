r"""Stratified k-fold cross-validation of a binary classifier, with imputation, standardisation and
class re-balancing fitted on the training folds only.

>>> import numpy as np
>>> y = np.array([0] * 6 + [1] * 4)
>>> [np.bincount(y[te]).tolist() for tr, te in stratified_kfold(y, 2, rng=0)]
[[3, 2], [3, 2]]

One fold of :func:`cross_validate`, in order (every statistic from the training fold alone):

1. split ``(X, y)`` into the training fold and the test fold;
2. fill missing values (NaN) with the training fold's column medians (``impute="median"``);
3. standardise with the training fold's mean and standard deviation;
4. re-balance the training fold (:func:`nograd.data.rebalance`); the test fold is left as it is;
5. ``scores = fit_predict(X_train, y_train, X_test, rng=...)`` and the fold's metrics.

``balance_before_split=True`` reproduces the leaky protocol of papers that re-balance the whole table
and then split it: it exists to measure the leak, not to report a result.
"""
from __future__ import annotations

import time

import numpy as np

from ..core.checks import NonFiniteError, as_rng, check_positive
from .balance import BALANCE_METHODS, rebalance
from .split import Standardiser, _check_labels, _check_same_length

__all__ = ["stratified_kfold", "MedianImputer", "zeros_as_missing", "cross_validate",
           "BINARY_METRICS"]

#: the per-fold scores :func:`cross_validate` reports, in table order
BINARY_METRICS = ("accuracy", "sensitivity", "specificity", "macro_f1", "roc_auc")


def stratified_kfold(y, k: int = 5, *, rng=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` pairs ``(train_idx, test_idx)``; the test folds partition ``range(len(y))``.

    The samples of each class are shuffled (``rng``) and dealt round-robin to the folds, one class
    after the other, the deal continuing where the previous class stopped. So every fold holds each
    class to within one sample of ``n_c / k`` and has ``n / k`` samples to within one. Indices are
    sorted within each array. Same seed, same folds.
    """
    y = _check_labels(y)
    check_positive(k, "k", integer=True)
    n = len(y)
    if not 2 <= k <= n:
        raise ValueError(f"k must be between 2 and the number of samples ({n}), got {k}")
    rng = as_rng(rng)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])
    fold_of = np.empty(n, dtype=np.int64)
    fold_of[order] = np.arange(n) % k
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]


class MedianImputer:
    """Fill missing values (NaN) with each column's median over the data it was fitted on.

    ``fit(X_train)`` stores ``median_`` (NaN ignored); a column with no value at all raises
    ``ValueError``. ``transform(X)`` returns a copy with every NaN of column ``j`` set to
    ``median_[j]``. Fit it on the training set only.
    """

    def fit(self, X) -> "MedianImputer":
        X = self._check(X, "X")
        empty = np.isnan(X).all(axis=0)
        if len(X) == 0 or empty.any():
            raise ValueError(f"X has no observed value in columns {np.flatnonzero(empty).tolist()}; "
                             f"a median needs at least one")
        self.median_ = np.nanmedian(X.astype(np.float64), axis=0)
        return self

    def transform(self, X, name: str = "X") -> np.ndarray:
        if not hasattr(self, "median_"):
            raise ValueError("this MedianImputer is not fitted; call fit(X_train) first")
        X = self._check(X, name)
        if X.shape[1] != len(self.median_):
            raise ValueError(f"{name} has {X.shape[1]} columns but the imputer was fitted on "
                             f"{len(self.median_)}")
        holes = np.isnan(X)
        out = X.copy()
        out[holes] = np.broadcast_to(self.median_, X.shape)[holes]
        return out

    @staticmethod
    def _check(X, name):
        if not isinstance(X, np.ndarray) or X.ndim != 2 or X.dtype.kind != "f":
            raise TypeError(f"{name} must be a 2-D float array (N, F), got "
                            f"{getattr(X, 'dtype', type(X).__name__)} of shape "
                            f"{getattr(X, 'shape', None)}")
        if np.isinf(X).any():
            raise ValueError(f"{name} contains inf")
        return X


def zeros_as_missing(X, columns) -> np.ndarray:
    """A copy of ``X`` with the zeros of ``columns`` (indices) replaced by NaN.

    For tables that record a missing measurement as 0, such as glucose, blood pressure, skin fold,
    insulin and BMI in the Pima Indians Diabetes data (none of which can be 0 in a living person).
    """
    if not isinstance(X, np.ndarray) or X.ndim != 2 or X.dtype.kind != "f":
        raise TypeError("X must be a 2-D float array (N, F)")
    cols = [int(c) for c in columns]
    for c in cols:
        if not -X.shape[1] <= c < X.shape[1]:
            raise ValueError(f"column {c} is out of range for X with {X.shape[1]} columns")
    out = X.copy()
    for c in cols:
        out[out[:, c] == 0, c] = np.nan
    return out


def _check_binary(y):
    y = _check_labels(y)
    classes = np.unique(y)
    if len(classes) > 2:
        raise ValueError(f"the target has {len(classes)} classes ({', '.join(map(str, classes))}) but "
                         f"this evaluation is binary (sensitivity, specificity and ROC-AUC need a "
                         f"positive class 1 and a negative class 0); give a two-class target")
    if classes.max() > 1:
        raise ValueError(f"the labels are {classes.tolist()}; a binary evaluation needs 0 "
                         f"(negative) and 1 (positive)")
    if len(classes) < 2:
        raise ValueError(f"the target has a single class ({classes[0]}); a binary evaluation "
                         f"needs both 0 and 1")
    return y


def _check_missing(X, impute):
    if impute not in (None, "median"):
        raise ValueError(f"impute must be None or 'median', got {impute!r}")
    if np.isinf(X).any():
        raise ValueError("X contains inf")
    holes = np.isnan(X)
    if holes.any() and impute is None:
        cols = np.flatnonzero(holes.any(axis=0)).tolist()
        raise ValueError(f"X has {int(holes.sum())} missing values (NaN) in {int(holes.any(axis=1).sum())} "
                         f"rows, columns {cols}; pass impute='median' to fill them with the "
                         f"training folds' medians")


def _fold_metrics(y_true, scores):
    from ..metrics import accuracy, macro_f1, roc_auc, sensitivity, specificity

    if (not isinstance(scores, np.ndarray) or scores.ndim != 2 or scores.shape[1] != 2
            or scores.dtype.kind != "f" or len(scores) != len(y_true)):
        raise ValueError(f"fit_predict must return float scores (N_test, 2) for the {len(y_true)} "
                         f"test samples (logits or probabilities of class 0 and 1), got "
                         f"{getattr(scores, 'dtype', type(scores).__name__)} of shape "
                         f"{getattr(scores, 'shape', None)}")
    if not np.isfinite(scores).all():
        raise NonFiniteError("fit_predict returned NaN or inf scores")
    pred = scores.argmax(axis=1)
    return {"accuracy": accuracy(y_true, pred), "sensitivity": sensitivity(y_true, pred),
            "specificity": specificity(y_true, pred), "macro_f1": macro_f1(y_true, pred, 2),
            "roc_auc": roc_auc(y_true, scores)}


def _copies(X_test, X_train) -> float:
    """Fraction of the rows of ``X_test`` that have an exact copy among the rows of ``X_train``."""
    seen = {row.tobytes() for row in np.ascontiguousarray(X_train)}
    return float(np.mean([row.tobytes() in seen for row in np.ascontiguousarray(X_test)]))


def cross_validate(X, y, fit_predict, *, k: int = 5, balance: str = "none", rng=None,
                   impute=None, standardise: bool = True, balance_before_split: bool = False,
                   balance_options=None) -> dict:
    r"""Stratified ``k``-fold cross-validation of a binary classifier; metrics per fold, mean, std.

    Parameters
    ----------
    X, y : features ``(N, F)`` (float; NaN marks a missing value) and labels 0/1, 1 the positive
        class. A target with more than two classes, or with one, raises ``ValueError``.
    fit_predict : ``fit_predict(X_train, y_train, X_test, *, rng) -> scores (N_test, 2)`` — trains a
        fresh model on the (re-balanced) training fold and scores the test fold: logits or
        probabilities of classes 0 and 1. The label is the argmax; ROC-AUC ranks by
        ``scores[:, 1] - scores[:, 0]``.
    k : number of folds (each class must have at least ``k`` samples, so every test fold has both).
    balance : ``"none"``, ``"under"``, ``"over"`` or ``"smote"`` (see :func:`nograd.data.rebalance`),
        applied to the training fold after imputation and standardisation. ``balance_options`` go
        to it (``{"replace": True}``, ``{"k": 3}``).
    impute : ``None`` — missing values are an error — or ``"median"`` (:class:`MedianImputer` fitted
        on the training fold).
    standardise : standardise with the training fold's statistics (:class:`nograd.data.Standardiser`).
    balance_before_split : the *leaky* protocol — impute and re-balance the whole table first, then
        split the result into folds. Copies or interpolations of one sample then sit in the training
        and the test fold at once. Use it only to measure how much that inflates a score.
    rng : Generator or int seed. It draws the folds first, then one seed for the rest; fold ``f``
        re-balances with ``default_rng([seed, f, 0])`` and calls ``fit_predict`` with
        ``default_rng([seed, f, 1])``. So two calls with the same seed and data use the same folds,
        the same re-balanced training sets and the same initial weights whatever ``fit_predict`` is.

    Returns a dict: ``folds`` (one dict per fold: the :data:`BINARY_METRICS`, ``n_train`` after
    re-balancing, ``n_test``, ``test_in_train`` — the fraction of test rows with an exact copy among
    the training rows the model saw, the direct measure of a copy leak — and ``seconds``), ``mean``
    and ``std`` (sample standard deviation, ``ddof=1``, over folds) of each metric, and the settings
    (``k``, ``balance``, ``protocol``, ``n``).
    """
    if not isinstance(X, np.ndarray) or X.ndim != 2 or X.dtype.kind != "f":
        raise TypeError(f"X must be a 2-D float array (N, F), got "
                        f"{getattr(X, 'dtype', type(X).__name__)} of shape {getattr(X, 'shape', None)}")
    y = _check_binary(y)
    _check_same_length(X, y)
    if not callable(fit_predict):
        raise TypeError(f"fit_predict must be callable, got {type(fit_predict).__name__}")
    if balance not in BALANCE_METHODS:
        raise ValueError(f"balance must be one of {', '.join(BALANCE_METHODS)}, got {balance!r}")
    check_positive(k, "k", integer=True)
    _check_missing(X, impute)
    opts = dict(balance_options or {})
    rng = as_rng(rng)
    split_seed, seed = (int(s) for s in rng.integers(0, 2 ** 63 - 1, size=2))

    protocol = "before-split" if balance_before_split else "training-folds"
    if balance_before_split:
        if impute == "median":
            X = MedianImputer().fit(X).transform(X)
        X, y = rebalance(X, y, balance, rng=np.random.default_rng([seed, 0xBA1]), **opts)
    n_min = int(np.bincount(y).min())
    if n_min < k:
        raise ValueError(f"the smaller class has {n_min} samples, fewer than k={k} folds; every "
                         f"test fold needs both classes (lower --cv / k)")
    folds = []
    for f, (tr, te) in enumerate(stratified_kfold(y, k, rng=split_seed)):
        t0 = time.perf_counter()
        X_tr, y_tr, X_te, y_te = X[tr], y[tr], X[te], y[te]
        if impute == "median" and not balance_before_split:
            imp = MedianImputer().fit(X_tr)
            X_tr, X_te = imp.transform(X_tr, "X_train"), imp.transform(X_te, "X_test")
        if standardise:
            s = Standardiser().fit(X_tr)
            X_tr, X_te = s.transform(X_tr, "X_train"), s.transform(X_te, "X_test")
        if not balance_before_split:
            X_tr, y_tr = rebalance(X_tr, y_tr, balance, rng=np.random.default_rng([seed, f, 0]),
                                   **opts)
        scores = fit_predict(X_tr, y_tr, X_te, rng=np.random.default_rng([seed, f, 1]))
        record = _fold_metrics(y_te, scores)
        record.update(n_train=int(len(y_tr)), n_test=int(len(y_te)),
                      test_in_train=_copies(X_te, X_tr), seconds=time.perf_counter() - t0)
        folds.append(record)
    table = {m: np.array([r[m] for r in folds]) for m in BINARY_METRICS}
    return {"folds": folds,
            "mean": {m: float(v.mean()) for m, v in table.items()},
            "std": {m: float(v.std(ddof=1)) for m, v in table.items()},
            "k": int(k), "balance": balance, "protocol": protocol, "n": int(len(y))}
