"""GRANDE (Marton et al., ICLR 2024): the network's maps and the straight-through parts (the
estimators: tests/estimators/test_grande.py)."""
import numpy as np
import pytest

from nograd.layers.entmax import entmax15, entmax15_vjp
from nograd.models import GrandeNet
from nograd.testing import check_adjoint, check_jvp, check_vjp


def _net(**kw):
    n_features, n_outputs = kw.pop("n_features", 5), kw.pop("n_outputs", 3)
    opts = {"n_estimators": 4, "depth": 3, "init_std": 1.0, "rng": 0, "dtype": np.float64, **kw}
    return GrandeNet(n_features, n_outputs, **opts)


def _away_from_splits(net, rng, n, margin=0.02):
    """Inputs whose every split argument u = t - x_n is at least ``margin`` from 0."""
    T, FL = net.params["split_values"], net.params["feature_logits"]
    a = net._select(FL)
    if net.straight_through:
        a = np.eye(a.shape[-1])[np.argmax(a, axis=-1)]
    for _ in range(500):
        x = rng.standard_normal((n, net.n_features))
        u = np.einsum("ens,ens->en", a, T)[:, :, None] - np.einsum("ens,esb->enb", a, x.T[net.subsets])
        if np.abs(u).min() > margin:
            return x
    raise RuntimeError("no input away from the splits")


# ----------------------------------------------------------------------------- the network
@pytest.mark.parametrize("selection", ["entmax", "softmax"])
@pytest.mark.parametrize("seed", [0, 1])
def test_smooth_surrogate_passes_gradient_checks(selection, seed):
    net = _net(selection=selection, straight_through=False, dropout=0.25, rng=seed)
    x = _away_from_splits(net, np.random.default_rng(seed), 6)
    for train in (False, True):
        assert check_vjp(net, x, train=train, seed=seed) < 1e-6
        assert check_jvp(net, x, train=train, seed=seed) < 1e-6
        assert check_adjoint(net, x, train=train, seed=seed) < 1e-10


def test_straight_through_backward_and_jvp_are_transposes():
    for backend in ("numba", "numpy"):
        net = _net(backend=backend, dropout=0.2)
        x = np.random.default_rng(3).standard_normal((7, 5))
        assert check_adjoint(net, x, train=True, seed=4) < 1e-10


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_numba_and_numpy_backends_agree(dt):
    kw = {"n_estimators": 6, "depth": 4, "dropout": 0.3, "rng": 5, "dtype": dt}
    a, b = _net(**kw), _net(backend="numpy", **kw)
    x = np.random.default_rng(0).standard_normal((9, 5)).astype(dt)
    ya, ca = a.forward(x, train=True, rng=1)
    yb, cb = b.forward(x, train=True, rng=1)
    tol = 1e-5 if dt == np.float32 else 1e-12
    np.testing.assert_allclose(ya, yb, atol=tol)
    dy = np.random.default_rng(2).standard_normal(ya.shape).astype(dt)
    (dxa, ga), (dxb, gb) = a.backward(ca, dy), b.backward(cb, dy)
    np.testing.assert_allclose(dxa, dxb, atol=tol)
    for k in ga:
        assert ga[k].dtype == dt
        np.testing.assert_allclose(ga[k], gb[k], atol=tol, err_msg=k)


def test_hard_forward_is_a_plain_tree_ensemble():
    """Forward: argmax feature, go left iff x < threshold, softmax over the reached leaves' weights."""
    net = _net(n_estimators=3, depth=2, n_outputs=2)
    x = np.random.default_rng(1).standard_normal((8, 5))
    P = net.params
    y = net(x)
    for b in range(8):
        w, r = [], []
        for e in range(3):
            n = 0
            for _ in range(2):
                j = int(np.argmax(P["feature_logits"][e, n]))
                go_left = P["split_values"][e, n, j] > x[b, net.subsets[e, j]]
                n = 2 * n + (1 if go_left else 2)
            w.append(P["estimator_weights"][e, n - 3])
            r.append(P["leaf_values"][e, n - 3])
        om = np.exp(w) / np.sum(np.exp(w))
        np.testing.assert_allclose(y[b], om @ np.array(r), atol=1e-12)


def test_straight_through_backward_is_the_surrogate_derivative():
    """One tree of depth 1 on one feature: y = V_left if t > x else V_right. Backward gives
    dy/dt = (V_left - V_right) / (2 (1 + |t - x|)^2), the softsign surrogate's slope at the hard
    point, and the feature logits get entmax's Jacobian times (T_j - x_j) of that slope."""
    net = GrandeNet(2, 1, n_estimators=1, depth=1, rng=0, dtype=np.float64)
    net.subsets[...] = [[0, 1]]
    P = net.params
    P["split_values"][...] = [[[0.3, -0.5]]]
    P["feature_logits"][...] = [[[1.0, 0.2]]]       # feature 0 chosen; entmax support {0, 1}
    P["leaf_values"][...] = [[[2.0], [-1.0]]]
    x = np.array([[0.1, 0.7], [0.9, -2.0]])
    y, cache = net.forward(x)
    np.testing.assert_allclose(y[:, 0], [2.0, -1.0])                 # hard: rounded splits
    dx, g = net.backward(cache, np.ones_like(y))
    u = 0.3 - x[:, 0]
    slope = (2.0 - (-1.0)) * 0.5 / (1 + np.abs(u)) ** 2
    np.testing.assert_allclose(g["split_values"][0, 0], [slope.sum(), 0.0])
    np.testing.assert_allclose(dx[:, 0], -slope)
    np.testing.assert_allclose(dx[:, 1], 0.0)
    a = entmax15(P["feature_logits"][0, 0])
    assert a[0] > a[1] > 0
    d_onehot = np.array([np.sum(slope * (0.3 - x[:, 0])), np.sum(slope * (-0.5 - x[:, 1]))])
    np.testing.assert_allclose(g["feature_logits"][0, 0], entmax15_vjp(a, d_onehot))
    # the leaf values and estimator weights get exact gradients (the membership is 0/1)
    np.testing.assert_allclose(g["leaf_values"][0, :, 0], [1.0, 1.0])
    np.testing.assert_allclose(g["estimator_weights"], 0.0, atol=1e-15)  # one tree: softmax = 1


def test_params_and_bad_inputs():
    net = GrandeNet(3, 2, n_estimators=4, depth=2, rng=0)
    assert sorted(net.params) == ["estimator_weights", "feature_logits", "leaf_values", "split_values"]
    assert net.params["split_values"].shape == (4, 3, 3)
    with pytest.raises(ValueError, match="x"):
        net.forward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="rng"):
        GrandeNet(3, 2, dropout=0.5, rng=0).forward(np.zeros((2, 3), np.float32), train=True)
    with pytest.raises(ValueError, match="selection"):
        GrandeNet(3, 2, selection="sparsemax")
