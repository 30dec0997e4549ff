r"""Forward gradients block by block: auxiliary heads, local guesses and per-sample projections.

The model (a Sequential) is cut into blocks :math:`j = 0..J`; block j maps :math:`z_{j-1}` to
:math:`z_j` with parameters :math:`\theta_j`. Each block but the last has a small affine head
:math:`\ell_j = \operatorname{flat}(z_j) A_j^\top + c_j` to the output size, trained on the same loss
(its local loss :math:`L_j`); :math:`A_j` ``(C, F_j)`` and :math:`c_j` are the rule's own arrays
(``rule.params``: ``"rule.heads.<j>.weight"``, ``".bias"``), updated by the model's optimizer.

**Local guesses** (:class:`ForwardGradientLocal`; Fournier et al. 2023, "Can Forward Gradient Match
Backpropagation?", ICML, §3.2 and Fig. 1). The losses are batch means, :math:`L = \frac1N\sum_n
\ell_n`; write :math:`L^{(n)} = \ell_n / N` for sample n's share. Sample n's guess is the gradient of
its local loss, :math:`g_n = \nabla_{\theta_j} L_j^{(n)}` (a backward confined to block j and its
head), its target :math:`t_n = \nabla_{\theta_j} L^{(n)}` (``target="global"``) or
:math:`\nabla_{\theta_j} L_j^{(n)}` (``"local"``). The estimate of :math:`\nabla_{\theta_j} L` is

.. math::

    \hat g_j = \sum_n \frac{\langle t_n, g_n\rangle}{\|g_n\|^2}\, g_n
    \quad(\texttt{projection="sample"}),\qquad
    \hat g_j = \frac{\langle \sum_n t_n, \sum_n g_n\rangle}{\|\sum_n g_n\|^2} \sum_n g_n
    \quad(\texttt{"batch"}).

The first is what the authors' code computes (``compute_projection`` in ``trainer/estimators.py``
of github.com/streethagore/ForwardLocalGradient projects each sample's target on that sample's guess
and sums over the batch; it does so per weight array, here per block as in the paper's §3 — the
same for a block with one Linear layer, whose weight and bias get the same coefficient); the
second projects the batch gradient on the batch guess. The last block's guess is its exact gradient.

*How the per-sample projection stays forward-only.* Let :math:`K_n = \partial z_{j,n}/\partial
\theta_j` and :math:`a_n` the local loss's cotangent at :math:`z_{j,n}`, so :math:`g_n = K_n^\top a_n`.
With :math:`P_n = K_n K_n^\top a_n` (a tangent at block j's output), :math:`\|g_n\|^2 = \langle a_n,
P_n\rangle`, :math:`\langle t_n, g_n\rangle` is the loss's derivative along :math:`P_n` restricted to
row n — one batched JVP from block j's output (through the rest of the model, or the head) — and
:math:`\sum_n c_n g_n` is one backward of block j with the cotangent rows :math:`c_n a_n`. :math:`P`
is built child by child: a child with parameters contributes :math:`J_n J_n^\top b_n` (:math:`b` its
output cotangent, :math:`J_n` its parameter Jacobian), pushed to the block's output by the JVP of the
children after it. For a ``dense`` child :math:`y = xW^\top + b`, :math:`J_nJ_n^\top b_n = b_n
(\|x_n\|^2 + 1)` (over tokens :math:`(X_nX_n^\top + 1)B_n`); any other child takes one backward and
one JVP per sample, run on that sample alone (about the work of one batch pass, in N small calls),
or, for a child with batch statistics or dropout inside, on the whole batch with that sample's
cotangent alone (N× the work of that child).

Row n's values are exact when each output row depends on its own input row only (Linear, Conv2d,
activations, LayerNorm, dropout, evaluation-mode batch norm). Training-mode batch norm couples the
samples through the batch statistics: row n's value then also carries other samples' tangents, and
only the sum over the batch is exact.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_float, is_int
from ..core.init import get_initializer
from ..core.losses import directional, get_loss
from ..core.module import Module
from .base import Rule, register

__all__ = ["ForwardGradientLocal"]


def _draw(rng, shape, dtype, distribution):
    if distribution == "gaussian":
        return rng.standard_normal(shape, dtype=dtype)
    return (2 * rng.integers(0, 2, size=shape, dtype=np.int8) - 1).astype(dtype)


def _sqnorm(d: dict) -> float:
    return float(sum(float(np.vdot(v, v)) for v in d.values()))


def _split(d, name):
    if not d:
        return None
    pre = name + "."
    sub = {k[len(pre):]: v for k, v in d.items() if k.startswith(pre)}
    return sub or None


def _prefixed(d, name):
    return {f"{name}.{k}": v for k, v in d.items()}


def _coefficient(dval, v, scaling):
    """⟨∇L, v⟩/‖v‖² (projection) or ⟨∇L, v⟩ (unbiased): the factor multiplying v."""
    if scaling == "unbiased":
        return dval
    sq = _sqnorm(v)
    return dval / sq if sq > 0 else 0.0


def _rowdot(a, b):
    """``⟨a_n, b_n⟩`` for each sample n (first axis), in float64: shape ``(N,)``."""
    n = len(a)
    return np.einsum("ij,ij->i", a.reshape(n, -1), b.reshape(n, -1), dtype=np.float64)


def _rows(c, like):
    """``c (N,)`` as a column broadcasting against ``like (N, ...)``, in ``like``'s dtype."""
    return c.astype(like.dtype).reshape((len(c),) + (1,) * (like.ndim - 1))


# --------------------------------------------------------------------------- blocks of a chain
def _fwd(children, x, train, seed):
    """Run ``[(name, child)]`` in order; return the output and each child's (input, cache, output,
    state of the generator before it).

    ``seed`` seeds one fresh generator for the whole run, so a later JVP of the same children
    with the same seed sees the same dropout masks (and one child can be replayed from its state).
    """
    rng = np.random.default_rng(seed)
    record = []
    for name, m in children:
        state = rng.bit_generator.state
        y, c = m.forward(x, train=train, rng=rng)
        record.append((x, c, y, state))
        x = y
    return x, record


def _bwd(children, record, dy, need_dx=False, outs=None):
    """Backward through ``children`` only (stops at their input): (dx, grads by model names).
    ``outs``, a dict, receives the cotangent at the output of each child with parameters."""
    grads = {}
    for i in range(len(children) - 1, -1, -1):
        name, m = children[i]
        if outs is not None and m.params:
            outs[i] = dy
        dy, g = m.backward(record[i][1], dy, need_dx=need_dx or i > 0)
        grads.update(_prefixed(g, name))
    return dy, grads


def _jvp(children, x, dx, dparams, train, seed):
    rng = np.random.default_rng(seed)
    for name, m in children:
        x, dx = m.jvp(x, dx, _split(dparams, name), train=train, rng=rng)
    return x, dx


def _sweep(children, x, seed, inject):
    """The JVP of ``children`` from a zero input tangent, adding ``inject[i]`` to the tangent at the
    output of child ``i``: the block's output and its tangent (same dropout masks as ``_fwd``)."""
    rng = np.random.default_rng(seed)
    dx = None
    for i, (_, m) in enumerate(children):
        x, dx = m.jvp(x, dx, None, train=True, rng=rng)
        if i in inject:
            dx = dx + inject[i]
    return x, dx


def _gram(m, rec, b):
    r"""``J_n J_nᵀ b_n`` for every sample n: the tangent at child ``m``'s output along its parameter
    tangent ``g_n = J_nᵀ b_n`` (sample n's gradient for the output cotangent ``b``).
    ``rec`` is the child's (input, cache, output, generator state) from :func:`_fwd`.

    A ``dense`` child has the closed form :math:`(X_n X_n^\top + 1) B_n`. Another child is run on
    each sample alone (a backward and a JVP of a batch of one), unless it contains a normalisation
    layer (batch statistics) or draws at random in training (it raises without ``rng``): then each
    sample's cotangent alone goes through the whole batch's backward and the JVP replays the masks.
    """
    x, cache, _, state = rec
    n = len(x)
    if m.dense:                                  # y = x Wᵀ + b: J_n J_nᵀ b_n = (X_n X_nᵀ + 1) B_n
        X = x.reshape(n, -1, x.shape[-1])
        B = b.reshape(n, -1, b.shape[-1])
        G = X @ X.transpose(0, 2, 1)
        if "bias" in m.params:
            G = G + 1
        return (G @ B).reshape(b.shape)
    out = np.empty_like(b)
    if not any(leaf.normalization for _, leaf in m.leaves()):
        try:
            for k in range(n):
                xk = x[k:k + 1]
                gk = m.backward(m.forward(xk, train=True)[1], b[k:k + 1], need_dx=False)[1]
                out[k] = m.jvp(xk, None, gk, train=True)[1][0]
            return out
        except ValueError:                       # it needs a generator: dropout inside
            pass
    for k in range(n):
        bk = np.zeros_like(b)
        bk[k] = b[k]
        gk = m.backward(cache, bk, need_dx=False)[1]
        rng = np.random.default_rng()
        rng.bit_generator.state = state
        out[k] = m.jvp(x, None, gk, train=True, rng=rng)[1][k]
    return out


def _keep_one_update(model):
    """Running statistics (batch norm) would move once per training-mode pass, and a forward
    gradient makes several: copy the buffers after the first pass, put them back at the end."""
    live = model.buffers
    return live, ({k: v.copy() for k, v in live.items()} if live else None)


def _put_back(kept):
    live, saved = kept
    if saved:
        for k, v in live.items():
            v[...] = saved[k]


def _names(children):
    return [f"{name}.{k}" for name, m in children for k in m.params]


# --------------------------------------------------------------------------- auxiliary heads
def _head(A, c, h, dh=None):
    r"""Head :math:`\ell = \operatorname{flat}(h) A^\top + c` (``A (C, F)``, ``c (C,)``) and, given
    ``dh``, :math:`\dot\ell = \operatorname{flat}(\dot h) A^\top`: ``(logits, flat(h), dlogits|None)``.
    Backward (in :meth:`_Base._estimate`): :math:`\bar h = \bar\ell A`, :math:`\bar A = \bar\ell^\top
    \operatorname{flat}(h)`, :math:`\bar c = \sum_n \bar\ell_n`."""
    hf = h.reshape(len(h), -1)
    W = A if A.dtype == hf.dtype else A.astype(hf.dtype)
    out = hf @ W.T
    out += c
    return out, hf, None if dh is None else dh.reshape(len(dh), -1) @ W.T


class _Step:
    """What one step's forward pass left for the block estimates (see :meth:`_Base._estimate`)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


class _Base(Rule):
    """Shared machinery: options, blocks, auxiliary heads, the block-wise estimate, cosine."""

    def __init__(self, loss, *, target, blocks, head_lr, track_cosine, seed, loss_options):
        self.loss = get_loss(loss)
        self.loss_options = loss_options
        if target not in ("global", "local"):
            raise ValueError(f"target must be 'global' or 'local', got {target!r}")
        self.target = target
        if blocks is not None:
            if not isinstance(blocks, (list, tuple)) or not all(is_int(b) for b in blocks):
                raise TypeError(f"blocks must be None or a list of child indices where blocks "
                                f"start, got {blocks!r}")
            if list(blocks) != sorted(set(blocks)) or (blocks and blocks[0] <= 0):
                raise ValueError(f"blocks must be increasing indices > 0, got {list(blocks)}")
        self.blocks = None if blocks is None else [int(b) for b in blocks]
        self.head_lr = check_float(head_lr, "head_lr", low=0, low_open=True, allow_none=True)
        if not isinstance(track_cosine, (bool, np.bool_)):
            raise TypeError(f"track_cosine must be a bool, got {track_cosine!r}")
        self.track_cosine = bool(track_cosine)
        self.seed, self._rng = seed, as_rng(seed, "seed")
        self.params: dict[str, np.ndarray] = {}     # the heads' arrays, drawn at first use
        self._kept = (None, None)    # buffers after the first pass of a step

    # ------------------------------------------------------------------ hooks of the subclasses
    def _blockwise(self) -> bool:
        return True

    def _needs_heads(self) -> bool:
        return self.target == "local"

    def _scaling(self) -> str:
        return "projection"

    def _block_guesses(self, j, s, rng):
        """Yield block ``j``'s guesses (dicts keyed by model parameter names), for the batch-level
        projection of :meth:`_block_estimate`; ``s`` is the step's :class:`_Step`."""
        raise NotImplementedError

    # ------------------------------------------------------------------ blocks and heads
    def _groups(self, model):
        """The model's top-level children cut into blocks: ``[[(name, child), ...], ...]``."""
        who = type(self).__name__
        if getattr(model, "combinator", None) != "chain":      # a Sequential (DESIGN §2)
            raise ValueError(f"{who} with block-wise guesses or target='local' needs a "
                             f"Sequential model (a chain of blocks), got {type(model).__name__}")
        children = list(model.children.items())
        if self.blocks is None:
            starts = [i for i, (_, m) in enumerate(children) if m.params]
            if not starts:
                raise ValueError(f"{who}: the model has no trainable parameters")
            starts = [0] + starts[1:]
        else:
            if self.blocks and self.blocks[-1] >= len(children):
                raise ValueError(f"blocks={self.blocks}: the model has only {len(children)} "
                                 f"top-level children")
            starts = [0] + self.blocks
        groups = [children[a:b] for a, b in zip(starts, starts[1:] + [len(children)])]
        for j, g in enumerate(groups):
            if not any(m.params for _, m in g):
                raise ValueError(f"{who}: block {j} (children {[n for n, _ in g]}) has no "
                                 f"trainable parameters; choose other block boundaries")
        return groups

    def check_model(self, model):
        if not isinstance(model, Module):
            raise TypeError(f"model must be a nograd Module, got {type(model).__name__}")
        if self._blockwise():
            self._groups(model)

    def _head_list(self, hidden, width):
        """``[(A_j, c_j)]``, the heads of the blocks whose outputs are ``hidden``: drawn at first
        use like a Linear layer's arrays (``A ~ U(±√(6/F))``, ``c = 0``, the activation's dtype);
        a model that needs other shapes is refused."""
        keys = [(f"rule.heads.{j}.weight", f"rule.heads.{j}.bias") for j in range(len(hidden))]
        shapes = [(width, int(np.prod(h.shape[1:]))) for h in hidden]
        if not self.params:
            rng = self._rng if self.seed is None else np.random.default_rng([int(self.seed), 7])
            for (kw, kb), shape, h in zip(keys, shapes, hidden):
                self.params[kw] = get_initializer("he_uniform")(shape, rng, h.dtype)
                self.params[kb] = np.zeros(width, dtype=h.dtype)
        want = {k: s for (kw, kb), shape in zip(keys, shapes) for k, s in ((kw, shape), (kb, shape[:1]))}
        have = {k: v.shape for k, v in self.params.items()}
        if have != want:
            raise ValueError(f"{type(self).__name__} was set up for heads {have}, but this model "
                             f"needs {want}; use a new rule per model")
        return [(self.params[kw], self.params[kb]) for kw, kb in keys]

    def prepare(self, model, x):
        """Draw the auxiliary heads when the rule uses them, their shapes read from one
        evaluation-mode pass of the example batch ``x`` through the blocks."""
        if not self.params and self._needs_heads() and len(groups := self._groups(model)) > 1:
            outs = [x]
            for g in groups:
                outs.append(_fwd(g, outs[-1], False, 0)[0])
            self._head_list(outs[1:-1], outs[-1].shape[-1])

    def param_options(self):
        return {} if self.head_lr is None else {"lr": self.head_lr}

    # ------------------------------------------------------------------ the estimate
    def _directional(self, j, s, v):
        """⟨∇_{θ_j} L_target, v⟩ by a JVP from block j's input (no backward)."""
        h, dh = _jvp(s.groups[j], s.inputs[j], None, v, True, s.seeds[j])
        if self.target == "local" and j < s.last:
            lo, _, dlo = _head(*s.heads[j], h, dh)
            return directional(self.loss, lo, s.y, dlo, **self.loss_options)[1]
        for i in range(j + 1, len(s.groups)):
            h, dh = _jvp(s.groups[i], h, dh, None, True, s.seeds[i])
        return directional(self.loss, h, s.y, dh, **self.loss_options)[1]

    def _per_sample(self, j, s, dh):
        r"""Sample n's derivative of the target loss along row n of ``dh``, a tangent at block j's
        output: ``(N,)``. One JVP through the later blocks (or block j's head for the local target),
        then :math:`\langle \partial L/\partial \text{out}_n, \dot{\text{out}}_n\rangle` per row."""
        if self.target == "local" and j < s.last:
            _, _, dlo = _head(*s.heads[j], s.records[j][-1][2], dh)
            return _rowdot(s.local[j][3], dlo)
        for i in range(j + 1, len(s.groups)):
            dh = _jvp(s.groups[i], s.inputs[i], dh, None, True, s.seeds[i])[1]
        return _rowdot(s.dout, dh)

    def _block_estimate(self, j, s, rng):
        """Block j's estimate, batch-level: each guess v projected as a whole, averaged."""
        acc = {k: np.zeros_like(s.model.params[k]) for k in _names(s.groups[j])}
        count = 0
        for v in self._block_guesses(j, s, rng):
            c = _coefficient(self._directional(j, s, v), v, self._scaling())
            for k, a in v.items():
                acc[k] += a * a.dtype.type(c)
            count += 1
        return {k: a / a.dtype.type(count) for k, a in acc.items()} if count > 1 else acc

    def grads(self, model, x, y, *, rng=None):
        """Descent directions keyed like ``model.params``, then the heads' (``rule.params``) when
        the rule has heads; ``info``: ``loss``, ``output`` (and ``local_losses``, ``cosine``)."""
        rng = self._rng if rng is None else as_rng(rng)
        est, info, streams = self._estimate(model, x, y, rng)
        if self.track_cosine:
            self._log_cosine(model, x, y, est, info, streams)
        _put_back(self._kept)
        return est, info

    def _estimate(self, model, x, y, rng):
        """The block-wise estimate: ``(grads, info, (groups, dropout seeds))``."""
        groups = self._groups(model)
        last = len(groups) - 1
        base = int(rng.integers(0, 2 ** 62))
        seeds = [base + i for i in range(len(groups))]      # one dropout stream per block
        inputs, records = [], []
        h = x
        for g, sd in zip(groups, seeds):
            inputs.append(h)
            h, rec = _fwd(g, h, True, sd)
            records.append(rec)
        out = h
        self._kept = _keep_one_update(model)
        value, dout = self.loss(out, y, **self.loss_options)
        heads, local = [], {}
        if self._needs_heads() and last > 0:
            hidden = [records[j][-1][2] for j in range(last)]
            heads = self._head_list(hidden, out.shape[-1])
            for j, (A, c) in enumerate(heads):          # each head's loss and backward (_head)
                logits, hf, _ = _head(A, c, hidden[j])
                lv, dlog = self.loss(logits, y, **self.loss_options)
                dh = (dlog @ A.astype(dlog.dtype, copy=False)).reshape(hidden[j].shape)
                local[j] = (lv, dh, {f"rule.heads.{j}.weight": (dlog.T @ hf).astype(A.dtype),
                                     f"rule.heads.{j}.bias": dlog.sum(axis=0).astype(A.dtype)},
                            dlog)
        s = _Step(model=model, y=y, groups=groups, last=last, seeds=seeds, inputs=inputs,
                  records=records, dout=dout, heads=heads, local=local)
        est = {}
        for j in range(len(groups)):
            est.update(self._block_estimate(j, s, rng))
        ordered = {k: est[k] for k in model.params}               # the model's, then the heads'
        for j in range(len(heads)):
            ordered.update(local[j][2])
        info = {"loss": value, "output": out}
        if local:
            info["local_losses"] = [local[j][0] for j in range(last)]
        return ordered, info, (groups, seeds)

    def _log_cosine(self, model, x, y, est, info, streams):
        """info["cosine"]: cosine between the estimate and backprop's gradient (same masks)."""
        from ..metrics import cosine

        if isinstance(streams, tuple):                # block-wise: one dropout stream per block
            groups, seeds = streams
            h, records = x, []
            for g, sd in zip(groups, seeds):
                h, rec = _fwd(g, h, True, sd)
                records.append(rec)
            _, dy = self.loss(h, y, **self.loss_options)
            true = {}
            for j in range(len(groups) - 1, -1, -1):
                dy, gj = _bwd(groups[j], records[j], dy, need_dx=j > 0)
                true.update(gj)
        else:
            out, cache = model.forward(x, train=True, rng=np.random.default_rng(streams))
            _, dout = self.loss(out, y, **self.loss_options)
            _, true = model.backward(cache, dout, need_dx=False)
        try:                                          # the model's arrays (not the heads')
            info["cosine"] = cosine({k: est[k] for k in true}, true)
        except ValueError:                            # an all-zero side
            info["cosine"] = float("nan")


# --------------------------------------------------------------------------- local guesses
@register("forward-gradient-local")
class ForwardGradientLocal(_Base):
    r"""Forward gradient with local guesses from auxiliary heads (Fournier et al. 2023, §3.2).

    The model (a Sequential) is cut into blocks; block j < last has an affine head on its flattened
    output and a local loss :math:`L_j`. Sample n's guess is its local gradient
    :math:`g_n = \nabla_{\theta_j} L_j^{(n)}`; the target's per-sample gradient :math:`t_n` is
    projected on it and the projections summed, :math:`\hat g_j = \sum_n \langle t_n, g_n\rangle /
    \|g_n\|^2\, g_n` (``projection="sample"``, the authors' reference), or the batch gradient is
    projected on the batch guess (``projection="batch"``); see the module docstring for both and
    for how the per-sample inner products come from JVPs. The target is the end-to-end loss
    (``target="global"``, a JVP from block j's output to the model output) or the block's own
    local loss (``"local"``: then :math:`\hat g_j` is the local gradient, plain local learning).
    The last block uses its exact gradient. The heads (:attr:`params`) learn their local loss in the
    model's optimizer, at its lr unless ``head_lr`` is given.

    Cost per step and block j < last with ``projection="sample"``: a backward of block j and its
    head, one forward-mode sweep of block j, one JVP from its output (to the model output, or
    through the head), one more backward of block j; dense layers add O(N·F) work, other layers
    with parameters N backward/JVP pairs (module docstring).

    Parameters: ``loss``, ``target``, ``blocks``, ``head_lr``, ``track_cosine``, ``seed``,
    ``**loss_options`` as in :class:`~nograd.rules.forward_gradient.ForwardGradient`;
    ``projection``: ``"sample"`` (default) or ``"batch"``.
    """

    defaults = {"optimizer": "adam", "lr": 1e-3, "epochs": 20, "batch_size": 64}

    def __init__(self, loss="cross-entropy", *, target="global", projection="sample", blocks=None,
                 head_lr=None, track_cosine=False, seed=0, **loss_options):
        super().__init__(loss, target=target, blocks=blocks, head_lr=head_lr,
                         track_cosine=track_cosine, seed=seed, loss_options=loss_options)
        if projection not in ("sample", "batch"):
            raise ValueError(f"projection must be 'sample' or 'batch', got {projection!r}")
        self.projection = projection

    def _needs_heads(self):
        return True

    def _block_guesses(self, j, s, rng):
        yield _bwd(s.groups[j], s.records[j], s.dout if j == s.last else s.local[j][1])[1]

    def _block_estimate(self, j, s, rng):
        if self.projection == "batch":
            return super()._block_estimate(j, s, rng)
        group, record = s.groups[j], s.records[j]
        if j == s.last:                        # the guess is the target: every c_n is 1
            return _bwd(group, record, s.dout)[1]
        a, outs = s.local[j][1], {}
        _bwd(group, record, a, outs=outs)      # each child's output cotangent b_i
        inject = {i: _gram(group[i][1], record[i], b) for i, b in outs.items()}
        _, P = _sweep(group, s.inputs[j], s.seeds[j], inject)      # P_n = K_n K_nᵀ a_n
        sq = _rowdot(a, P)                     # ‖g_n‖²
        dots = self._per_sample(j, s, P)       # ⟨t_n, g_n⟩
        c = np.divide(dots, sq, out=np.zeros_like(dots), where=sq > 0)
        return _bwd(group, record, _rows(c, a) * a)[1]             # Σ_n c_n g_n

    def __repr__(self):
        return (f"ForwardGradientLocal(target={self.target!r}, projection={self.projection!r}, "
                f"blocks={self.blocks})")
