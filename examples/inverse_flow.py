"""Inverse-Flow on digits: a normalizing flow whose convolutions are inverted by triangular solves.

    python examples/inverse_flow.py [--epochs 30] [--steps 6] [--hidden 64] [--seed 0]
                                    [--data digits|mnist] [--data-dir DIR] [--png samples.png] [--json]
                                    [--plot DIR]

Nagar & Varma (AISTATS 2025) put the *inverse* of a causal convolution on the image → latent side
of a Glow-like flow: the density (training) direction runs triangular solves over anti-diagonals,
the sampling direction only ordinary convolutions. This script trains
:class:`nograd.models.InverseFlow` (2 levels × ``--steps`` steps of ActNorm → InverseConv2d →
affine coupling) by maximum likelihood with Adam, and reports

- test negative log-likelihood in **bits per dimension** (the uniform model scores log2(levels):
  4.09 for the 17-level digits, 8 for 8-bit MNIST);
- time per image to *sample* (latents → images: convolutions) beside time per image to *evaluate
  the density* (images → latents: solves), medians of repeated batches of 100;
- a PNG grid of samples (``--png PATH``, or ``--plot DIR`` for ``DIR/samples.png``: 64 samples,
  8 per row) when matplotlib is installed.

``--data digits`` (default) is the embedded UCI 8×8 digits (levels 0..16); ``--data mnist
--data-dir DIR`` reads MNIST IDX files from DIR (when the training images are absent, as in the
repository's shared data folder, the 10,000 test images are split 8,000 / 2,000).
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nograd import Adam  # noqa: E402
from nograd.data import load_digits, load_mnist  # noqa: E402
from nograd.models import InverseFlow, dequantize  # noqa: E402


def load(args):
    """Integer images ``(N, 1, H, W)``, train and test, and the number of levels."""
    if args.data == "digits":
        X, _, Xt, _ = load_digits(seed=args.seed, flatten=False)
        if args.limit:
            X = X[:args.limit]
        return np.rint(X * 16).astype(np.int64), np.rint(Xt * 16).astype(np.int64), 17, "digits 8x8"
    try:
        X, _, Xt, _ = load_mnist(args.data_dir, split="all")
        note = "MNIST train/test"
    except ValueError:                     # no training images: split the test set
        X, _ = load_mnist(args.data_dir, split="test")
        order = np.random.default_rng(args.seed).permutation(len(X))
        X, Xt = X[order[:8000]], X[order[8000:]]
        note = "MNIST test images split 8000/2000"
    if args.limit:
        X = X[:args.limit]
    return np.rint(X * 255).astype(np.int64), np.rint(Xt * 255).astype(np.int64), 256, note


def bits_per_dim(flow, L, n_bins, seed):
    """Mean test bits/dim, one dequantisation draw, in batches of 500."""
    rng = np.random.default_rng(seed)
    parts = [flow(dequantize(L[i:i + 500], n_bins, rng=rng)) for i in range(0, len(L), 500)]
    return float(np.concatenate(parts).mean())


def per_image_seconds(fn, n, repeats=7):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) / n


def save_grid(images, path, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG written")
        return False
    n = len(images)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8 + 0.4))
    for ax, img in zip(np.ravel(axes), list(images) + [None] * (rows * cols - n)):
        ax.axis("off")
        if img is not None:
            ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
    fig.suptitle(title, fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["digits", "mnist"], default="digits")
    ap.add_argument("--data-dir", default=None, help="folder of the MNIST IDX files")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training images")
    ap.add_argument("--epochs", type=int, default=None, help="default 30 (digits), 3 (mnist)")
    ap.add_argument("--steps", type=int, default=6, help="flow steps per level")
    ap.add_argument("--hidden", type=int, default=64, help="channels of the coupling networks")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--temperature", type=float, default=0.8, help="latent scale when sampling")
    ap.add_argument("--png", default=None, help="save a grid of 64 samples here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    ap.add_argument("--plot", metavar="DIR", help="write DIR/samples.png, a grid of 64 samples "
                    "(DIR is created; needs matplotlib)")
    args = ap.parse_args(argv)
    if args.data == "mnist" and not args.data_dir:
        ap.error("--data mnist needs --data-dir (a folder with the MNIST IDX files)")
    if min(args.steps, args.hidden, args.batch_size) < 1 or args.lr <= 0 or args.limit < 0:
        ap.error("--steps, --hidden, --batch-size and --lr must be positive")
    if args.plot:
        from nograd.plotting import plot_dir

        try:
            args.plot = plot_dir(args.plot)
        except (ImportError, ValueError, TypeError) as e:
            ap.error(str(e))
    epochs = args.epochs if args.epochs is not None else (30 if args.data == "digits" else 3)
    try:
        L, Lt, n_bins, note = load(args)
    except (ValueError, OSError) as e:
        ap.exit(2, f"inverse_flow.py: error: {e}\n")
    rng = np.random.default_rng(args.seed)
    flow = InverseFlow(L.shape[1:], levels=2, steps=args.steps, hidden=args.hidden, n_bins=n_bins,
                       rng=rng)
    flow.initialize(dequantize(L[:512], n_bins, rng=rng))
    opt = Adam(flow.params, lr=args.lr)
    print(f"Inverse-Flow on {note}: {len(L)} train / {len(Lt)} test images {L.shape[1:]}, "
          f"{flow.num_params} parameters, {args.steps} steps x 2 levels")
    print(f"uniform model: {np.log2(n_bins):.3f} bits/dim; initial test {bits_per_dim(flow, Lt, n_bins, 1):.3f}")
    start = time.perf_counter()
    bs = min(args.batch_size, len(L))          # a --limit below the batch size trains on one batch
    for epoch in range(1, epochs + 1):
        order, losses = rng.permutation(len(L)), []
        for i in range(0, len(L) - bs + 1, bs):
            bpd, cache = flow.forward(dequantize(L[order[i:i + bs]], n_bins, rng=rng))
            _, grads = flow.backward(cache, np.full(bs, 1 / bs, bpd.dtype), need_dx=False)
            opt.step(grads)
            losses.append(float(bpd.mean()))
        if epoch == epochs or epoch % max(1, epochs // 6) == 0:
            print(f"epoch {epoch:3d}  train {np.mean(losses):.3f}  test "
                  f"{bits_per_dim(flow, Lt, n_bins, 1):.3f} bits/dim  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    seconds = time.perf_counter() - start
    test_bpd = bits_per_dim(flow, Lt, n_bins, 1)

    x100 = dequantize(Lt[:100], n_bins, rng=0)
    t_density = per_image_seconds(lambda: flow(x100), 100)
    t_sample = per_image_seconds(lambda: flow.sample(100, rng=0, temperature=args.temperature), 100)
    print(f"\ntest {test_bpd:.3f} bits/dim (uniform {np.log2(n_bins):.3f}); trained {epochs} "
          f"epochs in {seconds:.0f} s")
    print(f"per image: sampling {1e6 * t_sample:.0f} us (convolutions), density "
          f"{1e6 * t_density:.0f} us (triangular solves); ratio {t_sample / t_density:.2f}")
    png = None
    if args.png:
        samples = flow.sample(64, rng=args.seed, temperature=args.temperature)
        if save_grid(samples, args.png, f"Inverse-Flow samples, T={args.temperature}, "
                                        f"{test_bpd:.2f} bits/dim"):
            png = args.png
            print(f"samples written to {png}")
    if args.plot:
        from nograd.plotting import image_grid

        samples = flow.sample(64, rng=args.seed, temperature=args.temperature)
        path = image_grid(samples, os.path.join(args.plot, "samples.png"), cols=8,
                          title=f"Inverse-Flow samples, T={args.temperature}, "
                                f"{test_bpd:.2f} bits/dim ({epochs} epochs)")
        print(f"samples written to {path}")
    if args.json:
        print(json.dumps({"data": args.data, "epochs": epochs, "seed": args.seed,
                          "params": flow.num_params, "test_bits_per_dim": round(test_bpd, 4),
                          "uniform_bits_per_dim": round(float(np.log2(n_bins)), 4),
                          "train_seconds": round(seconds, 1),
                          "sample_us_per_image": round(1e6 * t_sample, 1),
                          "density_us_per_image": round(1e6 * t_density, 1),
                          "sample_over_density": round(t_sample / t_density, 3), "png": png}))


if __name__ == "__main__":
    main()
