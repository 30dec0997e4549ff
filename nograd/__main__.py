"""Command line: ``python -m nograd <command>``.

Commands
--------
compare  train the same model on the same split once per learning rule; print a table
train    train one model with one rule; per-epoch lines, a summary, optional checkpoint and plot
list     the registered models, rules and datasets, one line each
demo     train a small MLP with backprop on a synthetic spiral task and report test accuracy
diabetes cross-validate a binary tabular classifier (DiabetesNet by default) on a CSV, with class
         re-balancing inside the training folds; accuracy, sensitivity, specificity, macro-F1, ROC-AUC
grande   fit GRANDE (gradient-based hard decision-tree ensembles) on a CSV: stratified k-fold or one
         stratified split; macro-F1, accuracy and fit seconds per fold and their means

Every argument error — a bad option, an unknown rule/model/dataset, a missing or malformed file — is
one line on stderr and exit status 2, with no traceback. A run whose loss turns NaN/inf stops with
one line and exit status 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

PROG = "python -m nograd"

MEMORY_HELP = ("peak memory is measured with Python's tracemalloc (NumPy reports its array "
               "allocations to it) from model construction to the end of training: parameters, "
               "optimizer state, activations, gradients and batches, not the dataset; "
               "--no-memory turns the tracing (and its small time overhead) off")


class UserError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s}")
    return v


def _positive_float(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {s!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {s}")
    return v


def _target(s):
    try:
        return int(s)
    except ValueError:
        return s


# --------------------------------------------------------------------------- shared steps
def _load_data(args):
    from .data import load_dataset

    return load_dataset(args.data, data_dir=args.data_dir, target=args.target, seed=args.seed,
                        download=args.download)


def _hyper(rule_cls, args):
    """The rule's defaults, overridden by the options the user gave."""
    hp = rule_cls.hyperparameters()
    if args.optimizer is not None and args.optimizer != hp["optimizer"]:
        hp.pop("optimizer_options", None)     # options of the rule's optimizer do not carry over
    for key in ("optimizer", "lr", "epochs", "batch_size"):
        value = getattr(args, key)
        if value is not None:
            hp[key] = value
    return hp


def _check_writable(path, option):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"{option} {path}: folder {folder} does not exist")


def _run(rule_name, ds, args, *, quiet, log_epochs):
    """Build the model, train it with one rule, evaluate it; returns (summary dict, model, history)."""
    import numpy as np

    from .core.optim import get_optimizer
    from .metrics import count_flops, macro_f1
    from .models import get_model
    from .rules import get_rule
    from .train import EpochLogger, evaluate, fit, predictor

    rule = _setup(lambda: get_rule(rule_name))
    hp = _hyper(type(rule), args)
    _warm_up(rule_name, ds, args, hp)
    trace = not args.no_memory
    if trace:
        import tracemalloc

        was_tracing = tracemalloc.is_tracing()
        if was_tracing:
            tracemalloc.reset_peak()
        else:
            tracemalloc.start()
    try:
        try:
            model = get_model(args.model, ds.input_shape, ds.num_classes,
                              rng=np.random.default_rng(args.seed))
            rule.check_model(model)
            optimizer = get_optimizer(hp["optimizer"], model.params, lr=hp["lr"],
                                      **hp.get("optimizer_options", {}))
        except (ValueError, TypeError) as e:
            raise UserError(f"rule {rule_name}, model {args.model}: {e}") from None
        callbacks = []
        if log_epochs and not quiet:
            every = max(1, hp["epochs"] // 20)
            callbacks.append(EpochLogger(every=every, val_name="test"))
        history = fit(model, rule, optimizer, (ds.X_train, ds.y_train), val=(ds.X_test, ds.y_test),
                      epochs=hp["epochs"], batch_size=hp["batch_size"],
                      rng=np.random.default_rng([args.seed, 1]), callbacks=callbacks,
                      progress=not quiet)
        peak = tracemalloc.get_traced_memory()[1] if trace else None
    finally:
        if trace and not was_tracing:
            tracemalloc.stop()
    predict = predictor(model, rule)        # rule.predict when the rule has one (Forward-Forward)
    test = evaluate(model, ds.X_test, ds.y_test, predict=predict)
    pred = np.concatenate([predict(ds.X_test[i:i + 1024]).argmax(1)
                           for i in range(0, len(ds.X_test), 1024)])
    try:
        flops = count_flops(model, ds.input_shape)["forward"]
    except ValueError:
        flops = None
    summary = {"command": args.command, "rule": rule_name, "model": args.model, "data": ds.name,
               "test_accuracy": round(test["accuracy"], 4),
               "test_macro_f1": round(macro_f1(ds.y_test, pred, ds.num_classes), 4),
               "test_loss": round(test["loss"], 4),
               "train_loss": round(history.last["loss"], 4),
               "train_seconds": round(history.info["train_seconds"], 3),
               "peak_mb": None if peak is None else round(peak / 2 ** 20, 2),
               "optimizer": hp["optimizer"], "lr": hp["lr"], "epochs": len(history),
               "batch_size": hp["batch_size"], "seed": args.seed, "num_params": model.num_params,
               "flops_per_sample": flops, "n_train": len(ds.X_train), "n_test": len(ds.X_test)}
    return summary, model, history


def _warm_up(rule_name, ds, args, hp):
    """One untimed, untraced step on a throwaway model, rule and optimizer, so that one-time costs
    (lazy imports, loading Numba kernels) count neither in the seconds nor in the peak memory."""
    import numpy as np

    from .core.optim import get_optimizer
    from .models import get_model
    from .rules import get_rule

    try:
        model = get_model(args.model, ds.input_shape, ds.num_classes, rng=np.random.default_rng(0))
        rule = get_rule(rule_name)
        rule.check_model(model)
        opt = get_optimizer(hp["optimizer"], model.params, lr=hp["lr"],
                            **hp.get("optimizer_options", {}))
    except (ValueError, TypeError) as e:
        raise UserError(f"rule {rule_name}, model {args.model}: {e}") from None
    n = min(hp["batch_size"], len(ds.X_train))
    grads, _ = rule.grads(model, ds.X_train[:n], ds.y_train[:n], rng=np.random.default_rng(0))
    opt.step(grads)
    model(ds.X_test[:n])


def _setup(fn):
    """Run ``fn``, turning the mistakes a user can make into a one-line UserError."""
    try:
        return fn()
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None


# --------------------------------------------------------------------------- commands
def cmd_train(args, out=None):
    out = sys.stdout if out is None else out
    from .rules import get_rule

    if args.save:
        _check_writable(args.save, "--save")
    from .cli_text import cmd_train_text, is_text

    if is_text(args.data):
        return cmd_train_text(args, out, error=UserError)
    if args.history:
        _check_writable(args.history, "--history")
        if not args.history.endswith((".csv", ".json")):
            raise UserError(f"--history {args.history}: the name must end in .csv or .json")
    if args.plot:
        import importlib.util

        _check_writable(args.plot, "--plot")
        if importlib.util.find_spec("matplotlib") is None:
            raise UserError("--plot needs matplotlib, which is not installed "
                            "(pip install 'nograd[plot]'); nothing was trained")
    ds = _setup(lambda: _load_data(args))
    _setup(lambda: get_rule(args.rule))
    try:
        summary, model, history = _run(args.rule, ds, args, quiet=args.json, log_epochs=True)
    except FloatingPointError as e:
        print(f"{PROG} train: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    if args.save:
        from .core.params import save

        save(model, args.save)
        summary["saved"] = args.save
    if args.history:
        if args.history.endswith(".csv"):
            history.to_csv(args.history)
        else:
            with open(args.history, "w") as f:
                f.write(history.to_json(indent=1))
        summary["history"] = args.history
    if args.plot:
        _plot(history, args.plot, f"{args.rule} · {args.model} · {ds.name}")
        summary["plot"] = args.plot
    if args.json:
        print(json.dumps(summary), file=out)
    else:
        mem = "" if summary["peak_mb"] is None else f", peak {summary['peak_mb']:.1f} MB"
        print(f"{args.rule} {args.model} on {ds.name}: test accuracy {summary['test_accuracy']:.4f} "
              f"(macro-F1 {summary['test_macro_f1']:.4f}) after {summary['epochs']} epochs, "
              f"{summary['train_seconds']:.2f} s{mem}", file=out)
    return summary


def _plot(history, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ep = history["epoch"]
    a1.plot(ep, history["loss"], label="train")
    a1.plot(ep, history["val_loss"], label="test")
    a1.set_xlabel("epoch"), a1.set_ylabel("loss"), a1.legend()
    a2.plot(ep, history["train_accuracy"], label="train")
    a2.plot(ep, history["val_accuracy"], label="test")
    a2.set_xlabel("epoch"), a2.set_ylabel("accuracy"), a2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _rule_names(spec, model_name, ds, seed):
    """The rules to compare: a comma list, or ``all`` (every registered rule that takes the model).

    Named rules are all checked before anything runs: an unknown name, or a rule that cannot train
    the model, is a UserError. ``all`` skips the rules that cannot, and reports them."""
    import numpy as np

    from .models import get_model
    from .rules import available_rules, get_rule

    if spec == "all":
        names = available_rules()
    else:
        names = [s.strip() for s in spec.split(",") if s.strip()]
        if not names:
            raise UserError("--rules is empty; give rule names separated by commas, or 'all'")
        if len(set(names)) != len(names):
            raise UserError(f"--rules repeats a rule: {spec}")
    probe = _setup(lambda: get_model(model_name, ds.input_shape, ds.num_classes,
                                     rng=np.random.default_rng(seed)))
    kept, skipped = [], []
    for name in names:
        rule = _setup(lambda: get_rule(name))
        try:
            rule.check_model(probe)
        except (ValueError, TypeError) as e:
            if spec != "all":
                raise UserError(f"rule {name} cannot train model {model_name}: {e}") from None
            skipped.append((name, str(e)))
            continue
        kept.append(name)
    return kept, skipped


def cmd_compare(args, out=None):
    out = sys.stdout if out is None else out
    ds = _setup(lambda: _load_data(args))
    names, skipped = _rule_names(args.rules, args.model, ds, args.seed)
    for name, why in skipped:
        print(f"{PROG} compare: skipping rule {name}: {why}", file=sys.stderr)
    if not names:
        raise UserError(f"no registered rule can train model {args.model!r}")
    w = max([20] + [len(n) for n in names])
    header = (f"{'rule':<{w}} {'test acc':>8} {'seconds':>8} {'peak MB':>8}  {'optimizer':<9} "
              f"{'lr':>8} {'epochs':>6} {'batch':>5}")
    if not args.json:
        print(f"{args.model} on {ds.name} ({len(ds.X_train)} train / {len(ds.X_test)} test, "
              f"seed {args.seed})", file=out)
        print(header, file=out)
        print("-" * len(header), file=out, flush=True)
    results = []
    for name in names:
        try:
            summary, _, _ = _run(name, ds, args, quiet=args.json, log_epochs=False)
        except FloatingPointError as e:
            print(f"{PROG} compare: rule {name}: {e}", file=sys.stderr)
            summary = {"command": "compare", "rule": name, "model": args.model, "data": ds.name,
                       "error": str(e)}
        results.append(summary)
        if args.json:
            print(json.dumps(summary), file=out, flush=True)
        elif "error" in summary:
            print(f"{name:<{w}} {'diverged':>8}", file=out, flush=True)
        else:
            mem = "-" if summary["peak_mb"] is None else f"{summary['peak_mb']:.1f}"
            print(f"{name:<{w}} {summary['test_accuracy']:>8.4f} {summary['train_seconds']:>8.2f} "
                  f"{mem:>8}  {summary['optimizer']:<9} {summary['lr']:>8g} {summary['epochs']:>6d} "
                  f"{summary['batch_size']:>5d}", file=out, flush=True)
    return results


def _first_line(doc):
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    return text.replace("``", "")


def cmd_list(args, out=None):
    out = sys.stdout if out is None else out
    from .data import available_datasets
    from .models import available_models, model_description
    from .rules import available_rules, get_rule

    for name in available_models():
        print(f"model  {name:<16} {model_description(name)}", file=out)
    for name in available_rules():
        try:
            rule = get_rule(name)
        except TypeError:
            print(f"rule   {name:<16} (needs constructor arguments)", file=out)
            continue
        hp = type(rule).hyperparameters()
        print(f"rule   {name:<16} {_first_line(type(rule).__doc__)} [defaults: {hp['optimizer']}, "
              f"lr {hp['lr']:g}, {hp['epochs']} epochs, batch {hp['batch_size']}]", file=out)
    for name, desc in available_datasets().items():
        print(f"data   {name:<16} {desc}", file=out)


def cmd_demo(args, out=None):
    out = sys.stdout if out is None else out
    import numpy as np

    from .core import Sequential
    from .core.optim import Adam
    from .data import spirals
    from .layers import Linear, ReLU
    from .rules import Backprop

    rng = np.random.default_rng(args.seed)
    X, y = spirals(args.samples, 3, noise=0.15, rng=rng)
    Xt, yt = spirals(200, 3, noise=0.15, rng=rng)
    net = Sequential(Linear(2, args.hidden, rng=rng), ReLU(), Linear(args.hidden, args.hidden, rng=rng),
                     ReLU(), Linear(args.hidden, 3, rng=rng))
    opt = Adam(net.params, lr=args.lr)
    rule = Backprop()
    t0 = time.perf_counter()
    quiet = args.json
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(y))
        losses = []
        for i in range(0, len(y), args.batch_size):
            idx = order[i:i + args.batch_size]
            grads, info = rule.grads(net, X[idx], y[idx], rng=rng)
            opt.step(grads)
            losses.append(info["loss"])
        if not quiet and (epoch % max(1, args.epochs // 10) == 0 or epoch == 1):
            acc = float(np.mean(net(Xt).argmax(1) == yt))
            print(f"epoch {epoch:4d}  loss {np.mean(losses):.4f}  test accuracy {acc:.3f}", file=out)
    seconds = time.perf_counter() - t0
    acc = float(np.mean(net(Xt).argmax(1) == yt))
    summary = {"command": "demo", "data": "spirals", "rule": "backprop", "model": "mlp",
               "epochs": args.epochs, "test_accuracy": round(acc, 4),
               "train_seconds": round(seconds, 2), "seed": args.seed}
    if args.json:
        print(json.dumps(summary), file=out)
    else:
        print(f"backprop MLP on 3-class spirals: test accuracy {acc:.3f} after {args.epochs} epochs "
              f"({seconds:.1f} s)", file=out)
    return summary


def _zero_columns(spec, info):
    """Feature indices named by ``--zeros-missing``: names, or (file without a header) numbers."""
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


def cmd_diabetes(args, out=None):
    out = sys.stdout if out is None else out
    import numpy as np

    from .data import cross_validate, load_csv, zeros_as_missing
    from .models.tabular import make_fit_predict

    if not args.data.startswith("csv:") or len(args.data) == 4:
        raise UserError(f"--data {args.data}: diabetes cross-validates a CSV table; give csv:PATH")
    if args.cv < 2:
        raise UserError(f"--cv {args.cv}: cross-validation needs at least 2 folds")
    if args.leaky and args.balance == "none":
        raise UserError("--leaky re-balances before the split; give --balance under, over or smote")
    if args.replace and args.balance != "under":
        raise UserError("--replace applies to --balance under only")
    path = args.data[4:]
    try:
        X, y, info = load_csv(path, target=args.target, missing=args.missing, return_info=True)
    except (ValueError, TypeError) as e:
        raise UserError(str(e).replace("pass missing='drop'", "pass --missing drop")) from None
    if len(info["classes"]) != 2:
        raise UserError(f"target {info['target_name']!r} of {os.path.basename(path)} has "
                        f"{len(info['classes'])} classes ({', '.join(map(str, info['classes'][:10]))}); "
                        f"diabetes evaluates a binary classifier (sensitivity, specificity, ROC-AUC) "
                        f"and needs exactly two")
    impute, holes = None, 0
    if args.zeros_missing:
        cols = _zero_columns(args.zeros_missing, info)
        X = zeros_as_missing(X, cols)
        holes = int(np.isnan(X).sum())
        impute = "median"
    fit_predict = _setup(lambda: make_fit_predict(args.model, epochs=args.epochs,
                                                  batch_size=args.batch_size, lr=args.lr,
                                                  optimizer=args.optimizer))
    t0 = time.perf_counter()
    try:
        result = cross_validate(X, y, fit_predict, k=args.cv, balance=args.balance, rng=args.seed,
                                impute=impute, balance_before_split=args.leaky,
                                balance_options={"replace": True} if args.replace else None)
    except FloatingPointError as e:
        print(f"{PROG} diabetes: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except (ValueError, TypeError) as e:
        raise UserError(f"{os.path.basename(path)}, target {info['target_name']!r}: {e}") from None
    seconds = time.perf_counter() - t0
    classes = info["classes"]
    summary = {"command": "diabetes", "model": args.model, "data": args.data,
               "target": info["target_name"], "positive_class": classes[1] if len(classes) > 1 else None,
               "balance": args.balance, "protocol": result["protocol"], "cv": args.cv,
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
    where = "before the split (LEAKY)" if args.leaky else "on the training folds only"
    print(f"{args.model} on {os.path.basename(path)}: {len(y)} rows, {X.shape[1]} features; target "
          f"{info['target_name']!r}, positive class {classes[-1]!r} ({counts[-1]}) vs "
          f"{classes[0]!r} ({counts[0]})", file=out)
    print(f"{args.cv}-fold stratified cross-validation, seed {args.seed}; balance {args.balance} "
          f"{where}; {args.epochs} epochs, batch {args.batch_size}, {args.optimizer} lr {args.lr:g}"
          + (f"; {holes} zeros read as missing, filled with training-fold medians" if holes else ""),
          file=out)
    if args.leaky:
        print("warning: copies or interpolations of test samples sit in the training folds; these "
              "scores measure the leak, not diagnosis", file=out)
    print(f"{'metric':<12} {'mean':>7} {'± std':>8}   per fold", file=out)
    for m in result["mean"]:
        per = " ".join(f"{f[m]:.3f}" for f in result["folds"])
        print(f"{m:<12} {result['mean'][m]:>7.4f} {result['std'][m]:>8.4f}   {per}", file=out)
    print(f"{seconds:.1f} s", file=out)
    return summary


def _fraction(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1), got {s!r}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1), got {s}")
    return v


def cmd_grande(args, out=None):
    out = sys.stdout if out is None else out
    import numpy as np

    from .data import load_csv, stratified_indices, stratified_kfold
    from .metrics import accuracy, macro_f1

    if not args.data.startswith("csv:") or len(args.data) == 4:
        raise UserError(f"--data {args.data}: grande fits a CSV table; give csv:PATH")
    if args.cv is not None and args.cv < 2:
        raise UserError(f"--cv {args.cv}: cross-validation needs at least 2 folds (leave --cv out "
                        f"for one stratified split of --test-size)")
    path = args.data[4:]
    try:
        X, y, info = load_csv(path, target=args.target, categorical="codes", missing="nan",
                              dtype=np.float64, return_info=True)
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None
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
        from .models.grande import GrandeClassifier
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
            print(f"{PROG} grande: fold {f + 1}: {e}", file=sys.stderr)
            raise SystemExit(1) from None
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


# --------------------------------------------------------------------------- parser
def _add_common(p):
    g = p.add_argument_group("data and model")
    g.add_argument("--data", default="digits", metavar="NAME",
                   help="digits (default, embedded), mnist, fashion-mnist, cifar10, spirals, moons, "
                        "blobs, teacher, csv:PATH or npz:PATH (see `list`)")
    g.add_argument("--target", type=_target, default=-1, metavar="COL",
                   help="class column of a CSV: a header name or an index (negative counts from the "
                        "end; default -1, the last column)")
    g.add_argument("--data-dir", metavar="DIR",
                   help="folder of the mnist / fashion-mnist IDX files or the cifar10 batches")
    g.add_argument("--download", action="store_true",
                   help="let mnist / fashion-mnist fetch missing files (SHA-256 checked) into "
                        "--data-dir or the cache folder")
    g.add_argument("--model", default="mlp", help="a registered model (default mlp; see `list`)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the split, the initial weights and the batch order (default 0)")
    h = p.add_argument_group("training (default: each rule's own defaults, see `list`)")
    h.add_argument("--epochs", type=_positive_int)
    h.add_argument("--batch-size", type=_positive_int)
    h.add_argument("--lr", type=_positive_float, help="learning rate")
    h.add_argument("--optimizer", choices=("sgd", "adam", "adamw"))
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print JSON only (no table or epoch lines)")
    o.add_argument("--no-memory", action="store_true", help=MEMORY_HELP)


def build_parser():
    p = _Parser(prog=PROG, description="nograd: learning without autodiff",
                epilog="Argument errors: one line on stderr, exit status 2.")
    sub = p.add_subparsers(dest="command", metavar="command", parser_class=_Parser)

    c = sub.add_parser("compare", help="train one model per learning rule on the same split; table",
                       description="Train the same model (same initial weights, same split, same "
                                   "batch order) once per rule and print rule, test accuracy, "
                                   "seconds, peak memory and the hyper-parameters each ran with. "
                                   + MEMORY_HELP + ".")
    c.add_argument("--rules", default="all",
                   help="comma-separated rule names, or 'all' (default): every registered rule "
                        "that supports the model")
    _add_common(c)
    c.set_defaults(func=cmd_compare)

    t = sub.add_parser("train", help="train one model with one rule",
                       description="Train one model with one learning rule; print a line per "
                                   "epoch and a summary. " + MEMORY_HELP + ".")
    t.add_argument("--rule", default="backprop", help="a registered rule (default backprop)")
    _add_common(t)
    t.add_argument("--save", metavar="PATH", help="write the trained weights to PATH (.npz)")
    lm = t.add_argument_group("language models (--data shakespeare or text:PATH, --model gpt)")
    lm.add_argument("--iters", type=_positive_int, default=2000, help="training iterations (default 2000)")
    lm.add_argument("--block-size", type=_positive_int, default=64, help="context length (default 64)")
    lm.add_argument("--eval-interval", type=_positive_int, default=250,
                    help="estimate train/val loss every N iterations (default 250)")
    lm.add_argument("--eval-iters", type=_positive_int, default=20,
                    help="batches per loss estimate (default 20)")
    lm.add_argument("--sample", type=int, default=300, metavar="N",
                    help="characters to generate at the end (default 300; 0: none)")
    t.add_argument("--history", metavar="PATH", help="write the per-epoch history (.csv or .json)")
    t.add_argument("--plot", metavar="PATH",
                   help="write a PNG learning curve (needs matplotlib; without it the command "
                        "stops at once with exit status 2)")
    t.set_defaults(func=cmd_train)

    dn = sub.add_parser("diabetes", help="cross-validate a binary classifier on a CSV (DiabetesNet "
                                         "by default); mean ± std of five metrics",
                        description="Stratified k-fold cross-validation of a tabular binary "
                                    "classifier trained with backprop: accuracy, sensitivity, "
                                    "specificity, macro-F1 and ROC-AUC, mean ± std over folds. "
                                    "Imputation, standardisation and re-balancing are fitted on "
                                    "each training fold; the test fold is never re-balanced.")
    dn.add_argument("--data", required=True, metavar="csv:PATH", help="the table (plain or gzip CSV)")
    dn.add_argument("--target", type=_target, default=-1, metavar="COL",
                    help="class column: a header name or an index (default -1, the last column); "
                         "two classes, the second in sorted order is the positive one")
    dn.add_argument("--balance", choices=("none", "under", "over", "smote"), default="none",
                    help="re-balance the training folds: random under-sampling, random "
                         "over-sampling or SMOTE (default none)")
    dn.add_argument("--replace", action="store_true",
                    help="with --balance under: draw the kept samples with replacement")
    dn.add_argument("--cv", type=_positive_int, default=5, metavar="K", help="folds (default 5)")
    dn.add_argument("--model", default="diabetesnet",
                    help="a registered model (default diabetesnet; logistic, tabular-mlp, mlp ...)")
    dn.add_argument("--epochs", type=_positive_int, default=50)
    dn.add_argument("--batch-size", type=_positive_int, default=32)
    dn.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate (default 1e-3)")
    dn.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="adam")
    dn.add_argument("--seed", type=int, default=0,
                    help="seed of the folds, the re-balancing, the initial weights and batch order")
    dn.add_argument("--zeros-missing", metavar="COLS",
                    help="comma-separated feature columns in which 0 means 'not measured' (names; "
                         "numbers for a file without a header); those zeros are filled with the "
                         "training folds' medians")
    dn.add_argument("--missing", choices=("error", "drop"), default="error",
                    help="empty or ?/NA cells in the file: an error (default) or drop those rows")
    dn.add_argument("--leaky", action="store_true",
                    help="re-balance the whole table before splitting it (the leaky protocol of "
                         "some papers), to measure how much it inflates the scores")
    dn.add_argument("--json", action="store_true", help="print one JSON object only")
    dn.set_defaults(func=cmd_diabetes)

    gr = sub.add_parser("grande", help="fit GRANDE on a CSV; per-fold and mean macro-F1, accuracy, "
                                       "fit seconds",
                        description="GRANDE (Marton et al., ICLR 2024): gradient-based hard "
                                    "decision-tree ensembles. Text columns are categorical (passed "
                                    "to the estimator as categorical_features); missing cells stay "
                                    "NaN for the estimator's imputer. Stratified k-fold "
                                    "cross-validation with --cv K, else one stratified split.")
    gr.add_argument("--data", required=True, metavar="csv:PATH", help="the table (plain or gzip CSV)")
    gr.add_argument("--target", type=_target, default=-1, metavar="COL",
                    help="class column: a header name or an index (default -1, the last column)")
    gr.add_argument("--cv", type=int, metavar="K",
                    help="stratified K-fold cross-validation (K >= 2); default: one split")
    gr.add_argument("--test-size", type=_fraction, default=0.25, metavar="F",
                    help="test fraction of the single split without --cv (default 0.25)")
    gr.add_argument("--seed", type=int, default=0,
                    help="seed of the folds and of the estimator (random_state; default 0)")
    g2 = gr.add_argument_group("estimator (default: GrandeClassifier's own defaults)")
    g2.add_argument("--n-estimators", type=_positive_int, metavar="N", help="trees in the ensemble")
    g2.add_argument("--depth", type=_positive_int, help="depth of each tree")
    g2.add_argument("--epochs", type=_positive_int, help="training epochs")
    g2.add_argument("--batch-size", type=_positive_int)
    gr.add_argument("--json", action="store_true",
                    help="print one JSON object only (means, std and per-fold lists)")
    gr.set_defaults(func=cmd_grande)

    ls = sub.add_parser("list", help="registered models, rules and datasets, one line each")
    ls.set_defaults(func=cmd_list)

    d = sub.add_parser("demo", help="train a small MLP with backprop on synthetic spirals")
    d.add_argument("--epochs", type=_positive_int, default=200)
    d.add_argument("--batch-size", type=_positive_int, default=64)
    d.add_argument("--lr", type=_positive_float, default=0.01)
    d.add_argument("--hidden", type=_positive_int, default=64)
    d.add_argument("--samples", type=_positive_int, default=300, help="training samples per class")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--json", action="store_true", help="print one JSON line of the results")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        args.func(args)
    except UserError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
