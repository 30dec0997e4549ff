r"""2-D convolution and transposed convolution (NCHW), by im2col and one GEMM per group.

With the column matrix of each sample ``X_col = im2col(x_n)`` of shape ``(C·KH·KW, OH·OW)`` (see
:mod:`nograd.kernels.conv`) and the weight as a matrix ``W_m (O, C/g·KH·KW)`` per group, a
convolution is a matrix product and both of its derivatives are too:

.. math::
    Y = W_m X_{col} + b, \qquad
    \bar W_m = \bar Y X_{col}^\top, \quad \bar b = \textstyle\sum \bar Y, \quad
    \bar x = \mathrm{col2im}(W_m^\top \bar Y), \qquad
    \dot Y = W_m\, \mathrm{im2col}(\dot x) + \dot W_m X_{col} + \dot b.

``col2im`` is the adjoint of ``im2col``; :math:`\bar W_m` sums the per-sample products. The
transposed convolution swaps the roles: its forward map is the convolution's input cotangent map,
and its backward is the convolution's forward. One batched GEMM serves all samples, and its
``(N, O, OH·OW)`` result is already NCHW, so no transpose pass is needed.

A 3×3 stride-1 :class:`Conv2d` can instead run Winograd's F(2×2, 3×3) (Lavin & Gray 2016; the
``algorithm`` option, :mod:`nograd.kernels.winograd`): 16 batched GEMMs over transformed 4×4
input tiles, with 2.25× fewer multiplications, one chunk of images at a time
(:mod:`nograd.layers.winograd`).
"""
from __future__ import annotations

import numpy as np

from ..core import init as _init
from ..core.checks import as_rng, check_array, check_dtype, check_like, check_positive
from ..core.module import Module
from .conv_winograd import WinogradConv, _fused, _tiles_mod, _winograd


def _pair(v, name, *, allow_zero=False):
    t = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(t) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    for e in t:
        check_positive(e, name, integer=True, allow_zero=allow_zero)
    return int(t[0]), int(t[1])


def _kernels():
    from ..kernels import conv  # lazy: Numba loads on the first convolution

    return conv


ALGORITHMS = ("auto", "im2col", "winograd")
#: ``algorithm="auto"`` picks Winograd for a 3×3, stride-1, undilated, ungrouped convolution with at
#: least this many input channels, and im2col otherwise (the rule and its measurements:
#: docs/benchmarks.md, "Convolution algorithms (issue 28)").
WINOGRAD_MIN_CHANNELS = 8
#: ... and at least ``MIN_TILES`` 2×2 output tiles in the batch, ``MIN_TILES_CL`` with the
#: channels-last kernels: :func:`nograd.layers.winograd.worth_it` (the measurements beside it).


def out_size(size, k, stride, pad, dil):
    """Output length of a convolution along one axis (PyTorch's formula, floor division)."""
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def grouped_matmul(A, B, groups, trans_a=False):
    """Per sample, the block-diagonal product of ``A (g, p, q)`` (or its transpose) with the ``g``
    row blocks of ``B (N, g·q, L)``: returns ``(N, g·p, L)``, one batched GEMM call."""
    N, _, L = B.shape
    B4 = B.reshape(N, groups, -1, L)
    out = np.matmul(A.transpose(0, 2, 1) if trans_a else A, B4)
    return out.reshape(N, -1, L)


def grouped_outer(D, B, groups):
    """``Σ_n D_{n,g} B_{n,g}ᵀ`` per group: ``D (N, g·p, L)``, ``B (N, g·q, L)`` → ``(g, p, q)``."""
    N, _, L = D.shape
    D4 = D.reshape(N, groups, -1, L)
    B4 = B.reshape(N, groups, -1, L)
    return np.matmul(D4, B4.transpose(0, 1, 3, 2)).sum(axis=0)


def _add_bias(Y, b):
    """``Y (N, O, L) += b (O,)`` in place (nothing when ``b`` is None); returns ``Y``."""
    if b is not None:
        Y += b.astype(Y.dtype, copy=False)[:, None]
    return Y


class _ConvBase(Module):
    """Hyper-parameters, weight and shared checks of Conv2d and ConvTranspose2d."""

    def _setup(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
               bias, weight_shape, fan_in_shape, rng, init, dtype):
        check_positive(in_channels, "in_channels", integer=True)
        check_positive(out_channels, "out_channels", integer=True)
        check_positive(groups, "groups", integer=True)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must "
                             f"both be divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding", allow_zero=True)
        self.dilation = _pair(dilation, "dilation")
        dt = check_dtype(dtype)
        rng = as_rng(rng)
        w = _init.get_initializer(init)(fan_in_shape, rng, dt)
        self._own["weight"] = np.ascontiguousarray(w.reshape(weight_shape))
        if bias:
            self._own["bias"] = np.zeros(self.out_channels, dtype=dt)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={'bias' in self._own}")

    def _check_input(self, x, channels):
        check_array(x, "x", ndim=4)
        if x.shape[1] != channels:
            raise ValueError(f"x must have {channels} channels in axis 1 (NCHW), got shape {x.shape}")

    def _geometry(self):
        (KH, KW), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        return KH, KW, sh, sw, ph, pw, dh, dw

    def _weight(self, p, dtype):
        W = p["weight"]
        return W if W.dtype == dtype else W.astype(dtype)

    def _s2(self):
        """``(KH, KW, ph, pw)`` when im2col/col2im run through the polyphase planes (stride 2,
        dilation 1, ≥ 9 taps: :func:`nograd.kernels.conv.im2col_s2`, 2× faster at 3×3), else None."""
        KH, KW, sh, sw, ph, pw, dh, dw = self._geometry()
        return (KH, KW, ph, pw) if (sh, sw, dh, dw) == (2, 2, 1, 1) and KH * KW >= 9 else None

    def _im2col(self, x, OH, OW):
        KH, KW = self._geometry()[:2]
        cols = np.empty((x.shape[0], x.shape[1] * KH * KW, OH * OW), x.dtype)
        x, s2 = np.ascontiguousarray(x), self._s2()
        return (_kernels().im2col_s2(x, *s2, OH, OW, cols) if s2 else
                _kernels().im2col(x, *self._geometry(), OH, OW, cols))

    def _col2im(self, cols, shape, OH, OW):
        cols, s2 = np.ascontiguousarray(cols), self._s2()
        return (_kernels().col2im_s2(cols, *s2, OH, OW, np.empty(shape, cols.dtype)) if s2 else
                _kernels().col2im(cols, *self._geometry(), OH, OW, np.zeros(shape, cols.dtype)))


class Conv2d(WinogradConv, _ConvBase):
    r"""2-D convolution (cross-correlation, as in PyTorch) over NCHW input.

    Shapes: ``x (N, C, H, W) -> y (N, O, OH, OW)`` with
    ``OH = ⌊(H + 2p - d(KH - 1) - 1)/s⌋ + 1`` (likewise ``OW``);
    ``weight (O, C/groups, KH, KW)``, ``bias (O,)``.

    Parameters: ``kernel_size, stride, padding, dilation`` (int or pair), ``groups`` (channels of
    each group see only their group), ``bias``, ``rng`` (seed or Generator for the initial
    weights), ``init`` (default He-uniform on ``fan_in = C/groups·KH·KW``), ``dtype``.

    ``algorithm`` chooses how the three maps are computed (all give the same function up to
    rounding):

    - ``"im2col"``: one column matrix per sample and one batched GEMM (any geometry);
    - ``"winograd"``: Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, CVPR 2016, §4–5;
      :mod:`nograd.kernels.winograd`) — 2.25× fewer multiplications in the products of the
      forward map, the input cotangent and the weight gradient, run over chunks of whole
      images that stay in the core's cache (:mod:`nograd.layers.winograd`). Only for 3×3
      kernels with stride 1, dilation 1 and ``groups=1`` (any padding). Its float32 error stays within a
      rounding bound derived from the algorithm (``tests/kernels/test_winograd.py``); on a
      32→64-channel layer it was 3e-7 to 8e-7 of the largest entry for the three maps,
      about 0.4–2.3× im2col's;
    - ``"auto"`` (default): per call, ``"winograd"`` where it applies, the layer has at least
      ``WINOGRAD_MIN_CHANNELS`` (8) input channels and the batch at least 512 output tiles of
      2×2 (``N·⌈OH/2⌉·⌈OW/2⌉``; 256 with 32 channels in and out or more), else ``"im2col"``.
      With 3 input channels (an RGB first layer) the 16 products have an inner dimension of 3
      and the transforms dominate; with few tiles (batch 1) the 16 small products cost more
      than one larger one. :meth:`resolve_algorithm` gives the choice for an input shape.

    Declares ``feedback_weight = "weight"``: the weight gradient does not depend on the kernel, so
    a feedback rule's kernel-shaped ``B`` runs the transposed convolution in its place.
    """

    feedback_weight = "weight"
    # class defaults, for subclasses that do not run this __init__ (Conv1d)
    algorithm = "im2col"
    _winograd_fits = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, *, rng=None, init="he_uniform", dtype=np.float32,
                 algorithm="auto"):
        super().__init__()
        k = _pair(kernel_size, "kernel_size")
        self._setup(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                    (out_channels, in_channels // max(int(groups), 1)) + k,
                    (out_channels, in_channels // max(int(groups), 1), k[0], k[1]), rng, init, dtype)
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        fits = (self.kernel_size == (3, 3) and self.stride == (1, 1) and self.dilation == (1, 1)
                and self.groups == 1)
        if algorithm == "winograd" and not fits:
            raise ValueError("algorithm='winograd' needs kernel_size 3, stride 1, dilation 1 and "
                             f"groups 1; got kernel_size={self.kernel_size}, stride={self.stride}, "
                             f"dilation={self.dilation}, groups={self.groups}")
        self.algorithm = algorithm
        self._winograd_fits = fits

    def extra_repr(self):
        return super().extra_repr() + f", algorithm={self.algorithm!r}"

    def resolve_algorithm(self, shape):
        """The algorithm this layer runs on an input of ``shape (N, C, H, W)``: ``self.algorithm``
        unless it is ``"auto"``, then the rule of the class docstring."""
        if self.algorithm != "auto":
            return self.algorithm
        if not self._winograd_fits or self.in_channels < WINOGRAD_MIN_CHANNELS:
            return "im2col"
        N, _, OH, OW = self.output_shape(shape)
        tiles = N * ((OH + 1) // 2) * ((OW + 1) // 2)
        return "winograd" if _tiles_mod().worth_it(tiles, self.in_channels, self.out_channels) else "im2col"

    def output_shape(self, shape):
        N, _, H, W = shape
        KH, KW, sh, sw, ph, pw, dh, dw = self._geometry()
        OH, OW = out_size(H, KH, sh, ph, dh), out_size(W, KW, sw, pw, dw)
        if OH < 1 or OW < 1:
            raise ValueError(f"kernel {self.kernel_size} with dilation {self.dilation} is larger than "
                             f"the padded input {(H + 2 * ph, W + 2 * pw)} of x with shape {tuple(shape)}")
        return N, self.out_channels, OH, OW

    def _wm(self, W):
        g = self.groups
        return W.reshape(g, self.out_channels // g, -1)

    # -- conv → ReLU → 2×2 max pooling in one output pass (used by nograd.layers.FusedSequential) --
    def forward_relu_pool(self, x, p):
        """``maxpool₂ₓ₂(relu(conv(x)))`` with the bias, ReLU and pooling fused into the write of the
        convolution's output (:mod:`nograd.kernels.fused`): only the pooled map is written.
        Returns ``(y, cache, idx, pos)``: ``y (N, O, OH//2, OW//2)``, this layer's own cache,
        the argmax ``idx`` and ``pos = y > 0`` (``MaxPool2d(relu=True)``'s cache entries). The same
        numbers as the three layers one after another; ``p`` are the arrays to use (``_use``)."""
        self._check_input(x, self.in_channels)
        N, O, OH, OW = self.output_shape(x.shape)
        shape = (N, O, OH // 2, OW // 2)
        y, idx, pos = np.empty(shape, x.dtype), np.empty(shape, np.int32), np.empty(shape, bool)
        b = p.get("bias")
        bias = np.zeros(O, dtype=x.dtype) if b is None else b.astype(x.dtype, copy=False)
        if self.resolve_algorithm(x.shape) == "winograd":
            TH, TW = self._tiles(x.shape)[4:6]
            if _tiles_mod().kernels(TW, x.shape[1], O)[0] is _winograd():   # tile rows: pool in the output
                pool = _fused().winograd_relu_pool
                cache = self._wino_chunks(x, p, lambda n0, n1, M, wk: pool(
                    M, bias, TH, TW, OH, OW, y[n0:n1], idx[n0:n1], pos[n0:n1]))
                return y, cache, idx, pos
            # planes: the plain layer's output without its bias (t + 0 = t), then bias, ReLU and
            # pooling in one pass — the same numbers as the plain layers, which add the bias first
            Y, cache = self._forward_winograd(x, {"weight": p["weight"]})
        else:
            cols = self._im2col(x, OH, OW)
            Y = grouped_matmul(self._wm(self._weight(p, x.dtype)), cols, self.groups)
            cache = (cols, x.shape)
        _fused().relu_maxpool2x2(Y.reshape(N, O, OH, OW), bias, b is not None, y, idx, pos)
        return y, cache, idx, pos

    def backward_relu_pool(self, cache, dy, idx, pos, p, need_dx=True):
        """The backward of :meth:`forward_relu_pool` from the pooled cotangent ``dy``: with
        Winograd on tile rows, the transformed cotangent ``Z`` straight from ``dy`` (at most one
        non-zero per tile); otherwise (im2col, Winograd on planes) the convolution's output
        cotangent in one pass, then the layer's backward. Returns ``(dx, grads)``."""
        fk = _fused()
        dy = np.ascontiguousarray(dy)
        if isinstance(cache[0], str) and cache[1].layout[0] is _winograd():   # tile-row Winograd
            _, tiles, xshape = cache
            OH, OW, TH, TW = self._tiles(xshape)[2:6]
            cot = fk.winograd_pooled_cotangent
            bias_sum = fk.pooled_channel_sum(dy, idx, pos, OW) if "bias" in p else None
            return self._winograd_grads(
                tiles, xshape, lambda n0, n1, Z, wk: cot(dy[n0:n1], idx[n0:n1], pos[n0:n1], OH, OW, TH, TW, Z),
                bias_sum, p, need_dx, dy.dtype)
        xshape = cache[2] if isinstance(cache[0], str) else cache[1]
        dY = fk.relu_maxpool2x2_backward(dy, idx, pos, np.empty(self.output_shape(xshape), dtype=dy.dtype))
        return self.backward(cache, dY, params=p, need_dx=need_dx)

    def forward(self, x, *, train=False, rng=None, params=None):
        self._check_input(x, self.in_channels)
        p = self._use(params)
        if self.resolve_algorithm(x.shape) == "winograd":
            return self._forward_winograd(x, p)
        N, O, OH, OW = self.output_shape(x.shape)
        cols = self._im2col(x, OH, OW)
        Y = grouped_matmul(self._wm(self._weight(p, x.dtype)), cols, self.groups)
        return _add_bias(Y, p.get("bias")).reshape(N, O, OH, OW), (cols, x.shape)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        p = self._use(params)
        if isinstance(cache[0], str):  # ("winograd", Tiles, x.shape)
            _, tiles, xshape = cache
            check_like(dy, self.output_shape(xshape))
            return self._backward_winograd(tiles, xshape, dy, p, need_dx)
        cols, xshape = cache
        N, O, OH, OW = self.output_shape(xshape)
        check_like(dy, (N, O, OH, OW))
        dY = np.ascontiguousarray(dy).reshape(N, O, OH * OW)
        W = p["weight"]
        grads = {"weight": grouped_outer(dY, cols, self.groups).reshape(W.shape).astype(W.dtype, copy=False)}
        if "bias" in p:
            grads["bias"] = dY.sum(axis=2).sum(axis=0).astype(W.dtype, copy=False)
        dx = None
        if need_dx:
            dcols = grouped_matmul(self._wm(self._weight(p, dy.dtype)), dY, self.groups, trans_a=True)
            dx = self._col2im(dcols, xshape, OH, OW)
        return dx, grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        self._check_input(x, self.in_channels)
        p = self._use(params)
        dparams = self._tangents(dparams) or {}
        if self.resolve_algorithm(x.shape) == "winograd":
            return self._jvp_winograd(x, dx, dparams, p)
        N, O, OH, OW = self.output_shape(x.shape)
        cols = self._im2col(x, OH, OW)
        Wm = self._wm(self._weight(p, x.dtype))
        y = _add_bias(grouped_matmul(Wm, cols, self.groups), p.get("bias")).reshape(N, O, OH, OW)
        dY = np.zeros((N, O, OH * OW), dtype=x.dtype)
        if dx is not None:
            check_like(dx, x.shape, "dx")
            dY += grouped_matmul(Wm, self._im2col(dx, OH, OW), self.groups)
        if "weight" in dparams:
            dY += grouped_matmul(self._wm(dparams["weight"].astype(x.dtype, copy=False)), cols, self.groups)
        return y, _add_bias(dY, dparams.get("bias")).reshape(N, O, OH, OW)


class ConvTranspose2d(_ConvBase):
    r"""Transposed 2-D convolution (the adjoint of :class:`Conv2d`'s input map, plus a bias).

    Shapes: ``x (N, C, H, W) -> y (N, O, OH, OW)`` with
    ``OH = (H - 1)s - 2p + d(KH - 1) + output_padding + 1``; ``weight (C, O/groups, KH, KW)``
    (PyTorch's layout), ``bias (O,)``. ``output_padding`` must be smaller than the stride or the
    dilation. Forward is ``col2im(W_mᵀ X)``; backward is ``W_m im2col(ȳ)``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, *, rng=None, init="he_uniform",
                 dtype=np.float32):
        super().__init__()
        k = _pair(kernel_size, "kernel_size")
        g = max(int(groups), 1) if isinstance(groups, (int, np.integer)) else 1
        # fan_in as PyTorch computes it for this layout: weight.shape[1]·KH·KW = O/g·KH·KW
        self._setup(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                    (in_channels, out_channels // g) + k, (in_channels, out_channels // g, k[0], k[1]),
                    rng, init, dtype)
        self.output_padding = _pair(output_padding, "output_padding", allow_zero=True)
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= max(s, d):
                raise ValueError(f"output_padding {self.output_padding} must be smaller than the "
                                 f"stride {self.stride} or the dilation {self.dilation}")

    def extra_repr(self):
        return super().extra_repr() + f", output_padding={self.output_padding}"

    def output_shape(self, shape):
        N, _, H, W = shape
        KH, KW, sh, sw, ph, pw, dh, dw = self._geometry()
        OH = (H - 1) * sh - 2 * ph + dh * (KH - 1) + self.output_padding[0] + 1
        OW = (W - 1) * sw - 2 * pw + dw * (KW - 1) + self.output_padding[1] + 1
        if OH < 1 or OW < 1:
            raise ValueError(f"padding {self.padding} is too large for x with shape {tuple(shape)}: "
                             f"the output would be {(OH, OW)}")
        return N, self.out_channels, OH, OW

    def _wm(self, W):
        g = self.groups
        return W.reshape(g, self.in_channels // g, -1)

    def forward(self, x, *, train=False, rng=None, params=None):
        self._check_input(x, self.in_channels)
        p = self._use(params)
        N, O, OH, OW = self.output_shape(x.shape)
        X = np.ascontiguousarray(x).reshape(N, self.in_channels, -1)
        cols = grouped_matmul(self._wm(self._weight(p, x.dtype)), X, self.groups, trans_a=True)
        y = self._col2im(cols, (N, O, OH, OW), x.shape[2], x.shape[3])
        _add_bias(y.reshape(N, O, -1), p.get("bias"))
        return y, (X, x.shape)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        X, xshape = cache
        p = self._use(params)
        N, O, OH, OW = self.output_shape(xshape)
        check_like(dy, (N, O, OH, OW))
        dcols = self._im2col(dy, xshape[2], xshape[3])
        Wt = p["weight"]
        grads = {"weight": grouped_outer(X, dcols, self.groups).reshape(Wt.shape).astype(Wt.dtype, copy=False)}
        if "bias" in p:
            grads["bias"] = dy.sum(axis=(0, 2, 3)).astype(Wt.dtype, copy=False)
        dx = None
        if need_dx:
            dx = grouped_matmul(self._wm(self._weight(p, dy.dtype)), dcols, self.groups).reshape(xshape)
        return dx, grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, (X, _) = self.forward(x, params=params)
        p = self._use(params)
        dparams = self._tangents(dparams) or {}
        N, O, OH, OW = y.shape
        K = self.kernel_size[0] * self.kernel_size[1]
        dcols = np.zeros((N, O * K, X.shape[2]), dtype=x.dtype)
        if dx is not None:
            check_like(dx, x.shape, "dx")
            dX = np.ascontiguousarray(dx).reshape(X.shape)
            dcols += grouped_matmul(self._wm(self._weight(p, x.dtype)), dX, self.groups, trans_a=True)
        if "weight" in dparams:
            dcols += grouped_matmul(self._wm(dparams["weight"].astype(x.dtype, copy=False)), X,
                                    self.groups, trans_a=True)
        dy = self._col2im(dcols, y.shape, x.shape[2], x.shape[3])
        _add_bias(dy.reshape(N, O, -1), dparams.get("bias"))
        return y, dy
