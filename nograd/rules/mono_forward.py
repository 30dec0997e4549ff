r"""Mono-Forward: each layer learns from its own cross-entropy through a learned projection.

Gong, Li & Abdulla (2025), "Mono-Forward: Backpropagation-Free Algorithm for Efficient Neural
Network Training Harnessing Local Errors" (arXiv:2501.09238v1; v2 is retitled "Mono-Forward:
Revisiting Forward-Forward through Objective-Locality Decomposition"), the method section. Layer
:math:`i` of an MLP, :math:`a_i = f(a_{i-1} W_i^\top + b_i)`, owns a projection
:math:`M_i \in \mathbb R^{C\times N_i}` that turns its activity into class scores — the layer's
*goodness* —

.. math::
    G_i = a_i M_i^\top, \qquad
    L_i = -\frac1N\sum_n \log \operatorname{softmax}(G_{i,n})_{y_n},

and :math:`W_i, b_i, M_i` descend :math:`\nabla L_i` with :math:`a_{i-1}` held constant:

.. math::
    \bar G_i = (\operatorname{softmax}(G_i) - Y)/N, \quad
    \bar M_i = \bar G_i^\top a_i, \quad
    \bar a_i = \bar G_i M_i, \quad
    \bar W_i, \bar b_i = \text{the layer's own backward of } \bar a_i .

The network has no output layer of its own: its output is the last layer's goodness
:math:`G_L = a_L M_L^\top` (the paper's BP-style prediction), so :math:`M_L` is the model's final
Linear, and the last hidden layer and :math:`M_L` learn together from the network's own loss.

One forward pass trains every layer; no error crosses a layer boundary, so the activations of a
layer can be dropped as soon as the next layer has read them (the memory saving the paper reports,
measured in ``bench/memory_mono_forward.py``). Prediction reads :math:`G_L` or, as an option, the
sum of every layer's scores (the paper's FF-style prediction). The other projections are the rule's
own trainable arrays (``rule.params``): they are in the same optimizer as the model's weights, so
learning rates and schedules reach both.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_float
from ..core.losses import softmax_cross_entropy
from ._layerwise import SeededRule, class_labels, parse_blocks, run_pre
from .base import Rule, register

__all__ = ["MonoForward"]

OUTPUTS = ("projection", "readout")


@register("mono-forward")
class MonoForward(SeededRule, Rule):
    r"""Mono-Forward (Gong et al. 2025): each layer's own cross-entropy through a projection M_i.

    Models: ``[Flatten] (Linear, activation)* Linear`` with ``C`` outputs; the ``(Linear,
    activation)`` blocks are the layers :math:`1..L`.

    ``output="projection"`` (default, the paper's structure): the final Linear *is* the
    projection :math:`M_L` of the last hidden layer, so ``model(x)`` is the last layer's goodness
    :math:`G_L` (its bias, when it has one, is an addition the paper's :math:`M_L` does not have).
    Layer :math:`L` and :math:`M_L` descend the model's own cross-entropy, the gradient reaching
    :math:`W_L` through :math:`M_L` and stopping there. Every other hidden layer :math:`i < L`
    gets a projection ``(C, width_i)``. With one hidden layer the rule is backprop.

    ``output="readout"``: every hidden layer, the last included, gets a projection on the rule,
    and the final Linear is a separate softmax readout trained on the frozen activity :math:`a_L`
    (its input held constant) — one more linear layer than the paper's network.

    The rule's projections are its own trainable arrays (:attr:`params`), keyed
    ``"rule.<layer prefix>projection"`` (e.g. ``"rule.0.projection"``), drawn by :meth:`prepare`
    (or on the first call) from ``seed`` as :math:`U(\pm 1/\sqrt{\text{width}_i})`.

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
    output : ``"projection"`` (the model's final Linear is :math:`M_L`) or ``"readout"``.
    predict_mode : ``"last"`` — the model's output; ``"sum"`` — the sum of every layer's
        :math:`G_i` (with ``"readout"``, the readout's scores too).
    projection_lr : ``None`` (the optimizer's lr) or the initial lr of the projections' group
        (a schedule scales it like every other group's).
    seed : int; the projections are drawn from it.

    ``info`` has ``loss`` (the model's own cross-entropy, comparable with backprop's),
    ``layer_losses`` (every layer's :math:`L_i`, then the readout's with ``"readout"``) and
    ``output``.
    """

    #: 40 epochs, twice backprop's 20, set when every hidden layer learned through a projection of
    #: its own (``docs/notes/performance-notes.md``); with the paper's structure 20 already come
    #: within 0.23 points of backprop on digits (seeds 0-2, docs/methods/forward-only.md)
    defaults = {"optimizer": "adam", "lr": 1e-3, "epochs": 40, "batch_size": 64}

    def __init__(self, *, output="projection", predict_mode="last", projection_lr=None, seed=0):
        if output not in OUTPUTS:
            raise ValueError(f"output must be 'projection' or 'readout', got {output!r}")
        if predict_mode not in ("last", "sum"):
            raise ValueError(f"predict_mode must be 'last' or 'sum', got {predict_mode!r}")
        check_float(projection_lr, "projection_lr", low=0, low_open=True, allow_none=True)
        self.output = output
        self.predict_mode = predict_mode
        self.projection_lr = None if projection_lr is None else float(projection_lr)
        self._init_seed(seed)
        self.params: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ the model
    def _net(self, model):
        """``(pre, own, last, out)``: the shape-only leaves, the layers with a projection on the
        rule, the layer whose projection is the model's output (``None`` with ``"readout"`` or no
        hidden layer) and the final Linear."""
        pre, blocks = parse_blocks(model, "MonoForward")
        out = blocks[-1]
        if out.acts:
            raise ValueError(f"MonoForward needs a model that ends with a Linear layer (C class "
                             f"scores, no activation); it ends with {type(out.acts[-1][1]).__name__}")
        hidden = blocks[:-1]
        if self.output == "readout" or not hidden:
            return pre, hidden, None, out
        return pre, hidden[:-1], hidden[-1], out

    def check_model(self, model):
        self._net(model)

    @staticmethod
    def _key(block):
        return "rule." + block.prefix + "projection"

    def _projections(self, own, c, dtype):
        """The ``M_i`` of the layers in ``own``, drawn on first use; another shape is refused."""
        keys = [self._key(b) for b in own]
        if not self.params:
            rng = np.random.default_rng([self.seed, 7])
            for key, b in zip(keys, own):
                bound = 1.0 / np.sqrt(b.width)
                self.params[key] = rng.uniform(-bound, bound, size=(c, b.width)).astype(dtype)
        want = {k: (c, b.width) for k, b in zip(keys, own)}
        have = {k: v.shape for k, v in self.params.items()}
        if want != have:
            raise ValueError(f"MonoForward was set up for projections {have}, but this model needs "
                             f"{want}; use a new rule per model")
        return [self.params[k] for k in keys]

    def prepare(self, model, x):
        """Draw the projections for ``model`` (their dtype: the model's, else ``x``'s)."""
        _, own, _, out = self._net(model)
        check_array(x, "x", min_ndim=2)
        self._projections(own, out.linear.out_features, model.dtype or x.dtype)

    def param_options(self):
        return {} if self.projection_lr is None else {"lr": self.projection_lr}

    # ------------------------------------------------------------------ the rule
    def _scores(self, model, x, *, train, labels=None, mode=None, sink=None):
        """One forward pass. With ``labels``, every layer's loss and local gradients too: handed to
        ``sink(grads)`` layer by layer when given (and then dropped), else collected. Returns
        ``(scores, grads, losses)``."""
        pre, own, last, out = self._net(model)
        check_array(x, "x", min_ndim=2)
        z = run_pre(pre, x)
        c = out.linear.out_features
        if labels is not None:
            labels = class_labels(labels, len(z), c, "MonoForward")
        projs = self._projections(own, c, model.dtype or x.dtype)
        grads, losses, total = {}, [], None

        def emit(g):                             # a layer's gradients: collected, or applied
            if sink is None:
                grads.update(g)
            else:
                sink(g)

        for block, M in zip(own, projs):
            a, cache = block.forward(z, train=train)
            g = a @ M.T.astype(a.dtype, copy=False)                       # G_i = a_i M_iᵀ
            total = g if total is None else total + g
            if labels is not None:
                loss, dg = softmax_cross_entropy(g, labels)
                losses.append(loss)
                dw = block.backward(cache, dg @ M.astype(dg.dtype, copy=False))[1]
                emit({**dw, self._key(block): (dg.T @ a).astype(M.dtype, copy=False)})
            del cache                            # nothing of this layer is needed any more
            z = a                                # held constant by the next layer
        if last is not None:                     # layer L and its projection M_L = the output
            a, cache_a = last.forward(z, train=train)
            y, cache_y = out.forward(a, train=train)                      # G_L = a_L M_Lᵀ (+ bias)
            if labels is not None:
                loss, dy = softmax_cross_entropy(y, labels)
                losses.append(loss)
                back = list(out.backward(cache_y, dy, need_dx=True))     # [ā_L = Ḡ_L M_L, M̄_L]
                dm = back.pop()
                # ā_L handed over, not kept, so the layer's backward frees it once used
                dw = last.backward(cache_a, back.pop())[1]
                del cache_a, cache_y
                emit({**dw, **dm})
        else:                                    # the readout on the frozen a_L (or the input)
            y, cache_y = out.forward(z, train=train)
            if labels is not None:
                loss, dy = softmax_cross_entropy(y, labels)
                losses.append(loss)
                emit(out.backward(cache_y, dy)[1])
        mode = self.predict_mode if mode is None else mode
        scores = y if mode == "last" or total is None else total + y
        ordered = {k: grads[k] for k in model.params if k in grads}       # model's, then rule's
        ordered.update((k, grads[k]) for k in self.params if k in grads)
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
        return (f"MonoForward(output={self.output!r}, predict_mode={self.predict_mode!r}, "
                f"seed={self.seed})")
