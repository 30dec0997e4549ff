"""nograd.compress.quantize: COMQ (Zhang et al. 2024), GPTQ (Frantar et al. 2023) and RTN, the
quantized layers, their files and their errors (issue #22)."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nograd
from nograd.compress import quantize
from nograd.compress.comq import _kernel, best_code, comq, sweep_numpy, update_order
from nograd.compress.gptq import gptq
from nograd.compress.grid import dequantize, minmax_grid, recon_error
from nograd.compress.quantization import quantizable_layers
from nograd.compress.rtn import rtn
from nograd.layers import Conv2d, Flatten, Linear, QuantizedLinear, ReLU
from nograd.layers.quantized import pack_codes, packed_size, unpack_codes

METHODS = {"rtn": lambda W, G, b, g: rtn(W, b, g), "gptq": lambda W, G, b, g: gptq(W, G, b, g),
           "comq": lambda W, G, b, g: comq(W, G, b, g), "comq-cyclic":
           lambda W, G, b, g: comq(W, G, b, g, order="cyclic", engine="numpy")}


def _problem(seed, n=6, d=9, m=40, correlated=True):
    """A layer ``W (n, d)``, its inputs ``X (m, d)`` and ``G = XᵀX`` with entries rounded to float32
    values: COMQ's steps read G in float32 (nograd.compress.comq's docstring), so on such a G
    every method and every written-out formula here sees the same matrix, exactly."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    if correlated:
        X = X @ rng.standard_normal((d, d))
    W = rng.standard_normal((n, d)) * rng.uniform(0.2, 2.0, (n, 1))
    return W, (X.T @ X).astype(np.float32).astype(np.float64), X


def _error(W, Q, G):
    """Σ_j (w_j − q_j)ᵀ G (w_j − q_j), written out row by row."""
    return sum(float((w - q) @ G @ (w - q)) for w, q in zip(W, Q))


# ------------------------------------------------------------------------------ COMQ, the paper
def test_code_update_is_the_best_grid_point_along_the_coordinate():
    """§3's closed form (round and clip the 1-D minimiser) against a search over every code."""
    W, G, _ = _problem(0, n=1, d=7)
    scale, offset = minmax_grid(W, 3)
    lo, hi = offset[0], offset[0] + 7
    rng = np.random.default_rng(1)
    for _ in range(20):
        z = rng.integers(lo, hi + 1, 7).astype(float)
        q = scale[0] * z
        u = G @ (W[0] - q)
        i = int(rng.integers(7))
        errors = {}
        for cand in range(lo, hi + 1):
            trial = q.copy()
            trial[i] = scale[0] * cand
            e = W[0] - trial
            errors[cand] = e @ G @ e
        best = min(errors.values())
        got = best_code(q[i], u[i], G[i, i], scale[0], lo, hi)
        assert errors[int(got)] <= best * (1 + 1e-12) + 1e-12


def test_scale_update_is_the_least_squares_scale():
    """δ = zᵀGw / zᵀGz (per channel) minimises ‖X(w − δz)‖²: the error rises on both sides of it."""
    W, G, X = _problem(2, n=3, d=8)
    h = []
    codes, scale, offset = comq(W, G, 3, sweeps=1, engine="numpy", history=h)
    Z = codes.astype(float) + offset[:, None]
    for j in range(3):
        direct = (Z[j] @ G @ W[j]) / (Z[j] @ G @ Z[j])
        assert scale[j] == pytest.approx(direct, rel=1e-12)
        f = [np.sum((X @ (W[j] - s * Z[j])) ** 2) for s in (0.99 * direct, direct, 1.01 * direct)]
        assert f[1] < f[0] and f[1] < f[2]
    assert h[1] <= h[0]          # the scale update after the sweep lowered the error


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), bits=st.integers(2, 4), order=st.sampled_from(["greedy", "cyclic"]),
       layer=st.booleans())
def test_comq_never_increases_the_error_after_the_first_sweep(seed, bits, order, layer):
    W, G, _ = _problem(seed)
    trace, history = [], []
    comq(W, G, bits, "layer" if layer else "channel", sweeps=3, order=order, engine="numpy",
         trace=trace, history=history)
    d = W.shape[1]
    later = np.array(trace[d:])                  # the first sweep moves Q from W onto the grid
    assert np.all(np.diff(later) <= 1e-9 * later[0] + 1e-12)
    assert np.all(np.diff(history) <= 1e-12 * history[0])


def test_greedy_order_is_by_weight_times_input_norm():
    W, G, _ = _problem(3, n=2, d=5)
    perm = update_order(W, G, "greedy")
    for j in range(2):
        score = np.abs(W[j]) * np.sqrt(np.diag(G))
        assert np.all(np.diff(score[perm[j]]) <= 0)
    assert np.array_equal(update_order(W, G, "cyclic")[1], np.arange(5))


@pytest.mark.skipif(_kernel() is None, reason="numba is not installed")
@pytest.mark.parametrize("granularity", ["channel", "layer"])
def test_numba_kernel_equals_the_numpy_reference(granularity):
    W, G, _ = _problem(4, n=12, d=20)
    a = comq(W, G, 3, granularity, sweeps=3, engine="numba")
    b = comq(W, G, 3, granularity, sweeps=3, engine="numpy")
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=0)
    assert np.array_equal(a[0], b[0])


def test_sweep_keeps_the_residual_up_to_date():
    W, G, _ = _problem(5, n=4, d=6)
    scale, offset = minmax_grid(W, 3)
    Q, Z, U = W.copy(), np.zeros_like(W), np.zeros_like(W)
    lo = offset.astype(float)
    moved = sweep_numpy(U, Q, Z, G, np.diag(G).copy(), scale, lo, lo + 7, update_order(W, G))
    np.testing.assert_allclose(U, (W - Q) @ G, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(Q, scale[:, None] * Z, rtol=1e-15)
    assert moved == np.count_nonzero(Q != W)


_ENGINES = ["numpy"] + (["numba"] if _kernel() is not None else [])


@pytest.mark.parametrize("engine", _ENGINES)
@pytest.mark.parametrize("bits", [2, 3])
def test_every_step_is_the_brute_force_best_code_of_its_coordinate(engine, bits):
    """One step of the sweep (the kernel, or its NumPy reference) against a search over every grid
    value of the coordinate: the error it leaves is the least of all of them (to rounding)."""
    W, G, _ = _problem(11, n=5, d=7)
    n, d = W.shape
    scale, offset = minmax_grid(W, bits)
    lo = offset.astype(float)
    hi = lo + (1 << bits) - 1
    rng = np.random.default_rng(12)
    sweep = _kernel() if engine == "numba" else sweep_numpy
    G32 = G.astype(np.float32) if engine == "numba" else G
    for _ in range(8):
        Z = rng.integers(offset[:, None], offset[:, None] + (1 << bits), (n, d)).astype(float)
        Q = scale[:, None] * Z
        U = (W - Q) @ G
        coord = rng.integers(0, d, (n, 1))              # one coordinate per row
        before = Q.copy()
        sweep(U, Q, Z, G32, np.diag(G).copy(), scale, lo, hi, coord)
        for j in range(n):
            i = coord[j, 0]
            errors = []
            for code in range(int(lo[j]), int(hi[j]) + 1):
                trial = before[j].copy()
                trial[i] = scale[j] * code
                errors.append(_error(W[j:j + 1], trial[None], G))
            got = _error(W[j:j + 1], Q[j:j + 1], G)
            assert got <= min(errors) * (1 + 1e-12) + 1e-12
            assert np.array_equal(np.delete(Q[j], i), np.delete(before[j], i))   # one coordinate only
        np.testing.assert_allclose(U, (W - Q) @ G, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("granularity", ["channel", "layer"])
def test_comq_equals_the_written_out_loop_dead_inputs_included(granularity):
    """comq() against its loop written out with full products: sweep, then δ = zᵀGw / zᵀGz from
    Z @ G, Q = δZ, U = (W − Q) G — on a layer with two dead inputs (comq() drops them from the
    sweeps and gets Gz from the residual instead of a product: the same result)."""
    W, _, X = _problem(15, n=5, d=10)
    X[:, [1, 7]] = 0
    G = (X.T @ X).astype(np.float32).astype(np.float64)
    bits, sweeps = 3, 3
    scale, offset = minmax_grid(W, bits, granularity)
    scale = np.broadcast_to(scale, (5,)).astype(float).copy()
    lo = np.broadcast_to(offset, (5,)).astype(float).copy()
    Q, Z, U = W.copy(), np.zeros_like(W), np.zeros_like(W)
    perm = update_order(W, G)
    for _ in range(sweeps):
        sweep_numpy(U, Q, Z, G, np.diag(G).copy(), scale, lo, lo + 7, perm)
        num, den = np.sum((Z @ G) * W, axis=1), np.sum((Z @ G) * Z, axis=1)
        scale = num / den if granularity == "channel" else np.full(5, num.sum() / den.sum())
        Q = scale[:, None] * Z
        U = (W - Q) @ G
    for engine in _ENGINES:
        codes, s, o = comq(W, G, bits, granularity, sweeps=sweeps, engine=engine)
        assert np.array_equal(codes.astype(float) + lo[:, None], Z)
        np.testing.assert_allclose(np.broadcast_to(s, (5,)), scale, rtol=1e-10)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_comq_started_from_gptq_never_raises_its_error(bits):
    """COMQ's steps are exact minimisers, so started from GPTQ's codes (and GPTQ's scales) the error
    cannot go up; and the scale update after the last sweep is its least-squares value."""
    W, G, _ = _problem(13, n=8, d=12, m=60)
    g = gptq(W, G, bits)
    history = []
    c = comq(W, G, bits, start=g, history=history)
    assert np.array_equal(c[2], g[2])                      # same integer offsets
    e_gptq, e_comq = recon_error(W, dequantize(*g), G), recon_error(W, dequantize(*c), G)
    assert e_comq <= e_gptq * (1 + 1e-12)
    assert np.all(np.diff([e_gptq] + history) <= 1e-12 * e_gptq)


@pytest.mark.parametrize("bits,shrink", [(2, 0.65), (2, None), (3, 0.8), (4, None)])
def test_initial_grid_is_the_shrunk_min_max_grid(bits, shrink):
    """With G = I the first sweep is round-to-nearest on the initial grid: the levels
    λ·δ₀·(o + c), δ₀ and o from the weights' range (the authors' ``scalar`` λ; 1 by default)."""
    W = np.random.default_rng(14).standard_normal((3, 10))
    lam = 1.0 if shrink is None else shrink
    s0, o = minmax_grid(W, bits)
    z = np.clip(np.rint(W / (lam * s0[:, None])), o[:, None], o[:, None] + (1 << bits) - 1)
    expected = recon_error(W, lam * s0[:, None] * z, np.eye(10))
    history = []
    kw = {} if shrink is None else {"shrink": shrink}
    comq(W, np.eye(10), bits, sweeps=1, history=history, **kw)
    assert history[0] == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="shrink"):
        comq(W, np.eye(10), bits, shrink=1.5)


# ------------------------------------------------------------------------------ GPTQ
def _gptq_reference(W, G, bits, damp=0.01):
    """GPTQ without the Cholesky or lazy-batch reformulation: quantize column j, then update every
    later column by the OBS step −(w_j − q_j)/[H_F⁻¹]_jj · [H_F⁻¹]_{j,:} with the inverse Hessian of
    the columns F not yet quantized, recomputed each time (Frantar et al. 2023, eq. 2-3)."""
    W = W.copy()
    n, d = W.shape
    scale, offset = minmax_grid(W, bits)     # the grid of the weights as given
    H = 2 * G
    dead = np.diag(H) <= 0                   # the authors' handling of an input that is always 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H = H + damp * np.mean(np.diag(H)) * np.eye(d)
    Q = np.zeros_like(W)
    for j in range(d):
        z = np.clip(np.rint(W[:, j] / scale) - offset, 0, (1 << bits) - 1) + offset
        Q[:, j] = scale * z
        F = np.arange(j, d)
        Hinv = np.linalg.inv(H[np.ix_(F, F)])
        W[:, F] -= np.outer((W[:, j] - Q[:, j]) / Hinv[0, 0], Hinv[0])
    return Q


@pytest.mark.parametrize("block", [128, 3])
@pytest.mark.parametrize("dead", [False, True])
def test_gptq_equals_the_written_out_reference(block, dead):
    W, G, X = _problem(6, n=5, d=8)
    if dead:                                  # inputs 2 and 5 always zero: G's rows and columns 0
        X[:, [2, 5]] = 0
        G = X.T @ X
    Q = dequantize(*gptq(W, G, 3, block=block))
    np.testing.assert_allclose(Q, _gptq_reference(W, G, 3), rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------ grids
@pytest.mark.parametrize("method,granularity", list(itertools.product(METHODS, ["channel", "layer"])))
def test_codes_stay_on_the_grid(method, granularity):
    W, G, _ = _problem(7)
    bits = 3
    codes, scale, offset = METHODS[method](W, G, bits, granularity)
    assert codes.dtype == np.uint8 and codes.shape == W.shape and codes.max() <= 7
    assert scale.shape == offset.shape == ((6,) if granularity == "channel" else (1,))
    layer = QuantizedLinear(9, 6, bits=bits, granularity=granularity, dtype=np.float64)
    layer.load_codes(codes, scale, offset)
    Q = layer.dequantized()
    levels = scale.reshape(-1, 1) * (np.arange(8) + offset.reshape(-1, 1))     # each row's 8 points
    levels = np.broadcast_to(levels, (6, 8))
    assert np.all(np.min(np.abs(Q[:, :, None] - levels[:, None, :]), axis=2) < 1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_enough_bits_give_the_float_weights_back(method):
    W, G, _ = _problem(8, m=200, correlated=False)
    codes, scale, offset = METHODS[method](W, G, 8, "channel")
    Q = dequantize(codes, scale, offset)
    assert np.all(np.abs(Q - W) <= scale[:, None] * (1 + 1e-9))       # within one grid step
    assert recon_error(W, Q, G) < 1e-4


@pytest.mark.parametrize("bits", [2, 3])
def test_comq_and_gptq_beat_rounding(bits):
    W, G, _ = _problem(9, n=16, d=24, m=100)
    err = {k: recon_error(W, dequantize(*METHODS[k](W, G, bits, "channel")), G) for k in METHODS}
    assert err["comq"] < 0.8 * err["rtn"] and err["gptq"] < 0.8 * err["rtn"]


# ------------------------------------------------------------------------------ packing
@settings(max_examples=60, deadline=None, derandomize=True)
@given(bits=st.integers(2, 8), count=st.integers(0, 41), seed=st.integers(0, 2**31 - 1))
def test_packing_round_trips(bits, count, seed):
    codes = np.random.default_rng(seed).integers(0, 1 << bits, count)
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == packed_size(count, bits)
    assert packed.size == ((count + 1) // 2 if bits <= 4 else count)
    assert np.array_equal(unpack_codes(packed, bits, count), codes)


def test_packing_refuses_codes_off_the_grid():
    with pytest.raises(ValueError, match="codes must lie in"):
        pack_codes(np.array([0, 16]), 4)
    with pytest.raises(ValueError, match="bits"):
        pack_codes(np.array([0]), 9)


# ------------------------------------------------------------------------------ models
@pytest.fixture(scope="module")
def digits_mlp():
    from nograd.data import load_dataset
    from nograd.train import evaluate, fit

    ds = load_dataset("digits", seed=0)
    model = nograd.get_model("mlp", ds.input_shape, ds.num_classes, rng=0, hidden=(64,))
    fit(model, "backprop", "adam", (ds.X_train, ds.y_train), epochs=8, batch_size=64, rng=0,
        progress=False)
    acc = evaluate(model, ds.X_test, ds.y_test)["accuracy"]
    assert acc > 0.9
    return model, ds, acc


def test_four_bit_comq_keeps_the_accuracy(digits_mlp):
    from nograd.train import evaluate

    model, ds, acc = digits_mlp
    before = {k: v.copy() for k, v in model.params.items()}
    q, report = quantize(model, ds.X_train[:300], method="comq", bits=4)
    assert [e["name"] for e in report["layers"]] == ["1", "3"]
    assert all(type(q[int(e["name"])]) is QuantizedLinear for e in report["layers"])
    assert evaluate(q, ds.X_test, ds.y_test)["accuracy"] >= acc - 0.01
    for k, v in model.params.items():          # the float model is untouched
        np.testing.assert_array_equal(v, before[k])
    _, rtn_report = quantize(model, ds.X_train[:300], method="rtn", bits=2)
    _, comq_report = quantize(model, ds.X_train[:300], method="comq", bits=2)
    assert comq_report["recon_error"] < 0.7 * rtn_report["recon_error"]


def test_layers_calibrate_on_the_quantized_earlier_layers(digits_mlp):
    model, ds, _ = digits_mlp
    X = ds.X_train[:200]
    q, report = quantize(model, X, method="gptq", bits=2)
    h = q[2](q[1](q[0](X))).astype(np.float64)            # the quantized first layer's output
    W = model[3].params["weight"].astype(np.float64)
    Q = q[3].dequantized().astype(np.float64)
    G = h.T @ h
    assert report["layers"][1]["recon_error"] == pytest.approx(recon_error(W, Q, G), rel=1e-9)
    hf = model[2](model[1](model[0](X))).astype(np.float64)
    assert report["layers"][1]["recon_error"] != pytest.approx(recon_error(W, Q, hf.T @ hf), rel=1e-6)


@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_saved_quantized_model_reloads_to_identical_outputs(name, tmp_path):
    rng = np.random.default_rng(0)
    opts = {"vit": {"dim": 32, "depth": 1, "heads": 2}, "cnn": {}}[name]
    model = nograd.get_model(name, (1, 8, 8), 10, rng=0, **opts)
    X = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    q, report = quantize(model, X, method="comq", bits=3)
    kinds = {e["type"] for e in report["layers"]}
    assert kinds == ({"Conv2d", "Linear"} if name == "cnn" else {"Linear"})
    assert len(report["layers"]) == len(quantizable_layers(model))
    nograd.save_model(q, tmp_path / "q.npz")
    nograd.save_model(model, tmp_path / "f.npz")
    again = nograd.load_model(tmp_path / "q.npz")
    np.testing.assert_array_equal(again(X), q(X))
    assert (tmp_path / "q.npz").stat().st_size < (tmp_path / "f.npz").stat().st_size


def test_tree_model_saves_too(tmp_path):
    model = nograd.Sequential(Flatten(), Linear(16, 8, rng=0), ReLU(), Linear(8, 3, rng=1))
    X = np.random.default_rng(1).standard_normal((50, 4, 4)).astype(np.float32)
    q, _ = quantize(model, X, method="rtn", bits=4, granularity="layer")
    nograd.save_model(q, tmp_path / "q.npz")
    np.testing.assert_array_equal(nograd.load_model(tmp_path / "q.npz")(X), q(X))


def test_the_package_name_is_the_function_even_after_the_submodule_is_imported():
    import nograd.compress
    import nograd.compress.quantization  # noqa: F401

    model = nograd.Sequential(Linear(4, 3, rng=0))
    X = np.ones((5, 4), np.float32)
    assert nograd.compress.quantize(model, X, method="rtn")[1]["bits"] == 4


# ------------------------------------------------------------------------------ bad input
def test_bad_input_is_refused_with_a_clear_error():
    model = nograd.Sequential(Conv2d(1, 2, 3, groups=1, rng=0), Flatten(), Linear(2 * 6 * 6, 3, rng=0))
    X = np.random.default_rng(0).standard_normal((10, 1, 8, 8)).astype(np.float32)
    for bits in (1, 9):
        with pytest.raises(ValueError, match="bits"):
            quantize(model, X, bits=bits)
    with pytest.raises(ValueError, match="calib_x"):
        quantize(model, X[:, :, :5])
    with pytest.raises(ValueError, match="calib_x"):
        quantize(model, X.reshape(10, -1))
    bad = X.copy()
    bad[3, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match="calib_x contains NaN"):
        quantize(model, bad)
    with pytest.raises(ValueError, match="calib_x"):
        quantize(model, None)
    with pytest.raises(ValueError, match="'1' is a Flatten"):
        quantize(model, X, layers=["1"])
    with pytest.raises(ValueError, match="no layer 'nope'"):
        quantize(model, X, layers=["nope"])
    with pytest.raises(ValueError, match="method"):
        quantize(model, X, method="awq")
    with pytest.raises(ValueError, match="granularity"):
        quantize(model, X, granularity="group")
    with pytest.raises(ValueError, match="order"):
        quantize(model, X, order="random")
    with pytest.raises(ValueError, match="sweeps"):
        quantize(model, X, sweeps=0)
    with pytest.raises(ValueError, match="shrink"):
        quantize(model, X, shrink=0)
    grouped = nograd.Sequential(Conv2d(2, 2, 3, groups=2, rng=0))
    with pytest.raises(ValueError, match="groups=2"):
        quantize(grouped, np.ones((2, 2, 5, 5), np.float32))
    with pytest.raises(ValueError, match="no Linear or Conv2d"):
        quantize(nograd.Sequential(ReLU()), X)
