"""InverseConv2d: round trips, agreement with a dense triangular solve and with the NumPy reference,
log-determinant against slogdet, gradient checks per corner, and errors."""
import numpy as np
import pytest

from nograd.kernels import invconv_ref
from nograd.layers import InverseConv2d
from nograd.layers.invconv import CORNERS
from nograd.testing import check_adjoint, check_jvp, check_vjp

scipy_linalg = pytest.importorskip("scipy.linalg")


def _layer(C=3, k=3, corner="top-left", learn_diag=False, seed=0, dtype=np.float64, scale=1.0):
    rng = np.random.default_rng(seed)
    m = InverseConv2d(C, k, corner=corner, learn_diag=learn_diag, rng=rng, dtype=dtype)
    m._own["weight"] = (m._own["weight"] * scale).astype(dtype)
    if learn_diag:
        m._own["diag"] = (rng.uniform(0.5, 1.5, C) * rng.choice([-1, 1], C)).astype(dtype)
    return m


def _dense_solve(m, x):
    """z = M⁻¹ x with the dense lower-triangular matrix of K (top-left layer only)."""
    N, C, H, W = x.shape
    We, diag = m._effective(m.params, x.dtype)
    M = invconv_ref.dense(We, diag, H, W)
    u = x.transpose(0, 2, 3, 1).reshape(N, -1).T
    z = scipy_linalg.solve_triangular(M, u, lower=True)
    return z.T.reshape(N, H, W, C).transpose(0, 3, 1, 2), M


@pytest.mark.parametrize("corner", list(CORNERS))
@pytest.mark.parametrize("learn_diag", [False, True])
def test_round_trips(corner, learn_diag):
    m = _layer(corner=corner, learn_diag=learn_diag, scale=3.0)
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 6))
    np.testing.assert_allclose(m.inverse(m(x)), x, atol=1e-10)
    np.testing.assert_allclose(m(m.inverse(x)), x, atol=1e-10)


@pytest.mark.parametrize("C,k,H,W", [(1, 1, 3, 4), (2, 2, 4, 3), (3, 3, 5, 6), (2, 4, 6, 6)])
def test_solve_matches_dense_solve_triangular(C, k, H, W):
    m = _layer(C, k, learn_diag=True, scale=2.0)
    x = np.random.default_rng(2).standard_normal((3, C, H, W))
    z_dense, M = _dense_solve(m, x)
    assert np.allclose(np.triu(M, 1), 0)            # the ordering makes K lower triangular
    np.testing.assert_allclose(m(x), z_dense, rtol=1e-10, atol=1e-10)
    # backward: dx = M⁻ᵀ dy
    z, cache = m.forward(x)
    dy = np.random.default_rng(3).standard_normal(z.shape)
    dx, _ = m.backward(cache, dy)
    v = dy.transpose(0, 2, 3, 1).reshape(3, -1).T
    g = scipy_linalg.solve_triangular(M, v, lower=True, trans="T")
    np.testing.assert_allclose(dx, g.T.reshape(3, H, W, C).transpose(0, 3, 1, 2), rtol=1e-10, atol=1e-10)


def test_float32_solve_matches_float64():
    m = _layer(4, 3, dtype=np.float32)
    x = np.random.default_rng(4).standard_normal((2, 4, 16, 16)).astype(np.float32)
    z32 = m(x)
    m64 = _layer(4, 3)
    m64._own["weight"] = m._own["weight"].astype(np.float64)
    assert z32.dtype == np.float32
    np.testing.assert_allclose(z32, m64(x.astype(np.float64)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("corner", list(CORNERS))
def test_numba_kernels_equal_numpy_reference(corner):
    m = _layer(3, 3, corner=corner, learn_diag=True, scale=2.0)
    ref = InverseConv2d(3, 3, corner=corner, learn_diag=True, reference=True, dtype=np.float64)
    ref._own = dict(m._own)
    x = np.random.default_rng(5).standard_normal((2, 3, 5, 7))
    z, c = m.forward(x)
    zr, cr = ref.forward(x)
    np.testing.assert_allclose(z, zr, rtol=1e-12, atol=1e-12)
    dy = np.random.default_rng(6).standard_normal(z.shape)
    (dx, g), (dxr, gr) = m.backward(c, dy), ref.backward(cr, dy)
    np.testing.assert_allclose(dx, dxr, rtol=1e-12, atol=1e-12)
    for key in g:
        np.testing.assert_allclose(g[key], gr[key], rtol=1e-12, atol=1e-12)


def test_logdet_equals_slogdet_of_dense_jacobian():
    m = _layer(2, 3, learn_diag=True)
    x = np.random.default_rng(7).standard_normal((2, 2, 3, 4))
    n = x[0].size
    # the Jacobian of the (linear) layer, column by column
    J = np.stack([m(np.eye(n)[i].reshape(1, 2, 3, 4)).ravel() for i in range(n)], axis=1)
    sign, logabs = np.linalg.slogdet(J)
    np.testing.assert_allclose(m.logdet(x), [logabs, logabs], rtol=1e-10)
    assert sign != 0
    unit = _layer(2, 3)
    J = np.stack([unit(np.eye(n)[i].reshape(1, 2, 3, 4)).ravel() for i in range(n)], axis=1)
    assert np.linalg.slogdet(J)[1] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_array_equal(unit.logdet(x), [0.0, 0.0])


def test_logdet_grad_matches_differences():
    m = _layer(3, 2, learn_diag=True)
    x = np.zeros((2, 3, 4, 5))
    g = m.logdet_grad(x)["diag"]
    h = 1e-6
    for c in range(3):
        d = m.params["diag"].copy()
        d[c] += h
        up = m.logdet(x, params={"diag": d}).sum()
        d[c] -= 2 * h
        down = m.logdet(x, params={"diag": d}).sum()
        assert g[c] == pytest.approx((up - down) / (2 * h), rel=1e-6)


@pytest.mark.parametrize("corner", list(CORNERS))
def test_gradients_per_corner(corner):
    m = _layer(2, 3, corner=corner, learn_diag=True, scale=2.0, seed=11)
    x = np.random.default_rng(8).standard_normal((2, 2, 4, 5))
    assert check_vjp(m, x) < 1e-6
    assert check_jvp(m, x) < 1e-6
    assert check_adjoint(m, x) < 1e-9


def test_corners_are_flips_of_each_other():
    base = _layer(2, 3, learn_diag=True)
    x = np.random.default_rng(9).standard_normal((2, 2, 5, 4))
    for corner, axes in CORNERS.items():
        m = InverseConv2d(2, 3, corner=corner, learn_diag=True, dtype=np.float64)
        m._own = dict(base._own)
        flipped = np.flip(base(np.flip(x, axes)), axes) if axes else base(x)
        np.testing.assert_allclose(m(x), flipped, rtol=1e-12, atol=1e-12)
    # different corners are different maps
    br = InverseConv2d(2, 3, corner="bottom-right", learn_diag=True, dtype=np.float64)
    br._own = dict(base._own)
    assert np.abs(br(x) - base(x)).max() > 1e-3


def test_masked_entries_are_ignored_and_get_zero_gradient():
    m = _layer(3, 3)
    x = np.random.default_rng(10).standard_normal((2, 3, 4, 4))
    W = m.params["weight"].copy()
    W[:, :, 2, 2] += np.triu(np.full((3, 3), 5.0))      # on and above the channel diagonal
    np.testing.assert_array_equal(m(x, params={"weight": W}), m(x))
    z, c = m.forward(x)
    _, g = m.backward(c, np.ones_like(z))
    assert np.all(np.triu(g["weight"][:, :, 2, 2]) == 0)
    assert np.abs(g["weight"]).sum() > 0


def test_errors():
    m = InverseConv2d(2, 3, learn_diag=True, dtype=np.float64)
    x = np.zeros((1, 2, 4, 4))
    with pytest.raises(ValueError, match="diag"):
        m.forward(x, params={"diag": np.array([1.0, 0.0])})
    with pytest.raises(ValueError, match="diag"):
        m.inverse(x, params={"diag": np.array([np.nan, 1.0])})
    with pytest.raises(ValueError, match="channels"):
        m.forward(np.zeros((1, 3, 4, 4)))
    with pytest.raises(ValueError, match="x must be 4-D"):
        m.forward(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="z"):
        m.inverse(np.zeros((1, 3, 4, 4)))
    with pytest.raises(ValueError, match="dx"):
        m.jvp(x, np.zeros((1, 2, 4, 5)))
    with pytest.raises(ValueError, match="corner"):
        InverseConv2d(2, corner="middle")
    with pytest.raises(ValueError, match="kernel_size"):
        InverseConv2d(2, 0)
