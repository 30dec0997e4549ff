r"""Normalisation layers: LayerNorm (Ba et al. 2016), BatchNorm1d/2d (Ioffe & Szegedy 2015) and
GroupNorm (Wu & He 2018).

Both standardise ``x`` over some axes, :math:`\hat x = (x - μ)\,r` with
:math:`r = (σ^2 + ε)^{-1/2}`, then apply a per-feature affine map :math:`y = γ \hat x + β`.
The derivative of the standardisation is the symmetric map

.. math::
    J v = r \left(v - \overline{v} - \hat x\, \overline{v \odot \hat x}\right),

(bars are means over the normalised axes), so backward and jvp share :func:`standardize_tangent`:
``x̄ = J(γ ȳ)`` and ``ẏ = γ J ẋ + γ̇ x̂ + β̇``. LayerNorm's forward and backward run the same maths
in one Numba pass per row (:mod:`nograd.kernels.layernorm`).
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_dtype, check_like, check_positive
from ..core.module import Module
from .norm_sync import SyncBatchStats, _SyncCache, current_shard, shard_scope  # noqa: F401 (re-exported)

def standardize(x, axes, eps):
    """Return ``(x̂, r)`` with statistics over ``axes`` (kept as length-1 dims)."""
    mu = x.mean(axis=axes, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=axes, keepdims=True)
    r = 1 / np.sqrt(var + x.dtype.type(eps))
    return xc * r, r


def standardize_tangent(xhat, r, v, axes):
    """Apply the (symmetric) Jacobian of the standardisation to ``v``; used for vjp and jvp."""
    return r * (v - v.mean(axis=axes, keepdims=True)
                - xhat * np.mean(v * xhat, axis=axes, keepdims=True))


class _AffineNorm(Module):
    """Shared affine part ``y = γ x̂ + β`` and its three maps; subclasses supply the statistics.

    Declares ``normalization`` (see :class:`~nograd.core.module.Module`). The instance attribute
    ``affine`` says whether the layer has the learned ``γ, β``.
    """

    normalization = True

    def _init_affine(self, shape, affine, dtype, bias=True):
        dt = check_dtype(dtype)
        self.affine = bool(affine)
        if self.affine:
            self._own["weight"] = np.ones(shape, dtype=dt)
            if bias:
                self._own["bias"] = np.zeros(shape, dtype=dt)

    def _gb(self, p, x):
        """γ, β broadcast against ``x`` (None without affine)."""
        if not self.affine:
            return None, None
        g, b = p["weight"], p.get("bias")
        shape = self._param_view(x)
        g = g.reshape(shape).astype(x.dtype, copy=False)
        return g, (None if b is None else b.reshape(shape).astype(x.dtype, copy=False))

    def _affine_forward(self, xhat, p):
        g, b = self._gb(p, xhat)
        if g is None:
            return xhat
        return xhat * g if b is None else xhat * g + b

    def _affine_grads(self, xhat, dy, p, sum_axes):
        if not self.affine:
            return {}
        return self._grads_from_sums(p, np.sum(dy * xhat, axis=sum_axes),
                                     np.sum(dy, axis=sum_axes) if "bias" in p else None)

    def _grads_from_sums(self, p, dgamma, dbeta):
        """The gain's and shift's gradients from their sums (a kernel's, or NumPy's), shaped and
        typed like the parameters; ``{}`` without an affine part."""
        if not self.affine:
            return {}
        shape, dt = p["weight"].shape, p["weight"].dtype
        grads = {"weight": dgamma.reshape(shape).astype(dt, copy=False)}
        if "bias" in p:
            grads["bias"] = dbeta.reshape(shape).astype(dt, copy=False)
        return grads

    def _affine_tangent(self, xhat, dxhat, dparams, p):
        g, _ = self._gb(p, xhat)
        dy = dxhat if g is None else dxhat * g
        dparams = self._tangents(dparams) or {}
        shape = self._param_view(xhat)
        if "weight" in dparams:
            dy = dy + xhat * dparams["weight"].reshape(shape).astype(xhat.dtype, copy=False)
        if "bias" in dparams:
            dy = dy + dparams["bias"].reshape(shape).astype(xhat.dtype, copy=False)
        return dy


class LayerNorm(_AffineNorm):
    r"""Normalise each sample over its last ``len(normalized_shape)`` axes (Ba, Kiros & Hinton 2016, eq. 4).

    Shapes: ``x (..., *normalized_shape) -> y`` same shape; ``weight, bias normalized_shape``.
    ``bias=False`` keeps the gain and drops the shift (as ``torch.nn.LayerNorm(bias=False)``, the
    layer norms of nanoGPT's default configuration).
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, *, dtype=np.float32):
        super().__init__()
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (int(normalized_shape),)
        self.normalized_shape = tuple(int(s) for s in normalized_shape)
        if not self.normalized_shape or min(self.normalized_shape) < 1:
            raise ValueError(f"normalized_shape must be positive sizes, got {normalized_shape!r}")
        self.eps = float(check_positive(eps, "eps"))
        self._init_affine(self.normalized_shape, elementwise_affine, dtype, bias)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.affine}, "
                f"bias={'bias' in self._own}")

    def _axes(self, x):
        k = len(self.normalized_shape)
        return tuple(range(x.ndim - k, x.ndim))

    def _param_view(self, x):
        return self.normalized_shape

    def _check(self, x):
        check_array(x, "x", min_ndim=len(self.normalized_shape))
        if x.shape[x.ndim - len(self.normalized_shape):] != self.normalized_shape:
            raise ValueError(f"x must end with shape {self.normalized_shape}, got {x.shape}")

    def _rows(self, x):
        """``x`` as ``(N, D)``: the normalised axes flattened into one."""
        return x.reshape(-1, int(np.prod(self.normalized_shape)))

    def _gamma_beta(self, p):
        if not self.affine:
            return None, None
        return p["weight"], p.get("bias")

    def forward(self, x, *, train=False, rng=None, params=None):
        """One Numba pass per row (:mod:`nograd.kernels.layernorm`); cache ``(x̂, r)``."""
        self._check(x)
        p = self._use(params)
        from ..kernels.layernorm import layernorm_forward  # lazy: keep `import nograd` light

        y, xhat, r = layernorm_forward(self._rows(x), *self._gamma_beta(p), self.eps)
        k = len(self.normalized_shape)
        return y.reshape(x.shape), (xhat.reshape(x.shape), r.reshape(x.shape[:-k] + (1,) * k))

    def backward(self, cache, dy, *, params=None, need_dx=True):
        xhat, r = cache
        check_like(dy, xhat.shape)
        p = self._use(params)
        from ..kernels.layernorm import layernorm_backward

        gamma, _ = self._gamma_beta(p)
        dx, dgamma, dbeta = layernorm_backward(self._rows(xhat), r, self._rows(dy), gamma)
        return (dx.reshape(xhat.shape) if need_dx else None), self._grads_from_sums(p, dgamma, dbeta)

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, (xhat, r) = self.forward(x, params=params)
        p = self._use(params)
        if dx is None:
            dxhat = np.zeros_like(xhat)
        else:
            check_like(dx, x.shape, "dx")
            dxhat = standardize_tangent(xhat, r, dx, self._axes(x))
        return y, self._affine_tangent(xhat, dxhat, dparams, p)


class BatchNorm1d(SyncBatchStats, _AffineNorm):
    r"""Batch normalisation over the batch (and length) axes (Ioffe & Szegedy 2015, Alg. 1–2).

    Shapes: ``x (N, C)`` or ``(N, C, L)`` → same; ``weight, bias, running_mean, running_var (C,)``.

    In training, ``μ, σ²`` are the batch statistics (biased variance) and the running averages are
    updated, ``m ← (1 - α) m + α μ`` and ``v ← (1 - α) v + α σ²_{unbiased}`` (as PyTorch does); the
    backward is the full derivative through the batch statistics. In evaluation the running
    statistics are constants, so the layer is affine per channel: ``x̄ = γ r ȳ``.

    In a sharded step (:func:`current_shard`) the training statistics are the whole batch's,
    synchronised between the shards as ``torch.nn.SyncBatchNorm`` does (:meth:`_sync_forward`).
    """

    sync_batch_stats = True      # declared for nograd.parallel: a sharded step may synchronise it

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, *, dtype=np.float32):
        super().__init__()
        check_positive(num_features, "num_features", integer=True)
        self.num_features = int(num_features)
        self.eps = float(check_positive(eps, "eps"))
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        self._init_affine((self.num_features,), affine, dtype)
        dt = check_dtype(dtype)
        self._buffers["running_mean"] = np.zeros(self.num_features, dtype=dt)
        self._buffers["running_var"] = np.ones(self.num_features, dtype=dt)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"

    _ndims = (2, 3)

    @staticmethod
    def _axes(x):
        return (0,) + tuple(range(2, x.ndim))

    def _param_view(self, x):
        return (1, self.num_features) + (1,) * (x.ndim - 2)

    def _check(self, x, train, finite=True):
        check_array(x, "x", ndim=self._ndims, finite=finite)
        if x.shape[1] != self.num_features:
            raise ValueError(f"x must have {self.num_features} channels in axis 1, got shape {x.shape}")
        if train and x.size // self.num_features < 2 and current_shard() is None:
            raise ValueError(f"{type(self).__name__} needs more than one value per channel in "
                             f"training, got x of shape {x.shape}")

    def _stats(self, x, train):
        """``(x̂, r)``; in training also moves the running statistics towards the batch's mean
        and unbiased variance :math:`\\frac{n}{n-1}σ^2_B` (Ioffe & Szegedy 2015, Alg. 2, line 10;
        ``n`` values per channel). The variance is the one computed for the batch, kept as it is:
        rebuilding it from ``r`` as ``1/r² − ε`` cancels when ``σ²_B ≪ ε`` (issue #19)."""
        axes = self._axes(x)
        if train:
            mean = x.mean(axis=axes, keepdims=True)
            xc = x - mean
            var = np.mean(xc * xc, axis=axes, keepdims=True)
            r = 1 / np.sqrt(var + x.dtype.type(self.eps))
            xhat = xc * r
            self._update_running(mean.reshape(-1), var.reshape(-1), x.size // self.num_features)
            return xhat, r
        view = self._param_view(x)
        mean = self._buffers["running_mean"].reshape(view).astype(x.dtype, copy=False)
        var = self._buffers["running_var"].reshape(view).astype(x.dtype, copy=False)
        r = 1 / np.sqrt(var + x.dtype.type(self.eps))
        return (x - mean) * r, r

    def _update_running(self, mean, var, n):
        """Move the running statistics towards the batch's ``mean`` and ``var`` (biased, ``(C,)``,
        both in the input's dtype) over ``n`` values per channel, unbiasing the variance."""
        var_unbiased = var * var.dtype.type(n / (n - 1))
        m = self.momentum
        for name, value in (("running_mean", mean), ("running_var", var_unbiased)):
            buf = self._buffers[name]
            buf *= 1 - m
            buf += (m * value).astype(buf.dtype, copy=False)

    def forward(self, x, *, train=False, rng=None, params=None):
        self._check(x, train)
        p = self._use(params)
        member = current_shard() if train else None
        if member is not None:
            return self._sync_forward(x, p, False, member)
        xhat, r = self._stats(x, train)
        return self._affine_forward(xhat, p), (xhat, r, bool(train))

    def backward(self, cache, dy, *, params=None, need_dx=True):
        if isinstance(cache, _SyncCache):
            return self._sync_backward(cache, dy, self._use(params), need_dx)
        xhat, r, train = cache
        check_like(dy, xhat.shape)
        p = self._use(params)
        axes = self._axes(xhat)
        grads = self._affine_grads(xhat, dy, p, axes)
        if not need_dx:
            return None, grads
        g, _ = self._gb(p, xhat)
        v = dy if g is None else dy * g
        return (standardize_tangent(xhat, r, v, axes) if train else v * r), grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        self._no_sync_jvp(train)
        y, (xhat, r, train) = self.forward(x, train=train, params=params)
        p = self._use(params)
        if dx is None:
            dxhat = np.zeros_like(xhat)
        else:
            check_like(dx, x.shape, "dx")
            dxhat = standardize_tangent(xhat, r, dx, self._axes(x)) if train else dx * r
        return y, self._affine_tangent(xhat, dxhat, dparams, p)

class _BatchCache(tuple):
    """Cache of :class:`BatchNorm2d`'s training forward: ``(x, stats, relu)``, with ``stats`` of
    :func:`nograd.kernels.batchnorm.batchnorm_forward`; ``relu`` says that the forward applied a
    ReLU (inside a :class:`~nograd.layers.FusedSequential`), whose mask the backward applies."""


class BatchNorm2d(BatchNorm1d):
    r"""Batch normalisation of images, statistics over ``(N, H, W)`` per channel (Ioffe & Szegedy
    2015, §3.2: one mean and variance per feature map).

    Shapes: ``x (N, C, H, W)`` → same; parameters and running statistics ``(C,)``. Training and
    evaluation behave as in :class:`BatchNorm1d`; in training, forward and backward run as two
    Numba passes each (:mod:`nograd.kernels.batchnorm`: shifted float64 sums for the statistics,
    ``x̂`` recomputed from ``x`` in the backward instead of stored).
    """

    _ndims = (4,)

    def forward(self, x, *, train=False, rng=None, params=None):
        if not train:
            return super().forward(x, train=False, rng=rng, params=params)
        self._check(x, True, finite=False)
        return self._batch_forward(x, self._use(params), False)

    def _batch_forward(self, x, p, relu):
        """Training forward of ``x`` (checked by ``_check(x, True, finite=False)``) with arrays
        ``p``, then ``max(·, 0)`` if ``relu``. Non-finite ``x`` is refused from the statistics
        (a NaN or inf makes the variance non-finite), which saves a pass over ``x``; the running
        averages move only after that."""
        member = current_shard()
        if member is not None:                   # inside a sharded step: the batch's statistics
            return self._sync_forward(x, p, relu, member)
        from ..kernels.batchnorm import batchnorm_forward  # lazy: keep `import nograd` light

        gamma, beta = (p["weight"], p.get("bias")) if self.affine else (None, None)
        y, stats = batchnorm_forward(x, gamma, beta, self.eps, relu)
        if not np.isfinite(stats[1]).all():
            check_array(x, "x")           # NaN or inf: raises; finite values whose square overflowed: on
        self._update_running(stats[0], stats[1].astype(x.dtype), x.size // self.num_features)
        return y, _BatchCache((x, stats, bool(relu)))

    def backward(self, cache, dy, *, params=None, need_dx=True):
        if not isinstance(cache, _BatchCache):
            return super().backward(cache, dy, params=params, need_dx=need_dx)
        from ..kernels.batchnorm import batchnorm_backward

        x, stats, relu = cache
        check_like(dy, x.shape)
        p = self._use(params)
        gamma = p["weight"] if self.affine else None
        dx, dgamma, dbeta = batchnorm_backward(x, dy, stats, gamma, relu, need_dx)
        return dx, self._grads_from_sums(p, dgamma, dbeta)

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        if not train:
            return super().jvp(x, dx, dparams, train=False, rng=rng, params=params)
        self._no_sync_jvp(train)
        y, (_, stats, _) = self.forward(x, train=True, params=params)
        view = self._param_view(x)
        r = stats[2].reshape(view)
        xhat = (x - stats[0].reshape(view)) * r
        if dx is None:
            dxhat = np.zeros_like(xhat)
        else:
            check_like(dx, x.shape, "dx")
            dxhat = standardize_tangent(xhat, r, dx, self._axes(x))
        return y, self._affine_tangent(xhat, dxhat, dparams, self._use(params))


class GroupNorm(_AffineNorm):
    r"""Normalise each sample over groups of channels (Wu & He 2018, "Group Normalization", eq. 1–3).

    Shapes: ``x (N, C, *)`` → same; ``weight, bias (C,)``. The ``C`` channels form ``num_groups``
    consecutive groups; each sample's group is standardised over its channels and positions, so the
    layer is independent of the batch (it works with batch size 1, unlike batch norm).
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, *,
                 dtype=np.float32):
        super().__init__()
        check_positive(num_groups, "num_groups", integer=True)
        check_positive(num_channels, "num_channels", integer=True)
        if num_channels % num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups, self.num_channels = int(num_groups), int(num_channels)
        self.eps = float(check_positive(eps, "eps"))
        self._init_affine((self.num_channels,), affine, dtype)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"

    def _param_view(self, x):
        return (1, self.num_channels) + (1,) * (x.ndim - 2)

    def _grouped(self, a):
        return a.reshape(a.shape[0], self.num_groups, -1)

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x", min_ndim=2)
        if x.shape[1] != self.num_channels:
            raise ValueError(f"x must have {self.num_channels} channels in axis 1, got shape {x.shape}")
        p = self._use(params)
        xhat, r = standardize(self._grouped(x), (2,), self.eps)
        xhat = xhat.reshape(x.shape)
        return self._affine_forward(xhat, p), (xhat, r)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        xhat, r = cache
        check_like(dy, xhat.shape)
        p = self._use(params)
        grads = self._affine_grads(xhat, dy, p, (0,) + tuple(range(2, xhat.ndim)))
        if not need_dx:
            return None, grads
        g, _ = self._gb(p, xhat)
        v = dy if g is None else dy * g
        dx = standardize_tangent(self._grouped(xhat), r, self._grouped(v), (2,))
        return dx.reshape(xhat.shape), grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, (xhat, r) = self.forward(x, params=params)
        p = self._use(params)
        if dx is None:
            dxhat = np.zeros_like(xhat)
        else:
            check_like(dx, x.shape, "dx")
            dxhat = standardize_tangent(self._grouped(xhat), r, self._grouped(dx), (2,)).reshape(x.shape)
        return y, self._affine_tangent(xhat, dxhat, dparams, p)
