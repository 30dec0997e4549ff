"""Multi-layer and bidirectional RNN, LSTM and GRU (``num_layers``, ``bidirectional``, ``dropout``):
PyTorch's weight names and order, outputs, final states and every gradient against PyTorch in
float64; the derivatives of the initial and final states; state carried across calls; dropout
between layers; errors. The registry runs the gradient, adjoint and dtype checks."""
import numpy as np
import pytest

import nograd.layers
from nograd.layers import GRU, LSTM, RNN
from nograd.layers.dropout import dropout_mask

TOL = dict(rtol=1e-10, atol=1e-12)
KINDS = ["RNN", "LSTM", "GRU"]


def _torch():
    return pytest.importorskip("torch")


def _state(kind, rng, shape):
    if kind == "LSTM":
        return (rng.standard_normal(shape), rng.standard_normal(shape))
    return rng.standard_normal(shape)


def _parts(s):
    return s if isinstance(s, tuple) else (s,)


def _dot(a, b):
    return sum(float(np.sum(u * v)) for u, v in zip(_parts(a), _parts(b)))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_layers, bidirectional", [(2, False), (1, True), (3, True)])
def test_stacked_matches_torch(kind, num_layers, bidirectional):
    torch = _torch()
    rng = np.random.default_rng(0)
    F, H, B, T = 3, 4, 2, 5
    D = 2 if bidirectional else 1
    m = getattr(nograd.layers, kind)(F, H, num_layers=num_layers, bidirectional=bidirectional, rng=1,
                                     dtype=np.float64)
    ref = getattr(torch.nn, kind)(F, H, num_layers=num_layers, bidirectional=bidirectional,
                                  batch_first=True, dtype=torch.float64)
    names = [n for n, _ in ref.named_parameters()]
    assert list(m.params) == names
    for n in names:
        assert m.params[n].shape == tuple(ref.get_parameter(n).shape), n
    with torch.no_grad():
        for n in names:
            ref.get_parameter(n).copy_(torch.from_numpy(m.params[n]))

    x = rng.standard_normal((B, T, F))
    s0 = _state(kind, rng, (num_layers * D, B, H))
    y, cache = m.forward(x, state=s0)
    assert y.shape == (B, T, D * H)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    s0t = tuple(torch.from_numpy(s.copy()).requires_grad_(True) for s in _parts(s0))
    yt, sTt = ref(xt, s0t if kind == "LSTM" else s0t[0])
    sTt = sTt if kind == "LSTM" else (sTt,)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL)
    sT = _parts(m.final_state(cache))
    assert len(sT) == len(sTt)
    for a, b in zip(sT, sTt):
        assert a.shape == (num_layers * D, B, H)
        np.testing.assert_allclose(a, b.detach().numpy(), **TOL)

    dy = rng.standard_normal(y.shape)
    dsT = _state(kind, rng, (num_layers * D, B, H))
    loss = (yt * torch.from_numpy(dy)).sum()
    for a, b in zip(sTt, _parts(dsT)):
        loss = loss + (a * torch.from_numpy(b)).sum()
    loss.backward()
    dx, grads, ds0 = m.backward_state(cache, dy, dstate=dsT)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)
    assert list(grads) == names
    for n in names:
        np.testing.assert_allclose(grads[n], ref.get_parameter(n).grad.numpy(), **TOL, err_msg=n)
    for a, b in zip(_parts(ds0), s0t):
        np.testing.assert_allclose(a, b.grad.numpy(), **TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_stacked_state_derivatives(kind):
    """Initial-state tangent through jvp_state and cotangent through backward_state against a
    central difference of ⟨v, y⟩ + ⟨v_T, final state⟩."""
    rng = np.random.default_rng(3)
    m = getattr(nograd.layers, kind)(2, 3, num_layers=2, bidirectional=True, rng=4, dtype=np.float64)
    x = rng.standard_normal((2, 4, 2))
    shape = (4, 2, 3)
    s0, u0, vT = _state(kind, rng, shape), _state(kind, rng, shape), _state(kind, rng, shape)
    v = rng.standard_normal((2, 4, 6))

    def phi(t):
        s = tuple(a + t * b for a, b in zip(_parts(s0), _parts(u0)))
        y, c = m.forward(x, state=s if kind == "LSTM" else s[0])
        return float(np.sum(v * y)) + _dot(vT, m.final_state(c))

    numeric = (phi(1e-5) - phi(-1e-5)) / 2e-5
    _, cache = m.forward(x, state=s0)
    _, _, ds0 = m.backward_state(cache, v, dstate=vT)
    np.testing.assert_allclose(_dot(ds0, u0), numeric, rtol=1e-7)
    _, dy, sT, dsT = m.jvp_state(x, None, None, state=s0, dstate=u0)
    np.testing.assert_allclose(float(np.sum(v * dy)) + _dot(vT, dsT), numeric, rtol=1e-7)
    for a, b in zip(_parts(sT), _parts(m.final_state(cache))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_state_carried_across_calls_in_a_stack(kind):
    """A unidirectional stack fed in two pieces, the first piece's final state starting the second,
    equals one call (truncated BPTT over several layers)."""
    rng = np.random.default_rng(5)
    m = getattr(nograd.layers, kind)(3, 2, num_layers=3, rng=6, dtype=np.float64)
    x = rng.standard_normal((2, 7, 3))
    y, cache = m.forward(x)
    y1, c1 = m.forward(x[:, :3])
    y2, c2 = m.forward(x[:, 3:], state=m.final_state(c1))
    np.testing.assert_allclose(np.concatenate([y1, y2], axis=1), y, **TOL)
    for a, b in zip(_parts(m.final_state(c2)), _parts(m.final_state(cache))):
        np.testing.assert_allclose(a, b, **TOL)
    dy = rng.standard_normal(y.shape)
    dx, g, _ = m.backward_state(cache, dy)
    dx2, g2, dmid = m.backward_state(c2, dy[:, 3:])
    dx1, g1, _ = m.backward_state(c1, dy[:, :3], dstate=dmid)
    np.testing.assert_allclose(np.concatenate([dx1, dx2], axis=1), dx, **TOL)
    for k in g:
        np.testing.assert_allclose(g1[k] + g2[k], g[k], **TOL, err_msg=k)


def test_dropout_acts_between_layers_only():
    """Training: layer l+1 reads layer l's output times an inverted-dropout mask, drawn from rng; the
    last layer's output is not dropped. Evaluation: no dropout."""
    rng = np.random.default_rng(7)
    m = GRU(3, 4, num_layers=2, dropout=0.5, rng=8, dtype=np.float64)
    first, second = GRU(3, 4, rng=0, dtype=np.float64), GRU(4, 4, rng=0, dtype=np.float64)
    for k in first.params:
        first._own[k] = m.params[k + "_l0"]
        second._own[k] = m.params[k + "_l1"]
    x = rng.standard_normal((2, 5, 3))
    np.testing.assert_allclose(m(x), second(first(x)), **TOL)
    y, _ = m.forward(x, train=True, rng=np.random.default_rng(9))
    mask = dropout_mask((2, 5, 4), 0.5, np.random.default_rng(9), np.float64)
    np.testing.assert_allclose(y, second(first(x) * mask), **TOL)
    assert not np.allclose(y, m(x))
    with pytest.raises(ValueError, match="rng"):
        m.forward(x, train=True)


def test_layer_norm_lstm_stacks_with_suffixed_names():
    m = LSTM(2, 3, num_layers=2, bidirectional=True, layer_norm=True, rng=0)
    assert "ln_c_weight_l1_reverse" in m.params and m.params["weight_ih_l1"].shape == (12, 6)
    x = np.random.default_rng(0).standard_normal((2, 4, 2)).astype(np.float32)
    assert m(x).shape == (2, 4, 6)


def test_single_layer_keeps_its_names_and_shapes():
    m = LSTM(3, 2, num_layers=1, bidirectional=False, rng=0)
    assert list(m.params) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    _, cache = m.forward(np.zeros((4, 5, 3), np.float32))
    assert m.final_state(cache)[0].shape == (4, 2)
    assert "num_layers=2, bidirectional=True, dropout=0.1" in repr(GRU(3, 2, num_layers=2, bidirectional=True,
                                                                       dropout=0.1, rng=0))


def test_stack_errors_name_the_argument():
    x = np.zeros((2, 5, 3), np.float32)
    m = LSTM(3, 2, num_layers=2, bidirectional=True, rng=0)
    with pytest.raises(ValueError, match=r"state must have shape \(4, 2, 2\)"):
        m.forward(x, state=(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32)))
    with pytest.raises(TypeError, match="pair"):
        m.forward(x, state=np.zeros((4, 2, 2), np.float32))
    _, cache = m.forward(x)
    with pytest.raises(ValueError, match="dy"):
        m.backward(cache, np.zeros((2, 5, 2), np.float32))
    with pytest.raises(ValueError, match="dstate"):
        m.backward_state(cache, np.zeros((2, 5, 4), np.float32),
                         dstate=(np.zeros((2, 2, 2), np.float32),) * 2)
    with pytest.raises(ValueError, match="num_layers"):
        RNN(3, 2, num_layers=0)
    with pytest.raises(TypeError, match="bidirectional"):
        RNN(3, 2, bidirectional="yes")
    with pytest.raises(ValueError, match="dropout"):
        RNN(3, 2, num_layers=2, dropout=1.0)
    with pytest.warns(UserWarning, match="dropout=0.5 acts between stacked layers"):
        GRU(3, 2, dropout=0.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1, 2, 8, 32, 33])
@pytest.mark.parametrize("hidden, gates", [(5, 3), (64, 4), (128, 3), (128, 1)])
def test_the_step_product_has_the_bits_of_h_times_w_transposed(dtype, batch, hidden, gates):
    """recurrent_stack.hh_affine takes a gated cell's step product as (W_hh hᵀ)ᵀ for batches 2–32
    (faster there): the same bits as h W_hhᵀ + b_hh, as the LSTM's and GRU's step loops had."""
    from nograd.layers.recurrent_stack import hh_affine

    rng = np.random.default_rng(batch * hidden + gates)
    p = {"weight_hh": rng.standard_normal((gates * hidden, hidden)).astype(dtype),
         "bias_hh": rng.standard_normal(gates * hidden).astype(dtype)}
    h = rng.standard_normal((batch, hidden)).astype(dtype)
    out = hh_affine(h, p)
    ref = h @ p["weight_hh"].T + p["bias_hh"]
    assert out.dtype == ref.dtype and out.shape == ref.shape and out.flags.c_contiguous
    assert out.tobytes() == ref.tobytes()
