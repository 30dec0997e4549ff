r"""Training the tabular networks of :mod:`nograd.models.tabular` (DiabetesNet, the tabular MLP,
logistic regression) with backprop, the ``fit_predict`` that :func:`nograd.data.cross_validate`
runs in every fold, and the three evaluation protocols of :func:`evaluate_protocol`.

DiabetesNet's training (Zhang, Ahmed, Hasan, Gedeon & Hossain 2024, "DiabetesNet: A Deep Learning
Approach to Diabetes Diagnosis", arXiv:2403.07483, Method section, and the authors' notebook as read
for nograd issue #19, item 10): softmax cross-entropy on the network's two sigmoid outputs, Adam at
1e-3, batches of 16.

The protocols (``protocol=``):

- ``"honest"`` (the default): stratified k-fold cross-validation; imputation, standardisation and
  re-balancing fitted on each training fold alone, a fixed number of epochs;
- ``"leaky"``: the same, but the whole table is re-balanced before it is split — the leak alone;
- ``"paper"``: the authors' procedure — the majority class resampled with replacement down to the
  minority's size on the whole table, the table standardised, one 80/20 split
  (``train_test_split(..., test_size=0.2, random_state=0)``), and training stopped at the first
  epoch whose *test* accuracy reaches 0.89. It selects the epoch on the test set on top of the leak.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.standard_normal((64, 3)).astype(np.float32); y = (X[:, 0] > 0).astype(np.int64)
>>> fp = make_fit_predict("logistic", epochs=30, lr=0.05)
>>> logits = fp(X[:48], y[:48], X[48:], rng=0)
>>> logits.shape, float(np.mean(logits.argmax(1) == y[48:])) > 0.8
((16, 2), True)
>>> [len(i) for i in paper_split(536)]          # 428 training rows, 108 test rows
[428, 108]
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..core.checks import as_rng, check_positive
from ..core.optim import get_optimizer
from ..data.cv import (MedianImputer, _check_binary, _check_missing, _copies, _fold_metrics,
                       cross_validate)
from ..data.split import Standardiser
from ..models.registry import available_models, get_model
from ..rules.backprop import Backprop
from ..callbacks.base import Callback
from ..train import fit

__all__ = ["train_classifier", "make_fit_predict", "paper_resample", "paper_split",
           "StopAtAccuracy", "evaluate_protocol", "PROTOCOLS", "PAPER_PIMA"]

#: the names :func:`evaluate_protocol` (and ``python -m nograd diabetes --protocol``) accept
PROTOCOLS = ("honest", "leaky", "paper")

#: Zhang et al. 2024's Pima figures (results table): 97 of 108 test rows right; with 56 diabetic
#: and 52 other test rows these are 50/56 and 47/52.
PAPER_PIMA = {"accuracy": 0.8981, "sensitivity": 0.8929, "specificity": 0.9038, "n_test": 108}


def train_classifier(model, X, y, *, epochs: int = 100, batch_size: int = 16, lr: float = 1e-3,
                     optimizer: str = "adam", rng=None, val=None, callbacks=()):
    """Train ``model`` with backprop on softmax cross-entropy for ``epochs`` epochs; returns the
    :class:`nograd.train.History`. ``rng`` draws the batch order (and dropout masks). ``val`` and
    ``callbacks`` go to :func:`nograd.train.fit` (the paper protocol's stopping rule is one).

    When ``len(X) % batch_size == 1`` the batch size is raised by one until it is not, because the
    last batch of an epoch would hold a single sample, which batch normalisation cannot
    standardise in training. ``fit(..., drop_last=True)`` would avoid the batch of one too, but by
    leaving a sample out of every epoch; raising the batch size trains on every sample.
    """
    check_positive(batch_size, "batch_size", integer=True)
    n = len(X)
    bs = int(batch_size)
    while n > 1 and bs < n and n % bs == 1:
        bs += 1
    opt = get_optimizer(optimizer, model.params, lr=lr)
    return fit(model, Backprop("cross-entropy"), opt, (X, y), val=val, epochs=epochs,
               batch_size=bs, rng=as_rng(rng), progress=False, callbacks=callbacks)


def make_fit_predict(model: str = "diabetesnet", *, epochs: int = 100, batch_size: int = 16,
                     lr: float = 1e-3, optimizer: str = "adam", **model_options):
    """A ``fit_predict(X_train, y_train, X_test, *, rng) -> scores (N_test, C)`` for
    :func:`nograd.data.cross_validate`: builds the registered ``model`` afresh (initial weights from
    ``rng``), trains it with :func:`train_classifier` for a fixed number of epochs (no test fold
    chooses the epoch), and scores ``X_test`` in evaluation mode. The arguments are checked here,
    before any fold runs.
    """
    check_positive(epochs, "epochs", integer=True)
    check_positive(batch_size, "batch_size", integer=True)
    check_positive(lr, "lr")
    _check_model_name(model)

    def fit_predict(X_train, y_train, X_test, *, rng=None):
        rng = as_rng(rng)
        num_classes = max(2, int(y_train.max()) + 1)
        net = get_model(model, X_train.shape[1:], num_classes, rng=rng,
                        **{"dtype": X_train.dtype, **model_options})
        train_classifier(net, X_train, y_train, epochs=epochs, batch_size=batch_size, lr=lr,
                         optimizer=optimizer, rng=rng)
        return _scores(net, X_test)

    fit_predict.__name__ = f"fit_predict_{model.replace('-', '_')}"
    return fit_predict


def _check_model_name(model):
    if model not in available_models():
        raise ValueError(f"unknown model {model!r}; registered models: {', '.join(available_models())}")


def _scores(net, X):
    return np.concatenate([net(X[i:i + 1024]) for i in range(0, len(X), 1024)])


def _seed(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise TypeError(f"{name} must be a non-negative int (a NumPy RandomState seed, as "
                        f"scikit-learn's random_state), got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- the paper's draws
def paper_resample(X, y, *, random_state: int = 0):
    r"""The notebook's re-balancing of the whole table: the larger class (class 0 on a tie) drawn
    with replacement down to the smaller class's size, then the smaller class, in that order.

    The draw is ``sklearn.utils.resample(majority, replace=True, n_samples=n_min,
    random_state=random_state)`` made with NumPy alone: ``RandomState(random_state).randint(0,
    n_maj, n_min)`` picks the majority rows, in table order, and the result is their concatenation
    with the minority rows (``pd.concat([majority_resampled, minority])``). The order matters: the
    split that follows takes positions, not rows. Returns ``X_out (2 n_min, F)``, ``y_out`` and
    ``index`` (the row of ``X`` each output row comes from). Re-balancing before a split is the
    leak this module measures; use it only to reproduce the paper.
    """
    y = _check_binary(y)
    if not isinstance(X, np.ndarray) or X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be a 2-D array with one row per label ({len(y)}), got "
                         f"{getattr(X, 'shape', type(X).__name__)}")
    counts = np.bincount(y, minlength=2)
    major = int(np.argmax(counts))
    maj, mino = np.flatnonzero(y == major), np.flatnonzero(y != major)
    pick = np.random.RandomState(_seed(random_state, "random_state")).randint(0, len(maj),
                                                                              size=len(mino))
    index = np.concatenate([maj[pick], mino])
    return X[index], y[index], index


def paper_split(n: int, *, test_size: float = 0.2, random_state: int = 0):
    r"""``(train_idx, test_idx)`` of ``sklearn.model_selection.train_test_split(..., test_size,
    random_state)`` on ``n`` rows (shuffled, not stratified), made with NumPy alone.

    :math:`n_{test} = \lceil \text{test\_size}\cdot n \rceil`; with ``p =
    RandomState(random_state).permutation(n)`` the test rows are ``p[:n_test]`` and the training
    rows ``p[n_test:]``, in that order (scikit-learn's ``ShuffleSplit``).
    """
    check_positive(n, "n", integer=True)
    if isinstance(test_size, bool) or not isinstance(test_size, (float, np.floating)) \
            or not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size!r}")
    n_test = math.ceil(float(test_size) * int(n))
    if not 0 < n_test < n:
        raise ValueError(f"test_size={test_size} leaves {n_test} of {n} rows for testing; both "
                         f"sides of the split need at least one")
    perm = np.random.RandomState(_seed(random_state, "random_state")).permutation(int(n))
    return perm[n_test:], perm[:n_test]


class StopAtAccuracy(Callback):
    """Stop training after the first epoch whose ``val_accuracy`` is at least ``target``.

    The notebook's rule, with its test set as ``val`` (Zhang et al. 2024, issue #19 item 10):
    choosing the epoch on the test set makes the test score a selected maximum, not an estimate.
    The history records ``stopped_epoch``.
    """

    def __init__(self, target: float = 0.89):
        _check_stop_at(target)
        self.target = float(target)

    def on_epoch_end(self, state):
        acc = state.history.records[-1].get("val_accuracy")
        if acc is None:
            raise ValueError("StopAtAccuracy monitors val_accuracy; pass val=(X, y) to fit")
        if acc >= self.target:
            state.stop = True
            state.history.info["stopped_epoch"] = state.epoch


def _check_stop_at(value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0.0 < value <= 1.0:
        raise ValueError(f"stop_at must be an accuracy in (0, 1] (or None: no stopping rule), "
                         f"got {value!r}")


# --------------------------------------------------------------------------- protocols
def evaluate_protocol(X, y, *, protocol: str = "honest", model: str = "diabetesnet",
                      epochs: int = 50, batch_size: int = 16, lr: float = 1e-3,
                      optimizer: str = "adam", k: int = 5, balance: str = "under",
                      balance_options=None, impute=None, seed: int = 0, stop_at=0.89,
                      max_epochs: int = 1000, test_size: float = 0.2, split_seed: int = 0) -> dict:
    r"""Evaluate a tabular binary classifier under one of :data:`PROTOCOLS`.

    ``X (N, F)`` float (NaN marks a missing value when ``impute="median"``), ``y`` labels 0/1.
    ``model`` is a registered model trained by :func:`train_classifier` (``batch_size``, ``lr``,
    ``optimizer``).

    ``"honest"`` and ``"leaky"`` run :func:`nograd.data.cross_validate` (``k`` folds, ``epochs``
    per fold, ``seed``), re-balancing with ``balance`` — by default the paper's, the majority drawn
    with replacement (``balance_options`` default ``{"replace": True}`` for ``"under"``) — inside the
    training folds (honest) or on the whole table first (leaky). They return its dict (``folds``,
    ``mean``, ``std``, ``protocol`` = ``"training-folds"`` or ``"before-split"``).

    ``"paper"`` reproduces the authors' procedure on one split: missing values (with
    ``impute="median"``) filled with the whole table's medians; :func:`paper_resample` with
    ``random_state=seed``; the re-sampled table standardised (their workflow scales the data before
    the network, the split inside it); :func:`paper_split` with ``test_size`` and ``split_seed``
    (their ``random_state=0``); training with the test rows as validation, stopped after the first
    epoch whose test accuracy is ``>= stop_at`` (:class:`StopAtAccuracy`), at most ``max_epochs``.
    ``stop_at=None`` trains ``epochs`` epochs instead: the paper's leaky split without choosing the
    epoch on the test set. Weights and batch order come from ``seed``; ``k`` is not used. Returns
    ``protocol`` (``"paper"``), ``mean`` (the five metrics of the final model on the test rows),
    ``epoch`` (epochs trained), ``stopped`` (the rule fired), ``test_accuracy`` (after every
    epoch), ``n`` (rows after re-sampling), ``n_train``, ``n_test``, ``test_positives``,
    ``test_in_train`` (share of test rows with an exact copy among the training rows), ``stop_at``
    and ``seconds``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    check_positive(epochs, "epochs", integer=True)
    check_positive(batch_size, "batch_size", integer=True)
    check_positive(lr, "lr")
    _check_model_name(model)
    if balance == "under" and balance_options is None:
        balance_options = {"replace": True}
    if protocol != "paper":
        fp = make_fit_predict(model, epochs=epochs, batch_size=batch_size, lr=lr,
                              optimizer=optimizer)
        return cross_validate(X, y, fp, k=k, balance=balance, rng=seed, impute=impute,
                              balance_before_split=protocol == "leaky",
                              balance_options=balance_options)

    if balance != "under" or dict(balance_options) != {"replace": True}:
        raise ValueError(f"protocol='paper' resamples as the paper does (the majority class with "
                         f"replacement, balance='under', replace=True); got balance={balance!r} "
                         f"with {balance_options}")
    if stop_at is not None:
        _check_stop_at(stop_at)
    check_positive(max_epochs, "max_epochs", integer=True)
    if not isinstance(X, np.ndarray) or X.ndim != 2 or X.dtype.kind != "f":
        raise TypeError(f"X must be a 2-D float array (N, F), got "
                        f"{getattr(X, 'dtype', type(X).__name__)} of shape {getattr(X, 'shape', None)}")
    y = _check_binary(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} samples but y has {len(y)}; they must match")
    _check_missing(X, impute)
    t0 = time.perf_counter()
    if impute == "median":
        X = MedianImputer().fit(X).transform(X)
    Xr, yr, _ = paper_resample(X, y, random_state=seed)
    Xr = Standardiser().fit_transform(Xr)
    tr, te = paper_split(len(yr), test_size=test_size, random_state=split_seed)
    rng = np.random.default_rng(_seed(seed, "seed"))
    net = get_model(model, Xr.shape[1:], 2, rng=rng, dtype=Xr.dtype)
    rule = [] if stop_at is None else [StopAtAccuracy(stop_at)]
    hist = train_classifier(net, Xr[tr], yr[tr], epochs=epochs if stop_at is None else max_epochs,
                            batch_size=batch_size, lr=lr, optimizer=optimizer, rng=rng,
                            val=(Xr[te], yr[te]), callbacks=rule)
    metrics = _fold_metrics(yr[te], _scores(net, Xr[te]))
    return {"protocol": "paper", "mean": metrics, "epoch": len(hist),
            "stopped": hist.info.get("stopped_epoch") is not None,
            "test_accuracy": [float(a) for a in hist["val_accuracy"]],
            "n": int(len(yr)), "n_train": int(len(tr)), "n_test": int(len(te)),
            "test_positives": int(yr[te].sum()), "test_in_train": _copies(Xr[te], Xr[tr]),
            "stop_at": None if stop_at is None else float(stop_at),
            "seconds": time.perf_counter() - t0}
