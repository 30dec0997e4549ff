"""1.5-entmax: a probability vector, sparse, exact derivatives, agrees with its defining problem."""
import numpy as np
import pytest

from nograd.layers import Entmax15, entmax15
from nograd.layers.entmax import entmax15_vjp
from nograd.testing import check_adjoint, check_jvp, check_vjp


def test_sums_to_one_and_is_non_negative():
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float64):
        z = (3 * rng.standard_normal((50, 7))).astype(dt)
        p = entmax15(z)
        assert p.dtype == dt and p.shape == z.shape
        assert p.min() >= 0
        np.testing.assert_allclose(p.sum(axis=-1), 1, rtol=1e-5 if dt == np.float32 else 1e-12)


def test_exact_zeros_for_well_separated_logits():
    p = entmax15(np.array([4.0, 0.0, -1.0, 3.9]))
    assert p[1] == 0 and p[2] == 0 and p[0] > p[3] > 0
    assert entmax15(np.array([10.0, 0.0, 0.0])).tolist() == [1.0, 0.0, 0.0]


def test_equal_logits_give_the_uniform_distribution_and_shift_invariance():
    np.testing.assert_allclose(entmax15(np.zeros(4)), 0.25)
    z = np.array([0.3, -1.2, 2.0, 0.1])
    np.testing.assert_allclose(entmax15(z + 5.0), entmax15(z), atol=1e-14)


def test_matches_the_threshold_definition():
    """p_i = [z_i/2 - tau]_+^2 with tau found by bisection on sum p = 1 (Peters et al. 2019, eq. 9)."""
    rng = np.random.default_rng(1)
    for _ in range(20):
        z = 2 * rng.standard_normal(6)
        X = z / 2
        lo, hi = X.max() - 1.0, X.max()
        for _ in range(200):
            mid = (lo + hi) / 2
            if np.sum(np.maximum(X - mid, 0) ** 2) > 1:
                lo = mid
            else:
                hi = mid
        np.testing.assert_allclose(entmax15(z), np.maximum(X - lo, 0) ** 2, atol=1e-12)


def test_axis_argument():
    z = np.random.default_rng(2).standard_normal((3, 5, 2))
    np.testing.assert_allclose(entmax15(z, axis=1), np.moveaxis(entmax15(np.moveaxis(z, 1, -1)), -1, 1))
    np.testing.assert_allclose(entmax15(z, axis=1).sum(axis=1), 1)
    with pytest.raises(ValueError, match="axis"):
        entmax15(z, axis=3)


@pytest.mark.parametrize("seed", range(4))
def test_gradients(seed):
    rng = np.random.default_rng(seed)
    z = 2 * rng.standard_normal((4, 6))
    m = Entmax15()
    assert check_vjp(m, z, seed=seed) < 1e-6
    assert check_jvp(m, z, seed=seed) < 1e-6
    assert check_adjoint(m, z, seed=seed) < 1e-10


def test_jacobian_is_symmetric_and_kills_constants():
    z = np.array([[1.0, 0.5, -0.2, -3.0]])
    p = entmax15(z)
    J = np.stack([entmax15_vjp(p, np.eye(4)[i][None])[0] for i in range(4)])
    np.testing.assert_allclose(J, J.T, atol=1e-14)
    np.testing.assert_allclose(J @ np.ones(4), 0, atol=1e-14)      # shift invariance
    assert np.all(J[3] == 0)                                        # outside the support


def test_bad_input():
    with pytest.raises(TypeError, match="x"):
        Entmax15().forward([1.0, 2.0])
    with pytest.raises(ValueError, match="x contains NaN"):
        Entmax15().forward(np.array([[1.0, np.nan]]))
