"""Which way round to take a linear layer's product: ``x Wᵀ`` (batch-major output, ``(N, M)``
C-ordered) or ``W xᵀ`` (feature-major: the ``(M, N)`` C-ordered product, handed on as its
transposed view), as :class:`nograd.layers.FusedSequential` does for ``Linear → ReLU`` runs that
feed another Linear (``feature_major=True``).

    python bench/linear_orientation.py [--batches 8,32,128,512,2048] [--repeats 5] [--threads N] [--json]

For each batch ``N`` and layer ``in → out`` (float32), the median time of ``x @ W.T`` and of
``W @ x.T`` (the same products: a hidden layer's input in the feature-major chain is itself the
transposed view, so ``W @ hᵀ`` reads it as it lies), timed in interleaved rounds; the ratio
``feature-major / batch-major`` below 1 is a win. The last line with ``--json`` is one JSON object.
The thresholds ``FEATURE_MAJOR_MIN_FEATURES`` and ``FEATURE_MAJOR_MAX_BATCH`` of
:mod:`nograd.layers.fused` were set from this table (see docs/notes/performance-notes.md).
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

import nograd  # noqa: E402
from _common import setup_process  # noqa: E402

LAYERS = ((784, 1024), (1024, 1024), (128, 384), (256, 4096), (4096, 256), (64, 512), (512, 64),
          (64, 64), (1024, 16), (1024, 10))


def _times(fn, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--batches", default="8,32,128,512,2048", help="comma-separated batch sizes")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads (default: unchanged)")
    ap.add_argument("--no-retain-memory", action="store_true",
                    help="leave glibc's malloc thresholds alone (default: nograd.malloc.retain_freed_memory)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = ap.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        ap.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    if not batches or min(batches) < 1 or args.repeats < 1:
        ap.error("--batches must be positive integers and --repeats at least 1")
    setup_process(args, ap)
    rng = np.random.default_rng(args.seed)
    rows = []
    print(f"{'batch':>6} {'in':>5} {'out':>5} {'x Wᵀ ms':>9} {'W xᵀ ms':>9} {'ratio':>6}")
    for n in batches:
        for a, b in LAYERS:
            W = rng.standard_normal((b, a), dtype=np.float32)
            x = rng.standard_normal((n, a), dtype=np.float32)
            calls = max(3, int(2e8 / (2 * n * a * b + 1)))           # ~0.1 s of products a round
            times = {"batch_major": [], "feature_major": []}
            ops = {"batch_major": lambda: x @ W.T, "feature_major": lambda: W @ x.T}
            for op in ops.values():
                op()
            for _ in range(args.repeats):
                for k, op in ops.items():
                    times[k] += _times(op, calls)
            bm, fm = (1e3 * statistics.median(times[k]) for k in ("batch_major", "feature_major"))
            rows.append({"batch": n, "in": a, "out": b, "batch_major_ms": round(bm, 4),
                         "feature_major_ms": round(fm, 4), "ratio": round(fm / bm, 3)})
            print(f"{n:>6} {a:>5} {b:>5} {bm:>9.3f} {fm:>9.3f} {fm / bm:>6.2f}")
    res = {"benchmark": "linear_orientation", "dtype": "float32", "rows": rows,
           "threads": {"blas": [lib["threads"] for lib in nograd.blas_libraries()],
                       "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")},
           "load_average": [round(v, 2) for v in os.getloadavg()]}
    print(f"threads: BLAS {res['threads']['blas']}; load average {res['load_average']}")
    if args.json:
        print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
