"""A model as a chain of blocks, for the forward-only rules (Forward-Forward, Mono-Forward, FOTON).

These rules train each layer from quantities available at that layer, so they need the network as
a list of *blocks*: a fully connected layer followed by its elementwise activations. The chain of
a (possibly nested) :class:`~nograd.core.module.Sequential`
(:meth:`~nograd.core.module.Module.chain`) is read, by what its leaves declare, as

    [shape_only leaves: Flatten, Reshape]  (dense layer: Linear  [activation: elementwise with df ...])+

and each block is run and differentiated only through the module contract (DESIGN.md §2): the
leaves' own ``forward`` (with returned caches) and ``backward``. A block's backward stops at its
input — the input is held constant, which is what "local" means in these rules.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_seed  # check_seed: re-exported, its home is core
from ..core.module import Module

__all__ = ["Block", "parse_blocks", "run_pre", "is_activation", "check_seed", "SeededRule",
           "class_labels", "softplus", "sigmoid"]


class Block:
    """One layer of a forward-only rule: ``h = act_k(… act_1(x Wᵀ + b))``.

    ``linear`` is a ``dense`` layer (Linear); ``prefix`` is its dotted path followed by a dot
    (``"1."``), so ``prefix + "weight"`` is its key in ``model.params``; ``acts`` are the
    elementwise activations after it, as ``[(prefix, module)]``.
    """

    def __init__(self, prefix: str, linear: Module, acts):
        self.prefix, self.linear, self.acts = prefix, linear, list(acts)

    @property
    def width(self) -> int:
        return self.linear.out_features

    def forward(self, x, *, train=True):
        """``(h, cache)`` for input ``x``; the cache holds every leaf's own cache."""
        y, c = self.linear.forward(x, train=train)
        caches = [c]
        for _, act in self.acts:
            y, c = act.forward(y, train=train)
            caches.append(c)
        return y, caches

    def backward(self, cache, dh, *, need_dx=False):
        """``(dx, grads)``: the block's own chain rule from ``dh`` back to the Linear, grads keyed
        by their names in ``model.params`` (the input cotangent only with ``need_dx``)."""
        for (_, act), c in zip(reversed(self.acts), reversed(cache[1:])):
            dh, _ = act.backward(c, dh)
        dx, g = self.linear.backward(cache[0], dh, need_dx=need_dx)
        return dx, {self.prefix + k: v for k, v in g.items()}


def _leaves(model, who):
    """The chain of ``model`` as ``[(prefix + ".", leaf)]``; a composite block raises ``ValueError``."""
    if not isinstance(model, Module):
        raise TypeError(f"{who}: model must be a nograd Module, got {type(model).__name__}")
    out = []
    for name, m in model.chain():
        if m.children:
            raise ValueError(f"{who} cannot train {type(m).__name__} (at {name or 'the model'!r}): "
                             f"it needs a Sequential chain of Linear layers and elementwise "
                             f"activations")
        out.append((f"{name}." if name else "", m))
    return out


def is_activation(m: Module) -> bool:
    """An elementwise leaf that is a fixed function ``y = f(x)`` with derivative ``df`` and no
    arrays (the activations; not dropout, whose Jacobian is a random mask)."""
    return m.elementwise and m.df is not None and not m.params


def parse_blocks(model, who: str):
    """``(pre, blocks)``: the leading shape-only leaves ``[(prefix, module)]`` and the blocks.

    Raises ``ValueError`` naming the first leaf that does not fit
    ``[Flatten|Reshape]* (Linear Activation*)+`` — convolutions, norms, dropout, residual blocks.
    """
    leaves = _leaves(model, who)
    pre, blocks = [], []
    for prefix, m in leaves:
        where = prefix[:-1] or "the model"
        if m.dense:
            blocks.append(Block(prefix, m, []))
        elif is_activation(m) and blocks:
            blocks[-1].acts.append((prefix, m))
        elif m.shape_only and not blocks:
            pre.append((prefix, m))
        else:
            raise ValueError(f"{who} cannot train {type(m).__name__} (at {where!r}): it trains a "
                             f"chain [Flatten] (Linear, activation)* of fully connected layers; "
                             f"only Flatten/Reshape may come before the first Linear and only "
                             f"elementwise activations between Linear layers")
    if not blocks:
        raise ValueError(f"{who}: the model has no Linear layer to train")
    return pre, blocks


def run_pre(pre, x):
    """Apply the shape-only leaves and return a 2-D ``(N, features)`` array."""
    for _, m in pre:
        x = m(x)
    return x.reshape(x.shape[0], -1)


class SeededRule:
    """Mixin: ``seed`` and the generator used when ``grads`` is called without ``rng=``."""

    def _init_seed(self, seed):
        self.seed = check_seed(seed)
        self._rng = np.random.default_rng([self.seed, 6])

    def _gen(self, rng):
        return self._rng if rng is None else as_rng(rng)


def class_labels(y, n: int, num_classes: int, who: str) -> np.ndarray:
    """Integer labels ``(n,)`` in ``[0, num_classes)`` from labels, one-hot or probability rows."""
    if not isinstance(y, np.ndarray):
        raise TypeError(f"{who}: y must be a numpy.ndarray, got {type(y).__name__}")
    if y.dtype.kind == "f" and y.ndim == 2:
        if y.shape != (n, num_classes):
            raise ValueError(f"{who}: y of target rows must have shape ({n}, {num_classes}), "
                             f"got {y.shape}")
        y = y.argmax(axis=1)
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise ValueError(f"{who}: y must be integer labels (N,) or target rows (N, C), "
                         f"got {y.dtype} of shape {y.shape}")
    if len(y) != n:
        raise ValueError(f"{who}: y has {len(y)} labels but x has {n} samples")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{who}: labels must be in [0, {num_classes}), got min {y.min()}, "
                         f"max {y.max()}")
    return y.astype(np.int64, copy=False)


def softplus(z):
    """``log(1 + e^z)`` without overflow."""
    return np.logaddexp(0.0, z)


def sigmoid(z):
    """``1 / (1 + e^{-z})`` without overflow (``exp(-softplus(-z))``)."""
    return np.exp(-np.logaddexp(0.0, -z))
