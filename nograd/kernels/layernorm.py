r"""Numba kernels for LayerNorm over the last axis of a 2-D view ``(N, D)`` (the rows are samples
or tokens), forward and backward each in one pass over the rows, with a NumPy reference beside them.

Forward, per row: :math:`μ = \overline{x}`, :math:`r = (\overline{(x-μ)^2} + ε)^{-1/2}`,
:math:`\hat x = (x - μ) r`, :math:`y = γ \hat x + β`. Backward, with :math:`g = γ \odot \bar y`:

.. math::
    \bar x = r\,(g - \overline{g} - \hat x\,\overline{g \odot \hat x}), \qquad
    \bar γ = \textstyle\sum_{rows} \bar y \odot \hat x, \qquad \bar β = \sum_{rows} \bar y.

Row statistics and the column sums of :math:`\bar γ, \bar β` accumulate in float64 whatever the
input dtype; the results have the input's dtype. NumPy needs six passes and four temporaries of
``x``'s size for the same work (:func:`layernorm_forward_ref`, :func:`layernorm_backward_ref`).
``γ``/``β`` may be ``None`` (no affine map / no shift).
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _forward(x, gamma, beta, eps, y, xhat, r):
    n, d = x.shape
    for i in range(n):
        s = 0.0
        for j in range(d):
            s += x[i, j]
        mu = s / d
        q = 0.0
        for j in range(d):
            c = x[i, j] - mu
            q += c * c
        ri = 1.0 / np.sqrt(q / d + eps)
        r[i] = ri
        for j in range(d):
            xhat[i, j] = (x[i, j] - mu) * ri
        if gamma.size:
            if beta.size:
                for j in range(d):
                    y[i, j] = xhat[i, j] * gamma[j] + beta[j]
            else:
                for j in range(d):
                    y[i, j] = xhat[i, j] * gamma[j]
        else:
            for j in range(d):
                y[i, j] = xhat[i, j]


@nb.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _backward(xhat, r, dy, gamma, dx, dgamma, dbeta):
    n, d = xhat.shape
    g = np.empty(d, np.float64)
    for i in range(n):
        sg = 0.0
        sgx = 0.0
        for j in range(d):
            gj = dy[i, j] * gamma[j] if gamma.size else np.float64(dy[i, j])
            g[j] = gj
            sg += gj
            sgx += gj * xhat[i, j]
            dgamma[j] += dy[i, j] * xhat[i, j]
            dbeta[j] += dy[i, j]
        mg, mgx, ri = sg / d, sgx / d, r[i]
        for j in range(d):
            dx[i, j] = ri * (g[j] - mg - xhat[i, j] * mgx)


def _vec(a, dtype):
    return np.empty(0, dtype) if a is None else np.ascontiguousarray(a, dtype).reshape(-1)


def layernorm_forward(x2, gamma, beta, eps):
    """``(y, x̂, r)`` for ``x2 (N, D)``; ``gamma``, ``beta`` of size ``D`` or None; ``r (N,)``."""
    x2 = np.ascontiguousarray(x2)
    y, xhat = np.empty_like(x2), np.empty_like(x2)
    r = np.empty(x2.shape[0], x2.dtype)
    _forward(x2, _vec(gamma, x2.dtype), _vec(beta, x2.dtype), float(eps), y, xhat, r)
    return y, xhat, r


def layernorm_backward(xhat2, r, dy2, gamma):
    """``(dx, dγ, dβ)`` for ``x̂ (N, D)``, ``r (N,)``, ``dy (N, D)``; dγ, dβ in float64 (size D)."""
    xhat2 = np.ascontiguousarray(xhat2)
    dx = np.empty_like(xhat2)
    d = xhat2.shape[1]
    dgamma, dbeta = np.zeros(d), np.zeros(d)
    _backward(xhat2, np.ascontiguousarray(r).reshape(-1), np.ascontiguousarray(dy2, xhat2.dtype),
              _vec(gamma, xhat2.dtype), dx, dgamma, dbeta)
    return dx, dgamma, dbeta


def layernorm_forward_ref(x2, gamma, beta, eps):
    """NumPy reference of :func:`layernorm_forward` (statistics in float64)."""
    xd = x2.astype(np.float64)
    mu = xd.mean(axis=1, keepdims=True)
    r = 1 / np.sqrt(((xd - mu) ** 2).mean(axis=1, keepdims=True) + eps)
    xhat = (xd - mu) * r
    y = xhat if gamma is None else xhat * gamma + (0 if beta is None else beta)
    return y.astype(x2.dtype), xhat.astype(x2.dtype), r[:, 0].astype(x2.dtype)


def layernorm_backward_ref(xhat2, r, dy2, gamma):
    """NumPy reference of :func:`layernorm_backward`."""
    xh, dy = xhat2.astype(np.float64), dy2.astype(np.float64)
    g = dy if gamma is None else dy * gamma
    dx = r[:, None] * (g - g.mean(axis=1, keepdims=True) - xh * (g * xh).mean(axis=1, keepdims=True))
    return dx.astype(xhat2.dtype), (dy * xh).sum(axis=0), dy.sum(axis=0)
