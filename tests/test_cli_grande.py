"""`python -m nograd grande`: GRANDE on a small CSV with a categorical column and missing cells,
cross-validated and on one split; bad inputs are one line on stderr and exit status 2."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nograd.__main__ import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_table(tmp_path, n=240, seed=0, name="t.csv"):
    """A separable problem: the label is x0 + (colour == 'red') > 0.5 (noise-free), with a
    distractor column and about 5% missing feature cells."""
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal(n)
    x1 = rng.standard_normal(n)
    colour = rng.choice(["red", "green", "blue"], n)
    label = np.where(x0 + 1.5 * (colour == "red") > 0.5, "pos", "neg")
    lines = ["x0,colour,x1,label"]
    for i in range(n):
        cells = [f"{x0[i]:.5f}", colour[i], f"{x1[i]:.5f}"]
        for j in range(3):
            if rng.random() < 0.05:
                cells[j] = "" if j != 1 else "?"
        lines.append(",".join(cells + [label[i]]))
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def run(argv, capsys):
    """(exit status, stdout, stderr) of main(argv)."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


TINY = ["--n-estimators", "16", "--depth", "3", "--epochs", "30", "--batch-size", "64"]


def test_grande_cv_json(tmp_path, capsys):
    p = write_table(tmp_path)
    code, out, err = run(["grande", "--data", f"csv:{p}", "--target", "label", "--cv", "3",
                          "--seed", "1", "--json", *TINY], capsys)
    assert code in (0, None), err
    summary = json.loads(out.strip().splitlines()[-1])
    for key in ("macro_f1", "accuracy", "fit_seconds", "fold_macro_f1", "fold_accuracy",
                "fold_fit_seconds"):
        assert key in summary
    assert len(summary["fold_macro_f1"]) == 3 and len(summary["fold_fit_seconds"]) == 3
    assert summary["categorical_features"] == ["colour"]
    assert summary["options"] == {"n_estimators": 16, "depth": 3, "epochs": 30, "batch_size": 64}
    assert summary["macro_f1"] > 0.8, summary
    assert abs(summary["macro_f1"] - np.mean(summary["fold_macro_f1"])) < 1e-3


def test_grande_single_split_table(tmp_path, capsys):
    p = write_table(tmp_path, seed=3)
    code, out, err = run(["grande", "--data", f"csv:{p}", "--target", "label", "--test-size", "0.3",
                          *TINY], capsys)
    assert code in (0, None), err
    assert "fold 1/1" in out and "macro-F1" in out and "1 categorical" in out


def test_grande_plumbing_with_a_stand_in(tmp_path, capsys, monkeypatch):
    """The command's wiring without the real model: a stand-in classifier records its arguments
    (imputes with column means, predicts by the nearest class mean)."""
    import types

    seen = []

    class StandIn:
        def __init__(self, **kwargs):
            seen.append(kwargs)

        def fit(self, X, y):
            assert np.isnan(X).any()                    # missing cells reach the estimator as NaN
            self.fill_ = np.nanmean(X, axis=0)
            X = np.where(np.isnan(X), self.fill_, X)
            self.means_ = np.stack([X[y == c].mean(axis=0) for c in (0, 1)])
            return self

        def predict(self, X):
            X = np.where(np.isnan(X), self.fill_, X)
            return np.argmin(((X[:, None, :] - self.means_) ** 2).sum(-1), axis=1)

    monkeypatch.setitem(sys.modules, "nograd.estimators.grande",
                        types.SimpleNamespace(GrandeClassifier=StandIn))
    p = write_table(tmp_path)
    code, out, err = run(["grande", "--data", f"csv:{p}", "--target", "label", "--cv", "4",
                          "--seed", "7", "--depth", "2", "--json"], capsys)
    assert code in (0, None), err
    assert seen == [{"random_state": 7, "categorical_features": [1], "depth": 2}] * 4
    summary = json.loads(out.strip().splitlines()[-1])
    assert len(summary["fold_accuracy"]) == 4 and 0.5 < summary["accuracy"] <= 1
    assert summary["fold_fit_seconds"][0] >= 0 and summary["fit_seconds"] >= 0


BAD = [
    (["--data", "csv:{tmp}/nope.csv"], "does not exist"),
    (["--data", "csv:{table}", "--target", "nope"], "'nope' is not a column"),
    (["--data", "csv:{table}", "--target", "label", "--cv", "1"], "at least 2 folds"),
    (["--data", "csv:{single}", "--target", "label"], "has one class"),
    (["--data", "{table}", "--target", "label"], "give csv:PATH"),
    (["--data", "csv:{table}", "--target", "label", "--test-size", "1.5"], "fraction in"),
    (["--data", "csv:{table}", "--target", "label", "--epochs", "0"], "positive integer"),
]


@pytest.mark.parametrize("args, message", BAD)
def test_grande_bad_input(tmp_path, capsys, args, message):
    table = write_table(tmp_path)
    single = tmp_path / "single.csv"
    single.write_text("a,label\n1,x\n2,x\n3,x\n")
    argv = ["grande"] + [a.format(tmp=tmp_path, table=table, single=single) for a in args]
    code, out, err = run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err and out == ""


def test_grande_subprocess_error_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nograd", "grande", "--data", "csv:/no/such.csv"],
                       check=False, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "grande: error:" in r.stderr
