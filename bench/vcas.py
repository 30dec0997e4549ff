"""VCAS against exact backprop: the same model, seed and batches, trained side by side.

    python bench/vcas.py --model {gpt,vit,mlp} [--data SPEC] [--iters N] [--batch-size B]
                         [--lr LR] [--freq F] [--seed S] [--blas-threads T] [--plot DIR] [--json]

Two copies of one model (same initial weights) are trained for the same iterations on the same
batches, one with exact backprop (``model.backward``) and one with the ``vcas`` rule (Wang et al.
2024, ICLR, "Efficient Backpropagation with Variance-Controlled Adaptive Sampling"). The steps of
the two runs are interleaved, so both see the same load on a shared machine and their backward
times are comparable. Models: ``gpt`` — the character GPT (4 layers, 4 heads, width 128, block 64,
nanoGPT's small CPU configuration) on ``--data shakespeare``; ``vit`` — a ViT (width 64, depth 4,
2×2 patches, 600 iterations by default) and ``mlp`` — a 64-256-256-256-10 ReLU MLP, both on
``--data digits``. Optimiser: Adam at a constant ``--lr``.

The controller uses the paper's tau_act = tau_w = 0.025, M = 2, alpha = 0.01, beta = 0.95; its
period ``--freq`` defaults to ``iters // 50`` (the reference code's README ties F to the run's
length, 1/50 of the steps; the paper's F = 100 is for runs of thousands of steps).
``--nu-search`` lowers each weight ratio straight to its variance bound at a measurement instead
of one factor beta (not the paper's rule; see ``VCAS(nu_search=...)``).

Printed: a table and, with ``--json``, one JSON line: ``loss_exact``, ``loss_vcas`` (mean training
loss of the last 5 % of steps), ``val_exact``, ``val_vcas`` (val loss for gpt, test accuracy for
vit/mlp), ``bp_flops_reduction`` (1 − VCAS backward FLOPs / exact backward FLOPs over the run,
controller passes included), ``train_flops_reduction`` (forward included), ``backward_time_ratio``
(VCAS backward seconds / exact backward seconds, controller included), ``backward_time_ratio_steady``
(the same over the last half of the steps), ``backward_time_ratio_sampled_steps`` (over the steps
without a variance measurement), ``controller_time_share`` (the measurements' share of VCAS's
backward seconds), the final ratios, and the thread settings.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from nograd.core.losses import get_loss  # noqa: E402
from nograd.core.optim import Adam  # noqa: E402
from nograd.rules import get_rule  # noqa: E402
from nograd.threads import blas_libraries, set_blas_threads  # noqa: E402

DEFAULTS = {"gpt": dict(data="shakespeare", iters=300, batch_size=12, lr=1e-3),
            "vit": dict(data="digits", iters=600, batch_size=64, lr=1e-3),
            "mlp": dict(data="digits", iters=300, batch_size=64, lr=1e-3)}


def build(kind, data_spec, seed):
    """``(make_model, sampler, evaluate)``: a model builder, ``sampler(rng) -> (x, y)`` and
    ``evaluate(model) -> float`` (val loss for gpt, test accuracy otherwise)."""
    if kind == "gpt":
        from nograd.data.text import load_text
        from nograd.models.gpt import GPT
        from nograd.train_lm import estimate_loss

        data = load_text(data_spec)

        def make():
            return GPT(data.vocab.size, n_layer=4, n_head=4, n_embd=128, block_size=64,
                       rng=np.random.default_rng(seed))

        def sample(rng, batch):
            return data.get_batch("train", batch, 64, rng)

        def evaluate(model):
            return estimate_loss(model, data, batch_size=32, block_size=64, eval_iters=10,
                                 rng=np.random.default_rng(12345))["val"]
        return make, sample, evaluate
    if data_spec != "digits":
        raise ValueError(f"--data for --model {kind} must be 'digits', got {data_spec!r}")
    from nograd.data import load_digits

    Xtr, ytr, Xte, yte = load_digits(flatten=(kind == "mlp"))
    if kind == "vit":
        from nograd.models.vit import ViT

        def make():
            return ViT((8, 8), 2, 1, 10, dim=64, depth=4, heads=4, rng=np.random.default_rng(seed))
    else:
        from nograd.core import Sequential
        from nograd.layers import Linear, ReLU

        def make():
            r = np.random.default_rng(seed)
            sizes = (64, 256, 256, 256)
            layers = []
            for a, b in zip(sizes[:-1], sizes[1:]):
                layers += [Linear(a, b, rng=r), ReLU()]
            return Sequential(*layers, Linear(sizes[-1], 10, rng=r))

    def sample(rng, batch):
        i = rng.integers(0, len(Xtr), batch)
        return Xtr[i], ytr[i]

    def evaluate(model):
        return float(np.mean(np.argmax(model(Xte), axis=-1) == yte))
    return make, sample, evaluate


def exact_step(model, x, y, loss, opt):
    """Backprop, with the backward pass timed: ``(loss, seconds)``."""
    out, cache = model.forward(x, train=True)
    value, dout = loss(out, y)
    t0 = time.perf_counter()
    _, grads = model.backward(cache, dout, need_dx=False)
    seconds = time.perf_counter() - t0
    opt.step(grads)
    return float(value), seconds


def run(args):
    d = {**DEFAULTS[args.model], **{k: v for k, v in vars(args).items()
                                     if k in ("data", "iters", "batch_size", "lr") and v is not None}}
    iters = d["iters"]
    freq = args.freq or max(1, iters // 50)
    make, sample, evaluate = build(args.model, d["data"], args.seed)
    m_exact, m_vcas = make(), make()
    opt_exact, opt_vcas = Adam(m_exact.params, lr=d["lr"]), Adam(m_vcas.params, lr=d["lr"])
    rule = get_rule("vcas", freq=freq, seed=args.seed, nu_search=args.nu_search)
    rule.check_model(m_vcas)
    loss = get_loss("cross-entropy")
    data_rng, rule_rng = np.random.default_rng([args.seed, 1]), np.random.default_rng([args.seed, 2])
    curves = {"exact": [], "vcas": [], "t_exact": [], "t_vcas": [], "s": [], "nu": [], "rho": [],
              "ctl": []}
    t_start = time.perf_counter()
    for it in range(iters):
        x, y = sample(data_rng, d["batch_size"])
        v, sec = exact_step(m_exact, x, y, loss, opt_exact)
        curves["exact"].append(v)
        curves["t_exact"].append(sec)
        info = rule.step(m_vcas, x, y, optimizer=opt_vcas, rng=rule_rng)
        curves["vcas"].append(float(info["loss"]))
        curves["t_vcas"].append(info["backward_seconds"])
        curves["s"].append(info["s"])
        curves["nu"].append(info["weight_ratio"])
        curves["ctl"].append(info["controller"] is not None)
        curves["rho"].append(float(np.mean(list(info["act_ratio"].values()))))
        if not args.json and (it + 1) % max(1, iters // 10) == 0:
            tot = rule.totals
            print(f"it {it + 1:5d}  loss exact {v:.4f}  vcas {info['loss']:.4f}  s {rule.s:.2f}  "
                  f"nu {info['weight_ratio']:.3f}  bp FLOPs {tot['bp_flops'] / tot['bp_flops_exact']:.3f}"
                  f"  ({time.perf_counter() - t_start:.0f} s)", flush=True)
    tail = max(1, iters // 20)
    tot = rule.totals
    half = iters // 2
    res = {"model": args.model, "data": d["data"], "iters": iters, "batch_size": d["batch_size"],
           "lr": d["lr"], "freq": freq, "nu_search": args.nu_search, "seed": args.seed,
           "loss_exact": float(np.mean(curves["exact"][-tail:])),
           "loss_vcas": float(np.mean(curves["vcas"][-tail:])),
           "val_metric": "val_loss" if args.model == "gpt" else "test_accuracy",
           "val_exact": evaluate(m_exact), "val_vcas": evaluate(m_vcas),
           "bp_flops_reduction": 1 - tot["bp_flops"] / tot["bp_flops_exact"],
           "train_flops_reduction": 1 - (tot["forward_flops"] + tot["bp_flops"])
           / (tot["forward_flops"] + tot["bp_flops_exact"]),
           "backward_time_ratio": sum(curves["t_vcas"]) / sum(curves["t_exact"]),
           "backward_time_ratio_steady": sum(curves["t_vcas"][half:]) / sum(curves["t_exact"][half:]),
           "backward_time_ratio_sampled_steps": _ratio_where(curves, False),
           "controller_time_share": float(np.dot(curves["ctl"], curves["t_vcas"]) / sum(curves["t_vcas"])),
           "final_s": rule.s, "final_act_ratio_mean": float(np.mean(list(rule.act_ratio.values()))),
           "final_weight_ratio_mean": float(np.mean(list(rule.weight_ratio.values()))),
           "controller_steps": tot["controller_steps"],
           "blas": [lib.get("threads") for lib in blas_libraries()],
           "blas_threads_arg": args.blas_threads, "seconds": time.perf_counter() - t_start}
    return res, curves


def _ratio_where(curves, ctl):
    """VCAS / exact backward seconds over the steps that are (not) controller steps."""
    pick = [c == ctl for c in curves["ctl"]]
    te = sum(t for t, k in zip(curves["t_exact"], pick) if k)
    return sum(t for t, k in zip(curves["t_vcas"], pick) if k) / te if te else float("nan")


def plot(curves, res, folder):
    """Loss curves of both runs (a moving mean) and the ratios VCAS chose, into ``folder``."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib (pip install matplotlib)") from None
    os.makedirs(folder, exist_ok=True)
    w = max(1, len(curves["exact"]) // 30)
    smooth = lambda a: np.convolve(a, np.ones(w) / w, mode="valid")  # noqa: E731
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2), dpi=80)
    ax[0].plot(smooth(curves["exact"]), label="exact backprop")
    ax[0].plot(smooth(curves["vcas"]), label="VCAS", alpha=0.8)
    ax[0].set(xlabel="iteration", ylabel=f"training loss (mean of {w})", title=res["model"])
    ax[0].legend()
    ax[1].plot(curves["s"], label="s (kept norm share)")
    ax[1].plot(curves["rho"], label="mean ρ (samples)")
    ax[1].plot(curves["nu"], label="mean ν (weight rows)")
    ax[1].set(xlabel="iteration", ylim=(0, 1.05),
              title=f"BP FLOPs: {100 * (1 - res['bp_flops_reduction']):.0f} % of exact")
    ax[1].legend()
    fig.tight_layout()
    path = os.path.join(folder, f"{res['model']}.png")
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(DEFAULTS), default="gpt")
    p.add_argument("--data", default=None, help="shakespeare (gpt) or digits (vit, mlp)")
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--freq", type=int, default=None, help="controller period F (default iters // 50)")
    p.add_argument("--nu-search", action="store_true",
                   help="lower the weight ratios to their variance bound at once (not the paper's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--blas-threads", type=int, default=1)
    p.add_argument("--plot", default=None, metavar="DIR", help="write the loss curves to DIR")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    for name in ("iters", "batch_size", "freq", "blas_threads"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    set_blas_threads(args.blas_threads)
    res, curves = run(args)
    if args.plot:
        res["plot"] = plot(curves, res, args.plot)
    if not args.json:
        print(f"threads: BLAS {res['blas']} (--blas-threads {args.blas_threads})")
        for k in ("loss_exact", "loss_vcas", "val_exact", "val_vcas", "bp_flops_reduction",
                  "train_flops_reduction", "backward_time_ratio", "backward_time_ratio_steady",
                  "backward_time_ratio_sampled_steps", "controller_time_share"):
            print(f"{k:28s} {res[k]:.4f}")
    else:
        print(f"threads: BLAS {res['blas']} (--blas-threads {args.blas_threads})", file=sys.stderr)
        print(json.dumps(res))


if __name__ == "__main__":
    main()
