r"""Shared machinery of the GRANDE estimators: input checks, the scikit-learn protocol and training.

Marton et al., "GRANDE: Gradient-Based Decision Tree Ensembles for Tabular Data", ICLR 2024, §4:
quantile-transformed features, Adam with one learning rate per parameter group, early stopping on
a validation split with the best weights restored. Training is :func:`nograd.train.fit` with
:class:`~nograd.rules.Backprop` on the estimator's loss, one :class:`~nograd.core.optim.Adam`
whose four parameter groups carry the four learning rates, and
:class:`~nograd.train.EarlyStopping`. The public estimators are in :mod:`nograd.estimators.grande`;
the network, :class:`~nograd.models.grande_net.GrandeNet`, is a model like any other.
"""
from __future__ import annotations

import inspect
import math
import sys
import warnings

import numpy as np

from ..core.checks import NonFiniteError, check_float, check_int, is_int
from ..core.optim import Adam, CosineLR
from ..data.preprocess import TabularPreprocessor
from ..models.grande_net import GrandeNet
from ..rules.backprop import Backprop
from ..train import Callback, EarlyStopping, fit

__all__ = ["NotFittedError"]


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before ``fit`` (scikit-learn's class is raised when it is loaded)."""


def _not_fitted(est):
    cls = NotFittedError
    if "sklearn.exceptions" in sys.modules:       # only if already imported: never import it here
        cls = sys.modules["sklearn.exceptions"].NotFittedError
    return cls(f"This {type(est).__name__} instance is not fitted yet; call fit(X, y) first")


def _column_warning():
    cat = UserWarning
    if "sklearn.exceptions" in sys.modules:
        cat = sys.modules["sklearn.exceptions"].DataConversionWarning
    warnings.warn("A column-vector y was passed when a 1d array was expected; it is ravelled",
                  cat, stacklevel=3)


def _check_X(X, name="X", *, allow_nan=True, n_features=None, owner=""):
    """A 2-D float64 array from ``X``; clear errors for sparse, complex, 1-D, empty, inf, NaN."""
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{name} is a sparse matrix; sparse input is not supported, "
                        f"pass a dense array (X.toarray())")
    X = np.asarray(X)
    if X.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {X.dtype}")
    if X.dtype.kind not in "biuf":
        X = X.astype(np.float64)                  # object arrays of numbers; TypeError otherwise
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}. "
                         f"Reshape your data with X.reshape(-1, 1) for a single feature or "
                         f"X.reshape(1, -1) for a single sample")
    if X.shape[0] == 0:
        raise ValueError(f"{name} has 0 samples (shape={X.shape}); at least 1 is required")
    if X.shape[1] == 0:
        raise ValueError(f"{name} has 0 feature(s) (shape={X.shape}) while a minimum of 1 is "
                         f"required.")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features, but {owner} is expecting "
                         f"{n_features} features as input")
    X = X.astype(np.float64, copy=False)
    if np.isinf(X).any():
        raise NonFiniteError(f"{name} contains infinity")
    if not allow_nan and np.isnan(X).any():
        cols = np.flatnonzero(np.isnan(X).any(axis=0)).tolist()
        raise ValueError(f"{name} contains NaN (missing values) in columns {cols} and impute=False; "
                         f"set impute=True or fill them")
    return X


def _check_y(y, n):
    if y is None:
        raise ValueError("This estimator requires y to be passed, but the target y is None")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        _column_warning()
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y should be a 1d array (one target per sample), got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"X and y have mismatched lengths: X has {n} samples, y has {y.shape[0]}")
    if y.dtype.kind == "c":
        raise ValueError("Complex data not supported: y is complex")
    return y


def _seed(random_state):
    """An int seed from None / int / Generator / RandomState (for reproducible sub-streams)."""
    if random_state is None:
        return int(np.random.default_rng().integers(2**31))
    if is_int(random_state):
        return int(random_state)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31))
    raise TypeError(f"random_state must be None, an int or a numpy Generator, got {random_state!r}")


class _GrandeBase:
    """Shared fitting machinery; subclasses define the target handling and the loss."""

    _kind = ""

    # ------------------------------------------------------------------ scikit-learn protocol
    @classmethod
    def _param_names(cls):
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep=True):
        """The constructor arguments as a dict (``deep`` is accepted for compatibility)."""
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params):
        """Set constructor arguments by name; unknown names raise ``ValueError``. Returns self."""
        valid = self._param_names()
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"Invalid parameter {k!r} for {type(self).__name__}; valid "
                                 f"parameters: {', '.join(valid)}")
            setattr(self, k, v)
        return self

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def __sklearn_tags__(self):
        from sklearn.utils import (
            ClassifierTags,
            InputTags,
            RegressorTags,
            Tags,
            TargetTags,
        )

        tags = Tags(estimator_type=self._kind, target_tags=TargetTags(required=True),
                    input_tags=InputTags(allow_nan=bool(self.impute)))
        if self._kind == "classifier":
            tags.classifier_tags = ClassifierTags()
        else:
            tags.regressor_tags = RegressorTags()
        return tags

    def _check_fitted(self):
        if not hasattr(self, "net_"):
            raise _not_fitted(self)

    # ------------------------------------------------------------------ validation of settings
    def _check_settings(self):
        for name in ("n_estimators", "depth", "epochs", "batch_size"):
            check_int(getattr(self, name), name, low=1)
        es = self.early_stopping
        if not (es is None or isinstance(es, (bool, int, np.integer)) and es >= 0):
            raise ValueError(f"early_stopping must be a bool or a patience in epochs (int >= 0), "
                             f"got {es!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
        for name in ("learning_rate_split", "learning_rate_feature", "learning_rate_leaf",
                     "learning_rate_weight"):
            check_float(getattr(self, name), name, low=0, low_open=True)
        if self.threshold_init not in ("data", "normal"):
            raise ValueError(f"threshold_init must be 'data' or 'normal', got {self.threshold_init!r}")

    def _patience(self):
        es = self.early_stopping
        if es is True:
            return 20
        return int(es or 0)

    # ------------------------------------------------------------------ fitting
    def _prepare(self, X, y, eval_set):
        """Validate, split off a validation set, fit the preprocessor; returns arrays and info."""
        self._check_settings()
        X = _check_X(X, "X", allow_nan=bool(self.impute))
        y = _check_y(y, X.shape[0])
        if X.shape[0] < 2:
            raise ValueError("X has 1 sample (n_samples = 1); GRANDE needs at least 2")
        t = self._targets(y, fit=True)
        seed = _seed(self.random_state)
        rng = np.random.default_rng(seed)
        patience = self._patience()
        if eval_set is not None:
            if not isinstance(eval_set, (tuple, list)) or len(eval_set) != 2:
                raise ValueError("eval_set must be a pair (X_val, y_val)")
            Xv = _check_X(eval_set[0], "eval_set[0]", allow_nan=bool(self.impute),
                          n_features=X.shape[1], owner=type(self).__name__)
            tv = self._targets(_check_y(eval_set[1], Xv.shape[0]), fit=False)
            Xt, tt = X, t
        elif patience and X.shape[0] >= 20:
            tr, va = self._split(t, rng)
            Xt, tt, Xv, tv = X[tr], t[tr], X[va], t[va]
        else:
            Xt, tt, Xv, tv = X, t, None, None
        pre = TabularPreprocessor(categorical=self.categorical_features, encoding=self.encoding,
                                  impute=bool(self.impute), quantile=bool(self.quantile_transform),
                                  random_state=seed)
        Zt = pre.fit_transform(Xt, tt if self.encoding == "loo" else None).astype(np.float32)
        Zv = None if Xv is None else pre.transform(Xv).astype(np.float32)
        self.n_features_in_ = X.shape[1]
        self.preprocessor_ = pre
        return Zt, tt, Zv, tv, rng, patience

    def _fit(self, X, y, eval_set):
        """Build the network and train it with :func:`nograd.train.fit`.

        One epoch is a fresh permutation of the training rows in batches of ``batch_size`` (the
        last one smaller); each batch is a backprop step of Adam, whose four parameter groups
        carry the four learning rates. ``cosine_schedule`` anneals them over every optimizer step
        of the run (``schedule_every="batch"``). With a validation set, :class:`_ValidationLoss`
        records the loss on it after each epoch and :class:`~nograd.train.EarlyStopping` stops
        once it has not fallen by more than 1e-4 for ``patience`` epochs in a row, then restores
        the weights of the best epoch.
        """
        Zt, tt, Zv, tv, rng, patience = self._prepare(X, y, eval_set)
        net = GrandeNet(Zt.shape[1], self._n_outputs(), n_estimators=int(self.n_estimators),
                        depth=int(self.depth), feature_fraction=float(self.feature_fraction),
                        selection=self.selection, dropout=float(self.dropout), rng=rng)
        if self.threshold_init == "data":
            net.init_thresholds(Zt, rng)
        P = net.params
        lrs = {"split_values": self.learning_rate_split, "feature_logits": self.learning_rate_feature,
               "leaf_values": self.learning_rate_leaf, "estimator_weights": self.learning_rate_weight}
        opt = Adam([{"params": {k: P[k]}, "lr": float(lr)} for k, lr in lrs.items()])
        epochs = int(self.epochs)
        bs = min(int(self.batch_size), Zt.shape[0])
        sched = (CosineLR(opt, t_max=math.ceil(Zt.shape[0] / bs) * epochs)
                 if self.cosine_schedule else None)
        callbacks = []
        if Zv is not None:
            # EarlyStopping stops after patience + 1 epochs without improvement; GRANDE's patience
            # counts those epochs themselves. Patience 0 with an eval_set: keep the best, never stop.
            callbacks = [_ValidationLoss(self, Zv, tv),
                         EarlyStopping("val_loss", patience=patience - 1 if patience else epochs,
                                       min_delta=1e-4)]
        hist = fit(net, Backprop(self._loss), opt, (Zt, tt), epochs=epochs, batch_size=bs, rng=rng,
                   callbacks=callbacks, progress=False, schedule=sched, schedule_every="batch")
        self.history_ = {"loss": hist["loss"],
                         "val_loss": hist["val_loss"] if Zv is not None else []}
        self.n_epochs_ = len(hist)
        self.best_epoch_ = hist.info.get("best_epoch") or self.n_epochs_
        self.net_ = net
        return self

    @staticmethod
    def _raw(net, Z, chunk=4096):
        return np.concatenate([net(Z[i:i + chunk]) for i in range(0, Z.shape[0], chunk)])

    def _decision(self, X):
        self._check_fitted()
        X = _check_X(X, "X", allow_nan=bool(self.impute), n_features=self.n_features_in_,
                     owner=type(self).__name__)
        Z = self.preprocessor_.transform(X).astype(np.float32)
        return self._raw(self.net_, Z)


class _ValidationLoss(Callback):
    """Record the estimator's own loss on the validation set as ``val_loss`` after every epoch.

    The loss is the training loss (class weights, focal term) of the whole validation set at
    once, its outputs computed in chunks of 4096 rows. ``fit(val=...)`` would average per-batch
    losses instead, which is not the class-weighted mean once the set spans several batches.
    It must come before :class:`~nograd.train.EarlyStopping` in the callbacks, which reads it.
    """

    def __init__(self, estimator, Z, t):
        self.estimator, self.Z, self.t = estimator, Z, t

    def on_epoch_end(self, state):
        est = self.estimator
        state.history.records[-1]["val_loss"] = est._loss(est._raw(state.model, self.Z), self.t)[0]


_COMMON_DOC = """
    Parameters
    ----------
    n_estimators : number of trees E (default {E}).
    depth : depth d of every tree: 2^d - 1 split nodes, 2^d leaves (default 5, the paper's).
    epochs : maximum number of passes over the training data (default {epochs}).
    batch_size : samples per Adam step (default {bs}).
    early_stopping : True (patience 20 epochs), a patience in epochs, or False/0. The validation
        loss is measured on ``eval_set`` when given, else on a stratified ``validation_fraction``
        of the training data; the weights of the best epoch are restored.
    validation_fraction : share held out for early stopping (default 0.2).
    learning_rate_split, learning_rate_feature, learning_rate_leaf, learning_rate_weight : Adam
        learning rates of the four parameter groups (split values, feature logits, leaf values,
        estimator weights); the paper trains them as separate groups. Defaults 0.05, 0.01, 0.05,
        0.001: the reference implementation's current defaults (its paper-era defaults, 0.01,
        0.01, 0.01, 0.005, converged slower and scored lower in our 5-fold runs).
    feature_fraction : share of the features each tree may split on (paper: 0.8).
    selection : ``"entmax"`` (1.5-entmax, the paper's) or ``"softmax"`` for the feature choice.
    dropout : probability of dropping each estimator per sample in training; the kept
        instance-wise weights are renormalised to sum to one (§3.3, as the reference code).
    cosine_schedule : cosine-anneal every learning rate to 0 over ``epochs``.
    threshold_init : ``"data"`` (each candidate threshold a random training value) or
        ``"normal"`` (N(0, 0.05²), as the reference implementation).
    categorical_features : column indices holding category codes (passed to the preprocessor).
    encoding : ``"ordinal"``, ``"onehot"`` or ``"loo"`` (leave-one-out target encoding).
    impute : fill missing values (NaN); with False, NaN in X is an error.
    quantile_transform : map every numeric column to a normal distribution by its quantiles.
    random_state : int seed (or None) for every random choice.
"""
