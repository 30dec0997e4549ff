"""Numerics found by differential testing (issue #19, items 1 and 2), each pinned to its definition.

1. BatchNorm's running variance is the *unbiased batch variance* (Ioffe & Szegedy 2015, Alg. 2,
   line 10: ``Var[x] ← m/(m−1)·E_B[σ²_B]``; PyTorch's ``running_var`` uses the same estimate), written
   out here in float64 from the batch. It must not be rebuilt from ``r = (σ² + ε)^(-1/2)``, which
   cancels when ``σ² ≪ ε`` (a dead ReLU channel went negative).
2. The logistic function ``σ(x) = 1/(1 + e^{-x})`` to a few ulps over ``|x| ≤ 700`` in float32 and
   float64, against a 50-digit ``decimal`` evaluation of that definition (``½(1 + tanh(x/2))``
   cancels to 0 in the left tail), in the function, the Sigmoid layer, Softplus's derivative and
   the LSTM/GRU gates; without floating-point warnings.
"""
from decimal import Decimal, localcontext

import numpy as np
import pytest

from nograd.layers import GRU, LSTM, BatchNorm1d, BatchNorm2d, Sigmoid, Softplus
from nograd.layers.activations import sigmoid
from nograd.layers.recurrent import _sigmoid


# ----------------------------------------------------------------------------- 1. BatchNorm
def reference_running_var(batches, momentum, init=1.0):
    """Ioffe & Szegedy (2015), Alg. 2 with PyTorch's moving average: per channel
    ``v ← (1 − α) v + α · Σ(x − x̄)² / (n − 1)`` over the batch (and spatial) axes; the batch
    variance in float64, the average kept in the batches' dtype (as the layer's buffer is: in
    float32, 0.9 is 0.899999976, which alone moves 0.9^400 by 1e-5)."""
    v = None
    for x in batches:
        dt = x.dtype
        x = np.asarray(x, np.float64)
        axes = (0,) + tuple(range(2, x.ndim))
        n = x.size // x.shape[1]
        mean = x.mean(axis=axes, keepdims=True)
        unbiased = ((x - mean) ** 2).sum(axis=axes) / (n - 1)
        v = np.full(x.shape[1], init, dt) if v is None else v
        v = v * dt.type(1 - momentum) + (momentum * unbiased).astype(dt)
    return v


@pytest.mark.parametrize("dtype, eps, rtol", [(np.float64, 1e-3, 1e-12), (np.float64, 0.1, 1e-12),
                                              (np.float32, 1e-5, 1e-5), (np.float32, 1e-3, 1e-5)])
def test_dead_relu_channel_keeps_a_nonnegative_running_variance(dtype, eps, rtol):
    """Channel 0 is a dead ReLU (all zeros): its batch variance is exactly 0, so after 400 steps
    ``running_var = 0.9^400 ≈ 5e-19`` (rebuilding it from ``r`` gave −2.2e-19 per step in float64
    at eps 1e-3, −9.4e-13 in float32 at eps 1e-5)."""
    rng = np.random.default_rng(0)
    bn = BatchNorm1d(3, eps=eps, dtype=dtype)
    batches = []
    for _ in range(400):
        x = rng.standard_normal((32, 3)).astype(dtype)
        x[:, 0] = 0
        batches.append(x)
        bn.forward(x, train=True)
    got = bn.buffers["running_var"]
    assert got.dtype == dtype
    assert got[0] >= 0
    np.testing.assert_allclose(got, reference_running_var(batches, bn.momentum), rtol=rtol)


@pytest.mark.parametrize("dtype, std, eps, n, rtol", [
    (np.float32, 1e-5, 0.1, 64, 1e-5),     # the audit: 0 where the truth is 1.19e-10
    (np.float32, 1e-4, 1e-3, 11, 1e-5),    # the audit: 2 % off (torch 3e-5)
    (np.float64, 1e-9, 1e-5, 16, 1e-12),
])
def test_running_variance_is_the_unbiased_batch_variance_when_small_next_to_eps(dtype, std, eps, n,
                                                                                rtol):
    rng = np.random.default_rng(1)
    x = (std * rng.standard_normal((n, 4))).astype(dtype)
    bn = BatchNorm1d(4, eps=eps, momentum=1.0, dtype=dtype)     # momentum 1: the batch's own value
    bn.forward(x, train=True)
    np.testing.assert_allclose(bn.buffers["running_var"], reference_running_var([x], 1.0), rtol=rtol)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_running_variance_of_images_over_batch_and_positions(dtype, rtol):
    """BatchNorm2d: the unbiased variance over (N, H, W), n = N·H·W, with std 1e-5 next to eps 0.1."""
    rng = np.random.default_rng(2)
    x = (1e-5 * rng.standard_normal((16, 3, 2, 2))).astype(dtype)
    bn = BatchNorm2d(3, eps=0.1, momentum=1.0, dtype=dtype)
    bn.forward(x, train=True)
    np.testing.assert_allclose(bn.buffers["running_var"], reference_running_var([x], 1.0), rtol=rtol)


def test_running_variance_matches_pytorch_on_a_dead_channel():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    bn = BatchNorm1d(2, eps=1e-3, dtype=np.float64)
    tbn = torch.nn.BatchNorm1d(2, eps=1e-3, dtype=torch.float64)
    for _ in range(400):
        x = rng.standard_normal((16, 2))
        x[:, 1] = 0
        bn.forward(x, train=True)
        tbn.train()(torch.from_numpy(x))
    np.testing.assert_allclose(bn.buffers["running_var"], tbn.running_var.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn.buffers["running_mean"], tbn.running_mean.numpy(), atol=1e-15)


# ----------------------------------------------------------------------------- 2. sigmoid
def reference_sigmoid(x, dtype):
    """σ(x) = 1 / (1 + e^{-x}) for each (exactly representable) entry, evaluated with 50 decimal
    digits and rounded to ``dtype``."""
    out = np.empty(len(x), np.float64)
    with localcontext() as ctx:
        ctx.prec = 50
        for i, v in enumerate(np.asarray(x, np.float64)):
            out[i] = float(1 / (1 + (-Decimal(float(v))).exp()))
    return out.astype(dtype)


def _grid(dtype):
    x = np.concatenate([np.linspace(-700, 700, 2801), [-745.0, -104.0, -103.5, -90.0, -87.5, -40.0,
                                                       -38.0, -20.0, -18.0, -16.0, -1e-3, -1e-30,
                                                       0.0, 1e-30, 1e-3, 16.0, 18.0, 40.0]])
    return x.astype(dtype)


def assert_within_ulps(got, want, ulps, what):
    """|got − want| ≤ ulps · spacing(want), elementwise (spacing of 0 is the smallest subnormal)."""
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bound = ulps * np.spacing(np.abs(want)).astype(np.float64)
    bad = np.flatnonzero(err > bound)
    assert bad.size == 0, (f"{what}: {bad.size} entries off by more than {ulps} ulps, e.g. "
                           f"got {got[bad[:3]]} want {want[bad[:3]]}")


FUNCTIONS = {
    "sigmoid": sigmoid,
    "Sigmoid layer": lambda x: Sigmoid().forward(x)[0],
    "Softplus derivative": lambda x: Softplus().df(x, None),
    "recurrent gate": _sigmoid,
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_accurate_to_a_few_ulps_over_the_whole_range(name, dtype):
    x = _grid(dtype)
    want = reference_sigmoid(x, dtype)
    with np.errstate(all="raise"):                                    # no overflow, no warnings
        got = FUNCTIONS[name](x)
    assert got.dtype == dtype
    assert_within_ulps(got, want, 4, f"{name} in {np.dtype(dtype).name}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_left_tail_values_from_the_audit(dtype):
    x = np.array([-16.0, -18.0, -20.0, -38.0], dtype)
    got = sigmoid(x)
    # the old ½(1 + tanh(x/2)) gave, in float32, 1.19e-7, 2.98e-8, 0, 0
    want = np.array([1.1253517e-07, 1.5229980e-08, 2.0611537e-09, 3.1391327e-17])
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_sigmoid_keeps_scalars_dtypes_and_special_values():
    assert isinstance(sigmoid(0.5), float) and sigmoid(0.5) == pytest.approx(0.6224593312018546)
    assert sigmoid(np.float32(-20)).dtype == np.float32
    y = sigmoid(np.array([-np.inf, np.inf, np.nan]))
    assert y[0] == 0 and y[1] == 1 and np.isnan(y[2])


def test_saturated_lstm_and_gru_gates_keep_their_left_tail():
    """Gates driven to −30 are σ(−30) ≈ 9.4e-14, not 0, in float32. LSTM with zero weights, all
    biases −30, zero input and state: c = σ(−30)·tanh(−30), h = σ(−30)·tanh(c) ≈ −σ(−30)². GRU with
    r, z biases −30, n's 0 and h₀ = 1: h = (1 − z)·tanh(0) + z·h₀ = σ(−30)."""
    s = float(reference_sigmoid(np.array([-30.0]), np.float64)[0])
    x = np.zeros((1, 1, 1), np.float32)
    lstm = LSTM(1, 1, rng=0, dtype=np.float32)
    for k, p in lstm.params.items():
        p[...] = -30.0 if k == "bias_ih" else 0.0
    h = lstm.forward(x)[0].ravel()[0]
    assert h == pytest.approx(s * np.tanh(s * np.tanh(-30.0)), rel=1e-5, abs=0)
    gru = GRU(1, 1, rng=0, dtype=np.float32)
    for k, p in gru.params.items():
        p[...] = np.array([-30.0, -30.0, 0.0]) if k == "bias_ih" else 0.0
    h = gru.forward(x, state=np.ones((1, 1), np.float32))[0].ravel()[0]
    assert h == pytest.approx(s, rel=1e-5, abs=0)
