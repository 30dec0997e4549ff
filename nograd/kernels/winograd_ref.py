"""Plain NumPy references for :mod:`nograd.kernels.winograd` (same signatures, same results).

Each tile is written with the transform matrices of Lavin & Gray (2016, §5) as matrix products
(``B^T d B``, ``A^T m A``, ``A Ȳ A^T``, ``B m B^T``) over strided views of the zero-padded
planes, instead of the unrolled sums of the Numba kernels. Tile ``p = (n·TH + th)·TW + tw``.
"""
from __future__ import annotations

import numpy as np

from .winograd import AT, BT, G


def _tiles(xp, TH, TW, size, step=2):
    """``xp (N, C, HP, WP)`` → ``(N, C, TH, TW, size, size)`` view of the tiles at stride ``step``."""
    N, C = xp.shape[:2]
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, (N, C, TH, TW, size, size), (s[0], s[1], step * s[2], step * s[3], s[2], s[3]), writeable=False)


def input_transform(x, ph, pw, TH, TW, V):
    N, C, H, W = x.shape
    xp = np.zeros((N, C, 2 * TH + 2, 2 * TW + 2), dtype=V.dtype)
    hh, ww = min(H, 2 * TH + 2 - ph), min(W, 2 * TW + 2 - pw)
    xp[:, :, ph:ph + hh, pw:pw + ww] = x[:, :, :hh, :ww]
    d = _tiles(xp, TH, TW, 4)
    bt = BT.astype(V.dtype)
    v = np.einsum("ai,nctuij,bj->abcntu", bt, d, bt)
    V[...] = v.reshape(16, C, N * TH * TW)
    return V


def output_transform(M, bias, relu, TH, TW, y):
    N, K, OH, OW = y.shape
    at = AT.astype(y.dtype)
    m = M.reshape(4, 4, K, N, TH, TW)
    t = np.einsum("ai,ijkntu,bj->nktaub", at, m, at).reshape(N, K, 2 * TH, 2 * TW)
    t = t[:, :, :OH, :OW] + bias[:, None, None]
    y[...] = np.maximum(t, 0) if relu else t
    return y


def cotangent_transform(dy, TH, TW, Z):
    N, K, OH, OW = dy.shape
    buf = np.zeros((N, K, 2 * TH, 2 * TW), dtype=Z.dtype)
    buf[:, :, :OH, :OW] = dy
    t = buf.reshape(N, K, TH, 2, TW, 2)
    a = AT.T.astype(Z.dtype)
    z = np.einsum("ai,nktiuj,bj->abkntu", a, t, a)
    Z[...] = z.reshape(16, K, N * TH * TW)
    return Z


def input_grad_transform(Mx, ph, pw, TH, TW, dx):
    N, C, H, W = dx.shape
    b = BT.T.astype(dx.dtype)
    m = Mx.reshape(4, 4, C, N, TH, TW)
    t = np.einsum("ai,ijcntu,bj->ncutab", b, m, b)
    buf = np.zeros((N, C, 2 * TH + 2, 2 * TW + 2), dtype=dx.dtype)
    for th in range(TH):
        for tw in range(TW):
            buf[:, :, 2 * th:2 * th + 4, 2 * tw:2 * tw + 4] += t[:, :, tw, th]
    dx[...] = 0
    hh, ww = min(H, 2 * TH + 2 - ph), min(W, 2 * TW + 2 - pw)
    dx[:, :, :hh, :ww] = buf[:, :, ph:ph + hh, pw:pw + ww]
    return dx


def filter_transform(w):
    """``U = G g Gᵀ`` of every filter, ``w (K, C, 3, 3) -> (16, K, C)``: one einsum with ``G``."""
    g = G.astype(w.dtype)
    K, C = w.shape[:2]
    return np.ascontiguousarray(np.einsum("ai,kcij,bj->abkc", g, w, g).reshape(16, K, C))


def filter_grad_transform(Mw):
    """``Gᵀ Mw G`` per filter, ``Mw (16, K, C) -> (K, C, 3, 3)``: one einsum with ``G``."""
    g = G.astype(Mw.dtype)
    K, C = Mw.shape[1:]
    return np.einsum("ai,abkc,bj->kcij", g, Mw.reshape(4, 4, K, C), g)
