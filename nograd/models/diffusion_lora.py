r"""Low-rank adapters for the diffusion U-Net: a LoRA for Conv2d, and one call to adapt a model.

Hu et al. 2021 ("LoRA: Low-Rank Adaptation of Large Language Models", §4.1) freeze a weight
:math:`W_0` and learn :math:`\Delta W = (\alpha/r) B A` with ``B = 0`` at the start. AlignProp
(Prabhudesai et al. 2023) fine-tunes the diffusion U-Net this way. For a convolution with
weight ``(O, C/g, KH, KW)`` the update is the same low-rank product on the weight seen as a matrix
``(O, C/g·KH·KW)`` (the convention of loralib's ``Conv2d``):

.. math::
    W = W_0 + s\,\mathrm{reshape}(B A), \quad A \in \mathbb{R}^{r \times C/g\,K_H K_W},\
    B \in \mathbb{R}^{O \times r}, \quad s = \alpha / r;

    \bar B = s\, \bar W_m A^\top, \quad \bar A = s\, B^\top \bar W_m, \qquad
    \dot W = s\,\mathrm{reshape}(\dot B A + B \dot A),

with :math:`\bar W_m` the frozen convolution's weight gradient as a matrix: the adapter reuses the
convolution's own maps at the merged weight, at the cost of forming ``W`` once per call.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.checks import as_rng, check_positive
from ..core.module import Module
from ..layers import Conv2d, Linear, LoRA


class LoRAConv2d(Module):
    """A frozen :class:`~nograd.layers.Conv2d` plus a trainable low-rank weight update.

    Shapes as the wrapped convolution; trainable ``lora_A (r, C/g·KH·KW)`` (uniform
    ``±1/√fan_in``, as :class:`~nograd.layers.LoRA`) and ``lora_B (O, r)`` (zeros, so the adapter
    starts equal to the base). The base's arrays are held by reference and never in ``params``.
    """

    def __init__(self, base: Conv2d, rank: int, alpha=None, *, rng=None):
        super().__init__()
        if not isinstance(base, Conv2d):
            raise TypeError(f"base must be a nograd.layers.Conv2d, got {type(base).__name__}")
        check_positive(rank, "rank", integer=True)
        W = base._own["weight"]
        fan_in = int(np.prod(W.shape[1:]))
        if rank > min(W.shape[0], fan_in):
            raise ValueError(f"rank must be at most min(out_channels, fan_in) = {min(W.shape[0], fan_in)}, "
                             f"got {rank}")
        self.base, self.rank = base, int(rank)
        self.alpha = float(rank if alpha is None else check_positive(alpha, "alpha"))
        self.scale = self.alpha / self.rank
        bound = 1.0 / math.sqrt(fan_in)
        self._own["lora_A"] = as_rng(rng).uniform(-bound, bound, (self.rank, fan_in)).astype(W.dtype)
        self._own["lora_B"] = np.zeros((W.shape[0], self.rank), dtype=W.dtype)

    def extra_repr(self):
        return f"{self.base.extra_repr()}, rank={self.rank}, alpha={self.alpha:g}"

    # Module.astype sets `_dtype` on every module of a tree: the frozen base follows the adapter
    @property
    def _dtype(self):
        return self.base._own["weight"].dtype

    @_dtype.setter
    def _dtype(self, dt):
        self.base.astype(dt)

    def _weight(self, p, dtype):
        W0 = self.base._own["weight"]
        A, B = (p[k].astype(dtype, copy=False) for k in ("lora_A", "lora_B"))
        return W0.astype(dtype, copy=False) + dtype.type(self.scale) * (B @ A).reshape(W0.shape)

    def forward(self, x, *, train=False, rng=None, params=None):
        p = self._use(params)
        W = self._weight(p, np.dtype(getattr(x, "dtype", np.float32)))
        y, cache = self.base.forward(x, params={"weight": W})
        return y, (cache, W)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        cache, W = cache
        p = self._use(params)
        dx, g = self.base.backward(cache, dy, params={"weight": W}, need_dx=need_dx)
        dWm = g["weight"].reshape(W.shape[0], -1)
        s = dWm.dtype.type(self.scale)
        A, B = p["lora_A"], p["lora_B"]
        grads = {"lora_A": (s * (B.astype(dWm.dtype, copy=False).T @ dWm)).astype(A.dtype, copy=False),
                 "lora_B": (s * (dWm @ A.astype(dWm.dtype, copy=False).T)).astype(B.dtype, copy=False)}
        return dx, grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        p = self._use(params)
        dt = np.dtype(getattr(x, "dtype", np.float32))
        W = self._weight(p, dt)
        d = self._tangents(dparams) or {}
        dW = None
        A, B = (p[k].astype(dt, copy=False) for k in ("lora_A", "lora_B"))
        if "lora_A" in d:
            dW = B @ d["lora_A"].astype(dt, copy=False)
        if "lora_B" in d:
            term = d["lora_B"].astype(dt, copy=False) @ A
            dW = term if dW is None else dW + term
        dparams_base = None if dW is None else {"weight": dt.type(self.scale) * dW.reshape(W.shape)}
        return self.base.jvp(x, dx, dparams_base, params={"weight": W})


def add_lora(model: Module, rank: int, alpha=None, *, convs: bool = True, linears: bool = True,
             rng=None) -> list[str]:
    """Wrap the Conv2d (in :class:`LoRAConv2d`) and Linear (in :class:`~nograd.layers.LoRA`) children
    of ``model`` in place; returns the dotted names wrapped. A layer whose rank would exceed its
    size gets the largest rank it allows. Adapters already present are left alone."""
    if not isinstance(model, Module):
        raise TypeError(f"model must be a nograd Module, got {type(model).__name__}")
    check_positive(rank, "rank", integer=True)
    gen = as_rng(rng)
    done = []
    for name, parent in list(model.modules()):
        if isinstance(parent, (LoRA, LoRAConv2d)):
            continue
        for key, child in list(parent._children.items()):
            full = f"{name}.{key}" if name else key
            if convs and isinstance(child, Conv2d):
                W = child._own["weight"]
                r = min(rank, W.shape[0], int(np.prod(W.shape[1:])))
                parent._children[key] = LoRAConv2d(child, r, alpha, rng=gen)
            elif linears and isinstance(child, Linear):
                r = min(rank, child.in_features, child.out_features)
                parent._children[key] = LoRA(child, r, alpha, rng=gen)
            else:
                continue
            done.append(full)
    if not done:
        raise ValueError("model has no Conv2d or Linear layer to adapt")
    return done


def lora_params(model: Module) -> dict[str, np.ndarray]:
    """The live ``lora_A``/``lora_B`` arrays of every adapter in ``model``, dotted names as in
    ``model.params``: hand these (and only these) to the optimizer to fine-tune the adapters."""
    return {k: v for k, v in model.params.items() if k.endswith((".lora_A", ".lora_B"))
            or k in ("lora_A", "lora_B")}
