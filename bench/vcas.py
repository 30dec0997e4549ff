"""VCAS against exact backprop: the same model, seed and batches, trained side by side.

    python bench/vcas.py --model {gpt,vit,mlp} [--data SPEC] [--iters N] [--batch-size B]
                         [--lr LR] [--freq F] [--seed S] [--seeds K] [--control] [--nu-search]
                         [--row-overhead K] [--mask-above A]
                         [--blas-threads T] [--plot DIR] [--json]

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
(VCAS backward seconds / exact backward seconds, controller included), ``backward_cpu_ratio`` (the
same in per-thread CPU time, which the load of other processes does not inflate),
``backward_time_ratio_steady``
(the same over the last half of the steps), ``backward_time_ratio_quarters`` (over each quarter of
the run), ``backward_time_ratio_sampled_steps`` (over the steps without a variance measurement),
``controller_time_share`` (the measurements' share of VCAS's backward seconds), the final ratios,
``train_loss_exact``, ``train_loss_vcas`` (the loss of the final weights over the whole training
set: gpt, 10 random batches of it), the thread settings and ``load_average`` (1, 5, 15 min, at
the start and the end of the run).

``--control`` trains a third copy with the exact gradient plus zero-mean noise shaped like SGD
noise, of variance (tau_act + tau_w)·V_s: the most a variance-controlled sampler may add. Its
``loss_control``, ``val_control`` and ``train_loss_control`` show what that much extra variance
does to the metrics (they are noisy at a training loss near zero). ``--seeds K`` runs seeds
``SEED .. SEED+K-1`` and prints one JSON line with the mean of each number over the seeds, its
``range`` (min, max), ``loss_ratio_geomean_vcas`` / ``_control`` (the geometric mean over the
seeds of the loss ratio to exact) and ``runs`` (each seed's numbers); the plot is the first seed's.
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
    ``evaluate(model) -> (val, train_loss)``: the val loss for gpt, the test accuracy otherwise,
    and the training loss over the whole training set (gpt: over 10 random batches of it)."""
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
            est = estimate_loss(model, data, batch_size=32, block_size=64, eval_iters=10,
                                rng=np.random.default_rng(12345))
            return est["val"], est["train"]
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
        train = float(get_loss("cross-entropy")(model(Xtr), ytr)[0])
        return float(np.mean(np.argmax(model(Xte), axis=-1) == yte)), train
    return make, sample, evaluate


def exact_step(model, x, y, loss, opt):
    """Backprop, with the backward pass timed: ``(loss, seconds, cpu_seconds)`` (wall time and
    this thread's CPU time, which other processes' load does not inflate)."""
    out, cache = model.forward(x, train=True)
    value, dout = loss(out, y)
    t0, c0 = time.perf_counter(), time.thread_time()
    _, grads = model.backward(cache, dout, need_dx=False)
    seconds, cpu = time.perf_counter() - t0, time.thread_time() - c0
    opt.step(grads)
    return float(value), seconds, cpu


def budget_step(model, x, y, loss, opt, tau, rng):
    r"""The control run (``--control``): the exact gradient plus zero-mean noise of the variance
    VCAS is allowed to add, :math:`(\tau_{act} + \tau_w) V_s`. The batch is split at random into
    halves A, B; :math:`g = (|A| g_A + |B| g_B)/N` is the exact batch gradient and
    :math:`\sqrt{\tau}\,(g_A - g_B)/2` has mean zero and covariance :math:`\tau` times (about)
    the SGD covariance of the batch gradient, so the noise has the shape of SGD noise. Returns
    the loss."""
    out, cache = model.forward(x, train=True)
    value, dout = loss(out, y)
    n = dout.shape[0]
    perm = rng.permutation(n)
    halves = (perm[: n // 2], perm[n // 2:])
    parts = []
    for h in halves:
        mask = np.zeros((n,) + (1,) * (dout.ndim - 1), dout.dtype)
        mask[h] = n / len(h)                       # the mean loss of the half
        parts.append(model.backward(cache, dout * mask, need_dx=False)[1])
    a, b = len(halves[0]) / n, len(halves[1]) / n
    c = np.sqrt(tau) / 2
    opt.step({k: a * parts[0][k] + b * parts[1][k] + c * (parts[0][k] - parts[1][k])
              for k in parts[0]})
    return float(value)


def probe(model, rule, sample, batch, loss, rng, *, sgd_batches=200, batches=4, draws=100):
    r"""Measure directly, at the rule's current ratios, what VCAS adds (``--probe``): the SGD
    variance :math:`V_s = \mathbb E\lVert g_B - \bar g\rVert^2` over ``sgd_batches`` fresh
    batches, and on ``batches`` batches the added variance :math:`\mathbb E\lVert g_{vcas} -
    g_B\rVert^2` (and of activation sampling alone) over ``draws`` sampled passes each, per
    parameter array and in total (the passes the rule runs: its ``row_overhead`` and
    ``mask_above``), with the controller's estimates on the same batches and the
    bias statistic :math:`K\lVert \overline{g_{vcas}} - g_B\rVert^2/\operatorname{tr}\hat C` of
    each array (about 1 when unbiased, growing with ``draws`` when biased). Uses its own ``rng``;
    the training run is left as it was. Returns a dict of numbers (per-array ones under
    ``arrays``)."""
    from nograd.rules.vcas_walk import Pass, structure

    kind, _, _ = structure(model)
    keys = list(model.params)

    def grads(p):
        return {k: p.grads[k].astype(np.float64) if k in p.grads else np.zeros(v.shape)
                for k, v in model.params.items()}

    def batch_of(x, y):
        out, cache = model.forward(x, train=True, rng=rng)
        return cache, loss(out, y)[1]

    # running sums only (a GPT's gradients are megabytes each): Σg, Σ||g||² over the batches
    g_sum, g_sq = {k: 0.0 for k in keys}, {k: 0.0 for k in keys}
    for _ in range(sgd_batches):
        cache, dout = batch_of(*sample(rng, batch))
        g = grads(Pass("exact", len(dout), {}, {}, None).run(model, kind, cache, dout))
        for k in keys:
            g_sum[k] = g_sum[k] + g[k]
            g_sq[k] += float((g[k] ** 2).sum())
    v_s = {k: g_sq[k] / sgd_batches - float(((g_sum[k] / sgd_batches) ** 2).sum()) for k in keys}
    added = {m: dict.fromkeys(keys, 0.0) for m in ("vcas", "act")}
    bias = {k: [] for k in keys}
    ctl = []
    saved = (rule.s, dict(rule.act_ratio), dict(rule.weight_ratio), len(rule.log))
    for _ in range(batches):
        cache, dout = batch_of(*sample(rng, batch))
        n = len(dout)
        exact = grads(Pass("exact", n, {}, {}, None).run(model, kind, cache, dout))
        for mode in ("vcas", "act"):
            e_sum = {k: 0.0 for k in keys}                   # Σ e, Σ e² (per entry), Σ ||e||²
            e_sq = {k: 0.0 for k in keys}
            e_norm = {k: 0.0 for k in keys}
            for _ in range(draws):
                g = grads(Pass(mode, n, rule.act_ratio, rule.weight_ratio, rng,
                               row_overhead=rule.row_overhead, mask_above=rule.mask_above).run(
                    model, kind, cache, dout))
                for k in keys:
                    e = g[k] - exact[k]
                    e_sum[k] = e_sum[k] + e
                    if mode == "vcas":
                        e_sq[k] = e_sq[k] + e * e
                    e_norm[k] += float((e * e).sum())
            for k in keys:
                added[mode][k] += e_norm[k] / draws / batches
                if mode == "vcas":
                    mean = e_sum[k] / draws
                    tr = float((e_sq[k] - draws * mean ** 2).sum()) / (draws - 1)
                    if tr > 0:
                        bias[k].append(draws * float((mean ** 2).sum()) / tr)
        ctl.append(rule.measure(model, kind, cache, dout, rng)[3])
    if saved != (rule.s, rule.act_ratio, rule.weight_ratio, len(rule.log)):
        raise RuntimeError("the probe changed the rule's state")
    tot = {name: sum(v.values()) for name, v in (("sgd", v_s), ("vcas", added["vcas"]),
                                                    ("act", added["act"]))}
    bias_mean = {k: float(np.mean(v)) for k, v in bias.items() if v}
    return {"s": rule.s, "act_ratio": dict(rule.act_ratio),
            "weight_ratio_mean": float(np.mean(list(rule.weight_ratio.values()))),
            "sgd_var": tot["sgd"], "added_var": tot["vcas"], "added_var_act": tot["act"],
            "added_over_sgd": tot["vcas"] / tot["sgd"], "act_over_sgd": tot["act"] / tot["sgd"],
            "controller_act_over_sgd": [r["act_var"] / r["sgd_var"] for r in ctl],
            "controller_w_over_sgd": [r["w_var"] / r["sgd_var"] for r in ctl],
            "controller_sgd_var": [r["sgd_var"] for r in ctl],
            "bias_stat_max": max(bias_mean.values()), "bias_stat_mean": float(np.mean(
                list(bias_mean.values()))),
            "arrays": {k: {"sgd": v_s[k], "added": added["vcas"][k], "act": added["act"][k],
                           "bias_stat": bias_mean.get(k)} for k in keys}}


def run(args):
    d = {**DEFAULTS[args.model], **{k: v for k, v in vars(args).items()
                                     if k in ("data", "iters", "batch_size", "lr") and v is not None}}
    iters = d["iters"]
    freq = args.freq or max(1, iters // 50)
    make, sample, evaluate = build(args.model, d["data"], args.seed)
    m_exact, m_vcas = make(), make()
    opt_exact, opt_vcas = Adam(m_exact.params, lr=d["lr"]), Adam(m_vcas.params, lr=d["lr"])
    speed = {k: getattr(args, k) for k in ("row_overhead", "mask_above")
             if getattr(args, k, None) is not None}
    rule = get_rule("vcas", freq=freq, seed=args.seed, nu_search=args.nu_search, **speed)
    if args.control:
        m_ctl = make()
        opt_ctl = Adam(m_ctl.params, lr=d["lr"])
        ctl_rng, ctl_tau = np.random.default_rng([args.seed, 3]), rule.tau_act + rule.tau_w
    rule.check_model(m_vcas)
    loss = get_loss("cross-entropy")
    data_rng, rule_rng = np.random.default_rng([args.seed, 1]), np.random.default_rng([args.seed, 2])
    curves = {"exact": [], "vcas": [], "t_exact": [], "t_vcas": [], "c_exact": [], "c_vcas": [],
              "s": [], "nu": [], "rho": [], "ctl": [], "control": []}
    probes = dict.fromkeys(args.probe or ())
    t_start, load_start = time.perf_counter(), os.getloadavg()
    for it in range(iters):
        x, y = sample(data_rng, d["batch_size"])
        v, sec, cpu = exact_step(m_exact, x, y, loss, opt_exact)
        curves["exact"].append(v)
        curves["t_exact"].append(sec)
        curves["c_exact"].append(cpu)
        info = rule.step(m_vcas, x, y, optimizer=opt_vcas, rng=rule_rng)
        curves["vcas"].append(float(info["loss"]))
        curves["t_vcas"].append(info["backward_seconds"])
        curves["c_vcas"].append(info["backward_cpu_seconds"])
        curves["s"].append(info["s"])
        curves["nu"].append(info["weight_ratio"])
        curves["ctl"].append(info["controller"] is not None)
        curves["rho"].append(float(np.mean(list(info["act_ratio"].values()))))
        if args.control:
            curves["control"].append(budget_step(m_ctl, x, y, loss, opt_ctl, ctl_tau, ctl_rng))
        if it + 1 in probes:
            probes[it + 1] = probe(m_vcas, rule, sample, d["batch_size"], loss,
                                   np.random.default_rng([args.seed, 4, it]))
            p = probes[it + 1]
            print(f"probe it {it + 1}: added/SGD variance {p['added_over_sgd']:.4f} (activation "
                  f"sampling alone {p['act_over_sgd']:.4f}); bias statistic max "
                  f"{p['bias_stat_max']:.2f}", file=sys.stderr, flush=True)
        if not args.json and (it + 1) % max(1, iters // 10) == 0:
            tot = rule.totals
            print(f"it {it + 1:5d}  loss exact {v:.4f}  vcas {info['loss']:.4f}  s {rule.s:.2f}  "
                  f"nu {info['weight_ratio']:.3f}  bp FLOPs {tot['bp_flops'] / tot['bp_flops_exact']:.3f}"
                  f"  ({time.perf_counter() - t_start:.0f} s)", flush=True)
    tail = max(1, iters // 20)
    tot = rule.totals
    half = iters // 2
    (val_exact, train_exact), (val_vcas, train_vcas) = evaluate(m_exact), evaluate(m_vcas)
    res = {"model": args.model, "data": d["data"], "iters": iters, "batch_size": d["batch_size"],
           "lr": d["lr"], "freq": freq, "nu_search": args.nu_search, "seed": args.seed,
           "row_overhead": rule.row_overhead, "mask_above": rule.mask_above,
           "loss_exact": float(np.mean(curves["exact"][-tail:])),
           "loss_vcas": float(np.mean(curves["vcas"][-tail:])),
           "val_metric": "val_loss" if args.model == "gpt" else "test_accuracy",
           "val_exact": val_exact, "val_vcas": val_vcas,
           "train_loss_exact": train_exact, "train_loss_vcas": train_vcas,
           "bp_flops_reduction": 1 - tot["bp_flops"] / tot["bp_flops_exact"],
           "train_flops_reduction": 1 - (tot["forward_flops"] + tot["bp_flops"])
           / (tot["forward_flops"] + tot["bp_flops_exact"]),
           "backward_time_ratio": sum(curves["t_vcas"]) / sum(curves["t_exact"]),
           "backward_time_ratio_steady": sum(curves["t_vcas"][half:]) / sum(curves["t_exact"][half:]),
           "backward_cpu_ratio": sum(curves["c_vcas"]) / sum(curves["c_exact"]),
           "backward_time_ratio_sampled_steps": _ratio_where(curves, False),
           "backward_time_ratio_quarters": [
               float(np.sum(np.take(curves["t_vcas"], q)) / np.sum(np.take(curves["t_exact"], q)))
               for q in np.array_split(np.arange(iters), 4) if len(q)],
           "controller_time_share": float(np.dot(curves["ctl"], curves["t_vcas"]) / sum(curves["t_vcas"])),
           "final_s": rule.s, "final_act_ratio_mean": float(np.mean(list(rule.act_ratio.values()))),
           "final_weight_ratio_mean": float(np.mean(list(rule.weight_ratio.values()))),
           "controller_steps": tot["controller_steps"],
           "blas": [lib.get("threads") for lib in blas_libraries()],
           "blas_threads_arg": args.blas_threads, "seconds": time.perf_counter() - t_start,
           "load_average": [list(load_start), list(os.getloadavg())]}
    if probes:
        res["probe"] = probes
    if args.control:
        val_ctl, train_ctl = evaluate(m_ctl)
        res.update(control_tau=ctl_tau, loss_control=float(np.mean(curves["control"][-tail:])),
                   val_control=val_ctl, train_loss_control=train_ctl)
    return res, curves


SUMMED = ("loss_exact", "loss_vcas", "val_exact", "val_vcas", "train_loss_exact", "train_loss_vcas",
          "loss_control", "val_control", "train_loss_control", "bp_flops_reduction",
          "train_flops_reduction", "backward_time_ratio", "backward_time_ratio_steady",
          "backward_cpu_ratio",
          "backward_time_ratio_sampled_steps", "controller_time_share", "final_s",
          "final_act_ratio_mean", "final_weight_ratio_mean")


def over_seeds(runs):
    """One result from the runs of several seeds: each number of :data:`SUMMED` is the mean over
    the seeds, ``range`` has its ``[min, max]``, ``loss_ratio_geomean`` the geometric mean of
    ``loss_vcas / loss_exact`` (and of the control's), ``runs`` the per-seed results."""
    res = dict(runs[0])
    res["seed"] = [r["seed"] for r in runs]
    res["range"] = {}
    for k in SUMMED:
        if k in runs[0]:
            v = [r[k] for r in runs]
            res[k], res["range"][k] = float(np.mean(v)), [float(min(v)), float(max(v))]
    for name in ("vcas", "control"):
        if f"loss_{name}" in runs[0]:
            res[f"loss_ratio_geomean_{name}"] = float(np.exp(np.mean(
                [np.log(r[f"loss_{name}"] / r["loss_exact"]) for r in runs])))
    res["seconds"] = float(sum(r["seconds"] for r in runs))
    res["runs"] = [{k: r[k] for k in ("seed",) + SUMMED if k in r} for r in runs]
    return res


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
    if curves["control"]:
        ax[0].plot(smooth(curves["control"]), label=f"exact + {res['control_tau']:g}·V_s noise",
                   alpha=0.6, ls="--")
    ax[0].set(xlabel="iteration", ylabel=f"training loss (mean of {w})",
              title=f"{res['model']} (seed {res['seed']})", yscale="log")
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
    p.add_argument("--row-overhead", type=float, default=None,
                   help="VCAS(row_overhead=...): 0 samples every weight gradient with nu < 1")
    p.add_argument("--mask-above", type=float, default=None,
                   help="VCAS(mask_above=...): above 1 always gathers the kept samples")
    p.add_argument("--probe", default=None, metavar="IT,IT,...",
                   type=lambda v: [int(t) for t in v.split(",")],
                   help="at these iterations measure directly the variance VCAS adds, per array")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1,
                   help="run seeds SEED .. SEED+SEEDS-1 and report means, ranges and each run")
    p.add_argument("--control", action="store_true",
                   help="also train exact + (tau_act + tau_w)·V_s of SGD-shaped noise (the budget)")
    p.add_argument("--blas-threads", type=int, default=1)
    p.add_argument("--plot", default=None, metavar="DIR", help="write the loss curves to DIR")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    for name in ("iters", "batch_size", "freq", "blas_threads", "seeds"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    set_blas_threads(args.blas_threads)
    runs, curves = [], None
    for seed in range(args.seed, args.seed + args.seeds):
        res, c = run(argparse.Namespace(**{**vars(args), "seed": seed}))
        runs.append(res)
        curves = c if curves is None else curves
        if args.seeds > 1:
            print(f"seed {seed}: " + "  ".join(f"{k} {res[k]:.4g}" for k in SUMMED if k in res),
                  file=sys.stderr, flush=True)
    if args.plot:
        runs[0]["plot"] = plot(curves, runs[0], args.plot)
    res = runs[0] if len(runs) == 1 else over_seeds(runs)
    if not args.json:
        print(f"threads: BLAS {res['blas']} (--blas-threads {args.blas_threads})")
        for k in SUMMED:
            if k in res:
                print(f"{k:34s} {res[k]:.4f}" + (f"  (seeds: {res['range'][k][0]:.4f} .. "
                                                  f"{res['range'][k][1]:.4f})" if "range" in res else ""))
    else:
        print(f"threads: BLAS {res['blas']} (--blas-threads {args.blas_threads})", file=sys.stderr)
        print(json.dumps(res))


if __name__ == "__main__":
    main()
