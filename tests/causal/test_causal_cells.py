"""Elman and LSTM as delayed traces of stateless cells: equal to the textbook recurrences, their
gradients three ways, and a short training run whose loss falls."""
import numpy as np
import pytest

from nograd.causal import D, as_delayed_trace, delayed_trace, elman, equivalent, lstm
from nograd.core.optim import Adam
from nograd.testing import check_adjoint, check_jvp, check_vjp


def sig(x):
    return 1 / (1 + np.exp(-x))


def elman_reference(p, xs, H):
    W, b, V, c = p["0.0.weight"], p["0.0.bias"], p["1.weight"], p["1.bias"]
    h = np.zeros((xs.shape[0], H))
    ys = []
    for t in range(xs.shape[1]):
        h = np.tanh(np.concatenate([h, xs[:, t]], 1) @ W.T + b)
        ys.append(h @ V.T + c)
    return np.stack(ys, 1)


def lstm_reference(p, xs, H):
    W, b, V, d = p["0.weight"], p["0.bias"], p["8.weight"], p["8.bias"]
    h = c = np.zeros((xs.shape[0], H))
    ys = []
    for t in range(xs.shape[1]):
        z = np.concatenate([h, xs[:, t]], 1) @ W.T + b
        i, f, o = sig(z[:, :H]), sig(z[:, H:2 * H]), sig(z[:, 2 * H:3 * H])
        g = np.tanh(z[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        ys.append(h @ V.T + d)
    return np.stack(ys, 1)


@pytest.mark.parametrize("kind", ["elman", "lstm"])
def test_cells_equal_the_textbook_recurrence(kind):
    H = 3
    net = (elman if kind == "elman" else lstm)(2, H, 2, rng=0, dtype=np.float64)
    for v in net.params.values():
        v += 0.2 * np.random.default_rng(1).standard_normal(v.shape)   # nonzero biases too
    xs = np.random.default_rng(2).standard_normal((3, 6, 2))
    ref = (elman_reference if kind == "elman" else lstm_reference)(net.params, xs, H)
    np.testing.assert_allclose(net.run(xs), ref, rtol=1e-12, atol=1e-12)
    assert net.n_state == (H if kind == "elman" else 2 * H)
    cell, h0 = as_delayed_trace(net)
    assert cell.n_state == 0 and equivalent(delayed_trace(cell, h0), net)


@pytest.mark.parametrize("kind", ["elman", "lstm"])
def test_cell_gradients_by_D_BPTT_and_differences(kind):
    net = (elman if kind == "elman" else lstm)(2, 3, 1, rng=4, dtype=np.float64)
    xs = np.random.default_rng(5).standard_normal((2, 5, 2))
    assert check_vjp(net, xs) < 1e-6
    assert check_jvp(net, xs) < 1e-6
    assert check_adjoint(net, xs) <= 1e-9
    z = np.concatenate([xs, np.random.default_rng(6).standard_normal(xs.shape)], 2)
    assert check_jvp(D(net), z) < 1e-6          # second order (D(D(net))) vs differences


def test_bptt_training_lowers_the_loss_on_an_echo_task():
    rng = np.random.default_rng(0)
    net = elman(1, 8, 1, rng=1, dtype=np.float64)
    opt = Adam(net.params, lr=0.03)
    xs = rng.standard_normal((32, 10, 1))
    target = np.concatenate([np.zeros((32, 1, 1)), xs[:, :-1]], 1)   # y_t = x_{t-1}
    losses = []
    for _ in range(60):
        ys, cache = net.forward(xs)
        losses.append(0.5 * np.mean((ys - target) ** 2))
        _, grads = net.backward(cache, (ys - target) / ys.size)
        opt.step(grads)
    assert losses[-1] < 0.25 * losses[0]
