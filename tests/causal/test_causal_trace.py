"""The delayed trace: the axioms that hold, and the two that fail (yanking, dinaturality).

Conventions: ``delayed_trace(f, x0)`` feeds back the first ``k = len(x0)`` wires,
``f: S ⊗ X → S ⊗ Y``; equalities are behavioural (up to hiding the state)."""
import numpy as np
from hypothesis import given

from nograd.causal import (behaviour_gap, delay, delayed_trace, equivalent, identity, pure, swap)
from nograd.core import Sequential
from nograd.layers import Linear, Tanh
from st_gen import SETTINGS, machine, seeds, seqs


def traced(seed, k, n_in=None, n_out=None):
    """A random f: k ⊗ X → k ⊗ Y and an initial register value."""
    f = machine(seed, n_in=k + (n_in or 1), n_out=k + (n_out or 1))
    return f, np.random.default_rng(seed + 7).standard_normal(k)


@SETTINGS
@given(s1=seeds(), s2=seeds())
def test_naturality_in_the_input(s1, s2):
    f, x0 = traced(s1, 1, n_in=2)
    h = machine(s2, n_out=2)                       # stateful h: X' → X
    assert equivalent(delayed_trace((identity(1) @ h) >> f, x0), h >> delayed_trace(f, x0))


@SETTINGS
@given(s1=seeds(), s2=seeds())
def test_naturality_in_the_output(s1, s2):
    f, x0 = traced(s1, 2, n_out=1)
    k = machine(s2, n_in=1)                        # stateful k: Y → Y'
    assert equivalent(delayed_trace(f >> (identity(2) @ k), x0), delayed_trace(f, x0) >> k)


@SETTINGS
@given(seed=seeds())
def test_vanishing_unit_and_tensor(seed):
    f = machine(seed)
    assert equivalent(delayed_trace(f, np.zeros(0)), f)
    # tracing S ⊗ T at once = tracing T (moved first), then S
    g = machine(seed + 1, n_in=3, n_out=3)         # wires S=1, T=1, X=1
    x0, y0 = np.array([0.3]), np.array([-1.2])
    inner = (swap(1, 1) @ identity(1)) >> g >> (swap(1, 1) @ identity(1))   # T ⊗ S ⊗ X
    both = delayed_trace(g, np.concatenate([x0, y0]))
    assert equivalent(both, delayed_trace(delayed_trace(inner, y0), x0))


@SETTINGS
@given(s1=seeds(), s2=seeds())
def test_superposing(s1, s2):
    f, x0 = traced(s1, 1)
    g = machine(s2)
    assert equivalent(delayed_trace(f, x0) @ g, delayed_trace(f @ g, x0))


@SETTINGS
@given(s1=seeds(), s2=seeds())
def test_dinaturality_holds_for_pure_maps_with_the_initial_value_transported(s1, s2):
    # f: S ⊗ X → T ⊗ Y stateful, g: T → S stateless:
    #   dtr^{g(j)}(f >> (g ⊗ 1)) = dtr^{j}((g ⊗ 1) >> f)
    # Proof: with r_t the left register and q_t the right one, r_t = g(q_t) for every t
    # (r_0 = g(j) = g(q_0); both feed f the same value, so r_{t+1} = g(q_{t+1})). Plain
    # dinaturality — the same initial value on both sides — fails (tests below).
    rng = np.random.default_rng(s2)
    f = machine(s1, n_in=2, n_out=3)               # S = 1 (+ X = 1) → T = 2 (+ Y = 1)
    net = Sequential(Linear(2, 1, rng=rng, dtype=np.float64), Tanh())
    g = pure(net, 2, 1)
    j = rng.standard_normal(2)
    gj = g.run(j[None, None])[0, 0]
    lhs = delayed_trace(f >> (g @ identity(1)), gj)
    rhs = delayed_trace((g @ identity(1)) >> f, j)
    assert equivalent(lhs, rhs)


def test_yanking_gives_the_one_step_delay_not_the_identity():
    x0 = np.array([4.0, -1.0])
    yank = delayed_trace(swap(2, 2), x0)
    xs = seqs(3, 2, steps=6)
    ys = yank.run(xs)
    np.testing.assert_array_equal(ys[:, 0], np.broadcast_to(x0, (2, 2)))
    np.testing.assert_array_equal(ys[:, 1:], xs[:, :-1])
    assert equivalent(yank, delay(x0))
    assert not equivalent(yank, identity(2))
    assert behaviour_gap(yank, identity(2), xs) > 0.5


def _affine(a, b):
    m = Linear(1, 1, dtype=np.float64)
    m.params["weight"][:] = a
    m.params["bias"][:] = b
    return pure(m, 1, 1)


def test_dinaturality_fails_a_counterexample():
    # f = σ (pure), g(x) = 2x + 1 (pure), one initial value j for both sides
    g, j = _affine(2.0, 1.0), np.array([0.5])
    lhs = delayed_trace(swap(1, 1) >> (g @ identity(1)), j)   # y0 = j,    y_t = g(x_{t-1})
    rhs = delayed_trace((g @ identity(1)) >> swap(1, 1), j)   # y0 = g(j), y_t = g(x_{t-1})
    xs = seqs(0, 1)
    a, b = lhs.run(xs), rhs.run(xs)
    np.testing.assert_allclose(a[:, 0, 0], 0.5)
    np.testing.assert_allclose(b[:, 0, 0], 2.0)
    np.testing.assert_allclose(a[:, 1:], b[:, 1:], rtol=1e-15)
    np.testing.assert_allclose(a[:, 1:], 2 * xs[:, :-1] + 1, rtol=1e-15)
    assert not equivalent(lhs, rhs)


def test_dinaturality_fails_for_a_stateful_map_sliding_a_delay_swaps_initial_values():
    j, d = np.array([1.0]), np.array([-3.0])
    lhs = delayed_trace(swap(1, 1) >> (delay(d) @ identity(1)), j)   # outputs j, d, x0, x1, ...
    rhs = delayed_trace((delay(d) @ identity(1)) >> swap(1, 1), j)   # outputs d, j, x0, x1, ...
    xs = seqs(1, 1)
    np.testing.assert_array_equal(lhs.run(xs)[0, :2, 0], [1.0, -3.0])
    np.testing.assert_array_equal(rhs.run(xs)[0, :2, 0], [-3.0, 1.0])
    assert not equivalent(lhs, rhs)
    assert equivalent(lhs, delayed_trace((delay(j) @ identity(1)) >> swap(1, 1), d))
