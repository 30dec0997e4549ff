"""GRANDE kernels (Numba) against the NumPy reference, and both against the dense hard model."""
import numpy as np
import pytest

pytest.importorskip("numba")

from nograd.kernels import grande as K
from nograd.kernels import grande_ref as R

SHAPES = [  # (B, F, E, depth, S, C)
    (7, 4, 3, 2, 3, 2),
    (20, 6, 5, 3, 4, 3),
    (13, 3, 2, 1, 2, 1),
    (9, 8, 4, 4, 8, 2),
]


def _problem(shape, dt, seed):
    B, F, E, d, S, C = shape
    rng = np.random.default_rng(seed)
    N, L = 2 ** d - 1, 2 ** d
    x = rng.standard_normal((B, F)).astype(dt)
    sub = np.stack([np.sort(rng.choice(F, S, replace=False)) for _ in range(E)]).astype(np.int64)
    j = rng.integers(0, S, (E, N))
    feat = sub[np.arange(E)[:, None], j]
    thr = (0.5 * rng.standard_normal((E, N))).astype(dt)
    W = rng.standard_normal((E, L)).astype(dt)
    V = rng.standard_normal((E, L, C)).astype(dt)
    om = rng.random((E, B)).astype(dt)
    dy = rng.standard_normal((B, C)).astype(dt)
    dw = rng.standard_normal((E, B)).astype(dt)
    return x, sub, j, feat, thr, W, V, om, dy, dw


def _tol(dt):
    return {"rtol": 1e-4, "atol": 1e-4} if dt == np.float32 else {"rtol": 1e-11, "atol": 1e-11}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_forward_kernels_equal_reference(shape, dt):
    x, _sub, _j, feat, thr, W, V, om, dy, _dw = _problem(shape, dt, 0)
    leaf, w = K.route(x, feat, thr, W)
    leaf_r, w_r = R.route(x, feat, thr, W)
    np.testing.assert_array_equal(leaf, leaf_r)
    np.testing.assert_array_equal(w, w_r)
    assert w.dtype == dt and leaf.dtype == np.int32
    assert 0 <= leaf.min() and leaf.max() < 2 ** shape[3]
    y = K.combine(om, leaf, V)
    assert y.dtype == dt
    np.testing.assert_allclose(y, R.combine(om, leaf, V), **_tol(dt))
    np.testing.assert_allclose(K.leaf_cotangent(dy, leaf, V), R.leaf_cotangent(dy, leaf, V), **_tol(dt))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_backward_kernel_equals_reference(shape, dt):
    x, sub, _j, feat, thr, W, V, om, dy, dw = _problem(shape, dt, 1)
    leaf, _ = K.route(x, feat, thr, W)
    got = K.backward_route(x, feat, thr, sub, W, V, leaf, dw, om, dy)
    want = R.backward_route(x, feat, thr, sub, W, V, leaf, dw, om, dy)
    for name, a, b in zip(["dthr", "H", "dW", "dV", "dx"], got, want):
        assert a.dtype == dt and a.shape == b.shape, name
        np.testing.assert_allclose(a, b, err_msg=name, **_tol(dt))
    assert K.backward_route(x, feat, thr, sub, W, V, leaf, dw, om, dy, need_dx=False)[4] is None


@pytest.mark.parametrize("shape", SHAPES)
def test_kernels_equal_the_dense_straight_through_model(shape):
    """The path-only kernels compute what the dense form (every node, every leaf, products along
    the paths) computes with rounded splits and surrogate derivatives."""
    x, sub, j, feat, thr, W, V, om, dy, dw = _problem(shape, np.float64, 2)
    E, N = feat.shape
    S = sub.shape[1]
    o = np.zeros((E, N, S))
    o[np.arange(E)[:, None], np.arange(N)[None, :], j] = 1
    T = np.random.default_rng(3).standard_normal((E, N, S))
    T[np.arange(E)[:, None], np.arange(N)[None, :], j] = thr
    w_d, r_d, cache = R.dense_forward(x, o, T, sub, W, V, True)
    leaf, w = K.route(x, feat, thr, W)
    np.testing.assert_allclose(w, w_d, atol=1e-12)
    np.testing.assert_allclose(K.combine(om, leaf, V), np.einsum("eb,ebc->bc", om, r_d), atol=1e-12)
    dx, do, dT, dW, dV = R.dense_backward(cache, dw, om[:, :, None] * dy[None])
    dthr, H, dW_k, dV_k, dx_k = K.backward_route(x, feat, thr, sub, W, V, leaf, dw, om, dy)
    np.testing.assert_allclose(dx_k, dx, atol=1e-12)
    np.testing.assert_allclose(dW_k, dW, atol=1e-12)
    np.testing.assert_allclose(dV_k, dV, atol=1e-12)
    np.testing.assert_allclose(T * dthr[:, :, None] - H, do, atol=1e-12)
    np.testing.assert_allclose(np.take_along_axis(dT, j[:, :, None], -1)[:, :, 0], dthr, atol=1e-12)


def test_split_direction_convention():
    """Left (child 2n+1) when thr - x > 0; a tie goes right."""
    x = np.array([[0.0], [1.0], [2.0]])
    leaf, _ = K.route(x, np.zeros((1, 1), np.int64), np.array([[1.0]]), np.zeros((1, 2)))
    assert leaf.tolist() == [[0, 1, 1]]
    leaf_r, _ = R.route(x, np.zeros((1, 1), np.int64), np.array([[1.0]]), np.zeros((1, 2)))
    assert leaf_r.tolist() == [[0, 1, 1]]
