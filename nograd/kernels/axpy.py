"""Fused in-place ``y += a·x`` over contiguous 1-D arrays (Numba, serial, ``cache=True``).

One pass over memory instead of NumPy's two (``tmp = a·x`` then ``y += tmp``); used by the
optimizers for large parameters. NumPy reference: :func:`axpy_ref`.
"""
from __future__ import annotations

import numba as nb


@nb.njit(cache=True, nogil=True)
def axpy(a, x, y):
    """``y += a * x`` in place; ``a`` should have ``y``'s dtype so the arithmetic stays in it."""
    for i in range(y.size):
        y[i] += a * x[i]
    return y


def axpy_ref(a, x, y):
    y += a * x
    return y
