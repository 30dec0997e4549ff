r"""Structured pruning of a GPT: MINI-LLM (Cheng et al. 2024) and the magnitude, Wanda and Taylor
baselines.

H. Cheng, M. Zhang, J. Q. Shi (2024), "MINI-LLM: Memory-Efficient Structured Pruning for Large
Language Models", arXiv:2407.11681. The method (its §3): score every structured group — attention
heads and MLP channels, each with the rows and columns it owns in the coupled matrices — by a
*feature map sensitivity* (FMS) that multiplies the three signals a pruning criterion can use,
weight magnitude, input activation and gradient,

.. math::
    S_g = \sum_{(i,j) \in g} \bigl|W_{ij}\, \hat G_{ij}\bigr| \, \|X_j\|_2 ,

where the gradient :math:`\hat G` is *estimated from forward passes only* (two-point SPSA with
MeZO's in-place, seed-regenerated perturbations, so scoring needs the memory of inference); remove
the lowest-scoring groups; recover the pruned model with LoRA (:func:`recover`). The score and the
estimator are written out in :mod:`.prune_scores`, the groups and the surgery in
:mod:`.prune_groups`. By default (``directions="mixed"``) the SPSA directions are a multiplicative
gate per attention head (few, so probed in complete Hadamard cycles: nearly exact) and isotropic
Gaussian directions over the MLP weights; ``directions="weights"`` is the paper's isotropic
estimator over every weight, which at affordable probe counts is mostly noise
(``docs/methods/mini-llm.md`` has the measurements).

>>> import numpy as np, nograd
>>> from nograd.compress import prune
>>> gpt = nograd.get_model("gpt", (16,), 11, rng=0, n_layer=2, n_head=4, n_embd=16)
>>> rng = np.random.default_rng(0)
>>> calib = [(x, np.roll(x, -1, axis=1)) for x in rng.integers(0, 11, (2, 4, 16))]
>>> small, report = prune(gpt, calib, score="mini-llm", ratio=0.5, n=8, rng=0)
>>> small.n_heads, small.mlp_hidden, report.params_before > report.params_after
((2, 2), (32, 32), True)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..core.checks import as_rng, check_positive
from .prune_groups import GROUP_KINDS, block_sizes, check_gpt, shrink
from .prune_recover import recover
from .prune_scores import DIRECTIONS, SCORES, group_scores

__all__ = ["prune", "recover", "PruneReport", "SCORES", "DIRECTIONS", "GROUP_KINDS", "check_calib"]


@dataclass
class PruneReport:
    """What :func:`prune` did.

    ``removed`` maps each pruned kind (``"heads"``, ``"mlp"``) to one list per block of the group
    indices that went (indices of the model before pruning); ``kept`` likewise. ``scores`` holds the
    per-block score arrays (``[{"heads": (H,), "mlp": (M,)}]``; pass them back as ``prune(...,
    scores=...)`` to prune the same model at another ratio without scoring again).
    ``score_seconds`` is the time spent scoring (0 when the scores were given).
    """

    score: str
    ratio: float
    groups: tuple
    removed: dict
    kept: dict
    params_before: int
    params_after: int
    scores: list = field(repr=False)
    score_seconds: float = 0.0

    def to_dict(self) -> dict:
        """The report as JSON-ready data (without the score arrays)."""
        return {"score": self.score, "ratio": self.ratio, "groups": list(self.groups),
                "removed": self.removed, "params_before": self.params_before,
                "params_after": self.params_after,
                "params_removed_fraction": round(1 - self.params_after / self.params_before, 4),
                "score_seconds": round(self.score_seconds, 3)}


def check_calib(calib_batches, vocab_size, name="calib_batches") -> list:
    """``calib_batches`` as a list of ``(x, y)`` integer id arrays of equal shape ``(B, T)`` with
    ids in ``[0, vocab_size)``; a clear error naming the argument otherwise."""
    if isinstance(calib_batches, tuple) and len(calib_batches) == 2 and isinstance(calib_batches[0], np.ndarray):
        raise TypeError(f"{name} must be a list of (x, y) batches, got one (x, y) pair; wrap it in [ ]")
    try:
        batches = list(calib_batches)
    except TypeError:
        raise TypeError(f"{name} must be a list of (x, y) batches, got {type(calib_batches).__name__}") from None
    if not batches:
        raise ValueError(f"{name} is empty; give at least one (x, y) batch of token ids")
    for i, b in enumerate(batches):
        if not (isinstance(b, (tuple, list)) and len(b) == 2):
            raise TypeError(f"{name}[{i}] must be an (x, y) pair of token-id arrays, got {type(b).__name__}")
        for part, a in zip("xy", b):
            if not isinstance(a, np.ndarray) or a.dtype.kind not in "iu" or a.ndim != 2 or a.size == 0:
                raise ValueError(f"{name}[{i}]: {part} must be a non-empty (batch, time) array of "
                                 f"integer token ids, got {getattr(a, 'dtype', type(a).__name__)} of "
                                 f"shape {getattr(a, 'shape', None)}")
            if a.min() < 0 or a.max() >= vocab_size:
                raise ValueError(f"{name}[{i}]: {part} has ids outside [0, {vocab_size})")
        if b[0].shape != b[1].shape:
            raise ValueError(f"{name}[{i}]: x {b[0].shape} and y {b[1].shape} must have the same shape")
    return batches


def _check_groups(groups) -> tuple:
    if isinstance(groups, str):
        groups = (groups,)
    try:
        groups = tuple(groups)
    except TypeError:
        raise TypeError(f"groups must be a tuple of {GROUP_KINDS}, got {groups!r}") from None
    bad = [g for g in groups if g not in GROUP_KINDS]
    if bad or not groups or len(set(groups)) != len(groups):
        raise ValueError(f"groups must be a non-empty selection of {GROUP_KINDS} without repeats, "
                         f"got {groups!r}")
    return groups


def _select(scores, ratio):
    """``(removed, kept)`` sorted index arrays: the ``round(ratio · size)`` lowest scores go, at
    most ``size - 1`` (a block keeps one group of each kind); ties go by index."""
    size = scores.size
    k = min(size - 1, int(np.floor(ratio * size + 0.5)))
    order = np.argsort(scores, kind="stable")
    return np.sort(order[:k]), np.sort(order[k:])


def prune(model, calib_batches, *, score="mini-llm", ratio=0.2, groups=("heads", "mlp"), rng=None,
          n=64, eps=None, directions="mixed", scores=None, log=None):
    r"""Score the structured groups of ``model`` and return a physically smaller copy without the
    lowest-scoring ones, and a :class:`PruneReport`.

    Parameters
    ----------
    model : a :class:`~nograd.models.gpt.GPT` (left unchanged; LoRA adapters merged first).
    calib_batches : list of ``(x, y)`` token-id arrays ``(B, T)``, ``y`` the next ids of ``x``.
    score : ``"mini-llm"`` (FMS with a zeroth-order gradient, forward passes only), ``"magnitude"``
        (group weight norm), ``"wanda"`` (:math:`\sum |W|\,\|X\|`) or ``"taylor"``
        (:math:`\sum |W \odot G|` with the backprop gradient, LLM-Pruner's first-order score);
        formulas in :mod:`nograd.compress.prune_scores`.
    ratio : fraction in ``[0, 1)`` of the groups of each kind removed from every block (rounded;
        each block keeps at least one head and one channel). 0 gives an identical copy.
    groups : which kinds to prune: ``"heads"`` and/or ``"mlp"``.
    rng : Generator or int seed of the zeroth-order perturbations (``mini-llm``); same seed, same
        scores.
    n, eps : SPSA probes per estimate (two forward passes each) and perturbation scale ε of
        ``mini-llm`` (default ε: 1e-2 relative for gate directions, 1e-3 for weight directions).
    directions : the SPSA directions of ``mini-llm`` (:func:`~nograd.compress.prune_scores.group_scores`):
        ``"mixed"`` (default) — a multiplicative gate per head, probed in complete Hadamard cycles
        (nearly exact: the heads are few), and isotropic Gaussian directions over the MLP weights;
        ``"gates"`` — gates for heads and channels alike; ``"weights"`` — isotropic Gaussian
        directions over every grouped weight, the paper's estimator taken literally (at ``n`` far
        below the number of weights its per-weight :math:`|\hat G|` is mostly noise; see
        ``docs/methods/mini-llm.md``).
    scores : per-block scores of an earlier report (``report.scores``) to reuse instead of scoring.
    log : optional callable receiving progress lines.

    Shapes: block ``l`` goes from ``H_l`` heads and ``M_l`` channels to
    ``H_l - round(ratio·H_l)`` and ``M_l - round(ratio·M_l)``; ``attn.in_proj (3H'D, E)``,
    ``attn.out_proj (E, H'D)``, ``mlp.0 (M', E)``, ``mlp.2 (E, M')``.
    Cost: ``magnitude`` reads the weights; ``wanda`` one inference pass per batch; ``taylor`` a
    forward and backward pass per batch (training memory); ``mini-llm`` that inference pass plus
    ``2n`` forward passes (inference memory).
    """
    check_gpt(model)
    if not isinstance(score, str) or score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating, np.integer)) \
            or not 0 <= ratio < 1:
        raise ValueError(f"ratio must be a number in [0, 1), got {ratio!r}")
    groups = _check_groups(groups)
    n = int(check_positive(n, "n", integer=True))
    if eps is not None:
        eps = float(check_positive(eps, "eps"))
    if directions not in DIRECTIONS:
        raise ValueError(f"directions must be one of {tuple(DIRECTIONS)}, got {directions!r}")
    heads, hidden, _ = block_sizes(model)
    t0 = time.perf_counter()
    if scores is None:
        batches = check_calib(calib_batches, model.vocab_size)
        seed = int(as_rng(rng).integers(2**63))
        progress = None
        if log is not None and score == "mini-llm":
            every = max(1, n // 4)

            def progress(k, total):
                if k % every == 0 or k == total:
                    log(f"mini-llm: {k}/{total} SPSA probes, {time.perf_counter() - t0:.1f} s")

        scores = group_scores(model, batches, score, n=n, eps=eps, seed=seed, directions=directions,
                              progress=progress)
        seconds = time.perf_counter() - t0
    else:
        if len(scores) != len(heads) or any(
                np.shape(s["heads"]) != (h,) or np.shape(s["mlp"]) != (m,)
                for s, h, m in zip(scores, heads, hidden)):
            raise ValueError("scores do not match the model's blocks (one {'heads': (H,), 'mlp': (M,)} "
                             "per block, from a report of this model)")
        seconds = 0.0
    removed = {g: [] for g in groups}
    kept = {"heads": [np.arange(h) for h in heads], "mlp": [np.arange(m) for m in hidden]}
    for g in groups:
        for l, s in enumerate(scores):
            rm, keep = _select(np.asarray(s[g], dtype=np.float64), float(ratio))
            removed[g].append(rm.tolist())
            kept[g][l] = keep
    pruned = shrink(model, kept["heads"], kept["mlp"])
    report = PruneReport(score=score, ratio=float(ratio), groups=groups, removed=removed,
                         kept={g: [k.tolist() for k in v] for g, v in kept.items()},
                         params_before=model.num_params, params_after=pruned.num_params,
                         scores=scores, score_seconds=seconds)
    if log is not None:
        log(f"{score} at ratio {ratio:g}: {report.params_before:,} -> {report.params_after:,} "
            f"parameters")
    return pruned, report

