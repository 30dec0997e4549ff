"""Post-training quantization of nograd's MLP, CNN and ViT: COMQ beside GPTQ and round-to-nearest.

    python bench/quantize.py --model {mlp,cnn,vit} [--data digits] [--bits 4,3,2]
        [--methods comq,gptq,rtn] [--granularity channel] [--calib 512] [--repeats 3]
        [--model-file F] [--epochs E] [--seed 0] [--shrink L] [--threads T] [--plot DIR] [--json]

Trains the float model by backprop with Adam (or loads ``--model-file``), then quantizes every
Linear and Conv2d with each method × bit width (:func:`nograd.compress.quantize`), calibrated on
``--calib`` samples drawn from the training split, and measures the test accuracy, the mean
relative reconstruction error over the layers and the methods' own seconds summed over the layers
(the calibration forward passes, the same for all methods, are reported apart). Timings are the
minimum over ``--repeats`` runs, the methods interleaved so that machine noise hits all alike;
Numba's compilation of COMQ's kernel is done (or loaded from its cache) before any timing. The file
sizes are those of the ``.npz`` files :func:`nograd.save_model` writes, quantized against float.
The last line with ``--json`` is one JSON object: ``{"model", "data", "float_accuracy",
"results": [{"method", "bits", "granularity", "accuracy", "recon_error", "seconds", ...}]}``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import scipy.linalg.lapack  # noqa: E402,F401  (loaded before the thread setting, which then covers its BLAS: GPTQ's LAPACK)
import nograd  # noqa: E402
from nograd.cli.quantize import calibration, file_sizes, train_float  # noqa: E402
from nograd.compress.comq import comq  # noqa: E402
from nograd.compress.quantization import quantize  # noqa: E402
from nograd.data import load_dataset  # noqa: E402
from nograd.train import evaluate  # noqa: E402


def _list(kind, choices=None):
    def parse(s):
        items = [int(v) if kind is int else v for v in s.split(",") if v]
        bad = [v for v in items if choices is not None and v not in choices]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"must be a comma-separated list of {choices}, got {s!r}")
        return items
    return parse


def threads_line():
    libs = nograd.threads.blas_libraries() if hasattr(nograd.threads, "blas_libraries") else []
    blas = ", ".join(f"{os.path.basename(b['path'])}: {b['threads']} threads" for b in libs) or "unknown"
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
           if k in os.environ}
    return f"BLAS {blas}; env {env or 'unset'}; cores {os.cpu_count()}; load {os.getloadavg()[0]:.1f}"


def plot(results, float_acc, model_name, folder):
    """accuracy against bits for each method (one PNG)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib (pip install matplotlib)") from None
    os.makedirs(folder, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4.2, 3.0), dpi=100)
    for method in sorted({r["method"] for r in results}):
        rows = sorted((r["bits"], 100 * r["accuracy"]) for r in results if r["method"] == method)
        ax.plot(*zip(*rows), marker="o", label=method)
    ax.axhline(100 * float_acc, color="grey", ls="--", lw=1, label="float")
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{model_name}: post-training quantization")
    ax.set_xticks(sorted({r["bits"] for r in results}))
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(folder, f"accuracy_{model_name}.png")
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("mlp", "cnn", "vit"), default="cnn")
    p.add_argument("--model-file", help="a saved float model (skips training)")
    p.add_argument("--data", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--bits", type=_list(int, range(2, 9)), default=[4, 3, 2])
    p.add_argument("--methods", type=_list(str, ("comq", "gptq", "rtn")), default=["comq", "gptq", "rtn"])
    p.add_argument("--granularity", choices=("channel", "layer"), default="channel")
    p.add_argument("--sweeps", type=int, default=4)
    p.add_argument("--shrink", type=float, default=1.0, help="COMQ's initial-grid shrink factor "
                   "(default 1: the grid of GPTQ and RTN; the authors' 2-bit command uses 0.65)")
    p.add_argument("--calib", type=int, default=512, help="calibration samples (training split)")
    p.add_argument("--epochs", type=int, help="training epochs (default per model)")
    p.add_argument("--repeats", type=int, default=3, help="timing runs per method (minimum kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="BLAS threads for the whole run (default: as set)")
    p.add_argument("--plot", metavar="DIR", help="write accuracy_<model>.png to DIR")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        nograd.set_blas_threads(args.threads)
    ds = load_dataset(args.data, data_dir=args.data_dir, seed=args.seed)
    print(threads_line())
    t = time.perf_counter()
    if args.model_file:
        model = nograd.load_model(args.model_file)
    else:
        model = train_float(args.model, ds, epochs=args.epochs, seed=args.seed)
    train_s = time.perf_counter() - t
    float_acc = evaluate(model, ds.X_test, ds.y_test)["accuracy"]
    calib = calibration(ds, args.calib, args.seed)
    comq(np.ones((2, 3)), np.eye(3), 4)          # compile (or load) COMQ's kernel before timing
    print(f"{args.model} on {ds.name}: float test accuracy {float_acc:.4f} (trained in {train_s:.1f}s); "
          f"calibration {len(calib)} training samples")
    results = []
    print(f"{'method':<7}{'bits':>5}{'accuracy':>10}{'drop':>7}{'recon err':>11}{'seconds':>9}"
          f"{'calib s':>9}{'file kB':>9}{'float kB':>9}")
    for bits in args.bits:
        best, reports = {}, {}
        for _ in range(max(1, args.repeats)):
            for method in args.methods:
                q, report = quantize(model, calib, method=method, bits=bits, granularity=args.granularity,
                                     sweeps=args.sweeps, shrink=args.shrink, rng=args.seed)
                if report["seconds"] < best.get(method, (np.inf,))[0]:
                    best[method] = (report["seconds"], report["calib_seconds"], q)
                reports[method] = report
        for method in args.methods:
            seconds, calib_s, q = best[method]
            acc = evaluate(q, ds.X_test, ds.y_test)["accuracy"]
            qb, fb = file_sizes(q, model)
            r = {"method": method, "bits": bits, "granularity": args.granularity, "accuracy": acc,
                 "recon_error": reports[method]["recon_error"], "seconds": seconds,
                 "calib_seconds": calib_s, "file_bytes": qb, "float_file_bytes": fb,
                 "layer_errors": [e["recon_error"] for e in reports[method]["layers"]]}
            results.append(r)
            print(f"{method:<7}{bits:>5}{acc:>10.4f}{100 * (float_acc - acc):>7.2f}{r['recon_error']:>11.4g}"
                  f"{seconds:>9.3f}{calib_s:>9.3f}{qb / 1000:>9.1f}{fb / 1000:>9.1f}")
    summary = {"model": args.model, "data": ds.name, "float_accuracy": float_acc,
               "calib_samples": int(len(calib)), "seed": args.seed, "threads": threads_line(),
               "shrink": args.shrink,
               "results": results}
    if args.plot:
        print("figure:", plot(results, float_acc, args.model, args.plot))
    if args.json:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
