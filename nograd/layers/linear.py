"""Affine layer ``y = x Wᵀ + b`` with weight laid out ``(out, in)`` as in PyTorch."""
from __future__ import annotations

import numpy as np

from ..core import init as _init
from ..core.checks import as_rng, check_array, check_dtype, check_last_dim, check_like, check_positive
from ..core.module import Module


def affine_tangent(x, dx, W, dW=None, db=None):
    r"""The tangent of ``x Wᵀ + b``: :math:`\dot x W^\top + x \dot W^\top + \dot b` (``None`` terms are
    zero; at least ``x`` fixes the shape). Used by every jvp with an affine map inside."""
    out = (dx @ W.T) if dx is not None else np.zeros(x.shape[:-1] + (W.shape[0],), dtype=x.dtype)
    if dW is not None:
        out += x @ dW.T.astype(x.dtype, copy=False)
    if db is not None:
        out += db.astype(x.dtype, copy=False)
    return out


# Linear's forward takes x Wᵀ as (W xᵀ)ᵀ for C-ordered batches of 2 to SMALL_BATCH_MAX_ROWS rows on
# layers of at least SMALL_BATCH_MIN_IN inputs and SMALL_BATCH_MIN_OUT outputs: OpenBLAS ran it
# 1.2–2× faster there, with the same bits (bench/linear_orientation.py; tests/layers/test_linear.py)
SMALL_BATCH_MAX_ROWS, SMALL_BATCH_MIN_IN, SMALL_BATCH_MIN_OUT = 32, 128, 256


def _small_batch(x2, W):
    n, k = x2.shape
    return (2 <= n <= SMALL_BATCH_MAX_ROWS and k >= SMALL_BATCH_MIN_IN
            and W.shape[0] >= SMALL_BATCH_MIN_OUT and x2.flags.c_contiguous and W.flags.c_contiguous)


class Linear(Module):
    r"""Fully connected layer.

    Shapes: ``x (..., in) -> y (..., out)``; ``weight (out, in)``, ``bias (out,)``.

    .. math::
        y = x W^\top + b, \qquad
        \bar x = \bar y W, \quad \bar W = \bar y^\top x, \quad \bar b = \textstyle\sum_n \bar y_n,
        \qquad \dot y = \dot x W^\top + x \dot W^\top + \dot b.

    The map is linear in ``x`` and in ``(W, b)`` separately, so its jvp reuses the forward
    products. Leading axes beyond the last are treated as batch axes.

    Parameters
    ----------
    in_features, out_features : sizes of the last axis of input and output.
    bias : include the bias ``b`` (FOTON and some feedback rules need ``bias=False``).
    rng : Generator or int seed for the initial weights (``None``: unseeded).
    init : name of an initialiser in :mod:`nograd.core.init` or a callable
        ``(shape, rng, dtype) -> array``; default ``"he_uniform"``, ``U(±√(6/in))``
        (He et al. 2015), which keeps activation variance through ReLU layers.
    dtype : float32 (default) or float64.

    Declares ``dense`` and ``feedback_weight = "weight"`` (see :class:`~nograd.core.module.Module`).
    """

    feedback_weight = "weight"
    dense = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rng=None,
                 init="he_uniform", dtype=np.float32):
        super().__init__()
        check_positive(in_features, "in_features", integer=True)
        check_positive(out_features, "out_features", integer=True)
        dt = check_dtype(dtype)
        rng = as_rng(rng)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self._own["weight"] = _init.get_initializer(init)((out_features, in_features), rng, dt)
        if bias:
            self._own["bias"] = np.zeros(out_features, dtype=dt)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={'bias' in self._own}"

    def _check(self, x, finite=True):
        check_array(x, "x", min_ndim=1, finite=finite)
        check_last_dim(x, self.in_features)

    def forward(self, x, *, train=False, rng=None, params=None):
        self._check(x)
        return self._forward(x, self._use(params))

    def _forward(self, x, p):
        """The forward on a checked ``x`` with the resolved parameters ``p``."""
        W = p["weight"]
        if W.dtype != x.dtype:
            W = W.astype(x.dtype)
        # one 2-D GEMM over all leading axes (a 3-D @ 2-D matmul runs one small product per row block)
        x2, b = x.reshape(-1, self.in_features), p.get("bias")
        if _small_batch(x2, W):               # W x2ᵀ, turned back while the bias is added
            yt = W @ x2.T
            y = np.empty(yt.shape[::-1], yt.dtype)
            if b is not None:
                np.add(yt.T, b, out=y)
            else:
                np.copyto(y, yt.T)
            return y.reshape(x.shape[:-1] + (self.out_features,)), x
        y = (x2 @ W.T).reshape(x.shape[:-1] + (self.out_features,))
        if b is not None:
            y += b
        return y, x

    def backward(self, cache, dy, *, params=None, need_dx=True):
        x = cache
        p = self._use(params)
        W = p["weight"]
        check_like(dy, x.shape[:-1] + (self.out_features,))
        dy2 = dy.reshape(-1, self.out_features)
        x2 = x.reshape(-1, self.in_features)
        grads = {"weight": (dy2.T @ x2).astype(W.dtype, copy=False)}
        if "bias" in p:
            grads["bias"] = dy2.sum(axis=0).astype(W.dtype, copy=False)
        dx = None
        if need_dx:
            Wd = W if W.dtype == dy.dtype else W.astype(dy.dtype)
            if x.ndim == 2 and x.flags.f_contiguous and not x.flags.c_contiguous:
                dx = (Wd.T @ dy2.T).T     # a feature-major input (FusedSequential) gets its cotangent so
            else:
                dx = (dy2 @ Wd).reshape(x.shape)
        return dx, grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, _ = self.forward(x, params=params)
        p = self._use(params)
        W = p["weight"]
        if W.dtype != x.dtype:
            W = W.astype(x.dtype)
        if dx is not None:
            check_like(dx, x.shape, "dx")
        dparams = self._tangents(dparams) or {}
        return y, affine_tangent(x, dx, W, dparams.get("weight"), dparams.get("bias"))
