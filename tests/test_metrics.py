"""Metrics against values computed by hand."""
import math

import numpy as np
import pytest

from nograd import Backprop, Sequential
from nograd.layers import BatchNorm1d, Dropout, Flatten, LayerNorm, Linear, ReLU, Tanh
from nograd.core import Residual
from nograd.metrics import (accuracy, angle, angle_per_key, confusion_matrix, cosine,
                            cosine_per_key, count_flops, hoyer_sparsity, macro_f1,
                            predicted_labels, sensitivity, specificity)

Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
Y_PRED = np.array([0, 1, 0, 1, 2, 2, 2, 0, 2])


def test_confusion_matrix_and_accuracy():
    m = confusion_matrix(Y_TRUE, Y_PRED)
    assert m.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
    assert confusion_matrix(Y_TRUE, Y_PRED, num_classes=4).shape == (4, 4)
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(6 / 9)
    scores = np.eye(3)[Y_PRED] + 0.1            # argmax of scores = Y_PRED
    assert accuracy(Y_TRUE, scores) == pytest.approx(6 / 9)
    assert accuracy(np.eye(3)[Y_TRUE], Y_PRED) == pytest.approx(6 / 9)   # one-hot truth


def test_macro_f1_by_hand():
    # class 0: tp 2 fp 1 fn 1 -> 4/6; class 1: tp 1 fp 1 fn 1 -> 2/4; class 2: tp 3 fp 1 fn 1 -> 6/8
    expected = (4 / 6 + 2 / 4 + 6 / 8) / 3
    assert macro_f1(Y_TRUE, Y_PRED) == pytest.approx(expected)
    # a class absent from both truth and prediction is left out of the mean
    assert macro_f1(Y_TRUE, Y_PRED, num_classes=5) == pytest.approx(expected)
    assert macro_f1(np.array([0, 1]), np.array([0, 1])) == 1.0


def test_sensitivity_specificity():
    t = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([1, 0, 1, 0, 1, 0, 0, 1])
    assert sensitivity(t, p) == pytest.approx(3 / 4)      # TP 3, FN 1
    assert specificity(t, p) == pytest.approx(3 / 4)      # TN 3, FP 1
    assert sensitivity(t, p, positive=0) == pytest.approx(3 / 4)
    logits = np.where(p == 1, 2.0, -2.0)[:, None]          # (N, 1) logits thresholded at 0
    assert sensitivity(t, logits) == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="binary"):
        sensitivity(Y_TRUE, Y_PRED)
    with pytest.raises(ValueError, match="no sample of the positive class"):
        sensitivity(np.zeros(3, int), np.zeros(3, int))
    with pytest.raises(ValueError, match="no sample outside"):
        specificity(np.ones(3, int), np.ones(3, int))


def test_label_checks():
    with pytest.raises(ValueError, match="y_true has 9 samples but y_pred has 2"):
        accuracy(Y_TRUE, Y_PRED[:2])
    with pytest.raises(ValueError, match="NaN"):
        accuracy(Y_TRUE, np.full((9, 3), np.nan))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        accuracy([0, 1], np.array([0, 1]))
    with pytest.raises(ValueError, match="up to 2"):
        confusion_matrix(Y_TRUE, Y_PRED, num_classes=2)
    assert predicted_labels(np.array([-1.0, 3.0])).tolist() == [0, 1]


def test_hoyer_sparsity():
    n = 7
    assert hoyer_sparsity(np.eye(n)[3]) == pytest.approx(1.0)
    assert hoyer_sparsity(np.full(n, -2.5)) == pytest.approx(0.0, abs=1e-12)
    x = np.array([3.0, 4.0, 0.0, 0.0])                  # l1 7, l2 5, n 4
    assert hoyer_sparsity(x) == pytest.approx((2 - 7 / 5) / (2 - 1))
    per_sample = hoyer_sparsity(np.stack([np.eye(n)[0], np.ones(n), np.zeros(n)]))
    np.testing.assert_allclose(per_sample, [1.0, 0.0, 1.0], atol=1e-12)
    undefined = hoyer_sparsity(np.stack([np.eye(n)[0], np.zeros(n)]), zero=np.nan)
    assert undefined[0] == pytest.approx(1.0) and np.isnan(undefined[1])
    assert np.isnan(hoyer_sparsity(np.zeros(3), zero=np.nan))
    cols = hoyer_sparsity(np.stack([np.eye(n)[0], np.eye(n)[0]]), axis=0)
    assert cols.shape == (n,)
    with pytest.raises(ValueError, match="at least 2"):
        hoyer_sparsity(np.ones((3, 1)))


def test_cosine_and_angle_of_update_dicts():
    rng = np.random.default_rng(0)
    g = {"0.weight": rng.normal(size=(3, 4)).astype(np.float32), "0.bias": rng.normal(size=3)}
    assert angle(g, {k: v.copy() for k, v in g.items()}) == 0.0
    assert cosine(g, g) == pytest.approx(1.0)
    assert angle(g, {k: -v for k, v in g.items()}) == pytest.approx(180.0)
    assert angle(g, {k: 4 * v for k, v in g.items()}) == pytest.approx(0.0, abs=1e-9)
    a = {"w": np.array([1.0, 0.0]), "b": np.array([0.0])}
    b = {"w": np.array([0.0, 1.0]), "b": np.array([0.0])}
    assert angle(a, b) == pytest.approx(90.0) and cosine(a, b) == pytest.approx(0.0)
    c = {"w": np.array([1.0, 1.0]), "b": np.array([1.0])}
    d = {"w": np.array([1.0, 1.0]), "b": np.array([-1.0])}
    # per layer: identical weights, opposite biases; overall cos = (2 - 1) / 3
    assert angle_per_key(c, d) == pytest.approx({"w": 0.0, "b": 180.0})
    assert cosine_per_key(c, d) == pytest.approx({"w": 1.0, "b": -1.0})
    assert cosine(c, d) == pytest.approx(1 / 3)
    assert angle(c, d) == pytest.approx(math.degrees(math.acos(1 / 3)))
    with pytest.raises(ValueError, match="different keys"):
        angle(a, {"w": a["w"]})
    with pytest.raises(ValueError, match=r"a\['w'\] has shape \(2,\) but b\['w'\] has shape \(3,\)"):
        cosine(a, {"w": np.ones(3), "b": np.ones(1)})
    with pytest.raises(ValueError, match="all zeros"):
        angle({"w": np.zeros(2)}, {"w": np.ones(2)})


def test_angle_between_backprop_and_a_perturbed_gradient():
    net = Sequential(Linear(4, 5, rng=0, dtype=np.float64), Tanh(), Linear(5, 3, rng=1, dtype=np.float64))
    x, y = np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 3
    g, _ = Backprop().grads(net, x, y)
    assert angle(g, g) == 0.0
    noisy = {k: v + 0.5 * np.linalg.norm(v) / np.sqrt(v.size) * np.random.default_rng(1).normal(size=v.shape)
             for k, v in g.items()}
    assert 5 < angle(g, noisy) < 60


def test_count_flops_by_hand():
    net = Sequential(Flatten(), Linear(12, 5, rng=0), ReLU(), Linear(5, 3, bias=False, rng=1))
    f = count_flops(net, (3, 4), batch_size=2)
    lin1 = 2 * 2 * 12 * 5
    lin2 = 2 * 2 * 5 * 3
    assert f["forward"] == lin1 + 2 * 5 + 2 * 5 + lin2
    assert f["backward"] == 2 * lin1 + 2 * 5 + 2 * 2 * 5 + 2 * lin2
    assert f["per_layer"]["1"] == (lin1 + 10, 2 * lin1 + 10) and f["per_layer"]["0"] == (0, 0)
    res = Residual(Sequential(LayerNorm(4), Dropout(0.1), BatchNorm1d(4)))
    r = count_flops(res, (4,))
    assert r["forward"] == 7 * 4 + 4 + 7 * 4 + 4


def test_count_flops_of_convolutions_and_pooling_by_hand():
    """Conv2d by the direct method's multiply-adds (2 per weight entry and output position), twice
    that backward, bias one add per output each way; grouped convolutions count C_in/groups; max
    pooling k² comparisons per output forward and one routed value backward."""
    from nograd.layers import Conv2d, ConvTranspose2d, GlobalAvgPool2d, MaxPool2d

    net = Sequential(Conv2d(3, 4, 3, padding=1, rng=0), ReLU(), MaxPool2d(2),
                     Conv2d(4, 6, 3, groups=2, bias=False, rng=1), GlobalAvgPool2d())
    f = count_flops(net, (3, 6, 6), batch_size=2)["per_layer"]
    conv1 = 2 * (2 * 6 * 6) * 4 * 3 * 9                    # N·H·W positions, C_out, C_in, k²
    assert f["0"] == (conv1 + 2 * 4 * 36, 2 * conv1 + 2 * 4 * 36)
    assert f["2"] == (4 * (2 * 4 * 3 * 3), 2 * 4 * 3 * 3)   # 2×2 windows over a 3×3 output
    conv2 = 2 * (2 * 1 * 1) * 6 * 2 * 9                    # 3×3 input, no padding: 1×1 output
    assert f["3"] == (conv2, 2 * conv2)
    assert f["4"] == (2 * 6, 2 * 6)
    up = count_flops(Sequential(ConvTranspose2d(2, 3, 2, stride=2, rng=0)), (2, 4, 4))["per_layer"]["0"]
    mm = 2 * 16 * 3 * 2 * 4                                # input positions, C_out, C_in, k²
    assert up == (mm + 3 * 64, 2 * mm + 3 * 64)


def test_count_flops_unknown_module():
    from nograd.core import Module

    class Odd(Module):
        def forward(self, x, *, train=False, rng=None, params=None):
            return x, None

    with pytest.raises(ValueError, match="no count for Odd.*flops"):
        count_flops(Sequential(Linear(2, 2, rng=0), Odd()), (2,))

    class Counted(Odd):
        def flops(self, input_shape, output_shape):
            return 10

    assert count_flops(Sequential(Counted()), (2,))["backward"] == 20
