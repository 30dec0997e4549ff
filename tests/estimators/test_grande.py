"""GRANDE's estimators (Marton et al., ICLR 2024): GrandeClassifier and GrandeRegressor fitting,
early stopping, options, bad input and the scikit-learn protocol (the network:
tests/models/test_grande.py)."""
import warnings

import numpy as np
import pytest

from nograd.estimators import GrandeClassifier, GrandeRegressor


def test_depth_one_tree_recovers_a_threshold():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(600, 1))
    y = (x[:, 0] > 0.7).astype(int)
    clf = GrandeClassifier(n_estimators=1, depth=1, epochs=40, batch_size=32, early_stopping=False,
                           quantile_transform=False, learning_rate_split=0.02,
                           learning_rate_leaf=0.05, random_state=1).fit(x, y)
    t = float(clf.net_.params["split_values"][0, 0, 0])
    assert abs(t - 0.7) < 0.05
    assert clf.score(x, y) > 0.97


def test_learns_digits():
    from nograd.data import load_digits

    Xtr, ytr, Xte, yte = load_digits()
    clf = GrandeClassifier(n_estimators=32, epochs=15, random_state=0).fit(Xtr, ytr)
    assert clf.score(Xte, yte) >= 0.8
    p = clf.predict_proba(Xte)
    np.testing.assert_allclose(p.sum(axis=1), 1)
    assert clf.classes_.tolist() == list(range(10))


def test_regressor_learns_a_step_and_a_slope():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(400, 3))
    y = np.where(X[:, 0] > 0, 2.0, -1.0) + X[:, 1]
    reg = GrandeRegressor(n_estimators=32, epochs=40, random_state=0).fit(X[:300], y[:300])
    assert reg.score(X[300:], y[300:]) > 0.8


def test_same_seed_same_model_and_options_run():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((120, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    kw = {"n_estimators": 8, "depth": 3, "epochs": 5, "random_state": 3}
    a = GrandeClassifier(**kw).fit(X, y).predict_proba(X)
    b = GrandeClassifier(**kw).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    clf = GrandeClassifier(loss="focal", cosine_schedule=True, dropout=0.2, selection="softmax",
                           threshold_init="normal", class_weight=None, **kw)
    clf.fit(X[:80], y[:80], eval_set=(X[80:], y[80:]))
    assert len(clf.history_["val_loss"]) == clf.n_epochs_ and 1 <= clf.best_epoch_ <= 5


def test_early_stopping_restores_the_best_weights():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((200, 3))
    y = (rng.random(200) < 0.5).astype(int)                       # noise: validation loss rises
    clf = GrandeClassifier(n_estimators=8, depth=4, epochs=60, early_stopping=3,
                           learning_rate_leaf=0.1, random_state=0).fit(X, y)
    assert clf.n_epochs_ < 60
    assert clf.n_epochs_ == clf.best_epoch_ + 3
    best = min(clf.history_["val_loss"])
    assert clf.history_["val_loss"][clf.best_epoch_ - 1] == best


def test_get_set_params():
    clf = GrandeClassifier(n_estimators=7, categorical_features=[1])
    p = clf.get_params()
    assert p["n_estimators"] == 7 and p["categorical_features"] == [1] and p["depth"] == 5
    assert clf.set_params(depth=2) is clf and clf.depth == 2
    with pytest.raises(ValueError, match="nonsense"):
        clf.set_params(nonsense=1)
    assert GrandeClassifier(**clf.get_params()).get_params() == clf.get_params()


def test_categorical_column_and_missing_values():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.standard_normal(300), rng.integers(0, 4, 300)]).astype(float)
    y = (X[:, 1] >= 2).astype(int)
    X[::17, 0] = np.nan
    clf = GrandeClassifier(n_estimators=16, epochs=15, categorical_features=[1],
                           random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.95


def test_bad_input_names_the_argument():
    X = np.random.default_rng(0).standard_normal((40, 3))
    y = np.arange(40) % 2
    small = {"n_estimators": 2, "depth": 2, "epochs": 1}
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="X contains NaN.*impute"):
        GrandeClassifier(impute=False, **small).fit(Xn, y)
    clf = GrandeClassifier(**small).fit(X, y)
    with pytest.raises(ValueError, match="X has 2 features, but GrandeClassifier is expecting 3"):
        clf.predict(X[:, :2])
    with pytest.raises(ValueError, match="class"):
        GrandeClassifier(**small).fit(X, np.zeros(40, int))
    with pytest.raises(ValueError, match="X and y have mismatched lengths"):
        GrandeClassifier(**small).fit(X, y[:-1])
    with pytest.raises(ValueError, match="X must be 2-D"):
        GrandeClassifier(**small).fit(X[:, 0], y)
    with pytest.raises(ValueError, match="Unknown label type"):
        GrandeClassifier(**small).fit(X, X[:, 0])
    with pytest.raises(ValueError, match="n_estimators"):
        GrandeClassifier(n_estimators=0).fit(X, y)
    with pytest.raises(ValueError, match="not fitted"):
        GrandeRegressor().predict(X)
    with pytest.raises(TypeError, match="sparse"):
        class Sparse:
            def toarray(self):
                return X
        GrandeClassifier(**small).fit(Sparse(), y)


def test_scikit_learn_check_estimator():
    pytest.importorskip("sklearn")
    from sklearn.utils.estimator_checks import check_estimator

    for est in (GrandeClassifier(n_estimators=8, depth=3, epochs=30, batch_size=64, random_state=0),
                GrandeRegressor(n_estimators=8, depth=3, epochs=30, batch_size=64, random_state=0)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_estimator(est)
