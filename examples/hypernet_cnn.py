"""A CNN whose second conv kernel comes from a static hypernetwork, beside the same CNN with free kernels.

    python examples/hypernet_cnn.py [--epochs 20] [--seed 0] [--z-dim 4] [--hidden 4] [--json]
                                    [--plot DIR]

Ha, Dai & Le, "HyperNetworks" (2016), §3.1 and their MNIST experiment (0.76 % vs 0.72 % error with
4,244 vs 12,544 parameters in the generated layer), here on the embedded 8×8 digits. The target is
``cnn((1, 8, 8), 10, channels=(32, 64))``: conv3×3 32 → pool → conv3×3 64 → pool → linear. In the
hypernetwork version the 64×32×3×3 kernel of the second conv is tiled into two 32×32×3×3 blocks,
each generated from its own layer embedding z_j ∈ R^{N_z} by the shared two-layer linear generator;
the first conv, the biases and the head stay free. Both train with backprop and Adam (2e-3, batch
32) for the same epochs and seed. ``--plot DIR`` also evaluates both after every epoch (not
counted in the seconds) and writes their learning curves to ``DIR/learning_curves.png`` (needs
matplotlib).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nograd import Adam, Backprop  # noqa: E402
from nograd.data import load_digits  # noqa: E402
from nograd.models import HyperNetwork, get_model  # noqa: E402


def build(hyper, seed, z_dim, hidden):
    net = get_model("cnn", (64,), 10, rng=seed, channels=(32, 64), kernel_size=3)
    if not hyper:
        return net
    # layer "4" is the second Conv2d (after Reshape, Conv2d, ReLU, MaxPool2d)
    return HyperNetwork(net, kind="conv", names=["4.weight"], block=(32, 32), z_dim=z_dim,
                        hidden=hidden, rng=seed)


def train(model, X, y, Xt, yt, epochs, seed, lr, curve=None):
    opt, rule, rng = Adam(model.params, lr=lr), Backprop(), np.random.default_rng(seed)
    start, evaluating = time.perf_counter(), 0.0
    for epoch in range(1, epochs + 1):
        order, losses = rng.permutation(len(y)), []
        for i in range(0, len(y), 32):
            batch = order[i:i + 32]
            grads, info = rule.grads(model, X[batch], y[batch], rng=rng)
            opt.step(grads)
            losses.append(info["loss"])
        if curve is not None:                     # per-epoch test accuracy, kept out of the time
            t = time.perf_counter()
            curve["epoch"].append(epoch)
            curve["loss"].append(float(np.mean(losses)))
            curve["val_accuracy"].append(float(np.mean(model(Xt).argmax(axis=1) == yt)))
            evaluating += time.perf_counter() - t
    seconds = time.perf_counter() - start - evaluating
    return float(np.mean(model(Xt).argmax(axis=1) == yt)), seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--z-dim", type=int, default=4, help="layer embedding size N_z")
    ap.add_argument("--hidden", type=int, default=4, help="the generator's hidden size d")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    ap.add_argument("--plot", metavar="DIR", help="write DIR/learning_curves.png (DIR is created; "
                    "needs matplotlib)")
    args = ap.parse_args(argv)
    if args.plot:
        from nograd.plotting import plot_dir

        try:
            args.plot = plot_dir(args.plot)
        except (ImportError, ValueError, TypeError) as e:
            ap.error(str(e))
    X, y, Xt, yt = load_digits(seed=args.seed)
    plain = build(False, args.seed, args.z_dim, args.hidden)
    hyper = build(True, args.seed, args.z_dim, args.hidden)
    curves = {name: {"epoch": [], "loss": [], "val_accuracy": []} if args.plot else None
              for name in ("plain", "hyper")}
    acc_plain, t_plain = train(plain, X, y, Xt, yt, args.epochs, args.seed, args.lr, curves["plain"])
    acc_hyper, t_hyper = train(hyper, X, y, Xt, yt, args.epochs, args.seed, args.lr, curves["hyper"])
    counts = hyper.param_counts()
    print(f"{'model':<18}{'params':>9}{'test acc':>10}{'seconds':>9}")
    print(f"{'cnn (free)':<18}{plain.num_params:>9}{acc_plain:>10.4f}{t_plain:>9.2f}")
    print(f"{'cnn (hypernet)':<18}{hyper.num_params:>9}{acc_hyper:>10.4f}{t_hyper:>9.2f}")
    print(f"generated entries {counts['generated']} from a generator of {counts['generator']} weights; "
          f"{plain.num_params / hyper.num_params:.2f}x fewer trainable parameters")
    if args.plot:
        from nograd.plotting import learning_curves

        path = learning_curves({f"cnn, free kernels ({plain.num_params} params)": curves["plain"],
                                f"cnn, hypernetwork ({hyper.num_params} params)": curves["hyper"]},
                               os.path.join(args.plot, "learning_curves.png"),
                               title=f"static hypernetwork (Ha et al. 2016) on digits, N_z = "
                                     f"{args.z_dim}, d = {args.hidden}, seed {args.seed}")
        print(f"figure: {path}")
    if args.json:
        print(json.dumps({"epochs": args.epochs, "seed": args.seed, "z_dim": args.z_dim,
                          "hidden": args.hidden, "params_hyper": hyper.num_params,
                          "params_plain": plain.num_params, "params_generator": counts["generator"],
                          "generated": counts["generated"], "acc_hyper": round(acc_hyper, 4),
                          "acc_plain": round(acc_plain, 4), "seconds_hyper": round(t_hyper, 2),
                          "seconds_plain": round(t_plain, 2),
                          "param_ratio": round(plain.num_params / hyper.num_params, 2)}))


if __name__ == "__main__":
    main()
