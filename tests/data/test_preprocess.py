"""Tabular preprocessing: quantile transform (against sklearn when present, and by its properties),
imputation, category encodings (ordinal, one-hot, leave-one-out), the chain, load_csv(missing="nan")
and the errors for bad input."""
import numpy as np
import pytest

from nograd.data import load_csv
from nograd.data.preprocess import (
    CategoryEncoder,
    QuantileNormal,
    SimpleImputer,
    TabularPreprocessor,
)

CLIP = 5.19933758270342             # the normal ppf of 1 - 1e-7 (+ eps), where both transforms clip


def mixed(n=400, seed=0):
    """Columns: normal, ties (rounded), skewed, heavy-tailed."""
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.standard_normal(n), np.round(rng.standard_normal(n) * 2),
                            rng.exponential(size=n), rng.standard_t(2, size=n)])


# --------------------------------------------------------------------------- QuantileNormal
@pytest.mark.parametrize("n_quantiles", [1000, 100, 7])
def test_quantile_normal_matches_sklearn(n_quantiles):
    sk = pytest.importorskip("sklearn.preprocessing")
    X = mixed()
    X_new = np.random.default_rng(1).standard_normal((200, 4)) * 3    # incl. outside the range
    X_new[:5, 1] = [0.0, 1.0, -2.0, 2.0, 0.5]                          # on and between ties
    ref = sk.QuantileTransformer(n_quantiles=min(n_quantiles, len(X)),
                                 output_distribution="normal").fit(X)
    ours = QuantileNormal(n_quantiles).fit(X)
    np.testing.assert_allclose(ours.quantiles_, ref.quantiles_, atol=1e-12)
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), atol=1e-6)
    np.testing.assert_allclose(ours.transform(X_new), ref.transform(X_new), atol=1e-6)


def test_quantile_normal_matches_sklearn_with_nan():
    sk = pytest.importorskip("sklearn.preprocessing")
    X = mixed(300, seed=2)
    X[np.random.default_rng(3).random(X.shape) < 0.1] = np.nan
    ref = sk.QuantileTransformer(n_quantiles=50, output_distribution="normal").fit(X)
    np.testing.assert_allclose(QuantileNormal(50).fit(X).transform(X), ref.transform(X), atol=1e-6)


def test_quantile_normal_properties():
    X = mixed(2000, seed=4)
    q = QuantileNormal(random_state=0)
    Z = q.fit_transform(X)
    assert Z.shape == X.shape and np.isfinite(Z).all() and np.abs(Z).max() <= CLIP + 1e-9
    for j in range(X.shape[1]):
        order = np.argsort(X[:, j], kind="stable")
        assert np.all(np.diff(Z[order, j]) >= 0)                    # monotone
    cont = Z[:, [0, 2, 3]]                                            # continuous columns: ~N(0, 1)
    assert np.abs(cont.mean(axis=0)).max() < 0.02
    assert np.abs(cont.std(axis=0) - 1).max() < 0.1
    inner = np.abs(cont) < 3                                          # away from the clipped ends
    assert np.abs(np.median(cont, axis=0)).max() < 0.01 and inner.mean() > 0.99
    # far outside the fitted range: the clip values
    far = q.transform(np.array([[-1e9] * 4, [1e9] * 4]))
    np.testing.assert_allclose(far, [[-CLIP] * 4, [CLIP] * 4])


def test_quantile_normal_constant_column_nan_and_subsample():
    X = np.column_stack([np.full(50, 3.0), np.linspace(0, 1, 50)])
    X[[4, 9], 1] = np.nan
    q = QuantileNormal(n_quantiles=20)
    Z = q.fit_transform(X)
    assert np.all(Z[:, 0] == 0)                                       # constant column → 0
    assert np.isnan(Z[[4, 9], 1]).all() and np.isfinite(np.delete(Z[:, 1], [4, 9])).all()
    assert q.transform(np.array([[7.0, 0.5]]))[0, 0] == 0
    big = np.random.default_rng(5).standard_normal((3000, 2))
    a = QuantileNormal(subsample=500, random_state=0).fit(big)
    b = QuantileNormal(subsample=500, random_state=0).fit(big)
    c = QuantileNormal(subsample=500, random_state=1).fit(big)
    assert a.quantiles_.shape == (500, 2)                             # capped at the rows used
    np.testing.assert_array_equal(a.quantiles_, b.quantiles_)
    assert not np.array_equal(a.quantiles_, c.quantiles_)


# --------------------------------------------------------------------------- SimpleImputer
def test_simple_imputer_mean_mode_and_empty_column():
    X = np.array([[1.0, 2.0, np.nan], [3.0, 2.0, np.nan], [np.nan, 5.0, np.nan],
                  [8.0, np.nan, np.nan]])
    imp = SimpleImputer(categorical=[1]).fit(X)
    np.testing.assert_allclose(imp.statistics_, [4.0, 2.0, 0.0])
    assert imp.empty_ == [2]
    out = imp.transform(X)
    np.testing.assert_allclose(out[:, 0], [1, 3, 4, 8])
    np.testing.assert_allclose(out[:, 1], [2, 2, 5, 2])
    assert np.all(out[:, 2] == 0)
    assert np.isnan(X).sum() == 6                                      # input untouched
    assert SimpleImputer("median").fit(X).statistics_[0] == 3.0
    ties = np.array([[2.0], [1.0], [2.0], [1.0]])
    assert SimpleImputer(categorical=[0]).fit(ties).statistics_[0] == 1.0   # smallest of the modes


# --------------------------------------------------------------------------- CategoryEncoder
def test_ordinal_and_onehot():
    X = np.array([[10.0, -1.5], [2.5, 7.0], [10.0, 7.0], [2.5, -1.5]])
    enc = CategoryEncoder("ordinal").fit(X)
    np.testing.assert_array_equal(enc.transform(X), [[1, 0], [0, 1], [1, 1], [0, 0]])
    new = np.array([[3.0, 7.0], [np.nan, -1.5]])
    np.testing.assert_array_equal(enc.transform(new), [[-1, 1], [-1, 0]])   # unseen/NaN → -1
    oh = CategoryEncoder("onehot")
    Z = oh.fit_transform(X)
    np.testing.assert_array_equal(Z, [[0, 1, 1, 0], [1, 0, 0, 1], [0, 1, 0, 1], [1, 0, 1, 0]])
    np.testing.assert_array_equal(oh.transform(new), [[0, 0, 0, 1], [0, 0, 1, 0]])
    assert oh.n_outputs_ == [2, 2]


def test_leave_one_out_binary():
    x = np.array([[0.0], [0.0], [0.0], [1.0], [1.0], [2.0]])
    y = np.array([1, 0, 1, 0, 0, 1])
    m = 2.0
    enc = CategoryEncoder("loo", smoothing=m)
    Z = enc.fit_transform(x, y)[:, 0]
    prior = 0.5
    want = [(1 + m * prior) / (2 + m), (2 + m * prior) / (2 + m), (1 + m * prior) / (2 + m),
            (0 + m * prior) / (1 + m), (0 + m * prior) / (1 + m), (0 + m * prior) / (0 + m)]
    np.testing.assert_allclose(Z, want)
    full = enc.transform(np.array([[0.0], [1.0], [2.0], [9.0], [np.nan]]))[:, 0]
    np.testing.assert_allclose(full, [(2 + m * prior) / (3 + m), (0 + m * prior) / (2 + m),
                                      (1 + m * prior) / (1 + m), prior, prior])
    # no smoothing: a category seen once has nothing left → the prior
    z0 = CategoryEncoder("loo", smoothing=0).fit_transform(x, y)[:, 0]
    np.testing.assert_allclose(z0, [0.5, 1, 0.5, 0, 0, 0.5])


def test_leave_one_out_multiclass_and_regression():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, (200, 1)).astype(float)
    y = rng.integers(0, 3, 200)
    enc = CategoryEncoder("loo", smoothing=0.0)
    Z = enc.fit_transform(x, y)
    assert Z.shape == (200, 3) and enc.n_outputs_ == [3]
    i = 17
    others = (x[:, 0] == x[i, 0]) & (np.arange(200) != i)
    np.testing.assert_allclose(Z[i], [np.mean(y[others] == k) for k in range(3)])
    np.testing.assert_allclose(Z.sum(axis=1), 1.0)
    yr = rng.standard_normal(200)
    Zr = CategoryEncoder("loo", smoothing=0.0).fit_transform(x, yr)
    assert Zr.shape == (200, 1)
    np.testing.assert_allclose(Zr[i, 0], yr[others].mean())


# --------------------------------------------------------------------------- the chain
def table(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.standard_normal(n), rng.integers(0, 3, n) * 10.0,
                         rng.exponential(size=n)])
    y = (X[:, 0] + (X[:, 1] == 10) > 0.5).astype(np.int64)
    return X, y


@pytest.mark.parametrize("encoding, width, fmap", [("ordinal", 3, [0, 1, 2]),
                                                   ("onehot", 5, [0, 1, 1, 1, 2]),
                                                   ("loo", 3, [0, 1, 2])])
def test_preprocessor_layout(encoding, width, fmap):
    X, y = table()
    pre = TabularPreprocessor(categorical=[1], encoding=encoding, random_state=0)
    Z = pre.fit_transform(X, y)
    assert Z.shape == (300, width) and Z.dtype == np.float64 and np.isfinite(Z).all()
    assert pre.n_features_in_ == 3 and pre.n_features_out_ == width
    assert pre.feature_map_.tolist() == fmap
    np.testing.assert_allclose(Z[:, 0], QuantileNormal().fit_transform(X[:, :1])[:, 0])
    if encoding != "loo":
        np.testing.assert_allclose(pre.fit(X, y).transform(X), Z)
    if encoding == "ordinal":
        np.testing.assert_array_equal(Z[:, 1], X[:, 1] / 10)          # codes are not quantiled
    Z32 = pre.transform(X.astype(np.float32))
    assert Z32.dtype == np.float32


def test_preprocessor_impute_and_no_quantile():
    X, _ = table()
    X[::7, 0] = np.nan
    X[::11, 1] = np.nan
    pre = TabularPreprocessor(categorical=[1], encoding="onehot", quantile=False)
    Z = pre.fit_transform(X)
    assert np.isfinite(Z).all()
    np.testing.assert_allclose(Z[::7, 0][1:], np.nanmean(X[:, 0]))     # row 0 is also in ::11
    mode = np.argmax(np.bincount((X[~np.isnan(X[:, 1]), 1] / 10).astype(int)))
    assert np.all(Z[11::11, 1 + mode] == 1)
    np.testing.assert_allclose(Z[:, 4], X[:, 2])                       # numeric passes through
    with pytest.raises(ValueError, match=r"X has missing values \(NaN\) in columns \[0, 1\]; "
                                         r"pass impute=True"):
        TabularPreprocessor(categorical=[1], impute=False).fit(X)
    clean = TabularPreprocessor(impute=False).fit(table()[0])
    with pytest.raises(ValueError, match=r"missing values \(NaN\) in columns \[0, 1\]"):
        clean.transform(X)


def test_preprocessor_bad_input():
    X, y = table()
    pre = TabularPreprocessor(categorical=[1]).fit(X)
    with pytest.raises(ValueError, match="X has 2 columns but the preprocessor was fitted on 3"):
        pre.transform(X[:, :2])
    with pytest.raises(ValueError, match=r"X must be 2-D .* got shape \(300,\)"):
        pre.transform(X[:, 0])
    with pytest.raises(ValueError, match=r"X must be 2-D"):
        TabularPreprocessor().fit(X[:, 0])
    bad = X.copy()
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match=r"X contains infinite values in columns \[2\]"):
        pre.transform(bad)
    with pytest.raises(ValueError, match="infinite"):
        TabularPreprocessor().fit(bad)
    with pytest.raises(ValueError, match="categorical index 3 is out of range for X with 3"):
        TabularPreprocessor(categorical=[3]).fit(X)
    with pytest.raises(ValueError, match="repeats a column"):
        TabularPreprocessor(categorical=[1, -2]).fit(X)
    with pytest.raises(ValueError, match="encoding='loo' needs the target"):
        TabularPreprocessor(categorical=[1], encoding="loo").fit(X)
    with pytest.raises(ValueError, match="X has 300 rows but y has 299"):
        TabularPreprocessor(categorical=[1], encoding="loo").fit(X, y[:-1])
    with pytest.raises(ValueError, match="X has 300 rows but y has 299"):
        TabularPreprocessor().fit(X, y[:-1])
    with pytest.raises(ValueError, match="encoding must be"):
        TabularPreprocessor(encoding="target").fit(X)
    with pytest.raises(ValueError, match="not fitted"):
        TabularPreprocessor().transform(X)
    with pytest.raises(TypeError, match="numeric"):
        TabularPreprocessor().fit(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="y is required"):
        CategoryEncoder("loo").fit(X[:, 1:2])
    with pytest.raises(ValueError, match="smoothing"):
        CategoryEncoder("loo", smoothing=-1).fit(X[:, 1:2], y)
    with pytest.raises(ValueError, match="no observed value in columns \\[0\\]"):
        QuantileNormal().fit(np.full((4, 1), np.nan))
    with pytest.raises(ValueError, match="n_quantiles must be a positive integer"):
        QuantileNormal(0).fit(X)


def test_preprocessor_boolean_mask_and_unseen_category():
    X, y = table()
    a = TabularPreprocessor(categorical=[False, True, False]).fit_transform(X)
    b = TabularPreprocessor(categorical=[1]).fit_transform(X)
    np.testing.assert_array_equal(a, b)
    pre = TabularPreprocessor(categorical=[1], encoding="loo").fit(X, y)
    Z = pre.transform(np.array([[0.0, 99.0, 1.0]]))                   # unseen category → prior
    ref = pre.quantiler_.transform(np.array([[0.0, y.mean(), 1.0]]))
    np.testing.assert_allclose(Z, ref)


# --------------------------------------------------------------------------- load_csv
def test_load_csv_missing_nan(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("a,colour,label\n1.5,red,yes\n,blue,no\n0.5,?,no\n2,red,\n3,blue,yes\n")
    X, y, info = load_csv(str(p), target="label", categorical="codes", missing="nan",
                          return_info=True)
    np.testing.assert_array_equal(np.isnan(X), [[0, 0], [1, 0], [0, 1], [0, 0]])
    np.testing.assert_array_equal(X[:, 1], [1, 0, np.nan, 0])
    assert y.tolist() == [1, 0, 0, 1] and info["dropped_rows"] == 1
    assert info["categorical"] == {"colour": ["blue", "red"]}
    X, _ = load_csv(str(p), target="label", missing="nan")
    np.testing.assert_array_equal(X[2], [0.5, np.nan, np.nan])       # one-hot: NaN in each column
    np.testing.assert_array_equal(X[0], [1.5, 0, 1])
    Z = TabularPreprocessor(categorical=[1]).fit_transform(
        load_csv(str(p), target="label", categorical="codes", missing="nan")[0])
    assert np.isfinite(Z).all()
    with pytest.raises(ValueError, match="missing must be 'error', 'drop' or 'nan'"):
        load_csv(str(p), target="label", missing="keep")
