"""Recurrent networks as delayed traces in St(C), differentiated three ways, then trained.

    python examples/causal_rnn.py [--seed 0] [--steps 300] [--json] [--plot DIR]

1. An Elman RNN and a small LSTM are built as *delayed traces of stateless cells*
   (``nograd.causal.elman`` / ``lstm``): a cell ``[h, x] -> [h', y]`` whose hidden wire is fed
   back through a register that starts at 0.
2. The gradient of a sequence loss is computed three ways and printed side by side:
   D — forward mode through time (the stateful morphism ``D(f)``, no unrolling, one run per
   parameter direction); BPTT — the backward pass of the unrolled network; and central finite
   differences.
3. The Elman RNN and the LSTM are trained with BPTT + Adam to echo their input two steps late
   (``y_t = x_{t-2}``), which needs memory; predicting 0 scores MSE 1.

With ``--json`` the last line is a JSON object of the figures; ``--plot DIR`` writes the training
MSE of every step of both networks to ``DIR/echo_training.png`` (needs matplotlib). Sprunger & Katsumata,
"Differentiable Causal Computations via Delayed Trace", LICS 2019.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nograd.causal import D, as_delayed_trace, elman, lstm  # noqa: E402
from nograd.core.optim import Adam  # noqa: E402


def loss_and_grad_wrt_outputs(ys, target):
    """L = ½ mean (y - target)² and dL/dy."""
    r = ys - target
    return 0.5 * float(np.mean(r * r)), r / r.size


def gradient_three_ways(net, xs, target, h=1e-5):
    """Per parameter array: (BPTT, D, finite differences), each shaped like the parameter."""
    ys, cache = net.forward(xs)
    _, dy = loss_and_grad_wrt_outputs(ys, target)
    _, bptt = net.backward(cache, dy)                     # reverse mode: BPTT
    zero = np.zeros_like(xs)
    out = {}
    for name, p in net.params.items():
        by_d, by_fd = np.zeros_like(p), np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            e = np.zeros_like(p)
            e[idx] = 1.0
            # forward mode through time: run D(f) with the parameter tangent e, input tangent 0
            dys = D(net, {name: e}).run(np.concatenate([xs, zero], 2))[..., net.n_out:]
            by_d[idx] = np.sum(dy * dys)
            old = p[idx]
            p[idx] = old + h
            lp = loss_and_grad_wrt_outputs(net.run(xs), target)[0]
            p[idx] = old - h
            lm = loss_and_grad_wrt_outputs(net.run(xs), target)[0]
            p[idx] = old
            by_fd[idx] = (lp - lm) / (2 * h)
        out[name] = (bptt[name], by_d, by_fd)
    return out


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def show_gradients(title, grads):
    print(f"\n{title}: dL/dθ three ways (first entries of each parameter array)")
    print(f"  {'parameter':<16}{'BPTT':>14}{'D (forward)':>14}{'finite diff':>14}")
    for name, (b, d, f) in grads.items():
        for k in range(min(2, b.size)):
            where = ",".join(str(int(i)) for i in np.unravel_index(k, b.shape))
            print(f"  {name + '[' + where + ']':<16}"
                  f"{b.flat[k]:>14.8f}{d.flat[k]:>14.8f}{f.flat[k]:>14.8f}")
    all_b = np.concatenate([g[0].ravel() for g in grads.values()])
    all_d = np.concatenate([g[1].ravel() for g in grads.values()])
    all_f = np.concatenate([g[2].ravel() for g in grads.values()])
    res = {"params": int(all_b.size), "D_vs_bptt": rel(all_d, all_b),
           "fd_vs_bptt": rel(all_f, all_b)}
    print(f"  over all {res['params']} parameters: max |D - BPTT| / max|BPTT| = "
          f"{res['D_vs_bptt']:.1e}, max |FD - BPTT| / max|BPTT| = {res['fd_vs_bptt']:.1e}")
    return res


def echo_batch(rng, batch, steps, lag=2):
    xs = rng.standard_normal((batch, steps, 1)).astype(np.float32)
    target = np.zeros_like(xs)
    target[:, lag:] = xs[:, :-lag]
    return xs, target


def train(net, rng, steps, lr, curve=None):
    opt = Adam(net.params, lr=lr)
    xt, tt = echo_batch(np.random.default_rng(12345), 256, 30)
    before = loss_and_grad_wrt_outputs(net.run(xt), tt)[0] * 2
    for it in range(steps):
        xs, target = echo_batch(rng, 32, 20)
        ys, cache = net.forward(xs)
        loss, dy = loss_and_grad_wrt_outputs(ys, target)
        if curve is not None:
            curve.append(2 * loss)                        # the batch's MSE before this step
        _, grads = net.backward(cache, dy)                # BPTT
        opt.step(grads)
    after = loss_and_grad_wrt_outputs(net.run(xt), tt)[0] * 2
    return before, after


def main(argv=None):
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=300, help="training steps for each network")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--plot", metavar="DIR", help="write DIR/echo_training.png (DIR is created; "
                    "needs matplotlib)")
    args = ap.parse_args(argv)
    if args.plot:
        from nograd.plotting import plot_dir

        try:
            args.plot = plot_dir(args.plot)
        except (ImportError, ValueError, TypeError) as e:
            ap.error(str(e))
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)

    # 1. the networks, as delayed traces of stateless cells
    nets = {"elman": elman(1, 4, 1, rng=rng, dtype=np.float64),
            "lstm": lstm(1, 3, 1, rng=rng, dtype=np.float64)}
    print("St(C): a recurrent network is dtr^{h0}(cell), the cell a stateless map "
          "[h, x] -> [h', y]")
    for name, net in nets.items():
        cell, h0 = as_delayed_trace(net)
        print(f"  {name:<6} state {net.n_state} wires, h0 = {h0.tolist()}, cell state "
              f"{cell.n_state} wires, {net.num_params} parameters: {', '.join(net.params)}")

    # 2. gradient of a sequence loss three ways
    xs = rng.standard_normal((4, 12, 1))
    target = np.sin(np.cumsum(xs, axis=1))
    report = {}
    for name, net in nets.items():
        report[name] = show_gradients(name, gradient_three_ways(net, xs, target))

    # 3. training with BPTT on the echo task
    print(f"\ntraining to echo the input 2 steps late (Adam, {args.steps} steps of 32 "
          f"sequences of length 20); test MSE, predicting 0 scores 1.0")
    trained = {"elman": elman(1, 16, 1, rng=rng), "lstm": lstm(1, 12, 1, rng=rng)}
    curves = {}
    for name, net in trained.items():
        t1 = time.perf_counter()
        curves[name] = [] if args.plot else None
        before, after = train(net, np.random.default_rng(args.seed + 1), args.steps, lr=0.01,
                              curve=curves[name])
        secs = time.perf_counter() - t1
        report[name].update(mse_before=round(before, 4), mse_after=round(after, 4),
                            train_seconds=round(secs, 2))
        print(f"  {name:<6} test MSE {before:.4f} -> {after:.4f}  ({secs:.1f} s)")

    if args.plot:
        from nograd.plotting import line_plot

        steps = np.arange(1, args.steps + 1)
        path = line_plot({**{f"{name} ({trained[name].num_params} params), BPTT": (steps, c)
                             for name, c in curves.items()},
                          "predicting 0": (steps, np.ones(args.steps))},
                         os.path.join(args.plot, "echo_training.png"), logy=True, markers=False,
                         xlabel="training step (batch of 32 sequences of length 20)",
                         ylabel="batch MSE, echo y_t = x_{t-2}",
                         title="recurrent networks as delayed traces, trained by BPTT (Adam 0.01)")
        print(f"figure: {path}")
    total = time.perf_counter() - t0
    print(f"\ndone in {total:.1f} s")
    if args.json:
        print(json.dumps({"example": "causal_rnn", "seed": args.seed, "steps": args.steps,
                          **report, "seconds": round(total, 2)}))


if __name__ == "__main__":
    main()
