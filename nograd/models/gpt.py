r"""A decoder-only character language model: GPT-2's architecture at nanoGPT's scale.

Radford et al. (2019), "Language Models are Unsupervised Multitask Learners", §2.3 (pre-norm
blocks, a final layer norm, residual projections initialised with :math:`0.02/\sqrt{2L}`), as
implemented in Karpathy's nanoGPT (``model.py``); the defaults are nanoGPT's CPU configuration for
Tiny Shakespeare (4 layers, 4 heads, 128 wide, 64 positions, no biases, tied embeddings).

.. math::
    h_0 = W_e[\text{idx}] + P_{:T}, \quad h_l = \operatorname{block}_l(h_{l-1}), \quad
    \text{logits} = \operatorname{LN}(h_L)\, W_e^\top \ (\text{tied}) \ \text{or}\ \operatorname{LN}(h_L)\, W_{head}^\top.

With tied weights the embedding table's gradient is the sum of its two uses: the rows picked by
the lookup and the head's :math:`\bar{\text{logits}}^\top \operatorname{LN}(h_L)`.
"""
from __future__ import annotations

import math

import numpy as np

from ..core import init as _init
from ..core.checks import as_rng, check_dtype, check_like, check_positive
from ..core.module import Module, Sequential
from ..layers.dropout import Dropout
from ..layers.embedding import Embedding, PositionalEmbedding
from ..layers.linear import Linear
from ..layers.transformer import TransformerBlock, make_norm
from .registry import register_model


class GPT(Module):
    r"""Token ids ``idx (B, T)`` → next-token logits ``(B, T, vocab_size)``.

    Children (dotted names): ``wte`` (token embedding, ``(V, E)``), ``wpe`` (positions,
    ``(block_size, E)``), ``h.0 … h.{L-1}`` (:class:`~nograd.layers.TransformerBlock`, causal),
    ``ln_f`` and, without tying, ``head`` (``(V, E)``). Cost per token: about
    ``12·L·E²`` multiply-adds for the blocks, ``2·L·T·E`` for attention and ``V·E`` for the head.

    Parameters
    ----------
    vocab_size : number of token ids ``V``.
    n_layer, n_head, n_embd, block_size : depth, heads, width ``E`` and the longest context.
    dropout : embedding, attention and residual dropout in training.
    bias : biases in the Linear and LayerNorm layers (nanoGPT's default: none).
    tie_weights : the output head is the token embedding's transpose (Press & Wolf 2017).
    norm : ``"layernorm"`` or ``"rmsnorm"``; activation : the MLP's (exact GELU by default).
    rng, dtype : initial weights (nanoGPT's: N(0, 0.02²), residual projections N(0, (0.02/√(2L))²),
        zero biases) and float32 (default) or float64.
    n_heads, mlp_hidden : optional per-block sizes of a structurally pruned model
        (:func:`nograd.compress.prune`): block ``l`` keeps ``n_heads[l]`` heads of width
        ``n_embd // n_head`` (its ``attn.in_proj`` is ``(3·n_heads[l]·D, E)`` and ``attn.out_proj``
        ``(E, n_heads[l]·D)``) and an MLP of ``mlp_hidden[l]`` channels; ``None`` means ``n_head``
        heads and ``4·n_embd`` channels in every block.
    """

    def __init__(self, vocab_size: int, n_layer: int = 4, n_head: int = 4, n_embd: int = 128,
                 block_size: int = 64, dropout: float = 0.0, bias: bool = False, tie_weights: bool = True,
                 norm: str = "layernorm", activation="gelu", *, rng=None, dtype=np.float32,
                 n_heads=None, mlp_hidden=None):
        super().__init__()
        for name, v in (("vocab_size", vocab_size), ("n_layer", n_layer), ("n_head", n_head),
                        ("n_embd", n_embd), ("block_size", block_size)):
            check_positive(v, name, integer=True)
        n_heads = _per_block(n_heads, "n_heads", n_layer, n_head, n_head)
        mlp_hidden = _per_block(mlp_hidden, "mlp_hidden", n_layer, 4 * n_embd, None)
        dt, rng = check_dtype(dtype), as_rng(rng)
        self.n_heads, self.mlp_hidden = n_heads, mlp_hidden
        self.vocab_size, self.n_layer, self.n_head = int(vocab_size), int(n_layer), int(n_head)
        self.n_embd, self.block_size, self.tie_weights = int(n_embd), int(block_size), bool(tie_weights)
        std = 0.02
        normal = lambda s: lambda shape, r, d: _init.normal(shape, r, d, std=s)  # noqa: E731
        self._children["wte"] = Embedding(self.vocab_size, self.n_embd, rng=rng, init=normal(std), dtype=dt)
        self._children["wpe"] = PositionalEmbedding(self.block_size, self.n_embd, rng=rng, dtype=dt)
        blocks = [TransformerBlock(self.n_embd, self.n_head, causal=True, bias=bias, dropout=dropout,
                                   norm=norm, activation=activation, rng=rng, dtype=dt)
                  for _ in range(self.n_layer)]
        for block, heads, hidden in zip(blocks, n_heads, mlp_hidden):
            _resize_block(block, heads, hidden, bias=bias, rng=rng, dtype=dt)
        self._children["h"] = Sequential(*blocks)
        self._children["ln_f"] = make_norm(norm, self.n_embd, bias=bias, dtype=dt)
        if not self.tie_weights:
            self._children["head"] = Linear(self.n_embd, self.vocab_size, bias=False, rng=rng, dtype=dt)
        self.drop = Dropout(dropout) if dropout > 0 else None
        # nanoGPT's initialisation: every Linear weight N(0, 0.02²), the two residual projections
        # of each block N(0, (0.02/√(2L))²), biases zero
        for name, m in self.modules():
            if isinstance(m, Linear):
                resid = name.endswith("attn.out_proj") or name.endswith("mlp.2")
                s = std / math.sqrt(2 * self.n_layer) if resid else std
                m._own["weight"][...] = _init.normal(m._own["weight"].shape, rng, dt, std=s)
                if "bias" in m._own:
                    m._own["bias"][...] = 0

    def extra_repr(self):
        return (f"vocab_size={self.vocab_size}, n_layer={self.n_layer}, n_head={self.n_head}, "
                f"n_embd={self.n_embd}, block_size={self.block_size}")

    # ------------------------------------------------------------------ helpers
    def _check_idx(self, idx, offset=0):
        if not isinstance(idx, np.ndarray) or idx.dtype.kind not in "iu":
            raise TypeError(f"idx must be a numpy.ndarray of integer token ids, got "
                            f"{getattr(idx, 'dtype', type(idx).__name__)}")
        if idx.ndim != 2 or idx.size == 0:
            raise ValueError(f"idx must be (batch, time) token ids, got shape {idx.shape}")
        if offset + idx.shape[1] > self.block_size:
            raise ValueError(f"idx has {idx.shape[1]} positions (after {offset} cached); the model's "
                             f"block_size is {self.block_size}")

    def _head_weight(self, params):
        if self.tie_weights:
            return (self._split(params, "wte") or {}).get("weight", self._children["wte"]._own["weight"])
        return (self._split(params, "head") or {}).get("weight", self._children["head"]._own["weight"])

    def _head_key(self):
        return "wte.weight" if self.tie_weights else "head.weight"

    def _logits(self, h, W):
        W = W if W.dtype == h.dtype else W.astype(h.dtype)
        return (h.reshape(-1, self.n_embd) @ W.T).reshape(h.shape[:-1] + (self.vocab_size,))

    # ------------------------------------------------------------------ the three maps
    def forward(self, x, *, train=False, rng=None, params=None):
        self._check_idx(x)
        self._check_keys(params)
        c = {}
        h, c["wte"] = self._children["wte"].forward(x, params=self._split(params, "wte"))
        h, c["wpe"] = self._children["wpe"].forward(h, params=self._split(params, "wpe"))
        c["drop"] = None
        if self.drop is not None and train:
            h, c["drop"] = self.drop.forward(h, train=True, rng=rng)
        h, c["h"] = self._children["h"].forward(h, train=train, rng=rng, params=self._split(params, "h"))
        h, c["ln_f"] = self._children["ln_f"].forward(h, params=self._split(params, "ln_f"))
        c["top"] = h
        return self._logits(h, self._head_weight(params)), c

    def backward(self, cache, dy, *, params=None, need_dx=True):
        h = cache["top"]
        check_like(dy, h.shape[:-1] + (self.vocab_size,))
        W = self._head_weight(params)
        d2 = dy.reshape(-1, self.vocab_size)
        dW_head = (d2.T @ h.reshape(-1, self.n_embd)).astype(W.dtype, copy=False)
        dh = (d2 @ (W if W.dtype == dy.dtype else W.astype(dy.dtype))).reshape(h.shape)
        grads = {}
        for name in ("ln_f", "h"):
            dh, g = self._children[name].backward(cache[name], dh, params=self._split(params, name))
            grads.update(self._prefixed(g, name))
        if cache["drop"] is not None:
            dh, _ = self.drop.backward(cache["drop"], dh)
        dh, g = self._children["wpe"].backward(cache["wpe"], dh, params=self._split(params, "wpe"))
        grads.update(self._prefixed(g, "wpe"))
        _, g = self._children["wte"].backward(cache["wte"], dh, params=self._split(params, "wte"))
        grads.update(self._prefixed(g, "wte"))
        if self.tie_weights:
            grads["wte.weight"] += dW_head
        else:
            grads["head.weight"] = dW_head
        return None, {k: grads[k] for k in self.params}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        if dx is not None:
            raise ValueError("dx must be None: GPT's integer token ids have no tangent")
        self._check_idx(x)
        self._check_keys(params)
        self._check_keys(dparams, "dparams")
        h, dh = self._children["wte"].jvp(x, None, self._split(dparams, "wte"), params=self._split(params, "wte"))
        h, dh = self._children["wpe"].jvp(h, dh, self._split(dparams, "wpe"), params=self._split(params, "wpe"))
        if self.drop is not None and train:
            h, (mask, _) = self.drop.forward(h, train=True, rng=rng)
            dh = dh * mask
        for name in ("h", "ln_f"):
            h, dh = self._children[name].jvp(h, dh, self._split(dparams, name), train=train, rng=rng,
                                             params=self._split(params, name))
        W = self._head_weight(params)
        logits, dlogits = self._logits(h, W), self._logits(dh, W)
        dW = (dparams or {}).get(self._head_key())
        if dW is not None:
            dlogits += self._logits(h, dW)
        return logits, dlogits

    # ------------------------------------------------------------------ decoding with a cache
    def init_cache(self, batch: int) -> dict:
        """An empty key/value cache for :meth:`decode`, one per block, ``block_size`` long."""
        return {"n": 0, "layers": [b._children["attn"].init_cache(batch, self.block_size)
                                   for b in self._children["h"]]}

    def decode(self, idx, cache: dict, *, params=None):
        """Logits ``(B, t, V)`` for ``t`` new tokens after the ``cache["n"]`` cached ones (inference).

        Each block attends over its cached keys and values, so a new token costs one position,
        not the whole prefix; the cache is updated in place.
        """
        n = cache["n"]
        self._check_idx(idx, n)
        h = self._children["wte"](idx, params=self._split(params, "wte"))
        h = self._children["wpe"].forward(h, params=self._split(params, "wpe"), offset=n)[0]
        hp = self._split(params, "h")
        for i, (block, kv) in enumerate(zip(self._children["h"], cache["layers"])):
            h = block.decode(h, kv, params=self._children["h"]._split(hp, str(i)))
        cache["n"] = n + idx.shape[1]
        h = self._children["ln_f"](h, params=self._split(params, "ln_f"))
        return self._logits(h, self._head_weight(params))


def _per_block(sizes, name, n_layer, default, limit):
    """``sizes`` (None or one positive int per block, each at most ``limit``) as a tuple."""
    if sizes is None:
        return (int(default),) * int(n_layer)
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__") or len(sizes) != n_layer:
        raise ValueError(f"{name} must be None or a sequence of {n_layer} positive ints (one per "
                         f"block), got {sizes!r}")
    for i, v in enumerate(sizes):
        check_positive(v, f"{name}[{i}]", integer=True)
        if limit is not None and v > limit:
            raise ValueError(f"{name}[{i}] is {v}; a block has at most {limit}")
    return tuple(int(v) for v in sizes)


def _resize_block(block, heads, hidden, *, bias, rng, dtype):
    """Give ``block`` (a fresh :class:`TransformerBlock`) ``heads`` heads of unchanged width and an
    MLP of ``hidden`` channels by replacing its projections with smaller Linear layers (their
    weights are drawn again by :class:`GPT`'s initialisation)."""
    attn, mlp = block._children["attn"], block._children["mlp"]
    E = block.embed_dim
    if heads != attn.num_heads:
        inner = heads * attn.head_dim
        attn.num_heads = heads
        attn._children["in_proj"] = Linear(E, 3 * inner, bias, rng=rng, dtype=dtype)
        attn._children["out_proj"] = Linear(inner, E, bias, rng=rng, dtype=dtype)
    if hidden != mlp[0].out_features:
        mlp._children["0"] = Linear(E, hidden, bias, rng=rng, dtype=dtype)
        mlp._children["2"] = Linear(hidden, E, bias, rng=rng, dtype=dtype)


def generate(model: GPT, prompt, max_new_tokens: int, *, temperature: float = 1.0, top_k=None, rng=None,
             use_cache: bool = True) -> np.ndarray:
    """Sample ``max_new_tokens`` tokens after ``prompt`` (ids ``(T,)`` or ``(B, T)``); returns the ids
    with the prompt in front, ``(B, T + max_new_tokens)`` (or 1-D for a 1-D prompt).

    Each step takes the last position's logits over at most ``block_size`` tokens of context,
    divides them by ``temperature``, keeps the ``top_k`` largest (all when None) and draws from the
    softmax with ``rng``. With ``use_cache`` the keys and values of earlier positions are kept
    (:meth:`GPT.decode`), so each new token costs one position while the sequence fits in
    ``block_size``; past it the window slides and the cache is refilled from the last
    ``block_size - 1`` tokens, which gives exactly the tokens of ``use_cache=False``.
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a GPT, got {type(model).__name__}")
    ids = np.asarray(prompt)
    one = ids.ndim == 1
    ids = ids[None] if one else ids
    if ids.dtype.kind not in "iu" or ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"prompt must be non-empty integer token ids (T,) or (B, T), got "
                         f"{ids.dtype} of shape {ids.shape}")
    if ids.min() < 0 or ids.max() >= model.vocab_size:
        raise ValueError(f"prompt has ids outside [0, {model.vocab_size})")
    check_positive(max_new_tokens, "max_new_tokens", integer=True, allow_zero=True)
    temperature = float(check_positive(temperature, "temperature"))
    if top_k is not None:
        check_positive(top_k, "top_k", integer=True)
    rng = as_rng(rng)
    L = model.block_size
    out = np.empty((ids.shape[0], ids.shape[1] + max_new_tokens), np.int64)
    out[:, :ids.shape[1]] = ids
    n, cache, pending = ids.shape[1], None, None
    for _ in range(max_new_tokens):
        if not use_cache:
            logits = model(out[:, max(0, n - L):n])[:, -1]
        else:
            if cache is None or cache["n"] + 1 > L:        # (re)fill from the visible window
                cache = model.init_cache(out.shape[0])
                logits = model.decode(out[:, max(0, n - L):n], cache)[:, -1]
            else:
                logits = model.decode(pending, cache)[:, -1]
        logits = logits.astype(np.float64) / temperature
        if top_k is not None and top_k < logits.shape[-1]:
            kth = np.sort(logits, axis=-1)[:, -top_k][:, None]
            logits = np.where(logits < kth, -np.inf, logits)
        p = np.exp(logits - logits.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        u = rng.random((out.shape[0], 1))
        nxt = np.minimum((np.cumsum(p, axis=-1) < u).sum(axis=-1), model.vocab_size - 1)
        out[:, n] = nxt
        pending = out[:, n:n + 1]
        n += 1
    return out[0] if one else out


def gpt(input_shape, num_classes, *, rng=None, **options):
    """Decoder-only character GPT (token ids (block_size,) → next-token logits), nanoGPT's CPU defaults."""
    if len(input_shape) != 1:
        raise ValueError(f"gpt takes token windows of shape (block_size,), got {input_shape}")
    options.setdefault("block_size", input_shape[0])
    return GPT(num_classes, rng=rng, **options)


register_model("gpt", gpt)
