r"""Round-to-nearest (RTN): every weight to its nearest point of the min–max grid.

The baseline of every post-training quantization paper: no calibration data, each entry rounded
independently, :math:`c = \operatorname{clip}(\operatorname{round}(w/\delta) - o, 0, 2^b - 1)` on
the grid of :func:`nograd.compress.grid.minmax_grid`. Cost ``O(n·d)``.
"""
from __future__ import annotations

import numpy as np

from .grid import minmax_grid, nearest_codes


def rtn(W, bits: int, granularity: str = "channel"):
    """Quantize ``W (n, d)`` to nearest: returns ``(codes uint8 (n, d), scale, offset)`` with
    ``scale``/``offset`` of shape ``(n,)`` (``"channel"``) or ``(1,)`` (``"layer"``)."""
    W = np.asarray(W, np.float64)
    scale, offset = minmax_grid(W, bits, granularity)
    return nearest_codes(W, scale, offset, bits), scale, offset
