"""HyperNetwork and KernelGenerator: the paper's generator formula, exact reproduction of the plain
model's gradients through an identity generator, gradient checks off the default condition,
parameter counts, errors, and a hypernetwork CNN that learns the digits."""
import numpy as np
import pytest

from nograd import Adam, Backprop
from nograd.core import Sequential
from nograd.data import load_digits
from nograd.layers import Conv2d, Flatten, Linear, Tanh
from nograd.models import HyperNetwork, KernelGenerator, cnn
from nograd.testing import check_adjoint, check_jvp, check_vjp


def _small_mlp(dt=np.float64, seed=0):
    r = np.random.default_rng(seed)
    return Sequential(Linear(3, 4, rng=r, dtype=dt), Tanh(), Linear(4, 2, rng=r, dtype=dt))


def test_kernel_generator_is_the_papers_two_layer_map():
    # Ha et al. §3.1: a_i = W_i z + B_i, K_i = <W_out, a_i> + B_out, one slice per input channel
    rng = np.random.default_rng(0)
    g = KernelGenerator(3, 2, 4, (2, 3), hidden=5, rng=rng, dtype=np.float64)
    for k in g._own:
        g._own[k] = rng.standard_normal(g._own[k].shape)
    z = rng.standard_normal((2, 3))
    K = g(z)
    assert K.shape == (2, 4, 2, 2, 3)
    p = g.params
    for j in range(2):
        for i in range(2):
            W_i = p["w_in"][i * 5:(i + 1) * 5]
            a_i = W_i @ z[j] + p["b_in"][i * 5:(i + 1) * 5]
            K_i = (p["w_out"] @ a_i + p["b_out"]).reshape(4, 2, 3)
            np.testing.assert_allclose(K[j, :, i], K_i, rtol=1e-12, atol=1e-12)


def test_identity_generator_reproduces_the_plain_gradients_exactly():
    plain = _small_mlp()
    names = ["0.weight", "2.weight"]
    hyper = HyperNetwork(plain, kind="mlp", names=names, emb_dim=12 + 8, hidden=(), rng=0)
    head = hyper.children["generator"][0]
    head._own["weight"][...] = np.eye(20)
    head._own["bias"][...] = 0.0
    hyper._own["emb"][0] = np.concatenate([plain.params[n].ravel() for n in names])
    for k, v in plain.params.items():
        if k not in names:
            hyper._own["target." + k][...] = v
    x = np.random.default_rng(1).standard_normal((6, 3))
    y, cache = plain.forward(x)
    yh, cache_h = hyper.forward(x)
    np.testing.assert_array_equal(yh, y)
    dy = np.random.default_rng(2).standard_normal(y.shape)
    dx, g = plain.backward(cache, dy)
    dxh, gh = hyper.backward(cache_h, dy)
    np.testing.assert_array_equal(dxh, dx)
    np.testing.assert_array_equal(gh["emb"][0], np.concatenate([g[n].ravel() for n in names]))
    np.testing.assert_array_equal(gh["target.0.bias"], g["0.bias"])
    np.testing.assert_array_equal(gh["target.2.bias"], g["2.bias"])
    # and forward mode: a tangent on the embedding is a tangent on the generated weights
    u = {n: np.random.default_rng(3).standard_normal(plain.params[n].shape) for n in names}
    _, t = plain.jvp(x, None, u)
    _, th = hyper.jvp(x, None, {"emb": np.stack([np.concatenate([u[n].ravel() for n in names])])})
    np.testing.assert_array_equal(th, t)


@pytest.mark.parametrize("chunk", [None, 5])
def test_mlp_hypernetwork_gradients_off_the_default_condition(chunk):
    hyper = HyperNetwork(_small_mlp(), kind="mlp", num_conditions=3, emb_dim=3, hidden=(4,),
                         chunk_size=chunk, rng=0)
    hyper.condition = 2
    x = np.random.default_rng(0).standard_normal((4, 3))
    assert check_vjp(hyper, x) < 1e-6
    assert check_jvp(hyper, x) < 1e-6
    assert check_adjoint(hyper, x) < 1e-9
    _, cache = hyper.forward(x)
    _, g = hyper.backward(cache, np.ones((4, 2)))
    assert np.all(g["emb"][:2] == 0) and np.any(g["emb"][2] != 0)
    # different conditions generate different networks
    assert not np.allclose(hyper(x, condition=0), hyper(x, condition=2))
    with pytest.raises(ValueError, match="condition"):
        hyper.forward(x, condition=3)


def test_conv_hypernetwork_tiles_blocks_and_counts_parameters():
    net = cnn((1, 8, 8), 10, rng=0, channels=(32, 64))
    hyper = HyperNetwork(net, names=["3.weight"], block=(32, 32), z_dim=4, hidden=4, rng=0)
    c = hyper.param_counts()
    # z: 2 blocks × 4; generator: w_in 128×4 + 128, w_out 288×4 + 288; free: conv1, both biases, head
    assert c["generator"] == 128 * 4 + 128 + 288 * 4 + 288
    assert c["generated"] == 64 * 32 * 9
    assert c["hypernetwork"] == 8 + c["generator"] + (32 * 9 + 32) + 64 + (256 * 10 + 10)
    assert c["target"] == net.num_params
    assert c["target"] >= 3 * c["hypernetwork"]
    assert "target.3.weight" not in hyper.params and "z.3.weight" in hyper.params
    # block (o, i) of the generated kernel is the generator's output for embedding row 2·o + i... here 2×1
    _, cache = hyper.forward(np.zeros((1, 1, 8, 8), np.float32))
    W = cache[2]["3.weight"]
    K = hyper.children["generator"](hyper.params["z.3.weight"])
    np.testing.assert_array_equal(W[:32], K[0])
    np.testing.assert_array_equal(W[32:], K[1])
    # the initial kernels have He's scale for fan_in = 32·9
    assert 0.5 < W.std() / np.sqrt(2 / 288) < 2


def test_conv_hypernetwork_gradients_with_two_generated_layers():
    r = np.random.default_rng(0)
    net = Sequential(Conv2d(2, 4, 3, padding=1, rng=r, dtype=np.float64), Tanh(),
                     Conv2d(4, 2, 3, rng=r, dtype=np.float64), Flatten(), Linear(8, 3, rng=r, dtype=np.float64))
    hyper = HyperNetwork(net, block=(2, 2), z_dim=3, rng=1)
    assert hyper.names == ["0.weight", "2.weight"]
    assert hyper.params["z.0.weight"].shape == (2, 3) and hyper.params["z.2.weight"].shape == (2, 3)
    x = r.standard_normal((3, 2, 4, 4))
    assert check_vjp(hyper, x) < 1e-6
    assert check_adjoint(hyper, x) < 1e-9


def test_errors_name_the_problem():
    net = _small_mlp()
    with pytest.raises(TypeError, match="target"):
        HyperNetwork("not a module")
    with pytest.raises(ValueError, match="kind"):
        HyperNetwork(net, kind="dynamic")
    with pytest.raises(ValueError, match="not a parameter"):
        HyperNetwork(net, kind="mlp", names=["5.weight"])
    with pytest.raises(ValueError, match="names is empty"):
        HyperNetwork(net)                                   # no conv weights to generate
    conv = Sequential(Conv2d(3, 4, 3, rng=0))
    with pytest.raises(ValueError, match="tile"):
        HyperNetwork(conv, block=(4, 2))
    hyper = HyperNetwork(conv, block=(2, 3), rng=0)
    with pytest.raises(ValueError, match="unknown key"):
        hyper.forward(np.zeros((1, 3, 5, 5), np.float32), params={"z.9.weight": np.zeros(1)})


def test_hypernetwork_cnn_learns_the_digits():
    Xtr, ytr, Xte, yte = load_digits()
    net = cnn((64,), 10, rng=0, channels=(16, 32))
    hyper = HyperNetwork(net, names=["4.weight"], block=(16, 16), rng=0)
    opt, rule, rng = Adam(hyper.params, lr=3e-3), Backprop(), np.random.default_rng(0)
    for _ in range(3):
        order = rng.permutation(len(ytr))
        for i in range(0, len(ytr), 32):
            idx = order[i:i + 32]
            opt.step(rule.grads(hyper, Xtr[idx], ytr[idx], rng=rng)[0])
    acc = float(np.mean(hyper(Xte).argmax(1) == yte))
    assert acc > 0.9, acc


# --------------------------------------------------------------------------- HyperLSTM (§3.2)
def _hyperlstm(seed=0):
    from nograd.models import HyperLSTM

    m = HyperLSTM(3, 4, hyper_size=5, embed_size=2, rng=seed, dtype=np.float64)
    rng = np.random.default_rng(seed + 100)
    for k, v in m._own.items():                     # off the init, where many weights are 0
        m._own[k] = v + rng.normal(0, 0.3, v.shape)
    return m


def test_hyperlstm_scalings_start_at_a_tenth():
    from nograd.models import HyperLSTM

    m = HyperLSTM(3, 4, hyper_size=5, embed_size=2, rng=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 3, 3))
    _, cache = m.forward(x)
    for step in cache[2]:
        d = step[5]                                 # (B, 3, 4H): d_h, d_x, b(z_b)
        np.testing.assert_allclose(d[:, 0], 0.1, rtol=1e-12)
        np.testing.assert_allclose(d[:, 1], 0.1, rtol=1e-12)
        np.testing.assert_array_equal(d[:, 2], 0.0)


def test_hyperlstm_state_carried_across_calls_equals_one_call():
    m = _hyperlstm()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 3))
    s0 = (rng.standard_normal((2, 4)), rng.standard_normal((2, 4)), rng.standard_normal((2, 5)),
          rng.standard_normal((2, 5)))
    y, cache = m.forward(x, state=s0)
    y1, c1 = m.forward(x[:, :2], state=s0)
    y2, c2 = m.forward(x[:, 2:], state=m.final_state(c1))
    np.testing.assert_allclose(np.concatenate([y1, y2], axis=1), y, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, g, ds0 = m.backward_state(cache, dy)
    dx2, g2, dmid = m.backward_state(c2, dy[:, 2:])
    dx1, g1, ds0p = m.backward_state(c1, dy[:, :2], dstate=dmid)
    np.testing.assert_allclose(np.concatenate([dx1, dx2], axis=1), dx, rtol=1e-10, atol=1e-12)
    for k in g:
        np.testing.assert_allclose(g1[k] + g2[k], g[k], rtol=1e-10, atol=1e-12)
    # the initial-state cotangent against finite differences
    u0 = tuple(rng.standard_normal(s.shape) for s in s0)

    def phi(t):
        return float(np.sum(dy * m(x, state=tuple(s + t * d for s, d in zip(s0, u0)))))

    numeric = (phi(1e-5) - phi(-1e-5)) / 2e-5
    np.testing.assert_allclose(sum(float(np.sum(a * b)) for a, b in zip(ds0, u0)), numeric, rtol=1e-7)
    for a, b in zip(ds0p, ds0):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    _, t, _, _ = m.jvp_state(x, None, None, state=s0, dstate=u0)
    np.testing.assert_allclose(float(np.sum(dy * t)), numeric, rtol=1e-7)


def test_hyperlstm_learns_a_periodic_sequence_with_truncated_bptt():
    # next-symbol prediction on "0120301203…" (period 5, so symbol 0 needs the previous one);
    # windows of 5 with the state carried across windows, as in examples/hyperlstm_charlm.py
    from nograd.core.losses import softmax_cross_entropy
    from nograd.core.optim import Adam
    from nograd.models import HyperLSTM

    seq = np.tile([0, 1, 2, 0, 3], 40)
    x_all = np.eye(4)[seq][None].astype(np.float32)            # (1, 200, 4) one-hot
    rnn = HyperLSTM(4, 12, hyper_size=6, embed_size=3, rng=0)
    head = Linear(12, 4, rng=1)
    params = {**{"rnn." + k: v for k, v in rnn.params.items()},
              **{"head." + k: v for k, v in head.params.items()}}
    opt = Adam(params, lr=0.02, clip_norm=1.0)
    losses = []
    for epoch in range(8):
        state, total = None, 0.0
        for t in range(0, 195, 5):
            h, cr = rnn.forward(x_all[:, t:t + 5], state=state)
            z, ch = head.forward(h)
            loss, dz = softmax_cross_entropy(z.reshape(-1, 4), seq[t + 1:t + 6])
            dh, gh = head.backward(ch, dz.reshape(z.shape))
            _, gr, _ = rnn.backward_state(cr, dh)
            state = rnn.final_state(cr)
            opt.step({**{"rnn." + k: v for k, v in gr.items()}, **{"head." + k: v for k, v in gh.items()}})
            total += loss
        losses.append(total / 39)
    # a model without memory cannot beat (2/5)·ln 2 ≈ 0.28 (which symbol follows a 0 depends on the
    # one before it); measured: 0.25 in the first epoch, 3e-4 after eight
    assert losses[-1] < 0.01 < losses[0], losses
