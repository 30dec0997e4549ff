"""BLAS threads against the size of a training step: where does a second thread start to pay?

    python bench/threads.py [--repeats 7] [--max-threads N] [--json]

For a ladder of models (the MLP and CNN on the digits at the command line's batch 64, nanoGPT's
CPU GPT at batch 12 × 64 tokens, and two wider GPTs), one training step — forward, loss, backward,
AdamW — is timed with 1 BLAS thread and with ``--max-threads`` (default: every usable core), in
the same process, each setting in its own block of ``--repeats`` steps after two warm-up steps;
the figure is the median. The step's FLOPs are those :func:`nograd.cli.common.step_flops` gives
:func:`nograd.threads.auto_threads`, whose threshold (:data:`nograd.threads.LARGE_STEP_FLOPS`)
this script is there to check: below it one thread should be as fast or faster, above it more
threads faster. Run it on the machine as it is (busy or idle) and say which.

The last line with ``--json``: ``{"threads": N, "load_average", "rows": [{"model", "step_gflop",
"ms_1", "ms_n", "speedup_n", "auto"}]}``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import nograd  # noqa: E402
from nograd.cli.common import step_flops  # noqa: E402
from nograd.losses import softmax_cross_entropy  # noqa: E402
from nograd.models import get_model  # noqa: E402
from nograd.models.gpt import GPT  # noqa: E402
from nograd.threads import auto_threads, blas_threads, usable_cores  # noqa: E402


def gpt(embd, layers, heads, block, batch):
    def make(rng):
        model = GPT(65, n_layer=layers, n_head=heads, n_embd=embd, block_size=block, dropout=0.0,
                    bias=False, rng=rng, dtype=np.float32)
        x = rng.integers(0, 65, size=(batch, block))
        y = rng.integers(0, 65, size=(batch, block))
        return model, x, y, (block,), batch
    return make


def digits(name):
    def make(rng):
        model = get_model(name, (1, 8, 8) if name == "cnn" else (64,), 10, rng=rng)
        shape = (1, 8, 8) if name == "cnn" else (64,)
        x = rng.standard_normal((64,) + shape).astype(np.float32)
        y = rng.integers(0, 10, size=64)
        return model, x, y, shape, 64
    return make


LADDER = [("mlp digits b64", digits("mlp")), ("cnn digits b64", digits("cnn")),
          ("gpt 4x128 b12x64 (nanoGPT CPU)", gpt(128, 4, 4, 64, 12)),
          ("gpt 4x256 b16x128", gpt(256, 4, 4, 128, 16)),
          ("gpt 6x384 b16x128", gpt(384, 6, 6, 128, 16))]


def time_steps(model, x, y, repeats):
    opt = nograd.AdamW(model.params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.1)
    times = []
    for i in range(repeats + 2):
        t = time.perf_counter()
        out, cache = model.forward(x, train=True)
        _, dout = softmax_cross_entropy(out, y)
        _, grads = model.backward(cache, dout)
        opt.step(grads)
        if i >= 2:
            times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7, help="timed steps per setting (default 7)")
    p.add_argument("--max-threads", type=int, default=usable_cores(),
                   help="the many-thread setting (default: every usable core)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = p.parse_args(argv)
    rows = []
    print(f"{'model':<32} {'step GFLOP':>10} {'1 thread ms':>12} {args.max_threads:>2} threads ms "
          f"{'speed-up':>8}  auto", flush=True)
    for name, make in LADDER:
        model, x, y, shape, batch = make(np.random.default_rng(0))
        flops = step_flops(model, shape, batch)
        with blas_threads(1):
            ms1 = time_steps(model, x, y, args.repeats)
        with blas_threads(args.max_threads):
            msn = time_steps(model, x, y, args.repeats)
        auto = auto_threads(flops, cores=args.max_threads, environ={})[0]
        rows.append(dict(model=name, step_gflop=round(flops / 1e9, 3), ms_1=round(ms1, 2),
                         ms_n=round(msn, 2), speedup_n=round(ms1 / msn, 3), auto=auto))
        print(f"{name:<32} {flops / 1e9:>10.3f} {ms1:>12.2f} {msn:>13.2f} {ms1 / msn:>8.2f}  {auto}",
              flush=True)
    if args.json:
        print(json.dumps({"threads": args.max_threads, "load_average": os.getloadavg()[0],
                          "rows": rows}))


if __name__ == "__main__":
    main()
