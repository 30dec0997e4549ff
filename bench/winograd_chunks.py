"""Winograd 3×3 convolutions over chunks of images against the whole batch at once, im2col and
PyTorch: forward and backward of one layer, per layer shape of the residual CNN (batch 64).

    python bench/winograd_chunks.py [--batch 64] [--steps 20] [--repeats 3] [--threads 1] [--json]

Each layer is ``Conv2d(C, C, 3, padding=1, bias=False)`` on ``(batch, C, S, S)`` float32, for the
three shapes of ``bench/cnn_step.py --model resnet`` (16 channels at 32×32, 32 at 16×16, 64 at
8×8). Contenders, timed in interleaved rounds (``--repeats``), each figure the median of
``--steps × --repeats`` calls: ``chunked`` (the default, :mod:`nograd.layers.winograd`, chunks of
at most ``CHUNK_BYTES``), ``whole`` (the same code with one chunk for the whole batch: what
chunking saves; with the tile-row kernels this was the algorithm before chunking), ``im2col``, and PyTorch's ``Conv2d`` (forward under ``no_grad``;
backward = forward with autograd + ``backward`` − forward) when torch is installed. ``--threads``
sets BLAS and PyTorch threads (default 1). The last line with ``--json`` is one JSON object.
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
from nograd.layers import winograd as wt  # noqa: E402

SHAPES = ((16, 32), (32, 16), (64, 8))        # (channels, side) of the resnet's 3×3 convolutions
WHOLE = 1 << 62                               # CHUNK_BYTES that puts the whole batch in one chunk


def _ms(fn, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def nograd_ops(x, algorithm, chunk_bytes):
    C = x.shape[1]
    layer = nograd.layers.Conv2d(C, C, 3, padding=1, bias=False, rng=0, algorithm=algorithm)
    y, cache = layer.forward(x, train=True)
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    state = {"cache": cache}

    def fwd():
        wt.CHUNK_BYTES = chunk_bytes
        state["cache"] = layer.forward(x, train=True)[1]

    def bwd():
        wt.CHUNK_BYTES = chunk_bytes
        layer.backward(state["cache"], dy)
    return fwd, bwd


def torch_ops(x):
    try:
        import torch
    except ImportError:
        return None
    C = x.shape[1]
    conv = torch.nn.Conv2d(C, C, 3, padding=1, bias=False)
    tx = torch.from_numpy(x).requires_grad_(True)
    g = torch.ones_like(conv(tx))

    def fwd():
        with torch.no_grad():
            conv(tx)

    def both():
        tx.grad = None
        conv.weight.grad = None
        conv(tx).backward(g)
    return fwd, both


def main(argv=None):
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="timed calls per contender per round")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--threads", type=int, default=1, help="BLAS and PyTorch threads (default 1)")
    ap.add_argument("--no-retain-memory", action="store_true",
                    help="leave glibc's malloc thresholds alone (default: nograd.malloc.retain_freed_memory)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = ap.parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.repeats < 1:
        ap.error("--batch, --steps and --repeats must be at least 1")
    setup_process(args, ap)
    default = wt.CHUNK_BYTES
    rows = []
    try:
        for C, S in SHAPES:
            x = np.random.default_rng(0).standard_normal((args.batch, C, S, S)).astype(np.float32)
            ops = {"chunked": nograd_ops(x, "winograd", default), "whole": nograd_ops(x, "winograd", WHOLE),
                   "im2col": nograd_ops(x, "im2col", default)}
            t = torch_ops(x)
            if t is not None:
                ops["torch"] = t
            for f, b in ops.values():                      # warm-up: kernels, BLAS buffers
                f()
                b()
            times = {k: ([], []) for k in ops}
            for _ in range(args.repeats):
                for k, (f, b) in ops.items():
                    times[k][0].extend(_ms(f, args.steps))
                    times[k][1].extend(_ms(b, args.steps))
            row = {"channels": C, "side": S, "batch": args.batch,
                   "chunks": len(wt.chunks(args.batch, 16 * C * ((S + 1) // 2) ** 2 * 4))}
            for k, (fs, bs) in times.items():
                f, b = 1e3 * statistics.median(fs), 1e3 * statistics.median(bs)
                if k == "torch":                           # its "backward" ran the forward too
                    b -= f
                row[f"{k}_forward_ms"], row[f"{k}_backward_ms"] = round(f, 3), round(b, 3)
            rows.append(row)
    finally:
        wt.CHUNK_BYTES = default
    print(f"3x3 convolutions, batch {args.batch}, float32, {args.threads} thread(s); ms, median of "
          f"{args.steps * args.repeats} calls")
    names = [k for k in ("chunked", "whole", "im2col", "torch") if f"{k}_forward_ms" in rows[0]]
    print(f"{'layer':<14}" + "".join(f"{n + ' fwd':>14}{n + ' bwd':>14}" for n in names))
    for r in rows:
        print(f"{str(r['channels']) + 'ch ' + str(r['side']) + 'x' + str(r['side']):<14}"
              + "".join(f"{r[n + '_forward_ms']:>14.2f}{r[n + '_backward_ms']:>14.2f}" for n in names))
    res = {"benchmark": "winograd_chunks", "chunk_bytes": default, "threads": args.threads,
           "blas": [b["threads"] for b in nograd.blas_libraries()],
           "load_average": [round(v, 2) for v in os.getloadavg()], "layers": rows}
    print(f"load average {res['load_average']}")
    if args.json:
        print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
