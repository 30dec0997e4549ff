"""Command line: ``python -m nograd <command>``.

Commands
--------
demo   train a small MLP with backprop on a synthetic spiral task and report test accuracy.

Every argument error is one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(s):
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s}")
    return v


def _positive_float(s):
    v = float(s)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {s}")
    return v


def cmd_demo(args, out=sys.stdout):
    import numpy as np

    from .core import Sequential
    from .core.optim import Adam
    from .data import spirals
    from .layers import Linear, ReLU
    from .rules import Backprop

    rng = np.random.default_rng(args.seed)
    X, y = spirals(args.samples, 3, noise=0.15, rng=rng)
    Xt, yt = spirals(200, 3, noise=0.15, rng=rng)
    net = Sequential(Linear(2, args.hidden, rng=rng), ReLU(), Linear(args.hidden, args.hidden, rng=rng),
                     ReLU(), Linear(args.hidden, 3, rng=rng))
    opt = Adam(net.params, lr=args.lr)
    rule = Backprop()
    t0 = time.perf_counter()
    quiet = args.json
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(y))
        losses = []
        for i in range(0, len(y), args.batch_size):
            idx = order[i:i + args.batch_size]
            grads, info = rule.grads(net, X[idx], y[idx], rng=rng)
            opt.step(grads)
            losses.append(info["loss"])
        if not quiet and (epoch % max(1, args.epochs // 10) == 0 or epoch == 1):
            acc = float(np.mean(net(Xt).argmax(1) == yt))
            print(f"epoch {epoch:4d}  loss {np.mean(losses):.4f}  test accuracy {acc:.3f}", file=out)
    seconds = time.perf_counter() - t0
    acc = float(np.mean(net(Xt).argmax(1) == yt))
    summary = {"command": "demo", "data": "spirals", "rule": "backprop", "model": "mlp",
               "epochs": args.epochs, "test_accuracy": round(acc, 4),
               "train_seconds": round(seconds, 2), "seed": args.seed}
    if args.json:
        print(json.dumps(summary), file=out)
    else:
        print(f"backprop MLP on 3-class spirals: test accuracy {acc:.3f} after {args.epochs} epochs "
              f"({seconds:.1f} s)", file=out)
    return summary


def build_parser():
    p = _Parser(prog="python -m nograd", description="nograd: learning without autodiff")
    sub = p.add_subparsers(dest="command", metavar="command", parser_class=_Parser)
    d = sub.add_parser("demo", help="train a small MLP with backprop on synthetic spirals")
    d.add_argument("--epochs", type=_positive_int, default=200)
    d.add_argument("--batch-size", type=_positive_int, default=64)
    d.add_argument("--lr", type=_positive_float, default=0.01)
    d.add_argument("--hidden", type=_positive_int, default=64)
    d.add_argument("--samples", type=_positive_int, default=300, help="training samples per class")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--json", action="store_true", help="print one JSON line of the results")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
