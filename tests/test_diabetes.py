"""DiabetesNet: binary metrics and ROC-AUC, the tabular models, cross-validated training,
the leak of re-balancing before the split, and `python -m nograd diabetes` end to end."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nograd.__main__ import main
from nograd.data import cross_validate
from nograd.layers import BatchNorm1d, Linear, ReLU
from nograd.metrics import accuracy, confusion_matrix, macro_f1, roc_auc, sensitivity, specificity
from nograd.models import DiabetesNet, TabularMLP, available_models, get_model
from nograd.estimators.tabular import make_fit_predict, train_classifier
from nograd.testing import check_adjoint, check_jvp, check_vjp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- metrics
def test_metrics_on_a_known_confusion_matrix():
    # TP = 3, FN = 1, FP = 2, TN = 4
    y_true = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    y_pred = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0])
    assert confusion_matrix(y_true, y_pred).tolist() == [[4, 2], [1, 3]]
    assert accuracy(y_true, y_pred) == pytest.approx(7 / 10)
    assert sensitivity(y_true, y_pred) == pytest.approx(3 / 4)
    assert specificity(y_true, y_pred) == pytest.approx(4 / 6)
    f1_pos, f1_neg = 2 * 3 / (2 * 3 + 2 + 1), 2 * 4 / (2 * 4 + 1 + 2)
    assert macro_f1(y_true, y_pred) == pytest.approx((f1_pos + f1_neg) / 2)
    # ROC-AUC of these hard labels as scores: pairs (pos, neg) = 24; pos>neg: 3*4, ties: 3*2 + 1*4
    assert roc_auc(y_true, y_pred.astype(float)) == pytest.approx((12 + 0.5 * (6 + 4)) / 24)


def brute_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    wins = sum(float(p > q) + 0.5 * float(p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(-3, 3)), min_size=2, max_size=40))
def test_roc_auc_equals_the_pair_count_with_ties(pairs):
    y = np.array([p[0] for p in pairs], np.int64)
    s = np.array([p[1] for p in pairs], np.float64)          # few values: many ties
    if y.min() == y.max():
        with pytest.raises(ValueError, match="roc_auc is undefined"):
            roc_auc(y, s)
        return
    assert roc_auc(y, s) == pytest.approx(brute_auc(y, s), abs=1e-12)
    # per-class scores rank by their difference; positive=0 makes class 0 the one scored
    two = np.stack([np.zeros_like(s), s], axis=1)
    assert roc_auc(y, two) == pytest.approx(brute_auc(y, s), abs=1e-12)
    assert roc_auc(y, s, positive=0) == pytest.approx(brute_auc(1 - y, s), abs=1e-12)
    assert roc_auc(y, two, positive=0) == pytest.approx(brute_auc(1 - y, -s), abs=1e-12)


def test_roc_auc_extremes_and_errors():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert roc_auc(y, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert roc_auc(y, np.zeros(4)) == 0.5
    with pytest.raises(ValueError, match="roc_auc is binary"):
        roc_auc(np.array([0, 1, 2]), np.zeros(3))
    with pytest.raises(ValueError, match="y_true has 4 samples but scores has 3"):
        roc_auc(y, np.zeros(3))
    with pytest.raises(ValueError, match="NaN or inf"):
        roc_auc(y, np.array([0, np.nan, 1, 2]))
    with pytest.raises(ValueError, match=r"\(N, 2\) per-class scores"):
        roc_auc(y, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="sensitivity and specificity are binary"):
        sensitivity(np.array([0, 1, 2]), np.array([0, 1, 2]))


# --------------------------------------------------------------------------- models
def test_diabetesnet_is_the_papers_architecture_and_registered():
    net = DiabetesNet(8, rng=0)
    kinds = [type(m) for m in net]
    assert kinds == [Linear, BatchNorm1d, ReLU] * 3 + [Linear]
    assert [m.out_features for m in net if isinstance(m, Linear)] == [64, 32, 16, 2]
    assert {"diabetesnet", "tabular-mlp", "logistic"} <= set(available_models())
    same = get_model("diabetesnet", (8,), 2, rng=0)
    assert all(np.array_equal(a, b) for a, b in zip(net.params.values(), same.params.values()))
    mlp = get_model("tabular-mlp", (5,), 3, rng=0, hidden=(7,), batch_norm=False, dropout=0.2)
    assert [type(m).__name__ for m in mlp] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert len(get_model("logistic", (5,), 2, rng=0).params) == 2
    with pytest.raises(ValueError, match="diabetesnet is a binary classifier"):
        get_model("diabetesnet", (8,), 3)
    with pytest.raises(ValueError, match=r"takes a table row \(features,\)"):
        get_model("tabular-mlp", (1, 8, 8), 10)
    with pytest.raises(ValueError, match=r"hidden\[1\] must be positive"):
        TabularMLP(4, 2, (8, 0))


@pytest.mark.parametrize("train", [False, True])
def test_diabetesnet_gradients(train):
    net = DiabetesNet(5, rng=1, dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((6, 5))
    check_vjp(net, x, train=train)
    check_jvp(net, x, train=train)
    if not train:
        # In training the bias before each batch norm has derivative exactly 0 (the batch mean
        # removes it), and check_adjoint then compares rounding noise with rounding noise;
        # evaluation mode, with non-trivial running statistics, has no such direction.
        net.forward(x * 2 + 1, train=True)
        check_adjoint(net, x)


def test_training_learns_an_easy_table_through_cross_validation():
    rng = np.random.default_rng(0)
    n = 150
    y = (rng.random(n) < 0.35).astype(np.int64)
    X = (rng.standard_normal((n, 4)) + 3.0 * y[:, None] * np.array([1, -1, 0, 0])).astype(np.float32)
    for model in ("diabetesnet", "logistic"):
        out = cross_validate(X, y, make_fit_predict(model, epochs=20, batch_size=16, lr=5e-3),
                             k=3, balance="smote", rng=0)
        assert out["mean"]["accuracy"] > 0.9 and out["mean"]["roc_auc"] > 0.95, (model, out["mean"])
        assert set(out["mean"]) == {"accuracy", "sensitivity", "specificity", "macro_f1", "roc_auc"}


def test_batch_size_dodges_a_final_batch_of_one():
    # 33 samples in batches of 32 would leave one sample, which batch norm cannot standardise
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((33, 3)).astype(np.float32), np.array([0, 1] * 16 + [0])
    hist = train_classifier(DiabetesNet(3, rng=0), X, y, epochs=2, batch_size=32, rng=0)
    assert len(hist) == 2


def nearest_neighbour(X_train, y_train, X_test, *, rng):
    """1-NN: a classifier that remembers every training row."""
    d = ((X_test[:, None, :] - X_train[None, :, :]) ** 2).sum(-1)
    p = y_train[d.argmin(axis=1)]
    return np.stack([1.0 - p, p.astype(float)], axis=1)


def test_balancing_before_the_split_inflates_a_memorising_classifier():
    # labels independent of the features: any honest estimate is near chance
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((300, 4)), (rng.random(300) < 0.3).astype(np.int64)
    honest = cross_validate(X, y, nearest_neighbour, k=5, balance="over", rng=0)
    leaky = cross_validate(X, y, nearest_neighbour, k=5, balance="over", rng=0,
                           balance_before_split=True)
    assert honest["mean"]["roc_auc"] < 0.6
    assert leaky["mean"]["sensitivity"] > 0.75 and leaky["mean"]["accuracy"] > 0.65
    assert leaky["mean"]["accuracy"] - honest["mean"]["accuracy"] > 0.1


# --------------------------------------------------------------------------- command line
def write_table(path, n=90, classes=2, holes=False, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    y[:classes] = np.arange(classes)
    X = rng.standard_normal((n, 3)) + 2.0 * y[:, None] + 5
    X[::7, 1] = 0.0                                   # zeros that mean "not measured"
    names = np.array(["neg", "pos", "other"])[:classes] if classes <= 3 else None
    lines = ["glucose,insulin,bmi,outcome"]
    for i in range(n):
        cells = [f"{v:.4f}" for v in X[i]]
        if holes and i == 5:
            cells[2] = ""
        lines.append(",".join(cells + [str(names[y[i]])]))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:         # argparse's own errors exit from parse_args
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_diabetes_end_to_end(tmp_path, capsys):
    csv = write_table(tmp_path / "t.csv")
    base = ["diabetes", "--data", f"csv:{csv}", "--target", "outcome", "--cv", "3", "--epochs", "4",
            "--batch-size", "16", "--lr", "0.01"]
    code, out, err = run(base + ["--balance", "smote", "--zeros-missing", "insulin", "--json"],
                         capsys)
    assert code == 0 and err == ""
    lines = out.strip().splitlines()
    assert len(lines) == 1
    res = json.loads(lines[0])
    for key in ("accuracy", "sensitivity", "specificity", "macro_f1", "roc_auc"):
        assert 0.0 <= res[key] <= 1.0 and 0.0 <= res["std"][key]
        assert res[key] == pytest.approx(np.mean([f[key] for f in res["folds"]]), abs=1e-3)
    assert res["accuracy"] > 0.8
    assert res["positive_class"] == "pos" and res["protocol"] == "training-folds"
    assert res["imputed_zeros"] == 13 and len(res["folds"]) == 3
    # the table form, and the leaky protocol labelled as such
    code, out, _ = run(base + ["--balance", "over", "--leaky"], capsys)
    assert code == 0
    assert "before the split (LEAKY)" in out and "warning:" in out
    assert all(m in out for m in ("accuracy", "sensitivity", "specificity", "macro_f1", "roc_auc"))


@pytest.mark.parametrize("extra,classes,holes,match", [
    ([], 3, False, "target 'outcome' of t.csv has 3 classes .*needs exactly two"),
    ([], 2, True, "1 missing values .* pass --missing drop"),
    (["--zeros-missing", "height"], 2, False, "--zeros-missing height: no such feature column"),
    (["--cv", "1"], 2, False, "--cv 1: cross-validation needs at least 2 folds"),
    (["--balance", "none", "--leaky"], 2, False, "--leaky re-balances before the split"),
    (["--model", "resnet"], 2, False, "unknown model 'resnet'"),
    (["--balance", "adasyn"], 2, False, "invalid choice: 'adasyn'"),
])
def test_cli_diabetes_errors_are_one_line(tmp_path, capsys, extra, classes, holes, match):
    csv = write_table(tmp_path / "t.csv", classes=classes, holes=holes)
    code, out, err = run(["diabetes", "--data", f"csv:{csv}", "--target", "outcome", "--epochs", "1"]
                         + extra, capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert __import__("re").search(match, err), err


def test_cli_missing_rows_can_be_dropped(tmp_path, capsys):
    csv = write_table(tmp_path / "t.csv", holes=True)
    code, out, _ = run(["diabetes", "--data", f"csv:{csv}", "--target", "outcome", "--cv", "2",
                        "--epochs", "1", "--missing", "drop", "--json"], capsys)
    assert code == 0 and json.loads(out)["n"] == 89


def test_example_runs_on_a_pima_shaped_table(tmp_path):
    # the example's own table on a small synthetic file with Pima's layout (no /work/shared needed)
    rng = np.random.default_rng(0)
    n = 80
    y = (rng.random(n) < 0.35).astype(int)
    y[:6] = [0, 0, 0, 1, 1, 1]
    X = np.abs(rng.standard_normal((n, 8)) * 10 + 30 + 15 * y[:, None])
    X[rng.random((n, 8)) < 0.1] = 0
    np.savetxt(tmp_path / "pima.csv", np.column_stack([X, y]), delimiter=",", fmt="%.3f")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "diabetesnet.py"),
                           str(tmp_path / "pima.csv"), "--epochs", "1", "--cv", "2", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(last["results"]) == 16 and set(last["leak"]) == {"under", "over", "smote"}
    grande = [(r["protocol"], r["balance"]) for r in last["results"] if r["model"] == "grande"]
    assert grande == [("honest", "none"), ("leaky", "over")]
    honest = [r for r in last["results"] if r["protocol"] == "honest"]
    assert all(r["test_in_train"] == 0 for r in honest)
