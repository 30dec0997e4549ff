r"""Numba kernel for the exact GELU's :math:`Φ(x) = \tfrac12(1 + \operatorname{erf}(x/\sqrt2))`,
elementwise over a contiguous array (one libm ``erf`` per element, no temporaries).

The NumPy reference is ``scipy.special.erf`` (:func:`normal_cdf_ref`). The backward of GELU needs
only :math:`φ(x)`, an ``exp``, once :math:`Φ` is kept from the forward.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

_INV_SQRT2 = 1 / math.sqrt(2)


@nb.njit(cache=True, nogil=True)
def _cdf(x, out):
    for i in range(x.size):
        out[i] = 0.5 * (1.0 + math.erf(x[i] * _INV_SQRT2))
    return out


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """Φ(x) of a float32/float64 array, same shape and dtype."""
    flat = np.ascontiguousarray(x).reshape(-1)
    return _cdf(flat, np.empty_like(flat)).reshape(x.shape)


def normal_cdf_ref(x):
    """The NumPy/SciPy reference of :func:`normal_cdf`."""
    from scipy.special import erf

    return (0.5 * (1 + erf(x * x.dtype.type(_INV_SQRT2)))).astype(x.dtype, copy=False)
