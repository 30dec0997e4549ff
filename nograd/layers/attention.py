r"""Scaled dot-product attention and multi-head self-attention (Vaswani et al. 2017, §3.2).

For queries :math:`q` (..., Tq, D), keys :math:`k` (..., Tk, D) and values :math:`v` (..., Tk, Dv),
with scale :math:`c = 1/\sqrt D` and an additive mask :math:`M` (``-inf`` where a key is hidden):

.. math::
    s = c\,q k^\top + M, \qquad p = \operatorname{softmax}(s), \qquad o = p\,v.

Reverse mode (:func:`attention_backward`), with :math:`J_p u = p \odot (u - \langle p, u\rangle)` the
symmetric softmax Jacobian along the keys:

.. math::
    \bar v = p^\top \bar o, \quad \bar s = J_p(\bar o\, v^\top), \quad
    \bar q = c\,\bar s\,k, \quad \bar k = c\,\bar s^\top q.

Forward mode (:func:`attention_jvp`):

.. math::
    \dot s = c(\dot q k^\top + q \dot k^\top), \quad \dot p = J_p \dot s, \quad
    \dot o = \dot p\, v + p\, \dot v.

Hidden keys have :math:`p = 0`, so :math:`J_p` zeroes them in both modes and the mask needs no
derivative. Dropout on the attention weights multiplies :math:`p` by a kept mask over
:math:`1 - \text{dropout}` before the product with :math:`v`.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> q, k, v = (rng.standard_normal((2, 5, 4)) for _ in range(3))
>>> o = scaled_dot_product_attention(q, k, v, causal=True)
>>> bool(np.allclose(o[:, 0], v[:, 0]))       # the first query sees the first key only
True
"""
from __future__ import annotations

import math

import numpy as np

from ..core import init as _init
from ..core.checks import (NonFiniteError, all_finite, as_rng, check_array, check_dtype, check_like,
                           check_positive)
from ..core.module import Module
from .dropout import dropout_mask
from .linear import Linear
from .softmax import softmax_tangent


# ------------------------------------------------------------------------------ the function
def _check_qkv(q, k, v):
    for name, a in (("q", q), ("k", k), ("v", v)):
        check_array(a, name, min_ndim=2)
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same last axis (head size), got {q.shape} and {k.shape}")
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"k and v must agree on every axis but the last, got {k.shape} and {v.shape}")
    if q.shape[:-2] != k.shape[:-2]:
        raise ValueError(f"q and k must have the same batch axes, got {q.shape} and {k.shape}")


def causal_mask(tq: int, tk: int) -> np.ndarray:
    """Boolean ``(tq, tk)`` mask, True where query ``i`` may see key ``j``: ``j ≤ i + tk - tq``.

    The last query is aligned with the last key (the convention of decoding with a key/value
    cache: ``tq`` new positions after ``tk - tq`` cached ones); for ``tq == tk`` it is the lower
    triangle, as ``torch.nn.functional.scaled_dot_product_attention(is_causal=True)``.
    """
    return np.arange(tk)[None, :] <= np.arange(tq)[:, None] + (tk - tq)


def _masked_scores(q, k, scale, attn_mask, causal):
    s = q @ np.swapaxes(k, -1, -2)
    s *= s.dtype.type(scale)
    tq, tk = s.shape[-2:]
    if attn_mask is not None:
        if not isinstance(attn_mask, np.ndarray):
            raise TypeError(f"attn_mask must be a numpy.ndarray, got {type(attn_mask).__name__}")
        try:
            np.broadcast_shapes(attn_mask.shape, s.shape)
        except ValueError:
            raise ValueError(f"attn_mask of shape {attn_mask.shape} does not broadcast to the scores' "
                             f"shape {s.shape} (..., Tq, Tk)") from None
        if attn_mask.dtype == bool:
            s = np.where(attn_mask, s, -np.inf).astype(s.dtype, copy=False)
        elif attn_mask.dtype.kind == "f":
            if np.isnan(attn_mask).any() or np.isposinf(attn_mask).any():
                raise NonFiniteError("attn_mask contains NaN or +inf; use -inf (or False) to hide "
                                     "a key")
            s += attn_mask.astype(s.dtype, copy=False)
        else:
            raise TypeError(f"attn_mask must be boolean (True = attend) or float (added to the "
                            f"scores), got {attn_mask.dtype}")
    if causal:
        if tq > tk:
            raise ValueError(f"causal attention needs at least as many keys as queries, got Tq={tq}, Tk={tk}")
        s = np.where(causal_mask(tq, tk), s, s.dtype.type(-np.inf))
    if attn_mask is not None and np.isneginf(s.max(axis=-1)).any():
        raise ValueError("attn_mask hides every key from some query (a row of -inf/False)")
    return s


def attention_forward(q, k, v, *, attn_mask=None, causal=False, scale=None, dropout=0.0, rng=None):
    r"""``o = softmax(q kᵀ / √D + M) v`` and the cache :func:`attention_backward` needs.

    Shapes: ``q (..., Tq, D)``, ``k (..., Tk, D)``, ``v (..., Tk, Dv)`` → ``o (..., Tq, Dv)``.
    ``attn_mask`` broadcasts to ``(..., Tq, Tk)``: boolean (True = attend) or float (added);
    ``causal`` hides key ``j`` from query ``i`` when ``j > i + Tk - Tq``; ``scale`` defaults to
    ``1/√D``; ``dropout`` (with ``rng``) drops attention weights (pass 0 at evaluation).
    Cost: two batched products of ``Tq·Tk·D`` multiply-adds and a softmax over ``Tq·Tk``.
    """
    _check_qkv(q, k, v)
    if not (isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and 0 <= dropout < 1):
        raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(check_positive(scale, "scale"))
    from ..kernels.softmax import masked_softmax  # lazy: keep `import nograd` light

    if attn_mask is None:      # scale, causal limit and softmax in one pass over the scores
        tq, tk = q.shape[-2], k.shape[-2]
        if causal and tq > tk:
            raise ValueError(f"causal attention needs at least as many keys as queries, got Tq={tq}, Tk={tk}")
        p = masked_softmax(q @ np.swapaxes(k, -1, -2), scale, tk - tq if causal else None)
    else:
        p = masked_softmax(_masked_scores(q, k, scale, attn_mask, causal))
    keep = None
    pd = p
    if dropout > 0:
        keep = dropout_mask(p.shape, dropout, rng, p.dtype, "attention")
        pd = p * keep
    return pd @ v, (q, k, v, p, keep, scale)


def attention_backward(cache, do):
    """The vjp of :func:`attention_forward`: ``(dq, dk, dv)`` from the output cotangent ``do``."""
    q, k, v, p, keep, scale = cache
    check_like(do, q.shape[:-1] + v.shape[-1:], "do")
    pd = p if keep is None else p * keep
    dv = np.swapaxes(pd, -1, -2) @ do
    dp = do @ np.swapaxes(v, -1, -2)
    if keep is not None:
        dp *= keep
    from ..kernels.softmax import softmax_jvp

    ds = softmax_jvp(p, dp, scale)
    return ds @ k, np.swapaxes(ds, -1, -2) @ q, dv


def attention_jvp(q, k, v, dq=None, dk=None, dv=None, *, attn_mask=None, causal=False, scale=None,
                  dropout=0.0, rng=None):
    """The jvp of :func:`attention_forward`: ``(o, do)`` along tangents ``dq, dk, dv`` (None = 0).

    With ``dropout`` the mask is drawn from ``rng`` exactly as the forward draws it, so a
    generator seeded alike gives the same mask in both modes.
    """
    o, (q, k, v, p, keep, scale) = attention_forward(q, k, v, attn_mask=attn_mask, causal=causal,
                                                     scale=scale, dropout=dropout, rng=rng)
    for name, t, ref in (("dq", dq, q), ("dk", dk, k), ("dv", dv, v)):
        if t is not None:
            check_like(t, ref.shape, name)
    do = np.zeros_like(o)
    if dq is not None or dk is not None:
        ds = np.zeros(p.shape, p.dtype)
        if dq is not None:
            ds += dq @ np.swapaxes(k, -1, -2)
        if dk is not None:
            ds += q @ np.swapaxes(dk, -1, -2)
        ds *= ds.dtype.type(scale)
        dp = softmax_tangent(p, ds)
        if keep is not None:
            dp *= keep
        do += dp @ v
    if dv is not None:
        do += (p if keep is None else p * keep) @ dv
    return o, do


def scaled_dot_product_attention(q, k, v, *, attn_mask=None, causal=False, scale=None, dropout=0.0,
                                 rng=None):
    """``softmax(q kᵀ·scale + mask) v`` (see :func:`attention_forward` for shapes and options);
    equal to ``torch.nn.functional.scaled_dot_product_attention`` for the same inputs."""
    return attention_forward(q, k, v, attn_mask=attn_mask, causal=causal, scale=scale,
                             dropout=dropout, rng=rng)[0]


# ------------------------------------------------------------------------------ the layer
class MultiheadAttention(Module):
    r"""Multi-head self-attention with PyTorch's weight layout (Vaswani et al. 2017, §3.2.2).

    Shapes: ``x (B, T, E) -> y (B, T, E)``; ``in_proj.weight (3E, E)`` (the rows of
    :math:`W_q, W_k, W_v` stacked, as ``torch.nn.MultiheadAttention.in_proj_weight``),
    ``in_proj.bias (3E,)``, ``out_proj.weight (E, E)``, ``out_proj.bias (E,)``.

    .. math::
        [q, k, v] = x W_{in}^\top + b_{in}, \quad
        o_h = \operatorname{softmax}\!\Bigl(\tfrac{q_h k_h^\top}{\sqrt{E/H}} + M\Bigr) v_h, \quad
        y = [o_1, \dots, o_H] W_{out}^\top + b_{out},

    each head :math:`h` taking its own ``E/H`` columns of ``q, k, v``. The projections are
    :class:`~nograd.layers.Linear` children ``in_proj`` and ``out_proj`` (so LoRA can wrap them);
    :meth:`load_torch_state` takes a ``torch.nn.MultiheadAttention`` state dict
    (``in_proj_weight``, ``in_proj_bias``, ``out_proj.weight``, ``out_proj.bias``). Backward and jvp
    chain the projections' maps with :func:`attention_backward` / :func:`attention_jvp`.

    Parameters
    ----------
    embed_dim, num_heads : ``E`` and ``H``; ``E`` must be divisible by ``H``.
    causal : hide later positions from earlier ones (a decoder).
    bias : biases in both projections.
    dropout : probability of dropping an attention weight in training (``rng`` needed then).
    attn_mask : optional fixed mask, boolean (True = attend) or additive float, broadcasting to
        ``(B, H, T, T)``.
    rng, dtype : initial weights (Xavier-uniform ``in_proj``, ``U(±1/√E)`` ``out_proj``, zero biases,
        PyTorch's initialisation) and float32 (default) or float64.
    """

    def __init__(self, embed_dim: int, num_heads: int, causal: bool = False, bias: bool = True,
                 dropout: float = 0.0, *, attn_mask=None, rng=None, dtype=np.float32):
        super().__init__()
        check_positive(embed_dim, "embed_dim", integer=True)
        check_positive(num_heads, "num_heads", integer=True)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        if not (isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and 0 <= dropout < 1):
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        if attn_mask is not None and not isinstance(attn_mask, np.ndarray):
            raise TypeError(f"attn_mask must be a numpy.ndarray or None, got {type(attn_mask).__name__}")
        dt, rng = check_dtype(dtype), as_rng(rng)
        self.embed_dim, self.num_heads = int(embed_dim), int(num_heads)
        self.head_dim = self.embed_dim // self.num_heads
        self.causal, self.dropout, self.attn_mask = bool(causal), float(dropout), attn_mask
        E = self.embed_dim
        self._children["in_proj"] = Linear(E, 3 * E, bias, rng=rng, init="xavier_uniform", dtype=dt)
        bound = 1 / math.sqrt(E)
        self._children["out_proj"] = Linear(E, E, bias, rng=rng, dtype=dt,
                                            init=lambda s, r, d: _init.uniform(s, r, d, -bound, bound))

    def extra_repr(self):
        return f"{self.embed_dim}, num_heads={self.num_heads}, causal={self.causal}, dropout={self.dropout}"

    def _check(self, x):
        check_array(x, "x", ndim=3)
        if x.shape[-1] != self.embed_dim:
            raise ValueError(f"x must be (batch, time, {self.embed_dim}), got shape {x.shape}")

    def _opts(self, train, rng):
        return dict(attn_mask=self.attn_mask, causal=self.causal,
                    dropout=self.dropout if train else 0.0, rng=rng)

    def _split_heads(self, qkv):
        """``(B, T, 3E)`` → contiguous ``q, k, v`` of shape ``(B, H, T, E/H)``."""
        B, T, _ = qkv.shape
        a = np.ascontiguousarray(qkv.reshape(B, T, 3, self.num_heads, self.head_dim).transpose(2, 0, 3, 1, 4))
        return a[0], a[1], a[2]

    def _merge_heads(self, o):
        B, H, T, D = o.shape
        return o.transpose(0, 2, 1, 3).reshape(B, T, H * D)

    def _join_qkv(self, dq, dk, dv):
        """The inverse of :meth:`_split_heads` for cotangents and tangents."""
        B, H, T, D = dq.shape
        out = np.empty((B, T, 3, H, D), dq.dtype)
        for i, a in enumerate((dq, dk, dv)):
            out[:, :, i] = a.transpose(0, 2, 1, 3)
        return out.reshape(B, T, 3 * H * D)

    def forward(self, x, *, train=False, rng=None, params=None):
        self._check(x)
        self._check_keys(params)
        inp, out = self._children["in_proj"], self._children["out_proj"]
        qkv, c_in = inp.forward(x, params=self._split(params, "in_proj"))
        o, c_att = attention_forward(*self._split_heads(qkv), **self._opts(train, rng))
        y, c_out = out.forward(self._merge_heads(o), params=self._split(params, "out_proj"))
        return y, (c_in, c_att, c_out)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        c_in, c_att, c_out = cache
        q = c_att[0]
        check_like(dy, (q.shape[0], q.shape[2], self.embed_dim))
        dm, g_out = self._children["out_proj"].backward(c_out, dy, params=self._split(params, "out_proj"))
        dqkv = self.attention_vjp(c_att, dm)
        dx, g_in = self._children["in_proj"].backward(c_in, dqkv, params=self._split(params, "in_proj"),
                                                      need_dx=need_dx)
        return dx, {**self._prefixed(g_in, "in_proj"), **self._prefixed(g_out, "out_proj")}

    def attention_vjp(self, c_att, dm):
        """The vjp of the part between the two projections: the merged heads' cotangent
        ``dm (B, T, E)`` → the cotangent of ``[q, k, v]`` ``(B, T, 3E)``, with ``c_att`` the middle
        entry of this layer's cache. A rule that runs the projections' backward its own way (VCAS
        samples their weight gradients) calls it between them; :meth:`backward` does too."""
        B, T, _ = dm.shape
        do = dm.reshape(B, T, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)
        return self._join_qkv(*attention_backward(c_att, do))

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        self._check(x)
        self._check_keys(params)
        self._check_keys(dparams, "dparams")
        qkv, dqkv = self._children["in_proj"].jvp(x, dx, self._split(dparams, "in_proj"),
                                                  params=self._split(params, "in_proj"))
        o, do = attention_jvp(*self._split_heads(qkv), *self._split_heads(dqkv), **self._opts(train, rng))
        return self._children["out_proj"].jvp(self._merge_heads(o), self._merge_heads(do),
                                              self._split(dparams, "out_proj"),
                                              params=self._split(params, "out_proj"))

    # -------------------------------------------------------------- decoding with a cache
    def init_cache(self, batch: int, max_len: int, dtype=None) -> dict:
        """An empty key/value cache for :meth:`decode`: ``k, v (batch, H, max_len, E/H)``, ``n = 0``."""
        dt = self.dtype if dtype is None else check_dtype(dtype)
        shape = (int(batch), self.num_heads, int(max_len), self.head_dim)
        return {"k": np.zeros(shape, dt), "v": np.zeros(shape, dt), "n": 0}

    def decode(self, x, cache: dict, *, params=None):
        """Inference on ``t`` new positions ``x (B, t, E)`` after the ``cache["n"]`` cached ones.

        Appends their keys and values to ``cache`` (in place) and attends over all cached
        positions, so each new token costs ``O(n)`` instead of re-running the whole prefix. Equal to
        the last ``t`` rows of ``forward`` on the whole sequence (causal models).
        """
        self._check(x)
        n, t = cache["n"], x.shape[1]
        if n + t > cache["k"].shape[2]:
            raise ValueError(f"the key/value cache holds {cache['k'].shape[2]} positions; "
                             f"{n} cached + {t} new do not fit")
        qkv = self._children["in_proj"](x, params=self._split(params, "in_proj"))
        q, k, v = self._split_heads(qkv)
        cache["k"][:, :, n:n + t] = k
        cache["v"][:, :, n:n + t] = v
        cache["n"] = n + t
        mask = self.attn_mask
        if mask is not None:
            mask = mask[..., n:n + t, :n + t]
        o, _ = attention_forward(q, cache["k"][:, :, :n + t], cache["v"][:, :, :n + t],
                                 attn_mask=mask, causal=self.causal)
        return self._children["out_proj"](self._merge_heads(o), params=self._split(params, "out_proj"))

    def load_torch_state(self, state: dict) -> "MultiheadAttention":
        """Copy a ``torch.nn.MultiheadAttention`` state dict (tensors or arrays) into this layer."""
        names = {"in_proj_weight": ("in_proj", "weight"), "in_proj_bias": ("in_proj", "bias"),
                 "out_proj.weight": ("out_proj", "weight"), "out_proj.bias": ("out_proj", "bias")}
        for key, value in state.items():
            if key not in names:
                raise ValueError(f"state has unknown key {key!r}; expected some of {list(names)}")
            child, leaf = names[key]
            own = self._children[child]._own
            if leaf not in own:
                raise ValueError(f"state has {key!r} but this layer was built with bias=False")
            a = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
            if a.shape != own[leaf].shape:
                raise ValueError(f"state[{key!r}] has shape {a.shape}, expected {own[leaf].shape}")
            if not all_finite(a.astype(np.float64)):
                raise NonFiniteError(f"state[{key!r}] contains NaN or inf")
            own[leaf][...] = a
        return self
