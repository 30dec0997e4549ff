"""Fine-tuning with forward passes only: MeZO on the loss and on accuracy, beside backprop.

    python examples/mezo_finetune.py [--seed 0] [--shift 1] [--json]
    python examples/mezo_finetune.py --data mnist --data-dir DIR

An MLP (input-128-128-classes, ReLU) is pretrained with backprop (Adam) on the training images.
The target task is the same images shifted ``--shift`` pixels to the right (zeros come in on the
left): the pretrained network loses much of its accuracy there. The same pretrained weights are
then fine-tuned on the shifted training images in three ways:

- backprop: plain SGD on the cross-entropy gradient;
- MeZO on the loss: ``MeZO().step`` — two forward passes at θ ± εz, z regenerated from a seed,
  parameters perturbed and updated in place (Malladi et al. 2023, Algorithm 1);
- MeZO on accuracy: ``MeZO(objective="zero-one")`` minimises the batch error rate, a piecewise
  constant objective with no useful gradient at all.

Test accuracy is reported on the shifted test images (the target) and the original ones (how much
of the source task remains). Runs in about 20 s on two cores with the defaults.
"""
import argparse
import json
import os
import sys
import time

# The matrices here are small: one BLAS thread is faster, and on a busy machine OpenBLAS's
# spinning threads slow every step. Set before NumPy loads; the environment's own setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import nograd as ng  # noqa: E402
from nograd.data import batches, load_dataset  # noqa: E402
from nograd.models import get_model  # noqa: E402
from nograd.rules import Backprop, MeZO  # noqa: E402


def shift_right(X, pixels):
    """Images (N, C, H, W) moved ``pixels`` columns to the right, zeros filling in on the left."""
    if X.ndim != 4:
        raise SystemExit(f"mezo_finetune: the target task shifts images; {X.shape[1:]} samples "
                         f"are not images (N, C, H, W): use digits, mnist, fashion-mnist or "
                         f"cifar10")
    out = np.zeros_like(X)
    out[..., pixels:] = X[..., :X.shape[-1] - pixels]
    return out


def accuracy(model, X, y):
    return float(np.mean(np.concatenate([model(X[i:i + 2048]).argmax(1)
                                         for i in range(0, len(X), 2048)]) == y))


def train(model, step, X, y, steps, batch, rng):
    """Call ``step(xb, yb)`` on ``steps`` shuffled mini-batches (epochs repeat as needed)."""
    done = 0
    while done < steps:
        for xb, yb in batches(X, y, batch, rng):
            step(xb, yb)
            done += 1
            if done == steps:
                return


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="digits", help="an image dataset: digits (default), mnist, "
                                                      "fashion-mnist, cifar10")
    p.add_argument("--data-dir", help="folder of the mnist / fashion-mnist / cifar10 files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shift", type=int, default=1, help="pixels the target images move right")
    p.add_argument("--pretrain-steps", type=int, default=330)
    p.add_argument("--backprop-steps", type=int, default=300)
    p.add_argument("--mezo-steps", type=int, default=2000)
    p.add_argument("--accuracy-steps", type=int, default=1000)
    p.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    args = p.parse_args(argv)
    if min(args.pretrain_steps, args.backprop_steps, args.mezo_steps, args.accuracy_steps) < 1:
        p.error("the step counts must be positive")

    ds = load_dataset(args.data, data_dir=args.data_dir, seed=args.seed)
    if not 0 < args.shift < ds.input_shape[-1]:
        p.error(f"--shift must be between 1 and {ds.input_shape[-1] - 1}")
    Xs_train, Xs_test = shift_right(ds.X_train, args.shift), shift_right(ds.X_test, args.shift)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()

    # 1. pretrain on the source images with backprop
    model = get_model("mlp", ds.input_shape, ds.num_classes, rng=rng, hidden=(128, 128))
    opt, bp = ng.Adam(model.params, lr=3e-3), Backprop()
    train(model, lambda xb, yb: opt.step(bp.grads(model, xb, yb)[0]), ds.X_train, ds.y_train,
          args.pretrain_steps, 64, rng)
    pretrained = {k: a.copy() for k, a in model.params.items()}

    def scores(seconds=None):
        out = {"target_accuracy": round(accuracy(model, Xs_test, ds.y_test), 4),
               "source_accuracy": round(accuracy(model, ds.X_test, ds.y_test), 4)}
        if seconds is not None:
            out["seconds"] = round(seconds, 2)
        return out

    results = {"pretrained": scores()}

    # 2. three fine-tunings of the same pretrained weights on the shifted training images
    sgd = ng.SGD(model.params, lr=0.05)          # plain SGD keeps no state between the runs

    def backprop_step(xb, yb):
        sgd.step(bp.grads(model, xb, yb)[0])

    mezo = MeZO(eps=1e-3, seed=args.seed)
    mezo_acc = MeZO(objective="zero-one", eps=0.02, seed=args.seed)
    runs = [("backprop", backprop_step, args.backprop_steps, 64),
            ("mezo", lambda xb, yb: mezo.step(model, xb, yb, lr=1e-3, rng=rng),
             args.mezo_steps, 64),
            ("mezo_accuracy", lambda xb, yb: mezo_acc.step(model, xb, yb, lr=0.01, rng=rng),
             args.accuracy_steps, 256)]
    for name, step, steps, batch in runs:
        for k, a in model.params.items():
            a[...] = pretrained[k]
        rng = np.random.default_rng([args.seed, 1])          # same batch order for each method
        t0 = time.perf_counter()
        train(model, step, Xs_train, ds.y_train, steps, batch, rng)
        results[name] = {**scores(time.perf_counter() - t0), "steps": steps, "batch_size": batch}

    total = time.perf_counter() - start
    labels = {"pretrained": "pretrained (no fine-tuning)", "backprop": "backprop, SGD lr 0.05",
              "mezo": "MeZO on the loss, lr 1e-3", "mezo_accuracy": "MeZO on accuracy, lr 0.01"}
    print(f"MLP {ds.input_shape}-128-128-{ds.num_classes} on {ds.name}; target: images shifted "
          f"{args.shift} px right (seed {args.seed})")
    print(f"{'fine-tuning':<30} {'steps':>6} {'batch':>6} {'target acc':>11} {'source acc':>11} "
          f"{'seconds':>8}")
    for name, r in results.items():
        print(f"{labels[name]:<30} {r.get('steps', 0):>6} {r.get('batch_size', 0):>6} "
              f"{r['target_accuracy']:>11.4f} {r['source_accuracy']:>11.4f} "
              f"{r.get('seconds', 0.0):>8.2f}")
    print(f"total {total:.1f} s")
    if args.json:
        print(json.dumps({"data": ds.name, "shift": args.shift, "seed": args.seed, **results,
                          "total_seconds": round(total, 2)}))


if __name__ == "__main__":
    main()
