"""The gradient checks themselves: they pass on correct maps and fail on wrong ones."""
import numpy as np
import pytest

from nograd.core import Sequential
from nograd.layers import Linear, ReLU, Tanh
from nograd.testing import NonSmoothError, check_adjoint, check_jvp, check_vjp

X = np.random.default_rng(0).normal(size=(4, 3))


def cos_maps():
    return dict(vjp=lambda x, dy: -dy * np.sin(x), jvp=lambda x, dx: -dx * np.sin(x))


def test_plain_function_with_correct_maps_passes():
    m = cos_maps()
    assert check_vjp(np.cos, X, vjp=m["vjp"]) < 1e-8
    assert check_jvp(np.cos, X, jvp=m["jvp"]) < 1e-8
    assert check_adjoint(np.cos, X, **m) < 1e-12


def test_wrong_vjp_and_jvp_are_caught():
    with pytest.raises(AssertionError, match="vjp check failed along 'x'"):
        check_vjp(np.cos, X, vjp=lambda x, dy: dy * np.sin(x))
    with pytest.raises(AssertionError, match="jvp check failed"):
        check_jvp(np.cos, X, jvp=lambda x, dx: 1.001 * -dx * np.sin(x))
    with pytest.raises(AssertionError, match="adjoint check failed"):
        check_adjoint(np.cos, X, vjp=lambda x, dy: -dy * np.sin(x), jvp=lambda x, dx: dx * np.sin(x))


class ScaledLinear(Linear):
    """A Linear whose weight gradient is wrong by 0.1%: the checks must name 'weight'."""

    def backward(self, cache, dy, **kw):
        dx, g = super().backward(cache, dy, **kw)
        g["weight"] = g["weight"] * 1.001
        return dx, g


def test_wrong_parameter_gradient_is_named():
    lin = ScaledLinear(3, 2, rng=0, dtype=np.float64)
    with pytest.raises(AssertionError, match="'weight'"):
        check_vjp(lin, X)
    with pytest.raises(AssertionError, match="'weight'"):
        check_adjoint(lin, X)


def test_kink_at_the_centre_is_reported_not_misjudged():
    relu = ReLU()
    x = np.array([[0.0, 1.0, -1.0]])
    with pytest.raises(NonSmoothError, match="not smooth"):
        check_vjp(relu, x)
    with pytest.raises(NonSmoothError):
        check_jvp(relu, x)
    assert check_adjoint(relu, x) < 1e-12          # the adjoint needs no differences


def test_kink_near_the_centre_is_reported():
    relu = ReLU()
    x = np.array([[3e-5, 1.0, -1.0]])
    with pytest.raises(NonSmoothError):
        check_vjp(relu, x)


def test_float32_is_refused_with_a_hint():
    with pytest.raises(TypeError, match="float64"):
        check_vjp(Linear(3, 2, rng=0), X)
    with pytest.raises(TypeError, match="float64"):
        check_vjp(Linear(3, 2, rng=0, dtype=np.float64), X.astype(np.float32))


def test_module_with_params_and_train_mode():
    net = Sequential(Linear(3, 5, rng=0, dtype=np.float64), Tanh(), Linear(5, 2, rng=1, dtype=np.float64))
    assert check_vjp(net, X, train=True) < 1e-6
    assert check_jvp(net, X, train=True) < 1e-6
    assert check_adjoint(net, X, train=True) < 1e-10


def test_missing_maps_are_named():
    with pytest.raises(TypeError, match="vjp="):
        check_adjoint(np.cos, X, jvp=cos_maps()["jvp"])
    with pytest.raises(TypeError, match="Module or a callable"):
        check_vjp(3, X)
    with pytest.raises(TypeError, match="plain functions"):
        check_vjp(Linear(3, 2, dtype=np.float64), X, vjp=lambda x, dy: dy)


def test_a_parameter_with_zero_derivative_is_judged_on_the_overall_scale():
    """A bias before batch norm has an exactly zero derivative: only rounding is left on both sides,
    which must not read as a relative error of order one (and the returned error must say so)."""
    from nograd.layers import BatchNorm1d
    net = Sequential(Linear(3, 4, rng=0, dtype=np.float64), BatchNorm1d(4, dtype=np.float64))
    assert check_adjoint(net, X[:, :3].copy(), train=True) < 1e-12
    assert check_vjp(net, X, train=True) < 1e-6
    assert check_jvp(net, X, train=True) < 1e-6
