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

**Diagonal layout.** The solves work on a buffer ``Z (C, ≥ H·W·N)`` (:func:`to_diag`): per
channel, the pixels in diagonal order (``d`` increasing, ``h`` increasing within a diagonal), each
pixel's ``N`` samples contiguous. A kernel tap ``(i, j)`` maps the pixels of diagonal ``d`` to the
pixels of diagonal ``d + (i-r) + (j-r)`` shifted by ``i - r`` rows (``r = k-1``), so for each tap
and each channel pair ``(c, o)`` the whole diagonal's update is one contiguous AXPY
``Z[c, run_d] -= W[c, o, i, j] · Z[o, run_e]`` of ``m·N`` elements (``m`` pixels, clipped to the
pixels whose source lies in the image: no bounds tests in the inner loop, no zero padding).
These loops are long enough for LLVM's loop vectoriser, which a per-pixel loop over the ``N``
samples is not: Numba compiles without the SLP vectoriser, and LLVM does not vectorise a loop of
8 iterations that needs run-time alias checks, so the per-pixel form ran scalar.
The channel sources are taken four at a time (one pass over ``dst`` per four multiply-adds).
The layout conversion from and to NCHW (the layer's frame, flipped for the other corners) is part
of the kernels: :func:`solve` and :func:`solve_t` read NCHW and write NCHW.

``W`` passed here is the *effective* kernel: entries of the last tap on and above the channel
diagonal are ignored (the diagonal comes from ``diag``). The loops are serial for the reason given
in :mod:`nograd.kernels.conv` (OpenBLAS threads spinning after NumPy GEMMs); the pixels of a
diagonal form the loop that a parallel version would split. References: :mod:`.invconv_ref`.
"""
from __future__ import annotations

import numba as nb
import numpy as np

#: extra elements per channel row of the diagonal buffer: rows whose length is a multiple of 4 KiB
#: make the AXPYs' loads and stores of two channels alias in the low address bits (slower).
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


# The inner loops. Not inlined into the callers at the Numba level on purpose: compiled alone,
# LLVM's run-time alias check compares just the two or five ranges, and `_dot4` keeps its own
# fast-math flags (re-association, so that LLVM may vectorise the reduction).
@nb.njit(cache=True, nogil=True)
def _axpy(dst, s0, a0):
    for m in range(dst.shape[0]):
        dst[m] -= a0 * s0[m]


@nb.njit(cache=True, nogil=True)
def _axpy4(dst, s0, s1, s2, s3, a0, a1, a2, a3):
    for m in range(dst.shape[0]):
        dst[m] -= a0 * s0[m] + a1 * s1[m] + a2 * s2[m] + a3 * s3[m]


@nb.njit(cache=True, nogil=True)
def _scale(dst, a):
    for m in range(dst.shape[0]):
        dst[m] *= a


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
def _dot4(g, s0, s1, s2, s3):
    t0 = t1 = t2 = t3 = g.dtype.type(0)
    for m in range(g.shape[0]):
        t0 += g[m] * s0[m]
        t1 += g[m] * s1[m]
        t2 += g[m] * s2[m]
        t3 += g[m] * s3[m]
    return t0, t1, t2, t3


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
def _dot(g, s0):
    t0 = g.dtype.type(0)
    for m in range(g.shape[0]):
        t0 += g[m] * s0[m]
    return t0


@nb.njit(cache=True, nogil=True)
def _subtract_taps(Z, dst, sp, m, Wt):
    """``dst -= Σ_o Wt[o] · Z[o, sp:sp+m]``."""
    C = Z.shape[0]
    o = 0
    while o + 4 <= C:
        _axpy4(dst, Z[o, sp:sp + m], Z[o + 1, sp:sp + m], Z[o + 2, sp:sp + m],
               Z[o + 3, sp:sp + m], Wt[o], Wt[o + 1], Wt[o + 2], Wt[o + 3])
        o += 4
    while o < C:
        _axpy(dst, Z[o, sp:sp + m], Wt[o])
        o += 1


@nb.njit(cache=True, nogil=True)
def solve_diag(Z, W, diag, H, Wd, N):
    """``Z ← K⁻¹ Z`` in place, in the diagonal layout (``Z`` holds the right-hand side)."""
    C, k = W.shape[0], W.shape[2]
    r = k - 1
    lo, S = diagonals(H, Wd)
    Wf = np.ascontiguousarray(W.transpose(2, 3, 0, 1))          # (i, j, c, o)
    for d in range(H + Wd - 1):
        l0 = lo[d]
        l1 = l0 + S[d + 1] - S[d] - 1
        for i in range(k):
            dh = i - r
            for j in range(k):
                dw = j - r
                e = d + dh + dw
                if (dh == 0 and dw == 0) or e < 0:
                    continue
                h0 = max(l0, -dh)                     # source row h + dh ≥ 0
                h1 = min(l1, d + dw)                  # source column w + dw ≥ 0
                if h1 < h0:
                    continue
                tp = (S[d] + h0 - l0) * N
                sp = (S[e] + h0 + dh - lo[e]) * N
                m = (h1 - h0 + 1) * N
                for c in range(C):
                    _subtract_taps(Z, Z[c, tp:tp + m], sp, m, Wf[i, j, c])
        # the pixel itself: lower triangular over channels, solved in order
        tp = S[d] * N
        m = (l1 - l0 + 1) * N
        for c in range(C):
            dst = Z[c, tp:tp + m]
            for o in range(c):
                _axpy(dst, Z[o, tp:tp + m], W[c, o, r, r])
            _scale(dst, 1 / diag[c])
    return Z


@nb.njit(cache=True, nogil=True)
def solve_t_diag(G, W, diag, H, Wd, N):
    """``G ← K⁻ᵀ G`` in place, in the diagonal layout: the anti-causal solve, diagonals and
    channels in reverse order, through the transposed kernel."""
    C, k = W.shape[0], W.shape[2]
    r = k - 1
    D = H + Wd - 1
    lo, S = diagonals(H, Wd)
    Wt = np.ascontiguousarray(W.transpose(2, 3, 1, 0))          # (i, j, o, c)
    for d in range(D - 1, -1, -1):
        l0 = lo[d]
        l1 = l0 + S[d + 1] - S[d] - 1
        for i in range(k):
            dh = r - i                                # source pixel (h + dh, w + dw): later
            for j in range(k):
                dw = r - j
                e = d + dh + dw
                if (dh == 0 and dw == 0) or e >= D:
                    continue
                h0 = max(l0, d + dw - Wd + 1)         # source column w + dw ≤ Wd - 1
                h1 = min(l1, H - 1 - dh)              # source row h + dh ≤ H - 1
                if h1 < h0:
                    continue
                tp = (S[d] + h0 - l0) * N
                sp = (S[e] + h0 + dh - lo[e]) * N
                m = (h1 - h0 + 1) * N
                for o in range(C):
                    _subtract_taps(G, G[o, tp:tp + m], sp, m, Wt[i, j, o])
        # the pixel itself: upper triangular (the transpose), channels in reverse order
        tp = S[d] * N
        m = (l1 - l0 + 1) * N
        for o in range(C - 1, -1, -1):
            dst = G[o, tp:tp + m]
            for c in range(o + 1, C):
                _axpy(dst, G[c, tp:tp + m], W[c, o, r, r])
            _scale(dst, 1 / diag[o])
    return G


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
    in the diagonal layout. Per tap and diagonal, dot products of contiguous runs."""
    C = G.shape[0]
    r = k - 1
    lo, S = diagonals(H, Wd)
    acc = np.zeros((C, C, k, k))                     # float64 partial sums over the diagonals
    for d in range(H + Wd - 1):
        l0 = lo[d]
        l1 = l0 + S[d + 1] - S[d] - 1
        for i in range(k):
            dh = i - r
            for j in range(k):
                dw = j - r
                e = d + dh + dw
                if e < 0:
                    continue
                h0 = max(l0, -dh)
                h1 = min(l1, d + dw)
                if h1 < h0:
                    continue
                tp = (S[d] + h0 - l0) * N
                sp = (S[e] + h0 + dh - lo[e]) * N
                m = (h1 - h0 + 1) * N
                for c in range(C):
                    g = G[c, tp:tp + m]
                    o = 0
                    while o + 4 <= C:
                        t0, t1, t2, t3 = _dot4(g, Z[o, sp:sp + m], Z[o + 1, sp:sp + m],
                                               Z[o + 2, sp:sp + m], Z[o + 3, sp:sp + m])
                        acc[c, o, i, j] += t0
                        acc[c, o + 1, i, j] += t1
                        acc[c, o + 2, i, j] += t2
                        acc[c, o + 3, i, j] += t3
                        o += 4
                    while o < C:
                        acc[c, o, i, j] += _dot(g, Z[o, sp:sp + m])
                        o += 1
    for c in range(C):
        for o in range(C):
            for i in range(k):
                for j in range(k):
                    out[c, o, i, j] = acc[c, o, i, j]
    return out
