"""FusedSequential's Linear → ReLU runs: bias and ReLU in one in-place pass over the product, the
masked cotangent in one pass — the unfused chain's numbers bit for bit (outputs, gradients, input
cotangents; both dtypes, leading axes, no bias, overridden parameters, need_dx), each child's cache
still serving its own backward, the unfused ReLU's refusal of NaN and inf, and the kernels against
their NumPy references."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fused import same_bits, same_grads

from nograd.core import Sequential
from nograd.core.checks import NonFiniteError
from nograd.kernels import fused as K
from nograd.kernels import fused_ref as R
from nograd.layers import FusedSequential, LeakyReLU, Linear, ReLU, Tanh

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


@st.composite
def mlp(draw):
    return dict(lead=draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)),
                sizes=draw(st.lists(st.integers(1, 40), min_size=3, max_size=4)),
                bias=draw(st.lists(st.booleans(), min_size=3, max_size=3)),
                dtype=draw(st.sampled_from([np.float32, np.float64])), seed=draw(st.integers(0, 2**31)))


def chain(g, rng):
    dt, sz = g["dtype"], g["sizes"]
    kids = []
    for i, (a, b) in enumerate(zip(sz[:-1], sz[1:])):
        lin = Linear(a, b, bias=g["bias"][i], rng=rng, dtype=dt)
        if g["bias"][i]:
            lin.params["bias"][...] = rng.standard_normal(b)      # non-zero: the add is exercised
        kids += [lin, ReLU()]
    return kids[:-1]                                              # the last Linear stays alone


@SETTINGS
@given(g=mlp())
def test_linear_relu_runs_are_bit_identical_to_the_plain_chain(g):
    rng = np.random.default_rng(g["seed"])
    kids = chain(g, rng)
    fused, plain = FusedSequential(*kids), Sequential(*kids)
    n = len(g["sizes"]) - 1
    assert fused.groups() == [(2 * i, 2 * i + 2) for i in range(n - 1)] + [(2 * n - 2, 2 * n - 1)]
    x = rng.standard_normal(tuple(g["lead"]) + (g["sizes"][0],)).astype(g["dtype"])
    for train in (True, False):
        y, caches = fused.forward(x, train=train)
        y0, caches0 = plain.forward(x, train=train)
        assert same_bits(y, y0) and same_bits(fused(x), y0)
    dy = rng.standard_normal(y.shape).astype(g["dtype"])
    dx, gr = fused.backward(caches, dy)
    dx0, gr0 = plain.backward(caches0, dy)
    assert same_bits(dx, dx0) and same_grads(gr, gr0)
    dxw, grw = plain.backward(caches, dy)              # child by child on the fused caches
    assert same_bits(dxw, dx0) and same_grads(grw, gr0)
    assert fused.backward(caches, dy, need_dx=False)[0] is None
    over = {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in fused.params.items()}
    y1, c1 = fused.forward(x, params=over)
    y2, c2 = plain.forward(x, params=over)
    assert same_bits(y1, y2)
    assert same_grads(fused.backward(c1, dy, params=over)[1], plain.backward(c2, dy, params=over)[1])


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_the_run_refuses_nan_and_inf_as_the_unfused_relu_does():
    lin = Linear(3, 4, rng=0)
    fused, plain = FusedSequential(lin, ReLU()), Sequential(lin, ReLU())
    x = np.ones((2, 3), np.float32)
    for bad in (np.nan, np.inf):
        xb = x.copy()
        xb[1, 2] = bad
        for net in (fused, plain):                               # the Linear's own check
            with pytest.raises(NonFiniteError, match="x contains NaN or inf"):
                net.forward(xb)
    lin.params["weight"][0, 0] = 3e38                            # finite input, z + b overflows
    big = np.full((2, 3), 10.0, np.float32)
    for net in (fused, plain):
        with pytest.raises(NonFiniteError, match="x contains NaN or inf"):
            net.forward(big)
    lin.params["weight"][0, 0] = -3e38                           # -inf: ReLU would hide it as 0
    with pytest.raises(NonFiniteError):
        fused.forward(big)


def test_mixed_dtypes_and_other_activations_run_unfused():
    rng = np.random.default_rng(0)
    lin = Linear(3, 4, rng=rng)                                  # float32 weights
    fused, plain = FusedSequential(lin, ReLU()), Sequential(lin, ReLU())
    x = rng.standard_normal((5, 3))                              # float64 input
    y, c = fused.forward(x)
    y0, c0 = plain.forward(x)
    assert same_bits(y, y0)
    dy = rng.standard_normal(y.shape)
    assert same_grads(fused.backward(c, dy)[1], plain.backward(c0, dy)[1])
    x32 = x.astype(np.float32)
    y, c = fused.forward(x32)                                    # fused, then a float64 cotangent
    y0, c0 = plain.forward(x32)
    a, b = fused.backward(c, dy), plain.backward(c0, dy)
    assert same_bits(a[0], b[0]) and same_grads(a[1], b[1])
    assert FusedSequential(lin, LeakyReLU()).groups() == [(0, 1), (1, 2)]
    assert FusedSequential(lin, Tanh()).groups() == [(0, 1), (1, 2)]

    class Sub(Linear):                  # may override a map: not fused
        pass
    assert FusedSequential(Sub(3, 4), ReLU()).groups() == [(0, 1), (1, 2)]
    with pytest.raises(ValueError, match="dy"):
        fused.backward(fused.forward(x32)[1], np.zeros((5, 3), np.float32))


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@SETTINGS
@given(n=st.integers(1, 9), m=st.integers(1, 40), dt=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**31), has_bias=st.booleans())
def test_kernels_equal_their_references(n, m, dt, seed, has_bias):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, m)).astype(dt)
    z[0, 0] = -0.0
    b = rng.standard_normal(m).astype(dt)
    z1, z2 = z.copy(), z.copy()
    assert K.bias_relu(z1, b, has_bias) == R.bias_relu(z2, b, has_bias) is True
    assert same_bits(z1, z2)
    dy = rng.standard_normal((n, m)).astype(dt)
    dy[0, -1] = np.inf
    assert same_bits(K.relu_mask(dy, z1, np.empty_like(dy)), R.relu_mask(dy, z1, np.empty_like(dy)))
    z[-1, -1] = np.nan
    assert not K.bias_relu(z.copy(), b, has_bias) and not R.bias_relu(z.copy(), b, has_bias)


def test_every_rule_gets_the_same_gradients_on_the_fused_chain():
    """Rules walk the chain child by child, read the activations' caches (``df(x, y)``), perturb
    parameters or run forward only: on a fused MLP each gives the plain chain's gradients bit for
    bit, or refuses both the same way (the recurrent rules)."""
    from nograd.rules.base import _REGISTRY, get_rule

    def mlp(cls):
        r = np.random.default_rng(0)
        return cls(Linear(6, 8, rng=r), ReLU(), Linear(8, 8, rng=r), ReLU(), Linear(8, 3, rng=r))
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((10, 6)).astype(np.float32), rng.integers(0, 3, 10)
    compared = 0
    for name in sorted(_REGISTRY):
        out = []
        for cls in (FusedSequential, Sequential):
            try:
                out.append(get_rule(name).grads(mlp(cls), x, y, rng=np.random.default_rng(5))[0])
            except ValueError as e:
                out.append(type(e))
        if isinstance(out[0], dict):
            assert same_grads(out[0], out[1]), name
            compared += 1
        else:
            assert out[0] is out[1], name
    assert compared >= 15
