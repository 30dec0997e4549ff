"""The leverage-row sampler kernel of VCAS (nograd.kernels.vcas) against its NumPy reference and
against the rule's own water-filling (vcas_sampling.water_fill, a sort-based implementation)."""
import numpy as np
import pytest

from nograd.kernels.vcas import leverage_rows, leverage_rows_ref
from nograd.rules.vcas_sampling import row_norms, water_fill


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1.0, 2.5, 17.0, 60.0, 79.0, 500.0])
def test_leverage_rows_is_its_reference_and_the_papers_probabilities(dtype, k):
    rng = np.random.default_rng(int(k * 10))
    R = 90
    g = (rng.normal(size=(R, 7)) * rng.exponential(size=(R, 1)) ** 2).astype(dtype)
    x = rng.normal(size=(R, 5)).astype(dtype)
    g[[3, 40]] = 0                                     # zero scores: never kept
    rows = np.sort(rng.choice(R, 80, replace=False))   # the alive rows
    u = rng.random(len(rows))
    gs, xs = leverage_rows(g, x, rows, u, k)
    gr, xr = leverage_rows_ref(g, x, rows, u, k)
    assert gs.dtype == g.dtype and xs.dtype == x.dtype
    np.testing.assert_array_equal(xs, xr)              # the same rows, in the same order
    np.testing.assert_allclose(gs, gr, rtol=1e-6 if dtype == np.float32 else 1e-12)
    # p_t = min(1, c a_t) with sum p = k (water_fill), read back from the scaling g_t / p_t
    a = row_norms(g[rows].astype(np.float64)) * row_norms(x[rows].astype(np.float64))
    p = water_fill(a, k)
    keep = np.flatnonzero(u < p)
    np.testing.assert_array_equal(xs, x[rows[keep]])
    np.testing.assert_allclose(gs, g[rows[keep]] / p[keep, None].astype(dtype),
                               rtol=1e-5 if dtype == np.float32 else 1e-12)
    if k >= np.count_nonzero(a):                       # the budget covers every positive row
        np.testing.assert_allclose(gs.T @ xs, g[rows].T @ x[rows], rtol=1e-5)


def test_leverage_rows_with_no_row_kept_gives_empty_arrays():
    g, x = np.ones((4, 3)), np.ones((4, 2))
    gs, xs = leverage_rows(g, x, np.arange(4), np.full(4, 0.99), 1.0)
    assert gs.shape == (0, 3) and xs.shape == (0, 2)
    assert np.array_equal(gs.T @ xs, np.zeros((3, 2)))


@pytest.mark.parametrize("k", [1.0, 3.0, 12.5, 49.0, 60.0])
def test_water_variance_is_its_reference_and_the_closed_form(k):
    """sum (1/p - 1) a² for p = water_fill(a, k), written out here from the rule's water_fill."""
    from nograd.kernels.vcas import water_variance, water_variance_ref

    rng = np.random.default_rng(int(k))
    a = rng.exponential(size=50) ** 3
    a[[1, 7]] = 0.0
    p = water_fill(a, k)
    on = p > 0
    want = float(np.sum((1 / p[on] - 1) * a[on] ** 2))
    assert water_variance(a, k) == pytest.approx(want, rel=1e-10, abs=1e-300)
    assert water_variance_ref(a, k) == pytest.approx(want, rel=1e-10, abs=1e-300)
    assert (want == 0.0) == (k >= 48)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_leverage_scores_are_the_row_norm_products(dtype):
    from nograd.kernels.vcas import leverage_scores, leverage_scores_ref

    rng = np.random.default_rng(4)
    g, x = rng.normal(size=(33, 7)).astype(dtype), rng.normal(size=(33, 130)).astype(dtype)
    g[5] = 0
    want = np.linalg.norm(g.astype(np.float64), axis=1) * np.linalg.norm(x.astype(np.float64), axis=1)
    np.testing.assert_allclose(leverage_scores(g, x), want, rtol=1e-12)
    np.testing.assert_allclose(leverage_scores_ref(g, x), want, rtol=1e-12)
    assert leverage_scores(g, x)[5] == 0.0
