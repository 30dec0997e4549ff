"""One training step of the reference CNN: nograd beside PyTorch CPU (when installed) and the GEMM
lower bound of the same step, plus batch-1 timing, a per-layer breakdown and Numba compile times.

    python bench/cnn_step.py [--steps 30] [--repeats 3] [--batch 64] [--json]

The CNN: input 3×32×32, conv3×3(3→32, pad 1) + ReLU + maxpool 2, conv3×3(32→64, pad 1) + ReLU +
maxpool 2, flatten, linear 4096→10, softmax cross-entropy, SGD; float32. The GEMM bound times the
im2col-shaped matrix products of the step alone (3 forward, 3 weight gradients, 2 input cotangents).
``compile_s`` is the extra time of the first step in a fresh process with an empty Numba cache;
``warm_start_s`` the same with the cache filled by that process.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import nograd  # noqa: E402
from _common import timed  # noqa: E402
from nograd.losses import softmax_cross_entropy  # noqa: E402


def reference_cnn(rng):
    return nograd.Sequential(
        nograd.layers.Conv2d(3, 32, 3, padding=1, rng=rng), nograd.ReLU(), nograd.layers.MaxPool2d(2),
        nograd.layers.Conv2d(32, 64, 3, padding=1, rng=rng), nograd.ReLU(), nograd.layers.MaxPool2d(2),
        nograd.Flatten(), nograd.Linear(64 * 8 * 8, 10, rng=rng))


def make_nograd(seed):
    net = reference_cnn(np.random.default_rng(seed))
    opt = nograd.SGD(net.params, lr=0.01)
    rule = nograd.Backprop()

    def step(x, y):
        grads, _ = rule.grads(net, x, y)
        opt.step(grads)
    return step, net


def make_gemm_bound(seed, batch):
    rng = np.random.default_rng(seed)
    f32 = np.float32
    shapes = [  # (A, B) of each product in the step
        ((32, 27), (27, batch * 1024)), ((64, 288), (288, batch * 256)), ((batch, 4096), (4096, 10)),
        ((10, batch), (batch, 4096)), ((batch, 10), (10, 4096)),
        ((64, batch * 256), (batch * 256, 288)), ((288, 64), (64, batch * 256)),
        ((32, batch * 1024), (batch * 1024, 27)),
    ]
    mats = [(rng.standard_normal(a).astype(f32), rng.standard_normal(b).astype(f32)) for a, b in shapes]

    def step(x, y):
        for a, b in mats:
            a @ b
    return step


def make_torch(seed):
    try:
        import torch
    except ImportError:
        return None, None
    torch.manual_seed(seed)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(4096, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    cache = {}

    def step(x, y):
        if id(x) not in cache:
            cache.clear()
            cache[id(x)] = (torch.from_numpy(x), torch.from_numpy(y))
        tx, ty = cache[id(x)]
        opt.zero_grad(set_to_none=True)
        loss_fn(net(tx), ty).backward()
        opt.step()
    return step, f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def per_layer(net, x, y, n):
    """Median forward and backward milliseconds of each layer inside the training step."""
    fwd = {i: [] for i in range(len(net))}
    bwd = {i: [] for i in range(len(net))}
    for _ in range(n):
        h, caches = x, []
        for i, layer in enumerate(net):
            t = time.perf_counter()
            h, c = layer.forward(h, train=True)
            fwd[i].append(time.perf_counter() - t)
            caches.append(c)
        _, d = softmax_cross_entropy(h, y)
        for i in range(len(net) - 1, -1, -1):
            t = time.perf_counter()
            d, _ = net[i].backward(caches[i], d, need_dx=i > 0)
            bwd[i].append(time.perf_counter() - t)
    return [(type(layer).__name__, 1e3 * statistics.median(fwd[i]), 1e3 * statistics.median(bwd[i]))
            for i, layer in enumerate(net)]


FIRST_STEP = """
import sys, time, numpy as np
sys.path.insert(0, {root!r})
sys.path.insert(0, {bench!r})
from cnn_step import make_nograd
step, _ = make_nograd(0)
x = np.random.default_rng(0).standard_normal(({batch}, 3, 32, 32)).astype(np.float32)
y = np.random.default_rng(1).integers(0, 10, {batch})
t = time.perf_counter(); step(x, y); first = time.perf_counter() - t
ts = []
for _ in range(5):
    t = time.perf_counter(); step(x, y); ts.append(time.perf_counter() - t)
print(first - sorted(ts)[2])
"""


def compile_times(batch):
    """(cold, warm): first-step overhead in fresh processes with an empty, then a filled, Numba cache."""
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        code = FIRST_STEP.format(root=ROOT, bench=os.path.dirname(os.path.abspath(__file__)), batch=batch)
        runs = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                 check=True)
            runs.append(float(out.stdout.strip().splitlines()[-1]))
    return runs[0], runs[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-compile", action="store_true", help="skip the compile-time measurement")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    compile_s = warm_s = None
    if not args.no_compile:
        compile_s, warm_s = compile_times(args.batch)

    rng = np.random.default_rng(args.seed)
    results = {}
    for batch in (args.batch, 1):
        x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
        y = rng.integers(0, 10, batch)
        ng_step, net = make_nograd(args.seed)
        steps = {"nograd": ng_step, "gemm_bound": make_gemm_bound(args.seed, batch)}
        torch_step, torch_info = make_torch(args.seed)
        if torch_step is not None:
            steps["torch"] = torch_step
        for s in steps.values():
            timed(s, x, y, args.warmup)
        times = {k: [] for k in steps}
        for _ in range(args.repeats):
            for k, s in steps.items():
                times[k] += timed(s, x, y, args.steps)
        results[batch] = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        if batch == args.batch:
            breakdown = per_layer(net, x, y, args.steps)

    main_ms = results[args.batch]
    one_ms = results[1]
    torch_ms = main_ms.get("torch")
    res = {
        "benchmark": "cnn_step", "batch": args.batch, "dtype": "float32", "steps": args.steps * args.repeats,
        "nograd_ms": round(main_ms["nograd"], 3), "torch_ms": None if torch_ms is None else round(torch_ms, 3),
        "gemm_bound_ms": round(main_ms["gemm_bound"], 3),
        "ratio_torch": None if torch_ms is None else round(main_ms["nograd"] / torch_ms, 3),
        "ratio_gemm": round(main_ms["nograd"] / main_ms["gemm_bound"], 3),
        "compile_s": None if compile_s is None else round(compile_s, 2),
        "warm_start_s": None if warm_s is None else round(warm_s, 3),
        "batch1_nograd_ms": round(one_ms["nograd"], 3),
        "batch1_torch_ms": None if "torch" not in one_ms else round(one_ms["torch"], 3),
        "batch1_gemm_bound_ms": round(one_ms["gemm_bound"], 3),
        "per_layer_ms": [{"layer": n, "forward": round(f, 3), "backward": round(b, 3)} for n, f, b in breakdown],
        "torch": torch_info,
    }
    print(f"reference CNN step, float32, median of {res['steps']} steps")
    print(f"{'batch':>6}{'nograd ms':>12}{'torch ms':>12}{'GEMM bound':>12}{'/torch':>9}{'/GEMM':>8}")
    for b, ms in ((args.batch, main_ms), (1, one_ms)):
        t = ms.get("torch")
        print(f"{b:>6}{ms['nograd']:>12.2f}{(t or float('nan')):>12.2f}{ms['gemm_bound']:>12.2f}"
              f"{(ms['nograd'] / t if t else float('nan')):>9.2f}{ms['nograd'] / ms['gemm_bound']:>8.2f}")
    print("per layer (batch %d):" % args.batch)
    for n, f, b in breakdown:
        print(f"  {n:<12} forward {f:7.2f} ms   backward {b:7.2f} ms")
    if compile_s is not None:
        print(f"Numba compile (empty cache): {compile_s:.2f} s; second process, warm cache: {warm_s:.3f} s")
    if torch_info:
        print(torch_info)
    if args.json:
        print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
