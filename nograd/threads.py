"""How many threads the BLAS library behind NumPy (and SciPy) may use.

On a small machine whose cores are shared with other work, OpenBLAS's worker threads keep
spinning after each matrix product and slow the small products of a training step 10–50×
(docs/benchmarks.md); one thread is then faster. The environment variable
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

__all__ = ["blas_libraries", "set_blas_threads", "restore_blas_threads", "blas_threads", "auto_threads", "usable_cores",
           "auto_shards", "LARGE_STEP_FLOPS", "SHARD_STEP_FLOPS"]

#: one training step (forward + backward of a batch) above this many FLOPs gets every usable core
#: from :func:`auto_threads`; below it, one BLAS thread (measurements in the docstring there)
LARGE_STEP_FLOPS = 2e10

#: a backprop step of a language model above this many FLOPs is sharded over the usable cores by
#: the command line (:func:`auto_shards`); nanoGPT's CPU GPT takes about 3.6 GFLOP a step
SHARD_STEP_FLOPS = 1e9

#: environment variables that, when set, say the user chose the BLAS threads already
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")

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


def restore_blas_threads(previous):
    """Undo a :func:`set_blas_threads`: ``previous`` is the value it returned (None: nothing to do)."""
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
        restore_blas_threads(previous)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:            # not Linux
        return max(1, os.cpu_count() or 1)


def auto_threads(step_flops, *, cores=None, environ=None):
    """The BLAS thread count nograd's command line uses when ``--threads`` is not given:
    ``(n, reason)``.

    * If the user set ``OPENBLAS_NUM_THREADS`` (or ``OMP_``/``MKL_``/``BLIS_NUM_THREADS``) in the
      environment, that choice stands: ``n`` is ``None`` (change nothing).
    * Else one thread when a training step (forward + backward of one batch) costs fewer than
      :data:`LARGE_STEP_FLOPS` FLOPs, every usable core above it.

    Why: on a 2-core machine shared with other work, OpenBLAS's threads spin between the many small
    products of a step and slow it several-fold (``compare --rules all``: 6 min 36 s with the
    default two threads against 84 s with one, the issue that introduced this); only products large
    enough to keep every core busy for a long time gain from more threads. Every model the command
    line builds at its defaults (the MLP/CNN on digits, the GPT of nanoGPT's CPU recipe at about
    3.6 GFLOP a step) falls below the bar. The choice is deterministic (it depends on the model and
    the batch, never on timing), so a run's results — which can differ in the last digits between
    thread counts — are reproduced by the same command.

    >>> auto_threads(1e6, cores=2, environ={})
    (1, 'auto: 1 thread for a small step (1 MFLOP < 20 GFLOP)')
    >>> auto_threads(5e10, cores=2, environ={})
    (2, 'auto: 2 threads for a large step (50 GFLOP >= 20 GFLOP)')
    >>> auto_threads(1e6, cores=2, environ={"OPENBLAS_NUM_THREADS": "2"})
    (None, 'from the environment (OPENBLAS_NUM_THREADS=2)')
    """
    set_by = _env_threads(environ)
    if set_by:
        return None, f"from the environment ({set_by})"
    cores = usable_cores() if cores is None else int(cores)
    if step_flops >= LARGE_STEP_FLOPS and cores > 1:
        return cores, (f"auto: {cores} threads for a large step ({_si(step_flops)}FLOP >= "
                       f"{_si(LARGE_STEP_FLOPS)}FLOP)")
    return 1, f"auto: 1 thread for a small step ({_si(step_flops)}FLOP < {_si(LARGE_STEP_FLOPS)}FLOP)"


def _env_threads(environ=None):
    """``"VAR=value"`` for the first of :data:`THREAD_ENV` set in ``environ`` (default
    ``os.environ``), else ``""``: the user chose the threads."""
    import os

    env = os.environ if environ is None else environ
    return next((f"{var}={env[var]}" for var in THREAD_ENV if env.get(var)), "")


def _si(v):
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.0f} "


def auto_shards(step_flops, *, cores=None, environ=None):
    """The shard count the command line trains a model with by backprop when ``--shards`` and
    ``--threads`` are not given: ``(k, reason)``, ``k`` ``None`` for the serial step. Models with
    batch norm qualify too: a sharded step synchronises their batch statistics
    (:mod:`nograd.parallel`; :func:`nograd.cli.common.auto_shards_for` checks the model).

    Every usable core when there are two or more, the step (forward + backward of a batch) costs
    at least :data:`SHARD_STEP_FLOPS` and the environment does not set the BLAS threads: each core
    then runs the forward, backward and AdamW update of its share of the batch
    (:class:`nograd.parallel.ShardedStep`, BLAS at one thread each). nanoGPT's 2000-iteration CPU
    run on 2 cores: 65.8 s sharded against 127.6 s serial at one thread (docs/methods/transformers.md).
    Like :func:`auto_threads` the choice depends on the model, the batch and the machine's cores,
    never on timing; the sharded gradient equals the serial one up to float rounding.

    >>> auto_shards(3.6e9, cores=2, environ={})
    (2, 'auto: sharded over 2 threads (3.6 GFLOP >= 1 GFLOP a step)')
    >>> auto_shards(1e8, cores=2, environ={})[0] is None
    True
    >>> auto_shards(3.6e9, cores=1, environ={})[0] is None
    True
    >>> auto_shards(3.6e9, cores=2, environ={"OMP_NUM_THREADS": "1"})
    (None, 'serial: the environment sets the threads (OMP_NUM_THREADS=1)')
    """
    set_by = _env_threads(environ)
    if set_by:
        return None, f"serial: the environment sets the threads ({set_by})"
    cores = usable_cores() if cores is None else int(cores)
    if cores < 2:
        return None, "serial: one usable core"
    if step_flops < SHARD_STEP_FLOPS:
        return None, f"serial: a small step ({_si(step_flops)}FLOP < {_si(SHARD_STEP_FLOPS)}FLOP)"
    return cores, (f"auto: sharded over {cores} threads ({_si(step_flops)}FLOP >= "
                   f"{_si(SHARD_STEP_FLOPS)}FLOP a step)")
