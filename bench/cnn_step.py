"""One training step of the reference CNN: nograd beside PyTorch CPU (when installed) and the GEMM
lower bound of the same step, plus batch-1 timing, a per-layer breakdown and Numba compile times.

    python bench/cnn_step.py [--model cnn|resnet] [--algorithm auto|im2col|winograd] [--threads N]
                             [--no-fuse] [--no-retain-memory] [--steps 30] [--repeats 3] [--batch 64]
                             [--shards K] [--batch-stats sync|local] [--json]

The CNN (``--model cnn``, default): input 3×32×32, conv3×3(3→32, pad 1) + ReLU + maxpool 2,
conv3×3(32→64, pad 1) + ReLU + maxpool 2, flatten, linear 4096→10, softmax cross-entropy, SGD;
float32. ``--model resnet``: a small residual CNN on 3×32×32 with batch norm — a 3×3 stem to 16
channels, three residual blocks of two 3×3 convolutions each (16, 32 and 64 channels; the last
two start with stride 2 and have a strided 1×1 convolution on the shortcut), global average
pooling and a linear layer to 10 classes. The GEMM bound times the im2col-shaped matrix products
of the step alone (for every convolution its forward product and weight gradient, and its input
cotangent except for the first layer; the same for the linear layer) — the arithmetic of the
im2col design, whatever ``--algorithm`` runs, so a Winograd win shows as a ratio below 1.
``--algorithm`` sets the Conv2d algorithm of the 3×3 stride-1 convolutions (``im2col`` is the
design before issue 28; ``auto`` the default rule). ``--threads N`` sets NumPy's BLAS threads
and PyTorch's intra-op threads to N (default: as the process starts); the thread settings and
the load average are printed and written to the JSON.
``compile_s`` is the extra time of the first step in a fresh process with an empty Numba cache;
``warm_start_s`` the same with the cache filled by that process.

The reference CNN is built as a :class:`nograd.layers.FusedSequential`, which runs each
Conv2d → ReLU → MaxPool2d(2) as one fused pass (the same numbers as the plain chain); ``--no-fuse``
builds the plain :class:`nograd.Sequential` (the step before the fusion). The residual CNN's
stem chain and block bodies are FusedSequentials too, whose ``BatchNorm2d → ReLU`` pairs run as
one pass in training (``--no-fuse``: plain Sequentials). The per-layer breakdown times each fused
run as one row. The process keeps freed memory for reuse
(:func:`nograd.malloc.retain_freed_memory`, as ``bench/gpt_step.py`` does) unless
``--no-retain-memory``; it applies to both contenders.

``--shards K`` runs nograd's step data-parallel over threads (:class:`nograd.parallel.ShardedStep`):
the batch is split into K shards whose forward, loss and backward run in K Python threads with BLAS
held at one thread during that part of the step (restored for the optimizer update); the gradients
are combined into the whole batch's. The resnet's batch norms then normalise with the whole batch's
statistics, exchanged between the shards (synchronised batch norm: the serial step's numbers up to
rounding). PyTorch and the GEMM bound keep the process's thread settings.
Batch 1 has one shard. The per-layer breakdown is always the serial step's. Without ``--shards``
(and without ``--threads``) the step is the one ``python -m nograd train`` would run: sharded over
the usable cores when it costs 1 GFLOP or more and the environment sets no thread count
(:func:`nograd.threads.auto_shards`; the reference CNN's step is 2.2 GFLOP, the resnet's 4.9), else
serial; ``--shards 1`` is the serial step. The JSON records ``shards`` (null: serial),
``shards_choice`` (why) and ``nograd_blas_threads_in_step``. ``--batch-stats local`` lets each
shard normalise with its own batch statistics (no exchanges; other numbers than the serial step's):
what the exchanges cost, by difference; the JSON records ``batch_stats``.
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
from _common import setup_process, timed  # noqa: E402
from nograd.losses import softmax_cross_entropy  # noqa: E402


def reference_cnn(rng, algorithm="auto", fuse=True):
    conv = nograd.layers.Conv2d
    chain = nograd.layers.FusedSequential if fuse else nograd.Sequential
    return chain(
        conv(3, 32, 3, padding=1, rng=rng, algorithm=algorithm), nograd.ReLU(), nograd.layers.MaxPool2d(2),
        conv(32, 64, 3, padding=1, rng=rng, algorithm=algorithm), nograd.ReLU(), nograd.layers.MaxPool2d(2),
        nograd.Flatten(), nograd.Linear(64 * 8 * 8, 10, rng=rng))


# (in, out, stride) of the residual blocks of --model resnet, after a 3→16 stem at 32×32
RESNET_BLOCKS = ((16, 16, 1), (16, 32, 2), (32, 64, 2))


def reference_resnet(rng, algorithm="auto", fuse=True):
    L = nograd.layers

    def conv3(cin, cout, stride=1):
        return L.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False, rng=rng,
                        algorithm=algorithm if stride == 1 else "im2col")

    chain = L.FusedSequential if fuse else nograd.Sequential     # fused: BatchNorm2d → ReLU pairs
    layers = [conv3(3, 16), L.BatchNorm2d(16), nograd.ReLU()]
    for cin, cout, stride in RESNET_BLOCKS:
        body = chain(conv3(cin, cout, stride), L.BatchNorm2d(cout), nograd.ReLU(),
                     conv3(cout, cout), L.BatchNorm2d(cout))
        short = None if stride == 1 and cin == cout else nograd.Sequential(
            L.Conv2d(cin, cout, 1, stride=stride, bias=False, rng=rng), L.BatchNorm2d(cout))
        layers += [nograd.Residual(body, short), nograd.ReLU()]
    layers += [L.GlobalAvgPool2d(), nograd.Flatten(), nograd.Linear(64, 10, rng=rng)]
    return chain(*layers)


def gemm_shapes(model, batch):
    """(A, B) shapes of the im2col products of one step: forward, weight gradient, input cotangent."""
    def conv(cin, cout, k, L, first=False):
        out = [((cout, cin * k * k), (cin * k * k, batch * L)), ((cout, batch * L), (batch * L, cin * k * k))]
        return out if first else out + [((cin * k * k, cout), (cout, batch * L))]

    if model == "cnn":
        return (conv(3, 32, 3, 1024, True) + conv(32, 64, 3, 256)
                + [((batch, 4096), (4096, 10)), ((10, batch), (batch, 4096)), ((batch, 10), (10, 4096))])
    shapes, side = conv(3, 16, 3, 1024, True), 32
    for cin, cout, stride in RESNET_BLOCKS:
        side //= stride
        shapes += conv(cin, cout, 3, side * side) + conv(cout, cout, 3, side * side)
        if stride != 1 or cin != cout:
            shapes += conv(cin, cout, 1, side * side)
    return shapes + [((batch, 64), (64, 10)), ((10, batch), (batch, 64)), ((batch, 10), (10, 64))]


def make_nograd(seed, model="cnn", algorithm="auto", fuse=True, shards=None, batch_stats="sync"):
    build = reference_cnn if model == "cnn" else reference_resnet
    net = build(np.random.default_rng(seed), algorithm, fuse)
    opt = nograd.SGD(net.params, lr=0.01)
    if shards is not None:                 # forward/loss/backward over `shards` threads, BLAS at 1
        from nograd.parallel import ShardedStep

        sharded = ShardedStep(net, "cross-entropy", shards=shards, batch_stats=batch_stats)

        def step(x, y):
            _, grads = sharded(x, y)
            opt.step(grads)
        return step, net
    rule = nograd.Backprop()

    def step(x, y):
        grads, _ = rule.grads(net, x, y)
        opt.step(grads)
    return step, net


def make_gemm_bound(seed, batch, model="cnn"):
    rng = np.random.default_rng(seed)
    f32 = np.float32
    shapes = gemm_shapes(model, batch)
    mats = [(rng.standard_normal(a).astype(f32), rng.standard_normal(b).astype(f32)) for a, b in shapes]

    def step(x, y):
        for a, b in mats:
            a @ b
    return step


def make_torch(seed, model="cnn"):
    try:
        import torch
    except ImportError:
        return None, None
    torch.manual_seed(seed)
    nn = torch.nn
    if model == "cnn":
        net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                            nn.Linear(4096, 10))
    else:
        class Block(nn.Module):
            def __init__(self, cin, cout, stride):
                super().__init__()
                self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                                          nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                          nn.BatchNorm2d(cout))
                self.short = (nn.Identity() if stride == 1 and cin == cout else
                              nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

            def forward(self, x):
                return torch.relu(self.body(x) + self.short(x))

        net = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                            *[Block(*b) for b in RESNET_BLOCKS], nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(64, 10))
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
    """Median forward and backward milliseconds of each layer inside the training step (a fused
    run of a FusedSequential as one row, named by its layers joined with '+')."""
    kids = list(net)
    runs = net.groups() if hasattr(net, "groups") else [(i, i + 1) for i in range(len(kids))]
    blocks = [kids[a] if b - a == 1 else nograd.layers.FusedSequential(*kids[a:b]) for a, b in runs]
    fwd = {i: [] for i in range(len(blocks))}
    bwd = {i: [] for i in range(len(blocks))}
    for _ in range(n):
        h, caches = x, []
        for i, layer in enumerate(blocks):
            t = time.perf_counter()
            h, c = layer.forward(h, train=True)
            fwd[i].append(time.perf_counter() - t)
            caches.append(c)
        _, d = softmax_cross_entropy(h, y)
        for i in range(len(blocks) - 1, -1, -1):
            t = time.perf_counter()
            d, _ = blocks[i].backward(caches[i], d, need_dx=i > 0)
            bwd[i].append(time.perf_counter() - t)
    names = ["+".join(type(k).__name__ for k in kids[a:b]) for a, b in runs]
    return [(names[i], 1e3 * statistics.median(fwd[i]), 1e3 * statistics.median(bwd[i]))
            for i in range(len(blocks))]


def fusion_ab(x, algorithm, n, seed=0):
    """Each conv → ReLU → pool run of the reference CNN timed fused and plain, alternating every
    repetition on the same input and cotangent (medians, ms): ``[(fused fwd, plain fwd, fused bwd,
    plain bwd), ...]``; the first run's backward skips the input cotangent, as in the step."""
    kids = list(reference_cnn(np.random.default_rng(seed), algorithm))
    rng = np.random.default_rng(seed + 1)
    out, h = [], x
    for a in (0, 3):
        fused, plain = nograd.layers.FusedSequential(*kids[a:a + 3]), nograd.Sequential(*kids[a:a + 3])
        y = fused(h)
        dy = rng.standard_normal(y.shape).astype(y.dtype)
        t = {k: [] for k in ("ff", "pf", "fb", "pb")}
        for i in range(2 * n):
            net, key = (fused, "f") if i % 2 == (i // 2) % 2 else (plain, "p")   # alternate who goes first
            t0 = time.perf_counter()
            _, c = net.forward(h, train=True)
            t1 = time.perf_counter()
            net.backward(c, dy, need_dx=a > 0)
            t[key + "f"].append(t1 - t0)
            t[key + "b"].append(time.perf_counter() - t1)
        out.append(tuple(1e3 * statistics.median(t[k]) for k in ("ff", "pf", "fb", "pb")))
        h = y
    return out


FIRST_STEP = """
import sys, time, numpy as np
sys.path.insert(0, {root!r})
sys.path.insert(0, {bench!r})
from cnn_step import make_nograd
step, _ = make_nograd(0, {model!r}, {algorithm!r}, {fuse!r})
x = np.random.default_rng(0).standard_normal(({batch}, 3, 32, 32)).astype(np.float32)
y = np.random.default_rng(1).integers(0, 10, {batch})
t = time.perf_counter(); step(x, y); first = time.perf_counter() - t
ts = []
for _ in range(5):
    t = time.perf_counter(); step(x, y); ts.append(time.perf_counter() - t)
print(first - sorted(ts)[2])
"""


def compile_times(batch, model="cnn", algorithm="auto", fuse=True):
    """(cold, warm): first-step overhead in fresh processes with an empty, then a filled, Numba cache."""
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        code = FIRST_STEP.format(root=ROOT, bench=os.path.dirname(os.path.abspath(__file__)), batch=batch,
                                 model=model, algorithm=algorithm, fuse=fuse)
        runs = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                 check=True)
            runs.append(float(out.stdout.strip().splitlines()[-1]))
    return runs[0], runs[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--model", choices=("cnn", "resnet"), default="cnn")
    ap.add_argument("--algorithm", choices=("auto", "im2col", "winograd"), default="auto",
                    help="Conv2d algorithm of the 3×3 stride-1 convolutions")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS threads for NumPy and intra-op threads for PyTorch (default: unchanged)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-compile", action="store_true", help="skip the compile-time measurement")
    ap.add_argument("--no-fuse", action="store_true",
                    help="build the reference CNN as a plain Sequential (no fused conv/ReLU/pool runs)")
    ap.add_argument("--no-retain-memory", action="store_true",
                    help="leave glibc's malloc thresholds alone (default: nograd.malloc.retain_freed_memory)")
    ap.add_argument("--fusion-ab", type=int, default=0, metavar="N",
                    help="also time each conv/ReLU/pool run fused and plain, alternating, N times each "
                         "(reference CNN, main batch)")
    ap.add_argument("--shards", type=int, default=None, metavar="K",
                    help="nograd's step data-parallel over K threads, BLAS at 1 thread in it "
                         "(nograd.parallel.ShardedStep); default: as `python -m nograd train` chooses "
                         "(without --threads: the usable cores for a step of 1 GFLOP or more, "
                         "nograd.threads.auto_shards; batch norm synchronised); 1: the serial step")
    ap.add_argument("--batch-stats", choices=("sync", "local"), default="sync",
                    help="sharded steps: batch norms with the whole batch's statistics, exchanged "
                         "(sync, default), or each shard's own (local: no exchanges, other numbers)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    fuse = not args.no_fuse
    if args.shards is not None and args.shards < 1:
        ap.error(f"--shards must be at least 1, got {args.shards}")
    args.shards_choice = f"--shards {args.shards}" if args.shards is not None else "serial: --threads"
    if args.shards is None and args.threads is None:      # the command line's own choice
        from nograd.cli.common import step_flops
        from nograd.parallel import check_shardable
        from nograd.threads import auto_shards

        probe = (reference_cnn if args.model == "cnn" else reference_resnet)(
            np.random.default_rng(args.seed), args.algorithm, fuse)
        try:
            check_shardable(probe)
            args.shards, args.shards_choice = auto_shards(step_flops(probe, (3, 32, 32), args.batch))
        except ValueError:
            args.shards_choice = "serial: batch statistics that cannot be synchronised"
    if args.shards == 1:
        args.shards = None
    retained = setup_process(args, ap)   # memory kept for reuse, threads: the whole process
    compile_s = warm_s = None
    if not args.no_compile:
        compile_s, warm_s = compile_times(args.batch, args.model, args.algorithm, fuse)

    rng = np.random.default_rng(args.seed)
    results, breakdown = {}, {}
    for batch in (args.batch, 1):
        x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
        y = rng.integers(0, 10, batch)
        ng_step, net = make_nograd(args.seed, args.model, args.algorithm, fuse, args.shards, args.batch_stats)
        steps = {"nograd": ng_step, "gemm_bound": make_gemm_bound(args.seed, batch, args.model)}
        torch_step, torch_info = make_torch(args.seed, args.model)
        if torch_step is not None:
            steps["torch"] = torch_step
        for s in steps.values():
            timed(s, x, y, args.warmup)
        if args.threads is not None:  # again: the warm-up may have loaded another BLAS
            nograd.set_blas_threads(args.threads)
        times = {k: [] for k in steps}
        for _ in range(args.repeats):
            for k, s in steps.items():
                times[k] += timed(s, x, y, args.steps)
        results[batch] = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        breakdown[batch] = per_layer(net, x, y, args.steps)

    ab = None
    if args.fusion_ab > 0 and args.model == "cnn":
        x = np.random.default_rng(args.seed).standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
        ab = fusion_ab(x, args.algorithm, args.fusion_ab, args.seed)
    main_ms = results[args.batch]
    one_ms = results[1]
    blas = nograd.blas_libraries()
    threads = {"blas": [b["threads"] for b in blas], "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
               "torch": torch_info}
    load = [round(v, 2) for v in os.getloadavg()]
    torch_ms = main_ms.get("torch")
    res = {
        "benchmark": "cnn_step", "model": args.model, "algorithm": args.algorithm, "batch": args.batch, "dtype": "float32", "steps": args.steps * args.repeats,
        "nograd_ms": round(main_ms["nograd"], 3), "torch_ms": None if torch_ms is None else round(torch_ms, 3),
        "gemm_bound_ms": round(main_ms["gemm_bound"], 3),
        "ratio_torch": None if torch_ms is None else round(main_ms["nograd"] / torch_ms, 3),
        "ratio_gemm": round(main_ms["nograd"] / main_ms["gemm_bound"], 3),
        "compile_s": None if compile_s is None else round(compile_s, 2),
        "warm_start_s": None if warm_s is None else round(warm_s, 3),
        "batch1_nograd_ms": round(one_ms["nograd"], 3),
        "batch1_torch_ms": None if "torch" not in one_ms else round(one_ms["torch"], 3),
        "batch1_gemm_bound_ms": round(one_ms["gemm_bound"], 3),
        "per_layer_ms": [{"layer": n, "forward": round(f, 3), "backward": round(b, 3)}
                         for n, f, b in breakdown[args.batch]],
        "batch1_per_layer_ms": [{"layer": n, "forward": round(f, 4), "backward": round(b, 4)}
                                for n, f, b in breakdown[1]],
        "fused": fuse, "retain_memory": retained,
        "fusion_ab_ms": None if ab is None else [
            {"run": i, "fused_forward": round(a[0], 3), "plain_forward": round(a[1], 3),
             "fused_backward": round(a[2], 3), "plain_backward": round(a[3], 3)} for i, a in enumerate(ab)],
        "torch": torch_info, "threads": threads, "load_average": load,
        "shards": args.shards, "shards_choice": args.shards_choice, "nograd_blas_threads_in_step": 1 if args.shards else threads["blas"],
        "batch_stats": args.batch_stats if args.shards else None,
    }
    print(f"reference {args.model} step, float32, Conv2d algorithm={args.algorithm}, "
          f"{'fused' if fuse else 'unfused'} conv/ReLU/pool, median of {res['steps']} steps")
    print(f"{'batch':>6}{'nograd ms':>12}{'torch ms':>12}{'GEMM bound':>12}{'/torch':>9}{'/GEMM':>8}")
    for b, ms in ((args.batch, main_ms), (1, one_ms)):
        t = ms.get("torch")
        print(f"{b:>6}{ms['nograd']:>12.2f}{(t or float('nan')):>12.2f}{ms['gemm_bound']:>12.2f}"
              f"{(ms['nograd'] / t if t else float('nan')):>9.2f}{ms['nograd'] / ms['gemm_bound']:>8.2f}")
    for b in (args.batch, 1):
        print("per layer (batch %d):" % b)
        for n, f, bw in breakdown[b]:
            print(f"  {n:<24} forward {f:7.3f} ms   backward {bw:7.3f} ms")
    if ab is not None:
        print(f"conv/ReLU/pool runs, fused vs plain, alternating, medians of {args.fusion_ab} each (ms):")
        for i, (ff, pf, fb, pb) in enumerate(ab):
            print(f"  run {i}: forward {ff:7.2f} vs {pf:7.2f}   backward {fb:7.2f} vs {pb:7.2f}")
    if compile_s is not None:
        print(f"Numba compile (empty cache): {compile_s:.2f} s; second process, warm cache: {warm_s:.3f} s")
    if args.shards:
        print(f"nograd step sharded over {args.shards} threads (nograd.parallel.ShardedStep), BLAS at 1 "
              f"thread inside it{(', batch norm ' + ('synchronised' if args.batch_stats == 'sync' else 'per shard')) if args.model == 'resnet' else ''}; "
              f"PyTorch and the GEMM bound at the thread settings below")
    print(f"threads: BLAS {threads['blas']} (OPENBLAS_NUM_THREADS={threads['OPENBLAS_NUM_THREADS']}), "
          f"{torch_info or 'no torch'}; load average {load}; freed memory "
          f"{'retained' if retained else 'returned (glibc defaults)'}")
    if args.json:
        print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
