r"""Patch embedding of the Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16
Words", §3.1, eq. 1): an image becomes a sequence of tokens, one per non-overlapping patch.

The image is cut into a ``gh × gw`` grid of ``ph × pw`` patches; each patch is flattened in the
order ``(channel, row, column)`` — the order in which a ``Conv2d`` with ``kernel = stride = patch``
reads it — and mapped by one shared linear map :math:`E`:

.. math::
    z_l = E\, \mathrm{vec}(x_{:,\, P_l}) + b, \qquad l = 1 \dots gh\,gw

(tokens in row-major grid order). With :math:`X` the ``(N·L, C·ph·pw)`` matrix of flattened
patches this is a single product :math:`Z = X E^\top + b`, so the three maps are those of
:class:`~nograd.layers.linear.Linear` wrapped in a reshape/transpose (a permutation of entries,
whose adjoint is the inverse permutation):

.. math::
    \bar X = \bar Z E, \quad \bar E = \bar Z^\top X, \quad \bar b = \textstyle\sum_l \bar z_l,
    \qquad \dot Z = \dot X E^\top + X \dot E^\top + \dot b.
"""
from __future__ import annotations

import math

import numpy as np

from ..core import init as _init
from ..core.checks import as_rng, check_array, check_dtype, check_like, check_positive, is_int
from ..core.module import Module
from .linear import affine_tangent


def _pair(value, name):
    """An int or a pair of ints → a pair of positive ints."""
    if is_int(value):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    for v in value:
        check_positive(v, name, integer=True)
    return int(value[0]), int(value[1])


class PatchEmbed(Module):
    r"""Image to patch tokens: cut into non-overlapping patches, flatten, one linear map (ViT §3.1).

    Shapes: ``x (N, C, H, W) -> y (N, (H/ph)(W/pw), embed_dim)``; ``weight (embed_dim, C, ph, pw)``
    (the layout of ``Conv2d`` with ``kernel = stride = patch``), ``bias (embed_dim,)``.

    .. math::
        y_{n,l} = W_{\mathrm{mat}}\, \mathrm{vec}(x_{n,:,P_l}) + b, \qquad
        W_{\mathrm{mat}} = \mathrm{reshape}(W, (E, C\,ph\,pw)).

    It equals PyTorch's ``nn.Conv2d(C, E, p, stride=p)(x).flatten(2).transpose(1, 2)`` with the same
    arrays, but is computed as a strided view, one copy into patch rows and one GEMM
    (``2·N·L·E·C·ph·pw`` flops), not an im2col with a convolution's bookkeeping.

    Parameters
    ----------
    img_size : int or (H, W); the input's spatial size, fixed (each must be divisible by the patch).
    patch_size : int or (ph, pw).
    in_chans, embed_dim : channels of the image and width of each token.
    bias : include the bias ``b``.
    rng : Generator or int seed for the initial arrays. The weight and the bias are drawn as PyTorch's
        ``Conv2d`` default does, :math:`U(\pm 1/\sqrt{\mathrm{fan\_in}})` with
        ``fan_in = C·ph·pw`` (its Kaiming-uniform with ``a = √5``).
    dtype : float32 (default) or float64.

    Attributes
    ----------
    grid : ``(H/ph, W/pw)``, the number of patches down and across.
    num_patches : ``(H/ph)(W/pw)``, the number of tokens ``L``.
    """

    def __init__(self, img_size, patch_size, in_chans: int, embed_dim: int, bias: bool = True, *,
                 rng=None, dtype=np.float32):
        super().__init__()
        self.img_size = _pair(img_size, "img_size")
        self.patch_size = _pair(patch_size, "patch_size")
        check_positive(in_chans, "in_chans", integer=True)
        check_positive(embed_dim, "embed_dim", integer=True)
        (H, W), (ph, pw) = self.img_size, self.patch_size
        if H % ph or W % pw:
            raise ValueError(f"img_size {self.img_size} must be divisible by patch_size "
                             f"{self.patch_size} (non-overlapping patches that cover the image)")
        self.in_chans, self.embed_dim = int(in_chans), int(embed_dim)
        self.grid = (H // ph, W // pw)
        self.num_patches = self.grid[0] * self.grid[1]
        self.patch_dim = self.in_chans * ph * pw
        dt = check_dtype(dtype)
        rng = as_rng(rng)
        bound = 1 / math.sqrt(self.patch_dim)
        self._own["weight"] = _init.uniform((self.embed_dim, self.in_chans, ph, pw), rng, dt,
                                            low=-bound, high=bound)
        if bias:
            self._own["bias"] = _init.uniform((self.embed_dim,), rng, dt, low=-bound, high=bound)

    def extra_repr(self):
        return (f"img_size={self.img_size}, patch_size={self.patch_size}, in_chans={self.in_chans}, "
                f"embed_dim={self.embed_dim}, bias={'bias' in self._own}")

    # ------------------------------------------------------------------ the permutation and its inverse
    def patches(self, x):
        """``(N, C, H, W) -> (N·L, C·ph·pw)``: one row per patch, tokens in row-major grid order."""
        N, C = x.shape[:2]
        (gh, gw), (ph, pw) = self.grid, self.patch_size
        v = x.reshape(N, C, gh, ph, gw, pw).transpose(0, 2, 4, 1, 3, 5)   # (N, gh, gw, C, ph, pw)
        return v.reshape(N * gh * gw, self.patch_dim)

    def unpatch(self, rows, n):
        """The inverse of :meth:`patches` (also its adjoint): ``(N·L, C·ph·pw) -> (N, C, H, W)``."""
        (gh, gw), (ph, pw) = self.grid, self.patch_size
        v = rows.reshape(n, gh, gw, self.in_chans, ph, pw).transpose(0, 3, 1, 4, 2, 5)
        return v.reshape(n, self.in_chans, gh * ph, gw * pw)

    # ------------------------------------------------------------------ the three maps
    def _check(self, x):
        check_array(x, "x", ndim=4)
        want = (self.in_chans,) + self.img_size
        if x.shape[1:] != want:
            raise ValueError(f"x must have shape (N, {want[0]}, {want[1]}, {want[2]}), got {x.shape}")

    def _matrix(self, p, dtype):
        W = p["weight"].reshape(self.embed_dim, self.patch_dim)
        return W if W.dtype == dtype else W.astype(dtype)

    def forward(self, x, *, train=False, rng=None, params=None):
        self._check(x)
        p = self._use(params)
        X = self.patches(x)
        y = X @ self._matrix(p, x.dtype).T
        b = p.get("bias")
        if b is not None:
            y += b.astype(x.dtype, copy=False)
        return y.reshape(x.shape[0], self.num_patches, self.embed_dim), X

    def backward(self, cache, dy, *, params=None, need_dx=True):
        X = cache
        n = X.shape[0] // self.num_patches
        check_like(dy, (n, self.num_patches, self.embed_dim))
        p = self._use(params)
        dZ = dy.reshape(-1, self.embed_dim)
        wdt = p["weight"].dtype
        grads = {"weight": (dZ.T @ X).reshape(p["weight"].shape).astype(wdt, copy=False)}
        if "bias" in p:
            grads["bias"] = dZ.sum(axis=0).astype(wdt, copy=False)
        dx = self.unpatch(dZ @ self._matrix(p, dy.dtype), n) if need_dx else None
        return dx, grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, X = self.forward(x, params=params)
        p = self._use(params)
        dparams = self._tangents(dparams) or {}
        dX = None
        if dx is not None:
            check_like(dx, x.shape, "dx")
            dX = self.patches(dx)
        dW = dparams.get("weight")
        if dW is not None:
            dW = dW.reshape(self.embed_dim, self.patch_dim)
        dZ = affine_tangent(X, dX, self._matrix(p, x.dtype), dW, dparams.get("bias"))
        return y, dZ.reshape(y.shape)
