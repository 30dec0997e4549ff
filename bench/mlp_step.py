"""One training step of a 784-1024-1024-10 ReLU MLP (batch 128, float32): nograd beside the
NumPy GEMM lower bound and PyTorch CPU eager (when installed).

    python bench/mlp_step.py [--steps 60] [--warmup 10] [--batch 128] [--repeats 3] [--threads N]
                             [--no-fuse] [--no-feature-major] [--no-retain-memory] [--shards K] [--json]

A step is forward, softmax cross-entropy, backward (no input cotangent for the first layer)
and a plain SGD update. nograd's MLP is a :class:`nograd.layers.FusedSequential`, whose
``Linear → ReLU`` runs add the bias and apply ReLU in one pass over the product and hand their
output to the next Linear feature-major (``W hᵀ``: the same arithmetic, equal to rounding;
``--no-feature-major`` keeps every product batch-major and every number the plain chain's);
``--no-fuse`` builds a plain ``Sequential``; the JSON records ``fuse`` and ``feature_major``.
The GEMM bound (``ratio_gemm``, the issue's figure) times the same matrix products alone (3
forward, 3 for the weight gradients, 2 for the hidden cotangents) taken batch-major (``x Wᵀ``)
on the same arrays; ``gemm_bound_fm`` times them taken as nograd now takes them
(``ratio_gemm_fm``). Figures are medians over
steps; the three contenders are timed in interleaved rounds so that machine noise hits all alike.
``--threads N`` sets NumPy's BLAS threads and PyTorch's intra-op threads to N (default: as the
process starts); the thread settings and the load average are printed and written to the JSON.
The process keeps freed memory for reuse (:func:`nograd.malloc.retain_freed_memory`, as
``bench/gpt_step.py`` and ``bench/cnn_step.py`` do) unless ``--no-retain-memory``; it applies to
all contenders. ``--shards K`` runs nograd's step data-parallel over K threads
(:class:`nograd.parallel.ShardedStep`, BLAS at one thread in the sharded part); the JSON records
``shards``. The last line with ``--json`` is one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import nograd  # noqa: E402
from _common import setup_process, timed  # noqa: E402

SIZES = (784, 1024, 1024, 10)


def make_nograd(seed, shards=None, fuse=True, feature_major=True):
    rng = np.random.default_rng(seed)
    layers = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        layers.append(nograd.Linear(a, b, rng=rng))
        if i < len(SIZES) - 2:
            layers.append(nograd.ReLU())
    net = (nograd.layers.FusedSequential(*layers, feature_major=feature_major) if fuse
           else nograd.Sequential(*layers))
    opt = nograd.SGD(net.params, lr=0.01)
    rule = nograd.Backprop(shards=shards)

    def step(x, y):
        rule.step(net, x, y, optimizer=opt)
    return step


def make_gemm_bound(seed, batch):
    rng = np.random.default_rng(seed)
    Ws = [rng.standard_normal((b, a)).astype(np.float32) for a, b in zip(SIZES[:-1], SIZES[1:])]
    hs = [rng.standard_normal((batch, a)).astype(np.float32) for a in SIZES]

    def step(x, y):
        for i, W in enumerate(Ws):                       # forward: h_{i+1} = h_i W_iᵀ
            hs[i + 1] = (x if i == 0 else hs[i]) @ W.T
        d = hs[-1]
        for i in range(len(Ws) - 1, -1, -1):             # backward: dW_i = d_iᵀ h_i, d_{i-1} = d_i W_i
            _ = d.T @ (x if i == 0 else hs[i])
            if i > 0:
                d = d @ Ws[i]
    return step


def make_gemm_bound_feature_major(seed, batch):
    """The same products with the hidden activations and their cotangents feature-major, as
    nograd's FusedSequential takes them (``h_{i+1}ᵀ = W_i h_iᵀ``, ``d_{i-1}ᵀ = W_iᵀ d_iᵀ``)."""
    rng = np.random.default_rng(seed)
    Ws = [rng.standard_normal((b, a)).astype(np.float32) for a, b in zip(SIZES[:-1], SIZES[1:])]
    last = len(Ws) - 1

    def step(x, y):
        hts = [x.T]
        for i, W in enumerate(Ws[:-1]):
            hts.append(W @ hts[i])
        d = hts[-1].T @ Ws[-1].T                         # the output layer: batch-major
        dt = d.T
        for i in range(last, -1, -1):
            _ = dt @ hts[i].T
            if i > 0:
                dt = Ws[i].T @ dt
    return step


def make_torch(seed):
    try:
        import torch
    except ImportError:
        return None, None
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(SIZES) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    cache = {}

    def step(x, y):
        key = id(x)
        if key not in cache:
            cache.clear()
            cache[key] = (torch.from_numpy(x), torch.from_numpy(y))
        tx, ty = cache[key]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(tx), ty)
        loss.backward()
        opt.step()
    return step, f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def main(argv=None):
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--steps", type=int, default=60, help="timed steps per contender per round")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS threads for NumPy and intra-op threads for PyTorch (default: unchanged)")
    ap.add_argument("--no-retain-memory", action="store_true",
                    help="leave glibc's malloc thresholds alone (default: nograd.malloc.retain_freed_memory)")
    ap.add_argument("--shards", type=int, default=None, metavar="K",
                    help="nograd's step data-parallel over K threads, BLAS at 1 thread in it "
                         "(nograd.parallel.ShardedStep); default: the serial step")
    ap.add_argument("--no-fuse", action="store_true",
                    help="a plain Sequential (default: FusedSequential, Linear → ReLU in one pass)")
    ap.add_argument("--no-feature-major", action="store_true",
                    help="FusedSequential(feature_major=False): every product batch-major")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = ap.parse_args(argv)
    if args.shards is not None and args.shards < 1:
        ap.error(f"--shards must be at least 1, got {args.shards}")
    retained = setup_process(args, ap)   # memory kept for reuse, threads: the whole process

    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.batch, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], args.batch)
    contenders = {"nograd": make_nograd(args.seed, args.shards, not args.no_fuse, not args.no_feature_major),
                  "gemm_bound": make_gemm_bound(args.seed, args.batch),
                  "gemm_bound_fm": make_gemm_bound_feature_major(args.seed, args.batch)}
    torch_step, torch_info = make_torch(args.seed)
    if torch_step is not None:
        contenders["torch"] = torch_step
    for step in contenders.values():
        timed(step, x, y, args.warmup)
    if args.threads is not None:  # again: the warm-up may have loaded another BLAS
        nograd.set_blas_threads(args.threads)
    times = {k: [] for k in contenders}
    for _ in range(args.repeats):
        for k, step in contenders.items():
            times[k] += timed(step, x, y, args.steps)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    torch_ms = ms.get("torch")
    res = {
        "benchmark": "mlp_step", "sizes": list(SIZES), "batch": args.batch, "dtype": "float32",
        "steps": args.steps * args.repeats,
        "nograd_ms": round(ms["nograd"], 3), "gemm_bound_ms": round(ms["gemm_bound"], 3),
        "torch_ms": None if torch_ms is None else round(torch_ms, 3),
        "ratio_gemm": round(ms["nograd"] / ms["gemm_bound"], 3),
        "gemm_bound_fm_ms": round(ms["gemm_bound_fm"], 3),
        "ratio_gemm_fm": round(ms["nograd"] / ms["gemm_bound_fm"], 3),
        "ratio_torch": None if torch_ms is None else round(ms["nograd"] / torch_ms, 3),
        "numpy": np.__version__, "torch": torch_info, "retain_memory": retained,
        "threads": {"blas": [b["threads"] for b in nograd.blas_libraries()],
                    "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"), "torch": torch_info},
        "load_average": [round(v, 2) for v in os.getloadavg()], "shards": args.shards,
        "fuse": not args.no_fuse, "feature_major": not (args.no_fuse or args.no_feature_major),
    }
    print(f"MLP {'-'.join(map(str, SIZES))}, batch {args.batch}, float32, "
          f"median of {args.steps * args.repeats} steps")
    print(f"{'contender':<12}{'ms/step':>10}{'ratio':>10}")
    for k, v in ms.items():
        print(f"{k:<12}{v:>10.2f}{ms['nograd'] / v:>10.2f}")
    print(f"nograd / GEMM bound = {res['ratio_gemm']:.3f}   (target <= 1.15; the products as x Wᵀ)")
    print(f"nograd / GEMM bound, feature-major products = {res['ratio_gemm_fm']:.3f}")
    if torch_ms is not None:
        print(f"nograd / torch      = {res['ratio_torch']:.3f}   (target <= 0.8; {torch_info})")
    else:
        print("torch not installed: no PyTorch comparison")
    print(f"threads: BLAS {res['threads']['blas']} (OPENBLAS_NUM_THREADS={res['threads']['OPENBLAS_NUM_THREADS']}), "
          f"{torch_info or 'no torch'}; load average {res['load_average']}; freed memory "
          f"{'retained' if retained else 'returned (glibc defaults)'}")
    if args.json:
        print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
