r"""Fused Numba passes for the chain convolution → ReLU → 2×2 max pooling (NCHW), serial.

Each kernel gives, entry for entry, the numbers of the unfused chain (same float32 operations in
the same order, the same ties), without writing the full-size intermediates:

- :func:`relu_maxpool2x2` — ``y = maxpool₂ₓ₂(relu(x [+ b]))`` and the window argmax ``idx``
  (flat in-plane index, the index :mod:`nograd.kernels.pool` records for the ReLU output) and
  ``pos = y > 0``. ReLU is ``np.maximum(v, 0)``: ``-0`` becomes ``+0`` and NaN stays NaN.
- :func:`relu_maxpool2x2_backward` — ``dx = relu'(·) ⊙ maxpool'ᵀ(ȳ)``: ``ȳ·[y > 0]`` at each
  argmax, zero elsewhere; every entry of ``dx`` written once (no zero-fill pass).
- :func:`winograd_relu_pool` — the output transform of Winograd's F(2×2, 3×3) (Lavin & Gray
  2016, §5; :func:`nograd.kernels.winograd.output_transform`) with bias, ReLU and the pooling
  in the same pass: a 2×2 output tile *is* a pooling window, so only the pooled map is written.
- :func:`winograd_pooled_cotangent` — ``Z = A Ȳ Aᵀ`` of every tile
  (:func:`nograd.kernels.winograd.cotangent_transform`) straight from the pooled cotangent: the
  convolution's output cotangent has at most one non-zero per tile, ``ȳ·[y > 0]`` at the argmax.
- :func:`bias_relu` — ``z ← max(z + b, 0)`` in place on a linear layer's fresh output (the
  chain ``Linear → ReLU``: the bias add and ReLU of the unfused chain in one pass, no second
  array), reporting whether every ``z + b`` was finite (the unfused ReLU refuses NaN and inf).
- :func:`relu_mask` — ``z̄ = ȳ·[y > 0]`` (the product with the mask as a float, as ``ȳ * (y > 0)``
  computes it: NaN and inf in ``ȳ`` meet a zero the same way) without the boolean array.
- :func:`bias_relu_rows` — :func:`bias_relu` on the feature-major product ``zᵀ`` ``(M, N)`` (one
  row a feature, ``b_j`` added along row ``j``), which :class:`~nograd.layers.FusedSequential`
  carries between consecutive linear layers (:func:`relu_mask` is elementwise and serves both).
- :func:`channel_sum` / :func:`pooled_channel_sum` — the bias gradient ``Σ_{n,i,j} Ȳ[n,k,i,j]``
  in one fixed order (float64 accumulators per column, rows in order, then the columns in
  order), from the full cotangent or from the pooled one; zeros add nothing, so both agree
  exactly.

Shapes: linear output ``(N, M)`` (leading axes flattened); conv output ``(N, C, H, W)``, pooled
``(N, C, H//2, W//2)``; Winograd tiles as in :mod:`nograd.kernels.winograd` (``TH = ⌈H/2⌉``,
``TW = ⌈W/2⌉``, tile ``p = (n·TH + th)·TW + tw``).
References: :mod:`nograd.kernels.fused_ref`. Serial, as every kernel (DESIGN.md §5).
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .pool import zero_uncovered, max2x2, scatter2x2
from .winograd import cotangent_columns, output_rows


@nb.njit(cache=True, nogil=True, inline="always")
def _relu(v, zero):
    return v if (v > zero or v != v) else zero       # np.maximum(v, 0): NaN kept, -0 → +0


@nb.njit(cache=True, nogil=True)
def relu_maxpool2x2(x, bias, has_bias, y, idx, pos):
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    zero = y.dtype.type(0)
    for n in range(N):
        for c in range(C):
            b = bias[c] if has_bias else zero
            for oh in range(OH):
                r0 = 2 * oh
                for ow in range(OW):
                    c0 = 2 * ow
                    a = x[n, c, r0, c0]
                    bb = x[n, c, r0, c0 + 1]
                    d = x[n, c, r0 + 1, c0]
                    e = x[n, c, r0 + 1, c0 + 1]
                    if has_bias:
                        a, bb, d, e = a + b, bb + b, d + b, e + b
                    m, k = max2x2(_relu(a, zero), _relu(bb, zero), _relu(d, zero), _relu(e, zero),
                                  r0, c0, W)
                    y[n, c, oh, ow] = m
                    idx[n, c, oh, ow] = k
                    pos[n, c, oh, ow] = m > zero
    return y, idx, pos


@nb.njit(cache=True, nogil=True)
def relu_maxpool2x2_backward(dy, idx, pos, dx):
    N, C, H, W = dx.shape
    OH, OW = dy.shape[2], dy.shape[3]
    zero = dx.dtype.type(0)
    one = dx.dtype.type(1)
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                r0 = 2 * oh
                for ow in range(OW):
                    g = dy[n, c, oh, ow] * (one if pos[n, c, oh, ow] else zero)
                    scatter2x2(dx, n, c, r0, 2 * ow, W, idx[n, c, oh, ow], g, zero)
            zero_uncovered(dx, n, c, 2 * OH, 2 * OW)       # odd H, W: inputs no window covers
    return dx


@nb.njit(cache=True, nogil=True)
def winograd_relu_pool(M, bias, TH, TW, H, W, y, idx, pos):
    N, K, PH, PW = y.shape
    s = np.empty((8, TW), dtype=y.dtype)
    o = np.empty((4, TW), dtype=y.dtype)
    zero = y.dtype.type(0)
    for n in range(N):
        for k in range(K):
            b = bias[k]
            for th in range(PH):
                base = (n * TH + th) * TW
                output_rows(M, k, base, TW, s)     # rows: A^T m, as output_transform
                # columns: (A^T m) A, plus the bias, then ReLU: o[2a + c] is output (a, c) of a tile
                for a in range(2):
                    for tw in range(TW):
                        o[2 * a, tw] = _relu(s[4 * a, tw] + s[4 * a + 1, tw] + s[4 * a + 2, tw] + b, zero)
                    for tw in range(TW):
                        o[2 * a + 1, tw] = _relu(s[4 * a + 1, tw] - s[4 * a + 2, tw] - s[4 * a + 3, tw] + b,
                                                 zero)
                r0 = 2 * th
                for tw in range(PW):
                    m, i = max2x2(o[0, tw], o[1, tw], o[2, tw], o[3, tw], r0, 2 * tw, W)
                    y[n, k, th, tw] = m
                    idx[n, k, th, tw] = i
                    pos[n, k, th, tw] = m > zero
    return y, idx, pos


@nb.njit(cache=True, nogil=True)
def winograd_pooled_cotangent(dy, idx, pos, H, W, TH, TW, Z):
    N, K, PH, PW = dy.shape
    WB = 2 * TW
    rows = np.empty((2, WB), dtype=Z.dtype)
    s = np.empty((4, WB), dtype=Z.dtype)
    zero = Z.dtype.type(0)
    one = Z.dtype.type(1)
    for n in range(N):
        for k in range(K):
            for th in range(TH):
                base = (n * TH + th) * TW
                for j in range(WB):
                    rows[0, j] = zero
                    rows[1, j] = zero
                if th < PH:                    # the tile's one non-zero: ȳ·[y > 0] at the argmax
                    for tw in range(PW):
                        d = idx[n, k, th, tw] - 2 * th * W          # row 2th or 2th+1 (no division)
                        a = 1 if d >= W else 0
                        rows[a, d - a * W] = dy[n, k, th, tw] * (one if pos[n, k, th, tw] else zero)
                # A Ȳ A^T, as cotangent_transform
                for j in range(WB):
                    s[0, j] = rows[0, j]
                for j in range(WB):
                    s[1, j] = rows[0, j] + rows[1, j]
                for j in range(WB):
                    s[2, j] = rows[0, j] - rows[1, j]
                for j in range(WB):
                    s[3, j] = -rows[1, j]
                cotangent_columns(s, Z, k, base, TW)
    return Z


@nb.njit(cache=True, nogil=True)
def _column_totals(acc):
    K, W = acc.shape
    out = np.empty(K, dtype=np.float64)
    for k in range(K):
        t = 0.0
        for j in range(W):
            t += acc[k, j]
        out[k] = t
    return out


@nb.njit(cache=True, nogil=True)
def channel_sum(dy):
    # accumulator (k, j) receives the entries of column j of channel k in (n, i) order
    N, K, H, W = dy.shape
    acc = np.zeros((K, W), dtype=np.float64)
    for n in range(N):
        for k in range(K):
            for i in range(H):
                for j in range(W):
                    acc[k, j] += dy[n, k, i, j]
    return _column_totals(acc)


@nb.njit(cache=True, nogil=True)
def pooled_channel_sum(dy, idx, pos, W):
    # the same accumulators in the same order: column j of a pooled row oh has at most one entry
    # (window ow = j // 2, in row 2oh or 2oh+1), so (n, oh) order is (n, i) order
    N, K, PH, PW = dy.shape
    acc = np.zeros((K, W), dtype=np.float64)
    for n in range(N):
        for k in range(K):
            for oh in range(PH):
                for ow in range(PW):
                    if pos[n, k, oh, ow]:
                        d = idx[n, k, oh, ow] - 2 * oh * W
                        acc[k, d - W if d >= W else d] += dy[n, k, oh, ow]
    return _column_totals(acc)


@nb.njit(cache=True, nogil=True)
def bias_relu(z, bias, has_bias):
    # the unfused chain: ``z += b`` (rounded to z's dtype), then np.maximum(z, 0); v − v is NaN
    # exactly when v is NaN or ±inf, and an OR of booleans vectorises (a float sum of v·0 did not:
    # without reassociation it kept the loop scalar, 8× slower)
    N, M = z.shape
    zero = z.dtype.type(0)
    bad = False
    for n in range(N):
        row = z[n]
        if has_bias:
            for j in range(M):
                v = row[j] + bias[j]
                bad |= (v - v) != zero
                row[j] = _relu(v, zero)
        else:
            for j in range(M):
                v = row[j]
                bad |= (v - v) != zero
                row[j] = _relu(v, zero)
    return not bad


@nb.njit(cache=True, nogil=True)
def relu_mask(dy, y, dz):
    N, M = dz.shape
    zero = dz.dtype.type(0)
    one = dz.dtype.type(1)
    for n in range(N):
        for j in range(M):
            dz[n, j] = dy[n, j] * (one if y[n, j] > zero else zero)
    return dz


@nb.njit(cache=True, nogil=True)
def bias_relu_rows(zt, bias, has_bias):
    # bias_relu on the transposed product: row j is feature j, so b_j is one number per row
    M, N = zt.shape
    zero = zt.dtype.type(0)
    bad = False
    for j in range(M):
        row = zt[j]
        bj = bias[j] if has_bias else zero
        for n in range(N):
            v = row[n] + bj if has_bias else row[n]
            bad |= (v - v) != zero
            row[n] = _relu(v, zero)
    return not bad
