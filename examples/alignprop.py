"""AlignProp against a DDPO policy gradient: fine-tune the pretrained digits diffusion model to a reward.

    python examples/alignprop.py [--reward classifier|symmetry] [--target-class 0] [--steps 10]
        [--batch 16] [--updates 30] [--pg-factor 5] [--stated-reward R] [--seed 0] [--plot DIR] [--json]

Prabhudesai et al. 2023 (arXiv 2310.03739): LoRA adapters on the U-Net, DDIM with ``--steps``
steps, the reward of the final image backpropagated through the whole chain with every denoiser
call checkpointed and the truncation ``K ~ U{1..steps}`` drawn at each update. The baseline is DDPO
(Black et al. 2023): REINFORCE over the stochastic sampler's (DDIM, η = 1) step likelihoods, the same
LoRA, optimizer and batch, given ``--pg-factor`` times the reward queries AlignProp needed to reach
the stated reward (one query = one image scored). Printed and in the JSON line:

- ``reward_base``, ``reward_alignprop``, ``reward_pg``: mean reward of 64 samples from fixed noise,
  before, after AlignProp and after DDPO *at the same number of queries* as AlignProp used;
- ``queries_alignprop``, ``queries_pg``: queries each needed until the mean training reward of its
  last 3 updates reached ``stated_reward`` (``queries_pg`` is null if DDPO did not reach it within
  its budget; ``pg_budget`` says how many it had);
- ``diversity_*``: the mean pairwise distance of the 64 samples relative to the base model's (a
  collapse to one image gives 0);
- ``mem_ckpt_T``, ``mem_ckpt_4T``, ``mem_full_T``, ``mem_full_4T``: peak traced memory (MiB, as
  bench/memory_zo.py measures it: tracemalloc's peak above the memory before the call) of one
  AlignProp gradient with all ``K = T`` steps backpropagated, with and without checkpointing, at
  ``T = --steps`` and ``4T`` sampling steps.

Weights: the package data written by examples/diffusion_digits.py. ``--plot DIR`` writes sample grids
``base.png``, ``alignprop.png``, ``pg.png`` (NumPy + zlib PNGs). The defaults took 4 minutes on the
shared 2-core machine under a load average of 13, over the 2 minutes an example aims at: DDPO gets 5×
AlignProp's queries (so that not reaching the stated reward shows a ratio of at least 5), and its
run dominates; AlignProp itself took 17 s.
"""
import argparse
import gc
import json
import os
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import nograd  # noqa: E402
from nograd.diffusion import (DDIM, DDPO, AlignProp, ClassifierReward, SymmetryReward, image_grid,  # noqa: E402
                              reward_gradient, write_png)
from nograd.diffusion.pretrained import load_pretrained  # noqa: E402
from nograd.models.diffusion_lora import add_lora, lora_params  # noqa: E402

MB = 1024 * 1024
SHAPE = (1, 8, 8)


def make_reward(name, classifier, target):
    return ClassifierReward(classifier, target) if name == "classifier" else SymmetryReward()


def fresh_model(args, seed):
    unet, clf, schedule, _ = load_pretrained(args.weights)
    add_lora(unet, args.rank, rng=seed)
    return unet, clf, schedule


def evaluate(unet, sampler, reward, noise):
    x = sampler.sample(unet, noise)
    return float(np.mean(reward(x))), x


def diversity(x):
    """Mean pairwise Euclidean distance between the samples ``x (N, ...)``."""
    f = x.reshape(len(x), -1).astype(np.float64)
    sq = (f ** 2).sum(1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * f @ f.T, 0))
    return float(d[np.triu_indices(len(x), 1)].mean())


def reached(curve, target, window=3):
    """Queries spent when the mean reward of the last ``window`` updates first reaches ``target``."""
    for i in range(window - 1, len(curve)):
        if np.mean([r for _, r in curve[i - window + 1:i + 1]]) >= target:
            return curve[i][0]
    return None


def train(method, unet, args, reward, sampler, budget, rng, target, pause_at=None, on_pause=None):
    """Run ``method`` until ``budget`` queries (AlignProp: or until it reaches ``target``); calls
    ``on_pause()`` once when the queries first reach ``pause_at``. Returns [(queries, reward)]."""
    opt = nograd.Adam(lora_params(unet), lr=args.lr if method == "alignprop" else args.pg_lr)
    curve, queries, t0 = [], 0, time.perf_counter()
    rule = (AlignProp(sampler, reward) if method == "alignprop"
            else DDPO(DDIM(sampler.schedule, sampler.steps, eta=1.0), reward))
    while queries < budget:
        info = rule.step(unet, opt, args.batch, SHAPE, rng=rng)
        queries += info["queries"]
        curve.append((queries, info["reward"]))
        if len(curve) % 5 == 0 or queries >= budget:
            print(f"  {method:<9} update {len(curve):>3}  queries {queries:>5}  reward {info['reward']:8.3f}  "
                  f"{time.perf_counter() - t0:6.1f}s", flush=True)
        if pause_at is not None and queries >= pause_at:
            on_pause()
            pause_at = None
        if method == "alignprop" and reached(curve, target) is not None and queries >= args.min_queries:
            break
    return curve


def peak_mb(fn):
    gc.collect()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    gc.collect()
    return (peak - before) / MB


def memory(args, reward, seed):
    unet, _, schedule = fresh_model(args, seed)
    out = {}
    x = np.random.default_rng(seed).standard_normal((args.batch,) + SHAPE).astype(np.float32)
    keys = list(lora_params(unet))
    for label, steps in (("T", args.steps), ("4T", 4 * args.steps)):
        sampler = DDIM(schedule, steps)
        for mode, ckpt in (("ckpt", True), ("full", False)):
            def run():
                reward_gradient(unet, sampler, reward, x, K=steps, checkpoint=ckpt, keys=keys)
            run()                                       # warm-up: lazy imports, kernels
            tracemalloc.start()
            try:
                out[f"mem_{mode}_{label}"] = round(peak_mb(run), 3)
            finally:
                tracemalloc.stop()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reward", choices=["classifier", "symmetry"], default="classifier")
    ap.add_argument("--target-class", type=int, default=0, help="the digit the classifier reward asks for")
    ap.add_argument("--steps", type=int, default=10, help="DDIM sampling steps T")
    ap.add_argument("--batch", type=int, default=16, help="samples (reward queries) per update")
    ap.add_argument("--updates", type=int, default=30, help="the most AlignProp updates")
    ap.add_argument("--min-queries", type=int, default=0, help="AlignProp runs at least this many queries")
    ap.add_argument("--pg-factor", type=float, default=5.0,
                    help="DDPO's budget as a multiple of the queries AlignProp needed")
    ap.add_argument("--stated-reward", type=float, default=None,
                    help="the reward both methods race to (default: -4 for log p(class), -0.1 for symmetry)")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3, help="AlignProp's Adam learning rate")
    ap.add_argument("--pg-lr", type=float, default=3e-3, help="DDPO's Adam learning rate")
    ap.add_argument("--weights", default=None, help="pretrained .npz (default: the package data)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", metavar="DIR", help="write base.png, alignprop.png, pg.png to DIR")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    args = ap.parse_args(argv)
    with nograd.blas_threads(args.threads):
        run(args)


def run(args):
    libs = ", ".join(f"{os.path.basename(d.get('path', '?'))}: {d.get('threads')}" for d in nograd.blas_libraries())
    print(f"BLAS threads: {libs or 'unknown'} (--threads {args.threads}); load average {os.getloadavg()[0]:.1f}",
          flush=True)
    target = args.stated_reward
    if target is None:
        target = -4.0 if args.reward == "classifier" else -0.1
    base, clf, schedule = fresh_model(args, args.seed)
    reward = make_reward(args.reward, clf, args.target_class)
    sampler = DDIM(schedule, args.steps)
    noise = np.random.default_rng(args.seed + 1000).standard_normal((64,) + SHAPE).astype(np.float32)
    r_base, x_base = evaluate(base, sampler, reward, noise)
    div_base = diversity(x_base)
    print(f"{reward!r}, DDIM {args.steps} steps; base reward {r_base:.3f}; stated reward {target}", flush=True)

    t0 = time.perf_counter()
    curve_ap = train("alignprop", base, args, reward, sampler, args.updates * args.batch,
                     np.random.default_rng(args.seed), target)
    secs_ap = time.perf_counter() - t0
    q_ap = reached(curve_ap, target)
    used = curve_ap[-1][0]
    r_ap, x_ap = evaluate(base, sampler, reward, noise)

    pg, _, _ = fresh_model(args, args.seed)
    budget = int(args.pg_factor * (q_ap if q_ap is not None else used))
    at_used = {}

    def pause():                        # DDPO's reward at the queries AlignProp used
        at_used["r"], at_used["x"] = evaluate(pg, sampler, reward, noise)

    t0 = time.perf_counter()
    curve_pg = train("ddpo", pg, args, reward, sampler, max(budget, used), np.random.default_rng(args.seed),
                     None, pause_at=used, on_pause=pause)
    secs_pg = time.perf_counter() - t0
    q_pg = reached(curve_pg, target)
    r_pg, x_pg = at_used["r"], at_used["x"]
    r_pg_end, _ = evaluate(pg, sampler, reward, noise)

    res = {"reward": args.reward, "target_class": args.target_class if args.reward == "classifier" else None,
           "steps": args.steps, "batch": args.batch, "stated_reward": target,
           "reward_base": round(r_base, 4), "reward_alignprop": round(r_ap, 4), "reward_pg": round(r_pg, 4),
           "reward_pg_end": round(r_pg_end, 4), "queries_used": used,
           "queries_alignprop": q_ap, "queries_pg": q_pg, "pg_budget": budget,
           "query_ratio": (None if q_ap is None else
                           round((q_pg if q_pg is not None else budget) / q_ap, 2)),
           "query_ratio_is_lower_bound": q_pg is None,
           "diversity_alignprop": round(diversity(x_ap) / div_base, 3),
           "diversity_pg": round(diversity(x_pg) / div_base, 3),
           "seconds_alignprop": round(secs_ap, 1), "seconds_pg": round(secs_pg, 1),
           "load_average": round(os.getloadavg()[0], 1), "threads": args.threads, "seed": args.seed}
    if not args.no_memory:
        res.update(memory(args, reward, args.seed))
        res["mem_ckpt_4T_over_T"] = round(res["mem_ckpt_4T"] / res["mem_ckpt_T"], 3)
        res["mem_full_4T_over_T"] = round(res["mem_full_4T"] / res["mem_full_T"], 3)
    print(f"\n{'':<22}{'reward':>9}{'queries to ' + str(target):>20}{'diversity':>11}")
    print(f"{'base':<22}{r_base:>9.3f}{'':>20}{1.0:>11.3f}")
    print(f"{'AlignProp':<22}{r_ap:>9.3f}{str(q_ap):>20}{res['diversity_alignprop']:>11.3f}")
    print(f"{'DDPO (same queries)':<22}{r_pg:>9.3f}{(str(q_pg) if q_pg else f'> {budget}'):>20}"
          f"{res['diversity_pg']:>11.3f}")
    if not args.no_memory:
        print(f"peak MiB of one AlignProp gradient (K = T): checkpointed T={args.steps}: {res['mem_ckpt_T']:.2f}, "
              f"4T: {res['mem_ckpt_4T']:.2f} ({res['mem_ckpt_4T_over_T']}x); full T: {res['mem_full_T']:.2f}, "
              f"4T: {res['mem_full_4T']:.2f} ({res['mem_full_4T_over_T']}x)")
    if args.plot:
        os.makedirs(args.plot, exist_ok=True)
        for name, x in (("base", x_base), ("alignprop", x_ap), ("pg", x_pg)):
            write_png(os.path.join(args.plot, f"{name}.png"), image_grid(x[:32], nrow=8))
        print(f"wrote base.png, alignprop.png, pg.png to {args.plot}")
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
