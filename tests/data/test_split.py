"""Stratified splits, mini-batches, one-hot and standardisation: properties under hypothesis."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nograd.data import (Standardiser, batches, num_batches, one_hot, standardise,
                         stratified_indices, stratified_split)

labels = st.lists(st.integers(0, 5), min_size=2, max_size=80).map(lambda v: np.array(v, np.int64))
fractions = st.floats(0.05, 0.95)
seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=150, deadline=None)
@given(labels, fractions, seeds)
def test_stratified_split_properties(y, frac, seed):
    n = len(y)
    t = int(np.floor(frac * n + 0.5))
    if not 1 <= t <= n - 1:
        with pytest.raises(ValueError, match="test_size"):
            stratified_indices(y, frac, rng=seed)
        return
    tr, te = stratified_indices(y, frac, rng=seed)
    # no sample lost or repeated
    both = np.concatenate([tr, te])
    assert len(te) == t and np.array_equal(np.sort(both), np.arange(n))
    # every class within one sample of its exact share
    for c in np.unique(y):
        n_c = int(np.sum(y == c))
        got = int(np.sum(y[te] == c))
        assert abs(got - n_c * t / n) < 1, (c, got, n_c * t / n)
    # deterministic under a seed
    tr2, te2 = stratified_indices(y, frac, rng=seed)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)


@settings(max_examples=50, deadline=None)
@given(labels, seeds)
def test_stratified_split_count_and_arrays(y, seed):
    n = len(y)
    X = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    X_tr, y_tr, X_te, y_te = stratified_split(X, y, 1, rng=seed)
    assert len(y_te) == 1 and len(y_tr) == n - 1
    # rows keep their labels
    rows = np.concatenate([X_tr[:, 0], X_te[:, 0]]).astype(int) // 2
    assert np.array_equal(np.concatenate([y_tr, y_te]), y[rows])


def test_split_differs_across_seeds_and_rejects_bad_input():
    y = np.repeat(np.arange(3), 20)
    a = stratified_indices(y, 0.25, rng=0)[1]
    b = stratified_indices(y, 0.25, rng=1)[1]
    assert not np.array_equal(np.sort(a), np.sort(b))
    with pytest.raises(ValueError, match="test_size must be a fraction"):
        stratified_indices(y, 1.5)
    with pytest.raises(ValueError, match=r"1 <= test_size <= 59"):
        stratified_indices(y, 60)
    with pytest.raises(TypeError, match="integer class labels"):
        stratified_indices(y.astype(float))
    with pytest.raises(ValueError, match="negative labels"):
        stratified_indices(y - 1)
    with pytest.raises(ValueError, match="X has 3 samples but y has 60"):
        stratified_split(np.zeros((3, 2)), y)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 60), st.integers(1, 70), st.booleans(), st.booleans(), seeds)
def test_batches_cover_every_sample_once(n, bs, shuffle, drop_last, seed):
    X = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    y = np.arange(n)
    got = list(batches(X, y, bs, rng=seed, shuffle=shuffle, drop_last=drop_last))
    assert len(got) == num_batches(n, bs, drop_last)
    if got:
        ys = np.concatenate([b[1] for b in got])
        xs = np.concatenate([b[0] for b in got])
        assert np.array_equal(xs[:, 0].astype(int), ys)          # pairs stay together
        assert len(np.unique(ys)) == len(ys)                     # nothing repeated
        assert all(len(b[1]) == bs for b in got[:-1])
        if not drop_last:
            assert np.array_equal(np.sort(ys), y)                # nothing lost
        else:
            assert len(ys) == n - n % bs
        if not shuffle:
            assert np.array_equal(ys, np.arange(len(ys)))
    again = list(batches(X, y, bs, rng=seed, shuffle=shuffle, drop_last=drop_last))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(got, again))


def test_batches_arguments_checked_at_call():
    X, y = np.zeros((4, 2)), np.zeros(4, int)
    with pytest.raises(ValueError, match="needs rng="):
        batches(X, y, 2)
    with pytest.raises(ValueError, match="X has 4 samples but y has 3"):
        batches(X, y[:3], 2, rng=0)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        batches(X, y, 0, rng=0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        batches(X, y, 2.0, rng=0)
    with pytest.raises(ValueError, match="X is empty"):
        batches(X[:0], y[:0], 2, rng=0)
    assert [yb for _, yb in batches(X, None, 3, shuffle=False)] == [None, None]


def test_one_hot():
    out = one_hot(np.array([2, 0, 1]), 4)
    np.testing.assert_array_equal(out, [[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0]])
    assert out.dtype == np.float32 and one_hot(np.array([1, 2])).shape == (2, 3)
    with pytest.raises(ValueError, match="label 3 but num_classes is 3"):
        one_hot(np.array([3]), 3)


def test_standardise_uses_training_statistics():
    rng = np.random.default_rng(0)
    Xtr = rng.normal(5, 3, size=(200, 4)).astype(np.float32)
    Xtr[:, 3] = 7.0                                           # a constant feature
    Xte = rng.normal(5, 3, size=(50, 4)).astype(np.float32)
    a, b = standardise(Xtr, Xte)
    np.testing.assert_allclose(a[:, :3].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(a[:, :3].std(0), 1, atol=1e-4)
    assert np.all(a[:, 3] == 0) and a.dtype == np.float32
    s = Standardiser().fit(Xtr)
    np.testing.assert_allclose(b, (Xte - s.mean_) / s.scale_, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"feature shape \(3,\)"):
        s.transform(Xte[:, :3])
    with pytest.raises(ValueError, match="not fitted"):
        Standardiser().transform(Xte)
    with pytest.raises(TypeError, match="float array"):
        standardise(np.zeros((3, 2), int))
