"""Numba im2col / col2im for 2-D convolution (NCHW), compiled lazily with ``cache=True``.

Same signatures and column layout (one ``(C·KH·KW, OH·OW)`` matrix per sample) as the references
in :mod:`nograd.kernels.conv_ref`.

:func:`im2col` writes, for every kernel tap ``(c, i, j)`` (row ``r = (c·KH + i)·KW + j``) and
output pixel ``(oh, ow)``, the input ``x[n, c, oh·sh − ph + i·dh, ow·sw − pw + j·dw]``, or zero
where that falls in the padding; :func:`col2im` is its adjoint and adds each column entry back
onto the input pixel it came from (``dx`` is accumulated into, so pass zeros). Cost:
``N·C·KH·KW·OH·OW`` element copies (additions for col2im), no extra memory. The bounds test is a
conditional expression on each element, which LLVM vectorises with masks. The kernels are serial
on purpose: on a 2-core machine NumPy's OpenBLAS threads keep spinning for a while after each
matrix product, and a parallel Numba region started then waits on them (DESIGN.md §5). Timings and
the variants tried: ``docs/notes/performance-notes.md``; ``python bench/cnn_step.py`` times the
training step these kernels serve.
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
