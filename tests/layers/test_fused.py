"""FusedSequential and MaxPool2d(relu=True): the fused conv → ReLU → 2×2 max-pool runs give the
unfused chain's numbers bit for bit (outputs, gradients, input cotangents; both Conv2d algorithms,
both dtypes, odd sizes, overridden parameters), each child's cache still serves its own backward,
and the fusion only takes the runs it can compute exactly."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nograd.core import Sequential
from nograd.layers import (Conv2d, Flatten, FusedSequential, LeakyReLU, Linear, MaxPool2d, QuantizedConv2d,
                           ReLU)

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def same_grads(g, h):
    return list(g) == list(h) and all(same_bits(g[k], h[k]) for k in g)


def layers(geo, rng):
    dt, alg, bias = geo["dtype"], geo["algorithm"], geo["bias"]
    convs = [Conv2d(geo["C"], 5, 3, padding=geo["pad"], bias=bias, rng=rng, dtype=dt, algorithm=alg),
             Conv2d(5, 3, 3, padding=1, bias=bias, rng=rng, dtype=dt, algorithm=alg)]
    for c in convs:
        if bias:
            c.params["bias"][...] = rng.standard_normal(c.params["bias"].shape)
    return [convs[0], ReLU(), MaxPool2d(2), convs[1], ReLU(), MaxPool2d(2), Flatten()]


@st.composite
def geometry(draw):
    g = dict(N=draw(st.integers(1, 3)), C=draw(st.integers(1, 3)), pad=draw(st.integers(0, 1)),
             seed=draw(st.integers(0, 2**31)), dtype=draw(st.sampled_from([np.float32, np.float64])),
             algorithm=draw(st.sampled_from(["im2col", "winograd", "auto"])), bias=draw(st.booleans()))
    # two conv/pool stages: the map entering the second pooling must be at least 2×2
    g["H"] = draw(st.integers(8 - 2 * g["pad"], 13))
    g["W"] = draw(st.integers(8 - 2 * g["pad"], 13))
    return g


@SETTINGS
@given(geo=geometry())
def test_fused_chain_is_bit_identical_to_the_plain_chain(geo):
    rng = np.random.default_rng(geo["seed"])
    kids = layers(geo, rng)
    fused, plain = FusedSequential(*kids), Sequential(*kids)
    assert fused.groups() == [(0, 3), (3, 6), (6, 7)]
    x = rng.standard_normal((geo["N"], geo["C"], geo["H"], geo["W"])).astype(geo["dtype"])
    y, caches = fused.forward(x)
    y0, caches0 = plain.forward(x)
    assert same_bits(y, y0) and same_bits(fused(x), y0)
    dy = rng.standard_normal(y.shape).astype(geo["dtype"])
    dx, g = fused.backward(caches, dy)
    dx0, g0 = plain.backward(caches0, dy)
    assert same_bits(dx, dx0) and same_grads(g, g0)
    # each child's own backward on the fused caches (a rule walking the chain child by child)
    dxw, gw = plain.backward(caches, dy)
    assert same_bits(dxw, dx0) and same_grads(gw, g0)
    # need_dx=False, and parameters given for one call (a feedback matrix, a perturbation)
    assert fused.backward(caches, dy, need_dx=False)[0] is None
    over = {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in fused.params.items()
            if k.endswith("weight")}
    y1, c1 = fused.forward(x, params=over)
    y2, c2 = plain.forward(x, params=over)
    assert same_bits(y1, y2)
    assert same_grads(fused.backward(c1, dy, params=over)[1], plain.backward(c2, dy, params=over)[1])


def test_fused_jvp_and_structure_are_the_plain_chains():
    rng = np.random.default_rng(0)
    kids = layers(dict(C=2, pad=1, dtype=np.float64, algorithm="winograd", bias=True), rng)
    fused, plain = FusedSequential(*kids), Sequential(*kids)
    assert list(fused.params) == list(plain.params)
    assert [n for n, _ in fused.leaves()] == [n for n, _ in plain.leaves()]
    assert [n for n, _ in fused.chain()] == [n for n, _ in plain.chain()]
    assert type(fused[3:]) is FusedSequential and fused[3:].groups()[0] == (0, 3) and fused[0] is kids[0]
    x = rng.standard_normal((2, 2, 9, 8))
    dx = rng.standard_normal(x.shape)
    y, dy = fused.jvp(x, dx)
    y0, dy0 = plain.jvp(x, dx)
    assert same_bits(y, y0) and same_bits(dy, dy0)


def test_feedback_alignment_on_the_fused_chain():
    """FA sends dy down through a fixed random B (``params=`` in backward): same updates as on the
    plain chain."""
    from nograd.rules import FA

    rng = np.random.default_rng(3)
    kids = layers(dict(C=3, pad=1, dtype=np.float32, algorithm="auto", bias=True), rng)
    head = Linear(3 * 2 * 2, 4, rng=rng)
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 4)
    g_fused, _ = FA(seed=1).grads(FusedSequential(*kids, head), x, y, rng=np.random.default_rng(5))
    g_plain, _ = FA(seed=1).grads(Sequential(*kids, head), x, y, rng=np.random.default_rng(5))
    assert same_grads(g_fused, g_plain)


def test_vcas_walks_the_fused_caches_child_by_child():
    """VCAS runs model.forward, then each child's backward on its own cache: same gradients."""
    from nograd.rules import VCAS

    def net(cls):
        r = np.random.default_rng(1)
        return cls(Conv2d(3, 4, 3, padding=1, rng=r), ReLU(), MaxPool2d(2), Flatten(), Linear(64, 5, rng=r))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 3, 8, 8)).astype(np.float32), rng.integers(0, 5, 8)
    g_fused, _ = VCAS().grads(net(FusedSequential), x, y, rng=np.random.default_rng(3))
    g_plain, _ = VCAS().grads(net(Sequential), x, y, rng=np.random.default_rng(3))
    assert same_grads(g_fused, g_plain)


@pytest.mark.parametrize("third", [MaxPool2d(3), MaxPool2d(2, stride=1), MaxPool2d(2, relu=True), Flatten()])
def test_only_exact_runs_fuse(third):
    assert FusedSequential(Conv2d(2, 3, 3), ReLU(), third).groups() == [(0, 1), (1, 2), (2, 3)]
    assert FusedSequential(Conv2d(2, 3, 3), LeakyReLU(), MaxPool2d(2)).groups() == [(0, 1), (1, 2), (2, 3)]
    class Subclass(Conv2d):             # may override a map: not fused
        pass
    assert FusedSequential(Subclass(2, 3, 3), ReLU(), MaxPool2d(2)).groups()[0] == (0, 1)
    assert FusedSequential(QuantizedConv2d(2, 3, 3), ReLU(), MaxPool2d(2)).groups()[0] == (0, 1)
    assert FusedSequential(ReLU(), Conv2d(2, 3, 3), ReLU(), MaxPool2d(2)).groups() == [(0, 1), (1, 4)]


def test_fused_errors_name_the_argument():
    net = FusedSequential(Conv2d(2, 3, 3), ReLU(), MaxPool2d(2))
    with pytest.raises(ValueError, match="x must have 2 channels"):
        net.forward(np.zeros((1, 3, 6, 6), np.float32))
    with pytest.raises(ValueError, match="kernel .* is larger"):          # a 1×1 map for the pooling
        net.forward(np.zeros((1, 2, 3, 3), np.float32))
    y, cache = net.forward(np.ones((1, 2, 6, 6), np.float32))
    with pytest.raises(ValueError, match="dy"):
        net.backward(cache, np.zeros((1, 3, 3, 2), np.float32))


@pytest.mark.parametrize("pool", [(2, None, 0), (3, 2, 1), (2, 1, 0)])
def test_maxpool_relu_option_is_relu_then_pool(pool):
    k, s, p = pool
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 7, 6))
    x[0, 0, :2, :2] = -1.0                                  # a window with no positive entry
    fused, chain = MaxPool2d(k, s, p, relu=True), Sequential(ReLU(), MaxPool2d(k, s, p))
    y, c = fused.forward(x)
    y0, c0 = chain.forward(x)
    assert np.array_equal(y, y0)
    dy = rng.standard_normal(y.shape)
    assert np.array_equal(fused.backward(c, dy)[0], chain.backward(c0, dy)[0])
    t = rng.standard_normal(x.shape)
    assert np.array_equal(fused.jvp(x, t)[1], chain.jvp(x, t)[1])
    assert "relu=True" in repr(fused)
