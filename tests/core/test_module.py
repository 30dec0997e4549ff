"""The module contract: parameter naming, overrides, composites, need_dx, astype."""
import numpy as np
import pytest

from nograd.core import Module, Residual, Sequential
from nograd.layers import BatchNorm1d, Linear, ReLU, Tanh
from nograd.testing import check_adjoint, check_vjp


def mlp(dtype=np.float64):
    return Sequential(Linear(3, 4, rng=0, dtype=dtype), Tanh(),
                      Residual(Sequential(Linear(4, 4, rng=1, dtype=dtype), ReLU())),
                      Linear(4, 2, rng=2, dtype=dtype))


def test_dotted_names_are_deterministic_and_live():
    net = mlp()
    names = list(net.params)
    assert names == ["0.weight", "0.bias", "2.body.0.weight", "2.body.0.bias", "3.weight", "3.bias"]
    assert list(mlp().params) == names
    net.params["3.bias"][:] = 5.0           # live arrays: writing through the dict changes the model
    assert np.all(net[3].params["bias"] == 5.0)
    assert net.num_params == 3 * 4 + 4 + 16 + 4 + 8 + 2


def test_grads_are_keyed_like_params_in_order():
    net = mlp()
    x = np.random.default_rng(0).normal(size=(5, 3))
    y, cache = net.forward(x)
    dx, grads = net.backward(cache, np.ones_like(y))
    assert list(grads) == list(net.params)
    assert dx.shape == x.shape


def test_params_override_equals_swapping_the_arrays():
    net = mlp()
    x = np.random.default_rng(0).normal(size=(5, 3))
    rng = np.random.default_rng(1)
    new = {k: rng.normal(size=v.shape) for k, v in net.params.items()}
    y_override = net(x, params=new)
    before = {k: v.copy() for k, v in net.params.items()}
    for k, v in net.params.items():       # nothing was written into the model
        np.testing.assert_array_equal(v, before[k])
    for k, v in net.params.items():
        v[...] = new[k]
    np.testing.assert_allclose(net(x), y_override, rtol=0, atol=0)


def test_partial_override_and_its_gradient():
    net = mlp()
    x = np.random.default_rng(0).normal(size=(5, 3))
    w = np.random.default_rng(2).normal(size=(2, 4))
    y = net(x, params={"3.weight": w})
    assert not np.allclose(y, net(x))
    assert check_vjp(net, x, params={**net.params, "3.weight": w}) < 1e-6


def test_override_with_unknown_key_or_shape_is_refused():
    net = mlp()
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="unknown key '7.weight'"):
        net.forward(x, params={"7.weight": np.zeros((2, 4))})
    with pytest.raises(ValueError, match="weight"):
        net.forward(x, params={"3.weight": np.zeros((4, 2))})
    with pytest.raises(ValueError, match="dparams"):
        net.jvp(x, None, {"3.nope": np.zeros(2)})


def test_need_dx_false_skips_the_input_cotangent():
    net = mlp()
    x = np.random.default_rng(0).normal(size=(5, 3))
    y, cache = net.forward(x)
    dx, grads = net.backward(cache, np.ones_like(y), need_dx=False)
    dx2, grads2 = net.backward(cache, np.ones_like(y))
    assert dx is None and dx2 is not None
    for k in grads:
        np.testing.assert_array_equal(grads[k], grads2[k])


def test_residual_is_identity_plus_body():
    body = Sequential(Linear(4, 4, rng=0, dtype=np.float64), Tanh())
    res = Residual(body)
    x = np.random.default_rng(0).normal(size=(3, 4))
    np.testing.assert_allclose(res(x), x + body(x))
    assert check_adjoint(res, x) < 1e-10
    with pytest.raises(ValueError, match="shape"):
        Residual(Linear(4, 3, rng=0))(x.astype(np.float32))


def test_jvp_with_no_tangent_is_zero():
    net = mlp()
    x = np.random.default_rng(0).normal(size=(5, 3))
    y, dy = net.jvp(x, None)
    np.testing.assert_array_equal(dy, 0)
    np.testing.assert_array_equal(y, net(x))


def test_astype_converts_params_and_buffers():
    net = Sequential(Linear(3, 4, rng=0), BatchNorm1d(4))
    assert net.dtype == np.float32
    net.astype(np.float64)
    assert all(v.dtype == np.float64 for v in net.params.values())
    assert all(v.dtype == np.float64 for v in net.buffers.values())
    with pytest.raises(TypeError, match="dtype"):
        net.astype(np.int32)


def test_sequential_rejects_non_modules_and_indexes():
    with pytest.raises(TypeError, match=r"layers\[1\]"):
        Sequential(Linear(2, 2), "relu")
    net = mlp()
    assert isinstance(net[1], Tanh) and len(net) == 4
    assert isinstance(net[:2], Sequential) and list(net[:2].params) == ["0.weight", "0.bias"]
    assert "Residual" in repr(net)


def test_base_module_names_missing_maps():
    class Half(Module):
        pass
    with pytest.raises(NotImplementedError, match="Half"):
        Half().forward(np.zeros(1))


def test_sequential_call_equals_forward_and_keeps_no_caches():
    import tracemalloc
    net = Sequential(*[m for _ in range(6) for m in (Linear(256, 256, rng=0), ReLU())])
    x = np.random.default_rng(0).normal(size=(512, 256)).astype(np.float32)
    np.testing.assert_array_equal(net(x), net.forward(x)[0])
    peaks = []
    tracemalloc.start()
    try:
        for run in (lambda: net.forward(x), lambda: net(x)):
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            run()
            peaks.append(tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()
    with_caches, without = peaks
    one_activation = 512 * 256 * 4
    assert without <= 3 * one_activation < with_caches


def test_as_rng_accepts_seeds_sequences_and_generators():
    from nograd.core.checks import as_rng
    g = np.random.default_rng(3)
    assert as_rng(g) is g
    assert as_rng(5).integers(1000) == np.random.default_rng(5).integers(1000)
    assert as_rng((5, 2)).integers(1000) == np.random.default_rng([5, 2]).integers(1000)
    assert as_rng((5, 2)).integers(1000) != as_rng((5, 3)).integers(1000)
    for bad in (True, 1.5, "seed", (), (1, -2), np.random.RandomState(0)):
        with pytest.raises(TypeError, match="rng"):
            as_rng(bad)
