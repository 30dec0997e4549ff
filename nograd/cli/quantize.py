"""``python -m nograd quantize``: post-training quantization of a model (COMQ, GPTQ or RTN).

``--model-file F`` quantizes a model written by ``train --save`` / :func:`nograd.save_model`
(its dataset is the default of ``--data``); ``--model NAME --data D`` first trains the float model
(backprop, Adam, ``--epochs``). ``--calib`` samples of the training split calibrate the layers
(:func:`nograd.compress.quantize`); the command prints a table of the layers (reconstruction
error, mean scale, seconds), the float and quantized test accuracies and the file sizes (the
quantized model's ``.npz`` against the float one's), or with ``--json`` one JSON object.
``--save OUT`` writes the quantized model (it reloads with :func:`nograd.load_model`).
"""
from __future__ import annotations

import json
import os
import sys

from .common import UserError, check_writable, positive_int

#: the float models ``--model`` trains on images: builder options and default epochs
MODEL_DEFAULTS = {"mlp": ({}, 15), "cnn": ({}, 15),
                  "vit": ({"dim": 64, "depth": 2, "heads": 4, "patch_size": 2}, 30)}


def train_float(name, ds, *, epochs=None, seed=0):
    """A ``name`` model (mlp, cnn, vit, or another registered one with its defaults) trained by
    backprop with Adam on ``ds`` for ``epochs`` (default per model); returns it."""
    from ..models import get_model
    from ..train import fit

    options, default_epochs = MODEL_DEFAULTS.get(name, ({}, 15))
    model = get_model(name, ds.input_shape, ds.num_classes, rng=seed, **options)
    fit(model, "backprop", "adam", (ds.X_train, ds.y_train), epochs=epochs or default_epochs,
        batch_size=64, rng=seed, progress=False)
    return model


def file_sizes(qmodel, model, meta=None):
    """``(quantized_bytes, float_bytes)``: the sizes of the two models' ``.npz`` files written by
    :func:`nograd.save_model` (into a temporary folder, removed after)."""
    import tempfile

    from ..serialize import save_model

    with tempfile.TemporaryDirectory() as d:
        sizes = []
        for m, name in ((qmodel, "q.npz"), (model, "f.npz")):
            path = os.path.join(d, name)
            save_model(m, path, meta=meta)
            sizes.append(os.path.getsize(path))
    return tuple(sizes)


def calibration(ds, size, seed):
    """``size`` samples of the training split drawn without replacement from ``seed``."""
    import numpy as np

    size = min(int(size), len(ds.X_train))
    idx = np.sort(np.random.default_rng([seed, 22]).choice(len(ds.X_train), size, replace=False))
    return ds.X_train[idx]


def cmd_quantize(args, out=None):
    """``quantize``: load or train, quantize, evaluate, report (and save). Returns the summary."""
    out = sys.stdout if out is None else out
    from ..compress.quantization import quantize
    from ..data import load_dataset
    from ..serialize import load_model, read_spec, save_model
    from ..train import evaluate

    if (args.model_file is None) == (args.model is None):
        raise UserError("give exactly one of --model-file F (a saved model) and --model NAME "
                        "(train one first)")
    if args.save:
        check_writable(args.save, "--save")
    meta = {}
    if args.model_file:
        try:
            spec = read_spec(args.model_file)
            model = load_model(args.model_file)
        except (ValueError, TypeError) as e:
            raise UserError(f"--model-file {args.model_file}: {e}") from None
        meta = dict((spec or {}).get("meta", {}))
    data = args.data or meta.get("data")
    if data is None:
        raise UserError("--data is needed: give the dataset (e.g. --data digits)")
    try:
        ds = load_dataset(data, data_dir=args.data_dir, seed=args.seed if args.model else
                          meta.get("seed", args.seed), download=args.download)
    except (ValueError, OSError) as e:
        raise UserError(f"--data {data}: {e}") from None
    if args.model:
        from ..models import available_models

        if args.model not in available_models():
            raise UserError(f"--model {args.model}: unknown; registered: {', '.join(available_models())}")
        model = train_float(args.model, ds, epochs=args.epochs, seed=args.seed)
    calib = calibration(ds, args.calib, args.seed)
    try:
        qmodel, report = quantize(model, calib, method=args.method, bits=args.bits,
                                  granularity=args.granularity, sweeps=args.sweeps, order=args.order)
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None
    float_acc = evaluate(model, ds.X_test, ds.y_test)["accuracy"]
    acc = evaluate(qmodel, ds.X_test, ds.y_test)["accuracy"]
    meta_q = {"data": data, "seed": meta.get("seed", args.seed), "quantized": args.method,
              "bits": args.bits}
    q_bytes, f_bytes = file_sizes(qmodel, model, meta_q)
    if args.save:
        save_model(qmodel, args.save, meta=meta_q)
    summary = {"command": "quantize", "model": args.model or args.model_file, "data": data,
               "method": args.method, "bits": args.bits, "granularity": args.granularity,
               "calib_samples": report["calib_samples"], "float_accuracy": float_acc,
               "accuracy": acc, "recon_error": report["recon_error"], "seconds": report["seconds"],
               "file_bytes": q_bytes, "float_file_bytes": f_bytes,
               "layers": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in e.items()}
                          for e in report["layers"]]}
    if args.json:
        print(json.dumps(summary), file=out)
        return summary
    print(f"{args.method} {args.bits}-bit ({args.granularity}) on {report['calib_samples']} "
          f"calibration samples of {data}", file=out)
    print(f"{'layer':<28}{'type':<8}{'shape':>12}{'recon error':>13}{'scale':>11}{'seconds':>9}", file=out)
    for e in report["layers"]:
        shape = "x".join(map(str, e["shape"]))
        print(f"{e['name']:<28}{e['type']:<8}{shape:>12}{e['recon_error']:>13.4g}{e['scale']:>11.4g}"
              f"{e['seconds']:>9.3f}", file=out)
    print(f"accuracy: float {float_acc:.4f}, quantized {acc:.4f}; mean reconstruction error "
          f"{report['recon_error']:.4g}; file {q_bytes} bytes against {f_bytes} "
          f"({f_bytes / q_bytes:.1f}x smaller)", file=out)
    return summary


def add_quantize(sub):
    """The ``quantize`` sub-parser."""
    p = sub.add_parser("quantize", help="post-training quantization: COMQ, GPTQ or RTN",
                       description="Quantize the weights of a model (every Linear and Conv2d) to "
                                   "--bits bits with COMQ, GPTQ or round-to-nearest, calibrated on "
                                   "--calib training samples; print the per-layer errors, the "
                                   "accuracies and the file sizes.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model-file", metavar="PATH", help="a model file written by train --save")
    src.add_argument("--model", metavar="NAME", help="train this model first (mlp, cnn, vit, ...)")
    p.add_argument("--data", metavar="NAME", help="digits, mnist, ... (default: the file's dataset)")
    p.add_argument("--data-dir", metavar="DIR", help="folder of mnist / fashion-mnist / cifar10")
    p.add_argument("--download", action="store_true", help="let mnist / fashion-mnist download")
    p.add_argument("--bits", type=int, choices=range(2, 9), default=4, metavar="B",
                   help="bits per weight, 2 to 8 (default 4)")
    p.add_argument("--method", choices=("comq", "gptq", "rtn"), default="comq", help="default comq")
    p.add_argument("--granularity", choices=("channel", "layer"), default="channel",
                   help="a scale per output channel (default) or per layer")
    p.add_argument("--sweeps", type=positive_int, default=4, help="COMQ's sweeps (default 4)")
    p.add_argument("--order", choices=("greedy", "cyclic"), default="greedy",
                   help="COMQ's update order (default greedy)")
    p.add_argument("--calib", type=positive_int, default=512, metavar="N",
                   help="calibration samples from the training split (default 512)")
    p.add_argument("--epochs", type=positive_int, help="epochs to train --model (default per model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, training and calibration")
    p.add_argument("--save", metavar="OUT", help="write the quantized model to OUT (.npz)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_quantize)
