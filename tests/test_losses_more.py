"""NLL, L1, Huber and KL-divergence losses and cross-entropy's ``ignore_index`` (issue #20): values
and gradients equal to PyTorch's in float64, gradients equal to finite differences, the registry,
dtypes, and bad input refused with an error that names the argument."""
import numpy as np
import pytest

from nograd.losses import (LOSSES, directional, get_loss, huber_loss, kl_div, l1_loss, nll_loss,
                           softmax_cross_entropy)

N, C = 6, 4
LABELS = np.array([0, 3, 1, 1, 2, 3])
WEIGHT = np.array([0.5, 2.0, 1.0, 3.0])


def numeric_grad(f, x, h=1e-5):
    """Central differences of the scalar ``f`` at ``x``, one coordinate at a time (float64)."""
    x = np.array(x, dtype=np.float64, copy=True)
    g = np.zeros_like(x)
    xf, gf = x.reshape(-1), g.reshape(-1)
    for j in range(xf.size):
        old = xf[j]
        xf[j] = old + h
        up = f(x)
        xf[j] = old - h
        down = f(x)
        xf[j] = old
        gf[j] = (up - down) / (2 * h)
    return g


def log_softmax(z):
    s = z - z.max(axis=-1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


def torch_value_grad(fn, x, *args, **kwargs):
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out = fn(xt, *args, **kwargs)
    out.backward()
    return out.item(), xt.grad.numpy()


def assert_matches(ours, theirs):
    assert isinstance(ours[0], float)
    assert ours[0] == pytest.approx(theirs[0], rel=1e-10, abs=1e-14)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-10, atol=1e-14)


def rng_for(name):
    return np.random.default_rng(sum(map(ord, name)))


# ------------------------------------------------------------------------------------------ PyTorch
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [None, 1, -100])
def test_nll_equals_torch(weighted, ignore):
    torch = pytest.importorskip("torch")
    logp = log_softmax(rng_for("nll").normal(scale=2.0, size=(N, C)))
    y = LABELS.copy()
    if ignore == -100:
        y[[1, 4]] = -100
    opts = {"class_weight": WEIGHT if weighted else None, "ignore_index": ignore}
    theirs = torch_value_grad(torch.nn.functional.nll_loss, logp, torch.tensor(y),
                              weight=torch.tensor(WEIGHT) if weighted else None,
                              ignore_index=-100 if ignore is None else ignore)
    assert_matches(nll_loss(logp, y, **opts), theirs)


def test_nll_token_shape_equals_torch_on_flattened_tokens():
    torch = pytest.importorskip("torch")
    rng = rng_for("nll-tokens")
    logp = log_softmax(rng.normal(size=(2, 5, C)))
    y = rng.integers(0, C, size=(2, 5))
    y[0, :2] = 0
    theirs = torch_value_grad(lambda t: torch.nn.functional.nll_loss(
        t.reshape(-1, C), torch.tensor(y).reshape(-1), ignore_index=0), logp)
    value, grad = nll_loss(logp, y, ignore_index=0)
    assert grad.shape == logp.shape
    assert_matches((value, grad), theirs)


def test_l1_equals_torch():
    torch = pytest.importorskip("torch")
    rng = rng_for("l1")
    x, t = rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 4, 2))
    assert_matches(l1_loss(x, t), torch_value_grad(torch.nn.functional.l1_loss, x, torch.tensor(t)))


@pytest.mark.parametrize("delta", [0.3, 1.0, 2.5])
def test_huber_equals_torch(delta):
    torch = pytest.importorskip("torch")
    rng = rng_for("huber")
    x, t = rng.normal(scale=2.0, size=(5, 7)), rng.normal(size=(5, 7))
    d = np.abs(x - t)
    assert (d < delta).any() and (d > delta).any()           # both branches are exercised
    theirs = torch_value_grad(torch.nn.functional.huber_loss, x, torch.tensor(t), delta=delta)
    assert_matches(huber_loss(x, t, delta=delta), theirs)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")   # torch's own note
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_equals_torch(reduction, log_target):
    torch = pytest.importorskip("torch")
    rng = rng_for("kl")
    logq = log_softmax(rng.normal(size=(N, C)))
    p = rng.dirichlet(np.ones(C), size=N)
    p[0, 1] = 0.0                           # a zero target probability contributes 0, not NaN
    p[0] /= p[0].sum()
    target = np.log(rng.dirichlet(np.ones(C), size=N)) if log_target else p
    theirs = torch_value_grad(torch.nn.functional.kl_div, logq, torch.tensor(target),
                              reduction=reduction, log_target=log_target)
    assert_matches(kl_div(logq, target, reduction=reduction, log_target=log_target), theirs)


def test_kl_div_default_is_the_true_divergence_per_sample():
    rng = rng_for("kl-default")
    logq = log_softmax(rng.normal(size=(N, C)))
    p = rng.dirichlet(np.ones(C), size=N)
    expected = float(np.sum(p * (np.log(p) - logq)) / N)        # mean over samples of KL(p‖q)
    assert kl_div(logq, p)[0] == pytest.approx(expected, rel=1e-12)
    assert kl_div(log_softmax(np.log(p)), p)[0] == pytest.approx(0.0, abs=1e-14)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [2, -100])
def test_cross_entropy_ignore_index_equals_torch(smoothing, weighted, ignore):
    torch = pytest.importorskip("torch")
    z = rng_for("ce-ignore").normal(scale=2.0, size=(N, C))
    y = LABELS.copy()
    if ignore == -100:
        y[[0, 3]] = -100
    theirs = torch_value_grad(torch.nn.functional.cross_entropy, z, torch.tensor(y),
                              weight=torch.tensor(WEIGHT) if weighted else None,
                              label_smoothing=smoothing, ignore_index=ignore)
    ours = softmax_cross_entropy(z, y, label_smoothing=smoothing,
                                 class_weight=WEIGHT if weighted else None, ignore_index=ignore)
    assert_matches(ours, theirs)
    assert not ours[1][y == ignore].any()                 # ignored rows get no gradient


def test_token_cross_entropy_ignore_index_equals_torch():
    torch = pytest.importorskip("torch")
    rng = rng_for("ce-ignore-tokens")
    z = rng.normal(size=(3, 5, C))
    y = rng.integers(0, C, size=(3, 5))
    y[:, -2:] = -1                                          # padding at the ends of the sequences
    theirs = torch_value_grad(lambda t: torch.nn.functional.cross_entropy(
        t.reshape(-1, C), torch.tensor(y).reshape(-1), ignore_index=-1), z)
    assert_matches(softmax_cross_entropy(z, y, ignore_index=-1), theirs)


def test_ignore_index_that_matches_no_label_changes_nothing():
    z = rng_for("ce-noop").normal(size=(N, C))
    a = softmax_cross_entropy(z, LABELS, class_weight=WEIGHT)
    b = softmax_cross_entropy(z, LABELS, class_weight=WEIGHT, ignore_index=-100)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


# ------------------------------------------------------------------------------------------ gradients
def _kl_case(r, log_target=False, reduction="batchmean"):
    logq = log_softmax(r.normal(size=(N, C)))
    p = r.dirichlet(np.ones(C), size=N)
    return logq, (np.log(p) if log_target else p), {"reduction": reduction, "log_target": log_target}


def _huber_case(r, delta):
    x, t = r.normal(scale=2.0, size=(N, 3)), r.normal(size=(N, 3))
    while np.min(np.abs(np.abs(x - t) - delta)) < 1e-3:      # dodge the kink at |x − t| = δ
        x = r.normal(scale=2.0, size=(N, 3))
    return x, t, {"delta": delta}


def _l1_case(r):
    x, t = r.normal(size=(N, 3)), r.normal(size=(N, 3))
    return x, t, {}


def _ignored(y, rows, value):
    y = y.copy()
    y[rows] = value
    return y


FD_CASES = {
    "nll": (nll_loss, lambda r: (log_softmax(r.normal(size=(N, C))), LABELS, {})),
    "nll-weight-ignore": (nll_loss, lambda r: (r.normal(size=(N, C)), _ignored(LABELS, [2], -5),
                                               {"class_weight": WEIGHT, "ignore_index": -5})),
    "nll-tokens": (nll_loss, lambda r: (r.normal(size=(2, 3, C)), r.integers(0, C, size=(2, 3)), {})),
    "l1": (l1_loss, _l1_case),
    "huber-0.5": (huber_loss, lambda r: _huber_case(r, 0.5)),
    "huber-2": (huber_loss, lambda r: _huber_case(r, 2.0)),
    "kl": (kl_div, _kl_case),
    "kl-sum-logtarget": (kl_div, lambda r: _kl_case(r, True, "sum")),
    "kl-mean": (kl_div, lambda r: _kl_case(r, False, "mean")),
    "ce-ignore-smooth-weight": (softmax_cross_entropy, lambda r: (
        r.normal(size=(N, C)), _ignored(LABELS, [0, 5], 7),
        {"ignore_index": 7, "label_smoothing": 0.1, "class_weight": WEIGHT})),
}


@pytest.mark.parametrize("case", list(FD_CASES))
def test_gradient_equals_finite_differences(case):
    loss, make = FD_CASES[case]
    pred, target, opts = make(rng_for(case))
    value, grad = loss(pred, target, **opts)
    assert isinstance(value, float) and grad.shape == pred.shape and grad.dtype == pred.dtype
    fd = numeric_grad(lambda p: loss(p, target, **opts)[0], pred)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", list(FD_CASES))
def test_float32_in_float32_out(case):
    loss, make = FD_CASES[case]
    pred, target, opts = make(rng_for(case))
    v64, g64 = loss(pred, target, **opts)
    v32, g32 = loss(pred.astype(np.float32), target, **opts)
    assert g32.dtype == np.float32 and g32.shape == pred.shape
    assert v32 == pytest.approx(v64, rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-6)


def test_huber_is_half_mse_inside_delta_and_l1_like_outside():
    x = np.array([0.1, -0.2, 3.0, -5.0])
    t = np.zeros(4)
    value, grad = huber_loss(x, t, delta=1.0)
    assert value == pytest.approx((0.5 * 0.01 + 0.5 * 0.04 + (3.0 - 0.5) + (5.0 - 0.5)) / 4, rel=1e-14)
    np.testing.assert_allclose(grad, np.array([0.1, -0.2, 1.0, -1.0]) / 4, rtol=1e-14)


def test_l1_gradient_at_a_tie_is_zero_as_in_torch():
    value, grad = l1_loss(np.array([1.0, 2.0]), np.array([1.0, 0.0]))
    assert value == 1.0
    np.testing.assert_array_equal(grad, [0.0, 0.5])


def test_new_losses_in_the_registry_and_directional():
    for name, fn in {"nll": nll_loss, "l1": l1_loss, "huber": huber_loss, "kl": kl_div}.items():
        assert LOSSES[name] is fn and get_loss(name) is fn
    rng = rng_for("directional")
    x, t, v = rng.normal(size=(N, 3)), rng.normal(size=(N, 3)), rng.normal(size=(N, 3))
    value, dvalue = directional("huber", x, t, v, delta=0.7)
    assert value == huber_loss(x, t, delta=0.7)[0]
    assert dvalue == pytest.approx(float(np.vdot(huber_loss(x, t, delta=0.7)[1], v)), rel=1e-12)


# ------------------------------------------------------------------------------------------ errors
Z = np.zeros((4, 3))
Y = np.array([0, 1, 2, 0])
NAN = np.array([[0.0, np.nan, 0.0]] * 4)
P = np.full((4, 3), 1 / 3)

ERROR_CASES = [
    # nll
    (nll_loss, (NAN, Y), {}, ValueError, "log_probs contains NaN or inf"),
    (nll_loss, (Z.astype(int), Y), {}, TypeError, "log_probs must have dtype float"),
    (nll_loss, (np.zeros(3), Y), {}, ValueError, "log_probs must be 2-D"),
    (nll_loss, (Z, np.array([0, 1, 3, 0])), {}, ValueError, r"target has labels outside \[0, 3\)"),
    (nll_loss, (Z, Y[:3]), {}, ValueError, "target has 3 labels but the batch has 4 samples"),
    (nll_loss, (Z, Y.astype(float)), {}, TypeError, "target must hold integer"),
    (nll_loss, (Z, Y), {"class_weight": np.ones(4)}, ValueError, "class_weight"),
    (nll_loss, (Z, np.zeros((4, 5), np.int64)), {}, ValueError, "target must be 1-D"),
    (nll_loss, (np.zeros((4, 5, 3)), np.zeros((4, 6), np.int64)), {}, ValueError, "target has shape"),
    (nll_loss, (Z, np.full(4, 2)), {"ignore_index": 2}, ValueError,
     "every target equals ignore_index"),
    (nll_loss, (Z, Y), {"ignore_index": 1.0}, TypeError, "ignore_index must be an integer"),
    # cross-entropy ignore_index
    (softmax_cross_entropy, (Z, Y), {"ignore_index": "pad"}, TypeError, "ignore_index"),
    (softmax_cross_entropy, (Z, Y), {"ignore_index": True}, TypeError, "ignore_index"),
    (softmax_cross_entropy, (Z, np.full(4, -100)), {"ignore_index": -100}, ValueError,
     "every target equals ignore_index"),
    (softmax_cross_entropy, (Z, P), {"ignore_index": 0}, ValueError,
     "ignore_index applies to integer labels"),
    (softmax_cross_entropy, (Z, np.array([0, -100, 5, 0])), {"ignore_index": -100}, ValueError,
     r"target has labels outside \[0, 3\)"),
    # l1
    (l1_loss, (Z, np.zeros((4, 2))), {}, ValueError, r"target has shape \(4, 2\)"),
    (l1_loss, (NAN, Z), {}, ValueError, "pred contains NaN"),
    (l1_loss, (Z, Z.tolist()), {}, TypeError, "target must be a numpy.ndarray"),
    # huber
    (huber_loss, (Z, Z), {"delta": 0.0}, ValueError, "delta must be positive"),
    (huber_loss, (Z, Z), {"delta": -1.0}, ValueError, "delta must be positive"),
    (huber_loss, (Z, Z), {"delta": np.inf}, ValueError, "delta"),
    (huber_loss, (Z, Z), {"delta": "1"}, TypeError, "delta must be a number"),
    (huber_loss, (Z, NAN), {}, ValueError, "target contains NaN"),
    (huber_loss, (Z, Z[:2]), {}, ValueError, "target has shape"),
    # kl
    (kl_div, (Z, P[:, :2]), {}, ValueError, r"target has shape \(4, 2\)"),
    (kl_div, (Z, -P), {}, ValueError, "target must hold non-negative probabilities"),
    (kl_div, (Z, NAN), {}, ValueError, "target contains NaN"),
    (kl_div, (NAN, P), {}, ValueError, "log_probs contains NaN"),
    (kl_div, (Z, P), {"reduction": "avg"}, ValueError,
     "reduction must be one of 'batchmean', 'sum', 'mean'"),
    (kl_div, (Z, P), {"reduction": "none"}, ValueError, "reduction"),
    (kl_div, (Z, P), {"log_target": 1}, TypeError, "log_target must be a bool"),
    (kl_div, (Z, np.log(P) + np.inf), {"log_target": True}, ValueError, "target contains NaN"),
]


@pytest.mark.parametrize("loss, args, opts, exc, match", ERROR_CASES,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(ERROR_CASES)])
def test_bad_input_raises_naming_the_argument(loss, args, opts, exc, match):
    with pytest.raises(exc, match=match):
        loss(*args, **opts)
