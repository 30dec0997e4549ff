"""Beyond one process on Ray: traffic and speed of seed-only ZO data parallelism and of
layer-parallel local learning (``nograd.distributed``).

    python bench/distributed.py [--steps 6] [--speed-steps 5] [--repeats 3] [--seeds 3]
                                [--parts bytes,zo,lp,acc] [--seed 0] [--quick] [--json]

Runs on a local Ray cluster of 2 CPUs (``ray.init(num_cpus=2)``), every actor with 1 BLAS thread.

1. **Bytes per step.** MeZO data parallel with 2 workers on float32 MLPs of ~1 M and ~10 M
   parameters: the pickled size of every message between the driver and the workers (sent:
   seed, step and the previous step's averaged scalars; received: each worker's projected
   gradients and loss), per step. Beside it, a gradient all-reduce baseline run for real on the
   same models with 2 Ray actors: each worker computes its backprop gradient and sends it, the
   driver averages and sends the mean back (parameter-server form of an all-reduce: 2·W·P·4 bytes;
   a ring all-reduce sends 2·(W−1)·P·4 in all, the same growth in P).
2. **ZO speed-up.** Steps/s of MeZO data parallel with 1 and 2 workers at the same global batch
   (32768 rows) on a compute-bound MLP (256-256-256-10: the forward passes, which split, cost
   ~8x the regeneration of z, which every worker does in full and which does not split);
   ``--repeats`` alternated runs of each, the ratio of the medians.
3. **Layer-parallel throughput.** Samples/s of ``layer_parallel`` (2 stages) for Mono-Forward and
   DFA (delay 1) against the same rule through ``nograd.fit`` in one process (1 and 2 BLAS threads;
   the ratio is taken against the faster), and the overlap: the stages' busy seconds summed over
   the wall-clock seconds (1 = no overlap, 2 = two stages always computing at once).
4. **Layer-parallel accuracy** (``--parts acc``): digits test accuracy of FF, Mono-Forward and DFA
   on 2 stages against the same rule in one process, over ``--seeds`` seeds.

Timings are wall-clock on a shared machine: the load average is printed beside them; ratios are
measured in the same run. The last line with ``--json`` is one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import pickle
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import nograd  # noqa: E402
from nograd.distributed import layer_parallel, zo_data_parallel  # noqa: E402


def wide_mlp(width, depth, classes=10, seed=0):
    """``depth`` × (Linear(width, width), ReLU), then Linear(width, classes); float32."""
    rng = np.random.default_rng(seed)
    layers = []
    for _ in range(depth):
        layers += [nograd.Linear(width, width, rng=rng), nograd.ReLU()]
    layers.append(nograd.Linear(width, classes, rng=rng))
    return nograd.Sequential(*layers)


def n_params(model):
    return int(sum(p.size for p in model.params.values()))


def data(n, width, classes=10, seed=0):
    rng = np.random.default_rng([seed, 1])
    return rng.standard_normal((n, width), dtype=np.float32), rng.integers(0, classes, n)


class GradWorker:
    """All-reduce baseline worker: a replica, a shard, backprop gradients out, the mean in."""

    def __init__(self, model_fn, shard, batch):
        nograd.set_blas_threads(1)
        self.model, self.shard, self.batch = model_fn(), shard, batch
        self.rule = nograd.rules.Backprop()

    def grads(self, step):
        x, y = self.shard
        idx = np.random.default_rng(step).choice(len(x), self.batch, replace=False)
        return self.rule.grads(self.model, x[idx], y[idx])[0]

    def apply(self, mean, lr):
        for k, g in mean.items():
            self.model.params[k] -= np.float32(lr) * g


def allreduce_bytes(ray, model_fn, xy, steps, batch, workers=2):
    """Bytes per step of the gradient exchange, measured on a real run of ``steps`` steps."""
    actor = ray.remote(num_cpus=1)(GradWorker)
    half = len(xy[0]) // workers
    ws = [actor.remote(model_fn, (xy[0][w * half:(w + 1) * half], xy[1][w * half:(w + 1) * half]),
                       batch) for w in range(workers)]
    total = 0
    for t in range(steps):
        grads = ray.get([w.grads.remote(t) for w in ws])
        mean = {k: sum(g[k] for g in grads) / workers for k in grads[0]}
        total += sum(len(pickle.dumps(g, protocol=5)) for g in grads)
        total += workers * len(pickle.dumps(mean, protocol=5))
        ref = ray.put(mean)
        ray.get([w.apply.remote(ref, 1e-3) for w in ws])
    for w in ws:
        ray.kill(w)
    return total / steps


def single_process_seconds(model_fn, rule, xy, epochs, batch, lr, threads):
    model = model_fn()
    with nograd.blas_threads(threads):
        t = time.perf_counter()
        nograd.fit(model, nograd.get_rule(rule), nograd.get_optimizer("adam", model.params, lr=lr),
                   xy, epochs=epochs, batch_size=batch, progress=False, rng=0)
        return time.perf_counter() - t


#: the digits settings of tests/distributed/test_layer_parallel.py: (activation, lr, epochs)
#: and for DFA the delay (0: single-process DFA exactly; 1: the error applied one batch late)
ACC_SETTINGS = {"dfa": ("tanh", 1e-2, 5, 0), "dfa-delay1": ("tanh", 1e-2, 5, 1),
                "mono-forward": ("tanh", 3e-3, 4, 1), "ff": ("relu", 1e-2, 6, 1)}


def accuracy_table(seeds):
    """Test accuracy on the digits (MLP 64-64-64-10, Adam, batch 128) of each rule, layer parallel
    on 2 stages and single process, over ``seeds`` (the rule's seed and the data order)."""
    from nograd.data.embedded import load_digits
    from nograd.metrics import accuracy
    from nograd.train import predictor

    xtr, ytr, xte, yte = load_digits(seed=0)
    out = {}
    for name, (act, lr, epochs, delay) in ACC_SETTINGS.items():
        rule, lp, sp = name.split("-delay")[0], [], []
        for s in range(seeds):
            def make():
                return nograd.models.mlp((64,), 10, rng=np.random.default_rng(s), hidden=(64, 64),
                                         activation=act)
            res = layer_parallel(make(), rule, (xtr, ytr), workers=2, epochs=epochs,
                                 batch_size=128, lr=lr, seed=s, eval_data=(xte, yte), delay=delay)
            lp.append(round(res.accuracy, 4))
            model, single = make(), nograd.get_rule(rule, seed=s)
            nograd.fit(model, single, nograd.get_optimizer("adam", model.params, lr=lr),
                       (xtr, ytr), epochs=epochs, batch_size=128, progress=False, rng=s)
            sp.append(round(float(accuracy(yte, predictor(model, single)(xte))), 4))
        tag = name.replace("-", "_")
        out[f"accuracy_{tag}_layer_parallel"], out[f"accuracy_{tag}_single_process"] = lp, sp
        print(f"{name:>12}: digits test accuracy, layer parallel {lp}, single process {sp}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="steps of the bytes-per-step runs")
    ap.add_argument("--speed-steps", type=int, default=5, help="steps of the speed-up runs")
    ap.add_argument("--parts", default="bytes,zo,lp",
                    help="comma-separated parts to run: bytes, zo (speed-up), lp (layer-parallel "
                         "throughput), acc (layer-parallel accuracy on the digits)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the accuracy part")
    ap.add_argument("--repeats", type=int, default=3,
                    help="alternated 1-worker/2-worker runs of the speed-up (medians taken)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smaller models (a smoke run)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    libs = nograd.blas_libraries()
    print(f"threads: every Ray actor 1 BLAS thread; driver BLAS "
          f"{[(os.path.basename(lib['path']), lib['threads']) for lib in libs]}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; cores {os.cpu_count()}")
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    out = {}
    sizes = {"1m": (1000, 1), "10m": (2236, 2)} if not args.quick else {"1m": (300, 1),
                                                                         "10m": (1000, 1)}
    parts = set(args.parts.split(","))
    for key, (width, depth) in sizes.items() if "bytes" in parts else ():
        fn = functools.partial(wide_mlp, width, depth, seed=args.seed)
        p = n_params(fn())
        xy = data(256, width, seed=args.seed)
        res = zo_data_parallel(fn, "mezo", xy, workers=2, steps=args.steps, batch_size=8,
                               lr=1e-4, seed=args.seed)
        zo = res.bytes_sent_per_step + res.bytes_received_per_step
        ar = allreduce_bytes(ray, fn, xy, 2, 8)
        out[f"params_{key}"] = p
        out[f"zo_bytes_per_step_{key}"] = round(zo, 1)
        out[f"allreduce_bytes_per_step_{key}"] = round(ar)
        print(f"{p:>10,d} params: ZO data parallel {zo:8.0f} B/step   all-reduce {ar:14,.0f} B/step"
              f"   (replicas identical: {len(set(res.replica_hashes)) == 1})")

    # compute-bound: the forward passes cost ∝ batch × P, regenerating z (every worker, in full)
    # ∝ P, so a large batch on a narrow MLP makes the part that splits dominate
    width, depth, batch = (256, 2, 32768) if not args.quick else (128, 1, 256)
    fn = functools.partial(wide_mlp, width, depth, seed=args.seed)
    xy = data(2 * batch, width, seed=args.seed)
    rates = {1: [], 2: []}
    for rep in range(args.repeats) if "zo" in parts else ():      # alternated: the load drifts
        for w in (1, 2):
            res = zo_data_parallel(fn, "mezo", xy, workers=w, steps=args.speed_steps,
                                   batch_size=batch // w, lr=1e-4, seed=args.seed)
            rates[w].append(res.steps_per_second)
            print(f"ZO, {w} worker(s), global batch {batch}: {rates[w][-1]:.2f} steps/s "
                  f"(load {os.getloadavg()[0]:.1f})")
    if rates[1]:
        rates = {w: float(np.median(r)) for w, r in rates.items()}
        out["zo_steps_per_s_1w"] = round(rates[1], 3)
        out["zo_steps_per_s_2w"] = round(rates[2], 3)
        out["zo_speedup_2w"] = round(rates[2] / rates[1], 3)
        print(f"ZO speed-up with 2 workers: {out['zo_speedup_2w']:.2f}x")

    hidden = (1024, 1024, 1024) if not args.quick else (256, 256)
    xy = data(4096 if not args.quick else 1024, 512, seed=args.seed)

    def lp_model():
        return nograd.models.mlp((512,), 10, rng=np.random.default_rng(args.seed), hidden=hidden)

    for rule in ("mono-forward", "dfa") if "lp" in parts else ():
        one = single_process_seconds(lp_model, rule, xy, 1, 256, 1e-3, 1)
        two = single_process_seconds(lp_model, rule, xy, 1, 256, 1e-3, 2)
        res = layer_parallel(lp_model(), rule, xy, workers=2, epochs=1, batch_size=256, lr=1e-3,
                             seed=args.seed, delay=1)
        best = min(one, two)
        ratio = best / res.seconds
        tag = rule.replace("-", "_")
        out[f"layer_parallel_{tag}_samples_per_s"] = round(res.samples_per_second, 1)
        out[f"single_process_{tag}_samples_per_s"] = round(len(xy[0]) / best, 1)
        out[f"layer_parallel_{tag}_speedup"] = round(ratio, 3)
        # > 1 when the stages computed at the same time (their busy times overlap)
        out[f"layer_parallel_{tag}_overlap"] = round(sum(res.stage_seconds) / res.seconds, 3)
        print(f"{rule}: layer parallel (2 stages {res.config['cuts']}) {res.seconds:.2f} s "
              f"(stages busy {[round(v, 2) for v in res.stage_seconds]} s), single process "
              f"{one:.2f} s (1 thread) / {two:.2f} s (2 threads): {ratio:.2f}x "
              f"(load {os.getloadavg()[0]:.1f})")
    if "lp" in parts:
        out["layer_parallel_speedup"] = out["layer_parallel_mono_forward_speedup"]
    if "acc" in parts:
        out.update(accuracy_table(args.seeds))
    out["load_average"] = round(os.getloadavg()[0], 1)
    ray.shutdown()
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
