r"""Numba kernels for the exact GELU, :math:`y = xΦ(x)` with :math:`Φ(x) = \tfrac12(1 +
\operatorname{erf}(x/\sqrt2))`, and its backward :math:`\bar x = \bar y \odot (Φ(x) + xφ(x))`,
elementwise over contiguous arrays in one pass each (no temporaries).

Two precisions:

- **float64**: libm's ``erf`` and ``exp`` per element, correct to a few units in the last place (the
  gradient checks run here).
- **float32**: libm has no vector ``erf``, and a scalar call per element costs ~4 ns, which made the
  activation of a small GPT's MLP slower than its matrix products. The float32 kernels compute in
  float64 registers with the rational approximation of Abramowitz & Stegun (1964), eq. 7.1.26:

  .. math::
      \operatorname{erfc}(z) ≈ t\,(a_1 + a_2t + a_3t^2 + a_4t^3 + a_5t^4)\,e^{-z^2},\quad t = \frac1{1+pz},
      \quad z \ge 0,

  whose absolute error is below 1.5e-7, and :math:`e^{-z^2} = (e^{-z^2/64})^{64}` from a degree-11
  Taylor polynomial on :math:`[-0.57, 0]` squared six times (relative error ~1e-10; :math:`z` is
  clamped at 6, where :math:`\operatorname{erfc} < 10^{-16}`). With no library call left, LLVM
  vectorises the loop. Measured against SciPy on N(0, 3²) samples: :math:`|ΔΦ| ≤ 1.0\text{e-}7`
  (PyTorch's float32 ``erf`` route: 5.9e-8; float32 spacing near 1: 6e-8), so a float32 result is
  within about two units in the last place; in the far left tail (:math:`x < -5.5`) both routes
  return values below 2e-8 whose relative error is large (PyTorch's rounds to 0).

The references are ``scipy.special.erf`` (:func:`normal_cdf_ref`) and NumPy (:func:`gelu_backward_ref`).
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

_INV_SQRT2 = 1 / math.sqrt(2)
_INV_SQRT2PI = 1 / math.sqrt(2 * math.pi)
#: Abramowitz & Stegun 7.1.26
_P = 0.3275911
_A1, _A2, _A3, _A4, _A5 = 0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429
_ZMAX = 6.0
_C = tuple(1.0 / math.factorial(k) for k in range(12))


# ------------------------------------------------------------------------------------- float64
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


# ------------------------------------------------------------------------------------- float32
@nb.njit(inline="always", error_model="numpy")
def _exp_neg_sq(z):
    """exp(-z²) for z ≥ 0 (clamped at 6) without a library call: (e^u)^64, u = -z²/64 ∈ [-0.57, 0]."""
    u = -(min(z, _ZMAX) ** 2) * (1.0 / 64.0)
    e = _C[11]
    for k in range(10, -1, -1):
        e = _C[k] + u * e
    for _ in range(6):
        e = e * e
    return e


@nb.njit(inline="always", error_model="numpy")
def _phi_e32(v):
    """(Φ(v), e^{-v²/2}) by A&S 7.1.26, in float64 arithmetic (the exponential is the one inside
    the erfc formula, z = |v|/√2)."""
    z = abs(v) * _INV_SQRT2
    t = 1.0 / (1.0 + _P * z)
    e = _exp_neg_sq(z)
    c = 0.5 * t * (_A1 + t * (_A2 + t * (_A3 + t * (_A4 + t * _A5)))) * e
    p = 1.0 - c
    if v < 0.0:
        p = c
    return p, e


@nb.njit(inline="always", error_model="numpy")
def _phi32(v):
    """Φ(v) by A&S 7.1.26, in float64 arithmetic."""
    return _phi_e32(v)[0]


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _cdf32(x, out):
    for i in range(x.size):
        out[i] = _phi32(np.float64(x[i]))
    return out


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _forward32(x, y, cdf):
    for i in range(x.size):
        v = np.float64(x[i])
        p = _phi32(v)
        cdf[i] = p
        y[i] = v * p


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _forward_slope32(x, y, cdf, slope):
    """As :func:`_forward32`, also writing f'(x) = Φ(x) + xφ(x); φ's exp(-x²/2) is the e^{-z²}
    that Φ computes anyway (z = |x|/√2), so the slope costs one multiply-add and a store."""
    for i in range(x.size):
        v = np.float64(x[i])
        p, e = _phi_e32(v)
        cdf[i] = p
        y[i] = v * p
        slope[i] = p + v * _INV_SQRT2PI * e


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _backward32(x, cdf, dy, out):
    for i in range(x.size):
        v = np.float64(x[i])
        out[i] = dy[i] * (cdf[i] + v * _INV_SQRT2PI * _exp_neg_sq(abs(v) * _INV_SQRT2))
    return out


# ------------------------------------------------------------------------------------- public
def _flat(x):
    return np.ascontiguousarray(x).reshape(-1)


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """Φ(x) of a float32/float64 array, same shape and dtype."""
    flat = _flat(x)
    kernel = _cdf32 if flat.dtype == np.float32 else _cdf
    return kernel(flat, np.empty_like(flat)).reshape(x.shape)


def gelu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x Φ(x), Φ(x))`` in one pass; shape and dtype of ``x`` (float32 or float64)."""
    flat = _flat(x)
    if flat.dtype != np.float32:
        cdf = _cdf(flat, np.empty_like(flat)).reshape(x.shape)
        return x * cdf, cdf
    y, cdf = np.empty_like(flat), np.empty_like(flat)
    _forward32(flat, y, cdf)
    return y.reshape(x.shape), cdf.reshape(x.shape)


def gelu_forward_slope(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x Φ(x), Φ(x), Φ(x) + x φ(x))`` of a float32 array in one pass: the output, Φ and the
    derivative, so that a backward is one product ``dy * slope``."""
    flat = _flat(x)
    if flat.dtype != np.float32:
        raise TypeError(f"x must be float32 for gelu_forward_slope, got {flat.dtype}")
    y, cdf, slope = np.empty_like(flat), np.empty_like(flat), np.empty_like(flat)
    _forward_slope32(flat, y, cdf, slope)
    return y.reshape(x.shape), cdf.reshape(x.shape), slope.reshape(x.shape)


def gelu_backward(x: np.ndarray, cdf: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``dy ⊙ (Φ(x) + x φ(x))`` in one pass, given Φ(x) from the forward; shape and dtype of ``x``."""
    flat = _flat(x)
    out = np.empty_like(flat)
    kernel = _backward32 if flat.dtype == np.float32 else _backward
    kernel(flat, _flat(np.asarray(cdf, flat.dtype)), _flat(np.asarray(dy, flat.dtype)), out)
    return out.reshape(x.shape)


def gelu_backward_ref(x, cdf, dy):
    """The NumPy reference of :func:`gelu_backward`."""
    return dy * (cdf + x * np.exp(-0.5 * x * x) * x.dtype.type(_INV_SQRT2PI))


def normal_cdf_ref(x):
    """The NumPy/SciPy reference of :func:`normal_cdf`."""
    from scipy.special import erf

    return (0.5 * (1 + erf(x * x.dtype.type(_INV_SQRT2)))).astype(x.dtype, copy=False)
