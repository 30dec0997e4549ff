r"""One fused pass of an Adam / AdamW update over a contiguous parameter (Numba), with the NumPy
reference beside it; :class:`nograd.core.optim.Adam` uses it for C-contiguous arrays.

Per element, in the parameter's dtype and in this order (the order of the reference's ufuncs, so
the two agree to the last bit):

.. math::
    θ ← θ\,k_{wd}, \quad d = s g + λθ, \quad m ← β_1 m + (1-β_1) d, \quad v ← β_2 v + (1-β_2) d^2,
    \quad θ ← θ + a \,\frac{m}{\sqrt v / c + ε}

with :math:`k_{wd} = 1 - ηλ_{dec}` (AdamW's decoupled decay, else 1), :math:`λ` the L2 decay (Adam),
:math:`s` the clipping scale, :math:`c = \sqrt{1-β_2^t}` and :math:`a = -η/(1-β_1^t)`. NumPy needs
about a dozen passes over memory and two scratch arrays for the same update.
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def _adam(p, g, m, v, kwd, s, l2, b1, c1, b2, c2, c, eps, a):
    for i in range(p.size):
        pi = p[i] * kwd
        d = g[i] * s + l2 * pi
        mi = m[i] * b1 + c1 * d
        vi = v[i] * b2 + c2 * (d * d)
        m[i] = mi
        v[i] = vi
        p[i] = pi + a * (mi / (np.sqrt(vi) / c + eps))


def adam_update(p, g, m, v, *, kwd, scale, l2, b1, b2, bias_c2, eps, a):
    """Update 1-D contiguous ``p, m, v`` (one dtype) in place from ``g``; scalars as in the module
    docstring (``bias_c2`` is :math:`c`). The scalars are cast to ``p``'s dtype first."""
    t = p.dtype.type
    _adam(p, g, m, v, t(kwd), t(scale), t(l2), t(b1), t(1.0 - b1), t(b2), t(1.0 - b2), t(bias_c2), t(eps), t(a))


def adam_update_ref(p, g, m, v, *, kwd, scale, l2, b1, b2, bias_c2, eps, a):
    """NumPy reference of :func:`adam_update` (same operations in the same order)."""
    t = p.dtype.type
    p *= t(kwd)
    d = g * t(scale) + t(l2) * p
    m[...] = m * t(b1) + t(1.0 - b1) * d
    v[...] = v * t(b2) + t(1.0 - b2) * (d * d)
    p += t(a) * (m / (np.sqrt(v) / t(bias_c2) + t(eps)))
