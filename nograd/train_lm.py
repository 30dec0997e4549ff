r"""Training a language model by iterations, as nanoGPT's ``train.py`` does, with a learning rule.

Each iteration draws a fresh batch of random windows ``x, y`` (token ids ``(B, T)``, ``y`` shifted
by one) and hands it to a learning rule exactly as :func:`nograd.train.fit` does (DESIGN.md §3)::

    info = rule.step(model, x, y, optimizer=opt, rng=rng)   # grads, then opt.step; MeZO in place

Every rule sees the token-level cross-entropy of the logits ``(B, T, V)`` against ``y``: the mean
over all ``B·T`` positions of :math:`-\log \operatorname{softmax}(z_{bt})_{y_{bt}}`
(:func:`~nograd.core.losses.softmax_cross_entropy` flattens the leading axes), backprop and forward
gradients through their ``loss``, SPSA and MeZO through their objective (in evaluation mode).

The learning rate follows nanoGPT's ``get_lr``: a linear warm-up and a cosine decay (Loshchilov &
Hutter 2017, "SGDR", eq. 5):

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

from .core.checks import NonFiniteError, as_rng, check_positive
from .core.losses import softmax_cross_entropy
from .core.optim import get_optimizer

__all__ = ["LM_RULES", "lm_defaults", "lr_at", "estimate_loss", "train_lm"]

#: The rules that train a language model here, and each one's default recipe (optimizer, peak lr,
#: warm-up iterations, weight decay on matrices, clipping norm — 0 is off); every entry can be
#: overridden by the matching argument of :func:`train_lm`.
#:
#: - backprop: nanoGPT's CPU recipe for Tiny Shakespeare (AdamW, 1e-3, 100, 0.1, 1.0).
#: - forward-gradient (weight guesses, one tangent): AdamW, whose per-coordinate scaling absorbs the
#:   estimate's small norm (the projection on one guess in d dimensions is about ‖∇L‖/√d long); lr
#:   1e-2 without warm-up, decay 0.01 so that the decay per step ηλ = 1e-4 stays backprop's.
#: - spsa, mezo: plain SGD, ZO-SGD as in Malladi et al. (2023, §2, Definition 2), without warm-up,
#:   clipping or decay; plain SGD also lets MeZO update in place (its memory is inference's). Their
#:   estimate is about √d times longer than the gradient, which bounds the lr; 1e-3 suits the
#:   default 0.8M-parameter GPT trained from scratch — well above the rates the paper uses to
#:   fine-tune pre-trained models. A smaller model has a smaller ‖∇L‖ and wants a larger lr
#:   (1e-2 for a GPT of 13k parameters).
LM_RULES: dict[str, dict] = {
    "backprop": {"optimizer": "adamw", "lr": 1e-3, "warmup": 100, "weight_decay": 0.1,
                 "clip_norm": 1.0},
    "forward-gradient": {"optimizer": "adamw", "lr": 1e-2, "warmup": 0, "weight_decay": 0.01,
                         "clip_norm": 1.0},
    "spsa": {"optimizer": "sgd", "lr": 1e-3, "warmup": 0, "weight_decay": 0.0, "clip_norm": 0.0},
    "mezo": {"optimizer": "sgd", "lr": 1e-3, "warmup": 0, "weight_decay": 0.0, "clip_norm": 0.0},
    # recurrent models only (--model charlm): backprop's recipe (examples/dsf_charlm.py uses one lr
    # for BPTT, DSF and truncated BPTT)
    "dsf": {"optimizer": "adamw", "lr": 1e-3, "warmup": 100, "weight_decay": 0.1, "clip_norm": 1.0},
    "tbptt": {"optimizer": "adamw", "lr": 1e-3, "warmup": 100, "weight_decay": 0.1, "clip_norm": 1.0},
}


def lm_defaults(rule) -> dict:
    """The default recipe of ``rule`` (a name or a rule) for :func:`train_lm`; a ``ValueError``
    naming ``rule`` and the accepted names when it has none."""
    name = rule if isinstance(rule, str) else getattr(rule, "name", None)
    if name not in LM_RULES:
        got = rule if isinstance(rule, str) else type(rule).__name__
        raise ValueError(f"rule {got!r} does not train language models here; accepted rules: "
                         f"{', '.join(LM_RULES)}")
    return dict(LM_RULES[name])


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


def _step(rule, model, x, y, opt, rng, it):
    """One iteration of the rule contract, as :func:`nograd.train.fit` runs it; returns the loss.
    Divergence (a non-finite loss, output, estimate or gradient; token ids are always finite)
    raises :class:`~nograd.core.checks.NonFiniteError`, a ``FloatingPointError``, naming ``it``."""
    try:
        loss = float(rule.step(model, x, y, optimizer=opt, rng=rng)["loss"])   # no update if not finite
    except FloatingPointError as e:        # NonFiniteError, or a rule's own check (SPSA, MeZO)
        raise NonFiniteError(f"training diverged at iteration {it} ({e}); lower the learning "
                             f"rate") from e
    if not math.isfinite(loss):
        raise NonFiniteError(f"training diverged: the loss is {loss} at iteration {it}; lower the "
                             f"learning rate")
    return loss


def train_lm(model, data, *, rule="backprop", iters: int = 2000, batch_size: int = 12,
             optimizer: str | None = None, lr: float | None = None, min_lr: float | None = None,
             warmup: int | None = None, decay_iters: int | None = None,
             weight_decay: float | None = None, betas=(0.9, 0.99), clip_norm: float | None = None,
             eval_interval: int = 250, eval_iters: int = 20, rng=None, log=None,
             retain_memory: bool = True, no_decay=()) -> dict:
    """Train ``model`` (token ids ``(B, T)`` → logits ``(B, T, V)``) on ``data`` (a
    :class:`nograd.data.TextData`) for ``iters`` iterations with a learning ``rule``; returns a
    history dict.

    ``rule`` is a name or a rule object (:func:`nograd.get_rule`) among :data:`LM_RULES`:
    ``"backprop"`` (default), ``"forward-gradient"`` (Baydin et al. 2022, with the projection
    scaling of Fournier et al. 2023), ``"spsa"`` (Spall 1992) or ``"mezo"`` (Malladi et al. 2023). Its ``check_model`` runs first.

    The arguments left as ``None`` take the rule's recipe from :data:`LM_RULES`: ``optimizer``
    (``"adamw"``, ``"adam"`` or ``"sgd"``), ``lr`` (peak learning rate), ``warmup`` (iterations),
    ``weight_decay`` (matrices only) and ``clip_norm`` (global gradient norm; 0 turns clipping
    off); ``no_decay`` names parameters (or modules: a name prefix up to a dot, e.g. ``"wte"``)
    kept out of the weight decay although they are matrices — nanoGPT's early-2023 recipe decayed
    the Linear weights only, not the embeddings. ``min_lr`` defaults to ``lr / 10`` (nanoGPT: 1e-3 → 1e-4) and ``decay_iters`` to
    ``iters``. ``betas`` go to Adam/AdamW.

    ``retain_memory`` keeps freed blocks in the heap for the rest of the process
    (:func:`nograd.malloc.retain_freed_memory`; glibc only): each step then reuses the previous
    step's memory instead of faulting fresh pages in (a fifth of the default GPT's step time).

    ``log`` (a callable taking one string) receives a line at every evaluation. The returned dict
    holds ``rule``, ``optimizer``, ``lr`` (the peak), ``iters``, ``train_seconds`` (training steps
    only, not evaluation), ``evals`` (a list of ``{"iter", "train_loss", "val_loss", "lr"}``; the
    first, at iteration 0, is the untrained model's) and the last evaluation's ``train_loss`` and
    ``val_loss`` (measured after the final iteration). Divergence raises
    :class:`~nograd.core.checks.NonFiniteError` (a ``FloatingPointError``) naming the iteration.
    """
    from .rules import get_rule

    check_positive(iters, "iters", integer=True)
    check_positive(eval_interval, "eval_interval", integer=True)
    check_positive(eval_iters, "eval_iters", integer=True)
    check_positive(batch_size, "batch_size", integer=True)
    rule = get_rule(rule)
    recipe = lm_defaults(rule)
    given = {"optimizer": optimizer, "lr": lr, "warmup": warmup, "weight_decay": weight_decay,
             "clip_norm": clip_norm}
    recipe.update({k: v for k, v in given.items() if v is not None})
    lr = float(check_positive(recipe["lr"], "lr"))
    min_lr = lr / 10 if min_lr is None else float(check_positive(min_lr, "min_lr", allow_zero=True))
    if min_lr > lr:
        raise ValueError(f"min_lr ({min_lr}) must not exceed lr ({lr})")
    warmup = int(check_positive(recipe["warmup"], "warmup", integer=True, allow_zero=True))
    wd = float(check_positive(recipe["weight_decay"], "weight_decay", allow_zero=True))
    clip = float(check_positive(recipe["clip_norm"], "clip_norm", allow_zero=True)) or None
    decay_iters = iters if decay_iters is None else int(decay_iters)
    rule.check_model(model)
    rng = as_rng(rng)
    if retain_memory:
        from .malloc import retain_freed_memory

        retain_freed_memory()
    eval_rng = np.random.default_rng(rng.integers(2**63))
    block = model.block_size
    params = model.params
    kept = [no_decay] if isinstance(no_decay, str) else list(no_decay)
    for n in kept:
        if not any(k == n or k.startswith(f"{n}.") for k in params):
            raise ValueError(f"no_decay: {n!r} names no parameter of the model")
    decay = {k: v for k, v in params.items()
             if v.ndim >= 2 and not any(k == n or k.startswith(f"{n}.") for n in kept)}
    rest = {k: v for k, v in params.items() if k not in decay}
    groups = [{"params": decay, "weight_decay": wd}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    name = recipe["optimizer"]
    extra = {"betas": betas} if isinstance(name, str) and name.lower() in ("adam", "adamw") else {}
    opt = get_optimizer(name, groups, lr=lr, clip_norm=clip, **extra)
    hist = {"rule": rule.name, "optimizer": name, "lr": lr, "iters": iters, "evals": [],
            "train_seconds": 0.0}

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
        _step(rule, model, x, y, opt, rng, it)
        hist["train_seconds"] += time.perf_counter() - t0
    evaluate(iters)
    hist["train_loss"] = hist["evals"][-1]["train_loss"]
    hist["val_loss"] = hist["evals"][-1]["val_loss"]
    return hist
