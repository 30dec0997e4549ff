"""Helpers shared by the benchmark scripts (not part of the package).

- :func:`wide_mlp` builds the deep, wide ReLU MLP and a batch that the memory benchmarks use;
- :func:`peak_mb` measures the peak traced memory of one call (tracemalloc: NumPy reports its
  array allocations to it; BLAS's own work buffers are not traced);
- :func:`timed` times repeated calls of a training step;
- :func:`setup_process` applies a step benchmark's ``--no-retain-memory`` and ``--threads``.
"""
from __future__ import annotations

import gc
import time
import tracemalloc

import numpy as np

MB = 1024 * 1024


def wide_mlp(width, depth, classes, batch, seed):
    """``depth`` × (Linear(width, width), ReLU), then Linear(width, classes); a float32 batch."""
    import nograd

    rng = np.random.default_rng(seed)
    layers = []
    for _ in range(depth):
        layers += [nograd.Linear(width, width, rng=rng), nograd.ReLU()]
    layers.append(nograd.Linear(width, classes, rng=rng))
    x = rng.standard_normal((batch, width), dtype=np.float32)
    y = rng.integers(0, classes, batch)
    return nograd.Sequential(*layers), x, y


def peak_mb(fn):
    """Peak traced memory during ``fn()`` above the traced memory just before it, in MiB
    (tracemalloc must be started by the caller)."""
    gc.collect()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    gc.collect()
    return (peak - before) / MB


def timed(step, x, y, n):
    """Wall-clock seconds of each of ``n`` calls ``step(x, y)``."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        step(x, y)
        out.append(time.perf_counter() - t)
    return out


def measure(ops, repeats):
    """Warm each operation up once, then its traced peak memory (MiB) and median seconds:
    ``({name: mb}, {name: s})`` for ``ops`` = name → zero-argument function."""
    import statistics

    for fn in ops.values():                  # lazy imports, kernels, BLAS buffers
        fn()
    tracemalloc.start()
    try:
        mem = {name: peak_mb(fn) for name, fn in ops.items()}
    finally:
        tracemalloc.stop()
    secs = {}
    for name, fn in ops.items():
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        secs[name] = statistics.median(runs)
    return mem, secs


def setup_process(args, ap):
    """For the whole process (every contender runs under it): keep freed memory for reuse
    (:func:`nograd.malloc.retain_freed_memory`) unless ``args.no_retain_memory``, and set
    ``args.threads`` BLAS threads and PyTorch intra-op threads when given (PyTorch first, so the
    BLAS it loads is limited too). Returns whether memory is retained; ``ap.error`` on a bad count."""
    import nograd
    from nograd.malloc import retain_freed_memory

    retained = False if args.no_retain_memory else retain_freed_memory()
    if args.threads is not None:
        if args.threads < 1:
            ap.error(f"--threads must be at least 1, got {args.threads}")
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            pass
        nograd.set_blas_threads(args.threads)
    return retained
