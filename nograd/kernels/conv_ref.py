"""Plain NumPy references for :mod:`nograd.kernels.conv` (same signatures, same results).

Column layout, one matrix per sample:
``cols[n, (c·KH + i)·KW + j, oh·OW + ow] = x_pad[n, c, oh·sh + i·dh, ow·sw + j·dw]`` where ``x_pad``
is ``x`` zero-padded by ``(ph, pw)``. Rows group by input channel, so the rows of channel group
``g`` are one contiguous block, and ``W_m @ cols[n]`` is sample ``n``'s output in NCHW order.
"""
from __future__ import annotations

import numpy as np


def out_size(size, k, stride, pad, dil):
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def im2col(x, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, cols):
    """Fill ``cols (N, C·KH·KW, OH·OW)`` from ``x (N, C, H, W)``."""
    N, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    view = cols.reshape(N, C, KH, KW, OH, OW)
    for i in range(KH):
        for j in range(KW):
            view[:, :, i, j] = xp[:, :, i * dh: i * dh + sh * (OH - 1) + 1: sh,
                                  j * dw: j * dw + sw * (OW - 1) + 1: sw]
    return cols


def col2im(cols, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, dx):
    """Accumulate ``cols (N, C·KH·KW, OH·OW)`` into ``dx (N, C, H, W)`` (the adjoint of im2col)."""
    N, C, H, W = dx.shape
    dxp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dx.dtype)
    view = cols.reshape(N, C, KH, KW, OH, OW)
    for i in range(KH):
        for j in range(KW):
            dxp[:, :, i * dh: i * dh + sh * (OH - 1) + 1: sh,
                j * dw: j * dw + sw * (OW - 1) + 1: sw] += view[:, :, i, j]
    dx += dxp[:, :, ph: ph + H, pw: pw + W]
    return dx
