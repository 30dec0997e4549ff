r"""Numba kernel for the exact GELU's :math:`Φ(x) = \tfrac12(1 + \operatorname{erf}(x/\sqrt2))`,
elementwise over a contiguous array (one libm ``erf`` per element, no temporaries).

The NumPy reference is ``scipy.special.erf`` (:func:`normal_cdf_ref`). The backward of GELU needs
only :math:`φ(x)`, an ``exp``, once :math:`Φ` is kept from the forward: :func:`gelu_backward` forms
:math:`\bar y \odot (Φ + xφ)` in one pass (NumPy's six passes took 1.8 ms on a 768×512 activation).
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

_INV_SQRT2 = 1 / math.sqrt(2)
_INV_SQRT2PI = 1 / math.sqrt(2 * math.pi)


@nb.njit(cache=True, nogil=True)
def _cdf(x, out):
    for i in range(x.size):
        out[i] = 0.5 * (1.0 + math.erf(x[i] * _INV_SQRT2))
    return out


@nb.njit(cache=True, nogil=True)
def _backward(x, cdf, dy, out):
    for i in range(x.size):
        v = x[i]
        out[i] = dy[i] * (cdf[i] + v * _INV_SQRT2PI * math.exp(-0.5 * v * v))
    return out


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """Φ(x) of a float32/float64 array, same shape and dtype."""
    flat = np.ascontiguousarray(x).reshape(-1)
    return _cdf(flat, np.empty_like(flat)).reshape(x.shape)


def gelu_backward(x: np.ndarray, cdf: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``dy ⊙ (Φ(x) + x φ(x))`` in one pass, given Φ(x) from the forward; shape and dtype of ``x``."""
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    _backward(flat, np.ascontiguousarray(cdf, flat.dtype).reshape(-1),
              np.ascontiguousarray(dy, flat.dtype).reshape(-1), out)
    return out.reshape(x.shape)


def gelu_backward_ref(x, cdf, dy):
    """The NumPy reference of :func:`gelu_backward`."""
    return dy * (cdf + x * np.exp(-0.5 * x * x) * x.dtype.type(_INV_SQRT2PI))


def normal_cdf_ref(x):
    """The NumPy/SciPy reference of :func:`normal_cdf`."""
    from scipy.special import erf

    return (0.5 * (1 + erf(x * x.dtype.type(_INV_SQRT2)))).astype(x.dtype, copy=False)
