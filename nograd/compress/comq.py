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
authors' code does) the error never increases. ``sweeps`` passes over all coordinates (the paper's
iterations :math:`K`).

**The initial grid** is the min–max grid of the weights (:func:`~nograd.compress.grid.minmax_grid`),
the scale multiplied by ``shrink`` :math:`\lambda` with the integer offset kept, so the
``2^b`` levels span :math:`\lambda\,[\min w, \max w]`: the authors' code's ``scalar`` argument.
The default :math:`\lambda = 1` is their code's default, and the grid GPTQ and RTN use; their
README's 2-bit ViT command passes 0.65 (with BatchNorm re-tuning), which on nograd's models lowers
the reconstruction error but costs accuracy (docs/methods/comq.md).

**Cost.** The sweep runs row by row in a Numba kernel (:mod:`nograd.kernels.comq`, compiled on first
use, ``cache=True``; serial) when Numba is installed, else in :func:`sweep_numpy`, its NumPy
reference, vectorised over the rows (each row's update is independent of the others'). A step
costs ``O(1)`` plus ``O(d)`` for the residual update when its code moves: the first sweep moves
nearly every code (``O(n·d²)``, bound by reading :math:`G`'s rows), later ones only a few percent.
Nothing else is ``O(n·d²)`` but one product :math:`WG`: the scale update needs :math:`z_j^\top G`,
which is :math:`(Gw_j - u_j)/\delta_j` once every :math:`q_j = \delta_j z_j`, and afterwards
:math:`u_j = Gw_j - \delta_j' Gz_j` — no product with :math:`G` per sweep. The steps read :math:`G`
rounded once to float32 (half the memory traffic; relative change ≤ 6·10⁻⁸, far below the
calibration noise), widened to float64 in every product: the error being minimised is the one of
that :math:`G`, exactly, and all other arithmetic is float64.
"""
from __future__ import annotations

import numpy as np

from .grid import levels, minmax_grid, recon_error, rows

ORDERS = ("greedy", "cyclic")
ENGINES = ("auto", "numba", "numpy")
_KERNEL = []


def update_order(W, G, order: str = "greedy") -> np.ndarray:
    r"""The coordinates of each row in the order they are updated, ``(n, d)`` int64: by decreasing
    :math:`|w_{ji}|\,\|x_i\|` (``‖x_i‖ = √G_ii``; the products rounded to float32, ties by index)
    for ``"greedy"``, ``0 … d-1`` for ``"cyclic"``.

    The greedy order is one integer sort: each key packs the score's float32 bit pattern (which
    orders non-negative floats like their values), complemented so larger scores come first, above
    the coordinate's index, so the keys are distinct and the order is the same on every machine."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    n, d = W.shape
    if order == "cyclic":
        return np.broadcast_to(np.arange(d), (n, d)).copy()
    score = (np.abs(W) * np.sqrt(np.maximum(np.diag(G), 0.0))[None, :]).astype(np.float32)
    bits = score.view(np.int32).astype(np.int64)
    keys = ((np.int64(0x7FFFFFFF) - bits) << 32) | np.arange(d, dtype=np.int64)
    keys.sort(axis=1)
    return keys & np.int64(0xFFFFFFFF)


def best_code(q, u, g, scale, lo, hi):
    r"""The closed-form code update (arrays broadcast): the grid code nearest the 1-D minimiser
    :math:`q + u/g` of the error along one coordinate, where ``q`` is the coordinate's current
    value, ``u`` its entry of :math:`G(w - q)` and ``g = G_ii``; clipped to ``[lo, hi]``. A dead
    input (``g = 0``) keeps the code nearest ``q``."""
    step = np.divide(u, g, out=np.zeros(np.broadcast(u, g).shape), where=np.asarray(g) > 0)
    return np.clip(np.rint((q + step) / scale), lo, hi)


def sweep_numpy(U, Q, Z, G, diag, scale, lo, hi, perm, trace=None, W=None) -> int:
    r"""COMQ's code updates in place, vectorised over the rows (the NumPy reference of the kernel
    :func:`nograd.kernels.comq.comq_sweep`, same arguments, same result to the bit).

    ``U = (W - Q) G`` ``(n, d)`` (row ``j`` is :math:`G(w_j - q_j)`), ``Q`` the current weights,
    ``Z`` their codes (float, integer-valued), ``G`` ``(d, d)``, ``diag`` its diagonal (float64),
    ``scale, lo, hi`` ``(n,)`` the row's scale and code range, ``perm (n, t)`` the coordinates in
    the order they are updated (``t = d``: one sweep). With a list ``trace`` (and ``W``), appends
    the total error :math:`\sum_j (w_j - q_j)^\top G (w_j - q_j)` after every step (tests only:
    ``O(n·d)`` each). Returns the number of codes that moved.
    """
    n = Q.shape[0]
    every = np.arange(n)
    moves = 0
    for t in range(perm.shape[1]):
        i = perm[:, t]
        qi = Q[every, i]
        z = best_code(qi, U[every, i], diag[i], scale, lo, hi)
        qn = scale * z
        c = qn - qi
        Z[every, i] = z
        moved = c != 0
        if moved.any():
            moves += int(moved.sum())
            Q[every[moved], i[moved]] = qn[moved]
            U[moved] -= c[moved, None] * G[i[moved]].astype(np.float64)
        if trace is not None:
            trace.append(float(np.einsum("ij,ij->", W - Q, U)))
    return moves


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


def _scale_update(ZG, W, Z, scale, per_layer: bool):
    r"""The closed-form scale with the codes fixed, from ``ZG`` :math:`= ZG` ``(n, d)`` (row ``j``
    is :math:`G z_j`): :math:`z_j^\top G w_j / z_j^\top G z_j` per row (or the sums over rows, per
    layer); a row whose codes are all zero keeps its scale."""
    num = np.einsum("ij,ij->i", ZG, W)
    den = np.einsum("ij,ij->i", ZG, Z)
    if per_layer:
        num, den = np.full_like(num, num.sum()), np.full_like(den, den.sum())
    ok = den > 0
    new = scale.copy()
    new[ok] = num[ok] / den[ok]
    return np.where(new > 0, new, scale)


def comq(W, G, bits: int, granularity: str = "channel", *, sweeps: int = 4, order: str = "greedy",
         shrink: float = 1.0, engine: str = "auto", start=None, history=None, trace=None):
    r"""Quantize ``W (n, d)`` with COMQ given the Gram matrix ``G = XᵀX (d, d)`` of the inputs.

    ``sweeps`` passes over every code, each followed by the scale update; ``order`` ``"greedy"``
    (the paper's) or ``"cyclic"``; ``shrink`` :math:`\lambda \in (0, 1]` scales the initial
    min–max grid (the authors' ``scalar``; 1: the grid of GPTQ and RTN); ``engine``
    ``"numba"``, ``"numpy"`` (:func:`sweep_numpy`) or ``"auto"`` (Numba when installed).
    ``start = (codes, scale, offset)`` (another method's result on the same grid format) starts
    the sweeps from those codes instead of from :math:`Q = W` (a diagnostic: from there the error
    can only fall). ``history`` (a list) receives the relative reconstruction error after each
    sweep and after each scale update; ``trace`` (a list, NumPy engine only) the absolute error
    after every single code update. Both are measured with the Gram matrix the steps use (``G``
    rounded to float32; see the module docstring).

    Returns ``(codes uint8 (n, d), scale, offset)`` (scale/offset ``(n,)`` or ``(1,)``).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    W = np.ascontiguousarray(W, dtype=np.float64)
    n, d = W.shape
    G32 = np.ascontiguousarray(G, dtype=np.float32)
    if G32.shape != (d, d):
        raise ValueError(f"G must be ({d}, {d}) for W of shape {W.shape}, got {G32.shape}")
    Gr = G32.astype(np.float64)                  # the G every step uses, exactly
    diag = np.ascontiguousarray(np.diag(Gr))
    lam = float(shrink)
    if not 0 < lam <= 1:
        raise ValueError(f"shrink must be in (0, 1], got {shrink!r}")
    per_layer = granularity == "layer"
    if start is None:
        scale0, offset = minmax_grid(W, bits, granularity)
        scale = np.array(rows(scale0, n)[:, 0], dtype=np.float64) * lam
    else:
        codes, scale0, offset = start
        codes = np.asarray(codes)
        if codes.shape != (n, d):
            raise ValueError(f"start: codes must be {W.shape}, got {codes.shape}")
        offset = np.asarray(offset, dtype=np.int64)
        scale = np.array(rows(scale0, n)[:, 0], dtype=np.float64)
    lo = np.array(rows(offset, n)[:, 0], dtype=np.float64)
    hi = lo + (levels(bits) - 1)
    # A dead input (G_ii = 0, so its whole row and column of G are 0) touches nothing: its step
    # leaves the code nearest the current weight (from Q = W: round to nearest) and no residual
    # changes. So the sweeps run on the live inputs alone, with the same result, in (live/d)² the
    # time (MNIST's first layer: 202 of 784 pixels are always 0).
    live = np.flatnonzero(diag > 0)
    Z = np.empty((n, d))
    if start is None:
        Z[:] = np.clip(np.rint(W / scale[:, None]), lo[:, None], hi[:, None])
    else:
        Z[:] = codes.astype(np.float64) + lo[:, None]
    if live.size < d:
        Wl = np.ascontiguousarray(W[:, live])
        G32 = G32.take(live, axis=0).take(live, axis=1)
        Gr, diag = G32.astype(np.float64), np.ascontiguousarray(diag[live])
    else:
        Wl = W
    Zl = np.ascontiguousarray(Z[:, live])
    if start is None:
        Q = Wl.copy()
        U = np.zeros_like(Wl)                     # G (w_j - q_j), zero while Q = W
    else:
        Q = scale[:, None] * Zl
        U = (Wl - Q) @ Gr
    perm = update_order(Wl, Gr, order)
    WG = Wl @ Gr                                  # row j: G w_j (G symmetric)
    ZG = np.empty_like(WG)
    kernel = None if engine == "numpy" or trace is not None else _kernel()
    if engine == "numba" and kernel is None:
        raise ImportError("engine='numba' needs the numba package; use engine='numpy'")
    for _ in range(int(sweeps) if live.size else 0):
        if kernel is not None:
            kernel(U, Q, Zl, G32, diag, scale, lo, hi, perm)
        else:
            sweep_numpy(U, Q, Zl, Gr, diag, scale, lo, hi, perm, trace=trace, W=Wl)
        if history is not None:
            history.append(recon_error(Wl, Q, Gr))
        # every q_j = δ_j z_j now, so G z_j = (G w_j - u_j) / δ_j: no product with G needed
        np.subtract(WG, U, out=ZG)
        ZG /= scale[:, None]
        scale = _scale_update(ZG, Wl, Zl, scale, per_layer)
        np.multiply(scale[:, None], Zl, out=Q)
        np.multiply(scale[:, None], ZG, out=U)
        np.subtract(WG, U, out=U)
        if history is not None:
            history.append(recon_error(Wl, Q, Gr))
    Z[:, live] = Zl
    codes = (Z - lo[:, None]).astype(np.uint8)
    return codes, (scale if not per_layer else scale[:1]), offset
