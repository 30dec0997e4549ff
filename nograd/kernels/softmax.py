r"""Numba kernels for the row softmax of attention scores, with an optional causal limit, and its
Jacobian-vector product; NumPy references beside them.

:func:`masked_softmax` takes scores ``s (G, Tq, Tk)`` and returns
:math:`p_{ij} = e^{c s_{ij} - m_i} / \sum_{l \le L_i} e^{c s_{il} - m_i}` for :math:`j \le L_i` and 0
beyond, where ``c`` is the scale, :math:`m_i = \max_{l \le L_i} c s_{il}` (so no exponent is positive)
and :math:`L_i = i + \text{offset}` (``offset = Tk - Tq`` is the causal mask aligned at the last key;
``offset ≥ Tk`` shows every key). Entries of ``-inf`` get probability 0. One pass per row
replaces NumPy's scaling, masking ``where``, max, subtraction, exp, sum and division.

:func:`softmax_jvp` returns :math:`c\,p \odot (v - \langle p, v\rangle)` row by row: the Jacobian of
softmax is symmetric, so this is the vjp and the jvp alike (``c`` folds in the scale of the scores).

Float64 rows use libm's ``exp``. Float32 rows use a call-free exponential in float64 registers that
LLVM vectorises, :math:`e^u = (e^{u/256})^{256}` with a degree-9 Taylor polynomial on
:math:`[-0.41, 0]` and eight squarings (relative error below 1e-8, against float32's 6e-8 spacing);
exponents below -103.9 give exactly 0, as ``numpy.exp`` rounded to float32 does.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

_C = tuple(1.0 / math.factorial(k) for k in range(10))
_UMIN = -103.9                      # e^u rounds to 0 in float32 below this


@nb.njit(inline="always", error_model="numpy")
def _exp_nonpos(u):
    """e^u for u ≤ 0 without a library call (vectorisable)."""
    w = max(u, _UMIN) * (1.0 / 256.0)
    e = _C[9]
    for k in range(8, -1, -1):
        e = _C[k] + w * e
    for _ in range(8):
        e = e * e
    return e if u > _UMIN else 0.0


@nb.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _softmax32(s, scale, offset, p):
    g, tq, tk = s.shape
    for b in range(g):
        for i in range(tq):
            lim = min(tk, max(0, i + offset + 1))
            m = -np.inf
            for j in range(lim):
                m = max(m, np.float64(s[b, i, j]) * scale)
            tot = 0.0
            for j in range(lim):
                e = _exp_nonpos(np.float64(s[b, i, j]) * scale - m)
                p[b, i, j] = e
                tot += e
            inv = 1.0 / tot
            for j in range(lim):
                p[b, i, j] *= inv
            for j in range(lim, tk):
                p[b, i, j] = 0.0


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _softmax64(s, scale, offset, p):
    g, tq, tk = s.shape
    for b in range(g):
        for i in range(tq):
            lim = min(tk, max(0, i + offset + 1))
            m = -np.inf
            for j in range(lim):
                m = max(m, s[b, i, j] * scale)
            tot = 0.0
            for j in range(lim):
                e = math.exp(s[b, i, j] * scale - m)
                p[b, i, j] = e
                tot += e
            for j in range(lim):
                p[b, i, j] /= tot
            for j in range(lim, tk):
                p[b, i, j] = 0.0


@nb.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _jvp(p, v, scale, out):
    n, t = p.shape
    for i in range(n):
        dot = 0.0
        for j in range(t):
            dot += np.float64(p[i, j]) * v[i, j]
        for j in range(t):
            out[i, j] = scale * p[i, j] * (v[i, j] - dot)


def masked_softmax(s, scale=1.0, offset=None):
    """Softmax over the last axis of ``scale·s`` with keys ``j > i + offset`` hidden (``offset``
    None: none hidden). ``s (..., Tq, Tk)`` float32/float64; returns ``p`` of its shape and dtype.
    Every row must see at least one finite score (callers check their masks)."""
    tq, tk = s.shape[-2:]
    off = tk if offset is None else int(offset)
    s3 = np.ascontiguousarray(s).reshape(-1, tq, tk)
    p = np.empty_like(s3)
    (_softmax32 if s3.dtype == np.float32 else _softmax64)(s3, float(scale), off, p)
    return p.reshape(s.shape)


def softmax_jvp(p, v, scale=1.0):
    """``scale · p ⊙ (v - Σ_j p v)`` over the last axis; shapes and dtype of ``p``."""
    p2 = np.ascontiguousarray(p).reshape(-1, p.shape[-1])
    out = np.empty_like(p2)
    _jvp(p2, np.ascontiguousarray(v, p2.dtype).reshape(p2.shape), float(scale), out)
    return out.reshape(p.shape)


def masked_softmax_ref(s, scale=1.0, offset=None):
    """NumPy reference of :func:`masked_softmax` (in float64, cast back)."""
    tq, tk = s.shape[-2:]
    z = s.astype(np.float64) * scale
    if offset is not None:
        z = np.where(np.arange(tk)[None, :] <= np.arange(tq)[:, None] + offset, z, -np.inf)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(s.dtype)


def softmax_jvp_ref(p, v, scale=1.0):
    """NumPy reference of :func:`softmax_jvp`."""
    pv = p.astype(np.float64) * v
    return (scale * (pv - p * pv.sum(axis=-1, keepdims=True))).astype(p.dtype)
