"""A model as a chain of leaves, for the rules that replace the backward pass (DFA, PEPITA, AFA).

These rules cannot call ``model.backward``: they need the signal at chosen points of the network.
They see a model only through the module contract (DESIGN.md §2): its structural view
(:meth:`~nograd.core.module.Module.chain`), the layers' declarations, and each leaf's ``forward``
(with its returned cache), ``backward`` and ``jvp``. A (possibly nested) Sequential is read as
its chain of leaves with the dotted prefix of each, and every leaf is sorted into one of three kinds:

- *projecting*: a layer that declares ``feedback_weight`` (Linear, Conv2d) — the array a feedback
  signal trains;
- *local*: any leaf without trainable arrays (activations, dropout, pooling, flatten, ...), and
  normalisation layers (``normalization``), whose backward uses no weight matrix;
- anything else — refused by the rules with a ``ValueError`` naming the layer.
"""
from __future__ import annotations

import numpy as np

from ..core.module import Module


def is_projecting(m: Module) -> bool:
    """A layer whose weight (its ``feedback_weight``) the feedback rules replace in the backward."""
    return m.feedback_weight is not None


def is_local(m: Module) -> bool:
    """A leaf whose backward transports no weight matrix: parameter-free modules and norms."""
    if m.children:
        return False
    return not m.params or m.normalization


def chain(model: Module, who: str, *, allow_norms: bool = True):
    """The leaves of ``model`` in execution order as ``[(prefix, module), ...]``.

    ``prefix`` is the dotted path of the leaf followed by a dot (``"0."``, ``"block.2."``), so that
    ``prefix + m.feedback_weight`` is the key of its weight in ``model.params``. Nested
    Sequentials are flattened (:meth:`~nograd.core.module.Module.chain`); a composite block
    (``Residual``, attention blocks, ...) and any leaf that is neither projecting nor local raise
    ``ValueError`` saying why ``who`` (the rule's name) cannot train it.
    """
    if not isinstance(model, Module):
        raise TypeError(f"{who}: model must be a nograd Module, got {type(model).__name__}")
    out = []
    for name, m in model.chain():
        where = name or "the model"
        if m.combinator == "sum":
            raise ValueError(f"{who} cannot train a {type(m).__name__} block (at {where!r}): the "
                             f"rule needs a single chain of layers, and a skip connection has no "
                             f"single path for its feedback signal; use FA or backprop for "
                             f"residual nets")
        if m.children:
            raise ValueError(f"{who} cannot train {type(m).__name__} (at {where!r}): it only "
                             f"walks Sequential chains of Linear/Conv2d, activations, pooling, "
                             f"dropout, flatten and norm layers")
        if not (is_projecting(m) or (is_local(m) and (allow_norms or not m.params))):
            raise ValueError(f"{who} cannot train {type(m).__name__} (at {where!r}): its trainable "
                             f"arrays {list(m.params)} are not a Linear/Conv2d weight the rule "
                             f"knows how to give a feedback signal")
        out.append((f"{name}." if name else "", m))
    if not any(is_projecting(m) for _, m in out):
        raise ValueError(f"{who}: the model has no Linear or Conv2d layer to train")
    return out


def forward_chain(leaves, x, *, train=True, rng=None):
    """Run the leaves in order. Returns ``(inputs, caches, output)``: the input each leaf received
    (``inputs[i]``), the cache each returned, and the final output."""
    inputs, caches = [], []
    for _, m in leaves:
        inputs.append(x)
        x, c = m.forward(x, train=train, rng=rng)
        caches.append(c)
    return inputs, caches, x


def backward_segment(leaves, caches, dy, start, stop, grads, *, need_dx=False):
    """Backward through leaves ``stop-1, ..., start`` with each leaf's own ``backward``, collecting
    the gradients of their arrays into ``grads`` (dotted names). Returns the cotangent of the
    input of leaf ``start`` (``None`` unless ``need_dx``)."""
    for i in range(stop - 1, start - 1, -1):
        prefix, m = leaves[i]
        dy, g = m.backward(caches[i], dy, need_dx=need_dx or i > start)
        for k, v in g.items():
            grads[prefix + k] = v
    return dy


def ordered(grads: dict, model: Module) -> dict:
    """``grads`` in the order of ``model.params``; every parameter must be present."""
    missing = [k for k in model.params if k not in grads]
    if missing:
        raise RuntimeError(f"internal error: no update for parameters {missing}")
    return {k: grads[k] for k in model.params}


def per_sample_error(dout: np.ndarray) -> np.ndarray:
    """The output error ``e`` as rows ``(N, C)``: the loss gradient times the batch size, so that
    for softmax cross-entropy ``e = softmax(z) − onehot(y)`` as in the papers."""
    n = dout.shape[0]
    return (dout * dout.dtype.type(n)).reshape(n, -1)
