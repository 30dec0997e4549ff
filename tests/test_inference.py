"""nograd.predict_proba / predict, and every layer at the top level of the package."""
import numpy as np
import pytest

import nograd as ng


def test_every_layer_is_at_the_top_level():
    missing = [n for n in ng.layers.__all__ if getattr(ng, n, None) is not getattr(ng.layers, n)]
    assert not missing and {"Conv2d", "MaxPool2d", "LSTM", "MultiheadAttention"} <= set(ng.__all__)


def test_probabilities_are_the_softmax_of_the_scores_in_batches():
    net = ng.Sequential(ng.Linear(4, 3, rng=0))
    x = np.random.default_rng(1).normal(size=(7, 4))
    z = net(x.astype(np.float32)).astype(np.float64)
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)          # the definition
    p = ng.predict_proba(net, x.astype(np.float32), batch_size=3)
    np.testing.assert_allclose(p, expected, rtol=1e-5)
    assert ng.predict(net, x.astype(np.float32), batch_size=2).tolist() == expected.argmax(1).tolist()


def test_a_single_logit_is_the_positive_class():
    net = ng.Sequential(ng.Linear(2, 1, rng=0))
    x = np.array([[3.0, 0.0], [-3.0, 0.0]], np.float64)
    net.params["0.weight"][...] = [[1.0, 0.0]]
    net.params["0.bias"][...] = 0.0
    p = ng.predict_proba(net.astype(np.float64), x)
    np.testing.assert_allclose(p[:, 1], 1 / (1 + np.exp(-x[:, 0])), rtol=1e-12)
    assert ng.predict(net, x).tolist() == [1, 0]


def test_bad_input_names_the_argument():
    net = ng.Sequential(ng.Linear(2, 3, rng=0))
    with pytest.raises(TypeError, match="x must be"):
        ng.predict(net, [[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"x\[None\]"):
        ng.predict(net, np.ones(2, np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        ng.predict(net, np.ones((2, 2), np.float32), batch_size=0)


def test_get_model_without_rng_records_the_seed_it_drew():
    a = ng.get_model("mlp", (4,), 3)
    assert isinstance(a.init_seed, int)
    b = ng.get_model("mlp", (4,), 3, rng=a.init_seed)
    assert b.init_seed == a.init_seed
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert ng.get_model("mlp", (4,), 3, rng=np.random.default_rng(0)).init_seed is None
