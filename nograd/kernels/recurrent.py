r"""Compiled loops of the recurrent layers' batched local backward and of DSF's feedback filter
(Numba, ``cache=True``); loaded on first use by :mod:`nograd.layers.recurrent_stack` and
:mod:`nograd.rules.dsf`, so ``import nograd`` stays free of Numba. Their NumPy references, with
the same signatures, are in :mod:`nograd.kernels.recurrent_ref`.

- :func:`gru_gates_back`: the GRU's gate backward for ``R`` rows in one pass, with the bias
  gradients summed on the way,

  .. math::
      \bar a_n = \bar h (1 - z)(1 - n^2),\quad \bar a_r = \bar a_n H_{p,n}\, r (1 - r),\quad
      \bar a_z = \bar h (h_{t-1} - n) z (1 - z),\quad \bar n_r = \bar a_n r.

- :func:`lstm_gates_back`: the LSTM's gate backward for ``R`` rows in one pass (the total cell
  cotangent, then the four gates' pre-activation cotangents), with their column sums,

  .. math::
      \bar c = \bar c_{\text{carried}} + \bar h\, o (1 - \tanh^2 c_t),\quad
      \bar a = [\bar c g\, i(1-i),\; \bar c c_{t-1} f(1-f),\; \bar c i (1-g^2),\;
      \bar h \tanh c_t\, o(1-o)].

- :func:`doubling_scan`: :math:`\delta_t = e_t + a \odot \delta_{t+1}` for all ``t`` by recursive
  doubling (Hillis & Steele 1986), in place on time-major rows.
- :func:`linear_recurrence`: the same recursion run from the last step, each step vectorised over
  the ``B·H`` lanes (``O(TBH)`` work, the least), reading ``(B, T, H)`` and writing time-major.
"""
from __future__ import annotations

import numba as nb


@nb.njit(cache=True, nogil=True)
def gru_gates_back(dh, h_prev, hp, r, z, n, dxp, dnr, db):
    """Write ``dxp = [ā_r, ā_z, ā_n]`` ``(R, 3H)`` and ``dnr = ā_n ⊙ r`` ``(R, H)`` from the rows
    ``dh, h_prev, r, z, n (R, H)`` and ``hp (R, 3H)`` (:math:`H_p`; its candidate third
    ``hp[:, 2H:]`` is read), and add the column sums of ``dxp`` and of ``dnr`` to
    ``db[:3H]`` and ``db[3H:]`` (``db (4H,)``, float64). Rows must be contiguous (row slices,
    so the inner loop vectorises); the gate maths run in float64, stored in ``dxp``'s dtype."""
    H = dh.shape[1]
    sr, sz, sn, snr = db[:H], db[H:2 * H], db[2 * H:3 * H], db[3 * H:]   # float64 accumulators
    for i in range(dh.shape[0]):
        d_, hprev_, hpn_, r_, z_, n_ = dh[i], h_prev[i], hp[i, 2 * H:], r[i], z[i], n[i]
        ar, az, an, nr = dxp[i, :H], dxp[i, H:2 * H], dxp[i, 2 * H:], dnr[i]
        for j in range(H):
            d, zz, nn, rr = d_[j], z_[j], n_[j], r_[j]
            dan = d * (1.0 - zz) * (1.0 - nn * nn)
            a_r = dan * hpn_[j] * rr * (1.0 - rr)
            a_z = d * (hprev_[j] - nn) * zz * (1.0 - zz)
            a_nr = dan * rr
            ar[j], az[j], an[j], nr[j] = a_r, a_z, dan, a_nr
            sr[j] += a_r
            sz[j] += a_z
            sn[j] += dan
            snr[j] += a_nr


@nb.njit(cache=True, nogil=True)
def lstm_gates_back(dh, dc, c_prev, i, f, g, o, tc, da, db):
    """Write ``da = [ā_i, ā_f, ā_g, ā_o]`` ``(R, 4H)`` from the rows ``dh`` (cotangent of
    :math:`h_t`), ``dc`` (the cotangent of :math:`c_t` carried from later steps), ``c_prev``, the
    gates ``i, f, g, o`` and ``tc`` = :math:`\tanh c_t` (each ``(R, H)``), and add its column sums
    to ``db (4H,)`` (float64). Rows must be contiguous; the maths run in float64, stored in
    ``da``'s dtype."""
    H = dh.shape[1]
    si, sf, sg, so = db[:H], db[H:2 * H], db[2 * H:3 * H], db[3 * H:]     # float64 accumulators
    for r in range(dh.shape[0]):
        dh_, dc_, cp_, i_, f_, g_, o_, tc_ = dh[r], dc[r], c_prev[r], i[r], f[r], g[r], o[r], tc[r]
        ai, af, ag, ao = da[r, :H], da[r, H:2 * H], da[r, 2 * H:3 * H], da[r, 3 * H:]
        for j in range(H):
            d, t, oo, ii, ff, gg = dh_[j], tc_[j], o_[j], i_[j], f_[j], g_[j]
            c = dc_[j] + d * oo * (1.0 - t * t)
            a_i = c * gg * ii * (1.0 - ii)
            a_f = c * cp_[j] * ff * (1.0 - ff)
            a_g = c * ii * (1.0 - gg * gg)
            a_o = d * t * oo * (1.0 - oo)
            ai[j], af[j], ag[j], ao[j] = a_i, a_f, a_g, a_o
            si[j] += a_i
            sf[j] += a_f
            sg[j] += a_g
            so[j] += a_o


@nb.njit(cache=True, nogil=True)
def doubling_scan(out, a, block=256):
    """Recursive doubling in place on time-major ``out (T, N)`` with ``a (N,)``: the pass of stride
    ``d`` sets ``out[t] += a^d out[t + d]`` for ascending ``t``, so ``out[t + d]`` is still the
    previous pass's value when it is read (no second buffer). The columns are independent: all
    passes run on one block of ``block`` columns (``T·block`` entries, kept in cache) at a time."""
    T, N = out.shape
    for k0 in range(0, N, block):
        k1 = min(N, k0 + block)
        ad = a[k0:k1].copy()
        d = 1
        while d < T:
            for t in range(T - d):
                row, src = out[t, k0:k1], out[t + d, k0:k1]
                for k in range(k1 - k0):
                    row[k] += ad[k] * src[k]
            for k in range(k1 - k0):
                ad[k] = ad[k] * ad[k]
            d *= 2


@nb.njit(cache=True, nogil=True)
def linear_recurrence(e, a, out):
    """``out[t, b] = e[b, t] + a ⊙ out[t + 1, b]`` for ``t = T-1 … 0`` (``out[T] = 0``): ``e (B, T, H)``
    (any strides; its rows ``e[b, t]`` contiguous for speed), ``a (H,)``, ``out (T, B, H)``
    time-major. One pass from the last step; every step is ``B·H`` independent multiply-adds."""
    B, T, H = e.shape
    for b in range(B):
        o, src = out[T - 1, b], e[b, T - 1]
        for j in range(H):
            o[j] = src[j]
    for t in range(T - 2, -1, -1):
        for b in range(B):
            o, nxt, src = out[t, b], out[t + 1, b], e[b, t]
            for j in range(H):
                o[j] = src[j] + a[j] * nxt[j]
