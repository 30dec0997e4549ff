"""FusedSequential's Linear → ReLU runs: bias and ReLU in one in-place pass over the product, the
masked cotangent in one pass — the unfused chain's numbers bit for bit (outputs, gradients, input
cotangents; both dtypes, leading axes, no bias, overridden parameters, need_dx), each child's cache
still serving its own backward, the unfused ReLU's refusal of NaN and inf, and the kernels against
their NumPy references."""
from unittest import mock

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
from nograd.layers import fused as fused_module

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
    fused, plain = FusedSequential(*kids, feature_major=False), Sequential(*kids)
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


def _feature_major(a):
    return a.ndim == 2 and a.flags.f_contiguous and not a.flags.c_contiguous


def _close(a, b, rtol):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(float(np.max(np.abs(b))), 1.0) if b.size else 1.0
    return a.shape == b.shape and a.dtype == b.dtype and np.allclose(a, b, rtol=rtol, atol=rtol * scale)


def _fm_chain(widths, bias, dtype, rng):
    kids = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        lin = Linear(a, b, bias=bias[i], rng=rng, dtype=dtype)
        if bias[i]:
            lin.params["bias"][...] = rng.standard_normal(b)
        kids += [lin, ReLU()]
    return kids[:-1]


def _narrow_feature_major():
    """The feature-major runs switched on from 16 features (256 by default), so that small
    layers exercise them."""
    return mock.patch.object(fused_module, "FEATURE_MAJOR_MIN_FEATURES", 16)


def _check_feature_major_run(kids, x, rng, rtol):
    fused, plain = FusedSequential(*kids), Sequential(*kids)
    with _narrow_feature_major():
        y, caches = fused.forward(x, train=True)
    y0, caches0 = plain.forward(x, train=True)
    hidden = [caches[i][0] for i in range(1, len(kids), 2)]       # the runs' outputs (ReLU caches)
    assert all(_feature_major(h) for h in hidden) and y.flags.c_contiguous
    with _narrow_feature_major():
        assert _close(y, y0, rtol) and _close(fused(x), y0, rtol)
    dy = rng.standard_normal(y.shape).astype(x.dtype)
    dx, gr = fused.backward(caches, dy)
    dx0, gr0 = plain.backward(caches0, dy)
    assert dx.flags.c_contiguous and _close(dx, dx0, rtol)
    assert list(gr) == list(gr0) and all(_close(gr[k], gr0[k], rtol) for k in gr)
    dxw, grw = plain.backward(caches, dy)                         # child by child on the fused caches
    assert _close(dxw, dx0, rtol) and all(_close(grw[k], gr0[k], rtol) for k in gr)
    return hidden


@SETTINGS
@given(n=st.integers(2, 256), sizes=st.lists(st.integers(16, 300), min_size=2, max_size=3),
       first=st.integers(1, 300), last=st.integers(1, 50), bias=st.lists(st.booleans(), min_size=4, max_size=4),
       seed=st.integers(0, 2**31))
def test_feature_major_runs_equal_the_plain_chain_to_rounding(n, sizes, first, last, bias, seed):
    """Runs feeding another Linear carry their output as the transposed view of a C-ordered
    (features, batch) array: the plain chain's numbers to float64 rounding (a product's sums may
    run in another order; a ReLU flip at z = 0 has probability ~0 in float64)."""
    rng = np.random.default_rng(seed)
    kids = _fm_chain([first] + sizes + [last], bias, np.float64, rng)
    _check_feature_major_run(kids, rng.standard_normal((n, first)), rng, 1e-11)


@pytest.mark.parametrize("n, widths", [(128, [784, 256, 256, 10]), (8, [20, 64, 3]), (37, [5, 16, 16, 16, 2])])
def test_feature_major_runs_in_float32(n, widths):
    """The float32 chain at fixed seeds, to float32 rounding (the bench MLP's kind of shape)."""
    rng = np.random.default_rng(n)
    kids = _fm_chain(widths, [True] * len(widths), np.float32, rng)
    _check_feature_major_run(kids, rng.standard_normal((n, widths[0])).astype(np.float32), rng, 1e-4)


def test_feature_major_is_chosen_where_it_pays():
    """Not for a 1-sample batch or one over FEATURE_MAJOR_MAX_BATCH, a narrow run, leading axes,
    a run not followed by a Linear, or with ``feature_major=False``; and the option is checked."""
    from nograd.layers.fused import FEATURE_MAJOR_MAX_BATCH as B
    from nograd.layers.fused import FEATURE_MAJOR_MIN_FEATURES as M
    r = np.random.default_rng(0)

    def hidden_layout(n, widths, tail=(), lead=(), **kw):
        kids = []
        for a, b in zip(widths[:-1], widths[1:]):
            kids += [Linear(a, b, rng=r), ReLU()]
        net = FusedSequential(*kids[:-1], *tail, **kw)
        x = r.standard_normal(lead + (n, widths[0])).astype(np.float32)
        return _feature_major(net.forward(x)[1][1][0])
    assert hidden_layout(4, [3, M, 2]) and hidden_layout(B, [3, M, 2])
    assert not hidden_layout(1, [3, M, 2])
    assert not hidden_layout(B + 1, [3, M, 2])
    assert not hidden_layout(4, [3, M - 1, 2])
    assert not hidden_layout(4, [3, M, 2], lead=(2,))
    assert not hidden_layout(4, [3, M], (ReLU(), Tanh()))
    assert not hidden_layout(4, [3, M, 2], feature_major=False)
    assert FusedSequential(Linear(3, 16), ReLU(), Linear(16, 2), feature_major=False)[:2].feature_major is False
    with pytest.raises(TypeError, match="feature_major"):
        FusedSequential(Linear(3, 4), feature_major="yes")


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
    # the feature-major pass: the same numbers on zᵀ, b_j along row j
    zt = z.T.copy()
    zt[-1, -1] = 1.0
    z1, z2 = zt.copy(), zt.copy()
    assert K.bias_relu_rows(z1, b, has_bias) == R.bias_relu_rows(z2, b, has_bias) is True
    assert same_bits(z1, z2)
    z1[-1, -1] = np.inf
    assert not K.bias_relu_rows(z1.copy(), b, has_bias) and not R.bias_relu_rows(z1.copy(), b, has_bias)


def test_every_rule_gets_the_same_gradients_on_the_fused_chain():
    """Rules walk the chain child by child, read the activations' caches (``df(x, y)``), perturb
    parameters or run forward only: on a fused MLP each gives the plain chain's gradients bit for
    bit (``feature_major=False``) or to float32 rounding (feature-major runs, the default), or
    refuses all three the same way (the recurrent rules)."""
    from nograd.rules.base import _REGISTRY, get_rule

    def mlp(cls, **kw):
        r = np.random.default_rng(0)
        return cls(Linear(6, 16, rng=r), ReLU(), Linear(16, 16, rng=r), ReLU(), Linear(16, 3, rng=r), **kw)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((10, 6)).astype(np.float32), rng.integers(0, 3, 10)
    narrow = _narrow_feature_major()
    narrow.start()
    caches = mlp(FusedSequential).forward(x, train=True)[1]
    assert all(_feature_major(h) for h in (caches[1][0], caches[2], caches[3][0], caches[4]))
    compared = 0
    for name in sorted(_REGISTRY):
        out = []
        for net in (lambda: mlp(FusedSequential, feature_major=False), lambda: mlp(FusedSequential),
                    lambda: mlp(Sequential)):
            try:
                out.append(get_rule(name).grads(net(), x, y, rng=np.random.default_rng(5))[0])
            except ValueError as e:
                out.append(type(e))
        if isinstance(out[2], dict):
            assert same_grads(out[0], out[2]), name
            assert list(out[1]) == list(out[2]) and all(_close(out[1][k], out[2][k], 1e-4) for k in out[2]), name
            compared += 1
        else:
            assert out[0] is out[1] is out[2], name
    narrow.stop()
    assert compared >= 15
