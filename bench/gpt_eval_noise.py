"""How noisy is a loss scored on 20 batches? The spread of nanoGPT-style loss estimates of one model.

    python -m nograd train --model gpt --data shakespeare --iters 2000 --save gpt.npz
    python bench/gpt_eval_noise.py --model-file gpt.npz [--eval-iters 20] [--draws 100]
                                   [--batch 12] [--claim 1.88] [--seed 123] [--json]

nanoGPT's README scores its CPU run with ``--eval_iters=20``: the mean loss of 20 random batches of
12 windows of 64 characters, one estimate from one run. This script scores a trained model the same
way ``--draws`` times on fresh batches (``TextData.get_batch``, the windows nanoGPT's ``get_batch``
draws) and reports, per split, the mean over all ``draws × eval_iters`` batches (the model's loss),
the median and standard deviation of the ``--draws`` 20-batch estimates, their range, and the share
of estimates at or below ``--claim`` (the README's figure plus half a unit of its last digit, so
1.88 counts every estimate that rounds to 1.88 or lower). The last line with ``--json`` is one
JSON object of these figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nograd.data.text import load_shakespeare  # noqa: E402
from nograd.losses import softmax_cross_entropy  # noqa: E402
from nograd.serialize import load_model  # noqa: E402


def score(model, data, split, *, draws, eval_iters, batch, block, rng):
    """``(draws, eval_iters)`` array of batch losses of ``model`` on ``split``."""
    out = np.empty((draws, eval_iters))
    for i in range(draws):
        for j in range(eval_iters):
            x, y = data.get_batch(split, batch, block, rng)
            logits, _ = model.forward(x, train=False)
            out[i, j] = softmax_cross_entropy(logits, y)[0]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-file", required=True, help="a GPT saved by `train --save` (.npz)")
    p.add_argument("--eval-iters", type=int, default=20, help="batches per estimate (nanoGPT CPU: 20)")
    p.add_argument("--draws", type=int, default=100, help="independent estimates per split")
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--claim", type=float, default=1.88, help="the figure to compare with")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    for name in ("eval_iters", "draws", "batch"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(a, name)}")
    if not os.path.isfile(a.model_file):
        p.error(f"--model-file {a.model_file!r} does not exist")
    model = load_model(a.model_file)
    block = getattr(model, "block_size", None)
    if block is None:
        p.error(f"--model-file {a.model_file!r} holds a {type(model).__name__}, not a GPT")
    data = load_shakespeare()
    rng = np.random.default_rng(a.seed)
    digits = len(repr(a.claim).split(".")[-1]) if "." in repr(a.claim) else 0
    bar = a.claim + 0.5 * 10.0 ** (-digits)
    res = {"benchmark": "gpt_eval_noise", "model_file": os.path.basename(a.model_file),
           "eval_iters": a.eval_iters, "draws": a.draws, "batch": a.batch, "block": block,
           "claim": a.claim, "seed": a.seed}
    t0 = time.perf_counter()
    for split in ("val", "train"):
        L = score(model, data, split, draws=a.draws, eval_iters=a.eval_iters, batch=a.batch,
                  block=block, rng=rng)
        est = L.mean(axis=1)
        res[split] = {"mean_all_batches": round(float(L.mean()), 4),
                      "median_estimate": round(float(np.median(est)), 4),
                      "std_estimate": round(float(est.std(ddof=1)), 4) if a.draws > 1 else None,
                      "min_estimate": round(float(est.min()), 4),
                      "max_estimate": round(float(est.max()), 4),
                      "share_at_or_below_claim": round(float((est < bar).mean()), 3)}
        r = res[split]
        print(f"{split:5s}  loss over {L.size} batches {r['mean_all_batches']:.4f}; "
              f"{a.draws} estimates of {a.eval_iters} batches: median {r['median_estimate']:.4f}, "
              f"std {r['std_estimate']}, range {r['min_estimate']:.4f}-{r['max_estimate']:.4f}, "
              f"share rounding to <= {a.claim} {r['share_at_or_below_claim']:.3f}", flush=True)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    if a.json:
        print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
