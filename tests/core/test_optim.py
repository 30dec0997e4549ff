"""Tests for nograd.core.optim: references, PyTorch, in-place updates, groups, clipping, schedules."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nograd.core.optim import (SGD, Adam, AdamW, CosineLR, LambdaLR, StepLR, clip_grad_norm,
                               get_optimizer, schedule)
from nograd.testing.strategies import seeds

SHAPES = {"w": (4, 3), "b": (4,), "k": (2, 3, 2, 2)}
N_STEPS = 6


# ------------------------------------------------------------------------------------------
# references: the update rules written out plainly, float64, one array at a time
# ------------------------------------------------------------------------------------------

def ref_sgd(p, grads, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    p = p.copy()
    buf = None
    for g in grads:
        d = g + weight_decay * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
    return p


def ref_adam(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    """Kingma & Ba Alg. 1 with bias-corrected moments; L2 or decoupled decay."""
    p = p.copy()
    b1, b2 = betas
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def make_params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def make_grads(n=N_STEPS, dtype=np.float64, seed=1, scale=1.0):
    rng = np.random.default_rng(seed)
    return [{k: (scale * rng.standard_normal(s)).astype(dtype) for k, s in SHAPES.items()}
            for _ in range(n)]


def run(opt_cls, params, grads_seq, **kw):
    opt = opt_cls(params, **kw)
    for grads in grads_seq:
        opt.step(grads)
    return opt


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.1, weight_decay=0.05),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    dict(lr=0.05, momentum=0.7, dampening=0.5, weight_decay=0.02),
]
ADAM_CONFIGS = [
    (Adam, dict(lr=0.01)),
    (Adam, dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    (AdamW, dict(lr=0.01)),
    (AdamW, dict(lr=0.02, betas=(0.5, 0.9), weight_decay=0.3)),
]


# ------------------------------------------------------------------------------------------
# numerical agreement
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", SGD_CONFIGS, ids=lambda kw: ",".join(kw))
def test_sgd_matches_reference(kw):
    params, grads = make_params(), make_grads()
    start = {k: v.copy() for k, v in params.items()}
    run(SGD, params, grads, **kw)
    for k in params:
        want = ref_sgd(start[k], [g[k] for g in grads], **kw)
        np.testing.assert_allclose(params[k], want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls,kw", ADAM_CONFIGS, ids=lambda x: getattr(x, "__name__", None))
def test_adam_matches_reference(cls, kw):
    params, grads = make_params(), make_grads()
    start = {k: v.copy() for k, v in params.items()}
    run(cls, params, grads, **kw)
    ref_kw = dict(kw)
    ref_kw.setdefault("weight_decay", 1e-2 if cls is AdamW else 0.0)
    for k in params:
        want = ref_adam(start[k], [g[k] for g in grads], decoupled=cls is AdamW, **ref_kw)
        np.testing.assert_allclose(params[k], want, rtol=1e-12, atol=1e-14)


def test_strided_and_fortran_params_agree():
    base = np.random.default_rng(3).standard_normal((4, 8))
    view = base[:, ::2]                      # writeable, not contiguous
    fortran = np.asfortranarray(np.random.default_rng(4).standard_normal((3, 5)))
    start_v, start_f = view.copy(), fortran.copy()
    rng = np.random.default_rng(5)
    grads = [{"v": rng.standard_normal(view.shape),
              "f": np.asfortranarray(rng.standard_normal(fortran.shape))}
             for _ in range(4)]
    run(SGD, {"v": view, "f": fortran}, grads, lr=0.1, momentum=0.9, weight_decay=0.01)
    np.testing.assert_allclose(view, ref_sgd(start_v, [g["v"] for g in grads], 0.1, 0.9,
                                             weight_decay=0.01), rtol=1e-12)
    np.testing.assert_allclose(fortran, ref_sgd(start_f, [g["f"] for g in grads], 0.1, 0.9,
                                                weight_decay=0.01), rtol=1e-12)
    np.testing.assert_array_equal(base[:, 1::2], np.random.default_rng(3).standard_normal((4, 8))[:, 1::2])


TORCH_CASES = [("sgd", kw) for kw in SGD_CONFIGS] + [
    ("adam", dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    ("adam", dict(lr=0.003)),
    ("adamw", dict(lr=0.01, weight_decay=0.3)),
    ("adamw", dict(lr=0.01)),
]


@pytest.mark.parametrize("name,kw", TORCH_CASES, ids=lambda x: x if isinstance(x, str) else None)
def test_matches_torch(name, kw):
    torch = pytest.importorskip("torch")
    torch_cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    params, grads = make_params(), make_grads(n=5)
    tparams = [torch.tensor(params[k].copy(), dtype=torch.float64, requires_grad=True)
               for k in params]
    topt = torch_cls(tparams, **kw)
    opt = get_optimizer(name, params, **kw)
    for step in grads:
        for tp, k in zip(tparams, params):
            tp.grad = torch.tensor(step[k].copy(), dtype=torch.float64)
        topt.step()
        opt.step(step)
    for tp, k in zip(tparams, params):
        np.testing.assert_allclose(params[k], tp.detach().numpy(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------
# in place, dtype, grads untouched, missing names
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kw", [("sgd", dict(lr=0.1)), ("sgd", dict(lr=0.1, momentum=0.9)),
                                     ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True,
                                                  weight_decay=0.1)),
                                     ("adam", dict(lr=0.1, weight_decay=0.1)),
                                     ("adamw", dict(lr=0.1))])
@pytest.mark.parametrize("clip", [None, 0.5])
def test_in_place_float32_grads_untouched(name, kw, clip):
    params = make_params(np.float32)
    arrays = dict(params)
    ids = {k: id(v) for k, v in params.items()}
    before = {k: v.copy() for k, v in params.items()}
    grads_seq = make_grads(3, np.float32, scale=10.0)
    grads_copy = [{k: g.copy() for k, g in s.items()} for s in grads_seq]
    opt = get_optimizer(name, params, clip_norm=clip, **kw)
    opt.step(grads_seq[0])
    state_ids = {(k, n): id(a) for k, st_ in opt.state.items() for n, a in st_.items()
                 if isinstance(a, np.ndarray)}
    for s in grads_seq[1:]:
        opt.step(s)
    assert state_ids == {(k, n): id(a) for k, st_ in opt.state.items() for n, a in st_.items()
                                 if isinstance(a, np.ndarray)}
    for k in params:
        assert params[k] is arrays[k] and id(params[k]) == ids[k]
        assert params[k].dtype == np.float32
        assert not np.array_equal(params[k], before[k])
        for s, c in zip(grads_seq, grads_copy):
            np.testing.assert_array_equal(s[k], c[k])
    for st_ in opt.state.values():
        for buf in st_.values():
            if isinstance(buf, np.ndarray):
                assert buf.dtype == np.float32


def test_float32_close_to_float64():
    p32, p64 = make_params(np.float32), make_params(np.float64)
    g64 = make_grads(5)
    g32 = [{k: g.astype(np.float32) for k, g in s.items()} for s in g64]
    run(Adam, p32, g32, lr=0.01)
    run(Adam, p64, g64, lr=0.01)
    for k in p32:
        np.testing.assert_allclose(p32[k], p64[k], rtol=1e-5, atol=1e-5)


def test_float64_grads_on_float32_params():
    params = make_params(np.float32)
    grads = make_grads(3)
    start = {k: v.astype(np.float64) for k, v in params.items()}
    run(SGD, params, grads, lr=0.1, momentum=0.5)
    for k in params:
        assert params[k].dtype == np.float32
        np.testing.assert_allclose(params[k], ref_sgd(start[k], [g[k] for g in grads], 0.1, 0.5),
                                   rtol=1e-5, atol=1e-6)


def test_missing_names_are_not_updated_and_steps_count_per_parameter():
    params, grads = make_params(), make_grads(3)
    start = {k: v.copy() for k, v in params.items()}
    opt = Adam(params, lr=0.01)
    opt.step({"w": grads[0]["w"]})
    np.testing.assert_array_equal(params["b"], start["b"])
    np.testing.assert_array_equal(params["k"], start["k"])
    opt.step(grads[1])
    assert opt.state["w"]["step"] == 2 and opt.state["b"]["step"] == 1
    # "b" got its first update in the second call, so its bias correction uses t = 1
    np.testing.assert_allclose(params["b"], ref_adam(start["b"], [grads[1]["b"]], 0.01), rtol=1e-12)
    np.testing.assert_allclose(params["w"], ref_adam(start["w"], [grads[0]["w"], grads[1]["w"]], 0.01),
                               rtol=1e-12)


@pytest.mark.parametrize("cls,kw", [(SGD, dict(lr=0.1, momentum=0.9)), (Adam, dict(lr=0.01))])
def test_zero_state_restarts_the_moments(cls, kw):
    params, grads = make_params(), make_grads(3)
    opt = cls(params, **kw)
    opt.step(grads[0])
    opt.step(grads[1])
    opt.zero_state()
    assert opt.state == {}
    after_two = {k: v.copy() for k, v in params.items()}
    opt.step(grads[2])
    fresh = {k: v.copy() for k, v in after_two.items()}
    cls(fresh, **kw).step(grads[2])
    for k in params:
        np.testing.assert_allclose(params[k], fresh[k], rtol=1e-14)
    assert opt.reset == opt.zero_state


# ------------------------------------------------------------------------------------------
# parameter groups
# ------------------------------------------------------------------------------------------

def test_groups_with_different_lr():
    params, grads = make_params(), make_grads(1)[0]
    start = {k: v.copy() for k, v in params.items()}
    opt = SGD([{"params": {"w": params["w"]}},
               {"params": {"b": params["b"], "k": params["k"]}, "lr": 0.5, "momentum": 0.9}],
              lr=0.1)
    assert [g["lr"] for g in opt.groups] == [0.1, 0.5]
    assert [g["initial_lr"] for g in opt.groups] == [0.1, 0.5]
    assert [g["momentum"] for g in opt.groups] == [0.0, 0.9]
    assert list(opt.params) == ["w", "b", "k"]
    opt.step(grads)
    np.testing.assert_allclose(start["w"] - params["w"], 0.1 * grads["w"], rtol=1e-12)
    np.testing.assert_allclose(start["b"] - params["b"], 0.5 * grads["b"], rtol=1e-12)
    assert "b" in opt.state and "w" not in opt.state       # only the momentum group keeps a buffer


def test_name_in_two_groups_is_refused():
    params = make_params()
    with pytest.raises(ValueError, match="'w'.*more than one group"):
        SGD([{"params": {"w": params["w"]}}, {"params": {"w": params["w"], "b": params["b"]}}],
            lr=0.1)


def test_same_array_twice_is_refused():
    w = np.zeros(3)
    with pytest.raises(ValueError, match="same array"):
        SGD({"a": w, "b": w}, lr=0.1)


@pytest.mark.parametrize("params,exc,match", [
    ([{"params": {"w": np.zeros(2)}, "momentun": 0.9}], ValueError, "momentun"),
    ([{"params": {"w": np.zeros(2)}, "lr": -1.0}], ValueError, r"lr \(group 0\)"),
    ([{"params": {"w": np.zeros(2)}, "momentum": 1.5}], ValueError, "momentum"),
    ([{"w": np.zeros(2)}], TypeError, "'params'"),
    ([{"params": [np.zeros(2)]}], TypeError, "params"),
    ([], ValueError, "empty"),
    ({}, ValueError, "no arrays"),
    ({"w": np.zeros(2, np.int64)}, TypeError, r"params\['w'\]"),
    ({"w": [1.0, 2.0]}, TypeError, r"params\['w'\]"),
    (np.zeros(3), TypeError, "params"),
])
def test_bad_params(params, exc, match):
    with pytest.raises(exc, match=match):
        SGD(params, lr=0.1)


def test_read_only_param_is_refused():
    w = np.zeros(3)
    w.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['w'\].*read-only"):
        SGD({"w": w}, lr=0.1)


# ------------------------------------------------------------------------------------------
# gradient validation (and atomicity: a bad grad changes nothing)
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad,exc,match", [
    ({"nope": np.zeros(3)}, ValueError, "unknown parameter name 'nope'"),
    ({"w": np.zeros((3, 4))}, ValueError, r"grads\['w'\] has shape \(3, 4\), expected \(4, 3\)"),
    ({"b": np.array([1.0, np.nan, 0.0, 0.0])}, ValueError, r"grads\['b'\] contains NaN or inf"),
    ({"b": np.array([1.0, np.inf, 0.0, 0.0])}, ValueError, r"grads\['b'\] contains NaN or inf"),
    ({"b": np.array([1.0, np.inf, -np.inf, 0.0])}, ValueError, r"grads\['b'\] contains NaN or inf"),
    ({"b": np.zeros(4, np.int64)}, TypeError, r"grads\['b'\]"),
    ({"b": [0.0, 0.0, 0.0, 0.0]}, TypeError, r"grads\['b'\]"),
])
@pytest.mark.parametrize("cls", [SGD, Adam])
def test_bad_grads(cls, bad, exc, match):
    params = make_params()
    start = {k: v.copy() for k, v in params.items()}
    opt = cls(params, lr=0.1)
    grads = {"w": np.ones((4, 3)), **bad}       # "w" is valid and comes first
    with pytest.raises(exc, match=match):
        opt.step(grads)
    for k in params:
        np.testing.assert_array_equal(params[k], start[k])
    assert opt.state == {}


def test_grads_must_be_a_dict():
    with pytest.raises(TypeError, match="grads"):
        SGD(make_params(), lr=0.1).step([np.zeros(3)])


# ------------------------------------------------------------------------------------------
# hyper-parameter validation
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,kw,exc,match", [
    (SGD, dict(lr=0.0), ValueError, "lr"),
    (SGD, dict(lr=-0.1), ValueError, "lr"),
    (SGD, dict(lr="0.1"), TypeError, "lr"),
    (SGD, dict(lr=float("nan")), ValueError, "lr"),
    (SGD, dict(lr=0.1, momentum=1.0), ValueError, "momentum"),
    (SGD, dict(lr=0.1, momentum=-0.5), ValueError, "momentum"),
    (SGD, dict(lr=0.1, dampening=1.5), ValueError, "dampening"),
    (SGD, dict(lr=0.1, weight_decay=-1e-4), ValueError, "weight_decay"),
    (SGD, dict(lr=0.1, nesterov=True), ValueError, "nesterov"),
    (SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError, "nesterov"),
    (SGD, dict(lr=0.1, nesterov="yes"), TypeError, "nesterov"),
    (SGD, dict(lr=0.1, clip_norm=0.0), ValueError, "clip_norm"),
    (SGD, dict(lr=0.1, clip_norm=-1), ValueError, "clip_norm"),
    (Adam, dict(lr=-1e-3), ValueError, "lr"),
    (Adam, dict(betas=(1.0, 0.999)), ValueError, r"betas\[0\]"),
    (Adam, dict(betas=(0.9, 1.2)), ValueError, r"betas\[1\]"),
    (Adam, dict(betas=(0.9, -0.1)), ValueError, r"betas\[1\]"),
    (Adam, dict(betas=0.9), TypeError, "betas"),
    (Adam, dict(betas=(0.9,)), TypeError, "betas"),
    (Adam, dict(eps=0.0), ValueError, "eps"),
    (Adam, dict(eps=None), TypeError, "eps"),
    (AdamW, dict(weight_decay=-0.1), ValueError, "weight_decay"),
])
def test_bad_hyper_parameters(cls, kw, exc, match):
    with pytest.raises(exc, match=match):
        cls(make_params(), **kw)


def test_get_optimizer():
    params = make_params()
    assert isinstance(get_optimizer("sgd", params, lr=0.1), SGD)
    assert isinstance(get_optimizer("Adam", params), Adam)
    opt = get_optimizer("adamw", params)
    assert type(opt) is AdamW and opt.groups[0]["weight_decay"] == 1e-2
    with pytest.raises(ValueError, match="sgd, adam, adamw, rmsprop, adagrad, nadam"):
        get_optimizer("lion", params)
    with pytest.raises(TypeError, match="name"):
        get_optimizer(None, params)


# ------------------------------------------------------------------------------------------
# clipping
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("factor", [0.25, 0.9])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_grad_norm(dtype, factor):
    grads = make_grads(1, dtype, scale=3.0)[0]
    copies = {k: g.copy() for k, g in grads.items()}
    total = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    rtol = 1e-5 if dtype == np.float32 else 1e-12

    clipped, norm = clip_grad_norm(grads, total * factor)
    assert isinstance(norm, float)
    assert norm == pytest.approx(total, rel=rtol)
    new_total = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in clipped.values()))
    assert new_total == pytest.approx(total * factor, rel=rtol)
    for k in grads:
        assert clipped[k].dtype == dtype
        np.testing.assert_allclose(clipped[k], grads[k] * factor, rtol=rtol)
        np.testing.assert_array_equal(grads[k], copies[k])       # caller's arrays untouched

    same, norm2 = clip_grad_norm(grads, total * 1.01)
    assert norm2 == pytest.approx(total, rel=rtol)
    assert all(same[k] is grads[k] for k in grads)                # below the bar: no copies


def test_clip_grad_norm_edge_cases():
    huge = {"a": np.full(4, 1e30, np.float32)}                    # squares overflow float32
    clipped, norm = clip_grad_norm(huge, 1.0)
    assert norm == pytest.approx(2e30, rel=1e-6)
    np.testing.assert_allclose(clipped["a"], 0.5, rtol=1e-6)
    assert clip_grad_norm({}, 1.0) == ({}, 0.0)
    with pytest.raises(ValueError, match=r"grads\['a'\] contains NaN or inf"):
        clip_grad_norm({"a": np.array([np.nan, 1.0])}, 1.0)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm({"a": np.ones(2)}, 0.0)
    with pytest.raises(TypeError, match="max_norm"):
        clip_grad_norm({"a": np.ones(2)}, "1")


@pytest.mark.parametrize("cls,kw", [(SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.1)),
                                    (Adam, dict(lr=0.01, weight_decay=0.1)),
                                    (AdamW, dict(lr=0.01))])
def test_clip_norm_option_equals_clipping_first(cls, kw):
    grads = make_grads(4, scale=5.0)
    clipped = [clip_grad_norm(s, 1.5)[0] for s in grads]
    assert any(c["w"] is not s["w"] for c, s in zip(clipped, grads))   # clipping is active
    p1, p2 = make_params(), make_params()
    run(cls, p1, grads, clip_norm=1.5, **kw)
    run(cls, p2, clipped, **kw)
    for k in p1:
        np.testing.assert_allclose(p1[k], p2[k], rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------------
# schedules
# ------------------------------------------------------------------------------------------

def two_group_sgd():
    params = make_params()
    return SGD([{"params": {"w": params["w"]}}, {"params": {"b": params["b"]}, "lr": 0.3}], lr=0.1)


def test_step_lr_closed_form():
    opt = two_group_sgd()
    sched = StepLR(opt, step_size=3, gamma=0.5)
    for t in range(12):
        want = [0.1 * 0.5 ** (t // 3), 0.3 * 0.5 ** (t // 3)]
        assert sched.lr == pytest.approx(want, rel=1e-15)
        assert [g["lr"] for g in opt.groups] == sched.get_lr()
        sched.step()
    assert [g["initial_lr"] for g in opt.groups] == [0.1, 0.3]


def test_cosine_lr_closed_form():
    opt = two_group_sgd()
    sched = CosineLR(opt, t_max=7, eta_min=0.01)
    for t in range(11):
        tc = min(t, 7)
        want = [0.01 + 0.5 * (base - 0.01) * (1 + math.cos(math.pi * tc / 7)) for base in (0.1, 0.3)]
        assert sched.lr == pytest.approx(want, rel=1e-14)
        sched.step()
    assert sched.lr == pytest.approx([0.01, 0.01])


def test_lambda_lr_and_factory():
    opt = two_group_sgd()
    sched = LambdaLR(opt, lambda t: 1.0 / (1 + t))
    assert sched.lr == pytest.approx([0.1, 0.3])
    sched.step()
    sched.step()
    assert sched.lr == pytest.approx([0.1 / 3, 0.3 / 3])
    assert isinstance(schedule("step", opt, step_size=2), StepLR)
    cos = schedule("cosine", opt, t_max=4)
    assert isinstance(cos, CosineLR) and cos.lr == pytest.approx([0.1, 0.3])
    with pytest.raises(ValueError, match="step, cosine"):
        schedule("warmup", opt)
    bad = LambdaLR(two_group_sgd(), lambda t: 1.0 - t)
    with pytest.raises(ValueError, match=r"fn\(2\)"):
        bad.step()
        bad.step()


@pytest.mark.parametrize("cls,kw,match", [
    (StepLR, dict(step_size=0), "step_size"),
    (StepLR, dict(step_size=2.5), "step_size"),
    (StepLR, dict(step_size=2, gamma=-0.1), "gamma"),
    (CosineLR, dict(t_max=0), "t_max"),
    (CosineLR, dict(t_max=3, eta_min=-1.0), "eta_min"),
    (LambdaLR, dict(fn=0.5), "fn"),
])
def test_bad_schedule_arguments(cls, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        cls(two_group_sgd(), **kw)


def test_schedule_needs_an_optimizer():
    with pytest.raises(TypeError, match="optimizer"):
        StepLR("sgd", step_size=2)


def quadratic(seed, m=8, n=5):
    """f(θ) = ½‖Aθ - b‖², its gradient, its Lipschitz constant ‖A‖₂² and its minimum value."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n))
    b = rng.standard_normal(m)
    f = lambda th: 0.5 * float(np.sum((A @ th - b) ** 2))    # noqa: E731
    grad = lambda th: A.T @ (A @ th - b)                       # noqa: E731
    lipschitz = np.linalg.norm(A, 2) ** 2
    f_star = f(np.linalg.lstsq(A, b, rcond=None)[0])
    return f, grad, lipschitz, f_star


@pytest.mark.parametrize("make", [
    lambda p, L: (SGD(p, lr=1.0 / L, momentum=0.5), lambda o: CosineLR(o, t_max=200)),
    lambda p, L: (Adam(p, lr=0.1), lambda o: StepLR(o, step_size=50, gamma=0.5)),
])
def test_scheduled_optimizer_minimises_a_quadratic(make):
    f, grad, L, f_star = quadratic(0)
    theta = np.zeros(5)
    opt, mk = make({"theta": theta}, L)
    sched = mk(opt)
    f0 = f(theta)
    for _ in range(200):
        opt.step({"theta": grad(theta)})
        sched.step()
    assert f(theta) - f_star < 1e-3 * (f0 - f_star)


@settings(max_examples=40, deadline=None)
@given(seed=seeds(), m=st.integers(1, 10), n=st.integers(1, 10), frac=st.floats(0.05, 0.9))
def test_sgd_decreases_random_quadratics(seed, m, n, frac):
    """f(θ) = ½‖Aθ - b‖² with lr = frac / L (L = ‖A‖₂²): f never increases and falls overall."""
    f, grad, L, f_star = quadratic(seed, m, n)
    theta = np.random.default_rng(seed + 1).standard_normal(n)
    if np.linalg.norm(grad(theta)) < 1e-6:
        return
    opt = SGD({"theta": theta}, lr=frac / L)
    values = [f(theta)]
    for _ in range(50):
        opt.step({"theta": grad(theta)})
        values.append(f(theta))
    assert all(b <= a * (1 + 1e-12) + 1e-15 for a, b in zip(values, values[1:]))
    assert values[-1] < values[0]
