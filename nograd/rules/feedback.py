r"""Feedback alignment and its relatives: FA, the sign-symmetry variants, DFA and optical DFA.

Backprop sends the error down through the transposed forward weights, :math:`δ_{l-1} = W_l^\top δ_l`
(times :math:`f'`). These rules keep the weight gradient of each layer, :math:`ΔW_l = δ_l h_{l-1}^\top`,
but replace the transported :math:`W_l^\top` by another signal:

- :class:`FA` — a fixed random matrix :math:`B_l` of :math:`W_l`'s shape (Lillicrap et al. 2016,
  "Random synaptic feedback weights support error backpropagation for deep learning",
  Nat. Commun. 7:13276); and the sign-symmetric feedback of Liao, Leibo & Poggio (2016,
  "How important is weight symmetry in backpropagation?", AAAI) in the naming of BioTorch
  (Sanfiz & Akrout 2021, "Benchmarking the accuracy and robustness of feedback alignment
  algorithms"): :class:`USF` :math:`B = s\,\mathrm{sign}(W)`, :class:`FRSF`
  :math:`B = |R| \odot \mathrm{sign}(W)` with fixed random :math:`R`, :class:`BRSF` the same with
  :math:`R` redrawn for every batch;
- :class:`DFA` — the output error :math:`e` is sent straight to every hidden layer through its own
  fixed random :math:`B_l` (Nøkland 2016, "Direct feedback alignment provides learning in deep
  neural networks", NeurIPS): :math:`δa_l = (B_l e) \odot f'(a_l)`;
- :class:`OpticalDFA` — DFA whose projection :math:`B e` is measured by a simulated photonic
  co-processor (Launay et al. 2020, "Hardware beyond backpropagation: a photonic co-processor for
  direct feedback alignment"); it lives in :mod:`nograd.rules.optical_dfa` and is re-exported here.

All work on the layers only through the module contract and its structural view (DESIGN.md §2):
a layer that declares ``feedback_weight`` (Linear, Conv2d), run backward with
``params={"weight": B}``, returns the cotangent :math:`\bar y B` (or its convolutional
equivalent) *and* the exact weight gradient :math:`\bar y^\top x`, because that gradient does not
depend on the weight's value (the layer is linear in :math:`W`). The FA family therefore needs no
walk of its own: its gradients are ``model.backward(cache, dout, params=B)`` with every feedback
weight overridden by its :math:`B`. The feedback matrices live in the rule, keyed by the parameter
name of the weight they serve (DESIGN.md §3).
"""
from __future__ import annotations

import math

import numpy as np

from ..core.checks import NonFiniteError, as_rng, check_seed
from ..losses import get_loss
from ..core.module import Module, dotted
from ._chain import backward_segment, chain, forward_chain, is_local, is_projecting, ordered
from .base import Rule, register

__all__ = ["FA", "USF", "FRSF", "BRSF", "DFA", "OpticalDFA"]  # noqa: F822 (OpticalDFA: __getattr__)


def _check_feedback(feedback):
    if feedback is None:
        return {}
    if not isinstance(feedback, dict):
        raise TypeError(f"feedback must be a dict parameter name -> array, got {type(feedback).__name__}")
    for k, v in feedback.items():
        if not isinstance(v, np.ndarray) or v.dtype.kind != "f":
            raise TypeError(f"feedback[{k!r}] must be a float numpy array, got {type(v).__name__}")
        if not np.isfinite(v).all():
            raise NonFiniteError(f"feedback[{k!r}] contains NaN or inf")
    return {k: v.copy() for k, v in feedback.items()}


def _weight_key(leaf) -> str:
    """The ``model.params`` key of the feedback weight of a ``(prefix, layer)`` chain entry."""
    prefix, m = leaf
    return prefix + m.feedback_weight


def _fan_in(w: np.ndarray) -> int:
    return int(np.prod(w.shape[1:]))


class _LossRule(Rule):
    """Shared: the loss (``loss``, ``loss_options`` as on :class:`Backprop`) and the seed."""

    defaults = {"optimizer": "adam", "lr": 1e-3, "epochs": 20}

    def __init__(self, loss="cross-entropy", seed=0, **loss_options):
        self.loss = get_loss(loss)
        self.loss_options = loss_options
        self.seed = check_seed(seed)
        self._rng = np.random.default_rng([self.seed, 1])   # for calls made without rng=

    def _gen(self, rng):
        return self._rng if rng is None else as_rng(rng)


# ============================================================================ FA family
@register("fa")
class FA(_LossRule):
    r"""Feedback alignment: each Linear/Conv2d sends the error down through a fixed random B.

    For a layer :math:`y = x W^\top + b` the backward pass becomes

    .. math::
        \bar x = \bar y\, B \quad(\text{instead of } \bar y W), \qquad
        \bar W = \bar y^\top x, \quad \bar b = \textstyle\sum_n \bar y_n \quad(\text{unchanged}),

    with :math:`B` of :math:`W`'s shape drawn once from the layer's own initial distribution,
    :math:`U(\pm\sqrt{6/\mathrm{fan\_in}})` (a Conv2d layer uses its
    kernel-shaped :math:`B` in the transposed convolution). Every other module — activations,
    pooling, dropout, flatten, norm layers, ``Residual`` sums — uses its own backward, which
    transports no weight matrix: the gradients are the model's own backward with the feedback
    weights overridden, ``model.backward(cache, dout, params=B)``. The top layer's gradient is
    therefore exact, and with :math:`B = W` the rule *is* backprop.

    Models: any tree of ``Sequential`` and ``Residual`` blocks whose leaves declare
    ``feedback_weight`` (Linear, Conv2d) or have no arrays, or are norm layers; other layers with
    arrays and composites with their own maps (attention blocks) raise ``ValueError``.

    Parameters
    ----------
    loss, **loss_options : as for :class:`~nograd.rules.Backprop`.
    seed : int; the feedback matrices are drawn from it, in the order of ``model.params``.
    feedback : optional dict ``{weight name: B}`` overriding the matrix of those layers (fixed).
    """

    mode = "fa"

    def __init__(self, loss="cross-entropy", *, seed=0, feedback=None, **loss_options):
        super().__init__(loss, seed, **loss_options)
        self._given = _check_feedback(feedback)
        self._fixed: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ the model
    def check_model(self, model):
        self._weights(model)

    def _weights(self, model):
        """Names of the weights that get feedback matrices, checking the whole module tree."""
        who = type(self).__name__
        if not isinstance(model, Module):
            raise TypeError(f"{who}: model must be a nograd Module, got {type(model).__name__}")
        for name, m in model.modules():             # composites: Sequential, Residual only
            if m.children and m.combinator is None:
                raise ValueError(f"{who} cannot train {type(m).__name__} (at "
                                 f"{name or 'the model'!r}): only Linear/Conv2d weights get "
                                 f"feedback matrices, passed through Sequential and Residual "
                                 f"blocks; a composite with its own backward is not one of those")
        names = []
        for name, m in model.leaves():
            if is_projecting(m):
                names.append(dotted(name, m.feedback_weight))
            elif not is_local(m):
                raise ValueError(f"{who} cannot train {type(m).__name__} (at "
                                 f"{name or 'the model'!r}): only Linear/Conv2d weights get "
                                 f"feedback matrices; other modules must be parameter-free or "
                                 f"norm layers")
        if not names:
            raise ValueError(f"{type(self).__name__}: the model has no Linear or Conv2d layer")
        params = model.params
        for k, v in self._given.items():
            if k not in names:
                raise ValueError(f"feedback has key {k!r}, which is not a Linear/Conv2d weight of "
                                 f"the model; expected some of {names}")
            if v.shape != params[k].shape:
                raise ValueError(f"feedback[{k!r}] must have the weight's shape {params[k].shape}, "
                                 f"got {v.shape}")
        return names

    def _fixed_random(self, model, names):
        """The fixed random matrices, drawn once from the seed (same seed, same matrices)."""
        params = model.params
        if not self._fixed:
            rng = np.random.default_rng(self.seed)
            for k in names:
                w = params[k]
                a = math.sqrt(6.0 / _fan_in(w))
                self._fixed[k] = rng.uniform(-a, a, size=w.shape).astype(w.dtype)
        for k in names:
            if k not in self._fixed or self._fixed[k].shape != params[k].shape:
                raise ValueError(f"{type(self).__name__} drew its feedback matrices for another "
                                 f"model (weights {list(self._fixed)}); use a new rule per model")
        return self._fixed

    def feedback_matrices(self, model, *, rng=None) -> dict[str, np.ndarray]:
        """The matrix :math:`B` each Linear/Conv2d weight uses in the backward pass now, by name.

        For :class:`BRSF` each call draws new magnitudes (from ``rng``, else the rule's seed)."""
        names = self._weights(model)
        params = model.params
        out = {}
        for k in names:
            if k in self._given:
                out[k] = self._given[k].astype(params[k].dtype, copy=False)
            else:
                out[k] = self._make(k, params[k], model, names, rng)
        return out

    def _make(self, name, w, model, names, rng):
        return self._fixed_random(model, names)[name]

    # ------------------------------------------------------------------ one step
    def grads(self, model, x, y, *, rng=None):
        gen = self._gen(rng)
        self._weights(model)
        out, cache = model.forward(x, train=True, rng=gen)
        value, dout = self.loss(out, y, **self.loss_options)
        B = self.feedback_matrices(model, rng=gen)
        _, grads = model.backward(cache, dout, params=B, need_dx=False)
        return ordered(grads, model), {"loss": value, "output": out}

    def __repr__(self):
        return f"{type(self).__name__}(seed={self.seed})"


@register("usf")
class USF(FA):
    r"""Uniform sign-concordant feedback (uSF): FA with :math:`B = s\,\mathrm{sign}(W)`.

    Only the signs of the forward weights reach the backward pass; :math:`B` follows :math:`W`'s
    signs as they change during training.

    .. math::
        B_l = s_l\,\mathrm{sign}(W_l), \qquad s_l = \sqrt{2/\mathrm{fan\_in}_l}
        \quad(\mathrm{fan\_in} = \text{in features, or } C_\text{in} k_h k_w \text{ for Conv2d}).

    **The scale is nograd's choice, not the paper's.** Liao, Leibo & Poggio (2016, "How important
    is weight symmetry in backpropagation?", AAAI; arXiv:1510.05067, the "uniform sign-concordant
    feedbacks") define uSF as :math:`V = \mathrm{sign}(W)`, unit magnitudes (they report that
    feedback magnitudes do not matter once Batch Normalization or their "Batch Manhattan"
    update is used). BioTorch's ``usf`` layer (Sanfiz & Akrout 2021) also uses
    :math:`\mathrm{sign}(W)`, and with its option ``scaling_factor`` multiplies it by
    :math:`\sqrt{2/(\mathrm{fan\_in}+\mathrm{fan\_out})}` (the standard deviation of its Glorot
    initialisation; its source attributes the idea to Xiao et al. 2018, "Biologically-plausible
    learning algorithms can scale to large datasets"). nograd's :math:`s_l` is likewise the
    standard deviation of its own default initialisation, He-uniform
    :math:`U(\pm\sqrt{6/\mathrm{fan\_in}})`, so :math:`B` has the size of the weights it stands
    in for (unit signs are :math:`\sqrt{\mathrm{fan\_in}/2}` times larger, entrywise, and that
    factor would compound over the layers below).

    Because every map of the backward pass is linear in the cotangent, the scale changes no
    direction: the update of layer :math:`l` is exactly :math:`\prod_{k>l} s_k` times the update
    with Liao et al.'s :math:`B = \mathrm{sign}(W)` (the top layer's is unchanged; tested), a
    per-layer factor on the learning rate that Adam's normalisation all but removes.
    """

    mode = "usf"

    def _make(self, name, w, model, names, rng):
        return (np.sign(w) * math.sqrt(2.0 / _fan_in(w))).astype(w.dtype)


@register("frsf")
class FRSF(FA):
    r"""Fixed random-magnitude sign-concordant feedback (frSF): :math:`B = |R| \odot \mathrm{sign}(W)`
    with :math:`R` drawn once like FA's matrix (BioTorch's ``frsf``)."""

    mode = "frsf"

    def _make(self, name, w, model, names, rng):
        return (np.abs(self._fixed_random(model, names)[name]) * np.sign(w)).astype(w.dtype)


@register("brsf")
class BRSF(FA):
    r"""Batch-random magnitude sign-concordant feedback (brSF): :math:`B = |R_t| \odot \mathrm{sign}(W)`
    with :math:`R_t \sim U(\pm\sqrt{6/\mathrm{fan\_in}})` redrawn for every batch from the ``rng``
    passed to :meth:`grads` (BioTorch's ``brsf``)."""

    mode = "brsf"

    def _make(self, name, w, model, names, rng):
        gen = self._gen(rng)
        a = math.sqrt(6.0 / _fan_in(w))
        return (np.abs(gen.uniform(-a, a, size=w.shape)) * np.sign(w)).astype(w.dtype)


# ============================================================================ DFA
@register("dfa")
class DFA(_LossRule):
    r"""Direct feedback alignment: the output error goes to every hidden layer through its own B_l.

    With :math:`e = \partial L/\partial\hat y` (the loss gradient at the output, ``(N, C)``), the
    hidden layer :math:`l` receives the cotangent :math:`B_l e` at the point where its block hands
    its output to the next trainable layer, and that signal runs back through the block's own
    local modules (activation, pooling, dropout, flatten, norm) to the layer's output:

    .. math::
        δa_l = (B_l e) \odot f'(a_l), \qquad ΔW_l = δa_l^\top h_{l-1}
        \qquad (\text{Nøkland 2016}),

    while the top layer gets the exact :math:`e` through its own backward. For a conv block the
    projection has the flattened size of the feature map it hands on (``B_l`` is
    ``(C·H·W, classes)``) and is reshaped to the map. :math:`B_l` is drawn once from the seed,
    :math:`U(\pm\sqrt{6/n_l})` with :math:`n_l` the projected size — the scale of the transposed
    weights it stands in for. Because the hidden signal does not pass through the weights above,
    DFA learns from zero-initialised hidden weights (with an activation whose derivative is not
    zero at 0, e.g. tanh).

    Parameters
    ----------
    loss, **loss_options : as for :class:`~nograd.rules.Backprop`.
    seed : int seed of the feedback matrices.
    feedback : optional dict ``{weight name of hidden layer l: B_l}``, ``B_l`` of shape
        ``(projected size, output size)``; e.g. ``{"0.weight": W2.T}`` makes DFA on a
        one-hidden-layer net equal backprop.

    Models: a (nested) ``Sequential`` chain; ``Residual`` blocks and unknown trainable layers raise
    ``ValueError`` in :meth:`check_model`.
    """

    def __init__(self, loss="cross-entropy", *, seed=0, feedback=None, **loss_options):
        super().__init__(loss, seed, **loss_options)
        self._given = _check_feedback(feedback)
        self.feedback: dict[str, np.ndarray] = {}

    def check_model(self, model):
        leaves = chain(model, type(self).__name__)
        first = next(i for i, (_, m) in enumerate(leaves) if is_projecting(m))
        for prefix, m in leaves[:first]:
            if m.params:
                raise ValueError(f"{type(self).__name__} cannot train {type(m).__name__} at "
                                 f"{prefix[:-1]!r}: it sits before the first Linear/Conv2d, where "
                                 f"no error is projected")
        return leaves

    def _sizes(self, leaves, proj, inputs):
        """``{weight name of hidden layer: projected size}`` in layer order."""
        return {_weight_key(leaves[proj[j]]): int(np.prod(inputs[proj[j + 1]].shape[1:]))
                for j in range(len(proj) - 1)}

    def _setup(self, sizes, n_out, dtype):
        if self.feedback:
            for k, n in sizes.items():
                B = self.feedback.get(k)
                if B is None or B.shape != (n, n_out):
                    raise ValueError(f"{type(self).__name__} was set up for a model whose hidden "
                                     f"layers project to {[b.shape for b in self.feedback.values()]}; "
                                     f"got {k!r} of size {n} with {n_out} outputs (use a new rule "
                                     f"per model and input size)")
            return
        for k, v in self._given.items():
            if k not in sizes:
                raise ValueError(f"feedback has key {k!r}, which is not the weight of a hidden "
                                 f"Linear/Conv2d layer; expected some of {list(sizes)}")
            if v.shape != (sizes[k], n_out):
                raise ValueError(f"feedback[{k!r}] must have shape {(sizes[k], n_out)} (projected "
                                 f"size, outputs), got {v.shape}")
        rng = np.random.default_rng(self.seed)
        for k, n in sizes.items():
            a = math.sqrt(6.0 / n)
            drawn = rng.uniform(-a, a, size=(n, n_out)).astype(dtype)
            self.feedback[k] = self._given[k].astype(dtype) if k in self._given else drawn

    def _project(self, e, sizes, rng):
        """``{name: e B_lᵀ}`` — the projected error of each hidden layer, rows ``(N, n_l)``."""
        return {k: e @ self.feedback[k].T.astype(e.dtype, copy=False) for k in sizes}

    def grads(self, model, x, y, *, rng=None):
        gen = self._gen(rng)
        leaves = self.check_model(model)
        inputs, caches, out = forward_chain(leaves, x, train=True, rng=gen)
        value, dout = self.loss(out, y, **self.loss_options)
        proj = [i for i, (_, m) in enumerate(leaves) if is_projecting(m)]
        grads: dict = {}
        backward_segment(leaves, caches, dout, proj[-1], len(leaves), grads)
        if len(proj) > 1:
            e = dout.reshape(len(dout), -1)
            sizes = self._sizes(leaves, proj, inputs)
            self._setup(sizes, e.shape[1], model.dtype or e.dtype)
            signals = self._project(e, sizes, gen)
            for j in range(len(proj) - 1):
                lo, hi = proj[j], proj[j + 1]
                dy = signals[_weight_key(leaves[lo])].astype(dout.dtype, copy=False)
                backward_segment(leaves, caches, dy.reshape(inputs[hi].shape), lo, hi, grads)
        return ordered(grads, model), {"loss": value, "output": out}

    def __repr__(self):
        return f"{type(self).__name__}(seed={self.seed})"


def __getattr__(name):
    # OpticalDFA moved to .optical_dfa (it builds on DFA, so it cannot be imported at the top of
    # this module); looked up there on first use, so `from nograd.rules.feedback import
    # OpticalDFA` keeps working
    if name == "OpticalDFA":
        from .optical_dfa import OpticalDFA

        return OpticalDFA
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
