"""GRANDE's estimators train through nograd.train.fit with EarlyStopping and one Adam of four
parameter groups; the run is bit for bit the one of the hand-written loop GRANDE had before
(written out here as the reference): batch order, dropout draws, per-step cosine annealing,
the early-stopping rule (no fall of more than 1e-4 for `patience` epochs) and the restored best
weights. Also: fit's `schedule_every="batch"` that this needs."""
import math

import numpy as np
import pytest

from nograd import Adam, Backprop, Linear, fit
from nograd.core.optim import CosineLR
from nograd.estimators import GrandeClassifier, GrandeRegressor
from nograd.models import GrandeNet


def reference_fit(est, X, y, eval_set=None):
    """GRANDE's own training loop (as in nograd/models/grande_base.py before the move).
    Returns (params, loss history, val-loss history, epochs run, best epoch)."""
    Zt, tt, Zv, tv, rng, patience = est._prepare(X, y, eval_set)
    net = GrandeNet(Zt.shape[1], est._n_outputs(), n_estimators=int(est.n_estimators),
                    depth=int(est.depth), feature_fraction=float(est.feature_fraction),
                    selection=est.selection, dropout=float(est.dropout), rng=rng)
    if est.threshold_init == "data":
        net.init_thresholds(Zt, rng)
    P = net.params
    lrs = {"split_values": est.learning_rate_split, "feature_logits": est.learning_rate_feature,
           "leaf_values": est.learning_rate_leaf, "estimator_weights": est.learning_rate_weight}
    opt = Adam([{"params": {k: P[k]}, "lr": float(lr)} for k, lr in lrs.items()])
    n = Zt.shape[0]
    bs = min(int(est.batch_size), n)
    steps = math.ceil(n / bs)
    sched = CosineLR(opt, t_max=steps * int(est.epochs)) if est.cosine_schedule else None
    best, best_loss, since, best_epoch = None, np.inf, 0, None
    losses, val_losses = [], []
    for epoch in range(int(est.epochs)):
        order = rng.permutation(n)
        total = 0.0
        for i in range(steps):
            idx = order[i * bs:(i + 1) * bs]
            out, cache = net.forward(Zt[idx], train=True, rng=rng)
            value, dout = est._loss(out, tt[idx])
            _, grads = net.backward(cache, dout, need_dx=False)
            opt.step(grads)
            if sched is not None:
                sched.step()
            total += value * len(idx)
        losses.append(total / n)
        if Zv is None:
            continue
        val = est._loss(est._raw(net, Zv), tv)[0]
        val_losses.append(val)
        if val < best_loss - 1e-4:
            best_loss, since, best_epoch = val, 0, epoch + 1
            best = {k: v.copy() for k, v in P.items()}
        else:
            since += 1
            if patience and since >= patience:
                break
    if best is not None:
        for k, v in best.items():
            P[k][...] = v
    return P, losses, val_losses, len(losses), best_epoch or len(losses)


def _data(n=160, seed=1, noisy=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    y = (rng.random(n) < 0.5) if noisy else (X[:, 0] + X[:, 1] > 0)
    return X, y.astype(int)


SMALL = {"n_estimators": 8, "depth": 3, "epochs": 12, "random_state": 3}
CASES = {
    "held-out split, patience 20": (GrandeClassifier, SMALL, {}, False),
    "patience 3 stops early": (GrandeClassifier, {**SMALL, "epochs": 40, "early_stopping": 3,
                                                  "learning_rate_leaf": 0.1}, {}, True),
    "patience 1": (GrandeClassifier, {**SMALL, "epochs": 40, "early_stopping": 1,
                                      "learning_rate_leaf": 0.1}, {}, True),
    "no early stopping": (GrandeClassifier, {**SMALL, "early_stopping": False}, {}, False),
    "cosine, focal, dropout, eval_set": (GrandeClassifier, {
        **SMALL, "loss": "focal", "cosine_schedule": True, "dropout": 0.2, "selection": "softmax",
        "threshold_init": "normal", "class_weight": None, "batch_size": 32}, {"eval_set": True},
        False),
    "eval_set, patience 0": (GrandeClassifier, {**SMALL, "early_stopping": 0, "batch_size": 48,
                                                "cosine_schedule": True}, {"eval_set": True}, False),
    "odd batch size": (GrandeClassifier, {**SMALL, "batch_size": 37}, {}, False),
    "regressor, cosine, dropout": (GrandeRegressor, {**SMALL, "epochs": 20, "cosine_schedule": True,
                                                     "dropout": 0.1, "batch_size": 50}, {}, False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fit_reproduces_grandes_own_loop_bit_for_bit(case):
    cls, kw, extra, noisy = CASES[case]
    X, y = _data(noisy=noisy)
    if cls is GrandeRegressor:
        y = 2 * X[:, 0] + (X[:, 1] > 0)
    fit_kw = {"eval_set": (X[110:], y[110:])} if extra.get("eval_set") else {}
    Xt, yt = (X[:110], y[:110]) if fit_kw else (X, y)
    est = cls(**kw).fit(Xt, yt, **fit_kw)
    P, losses, val_losses, n_epochs, best_epoch = reference_fit(cls(**kw), Xt, yt,
                                                                fit_kw.get("eval_set"))
    assert est.history_["loss"] == losses
    assert est.history_["val_loss"] == val_losses
    assert (est.n_epochs_, est.best_epoch_) == (n_epochs, best_epoch)
    for k, v in P.items():
        np.testing.assert_array_equal(est.net_.params[k], v, err_msg=k)


def test_the_cases_cover_stopping_restoring_and_running_to_the_end():
    """The comparison above is only as good as its cases: one stops early and restores an
    earlier epoch; one has validation but runs every epoch; the cosine ones take several steps
    per epoch (so a schedule stepped per epoch would differ)."""
    X, y = _data(noisy=True)
    est = GrandeClassifier(**CASES["patience 3 stops early"][1]).fit(X, y)
    assert est.n_epochs_ < 40 and est.best_epoch_ < est.n_epochs_
    X, y = _data()
    est = GrandeClassifier(**CASES["eval_set, patience 0"][1]).fit(X[:110], y[:110],
                                                                   eval_set=(X[110:], y[110:]))
    assert est.n_epochs_ == 12 and len(est.history_["val_loss"]) == 12
    for case in CASES.values():
        if case[1].get("cosine_schedule"):
            assert case[1]["batch_size"] < 110


def test_the_four_learning_rates_are_four_groups_of_one_optimizer(monkeypatch):
    import nograd.estimators.grande_base as base

    seen = []

    def spy(model, rule, optimizer, train, **kw):
        seen.append({name: group["lr"] for group in optimizer.groups for name in group["params"]})
        assert set(optimizer.params) == set(model.params)
        return real(model, rule, optimizer, train, **kw)

    real = base.fit
    monkeypatch.setattr(base, "fit", spy)
    X, y = _data()
    GrandeClassifier(n_estimators=4, depth=2, epochs=1, learning_rate_split=0.5,
                     learning_rate_feature=0.25, learning_rate_leaf=0.125,
                     learning_rate_weight=0.0625, random_state=0).fit(X, y)
    assert seen == [{"split_values": 0.5, "feature_logits": 0.25, "leaf_values": 0.125,
                     "estimator_weights": 0.0625}]


def _one_layer_run(schedule_every, epochs=2, n=40, bs=10):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    net = Linear(3, 2, rng=0)
    opt = Adam(net.params, lr=0.1)
    sched = CosineLR(opt, t_max=epochs * (n // bs))
    hist = fit(net, Backprop(), opt, (X, y), epochs=epochs, batch_size=bs, rng=0, progress=False,
               schedule=sched, schedule_every=schedule_every)
    return sched.last_step, hist["lr"]


def test_fit_steps_a_schedule_per_batch_or_per_epoch():
    steps, lrs = _one_layer_run("batch")
    assert steps == 8
    assert lrs[0] == pytest.approx(0.1) and lrs[1] == pytest.approx(0.05)   # half-way: cos(π/2)
    steps, lrs = _one_layer_run("epoch")
    assert steps == 2 and lrs[1] == pytest.approx(0.1 * (1 + math.cos(math.pi / 8)) / 2)
    with pytest.raises(ValueError, match="schedule_every"):
        _one_layer_run("step")
