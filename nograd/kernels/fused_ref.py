"""Plain NumPy references for :mod:`nograd.kernels.fused` (same signatures, same results).

Each one is the unfused chain written with the existing references: ``np.maximum(·, 0)`` for
ReLU, :mod:`nograd.kernels.pool_ref` for the 2×2 max pooling and its scatter, and
:mod:`nograd.kernels.winograd_ref` for the Winograd transforms.
"""
from __future__ import annotations

import numpy as np

from . import pool_ref, winograd_ref


def relu_maxpool2x2(x, bias, has_bias, y, idx, pos):
    v = x + bias[:, None, None] if has_bias else x
    r = np.maximum(v, 0)
    pool_ref.maxpool_forward(r, 2, 2, 2, 2, 0, 0, y.shape[2], y.shape[3], y, idx)
    pos[...] = y > 0
    return y, idx, pos


def relu_maxpool2x2_backward(dy, idx, pos, dx):
    pool_ref.maxpool_backward_2x2(dy, idx, dx)
    mask = np.zeros(dx.shape, dtype=bool)
    flat = mask.reshape(dx.shape[0], dx.shape[1], -1)
    np.put_along_axis(flat, idx.reshape(idx.shape[0], idx.shape[1], -1).astype(np.intp),
                      pos.reshape(pos.shape[0], pos.shape[1], -1), axis=2)
    dx *= mask          # the ReLU output is positive at an argmax exactly where the pooled y is
    return dx


def winograd_relu_pool(M, bias, TH, TW, H, W, y, idx, pos):
    N, K = y.shape[:2]
    full = winograd_ref.output_transform(M, bias, False, TH, TW, np.empty((N, K, H, W), dtype=y.dtype))
    return relu_maxpool2x2(full, bias, False, y, idx, pos)


def winograd_pooled_cotangent(dy, idx, pos, H, W, TH, TW, Z):
    N, K = dy.shape[:2]
    full = relu_maxpool2x2_backward(dy, idx, pos, np.empty((N, K, H, W), dtype=Z.dtype))
    return winograd_ref.cotangent_transform(full, TH, TW, Z)


def channel_sum(dy):
    return dy.astype(np.float64).sum(axis=(0, 2, 3))


def pooled_channel_sum(dy, idx, pos, W):
    return np.where(pos, dy, 0).astype(np.float64).sum(axis=(0, 2, 3))


def bias_relu(z, bias, has_bias):
    if has_bias:
        z += bias
    ok = bool(np.isfinite(z).all())
    np.maximum(z, 0, out=z)
    return ok


def relu_mask(dy, y, dz):
    np.multiply(dy, y > 0, out=dz)
    return dz


def bias_relu_rows(zt, bias, has_bias):
    return bias_relu(zt.T, bias, has_bias)      # the batch-major pass on the transposed view

