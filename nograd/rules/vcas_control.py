r"""The activation-sampled passes of VCAS's variance measurement, computed from the exact pass
(Wang et al. 2024, "Efficient Backpropagation with Variance-Controlled Adaptive Sampling", ICLR,
Algorithm 1: :math:`V_{act} = \mathbb E\,\lVert \bar W_{act} - \bar W\rVert^2` over ``M``
activation-sampled passes, and the leverage scores of the same passes for :math:`V_{w,l}`).

An activation sampler only multiplies each sample's cotangent by a number: :math:`1/p_n` if
sample ``n`` is kept, 0 if it is dropped. The backward pass is linear in the cotangent and acts
on each sample separately (VCAS refuses layers with batch statistics), so below the samplers a
sampled pass's cotangent of sample ``n`` anywhere in the network is :math:`c_n` times the exact
one, with :math:`c_n` the product of the factors the samplers above gave it. Hence, for a
sampled dense layer with exact output cotangent rows :math:`g_t` and input rows :math:`x_t`,

.. math::
    \bar W_{act} - \bar W = \sum_t (c_{n(t)} - 1)\, g_t x_t^\top, \qquad
    a^{act}_t = c_{n(t)}\,\lVert g_t\rVert\,\lVert x_t\rVert,

and the samplers' norms are :math:`c_n` times the exact pass's per-sample norms. The exact pass
(``Pass(..., parts=M)``) keeps :math:`g_t, x_t` of every sampled dense layer and the norms;
:func:`act_pass` then draws the samplers from the top down exactly as
:meth:`~nograd.rules.vcas_walk.Pass.sample` does (the same probabilities and the same random
draws, one per alive sample) and needs one product per dense layer, over the rows of the samples
with :math:`c_n \ne 1` — or, when fewer, of the kept samples, :math:`\sum_t c_{n(t)} g_t x_t^\top
- \bar W` — instead of a backward pass through every block. The estimator is
the one of the paper (the same random variable, to rounding).
"""
from __future__ import annotations

import numpy as np

from .vcas_sampling import keep_mask, water_fill

__all__ = ["act_pass"]


def _rows(samples, per):
    """The rows of ``samples`` in a ``(N·per, ·)`` reshape."""
    return (samples[:, None] * per + np.arange(per)).ravel()


def act_pass(exact, samplers, owner, act_ratio, n, rng):
    r"""One activation-sampled pass from an exact pass; returns ``(dev, scores, flops)``.

    ``exact``: a :class:`~nograd.rules.vcas_walk.Pass` run in ``"exact"`` mode with ``parts``
    (its ``saved``, ``norms``, ``scores``, ``grads``); ``samplers``: the samplers' names bottom to
    top; ``owner``: dense layer name → the sampler of its block; ``act_ratio``: sampler →
    :math:`\rho_l`; ``n``: the batch size; ``rng``: the Generator of the draws. ``dev`` is
    :math:`\sum_l \lVert \bar W_{act,l} - \bar W_l\rVert^2` over the dense layers of ``owner``,
    ``scores`` the leverage scores of each one's alive rows, ``flops`` dense name →
    ``[done, 0, 0]`` (the product done).
    """
    c = np.ones(n)
    dev, scores, flops = 0.0, {}, {}
    below = {s: [d for d, o in owner.items() if o == s] for s in samplers}
    for j in range(len(samplers) - 1, -1, -1):
        name = samplers[j]
        upper = samplers[j + 1] if j + 1 < len(samplers) else None
        rho = act_ratio[name]
        alive = np.flatnonzero(c > 0)
        k = max(1.0, n * rho)
        if (upper is None or rho < act_ratio[upper]) and k < len(alive):
            norms = c[alive] * exact.norms[name][alive]
            if k < np.count_nonzero(norms):
                p = water_fill(norms, k)
                kept = keep_mask(p, rng)
                c[alive[~kept]] = 0.0
                c[alive[kept]] *= 1.0 / p[kept]
                alive = alive[kept]
        for d in below[name]:
            g, x = exact.saved[d]
            per = g.shape[0] // n
            if len(alive) == 0:
                w = exact.grads[d + ".weight"]
                dev += float(np.sum(w.astype(np.float64) ** 2))      # the pass stopped above
                continue
            moved = np.flatnonzero(c != 1.0)
            if len(alive) < len(moved):     # fewer kept than moved: W_act on them, minus W
                rows, fac = _rows(alive, per), c[alive]
            else:                           # the moved samples' rows, (c - 1)-weighted
                rows, fac = _rows(moved, per), c[moved] - 1.0
            gm = np.take(g, rows, axis=0)
            gm *= np.repeat(fac, per).astype(g.dtype)[:, None]
            diff = gm.T @ np.take(x, rows, axis=0)
            if len(alive) < len(moved):
                diff = diff - exact.grads[d + ".weight"]
            dev += float(np.sum(diff.astype(np.float64) ** 2))
            scores[d] = exact.scores[d][_rows(alive, per)] * np.repeat(c[alive], per)
            flops[d] = [2.0 * g.shape[1] * x.shape[1] * len(rows), 0.0, 0.0]
    return dev, scores, flops
