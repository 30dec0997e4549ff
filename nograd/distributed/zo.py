r"""Seed-only data parallelism for zeroth-order training (MeZO, SPSA) on Ray.

Malladi et al. (2023, "Fine-Tuning Language Models with Just Forward Passes", NeurIPS, Algorithm 1)
regenerate the random direction :math:`z` of a ZO-SGD step from a seed instead of storing it. A
step is then fully described by two numbers, the seed :math:`s_t` and the projected gradient
:math:`g_t = (\ell_+ - \ell_-)/2\varepsilon`, and a training run by its initial weights and the
list :math:`(s_t, g_t)_t` (the paper's §2 remark on storage: a checkpoint is the seeds and the
scalars). Data parallelism follows: :math:`W` workers, each with a replica and a shard of the data,
probe the same :math:`z(s_t)` on their own batch :math:`B_w`; the driver averages

.. math::

    g_t = \frac1W \sum_{w=1}^{W} \frac{\ell_+^{(w)} - \ell_-^{(w)}}{2\varepsilon}
        = \frac{\bar\ell_+ - \bar\ell_-}{2\varepsilon},
    \qquad \bar\ell_\pm = \frac1W\sum_w \ell_\pm^{(w)},

which, with equal batch sizes, is the projected gradient of the loss on the union
:math:`\bigcup_w B_w` (the mean of the shard means), and every worker applies the same
:math:`\theta \leftarrow \theta - \eta\,(g_t z(s_t) + \lambda\theta)` by regenerating :math:`z`.
Per step a worker receives ``(previous seed, previous g, step, seed)`` and returns ``n`` scalars and
its loss: the traffic does not depend on the number of parameters, and the replicas stay
bit-identical because they run the same floating-point operations on the same numbers.

The same holds for SPSA (Spall 1992, eq. 2.2): the Rademacher (or Gaussian) direction is drawn from
``np.random.default_rng(s_t)`` exactly as :class:`~nograd.rules.spsa.SPSA` draws it from that
generator, and the update is plain SGD on the estimate.

Fault behaviour: the driver's history is the checkpoint. A dead worker is reported with
:class:`~nograd.distributed.WorkerDiedError` naming it and the step; the run resumes — in the same call
(``restarts``) or in a new one (``resume=`` a checkpoint file) — by rebuilding every replica from
``model_fn`` and replaying the history, which needs no data and no forward pass
(:func:`replay`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from ..core.checks import check_float, check_int
from ..core.module import Module
from ..rules.mezo import MeZO
from ..rules.spsa import SPSA
from ..rules.zo_common import _check_batch, select_params
from ..threads import set_blas_threads
from ._ray import WorkerDiedError, local_ray, params_hash, require_ray

__all__ = ["zo_data_parallel", "ZOResult", "replay", "load_history", "union_batch"]

_log = logging.getLogger(__name__)
_DATA_STREAM = 0xDA7A                      # the batch streams: default_rng([data_seed, _, w, t])


# --------------------------------------------------------------------------- rule and data plan
def _make_rule(rule, options):
    options = dict(options or {})
    if isinstance(rule, (MeZO, SPSA)):
        if options:
            raise ValueError("rule_options is for a rule given by name; got a rule instance too")
        return rule
    if rule == "mezo":
        return MeZO(**options)
    if rule == "spsa":
        return SPSA(**options)
    raise ValueError(f"rule must be 'mezo' or 'spsa' (or a MeZO/SPSA instance), got {rule!r}")


def _draw_seed(gen):
    """The next step seed, drawn as :meth:`MeZO.step <nograd.rules.mezo.MeZO.step>` draws it."""
    return int(gen.integers(0, 2 ** 63 - 1))


def _check_model(model, rule):
    if not isinstance(model, Module):
        raise TypeError(f"model_fn must return a nograd Module, got {type(model).__name__}")
    rule.check_model(model)
    if model.buffers and rule.update_buffers:
        raise ValueError(f"zo_data_parallel: the model has buffers {list(model.buffers)[:3]} "
                         f"(running statistics) that each worker would move with its own shard, "
                         f"so the replicas would differ; pass rule_options="
                         f"{{'update_buffers': False}} to freeze them")


def _batch_indices(n, batch_size, data_seed, worker, step):
    """Indices of worker ``worker``'s batch at ``step``: ``batch_size`` distinct rows of its shard,
    drawn from ``default_rng([data_seed, 0xDA7A, worker, step])`` (stateless, so a replayed or
    resumed run sees the same batches)."""
    gen = np.random.default_rng([data_seed, _DATA_STREAM, worker, step])
    return gen.choice(n, size=batch_size, replace=False)


def _shards(x, y, workers):
    """Contiguous, near-equal shards of ``(x, y)`` (``np.array_split`` along the samples)."""
    bounds = np.linspace(0, len(x), workers + 1).astype(int)
    return [(x[a:b], y[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def union_batch(data, step, *, workers, batch_size, data_seed=0):
    """The batch ``(x, y)`` that the single-process equivalent of a ``workers``-way run sees at
    ``step``: every worker's batch, concatenated in worker order (``workers * batch_size`` rows)."""
    parts = []
    for w, (xs, ys) in enumerate(_shards(*data, workers)):
        idx = _batch_indices(len(xs), batch_size, data_seed, w, step)
        parts.append((xs[idx], ys[idx]))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# --------------------------------------------------------------------------- one replica
def _probe(rule, model, x, y, seed):
    """``(coefs, loss)``: the ``n`` projected gradients of ``rule`` on ``(x, y)`` along the
    directions regenerated from ``seed``; θ is restored afterwards."""
    if isinstance(rule, MeZO):
        coefs, info = rule._probe(model, x, y, rule._selection(model), seed)
        return [float(c) for c in coefs], float(info["loss"])
    names = select_params(model, rule.param_spec, who="SPSA")
    _check_batch(x, y, "SPSA")
    coefs, losses = [], []
    with contextlib.closing(rule.directions(model, x, y, names, np.random.default_rng(seed))) as probes:
        for _, coef, loss, _ in probes:
            coefs.append(float(coef))
            losses.append(loss)
    return coefs, float(np.mean(losses))


def _apply(rule, model, seed, coefs, lr):
    """θ ← θ − lr · (Σ_j (g_j/n) z_j(seed) [+ λθ for MeZO]), z regenerated from ``seed``."""
    if isinstance(rule, MeZO):
        rule._update_in_place(rule._selection(model), seed, list(coefs), lambda name: lr,
                              rule._decay(model))
        return
    _apply_spsa(rule, model, seed, coefs, lr)


def _reprobe(rule, model, seed):
    """Redo the arithmetic a probe leaves in θ, without evaluating anything: MeZO's in-place
    θ + εz − 2εz + εz does not return θ bit for bit (see *Restoring θ* in
    :class:`~nograd.rules.mezo.MeZO`), so a replay repeats it to stay bit-identical to the workers.
    SPSA and ``exact_restore=True`` restore θ exactly: nothing to redo."""
    if isinstance(rule, MeZO) and not rule.exact_restore:
        sel = rule._selection(model)
        for j in range(rule.n):
            for scale in (rule.eps, -2.0 * rule.eps, rule.eps):
                rule._perturb(sel, seed, j, scale)


def _apply_spsa(rule, model, seed, coefs, lr):
    names = select_params(model, rule.param_spec, who="SPSA")
    live = model.params
    gen = np.random.default_rng(seed)
    est = {k: np.zeros_like(live[k]) for k in names}
    for g in coefs:
        delta = {k: rule._draw(gen, live[k].shape, live[k].dtype) for k in names}
        for k in names:
            est[k] += live[k].dtype.type(g / rule.n) * delta[k]
    for k in names:
        live[k] -= live[k].dtype.type(lr) * est[k]


class _Replica:
    """One worker: a replica built by ``model_fn`` (the history replayed into it) and a data shard.
    Run as a Ray actor; the driver also uses one without data to replay a history."""

    def __init__(self, model_fn, rule, shard, *, lr, batch_size, data_seed, worker, threads,
                 history=None):
        if threads:
            set_blas_threads(threads)
        self.model, self.rule, self.lr = model_fn(), rule, lr
        self.shard, self.batch_size = shard, batch_size
        self.data_seed, self.worker = data_seed, worker
        if history is not None:
            for s, c in zip(history["seeds"], history["coefs"]):
                _reprobe(self.rule, self.model, int(s))
                _apply(self.rule, self.model, int(s), c, self.lr)

    def step(self, prev, step, seed):
        """Apply the previous step's update (``(seed, coefs)`` or ``None``), then probe this
        step's batch along ``seed``; returns ``(coefs, loss)``."""
        if prev is not None:
            _apply(self.rule, self.model, prev[0], prev[1], self.lr)
        xs, ys = self.shard
        idx = _batch_indices(len(xs), self.batch_size, self.data_seed, self.worker, step)
        return _probe(self.rule, self.model, xs[idx], ys[idx], seed)

    def finish(self, prev):
        """Apply the last pending update and return the weights' hash."""
        if prev is not None:
            _apply(self.rule, self.model, prev[0], prev[1], self.lr)
        return params_hash(self.model.params)

    def hash(self):
        return params_hash(self.model.params)


# --------------------------------------------------------------------------- history
def _save_history(path, history):
    """Write the history as ``.npz`` (no pickle), through a temporary file renamed into place."""
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, seeds=np.asarray(history["seeds"], np.int64),
             coefs=np.asarray(history["coefs"], np.float64).reshape(len(history["seeds"]), -1),
             losses=np.asarray(history["losses"], np.float64),
             config=np.array(json.dumps(history["config"], sort_keys=True)))
    os.replace(tmp, path)


def load_history(path) -> dict:
    """Read a checkpoint written by :func:`zo_data_parallel` (``checkpoint=``): ``{"seeds",
    "coefs", "losses", "config"}`` — the whole state of the run beside ``model_fn``."""
    with np.load(path, allow_pickle=False) as f:
        return {"seeds": [int(s) for s in f["seeds"]], "coefs": [list(c) for c in f["coefs"]],
                "losses": [float(v) for v in f["losses"]], "config": json.loads(str(f["config"]))}


def replay(model, history, rule="mezo", *, rule_options=None, lr=None):
    """Apply a run's updates to ``model`` in place: the weights after ``len(history["seeds"])``
    steps, from the initial weights and the seed history alone (no data, no forward pass:
    each step regenerates :math:`z(s_t)` and subtracts :math:`\\eta\\,g_t z(s_t)`, after
    repeating the in-place ±εz arithmetic of the probes, which MeZO's default does not undo bit
    for bit).

    ``history``: a dict from :func:`load_history` or :attr:`ZOResult.history`; ``lr`` defaults to
    the one it records. Returns ``model``.
    """
    rule = _make_rule(rule, rule_options)
    lr = history["config"]["lr"] if lr is None else float(lr)
    for s, c in zip(history["seeds"], history["coefs"]):
        _reprobe(rule, model, int(s))
        _apply(rule, model, int(s), c, lr)
    return model


@dataclass
class ZOResult:
    """What :func:`zo_data_parallel` returns.

    ``model``: the driver's replica (initial weights + replayed history), bit-identical to every
    worker's; ``history``: ``{"seeds", "coefs", "losses", "config"}``; ``losses``: the mean loss
    of each step; ``replica_hashes``: every worker's final weight hash (all equal to
    ``params_hash(model.params)``); ``bytes_sent_per_step`` / ``bytes_received_per_step``: the
    pickled size of the driver's messages to / from all workers, per step; ``steps_per_second``
    of the training loop; ``restarts``: how many times the workers were rebuilt after a death.
    """

    model: Module
    history: dict
    losses: list
    replica_hashes: list
    bytes_sent_per_step: float
    bytes_received_per_step: float
    steps_per_second: float
    restarts: int = 0
    config: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- the driver
def _check_data(data):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError("data must be a pair (x, y) of numpy arrays")
    x, y = data
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise TypeError(f"data must be a pair (x, y) of numpy arrays, got "
                        f"({type(x).__name__}, {type(y).__name__})")
    if len(x) != len(y):
        raise ValueError(f"data: x has {len(x)} samples but y has {len(y)}")
    return x, y


def _gather(ray, refs):
    """Results of ``refs`` in order; a dead actor raises ``_Dead(index, error)``."""
    out = []
    for i, r in enumerate(refs):
        try:
            out.append(ray.get(r))
        except ray.exceptions.RayActorError as e:
            raise _Dead(i, e) from None
    return out


class _Dead(Exception):
    def __init__(self, worker, error):
        super().__init__(worker, error)
        self.worker, self.error = worker, error


def zo_data_parallel(model_fn, rule="mezo", data=None, *, workers=2, steps=100, batch_size=32,
                     lr=1e-3, seed=0, data_seed=None, rule_options=None, checkpoint=None,
                     checkpoint_every=10, resume=None, restarts=0, threads=1, num_cpus=None,
                     callback=None, log_every=0) -> ZOResult:
    r"""Train ``model_fn()`` with MeZO or SPSA on ``workers`` Ray actors that exchange only seeds
    and scalars (module docstring; Malladi et al. 2023, Algorithm 1, data-parallel).

    Step :math:`t`: the driver draws :math:`s_t` from ``np.random.default_rng(seed)`` exactly as
    ``MeZO.step(..., rng=np.random.default_rng(seed))`` does; worker :math:`w` probes
    :math:`z(s_t)` on ``batch_size`` rows of its shard (rows drawn from
    ``default_rng([data_seed, 0xDA7A, w, t])``) and returns its ``n`` projected gradients and its
    loss; the driver averages them and sends the mean with the next step's seed; every worker
    applies it. The weights equal those of the single-process rule run with the same seeds on
    :func:`union_batch` (to rounding: the mean of the shard losses against the loss of their union).

    Parameters
    ----------
    model_fn : a callable returning the model, the same weights at every call (seed its init);
        called once per worker and once by the driver, and checked.
    rule : ``"mezo"``, ``"spsa"`` or a MeZO/SPSA instance; ``rule_options`` its arguments by name.
        A model with buffers needs ``update_buffers=False``.
    data : ``(x, y)``, split into ``workers`` contiguous shards of at least ``batch_size`` rows.
    workers, steps, batch_size : actors, training steps, rows per worker per step.
    lr : the ZO-SGD learning rate η. ``seed``: the seed stream; ``data_seed`` (default ``seed``)
        the batches.
    checkpoint : path of an ``.npz`` history written every ``checkpoint_every`` steps and when a
        worker dies; ``resume`` : such a path (or a history dict) to continue from.
    restarts : how many times a run rebuilds its workers from the history after a death before
        it raises :class:`~nograd.distributed.WorkerDiedError`.
    threads : BLAS threads per worker (``None``: leave as is); ``num_cpus`` of a local cluster
        started here when Ray is not running (default ``workers``).
    callback : ``callback(step, state)`` after each step; ``state`` has ``workers`` (the actor
        handles) and ``history``. ``log_every`` : log a progress line every so many steps.

    Returns a :class:`ZOResult`.
    """
    if not callable(model_fn):
        raise TypeError(f"model_fn must be a callable returning a nograd Module, got "
                        f"{type(model_fn).__name__}")
    x, y = _check_data(data)
    workers = check_int(workers, "workers", low=1)
    steps = check_int(steps, "steps", low=0)
    batch_size = check_int(batch_size, "batch_size", low=1)
    lr = float(check_float(lr, "lr", low=0))
    restarts = check_int(restarts, "restarts", low=0)
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every", low=1)
    data_seed = seed if data_seed is None else data_seed
    rule = _make_rule(rule, rule_options)
    shards = _shards(x, y, workers)
    small = min(len(s[0]) for s in shards)
    if small < batch_size:
        raise ValueError(f"batch_size={batch_size} is more than the smallest shard ({small} rows "
                         f"of {len(x)} split over {workers} workers)")
    driver = _Replica(model_fn, rule, None, lr=lr, batch_size=batch_size, data_seed=data_seed,
                      worker=-1, threads=None)
    _check_model(driver.model, rule)
    config = {"rule": type(rule).__name__, "n": rule.n, "eps": rule.eps, "lr": lr, "seed": seed,
              "data_seed": data_seed, "workers": workers, "batch_size": batch_size}
    history = {"seeds": [], "coefs": [], "losses": [], "config": config}
    if resume is not None:
        history = load_history(resume) if isinstance(resume, (str, os.PathLike)) else resume
        old = history["config"]
        diff = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v}
        if diff:
            raise ValueError(f"resume: the checkpoint was written by another run; differing "
                             f"settings (checkpoint, now): {diff}")
    seeds = np.random.default_rng(seed)
    for t, s in enumerate(history["seeds"]):
        if _draw_seed(seeds) != s:
            raise ValueError(f"resume: seed {t} of the checkpoint is not the one seed={seed} gives")
    ray = require_ray()
    with local_ray(num_cpus or workers):
        cpus = min(1.0, float(ray.cluster_resources().get("CPU", workers)) / workers)
        actor = ray.remote(num_cpus=cpus)(_Replica)
        put = [ray.put(s) for s in shards]

        def start():
            hist = {"seeds": list(history["seeds"]), "coefs": list(history["coefs"])}
            acts = [actor.remote(model_fn, rule, put[w], lr=lr, batch_size=batch_size,
                                 data_seed=data_seed, worker=w, threads=threads, history=hist)
                    for w in range(workers)]
            want = params_hash(replay(model_fn(), hist, rule, lr=lr).params)
            try:
                got = _gather(ray, [a.hash.remote() for a in acts])
            except _Dead as dead:
                raise RuntimeError(f"zo_data_parallel: worker {dead.worker} could not be started "
                                   f"(model_fn and data must be importable or picklable by the "
                                   f"workers): {dead.error}") from None
            if any(h != want for h in got):
                raise ValueError("model_fn does not build the same weights on every call (the "
                                 "replicas differ before training); seed its initialisation")
            return acts

        state = SimpleNamespace(history=history, workers=start())
        left, sent, received, done, t0 = restarts, 0, 0, 0, time.perf_counter()
        prev, seed_t = None, None
        while len(history["seeds"]) < steps:
            t = len(history["seeds"])
            if seed_t is None:
                seed_t = _draw_seed(seeds)
            msg = (prev, t, seed_t)
            try:
                results = _gather(ray, [a.step.remote(*msg) for a in state.workers])
            except _Dead as dead:
                if checkpoint is not None:
                    _save_history(checkpoint, history)
                if left == 0:
                    for a in state.workers:
                        ray.kill(a)
                    raise WorkerDiedError(
                        f"zo_data_parallel: worker {dead.worker} died during step {t} "
                        f"({type(dead.error).__name__}); the driver's history holds {t} steps"
                        + (f", saved to {checkpoint!r}: run again with resume={checkpoint!r}"
                           if checkpoint is not None else ": pass resume=error.history")
                        + " to continue", worker=dead.worker, step=t, completed=t,
                        checkpoint=checkpoint, history=history) from None
                _log.warning("worker %d died during step %d; rebuilding the workers from the "
                             "history (%d steps)", dead.worker, t, t)
                left -= 1
                for a in state.workers:
                    ray.kill(a)
                state.workers, prev = start(), None
                continue
            sent += len(pickle.dumps(msg)) * workers
            received += sum(len(pickle.dumps(r)) for r in results)
            coefs = np.mean([r[0] for r in results], axis=0).tolist()
            history["seeds"].append(seed_t)
            history["coefs"].append(coefs)
            history["losses"].append(float(np.mean([r[1] for r in results])))
            prev, seed_t, done = (history["seeds"][-1], coefs), None, done + 1
            if checkpoint is not None and len(history["seeds"]) % checkpoint_every == 0:
                _save_history(checkpoint, history)
            if log_every and len(history["seeds"]) % log_every == 0:
                _log.info("step %d/%d  loss %.4f", len(history["seeds"]), steps,
                          history["losses"][-1])
            if callback is not None:
                callback(len(history["seeds"]), state)
        elapsed = time.perf_counter() - t0
        hashes = _gather(ray, [a.finish.remote(prev) for a in state.workers])
        for a in state.workers:
            ray.kill(a)
    if checkpoint is not None:
        _save_history(checkpoint, history)
    replay(driver.model, history, rule, lr=lr)
    mine = params_hash(driver.model.params)
    if any(h != mine for h in hashes):
        raise RuntimeError(f"zo_data_parallel: the replicas differ after training (hashes "
                           f"{sorted(set(hashes))} against the driver's replay {mine})")
    return ZOResult(model=driver.model, history=history, losses=list(history["losses"]),
                    replica_hashes=hashes, bytes_sent_per_step=sent / max(done, 1),
                    bytes_received_per_step=received / max(done, 1),
                    steps_per_second=done / elapsed if elapsed > 0 else float("nan"),
                    restarts=restarts - left, config=config)
