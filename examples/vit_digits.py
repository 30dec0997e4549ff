"""A small Vision Transformer on the embedded 8×8 digits, trained with backprop.

    python examples/vit_digits.py [--epochs 30] [--patch 4] [--dim 64] [--depth 2] [--pool mean]
                                  [--seed 0] [--json]

Dosovitskiy et al. (2021), §3.1: each 1×8×8 digit becomes 4 tokens of 4×4 pixels, embedded to
``dim`` numbers, plus learned positions; ``depth`` pre-norm Transformer blocks, a final LayerNorm and
a linear head on the mean of the tokens (``--pool cls`` uses a class token instead). AdamW with a
cosine learning-rate schedule, batch 32, one BLAS thread. Runs in under a minute on two cores.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nograd import AdamW, Backprop, blas_threads, fit  # noqa: E402
from nograd.core.optim import CosineLR  # noqa: E402
from nograd.data import load_digits  # noqa: E402
from nograd.models import get_model  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--pool", choices=("cls", "mean"), default="mean")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="BLAS threads while training (the products are small: one is fastest on shared cores)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    args = ap.parse_args(argv)

    X, y, Xt, yt = load_digits(seed=args.seed, flatten=False)
    model = get_model("vit", X.shape[1:], 10, rng=args.seed, patch_size=args.patch, dim=args.dim,
                      depth=args.depth, heads=args.heads, pool=args.pool)
    opt = AdamW(model.params, lr=args.lr, weight_decay=args.weight_decay)
    with blas_threads(args.blas_threads):
        start = time.perf_counter()
        hist = fit(model, Backprop(), opt, (X, y), epochs=args.epochs, batch_size=args.batch_size,
                   rng=args.seed, schedule=CosineLR(opt, args.epochs), progress=False)
        seconds = time.perf_counter() - start
        accuracy = float(np.mean(model(Xt).argmax(axis=1) == yt))
    print(f"ViT patch {args.patch} dim {args.dim} depth {args.depth} heads {args.heads} pool {args.pool}: "
          f"{model.num_params} parameters")
    print(f"final train loss {hist['loss'][-1]:.4f}  test accuracy {accuracy:.4f}  "
          f"train seconds {seconds:.1f}")
    if args.json:
        print(json.dumps({"epochs": args.epochs, "seed": args.seed, "patch": args.patch, "dim": args.dim,
                          "depth": args.depth, "pool": args.pool, "params": model.num_params,
                          "final_loss": round(float(hist["loss"][-1]), 4),
                          "test_accuracy": round(accuracy, 4), "train_seconds": round(seconds, 2)}))


if __name__ == "__main__":
    main()
