"""``python -m nograd train --model gpt --data shakespeare``: a character language model from the
command line (iterations, evaluation lines, a generated sample at the end, ``--json``).
``--block-size``, ``--n-layer``, ``--n-head`` and ``--n-embd`` size the GPT (nanoGPT's CPU
configuration by default: 64, 4, 4, 128).

``--rule`` picks the learning rule among :data:`nograd.train_lm.LM_RULES` (backprop, mezo, spsa,
forward-gradient); each brings its own optimizer and learning rate (see there), which ``--lr`` and
``--optimizer`` override. ``--shards K`` (backprop only) runs each step's forward, loss, backward and
AdamW update over K threads (:class:`nograd.parallel.ShardedStep`); without it, backprop on a large
step (nanoGPT's GPT) is sharded over the usable cores (:func:`nograd.threads.auto_shards`), and
``--shards 1`` keeps the serial step. The ``train`` command (:mod:`nograd.cli.rules`) hands text data here."""
from __future__ import annotations

import json
import sys


def is_text(spec) -> bool:
    """True for the datasets that are text: ``shakespeare`` and ``text:PATH``."""
    return isinstance(spec, str) and (spec == "shakespeare" or spec.startswith("text:"))


def cmd_train_text(args, out=None, error=ValueError):
    """Train ``args.model`` (``gpt``) on the text ``args.data`` with ``args.rule``; print progress, a
    sample and a summary (or, with ``--json``, one JSON line). A loss that turns NaN/inf ends the
    command with one line on stderr and exit status 1, as for the other datasets."""
    out = sys.stdout if out is None else out
    import numpy as np

    from ..data.text import load_text
    from .common import auto_threads_for
    from ..models import get_model
    from ..models.gpt import generate
    from ..train_lm import LM_RULES, lm_defaults, train_lm

    if args.model not in ("gpt", "charlm"):
        raise error(f"--data {args.data} is text: it trains a language model, use --model gpt or "
                    f"charlm (got --model {args.model})")
    if args.rule not in LM_RULES:
        raise error(f"--rule {args.rule}: text training accepts --rule "
                    f"{' | '.join(LM_RULES)}")
    shards = getattr(args, "shards", None)
    if shards is not None and args.rule != "backprop":
        raise error(f"--shards splits backprop's step over threads; rule {args.rule} has no "
                    f"sharded step (use --rule backprop, or drop --shards)")
    recipe = lm_defaults(args.rule)
    optimizer = args.optimizer or recipe["optimizer"]
    lr = args.lr or recipe["lr"]
    if args.model == "gpt" and args.n_embd % args.n_head:
        raise error(f"--n-embd {args.n_embd} must be a multiple of --n-head {args.n_head}")
    try:
        data = load_text(args.data)
        # charlm: a GRU of --n-embd units (nograd.models.charlm); --n-layer and --n-head are GPT's
        opts = (dict(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)
                if args.model == "gpt" else dict(hidden=args.n_embd))
        model = get_model(args.model, (args.block_size,), data.vocab.size, rng=args.seed, **opts)
    except (ValueError, TypeError, OSError) as e:
        raise error(str(e)) from None
    auto_threads_for(args, model, (args.block_size,), args.batch_size or 12)
    how = f"--shards {shards}" if shards is not None else ""
    if shards is None and args.rule == "backprop":
        from .common import auto_shards_for

        shards, how = auto_shards_for(args, model, (args.block_size,), args.batch_size or 12)
    if shards == 1:
        shards = None                                      # --shards 1: the serial step
    log = None if args.json else (lambda line: print(line, file=out, flush=True))
    if log:
        log(f"{args.model} on {args.data}: {model.num_params:,} parameters, vocabulary {data.vocab.size}, "
            f"{len(data.train):,} train / {len(data.val):,} val tokens; rule {args.rule}, "
            f"{optimizer} lr {lr:g}" + (f"; {how}" if how else ""))
    try:
        from ..rules import get_rule

        rule = args.rule if shards is None else get_rule("backprop", shards=shards)
        hist = train_lm(model, data, rule=rule, iters=args.iters,
                        batch_size=args.batch_size or 12, optimizer=optimizer, lr=lr,
                        eval_interval=args.eval_interval, eval_iters=args.eval_iters,
                        rng=np.random.default_rng(args.seed), log=log)
    except FloatingPointError as e:
        print(f"python -m nograd train: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    sample = ""
    if args.sample:
        # prompt: a newline when the text has one (a fresh line), else its first character
        start = data.vocab.encode("\n") if "\n" in data.vocab.stoi else data.train[:1]
        ids = (generate(model, start, args.sample, rng=args.seed) if args.model == "gpt"
               else model.generate(start, args.sample, rng=args.seed))
        sample = data.vocab.decode(ids)
    summary = {"model": args.model, "data": args.data, "rule": args.rule, "optimizer": optimizer, "lr": lr,
               "iters": hist["iters"], "initial_val_loss": hist["evals"][0]["val_loss"],
               "val_loss": hist["val_loss"],
               "train_loss": hist["train_loss"], "train_seconds": round(hist["train_seconds"], 3),
               "num_params": model.num_params, "sample": sample}
    if shards is not None:
        summary["shards"] = shards
    if args.save:       # weights and architecture (nograd.load_model rebuilds the GPT)
        from ..serialize import save_model

        save_model(model, args.save, meta={"command": "train", "rule": args.rule, "data": args.data,
                                           "seed": args.seed})
        summary["saved"] = args.save
    if getattr(args, "history", None):
        _write_history(hist["evals"], args.history)
        summary["history"] = args.history
    if getattr(args, "plot", None):
        from ..plotting import line_plot

        evals = hist["evals"]
        its = [e["iter"] for e in evals]
        line_plot({"train": (its, [e["train_loss"] for e in evals]),
                   "val": (its, [e["val_loss"] for e in evals])}, args.plot, xlabel="iteration",
                  ylabel="loss (nats per character)",
                  title=f"{args.model} on {args.data}, {args.rule}, seed {args.seed}")
        summary["plot"] = args.plot
    if args.json:
        print(json.dumps(summary), file=out)
    else:
        print(f"--- sample ---\n{sample}\n---" if sample else "", file=out)
        print(f"{args.model} on {args.data} with {args.rule}: val loss {hist['val_loss']:.4f} (train "
              f"{hist['train_loss']:.4f}; untrained {summary['initial_val_loss']:.4f}) after "
              f"{hist['iters']} iterations, {hist['train_seconds']:.1f} s", file=out)
    return summary


def _write_history(evals, path):
    """The evaluation lines of a text run (iteration, train and val loss, learning rate) as JSON
    (a list of objects) or CSV (a header and a row per evaluation)."""
    keys = ("iter", "train_loss", "val_loss", "lr")
    with open(path, "w", encoding="utf-8") as f:
        if path.endswith(".json"):
            json.dump([{k: e[k] for k in keys} for e in evals], f)
        else:
            f.write(",".join(keys) + "\n")
            for e in evals:
                f.write(",".join(repr(e[k]) for k in keys) + "\n")
