r"""Data parallelism over threads inside one process: one training step's forward, loss and backward
run on ``k`` shards of the batch at once, one Python thread per shard, and the shards' gradients
are combined into the gradient of the whole batch.

Why threads work here: nograd's modules are functional (``forward`` returns ``(y, cache)``,
``backward(cache, dy)`` returns ``(dx, grads)``; a training forward stores nothing on the module),
and the heavy work of a step — NumPy's ufuncs and BLAS products, nograd's Numba kernels (compiled
``nogil=True``) — runs with the GIL released, so the shards' arithmetic overlaps on the cores. BLAS
is held at one thread while a sharded step runs (each core then owns one shard, instead of
OpenBLAS's spinning workers competing with the shards; DESIGN.md §5) and restored afterwards.

**The maths.** Let the batch have :math:`N` rows, split along axis 0 into shards
:math:`S_1, \dots, S_k` of sizes :math:`n_i` (:math:`\sum_i n_i = N`, sizes differ by at most one).
The losses nograd trains with are means over the rows (``ℓ_r`` the loss of row ``r``, itself a
mean over the row's own elements or tokens, with the same count for every row):

.. math::

    L(θ) = \frac1N \sum_{r=1}^{N} ℓ_r(θ)
         = \sum_{i=1}^{k} \frac{n_i}{N}\, L_i(θ), \qquad
    L_i(θ) = \frac1{n_i} \sum_{r \in S_i} ℓ_r(θ),

so by linearity :math:`∇_θ L = \sum_i \frac{n_i}{N} ∇_θ L_i`. Each shard runs the model's own
``forward`` / loss / ``backward``; the loss's derivative :math:`∂L_i/∂\hat y_i` is scaled by
:math:`w_i = n_i/N` before ``backward`` (so each shard returns :math:`w_i ∇_θ L_i`, in the
parameters' dtype) and the shards' gradients are summed. In float64 the result equals the
unsharded gradient up to rounding (the tests check ~1e-12); in float32 up to float32 rounding.

This holds for losses that are plain means over rows. It does *not* hold when the denominator
depends on the whole batch — ``class_weight`` or ``ignore_index`` of the cross-entropies (the mean
is over the kept or weighted labels), ``kl_div(reduction="sum")`` — so those options are refused.
A callable loss must be such a row mean too (``(pred, target) -> (value, dpred)``); that is the
caller's promise.

**Batch norm: synchronised statistics** (``batch_stats="sync"``, the default). A training
batch norm couples the rows: it normalises with the batch's per-channel mean and variance. Each
shard's thread is a participant of a :class:`~nograd.shard_sync.ShardGroup`, made current for its
forward and backward (:func:`nograd.layers.norm.shard_scope`), and the batch norms exchange a few
numbers through it (as ``torch.nn.SyncBatchNorm`` does between processes): in the forward the
shards' counts, means and centred sums of squares (combined in shard order by Chan, Golub &
LeVeque's pairwise update: the batch's :math:`μ, σ^2_B`, the same bits in every shard); in the
backward the two sums the input cotangent needs. Why the :math:`w_i` above still gives the
batch's gradient: with :math:`L = \frac1N \sum_r ℓ_r` and :math:`L_i = \frac1{n_i}\sum_{r \in S_i}
ℓ_r` (every :math:`ℓ_r` now a function of the whole batch through the statistics),

.. math::

    w_i \frac{∂L_i}{∂\hat y_r} = \frac{n_i}{N}\,\frac1{n_i}\,\frac{∂ℓ_r}{∂\hat y_r}
    = \frac{∂L}{∂\hat y_r}, \qquad r \in S_i,

so the cotangent shard :math:`i` sends down is the rows :math:`S_i` of the *batch's* cotangent
:math:`\bar y`, and so is every cotangent below it. A batch norm's batch backward,
:math:`\bar x = γ r\,(\bar y - \frac1M \sum \bar y - \hat x\,\frac1M \sum \bar y\,\hat x)`
(:math:`M` values per channel in the batch), takes the two sums all-reduced over the shards, and
its parameters' gradients :math:`\bar β = \sum \bar y`, :math:`\bar γ = \sum \bar y\,\hat x` are
sums over rows: each shard returns its own part, with no further factor, and the sum of the
shards' gradients is the batch's — as for every other parameter, whose gradient is a sum over rows
of each row's Jacobian applied to that row's cotangent. The running averages move once a step,
in shard 0, from the batch's statistics and count. So the sharded step computes the serial step's
loss, gradients and running averages up to rounding (``tests/test_parallel_batchnorm.py``).
``batch_stats="local"`` (or the older ``allow_batch_stats=True``) instead normalises each shard
with its own statistics (data parallelism without synchronised batch norm; a different function
of the batch) and lets the threads update the running averages unsynchronised. A module that
keeps running statistics without declaring ``sync_batch_stats`` is refused unless ``"local"``.
Every other layer in nograd leaves its module untouched in a training forward (checked for this
module by reading every ``forward``; the GPT's key/value cache for
:func:`~nograd.models.gpt.generate` lives in a dict the caller passes to ``decode``).

**Randomness.** With ``rng`` (dropout), each shard draws from its own generator spawned from
``rng`` (:meth:`numpy.random.Generator.spawn`), so a seed fixes the step, but the dropout masks
differ from an unsharded step's, whose gradient is then a different (equally valid) sample.

Shapes: ``x`` ``(N, ...)`` and ``y`` ``(N, ...)`` — any arrays whose axis 0 is the batch (labels
``(N,)``, one-hot ``(N, C)``, token targets ``(N, T)``); the gradients are keyed and shaped like
``model.params``.

>>> import numpy as np
>>> import nograd
>>> from nograd.parallel import ShardedStep
>>> rng = np.random.default_rng(0)
>>> net = nograd.Sequential(nograd.Linear(5, 8, rng=rng, dtype=np.float64), nograd.ReLU(),
...                         nograd.Linear(8, 3, rng=rng, dtype=np.float64))
>>> x, y = rng.standard_normal((9, 5)), rng.integers(0, 3, 9)
>>> with ShardedStep(net, "cross-entropy", shards=2) as step:
...     loss, grads = step(x, y)
>>> serial, info = nograd.Backprop().grads(net, x, y)
>>> bool(abs(loss - info["loss"]) < 1e-12)
True
>>> max(float(np.abs(grads[k] - serial[k]).max()) for k in serial) < 1e-12
True
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .core.checks import as_rng, check_int
from .core.losses import get_loss
from .layers.norm import shard_scope
from .shard_sync import ShardGroup
from .threads import restore_blas_threads, set_blas_threads, usable_cores

__all__ = ["ShardedStep", "shard_sizes", "check_shardable", "check_loss_options"]

#: loss options whose mean is not over rows (its denominator depends on the whole batch)
_BATCH_WIDE_OPTIONS = ("class_weight", "ignore_index")
#: buffers that a training forward updates from the batch (batch norm's running averages)
_BATCH_STAT_BUFFERS = ("running_mean", "running_var")


def shard_sizes(n: int, k: int) -> list[int]:
    """Sizes of ``min(k, n)`` contiguous shards of ``n`` rows, as equal as possible (the first
    ``n mod k`` get one more): ``shard_sizes(10, 3) == [4, 3, 3]``."""
    n = check_int(n, "n", low=1)
    k = min(check_int(k, "shards", low=1), n)
    q, r = divmod(n, k)
    return [q + 1] * r + [q] * (k - r)


def _batch_stats_mode(batch_stats, allow_batch_stats):
    """``"sync"`` or ``"local"`` from the two spellings (``allow_batch_stats=True`` is ``"local"``)."""
    if batch_stats not in (None, "sync", "local"):
        raise ValueError(f"batch_stats must be 'sync' or 'local', got {batch_stats!r}")
    if allow_batch_stats:
        if batch_stats == "sync":
            raise ValueError("allow_batch_stats=True asks for per-shard statistics, batch_stats='sync' "
                             "for synchronised ones: pass one of them")
        return "local"
    return batch_stats or "sync"


def _batch_stat_modules(model):
    """``[(name, module)]`` of the modules of ``model`` that keep running batch statistics."""
    modules = model.modules() if hasattr(model, "modules") else [("", model)]
    return [(name, m) for name, m in modules
            if any(b in (getattr(m, "_buffers", {}) or {}) for b in _BATCH_STAT_BUFFERS)]


def check_shardable(model, *, batch_stats=None, allow_batch_stats: bool = False) -> None:
    """Raise ``ValueError`` naming the module when ``model``'s training forward cannot be sharded:
    with ``batch_stats="sync"`` (the default) a module that keeps running batch statistics
    (``running_mean``/``running_var`` buffers) but does not declare ``sync_batch_stats`` (the
    batch norms :class:`nograd.layers.BatchNorm1d` and ``BatchNorm2d`` do); with ``"local"`` (or
    ``allow_batch_stats=True``) nothing is refused. ``TypeError`` for what is not a Module."""
    if not hasattr(model, "forward") or not hasattr(model, "backward"):
        raise TypeError(f"model must be a nograd Module with forward and backward, got "
                        f"{type(model).__name__}")
    if _batch_stats_mode(batch_stats, allow_batch_stats) == "local":
        return
    for name, m in _batch_stat_modules(model):
        if not getattr(m, "sync_batch_stats", False):
            where = f"model.{name}" if name else "model"
            raise ValueError(
                f"model: {where} ({type(m).__name__}) normalises with batch statistics and updates "
                f"its running averages in a training forward, and cannot synchronise them between "
                f"shards; pass batch_stats='local' to accept per-shard statistics, or use a layer "
                f"without batch statistics (LayerNorm/GroupNorm are per row)")


def check_loss_options(loss_options: dict) -> None:
    """Raise ``ValueError`` for loss options under which the loss is not a mean over rows (a
    shard-size-weighted sum of the shards' losses is then not the batch's loss)."""
    for opt in _BATCH_WIDE_OPTIONS:
        if loss_options.get(opt) is not None:
            raise ValueError(f"loss option {opt}={loss_options[opt]!r}: the loss is then a mean "
                             f"over the kept/weighted labels of the whole batch, not over rows, "
                             f"and a shard-size-weighted sum of shard losses is not its gradient")
    if loss_options.get("reduction", "mean") == "sum":
        raise ValueError("loss option reduction='sum': sharding combines row means; "
                         "use 'mean' or 'batchmean'")


def _original(errors):
    """The error to report from the shards' ``errors`` (None for a shard that succeeded): the
    first in shard order that is not a :class:`threading.BrokenBarrierError` (which only says that
    another shard failed and broke the group), else the first."""
    raised = [e for e in errors if e is not None]
    return next((e for e in raised if not isinstance(e, threading.BrokenBarrierError)), raised[0])


class _BlasOne:
    """BLAS at one thread for a block, restored after; threadpoolctl's controller is built once
    (limiting through it costs microseconds, against ~0.5 ms for a fresh scan of the loaded
    libraries), :func:`nograd.blas_threads` otherwise."""

    def __init__(self):
        self._controller = None              # built at the first step: the libraries loaded by then

    def __call__(self):
        """Limit BLAS to one thread; returns the function that restores the previous setting."""
        if self._controller is None:
            try:
                import threadpoolctl

                self._controller = threadpoolctl.ThreadpoolController()
            except (ImportError, AttributeError):
                self._controller = False
        if self._controller:
            return self._controller.limit(limits=1, user_api="blas").restore_original_limits
        previous = set_blas_threads(1)
        return lambda: restore_blas_threads(previous)


class ShardedStep:
    r"""One step's loss and gradient of ``model`` on a batch, the batch split into ``shards``
    pieces that run forward, loss and backward in parallel threads (maths in :mod:`nograd.parallel`).

    Parameters
    ----------
    model : a nograd Module (``forward(x, train=True, rng=...)``, ``backward(cache, dy)``).
    loss : a loss name (``"cross-entropy"``, ``"mse"``, …) or a callable
        ``(pred, target) -> (value, dpred)`` that is a mean over the rows of ``pred``.
    shards : the number of threads (shards); ``None``: the usable cores
        (:func:`nograd.threads.usable_cores`). A batch smaller than ``shards`` uses one shard per row.
    batch_stats : ``"sync"`` (default): batch norms normalise with the whole batch's statistics,
        exchanged between the shards (the serial step's loss, gradients and running averages up to
        rounding; see :mod:`nograd.parallel`); ``"local"``: each shard with its own (not the
        unsharded gradient).
    allow_batch_stats : the older spelling: ``True`` is ``batch_stats="local"``.
    blas_one_thread : hold BLAS at one thread during a step and restore it after (default True).
        A step of one shard (``shards=1``, or a batch of one row) is the serial step: the calling
        thread, BLAS as the process has it.
    **loss_options : passed to the loss (``label_smoothing=…``); ``class_weight`` and
        ``ignore_index`` are refused (their mean is not over rows).

    Calling the object, ``step(x, y, rng=None)``, returns ``(loss, grads)``: the batch-mean loss (a float) and
    ``grads[name]`` shaped like ``model.params[name]``. :meth:`grads` returns
    ``(grads, info)`` like :meth:`nograd.Backprop.grads`, with ``info["output"]`` the whole batch's
    prediction. The worker threads live as long as the object: use it as a context manager or call
    :meth:`close`. One step at a time: the object refuses a call while another is running.
    """

    def __init__(self, model, loss="cross-entropy", shards=None, *, batch_stats=None, allow_batch_stats=False,
                 blas_one_thread=True, **loss_options):
        self.batch_stats = _batch_stats_mode(batch_stats, allow_batch_stats)
        check_shardable(model, batch_stats=self.batch_stats)
        self.model = model
        self.loss = get_loss(loss)
        check_loss_options(loss_options)
        self.loss_options = loss_options
        self.shards = usable_cores() if shards is None else check_int(shards, "shards", low=1)
        self.allow_batch_stats = self.batch_stats == "local"
        #: the step runs its shards in a ShardGroup (the model has batch norms to synchronise)
        self.synchronised = self.batch_stats == "sync" and bool(_batch_stat_modules(model))
        self.blas_one_thread = bool(blas_one_thread)
        self._blas = _BlasOne() if blas_one_thread else None
        self._pool = None
        self._busy = threading.Lock()

    # ------------------------------------------------------------------ life cycle
    def _executor(self):
        if self._pool is None and self.shards > 1:
            self._pool = ThreadPoolExecutor(max_workers=self.shards - 1,
                                            thread_name_prefix="nograd-shard")
        return self._pool

    def close(self) -> None:
        """Stop the worker threads (a later call starts them again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    def __getstate__(self):
        """Copies and pickles leave the threads, the lock and the BLAS controller behind."""
        state = self.__dict__.copy()
        state.update(_pool=None, _busy=None, _blas=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._busy = threading.Lock()
        self._blas = _BlasOne() if self.blas_one_thread else None

    def __repr__(self):
        name = getattr(self.loss, "__name__", repr(self.loss))
        return f"ShardedStep({type(self.model).__name__}, loss={name}, shards={self.shards})"

    # ------------------------------------------------------------------ one step
    def _check_batch(self, x, y):
        for name, a in (("x", x), ("y", y)):
            if not hasattr(a, "shape") or getattr(a, "ndim", 0) < 1:
                raise ValueError(f"{name} must be an array with the batch on axis 0, got "
                                 f"{type(a).__name__}" + (f" of shape {a.shape}" if hasattr(a, "shape") else ""))
        if x.shape[0] == 0:
            raise ValueError("x: the batch is empty (shape[0] == 0)")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y has {y.shape[0]} rows but x has {x.shape[0]}: the batch axis "
                             f"(axis 0) must match")

    def _one(self, x, y, w, rng):
        """Forward, loss and backward of one shard; ``(w·loss, w·grads, output)``."""
        out, cache = self.model.forward(x, train=True, rng=rng)
        value, dout = self.loss(out, y, **self.loss_options)
        dout = dout * np.asarray(w, dtype=dout.dtype)
        _, grads = self.model.backward(cache, dout, need_dx=False)
        return w * float(value), grads, out

    def _one_synced(self, x, y, w, rng, member):
        """:meth:`_one` as participant ``member`` of the step's :class:`ShardGroup` (the batch
        norms' exchanges go through it); on an error the group is broken, so that the other
        shards stop at their next exchange instead of waiting for this one."""
        try:
            with shard_scope(member):
                result = self._one(x, y, w, rng)
            member.finish()
        except BaseException:
            member.abort()
            raise
        return result

    def _run(self, x, y, rng):
        self._check_batch(x, y)
        sizes = shard_sizes(x.shape[0], self.shards)
        n = x.shape[0]
        bounds = np.cumsum([0] + sizes)
        rngs = [None] * len(sizes) if rng is None else as_rng(rng).spawn(len(sizes))
        jobs = [(x[a:b], y[a:b], s / n, r) for a, b, s, r in zip(bounds[:-1], bounds[1:], sizes, rngs)]
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("ShardedStep: a step is already running on this object; use one "
                               "ShardedStep per concurrent caller")
        try:
            if len(jobs) == 1:                              # one shard: the serial step, as it is
                return [self._one(*jobs[0])]
            run = self._one
            if self.synchronised:                           # one participant per shard
                run = self._one_synced
                jobs = [job + (m,) for job, m in zip(jobs, ShardGroup(len(jobs)).members)]
            restore = self._blas() if self._blas is not None else None
            try:
                pool = self._executor()
                futures = [pool.submit(run, *job) for job in jobs[1:]]
                try:
                    first, error = run(*jobs[0]), None      # shard 0 in the calling thread
                except BaseException as e:
                    first, error = None, e
                errors = [error] + [f.exception() for f in futures]   # every shard finished
                if any(e is not None for e in errors):
                    raise _original(errors)
                results = [first] + [f.result() for f in futures]
            finally:
                if restore is not None:
                    restore()
        finally:
            self._busy.release()
        return results

    def _combine(self, results):
        loss = sum(r[0] for r in results)
        grads = {}
        for name, g in results[0][1].items():
            total = g if len(results) == 1 else g + results[1][1][name]
            for r in results[2:]:
                total += r[1][name]
            grads[name] = total
        return loss, grads

    def update(self, optimizer, grads) -> None:
        """``optimizer.step(grads)`` with the per-array updates of Adam and AdamW spread over the
        step's threads (the same checks and clipping scale first, then each array updated by one
        thread; the same numbers as the serial step, bit for bit). Other optimizers, and arrays the
        fused Adam kernel does not take (a gradient of another dtype, non-contiguous arrays), run
        serially: their updates share scratch buffers."""
        from .core.optim import Adam

        items, scale = optimizer._prepare(grads)
        pool = self._executor()
        fused = isinstance(optimizer, Adam) and all(
            g.dtype == p.dtype and p.flags.c_contiguous and g.flags.c_contiguous
            for _, p, g, _ in items)
        if pool is None or not fused or len(items) < 2:
            for name, p, g, group in items:
                optimizer._update(name, p, g, group, scale)
            return
        parts = [[] for _ in range(self.shards)]       # largest first, each to the lightest part
        load = [0] * self.shards
        for item in sorted(items, key=lambda it: -it[1].size):
            k = load.index(min(load))
            parts[k].append(item)
            load[k] += item[1].size

        def run(part):
            for name, p, g, group in part:
                optimizer._update(name, p, g, group, scale)

        futures = [pool.submit(run, part) for part in parts[1:] if part]
        try:
            run(parts[0])
        finally:
            errors = [f.exception() for f in futures]
        for e in errors:
            if e is not None:
                raise e

    def __call__(self, x, y, *, rng=None):
        """``(loss, grads)`` of the batch ``(x, y)``: the mean loss and its gradient."""
        return self._combine(self._run(x, y, rng))

    def grads(self, x, y, *, rng=None):
        """``(grads, info)`` as :meth:`nograd.Backprop.grads` returns them: ``info`` holds
        ``"loss"`` and ``"output"`` (the shards' outputs joined along axis 0)."""
        results = self._run(x, y, rng)
        loss, grads = self._combine(results)
        return grads, {"loss": loss, "output": np.concatenate([r[2] for r in results], axis=0)}
