"""DiabetesNet on the Pima Indians Diabetes data: the paper's protocol, the leak alone, and the honest one.

    python examples/diabetesnet.py [PATH] [--epochs 50] [--cv 5] [--seed 0] [--repeats 1]
                                   [--max-epochs 1000] [--json]

Zhang et al. (2024, "DiabetesNet: A Deep Learning Approach to Diabetes Diagnosis", arXiv:2403.07483)
train an MLP — Linear → sigmoid → BatchNorm three times (64, 32, 16 units), then Linear → sigmoid
(2 outputs), softmax cross-entropy, Adam 1e-3, batches of 16 — and report accuracy 0.8981 (97 of
108 test rows), sensitivity 0.8929 and specificity 0.9038 on Pima. Their notebook (nograd issue #19,
item 10) resamples the majority class with replacement down to the minority's size on the whole
table, splits it once 80/20 (random_state 0) and stops at the first epoch whose *test* accuracy
reaches 0.89: copies of one patient sit on both sides of the split, and the test set picks the epoch.

This script runs the same network (``nograd.models.DiabetesNet``) under three protocols
(``nograd.estimators.tabular.evaluate_protocol``):

1. paper: their procedure exactly, one split per seed (the stopping rule waits at most
   ``--max-epochs``); and their split with a fixed ``--epochs`` instead of the stopping rule;
2. leaky: 5-fold stratified cross-validation of the table re-balanced first (the leak alone);
3. honest: 5-fold stratified cross-validation; imputation, standardisation and re-balancing fitted
   on the training folds only, the test fold as recorded.

Leaky and honest each run with three re-balancing methods — random under-sampling of the majority
with replacement (the paper's), random over-sampling of the minority, SMOTE — and beside them a
logistic regression (a single nograd Linear layer trained with backprop) on the same folds. GRANDE
(Marton et al. 2024; ``nograd.GrandeClassifier`` with its defaults, which weight the classes
'balanced') gets two rows (``--no-grande`` drops them): honest without re-balancing, and leaky with
over-sampling — trees can memorise the copied rows.

The data: PATH (default ../shared/data/pima_diabetes/pima-indians-diabetes.csv beside the repo),
768 rows, no header, 8 features then the class (1 = diabetes, 268 rows; 0 = 500 rows). For the
cross-validated rows a zero glucose, blood pressure, skin fold, insulin or BMI is not a measurement
(no one alive has a BMI of 0): the .names file says the data has missing values, and these zeros
are they — 652 of them, 374 in insulin alone. They are read as missing and filled with the training
fold's median of that column (the test fold gets the training medians too). Zero pregnancies is a
real value and stays. The paper protocol uses the table as recorded, as the paper does.
"""
import argparse
import json
import os
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")       # tiny matrices: BLAS threads only fight for the cores

import numpy as np  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from nograd.data import cross_validate, load_csv, zeros_as_missing  # noqa: E402
from nograd.estimators.tabular import PAPER_PIMA, evaluate_protocol, make_fit_predict  # noqa: E402

DEFAULT = os.path.join(ROOT, "..", "shared", "data", "pima_diabetes", "pima-indians-diabetes.csv")
COLUMNS = ["pregnancies", "glucose", "blood_pressure", "skin_fold", "insulin", "bmi", "pedigree",
           "age"]
ZERO_MEANS_MISSING = [1, 2, 3, 4, 5]            # glucose, blood pressure, skin fold, insulin, BMI
PAPER = {m: PAPER_PIMA[m] for m in ("accuracy", "sensitivity", "specificity")}
METRICS = ("accuracy", "sensitivity", "specificity", "macro_f1", "roc_auc")
BALANCES = (("none", None), ("under", {"replace": True}), ("over", None), ("smote", None))


def grande_fit_predict(X_train, y_train, X_test, *, rng=None):
    """GRANDE with its defaults, seeded from the fold's generator; class probabilities out."""
    from nograd import GrandeClassifier

    seed = int(np.random.default_rng(rng).integers(2**31))
    return GrandeClassifier(random_state=seed).fit(X_train, y_train).predict_proba(X_test)


def run(X, y, model, balance, options, leaky, args):
    """Cross-validate one configuration ``--repeats`` times (seeds seed, seed + 1, ...); the mean
    and std are over all folds of all repeats."""
    if model == "grande":
        fp = grande_fit_predict
    else:
        fp = make_fit_predict(model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    t0 = time.perf_counter()
    folds = []
    for rep in range(args.repeats):
        folds += cross_validate(X, y, fp, k=args.cv, balance=balance, balance_options=options,
                                rng=args.seed + rep, impute="median",
                                balance_before_split=leaky)["folds"]
    table = {m: np.array([f[m] for f in folds]) for m in METRICS}
    return {"model": model, "balance": balance, "protocol": "leaky" if leaky else "honest",
            "mean": {m: round(float(v.mean()), 4) for m, v in table.items()},
            "std": {m: round(float(v.std(ddof=1)), 4) for m, v in table.items()},
            "test_in_train": round(float(np.mean([f["test_in_train"] for f in folds])), 4),
            "n_train": folds[0]["n_train"], "n_test": folds[0]["n_test"],
            "seconds": round(time.perf_counter() - t0, 1)}


def paper_protocol(X, y, args):
    """The authors' procedure once per seed (their resampling draw, weights and batch order), with
    the stopping rule and, on the same split, with a fixed ``--epochs`` instead."""
    out = {"stopped": [], "fixed": []}
    for rep in range(args.repeats):
        seed = args.seed + rep
        for key, stop in (("stopped", 0.89), ("fixed", None)):
            r = evaluate_protocol(X, y, protocol="paper", seed=seed, stop_at=stop,
                                  epochs=args.epochs, max_epochs=args.max_epochs,
                                  batch_size=args.batch_size, lr=args.lr)
            acc = r["test_accuracy"]
            best = int(np.argmax(acc))
            out[key].append({"seed": seed, "epoch": r["epoch"], "stopped": r["stopped"],
                             "mean": {m: round(v, 4) for m, v in r["mean"].items()},
                             "best_test_accuracy": round(acc[best], 4), "best_epoch": best + 1,
                             "n_train": r["n_train"], "n_test": r["n_test"],
                             "test_in_train": round(r["test_in_train"], 4),
                             "seconds": round(r["seconds"], 1)})
            print(f"  ran paper  diabetesnet seed {seed} "
                  f"{'stop at 0.89' if stop else f'{args.epochs} epochs'} "
                  f"({r['seconds']:.1f} s)", file=sys.stderr, flush=True)
    return out


def side_by_side(paper, by, args):
    """Print and return DiabetesNet's accuracy, sensitivity and specificity under the paper's
    protocol, the leak alone (their split with fixed epochs; leaky CV) and the honest CV, all with
    the paper's re-balancing (the majority drawn with replacement)."""
    def mean_of(runs, key="mean"):
        return {m: round(float(np.mean([r[key][m] for r in runs])), 4) for m in PAPER}

    stopped = paper["stopped"]
    lines = [(f"paper protocol: stop at test accuracy >= 0.89 (else after {args.max_epochs} epochs)",
              mean_of(stopped)),
             ("  best test accuracy over all epochs (the most the rule can report)",
              {"accuracy": round(float(np.mean([r["best_test_accuracy"] for r in stopped])), 4)}),
             (f"leak alone: their split, {args.epochs} epochs, no stopping rule",
              mean_of(paper["fixed"])),
             (f"leak alone: {args.cv}-fold CV, re-balanced before the split",
              by[("leaky", "diabetesnet", "under")]["mean"]),
             (f"honest: {args.cv}-fold CV, re-balanced inside the training folds",
              by[("honest", "diabetesnet", "under")]["mean"]),
             ("paper, as reported", PAPER)]
    print("\nDiabetesNet under the paper's protocol, the leak alone and the honest protocol "
          "(majority resampled with replacement in all):")
    print(f"{'':<70}{'accuracy':>9}{'sens.':>8}{'spec.':>8}")
    for name, vals in lines:
        print(f"{name:<70}" + "".join(f"{vals[m]:>9.4f}" if m in vals else f"{'':>9}"
                                      for m in PAPER))
    for r in stopped:
        how = (f"reached at epoch {r['epoch']}" if r["stopped"] else
               f"never reached in {r['epoch']} epochs; best {r['best_test_accuracy']:.4f} at "
               f"epoch {r['best_epoch']}")
        print(f"  seed {r['seed']}: {r['n_train']} train / {r['n_test']} test rows, "
              f"{r['test_in_train']:.0%} of test rows copied in training; 0.89 {how}")
    return [{"protocol": name.strip(), **vals} for name, vals in lines]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", help="the Pima CSV (default: %(default)s)")
    ap.add_argument("--data", help="the Pima CSV, as a flag (same as PATH)")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--cv", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1,
                    help="repeat each cross-validation with seeds seed, seed+1, ... and pool the "
                         "folds (the leaky under-sampling row varies a lot between draws)")
    ap.add_argument("--max-epochs", type=int, default=1000,
                    help="the most epochs the paper's stopping rule waits for a test accuracy of "
                         "0.89 (default 1000)")
    ap.add_argument("--no-grande", action="store_true", help="leave out the two GRANDE rows")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    args = ap.parse_args(argv)
    path = args.data or args.path or DEFAULT
    if not os.path.isfile(path):
        ap.exit(2, f"{ap.prog}: error: no data at {path}; pass the path of "
                   f"pima-indians-diabetes.csv (768 rows, 9 columns, no header)\n")
    X, y = load_csv(path, target=-1, header=False)
    if X.shape[1] != 8 or len(np.unique(y)) != 2:
        ap.exit(2, f"{ap.prog}: error: {path} has {X.shape[1]} features and {len(np.unique(y))} "
                   f"classes; expected the Pima table (8 features, 2 classes)\n")
    zeros = (X[:, ZERO_MEANS_MISSING] == 0).sum(axis=0)
    print(f"Pima Indians Diabetes: {len(y)} rows, class 1 (diabetes) {int(y.sum())}, "
          f"class 0 {int((y == 0).sum())}")
    print("zeros read as missing: " + ", ".join(f"{COLUMNS[c]} {z}" for c, z in
                                                 zip(ZERO_MEANS_MISSING, zeros))
          + f" ({int(zeros.sum())} cells), filled with the training fold's medians")
    seeds = f"seed {args.seed}" if args.repeats == 1 else \
        f"seeds {args.seed}..{args.seed + args.repeats - 1} pooled"
    print(f"{args.cv}-fold stratified CV, {seeds}; DiabetesNet 8-[64-32-16 sigmoid, batch norm]-2 "
          f"sigmoid, Adam lr {args.lr:g}, {args.epochs} epochs, batch {args.batch_size}\n")
    paper = paper_protocol(X, y, args)
    X = zeros_as_missing(X, ZERO_MEANS_MISSING)

    rows = []
    for leaky in (False, True):
        for model in ("diabetesnet", "logistic"):
            for balance, options in BALANCES:
                if leaky and balance == "none":
                    continue
                rows.append(run(X, y, model, balance, options, leaky, args))
                r = rows[-1]
                print(f"  ran {r['protocol']:<6} {r['model']:<11} {r['balance']:<5} "
                      f"({r['seconds']:.1f} s)", file=sys.stderr, flush=True)
        if not args.no_grande:
            balance = "over" if leaky else "none"
            rows.append(run(X, y, "grande", balance, None, leaky, args))
            print(f"  ran {rows[-1]['protocol']:<6} grande      {balance:<5} "
                  f"({rows[-1]['seconds']:.1f} s)", file=sys.stderr, flush=True)

    head = (f"{'protocol':<8} {'model':<11} {'balance':<7}" + "".join(f"{m:>16}" for m in METRICS)
            + f"{'copies':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['protocol']:<8} {r['model']:<11} {r['balance']:<7}"
              + "".join(f"{r['mean'][m]:>9.4f} ±{r['std'][m]:.3f}" for m in METRICS)
              + f"{r['test_in_train']:>8.0%}")
    print(f"{'paper':<8} {'diabetesnet':<11} {'under':<7}"
          + "".join(f"{PAPER[m]:>9.4f}       " if m in PAPER else f"{'-':>9}       "
                    for m in METRICS))
    if not args.no_grande:
        print("grande: nograd.GrandeClassifier with its defaults (256 trees of depth 5, classes "
              "weighted 'balanced', early stopping on 20 % of the training fold)")
    print("balance 'under' resamples the majority class with replacement to the minority's size; "
          "'copies' is the share of test rows with an exact copy in the training fold (SMOTE leaks "
          "by interpolation instead, so it shows none).")

    print("\nhow much of the paper's figure the leak explains (DiabetesNet, same balancing):")
    print(f"{'balance':<7} {'metric':<12} {'honest':>7} {'leaky':>7} {'paper':>7} {'leak':>7} "
          f"{'share of gap':>13}")
    leak = {}
    by = {(r["protocol"], r["model"], r["balance"]): r for r in rows}
    for balance, _ in BALANCES[1:]:
        h, lk = by[("honest", "diabetesnet", balance)], by[("leaky", "diabetesnet", balance)]
        leak[balance] = {}
        for m in PAPER:
            gain, gap = lk["mean"][m] - h["mean"][m], PAPER[m] - h["mean"][m]
            share = gain / gap if gap > 0 else float("nan")
            leak[balance][m] = {"honest": h["mean"][m], "leaky": lk["mean"][m],
                                "gain": round(gain, 4), "share_of_gap": round(share, 3)}
            print(f"{balance:<7} {m:<12} {h['mean'][m]:>7.4f} {lk['mean'][m]:>7.4f} {PAPER[m]:>7.4f} "
                  f"{gain:>+7.4f} {share:>12.0%}")
    print("\n'leak' is leaky minus honest; 'share of gap' is that gain over (paper - honest): the part "
          "of the paper's margin over an honest estimate that balancing before the split produces "
          "here by itself.")
    side = side_by_side(paper, by, args)
    if args.json:
        print(json.dumps({"data": os.path.basename(path), "seed": args.seed,
                          "repeats": args.repeats, "cv": args.cv, "epochs": args.epochs,
                          "max_epochs": args.max_epochs, "paper": PAPER, "results": rows,
                          "leak": leak, "paper_protocol": paper, "side_by_side": side}))


if __name__ == "__main__":
    main()
