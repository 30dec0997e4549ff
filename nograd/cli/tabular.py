"""The tabular commands: ``diabetes`` (binary classifiers evaluated under one of three protocols:
cross-validated with class re-balancing inside the training folds — the default —, re-balanced
before the split, or the DiabetesNet paper's own procedure) and ``grande`` (GRANDE hard
decision-tree ensembles on a CSV).

Both read ``--data csv:PATH`` through :func:`nograd.data.load_csv`; a malformed table, a target with
the wrong number of classes or impossible folds is a one-line UserError (exit status 2), and a run
that turns NaN/inf leaves with exit status 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .common import (OPTIMIZERS, UserError, add_non_numeric, add_threads, cli_wording, exit_diverged,
                     fraction, positive_float, positive_int, target, user_errors)


# --------------------------------------------------------------------------- diabetes
def zero_columns(spec, info):
    """Sorted feature indices named by ``--zeros-missing`` (``spec``, comma-separated): header names,
    or column numbers for a file without a header (``info`` as :func:`nograd.data.load_csv` returns
    it). Naming the target, an unknown column, or nothing is a UserError."""
    names = info["feature_names"]
    picked = []
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        name = token
        if token.lstrip("-").isdigit():
            if info["header"]:
                raise UserError(f"--zeros-missing {token}: the file has a header, so name the "
                                f"columns ({', '.join(names)})")
            name = f"col{int(token)}"
        if name == info["target_name"]:
            raise UserError(f"--zeros-missing {token}: that is the target column")
        if name not in names:
            raise UserError(f"--zeros-missing {token}: no such feature column; features: "
                            f"{', '.join(names)}")
        picked.append(names.index(name))
    if not picked:
        raise UserError("--zeros-missing is empty; give column names or numbers separated by commas")
    return sorted(set(picked))


def accuracy_or_none(s):
    """``--stop-at``: an accuracy in (0, 1], or ``none`` for no stopping rule."""
    if s.strip().lower() == "none":
        return None
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an accuracy in (0, 1] or none, got {s!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be an accuracy in (0, 1] or none, got {s}")
    return v


def _protocol(args):
    """The protocol and re-balancing method that ``--protocol``, ``--leaky`` and ``--balance`` ask
    for, or a UserError when they contradict each other."""
    protocol = args.protocol
    if args.leaky:
        if protocol == "paper":
            raise UserError("--leaky and --protocol paper contradict each other; give one")
        protocol = "leaky"
    flag = "--leaky" if args.leaky else f"--protocol {protocol}"
    if protocol == "paper":
        if args.balance not in (None, "under"):
            raise UserError(f"--protocol paper resamples as the paper does (the majority class with "
                            f"replacement, on the whole table); leave out --balance {args.balance}")
        return protocol, "under"
    balance = args.balance or "none"
    if protocol == "leaky" and balance == "none":
        raise UserError(f"{flag} re-balances before the split; give --balance under, over or smote")
    if args.replace and balance != "under":
        raise UserError("--replace applies to --balance under only")
    return protocol, balance


def cmd_diabetes(args, out=None):
    """``diabetes``: evaluate a binary tabular classifier trained with backprop under
    ``--protocol``: ``honest`` (default) and ``leaky`` are stratified k-fold cross-validation
    (:func:`nograd.data.cross_validate` with :func:`nograd.estimators.tabular.make_fit_predict`),
    re-balancing inside the training folds or before the split; ``paper`` is the DiabetesNet
    authors' procedure (:func:`nograd.estimators.tabular.evaluate_protocol`). A table of accuracy,
    sensitivity, specificity, macro-F1 and ROC-AUC, mean ± std and per fold for cross-validation
    (or one JSON object). Returns the summary."""
    out = sys.stdout if out is None else out
    import numpy as np

    from ..data import cross_validate, load_csv, zeros_as_missing
    from ..estimators.tabular import make_fit_predict

    if not args.data.startswith("csv:") or len(args.data) == 4:
        raise UserError(f"--data {args.data}: diabetes evaluates a CSV table; give csv:PATH")
    if args.cv < 2:
        raise UserError(f"--cv {args.cv}: cross-validation needs at least 2 folds")
    protocol, balance = _protocol(args)
    path = args.data[4:]
    try:
        X, y, info = load_csv(path, target=args.target, missing=args.missing,
                              non_numeric=args.non_numeric, return_info=True)
    except (ValueError, TypeError) as e:
        raise UserError(cli_wording(str(e))) from None
    if len(info["classes"]) != 2:
        raise UserError(f"target {info['target_name']!r} of {os.path.basename(path)} has "
                        f"{len(info['classes'])} classes ({', '.join(map(str, info['classes'][:10]))}); "
                        f"diabetes evaluates a binary classifier (sensitivity, specificity, ROC-AUC) "
                        f"and needs exactly two")
    impute, holes = None, 0
    if args.zeros_missing:
        cols = zero_columns(args.zeros_missing, info)
        X = zeros_as_missing(X, cols)
        holes = int(np.isnan(X).sum())
        impute = "median"
    if protocol == "paper":
        return _paper(args, X, y, info, impute, holes, out)
    fit_predict = user_errors(lambda: make_fit_predict(args.model, epochs=args.epochs,
                                                       batch_size=args.batch_size, lr=args.lr,
                                                       optimizer=args.optimizer))
    t0 = time.perf_counter()
    try:
        result = cross_validate(X, y, fit_predict, k=args.cv, balance=balance, rng=args.seed,
                                impute=impute, balance_before_split=protocol == "leaky",
                                balance_options={"replace": True} if args.replace else None)
    except FloatingPointError as e:
        exit_diverged("diabetes", e)
    except (ValueError, TypeError) as e:
        raise UserError(f"{os.path.basename(path)}, target {info['target_name']!r}: {e}") from None
    seconds = time.perf_counter() - t0
    classes = info["classes"]
    summary = {"command": "diabetes", "model": args.model, "data": args.data,
               "target": info["target_name"], "positive_class": classes[1] if len(classes) > 1 else None,
               "balance": balance, "protocol": result["protocol"], "cv": args.cv,
               "seed": args.seed, "epochs": args.epochs, "batch_size": args.batch_size,
               "lr": args.lr, "optimizer": args.optimizer, "n": int(len(y)),
               "imputed_zeros": holes, "seconds": round(seconds, 2)}
    for m, v in result["mean"].items():
        summary[m] = round(v, 4)
    summary["std"] = {m: round(v, 4) for m, v in result["std"].items()}
    summary["folds"] = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in f.items()}
                        for f in result["folds"]]
    if args.json:
        print(json.dumps(summary), file=out)
        return summary
    counts = np.bincount(y, minlength=2)
    where = "before the split (LEAKY)" if protocol == "leaky" else "on the training folds only"
    print(f"{args.model} on {os.path.basename(path)}: {len(y)} rows, {X.shape[1]} features; target "
          f"{info['target_name']!r}, positive class {classes[-1]!r} ({counts[-1]}) vs "
          f"{classes[0]!r} ({counts[0]})", file=out)
    print(f"{args.cv}-fold stratified cross-validation, seed {args.seed}; balance {balance} "
          f"{where}; {args.epochs} epochs, batch {args.batch_size}, {args.optimizer} lr {args.lr:g}"
          + (f"; {holes} zeros read as missing, filled with training-fold medians" if holes else ""),
          file=out)
    if protocol == "leaky":
        print("warning: copies or interpolations of test samples sit in the training folds; these "
              "scores measure the leak, not diagnosis", file=out)
    print(f"{'metric':<12} {'mean':>7} {'± std':>8}   per fold", file=out)
    for m in result["mean"]:
        per = " ".join(f"{f[m]:.3f}" for f in result["folds"])
        print(f"{m:<12} {result['mean'][m]:>7.4f} {result['std'][m]:>8.4f}   {per}", file=out)
    print(f"{seconds:.1f} s", file=out)
    return summary


def _paper(args, X, y, info, impute, holes, out):
    """``diabetes --protocol paper``: one run of the authors' procedure; prints it (or one JSON
    object) and returns the summary."""
    from ..estimators.tabular import evaluate_protocol

    path = args.data[4:]
    try:
        res = evaluate_protocol(X, y, protocol="paper", model=args.model, epochs=args.epochs,
                                batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                                impute=impute, seed=args.seed, stop_at=args.stop_at,
                                max_epochs=args.max_epochs)
    except FloatingPointError as e:
        exit_diverged("diabetes", e)
    except (ValueError, TypeError) as e:
        raise UserError(f"{os.path.basename(path)}, target {info['target_name']!r}: {e}") from None
    classes = info["classes"]
    summary = {"command": "diabetes", "model": args.model, "data": args.data,
               "target": info["target_name"], "positive_class": classes[1], "balance": "under",
               "protocol": "paper", "seed": args.seed, "batch_size": args.batch_size,
               "lr": args.lr, "optimizer": args.optimizer, "n": int(len(y)),
               "imputed_zeros": holes, "seconds": round(res["seconds"], 2)}
    for m, v in res["mean"].items():
        summary[m] = round(v, 4)
    summary["n_resampled"] = res["n"]
    for key in ("epoch", "stopped", "stop_at", "n_train", "n_test", "test_positives"):
        summary[key] = res[key]
    summary["test_in_train"] = round(res["test_in_train"], 4)
    summary["test_accuracy"] = [round(a, 4) for a in res["test_accuracy"]]
    if args.json:
        print(json.dumps(summary), file=out)
        return summary
    acc = res["test_accuracy"]
    best = max(range(len(acc)), key=acc.__getitem__)
    print(f"{args.model} on {os.path.basename(path)}: {len(y)} rows; target {info['target_name']!r}, "
          f"positive class {classes[-1]!r}", file=out)
    print(f"paper protocol (Zhang et al. 2024): the majority class resampled with replacement to "
          f"the minority's size on the whole table ({res['n']} rows), standardised, one shuffled "
          f"80/20 split (random_state 0): {res['n_train']} train / {res['n_test']} test "
          f"({res['test_positives']} positive); batch {args.batch_size}, {args.optimizer} lr "
          f"{args.lr:g}, seed {args.seed}", file=out)
    if res["stop_at"] is None:
        print(f"no stopping rule: {res['epoch']} epochs", file=out)
    elif res["stopped"]:
        print(f"stopped after the first epoch whose test accuracy reached {res['stop_at']:g}: "
              f"epoch {res['epoch']}", file=out)
    else:
        print(f"no epoch in {res['epoch']} reached test accuracy {res['stop_at']:g} (the paper "
              f"stops after the first epoch whose test accuracy does); best {acc[best]:.4f} at "
              f"epoch {best + 1}", file=out)
    chose = " and the test accuracy decides when training stops" if res["stop_at"] is not None else ""
    print(f"warning: {res['test_in_train']:.0%} of the test rows have a copy among the training "
          f"rows{chose}; this reproduces the paper's figure, it does not estimate diagnosis",
          file=out)
    for m, v in res["mean"].items():
        print(f"{m:<12} {v:>7.4f}", file=out)
    print(f"{res['seconds']:.1f} s", file=out)
    return summary


# --------------------------------------------------------------------------- grande
def cmd_grande(args, out=None):
    """``grande``: fit :class:`GrandeClassifier` (Marton et al., ICLR 2024) on a CSV, per fold of
    stratified ``--cv K`` or on one stratified split of ``--test-size``; a line per fold (macro-F1,
    accuracy, fit seconds) and their means ± sample std (or one JSON object). Text columns are
    passed as categorical features, missing cells stay NaN. Returns the summary."""
    out = sys.stdout if out is None else out
    import numpy as np

    from ..data import load_csv, stratified_indices, stratified_kfold
    from ..metrics import accuracy, macro_f1

    if not args.data.startswith("csv:") or len(args.data) == 4:
        raise UserError(f"--data {args.data}: grande fits a CSV table; give csv:PATH")
    if args.cv is not None and args.cv < 2:
        raise UserError(f"--cv {args.cv}: cross-validation needs at least 2 folds (leave --cv out "
                        f"for one stratified split of --test-size)")
    path = args.data[4:]
    try:
        X, y, info = load_csv(path, target=args.target, categorical="codes", missing="nan",
                              non_numeric=args.non_numeric, dtype=np.float64, return_info=True)
    except (ValueError, TypeError) as e:
        raise UserError(cli_wording(str(e))) from None
    classes = info["classes"]
    if len(classes) < 2:
        raise UserError(f"target {info['target_name']!r} of {os.path.basename(path)} has one class "
                        f"({classes[0]!r}); a classifier needs at least two")
    names = info["feature_names"]
    cat_cols = sorted(names.index(c) for c in info["categorical"])
    try:
        splits = (stratified_kfold(y, args.cv, rng=args.seed) if args.cv is not None
                  else [stratified_indices(y, args.test_size, rng=args.seed)])
    except ValueError as e:
        raise UserError(f"{os.path.basename(path)}: {e}") from None
    try:
        from ..estimators.grande import GrandeClassifier
    except ImportError as e:
        raise UserError(f"GRANDE is not available in this installation: {e}") from None
    options = {k: getattr(args, k) for k in ("n_estimators", "depth", "epochs", "batch_size")
               if getattr(args, k) is not None}
    k = len(classes)
    folds = {"macro_f1": [], "accuracy": [], "fit_seconds": []}
    if not args.json:
        holes = int(np.isnan(X).sum())
        how = (f"{args.cv}-fold stratified cross-validation" if args.cv is not None
               else f"one stratified split, test size {args.test_size:g}")
        print(f"GRANDE on {os.path.basename(path)}: {len(y)} rows, {X.shape[1]} features "
              f"({len(cat_cols)} categorical), {holes} missing cells; target "
              f"{info['target_name']!r} with {k} classes; {how}, seed {args.seed}", file=out)
    for f, (tr, te) in enumerate(splits):
        try:
            model = GrandeClassifier(random_state=args.seed,
                                     categorical_features=cat_cols or None, **options)
            t0 = time.perf_counter()
            model.fit(X[tr], y[tr])
            seconds = time.perf_counter() - t0
            pred = np.asarray(model.predict(X[te]))
        except FloatingPointError as e:
            exit_diverged("grande", f"fold {f + 1}: {e}")
        except (ValueError, TypeError) as e:
            raise UserError(f"{os.path.basename(path)}, fold {f + 1}: {e}") from None
        folds["macro_f1"].append(macro_f1(y[te], pred, k))
        folds["accuracy"].append(accuracy(y[te], pred))
        folds["fit_seconds"].append(seconds)
        if not args.json:
            print(f"fold {f + 1}/{len(splits)}  macro-F1 {folds['macro_f1'][-1]:.4f}  accuracy "
                  f"{folds['accuracy'][-1]:.4f}  fit {seconds:.2f} s  ({len(tr)} train / "
                  f"{len(te)} test)", file=out, flush=True)
    summary = {"command": "grande", "data": args.data, "target": info["target_name"],
               "classes": classes, "n": len(y), "n_features": int(X.shape[1]),
               "categorical_features": [names[j] for j in cat_cols], "cv": args.cv,
               "test_size": None if args.cv is not None else args.test_size, "seed": args.seed,
               "options": options}
    for m, v in folds.items():
        summary[m] = round(float(np.mean(v)), 4)
    for m, v in folds.items():
        summary[f"{m}_std"] = round(float(np.std(v, ddof=1)), 4) if len(v) > 1 else 0.0
        summary[f"fold_{m}"] = [round(float(x), 4) for x in v]
    if args.json:
        print(json.dumps(summary), file=out)
        return summary
    if len(splits) > 1:
        print(f"mean  macro-F1 {summary['macro_f1']:.4f} ± {summary['macro_f1_std']:.4f}  accuracy "
              f"{summary['accuracy']:.4f} ± {summary['accuracy_std']:.4f}  fit "
              f"{summary['fit_seconds']:.2f} s per fold", file=out)
    return summary


# --------------------------------------------------------------------------- parsers
def add_diabetes(sub):
    """The ``diabetes`` sub-parser."""
    dn = sub.add_parser("diabetes", help="cross-validate a binary classifier on a CSV (DiabetesNet "
                                         "by default); mean ± std of five metrics",
                        description="Stratified k-fold cross-validation of a tabular binary "
                                    "classifier trained with backprop: accuracy, sensitivity, "
                                    "specificity, macro-F1 and ROC-AUC, mean ± std over folds. "
                                    "Imputation, standardisation and re-balancing are fitted on "
                                    "each training fold; the test fold is never re-balanced. "
                                    "--protocol leaky and paper reproduce leaky procedures to "
                                    "measure them.")
    dn.add_argument("--data", required=True, metavar="csv:PATH", help="the table (plain or gzip CSV)")
    dn.add_argument("--target", type=target, default=-1, metavar="COL",
                    help="class column: a header name or an index (default -1, the last column); "
                         "two classes, the second in sorted order is the positive one")
    dn.add_argument("--protocol", choices=("honest", "leaky", "paper"), default="honest",
                    help="honest (default): re-balance inside the training folds; leaky: "
                         "re-balance the whole table, then split; paper: the DiabetesNet paper's "
                         "procedure (majority resampled with replacement on the whole table, one "
                         "80/20 split with random_state 0, stop at the first epoch whose test "
                         "accuracy reaches --stop-at)")
    dn.add_argument("--balance", choices=("none", "under", "over", "smote"),
                    help="re-balance the training folds: random under-sampling, random "
                         "over-sampling or SMOTE (default none; --protocol paper: the paper's)")
    dn.add_argument("--replace", action="store_true",
                    help="with --balance under: draw the kept samples with replacement")
    dn.add_argument("--cv", type=positive_int, default=5, metavar="K", help="folds (default 5)")
    dn.add_argument("--model", default="diabetesnet",
                    help="a registered model (default diabetesnet; logistic, tabular-mlp, mlp ...)")
    dn.add_argument("--epochs", type=positive_int, default=50)
    dn.add_argument("--batch-size", type=positive_int, default=16,
                    help="default 16, the paper's")
    dn.add_argument("--lr", type=positive_float, default=1e-3, help="learning rate (default 1e-3)")
    dn.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    dn.add_argument("--seed", type=int, default=0,
                    help="seed of the folds, the re-balancing, the initial weights and batch order")
    dn.add_argument("--zeros-missing", metavar="COLS",
                    help="comma-separated feature columns in which 0 means 'not measured' (names; "
                         "numbers for a file without a header); those zeros are filled with the "
                         "training folds' medians")
    dn.add_argument("--missing", choices=("error", "drop"), default="error",
                    help="empty or ?/NA cells in the file: an error (default) or drop those rows")
    add_non_numeric(dn)
    dn.add_argument("--leaky", action="store_true",
                    help="the same as --protocol leaky: re-balance the whole table before "
                         "splitting it, to measure how much that inflates the scores")
    dn.add_argument("--stop-at", type=accuracy_or_none, default=0.89, metavar="ACC",
                    help="--protocol paper: stop after the first epoch whose test accuracy is at "
                         "least ACC (default 0.89, the paper's rule); none trains --epochs epochs")
    dn.add_argument("--max-epochs", type=positive_int, default=1000,
                    help="--protocol paper: the most epochs the stopping rule may wait "
                         "(default 1000)")
    dn.add_argument("--json", action="store_true", help="print one JSON object only")
    add_threads(dn)
    dn.set_defaults(func=cmd_diabetes)


def add_grande(sub):
    """The ``grande`` sub-parser."""
    gr = sub.add_parser("grande", help="fit GRANDE on a CSV; per-fold and mean macro-F1, accuracy, "
                                       "fit seconds",
                        description="GRANDE (Marton et al., ICLR 2024): gradient-based hard "
                                    "decision-tree ensembles. Text columns are categorical (passed "
                                    "to the estimator as categorical_features); missing cells stay "
                                    "NaN for the estimator's imputer. Stratified k-fold "
                                    "cross-validation with --cv K, else one stratified split.")
    gr.add_argument("--data", required=True, metavar="csv:PATH", help="the table (plain or gzip CSV)")
    gr.add_argument("--target", type=target, default=-1, metavar="COL",
                    help="class column: a header name or an index (default -1, the last column)")
    gr.add_argument("--cv", type=int, metavar="K",
                    help="stratified K-fold cross-validation (K >= 2); default: one split")
    gr.add_argument("--test-size", type=fraction, default=0.25, metavar="F",
                    help="test fraction of the single split without --cv (default 0.25)")
    gr.add_argument("--seed", type=int, default=0,
                    help="seed of the folds and of the estimator (random_state; default 0)")
    g2 = gr.add_argument_group("estimator (default: GrandeClassifier's own defaults)")
    g2.add_argument("--n-estimators", type=positive_int, metavar="N", help="trees in the ensemble")
    g2.add_argument("--depth", type=positive_int, help="depth of each tree")
    g2.add_argument("--epochs", type=positive_int, help="training epochs")
    g2.add_argument("--batch-size", type=positive_int)
    add_threads(gr)
    add_non_numeric(gr)
    gr.add_argument("--json", action="store_true",
                    help="print one JSON object only (means, std and per-fold lists)")
    gr.set_defaults(func=cmd_grande)
