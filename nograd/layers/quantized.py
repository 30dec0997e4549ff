r"""Low-bit layers: integer codes and scales stored packed, the weight dequantized on the fly.

A weight matrix ``W (out, fan_in)`` (a Linear's, or a Conv2d's reshaped to ``(out, C·KH·KW)``) is
held as ``b``-bit unsigned codes :math:`c`, one float scale :math:`\delta` and one integer offset
:math:`o` per output channel (``granularity="channel"``) or per layer (``"layer"``):

.. math::
    W = \operatorname{diag}(\delta)\,(C + o\,\mathbf 1^\top), \qquad
    C \in \{0, \dots, 2^b - 1\}^{out \times fan\_in},

the grid of :mod:`nograd.compress` (COMQ, GPTQ, round-to-nearest all produce it). The codes are
packed (:func:`pack_codes`: two per byte for ``b <= 4``, one above), so the stored weight takes
about 1/8 (``b <= 4``) or 1/4 (``b > 4``) of its float32 size, plus a scale and an offset per row.

The trainable arrays are the scales and the bias (the codes and offsets are fixed buffers), so a
quantized model can still be probed or fine-tuned: with :math:`Z = C + o\mathbf 1^\top` and
:math:`\bar W` the weight cotangent of the float layer,

.. math::
    \bar\delta_j = \textstyle\sum_k \bar W_{jk} Z_{jk}, \qquad
    \dot W = \operatorname{diag}(\dot\delta)\, Z,

summed over all rows when the scale is per layer; the input's cotangent and tangent are those of
the float layer with weight :math:`W`.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_dtype, check_int, check_last_dim, check_like, check_positive
from ..core.module import Module
from .conv import Conv2d, _ConvBase, _pair, grouped_outer

GRANULARITIES = ("channel", "layer")


# ------------------------------------------------------------------------------ packing
def packed_size(count: int, bits: int) -> int:
    """Bytes taken by ``count`` codes of ``bits`` bits: ``⌈count/2⌉`` for ``bits <= 4``, else ``count``."""
    return (int(count) + 1) // 2 if bits <= 4 else int(count)


def pack_codes(codes, bits: int) -> np.ndarray:
    """``codes`` (integers in ``[0, 2**bits)``, any shape, read in C order) as 1-D uint8.

    With ``bits <= 4`` code ``2k`` is the low nibble of byte ``k`` and code ``2k + 1`` its high
    nibble (an odd count leaves the last high nibble zero); with ``5 <= bits <= 8`` one code per
    byte. Codes out of range raise ``ValueError``.
    """
    bits = check_int(bits, "bits", low=2, high=8)
    c = np.asarray(codes)
    if c.dtype.kind not in "iu":
        raise TypeError(f"codes must be integers, got dtype {c.dtype}")
    c = c.ravel()
    if c.size and (c.min() < 0 or c.max() >= 1 << bits):
        raise ValueError(f"codes must lie in [0, {(1 << bits) - 1}] for bits={bits}, got values "
                         f"in [{c.min()}, {c.max()}]")
    c = c.astype(np.uint8)
    if bits > 4:
        return c.copy()
    if c.size % 2:
        c = np.concatenate([c, np.zeros(1, np.uint8)])
    return c[0::2] | (c[1::2] << 4)


def unpack_codes(packed, bits: int, count: int) -> np.ndarray:
    """The first ``count`` codes held by ``packed`` (from :func:`pack_codes`), as 1-D uint8."""
    bits = check_int(bits, "bits", low=2, high=8)
    p = np.asarray(packed)
    if p.dtype != np.uint8 or p.ndim != 1:
        raise TypeError(f"packed must be a 1-D uint8 array, got {p.dtype} of shape {p.shape}")
    need = packed_size(count, bits)
    if p.size != need:
        raise ValueError(f"packed holds {p.size} bytes; {count} codes of {bits} bits need {need}")
    if bits > 4:
        return p.copy()
    out = np.empty(2 * p.size, np.uint8)
    out[0::2] = p & 0x0F
    out[1::2] = p >> 4
    return out[:count]


# ------------------------------------------------------------------------------ the shared part
class _Quantized(Module):
    """Codes, offsets, scales and bias of a quantized weight ``(out, fan_in)``; the float weight
    and the scale's cotangent and tangent."""

    #: it replaces a float layer after the model was built: a model file records where (serialize)
    swapped_in = True

    def _setup_codes(self, out: int, fan_in: int, bits, bias: bool, granularity, dtype):
        self.bits = check_int(bits, "bits", low=2, high=8)
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        self.granularity = granularity
        dt = check_dtype(dtype)
        self._rows = (int(out), int(fan_in))
        k = int(out) if granularity == "channel" else 1
        self._own["scale"] = np.ones(k, dtype=dt)
        if bias:
            self._own["bias"] = np.zeros(int(out), dtype=dt)
        self._buffers["codes"] = np.zeros(packed_size(out * fan_in, self.bits), np.uint8)
        self._buffers["offset"] = np.zeros(k, np.int16)

    def load_codes(self, codes, scale, offset, bias=None):
        """Fill the layer in place: ``codes`` ``(out, fan_in)`` (or the weight's shape) integers in
        ``[0, 2**bits)``, ``scale`` and ``offset`` of shape ``(out,)`` or ``(1,)`` as the
        granularity says, ``bias (out,)`` (kept when None). Returns the layer."""
        out, fan_in = self._rows
        c = np.asarray(codes)
        if c.size != out * fan_in:
            raise ValueError(f"codes must hold {out}×{fan_in} entries, got shape {c.shape}")
        s = np.asarray(scale, dtype=np.float64).reshape(-1)
        o = np.asarray(offset).reshape(-1)
        k = self._own["scale"].size
        if s.size != k or o.size != k:
            raise ValueError(f"scale and offset must have {k} entries ({self.granularity} "
                             f"granularity), got {s.size} and {o.size}")
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError("scale must be finite and positive")
        if o.dtype.kind not in "iu" or np.abs(o).max(initial=0) > np.iinfo(np.int16).max:
            raise ValueError(f"offset must be integers within int16, got {o.dtype} {o[:4]}")
        self._buffers["codes"][...] = pack_codes(c, self.bits)
        self._buffers["offset"][...] = o
        self._own["scale"][...] = s
        if bias is not None:
            if "bias" not in self._own:
                raise ValueError("bias given to a layer built with bias=False")
            self._own["bias"][...] = np.asarray(bias).reshape(-1)
        return self

    def codes(self) -> np.ndarray:
        """The unpacked codes ``(out, fan_in)`` as uint8."""
        out, fan_in = self._rows
        return unpack_codes(self._buffers["codes"], self.bits, out * fan_in).reshape(out, fan_in)

    def _z(self, dtype):
        """``Z = C + o 1ᵀ`` ``(out, fan_in)`` in ``dtype``: the integer codes of COMQ."""
        return self.codes().astype(dtype) + self._buffers["offset"].astype(dtype)[:, None]

    def _scale_col(self, s, dtype):
        return s.astype(dtype, copy=False)[:, None]

    def _matrix(self, p, dtype):
        """The dequantized weight ``(out, fan_in)`` and ``Z``, in ``dtype``."""
        Z = self._z(dtype)
        return self._scale_col(p["scale"], dtype) * Z, Z

    def _scale_grad(self, dW, Z, dtype):
        g = np.einsum("ij,ij->i", dW, Z)
        if self._own["scale"].size == 1:
            g = g.sum(keepdims=True)
        return g.astype(dtype, copy=False)

    def dequantized(self) -> np.ndarray:
        """The float weight the layer computes with ``(out, fan_in)``, in the layer's dtype."""
        return self._matrix(self._own, self._own["scale"].dtype)[0]

    @property
    def weight_bytes(self) -> int:
        """Bytes of the stored weight: packed codes, scales and offsets (bias excluded)."""
        return int(self._buffers["codes"].nbytes + self._own["scale"].nbytes
                   + self._buffers["offset"].nbytes)


class QuantizedLinear(_Quantized):
    r"""A :class:`~nograd.layers.Linear` with a ``bits``-bit weight (see the module docstring).

    Shapes: ``x (..., in) -> y (..., out)``; params ``scale (out,)`` (or ``(1,)`` per layer) and
    ``bias (out,)``; buffers ``codes`` (packed uint8) and ``offset`` (int16, like ``scale``).

    .. math::
        y = x W^\top + b, \quad W = \operatorname{diag}(\delta) Z; \qquad
        \bar x = \bar y W, \quad \bar\delta_j = \textstyle\sum_k (\bar y^\top x)_{jk} Z_{jk}, \quad
        \bar b = \textstyle\sum_n \bar y_n.

    Built empty (codes 0, scales 1) and filled by :meth:`load_codes`, as
    :func:`nograd.compress.quantize` does. Cost: the dequantization (``out·in``) on each call plus
    the float layer's product.
    """

    def __init__(self, in_features: int, out_features: int, bits: int = 4, bias: bool = True,
                 granularity: str = "channel", *, dtype=np.float32):
        super().__init__()
        check_positive(in_features, "in_features", integer=True)
        check_positive(out_features, "out_features", integer=True)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self._setup_codes(out_features, in_features, bits, bias, granularity, dtype)

    def extra_repr(self):
        return (f"{self.in_features}, {self.out_features}, bits={self.bits}, "
                f"granularity={self.granularity!r}, bias={'bias' in self._own}")

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x", min_ndim=1)
        check_last_dim(x, self.in_features)
        p = self._use(params)
        W, _ = self._matrix(p, x.dtype)
        y = (x.reshape(-1, self.in_features) @ W.T).reshape(x.shape[:-1] + (self.out_features,))
        if "bias" in p:
            y += p["bias"].astype(x.dtype, copy=False)
        return y, x

    def backward(self, cache, dy, *, params=None, need_dx=True):
        x = cache
        p = self._use(params)
        check_like(dy, x.shape[:-1] + (self.out_features,))
        W, Z = self._matrix(p, dy.dtype)
        dy2, x2 = dy.reshape(-1, self.out_features), x.reshape(-1, self.in_features)
        dt = p["scale"].dtype
        grads = {"scale": self._scale_grad(dy2.T @ x2, Z, dt)}
        if "bias" in p:
            grads["bias"] = dy2.sum(axis=0).astype(dt, copy=False)
        dx = (dy2 @ W).reshape(x.shape) if need_dx else None
        return dx, grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, _ = self.forward(x, params=params)
        p = self._use(params)
        dparams = self._tangents(dparams) or {}
        W, Z = self._matrix(p, x.dtype)
        x2 = x.reshape(-1, self.in_features)
        dy = np.zeros((x2.shape[0], self.out_features), x.dtype)
        if dx is not None:
            check_like(dx, x.shape, "dx")
            dy += dx.reshape(-1, self.in_features) @ W.T
        if "scale" in dparams:
            dy += x2 @ (self._scale_col(dparams["scale"], x.dtype) * Z).T
        if "bias" in dparams:
            dy += dparams["bias"].astype(x.dtype, copy=False)
        return y, dy.reshape(y.shape)


class QuantizedConv2d(_Quantized, _ConvBase):
    r"""A :class:`~nograd.layers.Conv2d` (``groups=1``) with a ``bits``-bit weight.

    Shapes: ``x (N, C, H, W) -> y (N, O, OH, OW)`` as Conv2d; the weight is the matrix
    ``W (O, C·KH·KW)`` of the module docstring, applied to the column matrix of each sample:
    :math:`Y = W X_{col} + b`, :math:`\bar x = \mathrm{col2im}(W^\top \bar Y)`,
    :math:`\bar\delta_j = \sum_k (\sum_n \bar Y_n X_{col,n}^\top)_{jk} Z_{jk}`. Params ``scale``,
    ``bias``; buffers ``codes``, ``offset``; filled by :meth:`load_codes`.
    """

    output_shape = Conv2d.output_shape

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bits: int = 4, bias: bool = True, granularity: str = "channel", *, dtype=np.float32):
        super().__init__()
        check_positive(in_channels, "in_channels", integer=True)
        check_positive(out_channels, "out_channels", integer=True)
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), 1
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding", allow_zero=True)
        self.dilation = _pair(dilation, "dilation")
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        self._setup_codes(out_channels, fan_in, bits, bias, granularity, dtype)

    def extra_repr(self):
        return super().extra_repr() + f", bits={self.bits}, granularity={self.granularity!r}"

    def _bias(self, Y, b):
        if b is not None:
            Y += b.astype(Y.dtype, copy=False)[:, None]
        return Y

    def forward(self, x, *, train=False, rng=None, params=None):
        self._check_input(x, self.in_channels)
        p = self._use(params)
        N, O, OH, OW = self.output_shape(x.shape)
        cols = self._im2col(x, OH, OW)
        W, _ = self._matrix(p, x.dtype)
        Y = self._bias(np.matmul(W, cols), p.get("bias"))
        return Y.reshape(N, O, OH, OW), (cols, x.shape)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        cols, xshape = cache
        p = self._use(params)
        N, O, OH, OW = self.output_shape(xshape)
        check_like(dy, (N, O, OH, OW))
        dY = np.ascontiguousarray(dy).reshape(N, O, OH * OW)
        W, Z = self._matrix(p, dy.dtype)
        dt = p["scale"].dtype
        dW = grouped_outer(dY, cols, 1).reshape(W.shape)
        grads = {"scale": self._scale_grad(dW, Z, dt)}
        if "bias" in p:
            grads["bias"] = dY.sum(axis=(0, 2)).astype(dt, copy=False)
        dx = self._col2im(np.matmul(W.T, dY), xshape, OH, OW) if need_dx else None
        return dx, grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, (cols, _) = self.forward(x, params=params)
        p = self._use(params)
        dparams = self._tangents(dparams) or {}
        N, O, OH, OW = y.shape
        W, Z = self._matrix(p, x.dtype)
        dY = np.zeros((N, O, OH * OW), x.dtype)
        if dx is not None:
            check_like(dx, x.shape, "dx")
            dY += np.matmul(W, self._im2col(dx, OH, OW))
        if "scale" in dparams:
            dY += np.matmul(self._scale_col(dparams["scale"], x.dtype) * Z, cols)
        return y, self._bias(dY, dparams.get("bias")).reshape(N, O, OH, OW)
