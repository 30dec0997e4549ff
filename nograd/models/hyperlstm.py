r"""The dynamic hypernetwork of Ha, Dai & Le, "HyperNetworks" (ICLR 2017) §3.2 and appendix
A.2.2-A.2.3: :class:`HyperLSTM`, an LSTM whose weights are rescaled at every time step by a small
LSTM that runs beside it.

The static hypernetworks of §3.1 are in :mod:`nograd.models.hypernet`. The helpers here are the
grouped layer norm both cells apply to their gates and cells (forward, backward and jvp), one
layer-normalised LSTM cell step built on it (eqs. 10 and 13) and the per-gate projection of the
embeddings (eq. 12); the gate maps come from :mod:`nograd.layers.recurrent`, shared with
:class:`~nograd.layers.recurrent.LSTM`.

>>> import numpy as np
>>> cell = HyperLSTM(3, 5, hyper_size=4, embed_size=2, rng=0)
>>> cell(np.zeros((2, 6, 3), np.float32)).shape
(2, 6, 5)
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_dtype, check_float, check_like, check_positive
from ..core.init import orthogonal
from ..core.module import Module
from ..layers.linear import affine_tangent
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


def _ln_cell(a, c_prev, p, pre, n, eps):
    r"""One layer-normalised LSTM step from the gate pre-activations ``a (B, 4n)`` (eqs. 10, 13):
    :math:`i, f, g, o` from :math:`\mathrm{LN}` of each gate's slice (gains and shifts
    ``p[pre + "ln_gates_*"]``), :math:`c = f c_{t-1} + i g`, :math:`h = o \tanh \mathrm{LN}(c)`
    (``p[pre + "ln_c_*"]``). Returns ``(h, c, cache)``."""
    an, lg = _gln(a, p[pre + "ln_gates_weight"], p[pre + "ln_gates_bias"], 4, eps)
    gates = lstm_gates(an, n)
    c = gates[1] * c_prev + gates[0] * gates[2]
    cn, lc = _gln(c, p[pre + "ln_c_weight"], p[pre + "ln_c_bias"], 1, eps)
    tc = np.tanh(cn)
    return gates[3] * tc, c, (gates, c_prev, lg, lc, tc)


def _ln_cell_back(dh, dc, cache, p, pre, g):
    """Reverse mode of :func:`_ln_cell`: adds the layer-norm gradients to ``g``; returns the
    cotangents ``(da, dc_prev)``. ``dc`` is the carried cotangent of ``c``."""
    gates, c_prev, lg, lc, tc = cache
    dcn, dw, db = _gln_back(dh * gates[3] * (1 - tc * tc), lc, p[pre + "ln_c_weight"], 1)
    g[pre + "ln_c_weight"] += dw
    g[pre + "ln_c_bias"] += db
    dc = dc + dcn
    dan = lstm_gates_vjp(dh, dc, gates, c_prev, tc)
    da, dw, db = _gln_back(dan, lg, p[pre + "ln_gates_weight"], 4)
    g[pre + "ln_gates_weight"] += dw
    g[pre + "ln_gates_bias"] += db
    return da, dc * gates[1]


def _ln_cell_jvp(a, da, c_prev, dc_prev, p, dp, pre, n, eps):
    """Forward mode of :func:`_ln_cell`: ``(h, c, dh, dc)``."""
    k = pre + "ln_gates_"
    an, dan = _gln_jvp(a, da, p[k + "weight"], p[k + "bias"], dp.get(k + "weight"), dp.get(k + "bias"), 4, eps)
    gates = lstm_gates(an, n)
    c, dc, do = lstm_cell_jvp(gates, dan, c_prev, dc_prev)
    k = pre + "ln_c_"
    cn, dcn = _gln_jvp(c, dc, p[k + "weight"], p[k + "bias"], dp.get(k + "weight"), dp.get(k + "bias"), 1, eps)
    tc = np.tanh(cn)
    o = gates[3]
    return o * tc, c, do * tc + o * (1 - tc * tc) * dcn, dc


def _project(z, W):
    """``d[b,k,g] = W[k,g] z[b,k,g]``: ``z (B, 3, 4, N_z)``, ``W (3, 4, H, N_z)`` -> ``(B, 3, 4, H)``."""
    return np.matmul(z.transpose(1, 2, 0, 3), W.transpose(0, 1, 3, 2)).transpose(2, 0, 1, 3)


class HyperLSTM(RecurrentBase):
    r"""The HyperLSTM of Ha, Dai & Le (2016) §3.2, appendix A.2.2 (eqs. 10-13): a small LSTM
    generates, at every step, the row scalings and the bias of the main LSTM's weights.

    Shapes: ``x (B, T, F) -> y (B, T, H)``; state ``(h, c, ĥ, ĉ)`` with ``ĥ, ĉ (B, Ĥ)``.

    The hyper LSTM (``Ĥ = hyper_size`` units) is a layer-normalised LSTM (eq. 10) on
    :math:`\hat x_t = [h_{t-1}; x_t]`: :math:`\hat y_t = \mathrm{LN}(\hat W^{\hat y}_{\hat x}\hat x_t +
    \hat W^{\hat y}_{\hat h}\hat h_{t-1} + \hat b^{\hat y})` per gate, :math:`\hat c_t = \sigma(\hat f_t)
    \hat c_{t-1} + \sigma(\hat i_t)\tanh\hat g_t`, :math:`\hat h_t = \sigma(\hat o_t)\tanh\mathrm{LN}(\hat c_t)`.
    From :math:`\hat h_t` come, for each gate :math:`y \in \{i, f, g, o\}`, the embeddings (eq. 11,
    size ``N_z = embed_size``) :math:`z^y_h = W^y_{\hat h h}\hat h_t + b^y_{\hat h h}`,
    :math:`z^y_x = W^y_{\hat h x}\hat h_t + b^y_{\hat h x}`, :math:`z^y_b = W^y_{\hat h b}\hat h_t`, and
    the main gates (eqs. 12-13)

    .. math::
        y_t = \mathrm{LN}\big(d^y_h \odot W^y_h h_{t-1} + d^y_x \odot W^y_x x_t + b^y\big),\quad
        d^y_h = W^y_{hz} z^y_h,\; d^y_x = W^y_{xz} z^y_x,\; b^y = W^y_{bz} z^y_b + b^y_0,

        c_t = \sigma(f_t) c_{t-1} + \sigma(i_t) \tanh g_t, \quad h_t = \sigma(o_t) \tanh \mathrm{LN}(c_t),

    every LN with its own gain and shift, per gate. Where the paper and the authors' TensorFlow cell
    (``HyperLSTMCell`` in David Ha's "supercell", linked from A.2.3) differ from each other or from
    this class:

    - eq. 11 writes the embeddings from :math:`\hat h_{t-1}`; §3.2's text ("this vector [ĥ_t] is
      then used to generate the weights for the main RNN at the same timestep") and the authors'
      code use :math:`\hat h_t`, as here;
    - the authors' code adds ``forget_bias = 1`` to both cells' forget pre-activations after the
      layer norm. Here the forget gates' LN shift starts at ``forget_bias`` instead: the same outputs
      and gradients throughout training (only weight decay, if used, would see the offset), with the
      paper's equations unchanged; ``forget_bias=0`` gives the equations' initial state;
    - the authors' hyper cell has no bias before its layer norm; eq. 10's :math:`\hat b` is kept;
    - ``eps`` (default ``1e-3``, the authors' value) is added to the variance in every layer norm;
    - the recurrent dropout of eq. 13 is left out (the layer is deterministic).

    Initialisation (A.2.3; the authors' code draws :math:`W_x` uniformly instead): every weight
    matrix of either LSTM orthogonal per gate (:math:`W^y_h`,
    :math:`W^y_x`, :math:`\hat W^{\hat y}_{\hat h}`, :math:`\hat W^{\hat y}_{\hat x}`), biases 0; the
    :math:`z_h, z_x` weights 0 with biases 1, the :math:`z_b` weights :math:`\mathcal N(0, 0.01^2)`;
    :math:`W_{hz}, W_{xz}` the constant :math:`0.1/N_z`, so every scaling starts at 0.1
    (Cooijmans et al.'s recurrent batch-norm trick); :math:`W_{bz} = 0`, :math:`b_0 = 0`; LN gains 1.

    Arrays: ``weight_ih (4H + 4Ĥ, F)`` stacks :math:`W_x` and the ``x`` columns of
    :math:`\hat W_{\hat x}` (one GEMM for all steps; neither has a bias there, eq. 12 scales
    :math:`W_x x_t` alone); ``weight_hh (4H, H)`` is :math:`W_h`, ``bias_hh (4H,)`` is :math:`b_0`;
    ``hyper_weight_hh (4Ĥ, H + Ĥ)`` acts on :math:`[h_{t-1}; \hat h_{t-1}]`, ``hyper_bias (4Ĥ,)`` is
    :math:`\hat b`; ``z_weight (3·4N_z, Ĥ)`` (rows: the four :math:`z_h`, four :math:`z_x`, four
    :math:`z_b` blocks), ``z_bias (2·4N_z,)``; ``d_weight (3, 4, H, N_z)`` is
    :math:`(W_{hz}, W_{xz}, W_{bz})` per gate; ``ln_gates_*`` ``(4H,)``, ``ln_c_*`` ``(H,)`` and
    ``hyper_ln_gates_*`` ``(4Ĥ,)``, ``hyper_ln_c_*`` ``(Ĥ,)``. Gates are in PyTorch's order i, f, g, o.

    Cost per step: the main LSTM's two GEMMs plus :math:`O(B(Ĥ(H + Ĥ) + 12 N_z(Ĥ + H)))`.
    """

    state_parts = 4

    def __init__(self, input_size, hidden_size, *, hyper_size=16, embed_size=4, eps=1e-3,
                 forget_bias=1.0, rng=None, dtype=np.float32):
        check_positive(input_size, "input_size", integer=True)
        check_positive(hidden_size, "hidden_size", integer=True)
        check_positive(hyper_size, "hyper_size", integer=True)
        check_positive(embed_size, "embed_size", integer=True)
        Module.__init__(self)
        dt = check_dtype(dtype)
        rng = as_rng(rng)
        F, H, Hh, Nz = int(input_size), int(hidden_size), int(hyper_size), int(embed_size)
        self.input_size, self.hidden_size, self.hyper_size, self.embed_size = F, H, Hh, Nz
        self.eps = check_float(eps, "eps", low=0, low_open=True)
        self.forget_bias = check_float(forget_bias, "forget_bias")

        def orth(n, m):                 # four gate blocks, each (n, m) orthogonal
            return np.concatenate([orthogonal((n, m), rng, np.float64) for _ in range(4)])

        what = orth(Hh, H + F)          # Ŵ_x̂ on [h; x]
        self._own["weight_ih"] = np.concatenate([orth(H, F), what[:, H:]]).astype(dt)
        self._own["weight_hh"] = orth(H, H).astype(dt)
        self._own["bias_hh"] = np.zeros(4 * H, dt)
        self._own["hyper_weight_hh"] = np.concatenate([what[:, :H], orth(Hh, Hh)], axis=1).astype(dt)
        self._own["hyper_bias"] = np.zeros(4 * Hh, dt)
        self._own["z_weight"] = np.zeros((3 * 4 * Nz, Hh), dt)
        self._own["z_weight"][2 * 4 * Nz:] = rng.normal(0, 0.01, (4 * Nz, Hh))
        self._own["z_bias"] = np.ones(2 * 4 * Nz, dt)
        self._own["d_weight"] = np.concatenate([np.full((2, 4, H, Nz), 0.1 / Nz), np.zeros((1, 4, H, Nz))]).astype(dt)
        for pre, n in (("", H), ("hyper_", Hh)):
            self._own[pre + "ln_gates_weight"] = np.ones(4 * n, dt)
            self._own[pre + "ln_gates_bias"] = np.zeros(4 * n, dt)
            self._own[pre + "ln_gates_bias"][n:2 * n] = self.forget_bias
            self._own[pre + "ln_c_weight"] = np.ones(n, dt)
            self._own[pre + "ln_c_bias"] = np.zeros(n, dt)

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, hyper_size={self.hyper_size}, "
                f"embed_size={self.embed_size}")

    def _state_sizes(self):
        H, Hh = self.hidden_size, self.hyper_size
        return (H, H, Hh, Hh)

    # ------------------------------------------------------------------ the time loops
    # As RecurrentBase's, except that the input projection x Wᵀ has no bias (eq. 12).
    def _project(self, x, p):
        return x @ p["weight_ih"].T                 # no bias: eq. 12 scales W_x x alone

    def forward(self, x, *, train=False, rng=None, params=None, state=None):
        self._check(x)
        p = self._cast(self._use(params), x.dtype)
        return self._run(x, p, self._state(state, x.shape[0], x.dtype))

    def backward_state(self, cache, dy, *, params=None, need_dx=True, dstate=None):
        """Backward through time: ``(dx, grads, dstate0)``; ``dstate`` is the cotangent of the
        final state (None: zero), ``dstate0`` that of the initial state."""
        x, S0, steps, ST = cache
        B, T, _ = x.shape
        check_like(dy, (B, T, self.hidden_size))
        p = self._use(params)
        q = self._cast(p, dy.dtype)
        dS = self._state(dstate, B, dy.dtype, "dstate")
        g = {k: np.zeros(v.shape, dy.dtype) for k, v in p.items() if k != "weight_ih"}
        dxp = np.empty((B, T, p["weight_ih"].shape[0]), dy.dtype)
        for t in range(T - 1, -1, -1):
            dS = (dS[0] + dy[:, t],) + tuple(dS[1:])
            dxp[:, t], dS = self._cell_back(steps[t], dS, q, g)
        g["weight_ih"] = dxp.reshape(B * T, -1).T @ x.reshape(B * T, -1)
        grads = {k: g[k].astype(p[k].dtype, copy=False) for k in self._own}
        dx = dxp @ q["weight_ih"] if need_dx else None
        return dx, grads, self._public(dS)

    def jvp_state(self, x, dx, dparams=None, *, params=None, state=None, dstate=None):
        """Forward mode through time: ``(y, dy, final_state, final_state_tangent)``."""
        self._check(x)
        p = self._cast(self._use(params), x.dtype)
        dp = self._cast(self._tangents(dparams) or {}, x.dtype)
        B, T, _ = x.shape
        S = self._state(state, B, x.dtype)
        dS = self._state(dstate, B, x.dtype, "dstate")
        if dx is not None:
            check_like(dx, x.shape, "dx")
        xp = x @ p["weight_ih"].T
        dxp = affine_tangent(x, dx, p["weight_ih"], dp.get("weight_ih"))
        y = np.empty((B, T, self.hidden_size), x.dtype)
        dy = np.empty_like(y)
        for t in range(T):
            S, dS = self._cell_jvp(xp[:, t], dxp[:, t], S, dS, p, dp)
            y[:, t], dy[:, t] = S[0], dS[0]
        return y, dy, self._public(S), self._public(dS)

    # ------------------------------------------------------------------ one step
    def _embed(self, hh, p):
        """Eqs. 11-12: ``z (B, 3, 4, N_z)`` from ``ĥ_t`` and the stacked ``(d_h, d_x, W_bz z_b)``."""
        B, Nz = hh.shape[0], self.embed_size
        z = hh @ p["z_weight"].T
        z[:, :8 * Nz] += p["z_bias"]
        z = z.reshape(B, 3, 4, Nz)
        return z, _project(z, p["d_weight"]).reshape(B, 3, 4 * self.hidden_size)

    def _cell(self, xp, S, p):
        H, Hh = self.hidden_size, self.hyper_size
        h_prev, c_prev, hh_prev, ch_prev = S
        # eq. 10: the hyper LSTM on x̂_t = [h_{t-1}; x_t]
        ah = xp[:, 4 * H:] + np.concatenate([h_prev, hh_prev], axis=1) @ p["hyper_weight_hh"].T + p["hyper_bias"]
        hh, ch, hcache = _ln_cell(ah, ch_prev, p, "hyper_", Hh, self.eps)
        # eqs. 11-13: scalings d_h, d_x, the bias b(z_b) + b_0, then the main LSTM
        z, d = self._embed(hh, p)
        u = h_prev @ p["weight_hh"].T
        v = xp[:, :4 * H]
        pre = d[:, 0] * u + d[:, 1] * v + d[:, 2] + p["bias_hh"]
        h, c, mcache = _ln_cell(pre, c_prev, p, "", H, self.eps)
        return (h, c, hh, ch), (h_prev, hh_prev, hcache, hh, z, d, u, v, mcache)

    def _cell_back(self, cache, dS, p, g):
        H = self.hidden_size
        h_prev, hh_prev, hcache, hh, z, d, u, v, mcache = cache
        B = h_prev.shape[0]
        dh, dc, dhh, dch = dS
        dpre, dc_prev = _ln_cell_back(dh, dc, mcache, p, "", g)
        g["bias_hh"] += dpre.sum(axis=0)
        du, dv = dpre * d[:, 0], dpre * d[:, 1]
        g["weight_hh"] += du.T @ h_prev
        dh_prev = du @ p["weight_hh"]
        dd = np.stack([dpre * u, dpre * v, dpre], axis=1).reshape(B, 3, 4, H)
        g["d_weight"] += np.matmul(dd.transpose(1, 2, 3, 0), z.transpose(1, 2, 0, 3))
        dz = np.matmul(dd.transpose(1, 2, 0, 3), p["d_weight"]).transpose(2, 0, 1, 3).reshape(B, -1)
        g["z_weight"] += dz.T @ hh
        g["z_bias"] += dz[:, :8 * self.embed_size].sum(axis=0)
        dhh = dhh + dz @ p["z_weight"]
        # the hyper LSTM
        dah, dch_prev = _ln_cell_back(dhh, dch, hcache, p, "hyper_", g)
        g["hyper_bias"] += dah.sum(axis=0)
        g["hyper_weight_hh"] += dah.T @ np.concatenate([h_prev, hh_prev], axis=1)
        dcat = dah @ p["hyper_weight_hh"]
        dxp = np.concatenate([dv, dah], axis=1)
        return dxp, (dh_prev + dcat[:, :H], dc_prev, dcat[:, H:], dch_prev)

    def _cell_jvp(self, xp, dxp, S, dS, p, dp):
        H, Hh, Nz = self.hidden_size, self.hyper_size, self.embed_size
        h_prev, c_prev, hh_prev, ch_prev = S
        dh_prev, dc_prev, dhh_prev, dch_prev = dS
        B = h_prev.shape[0]
        W = p["hyper_weight_hh"]
        cat, dcat = np.concatenate([h_prev, hh_prev], axis=1), np.concatenate([dh_prev, dhh_prev], axis=1)
        ah = xp[:, 4 * H:] + cat @ W.T + p["hyper_bias"]
        dah = dxp[:, 4 * H:] + dcat @ W.T
        if "hyper_weight_hh" in dp:
            dah = dah + cat @ dp["hyper_weight_hh"].T
        if "hyper_bias" in dp:
            dah = dah + dp["hyper_bias"]
        hh, ch, dhh, dch = _ln_cell_jvp(ah, dah, ch_prev, dch_prev, p, dp, "hyper_", Hh, self.eps)
        z, d = self._embed(hh, p)
        dz = dhh @ p["z_weight"].T
        if "z_weight" in dp:
            dz = dz + hh @ dp["z_weight"].T
        if "z_bias" in dp:
            dz[:, :8 * Nz] += dp["z_bias"]
        dz = dz.reshape(B, 3, 4, Nz)
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
        h, c, dh, dc = _ln_cell_jvp(pre, dpre, c_prev, dc_prev, p, dp, "", H, self.eps)
        return (h, c, hh, ch), (dh, dc, dhh, dch)
