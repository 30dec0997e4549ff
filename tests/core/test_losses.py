"""Tests for nograd.core.losses: finite differences, PyTorch, references, stability, errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nograd import losses as L
from nograd.losses import (LOSSES, binary_cross_entropy_with_logits, directional, focal_loss,
                           get_loss, mse, softmax_cross_entropy)

PROPS = settings(max_examples=30, deadline=None)
FINITE = st.floats(-20, 20, allow_nan=False, allow_infinity=False)


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------

def numeric_grad(f, x, h=1e-5):
    """Central finite differences of the scalar f at x, one coordinate at a time (float64)."""
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


def assert_grad_is_fd(loss, pred, target, **opts):
    value, grad = loss(pred, target, **opts)
    assert isinstance(value, float)
    assert grad.shape == pred.shape and grad.dtype == pred.dtype
    fd = numeric_grad(lambda p: loss(p, target, **opts)[0], pred)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def probs(rng, n, c):
    return rng.dirichlet(np.ones(c), size=n)


def focal_reference(z, y, gamma, alpha=None):
    """Focal loss straight from Lin et al. (2017) eq. 5, naive softmax, mean over samples."""
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    pt = p[np.arange(len(y)), y]
    if alpha is None:
        at = 1.0
    elif np.ndim(alpha) == 0:
        at = alpha
    else:
        at = np.asarray(alpha)[y]
    return float(np.mean(-at * (1 - pt) ** gamma * np.log(pt)))


N, C = 5, 4
LABELS = np.array([0, 3, 1, 1, 2])
WEIGHT = np.array([0.5, 2.0, 1.0, 3.0])


def _logits(rng):
    return rng.normal(scale=2.0, size=(N, C))


# name -> (loss, make(rng) -> (pred, target, opts))
FD_CASES = {
    "ce-labels": (softmax_cross_entropy, lambda r: (_logits(r), LABELS, {})),
    "ce-smooth": (softmax_cross_entropy, lambda r: (_logits(r), LABELS, {"label_smoothing": 0.2})),
    "ce-weight": (softmax_cross_entropy, lambda r: (_logits(r), LABELS, {"class_weight": WEIGHT})),
    "ce-weight-smooth": (softmax_cross_entropy, lambda r: (
        _logits(r), LABELS, {"class_weight": WEIGHT, "label_smoothing": 0.3})),
    "ce-probs": (softmax_cross_entropy, lambda r: (_logits(r), probs(r, N, C), {})),
    "ce-probs-weight-smooth": (softmax_cross_entropy, lambda r: (
        _logits(r), probs(r, N, C), {"class_weight": WEIGHT, "label_smoothing": 0.1})),
    "mse": (mse, lambda r: (r.normal(size=(N, 3)), r.normal(size=(N, 3)), {})),
    "mse-int-target-3d": (mse, lambda r: (r.normal(size=(2, 3, 2)),
                                          r.integers(-2, 3, size=(2, 3, 2)), {})),
    "bce": (binary_cross_entropy_with_logits, lambda r: (_logits(r), r.uniform(size=(N, C)), {})),
    "bce-int": (binary_cross_entropy_with_logits, lambda r: (
        _logits(r), r.integers(0, 2, size=(N, C)), {})),
    "bce-pos-weight": (binary_cross_entropy_with_logits, lambda r: (
        _logits(r), r.uniform(size=(N, C)), {"pos_weight": WEIGHT})),
    "bce-pos-weight-scalar": (binary_cross_entropy_with_logits, lambda r: (
        _logits(r), r.integers(0, 2, size=(N, C)), {"pos_weight": 3.0})),
    "bce-column": (binary_cross_entropy_with_logits, lambda r: (
        r.normal(size=(N, 1)), r.integers(0, 2, size=N), {})),
    "focal-g0": (focal_loss, lambda r: (_logits(r), LABELS, {"gamma": 0.0})),
    "focal-g05": (focal_loss, lambda r: (_logits(r), LABELS, {"gamma": 0.5})),
    "focal-g2": (focal_loss, lambda r: (_logits(r), LABELS, {})),
    "focal-g37-alpha-scalar": (focal_loss, lambda r: (_logits(r), LABELS,
                                                      {"gamma": 3.7, "alpha": 0.25})),
    "focal-g2-alpha-vector": (focal_loss, lambda r: (_logits(r), LABELS, {"alpha": WEIGHT})),
}


# ------------------------------------------------------------------------------------------
# gradients against finite differences
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(FD_CASES))
def test_gradient_equals_finite_differences(case):
    loss, make = FD_CASES[case]
    pred, target, opts = make(np.random.default_rng(sum(map(ord, case))))
    assert_grad_is_fd(loss, pred, target, **opts)


@st.composite
def logits_and_labels(draw, max_side=6):
    n = draw(st.integers(1, max_side))
    c = draw(st.integers(1, max_side))
    z = draw(hnp.arrays(np.float64, (n, c), elements=FINITE))
    y = draw(hnp.arrays(np.int64, n, elements=st.integers(0, c - 1)))
    return z, y


@PROPS
@given(logits_and_labels(), st.sampled_from([0.0, 0.1, 0.6]), st.booleans(), st.data())
def test_cross_entropy_properties(zy, smoothing, weighted, data):
    z, y = zy
    c = z.shape[1]
    weight = (data.draw(hnp.arrays(np.float64, c, elements=st.floats(0.1, 3.0)))
              if weighted else None)
    opts = {"label_smoothing": smoothing, "class_weight": weight}
    assert_grad_is_fd(softmax_cross_entropy, z, y, **opts)
    value, grad = softmax_cross_entropy(z, y, **opts)
    assert value >= 0
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-12)      # shift invariance
    shifted, _ = softmax_cross_entropy(z + np.arange(len(y))[:, None], y, **opts)
    assert shifted == pytest.approx(value, rel=1e-10, abs=1e-10)


@PROPS
@given(logits_and_labels(), st.data())
def test_cross_entropy_soft_targets_property(zy, data):
    z, _ = zy
    n, c = z.shape
    raw = data.draw(hnp.arrays(np.float64, (n, c), elements=st.floats(0.01, 1.0)))
    t = raw / raw.sum(axis=1, keepdims=True)
    assert_grad_is_fd(softmax_cross_entropy, z, t, label_smoothing=0.1)


@PROPS
@given(hnp.array_shapes(min_dims=1, max_dims=3, max_side=5), st.data())
def test_mse_properties(shape, data):
    x = data.draw(hnp.arrays(np.float64, shape, elements=FINITE))
    t = data.draw(hnp.arrays(np.float64, shape, elements=FINITE))
    assert_grad_is_fd(mse, x, t)
    assert mse(x, x)[0] == 0.0 and not mse(x, x)[1].any()
    assert mse(x, t)[0] >= 0


@PROPS
@given(hnp.array_shapes(min_dims=1, max_dims=3, max_side=5), st.booleans(), st.data())
def test_bce_properties(shape, weighted, data):
    z = data.draw(hnp.arrays(np.float64, shape, elements=FINITE))
    t = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(0.0, 1.0)))
    pw = (data.draw(hnp.arrays(np.float64, shape[-1], elements=st.floats(0.1, 5.0)))
          if weighted else None)
    assert_grad_is_fd(binary_cross_entropy_with_logits, z, t, pos_weight=pw)
    assert binary_cross_entropy_with_logits(z, t, pos_weight=pw)[0] >= 0


@PROPS
@given(logits_and_labels(), st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5]), st.booleans(), st.data())
def test_focal_properties(zy, gamma, weighted, data):
    z, y = zy
    alpha = (data.draw(hnp.arrays(np.float64, z.shape[1], elements=st.floats(0.1, 3.0)))
             if weighted else None)
    assert_grad_is_fd(focal_loss, z, y, gamma=gamma, alpha=alpha)
    value = focal_loss(z, y, gamma=gamma, alpha=alpha)[0]
    assert value == pytest.approx(focal_reference(z - z.max(1, keepdims=True), y, gamma, alpha),
                                  rel=1e-9, abs=1e-12)
    if alpha is None:   # (1 − p_t)^γ ≤ 1: focusing never raises the loss above cross-entropy
        assert value <= softmax_cross_entropy(z, y)[0] + 1e-12


@PROPS
@given(logits_and_labels(), st.sampled_from(["cross-entropy", "focal", "mse", "bce"]), st.data())
def test_directional_is_the_derivative_along_the_tangent(zy, name, data):
    z, y = zy
    target = {"cross-entropy": y, "focal": y, "mse": np.tanh(z), "bce": (z > 1).astype(int)}[name]
    v = data.draw(hnp.arrays(np.float64, z.shape, elements=st.floats(-1, 1)))
    value, dvalue = directional(name, z, target, v)
    loss = get_loss(name)
    assert value == loss(z, target)[0]
    h = 1e-5
    fd = (loss(z + h * v, target)[0] - loss(z - h * v, target)[0]) / (2 * h)
    assert dvalue == pytest.approx(fd, rel=1e-6, abs=1e-8)
    assert dvalue == pytest.approx(float(np.vdot(loss(z, target)[1], v)), rel=1e-12, abs=1e-15)


def test_directional_passes_options_and_callables():
    rng = np.random.default_rng(1)
    z, v = _logits(rng), rng.normal(size=(N, C))
    value, dvalue = directional(focal_loss, z, LABELS, v, gamma=0.5, alpha=WEIGHT)
    ref_value, grad = focal_loss(z, LABELS, gamma=0.5, alpha=WEIGHT)
    assert value == ref_value and dvalue == pytest.approx(np.sum(grad * v), rel=1e-12)
    assert directional("focal", z, LABELS, v)[0] != value      # defaults differ from the opts


# ------------------------------------------------------------------------------------------
# PyTorch and a direct reference
# ------------------------------------------------------------------------------------------

def _torch_value_grad(fn, z, *args, **kwargs):
    torch = pytest.importorskip("torch")
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    out = fn(zt, *args, **kwargs)
    out.backward()
    return out.item(), zt.grad.numpy()


def _assert_matches(ours, theirs):
    assert ours[0] == pytest.approx(theirs[0], rel=1e-10, abs=1e-14)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("soft", [False, True])
def test_cross_entropy_equals_torch(smoothing, weighted, soft):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    z = rng.normal(scale=3.0, size=(N, C))
    target = probs(rng, N, C) if soft else LABELS
    tt = torch.tensor(target) if soft else torch.tensor(target, dtype=torch.long)
    w = WEIGHT if weighted else None
    theirs = _torch_value_grad(torch.nn.functional.cross_entropy, z, tt,
                               weight=None if w is None else torch.tensor(w),
                               label_smoothing=smoothing)
    _assert_matches(softmax_cross_entropy(z, target, label_smoothing=smoothing, class_weight=w),
                    theirs)


def test_mse_equals_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x, t = rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 4, 2))
    _assert_matches(mse(x, t), _torch_value_grad(torch.nn.functional.mse_loss, x, torch.tensor(t)))


@pytest.mark.parametrize("pos_weight", [None, 2.5, WEIGHT])
def test_bce_equals_torch(pos_weight):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    z, t = rng.normal(scale=4.0, size=(N, C)), rng.uniform(size=(N, C))
    pw = None if pos_weight is None else torch.tensor(np.asarray(pos_weight, dtype=np.float64))
    theirs = _torch_value_grad(torch.nn.functional.binary_cross_entropy_with_logits, z,
                               torch.tensor(t), pos_weight=pw)
    _assert_matches(binary_cross_entropy_with_logits(z, t, pos_weight=pos_weight), theirs)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [None, 0.25, WEIGHT])
def test_focal_equals_reference(gamma, alpha):
    z = np.random.default_rng(10).normal(scale=2.0, size=(N, C))
    value = focal_loss(z, LABELS, gamma=gamma, alpha=alpha)[0]
    assert value == pytest.approx(focal_reference(z, LABELS, gamma, alpha), rel=1e-12)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_gradient_equals_torch_autograd_of_reference(gamma):
    torch = pytest.importorskip("torch")
    z = np.random.default_rng(11).normal(scale=2.0, size=(N, C))

    def reference(zt):
        logp = torch.log_softmax(zt, dim=1)[torch.arange(N), torch.tensor(LABELS)]
        at = torch.tensor(WEIGHT)[torch.tensor(LABELS)]
        return torch.mean(-at * (1 - logp.exp()) ** gamma * logp)

    _assert_matches(focal_loss(z, LABELS, gamma=gamma, alpha=WEIGHT),
                    _torch_value_grad(reference, z))


# ------------------------------------------------------------------------------------------
# equivalences
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_labels_and_one_hot_agree(smoothing):
    z = _logits(np.random.default_rng(12))
    one_hot = np.eye(C)[LABELS]
    a = softmax_cross_entropy(z, LABELS, label_smoothing=smoothing)
    for t in (one_hot, one_hot.astype(np.int64), one_hot.astype(np.float32)):
        b = softmax_cross_entropy(z, t, label_smoothing=smoothing)
        assert b[0] == pytest.approx(a[0], rel=1e-12)
        np.testing.assert_allclose(b[1], a[1], rtol=1e-12, atol=1e-15)


def test_plain_cross_entropy_gradient_is_softmax_minus_one_hot_over_n():
    z = _logits(np.random.default_rng(13))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax_cross_entropy(z, LABELS)[1], (p - np.eye(C)[LABELS]) / N,
                               rtol=1e-12, atol=1e-15)
    value = np.mean(-np.log(p[np.arange(N), LABELS]))
    assert softmax_cross_entropy(z, LABELS)[0] == pytest.approx(value, rel=1e-12)


def test_unit_class_weight_changes_nothing():
    z = _logits(np.random.default_rng(14))
    a = softmax_cross_entropy(z, LABELS, label_smoothing=0.1)
    b = softmax_cross_entropy(z, LABELS, label_smoothing=0.1, class_weight=np.ones(C))
    assert a[0] == pytest.approx(b[0], rel=1e-14)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-14)


@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_with_gamma_zero_is_cross_entropy(alpha):
    z = _logits(np.random.default_rng(15))
    ce = softmax_cross_entropy(z, LABELS)
    fl = focal_loss(z, LABELS, gamma=0.0, alpha=alpha)
    scale = 1.0 if alpha is None else alpha
    assert fl[0] == pytest.approx(scale * ce[0], rel=1e-12)
    np.testing.assert_allclose(fl[1], scale * ce[1], rtol=1e-10, atol=1e-15)


def test_bce_column_logits_accept_flat_targets():
    rng = np.random.default_rng(16)
    z, t = rng.normal(size=(N, 1)), rng.integers(0, 2, size=N)
    a = binary_cross_entropy_with_logits(z, t)
    b = binary_cross_entropy_with_logits(z, t.reshape(-1, 1).astype(np.float64))
    assert a[0] == b[0] and a[1].shape == (N, 1)
    np.testing.assert_array_equal(a[1], b[1])


# ------------------------------------------------------------------------------------------
# stability and dtypes
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_logits_stay_finite(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]], dtype=dtype)
    y = np.array([1, 1])
    value, grad = softmax_cross_entropy(z, y)
    assert value == pytest.approx(1e4, rel=1e-6)            # (2e4 + 0) / 2
    np.testing.assert_allclose(grad, [[0.5, -0.5, 0.0], [0.0, 0.0, 0.0]], atol=1e-6)
    for loss, target, opts in [
        (softmax_cross_entropy, y, {"label_smoothing": 0.1, "class_weight": [1.0, 2.0, 3.0]}),
        (softmax_cross_entropy, np.full((2, 3), 1 / 3), {}),
        (focal_loss, y, {"gamma": 2.0}),
        (focal_loss, y, {"gamma": 0.5, "alpha": [1.0, 2.0, 3.0]}),
        (binary_cross_entropy_with_logits, np.array([[0, 1, 1], [1, 0, 1]]), {"pos_weight": 2.0}),
        (mse, np.zeros((2, 3)), {}),
    ]:
        value, grad = loss(z, target, **opts)
        assert np.isfinite(value) and np.isfinite(grad).all() and grad.dtype == dtype, loss


def test_bce_huge_logits_values():
    z = np.array([1e4, -1e4, 1e4, -1e4])
    t = np.array([0, 1, 1, 0])
    value, grad = binary_cross_entropy_with_logits(z, t)
    assert value == pytest.approx(5e3, rel=1e-12)           # (1e4 + 1e4 + 0 + 0) / 4
    np.testing.assert_allclose(grad, [0.25, -0.25, 0.0, 0.0], atol=1e-15)


def test_focal_certain_prediction_gives_zero_not_nan():
    z = np.array([[800.0, -800.0, 0.0]])               # p_t == 1 to double precision
    for gamma in (0.0, 0.3, 2.0):
        value, grad = focal_loss(z, np.array([0]), gamma=gamma)
        assert np.isfinite(grad).all() and abs(value) < 1e-300
        assert np.abs(grad).max() < 1e-300


@pytest.mark.parametrize("case", list(FD_CASES))
def test_float32_in_float32_out(case):
    loss, make = FD_CASES[case]
    pred, target, opts = make(np.random.default_rng(17))
    v64, g64 = loss(pred, target, **opts)
    v32, g32 = loss(pred.astype(np.float32), target, **opts)
    assert g32.dtype == np.float32 and g32.shape == pred.shape
    assert v32 == pytest.approx(v64, rel=1e-5)
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-6)


def test_float32_target_keeps_float64_prediction_dtype():
    rng = np.random.default_rng(18)
    z = _logits(rng)
    for loss, target in [(mse, z.astype(np.float32)),
                         (binary_cross_entropy_with_logits, rng.uniform(size=z.shape).astype(np.float32)),
                         (softmax_cross_entropy, probs(rng, N, C).astype(np.float32))]:
        assert loss(z, target)[1].dtype == np.float64


# ------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------

def test_registry_and_get_loss():
    assert LOSSES == {"cross-entropy": softmax_cross_entropy, "mse": mse,
                      "bce": binary_cross_entropy_with_logits, "focal": focal_loss,
                      "nll": L.nll_loss, "l1": L.l1_loss, "huber": L.huber_loss, "kl": L.kl_div}
    for name, fn in LOSSES.items():
        assert get_loss(name) is fn
    custom = lambda p, t: (0.0, np.zeros_like(p))  # noqa: E731
    assert get_loss(custom) is custom
    with pytest.raises(ValueError, match="unknown loss 'hinge'.*cross-entropy, mse, bce, focal"):
        get_loss("hinge")
    with pytest.raises(TypeError, match="loss must be"):
        get_loss(3)
    assert set(L.__all__) >= {"softmax_cross_entropy", "mse", "binary_cross_entropy_with_logits",
                              "focal_loss", "directional", "get_loss", "LOSSES"}


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------

Z = np.zeros((4, 3))
Y = np.array([0, 1, 2, 0])
NAN = np.array([[0.0, np.nan, 0.0]] * 4)
INF = np.array([[0.0, np.inf, 0.0]] * 4)
BAD_ROWS = np.array([[0.5, 0.4, 0.0]] * 4)

ERROR_CASES = [
    # cross-entropy: logits
    (softmax_cross_entropy, (NAN, Y), {}, ValueError, "logits contains NaN or inf"),
    (softmax_cross_entropy, (INF, Y), {}, ValueError, "logits contains NaN or inf"),
    (softmax_cross_entropy, (Z.astype(int), Y), {}, TypeError, "logits must have dtype float"),
    (softmax_cross_entropy, (Z.tolist(), Y), {}, TypeError, "logits must be a numpy.ndarray"),
    (softmax_cross_entropy, (np.zeros((0, 3)), Y[:0]), {}, ValueError, "logits is empty"),
    (softmax_cross_entropy, (np.zeros(3), Y), {}, ValueError, "logits must be 2-D"),
    # cross-entropy: labels
    (softmax_cross_entropy, (Z, np.array([0, 1, 3, 0])), {}, ValueError, r"target has labels outside \[0, 3\)"),
    (softmax_cross_entropy, (Z, np.array([0, -1, 2, 0])), {}, ValueError, "target has labels outside"),
    (softmax_cross_entropy, (Z, Y[:3]), {}, ValueError,
     "target has 3 labels but the batch has 4 samples"),
    (softmax_cross_entropy, (Z, Y.astype(float)), {}, TypeError, "target must hold integer"),
    # cross-entropy: probability rows
    (softmax_cross_entropy, (Z, BAD_ROWS), {}, ValueError, "target rows must sum to 1"),
    (softmax_cross_entropy, (Z, np.array([[1.5, -0.5, 0.0]] * 4)), {}, ValueError,
     "target has negative"),
    (softmax_cross_entropy, (Z, np.full((4, 4), 0.25)), {}, ValueError, r"target must be .*\(4, 3\)"),
    (softmax_cross_entropy, (Z, NAN), {}, ValueError, "target contains NaN"),
    # cross-entropy: options
    (softmax_cross_entropy, (Z, Y), {"label_smoothing": 1.0}, ValueError, "label_smoothing"),
    (softmax_cross_entropy, (Z, Y), {"label_smoothing": -0.1}, ValueError, "label_smoothing"),
    (softmax_cross_entropy, (Z, Y), {"label_smoothing": "0.1"}, TypeError, "label_smoothing"),
    (softmax_cross_entropy, (Z, Y), {"class_weight": np.ones(4)}, ValueError, "class_weight"),
    (softmax_cross_entropy, (Z, Y), {"class_weight": [1.0, -1.0, 1.0]}, ValueError,
     "class_weight must be non-negative"),
    (softmax_cross_entropy, (Z, Y), {"class_weight": [1.0, np.nan, 1.0]}, ValueError, "class_weight"),
    (softmax_cross_entropy, (Z, np.array([2, 2, 2, 2])), {"class_weight": [1.0, 1.0, 0.0]},
     ValueError, "class_weight"),
    # mse
    (mse, (Z, np.zeros((4, 2))), {}, ValueError, r"target has shape \(4, 2\)"),
    (mse, (Z, np.zeros(12)), {}, ValueError, "target has shape"),
    (mse, (Z, Z.tolist()), {}, TypeError, "target must be a numpy.ndarray"),
    (mse, (Z, NAN), {}, ValueError, "target contains NaN"),
    (mse, (Z.astype(np.int32), Z), {}, TypeError, "pred must have dtype float"),
    (mse, (NAN, Z), {}, ValueError, "pred contains NaN or inf"),
    (mse, (np.zeros((0, 3)), np.zeros((0, 3))), {}, ValueError, "pred is empty"),
    # bce
    (binary_cross_entropy_with_logits, (Z, Z + 2), {}, ValueError, r"target must hold values in \[0, 1\]"),
    (binary_cross_entropy_with_logits, (Z, Z[:, :2]), {}, ValueError, "target has shape"),
    (binary_cross_entropy_with_logits, (NAN, Z), {}, ValueError, "logits contains NaN"),
    (binary_cross_entropy_with_logits, (Z, Z), {"pos_weight": np.ones(4)}, ValueError, "pos_weight"),
    (binary_cross_entropy_with_logits, (Z, Z), {"pos_weight": np.ones((2, 4, 3))}, ValueError,
     "pos_weight"),
    (binary_cross_entropy_with_logits, (Z, Z), {"pos_weight": -1.0}, ValueError,
     "pos_weight must be non-negative"),
    # focal
    (focal_loss, (Z, Y), {"gamma": -1.0}, ValueError, "gamma must be non-negative"),
    (focal_loss, (Z, Y), {"gamma": np.nan}, ValueError, "gamma"),
    (focal_loss, (Z, Y), {"alpha": np.ones(2)}, ValueError, "alpha"),
    (focal_loss, (Z, Y), {"alpha": -0.5}, ValueError, "alpha must be non-negative"),
    (focal_loss, (Z, Y[:2]), {}, ValueError, "target has 2 labels but the batch has 4 samples"),
    (focal_loss, (Z, np.array([0, 1, 5, 0])), {}, ValueError, "target has labels outside"),
    (focal_loss, (NAN, Y), {}, ValueError, "logits contains NaN"),
    (focal_loss, (Z, np.eye(3, dtype=int)[Y]), {}, ValueError, "target must be 1-D"),
    # directional
    (directional, ("mse", Z, Z, np.zeros((4, 2))), {}, ValueError, "dpred must have shape"),
    (directional, ("mse", Z, Z, NAN), {}, ValueError, "dpred contains NaN"),
    (directional, ("mse", Z, Z, np.zeros((4, 3), dtype=int)), {}, TypeError, "dpred"),
]


@pytest.mark.parametrize("loss, args, opts, exc, match", ERROR_CASES,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(ERROR_CASES)])
def test_bad_input_raises_naming_the_argument(loss, args, opts, exc, match):
    with pytest.raises(exc, match=match):
        loss(*args, **opts)


# ------------------------------------------------------------------------------------------
# token-level cross-entropy: logits (..., C), targets (...), as a language model uses it
# ------------------------------------------------------------------------------------------

B, T, V = 3, 5, 7


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_token_cross_entropy_equals_torch_on_flattened_tokens(smoothing, weighted):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    z = rng.normal(scale=2.0, size=(B, T, V))
    y = rng.integers(0, V, size=(B, T))
    w = rng.uniform(0.2, 2.0, size=V) if weighted else None
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    out = torch.nn.functional.cross_entropy(zt.reshape(-1, V), torch.tensor(y).reshape(-1),
                                            weight=None if w is None else torch.tensor(w),
                                            label_smoothing=smoothing)
    out.backward()
    value, grad = softmax_cross_entropy(z, y, label_smoothing=smoothing, class_weight=w)
    assert grad.shape == (B, T, V) and grad.dtype == np.float64
    assert value == pytest.approx(out.item(), rel=1e-12, abs=0)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shape", [(B, T, V), (2, B, T, V), (1, 1, V)])
@pytest.mark.parametrize("soft", [False, True])
def test_token_cross_entropy_is_the_reshaped_call(shape, soft):
    rng = np.random.default_rng(12)
    z = rng.normal(size=shape).astype(np.float32)
    lead = shape[:-1]
    n = int(np.prod(lead))
    target = probs(rng, n, V).reshape(shape) if soft else rng.integers(0, V, size=lead)
    flat_target = target.reshape(n, V) if soft else target.reshape(n)
    opts = {"label_smoothing": 0.2, "class_weight": np.linspace(0.5, 1.5, V)}
    value, grad = softmax_cross_entropy(z, target, **opts)
    ref_value, ref_grad = softmax_cross_entropy(z.reshape(n, V), flat_target, **opts)
    assert value == ref_value and grad.dtype == np.float32
    np.testing.assert_array_equal(grad, ref_grad.reshape(shape))
    # the mean runs over every token: uniform logits cost log V whatever the shape
    assert softmax_cross_entropy(np.zeros(shape), rng.integers(0, V, size=lead))[0] == \
        pytest.approx(np.log(V), rel=1e-12)


def test_token_cross_entropy_gradient_and_directional():
    rng = np.random.default_rng(13)
    z, y = rng.normal(size=(2, 3, 4)), rng.integers(0, 4, size=(2, 3))
    assert_grad_is_fd(softmax_cross_entropy, z, y, label_smoothing=0.1)
    v = rng.normal(size=z.shape)
    value, dvalue = directional("cross-entropy", z, y, v)
    assert dvalue == pytest.approx(np.sum(softmax_cross_entropy(z, y)[1] * v), rel=1e-12)


@pytest.mark.parametrize("target, exc, match", [
    (np.zeros((B, T + 1), np.int64), ValueError,
     r"target has shape \(3, 6\) but logits of shape \(3, 5, 7\) need integer labels of shape \(3, 5\)"),
    (np.zeros((T, B), np.int64), ValueError, r"target has shape \(5, 3\)"),
    (np.zeros(B * T, np.int64), ValueError, "target has shape"),
    (np.zeros((B, T, V + 1)), ValueError, "target has shape"),
    (np.zeros((B, T)), TypeError, "target must hold integer"),
    (np.full((B, T), V), ValueError, r"target has labels outside \[0, 7\)"),
    (np.full((B, T, V), 0.5), ValueError, "target rows must sum to 1"),
    (np.zeros((B, T), np.int64).tolist(), TypeError, "target must be a numpy.ndarray"),
])
def test_token_cross_entropy_bad_target(target, exc, match):
    with pytest.raises(exc, match=match):
        softmax_cross_entropy(np.zeros((B, T, V)), target)


def test_token_cross_entropy_bad_logits():
    with pytest.raises(ValueError, match="logits contains NaN"):
        softmax_cross_entropy(np.full((B, T, V), np.nan), np.zeros((B, T), np.int64))
    with pytest.raises(TypeError, match="logits must have dtype float"):
        softmax_cross_entropy(np.zeros((B, T, V), np.int64), np.zeros((B, T), np.int64))
    with pytest.raises(ValueError, match="logits is empty"):
        softmax_cross_entropy(np.zeros((B, 0, V)), np.zeros((B, 0), np.int64))
