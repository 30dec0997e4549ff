"""The language-model loop (nograd.train_lm) and `python -m nograd train --data text:...`."""
import json
import math

import numpy as np
import pytest

from nograd.__main__ import main
from nograd.data.text import TextData
from nograd.models.gpt import GPT
from nograd.train_lm import lr_at, train_lm


def test_schedule_is_nanogpts():
    """Warm-up (it+1)/(w+1), cosine from lr to min_lr between w and D, then min_lr (nanoGPT get_lr)."""
    assert lr_at(0, 1e-3, 1e-4, 100, 2000) == pytest.approx(1e-3 / 101)
    assert lr_at(99, 1e-3, 1e-4, 100, 2000) == pytest.approx(1e-3 * 100 / 101)
    assert lr_at(100, 1e-3, 1e-4, 100, 2000) == pytest.approx(1e-3)
    assert lr_at(1050, 1e-3, 1e-4, 100, 2000) == pytest.approx(1e-4 + 0.5 * 9e-4)
    assert lr_at(2000, 1e-3, 1e-4, 100, 2000) == pytest.approx(1e-4)
    assert lr_at(2500, 1e-3, 1e-4, 100, 2000) == 1e-4
    mid = lr_at(575, 1e-3, 1e-4, 100, 2000)
    assert mid == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * 0.25)))


def test_train_lm_learns_a_repetitive_text():
    data = TextData("abcdefgh" * 200)
    model = GPT(data.vocab.size, n_layer=1, n_head=2, n_embd=16, block_size=8, rng=0)
    lines = []
    hist = train_lm(model, data, iters=120, batch_size=8, lr=3e-3, warmup=10, eval_interval=40,
                    eval_iters=2, rng=0, log=lines.append)
    # uniform guessing over the 8 characters is log 8 = 2.08; the sequence is deterministic
    assert hist["evals"][0]["val_loss"] > 1.5 and hist["val_loss"] < 0.5
    assert len(lines) == 4 and lines[-1].startswith("iter   120/120")
    again = train_lm(GPT(data.vocab.size, n_layer=1, n_head=2, n_embd=16, block_size=8, rng=0), data,
                     iters=120, batch_size=8, lr=3e-3, warmup=10, eval_interval=40, eval_iters=2, rng=0)
    assert again["val_loss"] == hist["val_loss"]


def test_weight_decay_reaches_matrices_only():
    """With a zero gradient path (lr tiny) decay still shrinks matrices, never gains."""
    data = TextData("xyz" * 100)
    model = GPT(data.vocab.size, n_layer=1, n_head=1, n_embd=4, block_size=4, rng=0)
    gain = model.params["ln_f.weight"].copy()
    train_lm(model, data, iters=3, batch_size=2, lr=1e-9, min_lr=1e-9, weight_decay=0.5, eval_iters=1, rng=0)
    np.testing.assert_allclose(model.params["ln_f.weight"], gain, rtol=1e-6)


def test_cli_trains_on_a_text_file(tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_text("to be or not to be, that is the question " * 40, encoding="utf-8")  # no newline
    code = main(["train", "--model", "gpt", "--data", f"text:{path}", "--iters", "3", "--eval-iters", "1",
                 "--sample", "20", "--json", "--block-size", "16"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"val_loss", "train_seconds", "iters", "num_params", "sample"} <= set(out)
    assert out["iters"] == 3 and len(out["sample"]) == 21 and out["val_loss"] > 0


def test_cli_text_errors(tmp_path, capsys):
    assert main(["train", "--data", "shakespeare", "--iters", "1"]) == 2
    assert "--model gpt" in capsys.readouterr().err
    assert main(["train", "--model", "gpt", "--data", f"text:{tmp_path / 'missing.txt'}"]) == 2
    assert "missing.txt" in capsys.readouterr().err
