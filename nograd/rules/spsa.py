r"""SPSA: simultaneous-perturbation stochastic approximation, a gradient estimate from two
objective values along a random ±1 direction (J. C. Spall (1992), "Multivariate stochastic
approximation using a simultaneous perturbation gradient approximation", IEEE Trans. Automatic
Control 37(3), eq. 2.2).

The estimate is returned as an ordinary gradient dict, so any optimizer applies it; the objectives
and the parameter choice are shared with MeZO (:mod:`nograd.rules.zo_common`), and
:mod:`nograd.rules.zeroth_order` states the central-difference estimate both rules use.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

from ..core.checks import NonFiniteError, as_rng, check_positive
from ..losses import get_loss
from .base import Rule, register
from .zo_common import (_check_batch, _check_eps, _check_flag, _evaluate, _move_buffers, _put_back,
                        _resolve_objective, select_params)

__all__ = ["SPSA"]


@register("spsa")
class SPSA(Rule):
    r"""Simultaneous-perturbation stochastic approximation with central differences (Spall 1992).

    For :math:`n` perturbations :math:`\Delta_j` (Rademacher ±1 entries by default, as Spall
    prescribes; ``distribution="gaussian"`` gives Gaussian smoothing, where :math:`\Delta` stands in
    for :math:`\Delta^{-1}`):

    .. math::

        \hat g = \frac1n \sum_{j=1}^n
            \frac{\mathcal L(\theta + \varepsilon\Delta_j)
                  - \mathcal L(\theta - \varepsilon\Delta_j)}
                 {2\varepsilon}\, \Delta_j^{-1},

    with :math:`\Delta^{-1}` elementwise (:math:`= \Delta` for ±1 entries). Returned as a gradient
    dict for the chosen parameters; the optimizer applies it. The perturbed arrays are restored
    from a copy, bit for bit, even when the objective raises.

    The objective runs in evaluation mode, so the probes never move a batch norm's running
    statistics; as in :class:`~nograd.rules.mezo.MeZO` (see *Running statistics* there), a model
    with buffers gets one training-mode pass at the unperturbed θ per call, before the probes,
    that moves them as a backprop step's forward pass would (dropout masks from ``rng``): one
    extra forward pass, and none for a model without buffers; ``update_buffers=False`` freezes
    them. They are put back if the call fails. A float ``x`` or ``y`` with NaN or inf and a ``y`` without one
    target per sample are refused before anything is perturbed.

    Parameters
    ----------
    loss, **loss_options : the loss of the default objective (evaluation mode).
    eps : the perturbation size :math:`\varepsilon`.
    n : perturbations averaged per step (2n objective evaluations).
    distribution : ``"rademacher"`` or ``"gaussian"``.
    objective : ``None`` (the loss), ``"zero-one"`` (error rate), a loss name, or a callable
        ``(model, x, y) -> float | (float, output)`` — minimised, need not be differentiable.
    params : which parameters to train (see :func:`select_params`); the rest get no gradient.
        Kept as ``param_spec`` (``rule.params`` is the rule contract's dict of the rule's own
        arrays: none here).
    update_buffers : move the model's buffers (running statistics) once per call; see above.
    seed : seed of the rule's own generator, used when ``grads`` gets no ``rng``.
    """

    defaults = {"optimizer": "sgd", "lr": 1e-3, "epochs": 100, "batch_size": 64}

    def __init__(self, loss="cross-entropy", *, eps=1e-3, n=1, distribution="rademacher",
                 objective=None, params=None, update_buffers=True, seed=0, **loss_options):
        self.eps = _check_eps(eps)
        self.n = int(check_positive(n, "n", integer=True))
        if distribution not in ("rademacher", "gaussian"):
            raise ValueError(f"distribution must be 'rademacher' or 'gaussian', "
                             f"got {distribution!r}")
        self.distribution = distribution
        self.loss = get_loss(loss)
        self.loss_options = loss_options
        self.objective = _resolve_objective(objective, loss, loss_options)
        self.param_spec = params
        self.update_buffers = _check_flag(update_buffers, "update_buffers")
        self._rng = as_rng(seed, "seed")

    def check_model(self, model):
        select_params(model, self.param_spec, who="SPSA")

    def _draw(self, rng, shape, dtype):
        if self.distribution == "gaussian":
            return rng.standard_normal(shape, dtype=dtype)
        return (2 * rng.integers(0, 2, size=shape, dtype=np.int8) - 1).astype(dtype)

    def grads(self, model, x, y, *, rng=None):
        """``(estimate, info)``: the averaged central differences as a dict keyed like the chosen
        parameters (θ restored bit for bit), after the batch check and the buffers' one move."""
        rng = self._rng if rng is None else as_rng(rng)
        names = select_params(model, self.param_spec, who="SPSA")
        _check_batch(x, y, "SPSA")
        kept = _move_buffers(model, x, rng) if self.update_buffers else None
        try:
            return self._estimate(model, x, y, names, rng)
        except BaseException:
            _put_back(model, kept)
            raise

    def directions(self, model, x, y, names, rng):
        """Yield ``(delta, coef, loss, outputs)`` for each of the ``n`` directions drawn from
        ``rng``: the direction, the central difference :math:`(L(θ+εδ) - L(θ-εδ))/2ε`, the mean of
        the two objective values and the two outputs. θ is restored from a copy when the
        generator ends (exhausted, closed or raising). :meth:`grads` and the Ray workers of
        :func:`nograd.distributed.zo_data_parallel` both probe through it."""
        live = model.params
        saved = {k: live[k].copy() for k in names}
        try:
            for _ in range(self.n):
                delta = {k: self._draw(rng, live[k].shape, live[k].dtype) for k in names}
                values, outs = [], []
                for sign in (1.0, -1.0):
                    for k in names:
                        np.multiply(delta[k], live[k].dtype.type(sign * self.eps), out=live[k])
                        live[k] += saved[k]
                    value, out = _evaluate(self.objective, model, x, y, "SPSA")
                    values.append(value)
                    outs.append(out)
                coef = (values[0] - values[1]) / (2.0 * self.eps)
                if not math.isfinite(coef):
                    raise NonFiniteError(f"SPSA: the objective is not finite at the perturbed "
                                         f"parameters ({values[0]}, {values[1]})")
                yield delta, coef, 0.5 * (values[0] + values[1]), outs
        finally:
            for k in names:
                live[k][...] = saved[k]

    def _estimate(self, model, x, y, names, rng):
        """The central differences along n fresh directions; θ restored from a copy."""
        live = model.params
        est = {k: np.zeros_like(live[k]) for k in names}
        losses, output = [], None
        with contextlib.closing(self.directions(model, x, y, names, rng)) as probes:
            for j, (delta, coef, loss, outs) in enumerate(probes):
                if j == 0:
                    for out in outs:
                        if out is not None:
                            output = out if output is None else (output + out) / 2
                for k in names:
                    est[k] += live[k].dtype.type(coef / self.n) * delta[k]
                losses.append(loss)
        return est, {"loss": float(np.mean(losses)), "output": output}

    def __repr__(self):
        return (f"SPSA(eps={self.eps:g}, n={self.n}, distribution={self.distribution!r}, "
                f"update_buffers={self.update_buffers})")
