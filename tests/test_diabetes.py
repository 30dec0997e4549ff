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
from nograd.data import cross_validate, load_csv
from nograd.layers import BatchNorm1d, Linear, ReLU, Sigmoid
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
# The authors' notebook (Zhang, Ahmed, Hasan, Gedeon & Hossain 2024, DiabetesNet, arXiv:2403.07483;
# read for nograd issue #19, item 10): [Linear -> sigmoid -> BatchNorm1d] x 3 with widths 64, 32, 16,
# then Linear(16, 2) -> sigmoid, softmax cross-entropy on those sigmoids, Adam 1e-3, batches of 16.
PAPER_WIDTHS = (64, 32, 16, 2)


def test_diabetesnet_is_the_papers_architecture_and_registered():
    net = DiabetesNet(8, rng=0)
    kinds = [type(m) for m in net]
    assert kinds == [Linear, Sigmoid, BatchNorm1d] * 3 + [Linear, Sigmoid]
    assert tuple(m.out_features for m in net if isinstance(m, Linear)) == PAPER_WIDTHS
    # PyTorch's nn.Linear default, which the notebook gets without asking: weight and bias both
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (so the biases are not zero)
    for m in net:
        if isinstance(m, Linear):
            bound = 1 / np.sqrt(m.in_features)
            for name in ("weight", "bias"):
                a = m.params[name]
                assert np.abs(a).max() <= bound and np.abs(a).max() > 0.7 * bound, (name, bound)
    # nograd's former variant (Linear -> BatchNorm -> ReLU) is the tabular MLP's default
    assert [type(m) for m in TabularMLP(8)] == [Linear, BatchNorm1d, ReLU] * 3 + [Linear]
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
    with pytest.raises(ValueError, match="in_features must be positive"):
        DiabetesNet(0)


def paper_forward(net, x, train):
    """The notebook's forward pass written out: h <- BN(sigmoid(h W^T + b)) three times, then
    sigmoid(h W^T + b). BN in training uses the batch mean and biased variance, in evaluation the
    running statistics; eps 1e-5 (PyTorch's default)."""
    def sig(z):
        return 1.0 / (1.0 + np.exp(-z))

    p, buf = net.params, net.buffers
    h = x
    for lin, bn in ((0, 2), (3, 5), (6, 8)):
        a = sig(h @ p[f"{lin}.weight"].T + p[f"{lin}.bias"])
        if train:
            mu, var = a.mean(axis=0), a.var(axis=0)
        else:
            mu, var = buf[f"{bn}.running_mean"], buf[f"{bn}.running_var"]
        h = p[f"{bn}.weight"] * (a - mu) / np.sqrt(var + 1e-5) + p[f"{bn}.bias"]
    return sig(h @ p["9.weight"].T + p["9.bias"])


@pytest.mark.parametrize("train", [True, False])
def test_diabetesnet_forward_is_the_papers_equations(train):
    net = DiabetesNet(8, rng=3, dtype=np.float64)
    rng = np.random.default_rng(4)
    for name, a in net.params.items():          # non-trivial BN affine parameters too
        a += 0.3 * rng.standard_normal(a.shape)
    net.forward(rng.standard_normal((40, 8)) * 2 + 1, train=True)   # running statistics move
    x = rng.standard_normal((12, 8))
    expected = paper_forward(net, x, train)
    out = net.forward(x, train=train)[0]
    assert out.shape == (12, 2) and np.all((out > 0) & (out < 1))
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-14)


def test_diabetesnet_step_matches_pytorch():
    """One training step of the notebook's model in PyTorch (same weights, same batch): the loss
    (softmax cross-entropy on the sigmoid outputs), every gradient and the running statistics."""
    torch = pytest.importorskip("torch")
    from nograd.losses import get_loss

    net = DiabetesNet(8, rng=5, dtype=np.float64)
    layers = []
    for m in net:
        if isinstance(m, Linear):
            lin = torch.nn.Linear(m.in_features, m.out_features).double()
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(m.params["weight"]))
                lin.bias.copy_(torch.from_numpy(m.params["bias"]))
            layers.append(lin)
        elif isinstance(m, Sigmoid):
            layers.append(torch.nn.Sigmoid())
        else:
            layers.append(torch.nn.BatchNorm1d(m.num_features).double())
    ref = torch.nn.Sequential(*layers).train()
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((16, 8)), rng.integers(0, 2, 16)
    loss_t = torch.nn.CrossEntropyLoss()(ref(torch.from_numpy(x)), torch.from_numpy(y))
    loss_t.backward()

    out, cache = net.forward(x, train=True)
    value, dout = get_loss("cross-entropy")(out, y)
    _, grads = net.backward(cache, dout)
    assert value == pytest.approx(loss_t.item(), rel=1e-12)
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-13,
                                   err_msg=name)
    for name, b in ref.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            np.testing.assert_allclose(net.buffers[name], b.numpy(), rtol=1e-12, err_msg=name)


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


# --------------------------------------------------------------------------- the paper's protocol
PIMA = os.path.join(ROOT, "..", "shared", "data", "pima_diabetes", "pima-indians-diabetes.csv")


def test_paper_split_and_resample_are_scikit_learns():
    """The notebook's two draws made with NumPy alone: sklearn.utils.resample(majority,
    replace=True, n_samples=n_minority, random_state=s), majority rows first, then
    train_test_split(..., test_size=0.2, random_state=0). Checked against scikit-learn itself."""
    pytest.importorskip("sklearn")
    from sklearn.model_selection import train_test_split
    from sklearn.utils import resample

    from nograd.estimators.tabular import paper_resample, paper_split

    for n, test_size, seed in ((536, 0.2, 0), (101, 0.25, 3), (10, 0.3, 7)):
        tr, te = train_test_split(np.arange(n), test_size=test_size, random_state=seed)
        mine_tr, mine_te = paper_split(n, test_size=test_size, random_state=seed)
        np.testing.assert_array_equal(mine_tr, tr)
        np.testing.assert_array_equal(mine_te, te)
    rng = np.random.default_rng(0)
    for major in (0, 1):
        y = np.array([major] * 30 + [1 - major] * 12)
        rng.shuffle(y)
        X = rng.standard_normal((42, 3))
        for seed in (0, 5):
            Xr, yr, index = paper_resample(X, y, random_state=seed)
            drawn = resample(np.flatnonzero(y == major), replace=True, n_samples=12,
                             random_state=seed)
            np.testing.assert_array_equal(index, np.concatenate([drawn, np.flatnonzero(y != major)]))
            np.testing.assert_array_equal(Xr, X[index])
            np.testing.assert_array_equal(yr, y[index])
    with pytest.raises(ValueError, match="test_size must be a fraction"):
        paper_split(10, test_size=1.5)
    with pytest.raises(TypeError, match="random_state must be a non-negative int"):
        paper_split(10, random_state=np.random.default_rng(0))


@pytest.mark.skipif(not os.path.isfile(PIMA), reason="needs ../shared/data/pima_diabetes")
def test_paper_protocol_on_pima_has_the_papers_test_set():
    """The paper's Pima figures (Zhang et al. 2024, results table) are 0.8981 = 97/108 with
    sensitivity 0.8929 = 50/56 and specificity 0.9038 = 47/52: a test set of 108 rows, 56 diabetic
    and 52 not. Their procedure (500 non-diabetic rows drawn down to 268 with replacement, placed
    before the 268 diabetic rows, train_test_split(test_size=0.2, random_state=0)) gives exactly
    that test set whatever the resampling draw; the other order (diabetic rows first) would give
    52 diabetic test rows, and no k/52 is 0.8929."""
    from nograd.estimators.tabular import PAPER_PIMA, evaluate_protocol

    assert round(50 / 56, 4) == PAPER_PIMA["sensitivity"] and round(47 / 52, 4) == PAPER_PIMA["specificity"]
    assert round(97 / 108, 4) == PAPER_PIMA["accuracy"]
    assert all(round(k / 52, 4) != PAPER_PIMA["sensitivity"] for k in range(53))
    X, y = load_csv(PIMA, target=-1, header=False)
    for seed in (0, 1):
        out = evaluate_protocol(X, y, protocol="paper", seed=seed, max_epochs=2)
        assert (out["n"], out["n_train"], out["n_test"]) == (536, 428, 108)
        assert out["test_positives"] == 56
        assert 0.05 < out["test_in_train"] < 0.5          # copies of majority rows on both sides
        assert out["epoch"] == len(out["test_accuracy"]) <= 2


def table(n=160, seed=1):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(np.int64)
    X = (rng.standard_normal((n, 4)) + 1.2 * y[:, None]).astype(np.float32)
    return X, y


def test_paper_protocol_stops_at_the_first_epoch_reaching_the_target():
    from nograd.estimators.tabular import evaluate_protocol

    X, y = table()
    full = evaluate_protocol(X, y, protocol="paper", stop_at=None, epochs=25, seed=2)
    acc = np.array(full["test_accuracy"])
    assert len(acc) == full["epoch"] == 25 and not full["stopped"]
    assert full["mean"]["accuracy"] == pytest.approx(acc[-1])
    target = float(acc.max())
    first = int(np.argmax(acc >= target)) + 1
    assert first > 1
    out = evaluate_protocol(X, y, protocol="paper", stop_at=target, max_epochs=25, seed=2)
    assert out["stopped"] and out["epoch"] == first
    assert out["test_accuracy"] == full["test_accuracy"][:first]     # same run, cut short
    assert out["mean"]["accuracy"] == pytest.approx(target)
    never = evaluate_protocol(X, y, protocol="paper", stop_at=1.0, max_epochs=3, seed=2)
    assert not never["stopped"] and never["epoch"] == 3 and max(never["test_accuracy"]) < 1.0


def test_evaluate_protocol_defaults_to_honest_cross_validation():
    from nograd.estimators.tabular import evaluate_protocol

    X, y = table(90)
    out = evaluate_protocol(X, y, epochs=2, k=3)
    same = cross_validate(X, y, make_fit_predict("diabetesnet", epochs=2, batch_size=16), k=3,
                          balance="under", balance_options={"replace": True}, rng=0)
    assert out["protocol"] == "training-folds" and out["mean"] == same["mean"]
    assert all(f["test_in_train"] == 0 for f in out["folds"])
    leaky = evaluate_protocol(X, y, protocol="leaky", epochs=2, k=3)
    assert leaky["protocol"] == "before-split"
    assert np.mean([f["test_in_train"] for f in leaky["folds"]]) > 0.05


@pytest.mark.parametrize("kwargs,error,match", [
    ({"protocol": "fair"}, ValueError, "protocol must be one of honest, leaky, paper"),
    ({"protocol": "paper", "stop_at": 1.5}, ValueError, r"stop_at must be an accuracy in \(0, 1\]"),
    ({"protocol": "paper", "balance": "smote"}, ValueError, "protocol='paper' resamples as the paper"),
    ({"protocol": "paper", "seed": -1}, TypeError, "random_state must be a non-negative int"),
    ({"model": "resnet"}, ValueError, "unknown model 'resnet'"),
])
def test_evaluate_protocol_rejects_bad_arguments(kwargs, error, match):
    from nograd.estimators.tabular import evaluate_protocol

    X, y = table(40)
    with pytest.raises(error, match=match):
        evaluate_protocol(X, y, epochs=1, **kwargs)


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


def test_cli_diabetes_protocols(tmp_path, capsys):
    csv = write_table(tmp_path / "t.csv")
    n_min = int(np.bincount(load_csv(csv, target="outcome")[1]).min())
    base = ["diabetes", "--data", f"csv:{csv}", "--target", "outcome", "--lr", "0.01"]
    code, out, err = run(base + ["--protocol", "paper", "--max-epochs", "4", "--stop-at", "1.0",
                                 "--json"], capsys)
    assert code == 0 and err == ""
    res = json.loads(out)
    assert res["protocol"] == "paper" and res["n_test"] == -(-2 * n_min * 2 // 10)   # ceil(0.2 n)
    assert res["epoch"] == len(res["test_accuracy"]) <= 4 and 0 <= res["accuracy"] <= 1
    assert res["test_in_train"] > 0
    code, out, _ = run(base + ["--protocol", "paper", "--max-epochs", "2"], capsys)
    assert code == 0 and "warning:" in out and "first epoch whose test accuracy" in out
    code, out, _ = run(base + ["--protocol", "leaky", "--balance", "over", "--cv", "2",
                               "--epochs", "1", "--json"], capsys)
    assert code == 0 and json.loads(out)["protocol"] == "before-split"
    code, out, err = run(base + ["--protocol", "paper", "--balance", "smote"], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--protocol paper resamples as the paper does" in err


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
                           str(tmp_path / "pima.csv"), "--epochs", "1", "--cv", "2",
                           "--max-epochs", "3", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(last["results"]) == 16 and set(last["leak"]) == {"under", "over", "smote"}
    stopped, fixed = last["paper_protocol"]["stopped"], last["paper_protocol"]["fixed"]
    assert len(stopped) == len(fixed) == 1 and fixed[0]["epoch"] == 1 and stopped[0]["epoch"] <= 3
    n_min = int(min(y.sum(), n - y.sum()))
    assert stopped[0]["n_test"] == -(-2 * n_min * 2 // 10)         # ceil(0.2 * 2 n_min)
    assert [r["protocol"].split(":")[0] for r in last["side_by_side"]] == [
        "paper protocol", "best test accuracy over all epochs (the most the rule can report)",
        "leak alone", "leak alone", "honest", "paper, as reported"]
    grande = [(r["protocol"], r["balance"]) for r in last["results"] if r["model"] == "grande"]
    assert grande == [("honest", "none"), ("leaky", "over")]
    honest = [r for r in last["results"] if r["protocol"] == "honest"]
    assert all(r["test_in_train"] == 0 for r in honest)
