"""Re-balancing (under, over, SMOTE), stratified k-fold and the cross-validation protocol: the test
fold is never re-balanced, imputed or scaled with its own statistics."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nograd.data import (BALANCE_METHODS, MedianImputer, cross_validate, random_oversample,
                         random_undersample, rebalance, smote, stratified_kfold, zeros_as_missing)

seeds = st.integers(0, 2**32 - 1)


def table(seed, n=None, classes=2, f=3):
    """Continuous random rows (pairwise distinct) and labels with every class present twice."""
    rng = np.random.default_rng(seed)
    n = n or int(rng.integers(8, 40))
    y = np.concatenate([np.repeat(np.arange(classes), 2),
                        rng.integers(0, classes, n - 2 * classes)]).astype(np.int64)
    rng.shuffle(y)
    return rng.standard_normal((n, f)), y


def row_index(A, B):
    """For each row of B, the index of the identical row of A (-1 when there is none)."""
    lookup = {r.tobytes(): i for i, r in enumerate(A)}
    return np.array([lookup.get(r.tobytes(), -1) for r in B])


def on_segment(p, a, b, tol=1e-9):
    """p = a + u (b - a) for some u in [0, 1]."""
    d = b - a
    dd = float(d @ d)
    if dd == 0:
        return np.allclose(p, a, atol=tol)
    u = float((p - a) @ d) / dd
    return -tol <= u <= 1 + tol and np.allclose(a + u * d, p, atol=tol)


# --------------------------------------------------------------------------- the three methods
@settings(max_examples=40, deadline=None)
@given(seeds, st.integers(2, 4), st.booleans())
def test_undersample_keeps_the_smallest_count_of_real_rows(seed, classes, replace):
    X, y = table(seed, classes=classes)
    Xb, yb, idx = random_undersample(X, y, rng=seed, replace=replace, return_index=True)
    counts = np.bincount(y)
    assert np.array_equal(np.bincount(yb), np.full(classes, counts.min()))
    assert np.array_equal(Xb, X[idx]) and np.array_equal(yb, y[idx])
    smallest = np.flatnonzero(y == np.argmin(counts))
    assert set(idx[yb == np.argmin(counts)].tolist()) == set(smallest.tolist())   # kept whole
    if not replace:
        assert len(np.unique(idx)) == len(idx)
    Xb2, yb2 = random_undersample(X, y, rng=seed, replace=replace)
    assert np.array_equal(Xb, Xb2) and np.array_equal(yb, yb2)


@settings(max_examples=40, deadline=None)
@given(seeds, st.integers(2, 4))
def test_oversample_adds_copies_of_the_same_class(seed, classes):
    X, y = table(seed, classes=classes)
    Xb, yb, idx = random_oversample(X, y, rng=seed, return_index=True)
    assert np.array_equal(np.bincount(yb), np.full(classes, np.bincount(y).max()))
    assert np.array_equal(Xb[:len(X)], X) and np.array_equal(yb[:len(y)], y)
    assert np.array_equal(Xb, X[idx]) and np.array_equal(yb, y[idx])


@settings(max_examples=40, deadline=None)
@given(seeds, st.integers(2, 3), st.integers(1, 6), st.booleans())
def test_smote_samples_lie_between_same_class_nearest_neighbours(seed, classes, k, scale):
    X, y = table(seed, classes=classes)
    Xb, yb, parents, gaps = smote(X, y, k=k, rng=seed, scale=scale, return_parents=True)
    counts = np.bincount(y)
    assert np.array_equal(np.bincount(yb), np.full(classes, counts.max()))
    assert np.array_equal(Xb[:len(X)], X) and np.array_equal(yb[:len(y)], y)
    i, j = parents[:, 0], parents[:, 1]
    assert np.array_equal(y[i], yb) and np.array_equal(y[j], yb)          # same class
    assert np.all((gaps >= 0) & (gaps < 1))
    np.testing.assert_allclose(Xb, X[i] + gaps[:, None] * (X[j] - X[i]), rtol=0, atol=1e-12)
    new = np.arange(len(X), len(Xb))
    assert np.all(i[new] != j[new])
    # j is among the k nearest members of i's class (brute force, same metric)
    Z = X / X.std(axis=0) if scale else X
    for r in new:
        members = np.flatnonzero(y == y[i[r]])
        others = members[members != i[r]]
        d = np.sum((Z[others] - Z[i[r]]) ** 2, axis=1)
        kk = min(k, len(members) - 1)
        assert np.sum((Z[j[r]] - Z[i[r]]) ** 2) <= np.sort(d)[kk - 1] + 1e-12
    # and without the bookkeeping: every synthetic row sits on some same-class segment
    Xs, ys = smote(X, y, k=k, rng=seed, scale=scale)
    assert np.array_equal(Xs, Xb)
    for r in new:
        members = np.flatnonzero(y == ys[r])
        assert any(on_segment(Xs[r], X[a], X[b]) for a in members for b in members if a < b)


def test_smote_spreads_base_points_evenly_and_is_seeded():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((13, 2))
    y = np.array([0] * 10 + [1] * 3)
    _, _, parents, _ = smote(X, y, k=2, rng=1, return_parents=True)
    base = parents[13:, 0]
    assert sorted(np.bincount(base, minlength=13)[10:].tolist()) == [2, 2, 3]   # 7 new over 3 bases
    assert np.array_equal(smote(X, y, rng=5)[0], smote(X, y, rng=5)[0])
    assert not np.array_equal(smote(X, y, rng=5)[0], smote(X, y, rng=6)[0])


def test_rebalance_by_name_and_errors():
    X, y = table(0, n=20)
    for method in BALANCE_METHODS:
        Xb, yb = rebalance(X, y, method, rng=0)
        counts = np.bincount(yb)
        assert method == "none" or counts.min() == counts.max()
    none = rebalance(X, y, "none")
    assert np.array_equal(none[0], X) and none[0] is not X
    with pytest.raises(ValueError, match="method must be one of none, under, over, smote"):
        rebalance(X, y, "adasyn")
    with pytest.raises(ValueError, match=r"X has 1 missing values \(NaN\) in columns \[2\]; impute"):
        Xn = X.copy()
        Xn[3, 2] = np.nan
        smote(Xn, y)
    with pytest.raises(ValueError, match="SMOTE needs at least 2 samples of class 1"):
        smote(np.zeros((4, 2)), np.array([0, 0, 0, 1]))
    with pytest.raises(ValueError, match="must be a table"):
        random_oversample(np.zeros(4), np.array([0, 0, 1, 1]))
    with pytest.raises(TypeError, match="float array"):
        random_undersample(np.zeros((4, 2), np.int64), np.array([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="X has 4 samples but y has 3"):
        random_undersample(np.zeros((4, 2)), np.array([0, 1, 1]))
    with pytest.raises(TypeError, match="k must be an int"):
        smote(X, y, k=2.5)


# --------------------------------------------------------------------------- folds
@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=2, max_size=60), st.integers(2, 7), seeds)
def test_stratified_kfold_partitions_and_stratifies(labels, k, seed):
    y = np.array(labels, np.int64)
    if k > len(y):
        with pytest.raises(ValueError, match="k must be between 2"):
            stratified_kfold(y, k, rng=seed)
        return
    folds = stratified_kfold(y, k, rng=seed)
    tests = np.concatenate([te for _, te in folds])
    assert len(folds) == k and np.array_equal(np.sort(tests), np.arange(len(y)))
    for tr, te in folds:
        assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(len(y)))
        assert abs(len(te) - len(y) / k) < 1
        for c in np.unique(y):
            assert abs(np.sum(y[te] == c) - np.sum(y == c) / k) < 1
    again = stratified_kfold(y, k, rng=seed)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))


# --------------------------------------------------------------------------- the protocol
class Spy:
    """A fit_predict that records what it was given and scores by the first feature."""

    def __init__(self):
        self.calls = []

    def __call__(self, X_train, y_train, X_test, *, rng):
        self.calls.append((X_train.copy(), y_train.copy(), X_test.copy()))
        return np.stack([-X_test[:, 0], X_test[:, 0]], axis=1)


@settings(max_examples=40, deadline=None)
@given(seeds, st.sampled_from(BALANCE_METHODS), st.integers(2, 4))
def test_rebalancing_never_touches_the_test_folds(seed, method, k):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5 * k, 50))
    y = (rng.random(n) < rng.uniform(0.2, 0.5)).astype(np.int64)
    y[:2 * k], y[2 * k:4 * k] = 0, 1               # >= 2 per class in every training fold (SMOTE)
    X = rng.standard_normal((n, 3))
    spy = Spy()
    out = cross_validate(X, y, spy, k=k, balance=method, rng=seed, standardise=False)
    assert len(spy.calls) == k
    seen_test = []
    for X_tr, y_tr, X_te in spy.calls:
        te = row_index(X, X_te)
        assert np.all(te >= 0)                     # test rows are original rows, unchanged
        seen_test.append(te)
        fold = set(te.tolist())
        train_rows = [i for i in range(n) if i not in fold]
        tr = row_index(X, X_tr)
        real = tr >= 0
        assert not (set(tr[real].tolist()) & fold)  # no test row in training
        assert np.array_equal(y_tr[real], y[tr[real]])
        if method in ("none", "under", "over"):
            assert real.all()
        for r in np.flatnonzero(~real):             # SMOTE rows: between training rows of a class
            members = [i for i in train_rows if y[i] == y_tr[r]]
            assert any(on_segment(X_tr[r], X[a], X[b]) for a in members for b in members if a < b)
        counts = np.bincount(y_tr, minlength=2)
        assert method == "none" or counts[0] == counts[1]
        assert len(X_te) == len(te) and abs(len(te) - n / k) < 1
    # the test folds are a partition of the table: every sample scored once, none re-sampled
    assert np.array_equal(np.sort(np.concatenate(seen_test)), np.arange(n))
    assert all(f["test_in_train"] == 0 for f in out["folds"])


def test_the_leaky_protocol_puts_test_copies_in_training():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 2)), np.array([0] * 45 + [1] * 15)
    out = cross_validate(X, y, Spy(), k=3, balance="over", rng=0, balance_before_split=True)
    assert out["protocol"] == "before-split" and out["n"] == 90
    assert np.mean([f["test_in_train"] for f in out["folds"]]) > 0.2


def test_imputation_and_scaling_use_training_statistics_only():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 3)) + 5
    X[rng.random((40, 3)) < 0.2] = np.nan
    y = np.array([0, 1] * 20)
    spy = Spy()
    cross_validate(X, y, spy, k=4, rng=3, impute="median")
    folds = stratified_kfold(y, 4, rng=int(np.random.default_rng(3).integers(0, 2**63 - 1)))
    for (X_tr, _, X_te), (tr, te) in zip(spy.calls, folds):
        med = np.nanmedian(X[tr], axis=0)
        filled = np.where(np.isnan(X[tr]), med, X[tr])
        mu, sd = filled.mean(axis=0), filled.std(axis=0)
        np.testing.assert_allclose(X_tr, (filled - mu) / sd, atol=1e-12)
        expect = (np.where(np.isnan(X[te]), med, X[te]) - mu) / sd
        np.testing.assert_allclose(X_te, expect, atol=1e-12)


def test_median_imputer_and_zeros_as_missing():
    X = np.array([[0.0, 1.0], [2.0, np.nan], [4.0, 3.0]])
    imp = MedianImputer().fit(X)
    assert imp.median_.tolist() == [2.0, 2.0]
    assert imp.transform(np.array([[np.nan, np.nan]])).tolist() == [[2.0, 2.0]]
    Z = zeros_as_missing(X, [0])
    assert np.isnan(Z[0, 0]) and X[0, 0] == 0 and Z[2, 0] == 4
    with pytest.raises(ValueError, match="no observed value in columns"):
        MedianImputer().fit(np.array([[np.nan], [np.nan]]))
    with pytest.raises(ValueError, match="not fitted"):
        MedianImputer().transform(X)
    with pytest.raises(ValueError, match="column 5 is out of range"):
        zeros_as_missing(X, [5])


def test_cross_validate_errors():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 2)), np.array([0, 1, 2] * 10)
    with pytest.raises(ValueError, match="target has 3 classes .* binary"):
        cross_validate(X, y, Spy())
    y2 = np.array([0, 1] * 15)
    Xn = X.copy()
    Xn[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"1 missing values \(NaN\) in 1 rows, columns \[1\]; "
                                         r"pass impute='median'"):
        cross_validate(Xn, y2, Spy())
    with pytest.raises(ValueError, match="balance must be one of"):
        cross_validate(X, y2, Spy(), balance="smote2")
    with pytest.raises(ValueError, match="fewer than k=5 folds"):
        cross_validate(X[:8], np.array([0] * 6 + [1] * 2), Spy())
    with pytest.raises(ValueError, match="single class"):
        cross_validate(X, np.zeros(30, np.int64), Spy())
    with pytest.raises(ValueError, match=r"fit_predict must return float scores \(N_test, 2\)"):
        cross_validate(X, y2, lambda a, b, c, rng: c[:, 0], k=2)
