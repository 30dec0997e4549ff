r"""COMQ: post-training quantization by coordinate-wise minimisation, no backpropagation.

Zhang, Yang, Wang, Qi, Xin, Li & Yin (2024), "COMQ: A Backpropagation-Free Algorithm for
Post-Training Quantization", arXiv:2403.07134, §3. For one layer with calibration inputs
:math:`X` ``(m, d)`` and weight :math:`W` ``(n, d)`` it minimises the reconstruction error

.. math::
    f(\delta, Z) = \|XW^\top - X(\operatorname{diag}(\delta) Z)^\top\|_F^2
                 = \sum_j (w_j - \delta_j z_j)^\top G\, (w_j - \delta_j z_j), \qquad G = X^\top X,

over the scales :math:`\delta` and the integer codes :math:`Z` (each row :math:`z_j` in its
``2^b`` grid values :math:`\{o_j, \dots, o_j + 2^b - 1\}`), one coordinate at a time:

* **a code** (§3, the bit-code update): with everything else fixed, :math:`f` is a 1-D convex
  quadratic in :math:`q_{ji} = \delta_j z_{ji}` whose minimiser is
  :math:`q_{ji} + x_i^\top r_j / \|x_i\|^2` with the residual :math:`r_j = X(w_j - q_j)`, i.e.
  :math:`q_{ji} + u_{ji} / G_{ii}` with :math:`u_j = G(w_j - q_j)`; the best grid point is that
  value divided by :math:`\delta_j`, rounded and clipped. Then :math:`u_j \mathrel{-}= \Delta q\,
  G_{i,:}` keeps the residual up to date: dot products and rounding only;
* **the scale** (§3, the scaling-factor update), between sweeps: with the codes fixed,
  :math:`\delta_j = z_j^\top G w_j / z_j^\top G z_j` (per channel) or
  :math:`\delta = \sum_j z_j^\top G w_j / \sum_j z_j^\top G z_j` (per layer);
* **the order** (§3, greedy update order): in each row, the coordinates by decreasing
  :math:`|w_{ji}|\,\|x_i\|` (``order="greedy"``), or ``0 … d-1`` (``"cyclic"``).

Each step minimises :math:`f` exactly along its coordinate, so after the first sweep (which
moves :math:`Q` from the float weights onto the grid, starting from :math:`Q = W` as the
authors' code does) the error never increases. The scale starts from the weights' range
(:func:`~nograd.compress.grid.minmax_grid`). ``sweeps`` passes over all coordinates (the paper's
iterations :math:`K`).

The sweep runs row by row in a Numba kernel (compiled on first use, ``cache=True``; serial) when
Numba is installed, else in :func:`sweep_numpy`, its NumPy reference, vectorised over the rows
(each row's update is independent of the others'). A step that leaves its code unchanged
skips the ``O(d)`` residual update, so sweeps after the first cost little once the codes settle.
Cost of a full sweep: ``O(n·d²)``.
"""
from __future__ import annotations

import numpy as np

from .grid import levels, minmax_grid, recon_error, rows

ORDERS = ("greedy", "cyclic")
ENGINES = ("auto", "numba", "numpy")
_KERNEL = []


def update_order(W, G, order: str = "greedy") -> np.ndarray:
    r"""The coordinates of each row in the order they are updated, ``(n, d)`` int64: by decreasing
    :math:`|w_{ji}|\,\|x_i\|` (``‖x_i‖ = √G_ii``) for ``"greedy"``, ``0 … d-1`` for ``"cyclic"``."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    n, d = W.shape
    if order == "cyclic":
        return np.broadcast_to(np.arange(d), (n, d)).copy()
    score = np.abs(W) * np.sqrt(np.maximum(np.diag(G), 0.0))[None, :]
    return np.argsort(-score, axis=1, kind="stable")


def best_code(q, u, g, scale, lo, hi):
    r"""The closed-form code update (arrays broadcast): the grid code nearest the 1-D minimiser
    :math:`q + u/g` of the error along one coordinate, where ``q`` is the coordinate's current
    value, ``u`` its entry of :math:`G(w - q)` and ``g = G_ii``; clipped to ``[lo, hi]``. A dead
    input (``g = 0``) keeps the code nearest ``q``."""
    step = np.divide(u, g, out=np.zeros(np.broadcast(u, g).shape), where=np.asarray(g) > 0)
    return np.clip(np.rint((q + step) / scale), lo, hi)


def sweep_numpy(U, Q, Z, G, scale, lo, hi, perm, trace=None, W=None):
    r"""One COMQ sweep in place, vectorised over the rows (the NumPy reference of the kernel).

    ``U = (W - Q) G`` ``(n, d)`` (row ``j`` is :math:`G(w_j - q_j)`), ``Q`` the current weights,
    ``Z`` their codes (float, integer-valued), ``scale, lo, hi`` ``(n,)`` the row's scale and code
    range, ``perm (n, d)`` the order. With a list ``trace`` (and ``W``), appends the total error
    :math:`\sum_j (w_j - q_j)^\top G (w_j - q_j)` after every step (tests only: ``O(n·d)`` each).
    """
    n, d = Q.shape
    diag = np.diag(G)
    every = np.arange(n)
    for t in range(d):
        i = perm[:, t]
        qi = Q[every, i]
        z = best_code(qi, U[every, i], diag[i], scale, lo, hi)
        qn = scale * z
        c = qn - qi
        Z[every, i] = z
        moved = c != 0
        if moved.any():
            Q[every[moved], i[moved]] = qn[moved]
            U[moved] -= c[moved, None] * G[i[moved]]
        if trace is not None:
            trace.append(float(np.einsum("ij,ij->", W - Q, U)))


def _kernel():
    """The compiled sweep (:func:`nograd.kernels.comq.comq_sweep`, Numba, ``cache=True``), loaded on
    first use; ``None`` without Numba."""
    if not _KERNEL:
        try:
            from ..kernels.comq import comq_sweep
        except ImportError:
            comq_sweep = None
        _KERNEL.append(comq_sweep)
    return _KERNEL[0]


def _scale_update(W, Z, G, scale, per_layer: bool):
    r"""The closed-form scale with the codes fixed: :math:`z^\top G w / z^\top G z` per row (or
    summed over rows); a row whose codes are all zero keeps its scale."""
    ZG = Z @ G
    num = np.einsum("ij,ij->i", ZG, W)
    den = np.einsum("ij,ij->i", ZG, Z)
    if per_layer:
        num, den = np.full_like(num, num.sum()), np.full_like(den, den.sum())
    ok = den > 0
    new = scale.copy()
    new[ok] = num[ok] / den[ok]
    return np.where(new > 0, new, scale)


def comq(W, G, bits: int, granularity: str = "channel", *, sweeps: int = 4, order: str = "greedy",
         engine: str = "auto", history=None, trace=None):
    r"""Quantize ``W (n, d)`` with COMQ given the Gram matrix ``G = XᵀX (d, d)`` of the inputs.

    ``sweeps`` passes over every code, each followed by the scale update; ``order`` ``"greedy"``
    (the paper's) or ``"cyclic"``; ``engine`` ``"numba"``, ``"numpy"`` (:func:`sweep_numpy`) or
    ``"auto"`` (Numba when installed). ``history`` (a list) receives the relative reconstruction
    error after each sweep and after each scale update; ``trace`` (a list, NumPy engine only)
    the absolute error after every single code update.

    Returns ``(codes uint8 (n, d), scale, offset)`` (scale/offset ``(n,)`` or ``(1,)``).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    W = np.ascontiguousarray(W, dtype=np.float64)
    G = np.ascontiguousarray(G, dtype=np.float64)
    n, d = W.shape
    scale0, offset = minmax_grid(W, bits, granularity)
    scale = np.array(rows(scale0, n)[:, 0], dtype=np.float64)
    lo = np.array(rows(offset, n)[:, 0], dtype=np.float64)
    hi = lo + (levels(bits) - 1)
    perm = update_order(W, G, order)
    Q = W.copy()
    Z = np.zeros((n, d))
    U = np.zeros((n, d))                          # G (w_j - q_j), zero while Q = W
    kernel = None if engine == "numpy" or trace is not None else _kernel()
    if engine == "numba" and kernel is None:
        raise ImportError("engine='numba' needs the numba package; use engine='numpy'")
    for _ in range(int(sweeps)):
        if kernel is not None:
            kernel(U, Q, Z, G, scale, lo, hi, perm)
        else:
            sweep_numpy(U, Q, Z, G, scale, lo, hi, perm, trace=trace, W=W)
        if history is not None:
            history.append(recon_error(W, Q, G))
        scale = _scale_update(W, Z, G, scale, granularity == "layer")
        Q = scale[:, None] * Z
        U = (W - Q) @ G
        if history is not None:
            history.append(recon_error(W, Q, G))
    codes = (Z - lo[:, None]).astype(np.uint8)
    return codes, (scale if granularity == "channel" else scale[:1]), offset
