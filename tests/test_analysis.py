"""Representation analysis: Hoyer sparsity against hand-computed values, active fraction, class
means, category-specific ensembles, the per-layer report, hidden activities."""
import math

import numpy as np
import pytest

from nograd.analysis import (active_fraction, category_ensembles, class_means, hidden_activities,
                             representation_report, sparsity, sparsity_by_class)
from nograd.core import Sequential
from nograd.layers import Flatten, Linear, ReLU, Tanh
from nograd.metrics import hoyer_sparsity


def test_hoyer_sparsity_hand_computed_values():
    assert hoyer_sparsity(np.array([0.0, 0.0, 5.0, 0.0])) == 1.0           # one-hot: 1
    assert hoyer_sparsity(np.full(6, 0.7)) == pytest.approx(0.0, abs=1e-15)   # constant: 0
    # [1, 1, 0, 0]: ‖x‖₁/‖x‖₂ = 2/√2 = √2, so s = (√4 − √2)/(√4 − 1) = 2 − √2
    assert hoyer_sparsity(np.array([1.0, -1.0, 0.0, 0.0])) == pytest.approx(2 - math.sqrt(2))
    h = np.array([[0.0, 3.0, 0.0], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    s = sparsity(h)
    assert s[0] == 1.0 and s[1] == pytest.approx(0.0, abs=1e-15) and np.isnan(s[2])
    # [1, 1, 0]: ratio √2, s = (√3 − √2)/(√3 − 1)
    assert s[3] == pytest.approx((math.sqrt(3) - math.sqrt(2)) / (math.sqrt(3) - 1))


def test_sparsity_by_class_and_active_fraction():
    h = np.array([[0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0],
                  [0.0, 0.0, 4.0, 0.0]])
    y = np.array([0, 1, 1, 0])
    by_class = sparsity_by_class(h, y, 3)
    assert by_class[0] == 1.0 and by_class[1] == pytest.approx(0.0, abs=1e-15)  # silent row left out
    assert np.isnan(by_class[2])                                               # no sample
    assert active_fraction(h).tolist() == [0.25, 1.0, 0.0, 0.25]
    assert active_fraction(h, threshold=2.0).tolist() == [0.0, 0.0, 0.0, 0.25]


def test_class_means_and_ensembles():
    # class 0 drives units 0-1, class 1 units 1-2, class 2 unit 3; unit 4 is silent
    h = np.array([[4.0, 4.0, 0.0, 0.0, 0.0], [4.0, 4.0, 0.1, 0.0, 0.0],
                  [0.0, 4.0, 4.0, 0.0, 0.0], [0.0, 4.0, 4.0, 0.2, 0.0],
                  [0.0, 0.0, 0.0, 4.0, 0.0]])
    y = np.array([0, 0, 1, 1, 2])
    m = class_means(h, y)
    np.testing.assert_allclose(m[0], [4, 4, 0.05, 0, 0])
    ens = category_ensembles(h, y, threshold=0.5)
    assert [e.tolist() for e in ens["members"]] == [[0, 1], [1, 2], [3]]
    assert ens["sizes"].tolist() == [2, 2, 1]
    assert ens["size_fraction"] == pytest.approx(5 / 3 / 5)
    assert ens["overlap"][0, 1] == pytest.approx(1 / 3)           # {0,1} ∩ {1,2} / {0,1,2}
    assert ens["overlap"][0, 2] == 0 and ens["overlap"][1, 1] == 1
    assert ens["mean_overlap"] == pytest.approx(1 / 9)
    assert ens["specific_fraction"] == pytest.approx(3 / 4)       # units 0, 2, 3 of 0, 1, 2, 3
    with pytest.raises(ValueError, match="threshold"):
        category_ensembles(h, y, threshold=0)


def test_report_per_layer_with_a_mask():
    rng = np.random.default_rng(0)
    dense = rng.uniform(0.5, 1.0, size=(40, 16))
    sparse = np.zeros((40, 16))
    sparse[np.arange(40), np.arange(40) % 16] = 1.0
    y = np.arange(40) % 4
    mask = np.arange(40) < 30
    rep = representation_report([dense, sparse], y, 4, mask=mask)
    assert [r["layer"] for r in rep] == [1, 2]
    assert rep[1]["hoyer"] == 1.0 and rep[0]["hoyer"] < 0.2
    assert rep[1]["active_fraction"] == pytest.approx(1 / 16) and rep[0]["active_fraction"] == 1.0
    assert len(rep[0]["hoyer_by_class"]) == 4 and rep[0]["silent_fraction"] == 0.0
    with pytest.raises(ValueError, match="mask keeps no sample"):
        representation_report([dense], y, mask=np.zeros(40, bool))
    with pytest.raises(ValueError, match="mask must be"):
        representation_report([dense], y, mask=np.ones(3, bool))


def test_hidden_activities_are_the_activation_outputs():
    rng = np.random.default_rng(1)
    net = Sequential(Flatten(), Linear(6, 5, rng=rng), ReLU(), Linear(5, 4, rng=rng), Tanh(),
                     Linear(4, 2, rng=rng))
    x = rng.normal(size=(3, 2, 3)).astype(np.float32)
    h1, h2 = hidden_activities(net, x)
    p = net.params
    ref1 = np.maximum(x.reshape(3, 6) @ p["1.weight"].T + p["1.bias"], 0)
    np.testing.assert_allclose(h1, ref1, rtol=1e-6)
    np.testing.assert_allclose(h2, np.tanh(ref1 @ p["3.weight"].T + p["3.bias"]), rtol=1e-6)


@pytest.mark.parametrize("h, match", [(np.zeros(4), "must be a real array"),
                                      (np.zeros((0, 4)), "at least one sample"),
                                      (np.array([[np.nan, 1.0]]), "NaN")])
def test_bad_input_is_named(h, match):
    with pytest.raises((TypeError, ValueError), match=match):
        sparsity(h)
    with pytest.raises(ValueError, match="labels"):
        class_means(np.ones((2, 3)), np.array([0, 1, 2]))
