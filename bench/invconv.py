"""InverseConv2d forward solve and full backward against the dense route and an ordinary Conv2d.

    python bench/invconv.py [--sizes 16,32,64,128] [--channels 4] [--kernel 3] [--batch 8]
                            [--repeats 9] [--warm 3] [--block 5] [--dense-max 32] [--cold] [--json]
                            [--plot DIR]

For each image size H = W, on a float32 batch N×C×H×W (C = 4, k = 3, N = 8 by default):

- ``solve``: ``InverseConv2d.forward`` (``z = K⁻¹x`` by forward substitution over anti-diagonals);
- ``backward``: ``InverseConv2d.backward`` (input gradient by the transposed solve, kernel
  gradient from the solved output);
- ``dense``: the route a training step would take without the structured solve — build the
  ``n×n`` matrix (``n = C·H·W``) of the current kernel, ``scipy.linalg.solve_triangular`` for the
  batch, and the transposed solve for the backward (float64 matrix, as LAPACK users do; only up
  to ``--dense-max``, the matrix is ``8n²`` bytes);
- ``conv``: ``Conv2d(C, C, k, padding=k//2)`` forward + backward of the same shape;
- ``inverse``: ``InverseConv2d.inverse`` (``x = K z``, the causal convolution — a flow's sampling
  direction — by the same diagonal runs as the solve).

Figures are medians over turns (the routes take turns, so that load from other jobs falls on all
of them). In a turn a route runs ``--warm`` untimed calls, then ``--block`` timed calls whose
median is the turn's figure: every route is timed in its steady state, as a training loop that
uses only that route would run it. The untimed calls matter: right after the dense route's
``8n²``-byte sweep (134 MB at 32×32) the first call of a fast route is ≈ 3.5× slower and the next
two 1.1–2× (caches and TLB refilled; measured 360, 130–230, 115–150, then 104 µs for the 32×32
solve). ``--warm 1 --block 1`` is the previous single-call interleaving; ``--cold`` times the
first call after the other routes. ``speedup_vs_dense_32`` is dense over
(solve + backward) at 32×32, ``backward_over_forward`` the largest backward/solve ratio,
``slope`` the log-log slope of (solve + backward) time against pixels (1 = linear), and
``solve_over_conv`` the largest solve/conv ratio. ``--plot DIR`` writes ``DIR/scaling.png``: the
medians of every route against the image size on log-log axes (needs matplotlib).
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

from nograd.kernels import invconv_ref  # noqa: E402
from nograd.layers import Conv2d, InverseConv2d  # noqa: E402


def _seconds(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def _conv_step(conv, x, dy):
    return conv.backward(conv.forward(x)[1], dy)


def dense_step(layer, x, dy):
    """Build the dense matrix, solve for the batch, solve the transposed system for the backward."""
    from scipy.linalg import solve_triangular

    N, _, H, W = x.shape
    We, diag = layer._effective(layer.params, np.float64)
    M = invconv_ref.dense(We, diag, H, W)
    u = x.transpose(0, 2, 3, 1).reshape(N, -1).T.astype(np.float64)
    solve_triangular(M, u, lower=True, check_finite=False)
    v = dy.transpose(0, 2, 3, 1).reshape(N, -1).T.astype(np.float64)
    solve_triangular(M, v, lower=True, trans="T", check_finite=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="16,32,64,128")
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--dense-max", type=int, default=32, help="largest H = W for the dense route")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cold", action="store_true", help="no untimed call before each timed call")
    ap.add_argument("--warm", type=int, default=3,
                    help="untimed calls of a route before its timed ones in each turn (default 3)")
    ap.add_argument("--block", type=int, default=5,
                    help="timed calls of one route in a row per turn (their median is the turn's "
                         "figure); 1 interleaves single calls")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    ap.add_argument("--plot", metavar="DIR", help="write DIR/scaling.png, time against image size "
                    "per route (DIR is created; needs matplotlib)")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.block < 1 or args.warm < 0:
        ap.error("--block must be positive and --warm non-negative")
    if min(sizes) < 1 or args.repeats < 1 or args.channels < 1 or args.kernel < 1 or args.batch < 1:
        ap.error("sizes, --channels, --kernel, --batch and --repeats must be positive")
    if args.plot:
        from nograd.plotting import plot_dir

        try:
            args.plot = plot_dir(args.plot)
        except (ImportError, ValueError, TypeError) as e:
            ap.error(str(e))
    rng = np.random.default_rng(args.seed)
    C, k, N = args.channels, args.kernel, args.batch
    inv = InverseConv2d(C, k, rng=rng)
    conv = Conv2d(C, C, k, padding=k // 2, rng=rng)
    rows = {}
    for S in sizes:
        x = rng.standard_normal((N, C, S, S)).astype(np.float32)
        dy = rng.standard_normal(x.shape).astype(np.float32)
        for _ in range(2):                                 # compile, touch the memory
            _, cache = inv.forward(x)
            inv.backward(cache, dy)
            _conv_step(conv, x, dy)
        parts = {"solve": [], "backward": [], "conv": [], "inverse": []}
        inv.inverse(x)
        use_dense = S <= args.dense_max
        if use_dense:
            parts["dense"] = []
            dense_step(inv, x, dy)
        warm = 0 if args.cold else args.warm
        block = 1 if args.cold else args.block
        routes = ["solve", "backward", "conv", "inverse"] + (["dense"] if use_dense else [])
        box = {}
        calls = {
            "solve": lambda: box.update(cache=inv.forward(x)[1]),
            "backward": lambda: inv.backward(box["cache"], dy),
            "conv": lambda: _conv_step(conv, x, dy),
            "inverse": lambda: inv.inverse(x),
            "dense": lambda: dense_step(inv, x, dy),
        }
        calls["solve"]()
        for _ in range(args.repeats):
            for name in routes:
                for _ in range(warm):
                    calls[name]()
                parts[name].append(statistics.median(_seconds(calls[name])[0] for _ in range(block)))
        rows[S] = {key: statistics.median(v) for key, v in parts.items()}

    pix = np.array([S * S for S in sizes], float)
    tot = np.array([rows[S]["solve"] + rows[S]["backward"] for S in sizes])
    slope = float(np.polyfit(np.log(pix), np.log(tot), 1)[0]) if len(sizes) > 1 else float("nan")
    bwd_fwd = max(rows[S]["backward"] / rows[S]["solve"] for S in sizes)
    solve_conv = max(rows[S]["solve"] / rows[S]["conv"] for S in sizes)
    speedup = None
    if 32 in rows and "dense" in rows[32]:
        speedup = rows[32]["dense"] / (rows[32]["solve"] + rows[32]["backward"])

    print(f"InverseConv2d C={C}, k={k}, batch {N}, float32; median of {args.repeats} "
          f"{'cold single calls' if args.cold else f'turns of {args.warm} untimed + {args.block} timed calls'} (ms)")
    print(f"{'H=W':>5}{'solve':>10}{'backward':>10}{'bwd/fwd':>9}{'inverse':>9}{'conv f+b':>10}"
          f"{'solve/conv':>11}{'dense':>11}{'dense/ours':>11}")
    for S in sizes:
        r = rows[S]
        d = r.get("dense")
        dtxt = f"{1e3 * d:>11.1f}{d / (r['solve'] + r['backward']):>11.0f}" if d else f"{'-':>11}{'-':>11}"
        print(f"{S:>5}{1e3 * r['solve']:>10.2f}{1e3 * r['backward']:>10.2f}"
              f"{r['backward'] / r['solve']:>9.2f}{1e3 * r['inverse']:>9.2f}{1e3 * r['conv']:>10.2f}"
              f"{r['solve'] / r['conv']:>11.2f}{dtxt}")
    print(f"\nslope of time vs pixels {slope:.2f} (target <= 1.2); backward/forward <= {bwd_fwd:.2f} "
          f"(target <= 3); solve/conv <= {solve_conv:.2f} (target <= 5)"
          + (f"; {speedup:.0f}x faster than dense at 32x32 (target >= 100)" if speedup else ""))
    if args.plot:
        from nograd.plotting import line_plot

        labels = {"solve": "InverseConv2d solve (forward)", "backward": "InverseConv2d backward",
                  "inverse": "InverseConv2d inverse (sampling)", "conv": "Conv2d forward + backward",
                  "dense": "dense matrix + SciPy triangular solves (f + b)"}
        series = {text: (sizes, [1e3 * rows[S][key] if key in rows[S] else None for S in sizes])
                  for key, text in labels.items() if any(key in rows[S] for S in sizes)}
        path = line_plot(series, os.path.join(args.plot, "scaling.png"), logx=True, logy=True,
                         xlabel="image side H = W (pixels)", ylabel="ms per call (median)",
                         title=f"C={C}, k={k}, batch {N}, float32")
        print(f"figure: {path}")
    if args.json:
        print(json.dumps({
            "channels": C, "kernel": k, "batch": N, "dtype": "float32", "repeats": args.repeats,
            "warm": 0 if args.cold else args.warm, "block": 1 if args.cold else args.block,
            "sizes": sizes,
            "solve_ms": {str(S): round(1e3 * rows[S]["solve"], 3) for S in sizes},
            "backward_ms": {str(S): round(1e3 * rows[S]["backward"], 3) for S in sizes},
            "conv_ms": {str(S): round(1e3 * rows[S]["conv"], 3) for S in sizes},
            "inverse_ms": {str(S): round(1e3 * rows[S]["inverse"], 3) for S in sizes},
            "dense_ms": {str(S): round(1e3 * rows[S]["dense"], 2) for S in sizes if "dense" in rows[S]},
            "speedup_vs_dense_32": None if speedup is None else round(speedup, 1),
            "backward_over_forward": round(bwd_fwd, 3), "slope": round(slope, 3),
            "solve_over_conv": round(solve_conv, 3)}))


if __name__ == "__main__":
    main()
