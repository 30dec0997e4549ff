"""How many threads the BLAS library behind NumPy (and SciPy) may use.

On a small machine whose cores are shared with other work, OpenBLAS's worker threads keep
spinning after each matrix product and slow the small products of a training step 10–50×
(see the Benchmarks section of the README); one thread is then faster. The environment variable
``OPENBLAS_NUM_THREADS=1`` does it for a whole process, before NumPy is imported; these functions
do it at run time, for a block of code:

>>> import numpy as np
>>> import nograd
>>> with nograd.blas_threads(1):
...     _ = np.ones((64, 64)) @ np.ones((64, 64))     # single-threaded GEMM
...     inside = [lib["threads"] for lib in nograd.blas_libraries()]
>>> all(t == 1 for t in inside)
True

``threadpoolctl`` is used when it is installed (it knows MKL and BLIS too); otherwise the OpenBLAS
builds loaded in the process (NumPy's and SciPy's wheels each bring one) are found in
``/proc/self/maps`` and set through their ``*_set_num_threads`` entry points with ``ctypes``.
Where neither works (another BLAS, another OS) the functions change nothing and say so by
returning an empty list / ``None``.
"""
from __future__ import annotations

import contextlib

from .core.checks import check_int

__all__ = ["blas_libraries", "set_blas_threads", "blas_threads"]

#: OpenBLAS entry points (the scipy-openblas wheels add a prefix and a 64-bit-integer suffix)
_PREFIXES = ("scipy_openblas", "openblas")
_SUFFIXES = ("64_", "")


def _check_n(n):
    return check_int(n, "n", low=1)


def _openblas_handles():
    """``(path, getter, setter)`` for every OpenBLAS library mapped into this process."""
    import ctypes

    import os

    try:
        with open("/proc/self/maps") as f:
            mapped = {ln.split()[-1] for ln in f if len(ln.split()) >= 6}
    except OSError:
        return []
    paths = sorted(p for p in mapped
                   if "openblas" in os.path.basename(p).lower() and ".so" in os.path.basename(p))
    found = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        names = [(f"{pre}_get_num_threads{suf}", f"{pre}_set_num_threads{suf}")
                 for pre in _PREFIXES for suf in _SUFFIXES]
        pair = next(((getattr(lib, g), getattr(lib, s)) for g, s in names
                     if hasattr(lib, g) and hasattr(lib, s)), None)
        if pair is not None:
            get, put = pair
            get.restype = ctypes.c_int
            put.argtypes = [ctypes.c_int]
            found.append((path, get, put))
    return found


def _threadpoolctl():
    try:
        import threadpoolctl
    except ImportError:
        return None
    return threadpoolctl


def blas_libraries() -> list[dict]:
    """The BLAS libraries loaded in this process: ``[{"path", "threads"}]`` (empty if none found)."""
    tpc = _threadpoolctl()
    if tpc is not None:
        return [{"path": i["filepath"], "threads": i["num_threads"]}
                for i in tpc.threadpool_info() if i.get("user_api") == "blas"]
    return [{"path": p, "threads": int(get())} for p, get, _ in _openblas_handles()]


def set_blas_threads(n: int):
    """Let every loaded BLAS use at most ``n`` threads, until changed again. Returns an opaque
    record of the previous setting (what :func:`blas_threads` restores), or ``None`` when no BLAS
    library could be reached."""
    _check_n(n)
    tpc = _threadpoolctl()
    if tpc is not None:
        info = [i for i in tpc.threadpool_info() if i.get("user_api") == "blas"]
        if not info:
            return None
        limiter = tpc.threadpool_limits(limits=n, user_api="blas")
        return ("threadpoolctl", limiter)
    handles = _openblas_handles()
    if not handles:
        return None
    before = [(put, int(get())) for _, get, put in handles]
    for put, _ in before:
        put(n)
    return ("ctypes", before)


def _restore(previous):
    if previous is None:
        return
    kind, state = previous
    if kind == "threadpoolctl":
        state.restore_original_limits()
    else:
        for put, k in state:
            put(k)


@contextlib.contextmanager
def blas_threads(n: int):
    """Context manager: BLAS limited to ``n`` threads inside the block, restored after it (also
    when the block raises)."""
    previous = set_blas_threads(n)
    try:
        yield
    finally:
        _restore(previous)
