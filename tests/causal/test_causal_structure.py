"""St(C) as a symmetric monoidal category: causality, category laws, symmetry, Cartesian
structure, delay, the conversion to a delayed trace, and the module contract of Stateful."""
import numpy as np
import pytest
from hypothesis import given

from nograd.causal import (Stateful, as_delayed_trace, behaviour_gap, copy, delay, delayed_trace,
                           discard, equivalent, identity, pure, select, swap)
from nograd.core import Sequential
from nograd.layers import Linear, Tanh
from st_gen import SETTINGS, machine, seeds, seqs


@SETTINGS
@given(seed=seeds())
def test_causality_output_t_ignores_later_inputs(seed):
    f = machine(seed)
    xs = seqs(seed, f.n_in, steps=6)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 6))
    xs2 = xs.copy()
    xs2[:, n:] = rng.standard_normal(xs2[:, n:].shape)
    ys, ys2 = f.run(xs), f.run(xs2)
    np.testing.assert_array_equal(ys[:, :n], ys2[:, :n])


def test_causality_is_not_vacuous():
    f = machine(3, 1, 1)
    xs = seqs(0, 1)
    xs2 = xs.copy()
    xs2[:, 2] += 1.0
    assert behaviour_gap(f, f, xs) == 0.0
    assert np.abs(f.run(xs2)[:, 2:] - f.run(xs)[:, 2:]).max() > 1e-3


@SETTINGS
@given(s1=seeds(), s2=seeds(), s3=seeds())
def test_associativity_and_units(s1, s2, s3):
    f = machine(s1)
    g = machine(s2, n_in=f.n_out)
    h = machine(s3, n_in=g.n_out)
    assert equivalent((f >> g) >> h, f >> (g >> h))
    assert equivalent(identity(f.n_in) >> f, f)
    assert equivalent(f >> identity(f.n_out), f)


@SETTINGS
@given(s1=seeds(), s2=seeds(), s3=seeds(), s4=seeds())
def test_interchange_of_composition_and_product(s1, s2, s3, s4):
    f, g = machine(s1), machine(s2)
    h, k = machine(s3, n_in=f.n_out), machine(s4, n_in=g.n_out)
    assert equivalent((f @ g) >> (h @ k), (f >> h) @ (g >> k))


@SETTINGS
@given(s1=seeds(), s2=seeds(), s3=seeds())
def test_product_is_associative_and_unital(s1, s2, s3):
    f, g, h = machine(s1), machine(s2), machine(s3)
    assert equivalent((f @ g) @ h, f @ (g @ h))
    assert equivalent(identity(0) @ f, f) and equivalent(f @ identity(0), f)
    assert equivalent(identity(2) @ identity(3), identity(5))


@SETTINGS
@given(s1=seeds(), s2=seeds())
def test_symmetry_is_involutive_natural_and_hexagonal(s1, s2):
    f, g = machine(s1), machine(s2)
    assert equivalent(swap(2, 3) >> swap(3, 2), identity(5))
    assert equivalent((f @ g) >> swap(f.n_out, g.n_out), swap(f.n_in, g.n_in) >> (g @ f))
    a, b, c = 1, 2, 2
    assert equivalent(swap(a, b + c), (swap(a, b) @ identity(c)) >> (identity(b) @ swap(a, c)))


def test_swap_moves_columns():
    xs = np.arange(12.0).reshape(1, 4, 3)
    np.testing.assert_array_equal(swap(1, 2).run(xs), xs[..., [1, 2, 0]])


@SETTINGS
@given(seed=seeds())
def test_cartesian_structure_copy_and_discard_are_natural(seed):
    f = machine(seed)
    assert equivalent(f >> copy(f.n_out), copy(f.n_in) >> (f @ f))
    assert equivalent(f >> discard(f.n_out), discard(f.n_in))
    assert equivalent(copy(2) >> (identity(2) @ discard(2)), identity(2))


def test_delay_shifts_and_is_monoidal():
    xs = np.arange(8.0).reshape(1, 4, 2)
    ys = delay([7.0, 9.0]).run(xs)
    np.testing.assert_array_equal(ys[0, 0], [7.0, 9.0])
    np.testing.assert_array_equal(ys[0, 1:], xs[0, :-1])
    assert equivalent(delay([1.0]) @ delay([2.0]), delay([1.0, 2.0]))
    assert not equivalent(delay([1.0]) @ delay([2.0]), delay([2.0, 1.0]))


def test_delay_slides_through_pure_maps_with_its_initial_value():
    net = Sequential(Linear(1, 1, rng=0, dtype=np.float64), Tanh())
    g = pure(net, 1, 1)
    x0 = np.array([0.7])
    gx0 = g.run(x0[None, None])[0, 0]
    assert equivalent(delay(x0) >> g, g >> delay(gx0))
    assert not equivalent(delay(x0) >> g, g >> delay(x0))


@SETTINGS
@given(s1=seeds(), s2=seeds())
def test_every_morphism_is_a_delayed_trace_of_a_stateless_one(s1, s2):
    f = machine(s1)
    g = machine(s2, n_in=f.n_out)
    for m in (f, f >> g, f @ g, delayed_trace(f @ g, np.ones(min(f.n_in + g.n_in,
                                                                 f.n_out + g.n_out) - 1))):
        k, x0 = as_delayed_trace(m)
        assert k.n_state == 0 and x0.shape == (m.n_state,)
        assert equivalent(delayed_trace(k, x0), m)


def test_run_in_pieces_and_unroll_agree_with_run():
    f = machine(5)
    xs = seqs(1, f.n_in, steps=7)
    ys = f.run(xs)
    a, s = f.run(xs[:, :3], return_state=True)
    b = f.run(xs[:, 3:], state=s)
    np.testing.assert_allclose(np.concatenate([a, b], 1), ys, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(f.unroll(7)(xs), ys, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(f.forward(xs)[0], ys, rtol=1e-13, atol=1e-13)


def test_step_as_plain_functions_with_maps():
    # s' = s + x, y = s * x  (a running sum and a product with it)
    def f(z):
        return np.stack([z[:, 0] + z[:, 1], z[:, 0] * z[:, 1]], 1)

    m = Stateful([0.0], f, 1, 1, jvp=lambda z, dz: np.stack(
        [dz[:, 0] + dz[:, 1], dz[:, 0] * z[:, 1] + z[:, 0] * dz[:, 1]], 1))
    ys = m.run(np.array([[[1.0], [2.0], [3.0]]]))
    np.testing.assert_array_equal(ys[0, :, 0], [0.0, 2.0, 9.0])
    _, dys = m.jvp(np.array([[[1.0], [2.0]]]), np.array([[[1.0], [0.0]]]))
    np.testing.assert_array_equal(dys[0, :, 0], [0.0, 2.0])  # y1 = x0 x1 → dy1 = dx0 x1
    with pytest.raises(TypeError, match="vjp="):
        m.backward(m.forward(np.ones((1, 2, 1)))[1], np.ones((1, 2, 1)))


def test_dtype_is_kept_and_gradients_match_params():
    f = machine(8, 2, 1)
    f.astype(np.float32)
    xs = seqs(0, 2).astype(np.float32)
    ys, cache = f.forward(xs)
    assert ys.dtype == np.float32 and f.run(xs).dtype == np.float32
    dxs, grads = f.backward(cache, np.ones_like(ys))
    assert dxs.dtype == np.float32 and set(grads) == set(f.params)
    assert all(grads[k].shape == v.shape and grads[k].dtype == np.float32
               for k, v in f.params.items())
    _, dys = f.jvp(xs, np.ones_like(xs))
    assert dys.dtype == np.float32


def test_bad_input_fails_early_with_clear_errors():
    f = machine(2, 2, 1)
    with pytest.raises(ValueError, match=r"xs must be \(batch, time, 2\)"):
        f.run(np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match="xs must be 3-D"):
        f.run(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        f.run(np.full((1, 2, 2), np.nan))
    with pytest.raises(ValueError, match="cannot compose"):
        f >> f
    with pytest.raises(TypeError, match="Stateful"):
        f >> Linear(1, 1)
    with pytest.raises(ValueError, match="cannot feed back 2 wires"):
        delayed_trace(f, [0.0, 0.0])
    with pytest.raises(ValueError, match="init must be a 1-D"):
        Stateful(np.zeros((2, 2)), Linear(3, 3), 1, 1)
    bad = Stateful([0.0], Linear(2, 3, dtype=np.float64), 1, 1)      # returns S + 2 columns
    with pytest.raises(ValueError, match="step map must return"):
        bad.run(np.zeros((1, 2, 1)))
    with pytest.raises(ValueError, match="gather indices"):
        select(2, [0, 2])
