"""``python -m nograd train --model gpt --data shakespeare``: a character language model from the
command line (iterations, evaluation lines, a generated sample at the end, ``--json``)."""
from __future__ import annotations

import json
import sys


def is_text(spec) -> bool:
    """True for the datasets that are text: ``shakespeare`` and ``text:PATH``."""
    return isinstance(spec, str) and (spec == "shakespeare" or spec.startswith("text:"))


def cmd_train_text(args, out=None, error=ValueError):
    """Train ``args.model`` (``gpt``) on the text ``args.data``; print progress, a sample, a summary."""
    out = sys.stdout if out is None else out
    import numpy as np

    from .data.text import load_text
    from .models import get_model
    from .models.gpt import generate
    from .train_lm import train_lm

    if args.model != "gpt":
        raise error(f"--data {args.data} is text: it trains a language model, use --model gpt "
                    f"(got --model {args.model})")
    if args.rule != "backprop":
        raise error("text training runs backprop only for now (got --rule {args.rule})")
    try:
        data = load_text(args.data)
        model = get_model("gpt", (args.block_size,), data.vocab.size, rng=args.seed)
    except (ValueError, TypeError, OSError) as e:
        raise error(str(e)) from None
    log = None if args.json else (lambda line: print(line, file=out, flush=True))
    if log:
        log(f"gpt on {args.data}: {model.num_params:,} parameters, vocabulary {data.vocab.size}, "
            f"{len(data.train):,} train / {len(data.val):,} val tokens")
    hist = train_lm(model, data, iters=args.iters, batch_size=args.batch_size or 12, lr=args.lr or 1e-3,
                    eval_interval=args.eval_interval, eval_iters=args.eval_iters,
                    rng=np.random.default_rng(args.seed), log=log)
    sample = ""
    if args.sample:
        # prompt: a newline when the text has one (a fresh line), else its first character
        start = data.vocab.encode("\n") if "\n" in data.vocab.stoi else data.train[:1]
        ids = generate(model, start, args.sample, rng=args.seed)
        sample = data.vocab.decode(ids)
    summary = {"model": "gpt", "data": args.data, "iters": hist["iters"], "val_loss": hist["val_loss"],
               "train_loss": hist["train_loss"], "train_seconds": round(hist["train_seconds"], 3),
               "num_params": model.num_params, "sample": sample}
    if args.save:
        from .core.params import save

        save(model, args.save)
        summary["saved"] = args.save
    if args.json:
        print(json.dumps(summary), file=out)
    else:
        print(f"--- sample ---\n{sample}\n---" if sample else "", file=out)
        print(f"gpt on {args.data}: val loss {hist['val_loss']:.4f} (train {hist['train_loss']:.4f}) after "
              f"{hist['iters']} iterations, {hist['train_seconds']:.1f} s", file=out)
    return summary
