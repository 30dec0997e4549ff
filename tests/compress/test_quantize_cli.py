"""``python -m nograd quantize`` (issue #22): a saved model in, a quantized file and a report out."""
import io
import json

import numpy as np
import pytest

import nograd
from nograd.cli import main
from nograd.cli.quantize import cmd_quantize


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from nograd.data import load_dataset
    from nograd.train import fit

    ds = load_dataset("digits", seed=0)
    model = nograd.get_model("mlp", ds.input_shape, ds.num_classes, rng=0, hidden=(32,))
    fit(model, "backprop", "adam", (ds.X_train, ds.y_train), epochs=3, batch_size=64, rng=0,
        progress=False)
    path = tmp_path_factory.mktemp("q") / "mlp.npz"
    nograd.save_model(model, path, meta={"data": "digits", "seed": 0})
    return path


def _args(**kw):
    import argparse

    base = dict(model_file=None, model=None, data=None, data_dir=None, download=False, bits=4,
                method="comq", granularity="channel", sweeps=4, order="greedy", calib=128,
                epochs=None, seed=0, save=None, json=True)
    base.update(kw)
    return argparse.Namespace(**base)


def test_quantize_a_model_file_writes_a_smaller_file_that_reloads(model_file, tmp_path):
    out = io.StringIO()
    saved = tmp_path / "q.npz"
    summary = cmd_quantize(_args(model_file=str(model_file), bits=3, save=str(saved)), out)
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    assert line["method"] == "comq" and line["bits"] == 3 and line["data"] == "digits"
    assert [e["name"] for e in line["layers"]] == ["1", "3"]
    assert line["file_bytes"] < line["float_file_bytes"] / 1.5     # small model: zip headers weigh
    assert line["accuracy"] >= line["float_accuracy"] - 0.05
    again = nograd.load_model(saved)
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    assert again(x).shape == (4, 10) and summary["calib_samples"] == 128


def test_text_report_names_every_layer(model_file):
    out = io.StringIO()
    cmd_quantize(_args(model_file=str(model_file), method="rtn", json=False), out)
    text = out.getvalue()
    assert "rtn 4-bit" in text and "accuracy: float" in text and "smaller" in text
    assert sum(line.startswith(("1 ", "3 ")) for line in text.splitlines()) == 2


def test_bad_command_lines_exit_2(model_file, capsys):
    assert main(["quantize", "--data", "digits"]) == 2
    assert "--model-file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["quantize", "--model-file", str(model_file), "--bits", "1"])
    assert e.value.code == 2
    assert main(["quantize", "--model-file", str(model_file) + ".missing"]) == 2
    assert "does not exist" in capsys.readouterr().err
