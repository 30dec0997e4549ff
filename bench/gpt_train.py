"""nanoGPT's CPU run on Tiny Shakespeare, end to end: nograd's ``train_lm`` beside the same model and
recipe in PyTorch, both from the same initial weights, evaluated on the same batches.

    python bench/gpt_train.py [--iters 2000] [--seeds 0 1 2] [--eval-iters 200]
                              [--contenders nograd torch] [--blas-threads N] [--shards K] [--json]

The recipe is nanoGPT's ``config/train_shakespeare_char.py`` with its README's CPU overrides (4 layers,
4 heads, width 128, block 64, batch 12, dropout 0, 2000 iterations, lr 1e-3 warmed up over 100
iterations and cosine-decayed to 1e-4, AdamW β = (0.9, 0.99) with weight decay 0.1 on matrices only,
gradient norm clipped to 1). nograd runs :func:`nograd.train_lm.train_lm` (the code behind
``python -m nograd train --model gpt --data shakespeare``); PyTorch runs the same loop written below
(schedule from :func:`nograd.train_lm.lr_at`, batches from the same :class:`TextData`). Training
seconds count the steps only. After training both models are scored by
:func:`nograd.train_lm.estimate_loss` on the same ``--eval-iters`` batches of each split (one fixed
generator), so the val losses differ only through training. The last line with ``--json`` is one
JSON object: per contender and seed ``val_loss``, ``train_loss``, ``train_seconds``, and medians.

``--shards K`` trains nograd with ``Backprop(shards=K)`` (:class:`nograd.parallel.ShardedStep`: each
batch's forward, loss, backward and AdamW update over K threads, BLAS at one thread in the sharded
part), as ``python -m nograd train --model gpt --data shakespeare --shards K`` does; PyTorch keeps its
thread setting. ``--bias`` and ``--no-embedding-decay`` (nograd alone) train two variants of the
recipe: biases in every Linear and LayerNorm, and no weight decay on the embeddings (nanoGPT's code
when its README quoted 1.88 decayed only Linear weights).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from nograd import Backprop  # noqa: E402
from nograd.data.text import load_text  # noqa: E402
from nograd.models.gpt import GPT  # noqa: E402
from nograd.threads import blas_libraries, set_blas_threads  # noqa: E402
from nograd.train_lm import estimate_loss, lr_at, train_lm  # noqa: E402

CFG = dict(n_layer=4, n_head=4, n_embd=128, block_size=64)
BATCH, LR, MIN_LR, WARMUP, WD, BETAS, CLIP = 12, 1e-3, 1e-4, 100, 0.1, (0.9, 0.99), 1.0
EVAL_SEED = 12345


def new_model(vocab, seed, bias=False):
    return GPT(vocab, **CFG, dropout=0.0, bias=bias, tie_weights=True, rng=np.random.default_rng(seed),
               dtype=np.float32)


def run_nograd(data, model, iters, seed, shards=None, no_decay=()):
    rule = "backprop" if shards is None else Backprop(shards=shards)
    hist = train_lm(model, data, rule=rule, iters=iters, batch_size=BATCH, lr=LR, min_lr=MIN_LR, warmup=WARMUP,
                    weight_decay=WD, betas=BETAS, clip_norm=CLIP, eval_interval=iters, eval_iters=1,
                    rng=np.random.default_rng(seed), no_decay=no_decay)
    return model, hist["train_seconds"]


def run_torch(data, init, iters, seed):
    import torch

    from _torch_gpt import build

    model = build(init, vocab=data.vocab.size, **CFG)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": rest, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=1e-8)
    F = torch.nn.functional
    rng = np.random.default_rng(seed)
    seconds = 0.0
    for it in range(iters):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(it, LR, MIN_LR, WARMUP, iters)
        x, y = data.get_batch("train", BATCH, CFG["block_size"], rng)
        logits = model(torch.from_numpy(x))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(y).reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        seconds += time.perf_counter() - t0
    model.eval()

    def forward(idx):
        with torch.no_grad():
            return model(torch.from_numpy(idx)).numpy()
    return forward, seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--eval-iters", type=int, default=200, help="batches per split in the final scoring")
    ap.add_argument("--contenders", nargs="+", default=["nograd", "torch"], choices=["nograd", "torch"])
    ap.add_argument("--blas-threads", type=int, default=None, help="NumPy BLAS threads (default: unchanged)")
    ap.add_argument("--shards", type=int, default=None, metavar="K",
                    help="nograd's steps data-parallel over K threads (Backprop(shards=K)); default serial")
    ap.add_argument("--bias", action="store_true",
                    help="nograd only: biases in the Linear and LayerNorm layers (nanoGPT's GPTConfig "
                         "default; its train.py and this recipe: none)")
    ap.add_argument("--no-embedding-decay", action="store_true",
                    help="nograd only: no weight decay on the token and position embeddings (nanoGPT's "
                         "early-2023 configure_optimizers decayed Linear weights only)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if (args.bias or args.no_embedding_decay) and "torch" in args.contenders:
        ap.error("--bias and --no-embedding-decay change nograd's recipe only: add --contenders nograd")
    if args.shards is not None and args.shards < 1:
        ap.error(f"--shards must be at least 1, got {args.shards}")
    # train_lm keeps freed memory for reuse (nograd.malloc); set it for the whole process first so
    # the PyTorch runs get the same allocator settings
    from nograd.malloc import retain_freed_memory

    retain_freed_memory()
    if args.iters < 1 or args.eval_iters < 1:
        ap.error("--iters and --eval-iters must be positive")
    if args.blas_threads is not None:
        set_blas_threads(args.blas_threads)
    contenders = list(args.contenders)
    if "torch" in contenders:
        try:
            import torch
            torch_info = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
        except ImportError:
            print("torch not installed: nograd only")
            contenders.remove("torch")
            torch_info = None
    data = load_text("shakespeare")
    print(f"Tiny Shakespeare: {len(data.train):,} train / {len(data.val):,} val characters, vocabulary "
          f"{data.vocab.size}; {args.iters} iterations; BLAS threads "
          f"{[b['threads'] for b in blas_libraries()]}; {torch_info if 'torch' in contenders else ''}")
    print(f"{'contender':<10}{'seed':>5}{'train s':>10}{'train loss':>12}{'val loss':>10}")
    runs = []
    for seed in args.seeds:
        model = new_model(data.vocab.size, seed, bias=args.bias)
        init = {k: v.copy() for k, v in model.params.items()}
        for name in contenders:
            if name == "nograd":
                fwd, secs = run_nograd(data, model, args.iters, seed, args.shards,
                                       ("wte", "wpe") if args.no_embedding_decay else ())
            else:
                fwd, secs = run_torch(data, init, args.iters, seed)
            est = estimate_loss(fwd, data, batch_size=BATCH, block_size=CFG["block_size"],
                                eval_iters=args.eval_iters, rng=np.random.default_rng(EVAL_SEED))
            runs.append({"contender": name, "seed": seed, "train_seconds": round(secs, 2),
                         "train_loss": round(est["train"], 4), "val_loss": round(est["val"], 4)})
            r = runs[-1]
            print(f"{name:<10}{seed:>5}{r['train_seconds']:>10.1f}{r['train_loss']:>12.4f}{r['val_loss']:>10.4f}",
                  flush=True)
    summary = {}
    for name in contenders:
        mine = [r for r in runs if r["contender"] == name]
        summary[name] = {k: round(statistics.median(r[k] for r in mine), 4)
                         for k in ("train_seconds", "train_loss", "val_loss")}
        print(f"{name:<10}{'med':>5}{summary[name]['train_seconds']:>10.1f}{summary[name]['train_loss']:>12.4f}"
              f"{summary[name]['val_loss']:>10.4f}")
    if "nograd" in summary and "torch" in summary:
        ratio = summary["nograd"]["train_seconds"] / summary["torch"]["train_seconds"]
        print(f"nograd / torch training time: {ratio:.2f}")
        summary["time_ratio"] = round(ratio, 3)
    if args.json:
        print(json.dumps({"benchmark": "gpt_train", "iters": args.iters, "eval_iters": args.eval_iters,
                          "shards": args.shards, "bias": args.bias,
                          "no_embedding_decay": args.no_embedding_decay, "load_average": [round(v, 2) for v in os.getloadavg()],
                          "runs": runs, "median": summary}))
    return runs, summary


if __name__ == "__main__":
    main()
