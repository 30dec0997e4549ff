r"""Winograd F(2×2, 3×3) one chunk of images at a time: the loops around
:mod:`nograd.kernels.winograd` that :class:`~nograd.layers.Conv2d` runs for ``algorithm="winograd"``.

With ``V[ξ] (C, P)`` the transformed input tiles, ``U[ξ] (K, C)`` the transformed filters and
``Z[ξ] (K, P)`` the transformed output cotangent (``ξ`` = 0 … 15; maths in the kernels' module,
Lavin & Gray 2016, §4–5), a convolution and its two derivatives are

.. math::
    M[ξ] = U[ξ] V[ξ] \;(\to y), \qquad
    \bar U[ξ] = \textstyle\sum_{\text{tiles}} Z[ξ] V[ξ]^\top, \qquad
    M_x[ξ] = U[ξ]^\top Z[ξ] \;(\to \bar x),

and every one of them is a sum over tiles, and every tile belongs to one image. So they are
computed over **chunks of whole images**: transform the chunk's input, multiply, transform back,
then the next chunk. The results are those of the whole batch at once (the weight gradient sums the
chunks' products in chunk order: the same value up to float rounding); what changes is where the
data lives. On a small-channel layer the products are memory-bound: for 16 channels at 32×32 and
a batch of 64, ``V`` and ``M`` are 16 MB each and NumPy's batched product of the whole batch ran at
about 14 G multiply-adds/s on this project's machine, against about 48 on one image's 256 kB of
tiles, which stay in the core's L2 cache between the transform that writes them and the product
that reads them (``python bench/winograd_chunks.py``: forward 9.95 → 6.95 ms, backward 14.8 → 9.1 ms
at one thread; docs/benchmarks.md).

A chunk holds as many images as keep its ``V`` (or ``M``) within :data:`CHUNK_BYTES`, at least one.
Images never straddle chunks, so the input cotangent's overlapping tiles are added within a chunk.
The forward keeps every chunk's ``V`` (one buffer, a contiguous view per chunk) for the backward.
"""
from __future__ import annotations

import numpy as np

#: the largest transformed input (or product) of one chunk, bytes: well inside a 1 MB L2 cache
CHUNK_BYTES = 1 << 19


def _wk():
    from ..kernels import winograd  # lazy: Numba loads on the first Winograd convolution

    return winograd


def chunks(n_images, image_bytes):
    """``[(n0, n1), ...]``: consecutive chunks of whole images covering ``range(n_images)``, each
    with ``max(1, CHUNK_BYTES // image_bytes)`` images (the last may have fewer)."""
    step = max(1, CHUNK_BYTES // max(int(image_bytes), 1))
    return [(n0, min(n_images, n0 + step)) for n0 in range(0, n_images, step)]


class Tiles:
    """The transformed input of a Winograd forward, kept for its backward: ``V[i]`` of shape
    ``(16, C, P_i)`` (contiguous) holds the tiles of images ``bounds[i] = (n0, n1)``,
    ``P_i = (n1 - n0)·TH·TW``. An object rather than a bare array so that nothing that walks caches
    takes it for an array with the batch on axis 0."""

    __slots__ = ("V", "bounds")

    def __init__(self, V, bounds):
        self.V, self.bounds = list(V), list(bounds)

    def __repr__(self):
        return f"Tiles({len(self.V)} chunks, {sum(v.nbytes for v in self.V)} bytes)"


def _carve(flat, size, shape):
    """A contiguous view of the first ``size`` entries of ``flat`` shaped ``shape``."""
    return flat[:size].reshape(shape)


def forward(x, U, ph, pw, TH, TW, write):
    """Transform, multiply and hand each chunk's product to ``write(n0, n1, M)``.

    ``x (N, C, H, W)`` C-contiguous; ``U (16, K, C)`` in ``x``'s dtype; ``(ph, pw)`` the padding;
    ``TH, TW`` tiles per column and row of an image's output. ``write`` receives ``M (16, K, P)``
    for images ``n0:n1`` (a scratch view, overwritten by the next chunk). Returns the :class:`Tiles`.
    """
    wk = _wk()
    N, C = x.shape[:2]
    K, T = U.shape[1], TH * TW
    bounds = chunks(N, 16 * max(C, K) * T * x.itemsize)
    v_all = np.empty(16 * C * N * T, dtype=x.dtype)
    m_buf = np.empty(16 * K * T * max(n1 - n0 for n0, n1 in bounds), dtype=x.dtype)
    V, off = [], 0
    for n0, n1 in bounds:
        P = (n1 - n0) * T
        v = v_all[off:off + 16 * C * P].reshape(16, C, P)
        off += 16 * C * P
        wk.input_transform(x[n0:n1], ph, pw, TH, TW, v)
        write(n0, n1, np.matmul(U, v, out=_carve(m_buf, 16 * K * P, (16, K, P))))
        V.append(v)
    return Tiles(V, bounds)


def backward(tiles, U, K, ph, pw, TH, TW, cotangent, dx, dtype):
    """The transformed weight gradient ``Ū (16, K, C)`` and, when ``dx`` is given, the input
    cotangent written into ``dx (N, C, H, W)``.

    ``cotangent(n0, n1, Z)`` writes the transformed output cotangent of images ``n0:n1`` into
    ``Z (16, K, P)`` (from ``ȳ``, or from a pooled cotangent) and returns it; ``U (16, K, C)`` is
    needed only for ``dx`` (``None`` otherwise); ``dtype`` is the cotangent's.
    """
    wk = _wk()
    C, T = tiles.V[0].shape[1], TH * TW
    biggest = max(n1 - n0 for n0, n1 in tiles.bounds) * T
    z_buf = np.empty(16 * K * biggest, dtype=dtype)
    mx_buf = np.empty(16 * C * biggest, dtype=dtype) if dx is not None else None
    Ut = None if dx is None else U.transpose(0, 2, 1)
    dU = part = None
    for (n0, n1), v in zip(tiles.bounds, tiles.V):
        P = (n1 - n0) * T
        Z = cotangent(n0, n1, _carve(z_buf, 16 * K * P, (16, K, P)))
        if dU is None:
            dU = np.matmul(Z, v.transpose(0, 2, 1))
            part = np.empty_like(dU)
        else:
            dU += np.matmul(Z, v.transpose(0, 2, 1), out=part)
        if dx is not None:
            Mx = np.matmul(Ut, Z, out=_carve(mx_buf, 16 * C * P, (16, C, P)))
            wk.input_grad_transform(Mx, ph, pw, TH, TW, dx[n0:n1])
    return dU
