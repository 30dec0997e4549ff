r"""Importance scores of the structured groups of a GPT (see :mod:`.prune_groups`).

Every score is a sum over the weights :math:`W_{ij}` of a group (rows and columns of the four
grouped matrices of a block) of a per-weight importance; :math:`\|X_j\|_2` is the norm of input
feature :math:`j` of that matrix over all calibration tokens, :math:`G = \nabla_W \mathcal L` the
gradient of the mean token cross-entropy :math:`\mathcal L` on the calibration batches.

============  ==============================================  ==========================================
score         per-weight importance                           source
============  ==============================================  ==========================================
magnitude     :math:`W_{ij}^2`, then :math:`\sqrt{\cdot}`     the group's weight norm
wanda         :math:`|W_{ij}|\,\|X_j\|_2`                     Sun et al. 2024 (Wanda), eq. 1, per group
taylor        :math:`|W_{ij} G_{ij}|`                         LLM-Pruner (Ma et al. 2023), §3.2, first-order
                                                              element-wise term, exact backprop gradient
mini-llm      :math:`|W_{ij} \hat G_{ij}|\,\|X_j\|_2`         MINI-LLM (Cheng et al. 2024), §3: feature
                                                              map sensitivity with a zeroth-order
                                                              :math:`\hat G` (two kinds below)
============  ==============================================  ==========================================

The zeroth-order gradient of ``mini-llm`` is n-SPSA (Spall 1992; Malladi et al. 2023, Definition 1,
as MINI-LLM uses it), over the grouped matrices :math:`\theta` only:

.. math::
    c_k = \frac{\mathcal L_{b_k}(\theta + \varepsilon z_k) - \mathcal L_{b_k}(\theta - \varepsilon z_k)}
               {2\varepsilon}, \qquad
    \hat G = \frac1n \sum_{k=1}^{n} c_k z_k,

with :math:`b_k` the :math:`k`-th calibration batch (cycled). As in MeZO (Algorithm 1) :math:`\theta`
is perturbed in place and :math:`z_k` is never stored: it is drawn again from its seed whenever it
is needed — to perturb, to restore, and at the end to form :math:`\hat G` — so scoring needs the
memory of inference. Two direction distributions (``directions=``):

* ``"weights"`` — :math:`z_k \sim \mathcal N(0, I_d)` over all :math:`d` grouped weights (the
  paper's estimator taken literally; :func:`zo_gradient`). :math:`\mathbb E[\hat G] = G +
  O(\varepsilon^2)` and :math:`\mathbb E\|\hat G\|^2 \approx \|G\|^2 (1 + (d+1)/n)`, so the cosine of
  :math:`\hat G` and :math:`G` is about :math:`1/\sqrt{1 + (d+1)/n}` (tested): for the default GPT
  (:math:`d` = 0.79 M) and :math:`n = 64` it is 0.009, the per-weight :math:`|\hat G_{ij}|` is
  noise of one size for every weight, and the FMS becomes a noisy Wanda score (measured).
* ``"groups"`` (default) — :math:`z_k = W \odot u_k` with one :math:`u_{k,g} \sim \mathcal N(0,1)`
  per group, i.e. a multiplicative gate :math:`W_g \to (1 \pm \varepsilon u_{k,g}) W_g`
  (:func:`zo_group_gradient`). The estimate is then :math:`\hat G_{ij} = \hat a_g W_{ij}` on group
  :math:`g`, with :math:`\hat a_g` the SPSA estimate of
  :math:`a_g = \sum_{(i,j)\in g} W_{ij} G_{ij}` in the :math:`d_g`-dimensional space of the gates
  (:math:`d_g` = 2 048 MLP channels and 16 heads for the default GPT), and the FMS formula gives
  :math:`S_g = |\hat a_g| \sum_{(i,j) \in g} W_{ij}^2 \|X_j\|_2`.
"""
from __future__ import annotations

import numpy as np

from .prune_groups import GROUP_KINDS, MATRICES, _blocks, aggregate, block_weights, lean_forward

__all__ = ["SCORES", "DIRECTIONS", "activation_norms", "lm_loss", "zo_gradient", "zo_group_gradient",
           "backprop_gradient", "group_scores"]

SCORES = ("mini-llm", "magnitude", "wanda", "taylor")
#: the perturbation directions of mini-llm's SPSA estimate, and their default ε
DIRECTIONS = {"mixed": None, "gates": 1e-2, "weights": 1e-3}


def lm_loss(logits, y) -> float:
    r"""Mean token cross-entropy :math:`\frac1{BT}\sum_{b,t} \operatorname{logsumexp}(z_{bt}) - z_{bt,y_{bt}}`
    of logits ``(B, T, V)`` against ids ``y (B, T)``, accumulated in float64; no gradient kept."""
    z = logits.reshape(-1, logits.shape[-1])
    m = z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(axis=1, dtype=np.float64)) + m[:, 0]
    return float(np.mean(lse - z[np.arange(z.shape[0]), y.reshape(-1)]))


def activation_norms(model, batches) -> list[dict]:
    r"""Per block, the input-feature norms :math:`\|X_j\|_2` (float64) of the grouped matrices over
    every token of ``batches``: ``{"in": (E,), "out": (HD,), "up": (E,), "down": (M,)}``. One
    inference pass per batch (:func:`~.prune_groups.lean_forward`)."""
    sq = [None] * len(_blocks(model))

    def collect(l, c):
        inputs = {"in": c["attn"][0], "out": c["attn"][2], "up": c["mlp"][0], "down": c["mlp"][2]}
        s = {k: np.einsum("btj,btj->j", a, a, dtype=np.float64) for k, a in inputs.items()}
        sq[l] = s if sq[l] is None else {k: sq[l][k] + s[k] for k in s}

    for x, _ in batches:
        lean_forward(model, x, on_block=collect)
    return [{k: np.sqrt(v) for k, v in s.items()} for s in sq]


def _grouped(model):
    """``[(name, array)]`` of the grouped weight matrices, block by block, role by role."""
    out = []
    for l, block in enumerate(_blocks(model)):
        for role, w in block_weights(block).items():
            out.append((f"h.{l}.{MATRICES[role]}.weight", w))
    return out


def _z(seed, k, m, a):
    return np.random.default_rng([seed, k, m]).standard_normal(a.shape, dtype=a.dtype)


def _perturb(mats, seed, k, scale):
    for m, _, a in mats:
        z = _z(seed, k, m, a)
        z *= a.dtype.type(scale)
        a += z


def _spsa(model, batches, n, eps, perturb, progress):
    """The n probe values ``c_k`` of two-point SPSA: ``perturb(k, state)`` moves the weights in place
    to θ + εz_k (``"+"``), then to θ − εz_k (``"-"``), then back to θ (``"0"``)."""
    c = np.empty(n)
    for k in range(n):
        x, y = batches[k % len(batches)]
        perturb(k, "+")
        try:
            plus = lm_loss(lean_forward(model, x), y)
        except BaseException:
            perturb(k, "-")
            perturb(k, "0")
            raise
        perturb(k, "-")
        try:
            minus = lm_loss(lean_forward(model, x), y)
        finally:
            perturb(k, "0")
        if not (np.isfinite(plus) and np.isfinite(minus)):
            raise FloatingPointError(f"the loss at θ ± εz is not finite (probe {k}); lower eps")
        c[k] = (plus - minus) / (2 * eps)
        if progress is not None:
            progress(k + 1, n)
    return c


def zo_gradient(model, batches, *, n=64, eps=1e-3, seed=0, roles=None, progress=None) -> dict:
    r"""The n-SPSA estimate :math:`\hat G` (module docstring) of the loss gradient for the grouped
    matrices, by name (``"h.0.attn.in_proj.weight"`` ...), with isotropic directions
    :math:`z_k \sim \mathcal N(0, I_d)`; forward passes only, weights perturbed in place and
    restored (to rounding, as MeZO). Returns ``{"grads": {name: array}, "c": (n,)}``.

    ``batches``: a list of ``(x, y)`` id arrays ``(B, T)``; probe ``k`` uses batch ``k mod len``.
    ``roles``: the matrices perturbed and estimated (``"in"``, ``"out"``, ``"up"``, ``"down"``; None:
    all four of every block); matrix ``m`` of the full list keeps its seed ``(s, k, m)`` either way.
    ``progress(k, n)``, if given, is called after every probe.
    """
    suffixes = tuple(MATRICES[r] + ".weight" for r in (roles or MATRICES))
    mats = [(m, name, a) for m, (name, a) in enumerate(_grouped(model)) if name.endswith(suffixes)]
    steps = {"+": eps, "-": -2 * eps, "0": eps}
    c = _spsa(model, batches, n, eps, lambda k, state: _perturb(mats, seed, k, steps[state]), progress)
    grads = {}
    for m, name, a in mats:                   # one matrix at a time: Ĝ = (1/n) Σ c_k z_k
        g = np.zeros(a.shape, np.float64)
        for k in range(n):
            g += c[k] * _z(seed, k, m, a)
        grads[name] = (g / n).astype(a.dtype)
    return {"grads": grads, "c": c}


def _gate_views(block, kind):
    """``[(array, shape, axis)]``: the arrays a group gate of ``kind`` scales, each viewed so that
    the gate vector broadcasts along ``axis`` of ``shape``."""
    attn, mlp = block._children["attn"], block._children["mlp"]
    H, D = attn.num_heads, attn.head_dim
    out = []
    if kind == "heads":
        inp, outp = attn._children["in_proj"]._own, attn._children["out_proj"]._own
        out.append((inp["weight"], (3, H, D, -1), 1))
        if "bias" in inp:
            out.append((inp["bias"], (3, H, D), 1))
        out.append((outp["weight"], (-1, H, D), 1))
    else:
        up, down = mlp[0]._own, mlp[2]._own
        out.append((up["weight"], (up["weight"].shape[0], -1), 0))
        if "bias" in up:
            out.append((up["bias"], (-1,), 0))
        out.append((down["weight"], (-1, down["weight"].shape[1]), 1))
    return out


def hadamard_row(r: int, d: int) -> np.ndarray:
    r"""Row ``r`` of the Sylvester–Hadamard matrix of order :math:`P = 2^m \ge d`, first ``d`` entries:
    :math:`h_{rj} = (-1)^{\operatorname{popcount}(r \,\&\, j)}`. Over the :math:`P` rows,
    :math:`\sum_r h_r h_r^\top = P\, I_d` (the restriction of :math:`H^\top H = P I_P`)."""
    j = np.arange(d)
    bits = np.bitwise_and(j, r)
    parity = np.zeros(d, dtype=np.int64)
    while bits.any():
        parity ^= bits & 1
        bits >>= 1
    return 1.0 - 2.0 * parity


def _order(d: int) -> int:
    return 1 << max(0, int(d - 1).bit_length())


def _gates(model, seed, k, n_batches, kinds=GROUP_KINDS):
    r"""Probe ``k``: ``(kind, [u per block], batch index)``. Heads on even probes, MLP channels on odd
    ones; the kind's ``j = k // 2``-th probe is row :math:`\pi_c(j \bmod P)` of the Hadamard matrix
    of order :math:`P \ge d_{kind}` (:func:`hadamard_row`) times random signs :math:`s_c`, with
    :math:`\pi_c, s_c` drawn from ``default_rng([seed, kind, c])`` for cycle :math:`c = \lfloor j/P \rfloor`,
    whose probes all use calibration batch :math:`c \bmod B`."""
    kind = kinds[k % len(kinds)]
    ki = GROUP_KINDS.index(kind)
    blocks = _blocks(model)
    sizes = [b._children["attn"].num_heads if kind == "heads" else b._children["mlp"][0].out_features
             for b in blocks]
    d = sum(sizes)
    P = _order(d)
    j = k // len(kinds)
    cycle, row = divmod(j, P)
    gen = np.random.default_rng([seed, ki, cycle])
    perm = gen.permutation(P)
    signs = gen.choice(np.array([-1.0, 1.0]), size=d)
    u = signs * hadamard_row(int(perm[row]), d)
    return kind, np.split(u, np.cumsum(sizes)[:-1]), cycle % n_batches


def zo_group_gradient(model, batches, *, n=64, eps=1e-2, seed=0, kinds=GROUP_KINDS, progress=None) -> dict:
    r"""The two-point zeroth-order estimate of the loss gradient with respect to a multiplicative
    gate on every group, :math:`a_g = \partial \mathcal L / \partial \alpha_g` where group :math:`g`'s
    weights become :math:`(1 + \alpha_g) W_g`, so that :math:`a_g = \sum_{(i,j) \in g} W_{ij} G_{ij}`.

    Probe :math:`k` perturbs the weights along :math:`z_k = W \odot u_k` (one entry of :math:`u_k` per
    group, broadcast over the group's rows and columns), i.e. :math:`W_g \to (1 \pm \varepsilon
    u_{k,g}) W_g` in place, and

    .. math::
        c_k = \frac{\mathcal L_{b_k}((1 + \varepsilon u_k) W) - \mathcal L_{b_k}((1 - \varepsilon u_k) W)}{2\varepsilon},
        \qquad \hat a = \frac{1}{n_{kind}} \sum_{k \in kind} c_k u_k,

    SPSA (Malladi et al. 2023, Definition 1) in the :math:`d_{kind}`-dimensional gate space
    (16 heads, 2 048 MLP channels for the default GPT, instead of 0.79 M weights), with heads and
    channels probed on alternate probes so that neither carries the other's variance. The
    :math:`u_k` are signed, permuted rows of a Hadamard matrix of order :math:`P \ge d_{kind}`
    (:func:`_gates`) rather than Gaussian: :math:`\mathbb E[u u^\top] = I` as for SPSA, and a complete
    cycle of :math:`P` probes on one batch gives :math:`\sum_k u_k u_k^\top = P I`, so :math:`\hat a`
    is then that batch's exact gate gradient up to :math:`O(\varepsilon^2)` — with 64 probes, the 16
    heads of the default GPT get two complete cycles (calibration batches 0 and 1). Restoring
    divides by the same factors (θ back to rounding).
    Returns per block ``{"heads": (H,), "mlp": (M,)}`` (float64) and the probe values ``"c"``.
    """
    kinds = tuple(kinds)
    if n < len(kinds):
        raise ValueError(f"n must be at least {len(kinds)} (a probe per kind of group), got {n}")
    blocks = _blocks(model)
    cur = {}

    def perturb(k, state):
        if k not in cur:
            cur.clear()
            cur[k] = _gates(model, seed, k, len(batches), kinds)
        kind, us, _ = cur[k]
        for block, u in zip(blocks, us):
            f = {"+": 1 + eps * u, "-": (1 - eps * u) / (1 + eps * u), "0": 1 / (1 - eps * u)}[state]
            for arr, shape, axis in _gate_views(block, kind):
                view = arr.reshape(shape)
                bshape = [1] * view.ndim
                bshape[axis] = -1
                view *= f.astype(arr.dtype).reshape(bshape)

    order = [_gates(model, seed, k, len(batches), kinds)[2] for k in range(n)]
    c = _spsa(model, [batches[b] for b in order], n, eps, perturb, progress)
    out = [{"heads": np.zeros(b._children["attn"].num_heads), "mlp": np.zeros(b._children["mlp"][0].out_features)}
           for b in blocks]
    count = {"heads": 0, "mlp": 0}
    for k in range(n):
        kind, us, _ = _gates(model, seed, k, len(batches), kinds)
        count[kind] += 1
        for o, u in zip(out, us):
            o[kind] += c[k] * u
    for o in out:
        for kind in kinds:
            o[kind] /= count[kind]
    return {"gates": out, "c": c}


def backprop_gradient(model, batches) -> dict:
    r"""The exact gradient :math:`G` of the mean token cross-entropy for the grouped matrices, the
    mean of the per-batch gradients over ``batches`` (forward with caches, then backward)."""
    from ..losses import softmax_cross_entropy

    names = [name for name, _ in _grouped(model)]
    acc = {k: None for k in names}
    for x, y in batches:
        logits, cache = model.forward(x)
        _, dlogits = softmax_cross_entropy(logits, y)
        del logits
        _, g = model.backward(cache, dlogits)
        del cache
        for k in names:
            acc[k] = g[k].astype(np.float64) if acc[k] is None else acc[k] + g[k]
        del g
    return {k: (v / len(batches)).astype(model.params[k].dtype) for k, v in acc.items()}


def group_scores(model, batches, score, *, n=64, eps=None, seed=0, directions="mixed",
                 progress=None) -> list[dict]:
    r"""Per block ``{"heads": (H,), "mlp": (M,)}`` scores (higher = more important) of ``score``
    (one of :data:`SCORES`) on the calibration ``batches``.

    ``mini-llm`` is the FMS :math:`\sum_{(i,j)\in g} |W_{ij} \hat G_{ij}|\,\|X_j\|_2` with a
    zeroth-order :math:`\hat G` whose SPSA directions are (``directions``):

    * ``"weights"`` — isotropic over every grouped weight (:func:`zo_gradient`, ``n`` probes);
    * ``"gates"`` — a gate per group (:func:`zo_group_gradient`, ``n`` probes shared by the two
      kinds); then :math:`\hat G_{ij} = \hat a_g W_{ij}` and
      :math:`S_g = |\hat a_g| \sum_{(i,j)\in g} W_{ij}^2 \|X_j\|_2`;
    * ``"mixed"`` (default) — gates for the heads, in complete Hadamard cycles of
      :math:`P` probes (the number of heads rounded up to a power of two), one calibration batch per
      cycle and at least one cycle per batch (:math:`\max(B, \lceil n/P \rceil)` cycles: 128 probes
      for the default GPT's 16 heads and 8 batches), so the heads' gate gradient is that of the whole
      calibration loss to :math:`O(\varepsilon^2)`; isotropic weight directions (``n`` probes) for
      the MLP channels, which are too many (2 048 in the default GPT) for any affordable number of
      gate probes.

    ``eps`` defaults to :data:`DIRECTIONS` (1e-2 relative for gates, 1e-3 for weights).
    """
    blocks = _blocks(model)
    norms = activation_norms(model, batches) if score in ("wanda", "mini-llm") else None
    grads, gates = None, None
    if score == "taylor":
        grads = backprop_gradient(model, batches)
    elif score == "mini-llm":
        eg = DIRECTIONS["gates"] if eps is None else eps
        ew = DIRECTIONS["weights"] if eps is None else eps
        if directions == "gates":
            gates = zo_group_gradient(model, batches, n=n, eps=eg, seed=seed, progress=progress)["gates"]
        elif directions == "weights":
            grads = zo_gradient(model, batches, n=n, eps=ew, seed=seed, progress=progress)["grads"]
        else:
            P = _order(sum(b._children["attn"].num_heads for b in blocks))
            nh = P * max(len(batches), -(-n // P))      # at least a whole cycle on every batch
            gates = zo_group_gradient(model, batches, n=nh, eps=eg, seed=seed, kinds=("heads",),
                                      progress=progress)["gates"]
            grads = zo_gradient(model, batches, n=n, eps=ew, seed=seed, roles=("up", "down"),
                                progress=progress)["grads"]
    if gates is not None:
        out = []
        for l, block in enumerate(blocks):
            W = block_weights(block)
            m = aggregate(block, {r: np.square(w, dtype=np.float64) * norms[l][r][None, :]
                                  for r, w in W.items()})
            s = {k: np.abs(gates[l][k]) * m[k] for k in m}
            if grads is not None:           # "mixed": the MLP channels from the isotropic estimate
                imp = {r: np.abs(W[r].astype(np.float64) * grads[f"h.{l}.{MATRICES[r]}.weight"])
                       * norms[l][r][None, :] for r in ("up", "down")}
                s["mlp"] = imp["up"].sum(axis=1) + imp["down"].sum(axis=0)
            out.append(s)
        return out
    out = []
    for l, block in enumerate(blocks):
        W = block_weights(block)
        imp = {}
        for role, w in W.items():
            if score == "magnitude":
                imp[role] = np.square(w, dtype=np.float64)
            elif score == "wanda":
                imp[role] = np.abs(w) * norms[l][role][None, :]
            else:
                g = grads[f"h.{l}.{MATRICES[role]}.weight"]
                imp[role] = np.abs(w.astype(np.float64) * g)
                if score == "mini-llm":
                    imp[role] *= norms[l][role][None, :]
        s = aggregate(block, imp)
        if score == "magnitude":
            s = {k: np.sqrt(v) for k, v in s.items()}
        out.append(s)
    return out
