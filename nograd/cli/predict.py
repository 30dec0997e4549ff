"""``python -m nograd predict --model-file F``: the class predictions of a saved model on a dataset,
and their accuracy.

``F`` is a file written by ``train --save`` or :func:`nograd.save_model`: it holds the weights and
the architecture (:mod:`nograd.serialize`), and what it was trained on (dataset, split seed, CSV
target), which are the defaults of ``--data``, ``--seed`` and ``--target`` — so by default the
command predicts on the very test split that ``train`` reported. The output is a table of the first
``--show`` predictions and a line with the accuracy, or with ``--json`` one JSON object holding every
prediction and label.
"""
from __future__ import annotations

import json
import sys

from .common import UserError, target, user_errors, whole_number


def _load(path):
    """``(model, spec)`` from the model file ``path``; every problem a one-line UserError."""
    from ..serialize import load_model, read_spec

    try:
        spec = read_spec(path)
        model = load_model(path)
    except (ValueError, TypeError) as e:
        raise UserError(f"--model-file {path}: {e}") from None
    return model, spec


def _check_rule(path, rule_name):
    """Refuse a model trained with a rule that predicts with state of its own (Forward-Forward's
    label positions, Mono-Forward's projections): the file holds the model's arrays only."""
    from ..rules import available_rules, get_rule

    if not rule_name or rule_name not in available_rules():
        return
    try:
        rule = get_rule(rule_name)
    except TypeError:           # a rule that needs constructor arguments: it has no default predict
        return
    if callable(getattr(rule, "predict", None)):
        raise UserError(f"--model-file {path}: the model was trained with rule {rule_name}, which "
                        f"predicts with state of its own that the file does not hold; its outputs "
                        f"alone are not its predictions")


def cmd_predict(args, out=None):
    """``predict``: load ``--model-file``, load the dataset (the file's by default) and predict the
    ``--split``; print a table and the accuracy, or one JSON object. Returns the summary dict."""
    out = sys.stdout if out is None else out
    import numpy as np

    from ..data import load_dataset
    from ..inference import predict
    from .text import is_text

    path = args.model_file
    model, spec = _load(path)
    meta = spec.get("meta", {})
    _check_rule(path, meta.get("rule"))
    data = args.data if args.data is not None else meta.get("data")
    if data is None:
        raise UserError(f"--data is needed: {path} does not record the dataset it was trained on")
    if is_text(data):
        raise UserError(f"--data {data} is text: predict classifies samples; a language model "
                        f"generates text with nograd.models.gpt.generate")
    seed = args.seed if args.seed is not None else meta.get("seed", 0)
    col = args.target if args.target is not None else meta.get("target", -1)
    ds = user_errors(lambda: load_dataset(data, data_dir=args.data_dir or meta.get("data_dir"),
                                          target=col, seed=seed, download=args.download))
    built = spec.get("get_model")
    if built and tuple(built["input_shape"]) != ds.input_shape:
        raise UserError(f"--data {data} gives samples of shape {ds.input_shape}; the model in {path} "
                        f"expects {tuple(built['input_shape'])}")
    if built and built["num_classes"] != ds.num_classes:
        raise UserError(f"--data {data} has {ds.num_classes} classes; the model in {path} predicts "
                        f"{built['num_classes']}")
    X, y = {"test": (ds.X_test, ds.y_test), "train": (ds.X_train, ds.y_train),
            "all": (np.concatenate([ds.X_train, ds.X_test]),
                    np.concatenate([ds.y_train, ds.y_test]))}[args.split]
    pred = user_errors(lambda: predict(model, X))
    accuracy = float(np.mean(pred == y))
    name = built["model"] if built else type(model).__name__
    summary = {"command": "predict", "model_file": path, "model": name, "data": ds.name,
               "split": args.split, "seed": seed, "n": int(len(y)), "accuracy": round(accuracy, 4)}
    if args.json:
        summary.update(predictions=pred.tolist(), labels=np.asarray(y).tolist())
        print(json.dumps(summary), file=out)
        return summary
    if args.show:
        print(f"{'index':>7} {'predicted':>9} {'label':>6}", file=out)
        for i in range(min(args.show, len(y))):
            print(f"{i:>7} {int(pred[i]):>9} {int(y[i]):>6}", file=out)
    print(f"{name} from {path} on {ds.name} ({args.split} split, {len(y)} samples): accuracy "
          f"{accuracy:.4f}", file=out)
    return summary


def add_predict(sub):
    """The ``predict`` sub-parser."""
    p = sub.add_parser("predict", help="predict with a model file written by train --save",
                       description="Load a model file written by `train --save` (or "
                                   "nograd.save_model): weights and architecture. Predict the "
                                   "classes of a dataset split and print the first predictions and "
                                   "the accuracy. The dataset, split seed and CSV target default to "
                                   "the ones the file records, i.e. the test split train reported.")
    p.add_argument("--model-file", required=True, metavar="PATH", help="the .npz model file")
    p.add_argument("--data", metavar="NAME",
                   help="digits, mnist, csv:PATH, ... as for train (default: the file's dataset)")
    p.add_argument("--split", choices=("test", "train", "all"), default="test",
                   help="which part of the dataset to predict (default test)")
    p.add_argument("--seed", type=int, help="seed of the split (default: the file's)")
    p.add_argument("--target", type=target, metavar="COL",
                   help="class column of a CSV (default: the file's, else the last)")
    p.add_argument("--data-dir", metavar="DIR", help="folder of mnist / fashion-mnist / cifar10")
    p.add_argument("--download", action="store_true", help="let mnist / fashion-mnist download")
    p.add_argument("--show", type=whole_number, default=10, metavar="N",
                   help="predictions to print before the accuracy (default 10; --json gives all)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: accuracy, every prediction and label")
    p.set_defaults(func=cmd_predict)
