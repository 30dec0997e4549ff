"""Low-rank adaptation of a frozen Linear layer (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large
Language Models", ICLR 2022, §4.1)."""
from __future__ import annotations

import math

import numpy as np

from ..core.checks import as_rng, check_array, check_float, check_last_dim, check_like, check_positive
from ..core.module import Module
from .dropout import dropout_mask
from .linear import Linear


class LoRA(Module):
    r"""A frozen :class:`Linear` plus a trainable low-rank update, ``W = W_0 + (α/r) B A``.

    Shapes: ``x (..., in) -> y (..., out)``; trainable ``lora_A (r, in)``, ``lora_B (out, r)``;
    frozen ``W_0 (out, in)``, ``b_0 (out,)`` (the wrapped layer's arrays). With ``s = α / r`` and
    ``u = x ⊙ m`` (inverted dropout on the adapter's input only, ``m = 1`` in evaluation):

    .. math::
        h = u A^\top, \qquad y = x W_0^\top + b_0 + s\, h B^\top;

        \bar B = s\, \bar y^\top h, \quad \bar h = s\, \bar y B, \quad \bar A = \bar h^\top u,
        \quad \bar x = \bar y W_0 + (\bar h A) \odot m;

        \dot y = \dot x W_0^\top + s\big((\dot u A^\top + u \dot A^\top) B^\top + h \dot B^\top\big),
        \quad \dot u = \dot x \odot m.

    Only ``lora_A`` and ``lora_B`` are in ``params`` (and in the grads): ``W_0`` and ``b_0`` stay
    on the wrapped layer, ``self.base``, which is held by reference (not copied, not a child), so an
    optimizer over ``params`` never touches it. ``B`` starts at zero, so the wrapper starts equal
    to the base (§4.1); ``A`` is drawn as in the reference implementation (microsoft/LoRA,
    ``loralib``: Kaiming-uniform with ``a = √5``, i.e. ``U(±1/√in)``; the paper says "random
    Gaussian", any scale works since ``B = 0``). :meth:`merge` folds the update into a plain
    Linear for inference at no extra cost (§4.1, "No additional inference latency").

    Cost per sample: ``in·out`` for the frozen product plus ``r(in + out)`` for the adapter.

    Parameters
    ----------
    base : the :class:`Linear` to adapt; its arrays are used as they are and never updated here.
    rank : ``r``, a positive int at most ``min(in, out)``.
    alpha : ``α``; the update is scaled by ``α / r``. Default ``None`` means ``α = r`` (scale 1),
        so the size of the update does not depend on the rank chosen (§4.1 keeps ``α`` fixed
        while varying ``r`` for the same reason).
    dropout : probability of dropping an entry of the adapter's input at training (``loralib``'s
        ``lora_dropout``); needs ``rng=`` in ``forward``/``jvp`` when training and positive.
    rng : Generator or int seed for ``A``.
    """

    def __init__(self, base: Linear, rank: int, alpha=None, *, dropout: float = 0.0, rng=None):
        super().__init__()
        if not isinstance(base, Linear):
            raise TypeError(f"base must be a nograd.layers.Linear, got {type(base).__name__}")
        check_positive(rank, "rank", integer=True)
        n_in, n_out = base.in_features, base.out_features
        if rank > min(n_in, n_out):
            raise ValueError(f"rank must be at most min(in_features, out_features) = "
                             f"{min(n_in, n_out)}, got {rank}")
        alpha = rank if alpha is None else check_positive(alpha, "alpha")
        check_float(dropout, "dropout", low=0, high=1, high_open=True)
        self.base = base
        self.in_features, self.out_features = n_in, n_out
        self.rank, self.alpha, self.dropout = int(rank), float(alpha), float(dropout)
        self.scale = self.alpha / self.rank
        dt = base._own["weight"].dtype
        bound = 1.0 / math.sqrt(n_in)
        self._own["lora_A"] = as_rng(rng).uniform(-bound, bound, (self.rank, n_in)).astype(dt)
        self._own["lora_B"] = np.zeros((n_out, self.rank), dtype=dt)

    def extra_repr(self):
        return (f"{self.in_features}, {self.out_features}, rank={self.rank}, alpha={self.alpha:g}, "
                f"dropout={self.dropout:g}")

    # Module.astype sets `_dtype` on every module of a tree: the frozen base follows the adapter.
    @property
    def _dtype(self):
        return self.base._own["weight"].dtype

    @_dtype.setter
    def _dtype(self, dt):
        self.base.astype(dt)

    def _frozen(self, dtype):
        """``(W_0, b_0 or None)`` in ``dtype``."""
        W = self.base._own["weight"]
        b = self.base._own.get("bias")
        return W.astype(dtype, copy=False), (None if b is None else b.astype(dtype, copy=False))

    def _mask(self, x, train, rng):
        if not train or self.dropout == 0:
            return None
        return dropout_mask(x.shape, self.dropout, rng, x.dtype, "LoRA")

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x", min_ndim=1)
        check_last_dim(x, self.in_features)
        p = self._use(params)
        W, b = self._frozen(x.dtype)
        A, B = (p[k].astype(x.dtype, copy=False) for k in ("lora_A", "lora_B"))
        mask = self._mask(x, train, rng)
        u = x if mask is None else x * mask
        h = u @ A.T
        y = x @ W.T
        y += x.dtype.type(self.scale) * (h @ B.T)
        if b is not None:
            y += b
        return y, (x, u, h, mask)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        x, u, h, mask = cache
        check_like(dy, x.shape[:-1] + (self.out_features,))
        p = self._use(params)
        A, B = p["lora_A"], p["lora_B"]
        s = dy.dtype.type(self.scale)
        dy2 = dy.reshape(-1, self.out_features)
        dB = s * (dy2.T @ h.reshape(-1, self.rank))
        dh = s * (dy @ B.astype(dy.dtype, copy=False))
        dA = dh.reshape(-1, self.rank).T @ u.reshape(-1, self.in_features)
        grads = {"lora_A": dA.astype(A.dtype, copy=False), "lora_B": dB.astype(B.dtype, copy=False)}
        dx = None
        if need_dx:
            du = dh @ A.astype(dy.dtype, copy=False)
            dx = dy @ self._frozen(dy.dtype)[0]
            dx += du if mask is None else du * mask
        return dx, grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, (_, u, h, mask) = self.forward(x, train=train, rng=rng, params=params)
        p = self._use(params)
        A, B = (p[k].astype(x.dtype, copy=False) for k in ("lora_A", "lora_B"))
        dparams = self._tangents(dparams) or {}
        dA, dB = (dparams.get(k) for k in ("lora_A", "lora_B"))
        dh = np.zeros_like(h)
        dy = np.zeros_like(y)
        if dx is not None:
            check_like(dx, x.shape, "dx")
            dy += dx @ self._frozen(x.dtype)[0].T
            dh += (dx if mask is None else dx * mask) @ A.T
        if dA is not None:
            dh += u @ dA.astype(x.dtype, copy=False).T
        adapter = dh @ B.T
        if dB is not None:
            adapter += h @ dB.astype(x.dtype, copy=False).T
        dy += x.dtype.type(self.scale) * adapter
        return y, dy

    def merge(self) -> Linear:
        r"""A new plain :class:`Linear` with weight :math:`W_0 + (α/r) B A` and the base's bias.

        Its output equals this wrapper's in evaluation mode (up to rounding); the sum is formed in
        float64 and stored in the base weight's dtype. The wrapper and its base are not changed.
        """
        W = self.base._own["weight"]
        A, B = (self._own[k].astype(np.float64) for k in ("lora_A", "lora_B"))
        merged = Linear(self.in_features, self.out_features, bias="bias" in self.base._own,
                        rng=0, init="zeros", dtype=W.dtype)
        merged._own["weight"] = (W.astype(np.float64) + self.scale * (B @ A)).astype(W.dtype)
        if "bias" in self.base._own:
            merged._own["bias"] = self.base._own["bias"].copy()
        return merged
