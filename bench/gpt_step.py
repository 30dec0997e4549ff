"""One GPT training step at nanoGPT's CPU scale: nograd beside PyTorch CPU eager (when installed)
and the NumPy GEMM lower bound, plus sampling speed with and without the key/value cache.

    python bench/gpt_step.py [--repeats 30] [--batch 12] [--block 64] [--layers 4] [--embd 128]
                             [--heads 4] [--vocab 65] [--seed 0] [--shards K] [--json]

The model is :class:`nograd.models.gpt.GPT` (pre-norm blocks, LayerNorm and Linear without bias,
causal attention, exact GELU, tied head; Radford et al. 2019 §2.3 as in Karpathy's nanoGPT). A step
is forward, token-level softmax cross-entropy, backward and AdamW (lr 1e-3, betas (0.9, 0.99),
weight decay 0.1, gradient norm clipped to 1). The PyTorch peer is the same architecture written
below with ``torch.nn``; it starts from nograd's initial weights and its first loss must agree to
1e-4. The GEMM bound times the step's matrix products alone in float32: per layer the forward
products ``x Wqkvᵀ``, ``q kᵀ`` and ``p v`` (batched over B·H), ``o Woᵀ``, ``h W1ᵀ``, ``a W2ᵀ``, the
head ``x Wteᵀ``, and for every one of them the two backward products (input and weight cotangents).
The process keeps freed memory for reuse (:func:`nograd.malloc.retain_freed_memory`, as
``python -m nograd train`` does on text) unless ``--no-retain-memory``; it applies to both contenders.
Step figures are medians over ``--repeats`` steps after warm-up, each contender timed in one
block (interleaving steps lets torch's OpenMP threads and OpenBLAS's fight over the cores).
Generation draws from a 1-token prompt, batch 1: ``block - 1`` new tokens (the window fills up) and ``--gen-long`` new
tokens (the window slides). The last line with ``--json`` is one JSON object of the figures.

``--shards K`` runs nograd's forward, loss and backward data-parallel over K threads
(:class:`nograd.parallel.ShardedStep`: the batch split into K shards of sequences, BLAS held at one
thread during that part, the shards' gradients combined into the whole batch's); AdamW's per-array updates then run over
the same threads (:meth:`~nograd.parallel.ShardedStep.update`; ``--serial-update``: in the calling
thread, as ``optimizer.step``). PyTorch and the GEMM bound keep the process's thread settings.
Without ``--shards`` nograd's step is the one ``python -m nograd train --model gpt --data
shakespeare`` runs: sharded over the usable cores when there are two or more and the environment
sets no thread count (:func:`nograd.threads.auto_shards`), else serial; ``--shards 1`` is the serial
step. The JSON records ``shards`` (null: serial), ``shards_choice`` (why) and
``nograd_blas_threads_in_step``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import nograd  # noqa: E402
from nograd.losses import softmax_cross_entropy  # noqa: E402
from nograd.models.gpt import GPT, generate  # noqa: E402
from nograd.threads import blas_libraries  # noqa: E402

OPT = dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)


def make_nograd(args):
    model = GPT(args.vocab, n_layer=args.layers, n_head=args.heads, n_embd=args.embd,
                block_size=args.block, dropout=0.0, bias=False, tie_weights=True,
                rng=np.random.default_rng(args.seed), dtype=np.float32)
    init = {k: v.copy() for k, v in model.params.items()}
    opt = nograd.AdamW(model.params, **OPT, clip_norm=1.0)
    if args.shards is not None:       # forward/loss/backward over `shards` threads, BLAS at 1
        from nograd.parallel import ShardedStep

        sharded = ShardedStep(model, "cross-entropy", shards=args.shards)

        def sharded_step(idx, y):
            loss, grads = sharded(idx, y)
            if args.serial_update:
                opt.step(grads)
            else:
                sharded.update(opt, grads)
            return loss
        return model, init, sharded_step

    def step(idx, y):
        logits, cache = model.forward(idx, train=True)
        loss, dlogits = softmax_cross_entropy(logits, y)
        _, grads = model.backward(cache, dlogits)
        opt.step(grads)
        return loss
    return model, init, step


def make_gemm_bound(args):
    """The step's matrix products alone, on float32 arrays of the step's shapes."""
    rng = np.random.default_rng(args.seed)
    B, T, E, H, V = args.batch, args.block, args.embd, args.heads, args.vocab
    N, D = B * T, E // H
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    # (A, Bm) for each forward product Y = A @ Bm (Linear: Bm = Wᵀ; attention: batched over B·H);
    # the layers share arrays of equal shapes, so the bound is, if anything, optimistic
    per_layer = [(r(N, E), r(3 * E, E).T), (r(B * H, T, D), r(B * H, D, T)), (r(B * H, T, T), r(B * H, T, D)),
                 (r(N, E), r(E, E).T), (r(N, E), r(4 * E, E).T), (r(N, 4 * E), r(E, 4 * E).T)]
    prods = per_layer * args.layers + [(r(N, E), r(V, E).T)]
    douts = [r(*(a @ b).shape) for a, b in prods]       # an output cotangent per product
    sw = lambda m: np.swapaxes(m, -1, -2)  # noqa: E731

    def step(idx, y):
        for a, b in prods:
            _ = a @ b
        for (a, b), dy in zip(reversed(prods), reversed(douts)):
            _ = dy @ sw(b)                   # input cotangent dA = dY Bᵀ
            _ = sw(a) @ dy                   # weight (or key/value) cotangent dB = Aᵀ dY
    return step


def make_torch(args, init):
    """The same GPT in torch.nn, loaded with nograd's initial weights; None when torch is missing."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None, None, None
    from _torch_gpt import build

    model = build(init, vocab=args.vocab, n_layer=args.layers, n_head=args.heads, n_embd=args.embd,
                  block_size=args.block)
    opt = torch.optim.AdamW(model.parameters(), **OPT, eps=1e-8)
    tensors = {}

    def loss_of(idx, y):
        key = (id(idx), id(y))
        if key not in tensors:
            tensors.clear()
            tensors[key] = (torch.from_numpy(idx), torch.from_numpy(y))
        ti, ty = tensors[key]
        logits = model(ti)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ty.reshape(-1))

    def step(idx, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_of(idx, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()
    info = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    return step, loss_of, info


def gen_rate(model, new, use_cache, repeats, seed):
    """Median tokens per second of ``generate`` from a 1-token prompt, batch 1."""
    prompt = np.zeros((1, 1), np.int64)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate(model, prompt, new, rng=np.random.default_rng(seed), use_cache=use_cache)
        runs.append(time.perf_counter() - t0)
    return new / statistics.median(runs)


def thread_settings(torch_info):
    env = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return {"env": env, "blas": [b["threads"] for b in blas_libraries()], "torch": torch_info,
            "cpus": os.cpu_count()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--repeats", type=int, default=30, help="timed steps per contender")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--embd", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--gen-long", type=int, default=200, help="new tokens of the sliding-window run")
    ap.add_argument("--gen-repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-retain-memory", action="store_true",
                    help="leave glibc's malloc thresholds alone (default: nograd.malloc.retain_freed_memory)")
    ap.add_argument("--shards", type=int, default=None, metavar="K",
                    help="nograd's step data-parallel over K threads, BLAS at 1 thread in it "
                         "(nograd.parallel.ShardedStep); default: as `python -m nograd train` chooses "
                         "for text (nograd.threads.auto_shards: the usable cores for this GPT unless "
                         "the environment sets the threads); 1: the serial step")
    ap.add_argument("--serial-update", action="store_true",
                    help="with --shards: AdamW's update in the calling thread (optimizer.step), not "
                         "spread over the shards' threads")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = ap.parse_args(argv)
    if args.shards is not None and args.shards < 1:
        ap.error(f"--shards must be at least 1, got {args.shards}")
    if args.embd % args.heads:
        ap.error(f"--embd ({args.embd}) must be divisible by --heads ({args.heads})")
    if args.shards is None:                  # the command line's own choice for this model
        from nograd.cli.common import step_flops
        from nograd.threads import auto_shards

        probe = GPT(args.vocab, n_layer=args.layers, n_head=args.heads, n_embd=args.embd,
                    block_size=args.block, dropout=0.0, bias=False, tie_weights=True, rng=0,
                    dtype=np.float32)
        args.shards, args.shards_choice = auto_shards(step_flops(probe, (args.block,), args.batch))
    else:
        args.shards_choice = f"--shards {args.shards}"
    if args.shards == 1:
        args.shards = None
    retained = False
    if not args.no_retain_memory:            # for the whole process: both contenders run under it
        from nograd.malloc import retain_freed_memory

        retained = retain_freed_memory()

    rng = np.random.default_rng(args.seed + 1)
    idx = rng.integers(0, args.vocab, (args.batch, args.block)).astype(np.int64)
    y = rng.integers(0, args.vocab, (args.batch, args.block)).astype(np.int64)
    model, init, ng_step = make_nograd(args)
    torch_step, torch_loss, torch_info = make_torch(args, init)
    check = None
    if torch_step is not None:                 # same weights, same batch: the first losses agree
        ng_loss = float(softmax_cross_entropy(model.forward(idx, train=True)[0], y)[0])
        th_loss = torch_loss(idx, y).item()
        check = {"nograd": ng_loss, "torch": th_loss, "abs_diff": abs(ng_loss - th_loss),
                 "ok": abs(ng_loss - th_loss) <= 1e-4}
    contenders = {"nograd": ng_step, "gemm_bound": make_gemm_bound(args)}
    if torch_step is not None:
        contenders["torch"] = torch_step
    # each contender runs its warm-up and repeats in one block: interleaving single steps lets
    # torch's OpenMP pool and OpenBLAS's threads spin against each other on the shared cores
    times = {k: [] for k in contenders}
    for k, step in contenders.items():
        for i in range(args.warmup + args.repeats):
            t0 = time.perf_counter()
            step(idx, y)
            if i >= args.warmup:
                times[k].append(time.perf_counter() - t0)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}

    fill, g = args.block - 1, args.gen_repeats
    gen = {"cache": gen_rate(model, fill, True, g, args.seed), "nocache": gen_rate(model, fill, False, g, args.seed),
           "slide_cache": gen_rate(model, args.gen_long, True, g, args.seed),
           "slide_nocache": gen_rate(model, args.gen_long, False, g, args.seed)}
    torch_ms = ms.get("torch")
    res = {
        "benchmark": "gpt_step", "vocab": args.vocab, "layers": args.layers, "heads": args.heads,
        "embd": args.embd, "block": args.block, "batch": args.batch, "dtype": "float32",
        "repeats": args.repeats,
        "nograd_ms": round(ms["nograd"], 3), "gemm_bound_ms": round(ms["gemm_bound"], 3),
        "torch_ms": None if torch_ms is None else round(torch_ms, 3),
        "ratio_gemm": round(ms["nograd"] / ms["gemm_bound"], 3),
        "ratio_torch": None if torch_ms is None else round(ms["nograd"] / torch_ms, 3),
        "first_loss_check": check,
        "gen_new_tokens": fill, "gen_long_new_tokens": args.gen_long,
        "gen_tokens_per_s_cache": round(gen["cache"], 1), "gen_tokens_per_s_nocache": round(gen["nocache"], 1),
        "gen_slide_tokens_per_s_cache": round(gen["slide_cache"], 1),
        "gen_slide_tokens_per_s_nocache": round(gen["slide_nocache"], 1),
        "threads": thread_settings(torch_info), "numpy": np.__version__, "retain_memory": retained,
        "shards": args.shards, "shards_choice": args.shards_choice, "serial_update": bool(args.serial_update), "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    res["nograd_blas_threads_in_step"] = 1 if args.shards else res["threads"]["blas"]
    print(f"GPT V={args.vocab} L={args.layers} H={args.heads} E={args.embd} T={args.block} B={args.batch}, "
          f"float32, median of {args.repeats} steps (forward, loss, backward, AdamW)")
    th = res["threads"]
    print(f"threads: BLAS {th['blas']}, env {th['env']}, {torch_info or 'torch not installed'}; "
          f"freed memory {'retained' if retained else 'returned (glibc defaults)'}")
    if args.shards:
        print(f"nograd forward/backward sharded over {args.shards} threads (nograd.parallel.ShardedStep), "
              f"BLAS at 1 thread inside it; load average {res['load_average']}")
    if check is not None:
        print(f"first loss: nograd {check['nograd']:.6f}  torch {check['torch']:.6f}  "
              f"|diff| {check['abs_diff']:.2e}  {'OK' if check['ok'] else 'MISMATCH'} (tolerance 1e-4)")
    print(f"{'contender':<12}{'ms/step':>10}{'nograd/x':>10}")
    for k, v in ms.items():
        print(f"{k:<12}{v:>10.2f}{ms['nograd'] / v:>10.2f}")
    if torch_ms is None:
        print("torch not installed: no PyTorch comparison")
    print(f"{'generation (batch 1)':<26}{'cache tok/s':>12}{'no cache tok/s':>16}")
    print(f"{f'{fill} new (window fills)':<26}{gen['cache']:>12.1f}{gen['nocache']:>16.1f}")
    print(f"{f'{args.gen_long} new (window slides)':<26}{gen['slide_cache']:>12.1f}{gen['slide_nocache']:>16.1f}")
    if args.json:
        print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
