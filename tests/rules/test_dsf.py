"""Stationary diagonal state feedbacks (DSF) and fully truncated BPTT (issue #27; Caillon, Fagnou &
Allauzen 2025, arXiv:2503.23104).

- the backward filter δ_t = e_t + a ⊙ δ_{t+1}: scan and FFT agree with the recursion and with the
  closed form δ_t = Σ_k a^k e_{t+k}, written out here;
- with A the true Jacobian of a diagonal linear RNN (h_t = x_t W_ihᵀ + b + a ⊙ h_{t-1}), DSF *is*
  BPTT: the same gradients as backprop, for one layer and for a bidirectional stack;
- truncated BPTT equals BPTT with the state cotangent cut: a sum over steps of each step's own
  backward from its saved state (GRU, LSTM, a stack);
- the char LM trains with DSF from the command line; bad options and models are clear errors.
"""
import json

import numpy as np
import pytest

import nograd
from nograd.core import Residual, Sequential
from nograd.core.losses import softmax_cross_entropy
from nograd.layers import GRU, LSTM, RNN, Flatten, Linear
from nograd.layers.recurrent import RecurrentBase
from nograd.models import HyperLSTM, get_model
from nograd.rules import DSF, Backprop, TruncatedBPTT, get_rule
from nograd.rules.dsf import feedback_scan


@pytest.fixture(autouse=True)
def one_blas_thread():
    with nograd.blas_threads(1):
        yield


# --------------------------------------------------------------------------- the backward filter
def closed_form(e, a):
    """δ_t = Σ_{k=0}^{T-1-t} a^k e_{t+k}, term by term (the LTI filter of the paper)."""
    B, T, H = e.shape
    out = np.zeros_like(e)
    for t in range(T):
        for k in range(T - t):
            out[:, t] += a ** k * e[:, t + k]
    return out


@pytest.mark.parametrize("T", [1, 2, 7, 16, 33])
def test_scan_and_fft_agree_with_the_recursion_and_the_closed_form(T):
    rng = np.random.default_rng(T)
    e = rng.standard_normal((3, T, 6))
    a = np.array([0.0, 0.3, -0.5, 0.9, 0.999, 1.2])       # zero, negative, near and above one
    ref = closed_form(e, a)
    for method in ("sequential", "scan", "fft", "recurrence"):
        got = feedback_scan(e, a, method)
        assert got.dtype == e.dtype
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12, err_msg=method)
    e32 = e.astype(np.float32)
    for method in ("scan", "fft", "recurrence"):
        got = feedback_scan(e32, np.r_[a[:5], 0.5], method)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, feedback_scan(e32.astype(np.float64), np.r_[a[:5], 0.5],
                                                      "sequential"), rtol=2e-5, atol=2e-5)


def test_feedback_scan_refuses_bad_arguments():
    e = np.zeros((2, 4, 3))
    with pytest.raises(ValueError, match="method"):
        feedback_scan(e, np.zeros(3), "cumsum")
    with pytest.raises(ValueError, match=r"\ba\b.*\(3,\)"):
        feedback_scan(e, np.zeros(4))
    with pytest.raises(ValueError, match=r"\be\b"):
        feedback_scan(np.zeros((4, 3)), np.zeros(3))


# --------------------------------------------------------------------------- DSF = BPTT when A = J
class DiagonalLinearRNN(RecurrentBase):
    r"""h_t = x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh with W_hh = diag(a): its state Jacobian is
    diag(a) at every step, so BPTT's recursion is δ_t = e_t + a ⊙ δ_{t+1} exactly."""

    gates, state_parts, state_feedback = 1, 1, True

    def _cell(self, xp, S, p):
        return (xp + S[0] @ p["weight_hh"].T + p["bias_hh"],), (S[0],)

    def _cell_back(self, cache, dS, p, g, need_dh=True):
        dh_prev = self._hh_back(dS[0], cache[0], p, g, need_dh)
        return dS[0], ((dh_prev,) if need_dh else None)


def diagonal_model(a, **stack):
    rng = np.random.default_rng(0)
    rnn = DiagonalLinearRNN(3, 5, rng=rng, dtype=np.float64, **stack)
    for k, name in enumerate(n for n in rnn.params if n.startswith("weight_hh")):
        rnn.params[name][...] = np.diag(a[k])
    D = 2 if stack.get("bidirectional") else 1
    return Sequential(rnn, Linear(5 * D, 4, rng=rng, dtype=np.float64))


@pytest.mark.parametrize("stack", [{}, {"num_layers": 2, "bidirectional": True}], ids=["one", "stack"])
@pytest.mark.parametrize("method", ["scan", "fft", "sequential", "recurrence"])
def test_dsf_with_a_equal_to_the_jacobian_is_bptt(stack, method):
    rng = np.random.default_rng(1)
    passes = 4 if stack else 1
    a = rng.uniform(-0.95, 0.95, (passes, 5))
    model = diagonal_model(a, **stack)
    x, y = rng.standard_normal((3, 9, 3)), rng.integers(0, 4, (3, 9))
    exact, info = Backprop().grads(model, x, y)
    got, dinfo = DSF(feedback={"0": a}, method=method).grads(model, x, y)
    assert list(got) == list(model.params) and dinfo["loss"] == info["loss"]
    for k in exact:
        np.testing.assert_allclose(got[k], exact[k], rtol=1e-10, atol=1e-12, err_msg=k)
    # another feedback is another (inexact) gradient: the test can fail
    off, _ = DSF(feedback={"0": 0.8 * a}, method=method).grads(model, x, y)
    assert not np.allclose(off["0.weight_ih" if not stack else "0.weight_ih_l0"],
                           exact["0.weight_ih" if not stack else "0.weight_ih_l0"], rtol=1e-6)


# --------------------------------------------------------------------------- truncated BPTT
def cut_reference(model, x, y):
    """BPTT with the state cotangent cut: the head's backward, then for every step t the recurrent
    layer run on x_t alone from its saved state S_{t-1} and backward with dy_t and no state
    cotangent; the steps' gradients summed."""
    rnn, head = model[0], model[1]
    S, caches = None, []
    for t in range(x.shape[1]):
        _, c = rnn.forward(x[:, t:t + 1], state=S)
        caches.append(c)
        S = rnn.final_state(c)
    h, _ = rnn.forward(x)
    out, hc = head.forward(h)
    _, dout = softmax_cross_entropy(out, y)
    dh, grads = head.backward(hc, dout)
    grads = {"1." + k: v for k, v in grads.items()}
    for t, c in enumerate(caches):
        _, g = rnn.backward(c, dh[:, t:t + 1])
        for k, v in g.items():
            grads["0." + k] = grads.get("0." + k, 0) + v
    return grads


@pytest.mark.parametrize("layer", [
    lambda r: GRU(3, 4, rng=r, dtype=np.float64),
    lambda r: LSTM(3, 4, rng=r, dtype=np.float64),
    lambda r: LSTM(3, 4, layer_norm=True, rng=r, dtype=np.float64),
    lambda r: RNN(3, 4, num_layers=2, rng=r, dtype=np.float64),
], ids=["gru", "lstm", "lstm-ln", "rnn-stack"])
def test_truncated_bptt_is_bptt_with_the_state_cotangent_cut(layer):
    rng = np.random.default_rng(2)
    model = Sequential(layer(rng), Linear(4, 5, rng=rng, dtype=np.float64))
    x, y = rng.standard_normal((2, 6, 3)), rng.integers(0, 5, (2, 6))
    want = cut_reference(model, x, y)
    got, _ = TruncatedBPTT().grads(model, x, y)
    assert set(got) == set(model.params)
    for k in got:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-12, err_msg=k)
    # DSF with A = 0 is the same rule, exactly
    zero, _ = DSF(feedback=0.0).grads(model, x, y)
    for k in got:
        np.testing.assert_array_equal(zero[k], got[k], err_msg=k)
    # ... and BPTT is not: the cut matters
    exact, _ = Backprop().grads(model, x, y)
    assert not np.allclose(exact["0." + next(iter(model[0].params))], got["0." + next(iter(model[0].params))])


def test_lstm_cell_feedback_carries_credit_and_methods_agree():
    rng = np.random.default_rng(3)
    model = Sequential(LSTM(3, 4, rng=rng, dtype=np.float64), Linear(4, 5, rng=rng, dtype=np.float64))
    x, y = rng.standard_normal((2, 7, 3)), rng.integers(0, 5, (2, 7))
    a_h, a_c = np.full(4, 0.3), np.full(4, 0.9)
    scan, _ = DSF(feedback={"0": (a_h, a_c)}).grads(model, x, y)       # "scan", the default
    fft, _ = DSF(feedback={"0": (a_h, a_c)}, method="fft").grads(model, x, y)
    dbl, _ = DSF(feedback={"0": (a_h, a_c)}, method="recurrence").grads(model, x, y)
    no_c, _ = DSF(feedback={"0": (a_h, 0 * a_c)}).grads(model, x, y)
    for k in scan:
        np.testing.assert_allclose(fft[k], scan[k], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dbl[k], scan[k], rtol=1e-12, atol=1e-14)
    assert not np.allclose(scan["0.weight_ih"], no_c["0.weight_ih"])


# --------------------------------------------------------------------------- the authors' A
def test_default_feedback_is_the_authors_ramp_from_0_to_1():
    """p0lcAi/DSF, dsf/dsf.py: A = diag(linspace(0, 1, n)) over the state's n units, fixed, the
    same for every layer; an LSTM's state is (h, c), n = 2H, h taking the first half."""
    rng = np.random.default_rng(0)
    gru = Sequential(GRU(3, 5, num_layers=2, rng=rng), Linear(5, 2, rng=rng))
    a = DSF().feedbacks(gru)["0"]
    assert len(a) == 2
    for per_pass in a:
        np.testing.assert_array_equal(per_pass[0], [0.0, 0.25, 0.5, 0.75, 1.0])
    lstm = Sequential(LSTM(3, 3, rng=rng), Linear(3, 2, rng=rng))
    (a_h, a_c), = DSF().feedbacks(lstm)["0"]
    np.testing.assert_allclose(a_h, [0.0, 0.2, 0.4], rtol=0, atol=1e-15)
    np.testing.assert_allclose(a_c, [0.6, 0.8, 1.0], rtol=0, atol=1e-15)
    # the old choice stays an option: entries drawn in [r_min, r_max]
    (u,), = DSF(feedback="uniform", r_min=0.1, r_max=0.3, seed=4).feedbacks(gru)["0"][:1]
    assert u.shape == (5,) and (u >= 0.1).all() and (u <= 0.3).all() and np.ptp(u) > 0
    (same,), = DSF(feedback="uniform", r_min=0.1, r_max=0.3, seed=4).feedbacks(gru)["0"][:1]
    (other,), = DSF(feedback="uniform", r_min=0.1, r_max=0.3, seed=5).feedbacks(gru)["0"][:1]
    np.testing.assert_array_equal(same, u)                # seeded: the same seed, the same A
    assert not np.allclose(other, u)


def test_dsf_through_a_skip_connection_is_bptt_when_a_is_the_jacobian():
    """y = layer(x) + x (the authors' models): the skip adds dy to the layer's input cotangent."""
    rng = np.random.default_rng(6)
    a = rng.uniform(-0.9, 0.9, (1, 3))
    rnn = DiagonalLinearRNN(3, 3, rng=rng, dtype=np.float64)
    rnn.params["weight_hh"][...] = np.diag(a[0])
    model = Sequential(Linear(2, 3, rng=rng, dtype=np.float64), Residual(rnn),
                       Linear(3, 4, rng=rng, dtype=np.float64))
    x, y = rng.standard_normal((2, 7, 2)), rng.integers(0, 4, (2, 7))
    exact, _ = Backprop().grads(model, x, y)
    got, _ = DSF(feedback={"1": a}).grads(model, x, y)
    assert set(got) == set(exact)
    for k in exact:
        np.testing.assert_allclose(got[k], exact[k], rtol=1e-10, atol=1e-12, err_msg=k)
    cut, _ = DSF(feedback={"1": 0 * a}).grads(model, x, y)
    assert not np.allclose(cut["0.weight"], exact["0.weight"])
    # a projection as the shortcut (CharLM(skip=True) with embed != hidden)
    rnn2 = DiagonalLinearRNN(2, 3, rng=rng, dtype=np.float64)
    rnn2.params["weight_hh"][...] = np.diag(a[0])
    proj = Sequential(Residual(rnn2, Linear(2, 3, rng=rng, dtype=np.float64)),
                      Linear(3, 4, rng=rng, dtype=np.float64))
    exact, _ = Backprop().grads(proj, x, y)
    got, _ = DSF(feedback={"0": a}).grads(proj, x, y)
    assert set(got) == set(exact) and "0.shortcut.weight" in got
    for k in exact:
        np.testing.assert_allclose(got[k], exact[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_gru_fused_gate_backward_matches_the_formulas():
    from nograd.layers.recurrent_stack import gru_gates_back

    rng = np.random.default_rng(8)
    R, H = 11, 4
    dh, h, r, z, n = (rng.standard_normal((R, H)) for _ in range(5))
    hp = rng.standard_normal((R, 3 * H))                      # H_p; its candidate third is read
    hpn = hp[:, 2 * H:]
    dxp, dnr, db = gru_gates_back(dh, h, hp, r, z, n)
    dan = dh * (1 - z) * (1 - n ** 2)                         # written out: GRU, PyTorch's gates
    want = np.concatenate([dan * hpn * r * (1 - r), dh * (h - n) * z * (1 - z), dan], 1)
    np.testing.assert_allclose(dxp, want, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(dnr, dan * r, rtol=1e-14, atol=1e-15)
    # the bias gradients: column sums of [ā_r, ā_z, ā_n] and of ā_n ⊙ r
    np.testing.assert_allclose(db, np.r_[want.sum(0), (dan * r).sum(0)], rtol=1e-13, atol=1e-14)
    d32, _, db32 = gru_gates_back(*(v.astype(np.float32) for v in (dh, h, hp, r, z, n)))
    assert d32.dtype == np.float32 and db32.dtype == np.float64
    np.testing.assert_allclose(d32, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(db32, db, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell, kw", [(GRU, {}), (LSTM, {}), (LSTM, {"layer_norm": True})])
def test_fused_paths_equal_the_generic_cell_backward(monkeypatch, cell, kw):
    """The GRU's fused path (fused kernel, split W_hh GEMMs) and the LSTM's (lstm_gates_back, one
    W_hh GEMM) against the cell's _cell_back over the stacked rows, in a bidirectional two-layer
    stack with the ramp feedback; with layer norm the LSTM's fused path hands the rows to
    _cell_back itself."""
    rng = np.random.default_rng(10)
    model = Sequential(cell(3, 4, num_layers=2, bidirectional=True, rng=rng, dtype=np.float64, **kw),
                       Linear(8, 5, rng=rng, dtype=np.float64))
    x, y = rng.standard_normal((3, 7, 3)), rng.integers(0, 5, (3, 7))
    fused, _ = DSF().grads(model, x, y)
    monkeypatch.setattr(cell, "_fused_local", None)
    generic, _ = DSF().grads(model, x, y)
    assert set(fused) == set(generic) == set(model.params)
    for k in fused:
        np.testing.assert_allclose(fused[k], generic[k], rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1, 4, 33])
def test_gru_forward_stores_time_major_caches_with_the_same_numbers(dtype, batch):
    """GRU._run (recurrent_stack.gru_run, writing into time-major arrays) gives the same bits as
    the step-by-step loop of GRU._cell, the same final state and the same BPTT gradients; the
    batched backward reads its stored arrays without copying (and stacks plain step lists). Batch
    4 takes the step's product as W h_{t-1}ᵀ (HH_TRANSPOSED_MAX_BATCH), batches 1 and 33 as
    h_{t-1} Wᵀ, as _cell does."""
    from nograd.layers import recurrent_stack

    rng = np.random.default_rng(12)
    gru = GRU(3, 5, num_layers=2, bidirectional=True, rng=rng, dtype=dtype)
    x = (3 * rng.standard_normal((batch, 9, 3))).astype(dtype)
    s0 = rng.standard_normal((4, batch, 5)).astype(dtype)
    y, cache = gru.forward(x, state=s0)
    steps_run = RecurrentBase._run.__get__(gru)                  # the generic loop over _cell
    gru._run = steps_run
    try:
        y0, cache0 = gru.forward(x, state=s0)
    finally:
        del gru._run
    assert y.flags.c_contiguous and y.tobytes() == y0.tobytes()
    assert gru.final_state(cache).tobytes() == gru.final_state(cache0).tobytes()
    dy = rng.standard_normal(y.shape).astype(dtype)
    (dx, g), (dx0, g0) = gru.backward(cache, dy), gru.backward(cache0, dy)
    assert dx.tobytes() == dx0.tobytes() and all(g[k].tobytes() == g0[k].tobytes() for k in g)
    steps = cache[0][0][2]                                      # pass (0, forward)
    rows = recurrent_stack._stack_steps(gru, steps, 2, 7)
    assert all(np.shares_memory(v, w) for v, w in zip(rows, steps.tm))
    copied = recurrent_stack._stack_steps(gru, list(steps), 2, 7)
    for v, w in zip(rows, copied):
        assert v.shape == w.shape and not np.shares_memory(v, w)
        np.testing.assert_array_equal(v, w)
    assert rows[0].shape == (5 * batch, 5) and rows[1].shape == (5 * batch, 15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1, 4, 33])
def test_lstm_forward_stores_time_major_caches_with_the_same_numbers(dtype, batch):
    """LSTM._run (recurrent_stack.lstm_run) gives the bits of the step-by-step loop of LSTM._cell:
    outputs, final state, BPTT's gradients and DSF's batched ones, which read the stored arrays
    without copying; with layer norm the generic loop runs."""
    from nograd.layers import recurrent_stack

    rng = np.random.default_rng(13)
    lstm = LSTM(3, 5, num_layers=2, bidirectional=True, rng=rng, dtype=dtype)
    x = (3 * rng.standard_normal((batch, 9, 3))).astype(dtype)
    s0 = tuple(rng.standard_normal((4, batch, 5)).astype(dtype) for _ in range(2))
    y, cache = lstm.forward(x, state=s0)
    lstm._run = RecurrentBase._run.__get__(lstm)                # the generic loop over _cell
    try:
        y0, cache0 = lstm.forward(x, state=s0)
    finally:
        del lstm._run
    assert y.flags.c_contiguous and y.tobytes() == y0.tobytes()
    assert all(a.tobytes() == b.tobytes() for a, b in zip(lstm.final_state(cache), lstm.final_state(cache0)))
    dy = rng.standard_normal(y.shape).astype(dtype)
    (dx, g), (dx0, g0) = lstm.backward(cache, dy), lstm.backward(cache0, dy)
    assert dx.tobytes() == dx0.tobytes() and all(g[k].tobytes() == g0[k].tobytes() for k in g)
    a = np.linspace(0, 1, 5, dtype=dtype)

    def feedback(k, e, cell):                                    # δ_t = e_t + a δ_{t+1}, both parts
        outs = []
        for part in (e, cell(e)):
            d = np.array(part)
            for t in range(d.shape[1] - 2, -1, -1):
                d[:, t] += a * d[:, t + 1]
            outs.append(d)
        return tuple(outs)
    (lx, lg), (lx0, lg0) = (recurrent_stack.backward_local(lstm, c, dy, lstm.params, True, feedback)
                            for c in (cache, cache0))
    assert lx.tobytes() == lx0.tobytes() and all(lg[k].tobytes() == lg0[k].tobytes() for k in lg)
    steps = cache[0][0][2]
    rows = recurrent_stack._stack_tm(steps, 2, 7)
    assert all(np.shares_memory(v, w) for v, w in zip(rows[:7], steps.tm[:7])) and rows[7] is None
    ln = LSTM(3, 5, layer_norm=True, rng=rng, dtype=dtype)
    assert not hasattr(ln.forward(x)[1][2], "tm")                # the generic loop's plain list


def test_backward_local_is_the_same_in_chunks_of_steps(monkeypatch):
    """All steps at once, or in chunks of two steps: the same gradients."""
    from nograd.layers import recurrent_stack

    rng = np.random.default_rng(9)
    gru = GRU(3, 4, rng=rng, dtype=np.float64)
    x, dy = rng.standard_normal((2, 9, 3)), rng.standard_normal((2, 9, 4))
    _, cache = gru.forward(x)

    def c(k, e, cell):                                   # a DSF carry: the ramp from 0 to 1
        return (feedback_scan(e, np.linspace(0, 1, 4)),)
    dx, g = gru.backward_local(cache, dy, c)
    monkeypatch.setattr(recurrent_stack._local_pass, "__defaults__", (4,))    # 2 steps a chunk
    dx2, g2 = gru.backward_local(cache, dy, c)
    np.testing.assert_allclose(dx2, dx, rtol=1e-12, atol=1e-14)
    for k in g:
        np.testing.assert_allclose(g2[k], g[k], rtol=1e-12, atol=1e-14, err_msg=k)


# --------------------------------------------------------------------------- training
def test_dsf_trains_the_char_lm_and_runs_from_the_command_line(capsys):
    from nograd.__main__ import main

    code = main(["train", "--model", "charlm", "--data", "shakespeare", "--rule", "dsf",
                 "--iters", "60", "--lr", "0.03", "--n-embd", "32", "--block-size", "32",
                 "--batch-size", "8",
                 "--eval-interval", "60", "--eval-iters", "4", "--sample", "20", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["model"] == "charlm" and out["rule"] == "dsf"
    # log(65) = 4.17 nats untrained; character frequencies alone give about 3.3
    assert out["val_loss"] < out["initial_val_loss"] - 0.6, out
    assert len(out["sample"]) == 21


def test_charlm_generate_continues_the_state():
    m = get_model("charlm", (8,), 7, rng=0, hidden=6, embed=3, cell="lstm")
    ids = m.generate(np.array([1, 2, 3]), 5, rng=0)
    assert ids.shape == (8,) and (ids[:3] == [1, 2, 3]).all() and ids.max() < 7
    np.testing.assert_array_equal(ids, m.generate(np.array([1, 2, 3]), 5, rng=0))


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("options, match", [
    ({"method": "cumsum"}, "method"),
    ({"feedback": "learned"}, "feedback"),
    ({"feedback": 1.5}, "feedback"),
    ({"feedback": -0.1}, "feedback"),
    ({"feedback": [0.5]}, "feedback"),
    ({"feedback": {"0": np.array([np.nan])}}, r"feedback\['0'\]"),
    ({"r_min": 0.9, "r_max": 0.5}, "r_min"),
    ({"r_max": 1.0}, "r_max"),
    ({"r_min": -0.1}, "r_min"),
])
def test_bad_dsf_options_are_clear_errors(options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        DSF(**options)


def test_bad_tbptt_k_and_bad_feedback_shapes_are_clear_errors():
    with pytest.raises(ValueError, match=r"\bk\b"):
        TruncatedBPTT(k=2)
    rng = np.random.default_rng(0)
    model = Sequential(GRU(3, 4, rng=rng), Linear(4, 2, rng=rng))
    x, y = rng.standard_normal((2, 5, 3)).astype(np.float32), rng.integers(0, 2, (2, 5))
    with pytest.raises(ValueError, match=r"feedback\['0'\].*\(4,\)"):
        DSF(feedback={"0": np.zeros(3)}).grads(model, x, y)
    with pytest.raises(ValueError, match=r"feedback\['0'\].*1 array.*got 2"):
        DSF(feedback={"0": (np.zeros(4), np.zeros(4))}).grads(model, x, y)


@pytest.mark.parametrize("name", ["dsf", "tbptt"])
def test_models_the_rules_cannot_train_are_refused_by_name(name):
    rng = np.random.default_rng(0)
    rule = get_rule(name)
    who = type(rule).__name__
    with pytest.raises(ValueError, match=rf"{who}.*no recurrent layer"):
        rule.check_model(Sequential(Flatten(), Linear(4, 2, rng=rng)))
    with pytest.raises(ValueError, match=rf"{who}.*GRU.*inside a Residual"):
        rule.check_model(Sequential(Residual(Sequential(GRU(4, 4, rng=rng), Linear(4, 4, rng=rng))),
                                    Linear(4, 2, rng=rng)))
    with pytest.raises(ValueError, match=rf"{who}.*GRU.*inside a Residual"):
        rule.check_model(Sequential(Residual(Linear(4, 4, rng=rng), GRU(4, 4, rng=rng)),
                                    Linear(4, 2, rng=rng)))
    for skip in (Residual(GRU(4, 4, rng=rng)), Residual(GRU(3, 4, rng=rng), Linear(3, 4, rng=rng))):
        rule.check_model(Sequential(skip, Linear(4, 2, rng=rng)))      # skip connections: fine
    with pytest.raises(ValueError, match=rf"{who}.*HyperLSTM"):
        rule.check_model(Sequential(HyperLSTM(3, 4, hyper_size=4, embed_size=2, rng=0),
                                    Linear(4, 2, rng=rng)))
