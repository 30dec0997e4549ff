"""The commands about learning rules on registered models: ``train`` (one model, one rule),
``compare`` (one model, every rule, a table), ``list`` (what is registered) and ``demo``.

``train`` and ``compare`` share one pipeline (:func:`run_rule`): build the model from ``--seed``,
check that the rule can train it, build the optimizer from the rule's defaults and the user's
options, run one untimed warm-up step on a throwaway copy (:func:`warm_up`), then train with
:func:`nograd.train.fit` and evaluate on the test split. Text data (``--data shakespeare`` or
``text:PATH``) is handed to :mod:`nograd.cli_text` by ``train``.
"""
from __future__ import annotations

import json
import sys
import time

from .common import (MEMORY_HELP, PROG, UserError, add_common, auto_sharded_rule, auto_threads_for,
                     check_writable, exit_diverged, hyperparameters, load_data, positive_float,
                     positive_int, user_errors)


# --------------------------------------------------------------------------- the shared pipeline
def build(rule_name, ds, args, hp, rng, rule=None):
    """``(rule, model, optimizer)`` ready to train: the model ``args.model`` for the dataset ``ds``
    (input shape, number of classes) initialised from the Generator ``rng``, checked by ``rule``
    (a new ``get_rule(rule_name)`` when None), and the optimizer ``hp["optimizer"]`` over the
    model's arrays with ``hp["lr"]`` and ``hp["optimizer_options"]``. Whatever of this fails on the
    user's choice of rule and model is a UserError naming both."""
    from ..core.optim import get_optimizer
    from ..models import get_model
    from ..rules import get_rule

    try:
        if rule is None:
            rule = get_rule(rule_name)
        model = get_model(args.model, ds.input_shape, ds.num_classes, rng=rng)
        rule.check_model(model)
        optimizer = get_optimizer(hp["optimizer"], model.params, lr=hp["lr"],
                                  **hp.get("optimizer_options", {}))
    except (ValueError, TypeError) as e:
        raise UserError(f"rule {rule_name}, model {args.model}: {e}") from None
    return rule, model, optimizer


def warm_up(rule_name, ds, args, hp):
    """One untimed, untraced step on a throwaway model, rule and optimizer (weights from seed 0,
    one batch of ``min(batch_size, n_train)`` training samples), so that one-time costs — lazy
    imports, loading Numba kernels — count neither in the seconds nor in the peak memory. The
    rule that trains is not touched: rules keep state (feedback matrices, seeds). A learning rate
    so large that this step overflows is not reported here but by the run itself, as divergence
    at its epoch and batch (NumPy's overflow warnings are silenced: non-finite values are checked)."""
    import numpy as np

    rule, model, optimizer = build(rule_name, ds, args, hp, np.random.default_rng(0))
    n = min(hp["batch_size"], len(ds.X_train))
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            rule.step(model, ds.X_train[:n], ds.y_train[:n], optimizer=optimizer,
                      rng=np.random.default_rng(0))
            model(ds.X_test[:n])
    except FloatingPointError:
        pass


class PeakMemory:
    """``with PeakMemory(on) as m:`` — with ``on``, the peak of Python's tracemalloc (which NumPy
    reports its allocations to) over the block, in bytes, in ``m.peak`` afterwards; ``None`` when
    off. Tracing already started by the caller is reset, not stopped."""

    def __init__(self, on):
        self.on, self.peak, self._was_tracing = on, None, False

    def __enter__(self):
        if self.on:
            import tracemalloc

            self._was_tracing = tracemalloc.is_tracing()
            if self._was_tracing:
                tracemalloc.reset_peak()
            else:
                tracemalloc.start()
        return self

    def __exit__(self, *exc):
        if self.on:
            import tracemalloc

            self.peak = tracemalloc.get_traced_memory()[1]
            if not self._was_tracing:
                tracemalloc.stop()
        return False


def run_rule(rule_name, ds, args, *, quiet, log_epochs):
    """Train ``args.model`` on ``ds`` with the rule ``rule_name`` and evaluate it on the test split.

    Weights come from ``--seed``, the batch order from ``[seed, 1]``; hyper-parameters are the
    rule's defaults overridden by the options given. A last batch of a single sample is dropped
    (batch norm cannot train on it; ``drop_last`` in the summary says so). Returns ``(summary,
    model, history)``; the summary holds test accuracy, macro-F1 and loss, final train loss,
    seconds, peak MB (``None`` with ``--no-memory``), the hyper-parameters, parameter count and
    forward FLOPs per sample. A NaN/inf or a blow-up in training (NumPy's overflow warnings
    silenced) propagates as ``FloatingPointError`` for the command to report in one line."""
    import numpy as np

    from ..metrics import count_flops, macro_f1
    from ..rules import get_rule
    from ..train import EpochLogger, evaluate, fit, predictor

    shards = getattr(args, "shards", None)         # train only: backprop's sharded step
    if shards is not None and rule_name != "backprop":
        raise UserError(f"--shards splits backprop's step over threads; rule {rule_name} has no "
                        f"sharded step (use --rule backprop, or drop --shards)")
    rule = user_errors(lambda: get_rule(rule_name, **({} if shards is None else {"shards": shards})))
    hp = hyperparameters(type(rule), args)
    warm_up(rule_name, ds, args, hp)
    with PeakMemory(not args.no_memory) as memory:
        _, model, optimizer = build(rule_name, ds, args, hp, np.random.default_rng(args.seed),
                                    rule=rule)
        auto_threads_for(args, model, ds.input_shape, hp["batch_size"])
        if shards is None and rule_name == "backprop" and args.command == "train":
            rule, shards = auto_sharded_rule(args, rule, model, ds.input_shape, hp["batch_size"], quiet)
        callbacks = []
        if log_epochs and not quiet:
            callbacks.append(EpochLogger(every=max(1, hp["epochs"] // 20), val_name="test"))
        drop_last = len(ds.X_train) % hp["batch_size"] == 1 and len(ds.X_train) > 1
        with np.errstate(over="ignore", invalid="ignore"):
            history = fit(model, rule, optimizer, (ds.X_train, ds.y_train),
                          val=(ds.X_test, ds.y_test), epochs=hp["epochs"],
                          batch_size=hp["batch_size"], rng=np.random.default_rng([args.seed, 1]),
                          callbacks=callbacks, progress=not quiet, drop_last=drop_last)
    predict = predictor(model, rule)        # rule.predict when the rule has one (Forward-Forward)
    test = evaluate(model, ds.X_test, ds.y_test, predict=predict)
    pred = np.concatenate([predict(ds.X_test[i:i + 1024]).argmax(1)
                           for i in range(0, len(ds.X_test), 1024)])
    try:
        flops = count_flops(model, ds.input_shape)["forward"]
    except ValueError:
        flops = None
    peak = memory.peak
    summary = {"command": args.command, "rule": rule_name, "model": args.model, "data": ds.name,
               "test_accuracy": round(test["accuracy"], 4),
               "test_macro_f1": round(macro_f1(ds.y_test, pred, ds.num_classes), 4),
               "test_loss": round(test["loss"], 4),
               "train_loss": round(history.last["loss"], 4),
               "train_seconds": round(history.info["train_seconds"], 3),
               "peak_mb": None if peak is None else round(peak / 2 ** 20, 2),
               "optimizer": hp["optimizer"], "lr": hp["lr"], "epochs": len(history),
               "batch_size": hp["batch_size"], "drop_last": drop_last, "seed": args.seed,
               "num_params": model.num_params,
               "flops_per_sample": flops, "n_train": len(ds.X_train), "n_test": len(ds.X_test)}
    if shards is not None:
        summary["shards"] = shards
    return summary, model, history


# --------------------------------------------------------------------------- train
def cmd_train(args, out=None):
    """``train``: one model, one rule; epoch lines, then a one-line summary (or one JSON object);
    optionally the weights (``--save``), the history (``--history``) and a PNG (``--plot``)."""
    out = sys.stdout if out is None else out
    from ..rules import get_rule

    if args.save:
        check_writable(args.save, "--save")
    if args.history:             # the outputs are checked before any training, text or not
        check_writable(args.history, "--history")
        if not args.history.endswith((".csv", ".json")):
            raise UserError(f"--history {args.history}: the name must end in .csv or .json")
    if args.plot:
        import importlib.util

        check_writable(args.plot, "--plot")
        if importlib.util.find_spec("matplotlib") is None:
            raise UserError("--plot needs matplotlib, which is not installed "
                            "(pip install 'nograd[plot]'); nothing was trained")
    from .text import cmd_train_text, is_text

    if is_text(args.data):
        return cmd_train_text(args, out, error=UserError)
    ds = user_errors(lambda: load_data(args))
    user_errors(lambda: get_rule(args.rule))
    try:
        summary, model, history = run_rule(args.rule, ds, args, quiet=args.json, log_epochs=True)
    except FloatingPointError as e:
        exit_diverged("train", e)
    if args.save:       # weights and architecture: `predict --model-file` needs nothing else
        from ..serialize import save_model

        meta = {"command": "train", "rule": args.rule, "data": args.data, "seed": args.seed,
                "target": args.target}
        save_model(model, args.save, meta={**meta, **({"data_dir": args.data_dir} if args.data_dir else {})})
        summary["saved"] = args.save
    if args.history:
        if args.history.endswith(".csv"):
            history.to_csv(args.history)
        else:
            with open(args.history, "w") as f:
                f.write(history.to_json(indent=1))
        summary["history"] = args.history
    if args.plot:
        plot_history(history, args.plot, f"{args.rule} · {args.model} · {ds.name}")
        summary["plot"] = args.plot
    if args.json:
        print(json.dumps(summary), file=out)
    else:
        mem = "" if summary["peak_mb"] is None else f", peak {summary['peak_mb']:.1f} MB"
        print(f"{args.rule} {args.model} on {ds.name}: test accuracy {summary['test_accuracy']:.4f} "
              f"(macro-F1 {summary['test_macro_f1']:.4f}) after {summary['epochs']} epochs, "
              f"{summary['train_seconds']:.2f} s{mem}", file=out)
    return summary


def plot_history(history, path, title):
    """Write a PNG at ``path``: loss (left) and accuracy (right) per epoch, train and test."""
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


# --------------------------------------------------------------------------- compare
def rule_names(spec, model_name, ds, seed):
    """The rules to compare: a comma list, or ``all`` (every registered rule that takes the model).

    Named rules are all checked before anything runs: an unknown name, or a rule that cannot train
    the model, is a UserError. ``all`` skips the rules that cannot, and reports them.
    Returns ``(kept names, [(skipped name, reason), ...])``."""
    import numpy as np

    from ..models import get_model
    from ..rules import available_rules, get_rule

    if spec == "all":
        names = available_rules()
    else:
        names = [s.strip() for s in spec.split(",") if s.strip()]
        if not names:
            raise UserError("--rules is empty; give rule names separated by commas, or 'all'")
        if len(set(names)) != len(names):
            raise UserError(f"--rules repeats a rule: {spec}")
    probe = user_errors(lambda: get_model(model_name, ds.input_shape, ds.num_classes,
                                          rng=np.random.default_rng(seed)))
    kept, skipped = [], []
    for name in names:
        rule = user_errors(lambda: get_rule(name))
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
    """``compare``: the same model, split, initial weights and batch order once per rule; a table
    row (or a JSON line) per rule as it finishes. A rule that diverges gets a ``diverged`` row and
    a line on stderr; the others still run. Returns the list of summaries."""
    out = sys.stdout if out is None else out
    if getattr(args, "plot", None):             # before any data is loaded or rule trained
        from ..plotting import plot_dir

        try:
            args.plot = plot_dir(args.plot, "--plot")
        except (ImportError, ValueError, TypeError) as e:
            raise UserError(str(e)) from None
    ds = user_errors(lambda: load_data(args))
    names, skipped = rule_names(args.rules, args.model, ds, args.seed)
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
    results, histories = [], {}
    for name in names:
        try:
            summary, _, histories[name] = run_rule(name, ds, args, quiet=args.json, log_epochs=False)
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
                  f"{mem:>8}  {summary['optimizer']:<9} {summary['lr']:>8.3g} {summary['epochs']:>6d} "
                  f"{summary['batch_size']:>5d}", file=out, flush=True)
    if getattr(args, "plot", None) and histories:
        import os

        from ..plotting import learning_curves

        data = ds.name.split(":", 1)[0] + ":" + os.path.basename(ds.name) if ":" in ds.name else ds.name
        path = learning_curves(histories, os.path.join(args.plot, "learning_curves.png"),
                               title=f"{args.model} on {data}, seed {args.seed}")
        if not args.json:
            print(f"figure: {path}", file=out)
    return results


# --------------------------------------------------------------------------- list, demo
_TEX = {r"\odot": "⊙", r"\sim": "~", r"\pm": "±", r"\cdot": "·", r"\times": "×", r"\le": "≤",
        r"\ge": "≥", r"\nabla": "∇", r"\theta": "θ", r"\epsilon": "ε", r"\eta": "η", r"\,": " ",
        r"\_": "_", r"\{": "{", r"\}": "}"}


def _plain_math(tex):
    """A :math: role's LaTeX as plain text (the few macros the rules' summaries use)."""
    import re

    tex = re.sub(r"\\(?:mathrm|operatorname|text|mathbf)\{([^{}]*)\}", r"\1", tex)
    tex = re.sub(r"\\sqrt\{([^{}]*)\}", r"√(\1)", tex)
    for macro, char in _TEX.items():
        tex = tex.replace(macro, char)
    return tex


def first_line(doc):
    """The first paragraph of a docstring on one line, as plain text: reST roles (``:math:`…```,
    ``:meth:`…```) and double back-quotes are unwrapped, the LaTeX of :math: roles spelled out."""
    import re

    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    text = re.sub(r":math:`([^`]*)`", lambda m: _plain_math(m.group(1)), text)
    text = re.sub(r":[a-z]+:`~?([^`]*)`", r"\1", text)
    return text.replace("``", "")


def cmd_list(args, out=None):
    """``list``: a line per registered model, rule (with its default hyper-parameters) and
    dataset."""
    out = sys.stdout if out is None else out
    from ..data import available_datasets
    from ..models import available_models, model_description
    from ..rules import available_rules, get_rule

    for name in available_models():
        print(f"model  {name:<16} {model_description(name)}", file=out)
    for name in available_rules():
        try:
            rule = get_rule(name)
        except TypeError:
            print(f"rule   {name:<16} (needs constructor arguments)", file=out)
            continue
        hp = type(rule).hyperparameters()
        print(f"rule   {name:<16} {first_line(type(rule).__doc__)} [defaults: {hp['optimizer']}, "
              f"lr {hp['lr']:g}, {hp['epochs']} epochs, batch {hp['batch_size']}]", file=out)
    for name, desc in available_datasets().items():
        print(f"data   {name:<16} {desc}", file=out)


def cmd_demo(args, out=None):
    """``demo``: a 2-hidden-layer ReLU MLP trained with backprop and Adam on 3-class spirals
    (``--samples`` per class, noise 0.15; 200 test samples per class), written out by hand — the
    loop ``grads → optimizer.step`` without ``fit``; test accuracy every tenth of the epochs."""
    out = sys.stdout if out is None else out
    import numpy as np

    from ..core import Sequential
    from ..core.optim import Adam
    from ..data import spirals
    from ..layers import Linear, ReLU
    from ..rules import Backprop

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


# --------------------------------------------------------------------------- parsers
def add_compare(sub):
    """The ``compare`` sub-parser."""
    c = sub.add_parser("compare", help="train one model per learning rule on the same split; table",
                       description="Train the same model (same initial weights, same split, same "
                                   "batch order) once per rule and print rule, test accuracy, "
                                   "seconds, peak memory and the hyper-parameters each ran with. "
                                   + MEMORY_HELP + ".")
    c.add_argument("--rules", default="all",
                   help="comma-separated rule names, or 'all' (default): every registered rule "
                        "that supports the model")
    add_common(c)
    c.add_argument("--plot", metavar="DIR",
                   help="write DIR/learning_curves.png: test accuracy and training loss per epoch, "
                        "a line per rule (DIR is created; needs matplotlib: pip install "
                        "'nograd[plot]')")
    c.set_defaults(func=cmd_compare)


def add_train(sub):
    """The ``train`` sub-parser, with the language-model options :mod:`nograd.cli_text` reads."""
    t = sub.add_parser("train", help="train one model with one rule",
                       description="Train one model with one learning rule; print a line per "
                                   "epoch and a summary. " + MEMORY_HELP + ".")
    t.add_argument("--rule", default="backprop", help="a registered rule (default backprop)")
    add_common(t)
    t.add_argument("--shards", type=positive_int, metavar="K",
                   help="backprop only: split each batch into K shards trained in K threads, BLAS at "
                        "one thread each (nograd.parallel.ShardedStep; the same gradient up to float "
                        "rounding; batch norm synchronised). Pays on steps of a few ms and more, e.g. "
                        "--model cnn on 32x32 images. Default: a step of 1 GFLOP or more "
                        "(nanoGPT's GPT) is sharded over the usable cores unless --threads or a "
                        "thread variable is set, smaller steps run serially; --shards 1: serial")
    t.add_argument("--save", metavar="PATH",
                   help="write the trained model to PATH (.npz: weights and architecture; read "
                        "it back with `predict --model-file PATH` or nograd.load_model)")
    lm = t.add_argument_group("language models (--data shakespeare or text:PATH, --model gpt)")
    lm.add_argument("--iters", type=positive_int, default=2000, help="training iterations (default 2000)")
    lm.add_argument("--block-size", type=positive_int, default=64, help="context length (default 64)")
    lm.add_argument("--n-layer", type=positive_int, default=4, help="transformer blocks (default 4)")
    lm.add_argument("--n-head", type=positive_int, default=4, help="attention heads (default 4)")
    lm.add_argument("--n-embd", type=positive_int, default=128,
                    help="width, a multiple of --n-head (default 128)")
    lm.add_argument("--eval-interval", type=positive_int, default=250,
                    help="estimate train/val loss every N iterations (default 250)")
    lm.add_argument("--eval-iters", type=positive_int, default=20,
                    help="batches per loss estimate (default 20)")
    lm.add_argument("--sample", type=int, default=300, metavar="N",
                    help="characters to generate at the end (default 300; 0: none)")
    t.add_argument("--history", metavar="PATH", help="write the per-epoch history (.csv or .json)")
    t.add_argument("--plot", metavar="PATH",
                   help="write a PNG learning curve (needs matplotlib; without it the command "
                        "stops at once with exit status 2)")
    t.set_defaults(func=cmd_train)


def add_list(sub):
    """The ``list`` sub-parser."""
    ls = sub.add_parser("list", help="registered models, rules and datasets, one line each")
    ls.set_defaults(func=cmd_list)


def add_demo(sub):
    """The ``demo`` sub-parser."""
    d = sub.add_parser("demo", help="train a small MLP with backprop on synthetic spirals")
    d.add_argument("--epochs", type=positive_int, default=200)
    d.add_argument("--batch-size", type=positive_int, default=64)
    d.add_argument("--lr", type=positive_float, default=0.01)
    d.add_argument("--hidden", type=positive_int, default=64)
    d.add_argument("--samples", type=positive_int, default=300, help="training samples per class")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--json", action="store_true", help="print one JSON line of the results")
    d.set_defaults(func=cmd_demo)

