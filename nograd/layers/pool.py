r"""Pooling and resampling over NCHW images: MaxPool2d, AvgPool2d, GlobalAvgPool2d, Upsample2d.

Max pooling is piecewise linear: away from ties it selects one input per window, so with the
recorded argmax index ``k(o)`` of window ``o``

.. math::
    y_o = x_{k(o)}, \qquad \bar x_i = \sum_{o : k(o) = i} \bar y_o, \qquad \dot y_o = \dot x_{k(o)}.

Average pooling, global average pooling and nearest upsampling are linear, so each one's jvp
is its forward applied to the tangent, and its backward is the transpose (spread or sum).
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_like
from ..core.module import Module
from .conv import _pair


def _kernels():
    from ..kernels import pool  # lazy: Numba loads on the first pooling call

    return pool


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
    """

    def forward(self, x, *, train=False, rng=None, params=None):
        shape = self._check(x)
        self._use(params)
        y = np.empty(shape, dtype=x.dtype)
        idx = np.empty(shape, dtype=np.int32)
        _kernels().maxpool_forward(np.ascontiguousarray(x), *self._geometry(), shape[2], shape[3], y, idx)
        return y, (idx, x.shape)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        idx, xshape = cache
        check_like(dy, idx.shape)
        if not need_dx:
            return None, {}
        K = _kernels()
        dy = np.ascontiguousarray(dy)
        if K.is_2x2(*self._geometry()):
            return K.maxpool_backward_2x2(dy, idx, np.empty(xshape, dtype=dy.dtype)), {}
        return K.maxpool_backward(dy, idx, np.zeros(xshape, dtype=dy.dtype)), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, (idx, _) = self.forward(x, params=params)
        N, C = x.shape[:2]

        def gather(d):
            flat = np.take_along_axis(d.reshape(N, C, -1), idx.reshape(N, C, -1).astype(np.intp), axis=2)
            return flat.reshape(y.shape)
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
        y, (_, shape) = self.forward(x, params=params)
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
