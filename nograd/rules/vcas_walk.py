r"""The sampled backward pass of VCAS, walked over a model's forward cache (Wang et al. 2024,
"Efficient Backpropagation with Variance-Controlled Adaptive Sampling", ICLR, Sec. 4 and Fig. 2).

A :class:`Pass` runs the chain rule from the loss down, as the model's own ``backward`` does, but

- **activation sampling (data dimension)**: before the backward of each block of the model
  (a transformer block of ``gpt``/``vit``; a layer with parameters below the output layer of a
  ``Sequential``) the cotangent of the block's output is thinned: sample ``n`` is kept with the
  water-filled probability :math:`p_n \propto \lVert \bar z_n\rVert` for the budget
  :math:`\rho_l N` (the expected number kept, a real number: not rounded down) and reweighted by
  :math:`1/p_n`. Every block below then runs on the kept samples only — their cache rows are
  gathered and the smaller products are done — because a dropped sample's cotangent is zero
  from there down (per-sample layers; VCAS refuses batch statistics). As in the reference code,
  a sampler resamples only where its ratio is below the one above it;
- **weight sampling (token dimension)**: a dense layer inside a block computes
  :math:`\bar x = \bar y W` on all its (kept) rows, but its weight gradient from the rows picked by
  leverage scores :math:`\lVert \bar y_t\rVert\lVert x_t\rVert` at ratio :math:`\nu_l`
  (:func:`~nograd.kernels.vcas.leverage_rows`, one pass for the scores, the water level, the
  draws and the gathers; then one product); the bias gradient stays exact.

**Paying only where sampling saves time** (issue #23; none of these changes the estimate):

- a sampler that keeps every sample (:math:`\rho_l = 1`, or not below the sampler above) does
  nothing — no norms, no gathers;
- a sampler that keeps at least ``mask_above`` of the rows being computed zeroes the dropped
  samples' cotangents (the kept ones reweighted) and the blocks below keep computing every row:
  gathering each cache of the block (megabytes) costs more than the few rows it saves. The
  pass tracks the samples alive among the rows computed, so the budgets and the random draws
  (one per alive sample, one per alive row) are those of the gathering pass;
- a dense layer ``in → out`` whose :math:`\nu_l \ge 1 - \kappa(1/\text{in} + 1/\text{out})`
  (``row_overhead`` :math:`\kappa`) computes its weight gradient exactly: the exact product is
  an unbiased estimate with zero added variance, and there the sampler's per-row work (about
  :math:`\kappa` multiply-adds per entry of the two rows, measured) exceeds the
  :math:`(1-\nu_l)` of the product it saves. The FLOP counter counts what is computed;
- gathers use ``np.take`` (faster than fancy indexing on 3-4 axes), gather an array held twice
  once, and write into buffers reused from pass to pass (``pool``: no fresh pages each step).

Both estimates are unbiased, so the pass is an unbiased estimate of the gradient. ``mode``:
``"exact"`` samples nothing (and records the samplers' per-sample norms for the controller),
``"act"`` samples activations only and records each dense layer's leverage scores, from which
the controller computes the variance weight sampling would add (its Monte-Carlo passes; the rule
computes them from the exact pass instead, :mod:`~nograd.rules.vcas_control`, with the same
result); ``"vcas"`` samples both.

**FLOPs.** Each unit records ``[done, exact, forward]`` multiply-add FLOPs (2 per multiply-add) of
its matrix products: a dense layer's :math:`\bar x` and :math:`\bar W` products, an attention core's
four batched products (:math:`p^\top\bar o,\ \bar o v^\top,\ \bar s k,\ \bar s^\top q`), a
convolution-like leaf (a ``weight`` of 3+ axes) and the output head. Elementwise work (norms,
activations, softmax, embedding look-ups) and the samplers' own norms are not counted. ``exact`` is
what the full backward of the same unit costs on the whole batch.
"""
from __future__ import annotations

import numpy as np

from ..core.module import dotted
from .vcas_sampling import keep_mask, row_norms, water_fill

__all__ = ["Pass", "NotRowwise", "take_rows", "structure"]


class NotRowwise(Exception):
    """A cache holds something that is not one row per sample (the unit then runs on all rows)."""


def take_rows(cache, idx, n, out=None, _seen=None):
    """The rows ``idx`` of every per-sample array in ``cache`` (leading axis ``n``), recursively
    through tuples, lists and dicts; a shape tuple ``(n, ...)`` becomes ``(len(idx), ...)``;
    scalars and ``None`` pass. Anything else raises :class:`NotRowwise`. An array held twice
    (a layer's output that is the next one's input) is gathered once. ``out(shape, dtype)``, if
    given, returns the array to gather into (a reused buffer: no fresh pages every step)."""
    seen = {} if _seen is None else _seen
    if cache is None or isinstance(cache, (bool, int, float, str, np.generic)):
        return cache
    if isinstance(cache, np.ndarray):
        if cache.ndim == 0:
            return cache
        if cache.shape[0] != n:
            raise NotRowwise
        if id(cache) not in seen:
            dst = None if out is None else out((len(idx),) + cache.shape[1:], cache.dtype)
            # mode="clip": an out= array is written directly (mode="raise" buffers it); idx is valid
            seen[id(cache)] = np.take(cache, idx, axis=0, out=dst, mode="clip")
        return seen[id(cache)]
    if isinstance(cache, tuple) and cache and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in cache):
        if cache[0] == n:
            return (len(idx),) + tuple(cache[1:])
        raise NotRowwise
    if isinstance(cache, (tuple, list)):
        return type(cache)(take_rows(v, idx, n, out, seen) for v in cache)
    if isinstance(cache, dict):
        return {k: take_rows(v, idx, n, out, seen) for k, v in cache.items()}
    raise NotRowwise


def _is_block(m):
    """A pre-norm transformer block: children ``ln1, attn, ln2, mlp`` and its residual dropout."""
    return set(m.children) == {"ln1", "attn", "ln2", "mlp"} and hasattr(m, "drop")


def _is_attention(m):
    """Multi-head attention with two dense projections and the ``attention_vjp`` hook between."""
    return callable(getattr(m, "attention_vjp", None)) and set(m.children) == {"in_proj", "out_proj"}


def _flat_chain(m, cache, prefix=""):
    """``[(name, module, cache)]`` of a Sequential's elements, nested Sequentials flattened."""
    if m.combinator != "chain":
        return [(prefix, m, cache)]
    out = []
    for (cname, child), c in zip(m.children.items(), cache):
        out += _flat_chain(child, c, dotted(prefix, cname))
    return out


def structure(model):
    """``(kind, samplers, dense)``: ``"gpt"``, ``"vit"`` or ``"chain"``; the activation samplers'
    names bottom to top (the blocks they sit on); the dense layers whose weight gradients are
    sampled (those inside the blocks). ``kind`` is None for a model VCAS cannot walk."""
    from ..models.gpt import GPT
    from ..models.vit import ViT

    if isinstance(model, (GPT, ViT)):
        prefix = "h" if isinstance(model, GPT) else "blocks"
        blocks = [(dotted(prefix, c), b) for c, b in model.children[prefix].children.items()]
    elif model.combinator == "chain":
        items = [(n, m) for n, m in model.chain() if m.params]
        blocks = items[:-1]                            # the output layer stays exact (the head)
    else:
        return None, [], []
    samplers = [n for n, _ in blocks]
    dense = [name for n, b in blocks for name, leaf in b.leaves(n) if leaf.dense]
    kind = "gpt" if isinstance(model, GPT) else "vit" if isinstance(model, ViT) else "chain"
    return kind, samplers, dense


class Pass:
    """One backward pass of VCAS over a forward cache; see the module docstring.

    Parameters
    ----------
    mode : ``"exact"``, ``"act"`` or ``"vcas"``.
    n : the batch size ``N`` of the cache.
    act_ratio : sampler name → keep ratio :math:`\\rho_l` of samples; nu : dense layer name →
        keep ratio :math:`\\nu_l` of rows for its weight gradient.
    rng : the Generator of the Bernoulli draws.
    rows : the samples this pass starts from (default all).
    parts : ``"exact"`` mode: split the batch into this many contiguous parts and keep each
        sampled dense layer's weight gradient per part too (``part_grads``; the controller's
        :math:`V_s`); the products run on row slices (views), their sum is the gradient.
    row_overhead : :math:`\\kappa`, the leverage sampler's cost per row in multiply-adds per entry
        of a row of ``x`` and of ``g``: a dense layer ``in → out`` computes its weight gradient
        exactly when :math:`\\nu_l \\ge 1 - \\kappa(1/\\text{in} + 1/\\text{out})`, where sampling
        costs more time than it saves. The exact product is an unbiased estimate with zero added
        variance (the FLOP counter counts it). 0 (default): the paper's sampler whenever
        :math:`\\nu_l < 1`.
    pool : a dict kept across passes for the gathered caches' buffers (see :meth:`_buffer`);
        None: fresh arrays.
    mask_above : when an activation sampler keeps at least this share of the rows the pass is
        computing, the dropped samples' cotangents are set to zero and the rows stay (products on
        zeros) instead of gathering the kept rows of every cache below: the same estimate, the
        same random draws, no copies (the FLOP counter counts the rows computed). Above 1: always
        gather.

    After :meth:`run`: ``grads`` (dotted name → array, absent when no row reached it), ``flops``
    (unit → ``[done, exact, forward]``), ``idx`` (the samples still alive), ``norms`` (sampler →
    per-sample norms over the whole batch, in ``"exact"`` mode), ``scores`` (dense name → leverage
    scores of its alive rows), ``part_grads``, ``saved`` (with ``parts``: dense name → its rows
    ``(g, x)``, the cotangent and input; :mod:`~nograd.rules.vcas_control` reads them) and
    ``top`` (the cotangent of the top block's output: an ``"act"`` pass of the same batch can start there, ``run(..., top=...)``). An
    ``"act"`` pass only serves the controller: it stops below the bottom block (nothing under it
    is sampled) and skips that block's input cotangent.
    """

    def __init__(self, mode, n, act_ratio, nu, rng, rows=None, *, parts=None, row_overhead=0.0,
                 mask_above=0.85, pool=None):
        if mode not in ("exact", "act", "vcas"):
            raise ValueError(f"mode must be 'exact', 'act' or 'vcas', got {mode!r}")
        self.mode, self.n, self.rng = mode, int(n), rng
        self.act_ratio, self.nu = act_ratio, nu
        if parts is not None and (rows is not None or mode != "exact"):
            raise ValueError("parts needs an 'exact' pass over the whole batch (rows=None)")
        self.idx = np.arange(self.n) if rows is None else np.asarray(rows)
        self.rows, self.live = self.idx, None       # rows computed; positions of the alive ones
        self.kappa, self.mask_above = float(row_overhead), float(mask_above)
        self.parts = None if parts is None else np.array_split(np.arange(self.n), parts)
        self.grads, self.flops, self.norms, self.scores, self.part_grads = {}, {}, {}, {}, {}
        self.saved = {}
        self.top, self.pool, self._slot = None, pool, 0

    # ------------------------------------------------------------------ bookkeeping
    def _add(self, key, value):
        self.grads[key] = value if key not in self.grads else self.grads[key] + value

    def _count(self, name, done, per_row_exact, fwd_per_row, rows):
        """Record a unit's FLOPs; ``*_per_row`` × rows scaled from the computed samples to ``N``."""
        scale = self.n / max(len(self.rows), 1)
        f = self.flops.setdefault(name, [0.0, 0.0, 0.0])
        f[0] += float(done)
        f[1] += float(per_row_exact) * rows * scale
        f[2] += float(fwd_per_row) * rows * scale

    def _rows(self, cache):
        if len(self.rows) == self.n and np.array_equal(self.rows, np.arange(self.n)):
            return cache
        return take_rows(cache, self.rows, self.n, None if self.pool is None else self._buffer)

    def _buffer(self, shape, dtype):
        """The ``pool``'s buffer for this pass's next gathered array: the first ``shape[0]`` rows
        of an ``(N, ...)`` array kept from an earlier pass (the ``k``-th gather of each pass
        reuses the same one; gathered caches live only until the pass ends)."""
        key = (self._slot, shape[1:], np.dtype(dtype).str)
        self._slot += 1
        buf = self.pool.get(key)
        if buf is None or buf.shape[0] < shape[0]:
            buf = self.pool[key] = np.empty((max(self.n, shape[0]),) + tuple(shape[1:]), dtype)
        return buf[:shape[0]]

    # ------------------------------------------------------------------ samplers
    def sample(self, name, upper, dy):
        """The activation sampler on ``name``'s output cotangent ``dy`` (the computed rows);
        ``upper`` is the sampler above it (None at the top). Returns the kept, reweighted rows —
        or all the rows with the dropped ones zeroed (``mask_above``)."""
        if self.mode == "exact":
            full = self.norms.setdefault(name, np.zeros(self.n))
            full[self.rows] = row_norms(dy)
            return dy
        rho = self.act_ratio[name]
        if upper is not None and rho >= self.act_ratio[upper]:
            return dy
        k = max(1.0, self.n * rho)          # the expected number kept; not rounded down (#23)
        alive = len(self.idx)
        if k >= alive:
            return dy
        norms = row_norms(dy)
        if self.live is not None:
            norms = norms[self.live]
        if k >= np.count_nonzero(norms):
            return dy
        p = water_fill(norms, k)
        keep = np.flatnonzero(keep_mask(p, self.rng))     # one draw per alive sample, either way
        w = (1.0 / p[keep]).astype(dy.dtype)
        self.idx = self.idx[keep]
        at = keep if self.live is None else self.live[keep]      # positions in the computed rows
        if len(keep) >= self.mask_above * len(self.rows):
            scale = np.zeros(len(self.rows), dy.dtype)
            scale[at] = w
            self.live = at
            return dy * scale.reshape((-1,) + (1,) * (dy.ndim - 1))
        self.rows, self.live = self.rows[at], None
        return dy[at] * w.reshape((-1,) + (1,) * (dy.ndim - 1))

    # ------------------------------------------------------------------ units
    def unit(self, name, m, cache, dy, need_dx):
        """Backward of one unit on the computed rows: its cache rows gathered, or, for a cache that
        is not per-sample, the cotangent scattered back into the whole batch (zeros elsewhere)."""
        try:
            c = self._rows(cache)
        except NotRowwise:
            full = np.zeros((self.n,) + dy.shape[1:], dy.dtype)
            full[self.rows] = dy
            rows, live = self.rows, self.live
            self.rows, self.live = np.arange(self.n), self.idx
            dx = self.vjp(name, m, cache, full, need_dx)
            self.rows, self.live = rows, live
            return None if dx is None else dx[rows]
        return self.vjp(name, m, c, dy, need_dx)

    def vjp(self, name, m, cache, dy, need_dx):
        """The cotangent of ``m``'s input from ``dy`` (``cache`` already on the computed rows)."""
        if m.dense and isinstance(cache, np.ndarray) and set(m.params) <= {"weight", "bias"} \
                and cache.shape[-1] == m.in_features:
            return self.dense(name, m, cache, dy, need_dx)
        if m.combinator == "chain":
            items = list(m.children.items())
            for i in range(len(items) - 1, -1, -1):
                cname, child = items[i]
                dy = self.vjp(dotted(name, cname), child, cache[i], dy, need_dx or i > 0)
            return dy
        if m.combinator == "sum":
            cb, cs, _ = cache
            dxb = self.vjp(dotted(name, "body"), m.children["body"], cb, dy, need_dx)
            short = m.children.get("shortcut")
            dxs = dy if short is None else self.vjp(dotted(name, "shortcut"), short, cs, dy, need_dx)
            return dxb + dxs if need_dx else None
        if _is_attention(m) and isinstance(cache, tuple) and len(cache) == 3:
            return self.attention(name, m, cache, dy, need_dx)
        if _is_block(m) and isinstance(cache, dict):
            return self.block(name, m, cache, dy, need_dx)
        return self.opaque(name, m, cache, dy, need_dx)

    def _alive_rows(self, R):
        """The alive rows of a ``(R, ·)`` reshape of the computed samples' arrays (None: all)."""
        if self.live is None:
            return None
        per = R // len(self.rows)
        return (self.live[:, None] * per + np.arange(per)).ravel()

    def dense(self, name, m, x, dy, need_dx):
        r""":math:`\bar x = \bar y W` on every computed row; :math:`\bar W` from leverage-sampled
        rows in ``"vcas"`` mode (:func:`~nograd.kernels.vcas.leverage_rows`, or the exact product
        where ``row_overhead`` says sampling costs more); :math:`\bar b = \sum_t \bar y_t` exact."""
        W = m.params["weight"]
        out, inp = W.shape
        d2, x2 = dy.reshape(-1, out), x.reshape(-1, inp)
        R = d2.shape[0]
        alive = self._alive_rows(R)
        n_alive = R if alive is None else len(alive)
        nu = self.nu.get(name)
        k = 0 if nu is None else max(1, int(nu * n_alive))      # the paper's budget, ⌊ν R⌋
        if self.mode == "vcas" and nu is not None and k < n_alive \
                and nu < 1 - self.kappa * (1 / inp + 1 / out):
            from ..kernels.vcas import leverage_rows  # lazy: `import nograd` stays NumPy-only

            u = self.rng.random(n_alive)
            gs, xs = leverage_rows(np.ascontiguousarray(d2), np.ascontiguousarray(x2),
                                   np.arange(R) if alive is None else alive, u, float(k))
            dW, used = gs.T @ xs, gs.shape[0]
        elif self.parts is not None and nu is not None:
            per = R // self.n                       # exact mode on all samples: contiguous parts
            pg = [d2[a[0] * per:(a[-1] + 1) * per].T @ x2[a[0] * per:(a[-1] + 1) * per]
                  for a in self.parts]
            self.part_grads[name] = [g.astype(W.dtype, copy=False) for g in pg]
            self.saved[name] = (d2, x2)
            dW, used = sum(pg[1:], pg[0]), R
        else:
            dW, used = d2.T @ x2, R
        if self.mode != "vcas" and nu is not None:
            from ..kernels.vcas import leverage_scores

            a = leverage_scores(np.ascontiguousarray(d2), np.ascontiguousarray(x2))
            self.scores[name] = a if alive is None else a[alive]
        self._add(dotted(name, "weight"), dW.astype(W.dtype, copy=False))
        if "bias" in m.params:
            self._add(dotted(name, "bias"), d2.sum(axis=0).astype(W.dtype, copy=False))
        mac = out * inp
        self._count(name, 2 * mac * (used + (R if need_dx else 0)), 2 * mac * (1 + need_dx), 2 * mac, R)
        if not need_dx:
            return None
        Wd = W if W.dtype == dy.dtype else W.astype(dy.dtype)
        return (d2 @ Wd).reshape(x.shape)

    def attention(self, name, m, cache, dy, need_dx):
        """Output projection, the attention core (``m.attention_vjp``), input projection."""
        c_in, c_att, c_out = cache
        dm = self.vjp(dotted(name, "out_proj"), m.children["out_proj"], c_out, dy, True)
        dqkv = m.attention_vjp(c_att, dm)
        q, k = c_att[0], c_att[1]
        per = 2 * int(np.prod(q.shape[1:])) * k.shape[-2]          # 2·H·Tq·Tk·D per sample
        self._count(dotted(name, "core"), 4 * per * q.shape[0], 4 * per, 2 * per, q.shape[0])
        return self.vjp(dotted(name, "in_proj"), m.children["in_proj"], c_in, dqkv, need_dx)

    def block(self, name, m, cache, dy, need_dx=True):
        """The pre-norm block's chain rule: each residual passes ``dy`` on and adds its branch's
        (without ``need_dx``: the first sub-layer's input cotangent and its norm are skipped)."""
        for norm, sub in (("ln2", "mlp"), ("ln1", "attn")):
            last = sub == "attn" and not need_dx
            d = dy
            if cache["drop_" + sub] is not None:
                d, _ = m.drop.backward(cache["drop_" + sub], d)
            d = self.vjp(dotted(name, sub), m.children[sub], cache[sub], d, not last)
            if last:
                return None
            d = self.vjp(dotted(name, norm), m.children[norm], cache[norm], d, True)
            dy = dy + d
        return dy

    def opaque(self, name, m, cache, dy, need_dx):
        """Any other module: its own backward on the computed rows (exact for those rows)."""
        dx, g = m.backward(cache, dy, need_dx=need_dx)
        for k, v in g.items():
            self._add(dotted(name, k), v)
        W = m.params.get("weight")
        if W is not None and W.ndim >= 3 and dy.size % W.shape[0] == 0:
            positions = dy.size // W.shape[0]
            per = 2 * W.size * positions // max(dy.shape[0], 1)
            self._count(name, per * dy.shape[0] * (1 + need_dx), per * (1 + need_dx), per, dy.shape[0])
        return dx

    # ------------------------------------------------------------------ whole models
    def blocks(self, names, mods, caches, dy):
        """The blocks from the top down, each after its sampler; None once no sample is left (or
        below the bottom block in ``"act"`` mode)."""
        for j in range(len(mods) - 1, -1, -1):
            dy = self.sample(names[j], names[j + 1] if j + 1 < len(mods) else None, dy)
            if len(self.idx) == 0:
                return None
            dy = self.unit(names[j], mods[j], caches[j], dy, j > 0 or self.mode != "act")
        return dy

    def run(self, model, kind, cache, dy, top=None):
        """The pass over ``model`` (``kind`` from :func:`structure`) from the output cotangent
        ``dy`` — or from ``top``, the cotangent of the top block's output that an earlier pass
        of the same batch (and ``rows``) left in its ``top``; returns ``self``."""
        if len(self.idx) != self.n and top is None:
            dy = dy[self.idx]
        getattr(self, "_run_" + kind)(model, cache, dy, top)
        return self

    def _head(self, key, W, h, dy):
        """``logits = h Wᵀ`` (GPT's head): exact :math:`\\bar W` and :math:`\\bar h`."""
        V, E = W.shape
        d2, h2 = dy.reshape(-1, V), h.reshape(-1, E)
        self._add(key, (d2.T @ h2).astype(W.dtype, copy=False))
        R = d2.shape[0]
        self._count("head", 4 * V * E * R, 4 * V * E, 2 * V * E, R)
        return (d2 @ (W if W.dtype == dy.dtype else W.astype(dy.dtype))).reshape(h.shape)

    def _top(self, top, make):
        """The top block's output cotangent: ``top`` if given, else ``make()`` (kept as ``top``)."""
        self.top = make() if top is None else top
        return self.top

    def _run_gpt(self, model, cache, dy, top):
        key = "wte.weight" if model.tie_weights else "head.weight"
        ch = model.children
        dh = self._top(top, lambda: self.unit("ln_f", ch["ln_f"], cache["ln_f"], self._head(
            key, model.params[key], self._rows(cache["top"]), dy), True))
        blocks = list(ch["h"].children.items())
        dh = self.blocks([dotted("h", c) for c, _ in blocks], [b for _, b in blocks], cache["h"], dh)
        if dh is None or self.mode == "act":
            return
        if cache["drop"] is not None:
            dh, _ = model.drop.backward(self._rows(cache["drop"]), dh)
        dh = self.unit("wpe", ch["wpe"], cache["wpe"], dh, True)
        self.unit("wte", ch["wte"], cache["wte"], dh, False)

    def _vit_top(self, model, cache, dy):
        ch = model.children
        N, T, D = cache["shape"]
        dz = self.unit("head", ch["head"], cache["head"], dy, True)
        dh = np.zeros((dz.shape[0], T, D), dz.dtype)
        if model.pool == "cls":
            dh[:, 0] = dz
        else:
            dh[...] = dz[:, None, :] / dz.dtype.type(T)
        return self.unit("norm", ch["norm"], cache["norm"], dh, True)

    def _run_vit(self, model, cache, dy, top):
        ch = model.children
        dh = self._top(top, lambda: self._vit_top(model, cache, dy))
        blocks = list(ch["blocks"].children.items())
        dh = self.blocks([dotted("blocks", c) for c, _ in blocks], [b for _, b in blocks],
                         cache["blocks"], dh)
        if dh is None or self.mode == "act":
            return
        if cache["drop"] is not None:
            dh, _ = model.drop.backward(self._rows(cache["drop"]), dh)
        dh = self.unit("pos", ch["pos"], cache["pos"], dh, True)
        if model.pool == "cls":
            cls = model.params["cls_token"]
            self._add("cls_token", dh[:, :1].sum(axis=0, keepdims=True).astype(cls.dtype, copy=False))
            dh = dh[:, 1:]
        self.unit("patch", ch["patch"], cache["patch"], np.ascontiguousarray(dh), False)

    def _run_chain(self, model, cache, dy, top):
        items = _flat_chain(model, cache)
        with_params = [i for i, (_, m, _) in enumerate(items) if m.params]
        samplers = with_params[:-1]
        above = {lo: (items[hi][0] if hi is not None else None)
                 for lo, hi in zip(samplers, samplers[1:] + [None])}
        first = samplers[-1] if samplers else -1        # the top block: items above it are exact

        def down(i, dy):
            for i in range(i, first, -1):
                dy = self.unit(items[i][0], items[i][1], items[i][2], dy, i > 0)
                if dy is None:
                    return None
            return dy

        dy = self._top(top, lambda: down(len(items) - 1, dy))
        if dy is None:
            return
        for i in range(first, -1, -1):
            name, m, c = items[i]
            if i in above:
                dy = self.sample(name, above[i], dy)
                if len(self.idx) == 0:
                    return
            last = self.mode == "act" and i == samplers[0]
            dy = self.unit(name, m, c, dy, i > 0 and not last)
            if dy is None or last:
                return
