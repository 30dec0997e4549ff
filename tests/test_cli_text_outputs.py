"""``train`` on text writes ``--plot`` and ``--history`` like the epoch runs do (checked first)."""
import json
import struct

import pytest

from nograd.__main__ import main

TINY = ["train", "--model", "gpt", "--data", "shakespeare", "--iters", "4", "--eval-interval", "2", "--eval-iters", "1",
        "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--sample", "0",
        "--json"]


def test_text_run_writes_its_history_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png, hist = tmp_path / "curve.png", tmp_path / "evals.json"
    assert main(TINY + ["--plot", str(png), "--history", str(hist)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    evals = json.loads(hist.read_text())
    assert [e["iter"] for e in evals] == [0, 2, 4]
    assert evals[-1]["val_loss"] == pytest.approx(summary["val_loss"])
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and min(struct.unpack(">II", head[16:24])) > 100


def test_text_run_history_as_csv(tmp_path, capsys):
    hist = tmp_path / "evals.csv"
    assert main(TINY + ["--history", str(hist)]) == 0
    rows = hist.read_text().splitlines()
    assert rows[0] == "iter,train_loss,val_loss,lr" and len(rows) == 4


def test_text_run_refuses_a_bad_output_before_training(tmp_path, capsys):
    code = main(TINY + ["--history", str(tmp_path / "evals.txt")])
    assert code == 2 and "must end in .csv or .json" in capsys.readouterr().err
