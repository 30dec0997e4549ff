"""fit: learning, history, early stopping with best-weights restore, checkpoints, schedules,
progress line and argument errors."""
import csv
import io
import json
import sys

import numpy as np
import pytest

import nograd
from nograd import Adam, Backprop, Linear, ReLU, Sequential
from nograd.core.optim import SGD, StepLR
from nograd.data import blobs, spirals
from nograd.rules import Rule
from nograd.train import (Callback, Checkpoint, EarlyStopping, EpochLogger, History, evaluate, fit)
from nograd import train as train_mod


def mlp(seed=0, d_in=2, hidden=32, k=3):
    rng = np.random.default_rng(seed)
    return Sequential(Linear(d_in, hidden, rng=rng), ReLU(), Linear(hidden, k, rng=rng))


def snapshot(model):
    return {k: v.copy() for k, v in model.params.items()}


class Recorder(Callback):
    def on_train_begin(self, state):
        self.params = []

    def on_epoch_end(self, state):
        self.params.append(snapshot(state.model))


def test_fit_reduces_loss_and_records_history(tmp_path):
    X, y = spirals(100, 3, noise=0.1, rng=0)
    Xv, yv = spirals(50, 3, noise=0.1, rng=1)
    net = mlp()
    hist = fit(net, Backprop(), Adam(net.params, lr=0.01), (X, y), val=(Xv, yv), epochs=30,
               batch_size=32, rng=0, progress=False)
    assert len(hist) == 30 and hist["epoch"] == list(range(1, 31))
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert hist["val_accuracy"][-1] > 0.8 and hist["train_accuracy"][-1] > 0.8
    assert set(hist.keys()) >= {"loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    ev = evaluate(net, Xv, yv)
    assert ev["loss"] == pytest.approx(hist["val_loss"][-1], rel=1e-5)
    doc = json.loads(hist.to_json())
    assert len(doc["epochs"]) == 30 and doc["train_seconds"] > 0
    hist.to_csv(tmp_path / "h.csv")
    rows = list(csv.DictReader(open(tmp_path / "h.csv")))
    assert len(rows) == 30 and float(rows[0]["loss"]) == pytest.approx(hist["loss"][0])
    with pytest.raises(KeyError, match="no column 'nope'"):
        hist["nope"]


def test_fit_is_deterministic_under_a_seed():
    X, y = blobs(120, 3, 4, rng=0)

    def run(seed):
        net = mlp(0, d_in=4)
        h = fit(net, Backprop(), SGD(net.params, lr=0.05, momentum=0.9), (X, y), epochs=3,
                batch_size=16, rng=seed, progress=False)
        return h["loss"], nograd.flatten_params(net.params)

    (l1, p1), (l2, p2), (l3, _) = run(7), run(7), run(8)
    assert l1 == l2 and np.array_equal(p1, p2) and l1 != l3


def test_early_stopping_restores_the_best_weights():
    # validation labels are the training labels shifted by one: the better the fit, the worse the
    # validation loss, so the best validation epoch is early and training must stop.
    X, y = blobs(150, 3, 2, spread=0.5, rng=0)
    val = (X, (y + 1) % 3)
    net = mlp(1)
    rec = Recorder()
    stop = EarlyStopping("val_loss", patience=2)
    hist = fit(net, Backprop(), Adam(net.params, lr=0.02), (X, y), val=val, epochs=40,
               batch_size=30, rng=0, callbacks=[rec, stop], progress=False)
    vl = hist["val_loss"]
    best = int(np.argmin(vl)) + 1
    assert len(hist) < 40 and hist.info["stopped_epoch"] == len(hist) == best + 3
    assert hist.info["best_epoch"] == best and vl[-1] > vl[best - 1]
    for k, v in net.params.items():
        np.testing.assert_array_equal(v, rec.params[best - 1][k])
    assert evaluate(net, *val)["loss"] == pytest.approx(vl[best - 1], rel=1e-6)


def test_early_stopping_needs_its_column():
    X, y = blobs(30, 3, 2, rng=0)
    net = mlp()
    with pytest.raises(ValueError, match="monitors 'val_loss'.*pass val="):
        fit(net, Backprop(), Adam(net.params), (X, y), epochs=2, batch_size=8, rng=0,
            callbacks=[EarlyStopping()], progress=False)
    with pytest.raises(ValueError, match="mode must be"):
        EarlyStopping(mode="up")


def test_checkpoint_writes_loadable_files(tmp_path):
    X, y = blobs(60, 3, 2, rng=0)
    net = mlp()
    every = Checkpoint(tmp_path / "ep{epoch}.npz", every=2)
    best = Checkpoint(tmp_path / "best.npz", monitor="val_accuracy")
    fit(net, Backprop(), Adam(net.params, lr=0.01), (X, y), val=(X, y), epochs=5, batch_size=16,
        rng=0, callbacks=[every, best], progress=False)
    assert [p.rsplit("/", 1)[1] for p in every.saved] == ["ep2.npz", "ep4.npz", "ep5.npz"]
    fresh = mlp(seed=9)
    nograd.load(fresh, tmp_path / "ep5.npz")
    for k, v in net.params.items():
        np.testing.assert_array_equal(fresh.params[k], v)
    nograd.load(mlp(seed=9), tmp_path / "best.npz")
    with pytest.raises(ValueError, match="folder .* does not exist"):
        fit(net, Backprop(), Adam(net.params), (X, y), epochs=1, batch_size=8, rng=0,
            callbacks=[Checkpoint(tmp_path / "no" / "x.npz")], progress=False)


def test_schedule_is_stepped_per_epoch():
    X, y = blobs(40, 3, 2, rng=0)
    net = mlp()
    opt = SGD(net.params, lr=0.1)
    hist = fit(net, Backprop(), opt, (X, y), epochs=5, batch_size=10, rng=0,
               schedule=StepLR(opt, step_size=2, gamma=0.5), progress=False)
    assert hist["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    with pytest.raises(TypeError, match="schedule must have a step"):
        fit(net, Backprop(), opt, (X, y), epochs=1, batch_size=10, rng=0, schedule=0.5)


class NaNRule(Rule):
    def grads(self, model, x, y, *, rng=None):
        g, info = Backprop().grads(model, x, y, rng=rng)
        return g, {**info, "loss": float("nan")}


class PickyRule(Rule):
    def check_model(self, model):
        raise ValueError("PickyRule needs layers without bias")


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(train=(np.zeros((4, 2), np.float32), np.zeros(3, int))), ValueError,
     "train has 4 samples in X but 3 in y"),
    (dict(train=(np.zeros((0, 2), np.float32), np.zeros(0, int))), ValueError, "train is empty"),
    (dict(train=np.zeros((4, 2))), TypeError, r"train must be a pair \(X, y\)"),
    (dict(train=(np.zeros((4, 2), int), np.zeros(4, int))), TypeError, "float array"),
    (dict(val=(np.zeros((2, 3), np.float32), np.zeros(2, int))), ValueError, r"val samples have shape \(3,\)"),
    (dict(epochs=0), ValueError, "epochs must be positive"),
    (dict(epochs=2.5), TypeError, "epochs must be an int"),
    (dict(batch_size=-1), ValueError, "batch_size must be positive"),
    (dict(callbacks=[print]), TypeError, r"callbacks\[0\] must be a nograd.train.Callback"),
    (dict(rule=object()), TypeError, "rule must be a learning rule"),
    (dict(rule=PickyRule()), ValueError, "needs layers without bias"),
    (dict(model="mlp"), TypeError, "model must be a nograd Module"),
    (dict(progress="yes"), TypeError, "progress must be a bool"),
    (dict(rng=np.random.RandomState(0)), TypeError, "rng must be a numpy.random.Generator"),
])
def test_fit_argument_errors(kwargs, err, match):
    net = mlp()
    args = dict(model=net, rule=Backprop(), optimizer=Adam(net.params),
                train=(np.zeros((4, 2), np.float32), np.zeros(4, int)), epochs=1, batch_size=2,
                rng=0, progress=False)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        fit(args.pop("model"), args.pop("rule"), args.pop("optimizer"), args.pop("train"), **args)


def test_divergence_is_reported():
    X, y = blobs(20, 3, 2, rng=0)
    net = mlp()
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 1, batch 1"):
        fit(net, NaNRule(), Adam(net.params), (X, y), epochs=1, batch_size=5, rng=0, progress=False)


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_line_only_on_a_terminal(monkeypatch, capsys):
    X, y = blobs(40, 3, 2, rng=0)
    net = mlp()
    monkeypatch.setattr(train_mod, "_load_tqdm", lambda: None)
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    fit(net, Backprop(), Adam(net.params), (X, y), epochs=2, batch_size=10, rng=0,
        callbacks=[EpochLogger()])
    drawn = tty.getvalue()
    assert "\repoch 2/2  batch 4/4  loss " in drawn and "acc " in drawn and "ETA 0:0" in drawn
    out = capsys.readouterr().out
    assert out.count("\n") == 2 and out.startswith("epoch 1/2  loss ")   # epoch lines on stdout

    quiet = FakeTTY()
    monkeypatch.setattr(sys, "stderr", quiet)
    fit(net, Backprop(), Adam(net.params), (X, y), epochs=1, batch_size=10, rng=0, progress=False)
    assert quiet.getvalue() == ""
    pipe = io.StringIO()                                   # not a terminal: no progress line
    monkeypatch.setattr(sys, "stderr", pipe)
    fit(net, Backprop(), Adam(net.params), (X, y), epochs=1, batch_size=10, rng=0)
    assert pipe.getvalue() == ""


def test_progress_uses_tqdm_when_installed(monkeypatch):
    made = []

    class FakeBar:
        def __init__(self, total, **kw):
            self.total, self.n, self.closed = total, 0, False
            made.append(self)

        def update(self, k):
            self.n += k

        def set_description(self, *a, **k):
            pass

        def set_postfix(self, *a, **k):
            pass

        def close(self):
            self.closed = True

        @staticmethod
        def write(text, file=None):
            print(text, file=file)

    monkeypatch.setattr(train_mod, "_load_tqdm", lambda: FakeBar)
    monkeypatch.setattr(sys, "stderr", FakeTTY())
    X, y = blobs(40, 3, 2, rng=0)
    net = mlp()
    fit(net, Backprop(), Adam(net.params), (X, y), epochs=3, batch_size=16, rng=0)
    assert len(made) == 1 and made[0].total == 9 and made[0].n == 9 and made[0].closed


def test_history_object():
    h = History()
    h.append({"epoch": 1, "loss": 2.0})
    h.append({"epoch": 2, "loss": 1.0, "val_loss": 3.0})
    assert h.keys() == ["epoch", "loss", "val_loss"] and h["val_loss"] == [None, 3.0]
    assert h.last["loss"] == 1.0 and "2 epochs" in repr(h)
    with pytest.raises(ValueError, match="does not exist"):
        h.to_csv("/no/such/folder/h.csv")


def test_val_loss_uses_the_rules_loss_function():
    X, y = blobs(40, 3, 2, rng=0)
    net = mlp()
    h = fit(net, Backprop("focal", gamma=2.0), Adam(net.params), (X, y), val=(X, y), epochs=1,
            batch_size=10, rng=0, progress=False)
    from nograd.core.losses import focal_loss
    assert h["val_loss"][0] == pytest.approx(focal_loss(net(X), y, gamma=2.0)[0], rel=1e-5)

    class MethodLoss(Rule):
        def loss(self, *args):          # a method named loss is not taken for the loss function
            raise AssertionError("called")

        def grads(self, model, x, y, *, rng=None):
            return Backprop().grads(model, x, y, rng=rng)

    h = fit(net, MethodLoss(), Adam(net.params), (X, y), val=(X, y), epochs=1, batch_size=10,
            rng=0, progress=False)
    assert h["val_loss"][0] > 0


def test_drop_last_lets_batch_norm_train_on_ragged_data():
    import nograd as ng
    from nograd.layers import BatchNorm1d
    net = ng.Sequential(ng.Linear(3, 4, rng=0), BatchNorm1d(4), ng.ReLU(), ng.Linear(4, 2, rng=1))
    X = np.random.default_rng(0).standard_normal((33, 3)).astype(np.float32)
    y = np.arange(33) % 2
    with pytest.raises(ValueError, match="more than one value per channel"):
        ng.train.fit(net, ng.Backprop(), ng.Adam(net.params), (X, y), epochs=1, batch_size=32, rng=0,
                     progress=False)
    h = ng.train.fit(net, ng.Backprop(), ng.Adam(net.params), (X, y), epochs=2, batch_size=32, rng=0,
                     progress=False, drop_last=True)
    assert len(h.records) == 2
    with pytest.raises(ValueError, match="drop_last"):
        ng.train.fit(net, ng.Backprop(), ng.Adam(net.params), (X, y), epochs=1, batch_size=64, rng=0,
                     progress=False, drop_last=True)


def test_divergence_is_a_floating_point_error_naming_the_batch():
    import nograd as ng
    X = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32) * 100
    y = np.arange(64) % 2
    net = ng.Sequential(ng.Linear(3, 64, rng=0), ng.ReLU(), ng.Linear(64, 2, rng=1))
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="diverged at epoch"):
        ng.train.fit(net, ng.Backprop(), ng.SGD(net.params, lr=1e8), (X, y), epochs=5,
                     batch_size=8, rng=0, progress=False)


def test_fit_takes_names_and_defaults_and_records_a_drawn_seed():
    import nograd as ng

    X, y = ng.data.spirals(40, 3, rng=0)
    net = ng.Sequential(ng.Linear(2, 16, rng=0), ng.Tanh(), ng.Linear(16, 3, rng=1))
    w0 = {k: v.copy() for k, v in net.params.items()}
    hist = ng.fit(net, "backprop", "adam", (X, y), epochs=3, progress=False)
    seed = hist.info["seed"]
    assert isinstance(seed, int) and len(hist) == 3
    again = ng.Sequential(ng.Linear(2, 16, rng=0), ng.Tanh(), ng.Linear(16, 3, rng=1))
    assert all(np.array_equal(again.params[k], w0[k]) for k in w0)
    hist2 = ng.fit(again, "backprop", "adam", (X, y), epochs=3, rng=seed, progress=False)
    assert hist2.info["seed"] == seed
    assert all(np.array_equal(again.params[k], net.params[k]) for k in w0)   # the seed reruns it
    default = ng.fit(ng.Sequential(ng.Linear(2, 3, rng=0)), train=(X, y), rng=0, progress=False)
    assert len(default) == ng.get_rule("backprop").defaults["epochs"]
    with pytest.raises(ValueError, match="rule"):
        ng.fit(net, "no-such-rule", None, (X, y), rng=0)
    with pytest.raises(ValueError, match="optimizer|lbfgs"):
        ng.fit(net, "backprop", "lbfgs", (X, y), rng=0)
