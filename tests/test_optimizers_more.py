"""RMSprop, Adagrad and NAdam (issue #20): equal to ``torch.optim`` over several float64 steps, in
place, with parameter groups and clipping, registered in ``get_optimizer``, bad hyper-parameters
refused with an error that names them; and a short fit with each."""
import ast
import os

import numpy as np
import pytest

import nograd
from nograd import Backprop, Linear, ReLU, Sequential, fit
from nograd.core.optim import OPTIMIZERS, Optimizer, get_optimizer
from nograd.data import blobs
from nograd.optimizers import NAdam, RMSprop, Adagrad

SHAPES = {"w": (4, 3), "b": (4,)}
N_STEPS = 7

CASES = [
    (RMSprop, {}),
    (RMSprop, {"lr": 0.03, "alpha": 0.9, "eps": 1e-6}),
    (RMSprop, {"momentum": 0.8}),
    (RMSprop, {"centered": True}),
    (RMSprop, {"centered": True, "momentum": 0.5, "weight_decay": 0.1}),
    (Adagrad, {}),
    (Adagrad, {"lr": 0.1, "lr_decay": 0.1}),
    (Adagrad, {"initial_accumulator_value": 0.3, "eps": 1e-6}),
    (Adagrad, {"weight_decay": 0.05, "lr_decay": 0.01}),
    (NAdam, {}),
    (NAdam, {"momentum_decay": 0.01}),
    (NAdam, {"weight_decay": 0.1}),
    (NAdam, {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    (NAdam, {"betas": (0.8, 0.99), "eps": 1e-6}),
]
IDS = [f"{cls.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}"
       for cls, kw in CASES]


@pytest.fixture
def torch64():
    """PyTorch with float64 default dtype, so its scalar state (NAdam's μ product) is float64."""
    torch = pytest.importorskip("torch")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(old)


def make_params(seed=0, shapes=SHAPES, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


def make_grads(n=N_STEPS, seed=1, shapes=SHAPES, scale=1.0):
    rng = np.random.default_rng(seed)
    return [{k: scale * rng.standard_normal(s) for k, s in shapes.items()} for _ in range(n)]


def torch_run(torch, cls_name, params, grads, groups=None, clip=None, **kw):
    """The torch.optim optimizer of that name over copies of ``params``, stepped on ``grads``;
    ``clip`` rescales each step's gradients by min(1, clip/‖g‖) first (the definition)."""
    tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    if groups is None:
        spec = [{"params": list(tensors.values())}]
    else:
        spec = [{**{h: v for h, v in g.items() if h != "params"},
                 "params": [tensors[k] for k in g["params"]]} for g in groups]
    opt = getattr(torch.optim, cls_name)(spec, foreach=False, **kw)
    for step in grads:
        scale = 1.0
        if clip is not None:
            total = np.sqrt(sum(float(np.sum(g * g)) for g in step.values()))
            scale = min(1.0, clip / total)
        for k, t in tensors.items():
            t.grad = torch.tensor(step[k] * scale)
        opt.step()
    return {k: t.detach().numpy() for k, t in tensors.items()}


def assert_close(ours, theirs):
    for k in theirs:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("cls, kw", CASES, ids=IDS)
def test_equals_torch_over_several_steps(cls, kw, torch64):
    params, grads = make_params(), make_grads()
    theirs = torch_run(torch64, cls.__name__, params, grads, **kw)
    ours = {k: v.copy() for k, v in params.items()}
    opt = cls(ours, **kw)
    for g in grads:
        opt.step(g)
    assert_close(ours, theirs)
    assert not np.allclose(ours["w"], params["w"])          # the steps did move the weights


GROUP_HYPER = {RMSprop: {"lr": 0.05, "alpha": 0.9, "momentum": 0.3, "centered": True},
               Adagrad: {"lr": 0.2, "lr_decay": 0.05, "weight_decay": 0.1},
               NAdam: {"lr": 0.01, "betas": (0.85, 0.95), "momentum_decay": 0.02}}


@pytest.mark.parametrize("cls", [RMSprop, Adagrad, NAdam])
def test_parameter_groups_equal_torch(cls, torch64):
    params, grads = make_params(2), make_grads(seed=3)
    groups = [{"params": ["w"]}, {"params": ["b"], **GROUP_HYPER[cls]}]
    theirs = torch_run(torch64, cls.__name__, params, grads, groups=groups, weight_decay=0.01)
    ours = {k: v.copy() for k, v in params.items()}
    opt = cls([{"params": {"w": ours["w"]}}, {"params": {"b": ours["b"]}, **GROUP_HYPER[cls]}],
              weight_decay=0.01)
    for g in grads:
        opt.step(g)
    assert_close(ours, theirs)
    assert opt.hyper("b")["lr"] == GROUP_HYPER[cls]["lr"]


@pytest.mark.parametrize("cls", [RMSprop, Adagrad, NAdam])
def test_clipping_equals_torch_on_rescaled_gradients(cls, torch64):
    params, grads = make_params(4), make_grads(seed=5, scale=3.0)
    theirs = torch_run(torch64, cls.__name__, params, grads, clip=1.5)
    ours = {k: v.copy() for k, v in params.items()}
    opt = cls(ours, clip_norm=1.5)
    for g in grads:
        opt.step(g)
    assert_close(ours, theirs)
    unclipped = {k: v.copy() for k, v in params.items()}
    plain = cls(unclipped)
    for g in grads:
        plain.step(g)
    assert not np.allclose(unclipped["w"], ours["w"])        # clipping changed the run


@pytest.mark.parametrize("cls, kw", [(RMSprop, {"centered": True, "momentum": 0.9}),
                                     (Adagrad, {"lr_decay": 0.01}), (NAdam, {})],
                         ids=["RMSprop", "Adagrad", "NAdam"])
def test_large_arrays_take_the_fused_path_and_still_equal_torch(cls, kw, torch64):
    shapes = {"w": (300, 250)}                               # ≥ 2**16 elements: the Numba axpy
    params, grads = make_params(6, shapes), make_grads(3, seed=7, shapes=shapes)
    theirs = torch_run(torch64, cls.__name__, params, grads, **kw)
    ours = {k: v.copy() for k, v in params.items()}
    opt = cls(ours, **kw)
    for g in grads:
        opt.step(g)
    assert_close(ours, theirs)


@pytest.mark.parametrize("cls, kw", CASES, ids=IDS)
def test_updates_in_place_and_never_touch_the_gradients(cls, kw):
    params, grads = make_params(), make_grads(3)
    arrays = dict(params)
    before = {k: v.copy() for k, v in params.items()}
    kept = [{k: v.copy() for k, v in g.items()} for g in grads]
    opt = cls(params, **kw)
    for g in grads:
        opt.step(g)
    for k in params:
        assert params[k] is arrays[k] and opt.params[k] is arrays[k]
        assert not np.array_equal(params[k], before[k])
    for g, g0 in zip(grads, kept):
        for k in g:
            np.testing.assert_array_equal(g[k], g0[k])


@pytest.mark.parametrize("cls", [RMSprop, Adagrad, NAdam])
def test_float32_keeps_float32_state_and_follows_float64(cls):
    p64, grads = make_params(8), make_grads(4, seed=9)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    o64, o32 = cls(p64, lr=0.01), cls(p32, lr=0.01)
    for g in grads:
        o64.step(g)
        o32.step({k: v.astype(np.float32) for k, v in g.items()})
    for k in p64:
        assert p32[k].dtype == np.float32
        np.testing.assert_allclose(p32[k], p64[k], rtol=1e-5, atol=1e-6)
    for st in o32.state.values():
        assert all(v.dtype == np.float32 for v in st.values() if isinstance(v, np.ndarray))


@pytest.mark.parametrize("cls", [RMSprop, Adagrad, NAdam])
def test_a_name_missing_from_grads_is_left_alone_and_zero_state_restarts(cls):
    params = make_params()
    b0 = params["b"].copy()
    opt = cls(params, lr=0.1)
    g = make_grads(1)[0]
    opt.step({"w": g["w"]})
    np.testing.assert_array_equal(params["b"], b0)
    assert set(opt.state) == {"w"}
    opt.zero_state()
    assert opt.state == {}


# ------------------------------------------------------------------------------------------ registry
@pytest.mark.parametrize("name, cls", [("rmsprop", RMSprop), ("adagrad", Adagrad), ("nadam", NAdam),
                                       ("NAdam", NAdam), ("RMSprop", RMSprop)])
def test_get_optimizer_finds_them_by_name(name, cls):
    params = make_params()
    opt = get_optimizer(name, params, lr=0.01)
    assert type(opt) is cls and isinstance(opt, Optimizer)
    assert OPTIMIZERS[name.lower()] is cls
    assert getattr(nograd, cls.__name__) is cls


def test_unknown_name_lists_the_new_optimizers():
    with pytest.raises(ValueError, match="unknown optimizer 'lion'.*rmsprop, adagrad, nadam"):
        get_optimizer("lion", make_params())


def test_core_optim_does_not_import_the_optimizers_module_at_import_time():
    """The registry is filled from above (nograd.optimizers adds its classes), not by core reaching
    up: core/optim.py has no module-level import of nograd.optimizers."""
    path = os.path.join(os.path.dirname(nograd.__file__), "core", "optim.py")
    with open(path) as f:
        tree = ast.parse(f.read())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {(n.module or "") for n in top if isinstance(n, ast.ImportFrom)}
    names |= {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
    assert not any("optimizers" in m for m in names), names


# ------------------------------------------------------------------------------------------ errors
P = {"w": np.zeros(3)}
ERRORS = [
    (RMSprop, {"alpha": 1.0}, ValueError, r"alpha must be a number in \[0, 1\)"),
    (RMSprop, {"alpha": -0.1}, ValueError, "alpha"),
    (RMSprop, {"eps": 0.0}, ValueError, "eps must be positive"),
    (RMSprop, {"momentum": 1.0}, ValueError, "momentum"),
    (RMSprop, {"centered": 1}, TypeError, "centered must be a bool"),
    (RMSprop, {"weight_decay": -1.0}, ValueError, "weight_decay must be non-negative"),
    (RMSprop, {"lr": 0.0}, ValueError, "lr must be positive"),
    (Adagrad, {"lr_decay": -0.1}, ValueError, "lr_decay must be non-negative"),
    (Adagrad, {"initial_accumulator_value": -1.0}, ValueError,
     "initial_accumulator_value must be non-negative"),
    (Adagrad, {"eps": -1e-10}, ValueError, "eps must be positive"),
    (Adagrad, {"weight_decay": np.nan}, ValueError, "weight_decay"),
    (NAdam, {"betas": (0.9,)}, TypeError, "betas must be a pair"),
    (NAdam, {"betas": (0.9, 1.0)}, ValueError, r"betas\[1\]"),
    (NAdam, {"momentum_decay": -0.004}, ValueError, "momentum_decay must be non-negative"),
    (NAdam, {"decoupled_weight_decay": "yes"}, TypeError, "decoupled_weight_decay must be a bool"),
    (NAdam, {"clip_norm": 0.0}, ValueError, "clip_norm"),
]


@pytest.mark.parametrize("cls, kw, exc, match", ERRORS,
                         ids=[f"{c.__name__}-{next(iter(k))}-{i}" for i, (c, k, _, _) in enumerate(ERRORS)])
def test_bad_hyper_parameters_are_refused_naming_them(cls, kw, exc, match):
    with pytest.raises(exc, match=match):
        cls(P, **kw)


@pytest.mark.parametrize("cls, key, value", [(RMSprop, "alpha", 2.0), (Adagrad, "lr_decay", -1.0),
                                             (NAdam, "momentum_decay", -1.0)])
def test_a_bad_group_value_names_the_group(cls, key, value):
    with pytest.raises(ValueError, match=rf"{key} \(group 1\)"):
        cls([{"params": {"a": np.zeros(2)}}, {"params": {"b": np.zeros(2)}, key: value}])


@pytest.mark.parametrize("cls", [RMSprop, Adagrad, NAdam])
def test_bad_gradients_are_refused_before_any_change(cls):
    params = make_params()
    before = {k: v.copy() for k, v in params.items()}
    opt = cls(params)
    with pytest.raises(ValueError, match=r"grads\['b'\] contains NaN"):
        opt.step({"w": np.ones((4, 3)), "b": np.full(4, np.nan)})
    with pytest.raises(ValueError, match=r"grads\['w'\] has shape \(3,\)"):
        opt.step({"w": np.ones(3)})
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])


# ------------------------------------------------------------------------------------------ fit
@pytest.mark.parametrize("name", ["rmsprop", "adagrad", "nadam"])
def test_fit_trains_with_each(name):
    X, y = blobs(120, 3, 4, rng=0)
    rng = np.random.default_rng(0)
    net = Sequential(Linear(4, 16, rng=rng), ReLU(), Linear(16, 3, rng=rng))
    opt = get_optimizer(name, net.params, lr=0.01)
    hist = fit(net, Backprop(), opt, (X, y), epochs=8, batch_size=16, rng=0, progress=False)
    assert hist["loss"][-1] < 0.6 * hist["loss"][0]
