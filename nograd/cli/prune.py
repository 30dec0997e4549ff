"""``python -m nograd prune --model-file F --score S --ratio R``: structured pruning of a saved GPT.

``F`` is a GPT written by ``train --model gpt --data shakespeare --save F`` (or
:func:`nograd.save_model`). The heads and MLP channels of every block are scored on
``--calib-batches`` batches of the training text (:func:`nograd.compress.prune`: ``mini-llm``,
``magnitude``, ``wanda`` or ``taylor``), the lowest ``--ratio`` of each kind removed, and the
smaller model optionally recovered by ``--recover-steps`` LoRA steps; the command prints the
validation loss before and after (and after recovery), the parameters before and after, and with
``--save OUT`` writes the pruned model (it reloads with :func:`nograd.load_model`).
"""
from __future__ import annotations

import argparse
import json
import sys

from .common import UserError, check_writable, positive_float, positive_int, whole_number


def _ratio(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {s!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {s}")
    return v


def cmd_prune(args, out=None):
    """``prune``: load, score, prune, optionally recover and save; print a summary (or one JSON
    object). Returns the summary dict."""
    out = sys.stdout if out is None else out
    import numpy as np

    from ..compress.pruning import prune, recover
    from ..compress.prune_groups import lean_forward
    from ..compress.prune_scores import lm_loss
    from ..data.text import load_text
    from ..models.gpt import GPT
    from ..serialize import load_model, read_spec, save_model

    path = args.model_file
    try:
        spec = read_spec(path)
        model = load_model(path)
    except (ValueError, TypeError) as e:
        raise UserError(f"--model-file {path}: {e}") from None
    if not isinstance(model, GPT):
        raise UserError(f"--model-file {path}: holds a {type(model).__name__}; prune takes a GPT "
                        f"(train --model gpt --data shakespeare --save F)")
    if args.save:
        check_writable(args.save, "--save")
    data_name = args.data or (spec or {}).get("meta", {}).get("data") or "shakespeare"
    try:
        data = load_text(data_name)
    except (ValueError, OSError) as e:
        raise UserError(f"--data {data_name}: {e}") from None
    if data.vocab.size != model.vocab_size:
        raise UserError(f"--data {data_name} has {data.vocab.size} characters; the model in {path} "
                        f"has a vocabulary of {model.vocab_size}")
    T = model.block_size
    rng = np.random.default_rng([args.seed, 1])
    calib = [data.get_batch("train", args.batch_size, T, rng) for _ in range(args.calib_batches)]
    evals = [data.get_batch("val", args.batch_size, T, np.random.default_rng([args.seed, 2, i]))
             for i in range(args.eval_batches)]

    def val(m):
        return float(np.mean([lm_loss(lean_forward(m, x), y) for x, y in evals]))

    log = None if args.json else (lambda line: print(line, file=out, flush=True))
    before = val(model)
    groups = tuple(args.groups.split(","))
    try:
        pruned, report = prune(model, calib, score=args.score, ratio=args.ratio, groups=groups,
                               n=args.n, eps=args.eps, directions=args.directions, rng=args.seed,
                               log=log)
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None
    after = val(pruned)
    summary = {"command": "prune", "model_file": path, "data": data_name, "score": args.score,
               "ratio": args.ratio, "groups": list(groups), "val_loss_before": round(before, 4),
               "val_loss": round(after, 4), **{k: v for k, v in report.to_dict().items()
                                               if k in ("params_before", "params_after",
                                                        "params_removed_fraction", "removed",
                                                        "score_seconds")},
               "n_heads": list(pruned.n_heads), "mlp_hidden": list(pruned.mlp_hidden)}
    if args.recover_steps:
        hist = recover(pruned, lambda g: data.get_batch("train", args.batch_size, T, g),
                       steps=args.recover_steps, method=args.recover_method, rng=args.seed, log=log)
        summary.update(recover_steps=args.recover_steps, recover_method=args.recover_method,
                       val_loss_recovered=round(val(pruned), 4),
                       recover_seconds=round(hist["seconds"], 2))
    if args.save:
        save_model(pruned, args.save, meta={"command": "prune", "data": data_name, "score": args.score,
                                            "ratio": args.ratio, "seed": args.seed})
        summary["saved"] = args.save
    if args.json:
        print(json.dumps(summary), file=out)
    else:
        rec = (f", {summary['val_loss_recovered']:.4f} after {args.recover_steps} LoRA steps"
               if args.recover_steps else "")
        print(f"{args.score} at ratio {args.ratio:g}: heads per block {summary['n_heads']}, MLP "
              f"channels {summary['mlp_hidden']}; {report.params_before:,} -> {report.params_after:,} "
              f"parameters; val loss {before:.4f} -> {after:.4f}{rec}", file=out)
    return summary


def add_prune(sub):
    """The ``prune`` sub-parser."""
    p = sub.add_parser("prune", help="structured pruning of a saved GPT (MINI-LLM and baselines)",
                       description="Score the attention heads and MLP channels of a GPT saved by "
                                   "`train --model gpt --save F`, remove the lowest-scoring fraction "
                                   "of each per block, optionally recover with LoRA, report the "
                                   "validation loss and parameters (nograd.compress.prune).")
    p.add_argument("--model-file", required=True, metavar="PATH", help="the GPT's .npz model file")
    p.add_argument("--score", choices=("mini-llm", "magnitude", "wanda", "taylor"), default="mini-llm",
                   help="importance score (default mini-llm: forward passes only)")
    p.add_argument("--ratio", type=_ratio, default=0.2,
                   help="fraction of heads and channels removed from each block, in [0, 1) (default 0.2)")
    p.add_argument("--groups", default="heads,mlp", help="heads, mlp or heads,mlp (default)")
    p.add_argument("--data", metavar="NAME", help="shakespeare or text:PATH (default: the file's, "
                                                  "else shakespeare)")
    p.add_argument("--calib-batches", type=positive_int, default=8, metavar="N",
                   help="calibration batches of training text (default 8)")
    p.add_argument("--eval-batches", type=positive_int, default=10, metavar="N",
                   help="validation batches for the reported loss (default 10)")
    p.add_argument("--batch-size", type=positive_int, default=16, metavar="B",
                   help="windows per batch (default 16)")
    p.add_argument("--n", type=positive_int, default=64, help="SPSA probes of mini-llm (default 64)")
    p.add_argument("--eps", type=positive_float,
                   help="SPSA scale (default 1e-2 for gate directions, 1e-3 for weight directions)")
    p.add_argument("--directions", choices=("mixed", "gates", "weights"), default="mixed",
                   help="mini-llm's SPSA directions: head gates + MLP weights (mixed, default), "
                        "gates for all groups, or isotropic over all weights (the paper's)")
    p.add_argument("--recover-steps", type=whole_number, default=0, metavar="N",
                   help="LoRA recovery steps after pruning (default 0: none)")
    p.add_argument("--recover-method", choices=("backprop", "mezo"), default="backprop",
                   help="how the LoRA adapters are trained (default backprop)")
    p.add_argument("--seed", type=int, default=0, help="seed of the batches and perturbations")
    p.add_argument("--save", metavar="OUT", help="write the pruned model to OUT (.npz)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=cmd_prune)
