"""Numba im2col / col2im for 2-D convolution (NCHW), parallel, compiled lazily with ``cache=True``.

Same signatures and column layout as the references in :mod:`nograd.kernels.conv_ref`.
``im2col`` is parallel over the rows ``(c, i, j)`` of the column matrix (each thread writes whole
rows); ``col2im`` is parallel over ``(n, c)`` planes of the output (each thread owns its plane,
so the accumulation has no races).
"""
from __future__ import annotations

import numba as nb


@nb.njit(parallel=True, cache=True, nogil=True)
def im2col(x, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, cols):
    N, C, H, W = x.shape
    L = OH * OW
    for r in nb.prange(C * KH * KW):
        c = r // (KH * KW)
        i = (r // KW) % KH
        j = r % KW
        for n in range(N):
            base = n * L
            for oh in range(OH):
                ih = oh * sh - ph + i * dh
                row = base + oh * OW
                if ih < 0 or ih >= H:
                    for ow in range(OW):
                        cols[r, row + ow] = 0
                    continue
                for ow in range(OW):
                    iw = ow * sw - pw + j * dw
                    if 0 <= iw < W:
                        cols[r, row + ow] = x[n, c, ih, iw]
                    else:
                        cols[r, row + ow] = 0
    return cols


@nb.njit(parallel=True, cache=True, nogil=True)
def col2im(cols, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, dx):
    N, C, H, W = dx.shape
    L = OH * OW
    for p in nb.prange(N * C):
        n = p // C
        c = p % C
        base = n * L
        for i in range(KH):
            for j in range(KW):
                r = (c * KH + i) * KW + j
                for oh in range(OH):
                    ih = oh * sh - ph + i * dh
                    if ih < 0 or ih >= H:
                        continue
                    row = base + oh * OW
                    for ow in range(OW):
                        iw = ow * sw - pw + j * dw
                        if 0 <= iw < W:
                            dx[n, c, ih, iw] += cols[r, row + ow]
    return dx
