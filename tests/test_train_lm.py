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


def test_no_decay_keeps_the_named_matrices_out_of_the_decay_group(monkeypatch):
    """Default: every matrix decays (nanoGPT today); no_decay=("wte", "wpe"): the embeddings join
    the undecayed group (nanoGPT's early-2023 recipe); a name that matches nothing is an error."""
    import nograd.train_lm as T

    seen, make = [], T.get_optimizer
    monkeypatch.setattr(T, "get_optimizer", lambda name, groups, **kw: (seen.append(groups),
                                                                          make(name, groups, **kw))[1])
    data = TextData("xyz" * 100)
    for no_decay in ((), ("wte", "wpe")):
        model = GPT(data.vocab.size, n_layer=1, n_head=1, n_embd=4, block_size=4, rng=0)
        train_lm(model, data, iters=1, batch_size=2, eval_iters=1, rng=0, no_decay=no_decay)
        decayed = {k for g in seen[-1] if g["weight_decay"] > 0 for k in g["params"]}
        matrices = {k for k, v in model.params.items() if v.ndim >= 2}
        assert decayed == matrices - ({"wte.weight", "wpe.weight"} if no_decay else set())
    with pytest.raises(ValueError, match="no_decay.*'wtx'"):
        train_lm(model, data, iters=1, batch_size=2, eval_iters=1, rng=0, no_decay=("wtx",))


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


def _tiny(data, seed=0):
    return GPT(data.vocab.size, n_layer=1, n_head=2, n_embd=16, block_size=8, rng=seed)


def test_backprop_is_the_nanogpt_step():
    """The rule path for backprop is the loop written out: forward, token cross-entropy, backward,
    AdamW (β₂ 0.99, decay 0.1 on matrices only, clipping at 1) at the warm-up/cosine lr."""
    from nograd.core.losses import softmax_cross_entropy
    from nograd.core.optim import AdamW

    data = TextData("abcabd" * 50)
    model = _tiny(data)
    train_lm(model, data, iters=4, batch_size=3, warmup=2, eval_iters=1, rng=5)
    ref = _tiny(data)
    rng = np.random.default_rng(5)
    rng.integers(2**63)                                  # the evaluation generator's seed
    p = ref.params
    opt = AdamW([{"params": {k: v for k, v in p.items() if v.ndim >= 2}, "weight_decay": 0.1},
                 {"params": {k: v for k, v in p.items() if v.ndim < 2}, "weight_decay": 0.0}],
                lr=1e-3, betas=(0.9, 0.99), clip_norm=1.0)
    for it in range(4):
        for g in opt.groups:
            g["lr"] = lr_at(it, 1e-3, 1e-4, 2, 4)
        x, y = data.get_batch("train", 3, 8, rng)
        logits, cache = ref.forward(x, train=True, rng=rng)
        opt.step(ref.backward(cache, softmax_cross_entropy(logits, y)[1])[1])
    for k in p:
        np.testing.assert_array_equal(model.params[k], p[k], err_msg=k)


def test_mezo_is_driven_as_fit_drives_it():
    """MeZO (its own step) gets rule.step(model, x, y, optimizer=SGD, rng=rng) each iteration,
    the batches and perturbation seeds both from the one generator, as in nograd.train.fit."""
    from nograd.core.optim import SGD
    from nograd.rules import MeZO

    data = TextData("abcabd" * 50)
    model = _tiny(data)
    hist = train_lm(model, data, rule=MeZO(eps=1e-2), iters=5, batch_size=4, lr=0.05, min_lr=0.05,
                    eval_iters=1, rng=3)
    assert (hist["rule"], hist["optimizer"], hist["lr"]) == ("mezo", "sgd", 0.05)
    ref = _tiny(data)
    rng = np.random.default_rng(3)
    rng.integers(2**63)
    opt = SGD(ref.params, lr=0.05)
    rule = MeZO(eps=1e-2)
    for _ in range(5):
        x, y = data.get_batch("train", 4, 8, rng)
        rule.step(ref, x, y, optimizer=opt, rng=rng)
    moved = False
    for k, v in ref.params.items():
        np.testing.assert_array_equal(model.params[k], v, err_msg=k)
        moved |= not np.array_equal(v, _tiny(data).params[k])
    assert moved


@pytest.mark.parametrize("rule", ["backprop", "forward-gradient", "spsa", "mezo"])
def test_each_rule_brings_its_recipe_and_lr_overrides_it(rule):
    from nograd.train_lm import LM_RULES

    data = TextData("xyzzy" * 40)
    hist = train_lm(_tiny(data), data, rule=rule, iters=1, batch_size=2, eval_iters=1, rng=0)
    assert (hist["optimizer"], hist["lr"]) == (LM_RULES[rule]["optimizer"], LM_RULES[rule]["lr"])
    assert hist["evals"][0]["lr"] == pytest.approx(
        lr_at(0, hist["lr"], hist["lr"] / 10, LM_RULES[rule]["warmup"], 1))
    hist = train_lm(_tiny(data), data, rule=rule, iters=1, batch_size=2, eval_iters=1, rng=0, lr=0.25)
    assert hist["lr"] == 0.25


def test_rules_that_cannot_train_a_language_model_are_refused():
    from nograd.rules import DFA

    data = TextData("xyzzy" * 40)
    for bad in ("dfa", DFA(), "no-such-rule"):
        with pytest.raises(ValueError, match="rule") as e:
            train_lm(_tiny(data), data, rule=bad, iters=1)
        if bad != "no-such-rule":
            assert "backprop, forward-gradient, spsa, mezo" in str(e.value)


def test_divergence_raises_floating_point_error():
    data = TextData("abcabd" * 50)
    with pytest.raises(FloatingPointError, match="iteration"), np.errstate(over="ignore",
                                                                          invalid="ignore"):
        train_lm(_tiny(data), data, rule="mezo", iters=20, batch_size=2, lr=1e38, eval_iters=1, rng=0)


@pytest.mark.parametrize("rule", ["backprop", "forward-gradient", "spsa", "mezo"])
def test_each_rule_sees_the_token_level_cross_entropy(rule):
    """The loss a rule reports on a batch is the mean over all B·T positions of the (B, T, V)
    logits' cross-entropy (SPSA and MeZO: the mean of the two probes θ ± εz, equal to O(ε²))."""
    import nograd as ng
    from nograd.core.losses import softmax_cross_entropy

    data = TextData("abcabd" * 50)
    model = _tiny(data)
    x, y = data.get_batch("train", 3, 8, np.random.default_rng(0))
    logits = model(x)
    assert logits.shape == (3, 8, data.vocab.size)
    z = logits.reshape(24, data.vocab.size).astype(np.float64)      # one row per position
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    flat = -logp[np.arange(24), y.reshape(24)].mean()
    assert softmax_cross_entropy(logits, y)[0] == pytest.approx(flat, rel=1e-5)
    _, info = ng.get_rule(rule).grads(model, x, y, rng=np.random.default_rng(1))
    assert info["loss"] == pytest.approx(flat, rel=1e-4)
