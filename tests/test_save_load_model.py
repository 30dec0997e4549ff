"""Files that know their model (issue #20): ``nograd.save_model`` writes the architecture as JSON
beside the weights, ``nograd.load_model`` rebuilds the model from the file alone, the command line's
``train --save`` writes such files and ``predict --model-file`` reads them; an unwritable or
directory ``--save`` path is refused before any training."""
import json
import os
import shutil
import tempfile

import numpy as np
import pytest

import nograd
from nograd.cli import main
from nograd.cli.common import UserError, check_writable
from nograd.core.params import SPEC_KEY
from nograd.layers import (BatchNorm1d, Dropout, LayerNorm, LeakyReLU, Linear, Reshape, Tanh)
from nograd.layers.activations import Activation
from nograd.models.registry import _MODELS

#: every model nograd registers: (input_shape, num_classes, small options, a batch maker)
IMAGE = lambda rng: rng.normal(size=(4, 1, 8, 8)).astype(np.float32)      # noqa: E731
TABLE = lambda d: (lambda rng: rng.normal(size=(6, d)).astype(np.float32))  # noqa: E731
MODELS = {
    "mlp": ((1, 8, 8), 10, {"hidden": (16, 8)}, IMAGE),
    "cnn": ((1, 8, 8), 10, {"channels": (4,)}, IMAGE),
    "vit": ((1, 8, 8), 10, {"dim": 16, "depth": 1, "heads": 2}, IMAGE),
    "charlm": ((12,), 11, {"hidden": 8, "embed": 4}, lambda rng: rng.integers(0, 11, size=(3, 12))),
    "gpt": ((12,), 11, {"n_layer": 1, "n_head": 2, "n_embd": 16},
            lambda rng: rng.integers(0, 11, size=(3, 12))),
    "tabular-mlp": ((6,), 3, {"hidden": (8, 4), "dropout": 0.1}, TABLE(6)),
    "diabetesnet": ((8,), 2, {}, TABLE(8)),
    "logistic": ((5,), 3, {}, TABLE(5)),
}


def test_the_table_covers_every_model_nograd_registers():
    ours = {n for n, (builder, _) in _MODELS.items() if builder.__module__.startswith("nograd.")}
    assert ours == set(MODELS)


def _same(a, b, x):
    assert type(a) is type(b)
    assert [(n, type(m)) for n, m in a.modules()] == [(n, type(m)) for n, m in b.modules()]
    for kind in ("params", "buffers"):
        pa, pb = getattr(a, kind), getattr(b, kind)
        assert list(pa) == list(pb)
        for k in pa:
            assert pa[k].dtype == pb[k].dtype
            np.testing.assert_array_equal(pa[k], pb[k])
    np.testing.assert_array_equal(a(x), b(x))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_round_trips(name, tmp_path):
    shape, classes, options, make_x = MODELS[name]
    rng = np.random.default_rng(3)
    model = nograd.get_model(name, shape, classes, rng=7, **options)
    x = make_x(rng)
    model.forward(x, train=True, rng=rng)             # running statistics move off their start
    for v in model.params.values():                   # and weights off the seed-0 ones load rebuilds
        v += rng.normal(scale=0.01, size=v.shape).astype(v.dtype)
    nograd.save_model(model, tmp_path / "m.npz")
    again = nograd.load_model(tmp_path / "m.npz")
    _same(model, again, x)
    spec = nograd.serialize.read_spec(tmp_path / "m.npz")
    assert spec["get_model"]["model"] == name and tuple(spec["get_model"]["input_shape"]) == shape
    nograd.save_model(again, tmp_path / "again.npz")  # what load_model gives saves again
    _same(model, nograd.load_model(tmp_path / "again.npz"), x)


def test_options_keep_their_types_and_the_dtype_is_kept(tmp_path):
    model = nograd.get_model("mlp", (5,), 3, rng=0, hidden=(7,), activation="tanh",
                             dtype=np.float64)
    nograd.save_model(model, tmp_path / "m.npz", meta={"data": "csv:x.csv", "seed": 4})
    spec = nograd.serialize.read_spec(tmp_path / "m.npz")
    assert spec["get_model"]["options"] == {"hidden": {"tuple": [7]}, "activation": "tanh",
                                            "dtype": {"dtype": "float64"}}
    assert spec["meta"] == {"data": "csv:x.csv", "seed": 4}
    again = nograd.load_model(tmp_path / "m.npz")
    assert again.build_spec["options"] == {"hidden": (7,), "activation": "tanh", "dtype": np.float64}
    assert again.dtype == np.float64
    cast = nograd.get_model("mlp", (5,), 3, rng=0, hidden=(7,)).astype(np.float64)
    nograd.save_model(cast, tmp_path / "cast.npz")
    assert nograd.load_model(tmp_path / "cast.npz").dtype == np.float64


def test_a_sequential_of_layers_is_described_generically(tmp_path):
    rng = np.random.default_rng(0)
    net = nograd.Sequential(Reshape(6), Linear(6, 5, bias=False, rng=1), LeakyReLU(0.2),
                            nograd.Residual(nograd.Sequential(Linear(5, 5, rng=2), Tanh())),
                            Dropout(0.3), BatchNorm1d(5), LayerNorm(5, eps=1e-3), Linear(5, 2, rng=3))
    x = rng.normal(size=(8, 2, 3)).astype(np.float32)
    net.forward(x, train=True, rng=rng)
    nograd.save_model(net, tmp_path / "net.npz")
    spec = nograd.serialize.read_spec(tmp_path / "net.npz")
    assert "get_model" not in spec and spec["layers"]["class"] == "Sequential"
    again = nograd.load_model(tmp_path / "net.npz")
    _same(net, again, x)
    assert again[2].negative_slope == 0.2 and "bias" not in again[1].params
    assert again[4].p == 0.3 and again[6].eps == 1e-3 and again[0].shape == (6,)


class Doubler(nograd.Module):
    def forward(self, x, **kw):
        return 2 * x, None


@pytest.mark.parametrize("make, match", [
    (lambda: nograd.Sequential(Linear(3, 2, rng=0), Activation(np.sin, np.cos)),
     r"model\.1: Activation's f is a ufunc"),
    (lambda: nograd.Sequential(Linear(3, 2, rng=0), Doubler()),
     r"model\.1 is a Doubler, neither a layer of nograd.layers"),
    (lambda: nograd.Sequential(Linear(3, 2, rng=0), LayerNorm(2, elementwise_affine=False)),
     r"rebuilt from its description, its params are \['0.weight', '0.bias'\], the description "
     r"gives \['0.weight', '0.bias', '1.weight'\]"),
])
def test_models_the_file_could_not_rebuild_are_refused(make, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        nograd.save_model(make(), tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


def test_a_model_changed_after_get_model_is_refused(tmp_path):
    model = nograd.get_model("tabular-mlp", (6,), 3, rng=0, hidden=(8,), dropout=0.1)
    drop = next(m for _, m in model.modules() if isinstance(m, Dropout))
    drop.p = 0.5
    with pytest.raises(ValueError, match="Dropout .* has p = 0.5, the description gives 0.1"):
        nograd.save_model(model, tmp_path / "m.npz")
    model = nograd.get_model("mlp", (6,), 3, rng=0, hidden=(8,))
    model.build_spec["options"]["hidden"] = (9,)
    with pytest.raises(ValueError, match=r"'0.weight' is float32\(8, 6\), the description gives "
                                         r"float32\(9, 6\)"):
        nograd.save_model(model, tmp_path / "m.npz")
    model.build_spec["options"]["hidden"] = lambda: 8
    with pytest.raises(ValueError, match="option 'hidden' of model 'mlp' is a function"):
        nograd.save_model(model, tmp_path / "m.npz")


def test_weight_only_files_still_load_and_load_model_says_how(tmp_path):
    model = nograd.get_model("mlp", (6,), 3, rng=0, hidden=(8,))
    nograd.save(model, tmp_path / "w.npz")
    with pytest.raises(ValueError, match=r"holds weights but no architecture .* then "
                                         r"nograd.load\(model, path\)"):
        nograd.load_model(tmp_path / "w.npz")
    other = nograd.get_model("mlp", (6,), 3, rng=1, hidden=(8,))
    nograd.load(other, tmp_path / "w.npz")
    np.testing.assert_array_equal(other.params["2.weight"], model.params["2.weight"])
    nograd.save_model(model, tmp_path / "m.npz")          # and model files load into a model too
    nograd.load(other, tmp_path / "m.npz")


def test_load_model_errors_name_the_path(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        nograd.load_model(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match="is a directory"):
        nograd.load_model(tmp_path)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable nograd .npz"):
        nograd.load_model(tmp_path / "bad.npz")
    arrays = {SPEC_KEY: np.array("{not json"), "__nograd_format__": np.array(1)}
    np.savez(tmp_path / "broken.npz", **arrays)
    with pytest.raises(ValueError, match="stored architecture is not valid JSON"):
        nograd.load_model(tmp_path / "broken.npz")
    spec = {"nograd_spec": 1, "dtype": "float32", "layers": {"class": "Nope", "args": {}}, "meta": {}}
    np.savez(tmp_path / "nope.npz", **{SPEC_KEY: np.array(json.dumps(spec))})
    with pytest.raises(ValueError, match="'Nope', which is not a layer of nograd.layers"):
        nograd.load_model(tmp_path / "nope.npz")


# --------------------------------------------------------------------------- command line
def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_save_then_predict_gives_the_reported_accuracy(tmp_path, capsys):
    f = tmp_path / "digits.npz"
    code, out, _ = run(["train", "--epochs", "2", "--batch-size", "64", "--seed", "3", "--json",
                        "--no-memory", "--save", str(f)], capsys)
    assert code == 0
    trained = json.loads(out)
    spec = nograd.serialize.read_spec(f)
    assert spec["get_model"]["model"] == "mlp"
    assert spec["meta"] == {"command": "train", "rule": "backprop", "data": "digits", "seed": 3,
                            "target": -1}
    # the data, split and seed come from the file; --json gives every prediction
    code, out, err = run(["predict", "--model-file", str(f), "--json"], capsys)
    assert code == 0, err
    got = json.loads(out)
    assert got["accuracy"] == trained["test_accuracy"] and got["n"] == trained["n_test"]
    ds = nograd.data.load_dataset("digits", seed=3)
    net = nograd.load_model(f)
    assert got["predictions"] == nograd.predict(net, ds.X_test).tolist()
    assert got["labels"] == ds.y_test.tolist()
    # a table on the terminal
    code, out, _ = run(["predict", "--model-file", str(f), "--data", "digits", "--seed", "3",
                        "--show", "3"], capsys)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 5
    assert lines[0].split() == ["index", "predicted", "label"]
    assert lines[1].split() == ["0", str(got["predictions"][0]), str(got["labels"][0])]
    assert lines[-1] == (f"mlp from {f} on digits (test split, {got['n']} samples): accuracy "
                         f"{got['accuracy']:.4f}")


def test_predict_on_the_training_split_and_all(tmp_path, capsys):
    f = tmp_path / "m.npz"
    assert run(["train", "--epochs", "1", "--json", "--no-memory", "--save", str(f)], capsys)[0] == 0
    ds = nograd.data.load_dataset("digits", seed=0)
    for split, n in (("train", len(ds.X_train)), ("all", len(ds.X_train) + len(ds.X_test))):
        code, out, _ = run(["predict", "--model-file", str(f), "--split", split, "--json"], capsys)
        assert code == 0 and json.loads(out)["n"] == n and json.loads(out)["split"] == split


def test_train_save_of_a_language_model_round_trips(tmp_path, capsys):
    f = tmp_path / "gpt.npz"
    text = tmp_path / "t.txt"
    text.write_text("abcabcabd " * 200)
    code, out, err = run(["train", "--model", "gpt", "--data", f"text:{text}", "--iters", "2",
                          "--n-layer", "1", "--n-head", "2", "--n-embd", "8", "--block-size", "8",
                          "--eval-interval", "1", "--eval-iters", "1", "--sample", "0", "--json",
                          "--save", str(f)], capsys)
    assert code == 0, err
    net = nograd.load_model(f)
    assert type(net).__name__ == "GPT" and net.num_params == json.loads(out)["num_params"]


@pytest.mark.parametrize("argv, match", [
    (["predict"], "the following arguments are required: --model-file"),
    (["predict", "--model-file", "/no/such/m.npz"], "--model-file /no/such/m.npz: path "),
    (["predict", "--model-file", "{weights}"], "holds weights but no architecture"),
    (["predict", "--model-file", "{model}", "--data", "spirals"],
     "--data spirals gives samples of shape (2,); the model in "),
    (["predict", "--model-file", "{model}", "--data", "nope"], "unknown dataset 'nope'"),
    (["predict", "--model-file", "{model}", "--split", "val"], "invalid choice: 'val'"),
    (["predict", "--model-file", "{ff}"], "trained with rule ff, which predicts"),
    (["train", "--save", "{dir}", "--epochs", "1"], "--save {dir}: is a directory"),
])
def test_predict_and_save_argument_errors_are_one_line_exit_2(argv, match, tmp_path, capsys):
    weights, model, ff = tmp_path / "w.npz", tmp_path / "m.npz", tmp_path / "ff.npz"
    net = nograd.get_model("mlp", (1, 8, 8), 10, rng=0, hidden=(8,))
    nograd.save(net, weights)
    nograd.save_model(net, model, meta={"data": "digits", "seed": 0, "rule": "backprop"})
    nograd.save_model(net, ff, meta={"data": "digits", "seed": 0, "rule": "ff"})
    names = {"weights": weights, "model": model, "ff": ff, "dir": tmp_path}
    argv = [a.format(**names) for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert match.format(**names) in err, err


# --------------------------------------------------------------------------- writable checks
def _as_nobody(fn):
    """Run ``fn()`` in a forked child under the unprivileged uid 65534 (root writes anywhere);
    returns what it wrote to stderr and its exit status."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # the child
        os.close(r)
        try:
            os.setgid(65534)
            os.setuid(65534)
            import sys

            sys.stderr = os.fdopen(w, "w")
            code = fn()
            sys.stderr.flush()
        except BaseException as e:                  # report anything, never return into pytest
            os.write(w, repr(e).encode())
            code = 99
        os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        err = f.read()
    return err, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.fixture
def read_only_folder():
    folder = tempfile.mkdtemp(prefix="nograd-ro-")
    os.chmod(folder, 0o555)
    yield folder
    os.chmod(folder, 0o755)
    shutil.rmtree(folder)


def test_check_writable_refuses_a_read_only_folder_and_a_directory(read_only_folder, tmp_path):
    target = os.path.join(read_only_folder, "w.npz")
    if os.geteuid() == 0:
        def check():
            try:
                check_writable(target, "--save")
            except UserError as e:
                print(e, file=__import__("sys").stderr)
                return 2
            return 0
        err, code = _as_nobody(check)
        assert code == 2 and f"--save {target}: folder {read_only_folder} is not writable" in err, err
    else:
        with pytest.raises(UserError, match="is not writable"):
            check_writable(target, "--save")
    with pytest.raises(UserError, match=f"--save {tmp_path}: is a directory"):
        check_writable(str(tmp_path), "--save")
    check_writable(str(tmp_path / "fine.npz"), "--save")
    assert os.listdir(tmp_path) == []                  # the probe leaves nothing behind


def test_train_with_an_unwritable_save_stops_before_training(read_only_folder, capsys):
    target = os.path.join(read_only_folder, "w.npz")
    argv = ["train", "--epochs", "1", "--save", target]
    if os.geteuid() == 0:
        err, code = _as_nobody(lambda: main(argv))
        out = ""
    else:
        code, out, err = run(argv, capsys)
    assert code == 2 and out == "" and "epoch" not in err
    assert err.strip() == (f"python -m nograd train: error: --save {target}: folder "
                           f"{read_only_folder} is not writable")
