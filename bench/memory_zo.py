"""Peak memory above the parameters for one backprop step, one MeZO step and one inference pass.

    python bench/memory_zo.py [--width 4096] [--depth 4] [--batch 256] [--repeats 3] [--json]

The model is an MLP of ``depth`` Linear(width, width)+ReLU blocks and a Linear(width, classes)
head, float32, on a random batch. Three operations, each after an untraced warm-up:

- inference: ``model(x)`` (evaluation mode);
- MeZO step: ``MeZO().step(model, x, y, lr=...)`` — two forward passes at θ ± εz, z regenerated
  from a seed chunk by chunk, parameters perturbed and updated in place (Malladi et al. 2023,
  Algorithm 1); also with ``exact_restore=True`` (bit-for-bit restoration, its side table counted);
- backprop step: ``Backprop().grads`` (forward with caches, backward, a gradient dict) and a plain
  ``SGD.step``.

Memory is measured with Python's ``tracemalloc``: NumPy reports every array allocation to it
(``PyTraceMalloc_Track``), so the peak of traced memory during an operation, minus the traced
memory just before it (model, batch, rule objects), is the extra memory that operation needed:
activations, caches, gradients, temporaries, z chunks. Memory BLAS keeps for itself is not
traced (it is allocated once, the same for all three). Times are medians of ``--repeats`` untraced
runs (the machine's load average is printed beside them, since they are wall-clock times).
The last line with ``--json`` is one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import nograd  # noqa: E402
from _common import MB, measure, wide_mlp  # noqa: E402
from nograd.rules import Backprop, MeZO  # noqa: E402



def operations(model, x, y, seed):
    """name -> a function running one step (returns nothing, keeps nothing)."""
    opt = nograd.SGD(model.params, lr=1e-6)
    bp = Backprop()
    mezo = MeZO(seed=seed)
    exact = MeZO(exact_restore=True, seed=seed)
    info = {}

    def inference():
        model(x)

    def mezo_step():
        mezo.step(model, x, y, lr=1e-6)

    def mezo_exact_step():
        info["restore_entries"] = exact.step(model, x, y, lr=1e-6)["restore_entries"]

    def backprop_step():
        grads, _ = bp.grads(model, x, y)
        opt.step(grads)

    return {"inference": inference, "mezo": mezo_step, "mezo_exact": mezo_exact_step,
            "backprop": backprop_step}, info


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="untraced timing runs per operation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = p.parse_args(argv)
    if min(args.width, args.depth, args.batch, args.classes, args.repeats) < 1:
        p.error("--width, --depth, --batch, --classes and --repeats must be positive")

    model, x, y = wide_mlp(args.width, args.depth, args.classes, args.batch, args.seed)
    ops, extra = operations(model, x, y, args.seed)
    mem, secs = measure(ops, args.repeats)

    params_mb = model.num_params * 4 / MB
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    fig = {"width": args.width, "depth": args.depth, "batch": args.batch,
           "num_params": model.num_params, "params_mb": round(params_mb, 1),
           "inference_mb": round(mem["inference"], 2), "mezo_mb": round(mem["mezo"], 2),
           "mezo_exact_mb": round(mem["mezo_exact"], 2), "backprop_mb": round(mem["backprop"], 2),
           "ratio_mezo_inference": round(mem["mezo"] / mem["inference"], 3),
           "ratio_mezo_exact_inference": round(mem["mezo_exact"] / mem["inference"], 3),
           "ratio_backprop_inference": round(mem["backprop"] / mem["inference"], 2),
           "restore_entries": extra.get("restore_entries"),
           "inference_s": round(secs["inference"], 3), "mezo_s": round(secs["mezo"], 3),
           "mezo_exact_s": round(secs["mezo_exact"], 3), "backprop_s": round(secs["backprop"], 3),
           "load_average": None if load is None else round(load, 2)}
    rows = [("inference forward", "inference"), ("MeZO step", "mezo"),
            ("MeZO step, exact restore", "mezo_exact"), ("backprop + SGD step", "backprop")]
    print(f"MLP {args.depth}x{args.width} -> {args.classes}, batch {args.batch}, float32: "
          f"{model.num_params:,} parameters ({params_mb:.1f} MiB)")
    print(f"{'operation':<26} {'peak above params (MiB)':>24} {'x inference':>12} {'s/step':>8}")
    for label, key in rows:
        print(f"{label:<26} {mem[key]:>24.2f} {mem[key] / mem['inference']:>12.2f} "
              f"{secs[key]:>8.3f}")
    if extra.get("restore_entries") is not None:
        share = extra["restore_entries"] / model.num_params
        print(f"exact restore kept {extra['restore_entries']:,} entries ({100 * share:.2f} % of "
              f"the parameters) for one probe")
    print(f"ratio MeZO / inference = {fig['ratio_mezo_inference']:.3f} (target <= 1.1); "
          f"load average {fig['load_average']}")
    if args.json:
        print(json.dumps(fig))
    return fig


if __name__ == "__main__":
    main()
