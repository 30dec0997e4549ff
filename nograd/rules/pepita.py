r"""PEPITA and adaptive feedback alignment: learning from a second, error-modulated forward pass.

PEPITA (Dellaferrera & Kreiman 2022, "Error-driven input modulation: solving the credit assignment
problem without a backward pass", ICML, Algorithm 1) has no backward pass. It runs the
network twice on the same batch, with the same dropout mask:

1. the standard pass on :math:`x`, giving the activations :math:`h_l` and the output error
   :math:`e = \hat y - y` (for softmax cross-entropy; in general :math:`N\,\partial L/\partial z`);
2. the modulated pass on :math:`x_{\rm mod} = x + F e`, :math:`F` a fixed random
   ``(input size, outputs)`` matrix, giving :math:`h_l^{\rm mod}` and :math:`e_{\rm mod}`;

and updates every layer from quantities available where the layer is (descent directions,
averaged over the batch):

.. math::
    ΔW_1 = (h_1 - h_1^{\rm mod})\, x_{\rm mod}^\top, \qquad
    ΔW_l = (h_l - h_l^{\rm mod})\, (h_{l-1}^{\rm mod})^\top, \qquad
    ΔW_L = e_{\rm mod}\, (h_{L-1}^{\rm mod})^\top.

Srinivasan et al. (2024, "Forward learning with top-down feedback: empirical and analytical
characterization", ICLR) show that PEPITA is well approximated by *adaptive feedback alignment*
(AFA). To first order in :math:`Fe`, :math:`h_1^{\rm mod} - h_1 = f'(a_1) \odot (W_1 F e)`, so
PEPITA's first-layer update is feedback alignment with the feedback matrix :math:`-W_1 F`, which
changes as :math:`W_1` learns. :class:`AFA` is that first-order rule; for deeper layers we take
the same expansion layer by layer — the tangent :math:`\dot h_l` of the modulated pass, computed
with each layer's ``jvp`` along the input tangent :math:`Fe` — which is exactly what PEPITA's
update tends to as :math:`\|Fe\| \to 0` (a test checks this).

Both rules optionally learn :math:`F` by *weight mirroring* (Akrout et al. 2019, "Deep learning
without weight transport", NeurIPS; applied to PEPITA's top-down path by Srinivasan et al. 2024):
:math:`F = B_1 B_2 \cdots B_L`, and each :math:`B_l` follows the layer's response to noise,
:math:`B_l \leftarrow B_l + η(s_l\,ξ^\top h_l(ξ)/N - λ B_l)`, :math:`ξ \sim \mathcal N(0, σ^2)`,
with :math:`s_1 = -1` and :math:`s_l = +1` above, so that the effective first-layer feedback
:math:`-W_1 F \propto W_1 W_1^\top W_2^\top \cdots` turns towards backprop's. We keep
:math:`\|F\|_F` at its initial value (only its direction is learned).

Training. :math:`F = 0.05\cdot U[-\sqrt{6/d}, \sqrt{6/d}]`, :math:`d` the input size, as in
the paper's experiments and the authors' code (GiorgiaD/PEPITA), which trains with SGD and
momentum 0.9, batch 64; PEPITA defaults to that optimizer, not Adam. Expanding PEPITA's
first-layer update to second order in :math:`Fe`, with :math:`δ = f'(a_1) \odot (W_1 F e)`,

.. math::
    ΔW_1 = (h_1 - h_1^{\rm mod})(x + Fe)^\top \approx -δ x^\top - δ (Fe)^\top :

the first term is AFA's; the second, of size :math:`\|F\|^2`, enters the step
:math:`W_1 \leftarrow W_1 - ηΔW_1` as :math:`+η\, f'(a_1) \odot (W_1 F e)(F e)^\top`, which grows
:math:`W_1` along the columns of :math:`F`. Under SGD it is negligible; Adam divides every weight's
step by that weight's own gradient scale, so on an input that is zero in every sample (MNIST's dark
border) this term is the whole update and Adam makes it a full step of constant sign: :math:`W_1`
runs away and the loss diverges (``examples/pepita_mnist.py`` measures it). PEPITA's lr (0.15,
Nesterov momentum) and 40 epochs are nograd's, for runs about 20 times shorter than the paper's
(100 epochs of 60,000 images, lr ×0.1 at epochs 60 and 90). The lr cannot be much larger: each
hidden layer's feedback contains its own weights (:math:`-W_1F` for the first), so the updates feed
back on themselves at a rate :math:`\propto η\|W_1F\|`. AFA has no second term and keeps Adam.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.checks import check_float
from ._chain import backward_segment, chain, forward_chain, is_projecting, ordered, per_sample_error
from .base import register
from .feedback import _LossRule

__all__ = ["PEPITA", "AFA"]


def _elementwise_end(leaves, i, stop):
    """Index of the last leaf of the run of ``elementwise`` leaves (activations, dropout) after
    leaf ``i``: the point whose output is the layer's activity :math:`h_l` (same shape as the
    layer's output)."""
    while i + 1 < stop and leaves[i + 1][1].elementwise:
        i += 1
    return i


class _TopDown(_LossRule):
    """Shared: the chain of layers, the top-down matrix F and its optional weight mirroring."""

    def __init__(self, loss="cross-entropy", *, seed=0, f_scale=0.05, mirror=False, mirror_lr=0.05,
                 mirror_decay=0.5, mirror_noise=1.0, **loss_options):
        super().__init__(loss, seed, **loss_options)
        for name, v in (("f_scale", f_scale), ("mirror_lr", mirror_lr),
                        ("mirror_decay", mirror_decay), ("mirror_noise", mirror_noise)):
            check_float(v, name, low=0)
        if not isinstance(mirror, (bool, np.bool_)):
            raise TypeError(f"mirror must be a bool, got {mirror!r}")
        self.f_scale, self.mirror = float(f_scale), bool(mirror)
        self.mirror_lr, self.mirror_decay = float(mirror_lr), float(mirror_decay)
        self.mirror_noise = float(mirror_noise)
        self.F = None                  # (input size, outputs), fixed unless mirrored
        self.mirror_matrices = None    # [B_1, ..., B_L] when mirroring

    def check_model(self, model):
        leaves = chain(model, type(self).__name__, allow_norms=False)
        if self.mirror:
            proj = [m for _, m in leaves if is_projecting(m)]
            if not all(m.dense for m in proj):
                raise ValueError(f"{type(self).__name__}(mirror=True) needs Linear layers only: "
                                 f"weight mirroring learns one matrix per Linear layer")
        return leaves

    # ------------------------------------------------------------------ F
    def _setup(self, leaves, d_in, n_out, dtype):
        if self.F is not None:
            if self.F.shape != (d_in, n_out):
                raise ValueError(f"{type(self).__name__} was set up for {self.F.shape[0]} inputs and "
                                 f"{self.F.shape[1]} outputs; got {d_in} and {n_out} (use a new "
                                 f"rule per model)")
            return
        rng = np.random.default_rng(self.seed)
        a = math.sqrt(6.0 / d_in)        # the papers' setting: F = 0.05·U[±√(6/d)], d = input size
        F = self.f_scale * rng.uniform(-a, a, size=(d_in, n_out))
        self._f_norm = float(np.linalg.norm(F))
        if self.mirror:
            dims = [d_in] + [m.out_features for _, m in leaves if is_projecting(m)]
            if dims[-1] != n_out:
                raise ValueError(f"weight mirroring needs the last Linear layer to be the output; "
                                 f"it has {dims[-1]} outputs but the model gives {n_out}")
            self.mirror_matrices = [rng.standard_normal((p, q)) / math.sqrt(p)
                                    for p, q in zip(dims[:-1], dims[1:])]
            F = self._mirrored_F()
        self.F = F.astype(dtype)

    def _mirrored_F(self):
        F = self.mirror_matrices[0]
        for B in self.mirror_matrices[1:]:
            F = F @ B
        n = np.linalg.norm(F)
        return F * (self._f_norm / n) if n > 0 else F

    def _mirror_step(self, leaves, rng):
        """One weight-mirroring step of every B_l from the layer's own response to noise."""
        proj = [i for i, (_, m) in enumerate(leaves) if is_projecting(m)]
        for j, i in enumerate(proj):
            stop = proj[j + 1] if j + 1 < len(proj) else len(leaves)
            end = _elementwise_end(leaves, i, stop)
            layer = leaves[i][1]
            xi = self.mirror_noise * rng.standard_normal((64, layer.in_features))
            xi -= xi.mean(axis=0)
            h = xi.astype(self.F.dtype)
            for k in range(i, end + 1):
                h = leaves[k][1](h)
            sign = -1.0 if j == 0 else 1.0
            B = self.mirror_matrices[j]
            B += self.mirror_lr * (sign * (xi.T @ h.astype(np.float64)) / len(xi)
                                   - self.mirror_decay * B)
        self.F = self._mirrored_F().astype(self.F.dtype)

    def effective_first_feedback(self, model):
        r"""The first layer's effective feedback matrix :math:`-W_1 F` (``(hidden, outputs)``) —
        what AFA uses and what PEPITA approximates; for a one-hidden-layer net backprop's is
        :math:`W_2^\top`."""
        if self.F is None:
            raise ValueError("F is drawn on the first grads() call; call grads once first")
        leaves = chain(model, type(self).__name__, allow_norms=False)
        first = next(m for _, m in leaves if is_projecting(m))
        if not first.dense:
            raise ValueError("effective_first_feedback needs a Linear first layer")
        return -(first.params["weight"].astype(np.float64) @ self.F.astype(np.float64))

    # ------------------------------------------------------------------ common start
    def _start(self, model, x, y, rng):
        gen = self._gen(rng)
        leaves = self.check_model(model)
        seed = int(gen.integers(2 ** 63))      # replayed: the same dropout masks in both passes
        inputs, caches, out = forward_chain(leaves, x, train=True, rng=np.random.default_rng(seed))
        value, dout = self.loss(out, y, **self.loss_options)
        e = per_sample_error(dout)
        self._setup(leaves, int(np.prod(x.shape[1:])), e.shape[1], model.dtype or x.dtype)
        dx = (e @ self.F.T.astype(e.dtype, copy=False)).reshape(x.shape).astype(x.dtype, copy=False)
        proj = [i for i, (_, m) in enumerate(leaves) if is_projecting(m)]
        return gen, leaves, seed, inputs, caches, out, value, dout, dx, proj

    @staticmethod
    def _activity(inputs, out, i):
        """The output of leaf ``i`` from the list of leaf inputs."""
        return inputs[i + 1] if i + 1 < len(inputs) else out

    @staticmethod
    def _per_sample_and_position(layer, signal):
        """``signal`` (a hidden layer's ``(N, out)`` or ``(N, C, H, W)`` error) divided by the
        number of samples and, for a convolution, of output positions :math:`H W`: the update is
        a mean over both, as in the authors' ``compute_delta_w_conv`` (GiorgiaD/PEPITA,
        models.py: the per-position products are averaged over the batch, summed over positions,
        then multiplied by ``1/cnt``). With SGD the scale is the step's; Adam would absorb it."""
        count = signal.shape[0] if layer.dense else signal.shape[0] * int(np.prod(signal.shape[2:]))
        return signal / signal.dtype.type(count)

    def __repr__(self):
        return f"{type(self).__name__}(seed={self.seed}, f_scale={self.f_scale}, mirror={self.mirror})"


@register("pepita")
class PEPITA(_TopDown):
    r"""PEPITA: a second forward pass on :math:`x + Fe` replaces the backward pass.

    Updates (descent directions, batch means) — Dellaferrera & Kreiman 2022, Algorithm 1:
    :math:`ΔW_1 = (h_1 - h_1^{\rm mod}) x_{\rm mod}^\top`,
    :math:`ΔW_l = (h_l - h_l^{\rm mod}) (h_{l-1}^{\rm mod})^\top`,
    :math:`ΔW_L = e_{\rm mod} (h_{L-1}^{\rm mod})^\top`, biases likewise with a 1 as input.
    :math:`h_l` is the activity after the layer's activation and dropout (same mask in both passes);
    :math:`h_{l-1}^{\rm mod}` is whatever the layer receives in the modulated pass (after pooling or
    flatten). A Conv2d layer's update is its weight-gradient map applied to
    :math:`h_l - h_l^{\rm mod}` and its modulated input, divided, as in the authors' code, by the
    number of output positions as well as of samples (a mean over both).

    Parameters
    ----------
    f_scale : :math:`F = f_{\rm scale}\cdot U(\pm\sqrt{6/d})`, :math:`d` the input size; default 0.05.
    mirror : learn the direction of :math:`F` by weight mirroring (Srinivasan et al. 2024; see the
        module docstring); ``mirror_lr``, ``mirror_decay``, ``mirror_noise`` set η, λ, σ.
    seed, loss, **loss_options : as for the other rules.

    Models: a (nested) ``Sequential`` chain of Linear/Conv2d, activations, dropout, pooling and
    flatten; norm layers and ``Residual`` blocks raise ``ValueError``.

    Defaults: SGD with Nesterov momentum 0.9, batch 64, lr 0.15, 40 epochs — the authors'
    optimizer family (their code's ``mom`` and ``NAG``), never Adam (see the module docstring).
    """

    defaults = {"optimizer": "sgd", "lr": 0.15, "epochs": 40, "batch_size": 64,
                "optimizer_options": {"momentum": 0.9, "nesterov": True}}

    def grads(self, model, x, y, *, rng=None):
        gen, leaves, seed, inputs, caches, out, value, dout, dx, proj = self._start(model, x, y, rng)
        x_mod = x + dx
        inputs_m, caches_m, out_m = forward_chain(leaves, x_mod, train=True,
                                                  rng=np.random.default_rng(seed))
        _, dout_m = self.loss(out_m, y, **self.loss_options)
        grads: dict = {}
        backward_segment(leaves, caches_m, dout_m, proj[-1], len(leaves), grads)   # e_mod h_{L-1}^mod
        for j, i in enumerate(proj[:-1]):
            end = _elementwise_end(leaves, i, proj[j + 1])
            diff = self._activity(inputs, out, end) - self._activity(inputs_m, out_m, end)
            backward_segment(leaves, caches_m, self._per_sample_and_position(leaves[i][1], diff),
                             i, i + 1, grads)
        if self.mirror:
            self._mirror_step(leaves, gen)
        return ordered(grads, model), {"loss": value, "output": out}


@register("afa")
class AFA(_TopDown):
    r"""Adaptive feedback alignment: PEPITA to first order in :math:`Fe` (Srinivasan et al. 2024).

    With the tangents :math:`\dot h_l` of the forward pass along the input direction
    :math:`\dot x = Fe` (each layer's ``jvp``; same dropout mask):

    .. math::
        ΔW_l = -\dot h_l\, h_{l-1}^\top \quad (l < L), \qquad ΔW_L = e\, h_{L-1}^\top,

    so the first layer gets feedback alignment with the adaptive matrix :math:`-W_1F`:
    :math:`\dot h_1 = f'(a_1) \odot (W_1 F e)`. The top layer's update is backprop's. Same
    options as :class:`PEPITA` (same ``seed`` → same :math:`F`).

    Defaults: Adam, lr 1e-3, batch 64, 40 epochs. AFA's first-layer update :math:`-\dot h_1 x^\top`
    has no :math:`(Fe)^\top` term and vanishes on an input that is zero in every sample, so Adam
    has nothing there to inflate (unlike PEPITA); 40 epochs because the adaptive feedback
    :math:`-W_1F` is small at the paper's :math:`F` and the hidden layers learn slowly.
    """

    defaults = {"optimizer": "adam", "lr": 1e-3, "epochs": 40, "batch_size": 64}

    def grads(self, model, x, y, *, rng=None):
        gen, leaves, seed, inputs, caches, out, value, dout, dx, proj = self._start(model, x, y, rng)
        grads: dict = {}
        backward_segment(leaves, caches, dout, proj[-1], len(leaves), grads)
        if len(proj) > 1:
            replay = np.random.default_rng(seed)
            tangents, h = [], x
            for _, m in leaves[:proj[-1]]:
                h, dx = m.jvp(h, dx, train=True, rng=replay)
                tangents.append(dx)
            for j, i in enumerate(proj[:-1]):
                end = _elementwise_end(leaves, i, proj[j + 1])
                t = tangents[end]
                backward_segment(leaves, caches, -self._per_sample_and_position(leaves[i][1], t),
                                 i, i + 1, grads)
        if self.mirror:
            self._mirror_step(leaves, gen)
        return ordered(grads, model), {"loss": value, "output": out}
