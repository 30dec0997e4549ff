"""Numba im2col / col2im for 2-D convolution (NCHW), compiled lazily with ``cache=True``.

Same signatures and column layout (one ``(C·KH·KW, OH·OW)`` matrix per sample) as the references
in :mod:`nograd.kernels.conv_ref`.

Speed notes (measured on the reference CNN's second convolution, 64×32×16×16, 3×3, pad 1):
the plain loops below, with the bounds test as a conditional expression on each element, run in
1.5 ms for im2col and 1.7 ms for col2im; LLVM turns the inner loops into vector code with masks.
Precomputing the valid ranges per row and writing padding as slices was 4–7× *slower*. The
kernels are serial on purpose: on a 2-core machine NumPy's OpenBLAS threads keep spinning for a
while after each matrix product, and a parallel Numba region started then waits on them
(measured on the CNN step: 1.8× slower with ``parallel=True``, 10× at batch 1).
"""
from __future__ import annotations

import numba as nb


@nb.njit(cache=True, nogil=True)
def im2col(x, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, cols):
    N, C, H, W = x.shape
    zero = cols.dtype.type(0)
    for n in range(N):
        for c in range(C):
            for i in range(KH):
                for j in range(KW):
                    r = (c * KH + i) * KW + j
                    for oh in range(OH):
                        ih = oh * sh - ph + i * dh
                        row = oh * OW
                        if ih < 0 or ih >= H:
                            for ow in range(OW):
                                cols[n, r, row + ow] = zero
                            continue
                        for ow in range(OW):
                            iw = ow * sw - pw + j * dw
                            cols[n, r, row + ow] = x[n, c, ih, iw] if 0 <= iw < W else zero
    return cols


@nb.njit(cache=True, nogil=True)
def col2im(cols, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, dx):
    N, C, H, W = dx.shape
    for n in range(N):
        for c in range(C):
            for i in range(KH):
                for j in range(KW):
                    r = (c * KH + i) * KW + j
                    for oh in range(OH):
                        ih = oh * sh - ph + i * dh
                        if ih < 0 or ih >= H:
                            continue
                        row = oh * OW
                        for ow in range(OW):
                            iw = ow * sw - pw + j * dw
                            if 0 <= iw < W:
                                dx[n, c, ih, iw] += cols[n, r, row + ow]
    return dx
