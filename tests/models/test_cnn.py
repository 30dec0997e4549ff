"""The cnn model family: shapes, errors, gradients, and it beats the MLP on the embedded digits."""
import numpy as np
import pytest

from nograd import Adam, Backprop
from nograd.data import load_digits
from nograd.models import get_model
from nograd.testing import check_adjoint


def test_shapes_and_flat_square_inputs():
    net = get_model("cnn", (64,), 10, rng=0)
    assert net(np.zeros((3, 64), np.float32)).shape == (3, 10)
    net = get_model("cnn", (3, 32, 32), 10, rng=0)
    assert net(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 10)
    with pytest.raises(ValueError, match="flat square image"):
        get_model("cnn", (10,), 3, rng=0)
    with pytest.raises(ValueError, match="pooling blocks"):
        get_model("cnn", (1, 2, 2), 3, rng=0)


def test_cnn_adjoint_in_float64():
    net = get_model("cnn", (1, 8, 8), 3, rng=0, channels=(2, 3), dtype=np.float64)
    x = np.random.default_rng(0).normal(size=(2, 1, 8, 8))
    assert check_adjoint(net, x) < 1e-9


def _train(name, seed, epochs=20):
    Xtr, ytr, Xte, yte = load_digits()
    net = get_model(name, (64,), 10, rng=seed)
    opt, rule, rng = Adam(net.params, lr=2e-3), Backprop(), np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(ytr))
        for i in range(0, len(ytr), 32):
            idx = order[i:i + 32]
            opt.step(rule.grads(net, Xtr[idx], ytr[idx], rng=rng)[0])
    return float(np.mean(net(Xte).argmax(1) == yte))


def test_cnn_beats_the_mlp_on_digits():
    # measured: MLP 98.7 / 98.4 %, CNN 99.1 / 99.6 % (seeds 0, 1; 20 epochs, Adam 2e-3, batch 32)
    mlp = np.mean([_train("mlp", s) for s in (0, 1)])
    cnn = np.mean([_train("cnn", s) for s in (0, 1)])
    assert cnn >= 0.985
    assert cnn > mlp + 0.003, (cnn, mlp)
