"""PosetPool2d forward + backward against MaxPool2d (and AvgPool2d) on the same batch.

    python bench/poset_pool.py [--shape 64,64,64,64] [--repeats 9] [--json]

Times one ``forward`` and one ``backward`` of each layer (input validation included, as in
training) on a float32 batch, N×C×H×W = 64×64×64×64 by default, for MaxPool2d(2), AvgPool2d(2)
and PosetPool2d with each of the 16 posets on four points. The layers run interleaved — every
repeat times each layer once, in a rotated order — so the load of a shared machine falls on all of
them alike; the figures are medians. ``posetpool_over_maxpool`` is the largest, over the 16
posets, of the median poset time over the median MaxPool2d time (the target is ≤ 2). The NumPy
reference of the poset kernels is timed once on a slice, scaled, to show what the kernel earns.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from nograd.layers import AvgPool2d, MaxPool2d, PosetPool2d, four_point_posets  # noqa: E402


def step(layer, x, dy):
    """Seconds of forward and of backward."""
    t0 = time.perf_counter()
    y, cache = layer.forward(x)
    t1 = time.perf_counter()
    layer.backward(cache, dy)
    return t1 - t0, time.perf_counter() - t1


def reference_seconds(layer, x, dy, parts=16):
    """The NumPy reference on 1/parts of the batch, times parts."""
    from nograd.kernels import poset_ref as R
    xs = x[: max(1, len(x) // parts)]
    scale = len(x) / len(xs)
    N, C, OH, OW = layer.output_shape(xs.shape)
    y, arg = np.empty((N, C, OH, OW), xs.dtype), np.empty((N, C, OH, OW), layer._arg_dtype)
    t0 = time.perf_counter()
    R.posetpool_forward(xs, *layer._geometry(), OH, OW, *layer._table, y, arg)
    R.posetpool_backward(dy[: len(xs)], arg, *layer._geometry(), np.empty_like(xs))
    return (time.perf_counter() - t0) * scale


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="64,64,64,64", help="N,C,H,W of the float32 batch")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = ap.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    if len(shape) != 4 or min(shape) < 1 or args.repeats < 1:
        ap.error("--shape needs four positive sizes N,C,H,W and --repeats at least 1")
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal(shape).astype(np.float32)
    layers = {"maxpool": MaxPool2d(2), "avgpool": AvgPool2d(2)}
    layers.update({P.name: PosetPool2d(P) for P in four_point_posets()})
    y0, _ = layers["maxpool"].forward(x)
    dy = rng.standard_normal(y0.shape).astype(np.float32)
    for layer in layers.values():                  # compile / load the kernels, touch the memory
        step(layer, x, dy)
    names = list(layers)
    fwd = {k: [] for k in names}
    bwd = {k: [] for k in names}
    for r in range(args.repeats):
        for k in names[r % len(names):] + names[:r % len(names)]:
            f, b = step(layers[k], x, dy)
            fwd[k].append(f)
            bwd[k].append(b)
    med = {k: statistics.median(a + b for a, b in zip(fwd[k], bwd[k])) for k in names}
    ratio = {k: med[k] / med["maxpool"] for k in names}
    posets = [P.name for P in four_point_posets()]
    worst = max(posets, key=ratio.get)
    ref = reference_seconds(layers["N"], x, dy)

    print(f"forward + backward, float32 {'x'.join(map(str, shape))}, median of {args.repeats} "
          f"interleaved repeats")
    print(f"{'layer':<12}{'fwd ms':>9}{'bwd ms':>9}{'total ms':>10}{'/ maxpool':>11}")
    for k in names:
        print(f"{k:<12}{1e3 * statistics.median(fwd[k]):>9.1f}{1e3 * statistics.median(bwd[k]):>9.1f}"
              f"{1e3 * med[k]:>10.1f}{ratio[k]:>11.2f}")
    print(f"\nslowest poset: {worst}, {ratio[worst]:.2f}x MaxPool2d (target <= 2x); "
          f"NumPy reference (N): {1e3 * ref:.0f} ms, {ref / med['N']:.0f}x the kernel")
    if args.json:
        print(json.dumps({
            "shape": list(shape), "dtype": "float32", "repeats": args.repeats,
            "maxpool_ms": round(1e3 * med["maxpool"], 2), "avgpool_ms": round(1e3 * med["avgpool"], 2),
            "posetpool_ms": {p: round(1e3 * med[p], 2) for p in posets},
            "posetpool_over_maxpool": round(ratio[worst], 3), "slowest_poset": worst,
            "posetpool_over_maxpool_by_poset": {p: round(ratio[p], 3) for p in posets},
            "avgpool_over_maxpool": round(ratio["avgpool"], 3),
            "numpy_reference_over_kernel": round(ref / med["N"], 1)}))


if __name__ == "__main__":
    main()
