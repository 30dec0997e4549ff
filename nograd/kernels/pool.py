"""Numba pooling kernels (NCHW), parallel over ``(n, c)`` planes, compiled lazily with ``cache=True``.

Same signatures as :mod:`nograd.kernels.pool_ref`. Max pooling records the flat in-plane index of
each window's maximum so that backward (a scatter) and jvp (a gather) need no search.
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(parallel=True, cache=True, nogil=True)
def maxpool_forward(x, KH, KW, sh, sw, ph, pw, OH, OW, y, idx):
    N, C, H, W = x.shape
    for p in nb.prange(N * C):
        n = p // C
        c = p % C
        for oh in range(OH):
            for ow in range(OW):
                best = -np.inf
                arg = -1
                for i in range(KH):
                    ih = oh * sh - ph + i
                    if ih < 0 or ih >= H:
                        continue
                    for j in range(KW):
                        iw = ow * sw - pw + j
                        if 0 <= iw < W:
                            v = x[n, c, ih, iw]
                            if v > best:
                                best = v
                                arg = ih * W + iw
                y[n, c, oh, ow] = best
                idx[n, c, oh, ow] = arg
    return y, idx


@nb.njit(parallel=True, cache=True, nogil=True)
def maxpool_backward(dy, idx, dx):
    N, C, H, W = dx.shape
    OH, OW = dy.shape[2], dy.shape[3]
    for p in nb.prange(N * C):
        n = p // C
        c = p % C
        for oh in range(OH):
            for ow in range(OW):
                k = idx[n, c, oh, ow]
                dx[n, c, k // W, k % W] += dy[n, c, oh, ow]
    return dx


@nb.njit(parallel=True, cache=True, nogil=True)
def avgpool_forward(x, KH, KW, sh, sw, ph, pw, OH, OW, count_include_pad, y):
    N, C, H, W = x.shape
    for p in nb.prange(N * C):
        n = p // C
        c = p % C
        for oh in range(OH):
            for ow in range(OW):
                s = 0.0
                cnt = 0
                for i in range(KH):
                    ih = oh * sh - ph + i
                    if ih < 0 or ih >= H:
                        continue
                    for j in range(KW):
                        iw = ow * sw - pw + j
                        if 0 <= iw < W:
                            s += x[n, c, ih, iw]
                            cnt += 1
                y[n, c, oh, ow] = s / (KH * KW if count_include_pad else cnt)
    return y


@nb.njit(parallel=True, cache=True, nogil=True)
def avgpool_backward(dy, KH, KW, sh, sw, ph, pw, count_include_pad, dx):
    N, C, H, W = dx.shape
    OH, OW = dy.shape[2], dy.shape[3]
    for p in nb.prange(N * C):
        n = p // C
        c = p % C
        for oh in range(OH):
            for ow in range(OW):
                cnt = 0
                if count_include_pad:
                    cnt = KH * KW
                else:
                    for i in range(KH):
                        ih = oh * sh - ph + i
                        for j in range(KW):
                            iw = ow * sw - pw + j
                            if 0 <= ih < H and 0 <= iw < W:
                                cnt += 1
                g = dy[n, c, oh, ow] / cnt
                for i in range(KH):
                    ih = oh * sh - ph + i
                    if ih < 0 or ih >= H:
                        continue
                    for j in range(KW):
                        iw = ow * sw - pw + j
                        if 0 <= iw < W:
                            dx[n, c, ih, iw] += g
    return dx
