r"""The structured groups of a :class:`~nograd.models.gpt.GPT` and the surgery that removes them.

A *group* is a set of weights that can only go together if the model is to shrink (LLM-Pruner's
dependency groups, Ma et al. 2023, §3.1; MINI-LLM, Cheng et al. 2024, §3, prunes the same two
kinds). In block :math:`l` with :math:`H` heads of width :math:`D` and an MLP of :math:`M` channels:

* head :math:`h` — the rows :math:`sHD + hD + d` (:math:`s` = q, k, v; :math:`d < D`) of
  ``attn.in_proj.weight (3HD, E)`` and the columns :math:`hD + d` of ``attn.out_proj.weight
  (E, HD)`` (with the matching entries of ``in_proj.bias`` when there are biases);
* MLP channel :math:`c` — row :math:`c` of ``mlp.0.weight (M, E)`` (and ``mlp.0.bias[c]``) and
  column :math:`c` of ``mlp.2.weight (E, M)``.

Removing a group deletes those rows and columns; the model that results computes exactly what the
original computes with the group's weights set to zero (a removed head contributes nothing through
``out_proj``, a removed channel nothing through ``mlp.2``). :func:`shrink` builds that smaller
model as a new :class:`GPT` with per-block ``n_heads`` / ``mlp_hidden``, so
:func:`nograd.save_model` stores and :func:`nograd.load_model` rebuilds it.

:func:`aggregate` turns per-weight importances of the four matrices of a block into one score per
group (the sum over the group's weights, LLM-Pruner's "summation" aggregation).
"""
from __future__ import annotations

import numpy as np

from ..layers.linear import Linear

__all__ = ["MATRICES", "GROUP_KINDS", "check_gpt", "block_sizes", "aggregate", "shrink",
           "gpt_options", "lean_forward"]

#: the matrices of a block that the groups cut, by role
MATRICES = {"in": "attn.in_proj", "out": "attn.out_proj", "up": "mlp.0", "down": "mlp.2"}
#: the kinds of group, as ``prune(groups=...)`` names them
GROUP_KINDS = ("heads", "mlp")


def _blocks(model):
    return list(model._children["h"])


def check_gpt(model) -> None:
    """Refuse anything but a plain :class:`GPT` (a ``TypeError`` naming ``model``); a GPT with LoRA
    adapters in it must be merged first (:func:`nograd.lora.merge`)."""
    from ..models.gpt import GPT

    if not isinstance(model, GPT):
        raise TypeError(f"model must be a nograd GPT (nograd.models.gpt.GPT), got {type(model).__name__}")
    for l, block in enumerate(_blocks(model)):
        for name in MATRICES.values():
            m = block
            for part in name.split("."):
                m = m._children[part]
            if type(m) is not Linear:
                raise TypeError(f"model: block {l}'s {name} is a {type(m).__name__}, not a Linear; "
                                f"merge LoRA adapters first (nograd.lora.merge(model))")


def _linear(block, role):
    a, b = MATRICES[role].split(".")
    return block._children[a]._children[b]


def block_sizes(model) -> tuple[list[int], list[int], int]:
    """``(heads per block, MLP channels per block, head width D)``."""
    blocks = _blocks(model)
    heads = [b._children["attn"].num_heads for b in blocks]
    hidden = [_linear(b, "up").out_features for b in blocks]
    return heads, hidden, blocks[0]._children["attn"].head_dim


def aggregate(block, imp: dict) -> dict:
    r"""Group scores of one block from per-weight importances.

    ``imp`` maps ``"in"``, ``"out"``, ``"up"``, ``"down"`` to arrays shaped like the weights of
    ``attn.in_proj (3HD, E)``, ``attn.out_proj (E, HD)``, ``mlp.0 (M, E)``, ``mlp.2 (E, M)``.
    Returns ``{"heads": (H,), "mlp": (M,)}``, float64:

    .. math::
        S_h = \sum_{s,d,j} I^{in}_{sHD+hD+d,\,j} + \sum_{i,d} I^{out}_{i,\,hD+d}, \qquad
        S_c = \sum_j I^{up}_{c j} + \sum_i I^{down}_{i c}.
    """
    attn = block._children["attn"]
    H, D = attn.num_heads, attn.head_dim
    E = block.embed_dim
    heads = (imp["in"].reshape(3, H, D, E).sum(axis=(0, 2, 3), dtype=np.float64)
             + imp["out"].reshape(E, H, D).sum(axis=(0, 2), dtype=np.float64))
    mlp = imp["up"].sum(axis=1, dtype=np.float64) + imp["down"].sum(axis=0, dtype=np.float64)
    return {"heads": heads, "mlp": mlp}


def block_weights(block) -> dict:
    """The live weight arrays of a block's four grouped matrices, by role."""
    return {role: _linear(block, role)._own["weight"] for role in MATRICES}


# --------------------------------------------------------------------------- the inference pass
def lean_forward(model, x, *, on_block=None):
    r"""Logits ``(B, T, V)`` of ``model`` on token ids ``x (B, T)``, keeping one block's activations at a
    time (evaluation mode) — the memory of inference, not of a forward pass that keeps every cache
    for a backward pass.

    ``on_block(l, cache)`` (optional) sees each block's forward cache before it is dropped: with
    ``c = cache``, the inputs of the grouped matrices are ``c["attn"][0]`` (``attn.in_proj``,
    ``(B, T, E)``), ``c["attn"][2]`` (``attn.out_proj``, ``(B, T, HD)``), ``c["mlp"][0]``
    (``mlp.0``, ``(B, T, E)``) and ``c["mlp"][2]`` (``mlp.2``, ``(B, T, M)``).
    """
    model._check_idx(x)
    h = model._children["wte"](x)
    h = model._children["wpe"](h)
    for l, block in enumerate(_blocks(model)):
        h, cache = block.forward(h)
        if on_block is not None:
            on_block(l, cache)
        del cache
    h = model._children["ln_f"](h)
    return model._logits(h, model._head_weight(None))


# --------------------------------------------------------------------------- building the smaller model
def gpt_options(model) -> tuple[str, tuple, int, dict]:
    """``(registered name, input shape, classes, options)`` that rebuild ``model`` through
    :func:`nograd.get_model`: its ``build_spec`` when it has one, else read back from the GPT."""
    spec = getattr(model, "build_spec", None)
    if isinstance(spec, dict):
        return spec["model"], tuple(spec["input_shape"]), int(spec["num_classes"]), dict(spec["options"])
    from ..layers.activations import ACTIVATIONS

    block = _blocks(model)[0]
    act = block._children["mlp"][1]
    names = [k for k, cls in ACTIVATIONS.items() if type(act) is cls]
    if not names:
        raise ValueError(f"model: the MLP activation {type(act).__name__} has no registered name, so "
                         f"the pruned GPT could not be rebuilt; build the model with nograd.get_model")
    opts = {"n_layer": model.n_layer, "n_head": model.n_head, "n_embd": model.n_embd,
            "block_size": model.block_size, "tie_weights": model.tie_weights,
            "bias": "bias" in _linear(block, "up")._own,
            "norm": "rmsnorm" if type(model._children["ln_f"]).__name__ == "RMSNorm" else "layernorm",
            "activation": names[0],
            "dropout": float(getattr(model.drop, "p", 0.0) or 0.0) if model.drop is not None else 0.0}
    return "gpt", (model.block_size,), model.vocab_size, opts


def shrink(model, keep_heads, keep_mlp):
    r"""A new, physically smaller GPT: block ``l`` keeps the heads ``keep_heads[l]`` and the MLP
    channels ``keep_mlp[l]`` (sorted index arrays) of ``model``, every other array copied as it is.

    The result is built by :func:`nograd.get_model` with per-block ``n_heads`` and ``mlp_hidden``
    (so it carries a ``build_spec`` and saves with :func:`nograd.save_model`) and has ``model``'s
    dtype. Cost: one copy of the kept weights.
    """
    from ..models import get_model

    name, shape, classes, opts = gpt_options(model)
    heads, hidden, D = block_sizes(model)
    kh = [np.asarray(k, dtype=np.int64) for k in keep_heads]
    km = [np.asarray(k, dtype=np.int64) for k in keep_mlp]
    opts["n_heads"] = [int(k.size) for k in kh]
    opts["mlp_hidden"] = [int(k.size) for k in km]
    new = get_model(name, shape, classes, rng=0, **opts)
    if model.dtype is not None and new.dtype != model.dtype:
        new.astype(model.dtype)
    src = model.params
    rows = {}                                   # parameter name -> (row index, column index)
    for l in range(len(heads)):
        H = heads[l]
        qkv = (np.arange(3)[:, None, None] * H * D + kh[l][None, :, None] * D
               + np.arange(D)[None, None, :]).reshape(-1)
        cols = (kh[l][:, None] * D + np.arange(D)[None, :]).reshape(-1)
        p = f"h.{l}."
        rows[p + "attn.in_proj.weight"] = (qkv, None)
        rows[p + "attn.in_proj.bias"] = (qkv, None)
        rows[p + "attn.out_proj.weight"] = (None, cols)
        rows[p + "mlp.0.weight"] = (km[l], None)
        rows[p + "mlp.0.bias"] = (km[l], None)
        rows[p + "mlp.2.weight"] = (None, km[l])
    for k, dst in new.params.items():
        a = src[k]
        r, c = rows.get(k, (None, None))
        if r is not None:
            a = a[r]
        if c is not None:
            a = a[:, c]
        dst[...] = a
    for k, dst in new.buffers.items():
        dst[...] = model.buffers[k]
    return new
