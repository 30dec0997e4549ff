"""Inverse-Flow: gradient checks of every bijector (output and log-determinant together) and of
the whole flow, log-determinants against the dense Jacobian, round trips, sampling, learning, errors."""
import numpy as np
import pytest
from hypothesis import given, settings

from nograd.core import Module
from nograd.core.optim import Adam
from nograd.data import load_digits
from nograd.models.flow import InverseFlow, dequantize, squeeze, unsqueeze
from nograd.models.flow_steps import ActNorm, AffineCoupling, FlowStep
from nograd.testing import check_adjoint, check_jvp, check_vjp
from nograd.testing.strategies import seeds


class Packed(Module):
    """``x -> [z.flatten(), ld]`` per sample, so the checks see the log-determinant's gradient too."""

    def __init__(self, bij):
        super().__init__()
        self._children["b"] = bij

    def forward(self, x, *, train=False, rng=None, params=None):
        z, ld, c = self._children["b"].forward_ld(x, params=self._split(params, "b"))
        return np.concatenate([z.reshape(len(z), -1), ld[:, None]], axis=1), (c, z.shape)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        c, shape = cache
        dx, g = self._children["b"].backward_ld(c, np.ascontiguousarray(dy[:, :-1]).reshape(shape),
                                                np.ascontiguousarray(dy[:, -1]),
                                                params=self._split(params, "b"))
        return dx, self._prefixed(g, "b")

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        z, dz, ld, dld = self._children["b"].jvp_ld(x, dx, self._split(dparams, "b"),
                                                    params=self._split(params, "b"))
        return (np.concatenate([z.reshape(len(z), -1), ld[:, None]], axis=1),
                np.concatenate([dz.reshape(len(z), -1), dld[:, None]], axis=1))


def _perturb(m, seed, scale=0.3):
    """Move every parameter off its initial value (zero-initialised coupling outputs, unit ActNorm)."""
    rng = np.random.default_rng(seed)
    for v in m.params.values():
        v += scale * rng.standard_normal(v.shape)
    for name, sub in m.modules():
        if "diag" in sub._own:
            sub._own["diag"][...] = rng.uniform(0.6, 1.4, sub._own["diag"].shape)
    return m


def _check_all(m, x):
    assert check_vjp(m, x) < 1e-6
    assert check_jvp(m, x) < 1e-6
    assert check_adjoint(m, x) < 1e-9


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def test_squeeze_is_a_permutation():
    x = _x((2, 3, 4, 6))
    s = squeeze(x)
    assert s.shape == (2, 12, 2, 3)
    np.testing.assert_array_equal(np.sort(s.ravel()), np.sort(x.ravel()))
    np.testing.assert_array_equal(unsqueeze(s), x)
    # channel 4c + 2i + j holds pixel (2h + i, 2w + j) of channel c
    np.testing.assert_array_equal(s[:, 4 * 1 + 2 * 1 + 0], x[:, 1, 1::2, 0::2])
    with pytest.raises(ValueError, match="even"):
        squeeze(np.zeros((1, 1, 3, 4)))
    with pytest.raises(ValueError, match="multiple of 4"):
        unsqueeze(np.zeros((1, 6, 2, 2)))


def test_actnorm_gradients_and_inverse():
    m = _perturb(ActNorm(3, dtype=np.float64), 0)
    x = _x((4, 3, 5, 2))
    _check_all(Packed(m), x)
    np.testing.assert_allclose(m.inverse(m(x)), x, atol=1e-12)
    _, ld, _ = m.forward_ld(x)
    np.testing.assert_allclose(ld, 10 * m.params["log_scale"].sum())


def test_actnorm_initialize_normalises():
    x = 3 + 2 * _x((16, 2, 4, 4))
    z = ActNorm(2, dtype=np.float64).initialize(x)(x)
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-5)


@pytest.mark.parametrize("C,swap,act", [(2, False, "relu"), (3, False, "tanh"), (3, True, "relu"),
                                        (4, True, "gelu")])
def test_coupling_gradients_and_inverse(C, swap, act):
    m = _perturb(AffineCoupling(C, 4, swap=swap, activation=act, rng=0, dtype=np.float64), 1)
    x = _x((3, C, 4, 5))
    _check_all(Packed(m), x)
    np.testing.assert_allclose(m.inverse(m(x)), x, atol=1e-12)
    z = m(x)
    kept = slice(C - C // 2, None) if swap else slice(0, C // 2)
    np.testing.assert_array_equal(z[:, kept], x[:, kept])         # the conditioning half passes


@pytest.mark.parametrize("corner", ["top-left", "bottom-right", "top-right", "bottom-left"])
@pytest.mark.parametrize("learn_diag", [False, True])
def test_flow_step_gradients_and_inverse(corner, learn_diag):
    m = _perturb(FlowStep(4, 4, corner=corner, learn_diag=learn_diag, swap=True, rng=2,
                          dtype=np.float64), 3)
    x = _x((2, 4, 4, 3))
    _check_all(Packed(m), x)
    np.testing.assert_allclose(m.inverse(m(x)), x, atol=1e-10)


def _dense_logdet(fn, x):
    """log|det| of the Jacobian of fn at a single sample x (1, ...), by central differences."""
    D = x.size
    J = np.empty((D, D))
    h = 1e-6
    for i in range(D):
        e = np.zeros(D)
        e[i] = h
        J[:, i] = (fn(x + e.reshape(x.shape)) - fn(x - e.reshape(x.shape))).ravel() / (2 * h)
    return np.linalg.slogdet(J)[1]


@pytest.mark.parametrize("learn_diag", [False, True])
def test_flow_step_logdet_is_slogdet_of_jacobian(learn_diag):
    m = _perturb(FlowStep(4, 3, learn_diag=learn_diag, rng=4, dtype=np.float64), 5)
    x = _x((1, 4, 3, 3), 6)
    _, ld, _ = m.forward_ld(x)
    np.testing.assert_allclose(ld[0], _dense_logdet(m, x), atol=1e-6)


def _flow(learn_diag=False, seed=0, levels=2, steps=2, shape=(1, 8, 8)):
    """A float64 flow with smooth coupling networks (ReLU kinks are checked per coupling above)."""
    f = InverseFlow(shape, levels=levels, steps=steps, hidden=4, n_bins=17, rng=seed,
                    learn_diag=learn_diag, activation="tanh", dtype=np.float64)
    return _perturb(f, seed + 10, scale=0.1)


def _images(n=3, seed=1, shape=(1, 8, 8)):
    levels = np.random.default_rng(seed).integers(0, 17, (n,) + shape)
    return dequantize(levels, 17, rng=seed, dtype=np.float64)


@pytest.mark.parametrize("learn_diag", [False, True])
def test_whole_flow_gradients(learn_diag):
    f = _flow(learn_diag)
    x = _images()
    f.initialize(x)
    _check_all(f, x)
    # need_dx=False gives the same parameter gradients
    bpd, cache = f.forward(x)
    dy = np.random.default_rng(0).standard_normal(bpd.shape)
    _, g1 = f.backward(cache, dy)
    dx, g2 = f.backward(cache, dy, need_dx=False)
    assert dx is None and list(g1) == list(f.params)
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])


def test_flow_bits_per_dim_is_the_change_of_variables_density():
    """bpd from the flow equals -log N(z) - log|det J| (J by differences of encode) + D log B."""
    f = _flow(levels=1, steps=2, shape=(1, 4, 4), seed=3)
    x = _images(1, 2, (1, 4, 4))

    def enc(v):
        return np.concatenate([z.ravel() for z in f.encode(v)[0]])

    z = enc(x)
    logp = -0.5 * (z @ z) - 0.5 * z.size * np.log(2 * np.pi) + _dense_logdet(enc, x)
    expected = (-logp + 16 * np.log(17)) / (16 * np.log(2))
    np.testing.assert_allclose(f(x)[0], expected, rtol=1e-7)


@settings(max_examples=10, deadline=None)
@given(seeds())
def test_encode_decode_round_trip(seed):
    f = _flow(seed=seed % 1000, learn_diag=bool(seed % 2))
    x = _images(2, seed)
    latents, _ = f.encode(x)
    assert [z.shape[1:] for z in latents] == f.latent_shapes
    np.testing.assert_allclose(f.decode(latents), x, atol=1e-9)


def test_sample_shapes_range_and_seed():
    f = _flow()
    s = f.sample(5, rng=7)
    assert s.shape == (5, 1, 8, 8) and s.min() >= 0 and s.max() <= 1
    np.testing.assert_array_equal(s, f.sample(5, rng=7))
    assert not np.array_equal(s, f.sample(5, rng=8))
    # temperature 0 decodes the all-zero latents
    np.testing.assert_allclose(f.sample(2, rng=0, temperature=0.0),
                               f.decode([np.zeros((2,) + s) for s in f.latent_shapes]))


def test_flow_learns_digits():
    """A few epochs on the embedded digits: test bits/dim falls well below the uniform log2(17)."""
    Xtr, _, Xte, _ = load_digits(flatten=False)
    Ltr, Lte = np.rint(Xtr * 16).astype(int)[:512], np.rint(Xte * 16).astype(int)[:200]
    rng = np.random.default_rng(0)
    f = InverseFlow((1, 8, 8), levels=2, steps=2, hidden=16, n_bins=17, rng=0)
    f.initialize(dequantize(Ltr[:256], 17, rng=rng))
    test = dequantize(Lte, 17, rng=1)
    before = float(f(test).mean())
    opt = Adam(f.params, lr=2e-3)
    for _ in range(4):
        for i in range(0, 512, 64):
            _, cache = f.forward(dequantize(Ltr[i:i + 64], 17, rng=rng))
            opt.step(f.backward(cache, np.full(64, 1 / 64, np.float32), need_dx=False)[1])
    after = float(f(test).mean())
    assert after < np.log2(17) - 0.8 and after < before - 0.6, (before, after)


def test_errors():
    f = _flow()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        f(np.full((1, 1, 8, 8), 1.5))
    with pytest.raises(ValueError, match="shape"):
        f(np.full((1, 1, 8, 4), 0.5))
    with pytest.raises(ValueError, match="divisible"):
        InverseFlow((1, 6, 8), levels=2)
    with pytest.raises(ValueError, match="alpha"):
        InverseFlow((1, 8, 8), alpha=0.5)
    with pytest.raises(ValueError, match="integer levels"):
        dequantize(np.array([0, 17]), 17)
    with pytest.raises(ValueError, match="integer levels"):
        dequantize(np.array([0.5]), 17)
    with pytest.raises(ValueError, match="channels must be at least 2"):
        AffineCoupling(1)
    with pytest.raises(ValueError, match="latents"):
        f.decode([np.zeros((1, 2, 4, 4))])
    with pytest.raises(ValueError, match=r"latents\[1\]"):
        f.decode([np.zeros((1, 2, 4, 4)), np.zeros((1, 8, 3, 2))])
    with pytest.raises(ValueError, match="dy"):
        f.backward(f.forward(_images())[1], np.zeros(2))
    with pytest.raises(ValueError, match="unknown key"):
        f.forward(_images(), params={"nope": np.zeros(1)})
    x = _images()
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="x"):
        f(x)


def test_example_runs_and_ends_with_one_json_line(tmp_path):
    import json
    import os
    import subprocess
    import sys
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg")
    png = tmp_path / "s.png"
    out = subprocess.run([sys.executable, os.path.join(root, "examples", "inverse_flow.py"),
                          "--epochs", "2", "--steps", "1", "--hidden", "8", "--png", str(png),
                          "--json"], env=env, capture_output=True, text=True, timeout=300,
                         check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["test_bits_per_dim"] < res["uniform_bits_per_dim"]
    assert res["sample_us_per_image"] > 0 and res["density_us_per_image"] > 0
    assert (res["png"] is None) or png.stat().st_size > 1000
