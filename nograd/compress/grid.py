r"""The uniform integer grid that COMQ, GPTQ and round-to-nearest share.

A row :math:`w \in \mathbb{R}^d` of a weight matrix (one output channel) is stored as

.. math::
    q = \delta\,(c + o), \qquad c \in \{0, 1, \dots, 2^b - 1\}^d, \quad o \in \mathbb{Z},

with a float scale :math:`\delta > 0`, unsigned ``b``-bit codes :math:`c` and an integer offset
:math:`o` (minus the usual "zero point"); :math:`z = c + o` are the integer codes of COMQ
(Zhang et al. 2024, §3: :math:`Q = \delta \cdot z`). With ``granularity="channel"`` every row has
its own :math:`(\delta, o)`; with ``"layer"`` one pair serves the whole matrix.

The grid starts on the weights' range (the min–max initialisation of all three methods):

.. math::
    \delta = \frac{\max w - \min w}{2^b - 1}, \qquad o = \operatorname{round}(\min w / \delta),

so the ``2^b`` levels :math:`\delta o, \dots, \delta(o + 2^b - 1)` span :math:`[\min w, \max w]`
up to half a step. A constant row (zero range) gets :math:`\delta = |w|` (or 1 for a zero row),
which represents it exactly.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_int

GRANULARITIES = ("channel", "layer")


def check_bits(bits) -> int:
    """``bits`` as an int in [2, 8] (the widths the packed format stores), else a clear error."""
    return check_int(bits, "bits", low=2, high=8)


def check_granularity(granularity) -> str:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    return granularity


def levels(bits: int) -> int:
    """The number of grid points, ``2**bits``."""
    return 1 << int(bits)


def minmax_grid(W, bits: int, granularity: str = "channel"):
    r"""The min–max grid of ``W (n, d)``: ``(scale, offset)``, each ``(n,)`` for ``"channel"`` or
    ``(1,)`` for ``"layer"``; ``scale`` float64, ``offset`` int64 (see the module docstring)."""
    W = np.asarray(W, dtype=np.float64)
    if granularity == "channel":
        lo, hi = W.min(axis=1), W.max(axis=1)
    else:
        lo, hi = np.array([W.min()]), np.array([W.max()])
    top = levels(bits) - 1
    scale = (hi - lo) / top
    flat = scale <= 0
    if flat.any():     # a constant row: one level at its value
        scale[flat] = np.where(np.abs(lo[flat]) > 0, np.abs(lo[flat]), 1.0)
    offset = np.rint(lo / scale).astype(np.int64)
    return scale, offset


def rows(v, n):
    """A per-channel ``(n,)`` or per-layer ``(1,)`` vector as a column ``(n, 1)`` (broadcast)."""
    v = np.asarray(v)
    return np.broadcast_to(v.reshape(-1, 1), (n, 1)) if v.size == 1 else v.reshape(n, 1)


def nearest_codes(W, scale, offset, bits: int):
    """Round to nearest: the codes ``c`` (uint8, ``(n, d)``) of the grid point nearest each entry
    of ``W`` (entries beyond the range go to the end points)."""
    W = np.asarray(W, dtype=np.float64)
    n = W.shape[0]
    z = np.rint(W / rows(scale, n)) - rows(offset, n)
    return np.clip(z, 0, levels(bits) - 1).astype(np.uint8)


def dequantize(codes, scale, offset, dtype=np.float64):
    r"""``Q = δ (c + o)`` for codes ``(n, d)`` (row-wise ``δ, o``), in ``dtype``."""
    codes = np.asarray(codes)
    n = codes.shape[0]
    z = codes.astype(np.float64) + rows(offset, n)
    return (rows(np.asarray(scale, np.float64), n) * z).astype(dtype, copy=False)


def recon_error(W, Q, G) -> float:
    r"""The relative reconstruction error :math:`\|XW^\top - XQ^\top\|_F^2 / \|XW^\top\|_F^2`
    computed from the Gram matrix :math:`G = X^\top X` ``(d, d)``:
    :math:`\operatorname{tr}((W-Q) G (W-Q)^\top) / \operatorname{tr}(W G W^\top)`."""
    W = np.asarray(W, np.float64)
    E = W - np.asarray(Q, np.float64)
    den = float(np.einsum("ij,ij->", W @ G, W))
    num = float(np.einsum("ij,ij->", E @ G, E))
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))
