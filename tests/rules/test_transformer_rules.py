"""Rules on the transformer: backprop, forward gradients and the zeroth-order rules accept a GPT and
their estimates point along the true gradient."""
import numpy as np
import pytest

import nograd as ng
from nograd.models.gpt import GPT


def _problem(kind="gpt"):
    rng = np.random.default_rng(0)
    if kind == "vit":
        from nograd.models.vit import ViT

        m = ViT(4, 2, 1, 3, dim=4, depth=1, heads=2, rng=0)
        return m, rng.normal(size=(6, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, 6)
    m = GPT(5, n_layer=1, n_head=2, n_embd=4, block_size=4, rng=0)
    return m, rng.integers(0, 5, (6, 4)), rng.integers(0, 5, (6, 4))


def _flat(g, names):
    return np.concatenate([g[k].ravel() for k in names]).astype(np.float64)


def test_backprop_on_gpt_is_the_models_backward():
    m, x, y = _problem()
    grads, info = ng.get_rule("backprop").grads(m, x, y, rng=np.random.default_rng(0))
    logits, cache = m.forward(x, train=True)
    loss, d = ng.core.losses.softmax_cross_entropy(logits, y)
    _, ref = m.backward(cache, d)
    assert set(grads) == set(m.params)
    for k in ref:
        np.testing.assert_allclose(grads[k], ref[k], rtol=1e-5, atol=1e-7)
    assert info["loss"] == pytest.approx(loss)


@pytest.mark.parametrize("kind", ["gpt", "vit"])
@pytest.mark.parametrize("name", ["forward-gradient", "spsa", "mezo"])
def test_estimates_point_along_the_gradient(name, kind):
    """The mean of many one-direction estimates has a clearly positive cosine with the gradient
    (each is an unbiased or nearly unbiased estimate of it; ~300 parameters, 60 draws)."""
    m, x, y = _problem(kind)
    m.astype(np.float64)
    if x.dtype.kind == "f":
        x = x.astype(np.float64)
    names = list(m.params)
    true = _flat(ng.get_rule("backprop").grads(m, x, y, rng=np.random.default_rng(0))[0], names)
    rule = ng.get_rule(name)
    est = np.zeros_like(true)
    for s in range(60):
        g, _ = rule.grads(m, x, y, rng=np.random.default_rng(s))
        assert set(g) >= set(names)
        est += _flat(g, names)
    cos = est @ true / (np.linalg.norm(est) * np.linalg.norm(true))
    assert cos > 0.25, cos
