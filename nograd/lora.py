"""LoRA fine-tuning of a whole model: wrap its Linear layers in :class:`~nograd.layers.LoRA`.

Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models" (ICLR 2022), §4.1–4.2: freeze
the pretrained weights and train a low-rank update ``(α/r) B A`` of chosen dense layers (§4.2 adapts
the attention projections only). :func:`apply` swaps the chosen ``Linear`` children of any model
for ``LoRA`` wrappers, in place, by dotted module name; :func:`merge` folds them back.

After :func:`apply`, ``model.params`` holds the LoRA arrays (``"...in_proj.lora_A"``,
``"...lora_B"``) *and* every parameter that does not belong to a Linear (embeddings, norms, convolutions):
those are not frozen by :func:`apply`. To train the adapters alone, give the optimizer only
:func:`lora_params`::

    >>> import nograd
    >>> net = nograd.Sequential(nograd.Linear(4, 8, rng=0), nograd.LayerNorm(8), nograd.Linear(8, 2, rng=1))
    >>> _ = apply(net, rank=2, targets=["0", "2"], rng=0)
    >>> list(net.params)
    ['0.lora_A', '0.lora_B', '1.weight', '1.bias', '2.lora_A', '2.lora_B']
    >>> opt = nograd.Adam(lora_params(net), lr=1e-2)     # the LayerNorm stays as it is
    >>> type(merge(net)[0]).__name__
    'Linear'

A module's forward must reach its children through ``self._children[name]`` (as ``Sequential``,
``Residual`` and the composites of nograd do) for a replacement to take effect: a composite that
kept its own attribute pointing at a child Linear would go on using the old layer.
"""
from __future__ import annotations

import numpy as np

from .core.checks import as_rng
from .core.module import Module
from .layers.linear import Linear
from .layers.lora import LoRA

__all__ = ["apply", "lora_params", "merge", "LoRA"]


def _linears(model):
    """``[(dotted_name, parent, child_key)]`` for every Linear in the tree below the root."""
    out = []
    for name, parent in model.modules():
        for key, child in parent._children.items():
            if isinstance(child, Linear):
                out.append((f"{name}.{key}" if name else key, parent, key))
    return out


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def apply(model: Module, rank: int, targets=None, alpha=None, *, dropout: float = 0.0, rng=None) -> Module:
    """Replace Linear layers of ``model`` by :class:`~nograd.layers.LoRA` wrappers, in place.

    Parameters
    ----------
    model : any :class:`~nograd.core.Module`; the Linear layers are found through
        ``model.modules()`` and replaced inside their parent's ``_children``. The root itself is
        never replaced (wrap a bare Linear with ``LoRA(layer, rank)``).
    rank, alpha, dropout : as for :class:`~nograd.layers.LoRA` (``alpha=None`` means ``α = r``).
    targets : ``None`` for every Linear, or a list of names: a Linear whose dotted module name
        equals a target or ends with ``"." + target`` is wrapped (``["in_proj", "out_proj"]``,
        ``["blocks.0.mlp.0"]``). A target that matches no Linear raises ``ValueError`` listing the
        names available.
    rng : Generator or int seed; the adapters' ``A`` matrices are drawn from it in module order.

    Returns the model. Linear layers already inside a LoRA are not wrapped again.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a nograd Module, got {type(model).__name__}")
    if targets is not None:
        if isinstance(targets, str) or not all(isinstance(t, str) for t in targets):
            raise TypeError(f"targets must be None or a list of module names (str), got {targets!r}")
        targets = list(targets)
    found = _linears(model)
    if targets is None:
        chosen = found
    else:
        names = [n for n, _, _ in found]
        missing = [t for t in targets if not any(_matches(n, t) for n in names)]
        if missing:
            raise ValueError(f"targets {missing} match no Linear layer of the model; "
                             f"its Linear layers are {names}")
        chosen = [f for f in found if any(_matches(f[0], t) for t in targets)]
    if not chosen:
        raise ValueError("model has no Linear layer to adapt")
    gen = as_rng(rng)
    wrapped = [LoRA(parent._children[key], rank, alpha, dropout=dropout, rng=gen)
               for _, parent, key in chosen]           # all built first: an error replaces nothing
    for (_, parent, key), lora in zip(chosen, wrapped):
        parent._children[key] = lora
    return model


def lora_params(model: Module) -> dict[str, np.ndarray]:
    """The live ``lora_A``/``lora_B`` arrays of ``model`` (dotted names as in ``model.params``):
    pass this to an optimizer to train the adapters and leave everything else frozen."""
    if not isinstance(model, Module):
        raise TypeError(f"model must be a nograd Module, got {type(model).__name__}")
    out = {}
    for name, m in model.modules():
        if isinstance(m, LoRA):
            for k, v in m.params.items():
                out[f"{name}.{k}" if name else k] = v
    return out


def merge(model: Module) -> Module:
    """Replace every LoRA in ``model`` by its merged Linear (:meth:`LoRA.merge`), in place.

    The result has the structure and parameter names the model had before :func:`apply`, and the
    same outputs (in evaluation mode) as the adapted model. Returns the model; a root that is itself
    a LoRA cannot be replaced in place, so then the merged Linear is returned instead.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a nograd Module, got {type(model).__name__}")
    if isinstance(model, LoRA):
        return model.merge()
    for _, parent in list(model.modules()):
        for key, child in list(parent._children.items()):
            if isinstance(child, LoRA):
                parent._children[key] = child.merge()
    return model
