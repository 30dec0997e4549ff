"""Property tests over every registered layer: gradients, adjoint, dtype, determinism, linearity
of the jvp, batch independence and bad-input errors."""
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nograd
import nograd.layers
from nograd.core import Module
from nograd.testing import check_adjoint, check_jvp, check_vjp
from registry import ENTRIES, build

IDS = [e.name for e in ENTRIES]
SETTINGS = settings(max_examples=8, deadline=None, derandomize=True)


def test_every_layer_is_registered():
    exported = [getattr(nograd.layers, n) for n in nograd.layers.__all__]
    exported += [nograd.Sequential, nograd.Residual]
    classes = {c for c in exported if inspect.isclass(c) and issubclass(c, Module)}
    registered = {e.cls for e in ENTRIES}
    missing = sorted(c.__name__ for c in classes - registered)
    assert not missing, f"layers without a registry entry: {missing}"


def _dx(x, rng):
    return rng.standard_normal(x.shape).astype(x.dtype) if x.dtype.kind == "f" else None


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(2, 5))
def test_gradients_match_differences_and_each_other(entry, seed, batch):
    module, x = build(entry, np.float64, seed, batch)
    for train in entry.modes:
        assert check_vjp(module, x, train=train, seed=seed) < 1e-6
        assert check_jvp(module, x, train=train, seed=seed) < 1e-6
        assert check_adjoint(module, x, train=train, seed=seed) <= 1e-9


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(entry, dtype):
    module, x = build(entry, dtype, 0, 3)
    rng = np.random.default_rng(1)
    for train in entry.modes:
        y, cache = module.forward(x, train=train, rng=np.random.default_rng(2))
        if entry.float_input:
            assert y.dtype == x.dtype
        dy = rng.standard_normal(y.shape).astype(y.dtype)
        dx, grads = module.backward(cache, dy)
        if entry.float_input:
            assert dx.dtype == x.dtype and dx.shape == x.shape
        assert set(grads) == set(module.params)
        for k, g in grads.items():
            assert g.dtype == module.params[k].dtype == np.dtype(dtype), k
            assert g.shape == module.params[k].shape, k
        dparams = {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in module.params.items()}
        y2, ydot = module.jvp(x, _dx(x, rng), dparams, train=train, rng=np.random.default_rng(2))
        assert ydot.dtype == y.dtype and ydot.shape == y.shape
        np.testing.assert_array_equal(y2, y)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_same_seed_same_result(entry):
    outs = []
    for _ in range(2):
        module, x = build(entry, np.float32, 123, 4)
        y, _ = module.forward(x, train=entry.modes[-1], rng=np.random.default_rng(5))
        outs.append((x, y, {k: v.copy() for k, v in module.params.items()}))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    for k in outs[0][2]:
        np.testing.assert_array_equal(outs[0][2][k], outs[1][2][k])


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_jvp_is_linear_in_the_tangent(entry, seed, a, b):
    module, x = build(entry, np.float64, seed, 3)
    rng = np.random.default_rng(seed)
    u1, u2 = _dx(x, rng), _dx(x, rng)
    p1 = {k: rng.standard_normal(v.shape) for k, v in module.params.items()}
    p2 = {k: rng.standard_normal(v.shape) for k, v in module.params.items()}
    train = entry.modes[-1]

    def tangent(u, p):
        return module.jvp(x, u, p, train=train, rng=np.random.default_rng(0))[1]

    mixed = tangent(None if u1 is None else a * u1 + b * u2, {k: a * p1[k] + b * p2[k] for k in p1})
    expected = a * tangent(u1, p1) + b * tangent(u2, p2)
    np.testing.assert_allclose(mixed, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.per_sample], ids=[e.name for e in ENTRIES if e.per_sample])
def test_per_sample_maps_do_not_mix_the_batch(entry):
    module, x = build(entry, np.float64, 7, 5)
    y = module(x)
    rows = np.concatenate([module(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(y, rows, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.float_input], ids=[e.name for e in ENTRIES if e.float_input])
def test_bad_inputs_name_the_argument(entry):
    module, x = build(entry, np.float32, 0, 3)
    with pytest.raises(TypeError, match="x"):
        module.forward(x.astype(np.int64))
    with pytest.raises(TypeError, match="x"):
        module.forward(x.tolist())
    bad = x.copy()
    bad.flat[1] = np.nan
    with pytest.raises(ValueError, match="x contains NaN"):
        module.forward(bad)
    bad.flat[1] = np.inf
    with pytest.raises(ValueError, match="x contains NaN"):
        module.forward(bad)
    with pytest.raises(ValueError, match="x is empty"):
        module.forward(x[:0])
    if entry.bad_shape is not None:
        wrong = np.zeros(entry.bad_shape(x.shape), np.float32)
        with pytest.raises(ValueError, match="x"):
            module.forward(wrong)
    y, cache = module.forward(x)
    with pytest.raises(ValueError, match="dy"):
        module.backward(cache, np.zeros(y.shape + (2,), y.dtype))
    for k, v in module.params.items():
        with pytest.raises(ValueError, match=k.rsplit(".", 1)[-1]):
            module.forward(x, params={k: np.zeros(v.shape + (1,), v.dtype)})
    with pytest.raises(ValueError, match="unknown key"):
        module.forward(x, params={"nonexistent": np.zeros(1, np.float32)})


def test_embedding_bad_indices():
    from nograd.layers import Embedding
    emb = Embedding(5, 2, rng=0)
    with pytest.raises(ValueError, match="idx"):
        emb.forward(np.array([[0, 5]]))
    with pytest.raises(ValueError, match="idx"):
        emb.forward(np.array([[-1]]))
    with pytest.raises(TypeError, match="idx"):
        emb.forward(np.array([[0.0]]))
    with pytest.raises(ValueError, match="dx"):
        emb.jvp(np.array([[1]]), np.zeros((1, 1)))
