"""Where a Winograd layer's time goes, per kernel layout: the four transforms and the three
products of one forward + backward, for each layer shape of the residual CNN (batch 64).

    python bench/winograd_phases.py [--batch 64] [--repeats 40] [--threads 1] [--json]

For ``Conv2d(C, C, 3, padding=1)`` on ``(batch, C, S, S)`` float32 (16 channels at 32×32, 32 at
16×16, 64 at 8×8) and each layout that can run it — tile rows (:mod:`nograd.kernels.winograd`),
polyphase planes (:mod:`nograd.kernels.winograd_planes`) and channels last
(:mod:`nograd.kernels.winograd_cl`) — the chunk loop of :mod:`nograd.layers.winograd` is run by
hand with each call timed: input transform ``in``, forward product ``M``, output transform
``out`` | cotangent transform ``Z``, weight-gradient product ``dU``, input-cotangent product
``Mx``, input-cotangent transform ``dx``. Figures: ms per layer (summed over the chunks),
median over ``--repeats`` passes; ``*`` marks the layout the layer uses by default. BLAS threads
``--threads`` (default 1). The last line with ``--json`` is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import nograd  # noqa: E402
from nograd.kernels import winograd, winograd_cl, winograd_planes  # noqa: E402
from nograd.layers import winograd as wt  # noqa: E402

SHAPES = ((16, 32), (32, 16), (64, 8))
LAYOUTS = {"tile rows": (winograd, 0), "planes": (winograd_planes, 1), "channels last": (winograd_cl, 0)}
PHASES = ("in", "M", "out", "Z", "dU", "Mx", "dx")


def phases(mod, extra, x, U, dy, repeats):
    """Median ms of each phase over ``repeats`` passes of the chunk loop with kernels ``mod``."""
    N, C, S, _ = x.shape
    K = U.shape[1]
    TH = TW = (S + 1) // 2
    T = TH * (TW + extra)
    cl = getattr(mod, "CHANNELS_LAST", False)
    Ut = np.ascontiguousarray(U.transpose(0, 2, 1))
    bias = np.zeros(K, np.float32)
    y, dx = np.empty((N, K, S, S), np.float32), np.empty_like(x)
    bounds = wt.chunks(N, 16 * max(C, K) * T * 4)
    runs = []
    for _ in range(repeats + 1):                            # the first pass warms up
        t = np.zeros(len(PHASES))
        for n0, n1 in bounds:
            P = (n1 - n0) * T
            v = np.empty((16, P, C) if cl else (16, C, P), np.float32)
            c = [time.perf_counter()]
            mod.input_transform(x[n0:n1], 1, 1, TH, TW, v)
            c.append(time.perf_counter())
            m = np.matmul(v, Ut) if cl else np.matmul(U, v)
            c.append(time.perf_counter())
            mod.output_transform(m, bias, False, TH, TW, y[n0:n1])
            c.append(time.perf_counter())
            Z = mod.cotangent_transform(dy[n0:n1], TH, TW, np.empty_like(m))
            c.append(time.perf_counter())
            np.matmul(Z.transpose(0, 2, 1), v) if cl else np.matmul(Z, v.transpose(0, 2, 1))
            c.append(time.perf_counter())
            mx = np.matmul(Z, U) if cl else np.matmul(Ut, Z)
            c.append(time.perf_counter())
            mod.input_grad_transform(mx, 1, 1, TH, TW, dx[n0:n1])
            c.append(time.perf_counter())
            t += np.diff(c)
        runs.append(t)
    return dict(zip(PHASES, np.round(np.median(np.array(runs[1:]), axis=0) * 1e3, 3).tolist()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = ap.parse_args(argv)
    for name in ("batch", "repeats", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    nograd.set_blas_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    print(f"Winograd phases, batch {args.batch}, float32, {args.threads} BLAS thread(s); ms per layer")
    print(f"{'layer':<14}{'layout':<16}" + "".join(f"{p:>7}" for p in PHASES) + f"{'total':>8}")
    for C, S in SHAPES:
        x = rng.standard_normal((args.batch, C, S, S)).astype(np.float32)
        U = rng.standard_normal((16, C, C)).astype(np.float32)
        dy = rng.standard_normal((args.batch, C, S, S)).astype(np.float32)
        chosen = wt.kernels((S + 1) // 2, C, C)[0]
        for layout, (mod, extra) in LAYOUTS.items():
            ph = phases(mod, extra, x, U, dy, args.repeats)
            total = round(sum(ph.values()), 3)
            rows.append({"channels": C, "side": S, "layout": layout, "default": mod is chosen, **ph, "total": total})
            mark = "*" if mod is chosen else " "
            print(f"{f'{C}ch {S}x{S}':<14}{layout + mark:<16}" + "".join(f"{ph[p]:>7.2f}" for p in PHASES)
                  + f"{total:>8.2f}")
    load = [round(v, 2) for v in os.getloadavg()]
    print(f"load average {load}")
    if args.json:
        print(json.dumps({"benchmark": "winograd_phases", "batch": args.batch, "threads": args.threads,
                          "rows": rows, "load_average": load}))
    return rows


if __name__ == "__main__":
    main()
