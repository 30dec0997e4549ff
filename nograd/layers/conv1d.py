r"""1-D convolution over ``(N, C, L)`` sequences, computed as a 2-D convolution of height 1.

A sequence ``x (N, C, L)`` is the image ``x[:, :, None, :]`` of shape ``(N, C, 1, L)`` (a view, no
copy), and a 1-D kernel ``(O, C/g, K)`` is the ``(O, C/g, 1, K)`` kernel with geometry
``(1, K)``, stride ``(1, s)``, padding ``(0, p)``, dilation ``(1, d)``. So :class:`Conv1d` reuses
:class:`~nograd.layers.conv.Conv2d`'s im2col, its grouped GEMMs and all three of its maps
(see :mod:`nograd.layers.conv` for the maths), and the 1-D pools reuse the 2-D pooling kernels the
same way (:class:`~nograd.layers.pool.MaxPool1d`, :class:`~nograd.layers.pool.AvgPool1d`).
:class:`Height1` is that wrapper: it checks the 3-D arguments, runs the 2-D parent's map on the
views and drops the unit axis of the results.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_like, check_positive, is_int
from ..core.module import Module
from .conv import Conv2d, out_size


def _single(v, name, *, allow_zero=False):
    """An int (or a 1-tuple of one), checked positive (or non-negative)."""
    t = tuple(v) if isinstance(v, (tuple, list)) else (v,)
    if len(t) != 1:
        raise ValueError(f"{name} must be an int or a 1-tuple of ints, got {v!r}")
    check_positive(t[0], name, integer=True, allow_zero=allow_zero)
    return int(t[0])


class Height1:
    """Mixin before a 2-D layer: ``forward``/``backward``/``jvp`` on ``x (N, C, L)`` run the 2-D
    parent's maps on the view ``(N, C, 1, L)``. The class defines ``output_shape`` for a 3-D shape
    (checking it, with errors about ``x``) and for the 4-D view (the parent's)."""

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x", ndim=3)
        out = self.output_shape(x.shape)
        y, cache = super().forward(x[:, :, None, :], train=train, rng=rng, params=params)
        return y[:, :, 0, :], (cache, out)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        cache, out = cache
        check_like(dy, out)
        dx, grads = super().backward(cache, dy[:, :, None, :], params=params, need_dx=need_dx)
        return (None if dx is None else dx[:, :, 0, :]), grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        check_array(x, "x", ndim=3)
        self.output_shape(x.shape)
        if dx is not None:
            check_like(dx, x.shape, "dx")
            dx = dx[:, :, None, :]
        y, dy = super().jvp(x[:, :, None, :], dx, dparams, train=train, rng=rng, params=params)
        return y[:, :, 0, :], dy[:, :, 0, :]


class Conv1d(Height1, Conv2d):
    r"""1-D convolution (cross-correlation, as in PyTorch) over ``(N, C, L)`` input.

    .. math::
        y_{n,o,t} = b_o + \sum_{c \in \text{group}(o)} \sum_{k=0}^{K-1}
                    W_{o,c,k}\, x_{n,c,\,ts - p + kd} \quad (x = 0 \text{ outside } [0, L)).

    Shapes: ``x (N, C, L) -> y (N, O, OL)`` with ``OL = ⌊(L + 2p - d(K - 1) - 1)/s⌋ + 1``;
    ``weight (O, C/groups, K)``, ``bias (O,)`` (PyTorch's layout and default He-uniform init on
    ``fan_in = C/groups·K``). Parameters as :class:`~nograd.layers.conv.Conv2d`, each an int (or a
    1-tuple): ``kernel_size, stride, padding, dilation``, ``groups``, ``bias``, ``rng``, ``init``,
    ``dtype``. Backward and jvp are Conv2d's on the height-1 view: an im2col, one batched GEMM per
    map, and a col2im for the input cotangent. Declares ``feedback_weight = "weight"`` as Conv2d.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, *, rng=None, init="he_uniform", dtype=np.float32):
        Module.__init__(self)
        k = _single(kernel_size, "kernel_size")
        s, d = _single(stride, "stride"), _single(dilation, "dilation")
        p = _single(padding, "padding", allow_zero=True)
        cg = in_channels // groups if is_int(in_channels) and is_int(groups) and groups > 0 else 1
        self._setup(in_channels, out_channels, (1, k), (1, s), (0, p), (1, d), groups, bias,
                    (out_channels, cg, k), (out_channels, cg, 1, k), rng, init, dtype)
        self.kernel_size, self.stride, self.padding, self.dilation = (k,), (s,), (p,), (d,)

    def _geometry(self):
        (K,), (s,), (p,), (d,) = self.kernel_size, self.stride, self.padding, self.dilation
        return 1, K, 1, s, 0, p, 1, d

    def output_shape(self, shape):
        """``(N, C, L) -> (N, O, OL)``, checking ``x``'s channels and length; a 4-D shape is the
        height-1 view the 2-D maps run on."""
        if len(shape) == 4:
            return super().output_shape(shape)
        N, C, L = shape
        if C != self.in_channels:
            raise ValueError(f"x must have {self.in_channels} channels in axis 1 (N, C, L), got "
                             f"shape {tuple(shape)}")
        (K,), (s,), (p,), (d,) = self.kernel_size, self.stride, self.padding, self.dilation
        OL = out_size(L, K, s, p, d)
        if OL < 1:
            raise ValueError(f"kernel {self.kernel_size} with dilation {self.dilation} is larger than "
                             f"the padded input ({L + 2 * p},) of x with shape {tuple(shape)}")
        return N, self.out_channels, OL
