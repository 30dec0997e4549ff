r"""COMQ's code updates (Zhang et al. 2024, §3) in place, row by row (Numba): the compiled form of
:func:`nograd.compress.comq.sweep_numpy`, its NumPy reference (vectorised over the rows), which a
test holds it equal to, bit for bit.

For each row :math:`j` and each coordinate :math:`i` in the row's order ``perm[j]`` (``perm``
``(n, t)``: ``t = d`` is one sweep, a shorter ``t`` updates only those coordinates), with
``U[j] = G (w_j - q_j)``, the code that minimises the layer's reconstruction error along that
coordinate is the grid point nearest :math:`q_{ji} + U_{ji} / G_{ii}` (kept at :math:`q_{ji}` for a
dead input, :math:`G_{ii} = 0`), clipped to the row's code range; when the weight moves by
:math:`c`, the residual row is updated, :math:`U_j \mathrel{-}= c\, G_i`. Rows are independent.

``Q`` ``(n, d)`` the current weights, ``Z`` their codes (float, integer-valued), ``G`` ``(d, d)``
(float32 or float64: it is only read, each entry widened to float64, so float32 halves the memory
traffic of the residual updates, which dominates the cost), ``diag`` ``(d,)`` float64 its diagonal,
``scale, lo, hi`` ``(n,)``. Returns the number of codes that moved.
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def comq_sweep(U, Q, Z, G, diag, scale, lo, hi, perm):       # pragma: no cover - compiled
    n = Q.shape[0]
    steps = perm.shape[1]
    d = G.shape[1]
    moved = 0
    for j in range(n):
        s = scale[j]
        u = U[j]
        for t in range(steps):
            i = perm[j, t]
            g = diag[i]
            qi = Q[j, i]
            target = qi + u[i] / g if g > 0 else qi
            z = min(max(np.rint(target / s), lo[j]), hi[j])
            qn = s * z
            c = qn - qi
            Z[j, i] = z
            if c != 0.0:
                moved += 1
                Q[j, i] = qn
                row = G[i]
                for k in range(d):
                    u[k] -= c * row[k]
    return moved
