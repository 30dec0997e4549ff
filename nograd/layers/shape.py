"""Shape-only layers: a reshape is linear, so its backward is the inverse reshape and its jvp
is itself."""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_like
from ..core.module import Module


class Flatten(Module):
    """Merge axes ``start_dim..end_dim`` into one (PyTorch's ``nn.Flatten``; default keeps the batch axis).

    Shapes: ``x (N, C, H, W) -> y (N, C·H·W)`` with the defaults. Declares ``shape_only``.
    """

    shape_only = True

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def _out_shape(self, shape):
        nd = len(shape)
        s = self.start_dim % nd if nd else 0
        e = self.end_dim % nd if nd else 0
        if not (0 <= self.start_dim + (nd if self.start_dim < 0 else 0) < nd) or s > e:
            raise ValueError(f"x of shape {shape} cannot be flattened from axis {self.start_dim} "
                             f"to {self.end_dim}")
        return shape[:s] + (int(np.prod(shape[s:e + 1])),) + shape[e + 1:]

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x")
        self._use(params)
        return x.reshape(self._out_shape(x.shape)), x.shape

    def backward(self, cache, dy, *, params=None, need_dx=True):
        shape = cache
        check_like(dy, self._out_shape(shape))
        return (dy.reshape(shape) if need_dx else None), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, _ = self.forward(x, params=params)
        return self._input_jvp(x, dx, dparams, y, lambda d: d.reshape(y.shape))


class Reshape(Module):
    """Reshape each sample to ``shape``, keeping the batch axis (e.g. flat digits ``(N, 64)`` to
    images ``(N, 1, 8, 8)``). Shapes: ``x (N, *in) -> y (N, *shape)`` with ``prod(in) == prod(shape)``.
    Declares ``shape_only``.
    """

    shape_only = True

    def __init__(self, *shape):
        super().__init__()
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if not shape or any(not isinstance(s, (int, np.integer)) or s < 1 for s in shape):
            raise ValueError(f"shape must be positive ints, got {shape!r}")
        self.shape = tuple(int(s) for s in shape)

    def extra_repr(self):
        return f"{self.shape}"

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x")
        self._use(params)
        if int(np.prod(x.shape[1:])) != int(np.prod(self.shape)):
            raise ValueError(f"x of shape {x.shape} cannot be reshaped to (N, {', '.join(map(str, self.shape))})")
        return x.reshape((x.shape[0],) + self.shape), x.shape

    def backward(self, cache, dy, *, params=None, need_dx=True):
        shape = cache
        check_like(dy, (shape[0],) + self.shape)
        return (dy.reshape(shape) if need_dx else None), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, _ = self.forward(x, params=params)
        return self._input_jvp(x, dx, dparams, y, lambda d: d.reshape(y.shape))
