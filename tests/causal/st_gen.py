"""Random small stateful morphisms and sequences for the St(C) property tests (float64)."""
import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

from nograd.causal import Stateful, delay, delayed_trace, identity
from nograd.core import Sequential
from nograd.layers import Linear, Sigmoid, Tanh
from nograd.testing.strategies import seeds

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


def cell(rng, n_in, n_out, n_state, hidden=4):
    """A random smooth step map S ⊗ X → S ⊗ Y: Linear, Tanh (or Sigmoid), Linear."""
    act = Tanh() if rng.random() < 0.7 else Sigmoid()
    net = Sequential(Linear(n_state + n_in, hidden, rng=rng, init="xavier_uniform",
                            dtype=np.float64), act,
                     Linear(hidden, n_state + n_out, rng=rng, init="xavier_uniform",
                            dtype=np.float64))
    for k, v in net.params.items():
        if k.endswith("bias"):
            v[:] = 0.3 * rng.standard_normal(v.shape)
    return Stateful(0.5 * rng.standard_normal(n_state), net, n_in, n_out)


def machine(seed, n_in=None, n_out=None):
    """A random stateful morphism n_in → n_out: a cell, a cell followed by a delay, or the delayed
    trace of a wider cell — so the draws vary in structure as well as in weights."""
    rng = np.random.default_rng(seed)
    n_in = int(rng.integers(1, 3)) if n_in is None else n_in
    n_out = int(rng.integers(1, 3)) if n_out is None else n_out
    kind = int(rng.integers(3))
    n_state = int(rng.integers(0, 3))
    if kind == 0:
        return cell(rng, n_in, n_out, n_state)
    if kind == 1:
        return cell(rng, n_in, n_out, n_state) >> delay(rng.standard_normal(n_out))
    k = int(rng.integers(1, 3))
    return delayed_trace(cell(rng, k + n_in, k + n_out, n_state), rng.standard_normal(k))


def seqs(seed, n, *, batch=2, steps=5):
    return np.random.default_rng(seed + 101).standard_normal((batch, steps, n))


def widths():
    return st.integers(1, 3)


__all__ = ["SETTINGS", "cell", "machine", "seqs", "seeds", "widths", "identity"]
