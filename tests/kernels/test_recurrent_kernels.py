"""The compiled loops of nograd.kernels.recurrent (the GRU's and the LSTM's fused gate backward with
their bias sums, DSF's doubling scan and its compiled recursion) against their NumPy references in
nograd.kernels.recurrent_ref, on hypothesis-drawn shapes, float32 and float64, strided inputs."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nograd.kernels import recurrent as kr
from nograd.kernels import recurrent_ref as ref

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
DTYPES = st.sampled_from([np.float32, np.float64])
TOL = {np.float32: dict(rtol=2e-5, atol=1e-6), np.float64: dict(rtol=1e-13, atol=1e-14)}


@SETTINGS
@given(R=st.integers(1, 24), H=st.integers(1, 9), dtype=DTYPES, seed=st.integers(0, 2**31))
def test_gru_gates_back_matches_reference(R, H, dtype, seed):
    rng = np.random.default_rng(seed)
    dh, h_prev, n = (rng.standard_normal((R, H)).astype(dtype) for _ in range(3))
    r, z = (rng.uniform(0, 1, (R, H)).astype(dtype) for _ in range(2))       # gate values
    hp = rng.standard_normal((R, 3 * H)).astype(dtype)
    db0 = rng.standard_normal(4 * H)                                         # sums are added
    out = [(np.empty((R, 3 * H), dtype), np.empty((R, H), dtype), db0.copy()) for _ in range(2)]
    kr.gru_gates_back(dh, h_prev, hp, r, z, n, *out[0])
    ref.gru_gates_back(dh, h_prev, hp, r, z, n, *out[1])
    for got, want, name in zip(out[0], out[1], ("dxp", "dnr", "db")):
        np.testing.assert_allclose(got, want, **TOL[dtype], err_msg=name)
    # the reference is the formulas: ā_n = h̄(1 - z)(1 - n²) is dxp's last third
    np.testing.assert_allclose(out[1][0][:, 2 * H:], dh * (1 - z) * (1 - n * n), **TOL[dtype])


@SETTINGS
@given(R=st.integers(1, 24), H=st.integers(1, 9), dtype=DTYPES, seed=st.integers(0, 2**31))
def test_lstm_gates_back_matches_reference(R, H, dtype, seed):
    rng = np.random.default_rng(seed)
    dh, dc, c_prev, tc = (rng.standard_normal((R, H)).astype(dtype) for _ in range(4))
    i, f, o = (rng.uniform(0, 1, (R, H)).astype(dtype) for _ in range(3))   # gate values
    g = rng.uniform(-1, 1, (R, H)).astype(dtype)
    db0 = rng.standard_normal(4 * H)                                         # sums are added
    out = [(np.empty((R, 4 * H), dtype), db0.copy()) for _ in range(2)]
    kr.lstm_gates_back(dh, dc, c_prev, i, f, g, o, tc, *out[0])
    ref.lstm_gates_back(dh, dc, c_prev, i, f, g, o, tc, *out[1])
    for got, want, name in zip(out[0], out[1], ("da", "db")):
        np.testing.assert_allclose(got, want, **TOL[dtype], err_msg=name)
    # the reference is LSTM._cell_back's maths: ā_o = h̄ tanh(c) o(1 - o), ā_g = c̄ i (1 - g²)
    cbar = dc + dh * o * (1 - tc * tc)
    np.testing.assert_allclose(out[1][0][:, 3 * H:], dh * tc * o * (1 - o), **TOL[dtype])
    np.testing.assert_allclose(out[1][0][:, 2 * H:3 * H], cbar * i * (1 - g * g), **TOL[dtype])


@SETTINGS
@given(T=st.integers(1, 40), N=st.integers(1, 20), block=st.sampled_from([1, 3, 8, 256]),
       dtype=DTYPES, seed=st.integers(0, 2**31))
def test_doubling_scan_matches_reference(T, N, block, dtype, seed):
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((T, N)).astype(dtype)
    a = rng.uniform(-1, 1, N).astype(dtype)
    got, want = e.copy(), e.copy()
    kr.doubling_scan(got, a, block)
    ref.doubling_scan(want, a, block)
    np.testing.assert_allclose(got, want, **TOL[dtype])


@SETTINGS
@given(B=st.integers(1, 5), T=st.integers(1, 40), H=st.integers(1, 9), dtype=DTYPES,
       layout=st.sampled_from(["c", "reversed", "slice"]), seed=st.integers(0, 2**31))
def test_linear_recurrence_matches_reference_and_the_recursion(B, T, H, dtype, layout, seed):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((B, T, 2 * H)).astype(dtype)
    # a C-contiguous cotangent, a time-reversed view (a reverse pass) or a slice of the features
    e = {"c": np.ascontiguousarray(base[:, :, :H]), "reversed": base[:, ::-1, :H],
         "slice": base[:, :, H:]}[layout]
    a = rng.uniform(-1.2, 1.2, H).astype(dtype)
    got, want = np.empty((T, B, H), dtype), np.empty((T, B, H), dtype)
    kr.linear_recurrence(e, a, got)
    ref.linear_recurrence(e, a, want)
    np.testing.assert_allclose(got, want, **TOL[dtype])
    # the recursion itself: δ_t - a δ_{t+1} = e_t, δ_{T-1} = e_{T-1}
    d = got.transpose(1, 0, 2)
    np.testing.assert_allclose(d[:, -1], e[:, -1], **TOL[dtype])
    scale = 50 * np.finfo(dtype).eps * max(1.0, float(np.abs(d).max()))    # rounding of δ
    np.testing.assert_allclose(d[:, :-1] - a * d[:, 1:], e[:, :-1], rtol=0, atol=scale)
