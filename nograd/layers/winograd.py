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
that reads them (forward 9.95 → 6.95 ms, backward 14.8 → 9.1 ms at one thread with the tile-row
kernels; docs/benchmarks.md).

A chunk holds as many images as keep its ``V`` (or ``M``) within :data:`CHUNK_BYTES`, at least one.
Images never straddle chunks, so the input cotangent's overlapping tiles are added within a chunk.
Layers with at least :data:`CL_MIN_CHANNELS` input and output channels use the channels-last
kernels (:mod:`nograd.kernels.winograd_cl`: loops over the channels, ``V (16, P, C)``, the
products ``M = V Uᵀ``, ``Ū = Zᵀ V``, ``M_x = Z U``). Otherwise images with at least
:data:`PLANES_MIN_TW` output tiles a row use the polyphase-plane kernels
(:mod:`nograd.kernels.winograd_planes`: loops over all tiles of a plane), and the backward
transforms the input again instead of keeping ``V`` (then 5.6 → 4.3 ms forward for that layer);
smaller images use the tile-row kernels (:mod:`nograd.kernels.winograd`). The channels-last
(:data:`KEEP_V_CL`) and tile-row paths keep every chunk's ``V`` for the backward (one buffer, a
contiguous view per chunk).
``python bench/winograd_chunks.py`` times the layers.
"""
from __future__ import annotations

import numpy as np

#: the largest transformed input (or product) of one chunk, bytes: well inside a 1 MB L2 cache
CHUNK_BYTES = 1 << 19
#: output tiles per image row from which the transforms run on polyphase planes
#: (:mod:`nograd.kernels.winograd_planes`, one padding tile per tile row); below it the tile-row
#: kernels of :mod:`nograd.kernels.winograd`, whose per-loop cost is lower on short rows (measured,
#: forward + backward at batch 64, one thread: 32 channels at 12×12, 6 tiles a row, 7.3 ms on
#: planes against 8.4; 64 channels at 8×8, 4 tiles a row, 12.8 against 11.5)
PLANES_MIN_TW = 6
#: input and output channels from which the transforms run channels-last
#: (:mod:`nograd.kernels.winograd_cl`), whose loops run over the channels: from 32 on they are
#: faster than either other layout (``python bench/winograd_phases.py``: the transforms of one
#: forward + backward at batch 64, one thread, ms: 64 channels at 8×8 1.5 against 4.9 on tile
#: rows; 32 at 16×16 3.9 against 5.2 on planes, which transform the input twice; but 16 at 32×32
#: 10.6 against 7.7 on planes)
CL_MIN_CHANNELS = 32
#: with the channels-last kernels the forward keeps ``V`` for the backward (four times the input's
#: size) rather than transforming the input again: measured at batch 64, one thread, backward
#: 4.96–5.09 against 5.82–5.97 ms (32 channels, 16×16) and 3.82–3.91 against 4.14–4.15 (64, 8×8)
KEEP_V_CL = True
#: 2×2 output tiles in a batch from which ``algorithm="auto"`` picks Winograd over im2col
#: (:func:`worth_it`): forward + backward at one thread (``python bench/winograd_chunks.py
#: --batch B``) is ahead from 512 tiles with the tile-row and planes kernels (at 256 they tie), and
#: from 256 with the channels-last ones (64 channels at 8×8: 1.44 against 1.64 ms at 128 tiles,
#: batch 8, and 2.14 against 3.27 at 256; 32 at 16×16: 0.55 against 0.48 at 128, batch 2, and
#: 0.80 against 0.94 at 256)
MIN_TILES, MIN_TILES_CL = 512, 256


def worth_it(tiles, C, K):
    """Whether ``algorithm="auto"`` runs Winograd on a batch of ``tiles`` output tiles of a
    ``C → K``-channel layer (one it applies to, with enough input channels): :data:`MIN_TILES`, or
    :data:`MIN_TILES_CL` when the channels-last kernels would run (:func:`kernels`)."""
    return tiles >= (MIN_TILES_CL if min(C, K) >= CL_MIN_CHANNELS else MIN_TILES)


def kernels(TW, C=0, K=0):
    """The transform kernels for ``TW`` output tiles per row, ``C`` input and ``K`` output
    channels: ``(module, tiles per row in the layout)`` — :mod:`nograd.kernels.winograd_cl` and
    ``TW`` when ``min(C, K) >=`` :data:`CL_MIN_CHANNELS`, else :mod:`nograd.kernels.winograd_planes`
    and ``TW + 1`` from :data:`PLANES_MIN_TW` on, else :mod:`nograd.kernels.winograd` and ``TW``.
    The modules have the same four functions; the first one's arrays are channels-last
    (its ``CHANNELS_LAST``)."""
    if min(C, K) >= CL_MIN_CHANNELS:
        from ..kernels import winograd_cl

        return winograd_cl, TW
    if TW >= PLANES_MIN_TW:
        from ..kernels import winograd_planes  # lazy: Numba loads on the first Winograd convolution

        return winograd_planes, TW + 1
    from ..kernels import winograd

    return winograd, TW


def chunks(n_images, image_bytes):
    """``[(n0, n1), ...]``: consecutive chunks of whole images covering ``range(n_images)``, each
    with ``max(1, CHUNK_BYTES // image_bytes)`` images (the last may have fewer)."""
    step = max(1, CHUNK_BYTES // max(int(image_bytes), 1))
    return [(n0, min(n_images, n0 + step)) for n0 in range(0, n_images, step)]


class Tiles:
    """What a Winograd forward keeps for its backward: the chunks ``bounds[i] = (n0, n1)``, the
    kernels' ``layout`` (a :func:`kernels` answer), and either the transformed input — ``V[i]`` of
    shape ``(16, C, P_i)`` (``(16, P_i, C)`` channels-last; contiguous), ``P_i = (n1 - n0)·TH·TWx``
    — or, with the planes kernels,
    the input ``x`` and its padding ``pad``, transformed again chunk by chunk in the backward (the
    planes kernels transform a 16-channel 32×32 batch in ~1.2 ms, less than writing and reading
    back its 16 MB of ``V``). An object rather than a bare array so that nothing that walks caches
    takes it for an array with the batch on axis 0."""

    __slots__ = ("V", "bounds", "layout", "x", "pad")

    def __init__(self, V, bounds, layout=None, x=None, pad=None):
        self.V, self.bounds, self.layout, self.x, self.pad = list(V), list(bounds), layout, x, pad

    def __repr__(self):
        kept = f"V of {sum(v.nbytes for v in self.V)} bytes" if self.V else "the input"
        return f"Tiles({len(self.bounds)} chunks, {kept})"


def _carve(flat, size, shape):
    """A contiguous view of the first ``size`` entries of ``flat`` shaped ``shape``."""
    return flat[:size].reshape(shape)


def forward(x, U, ph, pw, TH, TW, write, layout=None):
    """Transform, multiply and hand each chunk's product to ``write(n0, n1, M, module)``.

    ``x (N, C, H, W)`` C-contiguous; ``U (16, K, C)`` in ``x``'s dtype; ``(ph, pw)`` the padding;
    ``TH, TW`` tiles per column and row of an image's output; ``layout`` a :func:`kernels` answer
    (default: ``kernels(TW, C, K)``). ``write`` receives ``M (16, K, P)`` (``(16, P, K)``
    channels-last) for images ``n0:n1`` (a scratch view, overwritten by the next chunk) and the
    kernel module whose layout ``M`` is in. Returns the :class:`Tiles`.
    """
    N, C = x.shape[:2]
    wk, TWx = kernels(TW, C, U.shape[1]) if layout is None else layout
    cl = getattr(wk, "CHANNELS_LAST", False)
    K, T = U.shape[1], TH * TWx
    bounds = chunks(N, 16 * max(C, K) * T * x.itemsize)
    biggest = max(n1 - n0 for n0, n1 in bounds)
    store = TWx == TW and not (cl and not KEEP_V_CL)   # tile rows keep V; planes transform again later
    v_all = np.empty(16 * C * (N if store else biggest) * T, dtype=x.dtype)
    m_buf = np.empty(16 * K * T * biggest, dtype=x.dtype)
    V, off = [], 0
    Ut = np.ascontiguousarray(U.transpose(0, 2, 1)) if cl else None   # a view: +40 % on small P
    for n0, n1 in bounds:
        P = (n1 - n0) * T
        v = v_all[off:off + 16 * C * P].reshape((16, P, C) if cl else (16, C, P))
        if store:
            off += 16 * C * P
        wk.input_transform(x[n0:n1], ph, pw, TH, TW, v)
        if cl:
            M = np.matmul(v, Ut, out=_carve(m_buf, 16 * K * P, (16, P, K)))
        else:
            M = np.matmul(U, v, out=_carve(m_buf, 16 * K * P, (16, K, P)))
        write(n0, n1, M, wk)
        if store:
            V.append(v)
    return Tiles(V, bounds, (wk, TWx)) if store else Tiles([], bounds, (wk, TWx), x, (ph, pw))


def backward(tiles, U, K, ph, pw, TH, TW, cotangent, dx, dtype):
    """The transformed weight gradient ``Ū (16, K, C)`` and, when ``dx`` is given, the input
    cotangent written into ``dx (N, C, H, W)``.

    ``cotangent(n0, n1, Z, module)`` writes the transformed output cotangent of images ``n0:n1``
    into ``Z (16, K, P)`` (``(16, P, K)`` channels-last) in the layout of the kernel ``module`` the
    forward used (from ``ȳ``, or from a pooled cotangent) and returns it; ``U (16, K, C)`` is
    needed only for ``dx`` (``None`` otherwise); ``dtype`` is the cotangent's.
    """
    wk, TWx = tiles.layout
    cl = getattr(wk, "CHANNELS_LAST", False)
    C = tiles.V[0].shape[2 if cl else 1] if tiles.V else tiles.x.shape[1]
    T = TH * TWx
    biggest = max(n1 - n0 for n0, n1 in tiles.bounds) * T
    z_buf = np.empty(16 * K * biggest, dtype=dtype)
    mx_buf = np.empty(16 * C * biggest, dtype=dtype) if dx is not None else None
    Ut = None if dx is None or cl else U.transpose(0, 2, 1)
    dU = part = None
    v_buf = None if tiles.V else np.empty(16 * C * biggest, dtype=tiles.x.dtype)
    for i, (n0, n1) in enumerate(tiles.bounds):
        P = (n1 - n0) * T
        if tiles.V:
            v = tiles.V[i]
        else:
            v = wk.input_transform(tiles.x[n0:n1], tiles.pad[0], tiles.pad[1], TH, TW,
                                   _carve(v_buf, 16 * C * P, (16, P, C) if cl else (16, C, P)))
        Z = cotangent(n0, n1, _carve(z_buf, 16 * K * P, (16, P, K) if cl else (16, K, P)), wk)
        a, b = (Z.transpose(0, 2, 1), v) if cl else (Z, v.transpose(0, 2, 1))   # Ū = Σ Z Vᵀ
        if dU is None:
            dU = np.matmul(a, b)
            part = np.empty_like(dU)
        else:
            dU += np.matmul(a, b, out=part)
        if dx is not None:
            if cl:
                Mx = np.matmul(Z, U, out=_carve(mx_buf, 16 * C * P, (16, P, C)))
            else:
                Mx = np.matmul(Ut, Z, out=_carve(mx_buf, 16 * C * P, (16, C, P)))
            wk.input_grad_transform(Mx, ph, pw, TH, TW, dx[n0:n1])
    return dU
