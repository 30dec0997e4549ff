"""PEPITA and AFA on MNIST-sized inputs (784 pixels with an always-dark frame), at their defaults.

The data are the embedded digits, each 8×8 pixel blown up to 3×3 and framed by two dark pixels,
so that an image is 28×28 = 784 inputs and, as in MNIST, a border of inputs is zero in every
image. Issue 19, item 3: at the old defaults (Adam 1e-3) PEPITA's first layer ran away on such
inputs (on an 8,000-image MNIST split the test loss reached 25-64); PEPITA now defaults to the
authors' optimizer, SGD with momentum 0.9; AFA keeps Adam, with 40 epochs.
"""
import math

import numpy as np
import pytest

from nograd.core.optim import get_optimizer
from nograd.data import load_digits
from nograd.models import mlp
from nograd.rules import AFA, PEPITA
from nograd.train import fit

FRAME = 2          # dark pixels around the blown-up 24×24 digit


def _blow_up(X):
    big = np.kron(X, np.ones((1, 1, 3, 3), X.dtype))                     # (N, 1, 24, 24)
    return np.pad(big, ((0, 0), (0, 0), (FRAME, FRAME), (FRAME, FRAME)))  # (N, 1, 28, 28)


@pytest.fixture(scope="module")
def wide_digits():
    Xtr, ytr, Xte, yte = load_digits(flatten=False)
    return _blow_up(Xtr), ytr, _blow_up(Xte), yte


def _train_at_defaults(cls, data, epochs):
    """The rule with its own defaults (optimizer, lr, optimizer options, batch size) on the
    default MLP 784-256-256-10; returns the model, its initial first-layer weight and the history."""
    Xtr, ytr, Xte, yte = data
    hp = cls.hyperparameters()
    model = mlp((1, 28, 28), 10, rng=np.random.default_rng(0))
    W0 = model.params["1.weight"].copy()
    opt = get_optimizer(hp["optimizer"], model.params, lr=hp["lr"], **hp.get("optimizer_options", {}))
    hist = fit(model, cls(seed=0), opt, (Xtr, ytr), val=(Xte, yte), epochs=epochs,
               batch_size=hp["batch_size"], rng=np.random.default_rng([0, 1]), progress=False)
    return model, W0, hist


@pytest.mark.parametrize("cls", [PEPITA, AFA])
def test_learns_784_wide_inputs_at_its_defaults_without_running_away(cls, wide_digits):
    """Accuracy over a bar, a small test loss, and a first layer that stays near its initial size
    (the old Adam default grew PEPITA's ‖W₁‖ 2.8-fold here, and 5-fold in 6 epochs on MNIST)."""
    model, W0, hist = _train_at_defaults(cls, wide_digits, epochs=20)
    last = hist.last
    growth = np.linalg.norm(model.params["1.weight"]) / np.linalg.norm(W0)
    assert last["val_accuracy"] >= 0.93, last
    assert last["val_loss"] < 0.3, last
    assert growth < 1.25, growth


def test_always_dark_inputs_barely_move_pepitas_first_layer(wide_digits):
    """On an input that is zero in every image, PEPITA's first-layer update is only the
    second-order term (h₁ − h₁ᵐᵒᵈ)(Fe)ᵢ of the modulated input x + Fe: O(‖F‖²) under SGD, but
    normalised to a full step per weight by Adam. Weights from the dark frame must stay put."""
    model, W0, _ = _train_at_defaults(PEPITA, wide_digits, epochs=10)
    dark = np.ones((28, 28), bool)
    dark[FRAME:-FRAME, FRAME:-FRAME] = False
    cols = dark.ravel()
    drift = np.linalg.norm(model.params["1.weight"][:, cols] - W0[:, cols])
    assert drift < 0.05 * np.linalg.norm(W0[:, cols]), drift


def test_F_is_drawn_as_in_the_authors_code():
    """F = 0.05·U[−√(6/d), √(6/d)], d the input size, C the outputs (Dellaferrera & Kreiman 2022,
    experimental settings; their code, GiorgiaD/PEPITA main_pytorch.py: ``sd = np.sqrt(6/nin)``,
    ``B = (torch.rand(nin,nout)*2*sd-sd)*Bstd`` with ``Bstd = 0.05`` and ``nin = 28*28``)."""
    rng = np.random.default_rng(0)
    net = mlp((1, 28, 28), 10, rng=rng, dtype=np.float64)
    x, y = rng.random((4, 1, 28, 28)), rng.integers(0, 10, 4)
    rule = PEPITA(seed=0)
    rule.grads(net, x, y, rng=0)
    bound = 0.05 * math.sqrt(6 / 784)
    F = rule.F
    assert F.shape == (784, 10)
    assert np.abs(F).max() <= bound and np.abs(F).max() > 0.99 * bound
    np.testing.assert_allclose(F.std(), bound / math.sqrt(3), rtol=0.03)   # uniform: sd = a/√3
    assert abs(F.mean()) < 0.03 * bound


def test_pepitas_defaults_use_the_authors_optimizer():
    """SGD with momentum 0.9 and batch 64, as in the authors' fully connected MNIST command
    (GiorgiaD/PEPITA README: ``--update_type mom --batch_size 64``; their ``mom`` step is
    v ← 0.9 v + η ΔW/B, W ← W − v, i.e. SGD with momentum 0.9; ``NAG``, its Nesterov form, is
    the other option there). Not Adam: its per-weight normalisation is what made PEPITA run away
    on MNIST. (The lr and epochs are nograd's, for runs 20 times shorter than the paper's.)"""
    hp = PEPITA.hyperparameters()
    assert hp["optimizer"] == "sgd"
    assert hp["optimizer_options"]["momentum"] == 0.9
    assert hp["batch_size"] == 64


def test_afa_has_no_update_from_always_dark_inputs():
    """Why AFA may keep Adam: its first-layer update −ḣ₁xᵀ is exactly zero on an input that is zero
    in every sample, where PEPITA's (h₁ − h₁ᵐᵒᵈ)(x + Fe)ᵀ is not."""
    rng = np.random.default_rng(0)
    net = mlp((1, 28, 28), 10, rng=rng, dtype=np.float64)
    x = rng.random((8, 1, 28, 28))
    x[:, :, :FRAME, :] = 0.0                       # a dark band of 2 rows in every image
    y = rng.integers(0, 10, 8)
    cols = np.zeros((28, 28), bool)
    cols[:FRAME, :] = True
    cols = cols.ravel()
    g_afa, _ = AFA(seed=0).grads(net, x, y, rng=0)
    g_pep, _ = PEPITA(seed=0).grads(net, x, y, rng=0)
    assert np.abs(g_afa["1.weight"][:, cols]).max() == 0.0
    assert np.abs(g_pep["1.weight"][:, cols]).max() > 0.0


def _conv_valid(x, W, b):
    """Plain stride-1, unpadded convolution (cross-correlation), NCHW, written out with loops."""
    n, _, h, w = x.shape
    co, _, k, _ = W.shape
    out = np.zeros((n, co, h - k + 1, w - k + 1))
    for r in range(h - k + 1):
        for c in range(w - k + 1):
            out[:, :, r, c] = np.einsum("nikl,oikl->no", x[:, :, r:r + k, c:c + k], W) + b
    return out


@pytest.mark.parametrize("cls", [PEPITA, AFA])
def test_conv_update_is_a_mean_over_samples_and_positions(cls):
    """The authors' conv update (GiorgiaD/PEPITA, models.py ``compute_delta_w_conv``): for every
    output position (r, c) the batch mean of diff[:, o, r, c]·input patch, summed over positions
    and multiplied by 1/cnt, cnt the number of positions. Written out here with PEPITA's diff
    h − hᵐᵒᵈ (Algorithm 1's sign; AFA: its first-order form −ḣ with the unmodulated input)."""
    from nograd.core import Sequential
    from nograd.layers import Conv2d, Flatten, Linear, ReLU

    rng = np.random.default_rng(0)
    net = Sequential(Conv2d(1, 2, 3, rng=rng, dtype=np.float64), ReLU(), Flatten(),
                     Linear(2 * 4 * 4, 3, rng=rng, dtype=np.float64))
    x, y = rng.random((5, 1, 6, 6)), rng.integers(0, 3, 5)
    rule = cls(seed=1, f_scale=1.0)
    g, _ = rule.grads(net, x, y, rng=0)
    W, b = net.params["0.weight"], net.params["0.bias"]
    V, c = net.params["3.weight"], net.params["3.bias"]

    def passes(inp):
        h = np.maximum(_conv_valid(inp, W, b), 0)
        z = h.reshape(len(inp), -1) @ V.T + c
        p = np.exp(z - z.max(1, keepdims=True))
        return h, p / p.sum(1, keepdims=True)

    h, prob = passes(x)
    e = prob - np.eye(3)[y]
    x_mod = x + (e @ rule.F.T).reshape(x.shape)
    if cls is PEPITA:
        diff, inp = h - passes(x_mod)[0], x_mod
    else:                                            # −ḣ: the tangent along Fe, by hand
        a = _conv_valid(x, W, b)
        diff, inp = -np.where(a > 0, _conv_valid(x_mod - x, W, np.zeros_like(b)), 0.0), x
    positions = diff.shape[2] * diff.shape[3]
    want_W = np.zeros_like(W)
    for r in range(diff.shape[2]):
        for col in range(diff.shape[3]):
            patch = inp[:, :, r:r + 3, col:col + 3]                     # (N, 1, 3, 3)
            want_W += np.einsum("no,nikl->oikl", diff[:, :, r, col], patch) / len(x)
    want_W /= positions
    want_b = diff.mean(axis=0).sum(axis=(1, 2)) / positions
    np.testing.assert_allclose(g["0.weight"], want_W, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(g["0.bias"], want_b, rtol=1e-9, atol=1e-13)
