"""Bad input a user meets on the ordinary paths (issue 20, "Bad input that is not handled"): a typo
in a numeric CSV column, a run that blows up without turning NaN, a learning rate so large that the
warm-up step overflows, a last batch of one under batch norm, a CSV with only a header, 1-D inputs
to ``fit`` and a column of huge finite numbers. Each case is an error of one clear line naming the
argument (or, for the command line, a run that does the sensible thing)."""
import json

import numpy as np
import pytest

from nograd import Adam, Backprop, Linear, ReLU, Sequential
from nograd.cli import main
from nograd.data import load_csv, load_dataset
from nograd.layers import BatchNorm1d
from nograd.models import get_model
from nograd.rules import Rule
from nograd.train import DivergenceError, evaluate, fit

PIMA_COLUMNS = ["pregnancies", "glucose", "pressure", "skin", "insulin", "bmi", "pedigree", "age",
                "outcome"]


def pima_like(path, n=60, header=True, typos=None, seed=0):
    """A table shaped like Pima (8 numeric features, a 0/1 outcome); ``typos`` maps (row, column)
    to a replacement cell. Returns the path as a string."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.integers(0, 15, n), rng.integers(60, 200, n), rng.integers(40, 110, n),
                         rng.integers(0, 60, n), rng.integers(0, 400, n),
                         np.round(rng.uniform(18, 50, n), 1), np.round(rng.uniform(0.1, 2, n), 3),
                         rng.integers(21, 80, n)])
    y = (X[:, 1] > 125).astype(int)
    rows = [[f"{v:g}" for v in x] + [str(t)] for x, t in zip(X, y)]
    for (i, j), cell in (typos or {}).items():
        rows[i][j] = cell
    lines = ([",".join(PIMA_COLUMNS)] if header else []) + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- a typo in a number
def test_a_typo_in_a_numeric_column_is_an_error_naming_column_line_and_value(tmp_path):
    # row 7 of the data is line 9 of the file (header on line 1)
    p = pima_like(tmp_path / "pima.csv", typos={(7, 1): "1O8"})
    with pytest.raises(ValueError, match=r"column 'glucose'.*'1O8' on line 9") as info:
        load_csv(p, "outcome")
    assert "\n" not in str(info.value) and "non_numeric='missing'" in str(info.value)


def test_typos_in_two_columns_and_the_target_are_all_listed(tmp_path):
    p = pima_like(tmp_path / "pima.csv", header=False,
                  typos={(3, 1): "1O8", (10, 1): "12l", (20, 5): "3O.1", (30, 8): "l"})
    with pytest.raises(ValueError) as info:
        load_csv(p)
    msg = str(info.value)
    for part in ("column 'col1'", "'1O8' on line 4", "'12l' on line 11", "column 'col5'",
                 "'3O.1' on line 21", "column 'col8'", "'l' on line 31"):
        assert part in msg, (part, msg)


def test_non_numeric_missing_reads_the_typos_as_missing_cells(tmp_path):
    p = pima_like(tmp_path / "pima.csv", typos={(7, 1): "1O8", (12, 4): "x"})
    clean = load_csv(pima_like(tmp_path / "clean.csv"), "outcome")[0]
    X, y, info = load_csv(p, "outcome", non_numeric="missing", missing="nan", return_info=True)
    assert X.shape == (60, 8) and info["feature_names"] == PIMA_COLUMNS[:-1]
    assert np.isnan(X[7, 1]) and np.isnan(X[12, 4]) and np.isnan(X).sum() == 2
    keep = ~np.isnan(X).any(axis=1)
    np.testing.assert_array_equal(X[keep], clean[keep])
    assert info["non_numeric"] == {"glucose": 1, "insulin": 1}
    X2, _, info2 = load_csv(p, "outcome", non_numeric="missing", missing="drop", return_info=True)
    assert X2.shape == (58, 8) and info2["dropped_rows"] == 2
    with pytest.raises(ValueError, match="2 missing values"):          # missing='error' still holds
        load_csv(p, "outcome", non_numeric="missing")


def test_non_numeric_category_keeps_the_column_as_categories(tmp_path):
    p = pima_like(tmp_path / "pima.csv", typos={(7, 1): "1O8"})
    X, _, info = load_csv(p, "outcome", non_numeric="category", return_info=True)
    assert "glucose" in info["categorical"] and X.shape[1] > 8
    with pytest.raises(ValueError, match="non_numeric must be"):
        load_csv(p, "outcome", non_numeric="ignore")


def test_a_mostly_categorical_column_with_some_numbers_stays_categorical(tmp_path):
    # 5 numbers out of 20 cells: a categorical column that has a few numeric levels, not typos
    rows = ["kind,x,label"] + [f"{k},{i},{i % 2}" for i, k in
                               enumerate(["a", "b", "1", "c", "2"] * 4)]
    p = tmp_path / "t.csv"
    p.write_text("\n".join(rows) + "\n")
    X, _, info = load_csv(str(p), "label", return_info=True)
    assert info["categorical"] == {"kind": ["1", "2", "a", "b", "c"]} and X.shape == (20, 6)


@pytest.mark.parametrize("command", [
    ["train", "--epochs", "1"],
    ["diabetes", "--target", "outcome", "--epochs", "1", "--cv", "2"],
    ["grande", "--target", "outcome", "--epochs", "1"],
])
def test_the_commands_refuse_the_typo_in_one_line(tmp_path, capsys, command):
    p = pima_like(tmp_path / "pima.csv", typos={(7, 1): "1O8"})
    code, out, err = run(command[:1] + ["--data", f"csv:{p}"] + command[1:], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "'glucose'" in err and "'1O8' on line 9" in err
    assert "--non-numeric missing" in err and "non_numeric=" not in err   # advice in CLI terms


@pytest.mark.parametrize("command, kept", [
    (["train", "--epochs", "1", "--json", "--no-memory"], "n_train"),
    (["diabetes", "--target", "outcome", "--epochs", "1", "--cv", "2", "--missing", "drop", "--json"], None),
    (["grande", "--target", "outcome", "--epochs", "1", "--json"], None),
])
def test_non_numeric_missing_reads_the_typo_as_a_missing_cell(tmp_path, capsys, command, kept):
    p = pima_like(tmp_path / "pima.csv", typos={(7, 1): "1O8"})
    code, out, err = run(command[:1] + ["--data", f"csv:{p}", "--non-numeric", "missing"] + command[1:],
                         capsys)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    if kept:                       # train drops the row: 59 rows left, split 3:1
        assert summary[kept] + summary["n_test"] == 59


# --------------------------------------------------------------------------- divergence
class ScriptedLoss(Rule):
    """Backprop's gradients with the loss replaced by a script of values, one per batch."""

    def __init__(self, losses):
        super().__init__()
        self.losses, self.calls = list(losses), 0

    def grads(self, model, x, y, *, rng=None):
        g, info = Backprop().grads(model, x, y, rng=rng)
        value = self.losses[min(self.calls, len(self.losses) - 1)]
        self.calls += 1
        return g, {**info, "loss": value}


def tiny(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((80, 2)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    net = Sequential(Linear(2, 8, rng=rng), ReLU(), Linear(8, 2, rng=rng))
    return net, X, y


def test_five_batches_far_above_the_start_are_divergence():
    net, X, y = tiny()
    # first batch 0.7; 10 x max(0.7, log 2) = 7; five batches above it in a row, across an epoch
    script = [0.7, 0.6, 50, 60, 70, 80, 90, 0.5]
    with pytest.raises(DivergenceError, match=r"epoch 2, batch 3.*10 × .*lower the learning "
                                              r"rate.*divergence=None"):
        fit(net, ScriptedLoss(script), Adam(net.params), (X, y), epochs=3, batch_size=20, rng=0,
            progress=False)
    assert issubclass(DivergenceError, FloatingPointError)


def test_four_bad_batches_or_divergence_none_is_no_alarm():
    net, X, y = tiny()
    spikes = [0.7, 50, 60, 70, 80, 0.5, 50, 60, 70, 80, 0.5, 0.4]      # runs of four, recovered
    hist = fit(net, ScriptedLoss(spikes), Adam(net.params), (X, y), epochs=3, batch_size=20, rng=0,
               progress=False)
    assert len(hist) == 3
    net, X, y = tiny()
    hist = fit(net, ScriptedLoss([0.7] + [1e6] * 20), Adam(net.params), (X, y), epochs=3,
               batch_size=20, rng=0, progress=False, divergence=None)
    assert len(hist) == 3 and hist["loss"][-1] == 1e6
    for bad in (0, 1.0, -3, "10", float("nan")):
        with pytest.raises((TypeError, ValueError), match="divergence"):
            fit(net, Backprop(), Adam(net.params), (X, y), epochs=1, batch_size=20, rng=0,
                progress=False, divergence=bad)


def test_adam_with_a_huge_learning_rate_is_caught_before_the_end():
    ds = load_dataset("digits", seed=0)
    net = get_model("mlp", ds.input_shape, ds.num_classes, rng=np.random.default_rng(0))
    with np.errstate(all="ignore"), pytest.raises(DivergenceError, match="epoch 1, batch"):
        fit(net, Backprop(), Adam(net.params, lr=1e6), (ds.X_train, ds.y_train), epochs=3,
            batch_size=64, rng=0, progress=False)


def test_the_command_reports_divergence_in_one_line(capsys):
    code, out, err = run(["train", "--optimizer", "adam", "--lr", "1e6", "--epochs", "3",
                          "--no-memory"], capsys)
    assert code == 1 and err.count("\n") == 1 and "diverged" in err, (code, err)
    assert "test accuracy" not in out


def test_sgd_lr_1e20_overflowing_in_the_warm_up_is_one_line(capsys):
    code, out, err = run(["train", "--optimizer", "sgd", "--lr", "1e20", "--epochs", "1",
                          "--no-memory"], capsys)
    assert code == 1 and err.count("\n") == 1, err
    assert "diverged" in err and "lower the learning rate" in err and "Warning" not in err


# --------------------------------------------------------------------------- a batch of one
def test_the_command_drops_a_last_batch_of_one_under_batch_norm(tmp_path, capsys):
    # 200 rows, a 0.25 test split: 150 training rows = 149 + 1
    p = pima_like(tmp_path / "pima.csv", n=200)
    code, out, err = run(["train", "--data", f"csv:{p}", "--model", "tabular-mlp", "--epochs", "1",
                          "--batch-size", "149", "--json", "--no-memory"], capsys)
    assert code == 0, err
    assert '"n_train": 150' in out and '"drop_last": true' in out


def test_fit_names_drop_last_for_a_last_batch_of_one():
    net = Sequential(Linear(3, 4, rng=0), BatchNorm1d(4), ReLU(), Linear(4, 2, rng=1))
    X = np.random.default_rng(0).standard_normal((33, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"last batch of epoch 1 holds one sample \(33 = 2 × 16 "
                                         r"\+ 1\).*drop_last=True"):
        fit(net, Backprop(), Adam(net.params), (X, np.arange(33) % 2), epochs=1, batch_size=16,
            rng=0, progress=False)


# --------------------------------------------------------------------------- other messages
def test_a_csv_with_only_a_header_says_it_has_no_rows(tmp_path, capsys):
    p = tmp_path / "h.csv"
    p.write_text("glucose,bmi,outcome\n")
    with pytest.raises(ValueError, match="header but no data rows"):
        load_csv(str(p))
    code, _, err = run(["train", "--data", f"csv:{p}"], capsys)
    assert code == 2 and "no data rows" in err and "single class" not in err
    one = tmp_path / "one.csv"                 # a single row of numbers is one data row
    one.write_text("1,2,0\n")
    X, y = load_csv(str(one))
    assert X.tolist() == [[1, 2]] and y.tolist() == [0]


def test_one_d_inputs_say_what_the_model_expects():
    net = get_model("mlp", (8,), 2, rng=np.random.default_rng(0))
    x = np.ones(8, np.float32)
    for call in (lambda: fit(net, Backprop(), Adam(net.params), (x, np.arange(8) % 2), epochs=1,
                             batch_size=4, rng=0, progress=False),
                 lambda: evaluate(net, x, np.arange(8) % 2)):
        with pytest.raises(ValueError, match=r"X has shape \(8,\).*takes 8 features.*X\[None\]"):
            call()


def test_a_column_of_huge_numbers_is_an_error_naming_it(tmp_path):
    rows = ["a,big,label"] + [f"{i % 7},{1e30 * (1 + i % 3):g},{i % 2}" for i in range(12)]
    p = tmp_path / "t.csv"
    p.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"column 'big'.*3e\+30 on line 4.*float32"):
        load_csv(str(p), "label")
    X, _ = load_csv(str(p), "label", dtype=np.float64)   # float64 squares them without overflow
    assert X[:, 1].max() == 3e30
    p.write_text("a,big,label\n1,2,0\n2,1e39,1\n3,4,0\n")   # beyond float32: would become inf
    with pytest.raises(ValueError, match=r"column 'big'.*1e\+39 on line 3"):
        load_csv(str(p), "label")
