"""Numba im2col / col2im for 2-D convolution (NCHW), compiled lazily with ``cache=True``.

Same signatures and column layout (one ``(C·KH·KW, OH·OW)`` matrix per sample) as the references
in :mod:`nograd.kernels.conv_ref`. For each kernel offset the range of output positions whose
input lies inside the image is computed once (:func:`valid_range`), so the inner loops carry no
bounds tests; unit strides get their own loop, which compiles to vector code.

The kernels are serial on purpose: on a 2-core machine NumPy's OpenBLAS threads keep spinning for
a while after each matrix product, and a parallel Numba region started then waits on them
(measured on the reference CNN step: 1.8× slower with ``parallel=True``, 10× at batch 1).
"""
from __future__ import annotations

import numba as nb


@nb.njit(cache=True, nogil=True, inline="always")
def valid_range(off, size, stride, count):
    """Outputs ``o`` in ``[lo, hi)`` are those with ``0 <= o·stride + off < size``, clipped to ``[0, count)``."""
    lo = 0 if off >= 0 else (stride - 1 - off) // stride
    hi = (size - 1 - off) // stride + 1
    hi = max(0, min(count, hi))
    return min(lo, hi), hi


@nb.njit(cache=True, nogil=True)
def im2col(x, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, cols):
    N, C, H, W = x.shape
    zero = cols.dtype.type(0)
    for n in range(N):
        for c in range(C):
            for i in range(KH):
                off_h = i * dh - ph
                h_lo, h_hi = valid_range(off_h, H, sh, OH)
                for j in range(KW):
                    off_w = j * dw - pw
                    w_lo, w_hi = valid_range(off_w, W, sw, OW)
                    r = (c * KH + i) * KW + j
                    for k in range(h_lo * OW):
                        cols[n, r, k] = zero
                    for oh in range(h_lo, h_hi):
                        ih = oh * sh + off_h
                        row = oh * OW
                        for ow in range(w_lo):
                            cols[n, r, row + ow] = zero
                        if sw == 1:
                            for ow in range(w_lo, w_hi):
                                cols[n, r, row + ow] = x[n, c, ih, ow + off_w]
                        else:
                            for ow in range(w_lo, w_hi):
                                cols[n, r, row + ow] = x[n, c, ih, ow * sw + off_w]
                        for ow in range(w_hi, OW):
                            cols[n, r, row + ow] = zero
                    for k in range(h_hi * OW, OH * OW):
                        cols[n, r, k] = zero
    return cols


@nb.njit(cache=True, nogil=True)
def col2im(cols, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, dx):
    N, C, H, W = dx.shape
    for n in range(N):
        for c in range(C):
            for i in range(KH):
                off_h = i * dh - ph
                h_lo, h_hi = valid_range(off_h, H, sh, OH)
                for j in range(KW):
                    off_w = j * dw - pw
                    w_lo, w_hi = valid_range(off_w, W, sw, OW)
                    r = (c * KH + i) * KW + j
                    for oh in range(h_lo, h_hi):
                        ih = oh * sh + off_h
                        row = oh * OW
                        if sw == 1:
                            for ow in range(w_lo, w_hi):
                                dx[n, c, ih, ow + off_w] += cols[n, r, row + ow]
                        else:
                            for ow in range(w_lo, w_hi):
                                dx[n, c, ih, ow * sw + off_w] += cols[n, r, row + ow]
    return dx
