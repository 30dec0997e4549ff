r"""Preprocessing of tabular features: imputation, category encoding and a quantile transform.

The pieces follow the scikit-learn ``fit`` / ``transform`` / ``fit_transform`` convention; fitted
attributes end in ``_``. Fit them on the training rows only and apply them to the rest.

- :class:`SimpleImputer` — fill NaN: mean (or median) of a numeric column, mode of a categorical one.
- :class:`CategoryEncoder` — ordinal codes, one-hot columns, or leave-one-out target encoding.
- :class:`QuantileNormal` — each column through its empirical CDF, then the standard normal
  quantile function (the transform GRANDE, Marton et al. ICLR 2024 §4, applies to numeric features).
- :class:`TabularPreprocessor` — the three in a chain, as the GRANDE estimators use them.

>>> import numpy as np
>>> X = np.array([[1.0, 0.0], [2.0, 1.0], [np.nan, 1.0], [4.0, np.nan]])
>>> pre = TabularPreprocessor(categorical=[1], encoding="onehot", quantile=False)
>>> pre.fit_transform(X).tolist()
[[1.0, 1.0, 0.0], [2.0, 0.0, 1.0], [2.3333333333333335, 0.0, 1.0], [4.0, 0.0, 1.0]]
>>> pre.feature_map_.tolist()
[0, 1, 1]

scipy is imported only inside :meth:`QuantileNormal.transform` (for ``ndtri``).
"""
from __future__ import annotations

import numpy as np

from ..core.checks import NonFiniteError, as_rng, check_float, check_int

__all__ = ["CategoryEncoder", "QuantileNormal", "SimpleImputer", "TabularPreprocessor"]

#: sklearn's margin: inputs within this distance of the fitted range's ends map to its ends, and
#: the normal quantiles are clipped at the ppf of this probability (about ±5.2)
BOUNDS_THRESHOLD = 1e-7


# --------------------------------------------------------------------------- validation
def _check_2d(X, name="X", *, allow_nan=True, nan_hint=""):
    """A 2-D float64 copy-free view of ``X``; NaN allowed (missing), inf never."""
    if isinstance(X, (list, tuple)):
        X = np.asarray(X)
    if not isinstance(X, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(X).__name__}")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {X.shape}); need at least one row and one column")
    X64 = X.astype(np.float64, copy=False)
    inf = np.isinf(X64).any(axis=0)
    if inf.any():
        raise NonFiniteError(f"{name} contains infinite values in columns {np.flatnonzero(inf).tolist()}")
    if not allow_nan:
        nan = np.isnan(X64).any(axis=0)
        if nan.any():
            raise ValueError(f"{name} has missing values (NaN) in columns "
                             f"{np.flatnonzero(nan).tolist()}{nan_hint}")
    return X64


def _check_width(X, n, name, what):
    if X.shape[1] != n:
        raise ValueError(f"{name} has {X.shape[1]} columns but the {what} was fitted on {n}")


def _check_fitted(obj, attr):
    if not hasattr(obj, attr):
        raise ValueError(f"this {type(obj).__name__} is not fitted; call fit(X_train) first")


def _columns(categorical, n_features, name="categorical"):
    """Sorted distinct column indices from None, a list of ints (negative counts from the end) or a
    boolean mask of length ``n_features``."""
    if categorical is None:
        return []
    arr = np.asarray(categorical)
    if arr.dtype == bool:
        if arr.shape != (n_features,):
            raise ValueError(f"{name} as a boolean mask must have length {n_features}, got shape "
                             f"{arr.shape}")
        return np.flatnonzero(arr).tolist()
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise TypeError(f"{name} must be a list of column indices (ints) or a boolean mask, got "
                        f"{categorical!r}")
    out = []
    for j in arr.tolist():
        if not -n_features <= j < n_features:
            raise ValueError(f"{name} index {j} is out of range for X with {n_features} columns")
        out.append(j % n_features)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} repeats a column: {list(categorical)}")
    return sorted(out)


def _mode(values):
    """The most frequent value (the smallest among ties)."""
    levels, counts = np.unique(values, return_counts=True)
    return levels[np.argmax(counts)]


# --------------------------------------------------------------------------- imputation
class SimpleImputer:
    """Fill missing values (NaN) with statistics of the rows it was fitted on.

    ``strategy`` (``"mean"`` or ``"median"``) applies to numeric columns; the columns listed in
    ``categorical`` get their mode (most frequent value; the smallest among ties). A column with no
    observed value at fit time is filled with 0 — it carries no information either way — and is
    listed in ``empty_``. Fitted: ``statistics_`` (one fill value per column), ``n_features_in_``.
    """

    def __init__(self, strategy="mean", categorical=None):
        self.strategy = strategy
        self.categorical = categorical

    def fit(self, X, y=None) -> SimpleImputer:
        if self.strategy not in ("mean", "median"):
            raise ValueError(f"strategy must be 'mean' or 'median', got {self.strategy!r}")
        X = _check_2d(X)
        cats = set(_columns(self.categorical, X.shape[1]))
        stats = np.zeros(X.shape[1])
        empty = []
        for j in range(X.shape[1]):
            col = X[:, j]
            seen = col[~np.isnan(col)]
            if seen.size == 0:
                empty.append(j)
            elif j in cats:
                stats[j] = _mode(seen)
            else:
                stats[j] = seen.mean() if self.strategy == "mean" else np.median(seen)
        self.statistics_ = stats
        self.empty_ = empty
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X) -> np.ndarray:
        _check_fitted(self, "statistics_")
        X = _check_2d(X)
        _check_width(X, self.n_features_in_, "X", "imputer")
        holes = np.isnan(X)
        if not holes.any():
            return X.copy()
        return np.where(holes, self.statistics_, X)

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)


# --------------------------------------------------------------------------- categories
class CategoryEncoder:
    r"""Encode every column of ``X`` as a categorical feature whose values are category codes.

    The categories of a column are its distinct non-NaN values at fit time, sorted (``categories_``).

    - ``"ordinal"``: category → its index 0..K-1 in sorted order; a value not seen at fit time (or
      NaN) → ``-1``. One output column per input column.
    - ``"onehot"``: one 0/1 column per category; an unseen value (or NaN) → all zeros.
    - ``"loo"``: leave-one-out target encoding (as in GRANDE's preprocessing). With targets
      :math:`t_i` (a class indicator, or ``y`` itself for regression), prior
      :math:`\bar t` = the mean over all fitted rows, category sums :math:`S_c` and counts
      :math:`n_c` and smoothing :math:`m`:

      .. math::
          \text{fit\_transform, row } i: \frac{S_{c_i} - t_i + m \bar t}{n_{c_i} - 1 + m}
          \qquad \text{transform}: \frac{S_c + m \bar t}{n_c + m}

      so a training row never sees its own target; a row whose leave-one-out denominator is 0
      (a category seen once, ``smoothing=0``), an unseen category and NaN all get :math:`\bar t`.
      ``y`` of integer (or bool) dtype is read as class labels: with at most two classes one
      column, the indicator of the larger label; with more, one column per class (``classes_``).
      A float ``y`` is a regression target: one column.

    Because of the leave-one-out, ``fit_transform(X, y)`` differs from ``fit(X, y).transform(X)``
    for ``"loo"`` (for the other methods they agree). ``n_outputs_`` lists how many output columns
    each input column gives.
    """

    def __init__(self, method="ordinal", smoothing=1.0):
        self.method = method
        self.smoothing = smoothing

    def _check_params(self):
        if self.method not in ("ordinal", "onehot", "loo"):
            raise ValueError(f"method must be 'ordinal', 'onehot' or 'loo', got {self.method!r}")
        check_float(self.smoothing, "smoothing", low=0)

    def _targets(self, y, n):
        if y is None:
            raise ValueError("y is required for method='loo' (the encoding is a mean of the "
                             "target); pass fit(X, y)")
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D (n_samples,), got shape {y.shape}")
        if len(y) != n:
            raise ValueError(f"X has {n} rows but y has {len(y)}")
        if y.dtype.kind in "biu":
            self.classes_ = np.unique(y)
            if len(self.classes_) <= 2:
                return (y == self.classes_[-1]).astype(np.float64)[:, None]
            return (y[:, None] == self.classes_[None, :]).astype(np.float64)
        if y.dtype.kind != "f":
            raise TypeError(f"y must be integer class labels or a float target, got dtype {y.dtype}")
        if not np.isfinite(y).all():
            raise NonFiniteError("y contains NaN or inf")
        self.classes_ = None
        return y.astype(np.float64)[:, None]

    def fit(self, X, y=None) -> CategoryEncoder:
        self._fit(X, y)
        return self

    def _fit(self, X, y):
        """Fit and return (X as float64, codes (n, F) with -1 for unseen/NaN, targets or None)."""
        self._check_params()
        X = _check_2d(X)
        self.categories_ = [np.unique(col[~np.isnan(col)]) for col in X.T]
        self.n_features_in_ = X.shape[1]
        codes = self._codes(X)
        T = None
        if self.method == "loo":
            T = self._targets(y, len(X))
            self.prior_ = T.mean(axis=0)
            self.sums_, self.counts_ = [], []
            for j, cats in enumerate(self.categories_):
                known = codes[:, j] >= 0                     # NaN cells belong to no category
                sums = np.zeros((len(cats), T.shape[1]))
                np.add.at(sums, codes[known, j], T[known])
                self.sums_.append(sums)
                self.counts_.append(np.bincount(codes[known, j], minlength=len(cats))
                                    .astype(np.float64))
        elif y is not None and len(np.asarray(y)) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(np.asarray(y))}")
        width = {"ordinal": lambda c: 1, "onehot": len,
                 "loo": lambda c: T.shape[1] if T is not None else 1}[self.method]
        self.n_outputs_ = [int(width(c)) for c in self.categories_]
        return X, codes, T

    def _codes(self, X):
        codes = np.full(X.shape, -1, dtype=np.int64)
        for j, cats in enumerate(self.categories_):
            col = X[:, j]
            if len(cats) == 0:
                continue
            pos = np.clip(np.searchsorted(cats, col), 0, len(cats) - 1)
            known = cats[pos] == col                     # False for NaN and unseen values
            codes[known, j] = pos[known]
        return codes

    def _encode(self, codes, T=None):
        """Output columns from codes; ``T`` given → leave-one-out (training rows)."""
        n = len(codes)
        blocks = []
        for j, cats in enumerate(self.categories_):
            c = codes[:, j]
            known = c >= 0
            if self.method == "ordinal":
                blocks.append(c.astype(np.float64)[:, None])
            elif self.method == "onehot":
                out = np.zeros((n, len(cats)))
                out[np.flatnonzero(known), c[known]] = 1.0
                blocks.append(out)
            else:
                m = float(self.smoothing)
                out = np.tile(self.prior_, (n, 1))
                s = self.sums_[j][c[known]]
                k = self.counts_[j][c[known]][:, None]
                if T is not None:
                    s, k = s - T[known], k - 1.0
                num, den = s + m * self.prior_, k + m
                ok = den[:, 0] > 0
                rows = np.flatnonzero(known)[ok]
                out[rows] = num[ok] / den[ok]
                blocks.append(out)
        return np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0))

    def transform(self, X) -> np.ndarray:
        _check_fitted(self, "categories_")
        X = _check_2d(X)
        _check_width(X, self.n_features_in_, "X", "encoder")
        return self._encode(self._codes(X))

    def fit_transform(self, X, y=None) -> np.ndarray:
        X, codes, T = self._fit(X, y)
        return self._encode(codes, T)


# --------------------------------------------------------------------------- quantile transform
class QuantileNormal:
    r"""Map each column to a standard normal through its empirical distribution function.

    ``fit`` stores, per column, the values ``quantiles_[:, j]`` of the training data at
    ``references_`` = ``n_q`` evenly spaced probabilities in [0, 1] (``np.nanpercentile``, made
    non-decreasing), with ``n_q`` = ``n_quantiles`` capped at the number of rows used. Above
    ``subsample`` rows, each column's quantiles come from ``subsample`` rows drawn without
    replacement (``random_state``). ``transform`` maps a value :math:`x` of column ``j`` to

    .. math::
        u = \tfrac12\big(F(x) + 1 - F^{-}(x)\big), \qquad z = \Phi^{-1}(u)

    where :math:`F` interpolates the references over the quantiles from below and :math:`F^{-}`
    the same from above (on the reversed, negated arrays), so a value repeated over several
    quantiles lands in the middle of its range of probabilities. Values within ``1e-7`` of the
    fitted minimum (maximum) or beyond it get :math:`u = 0` (1), and :math:`z` is clipped to
    :math:`\Phi^{-1}(10^{-7})` ≈ -5.2 and its negative. This is the mapping of scikit-learn's
    ``QuantileTransformer(output_distribution="normal")``, with one deliberate difference: a
    column that was constant at fit time maps to 0 (sklearn sends it to the lower clip). NaN
    passes through as NaN. A column with no observed value at fit is a ``ValueError``.
    """

    def __init__(self, n_quantiles=1000, subsample=100_000, random_state=None):
        self.n_quantiles = n_quantiles
        self.subsample = subsample
        self.random_state = random_state

    def fit(self, X, y=None) -> QuantileNormal:
        for name in ("n_quantiles", "subsample"):
            check_int(getattr(self, name), name, low=1)
        X = _check_2d(X)
        n = len(X)
        rows = min(n, int(self.subsample))
        n_q = min(int(self.n_quantiles), rows)
        self.references_ = np.linspace(0.0, 1.0, n_q)
        rng = as_rng(self.random_state, "random_state") if rows < n else None
        Q = np.empty((n_q, X.shape[1]))
        empty = np.isnan(X).all(axis=0)
        if empty.any():
            raise ValueError(f"X has no observed value in columns {np.flatnonzero(empty).tolist()}; "
                             f"a quantile transform needs at least one")
        for j in range(X.shape[1]):
            col = X[:, j] if rng is None else X[rng.choice(n, rows, replace=False), j]
            if np.isnan(col).all():                       # the subsample missed every value
                col = X[:, j]
            Q[:, j] = np.nanpercentile(col, 100.0 * self.references_)
        self.quantiles_ = np.maximum.accumulate(Q, axis=0)
        self.n_features_in_ = X.shape[1]
        return self

    def _uniform(self, X):
        """The probabilities ``u`` in [0, 1] (NaN kept)."""
        U = np.full(X.shape, np.nan)
        r = self.references_
        for j in range(X.shape[1]):
            q = self.quantiles_[:, j]
            ok = ~np.isnan(X[:, j])
            x = X[ok, j]
            if q[-1] == q[0]:
                U[ok, j] = 0.5
                continue
            u = 0.5 * (np.interp(x, q, r) - np.interp(-x, -q[::-1], -r[::-1]))
            u[x + BOUNDS_THRESHOLD > q[-1]] = 1.0
            u[x - BOUNDS_THRESHOLD < q[0]] = 0.0
            U[ok, j] = u
        return U

    def transform(self, X) -> np.ndarray:
        from scipy.special import ndtri

        _check_fitted(self, "quantiles_")
        X = _check_2d(X)
        _check_width(X, self.n_features_in_, "X", "quantile transform")
        eps = BOUNDS_THRESHOLD - np.spacing(1)
        with np.errstate(divide="ignore"):
            Z = ndtri(self._uniform(X))
        return np.clip(Z, ndtri(eps), ndtri(1.0 - eps))

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)


# --------------------------------------------------------------------------- the chain
class TabularPreprocessor:
    """Impute, encode the categorical columns, quantile-transform: a tabular table → float features.

    Parameters
    ----------
    categorical : column indices (or a boolean mask) whose values are category codes (any float
        values; each distinct value is a category). ``None``: every column is numeric.
    encoding : ``"ordinal"``, ``"onehot"`` or ``"loo"`` (leave-one-out target encoding, needs
        ``y``) — see :class:`CategoryEncoder`.
    impute : fill NaN with the training mean (numeric) or mode (categorical), see
        :class:`SimpleImputer`. ``False``: NaN anywhere in ``X`` is a ``ValueError``.
    quantile : map the numeric columns, and the leave-one-out columns, to a standard normal with
        :class:`QuantileNormal` (``n_quantiles``, ``random_state`` for its subsample). Ordinal codes
        stay 0..K-1 and one-hot columns 0/1: the quantile map sends a few-valued column's lowest and
        highest category to the clip values ±5.2, which helps nobody. ``False``: numeric columns
        pass through (imputed).
    n_quantiles, random_state : passed to :class:`QuantileNormal`.

    The steps, each fitted on the rows given to ``fit``: impute → encode categoricals →
    quantile transform. Output columns keep the input order, an input column giving 1 (numeric,
    ordinal), K (one-hot over K categories) or C (leave-one-out, C > 2 classes) columns:
    ``feature_map_[k]`` is the input column of output column ``k``. A category not seen at fit is
    code -1 (ordinal), all zeros (one-hot) or
    the prior mean (leave-one-out). The output dtype is the input's float dtype, else float64.

    ``fit(X, y).transform(X)`` equals ``fit_transform(X, y)`` except with ``encoding="loo"``,
    where ``fit_transform`` encodes each training row without its own target.

    Fitted: ``n_features_in_``, ``n_features_out_``, ``feature_map_``, ``categorical_`` (sorted
    indices), ``imputer_`` (or None), ``encoder_`` (or None), ``quantile_columns_`` (output
    columns that were quantile-transformed), ``quantiler_`` (or None).
    """

    def __init__(self, categorical=None, encoding="ordinal", impute=True, quantile=True,
                 n_quantiles=1000, random_state=None):
        self.categorical = categorical
        self.encoding = encoding
        self.impute = impute
        self.quantile = quantile
        self.n_quantiles = n_quantiles
        self.random_state = random_state

    def fit(self, X, y=None) -> TabularPreprocessor:
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X, y=None) -> np.ndarray:
        if self.encoding not in ("ordinal", "onehot", "loo"):
            raise ValueError(f"encoding must be 'ordinal', 'onehot' or 'loo', got {self.encoding!r}")
        dtype = self._out_dtype(X)
        X = _check_2d(X, allow_nan=bool(self.impute), nan_hint="; pass impute=True")
        n, F = X.shape
        if y is not None and len(np.asarray(y).reshape(-1)) != n:
            raise ValueError(f"X has {n} rows but y has {len(np.asarray(y).reshape(-1))}")
        if self.encoding == "loo" and y is None:
            raise ValueError("encoding='loo' needs the target: pass fit(X, y) / fit_transform(X, y)")
        cats = _columns(self.categorical, F)
        self.categorical_ = cats
        self.n_features_in_ = F
        self.imputer_ = SimpleImputer(categorical=cats).fit(X) if self.impute else None
        if self.imputer_ is not None:
            X = self.imputer_.transform(X)
        self.encoder_ = None
        E = None
        if cats:
            self.encoder_ = CategoryEncoder(self.encoding)
            E = self.encoder_.fit_transform(X[:, cats], y)
        Z = self._assemble(X, E)
        self.quantiler_ = None
        if self.quantile and len(self.quantile_columns_):
            self.quantiler_ = QuantileNormal(self.n_quantiles, random_state=self.random_state)
            Z[:, self.quantile_columns_] = self.quantiler_.fit_transform(Z[:, self.quantile_columns_])
        return Z.astype(dtype, copy=False)

    def transform(self, X) -> np.ndarray:
        _check_fitted(self, "feature_map_")
        dtype = self._out_dtype(X)
        X = _check_2d(X, allow_nan=bool(self.impute), nan_hint="; pass impute=True")
        _check_width(X, self.n_features_in_, "X", "preprocessor")
        if self.imputer_ is not None:
            X = self.imputer_.transform(X)
        E = self.encoder_.transform(X[:, self.categorical_]) if self.encoder_ is not None else None
        Z = self._assemble(X, E)
        if self.quantiler_ is not None:
            Z[:, self.quantile_columns_] = self.quantiler_.transform(Z[:, self.quantile_columns_])
        return Z.astype(dtype, copy=False)

    def _assemble(self, X, E):
        """Columns in input order; sets ``feature_map_``, ``n_features_out_``, ``quantile_columns_``."""
        blocks, fmap, qcols = [], [], []
        start = 0
        widths = dict(zip(self.categorical_, self.encoder_.n_outputs_)) if E is not None else {}
        offsets = {}
        for j in self.categorical_:
            offsets[j] = start
            start += widths[j]
        for j in range(X.shape[1]):
            if j in widths:
                block = E[:, offsets[j]:offsets[j] + widths[j]]
                to_quantile = self.encoding == "loo"
            else:
                block = X[:, j:j + 1]
                to_quantile = True
            if to_quantile:
                qcols.extend(range(len(fmap), len(fmap) + block.shape[1]))
            fmap.extend([j] * block.shape[1])
            blocks.append(block)
        self.feature_map_ = np.array(fmap, dtype=np.int64)
        self.n_features_out_ = len(fmap)
        self.quantile_columns_ = np.array(qcols, dtype=np.int64)
        return np.concatenate(blocks, axis=1).astype(np.float64)

    @staticmethod
    def _out_dtype(X):
        dt = getattr(X, "dtype", None)
        return dt if dt is not None and dt in (np.float32, np.float64) else np.dtype(np.float64)
