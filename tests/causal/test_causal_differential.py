"""The differential operator D of St(C): forward mode through time, against unrolling, the
Cartesian differential axioms, finite differences and BPTT."""
import numpy as np
import pytest
from hypothesis import given

from nograd.causal import (D, Add, Hadamard, Tangent, Wiring, copy, delay, delayed_trace,
                           equivalent, identity, jet2, select)
from nograd.core import Residual, Sequential
from nograd.layers import (GELU, Activation, Identity, LeakyReLU, Linear, Sigmoid, Softplus,
                           Softsign, Tanh)
from nograd.testing import check_adjoint, check_jvp, check_vjp
from st_gen import SETTINGS, cell, machine, seeds, seqs


def tangents(f, seed):
    rng = np.random.default_rng(seed + 13)
    return {k: rng.standard_normal(v.shape) for k, v in f.params.items()}


def pi0(n):
    return select(2 * n, np.arange(n))


def pi1(n):
    return select(2 * n, np.arange(n, 2 * n))


def pair(a, b):
    """⟨a, b⟩ = copy >> (a ⊗ b)."""
    return copy(a.n_in) >> (a @ b)


@SETTINGS
@given(seed=seeds())
def test_D_commutes_with_unrolling(seed):
    f = machine(seed)
    xs, dxs = seqs(seed, f.n_in), seqs(seed + 1, f.n_in)
    dp = tangents(f, seed)
    n = xs.shape[1]
    ys, dys = f.unroll(n).jvp(xs, dxs, dp)
    out = D(f, dp).unroll(n)(np.concatenate([xs, dxs], 2))
    np.testing.assert_allclose(out[..., :f.n_out], ys, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out[..., f.n_out:], dys, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(s1=seeds(), s2=seeds())
def test_chain_rule_in_cartesian_differential_form(s1, s2):
    # [CD.5]  D(f >> g) ; π1  =  ⟨π0 ; f, D(f) ; π1⟩ ; D(g) ; π1   (f's state appears twice on the
    # right: the equality is up to hiding the state)
    f = machine(s1)
    g = machine(s2, n_in=f.n_out)
    lhs = D(f >> g) >> pi1(g.n_out)
    rhs = pair(pi0(f.n_in) >> f, D(f) >> pi1(f.n_out)) >> D(g) >> pi1(g.n_out)
    assert equivalent(lhs, rhs)
    assert equivalent(D(f >> g), D(f) >> D(g))      # the tangent-bundle form


@SETTINGS
@given(seed=seeds())
def test_tangent_is_linear(seed):
    # [CD.2]  D(f)(x, a u + b v) = a D(f)(x, u) + b D(f)(x, v),  D(f)(x, 0) = 0
    f = machine(seed)
    xs, u, v = seqs(seed, f.n_in), seqs(seed + 1, f.n_in), seqs(seed + 2, f.n_in)
    a, b = 0.7, -1.9
    _, du = f.jvp(xs, u)
    _, dv = f.jvp(xs, v)
    _, dw = f.jvp(xs, a * u + b * v)
    np.testing.assert_allclose(dw, a * du + b * dv, rtol=1e-10, atol=1e-12)
    _, d0 = f.jvp(xs, np.zeros_like(xs))
    np.testing.assert_array_equal(d0, 0.0)


def _dd(f, x, u, v, w):
    out = D(D(f)).run(np.concatenate([x, u, v, w], 2))
    return out[..., 3 * f.n_out:]


@SETTINGS
@given(seed=seeds())
def test_second_derivative_is_symmetric_and_linear_part_is_D(seed):
    f = machine(seed)
    x, u, v, w = (seqs(seed + i, f.n_in) for i in range(4))
    zero = np.zeros_like(x)
    # [CD.7]  D(D f)((x, u), (v, 0)) = D(D f)((x, v), (u, 0))   (Schwarz)
    a, b = _dd(f, x, u, v, zero), _dd(f, x, v, u, zero)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    # [CD.6]  D(D f)((x, 0), (v, w)) = D(f)(x, w)
    np.testing.assert_allclose(_dd(f, x, zero, v, w), f.jvp(x, w)[1], rtol=1e-10, atol=1e-12)


def test_second_derivative_is_not_trivially_zero():
    f = machine(4, 1, 1)
    x, u = seqs(0, 1), seqs(1, 1)
    assert np.abs(_dd(f, x, u, u, np.zeros_like(x))).max() > 1e-3


@SETTINGS
@given(seed=seeds())
def test_D_agrees_with_finite_differences_and_with_BPTT(seed):
    f = machine(seed)
    xs = seqs(seed, f.n_in, batch=2, steps=4)
    assert check_jvp(f, xs, seed=seed % 1000) < 1e-6          # D vs differences (x and θ)
    assert check_adjoint(f, xs, seed=seed % 1000) <= 1e-9     # <BPTT(v), u> = <v, D(f) u>
    assert check_vjp(f, xs, seed=seed % 1000) < 1e-6          # BPTT vs differences


@SETTINGS
@given(seed=seeds())
def test_second_order_forward_mode_agrees_with_finite_differences(seed):
    f = machine(seed)
    z = np.concatenate([seqs(seed, f.n_in, steps=4), seqs(seed + 1, f.n_in, steps=4)], 2)
    assert check_jvp(D(f, tangents(f, seed)), z, seed=seed % 1000) < 1e-6


def test_checks_catch_a_wrong_tangent_state():
    # D with the tangent state started at the state instead of 0 must fail the checks
    from nograd.causal import Stateful

    f = cell(np.random.default_rng(11), 1, 1, 2)
    xs = seqs(0, 1)
    good = D(f)
    bad = Stateful(np.concatenate([f.init, f.init]), good.step, good.n_in, good.n_out)
    z = np.concatenate([xs, np.zeros_like(xs)], 2)
    assert np.abs(bad.run(z)[..., 1:]).max() > 1e-3 and np.abs(good.run(z)[..., 1:]).max() == 0


def test_D_of_the_structure():
    # a register's tangent is a register started at 0
    assert equivalent(D(delay([1.0, 2.0])), delay([1.0, 2.0, 0.0, 0.0]))
    f, g = machine(1, 1, 2), machine(2, 2, 1)
    # D(f ⊗ g) = D(f) ⊗ D(g), wires rearranged: [x1, x2, dx1, dx2] ↔ [x1, dx1, x2, dx2]
    a, b = f.n_in, g.n_in
    into = select(2 * (a + b), np.r_[0:a, a + b:2 * a + b, a:a + b, 2 * a + b:2 * (a + b)])
    c, d = f.n_out, g.n_out
    out = select(2 * (c + d), np.r_[0:c, 2 * c:2 * c + d, c:2 * c, 2 * c + d:2 * (c + d)])
    assert equivalent(D(f @ g), into >> (D(f) @ D(g)) >> out)


@SETTINGS
@given(seed=seeds())
def test_D_commutes_with_the_delayed_trace(seed):
    # D(dtr^{x0} f) = dtr^{(x0, 0)}(r ; D(f) ; r'), r moving the fed-back tangent next to its wire
    k, n, m = 1, 1, 2
    f = machine(seed, n_in=k + n, n_out=k + m)
    x0 = np.array([0.4])
    # r: [s, ds, x, dx] → [s, x, ds, dx];  r2: [s', y, ds', dy] → [s', ds', y, dy]
    r = select(2 * (k + n), np.r_[0:k, 2 * k:2 * k + n, k:2 * k, 2 * k + n:2 * (k + n)])
    r2 = select(2 * (k + m), np.r_[0:k, k + m:2 * k + m, k:k + m, 2 * k + m:2 * (k + m)])
    rhs = delayed_trace(r >> D(f) >> r2, np.r_[x0, 0.0])
    assert equivalent(D(delayed_trace(f, x0)), rhs)


PRIMITIVES = [
    ("linear", lambda r: Linear(3, 2, rng=r, dtype=np.float64), 3),
    ("tanh", lambda r: Tanh(), 3), ("sigmoid", lambda r: Sigmoid(), 3),
    ("softplus", lambda r: Softplus(beta=1.5), 3), ("softsign", lambda r: Softsign(), 3),
    ("gelu", lambda r: GELU(), 3), ("identity", lambda r: Identity(), 3),
    ("leaky_relu", lambda r: LeakyReLU(0.1), 3),
    ("hadamard", lambda r: Hadamard(2), 4), ("add", lambda r: Add(2), 4),
    ("sequential", lambda r: Sequential(Linear(3, 4, rng=r, dtype=np.float64), Tanh(),
                                        Linear(4, 2, rng=r, dtype=np.float64)), 3),
    ("residual", lambda r: Residual(Sequential(Linear(3, 3, rng=r, dtype=np.float64), Sigmoid()),
                                    Linear(3, 3, rng=r, dtype=np.float64)), 3),
    ("wiring", lambda r: Wiring(3).gather([2, 0, 0, 1]).apply(
        Linear(2, 2, rng=r, dtype=np.float64), 1, 2, 2).apply(Softplus(), 0, 2, 2), 3),
]


@pytest.mark.parametrize("name,make,width", PRIMITIVES, ids=[p[0] for p in PRIMITIVES])
def test_jet2_of_each_primitive_against_finite_differences(name, make, width):
    rng = np.random.default_rng(0)
    m = make(rng)
    z = rng.standard_normal((3, 2 * width))
    if name == "leaky_relu":
        z[:, :width] = np.sign(z[:, :width]) * (0.5 + np.abs(z[:, :width]))   # away from the kink
    dp = {k: rng.standard_normal(v.shape) for k, v in m.params.items()} or None
    assert check_jvp(Tangent(m, dp), z) < 1e-6
    y, ya, yb, yab = jet2(m, z[:, :width], z[:, width:], z[:, width:])
    assert y.shape == ya.shape == yb.shape == yab.shape


def test_missing_second_derivatives_and_reverse_tangents_fail_clearly():
    soft = Activation(np.sin, lambda x, y: np.cos(x))
    with pytest.raises(TypeError, match="second derivatives of Activation"):
        jet2(soft, np.ones((1, 2)), np.ones((1, 2)), np.ones((1, 2)))
    f = machine(3)
    d = D(f)
    z = np.ones((1, 2, d.n_in))
    with pytest.raises(TypeError, match="reverse mode through a tangent map"):
        d.backward(d.forward(z)[1], np.ones((1, 2, d.n_out)))
    with pytest.raises(ValueError, match="dparams has unknown keys"):
        D(f, {"nope": np.zeros(1)})
    assert equivalent(D(identity(2)), identity(4))
