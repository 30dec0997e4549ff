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
# LLVM's run-time alias check compares just the ranges of one call, and the dot products keep their
# own fast-math flags (re-association, so that LLVM may vectorise the reductions). Channels go in
# blocks of four: one pass over a run does a 4×4 block of multiply-adds per element (four
# destination and four source runs), so that the per-call costs (slices, alias checks, loop
# remainders) are paid once per 16 channel pairs.
@nb.njit(cache=True, nogil=True)
def _axpy(dst, s0, a0):
    for m in range(dst.shape[0]):
        dst[m] -= a0 * s0[m]


@nb.njit(cache=True, nogil=True)
def _block4(d0, d1, d2, d3, s0, s1, s2, s3, A):
    """``d_c -= Σ_o A[c, o] · s_o`` for a 4×4 block ``A``."""
    a00, a01, a02, a03 = A[0, 0], A[0, 1], A[0, 2], A[0, 3]
    a10, a11, a12, a13 = A[1, 0], A[1, 1], A[1, 2], A[1, 3]
    a20, a21, a22, a23 = A[2, 0], A[2, 1], A[2, 2], A[2, 3]
    a30, a31, a32, a33 = A[3, 0], A[3, 1], A[3, 2], A[3, 3]
    for m in range(d0.shape[0]):
        t0, t1, t2, t3 = s0[m], s1[m], s2[m], s3[m]
        d0[m] -= a00 * t0 + a01 * t1 + a02 * t2 + a03 * t3
        d1[m] -= a10 * t0 + a11 * t1 + a12 * t2 + a13 * t3
        d2[m] -= a20 * t0 + a21 * t1 + a22 * t2 + a23 * t3
        d3[m] -= a30 * t0 + a31 * t1 + a32 * t2 + a33 * t3


@nb.njit(cache=True, nogil=True)
def _scale(dst, a):
    for m in range(dst.shape[0]):
        dst[m] *= a


@nb.njit(cache=True, nogil=True)
def _own4_lower(d0, d1, d2, d3, A, e0, e1, e2, e3):
    """The pixel's own tap for four channels, in order: ``d_c ← (d_c - Σ_{o<c} A[c, o] d_o) e_c``."""
    a10 = A[1, 0]
    a20, a21 = A[2, 0], A[2, 1]
    a30, a31, a32 = A[3, 0], A[3, 1], A[3, 2]
    for m in range(d0.shape[0]):
        t0 = d0[m] * e0
        t1 = (d1[m] - a10 * t0) * e1
        t2 = (d2[m] - (a20 * t0 + a21 * t1)) * e2
        t3 = (d3[m] - (a30 * t0 + a31 * t1 + a32 * t2)) * e3
        d0[m], d1[m], d2[m], d3[m] = t0, t1, t2, t3


@nb.njit(cache=True, nogil=True)
def _own4_upper(d0, d1, d2, d3, A, e0, e1, e2, e3):
    """The transposed own tap for four channels, in reverse order:
    ``d_o ← (d_o - Σ_{c>o} A[o, c] d_c) e_o``."""
    a23 = A[2, 3]
    a12, a13 = A[1, 2], A[1, 3]
    a01, a02, a03 = A[0, 1], A[0, 2], A[0, 3]
    for m in range(d0.shape[0]):
        t3 = d3[m] * e3
        t2 = (d2[m] - a23 * t3) * e2
        t1 = (d1[m] - (a12 * t2 + a13 * t3)) * e1
        t0 = (d0[m] - (a01 * t1 + a02 * t2 + a03 * t3)) * e0
        d0[m], d1[m], d2[m], d3[m] = t0, t1, t2, t3


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
def _dot(g, s0):
    t0 = g.dtype.type(0)
    for m in range(g.shape[0]):
        t0 += g[m] * s0[m]
    return t0


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
def _dots4(g0, g1, g2, g3, s0, s1, s2, s3, acc):
    """``acc[c, o] += g_c · s_o`` for a 4×4 block (``acc`` float64)."""
    z = g0.dtype.type(0)
    t00 = t01 = t02 = t03 = t10 = t11 = t12 = t13 = z
    t20 = t21 = t22 = t23 = t30 = t31 = t32 = t33 = z
    for m in range(g0.shape[0]):
        u0, u1, u2, u3 = s0[m], s1[m], s2[m], s3[m]
        v = g0[m]
        t00 += v * u0
        t01 += v * u1
        t02 += v * u2
        t03 += v * u3
        v = g1[m]
        t10 += v * u0
        t11 += v * u1
        t12 += v * u2
        t13 += v * u3
        v = g2[m]
        t20 += v * u0
        t21 += v * u1
        t22 += v * u2
        t23 += v * u3
        v = g3[m]
        t30 += v * u0
        t31 += v * u1
        t32 += v * u2
        t33 += v * u3
    acc[0, 0] += t00
    acc[0, 1] += t01
    acc[0, 2] += t02
    acc[0, 3] += t03
    acc[1, 0] += t10
    acc[1, 1] += t11
    acc[1, 2] += t12
    acc[1, 3] += t13
    acc[2, 0] += t20
    acc[2, 1] += t21
    acc[2, 2] += t22
    acc[2, 3] += t23
    acc[3, 0] += t30
    acc[3, 1] += t31
    acc[3, 2] += t32
    acc[3, 3] += t33


@nb.njit(cache=True, nogil=True)
def _update(Z, tp, sp, m, A):
    """``Z[c, tp:tp+m] -= Σ_o A[c, o] · Z[o, sp:sp+m]`` for all channels: 4×4 blocks, then the
    remaining channel pairs one AXPY each."""
    C = Z.shape[0]
    C4 = C - C % 4
    for c in range(0, C4, 4):
        d0, d1, d2, d3 = Z[c, tp:tp + m], Z[c + 1, tp:tp + m], Z[c + 2, tp:tp + m], Z[c + 3, tp:tp + m]
        for o in range(0, C4, 4):
            _block4(d0, d1, d2, d3, Z[o, sp:sp + m], Z[o + 1, sp:sp + m], Z[o + 2, sp:sp + m],
                    Z[o + 3, sp:sp + m], A[c:c + 4, o:o + 4])
    for c in range(C):
        dst = Z[c, tp:tp + m]
        for o in range(C4 if c < C4 else 0, C):
            _axpy(dst, Z[o, sp:sp + m], A[c, o])


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
                        Wf[i, j])
        # the pixel itself: lower triangular over channels, solved in order
        tp = S[d] * N
        m = (l1 - l0 + 1) * N
        A = Wf[r, r]
        for c in range(0, C4, 4):
            d0, d1, d2, d3 = Z[c, tp:tp + m], Z[c + 1, tp:tp + m], Z[c + 2, tp:tp + m], Z[c + 3, tp:tp + m]
            for o in range(0, c, 4):
                _block4(d0, d1, d2, d3, Z[o, tp:tp + m], Z[o + 1, tp:tp + m], Z[o + 2, tp:tp + m],
                        Z[o + 3, tp:tp + m], A[c:c + 4, o:o + 4])
            _own4_lower(d0, d1, d2, d3, A[c:c + 4, c:c + 4], e[c], e[c + 1], e[c + 2], e[c + 3])
        for c in range(C4, C):
            dst = Z[c, tp:tp + m]
            for o in range(c):
                _axpy(dst, Z[o, tp:tp + m], A[c, o])
            _scale(dst, e[c])
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
                        Wt[i, j])
        # the pixel itself: upper triangular (the transpose), channels in reverse order
        tp = S[d] * N
        m = (l1 - l0 + 1) * N
        A = Wt[r, r]
        for o in range(C - 1, C4 - 1, -1):
            dst = G[o, tp:tp + m]
            for c in range(o + 1, C):
                _axpy(dst, G[c, tp:tp + m], A[o, c])
            _scale(dst, e[o])
        for o in range(C4 - 4, -1, -4):
            d0, d1, d2, d3 = G[o, tp:tp + m], G[o + 1, tp:tp + m], G[o + 2, tp:tp + m], G[o + 3, tp:tp + m]
            for c in range(o + 4, C4, 4):
                _block4(d0, d1, d2, d3, G[c, tp:tp + m], G[c + 1, tp:tp + m], G[c + 2, tp:tp + m],
                        G[c + 3, tp:tp + m], A[o:o + 4, c:c + 4])
            for q in range(4):
                dst = G[o + q, tp:tp + m]
                for c in range(C4, C):
                    _axpy(dst, G[c, tp:tp + m], A[o + q, c])
            _own4_upper(d0, d1, d2, d3, A[o:o + 4, o:o + 4], e[o], e[o + 1], e[o + 2], e[o + 3])
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
                m = (h1 - h0 + 1) * N
                a = acc[i, j]
                for c in range(0, C4, 4):
                    g0, g1, g2, g3 = G[c, tp:tp + m], G[c + 1, tp:tp + m], G[c + 2, tp:tp + m], G[c + 3, tp:tp + m]
                    for o in range(0, C4, 4):
                        _dots4(g0, g1, g2, g3, Z[o, sp:sp + m], Z[o + 1, sp:sp + m], Z[o + 2, sp:sp + m],
                               Z[o + 3, sp:sp + m], a[c:c + 4, o:o + 4])
                for c in range(C):
                    g = G[c, tp:tp + m]
                    for o in range(C4 if c < C4 else 0, C):
                        a[c, o] += _dot(g, Z[o, sp:sp + m])
    for c in range(C):
        for o in range(C):
            for i in range(k):
                for j in range(k):
                    out[c, o, i, j] = acc[i, j, c, o]
    return out
