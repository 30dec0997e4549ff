r"""Numba kernels for the inverse of a causal convolution (:class:`nograd.layers.InverseConv2d`).

The causal convolution ``u = K z`` (NCHW, ``k×k`` kernel ``W (C, C, k, k)``, top-left padding)
reads, for output pixel ``(h, w)``, the inputs at ``(h - (k-1) + i, w - (k-1) + j)``; its last tap
``(k-1, k-1)`` is the pixel itself, lower-triangular over channels with diagonal ``diag``. In the
pixel-major, channel-minor ordering the Toeplitz matrix of ``K`` is lower triangular, so:

- :func:`solve` — ``z = K⁻¹ u`` by forward substitution. Pixel ``(h, w)`` depends only on pixels
  with ``h' ≤ h, w' ≤ w``, so the anti-diagonals ``d = h + w`` are solved in increasing order; the
  pixels of one diagonal are independent of each other (Nagar & Varma, AISTATS 2025,
  arXiv:2410.14634, the parallel inverse and its backpropagation), the channels of one pixel are
  solved in order ``c = 0 … C-1``.
- :func:`solve_t` — ``g = K⁻ᵀ v``, the transposed, anti-causal solve: diagonals in decreasing
  order, channels ``C-1 … 0``. This is the input cotangent of ``z = K⁻¹ u``.
- :func:`kernel_grad` — ``Σ g ⋆ z``, the weight gradient of the causal convolution.

**Diagonal layout** (:mod:`.invconv_layout`). The solves work on a buffer ``Z (C, ≥ H·W·N)``
holding, per channel, the pixels in diagonal order with each pixel's ``N`` samples contiguous. A
kernel tap ``(i, j)`` maps the pixels of diagonal ``d`` to those of diagonal ``d + (i-r) + (j-r)``
shifted by ``i - r`` rows (``r = k-1``), so for each tap and each channel pair ``(c, o)`` the whole
diagonal's update is one contiguous AXPY ``Z[c, run_d] -= W[c, o, i, j] · Z[o, run_e]`` of
``m·N`` elements (``m`` pixels, clipped to the pixels whose source lies in the image: no bounds
tests in the inner loop, no zero padding) — a loop long enough for LLVM to vectorise, where a
per-pixel loop over the ``N`` samples is not. Channels go in 4×4 blocks (four destination rows
updated from four source rows in one pass), and the inner loops index buffer rows with offsets
rather than taking slices. The layout conversion from and to NCHW (the layer's frame, flipped for
the other corners) is part of the kernels: :func:`solve` and :func:`solve_t` read NCHW and write
NCHW.

Cost of a solve (and of the transposed solve): at most ``k²·C²·H·W·N`` multiply-adds (only the
strict lower triangle of the last tap's channel block, and fewer where a tap's source leaves the
image), in at most ``(H+W−1)·k²·C²`` AXPYs of one diagonal each, plus one pass over ``C·H·W·N``
values for the layout conversion each way; the diagonal buffer holds ``C·H·W·N`` values (plus
row padding). The diagonals are short (``N`` to ``min(H, W)·N`` values per channel), so the fixed
cost of each inner loop (alias checks, set-up, horizontal sums) is a large share of the time.
Timings and the variants tried: ``docs/notes/performance-notes.md``; ``python bench/invconv.py``
measures the solve and its backward.

``W`` passed here is the *effective* kernel: entries of the last tap on and above the channel
diagonal are ignored (the diagonal comes from ``diag``). The loops are serial for the reason given
in :mod:`nograd.kernels.conv` (OpenBLAS threads spinning after NumPy GEMMs); the pixels of a
diagonal form the loop that a parallel version would split. References: :mod:`.invconv_ref`.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .invconv_layout import ROW_PAD, buffer, diagonals, from_diag, slots, to_diag  # noqa: F401


# The inner loops. Each works on whole channel rows of a buffer with offsets, not on slices: a
# slice is a new array whose reference count Numba updates atomically, and with the ~10 slices of
# one 4×4 block that cost as much as a run of 128 elements of work. The `if … < 0: return` guards
# tell LLVM that the indices are not negative (no wrap-around selects in the vectorised loop).
# Channels go in blocks of four: one pass over a run does a 4×4 block of multiply-adds per element
# (four destination and four source rows). They are not inlined into the callers at the Numba
# level: compiled alone, LLVM's run-time alias checks compare just one call's ranges, and the
# dot products keep their own fast-math flags (re-association, so that LLVM may vectorise the
# reductions).
@nb.njit(cache=True, nogil=True)
def _axpy(Z, c, tp, o, sp, M, a):
    """``Z[c, tp:tp+M] -= a · Z[o, sp:sp+M]``."""
    if c < 0 or o < 0 or tp < 0 or sp < 0:
        return
    for q in range(M):
        Z[c, tp + q] -= a * Z[o, sp + q]


@nb.njit(cache=True, nogil=True)
def _scale(Z, c, tp, M, a):
    if c < 0 or tp < 0:
        return
    for q in range(M):
        Z[c, tp + q] *= a


@nb.njit(cache=True, nogil=True)
def _block4(Z, c, tp, o, sp, M, A, i, j):
    """``Z[c+u, tp:tp+M] -= Σ_v A[i, j, c+u, o+v] · Z[o+v, sp:sp+M]`` for ``u, v < 4``."""
    if c < 0 or o < 0 or tp < 0 or sp < 0:
        return
    a00, a01, a02, a03 = A[i, j, c, o], A[i, j, c, o + 1], A[i, j, c, o + 2], A[i, j, c, o + 3]
    a10, a11, a12, a13 = A[i, j, c + 1, o], A[i, j, c + 1, o + 1], A[i, j, c + 1, o + 2], A[i, j, c + 1, o + 3]
    a20, a21, a22, a23 = A[i, j, c + 2, o], A[i, j, c + 2, o + 1], A[i, j, c + 2, o + 2], A[i, j, c + 2, o + 3]
    a30, a31, a32, a33 = A[i, j, c + 3, o], A[i, j, c + 3, o + 1], A[i, j, c + 3, o + 2], A[i, j, c + 3, o + 3]
    for q in range(M):
        s = sp + q
        t0, t1, t2, t3 = Z[o, s], Z[o + 1, s], Z[o + 2, s], Z[o + 3, s]
        d = tp + q
        Z[c, d] -= a00 * t0 + a01 * t1 + a02 * t2 + a03 * t3
        Z[c + 1, d] -= a10 * t0 + a11 * t1 + a12 * t2 + a13 * t3
        Z[c + 2, d] -= a20 * t0 + a21 * t1 + a22 * t2 + a23 * t3
        Z[c + 3, d] -= a30 * t0 + a31 * t1 + a32 * t2 + a33 * t3


@nb.njit(cache=True, nogil=True)
def _own4_lower(Z, c, tp, M, A, r, e0, e1, e2, e3):
    """The pixel's own tap for channels ``c … c+3``, in order:
    ``z_u ← (z_u - Σ_{v<u} A[r, r, c+u, c+v] z_v) e_u``."""
    if c < 0 or tp < 0:
        return
    a10 = A[r, r, c + 1, c]
    a20, a21 = A[r, r, c + 2, c], A[r, r, c + 2, c + 1]
    a30, a31, a32 = A[r, r, c + 3, c], A[r, r, c + 3, c + 1], A[r, r, c + 3, c + 2]
    for q in range(M):
        d = tp + q
        t0 = Z[c, d] * e0
        t1 = (Z[c + 1, d] - a10 * t0) * e1
        t2 = (Z[c + 2, d] - (a20 * t0 + a21 * t1)) * e2
        t3 = (Z[c + 3, d] - (a30 * t0 + a31 * t1 + a32 * t2)) * e3
        Z[c, d] = t0
        Z[c + 1, d] = t1
        Z[c + 2, d] = t2
        Z[c + 3, d] = t3


@nb.njit(cache=True, nogil=True)
def _own4_upper(Z, o, tp, M, A, r, e0, e1, e2, e3):
    """The transposed own tap for channels ``o … o+3``, in reverse order:
    ``g_u ← (g_u - Σ_{v>u} A[r, r, o+u, o+v] g_v) e_u``."""
    if o < 0 or tp < 0:
        return
    a23 = A[r, r, o + 2, o + 3]
    a12, a13 = A[r, r, o + 1, o + 2], A[r, r, o + 1, o + 3]
    a01, a02, a03 = A[r, r, o, o + 1], A[r, r, o, o + 2], A[r, r, o, o + 3]
    for q in range(M):
        d = tp + q
        t3 = Z[o + 3, d] * e3
        t2 = (Z[o + 2, d] - a23 * t3) * e2
        t1 = (Z[o + 1, d] - (a12 * t2 + a13 * t3)) * e1
        t0 = (Z[o, d] - (a01 * t1 + a02 * t2 + a03 * t3)) * e0
        Z[o, d] = t0
        Z[o + 1, d] = t1
        Z[o + 2, d] = t2
        Z[o + 3, d] = t3


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
def _dot(G, c, tp, Z, o, sp, M):
    t = G.dtype.type(0)
    if c < 0 or o < 0 or tp < 0 or sp < 0:
        return t
    for q in range(M):
        t += G[c, tp + q] * Z[o, sp + q]
    return t


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
def _dots4(G, c, tp, Z, o, sp, M, acc, i, j):
    """``acc[i, j, c+u, o+v] += G[c+u, tp:tp+M] · Z[o+v, sp:sp+M]`` for ``u, v < 4``."""
    if c < 0 or o < 0 or tp < 0 or sp < 0:
        return
    z = G.dtype.type(0)
    t00 = t01 = t02 = t03 = t10 = t11 = t12 = t13 = z
    t20 = t21 = t22 = t23 = t30 = t31 = t32 = t33 = z
    for q in range(M):
        s = sp + q
        u0, u1, u2, u3 = Z[o, s], Z[o + 1, s], Z[o + 2, s], Z[o + 3, s]
        d = tp + q
        v = G[c, d]
        t00 += v * u0
        t01 += v * u1
        t02 += v * u2
        t03 += v * u3
        v = G[c + 1, d]
        t10 += v * u0
        t11 += v * u1
        t12 += v * u2
        t13 += v * u3
        v = G[c + 2, d]
        t20 += v * u0
        t21 += v * u1
        t22 += v * u2
        t23 += v * u3
        v = G[c + 3, d]
        t30 += v * u0
        t31 += v * u1
        t32 += v * u2
        t33 += v * u3
    acc[i, j, c, o] += t00
    acc[i, j, c, o + 1] += t01
    acc[i, j, c, o + 2] += t02
    acc[i, j, c, o + 3] += t03
    acc[i, j, c + 1, o] += t10
    acc[i, j, c + 1, o + 1] += t11
    acc[i, j, c + 1, o + 2] += t12
    acc[i, j, c + 1, o + 3] += t13
    acc[i, j, c + 2, o] += t20
    acc[i, j, c + 2, o + 1] += t21
    acc[i, j, c + 2, o + 2] += t22
    acc[i, j, c + 2, o + 3] += t23
    acc[i, j, c + 3, o] += t30
    acc[i, j, c + 3, o + 1] += t31
    acc[i, j, c + 3, o + 2] += t32
    acc[i, j, c + 3, o + 3] += t33


@nb.njit(cache=True, nogil=True)
def _update(Z, tp, sp, M, A, i, j):
    """``Z[c, tp:tp+M] -= Σ_o A[i, j, c, o] · Z[o, sp:sp+M]`` for all channels: 4×4 blocks, then
    the remaining channel pairs one AXPY each."""
    C = Z.shape[0]
    C4 = C - C % 4
    for c in range(0, C4, 4):
        for o in range(0, C4, 4):
            _block4(Z, c, tp, o, sp, M, A, i, j)
    for c in range(C):
        for o in range(C4 if c < C4 else 0, C):
            _axpy(Z, c, tp, o, sp, M, A[i, j, c, o])


@nb.njit(cache=True, nogil=True)
def solve_diag(Z, W, diag, H, Wd, N):
    """``Z ← K⁻¹ Z`` in place, in the diagonal layout (``Z`` holds the right-hand side)."""
    C, k = W.shape[0], W.shape[2]
    r = k - 1
    C4 = C - C % 4
    lo, S = diagonals(H, Wd)
    Wf = np.ascontiguousarray(W.transpose(2, 3, 0, 1))          # (i, j, c, o)
    e = 1 / diag
    for d in range(H + Wd - 1):
        l0 = lo[d]
        l1 = l0 + S[d + 1] - S[d] - 1
        for i in range(k):
            dh = i - r
            for j in range(k):
                dw = j - r
                ed = d + dh + dw
                if (dh == 0 and dw == 0) or ed < 0:
                    continue
                h0 = max(l0, -dh)                     # source row h + dh ≥ 0
                h1 = min(l1, d + dw)                  # source column w + dw ≥ 0
                if h1 < h0:
                    continue
                _update(Z, (S[d] + h0 - l0) * N, (S[ed] + h0 + dh - lo[ed]) * N, (h1 - h0 + 1) * N,
                        Wf, i, j)
        # the pixel itself: lower triangular over channels, solved in order
        tp = S[d] * N
        M = (l1 - l0 + 1) * N
        for c in range(0, C4, 4):
            for o in range(0, c, 4):
                _block4(Z, c, tp, o, tp, M, Wf, r, r)
            _own4_lower(Z, c, tp, M, Wf, r, e[c], e[c + 1], e[c + 2], e[c + 3])
        for c in range(C4, C):
            for o in range(c):
                _axpy(Z, c, tp, o, tp, M, Wf[r, r, c, o])
            _scale(Z, c, tp, M, e[c])
    return Z


@nb.njit(cache=True, nogil=True)
def solve_t_diag(G, W, diag, H, Wd, N):
    """``G ← K⁻ᵀ G`` in place, in the diagonal layout: the anti-causal solve, diagonals and
    channels in reverse order, through the transposed kernel."""
    C, k = W.shape[0], W.shape[2]
    r = k - 1
    C4 = C - C % 4
    D = H + Wd - 1
    lo, S = diagonals(H, Wd)
    Wt = np.ascontiguousarray(W.transpose(2, 3, 1, 0))          # (i, j, o, c)
    e = 1 / diag
    for d in range(D - 1, -1, -1):
        l0 = lo[d]
        l1 = l0 + S[d + 1] - S[d] - 1
        for i in range(k):
            dh = r - i                                # source pixel (h + dh, w + dw): later
            for j in range(k):
                dw = r - j
                ed = d + dh + dw
                if (dh == 0 and dw == 0) or ed >= D:
                    continue
                h0 = max(l0, d + dw - Wd + 1)         # source column w + dw ≤ Wd - 1
                h1 = min(l1, H - 1 - dh)              # source row h + dh ≤ H - 1
                if h1 < h0:
                    continue
                _update(G, (S[d] + h0 - l0) * N, (S[ed] + h0 + dh - lo[ed]) * N, (h1 - h0 + 1) * N,
                        Wt, i, j)
        # the pixel itself: upper triangular (the transpose), channels in reverse order
        tp = S[d] * N
        M = (l1 - l0 + 1) * N
        for o in range(C - 1, C4 - 1, -1):
            for c in range(o + 1, C):
                _axpy(G, o, tp, c, tp, M, Wt[r, r, o, c])
            _scale(G, o, tp, M, e[o])
        for o in range(C4 - 4, -1, -4):
            for c in range(o + 4, C4, 4):
                _block4(G, o, tp, c, tp, M, Wt, r, r)
            for q in range(4):
                for c in range(C4, C):
                    _axpy(G, o + q, tp, c, tp, M, Wt[r, r, o + q, c])
            _own4_upper(G, o, tp, M, Wt, r, e[o], e[o + 1], e[o + 2], e[o + 3])
    return G


@nb.njit(cache=True, nogil=True)
def _own4_apply(Z, c, tp, M, A, r, g0, g1, g2, g3):
    """The pixel's own tap applied (not solved) for channels ``c … c+3``:
    ``x_u = g_u z_u + Σ_{v<u} A[r, r, c+u, c+v] z_v``, every ``z`` read before anything is written."""
    if c < 0 or tp < 0:
        return
    a10 = A[r, r, c + 1, c]
    a20, a21 = A[r, r, c + 2, c], A[r, r, c + 2, c + 1]
    a30, a31, a32 = A[r, r, c + 3, c], A[r, r, c + 3, c + 1], A[r, r, c + 3, c + 2]
    for q in range(M):
        d = tp + q
        t0, t1, t2, t3 = Z[c, d], Z[c + 1, d], Z[c + 2, d], Z[c + 3, d]
        Z[c, d] = g0 * t0
        Z[c + 1, d] = g1 * t1 + a10 * t0
        Z[c + 2, d] = g2 * t2 + (a20 * t0 + a21 * t1)
        Z[c + 3, d] = g3 * t3 + (a30 * t0 + a31 * t1 + a32 * t2)


@nb.njit(cache=True, nogil=True)
def conv_diag(Z, W, diag, H, Wd, N):
    """``Z ← K Z`` in place, in the diagonal layout: the causal convolution itself.

    Output pixel ``(h, w)`` reads inputs on its own diagonal and on earlier ones only, so the
    diagonals are done in *decreasing* order — each one's inputs are then still unchanged — and
    within a pixel the channels in decreasing order (the own tap is lower triangular). The same
    contiguous runs as :func:`solve_diag`, with the signs of the updates turned and no division."""
    C, k = W.shape[0], W.shape[2]
    r = k - 1
    C4 = C - C % 4
    lo, S = diagonals(H, Wd)
    Wf = np.ascontiguousarray(W.transpose(2, 3, 0, 1))          # (i, j, c, o)
    Wn = -Wf                                                    # the updates subtract: Z -= (-A) z
    for d in range(H + Wd - 2, -1, -1):
        l0 = lo[d]
        l1 = l0 + S[d + 1] - S[d] - 1
        tp = S[d] * N
        M = (l1 - l0 + 1) * N
        # the pixel itself first (its own inputs are read before any earlier diagonal is added)
        for c in range(C - 1, C4 - 1, -1):
            _scale(Z, c, tp, M, diag[c])
            for o in range(c):
                _axpy(Z, c, tp, o, tp, M, Wn[r, r, c, o])
        for c in range(C4 - 4, -1, -4):
            _own4_apply(Z, c, tp, M, Wf, r, diag[c], diag[c + 1], diag[c + 2], diag[c + 3])
            for o in range(0, c, 4):
                _block4(Z, c, tp, o, tp, M, Wn, r, r)
        for i in range(k):
            dh = i - r
            for j in range(k):
                dw = j - r
                ed = d + dh + dw
                if (dh == 0 and dw == 0) or ed < 0:
                    continue
                h0 = max(l0, -dh)
                h1 = min(l1, d + dw)
                if h1 < h0:
                    continue
                _update(Z, tp + (h0 - l0) * N, (S[ed] + h0 + dh - lo[ed]) * N, (h1 - h0 + 1) * N,
                        Wn, i, j)
    return Z


@nb.njit(cache=True, nogil=True)
def conv(z, W, diag, fh, fw, x, Z):
    """``x = K z`` for NCHW ``z`` and ``x`` (flipped as :func:`to_diag`), through the buffer ``Z``:
    the sampling direction of a flow, at the cost of one solve."""
    N, _, H, Wd = z.shape
    to_diag(z, fh, fw, Z)
    conv_diag(Z, W, diag, H, Wd, N)
    from_diag(Z, fh, fw, x)
    return x


@nb.njit(cache=True, nogil=True)
def solve(u, W, diag, fh, fw, z, Z):
    """``z = K⁻¹ u`` for NCHW ``u`` and ``z`` (both read/written flipped as :func:`to_diag`);
    ``Z`` (:func:`buffer`) is left holding ``z`` in the diagonal layout, for :func:`kernel_grad`."""
    N, _, H, Wd = u.shape
    to_diag(u, fh, fw, Z)
    solve_diag(Z, W, diag, H, Wd, N)
    from_diag(Z, fh, fw, z)
    return z


@nb.njit(cache=True, nogil=True)
def solve_t(v, W, diag, fh, fw, g, G):
    """``g = K⁻ᵀ v`` (NCHW, flipped as :func:`to_diag`); ``G`` is left holding ``g`` in the diagonal
    layout."""
    N, _, H, Wd = v.shape
    to_diag(v, fh, fw, G)
    solve_t_diag(G, W, diag, H, Wd, N)
    from_diag(G, fh, fw, g)
    return g


@nb.njit(cache=True, nogil=True)
def kernel_grad(G, Z, H, Wd, N, k, out):
    """``out[c, o, i, j] = Σ_{h,w,n} g[h, w, c, n] · z[h-(k-1)+i, w-(k-1)+j, o, n]`` (zero outside):
    the weight gradient of the causal convolution with input ``z`` and output cotangent ``g``, both
    in the diagonal layout. Per tap and diagonal, dot products of contiguous runs (4×4 channel
    blocks per pass), summed over the diagonals in float64."""
    C = G.shape[0]
    C4 = C - C % 4
    r = k - 1
    lo, S = diagonals(H, Wd)
    acc = np.zeros((k, k, C, C))
    for d in range(H + Wd - 1):
        l0 = lo[d]
        l1 = l0 + S[d + 1] - S[d] - 1
        for i in range(k):
            dh = i - r
            for j in range(k):
                dw = j - r
                ed = d + dh + dw
                if ed < 0:
                    continue
                h0 = max(l0, -dh)
                h1 = min(l1, d + dw)
                if h1 < h0:
                    continue
                tp = (S[d] + h0 - l0) * N
                sp = (S[ed] + h0 + dh - lo[ed]) * N
                M = (h1 - h0 + 1) * N
                for c in range(0, C4, 4):
                    for o in range(0, C4, 4):
                        _dots4(G, c, tp, Z, o, sp, M, acc, i, j)
                for c in range(C):
                    for o in range(C4 if c < C4 else 0, C):
                        acc[i, j, c, o] += _dot(G, c, tp, Z, o, sp, M)
    for c in range(C):
        for o in range(C):
            for i in range(k):
                for j in range(k):
                    out[c, o, i, j] = acc[i, j, c, o]
    return out
