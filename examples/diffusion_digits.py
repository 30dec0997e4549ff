"""Pretrain the small diffusion U-Net (DDPM) and the reward classifier on the 8×8 digits.

    python examples/diffusion_digits.py [--steps 1500] [--batch 64] [--channels 32] [--seed 0]
        [--out nograd/diffusion/weights/digits.npz] [--plot DIR] [--json]

Ho et al. 2020 ("Denoising Diffusion Probabilistic Models"): ε-prediction with L_simple (eq. 14), a
linear β schedule over T = 1000 steps; Adam with a cosine-decayed learning rate and an exponential
moving average of the weights (Ho et al. §4 use an EMA of 0.9999 over 800k steps; 0.995 suits a
run of a few thousand). Images are the 1,797 digits mapped to [-1, 1]. The reward classifier of
AlignProp's example (an 8×8 → 64 tanh → 10 MLP) is trained here too, on the training split only.
The defaults take 5–10 minutes on 2 cores; the file written (the default is the package data
that examples/alignprop.py loads) is about 0.7 MB. ``--plot DIR`` writes ``samples.png``, a grid of
50-step DDIM samples (NumPy + zlib, no plotting library).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import nograd  # noqa: E402
from nograd.data import load_digits  # noqa: E402
from nograd.diffusion import DDIM, NoiseSchedule, ddpm_loss, image_grid, write_png  # noqa: E402
from nograd.diffusion.pretrained import DEFAULT_PATH, build_classifier, save_pretrained  # noqa: E402
from nograd.losses import softmax_cross_entropy  # noqa: E402
from nograd.models.diffusion import UNet  # noqa: E402


def digits_images(seed):
    """All digits as ``(N, 1, 8, 8)`` in [-1, 1], and the train/test split in [0, 1] for the classifier."""
    X, y, Xt, yt = load_digits(seed=seed)
    images = np.concatenate([X, Xt]).reshape(-1, 1, 8, 8) * 2 - 1
    return images.astype(np.float32), (X.reshape(-1, 1, 8, 8), y, Xt.reshape(-1, 1, 8, 8), yt)


def train_classifier(data, seed, epochs=60):
    X, y, Xt, yt = data
    clf = build_classifier(rng=seed)
    opt, rng = nograd.Adam(clf.params, lr=3e-3, weight_decay=1e-4), np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for i in range(0, len(y), 64):
            b = order[i:i + 64]
            logits, cache = clf.forward(X[b])
            _, d = softmax_cross_entropy(logits, y[b])
            opt.step(clf.backward(cache, d, need_dx=False)[1])
    return clf, float(np.mean(clf(Xt).argmax(1) == yt))


def pretrain(images, *, steps, batch, channels, lr, seed, log_every=100):
    rng = np.random.default_rng(seed)
    unet = UNet(1, channels, (1, 2), rng=rng)
    schedule = NoiseSchedule(1000)
    opt = nograd.Adam(unet.params, lr=lr)
    ema = {k: v.copy() for k, v in unet.params.items()}
    losses, start = [], time.perf_counter()
    for step in range(steps):
        opt.defaults["lr"] = lr
        for g in opt.groups:
            g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        b = rng.integers(0, len(images), batch)
        loss, grads = ddpm_loss(unet, schedule, images[b], rng=rng)
        opt.step(grads)
        for k, v in unet.params.items():
            ema[k] += 0.005 * (v - ema[k])
        losses.append(loss)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            print(f"step {step + 1:>5}/{steps}  loss {np.mean(losses[-log_every:]):.4f}  "
                  f"{time.perf_counter() - start:6.1f}s", flush=True)
    for k, v in unet.params.items():
        v[...] = ema[k]
    return unet, schedule, losses, time.perf_counter() - start


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS threads (1: the small GEMMs gain nothing from 2, and a busy machine loses a lot)")
    ap.add_argument("--out", default=DEFAULT_PATH, help="where to write the weights (.npz)")
    ap.add_argument("--plot", metavar="DIR", help="write samples.png (a grid of DDIM samples) to DIR")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    args = ap.parse_args(argv)
    with nograd.blas_threads(args.threads):
        run(args)


def run(args):
    libs = ", ".join(f"{os.path.basename(d.get('path', '?'))}: {d.get('threads')}" for d in nograd.blas_libraries())
    print(f"BLAS threads: {libs or 'unknown'} (--threads {args.threads}); load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    images, data = digits_images(args.seed)
    clf, acc = train_classifier(data, args.seed)
    print(f"reward classifier: test accuracy {acc:.4f}", flush=True)
    unet, schedule, losses, secs = pretrain(images, steps=args.steps, batch=args.batch,
                                            channels=args.channels, lr=args.lr, seed=args.seed)
    config = {"unet": {"in_channels": 1, "channels": args.channels, "channel_mult": [1, 2]},
              "classifier": {"hidden": [64]}, "schedule": {"num_steps": 1000},
              "train": {"steps": args.steps, "batch": args.batch, "lr": args.lr, "seed": args.seed,
                        "ema": 0.995, "final_loss": float(np.mean(losses[-100:])),
                        "classifier_test_accuracy": acc}}
    save_pretrained(args.out, unet, clf, config)
    size_kb = os.path.getsize(args.out) / 1024
    x = DDIM(schedule, 50).sample(unet, np.random.default_rng(args.seed + 1).standard_normal((64, 1, 8, 8))
                                  .astype(np.float32))
    probs = clf((np.clip(x, -1, 1) + 1) / 2)
    conf = float(np.mean(np.max(np.exp(probs - probs.max(1, keepdims=True))
                                / np.exp(probs - probs.max(1, keepdims=True)).sum(1, keepdims=True), axis=1)))
    counts = np.bincount(probs.argmax(1), minlength=10).tolist()
    print(f"wrote {args.out} ({size_kb:.0f} kB) after {secs:.0f}s; 64 DDIM-50 samples: classifier "
          f"confidence {conf:.3f}, classes {counts}")
    if args.plot:
        os.makedirs(args.plot, exist_ok=True)
        write_png(os.path.join(args.plot, "samples.png"), image_grid(x, nrow=8))
    if args.json:
        print(json.dumps({"steps": args.steps, "train_seconds": round(secs, 1), "final_loss": config["train"]["final_loss"],
                          "classifier_test_accuracy": acc, "weights_kb": round(size_kb, 1),
                          "sample_confidence": conf, "sample_classes": counts}))


if __name__ == "__main__":
    main()
