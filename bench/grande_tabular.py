"""GRANDE against scikit-learn's tree ensembles: 5-fold stratified macro-F1 and fit time on tables.

    python bench/grande_tabular.py [--data-dir DIR] [--datasets phoneme,ilpd,...] [--folds 5]
                                   [--seed 0] [--models grande,hgb,rf] [--quick] [--json]
                                   [--plot DIR]

Datasets (binary, from the GRANDE paper's benchmark, Marton et al. ICLR 2024): the OpenML tables
``phoneme``, ``qsar-biodeg``, ``climate-model-simulation-crashes`` and ``ilpd`` (class column
``Class``; ilpd's ``V2`` is categorical), read from ``DIR/openml/<name>/<name>.csv``, and
``breast_cancer`` from ``DIR/sklearn_toy/breast_cancer.csv`` (scikit-learn's file: a first line
``n_samples,n_features,names…``, no header, the class in the last column). ``DIR`` defaults to
``../shared/data`` beside the repository. A dataset whose file is absent is skipped with a note;
with no data at all the script says so and ends with a JSON line noting it (exit status 0).

Models, all on the same folds (``nograd.data.stratified_kfold`` with ``--seed``) and the same
``random_state``:

- ``grande``: ``nograd.estimators.grande.GrandeClassifier`` with its defaults (``--quick``: 10 epochs;
  ``--epochs``/``--n-estimators`` override), categorical columns given as ``categorical_features``;
  it does its own preprocessing (imputation, encoding, quantile transform) inside each fit;
- ``hgb``: ``HistGradientBoostingClassifier()`` with default parameters, the categorical columns
  as ordinal codes flagged in ``categorical_features``;
- ``rf``: ``RandomForestClassifier()`` with default parameters, categorical columns as ordinal codes;
- ``hgb-balanced``: ``hgb`` with ``class_weight="balanced"`` — GRANDE weights the classes by
  default (as its reference implementation does), so this row shows how much of a lead on the
  imbalanced tables is the weighting alone;
- ``grande-unweighted`` (not run by default): GRANDE with ``class_weight=None``.

Missing cells reach every model as NaN (HGB and, from scikit-learn 1.4, RF handle NaN). A fold's
"fit s" is the wall-clock time of ``fit`` on the training folds only (prediction not included).
The JSON line holds ``f1`` and ``f1_std`` (dataset → model → mean/std over folds), ``fit_seconds``
(dataset → model → mean per fold), ``mean_f1`` (model → mean over datasets) and
``max_fit_seconds_per_fold`` (the slowest GRANDE fold over all datasets and GRANDE variants).
``--plot DIR`` writes ``DIR/f1_per_dataset.png``: a group of bars per dataset, a bar per model
(mean macro-F1, ± the standard deviation over folds), needing matplotlib.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from nograd.data import load_csv, stratified_kfold  # noqa: E402
from nograd.metrics import macro_f1  # noqa: E402

OPENML = ("phoneme", "qsar-biodeg", "climate-model-simulation-crashes", "ilpd")
TOY = ("breast_cancer",)
QUICK_DATASETS = ("climate-model-simulation-crashes", "breast_cancer")    # the two smallest tables
MODELS = ("grande", "hgb", "rf", "hgb-balanced", "grande-unweighted")
DEFAULT_MODELS = ("grande", "hgb", "rf", "hgb-balanced")
QUICK_EPOCHS = 10


def default_data_dir():
    return os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))


def dataset_path(data_dir, name):
    if name in TOY:
        return os.path.join(data_dir, "sklearn_toy", f"{name}.csv")
    return os.path.join(data_dir, "openml", name, f"{name}.csv")


def load_toy(path):
    """scikit-learn's bundled CSV: ``n,p,class names…`` on the first line, then ``p`` features and
    the integer class per row."""
    with open(path) as f:
        first = f.readline().strip().split(",")
    n, p = int(first[0]), int(first[1])
    a = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    if a.shape != (n, p + 1):
        raise ValueError(f"{path}: expected {n} rows of {p} features + class, got {a.shape}")
    y = a[:, -1].astype(np.int64)
    _, y = np.unique(y, return_inverse=True)
    return a[:, :-1], y.astype(np.int64), []


def load(data_dir, name):
    """``X`` float64 (categorical columns as codes, missing as NaN), ``y`` 0..K-1, categorical
    column indices."""
    path = dataset_path(data_dir, name)
    if name in TOY:
        return load_toy(path)
    X, y, info = load_csv(path, target="Class", categorical="codes", missing="nan",
                          dtype=np.float64, return_info=True)
    names = info["feature_names"]
    return X, y, sorted(names.index(c) for c in info["categorical"])


def make_model(name, seed, cat, n_features, args):
    if name in ("grande", "grande-unweighted"):
        from nograd.estimators.grande import GrandeClassifier

        options = {}
        if args.quick:
            options["epochs"] = QUICK_EPOCHS
        if args.epochs is not None:
            options["epochs"] = args.epochs
        if args.n_estimators is not None:
            options["n_estimators"] = args.n_estimators
        if name == "grande-unweighted":
            options["class_weight"] = None
        return GrandeClassifier(random_state=seed, categorical_features=cat or None, **options)
    if name in ("hgb", "hgb-balanced"):
        from sklearn.ensemble import HistGradientBoostingClassifier

        mask = np.zeros(n_features, dtype=bool)
        mask[cat] = True
        return HistGradientBoostingClassifier(
            random_state=seed, categorical_features=mask if cat else None,
            class_weight="balanced" if name == "hgb-balanced" else None)
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(random_state=seed)


def available_models(wanted):
    """The requested models that can run here, and (name, why) for the others."""
    kept, dropped = [], []
    for name in wanted:
        try:
            if name.startswith("grande"):
                from nograd.estimators.grande import GrandeClassifier  # noqa: F401
            else:
                import sklearn.ensemble  # noqa: F401
        except ImportError as e:
            dropped.append((name, str(e)))
            continue
        kept.append(name)
    return kept, dropped


def _threads(n):
    """BLAS and OpenMP (scikit-learn's HGB/RF) limited to ``n`` threads inside the block; ``None``
    leaves them alone. On a shared 2-core machine OpenMP workers spinning against other work stalled
    the scikit-learn baselines for minutes; one thread each keeps ``--quick`` quick."""
    import contextlib

    if n is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:                      # scikit-learn brings threadpoolctl; nograd alone:
        from nograd.threads import blas_threads

        return blas_threads(n)
    return threadpool_limits(limits=n)


def run_dataset(name, X, y, cat, models, args):
    """Per model: the per-fold macro-F1 and fit seconds on the same stratified folds."""
    folds = stratified_kfold(y, args.folds, rng=args.seed)
    k = int(y.max()) + 1
    out = {}
    for m in models:
        f1s, secs = [], []
        for tr, te in folds:
            model = make_model(m, args.seed, cat, X.shape[1], args)
            t0 = time.perf_counter()
            with _threads(args.threads):
                model.fit(X[tr], y[tr])
            secs.append(time.perf_counter() - t0)
            f1s.append(macro_f1(y[te], np.asarray(model.predict(X[te])).astype(np.int64), k))
        out[m] = {"f1": f1s, "seconds": secs}
        print(f"  {m:<17} {np.mean(f1s):.4f} ± {np.std(f1s, ddof=1):.4f}  {np.mean(secs):10.2f}   "
              f"{' '.join(f'{v:.3f}' for v in f1s)}", flush=True)
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None,
                    help="folder holding openml/<name>/<name>.csv and sklearn_toy/ "
                         "(default ../shared/data beside the repository)")
    ap.add_argument("--datasets", default=None,
                    help="comma-separated names (default: all five; --quick: " + ",".join(QUICK_DATASETS) + ")")
    ap.add_argument("--folds", type=int, default=None, help="default 5 (--quick: 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS),
                    help=f"comma-separated, from {','.join(MODELS)} (default {','.join(DEFAULT_MODELS)})")
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke run (under a minute): GRANDE trains {QUICK_EPOCHS} epochs, 2 folds, the "
                         f"two smallest tables, one thread per library")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS and OpenMP threads during each fit (default: unchanged; --quick: 1)")
    ap.add_argument("--epochs", type=int, default=None, help="GRANDE epochs (default: its own)")
    ap.add_argument("--n-estimators", type=int, default=None,
                    help="GRANDE trees (default: its own)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    ap.add_argument("--plot", metavar="DIR", help="write DIR/f1_per_dataset.png, macro-F1 per "
                    "dataset and model (DIR is created; needs matplotlib)")
    args = ap.parse_args(argv)
    if args.datasets is None:
        args.datasets = ",".join(QUICK_DATASETS if args.quick else OPENML + TOY)
    if args.folds is None:
        args.folds = 2 if args.quick else 5
    if args.threads is None and args.quick:
        args.threads = 1
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads {args.threads}: need at least 1")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in args.models if m not in MODELS]
    if bad or not args.models:
        ap.error(f"--models: unknown {bad}; choose from {', '.join(MODELS)}")
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    bad = [d for d in args.datasets if d not in OPENML + TOY]
    if bad or not args.datasets:
        ap.error(f"--datasets: unknown {bad}; choose from {', '.join(OPENML + TOY)}")
    if args.folds < 2:
        ap.error(f"--folds {args.folds}: need at least 2")
    if args.plot:
        from nograd.plotting import plot_dir

        try:
            args.plot = plot_dir(args.plot)
        except (ImportError, ValueError, TypeError) as e:
            ap.error(str(e))
    return args


def main(argv=None):
    args = parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    record = {"bench": "grande_tabular", "folds": args.folds, "seed": args.seed,
              "quick": args.quick, "threads": args.threads, "data_dir": data_dir}
    present = [d for d in args.datasets if os.path.isfile(dataset_path(data_dir, d))]
    for d in args.datasets:
        if d not in present:
            print(f"note: {d}: {dataset_path(data_dir, d)} not found; skipped", file=sys.stderr)
    if not present:
        print(f"no dataset found under {data_dir}; nothing to benchmark (see --data-dir)")
        if args.json:
            print(json.dumps({**record, "skipped": f"no dataset found under {data_dir}"}))
        return 0
    models, dropped = available_models(args.models)
    for m, why in dropped:
        print(f"note: model {m} skipped: {why}", file=sys.stderr)
    if not models:
        print("none of the requested models can run here")
        if args.json:
            print(json.dumps({**record, "skipped": "no model available",
                              "dropped": dict(dropped)}))
        return 0
    results = {}
    for d in present:
        X, y, cat = load(data_dir, d)
        counts = "/".join(str(c) for c in np.bincount(y))
        print(f"\n{d}: {X.shape[0]} rows, {X.shape[1]} features ({len(cat)} categorical), "
              f"{int(np.isnan(X).sum())} missing cells, classes {counts}; "
              f"{args.folds}-fold stratified CV, seed {args.seed}")
        print(f"  {'model':<17} {'macro-F1 ± std':<17} {'fit s/fold':>10}   per fold", flush=True)
        results[d] = run_dataset(d, X, y, cat, models, args)
    f1 = {d: {m: round(float(np.mean(r[m]["f1"])), 4) for m in models} for d, r in results.items()}
    f1_std = {d: {m: round(float(np.std(r[m]["f1"], ddof=1)), 4) for m in models}
              for d, r in results.items()}
    fit = {d: {m: round(float(np.mean(r[m]["seconds"])), 3) for m in models}
           for d, r in results.items()}
    mean_f1 = {m: round(float(np.mean([f1[d][m] for d in f1])), 4) for m in models}
    slowest = (round(max(max(r[m]["seconds"]) for r in results.values() for m in models
                         if m.startswith("grande")), 3)
               if any(m.startswith("grande") for m in models) else None)
    w = max(len(d) for d in f1)
    print(f"\nmacro-F1, mean over {args.folds} folds (fit seconds per fold)")
    print(f"{'dataset':<{w}} " + " ".join(f"{m:>17}" for m in models))
    for d in f1:
        print(f"{d:<{w}} " + " ".join(f"{f1[d][m]:>8.4f} ({fit[d][m]:>6.2f})" for m in models))
    print(f"{'mean':<{w}} " + " ".join(f"{mean_f1[m]:>8.4f}{'':9}" for m in models))
    if args.plot:
        from nograd.plotting import grouped_bars

        path = grouped_bars(f1, os.path.join(args.plot, "f1_per_dataset.png"), errors=f1_std,
                            ylabel=f"macro-F1 (mean ± std over {args.folds} folds)", ylim=(0, 1),
                            title=f"GRANDE and scikit-learn ensembles, {args.folds}-fold stratified "
                                  f"CV, seed {args.seed}" + (" (--quick)" if args.quick else ""))
        print(f"figure: {path}")
    if args.json:
        print(json.dumps({**record, "datasets": list(f1), "models": models, "f1": f1,
                          "f1_std": f1_std, "fit_seconds": fit, "mean_f1": mean_f1,
                          "max_fit_seconds_per_fold": slowest,
                          "fold_f1": {d: {m: [round(v, 4) for v in r[m]["f1"]] for m in models}
                                      for d, r in results.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
