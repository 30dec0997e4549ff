"""Linear warm-up, MultiStepLR, ExponentialLR, ReduceLROnPlateau and OneCycleLR (issue #20): lr
(and momentum) sequences equal to ``torch.optim.lr_scheduler``'s, the registry, bad arguments
refused naming them, and ``fit`` driving ReduceLROnPlateau with the validation loss."""
import warnings

import numpy as np
import pytest

from nograd import Backprop, Linear, ReLU, Sequential, fit
from nograd.core.optim import SGD, Adam
from nograd.data import blobs
from nograd.optimizers import Adagrad, RMSprop
from nograd.schedules import (SCHEDULES, CosineLR, ExponentialLR, LambdaLR, LinearLR, MultiStepLR,
                              OneCycleLR, ReduceLROnPlateau, StepLR, schedule)

LRS = (0.1, 0.03)                # two parameter groups with their own lrs


def ours_opt(cls=SGD, lrs=LRS, **kw):
    return cls([{"params": {f"p{i}": np.zeros(2)}, "lr": lr} for i, lr in enumerate(lrs)],
               lr=1.0, **kw)


def torch_opt(torch, cls_name="SGD", lrs=LRS, **kw):
    return getattr(torch.optim, cls_name)(
        [{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in lrs], **kw)


def torch_sequence(opt, sched, steps, metrics=None, key="lr"):
    """The value of ``key`` in every group after construction and after each step."""
    def read():
        return [g["betas"][0] if key == "betas" else g[key] for g in opt.param_groups]
    out = [read()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # torch's "step the optimizer first" notes
        for i in range(steps):
            opt.step()
            sched.step(*([] if metrics is None else [metrics[i]]))
            out.append(read())
    return np.array(out)


def ours_sequence(opt, sched, steps, metrics=None, key="lr"):
    def read():
        return [g["betas"][0] if key == "betas" else g[key] for g in opt.groups]
    out = [read()]
    for i in range(steps):
        sched.step(*([] if metrics is None else [metrics[i]]))
        out.append(read())
    return np.array(out)


def assert_same(ours, theirs):
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------------------------------ torch
@pytest.mark.parametrize("milestones", [[2, 5, 9], [3, 3, 7], [9, 2]])
def test_multistep_equals_torch(milestones):
    torch = pytest.importorskip("torch")
    t_opt = torch_opt(torch)
    theirs = torch_sequence(t_opt, torch.optim.lr_scheduler.MultiStepLR(t_opt, sorted(milestones),
                                                                         gamma=0.3), 12)
    opt = ours_opt()
    assert_same(ours_sequence(opt, MultiStepLR(opt, milestones, gamma=0.3), 12), theirs)


def test_exponential_equals_torch():
    torch = pytest.importorskip("torch")
    t_opt = torch_opt(torch)
    theirs = torch_sequence(t_opt, torch.optim.lr_scheduler.ExponentialLR(t_opt, gamma=0.85), 15)
    opt = ours_opt()
    assert_same(ours_sequence(opt, ExponentialLR(opt, gamma=0.85), 15), theirs)


@pytest.mark.parametrize("start, end, total", [(1 / 3, 1.0, 5), (0.1, 1.0, 4), (1.0, 0.2, 6)])
def test_linear_equals_torch(start, end, total):
    torch = pytest.importorskip("torch")
    t_opt = torch_opt(torch)
    theirs = torch_sequence(t_opt, torch.optim.lr_scheduler.LinearLR(
        t_opt, start_factor=start, end_factor=end, total_iters=total), total + 3)
    opt = ours_opt()
    assert_same(ours_sequence(opt, LinearLR(opt, start, end, total), total + 3), theirs)


@pytest.mark.parametrize("warmup, start", [(3, 0.25), (4, None), (1, 0.5)])
def test_cosine_with_warmup_equals_torch_linear_then_cosine(warmup, start):
    torch = pytest.importorskip("torch")
    lr_sched = torch.optim.lr_scheduler
    factor = 1.0 / (warmup + 1) if start is None else start      # the default start factor
    t_max = 6
    t_opt = torch_opt(torch)
    seq = lr_sched.SequentialLR(t_opt, [lr_sched.LinearLR(t_opt, start_factor=factor,
                                                          total_iters=warmup),
                                        lr_sched.CosineAnnealingLR(t_opt, T_max=t_max, eta_min=0.01)],
                                milestones=[warmup])
    theirs = torch_sequence(t_opt, seq, warmup + t_max)
    opt = ours_opt()
    kw = {} if start is None else {"warmup_start_factor": start}
    ours = ours_sequence(opt, CosineLR(opt, t_max, eta_min=0.01, warmup=warmup, **kw),
                         warmup + t_max)
    assert_same(ours, theirs)
    assert ours[0][0] == pytest.approx(LRS[0] * factor) and ours[warmup][0] == LRS[0]


@pytest.mark.parametrize("cls, kw, torch_name, torch_kw", [
    (StepLR, {"step_size": 2, "gamma": 0.5}, "StepLR", {"step_size": 2, "gamma": 0.5}),
    (MultiStepLR, {"milestones": [1, 4]}, "MultiStepLR", {"milestones": [1, 4]}),
    (ExponentialLR, {"gamma": 0.9}, "ExponentialLR", {"gamma": 0.9}),
    (LambdaLR, {"fn": lambda t: 1 / (1 + t)}, "LambdaLR", {"lr_lambda": lambda t: 1 / (1 + t)}),
])
def test_warmup_composes_with_every_closed_form_schedule(cls, kw, torch_name, torch_kw):
    torch = pytest.importorskip("torch")
    lr_sched = torch.optim.lr_scheduler
    t_opt = torch_opt(torch)
    seq = lr_sched.SequentialLR(t_opt, [lr_sched.LinearLR(t_opt, start_factor=0.2, total_iters=3),
                                        getattr(lr_sched, torch_name)(t_opt, **torch_kw)],
                                milestones=[3])
    theirs = torch_sequence(t_opt, seq, 10)
    opt = ours_opt()
    assert_same(ours_sequence(opt, cls(opt, **kw, warmup=3, warmup_start_factor=0.2), 10), theirs)


PLATEAU = [
    dict(mode="min", threshold_mode="rel"),
    dict(mode="min", threshold_mode="abs", threshold=0.02, cooldown=2),
    dict(mode="max", threshold_mode="rel", patience=1, factor=0.3),
    dict(mode="max", threshold_mode="abs", threshold=0.0, cooldown=1, min_lr=[0.01, 0.002]),
    dict(mode="min", min_lr=0.02, patience=0),
]


@pytest.mark.parametrize("kw", PLATEAU, ids=[str(i) for i in range(len(PLATEAU))])
def test_reduce_on_plateau_equals_torch(kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    t = np.arange(40)
    metric = np.maximum(0.3, 1.0 - 0.04 * t) + 0.01 * rng.standard_normal(40)
    if kw["mode"] == "max":
        metric = -metric
    metric = [float(m) for m in metric]
    full = {"factor": 0.5, "patience": 2, **kw}
    t_opt = torch_opt(torch)
    theirs = torch_sequence(t_opt, torch.optim.lr_scheduler.ReduceLROnPlateau(t_opt, **full), 40,
                            metrics=metric)
    opt = ours_opt()
    ours = ours_sequence(opt, ReduceLROnPlateau(opt, **full), 40, metrics=metric)
    assert_same(ours, theirs)
    assert ours[-1][0] < LRS[0]                             # the plateau did lower the lr


def test_reduce_on_plateau_stops_at_min_lr_and_honours_cooldown():
    opt = ours_opt(lrs=(1.0,))
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=0, cooldown=1, min_lr=0.3)
    lrs = []
    for _ in range(8):
        sched.step(1.0)                                     # never improves after the first
        lrs.append(opt.groups[0]["lr"])
    assert lrs == [1.0, 0.5, 0.5, 0.3, 0.3, 0.3, 0.3, 0.3]


@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_one_cycle_equals_torch_lr_and_momentum(three_phase, anneal, opt_name):
    torch = pytest.importorskip("torch")
    total = 20
    kw = dict(max_lr=[0.5, 0.2], total_steps=total, pct_start=0.3, anneal_strategy=anneal,
              three_phase=three_phase, div_factor=10.0, final_div_factor=100.0)
    extra = {"momentum": 0.9} if opt_name == "SGD" else {}
    key = "momentum" if opt_name == "SGD" else "betas"
    for what in ("lr", key):
        t_opt = torch_opt(torch, opt_name, **extra)
        theirs = torch_sequence(t_opt, torch.optim.lr_scheduler.OneCycleLR(t_opt, **kw), total,
                                key=what)
        opt = ours_opt(SGD if opt_name == "SGD" else Adam, **extra)
        ours = ours_sequence(opt, OneCycleLR(opt, **kw), total, key=what)
        assert_same(ours, theirs)


def test_one_cycle_epochs_form_and_the_step_limit_as_torch():
    torch = pytest.importorskip("torch")
    t_opt = torch_opt(torch, momentum=0.9)
    t_sched = torch.optim.lr_scheduler.OneCycleLR(t_opt, max_lr=1.0, epochs=3, steps_per_epoch=4,
                                                  cycle_momentum=False)
    theirs = torch_sequence(t_opt, t_sched, 12)
    opt = ours_opt(momentum=0.9)
    sched = OneCycleLR(opt, max_lr=1.0, epochs=3, steps_per_epoch=4, cycle_momentum=False)
    assert_same(ours_sequence(opt, sched, 12), theirs)
    assert [g["momentum"] for g in opt.groups] == [0.9, 0.9]      # not cycled when told so
    with pytest.raises(ValueError, match="Tried to step 13 times"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_sched.step()
    with pytest.raises(ValueError, match="stepped 13 times but total_steps is 12"):
        sched.step()


# ------------------------------------------------------------------------------------------ registry
@pytest.mark.parametrize("name, cls, kw", [
    ("multistep", MultiStepLR, {"milestones": [2]}), ("exponential", ExponentialLR, {"gamma": 0.9}),
    ("linear", LinearLR, {}), ("plateau", ReduceLROnPlateau, {}),
    ("onecycle", OneCycleLR, {"max_lr": 0.5, "total_steps": 10}),
    ("cosine", CosineLR, {"t_max": 4, "warmup": 2}),
])
def test_registered_by_name(name, cls, kw):
    assert SCHEDULES[name] is cls
    opt = ours_opt(momentum=0.9)
    assert type(schedule(name, opt, **kw)) is cls


# ------------------------------------------------------------------------------------------ errors
def _sgd():
    return ours_opt(momentum=0.9)


ERRORS = [
    (MultiStepLR, {"milestones": []}, ValueError, "milestones must be a non-empty"),
    (MultiStepLR, {"milestones": [2, -1]}, ValueError, "milestones"),
    (MultiStepLR, {"milestones": [2.5]}, TypeError, "milestones"),
    (MultiStepLR, {"milestones": 3}, TypeError, "milestones must be a list"),
    (MultiStepLR, {"milestones": [2], "gamma": 0.0}, ValueError, "gamma must be positive"),
    (ExponentialLR, {"gamma": -0.5}, ValueError, "gamma must be positive"),
    (LinearLR, {"start_factor": 0.0}, ValueError, "start_factor"),
    (LinearLR, {"end_factor": 1.5}, ValueError, "end_factor"),
    (LinearLR, {"total_iters": 0}, ValueError, "total_iters"),
    (CosineLR, {"t_max": 5, "warmup": -1}, ValueError, "warmup must be a non-negative integer"),
    (CosineLR, {"t_max": 5, "warmup": 2, "warmup_start_factor": 0.0}, ValueError,
     "warmup_start_factor"),
    (CosineLR, {"t_max": 5, "warmup": 2.5}, TypeError, "warmup"),
    (ReduceLROnPlateau, {"mode": "lowest"}, ValueError, "mode must be 'min' or 'max'"),
    (ReduceLROnPlateau, {"factor": 1.0}, ValueError, r"factor must be a number in \(0, 1\)"),
    (ReduceLROnPlateau, {"patience": -1}, ValueError, "patience must be a non-negative integer"),
    (ReduceLROnPlateau, {"threshold": -0.1}, ValueError, "threshold must be"),
    (ReduceLROnPlateau, {"threshold_mode": "relative"}, ValueError, "threshold_mode must be"),
    (ReduceLROnPlateau, {"cooldown": 1.5}, TypeError, "cooldown"),
    (ReduceLROnPlateau, {"min_lr": -1.0}, ValueError, "min_lr"),
    (ReduceLROnPlateau, {"min_lr": [0.1]}, ValueError, "min_lr has 1 entries but the optimizer has 2"),
    (OneCycleLR, {"max_lr": 0.0, "total_steps": 10}, ValueError, "max_lr"),
    (OneCycleLR, {"max_lr": [0.1, 0.2, 0.3], "total_steps": 10}, ValueError, "max_lr has 3 entries"),
    (OneCycleLR, {"max_lr": 0.1}, ValueError, "total_steps, or epochs and steps_per_epoch"),
    (OneCycleLR, {"max_lr": 0.1, "epochs": 2}, ValueError, "steps_per_epoch"),
    (OneCycleLR, {"max_lr": 0.1, "total_steps": 10, "pct_start": 1.0}, ValueError, "pct_start"),
    (OneCycleLR, {"max_lr": 0.1, "total_steps": 3, "pct_start": 0.3}, ValueError,
     "leaves a phase without steps"),
    (OneCycleLR, {"max_lr": 0.1, "total_steps": 10, "anneal_strategy": "cosine"}, ValueError,
     "anneal_strategy must be 'cos' or 'linear'"),
    (OneCycleLR, {"max_lr": 0.1, "total_steps": 10, "base_momentum": 0.99}, ValueError,
     "base_momentum"),
    (OneCycleLR, {"max_lr": 0.1, "total_steps": 10, "three_phase": 1}, TypeError, "three_phase"),
]


@pytest.mark.parametrize("cls, kw, exc, match", ERRORS,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _, _) in enumerate(ERRORS)])
def test_bad_arguments_are_refused_naming_them(cls, kw, exc, match):
    with pytest.raises(exc, match=match):
        cls(_sgd(), **kw)


def test_one_cycle_momentum_needs_an_optimizer_with_momentum():
    opt = ours_opt(Adagrad)
    with pytest.raises(ValueError, match="cycle_momentum=True needs an optimizer with momentum or "
                                         "betas; Adagrad has neither"):
        OneCycleLR(opt, max_lr=0.1, total_steps=10)
    OneCycleLR(opt, max_lr=0.1, total_steps=10, cycle_momentum=False)
    OneCycleLR(ours_opt(RMSprop), max_lr=0.1, total_steps=10)       # RMSprop has momentum


@pytest.mark.parametrize("bad, exc", [(float("nan"), ValueError), ("low", TypeError),
                                      (None, TypeError), (np.array([1.0, 2.0]), TypeError)])
def test_plateau_metric_must_be_one_finite_number(bad, exc):
    sched = ReduceLROnPlateau(_sgd())
    with pytest.raises(exc, match="metric"):
        sched.step(bad)


def test_plateau_needs_the_metric():
    with pytest.raises(TypeError, match="metric"):
        ReduceLROnPlateau(_sgd()).step()


# ------------------------------------------------------------------------------------------ fit
def _net(seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(Linear(4, 16, rng=rng), ReLU(), Linear(16, 3, rng=rng))


class Recording(ReduceLROnPlateau):
    def step(self, metric):
        self.seen = getattr(self, "seen", []) + [metric]
        super().step(metric)


def test_fit_steps_reduce_on_plateau_with_the_val_loss():
    X, y = blobs(120, 3, 4, rng=0)
    X, y, Xv, yv = X[:90], y[:90], X[90:], y[90:]
    net = _net()
    opt = SGD(net.params, lr=0.1)
    sched = Recording(opt, mode="max", factor=0.5, patience=0)    # a falling loss never "improves"
    hist = fit(net, Backprop(), opt, (X, y), val=(Xv, yv), epochs=4, batch_size=16, rng=0,
               schedule=sched, progress=False)
    assert sched.seen == hist["val_loss"]
    assert hist["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.025])


def test_fit_steps_reduce_on_plateau_with_the_train_loss_without_val():
    X, y = blobs(90, 3, 4, rng=0)
    net = _net()
    opt = SGD(net.params, lr=0.1)
    sched = Recording(opt, patience=5)
    hist = fit(net, Backprop(), opt, (X, y), epochs=3, batch_size=16, rng=0, schedule=sched,
               progress=False)
    assert sched.seen == hist["loss"]


def test_fit_refuses_plateau_per_batch():
    X, y = blobs(30, 3, 4, rng=0)
    net = _net()
    opt = SGD(net.params, lr=0.1)
    with pytest.raises(ValueError, match="schedule_every='batch'.*ReduceLROnPlateau"):
        fit(net, Backprop(), opt, (X, y), epochs=1, batch_size=16, rng=0, progress=False,
            schedule=ReduceLROnPlateau(opt), schedule_every="batch")


def test_fit_runs_one_cycle_per_batch_to_its_last_step():
    X, y = blobs(64, 3, 4, rng=0)
    net = _net()
    opt = SGD(net.params, lr=0.1, momentum=0.9)
    sched = OneCycleLR(opt, max_lr=0.2, epochs=3, steps_per_epoch=4)
    hist = fit(net, Backprop(), opt, (X, y), epochs=3, batch_size=16, rng=0, schedule=sched,
               schedule_every="batch", progress=False)
    assert hist["lr"][0] == pytest.approx(0.2 / 25) and sched.last_step == 12
    assert opt.groups[0]["lr"] < hist["lr"][0]                    # annealed below the start
