"""`python -m nograd train --data text:... --rule R`: the GPT trained from the command line by
MeZO, SPSA and forward gradients (issue #17), not only by backprop."""
import json
import math

import numpy as np
import pytest

import nograd
from nograd.__main__ import main
from nograd.train_lm import LM_RULES

TEXT = "to be or not to be, that is the question " * 40     # 14 characters, skewed frequencies
VOCAB = len(set(TEXT))
# the entropy of the character frequencies (2.319 nats, log V = 2.639): the loss of a model that
# knows how often each character occurs but nothing of its context
UNIGRAM = -sum(TEXT.count(c) / len(TEXT) * math.log(TEXT.count(c) / len(TEXT)) for c in set(TEXT))
# a GPT of 13,344 parameters: one block, two heads, width 32, context 16
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16"]


@pytest.fixture(autouse=True)
def one_blas_thread():
    """The tiny model's small products run fastest on one thread (docs/benchmarks.md); on a busy
    machine OpenBLAS's spinning workers make them many times slower."""
    with nograd.blas_threads(1):
        yield


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(TEXT, encoding="utf-8")
    return f"text:{path}"


def _run(capsys, data, rule, *extra):
    code = main(["train", "--model", "gpt", "--data", data, "--rule", rule, "--sample", "0",
                 "--json", *extra])
    assert code == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("rule, extra", [("mezo", ["--lr", "1e-2"]), ("spsa", ["--lr", "1e-2"]),
                                         ("forward-gradient", [])])
def test_rule_trains_a_tiny_gpt(text, capsys, rule, extra):
    """300 seeded iterations take the validation loss from the untrained ≈ log V below the
    unigram entropy: the model has learned from the context, not only the frequencies."""
    out = _run(capsys, text, rule, *TINY, "--iters", "300", "--eval-interval", "300",
               "--eval-iters", "4", *extra)
    assert out["rule"] == rule and out["iters"] == 300
    assert out["initial_val_loss"] == pytest.approx(math.log(VOCAB), abs=0.1)
    assert out["val_loss"] < UNIGRAM, out
    assert out["val_loss"] < out["initial_val_loss"] - 0.3, out


@pytest.mark.parametrize("rule", ["mezo", "spsa", "forward-gradient"])
def test_default_recipe_lowers_the_loss_of_the_default_gpt(text, capsys, rule):
    """Each rule's own optimizer and lr (no --lr) on the default GPT (4 blocks, width 128; 790,400
    parameters at context 8): 30 iterations already bring the validation loss clearly down."""
    out = _run(capsys, text, rule, "--block-size", "8", "--iters", "30", "--eval-interval", "30",
               "--eval-iters", "4")
    assert out["num_params"] == 790400
    assert (out["optimizer"], out["lr"]) == (LM_RULES[rule]["optimizer"], LM_RULES[rule]["lr"])
    assert out["val_loss"] < out["initial_val_loss"] - 0.15, out


@pytest.mark.parametrize("rule", ["mezo", "spsa", "forward-gradient"])
def test_same_seed_same_run(text, capsys, rule):
    args = [*TINY, "--iters", "20", "--eval-interval", "20", "--eval-iters", "2", "--lr", "1e-2"]
    a = _run(capsys, text, rule, *args)
    b = _run(capsys, text, rule, *args)
    c = _run(capsys, text, rule, *args, "--seed", "1")
    assert a["val_loss"] == b["val_loss"] and a["train_loss"] == b["train_loss"]
    assert a["val_loss"] != a["initial_val_loss"]          # it trained
    assert c["val_loss"] != a["val_loss"]                   # and the seed matters


@pytest.mark.parametrize("rule", ["dfa", "no-such-rule"])
def test_other_rules_are_a_clear_error(text, capsys, rule):
    assert main(["train", "--model", "gpt", "--data", text, "--rule", rule, "--iters", "1"]) == 2
    err = capsys.readouterr().err
    assert f"--rule {rule}" in err and len(err.strip().splitlines()) == 1
    for name in ("backprop", "mezo", "spsa", "forward-gradient"):
        assert name in err


def test_model_size_options(text, capsys):
    out = _run(capsys, text, "backprop", *TINY, "--iters", "1", "--eval-iters", "1")
    # token (14·32) and position (16·32) embeddings; one block: attention 4·32², MLP 8·32², two
    # LayerNorm gains (no biases); the final LayerNorm's gain; the head is the token embedding
    assert out["num_params"] == 14 * 32 + 16 * 32 + 12 * 32 * 32 + 2 * 32 + 32
    assert out["rule"] == "backprop" and out["optimizer"] == "adamw" and out["lr"] == 1e-3
    assert main(["train", "--model", "gpt", "--data", text, "--n-embd", "30", "--n-head", "4"]) == 2
    assert "--n-embd 30 must be a multiple of --n-head 4" in capsys.readouterr().err


def test_divergence_is_one_line_and_status_1(text, capsys):
    with pytest.raises(SystemExit) as e, np.errstate(over="ignore", invalid="ignore"):
        main(["train", "--model", "gpt", "--data", text, "--rule", "spsa", "--lr", "1e38", *TINY,
              "--iters", "5", "--eval-iters", "1", "--json"])
    assert e.value.code == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert captured.out == "" and len(err) == 1
    assert "diverged at iteration" in err[0] and "lower the learning rate" in err[0]


def test_shards_trains_the_gpt_like_the_serial_step(text, capsys, monkeypatch):
    """``--shards 2`` on text: every step goes through the sharded forward/backward and the
    threaded AdamW update, and the run follows the serial one (the same gradient up to float32
    rounding: validation losses within 0.02 after 40 iterations)."""
    import nograd.parallel as parallel

    calls, update = [], parallel.ShardedStep.update
    monkeypatch.setattr(parallel.ShardedStep, "update",
                        lambda self, *a: (calls.append(self.shards), update(self, *a))[1])
    args = [*TINY, "--iters", "40", "--eval-interval", "40", "--eval-iters", "4"]
    sharded = _run(capsys, text, "backprop", *args, "--shards", "2")
    assert calls == [2] * 40 and sharded["shards"] == 2
    serial = _run(capsys, text, "backprop", *args)
    assert "shards" not in serial
    assert sharded["val_loss"] < sharded["initial_val_loss"] - 0.15, sharded
    assert sharded["val_loss"] == pytest.approx(serial["val_loss"], abs=0.02)


def test_backprop_on_a_large_step_is_sharded_over_the_cores_unless_told(text, capsys, monkeypatch):
    """Without --shards/--threads, backprop on nanoGPT's GPT (3.6 GFLOP a step >= 1 GFLOP) is
    sharded over the usable cores (nograd.threads.auto_shards); --shards 1, --threads N, a thread
    variable in the environment, one core or a small step keep the serial step."""
    import nograd.threads as threads
    from nograd.threads import THREAD_ENV

    for var in THREAD_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    quick = ["--iters", "2", "--eval-interval", "2", "--eval-iters", "1"]
    assert _run(capsys, text, "backprop", *quick)["shards"] == 2           # the default GPT
    assert "shards" not in _run(capsys, text, "backprop", *quick, "--shards", "1")
    assert "shards" not in _run(capsys, text, "backprop", *quick, "--threads", "1")
    assert "shards" not in _run(capsys, text, "backprop", *TINY, *quick)   # a small step
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert "shards" not in _run(capsys, text, "backprop", *quick)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    monkeypatch.setattr(threads, "usable_cores", lambda: 1)
    assert "shards" not in _run(capsys, text, "backprop", *quick)
    assert _run(capsys, text, "backprop", *quick, "--shards", "2")["shards"] == 2
