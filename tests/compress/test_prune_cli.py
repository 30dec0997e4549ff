"""``python -m nograd prune``: a saved GPT in, a pruned (and saved) GPT out."""
import json

import numpy as np
import pytest

import nograd
from nograd.cli import main


@pytest.fixture(scope="module")
def gpt_file(tmp_path_factory):
    from nograd.data.text import load_text

    vocab = load_text("shakespeare").vocab.size
    model = nograd.get_model("gpt", (16,), vocab, rng=0, n_layer=2, n_head=4, n_embd=16)
    path = tmp_path_factory.mktemp("prune") / "gpt.npz"
    nograd.save_model(model, path, meta={"data": "shakespeare"})
    return path


def test_prune_command_prints_one_json_line_and_saves_a_smaller_model(gpt_file, tmp_path, capsys):
    out = tmp_path / "small.npz"
    status = main(["prune", "--model-file", str(gpt_file), "--score", "mini-llm", "--ratio", "0.5",
                   "--calib-batches", "2", "--eval-batches", "2", "--batch-size", "4", "--n", "4",
                   "--recover-steps", "2", "--save", str(out), "--json"])
    assert status == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["n_heads"] == [2, 2] and summary["mlp_hidden"] == [32, 32]
    assert summary["params_after"] < summary["params_before"]
    for key in ("val_loss_before", "val_loss", "val_loss_recovered"):
        assert np.isfinite(summary[key])
    small = nograd.load_model(out)
    assert small.num_params == summary["params_after"]


@pytest.mark.parametrize("argv, message", [(["--ratio", "1.5"], "--ratio"),
                                           (["--score", "random"], "--score")])
def test_prune_command_refuses_bad_options_in_one_line(gpt_file, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(["prune", "--model-file", str(gpt_file), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_prune_command_reports_bad_groups_in_one_line(gpt_file, capsys):
    status = main(["prune", "--model-file", str(gpt_file), "--groups", "layers", "--calib-batches",
                   "1", "--eval-batches", "1", "--batch-size", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "groups" in err[0]


def test_prune_command_refuses_a_model_that_is_not_a_gpt(tmp_path, capsys):
    path = tmp_path / "mlp.npz"
    nograd.save_model(nograd.get_model("mlp", (4,), 3, rng=0), path)
    assert main(["prune", "--model-file", str(path)]) == 2
    assert "prune takes a GPT" in capsys.readouterr().err
