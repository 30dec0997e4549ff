"""The command line end to end on the embedded digits: train, compare, list, argument errors."""
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import nograd
from nograd.__main__ import main
from nograd.rules import Backprop
from nograd.rules import base as rules_base

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def test_rules(monkeypatch):
    """Test-only rules, registered for one test: a backprop twin with the same defaults, one with
    its own defaults, one that refuses every model and one that diverges. Only backprop stays
    registered beside them, so these tests do not depend on rules other sessions add."""
    monkeypatch.setattr(rules_base, "_REGISTRY", {"backprop": Backprop})

    @rules_base.register("test-twin")
    class Twin(Backprop):
        """Backprop under another name (same defaults)."""

    @rules_base.register("test-sgd")
    class SGDRule(Backprop):
        """Backprop with SGD defaults."""
        defaults = {"optimizer": "sgd", "lr": 0.1, "epochs": 3, "batch_size": 32}

    @rules_base.register("test-picky")
    class Picky(Backprop):
        """Refuses every model."""

        def check_model(self, model):
            raise ValueError("test-picky needs a model without bias")

    @rules_base.register("test-nan")
    class NaN(Backprop):
        """Diverges at once."""

        def grads(self, model, x, y, *, rng=None):
            g, info = super().grads(model, x, y, rng=rng)
            return g, {**info, "loss": float("inf")}


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_defaults_reach_95_percent_on_digits(tmp_path):
    # The command, in a fresh process. OpenBLAS is held to one thread here: on shared CI
    # cores its threads spin against other jobs and the same run takes 10-50x longer (measured
    # 0.7 s against 7-50 s); the test is about accuracy, so it should not depend on that load.
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nograd", "train", "--data", "digits", "--json"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1
    res = json.loads(proc.stdout)
    assert res["test_accuracy"] >= 0.95, res
    assert res["epochs"] == 20 and res["optimizer"] == "adam" and res["batch_size"] == 64
    for key in ("rule", "model", "data", "test_accuracy", "train_seconds", "peak_mb"):
        assert key in res
    assert res["peak_mb"] > 0 and res["train_seconds"] < wall
    print(f"\n[digits default: accuracy {res['test_accuracy']}, train {res['train_seconds']} s, "
          f"wall {wall:.1f} s]", file=sys.stderr)


def test_train_lines_save_history(tmp_path, capsys):
    save, hist = tmp_path / "w.npz", tmp_path / "h.csv"
    code, out, err = run(["train", "--epochs", "3", "--lr", "0.003", "--batch-size", "256",
                          "--save", str(save), "--history", str(hist), "--seed", "1"], capsys)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 4
    assert lines[0].startswith("epoch 1/3  loss ") and "test acc" in lines[0]
    assert lines[-1].startswith("backprop mlp on digits: test accuracy ")
    net = nograd.get_model("mlp", (1, 8, 8), 10, rng=5)
    nograd.load(net, save)
    X, y, Xt, yt = nograd.data.load_digits(flatten=False, seed=1)
    acc = float(np.mean(net(Xt).argmax(1) == yt))
    assert f"test accuracy {acc:.4f}" in lines[-1]
    assert len(open(hist).read().strip().splitlines()) == 4


def test_train_plot(tmp_path, capsys):
    png = tmp_path / "curve.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        code, out, err = run(["train", "--epochs", "1", "--plot", str(png)], capsys)
        assert code == 2 and out == "" and not png.exists()
        assert err.count("\n") == 1 and "--plot needs matplotlib" in err
    else:
        code, out, err = run(["train", "--epochs", "2", "--plot", str(png)], capsys)
        assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"


def test_compare_two_rules_same_start(test_rules, capsys):
    code, out, err = run(["compare", "--rules", "backprop,test-twin,test-sgd", "--json",
                          "--epochs", "1"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["rule"] for r in rows] == ["backprop", "test-twin", "test-sgd"]
    # the same model, split and batch order: a twin of backprop gets exactly its numbers
    assert rows[0]["test_accuracy"] == rows[1]["test_accuracy"]
    assert rows[0]["train_loss"] == rows[1]["train_loss"]
    # each rule runs with its own defaults; the user's --epochs overrides them all
    assert (rows[0]["optimizer"], rows[0]["lr"], rows[0]["batch_size"]) == ("adam", 0.001, 64)
    assert (rows[2]["optimizer"], rows[2]["lr"], rows[2]["batch_size"]) == ("sgd", 0.1, 32)
    assert all(r["epochs"] == 1 for r in rows)
    assert rows[2]["test_accuracy"] != rows[0]["test_accuracy"]
    for r in rows:
        assert {"rule", "model", "data", "test_accuracy", "train_seconds", "peak_mb"} <= set(r)


def test_compare_table_and_all(test_rules, capsys):
    code, out, err = run(["compare", "--rules", "all", "--lr", "0.01", "--epochs", "1",
                          "--batch-size", "512", "--no-memory"], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("mlp on digits (1348 train / 449 test, seed 0)")
    assert lines[1].split()[:4] == ["rule", "test", "acc", "seconds"]
    body = {ln.split()[0]: ln.split() for ln in lines[3:]}
    assert set(body) == {"backprop", "test-twin", "test-sgd", "test-nan"}
    assert body["test-sgd"][4:] == ["sgd", "0.01", "1", "512"] and body["test-sgd"][3] == "-"
    assert body["test-nan"][1] == "diverged"
    assert "skipping rule test-picky: test-picky needs a model without bias" in err


def test_list(test_rules, capsys):
    code, out, err = run(["list"], capsys)
    assert code == 0
    kinds = {}
    for line in out.strip().splitlines():
        kind, name = line.split()[:2]
        kinds.setdefault(kind, []).append(name)
    assert "mlp" in kinds["model"] and {"backprop", "test-sgd"} <= set(kinds["rule"])
    assert {"digits", "mnist", "fashion-mnist", "csv:PATH", "npz:PATH"} <= set(kinds["data"])
    assert "[defaults: sgd, lr 0.1, 3 epochs, batch 32]" in out


@pytest.mark.parametrize("argv,match", [
    (["train", "--rule", "nope"], "unknown rule 'nope'"),
    (["train", "--model", "resnet"], "unknown model 'resnet'"),
    (["train", "--data", "imagenet"], "unknown dataset 'imagenet'"),
    (["train", "--data", "csv:/no/such.csv"], "does not exist"),
    (["train", "--data", "mnist", "--data-dir", "/no/such/dir"], "does not exist"),
    (["train", "--epochs", "0"], "--epochs: must be a positive integer"),
    (["train", "--lr", "-1"], "--lr: must be a positive number"),
    (["train", "--lr", "abc"], "--lr: must be a positive number"),
    (["train", "--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"),
    (["train", "--save", "/no/such/dir/w.npz"], "--save /no/such/dir/w.npz: folder"),
    (["train", "--history", "h.txt"], "must end in .csv or .json"),
    (["compare", "--rules", "backprop,nope"], "unknown rule 'nope'"),
    (["compare", "--rules", ","], "--rules is empty"),
    (["compare", "--rules", "backprop,backprop"], "repeats a rule"),
    (["compare", "--rules", "test-picky"], "test-picky needs a model without bias"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_argument_errors_are_one_line_exit_2(test_rules, argv, match, capsys):
    try:
        code = main(argv)
    except SystemExit as e:           # argparse's own errors
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert match in err, err


def test_bad_csv_is_one_line(tmp_path, capsys):
    p = tmp_path / "holes.csv"
    p.write_text("a,b,label\n1,,0\n2,3,1\n")
    code, out, err = run(["train", "--data", f"csv:{p}", "--target", "label"], capsys)
    assert code == 2 and err.count("\n") == 1 and "1 missing values" in err
    code, out, err = run(["train", "--data", f"csv:{p}", "--target", "nope"], capsys)
    assert code == 2 and "'nope' is not a column" in err


def test_csv_training_with_target_name(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    rows = ["u,v,w,kind,label"] + [f"{a:.4f},{b:.4f},{c:.4f},{'pq'[i % 2]},{'ny'[t]}"
                                   for i, ((a, b, c), t) in enumerate(zip(X, y))]
    p = tmp_path / "t.csv"
    p.write_text("\n".join(rows) + "\n")
    code, out, err = run(["train", "--data", f"csv:{p}", "--target", "label", "--epochs", "30",
                          "--lr", "0.01", "--json"], capsys)
    res = json.loads(out)
    assert code == 0 and res["data"] == f"csv:{p}" and res["test_accuracy"] >= 0.85


def test_divergence_exit_1(test_rules, capsys):
    code = None
    try:
        code = main(["train", "--rule", "test-nan", "--epochs", "1"])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    assert code == 1 and err.count("\n") == 1 and "diverged" in err


def test_real_process_entry_point(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    ok = subprocess.run([sys.executable, "-m", "nograd", "train", "--epochs", "1", "--batch-size",
                         "512", "--json"],
                        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.strip().splitlines()[-1])["data"] == "digits"
    bad = subprocess.run([sys.executable, "-m", "nograd", "compare", "--data", "csv:missing.csv"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1
    assert "missing.csv" in bad.stderr and "Traceback" not in bad.stderr


def test_rule_defaults_can_carry_optimizer_options(capsys):
    """A rule's defaults may name optimizer options (SGD momentum); they reach the optimizer unless
    the user picks another optimizer."""
    from nograd.__main__ import main
    from nograd.core.optim import SGD
    from nograd.rules import Backprop
    from nograd.rules.base import _REGISTRY, register

    seen = []

    class MomentumProbe(Backprop):
        defaults = {"optimizer": "sgd", "lr": 0.05, "epochs": 1, "batch_size": 256,
                    "optimizer_options": {"momentum": 0.9}}

        def step(self, model, x, y, *, optimizer, rng=None):
            seen.append((type(optimizer), optimizer.groups[0].get("momentum")))
            grads, info = self.grads(model, x, y, rng=rng)
            optimizer.step(grads)
            return info

    register("test-momentum-probe")(MomentumProbe)
    try:
        assert main(["compare", "--rules", "test-momentum-probe", "--no-memory", "--json"]) == 0
        assert seen and all(s == (SGD, 0.9) for s in seen)
        seen.clear()
        assert main(["compare", "--rules", "test-momentum-probe", "--optimizer", "adam", "--no-memory",
                     "--json"]) == 0
        assert seen and all(s[0] is not SGD for s in seen)
    finally:
        _REGISTRY.pop("test-momentum-probe", None)
    capsys.readouterr()


@pytest.mark.parametrize("rule", ["mono-forward", "forward-gradient-local", "foton"])
def test_rules_with_their_own_arrays_or_hooks_train_from_the_command_line(rule, capsys):
    # the warm-up and the run both go through rule.step, which adds rule.params to the optimizer
    from nograd.__main__ import main

    assert main(["train", "--rule", rule, "--epochs", "1", "--no-memory", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["rule"] == rule and math.isfinite(out["test_loss"])


def test_train_shards_a_large_backprop_step_by_itself(capsys, monkeypatch):
    """Without --shards/--threads, `train` shards backprop's step over the usable cores when it
    costs at least threads.SHARD_STEP_FLOPS (here lowered so the digits MLP qualifies); other
    rules, --shards 1 and --threads keep the serial step; batch norm is sharded (synchronised)."""
    import types

    import nograd.threads as threads
    from nograd.cli.common import auto_shards_for

    for var in threads.THREAD_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "SHARD_STEP_FLOPS", 1.0)
    base = ["train", "--data", "digits", "--epochs", "1", "--json", "--no-memory"]
    assert json.loads(run(base, capsys)[1])["shards"] == 2
    for extra in (["--shards", "1"], ["--threads", "1"], ["--rule", "dfa"]):
        out = json.loads(run(base + extra, capsys)[1])
        assert out.get("shards") in (None, 1), extra
    monkeypatch.setattr(threads, "SHARD_STEP_FLOPS", 1e9)    # the default: the digits MLP is small
    assert "shards" not in json.loads(run(base, capsys)[1])
    monkeypatch.setattr(threads, "SHARD_STEP_FLOPS", 1.0)
    args = types.SimpleNamespace(shards=None, threads=None, _threads_stack=None)
    bn = nograd.Sequential(nograd.Linear(4, 8, rng=0), nograd.layers.BatchNorm1d(8))
    assert auto_shards_for(args, bn, (4,), 64)[0] == 2       # batch norm: statistics synchronised


def test_train_shards_runs_backprop_sharded_and_refuses_what_it_cannot(capsys, monkeypatch):
    """``--shards K``: backprop's step split over K threads (nograd.parallel.ShardedStep). The
    gradient equals the serial one up to float32 rounding, so the run learns as the serial one does:
    on the digits MLP the test accuracies of the two runs agree to within 2 images in 449."""
    import nograd.parallel as parallel

    calls, grads = [], parallel.ShardedStep.grads
    monkeypatch.setattr(parallel.ShardedStep, "grads",
                        lambda self, *a, **k: (calls.append(self.shards), grads(self, *a, **k))[1])
    base = ["train", "--data", "digits", "--epochs", "8", "--json", "--no-memory"]
    code, out, _ = run(base + ["--shards", "2"], capsys)
    assert code == 0
    sharded = json.loads(out)
    assert len(calls) == 8 * -(-1348 // 64) and set(calls) == {2}   # every step of 8 epochs, 2 shards
    calls.clear()
    code, out, _ = run(base, capsys)
    serial = json.loads(out)
    assert sharded["shards"] == 2 and "shards" not in serial and not calls
    assert sharded["test_accuracy"] >= 0.9
    assert abs(sharded["test_accuracy"] - serial["test_accuracy"]) <= 2 / 449 + 1e-9
    code, _, err = run(base + ["--shards", "2", "--rule", "dfa"], capsys)
    assert code == 2 and "--shards" in err and "dfa" in err
    code, _, err = run(["train", "--data", "shakespeare", "--model", "gpt", "--iters", "1",
                        "--rule", "mezo", "--shards", "2"], capsys)
    assert code == 2 and "--shards" in err and "mezo" in err
    with pytest.raises(SystemExit) as e:                 # argparse's own error
        main(base + ["--shards", "0"])
    assert e.value.code == 2 and "--shards" in capsys.readouterr().err
