r"""One COMQ sweep (Zhang et al. 2024, §3) in place, row by row (Numba): the compiled form of
:func:`nograd.compress.comq.sweep_numpy`, its NumPy reference (vectorised over the rows), which a
test holds it equal to.

For each row :math:`j` and each coordinate :math:`i` in the row's order ``perm[j]``, with
``U[j] = G (w_j - q_j)``, the code that minimises the layer's reconstruction error along that
coordinate is the grid point nearest :math:`q_{ji} + U_{ji} / G_{ii}` (kept at :math:`q_{ji}` for a
dead input, :math:`G_{ii} = 0`), clipped to the row's code range; when the weight moves by
:math:`c`, the residual row is updated, :math:`U_j \mathrel{-}= c\, G_i`. Rows are independent.
``Q`` ``(n, d)`` the current weights, ``Z`` their codes (float, integer-valued), ``scale, lo, hi``
``(n,)``, ``perm`` ``(n, d)`` integer.
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def comq_sweep(U, Q, Z, G, scale, lo, hi, perm):       # pragma: no cover - compiled
    n, d = Q.shape
    for j in range(n):
        s = scale[j]
        for t in range(d):
            i = perm[j, t]
            g = G[i, i]
            qi = Q[j, i]
            target = qi + U[j, i] / g if g > 0 else qi
            z = min(max(np.rint(target / s), lo[j]), hi[j])
            qn = s * z
            c = qn - qi
            Z[j, i] = z
            if c != 0.0:
                Q[j, i] = qn
                for k in range(d):
                    U[j, k] -= c * G[i, k]
