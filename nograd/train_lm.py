r"""Training a language model by iterations, as nanoGPT's ``train.py`` does.

Each iteration draws a fresh batch of random windows, runs forward, the token-level cross-entropy
and backward, clips the global gradient norm and takes an AdamW step whose learning rate follows a
linear warm-up and a cosine decay (Loshchilov & Hutter 2017, "SGDR", eq. 5; nanoGPT's ``get_lr``):

.. math::
    \eta_t = \begin{cases} \eta\,\frac{t+1}{w+1} & t < w \\
    \eta_{min} + \tfrac12(\eta - \eta_{min})\bigl(1 + \cos\pi\frac{t - w}{D - w}\bigr) & w \le t \le D \\
    \eta_{min} & t > D \end{cases}

Weight decay applies to matrices (arrays of two or more axes: embeddings and Linear weights) and
not to gains and biases, as in nanoGPT's ``configure_optimizers``. The loss is estimated every
``eval_interval`` iterations on ``eval_iters`` batches of each split, in evaluation mode, from a
generator of its own, so evaluation does not change the training batches.
"""
from __future__ import annotations

import math
import time

import numpy as np

from .core.checks import as_rng, check_positive
from .core.losses import softmax_cross_entropy
from .core.optim import AdamW


def lr_at(it: int, lr: float, min_lr: float, warmup: int, decay_iters: int) -> float:
    """nanoGPT's schedule: linear warm-up over ``warmup`` iterations, cosine to ``min_lr`` at
    ``decay_iters``, then constant."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay_iters:
        return min_lr
    ratio = (it - warmup) / max(1, decay_iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def estimate_loss(model, data, *, batch_size: int, block_size: int, eval_iters: int, rng) -> dict:
    """Mean cross-entropy over ``eval_iters`` random batches of each split (evaluation mode)."""
    out = {}
    for split in ("train", "val"):
        losses = []
        for _ in range(eval_iters):
            x, y = data.get_batch(split, batch_size, block_size, rng)
            losses.append(softmax_cross_entropy(model(x), y)[0])
        out[split] = float(np.mean(losses))
    return out


def train_lm(model, data, *, iters: int = 2000, batch_size: int = 12, lr: float = 1e-3,
             min_lr: float = 1e-4, warmup: int = 100, decay_iters: int | None = None,
             weight_decay: float = 0.1, betas=(0.9, 0.99), clip_norm: float = 1.0,
             eval_interval: int = 250, eval_iters: int = 20, rng=None, log=None) -> dict:
    """Train ``model`` (token ids ``(B, T)`` → logits ``(B, T, V)``) on ``data`` (a
    :class:`nograd.data.TextData`) for ``iters`` iterations with AdamW; returns a history dict.

    ``decay_iters`` defaults to ``iters``. ``log`` (a callable taking one string) receives a line at
    every evaluation. The returned dict holds ``iters``, ``train_seconds`` (training steps only, not
    evaluation), ``evals`` (a list of ``{"iter", "train_loss", "val_loss", "lr"}``), and the last
    evaluation's ``train_loss`` and ``val_loss`` (measured after the final iteration).
    """
    check_positive(iters, "iters", integer=True)
    check_positive(eval_interval, "eval_interval", integer=True)
    check_positive(eval_iters, "eval_iters", integer=True)
    check_positive(batch_size, "batch_size", integer=True)
    decay_iters = iters if decay_iters is None else int(decay_iters)
    if min_lr > lr:
        raise ValueError(f"min_lr ({min_lr}) must not exceed lr ({lr})")
    rng = as_rng(rng)
    eval_rng = np.random.default_rng(rng.integers(2**63))
    block = model.block_size
    params = model.params
    decay = {k: v for k, v in params.items() if v.ndim >= 2}
    rest = {k: v for k, v in params.items() if v.ndim < 2}
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    opt = AdamW(groups, lr=lr, betas=betas, clip_norm=clip_norm)
    hist = {"iters": iters, "evals": [], "train_seconds": 0.0}

    def evaluate(it):
        est = estimate_loss(model, data, batch_size=batch_size, block_size=block,
                            eval_iters=eval_iters, rng=eval_rng)
        rec = {"iter": it, "train_loss": est["train"], "val_loss": est["val"],
               "lr": lr_at(min(it, iters - 1), lr, min_lr, warmup, decay_iters)}
        hist["evals"].append(rec)
        if log is not None:
            log(f"iter {it:5d}/{iters}  train loss {rec['train_loss']:.4f}  val loss "
                f"{rec['val_loss']:.4f}  lr {rec['lr']:.2e}  {hist['train_seconds']:.1f} s")

    for it in range(iters):
        if it % eval_interval == 0:
            evaluate(it)
        t0 = time.perf_counter()
        step_lr = lr_at(it, lr, min_lr, warmup, decay_iters)
        for g in opt.groups:
            g["lr"] = step_lr
        x, y = data.get_batch("train", batch_size, block, rng)
        logits, cache = model.forward(x, train=True, rng=rng)
        loss, dlogits = softmax_cross_entropy(logits, y)
        if not math.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss} at iteration {it}")
        _, grads = model.backward(cache, dlogits)
        opt.step(grads)
        hist["train_seconds"] += time.perf_counter() - t0
    evaluate(iters)
    hist["train_loss"] = hist["evals"][-1]["train_loss"]
    hist["val_loss"] = hist["evals"][-1]["val_loss"]
    return hist
