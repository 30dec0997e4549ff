r"""Pooling and resampling: MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, GlobalAvgPool2d, Upsample2d over
NCHW images, and MaxPool1d, AvgPool1d over ``(N, C, L)`` sequences (the 2-D kernels on the
height-1 view, see :mod:`nograd.layers.conv1d`).

Max pooling is piecewise linear: away from ties it selects one input per window, so with the
recorded argmax index ``k(o)`` of window ``o``

.. math::
    y_o = x_{k(o)}, \qquad \bar x_i = \sum_{o : k(o) = i} \bar y_o, \qquad \dot y_o = \dot x_{k(o)}.

Average pooling (fixed or adaptive windows), global average pooling and nearest upsampling are
linear, so each one's jvp is its forward applied to the tangent, and its backward is the transpose
(spread or sum).
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_int, check_like
from ..core.module import Module
from .conv import _pair
from .conv1d import Height1, _single


def _kernels():
    from ..kernels import pool  # lazy: Numba loads on the first pooling call

    return pool


def _fused():
    from ..kernels import fused  # lazy, as _kernels

    return fused


class _Pool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride")
        self.padding = _pair(padding, "padding", allow_zero=True)
        for p, k in zip(self.padding, self.kernel_size):
            if p > k // 2:
                raise ValueError(f"padding {self.padding} must be at most half the kernel size "
                                 f"{self.kernel_size}")

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def _geometry(self):
        (KH, KW), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return KH, KW, sh, sw, ph, pw

    def output_shape(self, shape):
        N, C, H, W = shape
        KH, KW, sh, sw, ph, pw = self._geometry()
        OH, OW = (H + 2 * ph - KH) // sh + 1, (W + 2 * pw - KW) // sw + 1
        if H + 2 * ph < KH or W + 2 * pw < KW:
            raise ValueError(f"kernel {self.kernel_size} is larger than the padded input "
                             f"{(H + 2 * ph, W + 2 * pw)} of x with shape {tuple(shape)}")
        return N, C, OH, OW

    def _check(self, x):
        check_array(x, "x", ndim=4)
        return self.output_shape(x.shape)


class MaxPool2d(_Pool2d):
    """Maximum over each ``kernel_size`` window (stride defaults to the kernel size).

    Shapes: ``x (N, C, H, W) -> y (N, C, OH, OW)``, ``OH = ⌊(H + 2p - KH)/s⌋ + 1``. Padding
    (at most half the kernel) never wins the maximum. Ties go to the first maximum in row-major
    window order; the derivative is undefined at ties, like ReLU's at 0.

    ``relu=True`` pools ``max(x, 0)``: ``MaxPool2d(k, relu=True)`` is ``Sequential(ReLU(),
    MaxPool2d(k))`` with the same numbers, in one pass over ``x`` forward and one write of ``dx``
    backward (:mod:`nograd.kernels.fused` for the 2×2 stride-2 window): ``ȳ`` goes to the argmax
    where ``y > 0``, nowhere else.
    """

    relu = False        # class default, for subclasses that do not run this __init__

    def __init__(self, kernel_size, stride=None, padding=0, relu=False):
        super().__init__(kernel_size, stride, padding)
        self.relu = bool(relu)

    def extra_repr(self):
        return super().extra_repr() + (", relu=True" if self.relu else "")

    def forward(self, x, *, train=False, rng=None, params=None):
        shape = self._check(x)
        self._use(params)
        y = np.empty(shape, dtype=x.dtype)
        idx = np.empty(shape, dtype=np.int32)
        x = np.ascontiguousarray(x)
        if self.relu and _kernels().is_2x2(*self._geometry()):
            pos = np.empty(shape, dtype=bool)
            _fused().relu_maxpool2x2(x, np.zeros(1, x.dtype), False, y, idx, pos)
            return y, (idx, x.shape, pos)
        _kernels().maxpool_forward(x, *self._geometry(), shape[2], shape[3], y, idx)
        if self.relu:          # max(relu(x)) = relu(max(x)): the same values, and ȳ·[y > 0]
            np.maximum(y, 0, out=y)
            return y, (idx, x.shape, y > 0)
        return y, (idx, x.shape)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        idx, xshape = cache[:2]
        pos = cache[2] if len(cache) > 2 else None      # the ReLU's mask, with relu=True
        check_like(dy, idx.shape)
        if not need_dx:
            return None, {}
        K = _kernels()
        dy = np.ascontiguousarray(dy)
        if K.is_2x2(*self._geometry()):
            if pos is not None:
                return _fused().relu_maxpool2x2_backward(dy, idx, pos, np.empty(xshape, dtype=dy.dtype)), {}
            return K.maxpool_backward_2x2(dy, idx, np.empty(xshape, dtype=dy.dtype)), {}
        if pos is not None:
            dy = dy * pos
        return K.maxpool_backward(dy, idx, np.zeros(xshape, dtype=dy.dtype)), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, cache = MaxPool2d.forward(self, x, params=params)    # the 2-D map (also under MaxPool1d)
        idx = cache[0]
        N, C = x.shape[:2]

        def gather(d):
            flat = np.take_along_axis(d.reshape(N, C, -1), idx.reshape(N, C, -1).astype(np.intp), axis=2)
            flat = flat.reshape(y.shape)
            return flat * cache[2] if self.relu else flat
        return self._input_jvp(x, dx, dparams, y, gather)


class AvgPool2d(_Pool2d):
    """Mean over each window. ``count_include_pad=True`` (PyTorch's default) divides by the full
    window size; ``False`` by the number of real inputs in the window.

    Shapes: as :class:`MaxPool2d`.
    """

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = bool(count_include_pad)

    def _apply(self, x, shape):
        y = np.empty(shape, dtype=x.dtype)
        return _kernels().avgpool_forward(np.ascontiguousarray(x), *self._geometry(), shape[2], shape[3],
                                          self.count_include_pad, y)

    def forward(self, x, *, train=False, rng=None, params=None):
        shape = self._check(x)
        self._use(params)
        return self._apply(x, shape), (x.shape, shape)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        xshape, yshape = cache
        check_like(dy, yshape)
        if not need_dx:
            return None, {}
        k = _kernels()
        geo = self._geometry()
        dx = (np.empty if k.is_2x2(*geo) else np.zeros)(xshape, dtype=dy.dtype)
        return k.avgpool_backward(np.ascontiguousarray(dy), *geo,
                                  self.count_include_pad, dx), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, (_, shape) = AvgPool2d.forward(self, x, params=params)  # the 2-D map (also under AvgPool1d)
        return self._input_jvp(x, dx, dparams, y, lambda d: self._apply(d, shape))


class GlobalAvgPool2d(Module):
    r"""Mean over all spatial positions: ``x (N, C, H, W) -> y (N, C)``;
    :math:`\bar x = \bar y / (HW)` broadcast over the plane."""

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x", ndim=4)
        self._use(params)
        return x.mean(axis=(2, 3)), x.shape

    def backward(self, cache, dy, *, params=None, need_dx=True):
        shape = cache
        check_like(dy, shape[:2])
        if not need_dx:
            return None, {}
        scale = dy.dtype.type(1.0 / (shape[2] * shape[3]))
        return np.broadcast_to((dy * scale)[:, :, None, None], shape).copy(), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, _ = self.forward(x, params=params)
        return self._input_jvp(x, dx, dparams, y, lambda d: d.mean(axis=(2, 3)))


class Upsample2d(Module):
    r"""Nearest-neighbour upsampling by integer factors: ``x (N, C, H, W) -> y (N, C, sH·H, sW·W)``,
    each pixel copied into an ``sH × sW`` block; backward sums each block."""

    def __init__(self, scale_factor=2):
        super().__init__()
        self.scale_factor = _pair(scale_factor, "scale_factor")

    def extra_repr(self):
        return f"scale_factor={self.scale_factor}"

    def _up(self, x):
        N, C, H, W = x.shape
        sh, sw = self.scale_factor
        out = np.empty((N, C, H, sh, W, sw), dtype=x.dtype)
        out[...] = x[:, :, :, None, :, None]
        return out.reshape(N, C, H * sh, W * sw)

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x", ndim=4)
        self._use(params)
        return self._up(x), x.shape

    def backward(self, cache, dy, *, params=None, need_dx=True):
        N, C, H, W = cache
        sh, sw = self.scale_factor
        check_like(dy, (N, C, H * sh, W * sw))
        if not need_dx:
            return None, {}
        return dy.reshape(N, C, H, sh, W, sw).sum(axis=(3, 5)), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, _ = self.forward(x, params=params)
        return self._input_jvp(x, dx, dparams, y, self._up)


class _Pool1d(Height1):
    """1-D pooling over ``(N, C, L)``: the 2-D pool with window ``(1, K)`` on the height-1 view."""

    def __init__(self, kernel_size, stride=None, padding=0, **options):
        k = _single(kernel_size, "kernel_size")
        s = k if stride is None else _single(stride, "stride")
        p = _single(padding, "padding", allow_zero=True)
        if p > k // 2:
            raise ValueError(f"padding ({p}) must be at most half the kernel size ({k})")
        super().__init__((1, k), (1, s), (0, p), **options)
        self.kernel_size, self.stride, self.padding = (k,), (s,), (p,)

    def _geometry(self):
        return 1, self.kernel_size[0], 1, self.stride[0], 0, self.padding[0]

    def output_shape(self, shape):
        """``(N, C, L) -> (N, C, OL)`` with ``OL = ⌊(L + 2p - K)/s⌋ + 1``; a 4-D shape is the
        height-1 view the 2-D maps run on."""
        if len(shape) == 4:
            return super().output_shape(shape)
        N, C, L = shape
        (K,), (s,), (p,) = self.kernel_size, self.stride, self.padding
        if L + 2 * p < K:
            raise ValueError(f"kernel {self.kernel_size} is larger than the padded input "
                             f"({L + 2 * p},) of x with shape {tuple(shape)}")
        return N, C, (L + 2 * p - K) // s + 1


class MaxPool1d(_Pool1d, MaxPool2d):
    """Maximum over each window of ``kernel_size`` steps of a sequence (stride defaults to the
    kernel size), as :class:`MaxPool2d` on the height-1 view.

    Shapes: ``x (N, C, L) -> y (N, C, OL)``, ``OL = ⌊(L + 2p - K)/s⌋ + 1``; padding (at most half
    the kernel) never wins. Ties go to the first maximum.
    """


class AvgPool1d(_Pool1d, AvgPool2d):
    """Mean over each window of ``kernel_size`` steps, as :class:`AvgPool2d` on the height-1 view
    (``count_include_pad`` likewise). Shapes: as :class:`MaxPool1d`."""

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        super().__init__(kernel_size, stride, padding, count_include_pad=count_include_pad)


def adaptive_windows(n: int, m: int):
    """The ``m`` windows ``[start, end)`` pooling an axis of length ``n`` to ``m`` entries, by
    PyTorch's rule ``start = ⌊i n / m⌋``, ``end = ⌈(i + 1) n / m⌉``: they cover the axis, overlap by at
    most one entry, and tile it exactly when ``m`` divides ``n``."""
    return [((i * n) // m, -((-(i + 1) * n) // m)) for i in range(m)]


class AdaptiveAvgPool2d(Module):
    r"""Average pooling to a fixed output size, whatever the input size (PyTorch's window rule,
    :func:`adaptive_windows`).

    Each axis is pooled by an averaging matrix: :math:`A \in \mathbb{R}^{m \times n}` with
    :math:`A_{ij} = 1/(e_i - s_i)` for :math:`s_i \le j < e_i`, so the map is linear and separable:

    .. math::
        y = A_H\, x\, A_W^\top, \qquad \bar x = A_H^\top\, \bar y\, A_W, \qquad \dot y = A_H\, \dot x\, A_W^\top

    per sample and channel (two batched GEMMs per map). Shapes: ``x (N, C, H, W) -> y (N, C, OH, OW)``
    with ``output_size`` an int (square) or a pair ``(OH, OW)``; ``None`` keeps that axis's input
    size. Output sizes above the input size are allowed (windows then overlap). Cost:
    ``O(N·C·OH·W·(H + OW))``.
    """

    def __init__(self, output_size):
        super().__init__()
        t = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * 2
        if len(t) != 2:
            raise ValueError(f"output_size must be an int or a pair (each an int or None), got "
                             f"{output_size!r}")
        self.output_size = tuple(check_int(v, "output_size", low=1, allow_none=True) for v in t)

    def extra_repr(self):
        return f"output_size={self.output_size}"

    def _matrices(self, shape, dtype):
        H, W = shape[2:]
        OH, OW = (n if m is None else m for n, m in zip((H, W), self.output_size))
        mats = []
        for n, m in ((H, OH), (W, OW)):
            A = np.zeros((m, n), dtype)
            for i, (s, e) in enumerate(adaptive_windows(n, m)):
                A[i, s:e] = 1 / (e - s)
            mats.append(A)
        return mats

    @staticmethod
    def _apply(Ah, Aw, x):
        return np.matmul(np.matmul(Ah, x), Aw.T)

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x", ndim=4)
        self._use(params)
        Ah, Aw = self._matrices(x.shape, x.dtype)
        y = self._apply(Ah, Aw, x)
        return y, (Ah, Aw, x.shape, y.shape)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        Ah, Aw, xshape, yshape = cache
        check_like(dy, yshape)
        if not need_dx:
            return None, {}
        return np.matmul(np.matmul(Ah.T.astype(dy.dtype, copy=False), dy), Aw.astype(dy.dtype, copy=False)), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, (Ah, Aw, _, _) = self.forward(x, params=params)
        return self._input_jvp(x, dx, dparams, y, lambda d: self._apply(Ah, Aw, d))
