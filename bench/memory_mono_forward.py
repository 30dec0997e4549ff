"""Peak memory of one training step of a deep, wide MLP: Mono-Forward against backprop.

    python bench/memory_mono_forward.py [--width 1024] [--depth 12] [--batch 512] [--repeats 3] [--json]

The model is ``depth`` blocks Linear(width, width)+ReLU and a Linear(width, classes) output layer,
float32, on a random batch. Four operations, each after an untraced warm-up:

- inference: ``model(x)``;
- backprop step: ``Backprop().grads`` (a forward pass that keeps every layer's cache, the backward
  pass, a gradient dict for every array) and ``SGD.step``;
- Mono-Forward step: ``MonoForward().step`` — each layer's local cross-entropy on its projection
  ``M_i`` (Gong et al. 2025), its update applied at once, its activations and gradients dropped
  before the next layer runs;
- Mono-Forward, grads then step: ``MonoForward().grads`` and one ``SGD.step`` (the rule contract's
  form: the activations are still dropped layer by layer, but every gradient is held at once).

Memory is Python's ``tracemalloc`` (NumPy reports its array allocations to it): the peak of traced
memory during the operation minus the traced memory just before it (model, batch, projections,
optimizer state), i.e. the activations, caches, gradients and temporaries the step needed. Times
are medians of ``--repeats`` untraced runs, wall clock (the load average is printed beside them).
With ``--json`` the last line is one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import nograd  # noqa: E402
from _common import MB, measure, wide_mlp  # noqa: E402
from nograd.rules import Backprop, MonoForward  # noqa: E402



def operations(model, x, y, seed):
    """name -> a function running one step (keeping nothing)."""
    opt = nograd.SGD(model.params, lr=1e-4)
    bp, mf, mf_batched = Backprop(), MonoForward(seed=seed), MonoForward(seed=seed)

    def inference():
        model(x)

    def backprop():
        grads, _ = bp.grads(model, x, y)
        opt.step(grads)

    def mono_forward():
        mf.step(model, x, y, optimizer=opt)

    opt_b = nograd.SGD(model.params, lr=1e-4)        # its own: the two rules' projections share names

    def mono_forward_batched():
        grads, _ = mf_batched.grads(model, x, y)
        mf_batched.add_params_to(opt_b)
        opt_b.step(grads)

    return {"inference": inference, "backprop": backprop, "mono_forward": mono_forward,
            "mono_forward_batched": mono_forward_batched}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="untraced timing runs per operation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = p.parse_args(argv)
    if min(args.width, args.depth, args.batch, args.classes, args.repeats) < 1:
        p.error("--width, --depth, --batch, --classes and --repeats must be positive")

    model, x, y = wide_mlp(args.width, args.depth, args.classes, args.batch, args.seed)
    ops = operations(model, x, y, args.seed)
    mem, secs = measure(ops, args.repeats)

    params_mb = model.num_params * 4 / MB
    act_mb = args.batch * args.width * 4 / MB
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    fig = {"width": args.width, "depth": args.depth, "batch": args.batch,
           "num_params": model.num_params, "params_mb": round(params_mb, 1),
           "activation_mb": round(act_mb, 2),
           **{f"{k}_mb": round(v, 2) for k, v in mem.items()},
           **{f"{k}_s": round(v, 4) for k, v in secs.items()},
           "ratio_backprop_mono_forward": round(mem["backprop"] / mem["mono_forward"], 2),
           "ratio_backprop_mono_forward_batched":
               round(mem["backprop"] / mem["mono_forward_batched"], 2),
           "load_average": None if load is None else round(load, 2)}
    rows = [("inference forward", "inference"), ("backprop + SGD step", "backprop"),
            ("Mono-Forward step", "mono_forward"),
            ("Mono-Forward grads + step", "mono_forward_batched")]
    print(f"MLP {args.depth}x{args.width} -> {args.classes}, batch {args.batch}, float32: "
          f"{model.num_params:,} parameters ({params_mb:.1f} MiB); one activation "
          f"{act_mb:.1f} MiB")
    print(f"{'operation':<28} {'peak above state (MiB)':>23} {'x backprop':>11} {'s/step':>8}")
    for label, key in rows:
        print(f"{label:<28} {mem[key]:>23.1f} {mem[key] / mem['backprop']:>11.2f} "
              f"{secs[key]:>8.3f}")
    print(f"backprop needs {fig['ratio_backprop_mono_forward']:.1f}x the memory of a Mono-Forward "
          f"step ({fig['ratio_backprop_mono_forward_batched']:.1f}x with every gradient held at "
          f"once); load average {fig['load_average']}")
    if args.json:
        print(json.dumps(fig))
    return fig


if __name__ == "__main__":
    main()
