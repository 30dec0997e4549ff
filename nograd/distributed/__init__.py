"""Training beyond one process, on Ray (an optional extra: ``pip install "nograd[ray]"``).

- :func:`zo_data_parallel` — seed-only data parallelism for the zeroth-order rules (MeZO, SPSA):
  per step the driver sends every worker a seed and gets back a few scalars; replicas stay
  bit-identical without any weight ever crossing the network.
- :func:`layer_parallel` — groups of layers on separate actors trained by a local rule
  (Forward-Forward, Mono-Forward, DFA): activations stream forward, no backward pass between actors.

Importing this package does not import Ray; the functions do, and raise an ``ImportError`` naming
``pip install "nograd[ray]"`` when it is missing.
"""
from ._ray import WorkerDiedError, params_hash
from .layer_parallel import LayerParallelResult, layer_parallel
from .zo import ZOResult, load_history, replay, zo_data_parallel

__all__ = ["zo_data_parallel", "ZOResult", "replay", "load_history", "layer_parallel",
           "LayerParallelResult", "WorkerDiedError", "params_hash"]
