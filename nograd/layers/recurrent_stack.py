r"""Multi-layer and bidirectional recurrent layers: the stacking behind ``RNN``, ``LSTM`` and ``GRU``
with ``num_layers > 1`` or ``bidirectional=True`` (PyTorch's semantics, batch first).

Layer :math:`l` in direction :math:`d` (0 forward, 1 reverse) is one single-direction recurrent
pass :math:`R_{l,d}` (the layer's ``_run``) with its own arrays. With :math:`y_0 = x` and
:math:`\mathrm{rev}` reversing the time axis,

.. math::
    y_{l+1} = \big[\,R_{l,0}(\tilde y_l) \;;\; \mathrm{rev}\,R_{l,1}(\mathrm{rev}\,\tilde y_l)\,\big],
    \qquad \tilde y_l = y_l \odot m_l / (1 - p) \text{ for } l > 0 \text{ in training}, \ \tilde y_0 = x,

concatenated over features; the output is :math:`y_L` ``(B, T, D·H)``. ``m_l`` is a Bernoulli
dropout mask (rate ``p`` = ``dropout``) on every layer's output except the last, drawn from the
``rng`` of the call. Reverse mode runs the layers from the top: each pass's ``_run_back`` gets its
half of the output cotangent (time-reversed for :math:`d = 1`), and the input cotangents of the two
passes add up before the mask; forward mode pushes the tangents up in the same order as the forward.

Arrays are PyTorch's, in its order: for each layer, for each direction, ``weight_ih_l{l}``,
``weight_hh_l{l}``, ``bias_ih_l{l}``, ``bias_hh_l{l}`` (suffix ``_reverse`` for :math:`d = 1`; an
LSTM's layer-norm arrays get the same suffixes). ``weight_ih_l{l}`` is ``(G·H, F)`` for
:math:`l = 0` and ``(G·H, D·H)`` above. States (``state=``, ``final_state``, ``dstate``) are arrays
``(num_layers·D, B, H)`` (a pair of them for an LSTM), row :math:`l D + d` for pass :math:`(l, d)`.
Cost: ``num_layers·D`` single passes; the backward keeps every pass's cache.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_like
from .dropout import dropout_mask


def stacked(m) -> bool:
    """Whether ``m`` is a stack (more than one single-direction pass)."""
    return m.num_layers > 1 or m.bidirectional


def directions(m) -> int:
    return 2 if m.bidirectional else 1


def suffix(m, layer: int, direction: int) -> str:
    """PyTorch's suffix of pass ``(layer, direction)``'s array names ('' for a single pass)."""
    if not stacked(m):
        return ""
    return f"_l{layer}" + ("_reverse" if direction else "")


def units(m):
    """``[(layer, direction, suffix)]`` of every pass, in PyTorch's order."""
    return [(layer, d, suffix(m, layer, d)) for layer in range(m.num_layers) for d in range(directions(m))]


def extra_repr(m) -> str:
    if not stacked(m):
        return ""
    return f", num_layers={m.num_layers}, bidirectional={m.bidirectional}, dropout={m.dropout}"


def _arrays(m, p, layer, direction):
    """Pass ``(layer, direction)``'s arrays from the stack's dict, under their single-pass names
    (keys missing from ``p`` stay missing: a partial tangent dict)."""
    sfx = suffix(m, layer, direction)
    return {k: p[k + sfx] for k in m._unit_names if k + sfx in p}


def _flip(a, direction):
    return a[:, ::-1] if direction and a is not None else a


def _cat(parts):
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)


def states(m, state, B, dtype, name="state"):
    """The per-pass state tuples from ``(num_layers·D, B, H)`` arrays (zeros when ``state`` is None)."""
    n = m.num_layers * directions(m)
    parts = m._as_tuple(state, name)
    sizes = m._state_sizes()
    if parts is None:
        parts = tuple(np.zeros((n, B, h), dtype) for h in sizes)
    for s, h in zip(parts, sizes):
        check_array(s, name)
        if s.shape != (n, B, h):
            raise ValueError(f"{name} must have shape {(n, B, h)} (num_layers·directions, batch, "
                             f"hidden) for this stack, got {s.shape}")
    return [tuple(s[k].astype(dtype, copy=False) for s in parts) for k in range(n)]


def _public(m, per_pass):
    """Per-pass state tuples stacked back into PyTorch's ``(num_layers·D, B, H)`` arrays."""
    parts = tuple(np.stack([S[j] for S in per_pass]) for j in range(m.state_parts))
    return parts[0] if m.state_parts == 1 else parts


def _mask(m, inp, layer, train, rng):
    """The dropout mask on layer ``layer``'s input (the previous layer's output), or None."""
    if layer == 0 or not train or m.dropout == 0:
        return None
    return dropout_mask(inp.shape, m.dropout, rng, inp.dtype, type(m).__name__)


def forward(m, x, p, state, train, rng):
    """The stack's forward: ``(y, cache)``; ``p`` the arrays already in ``x``'s dtype."""
    S0 = states(m, state, x.shape[0], x.dtype)
    D = directions(m)
    inp, runs, masks = x, [], []
    for layer in range(m.num_layers):
        mask = _mask(m, inp, layer, train, rng)
        if mask is not None:
            inp = inp * mask
        masks.append(mask)
        outs = []
        for d in range(D):
            y, cache = m._run(_flip(inp, d), _arrays(m, p, layer, d), S0[layer * D + d])
            runs.append(cache)
            outs.append(_flip(y, d))
        inp = _cat(outs)
    return inp, (runs, masks, x.shape)


def final_state(m, cache):
    return _public(m, [run[3] for run in cache[0]])


def backward(m, cache, dy, p, need_dx, dstate, back=None):
    """The stack's backward through time: ``(dx, grads, dstate0)``. ``back(k, cache_k, dy_k, q_k,
    dS_k, need_dx)`` replaces each pass's ``_run_back`` when given (:func:`backward_local`)."""
    back = back or (lambda k, *args: m._run_back(*args))
    runs, masks, (B, T, _) = cache
    D, H = directions(m), m.hidden_size
    check_like(dy, (B, T, D * H))
    dS = states(m, dstate, B, dy.dtype, "dstate")
    q = m._cast(p, dy.dtype)
    grads, dS0, dout = {}, [None] * len(runs), dy
    for layer in range(m.num_layers - 1, -1, -1):
        din = None
        for d in range(D):
            k = layer * D + d
            dyd = _flip(dout[:, :, d * H:(d + 1) * H], d)
            dxd, g, dS0[k] = back(k, runs[k], dyd, _arrays(m, q, layer, d), dS[k],
                                  need_dx or layer > 0)
            sfx = suffix(m, layer, d)
            grads.update({name + sfx: v for name, v in g.items()})
            if dxd is not None:
                din = _flip(dxd, d) if din is None else din + _flip(dxd, d)
        if masks[layer] is not None:
            din = din * masks[layer]
        dout = din
    grads = {k: grads[k].astype(p[k].dtype, copy=False) for k in m._own}
    return dout, grads, _public(m, dS0)


def jvp(m, x, dx, p, dp, state, dstate, train, rng):
    """The stack's forward mode: ``(y, dy, final_state, final_state_tangent)``."""
    B = x.shape[0]
    S0, dS0 = states(m, state, B, x.dtype), states(m, dstate, B, x.dtype, "dstate")
    D = directions(m)
    inp, dinp, finals, dfinals = x, dx, [], []
    for layer in range(m.num_layers):
        mask = _mask(m, inp, layer, train, rng)
        if mask is not None:
            inp, dinp = inp * mask, dinp * mask
        ys, ts = [], []
        for d in range(D):
            k = layer * D + d
            y, t, S, dS = m._run_jvp(_flip(inp, d), _flip(dinp, d), _arrays(m, p, layer, d),
                                     _arrays(m, dp, layer, d), S0[k], dS0[k])
            ys.append(_flip(y, d))
            ts.append(_flip(t, d))
            finals.append(S)
            dfinals.append(dS)
        inp, dinp = _cat(ys), _cat(ts)
    return inp, dinp, _public(m, finals), _public(m, dfinals)


# --------------------------------------------------------------------------- all steps at once
def _time_major(steps):
    """The per-step caches of a pass (a list of ``T`` tuples of ``(B, ...)`` arrays, nested tuples
    or None) as one cache of ``T·B`` rows, row ``t·B + b`` for step ``t`` and sample ``b``."""
    first = steps[0]
    if first is None:
        return None
    if isinstance(first, tuple):
        return tuple(_time_major([s[j] for s in steps]) for j in range(len(first)))
    return np.concatenate(steps, axis=0)


def gru_gates_back(dh, h_prev, hp, r, z, n):
    r"""The GRU's gate backward for many rows in one fused pass (no temporaries): ``(dxp, dnr, db)``
    with ``dxp = [ā_r, ā_z, ā_n]`` ``(R, 3H)``, the cotangent of the input projection,
    ``dnr = ā_n ⊙ r`` ``(R, H)``, the candidate part of the cotangent of
    :math:`H_p = h_{t-1} W_{hh}^\top + b_{hh}` (its r and z parts equal ``dxp``'s), and
    ``db (4H,)`` float64, the column sums of ``dxp`` then of ``dnr`` (the bias gradients):

    .. math::
        \bar a_n = \bar h (1 - z)(1 - n^2),\quad \bar a_r = \bar a_n H_{p,n}\, r (1 - r),\quad
        \bar a_z = \bar h (h_{t-1} - n) z (1 - z).

    Shapes: ``dh, h_prev, r, z, n (R, H)``, ``hp (R, 3H)`` (:math:`H_p`, whose candidate third
    :math:`H_{p,n}` is read), rows contiguous; float32 or float64 (computed in float64, stored in
    ``dh``'s dtype)."""
    R, H = dh.shape
    dxp = np.empty((R, 3 * H), dh.dtype)
    dnr = np.empty((R, H), dh.dtype)
    db = np.zeros(4 * H)
    from ..kernels.recurrent import gru_gates_back as kernel   # Numba, on first use

    kernel(dh, h_prev, hp, r, z, n, dxp, dnr, db)
    return dxp, dnr, db


class _Steps(list):
    """A GRU's or LSTM's pass's per-step caches (a list, as every pass keeps them) that also holds
    them stacked time-major, ``tm``: one ``(T, B, ·)`` array per entry of a step's cache tuple (a
    GRU's ``(h_{t-1}, H_p, r, z, n)``, an LSTM's ``(h_{t-1}, c_{t-1}, i, f, g, o, tanh c_t)`` and
    ``None``): the steps are views of these arrays, so :func:`backward_local` reads all steps
    without copying them."""

    __slots__ = ("tm",)


def _stack_tm(steps, t0, t1):
    """Steps ``t0:t1`` of a pass's caches time-major (row ``(t - t0)·B + b``): views of the arrays
    ``steps.tm`` when the forward stored them, else stacked from the per-step caches."""
    tm = getattr(steps, "tm", None)
    if tm is None:
        return _time_major(steps[t0:t1])
    return tuple(None if v is None else v[t0:t1].reshape((t1 - t0) * v.shape[1], v.shape[2])
                 for v in tm)


def lstm_run(m, x, p, S0):
    r"""An LSTM's ``_run`` (one layer, one direction, no layer norm): ``LSTM._cell``'s operations
    step by step, in its order (so the same numbers), written into time-major arrays allocated
    once, as :func:`gru_run` does for a GRU: :math:`a = X_{p,t} + h_{t-1} W_{hh}^	op + b_{hh}`,
    :math:`(i, f, g, o)` its gates, :math:`c_t = f c_{t-1} + i g`, :math:`h_t = o 	anh c_t`.
    Returns ``(y (B, T, H), (x, S0, steps, (h_T, c_T)))``; with layer norm, or for a subclass with
    its own ``_cell``, the generic loop."""
    from .recurrent import LSTM, RecurrentBase, lstm_gates

    if m.layer_norm or type(m)._cell is not LSTM._cell:
        return RecurrentBase._run(m, x, p, S0)
    B, T, _ = x.shape
    H, dt = m.hidden_size, x.dtype
    xp = m._project(x, p)
    hs, cs = np.empty((T + 1, B, H), dt), np.empty((T + 1, B, H), dt)
    hs[0], cs[0] = S0
    i, f, g, o, tc = np.empty((5, T, B, H), dt)
    steps = _Steps()
    for t in range(T):
        i[t], f[t], g[t], o[t] = lstm_gates(xp[:, t] + hh_affine(hs[t], p), H)
        np.multiply(f[t], cs[t], out=cs[t + 1])
        cs[t + 1] += i[t] * g[t]
        np.tanh(cs[t + 1], out=tc[t])
        np.multiply(o[t], tc[t], out=hs[t + 1])
        steps.append((hs[t], cs[t], i[t], f[t], g[t], o[t], tc[t], None))
    steps.tm = (hs[:T], cs[:T], i, f, g, o, tc, None)
    return np.ascontiguousarray(hs[1:].transpose(1, 0, 2)), (x, S0, steps, (hs[T], cs[T]))


# gru_run's per-step product h_{t-1} W_hhᵀ is taken as (W_hh h_{t-1}ᵀ)ᵀ for batches 2 to this
# (measured 0.53–0.86 of the time at H = 64–512, batch 8–32, one BLAS thread; 0.96–1.67 from 64 up)
HH_TRANSPOSED_MAX_BATCH = 32


def hh_affine(h, p):
    """A step's ``h W_hhᵀ + b_hh`` for ``h`` ``(B, H)``, the product taken as ``(W_hh hᵀ)ᵀ`` for
    a gated cell (``W_hh`` of ``G·H > H`` rows) at batches 2 to :data:`HH_TRANSPOSED_MAX_BATCH`
    (faster there, the same bits; see :func:`gru_run`; a plain RNN's square ``W_hh`` at H = 128,
    batch 8 measured slower that way, 4.5 against 3.9 µs)."""
    W, b = p["weight_hh"], p["bias_hh"]
    if not (2 <= h.shape[0] <= HH_TRANSPOSED_MAX_BATCH and W.shape[0] > W.shape[1]):
        return h @ W.T + b
    hpT = W @ h.T
    return np.add(hpT.T, b, out=np.empty(hpT.shape[::-1], np.result_type(hpT, b)))


def gru_run(m, x, p, S0):
    r"""A GRU's ``_run`` (one layer, one direction): the same operations, in the same order, as
    ``GRU._cell`` step by step (so the same numbers), written into time-major arrays
    ``(T, B, ·)`` allocated once: :math:`H_p = h_{t-1} W_{hh}^\top + b_{hh}`,
    :math:`r = \sigma(X_{p,r} + H_{p,r})`, :math:`z = \sigma(X_{p,z} + H_{p,z})`,
    :math:`n = \tanh(X_{p,n} + r H_{p,n})`, :math:`h_t = (1 - z) n + z h_{t-1}` (σ as
    :func:`nograd.layers.activations.sigmoid`: :math:`e = \exp(-|a|)`,
    :math:`\max(e, [a \ge 0]) / (1 + e)`). Returns ``(y (B, T, H), (x, S0, steps, (h_T,)))`` with
    ``steps`` a :class:`_Steps` of ``(h_{t-1}, H_p, r, z, n)`` views, as ``_cell`` caches them.

    For batches of 2 to :data:`HH_TRANSPOSED_MAX_BATCH` the step's product is taken as
    :math:`W_{hh} h_{t-1}^\top` into a ``(3H, B)`` scratch array and turned back while adding
    :math:`b_{hh}`: OpenBLAS runs that product 1.2–1.9× faster at these batches (one thread; ``h``
    C-ordered) and sums it in the same order (the same bits; tested against ``_cell``)."""
    B, T, _ = x.shape
    H, dt = m.hidden_size, x.dtype
    xp = m._project(x, p)
    hs = np.empty((T + 1, B, H), dt)
    hs[0] = S0[0]
    hp = np.empty((T, B, 3 * H), dt)
    r, z, n = np.empty((3, T, B, H), dt)
    a, tmp = np.empty((B, H), dt), np.empty((B, H), dt)
    pos = np.empty((B, H), bool)
    W, b = p["weight_hh"], p["bias_hh"]
    hpT = np.empty((3 * H, B), dt) if 2 <= B <= HH_TRANSPOSED_MAX_BATCH else None

    def sigmoid_into(src, out):                      # σ(src) into out; src is scratch
        np.greater_equal(src, 0, out=pos)
        np.abs(src, out=src)
        np.negative(src, out=src)
        np.exp(src, out=src)
        np.maximum(src, pos, out=out)
        src += 1
        out /= src
    steps = _Steps()
    with np.errstate(under="ignore"):
        for t in range(T):
            h_prev, hpt, xpt = hs[t], hp[t], xp[:, t]
            if hpT is None:
                np.matmul(h_prev, W.T, out=hpt)
                hpt += b
            else:                       # W h_{t-1}ᵀ, then H_p = its transpose + b_hh (see above)
                np.matmul(W, h_prev.T, out=hpT)
                np.add(hpT.T, b, out=hpt)
            sigmoid_into(np.add(xpt[:, :H], hpt[:, :H], out=a), r[t])
            sigmoid_into(np.add(xpt[:, H:2 * H], hpt[:, H:2 * H], out=a), z[t])
            np.multiply(r[t], hpt[:, 2 * H:], out=n[t])
            np.add(xpt[:, 2 * H:], n[t], out=n[t])
            np.tanh(n[t], out=n[t])
            np.subtract(1, z[t], out=tmp)
            tmp *= n[t]
            np.multiply(z[t], h_prev, out=hs[t + 1])
            np.add(tmp, hs[t + 1], out=hs[t + 1])
            steps.append((h_prev, hpt, r[t], z[t], n[t]))
    steps.tm = (hs[:T], hp, r, z, n)
    return np.ascontiguousarray(hs[1:].transpose(1, 0, 2)), (x, S0, steps, (hs[T],))


def _stack_steps(m, steps, t0, t1):
    """Steps ``t0:t1`` of a GRU's or LSTM's pass's caches time-major (row ``(t - t0)·B + b``) for
    :func:`_gru_cell_back_rows` or :func:`_lstm_cell_back_rows`, ``((t1 - t0)·B, ·)`` each: views
    of the arrays :func:`gru_run` or :func:`lstm_run` stored (no copy), or stacked from the
    per-step caches."""
    return _stack_tm(steps, t0, t1)


def _gru_cell_back_rows(m, cache, dS, p, g):
    """The GRU's ``_cell_back`` without the cotangent of ``h_{t-1}``, for the steps stacked by
    :func:`_stack_steps` (``R = T·B`` rows): the gate maths and the bias sums in one fused
    pass (:func:`gru_gates_back`), then the ``weight_hh`` gradient as two GEMMs over all rows.
    Adds the gradients of ``weight_hh``, ``bias_hh`` and ``bias_ih`` to ``g``; returns
    ``dxp (R, 3H)``."""
    h_prev, H = cache[0], m.hidden_size
    dxp, dnr, db = gru_gates_back(np.ascontiguousarray(dS[0]), *cache)
    g["weight_hh"][:2 * H] += dxp[:, :2 * H].T @ h_prev
    g["weight_hh"][2 * H:] += dnr.T @ h_prev
    g["bias_ih"] += db[:3 * H]
    g["bias_hh"][:2 * H] += db[:2 * H]
    g["bias_hh"][2 * H:] += db[3 * H:]
    return dxp


def _lstm_cell_back_rows(m, cache, dS, p, g):
    """The LSTM's ``_cell_back`` without the cotangents of ``h_{t-1}`` and ``c_{t-1}``, for the
    steps stacked time-major (``R = T·B`` rows): the gate maths and the bias sums in one fused
    pass (:func:`nograd.kernels.recurrent.lstm_gates_back`), then ``weight_hh``'s gradient as one
    GEMM over all rows; with layer norm, ``_cell_back`` itself. Adds the gradients of
    ``weight_hh``, ``bias_hh`` and ``bias_ih`` to ``g``; returns ``dxp (R, 4H)``."""
    h_prev, c_prev, i, f, gg, o, tc, lns = cache
    if lns is not None:
        dxp = m._cell_back(cache, dS, p, g, need_dh=False)[0]
        g["bias_ih"] += dxp.sum(axis=0)
        return dxp
    from ..kernels.recurrent import lstm_gates_back   # Numba, on first use

    dh, dc = (np.ascontiguousarray(d) for d in dS)
    dxp = np.empty((dh.shape[0], 4 * m.hidden_size), dh.dtype)
    db = np.zeros(4 * m.hidden_size)
    lstm_gates_back(dh, dc, c_prev, i, f, gg, o, tc, dxp, db)
    g["weight_hh"] += dxp.T @ h_prev
    g["bias_hh"] += db
    g["bias_ih"] += db
    return dxp


#: the fused paths of :func:`backward_local`, by a layer's ``_fused_local``: ``(stack the step
#: caches, the cells' backward over all rows, adding bias_ih's gradient too)``
FUSED_LOCAL = {"gru": (_stack_steps, _gru_cell_back_rows), "lstm": (_stack_steps, _lstm_cell_back_rows)}


def _local_pass(m, k, cache, dy, q, need_dx, carry, rows=8192):
    """One pass of :func:`backward_local`: ``(dx, grads, zero initial-state cotangents)``.

    Everything runs time-major (row ``t·B + b``): the carry's cotangents are transposed once (for
    free when they already are time-major memory, as :func:`nograd.rules.dsf.feedback_scan`'s
    filters return them), the step caches are stacked once (a GRU's are read where its forward
    stored them, :func:`gru_run`), and each weight's gradient is one GEMM over all ``T·B`` rows. Beyond ``rows`` rows (``T·B``) the steps run in chunks of about
    ``rows`` rows, to bound the temporaries."""
    x, _, steps, _ = cache
    B, T, _ = x.shape
    C = max(1, min(T, rows // B))                 # steps per chunk
    chunks = [(t, min(T, t + C)) for t in range(0, T, C)]
    fused = FUSED_LOCAL.get(getattr(m, "_fused_local", None))
    local = None
    if fused is not None:                         # a fused backward for many rows, and the
        def stack_steps(t0, t1):                  # caches it reads
            return fused[0](m, steps, t0, t1)

        def local(c, dSc, q, g):
            return fused[1](m, c, dSc, q, g)
    else:
        def stack_steps(t0, t1):
            return _stack_tm(steps, t0, t1)
    whole = stack_steps(0, T) if len(chunks) == 1 else None

    def stacked(t0, t1):
        return whole if whole is not None else stack_steps(t0, t1)

    def tm(a):                  # (B, T, n) -> (T, B, n), C-contiguous (free if already so)
        return np.ascontiguousarray(a.transpose(1, 0, 2))

    cell = None
    if hasattr(m, "_cell_dc"):
        def cell(dh):
            dh_t = tm(dh)
            out = np.empty_like(dh_t)
            for t0, t1 in chunks:
                dc = m._cell_dc(stacked(t0, t1), dh_t[t0:t1].reshape((t1 - t0) * B, -1), q)
                out[t0:t1] = dc.reshape(t1 - t0, B, -1)
            return out.transpose(1, 0, 2)
    dS = carry(k, dy, cell)
    sizes = m._state_sizes()
    if not isinstance(dS, tuple) or len(dS) != len(sizes):
        raise TypeError(f"carry must return a tuple of {len(sizes)} arrays (one per state part of "
                        f"{type(m).__name__}), got {type(dS).__name__}")
    for j, (d, n) in enumerate(zip(dS, sizes)):
        check_like(d, (B, T, n), f"carry(...)[{j}]")
    dS = tuple(tm(d.astype(dy.dtype, copy=False)) for d in dS)
    x_t = tm(x)
    g = {name: np.zeros(v.shape, dy.dtype) for name, v in q.items()}
    dx_t = np.empty(x_t.shape, dy.dtype) if need_dx else None
    for t0, t1 in chunks:
        n_rows = (t1 - t0) * B
        dSc = tuple(d[t0:t1].reshape(n_rows, -1) for d in dS)
        dxp = (local(stacked(t0, t1), dSc, q, g) if local is not None
               else m._cell_back(stacked(t0, t1), dSc, q, g, need_dh=False)[0])
        xr = x_t[t0:t1].reshape(n_rows, -1)
        g["weight_ih"] += dxp.T @ xr
        if local is None:                         # (the fused backward sums it itself)
            g["bias_ih"] += dxp.sum(axis=0)
        if need_dx:
            np.matmul(dxp, q["weight_ih"], out=dx_t[t0:t1].reshape(n_rows, -1))
    dx = dx_t.transpose(1, 0, 2) if need_dx else None
    return dx, g, tuple(np.zeros((B, n), dy.dtype) for n in sizes)


def backward_local(m, cache, dy, p, need_dx, carry):
    r"""Reverse mode of a recurrent layer (or stack) in which the recursion over time is replaced by
    ``carry`` and every step's local VJP runs at once: ``(dx, grads)``.

    For each single-direction pass ``k`` (the layer itself, or pass :math:`(l, d)` of a stack as
    :math:`k = lD + d`, the top layer first), ``carry(k, dy_k, cell)`` receives the pass's output
    cotangent ``dy_k (B, T, H)`` (time-reversed for a reverse pass: index ``t`` is the pass's ``t``-th
    step) and returns the cotangents the steps' backward receives, one ``(B, T, H)`` array per state
    part: :math:`\delta_t`, the total cotangent of :math:`h_t` (``dy_k`` included), and for an LSTM
    the cotangent of :math:`c_t` carried from the later steps. ``cell`` is None, except for an LSTM:
    ``cell(dh)`` is the cotangent that each step's own :math:`h_t = o \tanh c_t` sends to
    :math:`c_t`, for all steps. Backward through time is ``carry`` running the exact recursion
    :math:`\delta_t = \bar y_t + J_{t+1}^\top \delta_{t+1}`; a stationary feedback (Caillon et al.
    2025) runs :math:`\delta_t = \bar y_t + A \delta_{t+1}`; ``carry = lambda k, e, cell: (e,)`` cuts
    the state cotangent (fully truncated BPTT).

    The step caches are stacked into ``T·B`` rows (time-major; a GRU's forward already stores
    them so, :func:`gru_run`) and the cell's backward runs once over them (without the cotangent of :math:`h_{t-1}`, which nothing uses), so each weight's
    gradient is one GEMM over all steps, :math:`\bar W_{hh} = \sum_t \bar a_t^\top h_{t-1}`,
    instead of ``T``; a GRU does its gate maths and bias sums in one fused compiled pass
    (:func:`gru_gates_back`, through :data:`FUSED_LOCAL`). The final-state cotangent is zero
    and the initial state's is not returned. ``dx`` is a ``(B, T, F)`` view of time-major memory.
    """
    q = m._cast(p, dy.dtype)
    if stacked(m):
        def back(k, run, dyk, qk, dSk, need):
            return _local_pass(m, k, run, dyk, qk, need, carry)
        dx, grads, _ = backward(m, cache, dy, p, need_dx, None, back=back)
        return dx, grads
    B, T, _ = cache[0].shape
    check_like(dy, (B, T, m.hidden_size))
    dx, g, _ = _local_pass(m, 0, cache, dy, q, need_dx, carry)
    return dx, {name: g[name].astype(p[name].dtype, copy=False) for name in m._own}
