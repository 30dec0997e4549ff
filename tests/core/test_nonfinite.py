"""NonFiniteError: raised where a NaN/inf is found, caught by fit by its type (not its message)."""
import numpy as np
import pytest

import nograd
from nograd import SGD, Adam, Backprop, Linear, ReLU, Sequential
from nograd.core.checks import NonFiniteError, check_array
from nograd.core.losses import mse, softmax_cross_entropy
from nograd.core.optim import clip_grad_norm
from nograd.data import blobs
from nograd.metrics import hoyer_sparsity, roc_auc
from nograd.rules import Rule
from nograd.rules.zeroth_order import MeZO
from nograd.train import fit

NAN2 = np.array([[1.0, np.nan], [0.0, 1.0]])
INF2 = np.array([[1.0, np.inf], [0.0, 1.0]])


def mlp(seed=0):
    return Sequential(Linear(2, 8, rng=seed), ReLU(), Linear(8, 3, rng=seed + 1))


def snapshot(model):
    return {k: v.copy() for k, v in model.params.items()}


def assert_same(before, params):
    assert set(before) == set(params)
    for k in before:
        np.testing.assert_array_equal(before[k], params[k], err_msg=k)


def test_is_a_floating_point_error_and_a_value_error_exported_from_nograd():
    assert issubclass(NonFiniteError, FloatingPointError)
    assert issubclass(NonFiniteError, ValueError)
    assert nograd.NonFiniteError is NonFiniteError and "NonFiniteError" in nograd.__all__
    assert not issubclass(ValueError, NonFiniteError)


# each site where a non-finite value is found: (callable, the message it must give)
SITES = [
    (lambda: check_array(NAN2, "x"), r"^x contains NaN or inf$"),
    (lambda: check_array(INF2.astype(np.float32), "h"), r"^h contains NaN or inf$"),
    (lambda: Linear(2, 3, rng=0).forward(NAN2), r"^x contains NaN or inf$"),
    (lambda: softmax_cross_entropy(INF2, np.array([0, 1])), r"^logits contains NaN or inf$"),
    (lambda: mse(np.zeros((2, 2)), NAN2), r"^target contains NaN or inf$"),
    (lambda: SGD({"w": np.zeros((2, 2))}, lr=0.1).step({"w": NAN2}),
     r"^grads\['w'\] contains NaN or inf$"),
    (lambda: clip_grad_norm({"g": INF2}, 1.0), r"^grads\['g'\] contains NaN or inf$"),
    (lambda: roc_auc(np.array([0, 1]), np.array([0.5, np.nan])), "scores contains NaN or inf"),
    (lambda: hoyer_sparsity(NAN2), "x contains NaN or inf"),
    (lambda: fit(mlp(), Backprop(), Adam(mlp().params), (NAN2, np.array([0, 1])), epochs=1,
                 batch_size=2, rng=0, progress=False), r"^train X contains NaN or inf$"),
]


@pytest.mark.parametrize("call, message", SITES)
def test_raised_where_the_value_is_found(call, message):
    with pytest.raises(NonFiniteError, match=message):
        call()


def test_the_optimizer_changes_nothing_when_one_gradient_is_not_finite():
    params = {"a": np.ones(3), "b": np.ones(3)}
    opt = Adam(params, lr=0.1)
    with pytest.raises(NonFiniteError, match=r"grads\['b'\]"):
        opt.step({"a": np.ones(3), "b": np.array([0.0, np.inf, 0.0])})
    np.testing.assert_array_equal(params["a"], 1.0)
    np.testing.assert_array_equal(params["b"], 1.0)


class _Raises(Rule):
    """A rule whose grads raise the exception it is given (to see what fit does with it)."""

    def __init__(self, error):
        self.error = error

    def grads(self, model, x, y, *, rng=None):
        raise self.error


def _fit(model, rule, opt=None, X=None, y=None, **kw):
    if X is None:
        X, y = blobs(20, 3, 2, rng=0)
    args = dict(epochs=2, batch_size=5, rng=0, progress=False)
    args.update(kw)
    return fit(model, rule, opt if opt is not None else SGD(model.params, lr=0.1), (X, y), **args)


def test_fit_catches_the_type_whatever_the_message():
    cause = NonFiniteError("the hidden state blew up")        # no "NaN or inf" in the text
    with pytest.raises(NonFiniteError, match=r"^training diverged at epoch 1, batch 1 "
                                             r"\(the hidden state blew up\); lower") as info:
        _fit(mlp(), _Raises(cause))
    assert info.value.__cause__ is cause
    assert isinstance(info.value, FloatingPointError)


def test_fit_does_not_take_a_value_error_that_mentions_nan_for_divergence():
    error = ValueError("x contains NaN or inf")                 # the old text, the wrong type
    with pytest.raises(ValueError) as info:
        _fit(mlp(), _Raises(error))
    assert info.value is error and not isinstance(info.value, NonFiniteError)


class _NaNLoss(Rule):
    def grads(self, model, x, y, *, rng=None):
        return {k: np.ones_like(v) for k, v in model.params.items()}, {"loss": float("nan")}


def test_a_nan_loss_stops_fit_before_the_update():
    net = mlp()
    before = snapshot(net)
    with pytest.raises(NonFiniteError, match="the loss is nan at epoch 1, batch 1"):
        _fit(net, _NaNLoss())
    assert_same(before, net.params)


def test_real_divergence_names_the_batch_and_chains_where_it_was_found():
    X = np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32) * 100
    y = np.arange(64) % 3
    net = mlp()
    with np.errstate(all="ignore"), pytest.raises(NonFiniteError, match="diverged") as info:
        _fit(net, Backprop(), SGD(net.params, lr=1e8), X, y, epochs=5, batch_size=8)
    err = info.value
    assert "at epoch" in str(err) and ("batch" in str(err))
    # either the loss itself went non-finite, or a NonFiniteError was found inside the step
    assert err.__cause__ is None or isinstance(err.__cause__, NonFiniteError)


def test_mezo_divergence_is_a_non_finite_error_that_fit_places():
    net = mlp()
    before = snapshot(net)
    rule = MeZO(objective=lambda m, xb, yb: float("nan"), exact_restore=True)
    with pytest.raises(NonFiniteError, match=r"^training diverged at epoch 1, batch 1 \(MeZO: the "
                                             r"objective is not finite") as info:
        _fit(net, rule)
    assert isinstance(info.value.__cause__, NonFiniteError)
    assert_same(before, net.params)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["contiguous", "strided", "fortran"])
def test_all_finite_equals_the_exact_test(dtype, layout):
    """all_finite (a BLAS sum of squares on contiguous arrays, a sum otherwise, the exact test on
    doubt) agrees with np.isfinite(a).all(): one NaN, +inf or -inf anywhere is found, and finite
    values whose squares overflow are still finite."""
    from nograd.core.checks import all_finite

    big = np.finfo(dtype).max / 2
    rng = np.random.default_rng(0)
    for bad in (np.nan, np.inf, -np.inf, None, big, -big):
        for pos in (0, 37, -1):
            a = rng.standard_normal((9, 12)).astype(dtype)
            if bad is not None:
                a.flat[pos] = bad
                a.flat[0 if pos else 1] = big if bad in (big, -big) else a.flat[0 if pos else 1]
            view = {"contiguous": a, "strided": a[:, ::2], "fortran": np.asfortranarray(a)}[layout]
            assert all_finite(view) == bool(np.isfinite(view).all()), (bad, pos, layout)
    assert all_finite(np.zeros((0, 3), dtype))
