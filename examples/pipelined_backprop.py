"""Pipelined backpropagation at batch size one: the delay it causes, and its cure.

    python examples/pipelined_backprop.py [--json] [--plot DIR] [--seeds 0,1]
    python examples/pipelined_backprop.py --data mnist --data-dir DIR --train-size 6000

Kosson et al. (2021), "Pipelined Backpropagation at Scale: Training Large Models without Batches"
(MLSys): a network cut into S stages, one sample entering per tick, every stage updating as soon as
its gradient arrives. Stage s then computes its forward pass with weights D_s = 2(S - s) updates
older than those its backward pass meets. The rule ``pipelined`` simulates that schedule exactly
(:mod:`nograd.rules.pipelined`). Each model is trained at batch size one with

- SGD (one stage, no delay: the rule with S = 1 is plain SGD bit for bit),
- PB: pipelined, no compensation; PB+SC: Spike Compensation (§4.2); PB+LWP: Linear Weight
  Prediction (§4.3); PB+SC+LWP: both,

at growing stage counts, from the same initial weights and sample order, with SGD + momentum
hyper-parameters obtained from a batched setting (``--ref-lr``, ``--ref-momentum``,
``--ref-batch``) by the paper's scaling for batch size one (``scale_hyperparameters``). The models:
an MLP of eight hidden ReLU layers (up to 9 stages, D up to 16) and a small CNN (conv, conv,
linear: up to 3 stages). It prints the ideal utilisation of fill-and-drain pipelining against PB
(the paper's motivation), the table of test accuracy against stages, and with ``--json`` one line
whose top-level ``sgd``, ``pb``, ``pb_sc``, ``pb_lwp``, ``pb_sc_lwp`` are the deepest MLP pipeline's
test accuracies (means over ``--seeds``, default 0 and 1: one seed alone is noisy at batch size
one). About 5 minutes on two busy cores with the defaults (each model, seed and stage count is
an independent run).
"""
import argparse
import json
import os
import sys
import time

# batch size one: tiny GEMMs, one BLAS thread is fastest and a busy machine loses less
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import nograd  # noqa: E402
from nograd.core.optim import SGD  # noqa: E402
from nograd.data import load_dataset  # noqa: E402
from nograd.models import get_model  # noqa: E402
from nograd.rules import Backprop, PipelinedBackprop  # noqa: E402
from nograd.rules.pipelined import (pipeline_utilisation, scale_hyperparameters,  # noqa: E402
                                    stage_delays)
from nograd.train import evaluate, fit  # noqa: E402

COMPENSATIONS = {"pb": "none", "pb_sc": "sc", "pb_lwp": "lwp", "pb_sc_lwp": "sc+lwp"}
MODELS = {"mlp": ({"hidden": (64,) * 8}, (1, 3, 9)),
          "cnn": ({"channels": (8, 16)}, (1, 3))}


def train_one(name, options, ds, compensation, stages, lr, momentum, epochs, seed):
    """Test accuracy of ``name`` after ``epochs`` at batch size one (``stages == 1``: SGD through
    backprop), or ``nan`` when the run diverges. Weights from ``seed``, sample order from
    ``[seed, 1]``: every run of a seed starts alike."""
    model = get_model(name, ds.input_shape, ds.num_classes, rng=np.random.default_rng(seed),
                      **options)
    rule = Backprop() if stages == 1 else PipelinedBackprop(stages=stages,
                                                            compensation=compensation)
    opt = SGD(model.params, lr=lr, momentum=momentum)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            fit(model, rule, opt, (ds.X_train, ds.y_train), epochs=epochs, batch_size=1,
                rng=np.random.default_rng([seed, 1]), progress=False)
    except FloatingPointError:
        return float("nan")
    return evaluate(model, ds.X_test, ds.y_test)["accuracy"]


def plot(results, path_dir):
    """``accuracy_vs_stages.png`` in ``path_dir``: test accuracy against stages, one line per
    method, one panel per model."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("pipelined_backprop: --plot needs matplotlib (pip install matplotlib)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(path_dir, exist_ok=True)
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.2), squeeze=False)
    for ax, (model, table) in zip(axes[0], results.items()):
        stages = sorted(int(s) for s in table)
        sgd = table[str(stages[0])]["sgd"]
        ax.axhline(sgd, color="k", lw=1, ls="--", label="SGD (S = 1)")
        for key, label in (("pb", "PB"), ("pb_sc", "PB+SC"), ("pb_lwp", "PB+LWP"),
                           ("pb_sc_lwp", "PB+SC+LWP")):
            xs = [s for s in stages if key in table[str(s)]]
            ax.plot([1] + xs, [sgd] + [table[str(s)][key] for s in xs], marker="o", label=label)
        ax.set_xlabel("pipeline stages S (first stage's delay 2(S-1))")
        ax.set_ylabel("test accuracy")
        ax.set_title(model)
        ax.set_xticks(stages)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out = os.path.join(path_dir, "accuracy_vs_stages.png")
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="digits", help="digits (default), mnist, fashion-mnist")
    p.add_argument("--data-dir", help="folder of the mnist / fashion-mnist files")
    p.add_argument("--train-size", type=int, default=None,
                   help="train on the first N training samples (default: all; use a few thousand "
                        "for MNIST, which takes about 1 ms per sample and stage count)")
    p.add_argument("--models", default="mlp,cnn", help="comma list of mlp, cnn")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seeds", default="0,1",
                   help="comma list of seeds (default 0,1); accuracies are their means")
    p.add_argument("--ref-lr", type=float, default=0.03, help="batched SGD learning rate")
    p.add_argument("--ref-momentum", type=float, default=0.9, help="batched SGD momentum")
    p.add_argument("--ref-batch", type=int, default=32, help="batch size of that setting")
    p.add_argument("--plot", metavar="DIR", help="write accuracy_vs_stages.png into DIR")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in MODELS for m in models):
        p.error(f"--models takes a comma list of {', '.join(MODELS)}, got {args.models!r}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds takes a comma list of ints, got {args.seeds!r}")
    if args.epochs < 1 or (args.train_size is not None and args.train_size < 2):
        p.error("--epochs must be positive and --train-size at least 2")
    lr, momentum = scale_hyperparameters(args.ref_lr, args.ref_momentum, 1, args.ref_batch)

    ds = load_dataset(args.data, data_dir=args.data_dir, seed=seeds[0])
    if args.train_size is not None:
        ds.X_train, ds.y_train = ds.X_train[:args.train_size], ds.y_train[:args.train_size]
    libs = ", ".join(f"{os.path.basename(d.get('path', '?'))}: {d.get('threads')}"
                     for d in nograd.blas_libraries())
    print(f"threads: BLAS {libs or 'unknown'}; OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS')}; load average {os.getloadavg()[0]:.1f} "
          f"(timings are under that load)")
    print(f"{ds.name}: {len(ds.X_train)} train / {len(ds.X_test)} test; batch size 1, "
          f"{args.epochs} epochs, seeds {seeds}")
    print(f"SGD lr {args.ref_lr:g}, momentum {args.ref_momentum:g} at batch {args.ref_batch} -> "
          f"batch 1: lr {lr:.4g}, momentum {momentum:.5f} (same momentum per sample, same "
          f"total step per sample)")

    print("\nideal utilisation, S workers one stage each (fill-and-drain over a batch of B vs PB):")
    print(f"{'S':>3} {'B':>4} {'delays D_s':<28} {'fill-drain util':>15} {'bubble':>7} "
          f"{'PB util':>7} {'PB speed-up':>11}")
    for S in (3, 9):
        for B in (1, 8, 32):
            u = pipeline_utilisation(S, B)
            print(f"{S:>3} {B:>4} {str(stage_delays(S)):<28} {u['fill_drain_utilisation']:>15.3f} "
                  f"{u['fill_drain_bubble']:>7.3f} {u['pb_utilisation']:>7.3f} "
                  f"{u['speedup']:>10.2f}x")

    start = time.perf_counter()
    results = {}
    for name in models:
        options, stage_counts = MODELS[name]
        table = {}
        print(f"\n{name} {options}: test accuracy (mean over seeds) against pipeline stages",
              flush=True)
        print(f"{'S':>3} {'max D':>5} {'sgd':>7} {'pb':>7} {'pb_sc':>7} {'pb_lwp':>7} "
              f"{'pb_sc_lwp':>9} {'seconds':>8}", flush=True)
        for S in stage_counts:
            t0 = time.perf_counter()
            runs = {"sgd": "none"} if S == 1 else COMPENSATIONS
            row = {key: float(np.mean([train_one(name, options, ds, comp, S, lr, momentum,
                                                 args.epochs, seed) for seed in seeds]))
                   for key, comp in runs.items()}
            row["seconds"] = round(time.perf_counter() - t0, 1)
            table[str(S)] = row
            cells = " ".join(f"{row[k]:>{max(7, len(k))}.4f}" if k in row
                             else f"{'':>{max(7, len(k))}}"
                             for k in ("sgd", "pb", "pb_sc", "pb_lwp", "pb_sc_lwp"))
            print(f"{S:>3} {2 * (S - 1):>5} {cells} {row['seconds']:>8.1f}", flush=True)
        results[name] = table
    total = time.perf_counter() - start
    print(f"total {total:.1f} s")

    first = models[0]
    table = results[first]
    deepest = max(int(s) for s in table)
    top = {"model": first, "stages": deepest, "sgd": round(table["1"]["sgd"], 4)} \
        if "1" in table else {"model": first, "stages": deepest}
    top.update({k: round(v, 4) for k, v in table[str(deepest)].items() if k.startswith("pb")})
    if "sgd" in top:
        print(f"deepest {first} pipeline (S = {deepest}): PB {top['pb'] - top['sgd']:+.4f}, "
              f"PB+SC+LWP {top['pb_sc_lwp'] - top['sgd']:+.4f} against SGD")
    if args.plot:
        print(f"wrote {plot(results, args.plot)}")
    if args.json:
        print(json.dumps({**top, "data": ds.name, "n_train": len(ds.X_train), "epochs": args.epochs,
                          "seeds": seeds, "lr": lr, "momentum": momentum,
                          "ref": {"lr": args.ref_lr, "momentum": args.ref_momentum,
                                  "batch": args.ref_batch},
                          "results": results, "total_seconds": round(total, 1),
                          "load_average": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main()
