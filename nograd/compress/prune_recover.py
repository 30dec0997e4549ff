r"""Recovery of a pruned GPT with LoRA (Hu et al. 2021), the last step of MINI-LLM (Cheng et al. 2024,
§3, following LLM-Pruner's recovery stage, Ma et al. 2023, §3.3).

Every Linear of the model gets a rank-``r`` adapter ``W = W_0 + (α/r) B A`` (:func:`nograd.lora.apply`,
``B = 0`` at the start, so training starts from the pruned model); only ``A`` and ``B`` are trained,
for a fixed number of steps, on the mean token cross-entropy; then the adapters are merged back
(:func:`nograd.lora.merge`) so the model has its pruned shapes and no extra inference cost.

- ``method="backprop"``: Adam on the adapters' exact gradients;
- ``method="mezo"``: MeZO (Malladi et al. 2023, Algorithm 1) on the adapters — forward passes only,
  in place, plain SGD — so recovery too needs about the memory of inference.
"""
from __future__ import annotations

import time

import numpy as np

from ..core.checks import as_rng, check_positive

__all__ = ["recover", "RECOVER_METHODS"]

#: recovery methods and their default learning rates (Adam for backprop, plain SGD for MeZO)
RECOVER_METHODS = {"backprop": 2e-3, "mezo": 1e-2}


def recover(model, batches, *, steps: int, method: str = "backprop", rank: int = 8, alpha=None,
            lr=None, eps: float = 1e-3, rng=None, log=None) -> dict:
    """LoRA fine-tuning of ``model`` (a GPT, changed in place) for ``steps`` steps; returns a history
    ``{"method", "steps", "rank", "lr", "losses" (one per step), "seconds"}``.

    ``batches``: a callable ``rng -> (x, y)`` drawing one batch of token ids ``(B, T)`` (e.g.
    ``lambda r: data.get_batch("train", 12, 64, r)``) or a list of ``(x, y)`` batches, cycled.
    ``rank``/``alpha``: the adapters' (``alpha=None`` means ``α = r``); ``lr`` defaults to
    :data:`RECOVER_METHODS`; ``eps``: MeZO's perturbation scale; ``rng``: Generator or seed of the
    adapters' ``A``, the batches and MeZO's perturbations. ``steps=0`` leaves the model as it is.
    """
    from ..core.optim import Adam
    from ..lora import apply, lora_params, merge
    from ..losses import softmax_cross_entropy
    from ..rules import MeZO
    from .prune_groups import check_gpt

    check_gpt(model)
    steps = int(check_positive(steps, "steps", integer=True, allow_zero=True))
    if method not in RECOVER_METHODS:
        raise ValueError(f"method must be one of {tuple(RECOVER_METHODS)}, got {method!r}")
    lr = float(RECOVER_METHODS[method] if lr is None else check_positive(lr, "lr"))
    if callable(batches):
        draw = batches
    else:
        fixed = list(batches) if not isinstance(batches, (str, bytes)) else []
        if not fixed:
            raise ValueError("batches must be a callable rng -> (x, y) or a non-empty list of "
                             "(x, y) batches")
        count = iter(range(2**62))

        def draw(_rng):
            return fixed[next(count) % len(fixed)]
    rng = as_rng(rng)
    hist = {"method": method, "steps": steps, "rank": int(rank), "lr": lr, "losses": [], "seconds": 0.0}
    if steps == 0:
        return hist
    t0 = time.perf_counter()
    apply(model, rank, alpha=alpha, rng=rng)
    try:
        names = list(lora_params(model))
        if method == "backprop":
            opt = Adam(lora_params(model), lr=lr)
        else:
            rule = MeZO(eps=eps, params=names, seed=int(rng.integers(2**63)))
        for it in range(steps):
            x, y = draw(rng)
            if method == "backprop":
                logits, cache = model.forward(x)
                loss, dlogits = softmax_cross_entropy(logits, y)
                _, grads = model.backward(cache, dlogits)
                opt.step({k: grads[k] for k in names})
            else:
                loss = rule.step(model, x, y, lr=lr, rng=rng)["loss"]
            loss = float(loss)
            if not np.isfinite(loss):
                raise FloatingPointError(f"recovery diverged at step {it} (loss {loss}); lower lr")
            hist["losses"].append(loss)
            if log is not None and (it + 1) % max(1, steps // 4) == 0:
                log(f"recover ({method}): step {it + 1}/{steps}, loss {loss:.4f}, "
                    f"{time.perf_counter() - t0:.1f} s")
    finally:
        merge(model)
    hist["seconds"] = time.perf_counter() - t0
    return hist
