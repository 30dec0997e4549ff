"""The same small CNN with max, average, mixed and each of the 16 poset poolings.

    python examples/poset_pooling.py [--seeds 3] [--epochs 8] [--seed 0] [--placement both]
                                     [--data digits|mnist --data-dir DIR] [--json] [--plot DIR]

Network: conv3×3(1→8) → ReLU → pool → conv3×3(8→16) → ReLU → pool → linear, trained with backprop
(Adam 3e-3, batch 32) from the same initial weights for every pooling. Poolings: ``max``, ``avg``,
``mixed`` (½·max + ½·avg, Lee et al. 2016) and ``PosetPool2d`` with each of the 16 posets on four
points (arXiv:2412.06097), placed on the 2×2 window as in the authors' code. Prints the mean ± std test accuracy over the seeds and the time per epoch.

``--placement relu-pool`` puts the ReLU before the pooling, as the authors recommend.
Then every poset filter *is* sum pooling: on inputs ≥ 0 the whole window is the arg-max up-set, so
the 16 rows can differ only by floating-point rounding (sums are added in different orders).
``--placement pool-relu`` pools the signed convolution outputs and applies the ReLU after (a no-op
after a poset filter, which is ≥ 0), where the posets do differ. ``--placement both`` (the
default) runs both; the JSON ``accuracy`` is that of ``relu-pool``, ``accuracy_pool_relu`` the other.

Digits (embedded, 8×8) by default; ``--data mnist --data-dir DIR`` reads the MNIST IDX files from DIR
(``--train-size`` training images, 10000 by default for MNIST, all for digits). ``--plot DIR``
writes ``DIR/accuracy.png``: a pair of bars (one per placement) per pooling, mean ± std over the
seeds (needs matplotlib).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nograd import Adam, Backprop, Module, Sequential, fit  # noqa: E402
from nograd.layers import (AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, PosetPool2d, ReLU,  # noqa: E402
                           four_point_posets)


class MixedPool2d(Module):
    """``a·maxpool(x) + (1 - a)·avgpool(x)`` with a fixed ``a`` (2×2, stride 2): forward, backward
    and jvp are the weighted sums of the two poolings' own."""

    def __init__(self, a=0.5):
        super().__init__()
        self.a = float(a)
        self._children = {"max": MaxPool2d(2), "avg": AvgPool2d(2)}

    def forward(self, x, *, train=False, rng=None, params=None):
        ym, cm = self._children["max"].forward(x)
        ya, ca = self._children["avg"].forward(x)
        a = x.dtype.type(self.a)
        return a * ym + (1 - a) * ya, (cm, ca, a)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        cm, ca, a = cache
        dm, _ = self._children["max"].backward(cm, a * dy)
        da, _ = self._children["avg"].backward(ca, (1 - a) * dy)
        return dm + da, {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        ym, dm = self._children["max"].jvp(x, dx)
        ya, da = self._children["avg"].jvp(x, dx)
        a = x.dtype.type(self.a)
        return a * ym + (1 - a) * ya, a * dm + (1 - a) * da


def poolings():
    out = {"max": lambda: MaxPool2d(2), "avg": lambda: AvgPool2d(2), "mixed": lambda: MixedPool2d(0.5)}
    for P in four_point_posets():
        out[P.name] = (lambda P=P: PosetPool2d(P))
    return out


def small_cnn(pool, side, placement, seed):
    """conv-ReLU-pool ×2 (or conv-pool-ReLU ×2), linear head; weights from ``seed`` alone."""
    rng = np.random.default_rng(seed)
    layers, c_in, h = [], 1, side
    for c in (8, 16):
        conv = Conv2d(c_in, c, 3, padding=1, rng=rng)
        layers += [conv, ReLU(), pool()] if placement == "relu-pool" else [conv, pool(), ReLU()]
        c_in, h = c, -(-h // 2)
    return Sequential(*layers, Flatten(), Linear(c_in * h * h, 10, rng=rng))


def load(args):
    if args.data == "digits":
        from nograd.data import load_digits
        X, y, Xt, yt = load_digits(flatten=False, seed=args.seed)
        limit = args.train_size
    elif args.data == "mnist":
        from nograd.data import load_mnist
        X, y, Xt, yt = load_mnist(args.data_dir)
        limit = args.train_size or 10000
    else:
        raise SystemExit(f"--data must be digits or mnist, got {args.data!r}")
    if limit:
        keep = np.random.default_rng(args.seed).permutation(len(y))[:limit]
        X, y = X[keep], y[keep]
    return X, y, Xt, yt


def run(name, make, data, placement, seeds, epochs):
    X, y, Xt, yt = data
    accs, secs = [], []
    for seed in seeds:
        net = small_cnn(make, X.shape[-1], placement, seed)
        hist = fit(net, Backprop(), Adam(net.params, lr=3e-3), (X, y), val=(Xt, yt), epochs=epochs,
                   batch_size=32, rng=seed, progress=False)
        accs.append(hist["val_accuracy"][-1])
        secs.append(float(np.mean(hist["seconds"])))
    return {"pooling": name, "placement": placement, "accuracy_mean": float(np.mean(accs)),
            "accuracy_std": float(np.std(accs)), "accuracies": [round(a, 4) for a in accs],
            "seconds_per_epoch": float(np.mean(secs))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="number of seeds (weights and batch order)")
    ap.add_argument("--seed", type=int, default=0, help="first seed; also the data split")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--placement", choices=("relu-pool", "pool-relu", "both"), default="both")
    ap.add_argument("--data", default="digits", help="digits (embedded) or mnist")
    ap.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    ap.add_argument("--train-size", type=int, default=0, help="training images (0: all; MNIST 10000)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    ap.add_argument("--plot", metavar="DIR", help="write DIR/accuracy.png, test accuracy per pooling "
                    "and placement (DIR is created; needs matplotlib)")
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.epochs < 1:
        ap.error("--seeds and --epochs must be at least 1")
    if args.plot:
        from nograd.plotting import plot_dir

        try:
            args.plot = plot_dir(args.plot)
        except (ImportError, ValueError, TypeError) as e:
            ap.error(str(e))
    data = load(args)
    seeds = list(range(args.seed, args.seed + args.seeds))
    placements = ("relu-pool", "pool-relu") if args.placement == "both" else (args.placement,)
    warm = data[0][:2]
    for make in poolings().values():             # load/compile the Numba kernels before timing
        layer = make()
        out, cache = layer.forward(warm)
        layer.backward(cache, np.ones_like(out))
    start = time.perf_counter()
    rows = [run(name, make, data, pl, seeds, args.epochs)
            for pl in placements for name, make in poolings().items()]
    total = time.perf_counter() - start
    print(f"small CNN on {args.data} ({len(data[1])} train / {len(data[3])} test), {args.epochs} epochs, "
          f"seeds {seeds[0]}..{seeds[-1]}")
    for pl in placements:
        print(f"\n{pl}:\n{'pooling':<12}{'test accuracy':>20}{'s/epoch':>10}")
        for r in (r for r in rows if r["placement"] == pl):
            acc = f"{r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f}"
            print(f"{r['pooling']:<12}{acc:>20}{r['seconds_per_epoch']:>10.3f}")
    print(f"\ntotal {total:.1f} s")
    if args.plot:
        from nograd.plotting import grouped_bars

        mean = {r["pooling"]: {} for r in rows}
        std = {r["pooling"]: {} for r in rows}
        for r in rows:
            mean[r["pooling"]][r["placement"]] = r["accuracy_mean"]
            std[r["pooling"]][r["placement"]] = r["accuracy_std"]
        low = min(r["accuracy_mean"] - r["accuracy_std"] for r in rows)
        path = grouped_bars(mean, os.path.join(args.plot, "accuracy.png"), errors=std,
                            ylim=(max(0.0, np.floor(20 * low) / 20 - 0.05), 1.0),
                            ylabel=f"test accuracy (mean ± std, {len(seeds)} seeds)",
                            title=f"small CNN on {args.data}, {args.epochs} epochs: max, average, "
                                  f"mixed and the 16 poset poolings")
        print(f"figure: {path}")
    if args.json:
        first = [r for r in rows if r["placement"] == placements[0]]
        out = {"data": args.data, "epochs": args.epochs, "seeds": seeds, "placement": args.placement,
               "n_posets": len(four_point_posets()),
               "accuracy": {r["pooling"]: round(r["accuracy_mean"], 4) for r in first},
               "accuracy_std": {r["pooling"]: round(r["accuracy_std"], 4) for r in first},
               "seconds_per_epoch": {r["pooling"]: round(r["seconds_per_epoch"], 4) for r in first},
               "total_seconds": round(total, 1)}
        if len(placements) == 2:
            second = [r for r in rows if r["placement"] == placements[1]]
            out["accuracy_" + placements[1].replace("-", "_")] = {r["pooling"]: round(r["accuracy_mean"], 4)
                                                                  for r in second}
        print(json.dumps(out))


if __name__ == "__main__":
    main()
