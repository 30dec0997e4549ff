"""Forward-Forward against backprop on the same MLP: accuracy, and how sparse the hidden layers are.

    python examples/ff_representations.py [--seed 0] [--json] [--figure ff_reps.png]
    python examples/ff_representations.py --data mnist --data-dir DIR --ff-epochs 10 --bp-epochs 5
    python examples/ff_representations.py --plot DIR      # DIR/hoyer_sparsity.png, class_means.png

Trains the same MLP (input-256-256-10, ReLU, He-uniform weights from --seed) twice on the same split
and batch order: with Forward-Forward (Hinton 2022; the label written over the 10 least-varying
input pixels, random wrong labels as negatives, sum-of-squares goodness, RMS normalisation between
layers; Adam, lr 3e-3, 60 epochs) and with backprop (Adam, lr 1e-3, 20 epochs). It prints the test
accuracy — FF by both of its prediction modes — and then, on the test samples each network
classifies correctly, the representation analysis of Tosato et al. (2023, "Emergent
representations in networks trained with the Forward-Forward algorithm") for every hidden
layer: Hoyer sparsity, fraction of active units, and the category-specific ensembles (units whose
class mean exceeds 20% of the layer's largest class mean: their size, their overlap across classes,
the share of units that belong to one class only). FF's representations are read with the true
label in the input, as in the paper; backprop's from the plain forward pass.

With --figure and matplotlib installed it saves a figure of the per-class mean activation of every
unit (units sorted by their preferred class) for both networks. With --plot DIR it writes
DIR/hoyer_sparsity.png (histograms of the per-sample Hoyer sparsity, FF against backprop, a panel
per hidden layer, the paper's MNIST ranges marked) and the same per-class figure as
DIR/class_means.png. Runs in about a minute on two cores with the defaults; --json ends the
output with one JSON line of the figures.
"""
import argparse
import json
import os
import sys
import time

# The matrices are small: one BLAS thread beats several, and on a busy machine OpenBLAS's spinning
# threads slow every product down. Set before NumPy loads; the environment's own setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import nograd as ng  # noqa: E402
from nograd.analysis import (class_means, hidden_activities, representation_report,  # noqa: E402
                             sparsity)
from nograd.data import load_dataset  # noqa: E402
from nograd.models import get_model  # noqa: E402
from nograd.rules import Backprop, ForwardForward  # noqa: E402

#: Tosato et al. (2023), MNIST: Hoyer sparsity of the first hidden layer across their runs
PAPER = {"ff_layer1_hoyer": [0.63, 0.90], "bp_layer1_hoyer": [0.30, 0.59]}


def train(rule, ds, args, epochs, lr):
    model = get_model("mlp", ds.input_shape, ds.num_classes, rng=np.random.default_rng(args.seed),
                      hidden=tuple(args.hidden))
    opt = ng.Adam(model.params, lr=lr)
    start = time.perf_counter()
    ng.fit(model, rule, opt, (ds.X_train, ds.y_train), epochs=epochs, batch_size=64,
           rng=np.random.default_rng([args.seed, 1]), progress=False)
    return model, time.perf_counter() - start


def accuracy(scores, y):
    return float(np.mean(scores.argmax(axis=1) == y))


def sorted_means(h, y, k):
    """Class means ``(C, J)`` with units ordered by preferred class, then by their peak; units
    that never fire go last."""
    m = class_means(h, y, k)
    peak = m.max(axis=0)
    preferred = np.where(peak > 0, m.argmax(axis=0), k)
    return m[:, np.lexsort((-peak, preferred))]


def figure(path, panels, k):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 1.7 * len(panels) + 0.6), squeeze=False,
                             constrained_layout=True)
    for ax, (title, m) in zip(axes[:, 0], panels):
        im = ax.imshow(m / max(m.max(), 1e-12), aspect="auto", cmap="Blues", vmin=0, vmax=1,
                       interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_yticks(range(k))
        ax.set_ylabel("class", fontsize=8)
        ax.tick_params(labelsize=6)
    axes[-1, 0].set_xlabel("unit (sorted by preferred class; silent units last)")
    fig.colorbar(im, ax=axes[:, 0].tolist(), shrink=0.6, label="class mean / layer max")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="digits", help="digits (embedded, default), mnist, "
                    "fashion-mnist, or any name `python -m nograd list` shows")
    ap.add_argument("--data-dir", default=None, help="folder with the MNIST / Fashion-MNIST files")
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 256], help="hidden widths")
    ap.add_argument("--goodness", default="sumsq", choices=("sumsq", "neg-sumsq", "l2"),
                    help="FF's goodness: sum of squares (Hinton, default), minus it, or the L2 "
                         "norm (Tosato et al.)")
    ap.add_argument("--ff-epochs", type=int, default=60)
    ap.add_argument("--bp-epochs", type=int, default=20)
    ap.add_argument("--figure", default=None, metavar="PATH",
                    help="save a PNG of the per-class mean activations (needs matplotlib)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    ap.add_argument("--plot", metavar="DIR", help="write DIR/hoyer_sparsity.png and "
                    "DIR/class_means.png (DIR is created; needs matplotlib)")
    args = ap.parse_args(argv)
    if args.ff_epochs < 1 or args.bp_epochs < 1 or min(args.hidden) < 1:
        ap.error("epochs and hidden widths must be positive")
    if args.figure:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            ap.error("--figure needs matplotlib (pip install matplotlib); nothing was trained")
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.figure))):
            ap.error(f"--figure {args.figure}: the folder does not exist")
    if args.plot:
        from nograd.plotting import plot_dir

        if len(args.hidden) > 5:
            ap.error(f"--plot draws at most 5 hidden layers; --hidden has {len(args.hidden)}")

        try:
            args.plot = plot_dir(args.plot)
        except (ImportError, ValueError, TypeError) as e:
            ap.error(str(e))
    try:
        ds = load_dataset(args.data, data_dir=args.data_dir, seed=args.seed)
    except (ValueError, TypeError, OSError) as e:
        ap.error(f"--data {args.data}: {e}")
    k = ds.num_classes

    ff = ForwardForward(goodness=args.goodness, seed=args.seed)
    ff_model, ff_seconds = train(ff, ds, args, args.ff_epochs, 3e-3)
    bp_model, bp_seconds = train(Backprop(), ds, args, args.bp_epochs, 1e-3)

    X, y = ds.X_test, ds.y_test
    ff_good = ff.predict(ff_model, X, mode="goodness")
    ff_soft = ff.predict(ff_model, X, mode="softmax")
    bp_out = bp_model(X)
    acc = {"ff_goodness": accuracy(ff_good, y), "ff_softmax": accuracy(ff_soft, y),
           "backprop": accuracy(bp_out, y)}
    ff_reps = ff.hidden_states(ff_model, X, y)                  # true label in the input
    bp_reps = hidden_activities(bp_model, X)
    ff_rep = representation_report(ff_reps, y, k, mask=ff_good.argmax(1) == y)
    bp_rep = representation_report(bp_reps, y, k, mask=bp_out.argmax(1) == y)

    out = sys.stdout
    arch = "-".join(map(str, args.hidden))
    print(f"{ds.name}: {len(ds.X_train)} train / {len(X)} test, MLP {arch}, "
          f"FF goodness {args.goodness}, seed {args.seed}", file=out)
    print(f"test accuracy  FF (goodness over labels) {acc['ff_goodness']:.4f}   "
          f"FF (softmax head) {acc['ff_softmax']:.4f}   backprop {acc['backprop']:.4f}", file=out)
    print(f"training time  FF {ff_seconds:.1f} s ({args.ff_epochs} epochs)   backprop "
          f"{bp_seconds:.1f} s ({args.bp_epochs} epochs)\n", file=out)
    head = (f"{'layer':<6}{'rule':<10}{'Hoyer':>14}{'active':>9}{'ensemble':>10}{'overlap':>9}"
            f"{'specific':>10}")
    print("representations of the correctly classified test samples", file=out)
    print(head, file=out)
    print("-" * len(head), file=out)
    for f, b in zip(ff_rep, bp_rep):
        for name, r in (("FF", f), ("backprop", b)):
            print(f"{r['layer']:<6}{name:<10}{r['hoyer']:>8.3f} ±{r['hoyer_std']:.2f}"
                  f"{r['active_fraction']:>9.3f}{r['ensemble_size_fraction']:>10.3f}"
                  f"{r['ensemble_overlap']:>9.3f}{r['ensemble_specific_fraction']:>10.3f}", file=out)
    print("\nHoyer: 1 = one active unit, 0 = all equally active. active: fraction of units > 0. "
          "ensemble: mean class-ensemble size / width; overlap: mean Jaccard index between two "
          "classes' ensembles; specific: share of ensemble units in one class only.", file=out)
    print(f"Tosato et al. 2023 (MNIST, first layer): Hoyer {PAPER['ff_layer1_hoyer'][0]}–"
          f"{PAPER['ff_layer1_hoyer'][1]} for FF, {PAPER['bp_layer1_hoyer'][0]}–"
          f"{PAPER['bp_layer1_hoyer'][1]} for backprop.", file=out)
    sparser = all(f["hoyer"] > b["hoyer"] for f, b in zip(ff_rep, bp_rep))
    print(f"FF sparser than backprop in every layer: {'yes' if sparser else 'no'}", file=out)
    if args.plot:
        from nograd.plotting import sparsity_histograms

        mf, mb = ff_good.argmax(1) == y, bp_out.argmax(1) == y
        path = sparsity_histograms(
            {"FF": [sparsity(h[mf]) for h in ff_reps], "backprop": [sparsity(h[mb]) for h in bp_reps]},
            os.path.join(args.plot, "hoyer_sparsity.png"),
            bands={"FF": PAPER["ff_layer1_hoyer"], "backprop": PAPER["bp_layer1_hoyer"]},
            title=f"Hoyer sparsity of correctly classified test samples, MLP {arch} on {ds.name}")
        print(f"figure: {path}", file=out)
    for fig_path in [args.figure] + ([os.path.join(args.plot, "class_means.png")] if args.plot else []):
        if not fig_path:
            continue
        panels = []
        for i, (hf, hb) in enumerate(zip(ff_reps, bp_reps)):
            mf, mb = ff_good.argmax(1) == y, bp_out.argmax(1) == y
            panels.append((f"FF, layer {i + 1}", sorted_means(hf[mf], y[mf], k)))
            panels.append((f"backprop, layer {i + 1}", sorted_means(hb[mb], y[mb], k)))
        figure(fig_path, panels, k)
        print(f"figure: {fig_path}", file=out)
    if args.json:
        keys = ("hoyer", "hoyer_std", "active_fraction", "ensemble_size_fraction",
                "ensemble_overlap", "ensemble_specific_fraction")
        summary = {"data": ds.name, "seed": args.seed, "hidden": args.hidden,
                   "goodness": args.goodness,
                   "test_accuracy": {k_: round(v, 4) for k_, v in acc.items()},
                   "train_seconds": {"ff": round(ff_seconds, 2), "backprop": round(bp_seconds, 2)},
                   "epochs": {"ff": args.ff_epochs, "backprop": args.bp_epochs},
                   "ff": [{k_: round(r[k_], 4) for k_ in keys} for r in ff_rep],
                   "backprop": [{k_: round(r[k_], 4) for k_ in keys} for r in bp_rep],
                   "ff_sparser_every_layer": sparser, "paper_mnist": PAPER}
        print(json.dumps(summary), file=out)


if __name__ == "__main__":
    main()
