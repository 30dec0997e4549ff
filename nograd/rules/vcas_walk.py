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
  (:func:`~nograd.rules.vcas_sampling.leverage_weight_grad`); the bias gradient stays exact.

Both estimates are unbiased, so the pass is an unbiased estimate of the gradient. ``mode``:
``"exact"`` samples nothing (and records the samplers' per-sample norms for the controller),
``"act"`` samples activations only and records each dense layer's leverage scores, from which
the controller computes the variance weight sampling would add (its Monte-Carlo passes);
``"vcas"`` samples both.

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
from .vcas_sampling import keep_mask, leverage_weight_grad, row_norms, water_fill

__all__ = ["Pass", "NotRowwise", "take_rows", "structure"]


class NotRowwise(Exception):
    """A cache holds something that is not one row per sample (the unit then runs on all rows)."""


def take_rows(cache, idx, n):
    """The rows ``idx`` of every per-sample array in ``cache`` (leading axis ``n``), recursively
    through tuples, lists and dicts; a shape tuple ``(n, ...)`` becomes ``(len(idx), ...)``;
    scalars and ``None`` pass. Anything else raises :class:`NotRowwise`."""
    if cache is None or isinstance(cache, (bool, int, float, str, np.generic)):
        return cache
    if isinstance(cache, np.ndarray):
        if cache.ndim == 0:
            return cache
        if cache.shape[0] == n:
            return cache[idx]
        raise NotRowwise
    if isinstance(cache, tuple) and cache and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in cache):
        if cache[0] == n:
            return (len(idx),) + tuple(cache[1:])
        raise NotRowwise
    if isinstance(cache, (tuple, list)):
        return type(cache)(take_rows(v, idx, n) for v in cache)
    if isinstance(cache, dict):
        return {k: take_rows(v, idx, n) for k, v in cache.items()}
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
    rows : the samples this pass starts from (default all; the controller's exact passes run on
        parts of the batch).

    After :meth:`run`: ``grads`` (dotted name → array, absent when no row reached it), ``flops``
    (unit → ``[done, exact, forward]``), ``norms`` (sampler → per-sample norms over the whole
    batch, in ``"exact"`` mode) and ``scores`` (dense name → leverage scores of its rows;
    in ``"exact"`` mode a list, one array per call).
    """

    def __init__(self, mode, n, act_ratio, nu, rng, rows=None):
        if mode not in ("exact", "act", "vcas"):
            raise ValueError(f"mode must be 'exact', 'act' or 'vcas', got {mode!r}")
        self.mode, self.n, self.rng = mode, int(n), rng
        self.act_ratio, self.nu = act_ratio, nu
        self.idx = np.arange(self.n) if rows is None else np.asarray(rows)
        self.grads, self.flops, self.norms, self.scores = {}, {}, {}, {}

    # ------------------------------------------------------------------ bookkeeping
    def _add(self, key, value):
        self.grads[key] = value if key not in self.grads else self.grads[key] + value

    def _count(self, name, done, per_row_exact, fwd_per_row, rows):
        """Record a unit's FLOPs; ``*_per_row`` × rows scaled from the alive samples to ``N``."""
        scale = self.n / max(len(self.idx), 1)
        f = self.flops.setdefault(name, [0.0, 0.0, 0.0])
        f[0] += float(done)
        f[1] += float(per_row_exact) * rows * scale
        f[2] += float(fwd_per_row) * rows * scale

    def _rows(self, cache):
        if len(self.idx) == self.n and np.array_equal(self.idx, np.arange(self.n)):
            return cache
        return take_rows(cache, self.idx, self.n)

    # ------------------------------------------------------------------ samplers
    def sample(self, name, upper, dy):
        """The activation sampler on ``name``'s output cotangent ``dy`` (alive rows only); ``upper``
        is the sampler above it (None at the top). Returns the kept, reweighted rows."""
        if self.mode == "exact":
            full = self.norms.setdefault(name, np.zeros(self.n))
            full[self.idx] = row_norms(dy)
            return dy
        rho = self.act_ratio[name]
        if upper is not None and rho >= self.act_ratio[upper]:
            return dy
        k = max(1.0, self.n * rho)          # the expected number kept; not rounded down (#23)
        if k >= len(dy):
            return dy
        norms = row_norms(dy)
        if k >= np.count_nonzero(norms):
            return dy
        p = water_fill(norms, k)
        keep = np.flatnonzero(keep_mask(p, self.rng))
        self.idx = self.idx[keep]
        w = (1.0 / p[keep]).astype(dy.dtype)
        return dy[keep] * w.reshape((-1,) + (1,) * (dy.ndim - 1))

    # ------------------------------------------------------------------ units
    def unit(self, name, m, cache, dy, need_dx):
        """Backward of one unit on the alive rows: its cache rows gathered, or, for a cache that is
        not per-sample, the cotangent scattered back into the whole batch (zeros elsewhere)."""
        try:
            c = self._rows(cache)
        except NotRowwise:
            full = np.zeros((self.n,) + dy.shape[1:], dy.dtype)
            full[self.idx] = dy
            alive, self.idx = self.idx, np.arange(self.n)
            dx = self.vjp(name, m, cache, full, need_dx)
            self.idx = alive
            return None if dx is None else dx[alive]
        return self.vjp(name, m, c, dy, need_dx)

    def vjp(self, name, m, cache, dy, need_dx):
        """The cotangent of ``m``'s input from ``dy`` (``cache`` already on the alive rows)."""
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
            return self.block(name, m, cache, dy)
        return self.opaque(name, m, cache, dy, need_dx)

    def dense(self, name, m, x, dy, need_dx):
        r""":math:`\bar x = \bar y W` on every alive row; :math:`\bar W` from leverage-sampled rows in
        ``"vcas"`` mode; :math:`\bar b = \sum_t \bar y_t` exact."""
        W = m.params["weight"]
        out, inp = W.shape
        d2, x2 = dy.reshape(-1, out), x.reshape(-1, inp)
        R = d2.shape[0]
        nu = self.nu.get(name)
        if self.mode == "vcas" and nu is not None and nu < 1:
            dW, used = leverage_weight_grad(d2, x2, nu, self.rng)
        else:
            dW, used = d2.T @ x2, R
        if self.mode != "vcas" and nu is not None:
            a = row_norms(d2) * row_norms(x2)
            if self.mode == "act":
                self.scores[name] = a
            else:                                    # rows of the whole batch, part by part
                self.scores.setdefault(name, []).append(a)
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

    def block(self, name, m, cache, dy):
        """The pre-norm block's chain rule: each residual passes ``dy`` on and adds its branch's."""
        for norm, sub in (("ln2", "mlp"), ("ln1", "attn")):
            d = dy
            if cache["drop_" + sub] is not None:
                d, _ = m.drop.backward(cache["drop_" + sub], d)
            d = self.vjp(dotted(name, sub), m.children[sub], cache[sub], d, True)
            d = self.vjp(dotted(name, norm), m.children[norm], cache[norm], d, True)
            dy = dy + d
        return dy

    def opaque(self, name, m, cache, dy, need_dx):
        """Any other module: its own backward on the alive rows (exact for those rows)."""
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
        """The blocks from the top down, each after its sampler; None once no sample is left."""
        for j in range(len(mods) - 1, -1, -1):
            dy = self.sample(names[j], names[j + 1] if j + 1 < len(mods) else None, dy)
            if dy.shape[0] == 0:
                return None
            dy = self.unit(names[j], mods[j], caches[j], dy, True)
        return dy

    def run(self, model, kind, cache, dy):
        """The pass over ``model`` (``kind`` from :func:`structure`) from the output cotangent
        ``dy``; returns ``self``."""
        if len(self.idx) != self.n:
            dy = dy[self.idx]
        getattr(self, "_run_" + kind)(model, cache, dy)
        return self

    def _head(self, key, W, h, dy):
        """``logits = h Wᵀ`` (GPT's head): exact :math:`\\bar W` and :math:`\\bar h`."""
        V, E = W.shape
        d2, h2 = dy.reshape(-1, V), h.reshape(-1, E)
        self._add(key, (d2.T @ h2).astype(W.dtype, copy=False))
        R = d2.shape[0]
        self._count("head", 4 * V * E * R, 4 * V * E, 2 * V * E, R)
        return (d2 @ (W if W.dtype == dy.dtype else W.astype(dy.dtype))).reshape(h.shape)

    def _run_gpt(self, model, cache, dy):
        key = "wte.weight" if model.tie_weights else "head.weight"
        ch = model.children
        dh = self._head(key, model.params[key], self._rows(cache["top"]), dy)
        dh = self.unit("ln_f", ch["ln_f"], cache["ln_f"], dh, True)
        blocks = list(ch["h"].children.items())
        dh = self.blocks([dotted("h", c) for c, _ in blocks], [b for _, b in blocks], cache["h"], dh)
        if dh is None:
            return
        if cache["drop"] is not None:
            dh, _ = model.drop.backward(self._rows(cache["drop"]), dh)
        dh = self.unit("wpe", ch["wpe"], cache["wpe"], dh, True)
        self.unit("wte", ch["wte"], cache["wte"], dh, False)

    def _run_vit(self, model, cache, dy):
        ch = model.children
        N, T, D = cache["shape"]
        dz = self.unit("head", ch["head"], cache["head"], dy, True)
        dh = np.zeros((dz.shape[0], T, D), dz.dtype)
        if model.pool == "cls":
            dh[:, 0] = dz
        else:
            dh[...] = dz[:, None, :] / dz.dtype.type(T)
        dh = self.unit("norm", ch["norm"], cache["norm"], dh, True)
        blocks = list(ch["blocks"].children.items())
        dh = self.blocks([dotted("blocks", c) for c, _ in blocks], [b for _, b in blocks],
                         cache["blocks"], dh)
        if dh is None:
            return
        if cache["drop"] is not None:
            dh, _ = model.drop.backward(self._rows(cache["drop"]), dh)
        dh = self.unit("pos", ch["pos"], cache["pos"], dh, True)
        if model.pool == "cls":
            cls = model.params["cls_token"]
            self._add("cls_token", dh[:, :1].sum(axis=0, keepdims=True).astype(cls.dtype, copy=False))
            dh = dh[:, 1:]
        self.unit("patch", ch["patch"], cache["patch"], np.ascontiguousarray(dh), False)

    def _run_chain(self, model, cache, dy):
        items = _flat_chain(model, cache)
        with_params = [i for i, (_, m, _) in enumerate(items) if m.params]
        samplers = set(with_params[:-1])
        above = {}
        for lo, hi in zip(with_params[:-1], with_params[1:-1] + [None]):
            above[lo] = None if hi is None else items[hi][0]
        for i in range(len(items) - 1, -1, -1):
            name, m, c = items[i]
            if i in samplers:
                dy = self.sample(name, above[i], dy)
                if dy.shape[0] == 0:
                    return
            dy = self.unit(name, m, c, dy, i > 0)
            if dy is None:
                return
