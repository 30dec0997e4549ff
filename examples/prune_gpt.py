"""Structured pruning of a character GPT: MINI-LLM against magnitude, Wanda and Taylor scores.

    python examples/prune_gpt.py [--json] [--plot DIR]          # the default GPT, cached
    python examples/prune_gpt.py --quick                         # a small GPT, short pretraining
    python examples/prune_gpt.py --model-file gpt.npz           # a GPT saved by `train --save`

The char GPT (nanoGPT's CPU configuration: 4 layers, 4 heads, 128 wide) is pretrained with backprop
on Tiny Shakespeare once and cached (``--cache``, default ``~/.cache/nograd``; ~2-4 min on 2 cores,
``--quick`` trains a 2-layer, 64-wide GPT in well under a minute), or loaded with ``--model-file``.
Each score ranks the attention heads and MLP channels of every block on a few calibration batches
of the training text (``nograd.compress.prune``; MINI-LLM, Cheng et al. 2024, estimates its gradient
with forward passes only). Then, at each ratio, the pruned model's validation loss, the same after a
short LoRA recovery (``nograd.compress.recover``), its parameters and the speed of its forward
pass against the unpruned model's (same run, same batch).

Memory (as ``bench/memory_zo.py`` measures it: tracemalloc peak during the operation above the
memory just before it): ``inference_mb`` is one inference pass on one calibration batch — logits
with one block's activations alive at a time, the pass the zeroth-order probes run —;
``forward_cached_mb`` a forward pass that keeps every cache for a backward pass (``model(x)``);
``score_peak_mb`` the whole scoring of each score on the calibration batches.
Timings are wall-clock on a shared machine: compare ratios measured in the same run.
``mini-llm`` estimates its gradient along head gates and isotropic MLP weight directions (the
default of ``prune``, ``directions="mixed"``);
``mini-llm-weights`` along isotropic weight directions, the paper's estimator taken literally.

With the defaults this takes about 6 min on 2 busy cores (5 scores × 3 ratios × 80 LoRA steps, the
zeroth-order scorings, and the pretraining the first time): longer than the 2 minutes of the other
examples; ``--quick --recover-steps 20`` runs in about a minute.
"""
import argparse
import json
import os
import sys
import time

# small matrices: one BLAS thread is faster and does not fight other processes; the environment wins
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import nograd  # noqa: E402
from nograd.compress.pruning import SCORES, prune, recover  # noqa: E402

#: the scores the example runs: the four of prune, and mini-llm with the paper's isotropic directions
RUNS = {**{s: (s, "mixed") for s in SCORES}, "mini-llm-weights": ("mini-llm", "weights")}
from nograd.compress.prune_groups import lean_forward  # noqa: E402
from nograd.compress.prune_scores import lm_loss  # noqa: E402
from nograd.data.text import load_text  # noqa: E402
from nograd.models import get_model  # noqa: E402
from nograd.train_lm import train_lm  # noqa: E402

CONFIGS = {"default": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, iters=2000),
           "quick": dict(n_layer=2, n_head=4, n_embd=64, block_size=64, iters=400)}


def pretrained(args, data, log):
    """The model of ``--model-file``, else the cached pretrained GPT (trained and cached if missing)."""
    if args.model_file:
        return nograd.load_model(args.model_file), args.model_file
    cfg = dict(CONFIGS["quick" if args.quick else "default"])
    iters = args.pretrain_iters or cfg.pop("iters")
    cfg.pop("iters", None)
    name = (f"gpt-{args.data.replace(':', '_').replace('/', '_')}-L{cfg['n_layer']}-H{cfg['n_head']}"
            f"-E{cfg['n_embd']}-T{cfg['block_size']}-it{iters}-s{args.seed}.npz")
    path = os.path.join(os.path.expanduser(args.cache), name)
    if os.path.exists(path):
        return nograd.load_model(path), path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model = get_model("gpt", (cfg["block_size"],), data.vocab.size, rng=args.seed,
                      **{k: v for k, v in cfg.items() if k != "block_size"})
    log(f"pretraining a {model.num_params:,}-parameter GPT for {iters} iterations (cached as {path})")
    train_lm(model, data, iters=iters, batch_size=12, eval_interval=max(1, iters // 4), eval_iters=10,
             rng=np.random.default_rng(args.seed), log=log)
    nograd.save_model(model, path, meta={"data": args.data, "seed": args.seed, "iters": iters})
    return model, path


def val_loss(model, batches):
    return float(np.mean([lm_loss(lean_forward(model, x), y) for x, y in batches]))


def forward_seconds(models, x, repeats):
    """The fastest of ``repeats`` forward passes of each model on ``x``, the models taking turns
    (on a shared machine the minimum is the least disturbed run, and taking turns exposes every
    model to the same load)."""
    for m in models:
        m(x)
    best = [float("inf")] * len(models)
    for _ in range(repeats):
        for i, m in enumerate(models):
            t0 = time.perf_counter()
            m(x)
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def peak_mb(fn):
    """``(result, MiB)``: the tracemalloc peak during ``fn()`` above the traced memory before it."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return out, (peak - before) / 2**20


def plot(results, ratios, scores, folder):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("prune_gpt: --plot needs matplotlib (pip install 'nograd[plot]')") from None
    os.makedirs(folder, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for key, ax, title in (("val_loss", axes[0], "after pruning"),
                           ("val_loss_recovered", axes[1], "after LoRA recovery")):
        for s in scores:
            ax.plot([100 * r for r in ratios], [results[s][str(r)][key] for r in ratios], "o-", label=s)
        ax.axhline(results["base_val_loss"], color="gray", lw=0.8, ls="--")
        ax.set_title(title)
        ax.set_xlabel("groups removed per block (%)")
    axes[0].set_ylabel("validation loss")
    axes[0].legend()
    fig.tight_layout()
    out = os.path.join(folder, "val_loss.png")
    fig.savefig(out, dpi=80)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="shakespeare", help="shakespeare (default) or text:PATH")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=os.path.join("~", ".cache", "nograd"),
                   help="folder of the cached pretrained model (default ~/.cache/nograd)")
    p.add_argument("--model-file", help="prune this saved GPT instead of the cached one")
    p.add_argument("--quick", action="store_true", help="a 2-layer 64-wide GPT, 400 pretraining steps")
    p.add_argument("--pretrain-iters", type=int, help="pretraining iterations (default 2000, quick 400)")
    p.add_argument("--ratios", default="0.2,0.3,0.5", help="comma-separated pruning ratios")
    p.add_argument("--scores", default=",".join(RUNS),
                   help="comma-separated, among " + ", ".join(RUNS) + " (default: all)")
    p.add_argument("--calib-batches", type=int, default=8, help="calibration batches (default 8)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per batch (default 16)")
    p.add_argument("--n", type=int, default=64, help="SPSA probes of mini-llm (default 64)")
    p.add_argument("--eps", type=float, help="SPSA perturbation scale (default 1e-2 for gate "
                                              "directions, 1e-3 for weights)")
    p.add_argument("--eval-batches", type=int, default=20, help="validation batches (default 20)")
    p.add_argument("--recover-steps", type=int, default=80, help="LoRA steps (default 80; 0 = none)")
    p.add_argument("--recover-method", choices=("backprop", "mezo"), default="backprop")
    p.add_argument("--repeats", type=int, default=10,
                   help="timed forward passes of each model (the fastest counts; default 10)")
    p.add_argument("--plot", metavar="DIR", help="write val_loss.png into DIR (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = p.parse_args(argv)
    ratios = [float(r) for r in args.ratios.split(",")]
    scores = args.scores.split(",")
    bad = [s for s in scores if s not in RUNS]
    if bad:
        p.error(f"--scores: unknown {bad}; choose among {','.join(RUNS)}")
    if not all(0 <= r < 1 for r in ratios):
        p.error("--ratios must be numbers in [0, 1)")
    if min(args.calib_batches, args.batch_size, args.n, args.eval_batches, args.repeats) < 1:
        p.error("--calib-batches, --batch-size, --n, --eval-batches and --repeats must be positive")
    log = print if not args.json else (lambda line: print(line, file=sys.stderr))
    from nograd.threads import blas_libraries

    threads = {"OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
               "blas": sorted({lib["threads"] for lib in blas_libraries()})}
    log(f"threads: {threads}; load average {os.getloadavg()[0]:.2f}")
    start = time.perf_counter()
    data = load_text(args.data)
    model, source = pretrained(args, data, log)
    T = model.block_size
    rng = np.random.default_rng([args.seed, 1])
    calib = [data.get_batch("train", args.batch_size, T, rng) for _ in range(args.calib_batches)]
    evals = [data.get_batch("val", args.batch_size, T, np.random.default_rng([args.seed, 2, i]))
             for i in range(args.eval_batches)]
    base = val_loss(model, evals)
    x0 = evals[0][0]
    _, inference_mb = peak_mb(lambda: lean_forward(model, calib[0][0]))
    _, cached_mb = peak_mb(lambda: model(calib[0][0]))
    base_s = forward_seconds([model], x0, args.repeats)[0]
    log(f"{source}: {model.num_params:,} parameters, val loss {base:.4f}; inference {inference_mb:.2f} "
        f"MiB, forward with caches {cached_mb:.2f} MiB, forward {1e3 * base_s:.1f} ms")
    results = {"base_val_loss": round(base, 4), "num_params": model.num_params,
               "inference_mb": round(inference_mb, 3), "forward_cached_mb": round(cached_mb, 3)}
    for s in scores:
        score, directions = RUNS[s]
        (first, rep), mb = peak_mb(lambda: prune(model, calib, score=score, ratio=ratios[0], n=args.n,
                                                 eps=args.eps, directions=directions, rng=args.seed))
        results[s] = {"score_peak_mb": round(mb, 3), "score_seconds": round(rep.score_seconds, 2)}
        for r in ratios:
            pruned, rr = (first, rep) if r == ratios[0] else prune(model, calib, score=score, ratio=r,
                                                                   scores=rep.scores)
            loss = val_loss(pruned, evals)
            base_s, secs = forward_seconds([model, pruned], x0, args.repeats)
            hist = recover(pruned, lambda g: data.get_batch("train", 12, T, g), steps=args.recover_steps,
                           method=args.recover_method, rng=args.seed)
            rec = val_loss(pruned, evals) if args.recover_steps else loss
            results[s][str(r)] = {"val_loss": round(loss, 4), "val_loss_recovered": round(rec, 4),
                                  "params": rr.params_after,
                                  "params_removed": round(1 - rr.params_after / rr.params_before, 4),
                                  "speedup": round(base_s / secs, 3),
                                  "recover_seconds": round(hist["seconds"], 2)}
            log(f"{s:<16} ratio {r:.2f}: val loss {loss:.4f} -> recovered {rec:.4f}; "
                f"{rr.params_after:,} parameters ({100 * (1 - rr.params_after / rr.params_before):.1f} % "
                f"removed), forward x{base_s / secs:.2f}")
        log(f"{s:<16} scoring: peak {mb:.2f} MiB ({mb / inference_mb:.2f} x inference), "
            f"{rep.score_seconds:.1f} s")
    print(f"\nval loss of the unpruned model {base:.4f}; recovery: {args.recover_steps} LoRA steps "
          f"({args.recover_method})", file=sys.stderr if args.json else sys.stdout)
    header = f"{'score':<16} {'ratio':>5} {'val loss':>9} {'recovered':>10} {'params':>9} {'speed-up':>9}"
    out = sys.stderr if args.json else sys.stdout
    print(header, file=out)
    for s in scores:
        for r in ratios:
            e = results[s][str(r)]
            print(f"{s:<16} {r:>5.2f} {e['val_loss']:>9.4f} {e['val_loss_recovered']:>10.4f} "
                  f"{e['params']:>9,} {e['speedup']:>9.2f}", file=out)
    print(f"{'score':<16} {'scoring peak MiB':>17} {'x inference':>12} {'seconds':>8}", file=out)
    for s in scores:
        print(f"{s:<16} {results[s]['score_peak_mb']:>17.2f} "
              f"{results[s]['score_peak_mb'] / inference_mb:>12.2f} {results[s]['score_seconds']:>8.1f}",
              file=out)
    results.update(seed=args.seed, data=args.data, model_file=source, n=args.n,
                   calib_batches=args.calib_batches, batch_size=args.batch_size,
                   recover_steps=args.recover_steps, recover_method=args.recover_method,
                   threads=threads, total_seconds=round(time.perf_counter() - start, 1))
    if args.plot:
        log(f"figure: {plot(results, ratios, scores, args.plot)}")
    if args.json:
        print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
