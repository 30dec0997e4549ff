r"""The dynamic hypernetwork of Ha, Dai & Le, "HyperNetworks" (2016) §3.2: :class:`HyperLSTM`, an
LSTM whose weights are rescaled at every time step by a small LSTM that runs beside it.

The static hypernetworks of §3.1 are in :mod:`nograd.models.hypernet`. The helpers here are the
grouped layer norm the HyperLSTM applies to its gates and cell (forward, backward and jvp) and the
per-gate projection of the embeddings (eq. 12); the LSTM cell's own maps come from
:mod:`nograd.layers.recurrent`, shared with :class:`~nograd.layers.recurrent.LSTM`.

>>> import numpy as np
>>> cell = HyperLSTM(3, 5, hyper_size=4, embed_size=2, rng=0)
>>> cell(np.zeros((2, 6, 3), np.float32)).shape
(2, 6, 5)
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_dtype, check_positive
from ..core.module import Module
from ..layers.recurrent import RecurrentBase, lstm_cell_jvp, lstm_gates, lstm_gates_vjp

__all__ = ["HyperLSTM"]


def _gln(a, w, b, groups, eps):
    """Layer norm of each of ``groups`` equal slices of the last axis; returns (out, (n, sd))."""
    B = a.shape[0]
    a3 = a.reshape(B, groups, -1)
    mu = a3.mean(axis=2, keepdims=True)
    sd = np.sqrt(((a3 - mu) ** 2).mean(axis=2, keepdims=True) + eps)
    n = ((a3 - mu) / sd).reshape(B, -1)
    return n * w + b, (n, sd)


def _gln_back(dout, c, w, groups):
    """Cotangents ``(da, dw, db)`` of :func:`_gln`."""
    n, sd = c
    B = n.shape[0]
    dn = (dout * w).reshape(B, groups, -1)
    n3 = n.reshape(B, groups, -1)
    da = (dn - dn.mean(axis=2, keepdims=True) - n3 * (dn * n3).mean(axis=2, keepdims=True)) / sd
    return da.reshape(B, -1), (dout * n).sum(axis=0), dout.sum(axis=0)


def _gln_jvp(a, da, w, b, dw, db, groups, eps):
    out, (n, sd) = _gln(a, w, b, groups, eps)
    B = a.shape[0]
    d3, n3 = da.reshape(B, groups, -1), n.reshape(B, groups, -1)
    dn = ((d3 - d3.mean(axis=2, keepdims=True) - n3 * (d3 * n3).mean(axis=2, keepdims=True)) / sd)
    dout = dn.reshape(B, -1) * w
    if dw is not None:
        dout = dout + n * dw
    if db is not None:
        dout = dout + db
    return out, dout


def _project(z, W):
    """``d[b,k,g] = W[k,g] z[b,k,g]``: ``z (B, 3, 4, N_z)``, ``W (3, 4, H, N_z)`` -> ``(B, 3, 4, H)``."""
    return np.matmul(z.transpose(1, 2, 0, 3), W.transpose(0, 1, 3, 2)).transpose(2, 0, 1, 3)


class HyperLSTM(RecurrentBase):
    r"""The HyperLSTM of Ha, Dai & Le (2016) §3.2: a small LSTM generates, at every step, the row
    scalings and the bias of the main LSTM's weights.

    Shapes: ``x (B, T, F) -> y (B, T, H)``; state ``(h, c, ĥ, ĉ)`` with ``ĥ, ĉ (B, Ĥ)``.

    The hyper LSTM (hidden size ``Ĥ = hyper_size``) reads :math:`\hat x_t = [h_{t-1}; x_t]`; from its
    output :math:`\hat h_t` come, per gate :math:`y \in \{i, f, g, o\}`, the embeddings (eq. 11)
    :math:`z_h = W_{h\hat h}\hat h_t + b_{h\hat h}`, :math:`z_x = W_{x\hat h}\hat h_t + b_{x\hat h}`,
    :math:`z_b = W_{b\hat h}\hat h_t` (size ``N_z = embed_size``) and their linear projections (eq. 12)
    :math:`d_h = W_{hz} z_h`, :math:`d_x = W_{xz} z_x`, :math:`b = W_{bz} z_b + b_0`. The main gates are

    .. math::
        a^y_t = \mathrm{LN}\big(d^y_h \odot W^y_h h_{t-1} + d^y_x \odot (W^y_x x_t + b^y_x) + b^y(z_b)\big),
        \quad c_t = f c_{t-1} + i g, \quad h_t = o \tanh \mathrm{LN}(c_t),

    with layer norm per gate (§3.2 and appendix). Initialisation as the paper's code: the z-weights
    start at 0 with bias 1 and :math:`W_{hz}, W_{xz}` at the constant :math:`0.1/N_z`, so every
    scaling starts at 0.1; :math:`W_{bz}` starts at 0.

    Arrays: ``weight_ih (4H + 4Ĥ, F)`` stacks :math:`W_x` and the hyper LSTM's input weights (one GEMM
    for all steps), ``bias_ih`` their biases; ``weight_hh (4H, H)`` is :math:`W_h`, ``bias_hh`` is
    :math:`b_0`; ``hyper_weight_hh (4Ĥ, H + Ĥ)`` acts on :math:`[h_{t-1}; \hat h_{t-1}]`;
    ``z_weight (3·4N_z, Ĥ)``, ``z_bias`` (the :math:`z_b` rows stay without bias, their entries are
    zero and get no gradient); ``d_weight (3, 4, H, N_z)``; ``ln_gates_*`` ``(4H,)``, ``ln_c_*`` ``(H,)``.
    """

    state_parts = 4

    def __init__(self, input_size, hidden_size, *, hyper_size=16, embed_size=4, eps=1e-5, rng=None,
                 dtype=np.float32):
        check_positive(input_size, "input_size", integer=True)
        check_positive(hidden_size, "hidden_size", integer=True)
        check_positive(hyper_size, "hyper_size", integer=True)
        check_positive(embed_size, "embed_size", integer=True)
        Module.__init__(self)
        dt = check_dtype(dtype)
        rng = as_rng(rng)
        F, H, Hh, Nz = int(input_size), int(hidden_size), int(hyper_size), int(embed_size)
        self.input_size, self.hidden_size, self.hyper_size, self.embed_size = F, H, Hh, Nz
        self.eps = float(eps)
        k, kh = 1 / np.sqrt(H), 1 / np.sqrt(Hh)
        u = lambda b, shape: rng.uniform(-b, b, shape).astype(dt)  # noqa: E731
        self._own["weight_ih"] = np.concatenate([u(k, (4 * H, F)), u(kh, (4 * Hh, F))])
        self._own["bias_ih"] = np.zeros(4 * H + 4 * Hh, dt)
        self._own["weight_hh"] = u(k, (4 * H, H))
        self._own["bias_hh"] = np.zeros(4 * H, dt)
        self._own["hyper_weight_hh"] = u(kh, (4 * Hh, H + Hh))
        self._own["z_weight"] = np.zeros((3 * 4 * Nz, Hh), dt)
        self._own["z_weight"][2 * 4 * Nz:] = rng.normal(0, 0.01, (4 * Nz, Hh))
        self._own["z_bias"] = np.concatenate([np.ones(2 * 4 * Nz), np.zeros(4 * Nz)]).astype(dt)
        self._own["d_weight"] = np.concatenate([np.full((2, 4, H, Nz), 0.1 / Nz), np.zeros((1, 4, H, Nz))]).astype(dt)
        self._own["ln_gates_weight"] = np.ones(4 * H, dt)
        self._own["ln_gates_bias"] = np.zeros(4 * H, dt)
        self._own["ln_c_weight"] = np.ones(H, dt)
        self._own["ln_c_bias"] = np.zeros(H, dt)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, hyper_size={self.hyper_size}, embed_size={self.embed_size}"

    def _state_sizes(self):
        H, Hh = self.hidden_size, self.hyper_size
        return (H, H, Hh, Hh)

    def _z_mask(self, dtype):
        m = np.ones(3 * 4 * self.embed_size, dtype)
        m[2 * 4 * self.embed_size:] = 0
        return m

    def _cell(self, xp, S, p):
        H, Hh, Nz = self.hidden_size, self.hyper_size, self.embed_size
        h_prev, c_prev, hh_prev, ch_prev = S
        B = h_prev.shape[0]
        # the hyper LSTM on [h_{t-1}; x_t]
        ah = xp[:, 4 * H:] + np.concatenate([h_prev, hh_prev], axis=1) @ p["hyper_weight_hh"].T
        hi, hf, hg, ho = lstm_gates(ah, Hh)
        ch = hf * ch_prev + hi * hg
        tch = np.tanh(ch)
        hh = ho * tch
        # embeddings and the scalings d_h, d_x and the bias b(z_b) (eqs. 11-12)
        z = (hh @ p["z_weight"].T + p["z_bias"] * self._z_mask(hh.dtype)).reshape(B, 3, 4, Nz)
        d = _project(z, p["d_weight"]).reshape(B, 3, 4 * H)
        u = h_prev @ p["weight_hh"].T
        v = xp[:, :4 * H]
        pre = d[:, 0] * u + d[:, 1] * v + d[:, 2] + p["bias_hh"]
        a, lg = _gln(pre, p["ln_gates_weight"], p["ln_gates_bias"], 4, self.eps)
        i, f, g, o = lstm_gates(a, H)
        c = f * c_prev + i * g
        cn, lc = _gln(c, p["ln_c_weight"], p["ln_c_bias"], 1, self.eps)
        tc = np.tanh(cn)
        h = o * tc
        cache = (h_prev, c_prev, hh_prev, ch_prev, hi, hf, hg, ho, tch, hh, z, d, u, v,
                 lg, i, f, g, o, lc, tc)
        return (h, c, hh, ch), cache

    def _cell_back(self, cache, dS, p, gacc):
        H = self.hidden_size
        (h_prev, c_prev, hh_prev, ch_prev, hi, hf, hg, ho, tch, hh, z, d, u, v,
         lg, i, f, g, o, lc, tc) = cache
        B = h_prev.shape[0]
        dh, dc, dhh, dch = dS
        # main LSTM with layer norms
        dcn, dw, db = _gln_back(dh * o * (1 - tc * tc), lc, p["ln_c_weight"], 1)
        gacc["ln_c_weight"] += dw
        gacc["ln_c_bias"] += db
        dc = dc + dcn
        da = lstm_gates_vjp(dh, dc, (i, f, g, o), c_prev, tc)
        dpre, dw, db = _gln_back(da, lg, p["ln_gates_weight"], 4)
        gacc["ln_gates_weight"] += dw
        gacc["ln_gates_bias"] += db
        gacc["bias_hh"] += dpre.sum(axis=0)
        du, dv = dpre * d[:, 0], dpre * d[:, 1]
        gacc["weight_hh"] += du.T @ h_prev
        dh_prev = du @ p["weight_hh"]
        dd = np.stack([dpre * u, dpre * v, dpre], axis=1).reshape(B, 3, 4, H)
        gacc["d_weight"] += np.matmul(dd.transpose(1, 2, 3, 0), z.transpose(1, 2, 0, 3))
        dz = np.matmul(dd.transpose(1, 2, 0, 3), p["d_weight"]).transpose(2, 0, 1, 3).reshape(B, -1)
        gacc["z_weight"] += dz.T @ hh
        gacc["z_bias"] += dz.sum(axis=0) * self._z_mask(dz.dtype)
        dhh = dhh + dz @ p["z_weight"]
        # the hyper LSTM
        dch = dch + dhh * ho * (1 - tch * tch)
        dah = lstm_gates_vjp(dhh, dch, (hi, hf, hg, ho), ch_prev, tch)
        gacc["hyper_weight_hh"] += dah.T @ np.concatenate([h_prev, hh_prev], axis=1)
        dcat = dah @ p["hyper_weight_hh"]
        dxp = np.concatenate([dv, dah], axis=1)
        return dxp, (dh_prev + dcat[:, :H], dc * f, dcat[:, H:], dch * hf)

    def _cell_jvp(self, xp, dxp, S, dS, p, dp):
        H, Hh, Nz = self.hidden_size, self.hyper_size, self.embed_size
        h_prev, c_prev, hh_prev, ch_prev = S
        dh_prev, dc_prev, dhh_prev, dch_prev = dS
        B = h_prev.shape[0]
        W = p["hyper_weight_hh"]
        cat, dcat = np.concatenate([h_prev, hh_prev], axis=1), np.concatenate([dh_prev, dhh_prev], axis=1)
        ah = xp[:, 4 * H:] + cat @ W.T
        dah = dxp[:, 4 * H:] + dcat @ W.T
        if "hyper_weight_hh" in dp:
            dah = dah + cat @ dp["hyper_weight_hh"].T
        hgates = lstm_gates(ah, Hh)
        ch, dch, dho = lstm_cell_jvp(hgates, dah, ch_prev, dch_prev)
        ho = hgates[3]
        tch = np.tanh(ch)
        hh = ho * tch
        dhh = dho * tch + ho * (1 - tch * tch) * dch
        mask = self._z_mask(hh.dtype)
        z = (hh @ p["z_weight"].T + p["z_bias"] * mask).reshape(B, 3, 4, Nz)
        dz = dhh @ p["z_weight"].T
        if "z_weight" in dp:
            dz = dz + hh @ dp["z_weight"].T
        if "z_bias" in dp:
            dz = dz + dp["z_bias"] * mask
        dz = dz.reshape(B, 3, 4, Nz)
        d = _project(z, p["d_weight"]).reshape(B, 3, 4 * H)
        dd = _project(dz, p["d_weight"])
        if "d_weight" in dp:
            dd = dd + _project(z, dp["d_weight"])
        dd = dd.reshape(B, 3, 4 * H)
        u = h_prev @ p["weight_hh"].T
        du = dh_prev @ p["weight_hh"].T
        if "weight_hh" in dp:
            du = du + h_prev @ dp["weight_hh"].T
        v, dv = xp[:, :4 * H], dxp[:, :4 * H]
        pre = d[:, 0] * u + d[:, 1] * v + d[:, 2] + p["bias_hh"]
        dpre = dd[:, 0] * u + d[:, 0] * du + dd[:, 1] * v + d[:, 1] * dv + dd[:, 2]
        if "bias_hh" in dp:
            dpre = dpre + dp["bias_hh"]
        a, da = _gln_jvp(pre, dpre, p["ln_gates_weight"], p["ln_gates_bias"], dp.get("ln_gates_weight"),
                         dp.get("ln_gates_bias"), 4, self.eps)
        gates = lstm_gates(a, H)
        c, dc, do = lstm_cell_jvp(gates, da, c_prev, dc_prev)
        o = gates[3]
        cn, dcn = _gln_jvp(c, dc, p["ln_c_weight"], p["ln_c_bias"], dp.get("ln_c_weight"),
                           dp.get("ln_c_bias"), 1, self.eps)
        tc = np.tanh(cn)
        return (o * tc, c, hh, ch), (do * tc + o * (1 - tc * tc) * dcn, dc, dhh, dch)
