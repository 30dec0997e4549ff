"""What the Ray-backed trainers share: importing Ray on first use, starting a small local cluster,
naming a dead worker, and hashing a replica's weights.

Ray is an optional dependency (``pip install "nograd[ray]"``). Nothing here imports it at module
import time: :func:`require_ray` does, inside the functions that need it, so ``import nograd`` and
``import nograd.distributed`` stay free of it.
"""
from __future__ import annotations

import contextlib
import hashlib

import numpy as np

__all__ = ["require_ray", "local_ray", "WorkerDiedError", "params_hash"]

_MISSING = 'nograd.distributed needs Ray, which is not installed: pip install "nograd[ray]"'


class WorkerDiedError(RuntimeError):
    """A Ray worker (actor) died during a distributed run.

    ``worker`` is its index, ``step`` the step that was running, ``completed`` the number of steps
    the driver's history holds (what a resumed run replays), ``checkpoint`` the path of the
    checkpoint written before raising (or ``None``) and ``history`` the history itself.
    """

    def __init__(self, message, *, worker, step, completed, checkpoint=None, history=None):
        super().__init__(message)
        self.worker, self.step, self.completed = worker, step, completed
        self.checkpoint, self.history = checkpoint, history


def require_ray():
    """Import and return the ``ray`` module, or raise ``ImportError`` with the install command."""
    try:
        import ray
    except ImportError:
        raise ImportError(_MISSING) from None
    return ray


@contextlib.contextmanager
def local_ray(num_cpus):
    """Yield ``ray``; start a local cluster of ``num_cpus`` CPUs (no dashboard) if none is running,
    and shut it down afterwards only if this call started it."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=int(num_cpus), include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def params_hash(params) -> str:
    """SHA-256 of a parameter dict: names, dtypes, shapes and the raw bytes, in the dict's order.

    Two replicas with equal hashes hold bit-identical weights.
    """
    h = hashlib.sha256()
    for name, a in params.items():
        a = np.ascontiguousarray(a)
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()
