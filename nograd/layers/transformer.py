r"""The pre-norm transformer block (Vaswani et al. 2017, §3.1, with the normalisation moved in front
of each sub-layer as in GPT-2 and Xiong et al. 2020, "On Layer Normalization in the Transformer
Architecture", eq. for Pre-LN).

.. math::
    u = x + \operatorname{drop}(\operatorname{attn}(\operatorname{norm}_1(x))), \qquad
    y = u + \operatorname{drop}(\operatorname{mlp}(\operatorname{norm}_2(u))),

with :math:`\operatorname{mlp}(h) = \phi(h W_1^\top + b_1) W_2^\top + b_2`. The chain rule is written
out in :meth:`TransformerBlock.backward` (reverse: each residual passes its cotangent straight
through and adds the sub-layer's) and :meth:`TransformerBlock.jvp` (forward: tangents add the same
way).
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_array, check_dtype, check_like, check_positive
from ..core.module import Module, Sequential
from .activations import get_activation
from .attention import MultiheadAttention
from .dropout import Dropout
from .linear import Linear
from .norm import LayerNorm


def make_norm(kind: str, dim: int, *, bias=True, eps=1e-5, dtype=np.float32) -> Module:
    """``"layernorm"`` (optionally without bias) or ``"rmsnorm"`` over the last axis of size ``dim``."""
    if kind == "layernorm":
        return LayerNorm(dim, eps=eps, bias=bias, dtype=dtype)
    if kind == "rmsnorm":
        from .rmsnorm import RMSNorm

        return RMSNorm(dim, eps=eps, dtype=dtype)
    raise ValueError(f"norm must be 'layernorm' or 'rmsnorm', got {kind!r}")


class TransformerBlock(Module):
    r"""Pre-norm block: ``u = x + attn(norm1(x))``, ``y = u + mlp(norm2(u))``.

    Shapes: ``x (B, T, E) -> y (B, T, E)``. Children (dotted parameter names): ``ln1``, ``attn``
    (:class:`~nograd.layers.MultiheadAttention`: ``attn.in_proj``, ``attn.out_proj``), ``ln2``,
    ``mlp`` (``mlp.0`` = Linear E→hidden, ``mlp.1`` the activation, ``mlp.2`` = Linear hidden→E).

    Parameters
    ----------
    embed_dim, num_heads : ``E`` and the number of heads.
    mlp_ratio : hidden width of the MLP as a multiple of ``E`` (4 in GPT-2 and ViT).
    causal : causal self-attention (a decoder block).
    bias : biases in every Linear and LayerNorm (``False`` as in nanoGPT's default).
    dropout : residual dropout after each sub-layer and on the attention weights, in training.
    norm : ``"layernorm"`` or ``"rmsnorm"``; activation : a name from ``nograd.layers.ACTIVATIONS``
        (``"gelu"``, exact, by default).
    rng, dtype : initial weights and float32 (default) or float64.
    """

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: float = 4.0, *, causal: bool = False,
                 bias: bool = True, dropout: float = 0.0, norm: str = "layernorm", activation="gelu",
                 eps: float = 1e-5, rng=None, dtype=np.float32):
        super().__init__()
        check_positive(embed_dim, "embed_dim", integer=True)
        check_positive(mlp_ratio, "mlp_ratio")
        dt, rng = check_dtype(dtype), as_rng(rng)
        E = self.embed_dim = int(embed_dim)
        hidden = max(1, int(round(E * mlp_ratio)))
        self._children["ln1"] = make_norm(norm, E, bias=bias, eps=eps, dtype=dt)
        self._children["attn"] = MultiheadAttention(E, num_heads, causal=causal, bias=bias, dropout=dropout,
                                                    rng=rng, dtype=dt)
        self._children["ln2"] = make_norm(norm, E, bias=bias, eps=eps, dtype=dt)
        act = get_activation(activation) if isinstance(activation, str) else activation
        self._children["mlp"] = Sequential(Linear(E, hidden, bias, rng=rng, dtype=dt), act,
                                           Linear(hidden, E, bias, rng=rng, dtype=dt))
        self.drop = Dropout(dropout) if dropout > 0 else None

    def extra_repr(self):
        return f"{self.embed_dim}"

    def _sub(self, name, params):
        return self._children[name], self._split(params, name)

    def _drop_fwd(self, a, train, rng):
        if self.drop is None or not train:
            return a, None
        return self.drop.forward(a, train=True, rng=rng)

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x", ndim=3)
        if x.shape[-1] != self.embed_dim:
            raise ValueError(f"x must be (batch, time, {self.embed_dim}), got shape {x.shape}")
        self._check_keys(params)
        caches = {}
        u = x
        for norm, sub in (("ln1", "attn"), ("ln2", "mlp")):
            n, pn = self._sub(norm, params)
            f, pf = self._sub(sub, params)
            h, caches[norm] = n.forward(u, params=pn)
            a, caches[sub] = f.forward(h, train=train, rng=rng, params=pf)
            a, caches["drop_" + sub] = self._drop_fwd(a, train, rng)
            a += u
            u = a
        return u, caches

    def backward(self, cache, dy, *, params=None, need_dx=True):
        check_like(dy, cache["ln1"][0].shape)
        grads = {}
        for norm, sub in (("ln2", "mlp"), ("ln1", "attn")):
            d = dy
            if cache["drop_" + sub] is not None:
                d, _ = self.drop.backward(cache["drop_" + sub], d)
            f, pf = self._sub(sub, params)
            d, g = f.backward(cache[sub], d, params=pf)
            grads.update(self._prefixed(g, sub))
            n, pn = self._sub(norm, params)
            d, g = n.backward(cache[norm], d, params=pn)
            grads.update(self._prefixed(g, norm))
            dy = dy + d
        return (dy if need_dx else None), {k: grads[k] for k in self.params if k in grads}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        check_array(x, "x", ndim=3)
        self._check_keys(params)
        self._check_keys(dparams, "dparams")
        u, du = x, (np.zeros_like(x) if dx is None else check_like(dx, x.shape, "dx"))
        for norm, sub in (("ln1", "attn"), ("ln2", "mlp")):
            n, pn = self._sub(norm, params)
            f, pf = self._sub(sub, params)
            h, dh = n.jvp(u, du, self._split(dparams, norm), params=pn)
            a, da = f.jvp(h, dh, self._split(dparams, sub), train=train, rng=rng, params=pf)
            if self.drop is not None and train:
                _, mask = self._drop_fwd(a, train, rng)
                a, da = (a if mask[0] is None else a * mask[0]), (da if mask[0] is None else da * mask[0])
            u, du = u + a, du + da
        return u, du

    def decode(self, x, cache: dict, *, params=None):
        """Inference on new positions with the attention's key/value ``cache`` (see
        :meth:`MultiheadAttention.decode`)."""
        ln1, ln2 = self._children["ln1"], self._children["ln2"]
        u = x + self._children["attn"].decode(ln1(x, params=self._split(params, "ln1")), cache,
                                               params=self._split(params, "attn"))
        return u + self._children["mlp"](ln2(u, params=self._split(params, "ln2")),
                                         params=self._split(params, "mlp"))
