r"""Mono-Forward: each layer learns from its own cross-entropy through a learned projection.

Gong, Li & Abdulla (2025), "Mono-Forward: Backpropagation-Free Algorithm for Efficient Neural
Network Training Harnessing Local Errors" (arXiv:2501.09238). Layer :math:`i` of an MLP,
:math:`a_i = f(a_{i-1} W_i^\top + b_i)`, owns a projection :math:`M_i \in \mathbb R^{C\times N_i}`
that turns its activity into class scores — the layer's *goodness* —

.. math::
    G_i = a_i M_i^\top, \qquad
    L_i = -\frac1N\sum_n \log \operatorname{softmax}(G_{i,n})_{y_n},

and :math:`W_i, b_i, M_i` descend :math:`\nabla L_i` with :math:`a_{i-1}` held constant:

.. math::
    \bar G_i = (\operatorname{softmax}(G_i) - Y)/N, \quad
    \bar M_i = \bar G_i^\top a_i, \quad
    \bar a_i = \bar G_i M_i, \quad
    \bar W_i, \bar b_i = \text{the layer's own backward of } \bar a_i .

One forward pass trains every layer; no error crosses a layer boundary, so the activations of a
layer can be dropped as soon as the next layer has read them (the memory saving the paper reports,
measured in ``bench/memory_mono_forward.py``). Prediction reads the last layer's scores
:math:`G_L` (the paper's BP-style prediction) or, as an option, the sum of every layer's scores.
The projections are the rule's own trainable arrays (``rule.params``): they are in the same
optimizer as the model's weights, so learning rates and schedules reach both.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_float
from ..core.losses import softmax_cross_entropy
from ._layerwise import SeededRule, class_labels, parse_blocks, run_pre
from .base import Rule, register

__all__ = ["MonoForward"]


@register("mono-forward")
class MonoForward(SeededRule, Rule):
    r"""Mono-Forward (Gong et al. 2025): each layer's own cross-entropy through a projection M_i.

    Models: ``[Flatten] (Linear, activation)* Linear`` with ``C`` outputs. The final Linear is the
    projection :math:`M_L` of the last hidden layer (the model's own output layer, so ``model(x)``
    is the last-layer prediction; its bias is an addition the paper's :math:`M_L` does not have).
    Every other hidden layer :math:`i` gets a projection ``(C, width_i)``, one of the rule's own
    trainable arrays (:attr:`params`), keyed ``"rule.<layer prefix>projection"`` (e.g.
    ``"rule.0.projection"``), drawn by :meth:`prepare` (or on the first call) from ``seed`` as
    :math:`U(\pm 1/\sqrt{\text{width}_i})`.

    Updates. :meth:`grads` returns the descent directions of the model's arrays and of the
    projections in one dict (``model.params`` names, then ``rule.params`` names) and changes
    nothing. The projections are updated by the same optimizer as the model — ``fit`` adds them as
    a parameter group with the optimizer's default hyper-parameters, or ``projection_lr`` as that
    group's lr — so schedules reach them. :meth:`step` (what ``fit`` calls) applies each layer's
    update as soon as that layer is done (the same result as one optimizer step, since no later
    layer reads a weight it changes), so neither the activations nor the gradients of a layer
    outlive it.

    Parameters
    ----------
    predict_mode : ``"last"`` — the model's output (:math:`G_L`); ``"sum"`` — :math:`\sum_i G_i`.
    projection_lr : ``None`` (the optimizer's lr) or the initial lr of the projections' group
        (a schedule scales it like every other group's).
    seed : int; the projections are drawn from it.

    ``info`` has ``loss`` (the last layer's cross-entropy, the model's own loss, comparable with
    backprop's), ``layer_losses`` (every layer's :math:`L_i`) and ``output``.
    """

    #: 40 epochs, twice backprop's 20: the first layers learn only through their own projections
    #: (measurements: ``docs/notes/performance-notes.md``)
    defaults = {"optimizer": "adam", "lr": 1e-3, "epochs": 40, "batch_size": 64}

    def __init__(self, *, predict_mode="last", projection_lr=None, seed=0):
        if predict_mode not in ("last", "sum"):
            raise ValueError(f"predict_mode must be 'last' or 'sum', got {predict_mode!r}")
        check_float(projection_lr, "projection_lr", low=0, low_open=True, allow_none=True)
        self.predict_mode = predict_mode
        self.projection_lr = None if projection_lr is None else float(projection_lr)
        self._init_seed(seed)
        self.params: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ the model
    def _net(self, model):
        pre, blocks = parse_blocks(model, "MonoForward")
        out = blocks[-1]
        if out.acts:
            raise ValueError(f"MonoForward needs a model that ends with a Linear layer (C class "
                             f"scores, no activation); it ends with {type(out.acts[-1][1]).__name__}")
        return pre, blocks[:-1], out

    def check_model(self, model):
        self._net(model)

    @staticmethod
    def _key(block):
        return "rule." + block.prefix + "projection"

    def _projections(self, hidden, c, dtype):
        """The ``M_i``, drawn on first use; a model of another shape is refused."""
        keys = [self._key(b) for b in hidden]
        if not self.params:
            rng = np.random.default_rng([self.seed, 7])
            for key, b in zip(keys, hidden):
                bound = 1.0 / np.sqrt(b.width)
                self.params[key] = rng.uniform(-bound, bound, size=(c, b.width)).astype(dtype)
        want = {k: (c, b.width) for k, b in zip(keys, hidden)}
        have = {k: v.shape for k, v in self.params.items()}
        if want != have:
            raise ValueError(f"MonoForward was set up for projections {have}, but this model needs "
                             f"{want}; use a new rule per model")
        return [self.params[k] for k in keys]

    def prepare(self, model, x):
        """Draw the projections for ``model`` (their dtype: the model's, else ``x``'s)."""
        _, hidden, out_block = self._net(model)
        check_array(x, "x", min_ndim=2)
        self._projections(hidden, out_block.linear.out_features, model.dtype or x.dtype)

    def param_options(self):
        return {} if self.projection_lr is None else {"lr": self.projection_lr}

    # ------------------------------------------------------------------ the rule
    def _scores(self, model, x, *, train, labels=None, mode=None, sink=None):
        """One forward pass. With ``labels``, every layer's loss and local gradients too: handed to
        ``sink(grads)`` layer by layer when given (and then dropped), else collected. Returns
        ``(scores, grads, losses)``."""
        pre, hidden, out_block = self._net(model)
        check_array(x, "x", min_ndim=2)
        z = run_pre(pre, x)
        c = out_block.linear.out_features
        if labels is not None:
            labels = class_labels(labels, len(z), c, "MonoForward")
        projs = self._projections(hidden, c, model.dtype or x.dtype)
        grads, rule_grads, losses, total = {}, {}, [], None
        for block, M in zip(hidden, projs):
            a, cache = block.forward(z, train=train)
            g = a @ M.T.astype(a.dtype, copy=False)                       # G_i = a_i M_iᵀ
            total = g if total is None else total + g
            if labels is not None:
                loss, dg = softmax_cross_entropy(g, labels)
                losses.append(loss)
                dm = {self._key(block): (dg.T @ a).astype(M.dtype, copy=False)}
                dw = block.backward(cache, dg @ M.astype(dg.dtype, copy=False))[1]
                if sink is None:
                    grads.update(dw)
                    rule_grads.update(dm)
                else:
                    sink({**dw, **dm})
            del cache                            # nothing of this layer is needed any more
            z = a                                # held constant by the next layer
        y, cache = out_block.forward(z, train=train)
        if labels is not None:
            loss, dy = softmax_cross_entropy(y, labels)
            losses.append(loss)
            dw = out_block.backward(cache, dy)[1]
            if sink is None:
                grads.update(dw)
            else:
                sink(dw)
        mode = self.predict_mode if mode is None else mode
        scores = y if mode == "last" or total is None else total + y
        ordered = {k: grads[k] for k in model.params if k in grads}       # model's, then rule's
        ordered.update((k, rule_grads[k]) for k in self.params if k in rule_grads)
        return scores, ordered, losses

    def grads(self, model, x, y, *, rng=None):
        """Descent directions of the model's arrays and of the projections (``rule.params``), in
        one dict. Changes nothing (the projections are drawn on first use)."""
        if y is None:
            raise ValueError("MonoForward.grads needs labels y")
        scores, grads, losses = self._scores(model, x, train=True, labels=y)
        return grads, {"loss": losses[-1], "layer_losses": losses, "output": scores}

    def step(self, model, x, y, *, optimizer, rng=None):
        """One training step: every layer's update applied, by ``optimizer``, as soon as it is known.

        Layer :math:`i`'s update changes nothing that a later layer reads (its output
        :math:`a_i` was computed before), so applying it at once gives the same result as
        :meth:`grads` followed by one optimizer step — and then no layer's activations *or*
        gradients outlive the layer. With an optimizer that clips the global gradient norm
        (``clip_norm``) the updates must be seen together, and the step is the default one.
        """
        if y is None:
            raise ValueError("MonoForward.step needs labels y")
        if getattr(optimizer, "clip_norm", None) is not None:
            return super().step(model, x, y, optimizer=optimizer, rng=rng)
        self.prepare(model, x)
        self.add_params_to(optimizer)
        scores, _, losses = self._scores(model, x, train=True, labels=y, sink=optimizer.step)
        self.after_step(model, optimizer)
        return {"loss": losses[-1], "layer_losses": losses, "output": scores}

    def predict(self, model, x, *, mode=None):
        """Class scores ``(N, C)``: the model's output (``"last"``) or the sum of every layer's
        :math:`G_i` (``"sum"``); ``mode=None`` uses ``predict_mode``."""
        if mode is not None and mode not in ("last", "sum"):
            raise ValueError(f"mode must be 'last' or 'sum', got {mode!r}")
        return self._scores(model, x, train=False, mode=mode)[0]

    def __repr__(self):
        return f"MonoForward(predict_mode={self.predict_mode!r}, seed={self.seed})"
