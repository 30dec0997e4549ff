"""Plain NumPy references for :mod:`nograd.kernels.pool` (same signatures, same results).

``idx[n, c, oh, ow]`` is the flat index ``ih·W + iw`` of the maximum of the window in the
unpadded plane (the first maximum in row-major window order on ties).
"""
from __future__ import annotations

import numpy as np


def _windows(x, KH, KW, sh, sw, ph, pw, OH, OW, fill):
    N, C, H, W = x.shape
    xp = np.full((N, C, H + 2 * ph, W + 2 * pw), fill, dtype=x.dtype)
    xp[:, :, ph:ph + H, pw:pw + W] = x
    out = np.empty((N, C, OH, OW, KH, KW), dtype=x.dtype)
    for i in range(KH):
        for j in range(KW):
            out[..., i, j] = xp[:, :, i:i + sh * (OH - 1) + 1:sh, j:j + sw * (OW - 1) + 1:sw]
    return out


def maxpool_forward(x, KH, KW, sh, sw, ph, pw, OH, OW, y, idx):
    N, C, H, W = x.shape
    win = _windows(x, KH, KW, sh, sw, ph, pw, OH, OW, -np.inf).reshape(N, C, OH, OW, KH * KW)
    k = win.argmax(axis=-1)
    y[...] = np.take_along_axis(win, k[..., None], axis=-1)[..., 0]
    i, j = k // KW, k % KW
    ih = np.arange(OH)[:, None] * sh - ph + i
    iw = np.arange(OW)[None, :] * sw - pw + j
    idx[...] = ih * W + iw
    return y, idx


def maxpool_backward(dy, idx, dx):
    N, C, H, W = dx.shape
    flat = dx.reshape(N, C, H * W)
    for n in range(N):
        for c in range(C):
            np.add.at(flat[n, c], idx[n, c].reshape(-1), dy[n, c].reshape(-1))
    return dx


def avgpool_forward(x, KH, KW, sh, sw, ph, pw, OH, OW, count_include_pad, y):
    win = _windows(x, KH, KW, sh, sw, ph, pw, OH, OW, 0)
    ones = _windows(np.ones((1, 1) + x.shape[2:], x.dtype), KH, KW, sh, sw, ph, pw, OH, OW, 0)
    count = KH * KW if count_include_pad else ones.sum(axis=(-1, -2))
    y[...] = win.sum(axis=(-1, -2)) / count
    return y


def avgpool_backward(dy, KH, KW, sh, sw, ph, pw, count_include_pad, dx):
    N, C, H, W = dx.shape
    OH, OW = dy.shape[2:]
    ones = _windows(np.ones((1, 1, H, W), dx.dtype), KH, KW, sh, sw, ph, pw, OH, OW, 0)
    count = KH * KW if count_include_pad else ones.sum(axis=(-1, -2))
    g = dy / count
    dxp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dx.dtype)
    for i in range(KH):
        for j in range(KW):
            dxp[:, :, i:i + sh * (OH - 1) + 1:sh, j:j + sw * (OW - 1) + 1:sw] += g
    dx += dxp[:, :, ph:ph + H, pw:pw + W]
    return dx


def maxpool_backward_2x2(dy, idx, dx):
    """Reference of the 2×2 path: ``dx`` is overwritten (not accumulated)."""
    dx[...] = 0
    return maxpool_backward(dy, idx, dx)


def is_2x2(KH, KW, sh, sw, ph, pw):
    return KH == 2 and KW == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
