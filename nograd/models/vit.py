r"""A Vision Transformer for small images: patches as tokens, pre-norm blocks, a linear head.

Dosovitskiy et al. (2021), "An Image is Worth 16x16 Words: Transformers for Image Recognition at
Scale", §3.1, eqs. 1–4. The image is cut into ``L = HW/P²`` non-overlapping patches, each flattened
and projected to ``D`` numbers; a learned class token is prepended (``pool="cls"``), learned
position embeddings are added, ``depth`` pre-norm Transformer blocks follow, and a final LayerNorm:

.. math::
    z_0 = [x_{class};\, x_p^1 E;\, \dots;\, x_p^L E] + E_{pos}, \qquad
    z_\ell = \operatorname{block}_\ell(z_{\ell-1}), \qquad
    y = \operatorname{LN}(z_L^0) \ (\text{cls}) \ \text{or}\ \tfrac{1}{L}\textstyle\sum_i \operatorname{LN}(z_L^i)
    \ (\text{mean}),

and the logits are :math:`W_{head}\, y + b`. The mean of the tokens instead of the class token is
the "global average pooling" variant of the paper's Appendix D.3.
"""
from __future__ import annotations

import numpy as np

from ..core import init as _init
from ..core.checks import as_rng, check_dtype, check_like, check_positive
from ..core.module import Module, Sequential
from ..layers.dropout import Dropout
from ..layers.embedding import PositionalEmbedding
from ..layers.linear import Linear
from ..layers.norm import LayerNorm
from ..layers.patch import PatchEmbed
from ..layers.transformer import TransformerBlock
from .registry import register_model


class ViT(Module):
    r"""Images ``x (N, C, H, W)`` → class logits ``(N, num_classes)``.

    Own array: ``cls_token (1, 1, D)`` (only with ``pool="cls"``). Children (dotted names):
    ``patch`` (:class:`~nograd.layers.PatchEmbed`), ``pos`` (position embeddings ``(T, D)`` with
    ``T = L + 1`` for ``"cls"``, ``L`` for ``"mean"``), ``blocks.0 … blocks.{depth-1}``
    (:class:`~nograd.layers.TransformerBlock`, pre-norm, GELU MLP), ``norm`` (the final
    LayerNorm) and ``head`` (Linear ``D → num_classes``). Cost per image: about
    ``T·(C·P²·D + depth·(4 + 2·mlp_ratio)·D²) + depth·2·T²·D`` multiply-adds.

    Parameters
    ----------
    image_size : int or ``(H, W)``; patch_size : int or ``(ph, pw)`` dividing it.
    in_chans, num_classes : channels of the image and number of outputs.
    dim, depth, heads, mlp_ratio : token width ``D``, number of blocks, attention heads (dividing
        ``D``) and the MLP's hidden width as a multiple of ``D``.
    pool : ``"cls"`` (the class token's final state, eq. 4) or ``"mean"`` (the mean of the tokens).
    dropout : dropout after the position embeddings and inside the blocks, in training.
    rng, dtype : initial weights (class token and positions ``N(0, 0.02²)``, the layers' own
        defaults elsewhere) and float32 (default) or float64.
    """

    def __init__(self, image_size, patch_size, in_chans: int, num_classes: int, dim: int = 64,
                 depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0, pool: str = "cls",
                 dropout: float = 0.0, *, rng=None, dtype=np.float32):
        super().__init__()
        for name, v in (("in_chans", in_chans), ("num_classes", num_classes), ("dim", dim),
                        ("depth", depth), ("heads", heads)):
            check_positive(v, name, integer=True)
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        dt, rng = check_dtype(dtype), as_rng(rng)
        self.pool, self.dim, self.depth, self.num_classes = pool, int(dim), int(depth), int(num_classes)
        patch = PatchEmbed(image_size, patch_size, in_chans, self.dim, rng=rng, dtype=dt)
        self.num_tokens = patch.num_patches + (pool == "cls")
        if pool == "cls":
            self._own["cls_token"] = _init.normal((1, 1, self.dim), rng, dt, std=0.02)
        self._children["patch"] = patch
        self._children["pos"] = PositionalEmbedding(self.num_tokens, self.dim, rng=rng, dtype=dt)
        self._children["blocks"] = Sequential(*[
            TransformerBlock(self.dim, heads, mlp_ratio, dropout=dropout, rng=rng, dtype=dt)
            for _ in range(self.depth)])
        self._children["norm"] = LayerNorm(self.dim, dtype=dt)
        self._children["head"] = Linear(self.dim, self.num_classes, rng=rng, dtype=dt)
        self.drop = Dropout(dropout) if dropout > 0 else None

    def extra_repr(self):
        p = self._children["patch"]
        return (f"image_size={p.img_size}, patch_size={p.patch_size}, dim={self.dim}, "
                f"depth={self.depth}, pool={self.pool!r}")

    # ------------------------------------------------------------------ helpers
    def _call(self, name, method, *args, params, **kw):
        return getattr(self._children[name], method)(*args, params=self._split(params, name), **kw)

    def _prepend(self, t, cls):
        """``(N, L, D)`` tokens → ``(N, 1 + L, D)`` with ``cls (1, 1, D)`` in front of each image."""
        c = np.broadcast_to(cls.astype(t.dtype, copy=False), (t.shape[0], 1, self.dim))
        return np.concatenate([c, t], axis=1)

    def _cls(self, params, what="params"):
        """The class token of ``params`` (or ``dparams``) checked to be ``(1, 1, D)``; None if absent."""
        v = (params or {}).get("cls_token")
        if v is not None and (not isinstance(v, np.ndarray) or v.shape != (1, 1, self.dim)):
            raise ValueError(f"{what}['cls_token'] must be an array of shape (1, 1, {self.dim}), got "
                             f"{getattr(v, 'shape', type(v).__name__)}")
        return v

    def _token(self, params):
        v = self._cls(params)
        return self._own["cls_token"] if v is None else v

    def _pooled(self, h):
        return h[:, 0] if self.pool == "cls" else h.mean(axis=1)

    # ------------------------------------------------------------------ the three maps
    def forward(self, x, *, train=False, rng=None, params=None):
        self._check_keys(params)
        c = {}
        h, c["patch"] = self._call("patch", "forward", x, params=params)
        if self.pool == "cls":
            h = self._prepend(h, self._token(params))
        h, c["pos"] = self._call("pos", "forward", h, params=params)
        c["drop"] = None
        if self.drop is not None and train:
            h, c["drop"] = self.drop.forward(h, train=True, rng=rng)
        h, c["blocks"] = self._call("blocks", "forward", h, train=train, rng=rng, params=params)
        h, c["norm"] = self._call("norm", "forward", h, params=params)
        c["shape"] = h.shape
        y, c["head"] = self._call("head", "forward", self._pooled(h), params=params)
        return y, c

    def backward(self, cache, dy, *, params=None, need_dx=True):
        N, T, D = cache["shape"]
        check_like(dy, (N, self.num_classes))
        grads = {}
        dz, g = self._call("head", "backward", cache["head"], dy, params=params)
        grads.update(self._prefixed(g, "head"))
        # the pooling's adjoint: the class token's row, or the mean spread over the T tokens
        if self.pool == "cls":
            dh = np.zeros((N, T, D), dz.dtype)
            dh[:, 0] = dz
        else:
            dh = np.broadcast_to(dz[:, None, :] / dz.dtype.type(T), (N, T, D)).copy()
        for name in ("norm", "blocks"):
            dh, g = self._call(name, "backward", cache[name], dh, params=params)
            grads.update(self._prefixed(g, name))
        if cache["drop"] is not None:
            dh, _ = self.drop.backward(cache["drop"], dh)
        dh, g = self._call("pos", "backward", cache["pos"], dh, params=params)
        grads.update(self._prefixed(g, "pos"))
        if self.pool == "cls":
            cls = self._token(params)
            grads["cls_token"] = dh[:, :1].sum(axis=0, keepdims=True).astype(cls.dtype, copy=False)
            dh = dh[:, 1:]
        dx, g = self._call("patch", "backward", cache["patch"], np.ascontiguousarray(dh), params=params,
                           need_dx=need_dx)
        grads.update(self._prefixed(g, "patch"))
        return dx, {k: grads[k] for k in self.params}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        self._check_keys(params)
        self._check_keys(dparams, "dparams")
        h, dh = self._call("patch", "jvp", x, dx, self._split(dparams, "patch"), params=params)
        if self.pool == "cls":
            h = self._prepend(h, self._token(params))
            dcls = self._cls(dparams, "dparams")
            dh = self._prepend(dh, np.zeros((1, 1, self.dim), dh.dtype) if dcls is None else dcls)
        h, dh = self._call("pos", "jvp", h, dh, self._split(dparams, "pos"), params=params)
        if self.drop is not None and train:
            h, (mask, _) = self.drop.forward(h, train=True, rng=rng)
            dh = dh * mask
        for name in ("blocks", "norm"):
            h, dh = self._call(name, "jvp", h, dh, self._split(dparams, name), train=train, rng=rng,
                               params=params)
        return self._call("head", "jvp", self._pooled(h), self._pooled(dh), self._split(dparams, "head"),
                          params=params)


def vit(input_shape, num_classes, *, rng=None, **options):
    """Vision Transformer on (C, H, W) images: patch tokens, pre-norm blocks, class-token or mean head.

    ``options`` go to :class:`ViT`; ``patch_size`` defaults to the largest of 4, 2, 1 dividing both
    ``H`` and ``W`` (16 tokens of 2×2 … on the 8×8 digits: 4 tokens of 4×4).
    """
    if len(input_shape) != 3:
        raise ValueError(f"vit takes images of shape (C, H, W), got {input_shape}")
    C, H, W = input_shape
    patch_size = options.pop("patch_size", next(p for p in (4, 2, 1) if H % p == 0 and W % p == 0))
    return ViT((H, W), patch_size, C, num_classes, rng=rng, **options)


register_model("vit", vit)
