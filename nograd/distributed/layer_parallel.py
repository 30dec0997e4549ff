r"""Layer-parallel training with local learning rules on Ray: groups of layers on separate actors,
activations streamed forward, no backward pass between actors.

A model ``[Flatten] (Linear, activation)* Linear`` is cut into ``workers`` contiguous *stages*
(balanced by parameter count), one Ray actor each. The driver feeds batches to stage 0 without
waiting; each stage runs its layers and hands its output activity to the next stage, and Ray runs
the stages concurrently — stage :math:`k` works on batch :math:`t` while stage :math:`k-1` works on
batch :math:`t+1` — because no stage waits for an error from above:

- ``"mono-forward"`` (Gong, Li & Abdulla 2025, arXiv:2501.09238, the method section): layer
  :math:`i` descends its own :math:`L_i = \mathrm{CE}(\mathrm{softmax}(a_i M_i^\top), y)`, its input
  held constant. A stage is a :class:`~nograd.rules.mono_forward.MonoForward` rule over a
  sub-model: the stage's layers followed, on every stage but the last, by a bias-free
  ``Linear(width, C)`` that is the projection :math:`M` of the stage's last layer; the last stage
  holds the last hidden layer with the model's output Linear, its :math:`M_L`, as in the paper. The output activity is
  computed before the stage's update, as the single-process rule does.
- ``"ff"`` (Hinton 2022, arXiv:2212.13345, §2 eq. 1 and §3.3): the driver writes the true and a
  random wrong label into the input (the rule's own ``_embed``) and streams the positive/negative
  pair and the neutral-label copy; each layer descends its own goodness loss, the last stage also
  trains the softmax head on the neutral pass. Random negatives only (hard negatives need the
  head's output back at the input: a backward dependency).
- ``"dfa"`` (Nøkland 2016, "Direct feedback alignment provides learning in deep neural networks",
  NeurIPS): the last stage computes the output error :math:`e` and updates the output layer; the
  driver broadcasts :math:`e` to the other stages, where hidden layer :math:`l` takes
  :math:`\delta a_l = (B_l e) \odot f'(a_l)` with the feedback matrices of a
  :class:`~nograd.rules.feedback.DFA` of the same seed. With ``delay=0`` (the default) a stage
  waits for :math:`e_t` before its next forward pass: exactly single-process DFA, and no overlap
  (DFA removes the backward pass, not the wait for the error); with ``delay=1`` it runs batch
  :math:`t+1` first and applies :math:`e_t` one batch late, so the stages overlap, at some cost in
  accuracy (``docs/more-than-one-machine.md``).

Each stage has its own optimizer over its own arrays (per-parameter optimizers such as SGD and
Adam then do what one optimizer over the whole model does). At the end the driver gathers the
weights into ``model``.
"""
from __future__ import annotations

import copy
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..core.checks import check_float, check_int
from ..core.losses import softmax_cross_entropy
from ..core.module import Module, Sequential
from ..core.optim import get_optimizer
from ..layers import Linear
from ..rules._layerwise import class_labels, parse_blocks, run_pre, sigmoid, softplus
from ..rules.feedback import DFA
from ..rules.forward_forward import ForwardForward
from ..rules.mono_forward import MonoForward
from ..threads import set_blas_threads
from ._ray import local_ray, require_ray

__all__ = ["layer_parallel", "LayerParallelResult", "split_stages"]

RULES = {"ff": ForwardForward, "mono-forward": MonoForward, "dfa": DFA}


def split_stages(sizes, workers):
    """Cut a list of per-block parameter counts into ``workers`` contiguous, non-empty groups of
    near-equal total; returns ``[(lo, hi), ...]`` block ranges."""
    if workers > len(sizes):
        raise ValueError(f"workers={workers} is more than the model's {len(sizes)} layers "
                         f"(Linear blocks); use at most {len(sizes)}")
    cum = np.cumsum(sizes, dtype=np.float64)
    cuts, lo = [], 0
    for k in range(1, workers):
        hi = int(np.searchsorted(cum, cum[-1] * k / workers)) + 1
        hi = min(max(hi, lo + 1), len(sizes) - (workers - k))
        cuts.append((lo, hi))
        lo = hi
    cuts.append((lo, len(sizes)))
    return cuts


class _Stage:
    """Blocks ``lo:hi`` of ``model`` (a private copy in the actor) and their local learner."""

    def __init__(self, kind, model, rule, lo, hi, *, optimizer, lr, seed, threads):
        if threads:
            set_blas_threads(threads)
        model = copy.deepcopy(model)              # arrays from the object store are read-only
        pre, blocks = parse_blocks(model, type(rule).__name__)
        self.kind, self.rule = kind, rule
        self.pre = pre if lo == 0 else []
        self.blocks, self.lo, self.last = blocks[lo:hi], lo, hi == len(blocks)
        self.pending, self.busy = deque(), 0.0
        classes = blocks[-1].width
        if kind == "mono-forward":
            leaves = [m for _, m in self.pre]
            for b in self.blocks:
                leaves += [b.linear] + [a for _, a in b.acts]
            if not self.last:                     # M of the stage's last layer, as a Linear
                leaves.append(Linear(self.blocks[-1].width, classes, bias=False,
                                     rng=np.random.default_rng([seed, 7, lo]),
                                     dtype=model.dtype or np.float32))
            self.sub = Sequential(*leaves)
            self.rule = MonoForward(seed=seed + lo)
            self.opt = get_optimizer(optimizer, self.sub.params, lr=lr)
        else:
            own = {b.prefix + k: v for b in self.blocks for k, v in b.linear.params.items()}
            self.opt = get_optimizer(optimizer, own, lr=lr)

    # ------------------------------------------------------------------ one batch
    def step(self, z, y):
        """Run this stage on a batch: returns the next stage's input, or the last stage's
        ``(loss, extra)``."""
        t = time.perf_counter()
        out = getattr(self, "_" + self.kind.replace("-", "_"))(z, y)
        self.busy += time.perf_counter() - t
        return out

    def _mono_forward(self, z, y):
        out = None
        if not self.last:                         # the output activity before the update
            out = run_pre(self.pre, z)
            for b in self.blocks:
                out = b.forward(out, train=True)[0]
        info = self.rule.step(self.sub, z, y, optimizer=self.opt)
        return out if not self.last else (info["loss"], info["layer_losses"])

    def _ff(self, z, y):
        rule, (zp, zn) = self.rule, z
        n, grads, losses = len(zn), {}, []
        for i, b in enumerate(self.blocks):
            if self.last and i == len(self.blocks) - 1:           # the softmax head
                logits, cache = b.forward(zn, train=True)
                head_loss, dl = softmax_cross_entropy(logits, y)
                grads.update(b.backward(cache, dl)[1])
                self.opt.step(grads)
                return head_loss, losses
            zn = rule._normalise(b.forward(zn, train=False)[0])  # neutral pass, before the update
            h, cache = b.forward(zp, train=True)
            theta = rule.threshold(b.width)
            g = rule._good(h)
            gp, gn = g[:n], g[n:]
            losses.append(float(softplus(theta - gp).mean() + softplus(gn - theta).mean()))
            peer, _ = rule._peer_term(self.lo + i, h[:n])
            dg = np.concatenate([-sigmoid(theta - gp), sigmoid(gn - theta)]) / n
            grads.update(rule._layer_backward(b, cache, rule._dgood(h, g) * dg[:, None]
                                              .astype(h.dtype), peer))
            zp = rule._normalise(h)
        self.opt.step(grads)
        return zp, zn

    def _dfa(self, z, y):
        z = run_pre(self.pre, z)
        caches = []
        for b in self.blocks:
            z, c = b.forward(z, train=True)
            caches.append(c)
        if not self.last:
            self.pending.append(caches)
            return z
        value, dout = self.rule.loss(z, y, **self.rule.loss_options)
        grads = self.blocks[-1].backward(caches[-1], dout)[1]            # the exact top layer
        e = dout.reshape(len(dout), -1)
        grads.update(self._dfa_hidden(self.blocks[:-1], caches[:-1], e))
        self.opt.step(grads)
        return float(value), e

    def _dfa_hidden(self, blocks, caches, e):
        """Hidden layer l: its block's backward of the projected error ``e B_lᵀ`` (Nøkland 2016)."""
        grads = {}
        for b, c in zip(blocks, caches):
            B = self.rule.feedback[b.prefix + b.linear.feedback_weight]
            grads.update(b.backward(c, (e @ B.T.astype(e.dtype, copy=False)))[1])
        return grads

    def learn(self, last_out):
        """DFA: apply the broadcast error of the oldest pending batch to this stage's layers."""
        t = time.perf_counter()
        caches = self.pending.popleft()
        self.opt.step(self._dfa_hidden(self.blocks, caches, last_out[1]))
        self.busy += time.perf_counter() - t

    def busy_seconds(self):
        """Seconds this stage spent computing (its steps and DFA updates)."""
        return self.busy

    def params(self):
        """This stage's trained arrays, keyed like ``model.params``."""
        return {b.prefix + k: v for b in self.blocks for k, v in b.linear.params.items()}


@dataclass
class LayerParallelResult:
    """What :func:`layer_parallel` returns: the trained ``model`` (the stages' weights gathered);
    ``rule`` (the driver's rule: ``rule.predict`` where the rule has one, as for FF); ``losses``
    (the last stage's loss per batch); ``stages`` (each stage's parameter names); ``seconds`` and
    ``samples_per_second`` of training; ``stage_seconds`` (each stage's time computing: with
    overlap, ``seconds`` approaches their maximum rather than their sum); ``accuracy`` on ``eval_data`` (or ``None``)."""

    model: Module
    rule: object
    losses: list
    stages: list
    seconds: float
    stage_seconds: list
    samples_per_second: float
    accuracy: float | None = None
    config: dict = field(default_factory=dict)


def _driver_rule(kind, rule_options, seed):
    if kind not in RULES:
        raise ValueError(f"rule must be one of {sorted(RULES)}, got {kind!r}")
    opts = dict(rule_options or {})
    if kind == "mono-forward":
        if opts:
            raise ValueError(f"rule_options: layer_parallel's Mono-Forward has none (the paper's "
                             f"structure, output='projection'), got {sorted(opts)}")
        return MonoForward(seed=seed)
    rule = RULES[kind](seed=seed, **opts)
    if kind == "ff" and (rule.negatives != "random" or rule.schedule != "simultaneous"):
        raise ValueError("layer_parallel trains Forward-Forward with negatives='random' and "
                         "schedule='simultaneous' (hard negatives need the head's output back at "
                         "the input, a backward dependency between stages)")
    return rule


def layer_parallel(model, rule="mono-forward", data=None, *, workers=2, epochs=1, batch_size=64,
                   optimizer="adam", lr=1e-3, seed=0, rule_options=None, delay=0, shuffle=True,
                   eval_data=None, threads=1, num_cpus=None, max_in_flight=None):
    r"""Train ``model`` with a local rule, its layers split over ``workers`` Ray actors (module
    docstring). The trained weights are written back into ``model``.

    Parameters
    ----------
    model : ``[Flatten] (Linear, activation)* Linear`` (the chain the forward-only rules take).
    rule : ``"ff"``, ``"mono-forward"`` or ``"dfa"``; ``rule_options`` its arguments (FF, DFA).
    data : ``(x, y)`` with integer labels; ``eval_data`` the same, for ``result.accuracy``.
    workers : stages (actors), at most the number of Linear layers (Mono-Forward: one fewer, the
        last hidden layer staying with the output Linear).
    epochs, batch_size, optimizer, lr : training; every stage has its own optimizer of this kind.
    seed : the rule's seed (feedback matrices, projections, negatives) and the shuffling.
    delay : DFA only: 0 waits for the error before the next batch (single-process DFA exactly),
        1 applies it one batch late so the stages overlap.
    shuffle : a new order of the samples every epoch (``default_rng([seed, epoch])``).
    threads : BLAS threads per actor; ``num_cpus`` of a local cluster started here if Ray is not
        running (default ``workers``); ``max_in_flight`` : batches in the pipeline at once
        (default ``workers + 2``).

    Returns a :class:`LayerParallelResult`.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a nograd Module, got {type(model).__name__}")
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError("data must be a pair (x, y) of numpy arrays")
    x, y = data
    workers = check_int(workers, "workers", low=1)
    epochs = check_int(epochs, "epochs", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    delay = check_int(delay, "delay", low=0, high=1)
    lr = float(check_float(lr, "lr", low=0))
    in_flight = check_int(max_in_flight or workers + 2, "max_in_flight", low=1)
    drv = _driver_rule(rule, rule_options, seed)
    drv.check_model(model)
    pre, blocks = parse_blocks(model, type(drv).__name__)
    if blocks[-1].acts:
        raise ValueError("layer_parallel needs a model that ends with a Linear layer (the class "
                         "scores)")
    labels = class_labels(np.asarray(y), len(x), blocks[-1].width, "layer_parallel")
    if rule == "dfa":
        drv.grads(model, x[:2], labels[:2])         # draws the feedback matrices (no update)
    gen = np.random.default_rng([seed, 1])
    sizes = [sum(p.size for p in b.linear.params.values()) for b in blocks]
    if rule == "mono-forward" and len(blocks) > 1:
        # the last hidden layer learns through the output Linear (its M_L): one stage holds both
        cuts = split_stages(sizes[:-2] + [sizes[-2] + sizes[-1]], workers)
        cuts[-1] = (cuts[-1][0], len(blocks))
    else:
        cuts = split_stages(sizes, workers)
    ray = require_ray()
    t0 = None
    with local_ray(num_cpus or workers):
        cpus = min(1.0, float(ray.cluster_resources().get("CPU", workers)) / workers)
        actor = ray.remote(num_cpus=cpus)(_Stage)
        stages = [actor.remote(rule, model, copy.deepcopy(drv), lo, hi, optimizer=optimizer, lr=lr,
                               seed=seed, threads=threads) for lo, hi in cuts]
        try:
            ray.get([s.params.remote() for s in stages])        # started (errors surface here)
            losses, flying, waiting = [], deque(), deque()
            t0 = time.perf_counter()
            for epoch in range(epochs):
                order = (np.random.default_rng([seed, epoch]).permutation(len(x)) if shuffle
                         else np.arange(len(x)))
                for a in range(0, len(x), batch_size):
                    idx = order[a:a + batch_size]
                    xb, yb = x[idx], labels[idx]
                    if rule == "ff":
                        xb = _ff_inputs(drv, model, xb, yb, gen)
                    ref, yref = xb, ray.put(yb)
                    for s in stages:
                        ref = s.step.remote(ref, yref)
                    flying.append(ref)
                    if rule == "dfa":
                        waiting.append(ref)
                        while len(waiting) > delay:
                            e = waiting.popleft()
                            for s in stages[:-1]:
                                s.learn.remote(e)
                    while len(flying) > in_flight:
                        losses.append(ray.get(flying.popleft())[0])
            while waiting:
                e = waiting.popleft()
                for s in stages[:-1]:
                    s.learn.remote(e)
            losses += [r[0] for r in ray.get(list(flying))]
            trained = ray.get([s.params.remote() for s in stages])
            seconds = time.perf_counter() - t0
            busy = ray.get([s.busy_seconds.remote() for s in stages])
        finally:
            for s in stages:
                ray.kill(s)
    for part in trained:
        for k, v in part.items():
            model.params[k][...] = v
    acc = None
    if eval_data is not None:
        from ..metrics import accuracy
        from ..train import predictor

        acc = float(accuracy(eval_data[1], predictor(model, drv)(eval_data[0])))
    return LayerParallelResult(model=model, rule=drv, losses=[float(v) for v in losses],
                               stages=[sorted(p) for p in trained], seconds=seconds,
                               stage_seconds=busy,
                               samples_per_second=epochs * len(x) / seconds, accuracy=acc,
                               config={"rule": rule, "workers": workers, "cuts": cuts,
                                       "delay": delay if rule == "dfa" else None})


def _ff_inputs(rule, model, xb, yb, gen):
    """The driver's part of a Forward-Forward step: the positive/negative pair (true label and a
    random wrong one written into the input) and the neutral-label copy, normalised as the rule
    normalises its first layer's input (Hinton 2022, §3.3)."""
    _, _, x0, mode, c = rule._prepare(model, xb)
    wrong = rule._wrong_labels(yb, None, c, gen)
    zp = np.concatenate([rule._embed(x0, yb, mode, c), rule._embed(x0, wrong, mode, c)])
    zn = rule._embed(x0, None, mode, c)
    if rule.normalize_input:
        zp, zn = rule._normalise(zp), rule._normalise(zn)
    return zp, zn
