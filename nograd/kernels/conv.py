"""Numba im2col / col2im for 2-D convolution (NCHW), compiled lazily with ``cache=True``.

Same signatures and column layout (one ``(C·KH·KW, OH·OW)`` matrix per sample) as the references
in :mod:`nograd.kernels.conv_ref`; :func:`im2col_s2` and :func:`col2im_s2` (stride 2, below) give the
references' results for that geometry (``col2im_s2`` overwrites instead of accumulating).

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
import numpy as np

from .winograd_planes import gather_planes, split_planes


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


# -- stride 2 through the polyphase planes ---------------------------------------------------------
# With stride 2 (dilation 1), tap (i, j) of output (oh, ow) reads padded pixel (2oh + i, 2ow + j),
# which is pixel (oh + ⌊i/2⌋, ow + ⌊j/2⌋) of the polyphase plane (i mod 2, j mod 2) of the padded
# input. Split each input plane once into its four polyphase planes (unit-stride rows of a scratch
# row, nograd.kernels.winograd_planes.split_planes); then every tap's column block is a plain
# shifted 2-D window of one plane, copied with loops indexed by their own counters (vectorised),
# where im2col above reads the input at stride 2 with a bounds test per element.

@nb.njit(cache=True, nogil=True)
def im2col_s2(x, KH, KW, ph, pw, OH, OW, cols):
    """:func:`im2col` for stride 2 and dilation 1 (same result), through the polyphase planes."""
    N, C, H, W = x.shape
    Q4 = np.zeros((2, 2, OH + (KH - 1) // 2 + 1, OW + (KW - 1) // 2 + 1), dtype=cols.dtype)
    prow = np.zeros((Q4.shape[3], 2), dtype=cols.dtype)
    c4 = cols.reshape(N, C * KH * KW, OH, OW)
    for n in range(N):
        for c in range(C):
            split_planes(x[n, c], ph, pw, Q4, prow)
            for i in range(KH):
                for j in range(KW):
                    src = Q4[i & 1, j & 1, i >> 1:, j >> 1:]
                    dst = c4[n, (c * KH + i) * KW + j]
                    for oh in range(OH):
                        for ow in range(OW):
                            dst[oh, ow] = src[oh, ow]
    return cols


@nb.njit(cache=True, nogil=True)
def col2im_s2(cols, KH, KW, ph, pw, OH, OW, dx):
    """:func:`col2im` for stride 2 and dilation 1, through the polyphase planes; **overwrites**
    ``dx`` (the same result as accumulating into zeros)."""
    N, C, H, W = dx.shape
    Q4 = np.empty((2, 2, OH + (KH - 1) // 2 + 1, OW + (KW - 1) // 2 + 1), dtype=dx.dtype)
    prow = np.zeros((Q4.shape[3], 2), dtype=dx.dtype)
    c4 = cols.reshape(N, C * KH * KW, OH, OW)
    zero = dx.dtype.type(0)
    for n in range(N):
        for c in range(C):
            Q4[...] = zero
            for i in range(KH):
                for j in range(KW):
                    acc = Q4[i & 1, j & 1, i >> 1:, j >> 1:]
                    src = c4[n, (c * KH + i) * KW + j]
                    for oh in range(OH):
                        for ow in range(OW):
                            acc[oh, ow] += src[oh, ow]
            gather_planes(Q4, ph, pw, prow, dx[n, c])
    return dx
