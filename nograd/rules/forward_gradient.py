r"""Forward gradients: descent directions from forward-mode derivatives along guessed directions.

For a guess :math:`v` (a direction in parameter space) one forward-mode pass — ``model.jvp`` with
the parameter tangent :math:`v`, then the loss's :func:`~nograd.core.losses.directional` — gives
the exact directional derivative :math:`\langle\nabla L, v\rangle`, with no backward pass. The
estimate is the target gradient projected on the guess:

.. math::

    g = \frac{\langle \nabla L, v\rangle}{\|v\|^2}\, v
    \qquad\text{(scaling="projection", default)},\qquad
    g = \langle \nabla L, v\rangle\, v \qquad\text{(scaling="unbiased")}.

The second is Baydin et al.'s forward gradient (2022, "Gradients without Backpropagation", §3,
Definition 1): for :math:`v \sim \mathcal N(0, I)` or Rademacher, :math:`\mathbb E[v v^\top] = I`
makes it unbiased (Theorem 1). The first is the orthogonal projection onto :math:`v` used by
Fournier et al. (2023, "Can Forward Gradient Match Backpropagation?", ICML, §3): for isotropic
guesses in :math:`d` dimensions :math:`\mathbb E[v v^\top/\|v\|^2] = I/d`, so it is unbiased up
to the known factor :math:`1/d` (its direction is unbiased), it is exactly :math:`\nabla L` when
:math:`v = \nabla L`, and it is scale-free, which a biased guess (a local gradient) needs.
With ``tangents = T`` the T estimates are averaged.

Guesses (Fournier et al. 2023, §3 and Table 1, the grid of guesses × targets):

- ``"weight"``: :math:`v` random in weight space (Baydin et al. 2022). No backward anywhere.
- ``"activation"``: a random :math:`u` at the output of each top-level layer with parameters,
  pulled back to that layer's parameters, :math:`v = (\partial z/\partial\theta)^\top u`
  (:math:`u^\top x` for a Linear layer) — the activity perturbation of Ren et al. (2023, "Scaling
  Forward Gradient With Local Losses", ICLR). This uses each layer's own parameter VJP, never the
  chain through the network.
- local (:class:`ForwardGradientLocal`): the model is cut into blocks, each (but the last) with a
  small auxiliary head :math:`\ell_j = \operatorname{flat}(z_j) A_j^\top + c_j` to the output size,
  trained on the same loss; the gradient of block j's local loss, by a backward confined to block j
  and its head, is block j's guess (Fournier et al. 2023, §3.2). The last block's guess is its exact
  gradient (its "head" is the rest of the model: nothing). :math:`A_j` ``(C, F_j)`` and :math:`c_j`
  are the rule's own arrays (``rule.params``: ``"rule.heads.<j>.weight"``, ``".bias"``), which
  ``grads`` returns beside the model's and the model's optimizer updates (schedules reach them).

Targets: ``"global"`` — the end-to-end loss, :math:`\langle\nabla_{\theta_j}L, v_j\rangle` by a JVP
from block j's input to the model's output; ``"local"`` — block j's own local loss, by a JVP
through block j and its head. With block-wise guesses each block is projected separately.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_float, check_positive, is_int
from ..core.init import get_initializer
from ..core.losses import directional, get_loss
from ..core.module import Module
from .base import Rule, register

__all__ = ["ForwardGradient", "ForwardGradientLocal", "forward_gradient"]


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


def forward_gradient(model, x, y, v, *, loss="cross-entropy", scaling="projection", train=True,
                     rng=None, **loss_options):
    r"""The forward-gradient estimate for one given guess ``v`` (no backward pass).

    ``v`` is a parameter tangent keyed like ``model.params`` (any subset of the names). One
    ``model.jvp`` with ``dparams=v`` and the loss's :func:`~nograd.core.losses.directional` give
    :math:`\langle\nabla L, v\rangle` exactly; returns ``(g, info)`` with
    ``g = ⟨∇L, v⟩/‖v‖² · v`` (``scaling="projection"``) or ``⟨∇L, v⟩ · v`` (``"unbiased"``),
    keyed like ``v``, and ``info`` holding ``loss``, ``output`` and ``directional`` (⟨∇L, v⟩).

    >>> import numpy as np
    >>> from nograd import Linear, Sequential, Tanh
    >>> from nograd.rules import Backprop
    >>> f64 = np.float64
    >>> net = Sequential(Linear(3, 4, rng=0, dtype=f64), Tanh(), Linear(4, 2, rng=1, dtype=f64))
    >>> x, y = np.random.default_rng(0).normal(size=(5, 3)), np.array([0, 1, 1, 0, 1])
    >>> true, _ = Backprop().grads(net, x, y)
    >>> g, info = forward_gradient(net, x, y, true)        # the guess v = ∇L is projected exactly
    >>> all(np.allclose(g[k], true[k], rtol=1e-12) for k in true)
    True
    """
    if scaling not in ("projection", "unbiased"):
        raise ValueError(f"scaling must be 'projection' or 'unbiased', got {scaling!r}")
    out, dout = model.jvp(x, None, v, train=train, rng=rng)
    value, dval = directional(loss, out, y, dout, **loss_options)
    c = _coefficient(dval, v, scaling)
    return ({k: a * a.dtype.type(c) for k, a in v.items()},
            {"loss": value, "output": out, "directional": dval})


# --------------------------------------------------------------------------- blocks of a chain
def _fwd(children, x, train, seed):
    """Run ``[(name, child)]`` in order; return the output and each child's (input, cache, output).

    ``seed`` seeds one fresh generator for the whole run, so a later JVP of the same children
    with the same seed sees the same dropout masks.
    """
    rng = np.random.default_rng(seed)
    record = []
    for name, m in children:
        y, c = m.forward(x, train=train, rng=rng)
        record.append((x, c, y))
        x = y
    return x, record


def _bwd(children, record, dy, need_dx=False):
    """Backward through ``children`` only (stops at their input): (dx, grads by model names)."""
    grads = {}
    for i in range(len(children) - 1, -1, -1):
        name, m = children[i]
        dy, g = m.backward(record[i][1], dy, need_dx=need_dx or i > 0)
        grads.update(_prefixed(g, name))
    return dy, grads


def _jvp(children, x, dx, dparams, train, seed):
    rng = np.random.default_rng(seed)
    for name, m in children:
        x, dx = m.jvp(x, dx, _split(dparams, name), train=train, rng=rng)
    return x, dx


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

    def _block_guesses(self, j, group, record, rng, local, dout, last):
        """Yield block ``j``'s guesses: dicts keyed by model parameter names."""
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
    def _directional(self, j, groups, inputs, seeds, heads, v, y):
        """⟨∇_{θ_j} L_target, v⟩ by a JVP from block j's input (no backward)."""
        h, dh = _jvp(groups[j], inputs[j], None, v, True, seeds[j])
        if self.target == "local" and j < len(groups) - 1:
            lo, _, dlo = _head(*heads[j], h, dh)
            return directional(self.loss, lo, y, dlo, **self.loss_options)[1]
        for i in range(j + 1, len(groups)):
            h, dh = _jvp(groups[i], h, dh, None, True, seeds[i])
        return directional(self.loss, h, y, dh, **self.loss_options)[1]

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
        for g, s in zip(groups, seeds):
            inputs.append(h)
            h, rec = _fwd(g, h, True, s)
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
                                     f"rule.heads.{j}.bias": dlog.sum(axis=0).astype(A.dtype)})
        est = {}
        for j, g in enumerate(groups):
            acc = {k: np.zeros_like(model.params[k]) for k in _names(g)}
            count = 0
            for v in self._block_guesses(j, g, records[j], rng, local, dout, last):
                dval = self._directional(j, groups, inputs, seeds, heads, v, y)
                c = _coefficient(dval, v, self._scaling())
                for k, a in v.items():
                    acc[k] += a * a.dtype.type(c)
                count += 1
            for k, a in acc.items():
                est[k] = a / a.dtype.type(count) if count > 1 else a
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
            for g, s in zip(groups, seeds):
                h, rec = _fwd(g, h, True, s)
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


# --------------------------------------------------------------------------- random guesses
@register("forward-gradient")
class ForwardGradient(_Base):
    r"""Forward gradient with random guesses (Baydin et al. 2022; Fournier et al. 2023, §3).

    ``g = mean over T tangents of (⟨∇L, v⟩ / ‖v‖²) v`` (or ``⟨∇L, v⟩ v`` with
    ``scaling="unbiased"``), with ⟨∇L, v⟩ from ``model.jvp`` and the loss's directional derivative.

    Parameters
    ----------
    loss, **loss_options : the training loss (a name or a callable returning (value, dpred)).
    guess : ``"weight"`` (v random over all parameters; no backward at all) or ``"activation"``
        (u random at each top-level layer's output, v = (∂z/∂θ)ᵀu; needs a Sequential model).
    target : ``"global"`` (the end-to-end loss) or ``"local"`` (per block, the loss of the
        block's auxiliary head; see the module docstring). Weight guesses with the global target
        make one JVP of the whole model per tangent and one projection of all parameters;
        activation guesses and the local target project block by block (a JVP from each block's
        input).
    tangents : T, the number of guesses averaged per step (T JVPs).
    distribution : ``"gaussian"`` or ``"rademacher"`` entries of v (or u).
    scaling : ``"projection"`` or ``"unbiased"`` (see the module docstring).
    blocks : for ``target="local"``: indices of the top-level children where blocks 2, 3, …
        start; default one block per child with parameters (activations join the block before).
    head_lr : the initial lr of the heads' group in the model's optimizer (``target="local"``);
        ``None``: the optimizer's lr. A schedule scales it like every other group's.
    track_cosine : also compute the true gradient by backprop (costs a backward) and put the
        cosine between it and the estimate in ``info["cosine"]``.
    seed : seed of the rule's generator (used when ``grads`` gets no ``rng``) and of the heads.
    """

    defaults = {"optimizer": "adam", "lr": 3e-3, "epochs": 60, "batch_size": 64}

    def __init__(self, loss="cross-entropy", *, guess="weight", target="global", tangents=1,
                 distribution="gaussian", scaling="projection", blocks=None, head_lr=None,
                 track_cosine=False, seed=0, **loss_options):
        super().__init__(loss, target=target, blocks=blocks, head_lr=head_lr,
                         track_cosine=track_cosine, seed=seed, loss_options=loss_options)
        if guess not in ("weight", "activation"):
            raise ValueError(f"guess must be 'weight' or 'activation' (local guesses: "
                             f"ForwardGradientLocal), got {guess!r}")
        self.guess = guess
        self.tangents = int(check_positive(tangents, "tangents", integer=True))
        if distribution not in ("gaussian", "rademacher"):
            raise ValueError(f"distribution must be 'gaussian' or 'rademacher', "
                             f"got {distribution!r}")
        self.distribution = distribution
        if scaling not in ("projection", "unbiased"):
            raise ValueError(f"scaling must be 'projection' or 'unbiased', got {scaling!r}")
        self.scaling = scaling

    def _blockwise(self):
        return self.target == "local" or self.guess == "activation"

    def _scaling(self):
        return self.scaling

    def _pullback(self, group, record, rng):
        """v = (∂z/∂θ)ᵀ u for each child of ``group`` with parameters, u random at its output."""
        v = {}
        for (name, m), (_, cache, y) in zip(group, record):
            if m.params:
                u = _draw(rng, y.shape, y.dtype, self.distribution)
                v.update(_prefixed(m.backward(cache, u, need_dx=False)[1], name))
        return v

    def _block_guesses(self, j, group, record, rng, local, dout, last):
        params = {k: a for name, m in group for k, a in _prefixed(m.params, name).items()}
        for _ in range(self.tangents):
            if self.guess == "weight":
                yield {k: _draw(rng, a.shape, a.dtype, self.distribution)
                       for k, a in params.items()}
            else:
                yield self._pullback(group, record, rng)

    def _estimate(self, model, x, y, rng):
        if self._blockwise():
            return super()._estimate(model, x, y, rng)
        streams = int(rng.integers(0, 2 ** 62))     # one projection of the whole gradient per tangent
        params = model.params
        est = {k: np.zeros_like(a) for k, a in params.items()}
        info = None
        for _ in range(self.tangents):
            v = {k: _draw(rng, a.shape, a.dtype, self.distribution) for k, a in params.items()}
            g, step = forward_gradient(model, x, y, v, loss=self.loss, scaling=self.scaling,
                                       rng=np.random.default_rng(streams), **self.loss_options)
            for k, a in g.items():
                est[k] += a / a.dtype.type(self.tangents)
            if info is None:
                info = {"loss": step["loss"], "output": step["output"]}
                self._kept = _keep_one_update(model)
        return est, info, streams

    def __repr__(self):
        return (f"ForwardGradient(guess={self.guess!r}, target={self.target!r}, "
                f"tangents={self.tangents}, scaling={self.scaling!r})")


# --------------------------------------------------------------------------- local guesses
@register("forward-gradient-local")
class ForwardGradientLocal(_Base):
    r"""Forward gradient with local guesses from auxiliary heads (Fournier et al. 2023, §3.2).

    The model (a Sequential) is cut into blocks; block j < last has an affine head :math:`h_j` on
    its flattened output and a local loss :math:`L_j = L(h_j(z_j), y)`. The guess is the local gradient
    :math:`v_j = \nabla_{\theta_j} L_j` (a backward confined to block j and its head; the last
    block uses :math:`\nabla_{\theta_J} L`, exact). The estimate projects the target onto it,
    :math:`g_j = \langle \nabla_{\theta_j} L_{\text{target}}, v_j\rangle / \|v_j\|^2 \; v_j`, where
    the inner product is a JVP from block j's input: to the model output for ``target="global"``
    (the end-to-end loss), through the head for ``target="local"`` (then :math:`g_j = v_j`: purely
    local learning). The heads (:attr:`params`) learn their local loss in the model's optimizer, at
    its lr unless ``head_lr`` is given (they no longer have an Adam of their own at lr 1e-3).

    Parameters: ``loss``, ``target``, ``blocks``, ``head_lr``, ``track_cosine``, ``seed``,
    ``**loss_options`` as in :class:`ForwardGradient`.
    """

    defaults = {"optimizer": "adam", "lr": 1e-3, "epochs": 20, "batch_size": 64}

    def __init__(self, loss="cross-entropy", *, target="global", blocks=None, head_lr=None,
                 track_cosine=False, seed=0, **loss_options):
        super().__init__(loss, target=target, blocks=blocks, head_lr=head_lr,
                         track_cosine=track_cosine, seed=seed, loss_options=loss_options)

    def _needs_heads(self):
        return True

    def _block_guesses(self, j, group, record, rng, local, dout, last):
        yield _bwd(group, record, dout if j == last else local[j][1])[1]

    def __repr__(self):
        return f"ForwardGradientLocal(target={self.target!r}, blocks={self.blocks})"
