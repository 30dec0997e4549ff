"""HyperLSTM against the paper: Ha, Dai & Le, "HyperNetworks" (ICLR 2017), §3.2 and appendix
A.2.2-A.2.3 (eqs. 10-13), and the authors' reference cell (``HyperLSTMCell`` in David Ha's
"supercell", blog.otoro.net/2016/09/28/hyper-networks/, the same cell as in Magenta's
``magenta/models/sketch_rnn/rnn.py``).

The reference forward below is written gate by gate from the equations, with the paper's symbols,
and reads nograd's arrays only through ``_paper_symbols`` (the layout the class docstring states).
"""
import numpy as np
import pytest

from nograd.models import HyperLSTM

GATES = "ifgo"              # nograd stores the four gates in PyTorch's order i, f, g, o


def _sigma(a):
    return 1.0 / (1.0 + np.exp(-a))


def _ln(a, gamma, beta, eps):
    """Layer normalisation of each row of ``a`` (Ba et al. 2016), as the paper's LN(·)."""
    mu = a.mean(axis=-1, keepdims=True)
    var = ((a - mu) ** 2).mean(axis=-1, keepdims=True)
    return gamma * (a - mu) / np.sqrt(var + eps) + beta


def _paper_symbols(m):
    """nograd's arrays named as in the paper, one entry per gate y ∈ {i, f, g, o}."""
    p = m.params
    H, Hh, Nz = m.hidden_size, m.hyper_size, m.embed_size
    s = {}
    for k, y in enumerate(GATES):
        r, rh = slice(k * H, (k + 1) * H), slice(k * Hh, (k + 1) * Hh)
        # hyper cell, eq. 10: Ŵ_x̂^y acts on x̂_t = [h_{t-1}; x_t], Ŵ_ĥ^y on ĥ_{t-1}
        s["What_xhat", y] = np.concatenate([p["hyper_weight_hh"][rh, :H], p["weight_ih"][4 * H:][rh]], axis=1)
        s["What_hhat", y] = p["hyper_weight_hh"][rh, H:]
        s["bhat", y] = p["hyper_bias"][rh]
        s["ln_hat_gamma", y] = p["hyper_ln_gates_weight"][rh]
        s["ln_hat_beta", y] = p["hyper_ln_gates_bias"][rh]
        # embeddings, eq. 11 (z_weight rows: 4 z_h blocks, 4 z_x blocks, 4 z_b blocks of N_z)
        zr = [slice((j * 4 + k) * Nz, (j * 4 + k + 1) * Nz) for j in range(3)]
        s["W_hhat_h", y], s["b_hhat_h", y] = p["z_weight"][zr[0]], p["z_bias"][zr[0]]
        s["W_hhat_x", y], s["b_hhat_x", y] = p["z_weight"][zr[1]], p["z_bias"][zr[1]]
        s["W_hhat_b", y] = p["z_weight"][zr[2]]
        # scalings and bias, eq. 12
        s["W_hz", y], s["W_xz", y], s["W_bz", y] = p["d_weight"][0, k], p["d_weight"][1, k], p["d_weight"][2, k]
        s["b0", y] = p["bias_hh"][r]
        s["W_h", y], s["W_x", y] = p["weight_hh"][r], p["weight_ih"][:4 * H][r]
        s["ln_gamma", y], s["ln_beta", y] = p["ln_gates_weight"][r], p["ln_gates_bias"][r]
    s["ln_hat_c"] = (p["hyper_ln_c_weight"], p["hyper_ln_c_bias"])
    s["ln_c"] = (p["ln_c_weight"], p["ln_c_bias"])
    return s


def paper_hyperlstm(s, x, state, eps, forget_bias=0.0):
    """Ha et al. (2016) eqs. 10-13 for a batch ``x (B, T, N_x)`` from ``state = (h, c, ĥ, ĉ)``.

    ``forget_bias`` is the constant the authors' code adds to the forget pre-activation after the
    layer norm, ``sigmoid(f + forget_bias)`` in both cells (supercell's ``LayerNormLSTMCell`` and
    ``HyperLSTMCell``, default 1.0); the paper's equations are ``forget_bias = 0``. Eq. 11 writes the
    embeddings from ĥ_{t-1}, but §3.2's text ("generates as output the vector ĥ_t. This vector is then
    used to generate the weights for the main RNN at the same timestep") and the authors' code
    (``self.hyper_output``, the new output) use ĥ_t, as here. Recurrent dropout (eq. 13) is off.
    """
    h, c, hh, ch = (np.array(v, dtype=np.float64) for v in state)
    ys = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        # eq. 10: the hyper LSTM cell, with layer norm, on x̂_t = [h_{t-1}; x_t]
        xhat = np.concatenate([h, xt], axis=1)
        pre_hat = {y: _ln(xhat @ s["What_xhat", y].T + hh @ s["What_hhat", y].T + s["bhat", y],
                          s["ln_hat_gamma", y], s["ln_hat_beta", y], eps) for y in GATES}
        ch = _sigma(pre_hat["f"] + forget_bias) * ch + _sigma(pre_hat["i"]) * np.tanh(pre_hat["g"])
        hh = _sigma(pre_hat["o"]) * np.tanh(_ln(ch, *s["ln_hat_c"], eps))
        # eqs. 11-12: embeddings z^y, scalings d^y and bias b^y, per gate
        pre = {}
        for y in GATES:
            z_h = hh @ s["W_hhat_h", y].T + s["b_hhat_h", y]
            z_x = hh @ s["W_hhat_x", y].T + s["b_hhat_x", y]
            z_b = hh @ s["W_hhat_b", y].T
            d_h = z_h @ s["W_hz", y].T
            d_x = z_x @ s["W_xz", y].T
            b_y = z_b @ s["W_bz", y].T + s["b0", y]
            pre[y] = _ln(d_h * (h @ s["W_h", y].T) + d_x * (xt @ s["W_x", y].T) + b_y,
                         s["ln_gamma", y], s["ln_beta", y], eps)
        # eq. 13 (without dropout)
        c = _sigma(pre["f"] + forget_bias) * c + _sigma(pre["i"]) * np.tanh(pre["g"])
        h = _sigma(pre["o"]) * np.tanh(_ln(c, *s["ln_c"], eps))
        ys.append(h)
    return np.stack(ys, axis=1), (h, c, hh, ch)


def _random_model(seed=0, scale=0.5, **kw):
    m = HyperLSTM(3, 4, hyper_size=5, embed_size=2, rng=seed, dtype=np.float64, **kw)
    rng = np.random.default_rng(seed + 100)
    for k, v in m._own.items():                 # every array off its init (many start at 0 or 1)
        m._own[k] = v + rng.normal(0, scale, v.shape)
    return m


def _random_state(B, m, rng):
    return tuple(rng.standard_normal((B, n)) for n in (m.hidden_size, m.hidden_size, m.hyper_size,
                                                       m.hyper_size))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_is_the_papers_equations(seed):
    m = _random_model(seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 5, 3))
    s0 = _random_state(3, m, rng)
    y, cache = m.forward(x, state=s0)
    y_ref, s_ref = paper_hyperlstm(_paper_symbols(m), x, s0, m.eps)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)
    for a, b in zip(m.final_state(cache), s_ref):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_forward_from_zero_state_and_float32():
    m = _random_model(3)
    x = np.random.default_rng(3).standard_normal((2, 4, 3))
    zeros = _random_state(2, m, np.random.default_rng(0))
    zeros = tuple(np.zeros_like(z) for z in zeros)
    y_ref, _ = paper_hyperlstm(_paper_symbols(m), x, zeros, m.eps)
    np.testing.assert_allclose(m(x), y_ref, rtol=0, atol=1e-12)
    y32 = m.astype(np.float32)(x.astype(np.float32))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y_ref, rtol=0, atol=1e-5)


def test_forget_bias_is_the_authors_constant_after_layer_norm():
    # The authors' cells compute sigmoid(LN(f) + forget_bias) with forget_bias = 1.0 in the main and
    # the hyper LSTM. nograd keeps the paper's LN(·) with a trainable shift β and starts the forget
    # gates' β at forget_bias: the same function at initialisation, for any other array values.
    m = HyperLSTM(3, 4, hyper_size=5, embed_size=2, rng=0, dtype=np.float64)
    assert m.forget_bias == 1.0
    rng = np.random.default_rng(7)
    for k, v in m._own.items():                 # move everything but the layer norms' shifts
        if not k.endswith("ln_gates_bias"):
            m._own[k] = v + rng.normal(0, 0.5, v.shape)
    x = rng.standard_normal((2, 4, 3))
    s0 = _random_state(2, m, rng)
    s = _paper_symbols(m)
    for y in GATES:                             # the authors' shifts: zero, the +1 added after LN
        s["ln_hat_beta", y] = np.zeros_like(s["ln_hat_beta", y])
        s["ln_beta", y] = np.zeros_like(s["ln_beta", y])
    y_ref, _ = paper_hyperlstm(s, x, s0, m.eps, forget_bias=1.0)
    np.testing.assert_allclose(m(x, state=s0), y_ref, rtol=0, atol=1e-12)
    # and without it the forget gates start at σ(0) = 1/2, as in the paper's equations
    m0 = HyperLSTM(3, 4, hyper_size=5, embed_size=2, forget_bias=0.0, rng=0, dtype=np.float64)
    np.testing.assert_array_equal(m0.params["ln_gates_bias"], 0.0)
    np.testing.assert_array_equal(m0.params["hyper_ln_gates_bias"], 0.0)


def test_initialisation_is_appendix_a23():
    H, Hh, Nz, F = 6, 5, 3, 4
    m = HyperLSTM(F, H, hyper_size=Hh, embed_size=Nz, rng=0, dtype=np.float64)
    p = m.params
    assert m.eps == 1e-3                        # the authors' layer_norm / layer_norm_all epsilon
    # "Orthogonal Initialization is performed for all weights" (hyper cell, W_h, W_x), per gate
    for k in range(4):
        W_h = p["weight_hh"][k * H:(k + 1) * H]
        np.testing.assert_allclose(W_h @ W_h.T, np.eye(H), atol=1e-12)
        W_x = p["weight_ih"][k * H:(k + 1) * H]                 # (H, F), tall: orthonormal columns
        np.testing.assert_allclose(W_x.T @ W_x, np.eye(F), atol=1e-12)
        rh = slice(k * Hh, (k + 1) * Hh)
        W_xhat = np.concatenate([p["hyper_weight_hh"][rh, :H], p["weight_ih"][4 * H:][rh]], axis=1)
        np.testing.assert_allclose(W_xhat @ W_xhat.T, np.eye(Hh), atol=1e-12)   # (Ĥ, H + F), wide
        W_hhat = p["hyper_weight_hh"][rh, H:]
        np.testing.assert_allclose(W_hhat @ W_hhat.T, np.eye(Hh), atol=1e-12)
    # "The biases in Equation 10 are initialized to zero"; b_0 and W_bz start at zero
    np.testing.assert_array_equal(p["hyper_bias"], 0.0)
    np.testing.assert_array_equal(p["bias_hh"], 0.0)
    np.testing.assert_array_equal(p["d_weight"][2], 0.0)
    # eq. 11: the z_h, z_x weights 0 with bias 1, the z_b weights N(0, 0.01²)
    np.testing.assert_array_equal(p["z_weight"][:8 * Nz], 0.0)
    np.testing.assert_array_equal(p["z_bias"], 1.0)
    assert p["z_bias"].shape == (8 * Nz,)                       # z_b has no bias (eq. 11)
    zb = p["z_weight"][8 * Nz:]
    assert 0.004 < zb.std() < 0.02 and np.all(zb != 0)
    # W_hz, W_xz constant 0.1/N_z, so every scaling starts at 0.1 (Cooijmans et al.'s trick)
    np.testing.assert_allclose(p["d_weight"][:2], 0.1 / Nz, rtol=1e-15)
    # layer norms: gains 1, shifts 0 except the forget gates' (the authors' forget_bias 1.0)
    for pre, n in (("", H), ("hyper_", Hh)):
        np.testing.assert_array_equal(p[pre + "ln_gates_weight"], 1.0)
        np.testing.assert_array_equal(p[pre + "ln_c_weight"], 1.0)
        np.testing.assert_array_equal(p[pre + "ln_c_bias"], 0.0)
        b = p[pre + "ln_gates_bias"].reshape(4, n)
        np.testing.assert_array_equal(b[[0, 2, 3]], 0.0)
        np.testing.assert_array_equal(b[1], 1.0)


def test_no_bias_inside_the_input_scaling():
    # eq. 12 scales W_x x_t alone: shifting x by nothing but a bias would need an array that d_x
    # multiplies. Every array of the cell, by name and shape, is one of the paper's.
    m = HyperLSTM(3, 4, hyper_size=5, embed_size=2, rng=0)
    H, Hh, Nz, F = 4, 5, 2, 3
    shapes = {k: v.shape for k, v in m.params.items()}
    assert shapes == {
        "weight_ih": (4 * H + 4 * Hh, F), "weight_hh": (4 * H, H), "bias_hh": (4 * H,),
        "hyper_weight_hh": (4 * Hh, H + Hh), "hyper_bias": (4 * Hh,),
        "z_weight": (12 * Nz, Hh), "z_bias": (8 * Nz,), "d_weight": (3, 4, H, Nz),
        "ln_gates_weight": (4 * H,), "ln_gates_bias": (4 * H,), "ln_c_weight": (H,), "ln_c_bias": (H,),
        "hyper_ln_gates_weight": (4 * Hh,), "hyper_ln_gates_bias": (4 * Hh,),
        "hyper_ln_c_weight": (Hh,), "hyper_ln_c_bias": (Hh,)}


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="eps"):
        HyperLSTM(3, 4, eps=0.0)
    with pytest.raises((ValueError, TypeError), match="forget_bias"):
        HyperLSTM(3, 4, forget_bias=float("nan"))
