r"""GRANDE estimators with the scikit-learn interface: :class:`GrandeClassifier`, :class:`GrandeRegressor`.

Marton, Lüdtke, Bartelt & Stuckenschmidt, "GRANDE: Gradient-Based Decision Tree Ensembles for
Tabular Data", ICLR 2024. The network is :class:`~nograd.models.grande_net.GrandeNet`; training
(:func:`nograd.train.fit` with early stopping, :mod:`nograd.estimators.grande_base`) follows §4 of
the paper and its reference implementation: features through a quantile transform to a
normal distribution (with imputation and category encoding first, :mod:`nograd.data.preprocess`),
Adam with a separate learning rate for each of the four parameter groups (split values, feature
logits, leaf values, estimator weights), cross-entropy (optionally focal, optionally with
'balanced' class weights) or MSE on a standardised target, and early stopping on a validation split
with the best weights restored.

The estimators follow scikit-learn's conventions without importing it: ``__init__`` stores its
arguments only; ``fit`` returns self; fitted attributes end in ``_``; ``get_params`` /
``set_params``; ``score`` is accuracy or R². ``__sklearn_tags__`` imports scikit-learn lazily, so
``sklearn.utils.estimator_checks.check_estimator`` can test them when it is installed.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(200, 3)); y = (X[:, 0] > 0.3).astype(int)
>>> clf = GrandeClassifier(n_estimators=16, epochs=20, random_state=0).fit(X, y)
>>> clf.score(X, y) > 0.9
True
"""
from __future__ import annotations

import numpy as np

from ..core.checks import NonFiniteError
from ..core.losses import focal_loss, mse, softmax_cross_entropy
from ..data.split import stratified_indices
from ..models.grande_net import GrandeNet
from .grande_base import _COMMON_DOC, NotFittedError, _GrandeBase

__all__ = ["GrandeClassifier", "GrandeNet", "GrandeRegressor", "NotFittedError"]


class GrandeClassifier(_GrandeBase):
    """GRANDE for classification (Marton et al., ICLR 2024); logits per class, softmax probabilities.
    {common}
    loss : ``"cross-entropy"`` or ``"focal"`` (Lin et al. 2017, with ``focal_gamma``).
    class_weight : ``"balanced"`` (n / (k · n_c), the reference's default), a dict
        label → weight, or None.

    Attributes: ``classes_``, ``n_features_in_``, ``net_`` (the :class:`GrandeNet`),
    ``preprocessor_``, ``history_`` (loss per epoch), ``n_epochs_``, ``best_epoch_``.
    """

    _kind = "classifier"

    def __init__(self, n_estimators=256, depth=5, epochs=120, batch_size=256, early_stopping=True,
                 validation_fraction=0.2, learning_rate_split=0.05, learning_rate_feature=0.01,
                 learning_rate_leaf=0.05, learning_rate_weight=0.001, feature_fraction=0.8,
                 selection="entmax", dropout=0.0, cosine_schedule=False, threshold_init="data",
                 loss="cross-entropy", focal_gamma=2.0, class_weight="balanced",
                 categorical_features=None, encoding="ordinal", impute=True,
                 quantile_transform=True, random_state=None):
        self.n_estimators = n_estimators
        self.depth = depth
        self.epochs = epochs
        self.batch_size = batch_size
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.learning_rate_split = learning_rate_split
        self.learning_rate_feature = learning_rate_feature
        self.learning_rate_leaf = learning_rate_leaf
        self.learning_rate_weight = learning_rate_weight
        self.feature_fraction = feature_fraction
        self.selection = selection
        self.dropout = dropout
        self.cosine_schedule = cosine_schedule
        self.threshold_init = threshold_init
        self.loss = loss
        self.focal_gamma = focal_gamma
        self.class_weight = class_weight
        self.categorical_features = categorical_features
        self.encoding = encoding
        self.impute = impute
        self.quantile_transform = quantile_transform
        self.random_state = random_state

    def _targets(self, y, fit):
        if y.dtype.kind == "f":
            if not np.isfinite(y).all():
                raise NonFiniteError("y contains NaN or infinity")
            if (y != np.round(y)).any():
                raise ValueError("Unknown label type: continuous; y must hold class labels")
        elif y.dtype.kind == "O" and not all(isinstance(v, (int, str, np.integer)) for v in y):
            kinds = sorted({type(v).__name__ for v in y})
            raise ValueError(f"Unknown label type: y holds {kinds}; expected ints or strings")
        if fit:
            classes = np.unique(y)
            if len(classes) < 2:
                raise ValueError(f"Classifier can't train when only one class is present: y has "
                                 f"1 class ({classes[0]!r}); at least 2 are needed")
            self.classes_ = classes
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        if (self.classes_[idx] != y).any():
            raise ValueError("eval_set[1] has labels that do not occur in y")
        return idx.astype(np.int64)

    def _split(self, t, rng):
        counts = np.bincount(t)
        if counts.min() < 2:
            tr = rng.permutation(len(t))
            k = max(1, round(self.validation_fraction * len(t)))
            return tr[k:], tr[:k]
        return stratified_indices(t, self.validation_fraction, rng=rng)

    def _n_outputs(self):
        return len(self.classes_)

    def _prepare(self, X, y, eval_set):
        out = super()._prepare(X, y, eval_set)
        if self.loss not in ("cross-entropy", "focal"):
            raise ValueError(f"loss must be 'cross-entropy' or 'focal', got {self.loss!r}")
        cw = self.class_weight
        if not (cw is None or cw == "balanced" or isinstance(cw, dict)):
            raise ValueError(f"class_weight must be None, 'balanced' or a dict label -> weight, "
                             f"got {cw!r}")
        tt = out[1]
        k = len(self.classes_)
        counts = np.bincount(tt, minlength=k).astype(np.float64)
        self._cw = None
        if isinstance(cw, dict):
            self._cw = np.array([float(cw.get(c, 1.0)) for c in self.classes_.tolist()])
        elif cw == "balanced":
            self._cw = len(tt) / (k * np.maximum(counts, 1))
        return out

    def _loss(self, logits, t):
        if self.loss == "focal":
            return focal_loss(logits, t, gamma=float(self.focal_gamma), alpha=self._cw)
        return softmax_cross_entropy(logits, t, class_weight=self._cw)

    def fit(self, X, y, eval_set=None):
        """Train on ``X (n, F)`` and labels ``y (n,)``; ``eval_set=(X_val, y_val)`` for early
        stopping instead of a held-out split. Returns self."""
        return self._fit(X, y, eval_set)

    def predict_proba(self, X):
        """Class probabilities ``(n, n_classes)``, columns in the order of ``classes_``."""
        z = self._decision(X).astype(np.float64)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        """The most probable class of each row, from ``classes_``."""
        z = self._decision(X)
        return self.classes_[np.argmax(z, axis=1)]

    def score(self, X, y):
        """Accuracy of :meth:`predict` on ``(X, y)``."""
        y = np.asarray(y).reshape(-1)
        return float(np.mean(self.predict(X) == y))


class GrandeRegressor(_GrandeBase):
    """GRANDE for regression (Marton et al., ICLR 2024): MSE on the standardised target.
    {common}
    Attributes: ``n_features_in_``, ``net_``, ``preprocessor_``, ``history_``, ``n_epochs_``,
    ``best_epoch_``, ``y_mean_``, ``y_std_``.
    """

    _kind = "regressor"

    def __init__(self, n_estimators=256, depth=5, epochs=120, batch_size=256, early_stopping=True,
                 validation_fraction=0.2, learning_rate_split=0.05, learning_rate_feature=0.01,
                 learning_rate_leaf=0.05, learning_rate_weight=0.001, feature_fraction=0.8,
                 selection="entmax", dropout=0.0, cosine_schedule=False, threshold_init="data",
                 categorical_features=None, encoding="ordinal", impute=True,
                 quantile_transform=True, random_state=None):
        self.n_estimators = n_estimators
        self.depth = depth
        self.epochs = epochs
        self.batch_size = batch_size
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.learning_rate_split = learning_rate_split
        self.learning_rate_feature = learning_rate_feature
        self.learning_rate_leaf = learning_rate_leaf
        self.learning_rate_weight = learning_rate_weight
        self.feature_fraction = feature_fraction
        self.selection = selection
        self.dropout = dropout
        self.cosine_schedule = cosine_schedule
        self.threshold_init = threshold_init
        self.categorical_features = categorical_features
        self.encoding = encoding
        self.impute = impute
        self.quantile_transform = quantile_transform
        self.random_state = random_state

    def _targets(self, y, fit):
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"y must hold numbers for regression, got dtype {y.dtype}") from None
        if not np.isfinite(y).all():
            raise NonFiniteError("y contains NaN or infinity")
        if fit:
            self.y_mean_ = float(y.mean())
            self.y_std_ = float(y.std()) or 1.0
        return ((y - self.y_mean_) / self.y_std_).astype(np.float32)

    def _split(self, t, rng):
        order = rng.permutation(len(t))
        k = max(1, round(self.validation_fraction * len(t)))
        return order[k:], order[:k]

    def _n_outputs(self):
        return 1

    def _loss(self, out, t):
        return mse(out, t.reshape(-1, 1).astype(out.dtype))

    def fit(self, X, y, eval_set=None):
        """Train on ``X (n, F)`` and targets ``y (n,)``; ``eval_set=(X_val, y_val)`` for early
        stopping instead of a held-out split. Returns self."""
        return self._fit(X, y, eval_set)

    def predict(self, X):
        """Predicted targets ``(n,)``."""
        return self._decision(X)[:, 0].astype(np.float64) * self.y_std_ + self.y_mean_

    def score(self, X, y):
        """Coefficient of determination R² of :meth:`predict` on ``(X, y)``."""
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        resid = float(np.sum((y - self.predict(X)) ** 2))
        total = float(np.sum((y - y.mean()) ** 2))
        return 1.0 - resid / total if total > 0 else (1.0 if resid == 0 else 0.0)


for _cls in (GrandeClassifier, GrandeRegressor):
    _cls.__doc__ = _cls.__doc__.replace("{common}", _COMMON_DOC.format(E=256, epochs=120, bs=256))
