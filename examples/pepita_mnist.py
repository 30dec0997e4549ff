"""PEPITA and AFA against backprop on MNIST-sized inputs: a seeded split of the MNIST test images.

    python examples/pepita_mnist.py --data-dir DIR [--rules backprop,pepita,afa] [--seed 0] [--json]
    python examples/pepita_mnist.py --data-dir DIR --optimizer adam --lr 1e-3 --epochs 20  # old defaults

DIR holds ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (gzip or raw; the training
images are not needed). The 10,000 test images are split, stratified by class with ``--split-seed``,
into 8,000 for training and 2,000 for testing (``--n-test``); pixels in [0, 1], 784 inputs.

Each rule trains the default ``compare`` model (MLP 784-256-256-10, ReLU, He-uniform weights from
``--seed``, batch order from ``[seed, 1]``) with its own default hyper-parameters
(``Rule.hyperparameters()``: optimizer, lr, its options, epochs, batch size) unless
``--optimizer``, ``--lr`` or ``--epochs`` override them for every rule — exactly what
``python -m nograd compare --data npz:FILE --seed S`` does on the file ``--save-npz FILE`` writes.
Prints the test accuracy and loss of each rule and its gap to backprop (``mom``: momentum, ``n``
for Nesterov's). With the defaults about 40 s on two idle cores, two minutes on a busy machine.
"""
import argparse
import json
import os
import sys
import time

# Small matrices: one BLAS thread is faster than several on a shared machine (set before NumPy).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nograd.core.optim import get_optimizer  # noqa: E402
from nograd.data.idx import load_mnist  # noqa: E402
from nograd.data.split import stratified_split  # noqa: E402
from nograd.models import get_model  # noqa: E402
from nograd.rules import available_rules, get_rule  # noqa: E402
from nograd.train import evaluate, fit  # noqa: E402


def mnist_split(data_dir, n_test=2000, seed=0):
    """The MNIST test images split into ``(X_train, y_train, X_test, y_test)``: ``n_test`` images
    for testing and the rest for training, stratified by class with ``seed``. Images
    ``(N, 1, 28, 28)`` float32 in [0, 1], labels int64."""
    X, y = load_mnist(data_dir, split="test")
    return stratified_split(X, y, n_test, rng=np.random.default_rng(seed))


def run(name, data, seed, overrides):
    """Train the default MLP with rule ``name`` at its defaults (with ``overrides``); returns the
    figures of the run."""
    X_train, y_train, X_test, y_test = data
    rule = get_rule(name)
    hp = type(rule).hyperparameters()
    if overrides.get("optimizer") not in (None, hp["optimizer"]):
        hp.pop("optimizer_options", None)         # momentum belongs to the rule's own SGD
    hp.update({k: v for k, v in overrides.items() if v is not None})
    model = get_model("mlp", X_train.shape[1:], 10, rng=np.random.default_rng(seed))
    opt = get_optimizer(hp["optimizer"], model.params, lr=hp["lr"], **hp.get("optimizer_options", {}))
    start = time.perf_counter()
    hist = fit(model, rule, opt, (X_train, y_train), epochs=hp["epochs"],
               batch_size=hp["batch_size"], rng=np.random.default_rng([seed, 1]), progress=False)
    seconds = time.perf_counter() - start
    test = evaluate(model, X_test, y_test)
    return {"rule": name, "test_accuracy": round(test["accuracy"], 4),
            "test_loss": round(test["loss"], 4), "train_loss": round(hist.last["loss"], 4),
            "optimizer": hp["optimizer"], "lr": hp["lr"],
            "momentum": hp.get("optimizer_options", {}).get("momentum", 0.0),
            "nesterov": bool(hp.get("optimizer_options", {}).get("nesterov", False)),
            "epochs": hp["epochs"], "batch_size": hp["batch_size"], "seconds": round(seconds, 1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True,
                    help="folder with t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (.gz or raw)")
    ap.add_argument("--n-test", type=int, default=2000, help="test images (default 2000; rest train)")
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the stratified split")
    ap.add_argument("--seed", type=int, default=0, help="weights and batch order (as compare --seed)")
    ap.add_argument("--rules", default="backprop,pepita,afa",
                    help="comma list of registered rules (default backprop,pepita,afa)")
    ap.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), help="override every rule's")
    ap.add_argument("--lr", type=float, help="override every rule's learning rate")
    ap.add_argument("--epochs", type=int, help="override every rule's number of epochs")
    ap.add_argument("--save-npz", metavar="FILE", help="also write the split to FILE (.npz) for "
                    "`python -m nograd compare --data npz:FILE`")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    args = ap.parse_args(argv)
    names = [s.strip() for s in args.rules.split(",") if s.strip()]
    unknown = [n for n in names if n not in available_rules()]
    if unknown or not names:
        ap.error(f"--rules: unknown {unknown}; registered: {', '.join(available_rules())}")
    if args.epochs is not None and args.epochs < 1:
        ap.error(f"--epochs must be a positive int, got {args.epochs}")
    if args.lr is not None and not args.lr > 0:
        ap.error(f"--lr must be positive, got {args.lr}")
    if not 0 < args.n_test < 10000:
        ap.error(f"--n-test must be in 1..9999 (the split is of the 10,000 test images), got {args.n_test}")
    try:
        data = mnist_split(args.data_dir, args.n_test, args.split_seed)
    except (ValueError, TypeError, OSError) as e:
        ap.error(f"--data-dir: {e}")
    if args.save_npz:
        X_train, y_train, X_test, y_test = data
        np.savez(args.save_npz, X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test)
    overrides = {"optimizer": args.optimizer, "lr": args.lr, "epochs": args.epochs}
    n_train, n_test = len(data[0]), len(data[2])
    print(f"MLP 784-256-256-10 on MNIST test images split {n_train}/{n_test} "
          f"(split seed {args.split_seed}), seed {args.seed}")
    header = (f"{'rule':<10} {'test acc':>8} {'test loss':>9} {'vs bp':>6}  {'optimizer':<9} "
              f"{'lr':>6} {'mom':>5} {'epochs':>6} {'seconds':>7}")
    print(header)
    print("-" * len(header))
    results, ref = [], None
    for name in names:
        r = run(name, data, args.seed, overrides)
        if name == "backprop":
            ref = r["test_accuracy"]
        r["points_below_backprop"] = None if ref is None else round(100 * (ref - r["test_accuracy"]), 2)
        gap = "" if ref is None or name == "backprop" else f"{-r['points_below_backprop']:+.2f}"
        print(f"{name:<10} {r['test_accuracy']:>8.4f} {r['test_loss']:>9.4f} {gap:>6}  "
              f"{r['optimizer']:<9} {r['lr']:>6g} {r['momentum']:>4g}{'n' if r['nesterov'] else ' '} "
              f"{r['epochs']:>6} "
              f"{r['seconds']:>7.1f}", flush=True)
        results.append(r)
    if args.json:
        print(json.dumps({"example": "pepita_mnist", "n_train": n_train, "n_test": n_test,
                          "split_seed": args.split_seed, "seed": args.seed, "results": results}))


if __name__ == "__main__":
    main()
