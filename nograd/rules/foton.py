r"""FOTON: forward-only training of orthogonal networks.

Caillon, Colagrande, Fagnou, Delattre & Allauzen (2025), "Forward Only Learning for Orthogonal
Neural Networks of any Depth" (arXiv:2512.20668). Like PEPITA, a second forward pass on a modulated
input replaces the backward pass; unlike PEPITA, the modulation is the network's own end-to-end
linear map, :math:`F = W_L \cdots W_1` (``(C, d)``, recomputed at every step), taken backwards:

.. math::
    x_{\rm mod} = x - e\,F, \qquad
    ΔW_l = (h_l - h_l^{\rm mod})^\top h_{l-1} / N \;(l < L), \qquad
    ΔW_L = e^\top h_{L-1} / N,

with :math:`e = \operatorname{softmax}(z) - Y` the output error (in general :math:`N\,∂L/∂z`), rows
as samples, and :math:`h_l^{\rm mod}` the activities of the modulated pass. Why it works: in a
*linear* network whose layers have orthonormal rows (:math:`W_k W_k^\top = I`),
:math:`h_l - h_l^{\rm mod} = e F (W_l\cdots W_1)^\top = e\,W_L \cdots W_{l+1} = δ_l`, the error
backprop would deliver — so the update *is* the backprop gradient, to rounding (tested). The
nonlinear rule keeps the same updates and keeps the layers orthogonal by projecting every weight
back after each optimizer step with Björck's iteration (Björck & Bowie 1971, "An iterative
algorithm for computing the best estimate of an orthogonal matrix", SIAM J. Numer. Anal. 8(2)):

.. math::
    Q_{k+1} = Q_k \left(\tfrac32 I - \tfrac12 Q_k^\top Q_k\right),

which sends every singular value :math:`σ \in (0, \sqrt 3)` to 1 (quadratically near 1) and so
converges to the orthogonal polar factor :math:`UV^\top` of :math:`Q_0 = UΣV^\top`.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.checks import check_array, check_float, check_int
from ..core.losses import get_loss
from ._layerwise import SeededRule, parse_blocks, run_pre
from .base import Rule, register

__all__ = ["FOTON", "bjorck_orthonormalise", "polar_factor"]


def _gram(w):
    """``(A, G, tall)``: ``A`` = ``w`` (tall) or ``wᵀ`` (wide), scaled when needed so that every
    singular value is below √2.5 (inside Björck's basin (0, √3)), and ``G = AᵀA``."""
    tall = w.shape[0] >= w.shape[1]
    a = w.copy() if tall else w.T.copy()
    g = a.T @ a
    bound = float(np.abs(g).sum(axis=0).max())       # ‖AᵀA‖₁ ≥ σ_max(A)², one GEMM, no SVD
    if bound > 2.5:                                  # near-orthogonal weights are left unscaled
        a /= a.dtype.type(math.sqrt(bound))
        g /= g.dtype.type(bound)
    return a, g, tall


def bjorck_orthonormalise(w, iters: int = 5, tol: float | None = None):
    r"""Björck & Bowie's order-1 iteration :math:`Q \leftarrow Q(\frac32 I - \frac12 Q^\top Q)`.

    Works on the taller orientation, so a ``(m, k)`` matrix ends with orthonormal columns when
    ``m ≥ k`` and orthonormal rows when ``m < k`` (semi-orthogonal). When the Gershgorin-type bound
    :math:`\|Q^\top Q\|_1 \ge σ_{\max}^2` exceeds 2.5, ``w`` is first scaled by its square root so
    that every singular value lies in (0, 1], where the iteration converges; a nearly orthogonal
    ``w`` (the case after an optimizer step) is not scaled, so two or three iterations finish it.
    The iteration stops after ``iters`` steps or once :math:`\max|Q^\top Q - I| <` ``tol``
    (default 100 machine epsilons of ``w``'s dtype, in which it computes).

    >>> import numpy as np
    >>> q = bjorck_orthonormalise(np.array([[2.0, 0.1], [0.0, 1.0]]), iters=30)
    >>> bool(np.allclose(q.T @ q, np.eye(2)))
    True
    """
    if not isinstance(w, np.ndarray) or w.ndim != 2 or w.dtype.kind != "f":
        raise TypeError(f"w must be a 2-D float array, got {getattr(w, 'shape', type(w).__name__)}")
    check_int(iters, "iters", low=0)
    tol = 100 * float(np.finfo(w.dtype).eps) if tol is None else float(tol)
    a, g, tall = _gram(w)
    eye = np.eye(g.shape[0], dtype=g.dtype)
    for _ in range(int(iters)):
        if np.abs(g - eye).max() < tol:
            break
        a = a.dtype.type(1.5) * a - a.dtype.type(0.5) * (a @ g)
        g = a.T @ a
    return a if tall else a.T.copy()


def polar_factor(w):
    """The nearest (semi-)orthogonal matrix :math:`UV^\\top` of ``w = UΣVᵀ`` (thin SVD)."""
    u, _, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    return (u @ vt).astype(w.dtype)


@register("foton")
class FOTON(SeededRule, Rule):
    r"""FOTON (Caillon et al. 2025): a second forward pass on x − eF (F = W_L⋯W_1) replaces backprop.

    Models: ``[Flatten] (Linear, activation)* Linear`` — a chain of Linear layers with elementwise
    activations, ending in a Linear layer. Anything else (convolutions, norms, dropout, residual
    blocks, a final activation) raises ``ValueError``. Two documented extensions of the paper's
    square, bias-free setting, both as in the authors' code release:

    - *rectangular layers* are kept semi-orthogonal (orthonormal rows when ``out < in``, columns
      when ``out > in``). The update equals backprop's in the linear case whenever every layer but
      the last has ``out ≤ in`` (then :math:`W_k W_k^\top = I`); a widening layer makes it an
      approximation, as the nonlinearity does anyway.
    - *biases* learn from the same signal, :math:`Δb_l = \overline{h_l - h_l^{\rm mod}}` and
      :math:`Δb_L = \bar e`; they cancel in :math:`h_l - h_l^{\rm mod}`, so the linear-case
      equivalence with backprop holds with biases too (tested).

    Updates. :meth:`grads` returns the FOTON directions and changes nothing; the step is the
    rule contract's (:meth:`Rule.step <nograd.rules.base.Rule.step>`): the optimizer applies
    them, then the :meth:`after_step` hook re-orthonormalises every weight with ``bjorck_iters``
    Björck iterations (every ``bjorck_every`` steps). :meth:`prepare` — run by ``fit`` before
    training, and by the first step — replaces the initial weights by their polar factors
    (``orthogonal_init=True``), once per rule, so training starts orthogonal as in the paper.

    Parameters
    ----------
    loss, **loss_options : the loss whose output error drives the update (default softmax
        cross-entropy, :math:`e = \operatorname{softmax}(Tz) - Y`).
    temperature : :math:`T`, the authors' ``ce_T``: the loss reads :math:`Tz`. An orthogonal
        network cannot grow its logits (:math:`\|z\| \le \|x\|` with 1-Lipschitz activations), so
        a temperature above 1 lets the softmax become confident; the update uses
        :math:`e = N\,∂L/∂(Tz)` (at :math:`T = 1` exactly backprop's error). Default 10; the
        authors' default is 1 (the measurements behind the choice:
        ``docs/notes/performance-notes.md``).
    bjorck_iters, bjorck_every : the projection after the optimizer step (the authors use 5, 1).
    orthogonal_init : start from the polar factors of the initial weights.
    seed : int (FOTON itself draws no random numbers; kept for a uniform rule interface).
    """

    #: 40 epochs, twice backprop's 20 (why: ``docs/notes/performance-notes.md``)
    defaults = {"optimizer": "adam", "lr": 1e-3, "epochs": 40, "batch_size": 64}

    def __init__(self, loss="cross-entropy", *, temperature=10.0, bjorck_iters=5, bjorck_every=1,
                 orthogonal_init=True, seed=0, **loss_options):
        self.loss = get_loss(loss)
        self.temperature = check_float(temperature, "temperature", low=0, low_open=True)
        self.loss_options = loss_options
        self.bjorck_iters = check_int(bjorck_iters, "bjorck_iters", low=0)
        self.bjorck_every = check_int(bjorck_every, "bjorck_every", low=1)
        self.orthogonal_init = bool(orthogonal_init)
        self._init_seed(seed)
        self._steps, self._started = 0, False

    # ------------------------------------------------------------------ the model
    def _net(self, model):
        pre, blocks = parse_blocks(model, "FOTON")
        if blocks[-1].acts:
            raise ValueError(f"FOTON needs a model that ends with a Linear layer (the output "
                             f"z = h_(L-1) W_Lᵀ whose error e drives the update); it ends with "
                             f"{type(blocks[-1].acts[-1][1]).__name__}")
        return pre, blocks

    def check_model(self, model):
        self._net(model)

    @staticmethod
    def end_to_end(blocks):
        """:math:`F = W_L \\cdots W_1`, shape ``(C, d)``."""
        f = blocks[0].linear.params["weight"]
        for b in blocks[1:]:
            f = b.linear.params["weight"] @ f
        return f

    # ------------------------------------------------------------------ the rule
    def grads(self, model, x, y, *, rng=None):
        """FOTON's descent directions keyed like ``model.params``; ``info`` has ``loss``,
        ``output`` (the unmodulated pass) and ``modulation`` (``‖eF‖/‖x‖``, batch mean)."""
        pre, blocks = self._net(model)
        check_array(x, "x", min_ndim=2)
        x0 = run_pre(pre, x)
        n = len(x0)
        hs, caches = [x0], []
        for b in blocks:
            h, c = b.forward(hs[-1], train=True)
            hs.append(h)
            caches.append(c)
        out = hs[-1]
        t = out.dtype.type(self.temperature)
        value, dout = self.loss(out * t if self.temperature != 1 else out, y, **self.loss_options)
        e = dout.reshape(n, -1) * dout.dtype.type(n)                    # e = N ∂L/∂(Tz)
        ef = e @ self.end_to_end(blocks).astype(e.dtype, copy=False)
        h_mod = x0 - ef.astype(x0.dtype, copy=False)
        grads = {}
        for i, b in enumerate(blocks[:-1]):
            h_mod, _ = b.forward(h_mod, train=True)
            dh = (hs[i + 1] - h_mod) / hs[i + 1].dtype.type(n)
            # the Linear's weight map: ΔW = dhᵀ h_(l-1), Δb = Σ_n dh (activation not applied)
            _, g = b.linear.backward(caches[i][0], dh, need_dx=False)
            grads.update({b.prefix + k: v for k, v in g.items()})
        _, g = blocks[-1].linear.backward(caches[-1][0], dout.reshape(out.shape), need_dx=False)
        grads.update({blocks[-1].prefix + k: v for k, v in g.items()})
        ratio = float(np.mean(np.linalg.norm(ef, axis=1) / (np.linalg.norm(x0, axis=1) + 1e-12)))
        return {k: grads[k] for k in model.params}, {"loss": value, "output": out,
                                                      "modulation": ratio}

    def orthonormalise(self, model, *, exact=False):
        """Project every Linear weight of ``model`` (in place) onto the (semi-)orthogonal matrices:
        by ``bjorck_iters`` Björck iterations, or exactly by the SVD polar factor."""
        _, blocks = self._net(model)
        for b in blocks:
            w = b.linear.params["weight"]
            w[...] = polar_factor(w) if exact else bjorck_orthonormalise(w, self.bjorck_iters)

    def prepare(self, model, x):
        """The orthogonal start: the first call (per rule) replaces every weight by its polar
        factor when ``orthogonal_init``; later calls do nothing."""
        if not self._started:
            self._net(model)
            if self.orthogonal_init:
                self.orthonormalise(model, exact=True)
            self._started = True

    def after_step(self, model, optimizer):
        """After every optimizer step: Björck's projection, every ``bjorck_every`` steps."""
        self._steps += 1
        if self._steps % self.bjorck_every == 0:
            self.orthonormalise(model)

    def __repr__(self):
        name = getattr(self.loss, "__name__", repr(self.loss))
        return (f"FOTON(loss={name}, temperature={self.temperature}, "
                f"bjorck_iters={self.bjorck_iters}, bjorck_every={self.bjorck_every})")
