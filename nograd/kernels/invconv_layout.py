r"""The diagonal layout of the inverse-convolution kernels (:mod:`nograd.kernels.invconv`).

A causal ``k×k`` convolution makes pixel ``(h, w)`` depend on the pixels with ``h' ≤ h, w' ≤ w``
only, so the pixels of one anti-diagonal ``d = h + w`` can be solved together once the diagonals
before them are done. The kernels therefore keep the image in a buffer ``Z (C, ≥ H·W·N)`` that
stores, for each channel, the pixels diagonal after diagonal (``d`` increasing, ``h`` increasing
within a diagonal), each pixel's ``N`` samples contiguous; then a diagonal, and the pixels a
kernel tap reads for it, are contiguous runs of one row.

- :func:`diagonals` — where each diagonal starts and which rows it spans; :func:`slots` — the
  offset of every pixel in a buffer row.
- :func:`buffer` — an uninitialised buffer; :func:`to_diag` / :func:`from_diag` — NCHW (flipped
  in H and/or W for the layer's other corners) into the buffer and back, one pass each.
"""
from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["ROW_PAD", "buffer", "diagonals", "slots", "to_diag", "from_diag"]

#: extra elements per channel row of the diagonal buffer, so that the rows of a power-of-two
#: image are not 4 KiB apart (loads and stores of two channels would alias in the low address
#: bits); a precaution, not a measured speed-up.
ROW_PAD = 272


def buffer(C, H, Wd, N, dtype):
    """A diagonal-layout buffer for ``C`` channels, ``H×Wd`` pixels, ``N`` samples."""
    return np.empty((C, H * Wd * N + ROW_PAD), dtype=dtype)


@nb.njit(cache=True, nogil=True)
def diagonals(H, Wd):
    """``(lo, S)``: diagonal ``d`` holds the pixels ``h = lo[d] … lo[d] + S[d+1] - S[d] - 1``
    (``w = d - h``), stored from pixel slot ``S[d]`` on."""
    D = H + Wd - 1
    lo = np.empty(D, np.int64)
    S = np.empty(D + 1, np.int64)
    S[0] = 0
    for d in range(D):
        lo[d] = max(0, d - Wd + 1)
        S[d + 1] = S[d] + min(H - 1, d) - lo[d] + 1
    return lo, S


@nb.njit(cache=True, nogil=True)
def slots(H, Wd, N):
    """``slot[h, w]``: the offset of pixel ``(h, w)``'s ``N`` samples in a diagonal-buffer row."""
    lo, S = diagonals(H, Wd)
    slot = np.empty((H, Wd), np.int64)
    for h in range(H):
        for w in range(Wd):
            slot[h, w] = (S[h + w] + h - lo[h + w]) * N
    return slot


@nb.njit(cache=True, nogil=True)
def to_diag(a, fh, fw, Z):
    """NCHW ``a`` (read flipped in H if ``fh``, in W if ``fw``) into the diagonal buffer ``Z``.
    Image rows are read contiguously, one sample at a time."""
    N, C, H, Wd = a.shape
    slot = slots(H, Wd, N)
    for c in range(C):
        Zc = Z[c]
        for h in range(H):
            sh = slot[H - 1 - h] if fh else slot[h]
            for n in range(N):
                row = a[n, c, h]
                if fw:
                    for w in range(Wd):
                        Zc[sh[Wd - 1 - w] + n] = row[w]
                else:
                    for w in range(Wd):
                        Zc[sh[w] + n] = row[w]
    return Z


@nb.njit(cache=True, nogil=True)
def from_diag(Z, fh, fw, out):
    """The inverse of :func:`to_diag`: the diagonal buffer ``Z`` into NCHW ``out``."""
    N, C, H, Wd = out.shape
    slot = slots(H, Wd, N)
    for c in range(C):
        Zc = Z[c]
        for h in range(H):
            sh = slot[H - 1 - h] if fh else slot[h]
            for n in range(N):
                row = out[n, c, h]
                if fw:
                    for w in range(Wd):
                        row[w] = Zc[sh[Wd - 1 - w] + n]
                else:
                    for w in range(Wd):
                        row[w] = Zc[sh[w] + n]
    return out
