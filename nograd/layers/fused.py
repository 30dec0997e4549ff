r"""A :class:`~nograd.core.module.Sequential` that fuses ``Conv2d → ReLU → MaxPool2d(2)``,
``BatchNorm2d → ReLU`` and ``Linear → ReLU`` runs.

In the chain ``y = maxpool₂ₓ₂(relu(W ⋆ x + b))`` a 2×2 max pooling keeps one entry of each window
and ReLU only decides whether that entry is positive, so with the argmax ``k(o)`` of window ``o``
and ``y_o > 0`` recorded,

.. math::
    y_o = \max\big(0, \max_{i \in o} (W ⋆ x + b)_i\big), \qquad
    \bar z_i = [i = k(o)]\,[y_o > 0]\,\bar y_o

is the cotangent of the convolution's output ``z``: at most one non-zero per window. The fused
pass writes only the pooled map (and its argmax), and the backward builds the convolution's
cotangent — with Winograd F(2×2, 3×3) (Lavin & Gray 2016, §5) directly its transform
``A z̄ Aᵀ``, since a 2×2 output tile is a pooling window — from the pooled cotangent, without the
two full-size intermediates (``relu(z)`` and the scattered ``ȳ``) and their passes.

The numbers are the unfused chain's, entry for entry: the kernels (:mod:`nograd.kernels.fused`)
repeat its float operations in its order, with its ties.

``BatchNorm2d → ReLU`` in training (Ioffe & Szegedy 2015, Alg. 1, then ReLU) writes
``y = max((x - μ) γ r + β, 0)`` in the batch norm's normalising pass, and its backward applies the
mask ``[y > 0]`` to ``ȳ`` inside the batch norm's two passes (:mod:`nograd.kernels.batchnorm`,
the mask recomputed from ``x`` by the forward's own float operations): no ReLU pass and no masked
cotangent array. Outputs are the unfused chain's to the bit, gradients to rounding (the kernel's
sums may be vectorised in another order). In evaluation the two run unfused.

``Linear → ReLU`` (training and evaluation) adds the bias and applies ReLU in one pass over the
product's fresh output, in place (:func:`nograd.kernels.fused.bias_relu`: the unfused chain's
``z += b`` and ``np.maximum(z, 0)``, so the output is the unfused chain's to the bit, and a NaN or
inf in ``z + b`` is refused as the unfused ReLU refuses it); the backward masks ``ȳ`` in one pass
(:func:`nograd.kernels.fused.relu_mask`) and takes the bias gradient, the weight gradient and the
input cotangent from the masked cotangent as :class:`~nograd.layers.Linear` does: gradients and
input cotangents bit for bit too. It runs when the input and the cotangent have the weight's
dtype (else unfused).

Feature-major runs (``feature_major=True``, the default). When a ``Linear → ReLU`` run feeds
another Linear, its 2-D output is written feature-major: the product is taken as ``W xᵀ``, a
C-ordered ``(M, N)`` array, and handed on as its transposed view (the logical ``(N, M)`` array,
stored column by column), which the next Linear reads without a copy (``h Wᵀ = (W hᵀ)ᵀ``);
the backward masks the transposed cotangent and gives each input cotangent its input's
orientation. OpenBLAS's matrix products run ~1.1–2× faster this way round for batches up to a
hundred or so on wide layers (``python bench/linear_orientation.py``). The arithmetic is the same
but BLAS may order a product's sums differently for a transposed operand, and the bias gradient
is summed along a row: outputs and gradients then equal the plain chain's **to rounding**, not
bit for bit (``feature_major=False`` keeps every number the plain chain's).
"""
from __future__ import annotations

import numpy as np

from ..core.checks import NonFiniteError, check_like
from ..core.module import Sequential
from .activations import ReLU
from .conv import Conv2d
from .linear import Linear
from .norm import BatchNorm2d
from .pool import MaxPool2d


# Linear → ReLU runs whose output feeds another Linear may carry it feature-major (a transposed
# view; FusedSequential(feature_major=True), the default): measured by bench/mlp_step.py and
# bench/linear_orientation.py, see docs/notes/performance-notes.md
FEATURE_MAJOR_MIN_FEATURES = 256
FEATURE_MAJOR_MAX_BATCH = 256


class _Absorbed(tuple):
    """The cache ``(x, y)`` of a ReLU whose mask went into the pooling after it: read-only
    broadcast ones of the ReLU's shape (no memory), so ``ReLU.backward`` on it passes its
    cotangent through unchanged — the pooling's cache ``(idx, shape, pos)`` applied the mask."""

    def __new__(cls, shape, dtype):
        ones = np.broadcast_to(np.ones((), dtype=dtype), shape)
        return super().__new__(cls, (ones, ones))


def _fusable(conv, relu, pool):
    return (type(conv) is Conv2d and type(relu) is ReLU and type(pool) is MaxPool2d and not pool.relu
            and pool.kernel_size == (2, 2) and pool.stride == (2, 2) and pool.padding == (0, 0))


class _Masked(tuple):
    """The cache ``(y, y)`` of a ReLU fused into the Linear before it: its output twice (``ReLU.df``
    reads only ``y``), so ``ReLU.backward`` on it is the unfused one."""


def _run_length(kids, i):
    """How many children from ``i`` on form one fused run: 3, 2 (BatchNorm2d or Linear → ReLU) or 1."""
    if i + 2 < len(kids) and _fusable(*kids[i:i + 3]):
        return 3
    if (i + 1 < len(kids) and type(kids[i]) in (BatchNorm2d, Linear)
            and type(kids[i + 1]) is ReLU):
        return 2
    return 1


class FusedSequential(Sequential):
    """:class:`~nograd.core.module.Sequential` whose ``Conv2d → ReLU → MaxPool2d(2)`` runs (exactly
    these classes; the pooling 2×2, stride 2, unpadded, without ``relu``) execute as one fused pass,
    and so do ``BatchNorm2d → ReLU`` pairs in training (see the module's notes: gradients equal to
    rounding; the batch norm's cache then carries the ReLU's mask, the ReLU's is a placeholder) and
    ``Linear → ReLU`` pairs (bias and ReLU in one pass over the product; the ReLU's cache is its
    output twice), with ``feature_major=True`` (the default) handing a pair's output to the next
    Linear feature-major (see the module's notes: equal to rounding; ``False``: bit for bit).

    Everything else is Sequential's: the children and their dotted parameter names, the
    structural view (``leaves``, ``chain``), ``jvp``. The outputs, gradients and input cotangents
    are the unfused chain's, entry for entry, for either ``Conv2d`` algorithm (but for the
    feature-major runs and the batch norm's gradients, equal to rounding). ``forward`` still
    returns one cache per child, and each child's own ``backward`` accepts its cache (the Conv2d's
    is its usual one; the ReLU's is an identity placeholder, the pooling's the cache of
    ``MaxPool2d(relu=True)``, which applies the ReLU's mask), so a rule that walks the chain child
    by child gets the same numbers; :meth:`backward` runs the fused backward instead.

    Shapes: as the children's. :meth:`groups` lists the runs that fuse.

    >>> import numpy as np
    >>> from nograd.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU
    >>> net = FusedSequential(Conv2d(3, 4, 3, padding=1, rng=0), ReLU(), MaxPool2d(2), Flatten(),
    ...                       Linear(4 * 4 * 4, 2, rng=1))
    >>> net.groups()
    [(0, 3), (3, 4), (4, 5)]
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    >>> y, caches = net.forward(x)
    >>> plain = Sequential(*net)
    >>> bool(np.array_equal(y, plain(x)))
    True
    """

    def __init__(self, *layers, feature_major: bool = True):
        super().__init__(*layers)
        if not isinstance(feature_major, bool):
            raise TypeError(f"feature_major must be True or False, got {feature_major!r}")
        self.feature_major = feature_major

    def __getitem__(self, i):
        """A child, or for a slice a FusedSequential of those children (same ``feature_major``)."""
        part = super().__getitem__(i)
        return FusedSequential(*part, feature_major=self.feature_major) if isinstance(i, slice) else part

    def groups(self):
        """``[(start, stop), ...]``: the children in runs, a fused run spanning three (conv, ReLU,
        pooling) or two (batch norm, ReLU)."""
        kids = list(self)
        out, i = [], 0
        while i < len(kids):
            n = _run_length(kids, i)
            out.append((i, i + n))
            i += n
        return out

    def _run(self, x, params, keep, train, rng):
        self._check_keys(params)
        items = list(self._children.items())
        kids = [layer for _, layer in items]
        caches = []
        finite = False              # x came out of a fused Linear → ReLU, which refuses NaN and inf
        for a, b in self.groups():
            name, layer = items[a]
            p = self._split(params, name)
            rows = self.feature_major and _feature_major(kids, a, x)
            fused = (_linear_relu(layer, x, layer._use(p), rows, finite)
                     if b - a == 2 and type(layer) is Linear else None)
            if fused is not None:                       # linear → ReLU: bias and ReLU in place
                x, cs = fused[0], [fused[1], _Masked((fused[0], fused[0]))]
            elif finite and b - a == 1 and type(layer) is Linear:   # its input already checked
                layer._check(x, finite=False)
                x, c = layer._forward(x, layer._use(p))
                cs = [c]
            elif b - a == 2 and train and type(layer) is BatchNorm2d:   # batch statistics
                layer._check(x, True, finite=False)
                x, c = layer._batch_forward(x, layer._use(p), True)
                cs = [c, _Absorbed(x.shape, x.dtype)]
            elif b - a <= 2:                              # one child, or batch norm in evaluation
                cs = []
                for name, layer in items[a:b]:
                    x, c = layer.forward(x, train=train, rng=rng, params=self._split(params, name))
                    cs.append(c)
            else:
                layer._check_input(x, layer.in_channels)
                zshape = layer.output_shape(x.shape)
                items[a + 2][1].output_shape(zshape)       # the pooling's error for a too small map
                x, c, idx, pos = layer.forward_relu_pool(x, layer._use(p))
                cs = [c, _Absorbed(zshape, x.dtype), (idx, zshape, pos)]
            finite = fused is not None
            if keep:
                caches += cs
        return x, caches

    def forward(self, x, *, train=False, rng=None, params=None):
        return self._run(x, params, True, train, rng)

    def __call__(self, x, *, train=False, rng=None, params=None):
        """Inference through the chain (fused runs included), keeping no caches."""
        return self._run(x, params, False, train, rng)[0]

    def backward(self, cache, dy, *, params=None, need_dx=True):
        items = list(self._children.items())
        grads = {}
        for a, b in reversed(self.groups()):
            if b - a == 2 and isinstance(cache[a + 1], _Masked) and cache[a + 1][1].dtype == dy.dtype:
                name, lin = items[a]
                dy, g = _linear_relu_backward(lin, cache[a], cache[a + 1][1], dy,
                                              lin._use(self._split(params, name)), need_dx or a > 0)
                grads.update(self._prefixed(g, name))
                continue
            if b - a == 2 and isinstance(cache[a + 1], _Absorbed):     # the ReLU is in the norm's cache
                name, norm = items[a]
                dy, g = norm.backward(cache[a], dy, params=self._split(params, name), need_dx=need_dx or a > 0)
                grads.update(self._prefixed(g, name))
                continue
            if b - a == 3 and isinstance(cache[a + 1], _Absorbed):
                name, conv = items[a]
                idx, _, pos = cache[a + 2]
                check_like(dy, idx.shape)
                dy, g = conv.backward_relu_pool(cache[a], dy, idx, pos, conv._use(self._split(params, name)),
                                                need_dx=need_dx or a > 0)
                grads.update(self._prefixed(g, name))
                continue
            for i in range(b - 1, a - 1, -1):
                name, layer = items[i]
                dy, g = layer.backward(cache[i], dy, params=self._split(params, name), need_dx=need_dx or i > 0)
                grads.update(self._prefixed(g, name))
        return dy, {k: grads[k] for k in self._ordered_names() if k in grads}


def _feature_major(kids, a, x):
    """Whether the ``Linear → ReLU`` run at ``a`` writes its output feature-major: its 2-D output
    goes to another Linear (the only reader that takes it as it is) and is wide enough
    (:data:`FEATURE_MAJOR_MIN_FEATURES`) for a batch of 2 to :data:`FEATURE_MAJOR_MAX_BATCH`
    (where ``W xᵀ`` measured faster than ``x Wᵀ``)."""
    nxt = kids[a + 2] if a + 2 < len(kids) else None
    return (type(nxt) is Linear and x.ndim == 2 and 2 <= x.shape[0] <= FEATURE_MAJOR_MAX_BATCH
            and kids[a].out_features >= FEATURE_MAJOR_MIN_FEATURES)


def _linear_relu(lin, x, p, rows=False, finite=False):
    """``(relu(x Wᵀ + b), x)`` — the output and the Linear's cache — with the bias and ReLU in
    one pass over the product (the unfused chain's numbers); ``None`` when ``x`` and the weight
    differ in dtype (the run then goes unfused). With ``rows`` the product is taken as ``W xᵀ``
    and the output is the transposed view of that C-ordered ``(M, N)`` array (feature-major):
    the same arithmetic, its sums possibly in another order. ``finite``: ``x`` is known to hold
    no NaN or inf (the output of such a run), so that check is skipped."""
    lin._check(x, finite=not finite)
    W, b = p["weight"], p.get("bias")
    if W.dtype != x.dtype:
        return None
    from ..kernels.fused import bias_relu, bias_relu_rows   # lazy: Numba loads on the first fused run

    bias = W[0, :0] if b is None else b
    if rows:
        zt = W @ x.T
        ok, z = bias_relu_rows(zt, bias, b is not None), zt.T
    else:
        z = x.reshape(-1, lin.in_features) @ W.T
        ok = bias_relu(z, bias, b is not None)
    if not ok:
        raise NonFiniteError("x contains NaN or inf")        # the unfused ReLU's refusal
    return z.reshape(x.shape[:-1] + (lin.out_features,)), x


def _linear_relu_backward(lin, x, y, dy, p, need_dx):
    """Linear's backward from the masked cotangent ``ȳ·[y > 0]`` (one pass, no boolean array).
    When ``y`` and ``ȳ`` are feature-major (see :func:`_linear_relu`) the pass runs on their
    C-ordered transposes, and the input cotangent takes the input's orientation."""
    from ..kernels.fused import relu_mask

    check_like(dy, y.shape)
    W = p["weight"]
    if _is_feature_major(y) and _is_feature_major(dy):
        dzt = relu_mask(dy.T, y.T, np.empty(y.shape[::-1], dtype=dy.dtype))
        dz, db = dzt.T, (dzt.sum(axis=1) if "bias" in p else None)
    else:
        dy2 = dy.reshape(-1, lin.out_features)
        dz = relu_mask(dy2, y.reshape(dy2.shape), np.empty_like(dy2))
        db = dz.sum(axis=0) if "bias" in p else None
    grads = {"weight": dz.T @ x.reshape(-1, lin.in_features)}
    if db is not None:
        grads["bias"] = db
    if not need_dx:
        return None, grads
    if _is_feature_major(x):                        # the input cotangent as the input lies
        return (W.T @ dz.T).T, grads
    return (dz @ W).reshape(x.shape), grads


def _is_feature_major(a):
    """A 2-D array stored column by column (the transposed view of a C-ordered one), not also
    C-ordered."""
    return a.ndim == 2 and a.flags.f_contiguous and not a.flags.c_contiguous
