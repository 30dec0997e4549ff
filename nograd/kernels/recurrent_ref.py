"""Plain NumPy references for :mod:`nograd.kernels.recurrent` (same signatures, same results up to
rounding): the formulas written with whole-array operations, used by the tests to check the
compiled loops."""
from __future__ import annotations

import numpy as np


def gru_gates_back(dh, h_prev, hp, r, z, n, dxp, dnr, db):
    """:func:`nograd.kernels.recurrent.gru_gates_back`: the GRU's gate backward over ``R`` rows,
    written into ``dxp (R, 3H)`` and ``dnr (R, H)``; the column sums added to ``db (4H,)``."""
    H = dh.shape[1]
    dan = dh * (1.0 - z) * (1.0 - n * n)
    dxp[:, :H] = dan * hp[:, 2 * H:] * r * (1.0 - r)
    dxp[:, H:2 * H] = dh * (h_prev - n) * z * (1.0 - z)
    dxp[:, 2 * H:] = dan
    dnr[...] = dan * r
    db[:3 * H] += dxp.sum(axis=0, dtype=np.float64)
    db[3 * H:] += dnr.sum(axis=0, dtype=np.float64)


def lstm_gates_back(dh, dc, c_prev, i, f, g, o, tc, da, db):
    """:func:`nograd.kernels.recurrent.lstm_gates_back`: the LSTM's gate backward over ``R`` rows
    (as ``LSTM._cell_back`` without layer norm), written into ``da (R, 4H)``; its column sums
    added to ``db (4H,)``."""
    H = dh.shape[1]
    c = dc + dh * o * (1.0 - tc * tc)
    da[:, :H] = c * g * i * (1.0 - i)
    da[:, H:2 * H] = c * c_prev * f * (1.0 - f)
    da[:, 2 * H:3 * H] = c * i * (1.0 - g * g)
    da[:, 3 * H:] = dh * tc * o * (1.0 - o)
    db += da.sum(axis=0, dtype=np.float64)


def doubling_scan(out, a, block=256):
    """:func:`nograd.kernels.recurrent.doubling_scan`: the passes ``out[t] += a^d out[t + d]``,
    ``d = 1, 2, 4, …``, each on the previous pass's values (``block`` is ignored)."""
    T = out.shape[0]
    ad, d = a.copy(), 1
    while d < T:
        out[:T - d] += ad * out[d:].copy()
        ad = ad * ad
        d *= 2


def linear_recurrence(e, a, out):
    """:func:`nograd.kernels.recurrent.linear_recurrence`: ``out[t] = e[:, t] + a ⊙ out[t + 1]``
    from the last step, time-major ``out (T, B, H)``."""
    T = e.shape[1]
    out[T - 1] = e[:, T - 1]
    for t in range(T - 2, -1, -1):
        out[t] = e[:, t] + a * out[t + 1]
