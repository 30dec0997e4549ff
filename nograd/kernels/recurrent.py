r"""Compiled loops of the recurrent layers' batched local backward and of DSF's feedback scan
(Numba, ``cache=True``); loaded on first use by :mod:`nograd.layers.recurrent_stack` and
:mod:`nograd.rules.dsf`, so ``import nograd`` stays free of Numba. Their references are the
written-out formulas in ``tests/rules/test_dsf.py``.

- :func:`gru_gates_back`: the GRU's gate backward for ``R`` rows in one pass,

  .. math::
      \bar a_n = \bar h (1 - z)(1 - n^2),\quad \bar a_r = \bar a_n H_{p,n}\, r (1 - r),\quad
      \bar a_z = \bar h (h_{t-1} - n) z (1 - z),\quad \bar n_r = \bar a_n r.

- :func:`doubling_scan`: :math:`\delta_t = e_t + a \odot \delta_{t+1}` for all ``t`` by recursive
  doubling (Hillis & Steele 1986), in place on time-major rows.
"""
from __future__ import annotations

import numba as nb


@nb.njit(cache=True, nogil=True)
def gru_gates_back(dh, h_prev, hpn, r, z, n, dxp, dnr):
    """Write ``dxp = [ā_r, ā_z, ā_n]`` ``(R, 3H)`` and ``dnr = ā_n ⊙ r`` ``(R, H)`` from the rows
    ``dh, h_prev, hpn, r, z, n (R, H)`` (C-contiguous; row slices, so the inner loop vectorises)."""
    H = dh.shape[1]
    for i in range(dh.shape[0]):
        d_, hprev_, hpn_, r_, z_, n_ = dh[i], h_prev[i], hpn[i], r[i], z[i], n[i]
        ar, az, an, nr = dxp[i, :H], dxp[i, H:2 * H], dxp[i, 2 * H:], dnr[i]
        for j in range(H):
            d, zz, nn, rr = d_[j], z_[j], n_[j], r_[j]
            dan = d * (1.0 - zz) * (1.0 - nn * nn)
            ar[j] = dan * hpn_[j] * rr * (1.0 - rr)
            az[j] = d * (hprev_[j] - nn) * zz * (1.0 - zz)
            an[j] = dan
            nr[j] = dan * rr


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
