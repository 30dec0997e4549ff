"""GRANDE's estimator dropout (issue #19, item 13) against the authors' definition.

Marton et al., "GRANDE: Gradient-Based Decision Tree Ensembles for Tabular Data" (ICLR 2024), §3.3:
the instance-wise estimator weights :math:`ω_b = \\operatorname{softmax}_e(w_{b\\cdot})`. Both reference
implementations drop estimators per sample in training and renormalise the kept weights to sum to
one — github.com/s-marton/GRANDE, ``GRANDE/GRANDE.py``, ``apply_dropout_leaf`` (TensorFlow:
``tf.nn.dropout(ω, rate) · (1 − rate)``, then divided by its sum over the estimators) and the
PyTorch port's ``forward`` (``F.dropout`` then the same division, the sum clamped at 1e-8):

.. math::
    \\tilde ω_{be} = \\frac{k_{be}\\, ω_{be}}{\\sum_{e'} k_{be'}\\, ω_{be'}}, \\qquad k_{be} \\sim
    \\operatorname{Bernoulli}(1 - p),

not the inverted-dropout scaling :math:`k_{be} ω_{be} / (1 - p)`, whose weights do not sum to one.
A sample whose every estimator is dropped gets all-zero weights (the PyTorch port's clamp; the
TensorFlow version would give 0/0).
"""
import numpy as np
import pytest

from nograd.models import GrandeNet
from nograd.testing import check_adjoint, check_jvp, check_vjp


def _net(**kw):
    opts = {"n_estimators": 6, "depth": 2, "init_std": 1.0, "rng": 0, "dtype": np.float64, **kw}
    return GrandeNet(4, 3, **opts)


def reference_forward(net, x, keep):
    """The hard ensemble written out: route each sample down each tree (argmax feature, left iff
    threshold > x), ω = softmax over the estimators of the reached leaves' weights, dropout with
    the 0/1 mask ``keep (E, B)`` and renormalisation, y = Σ_e ω̃_e · (reached leaf's values)."""
    P = net.params
    E, B = net.n_estimators, len(x)
    y = np.zeros((B, net.n_outputs))
    for b in range(B):
        w, r = np.empty(E), np.empty((E, net.n_outputs))
        for e in range(E):
            n = 0
            for _ in range(net.depth):
                j = int(np.argmax(P["feature_logits"][e, n]))
                n = 2 * n + (1 if P["split_values"][e, n, j] > x[b, net.subsets[e, j]] else 2)
            leaf = n - (2 ** net.depth - 1)
            w[e], r[e] = P["estimator_weights"][e, leaf], P["leaf_values"][e, leaf]
        om = np.exp(w - w.max())
        om /= om.sum()
        kept = om * keep[:, b]
        total = kept.sum()
        y[b] = (kept / total) @ r if total > 0 else 0.0
    return y


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("p", [0.25, 0.5])
def test_training_forward_renormalises_the_kept_estimator_weights(backend, p):
    net = _net(backend=backend, dropout=p)
    x = np.random.default_rng(1).standard_normal((9, 4))
    y, _ = net.forward(x, train=True, rng=3)
    # the layer's draw: keep[e, b] = U[e, b] ≥ p from its Generator, one uniform per (estimator, sample)
    keep = (np.random.default_rng(3).random((net.n_estimators, len(x))) >= p).astype(float)
    assert 0 < keep.sum() < keep.size
    np.testing.assert_allclose(y, reference_forward(net, x, keep), rtol=1e-12, atol=1e-12)
    # evaluation: no dropout, the plain ensemble
    np.testing.assert_allclose(net(x), reference_forward(net, x, np.ones_like(keep)), atol=1e-12)


@pytest.mark.parametrize("p", [0.2, 0.6])
def test_kept_weights_sum_to_one_whatever_the_draw(p):
    """With every leaf predicting the same vector c, the output is (Σ_e ω̃_e)·c = c for every
    sample that keeps an estimator, for any draw (inverted dropout would give c·Σ k ω/(1 − p))."""
    net = _net(dropout=p, n_estimators=8)
    c = np.array([1.5, -2.0, 0.25])
    net.params["leaf_values"][...] = c
    x = np.random.default_rng(2).standard_normal((50, 4))
    rows = []
    for seed in range(5):
        y, _ = net.forward(x, train=True, rng=seed)
        kept_some = np.any(y != 0, axis=1)              # P(all 8 dropped) = p⁸ ≤ 1.7 %
        np.testing.assert_allclose(y[kept_some], np.broadcast_to(c, y[kept_some].shape), rtol=1e-13)
        rows.append(kept_some)
    assert np.mean(rows) > 0.9


def test_a_sample_with_every_estimator_dropped_gets_zero_and_finite_gradients():
    net = _net(dropout=0.9, n_estimators=2)
    x = np.random.default_rng(4).standard_normal((40, 4))
    keep = np.random.default_rng(5).random((2, 40)) >= 0.9
    dead = ~keep.any(axis=0)
    assert dead.any() and (~dead).any()
    y, cache = net.forward(x, train=True, rng=5)
    np.testing.assert_array_equal(y[dead], 0.0)
    np.testing.assert_allclose(y, reference_forward(net, x, keep.astype(float)), atol=1e-12)
    _, grads = net.backward(cache, np.ones_like(y))
    assert all(np.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("p", [0.3, 0.6])
def test_renormalised_dropout_has_exact_derivatives(p):
    """The smooth surrogate in training with dropout: backward and jvp against finite differences
    (same draw at every call: the rng is a seed), and their adjointness."""
    net = _net(straight_through=False, dropout=p, selection="softmax", rng=1)
    x = np.random.default_rng(6).standard_normal((7, 4))
    assert check_vjp(net, x, train=True, seed=2) < 1e-6
    assert check_jvp(net, x, train=True, seed=2) < 1e-6
    assert check_adjoint(net, x, train=True, seed=2) < 1e-10
