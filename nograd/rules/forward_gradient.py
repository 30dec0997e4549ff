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
- ``"activation"``: activity perturbation (Ren et al. 2023, "Scaling Forward Gradient With Local
  Losses", ICLR, §2, the activity-perturbed forward gradient). Each sample n gets its own random
  :math:`u_n` at the output :math:`z` of each top-level layer with parameters (the pre-activation
  of a Linear layer); one JVP gives every sample's :math:`s_n = \langle \partial L/\partial z_n,
  u_n\rangle`, so :math:`\hat{\bar z}_n = s_n u_n` (``"unbiased"``: :math:`\mathbb E[u u^\top] = I`) or
  :math:`s_n u_n/\|u_n\|^2` (``"projection"``) estimates the cotangent at :math:`z`, and the layer's
  own parameter VJP turns it into the update — :math:`\hat{\bar W} = \sum_n \hat{\bar z}_n x_n^\top`
  for a Linear layer (Ren et al.'s :math:`g_a(w_{ij}) = x_i \sum_k (\nabla_{z_k} L\, u_k)\, u_j`,
  per example). Never the chain through the network. With several such layers in one block the
  block's perturbation is their concatenation (one JVP per block, :math:`\|u_n\|^2` over all).
- local guesses: :class:`~nograd.rules.forward_gradient_local.ForwardGradientLocal` (Fournier et
  al. 2023, §3.2; in :mod:`nograd.rules.forward_gradient_local`, re-exported here).

Targets: ``"global"`` — the end-to-end loss, by a JVP from the block to the model's output;
``"local"`` — block j's own auxiliary-head loss, by a JVP through block j and its head. Weight
guesses with the global target project all parameters at once; activation guesses and the local
target work block by block. Activation guesses are per-sample, so they assume that an output row
depends on its own input row only (no training-mode batch norm after the perturbed layer; see
:mod:`~nograd.rules.forward_gradient_local`).
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_positive
from ..core.losses import directional
from .base import register
from .forward_gradient_local import (ForwardGradientLocal, _Base, _coefficient, _draw,
                                     _keep_one_update, _names, _prefixed, _rowdot, _rows, _sweep)

__all__ = ["ForwardGradient", "ForwardGradientLocal", "forward_gradient"]


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


@register("forward-gradient")
class ForwardGradient(_Base):
    r"""Forward gradient with random guesses (Baydin et al. 2022; Ren et al. 2023; Fournier et al.
    2023, §3).

    ``guess="weight"``: ``g = mean over T tangents of (⟨∇L, v⟩ / ‖v‖²) v`` (or ``⟨∇L, v⟩ v`` with
    ``scaling="unbiased"``), with ⟨∇L, v⟩ from ``model.jvp`` and the loss's directional derivative.
    ``guess="activation"``: Ren et al.'s per-sample activity perturbation (module docstring).

    Parameters
    ----------
    loss, **loss_options : the training loss (a name or a callable returning (value, dpred)).
    guess : ``"weight"`` (v random over all parameters; no backward at all) or ``"activation"``
        (per sample, u random at each top-level layer's output, the estimated output cotangent
        pulled back by the layer's own VJP; needs a Sequential model).
    target : ``"global"`` (the end-to-end loss) or ``"local"`` (per block, the loss of the
        block's auxiliary head; see the module docstring). Weight guesses with the global target
        make one JVP of the whole model per tangent and one projection of all parameters;
        activation guesses and the local target work block by block (one JVP per block and
        tangent).
    tangents : T, the number of guesses averaged per step.
    distribution : ``"gaussian"`` or ``"rademacher"`` entries of v (or u).
    scaling : ``"projection"`` or ``"unbiased"`` (see the module docstring).
    blocks : indices of the top-level children where blocks 2, 3, … start; default one block per
        child with parameters (activations join the block before).
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

    def _block_guesses(self, j, s, rng):
        params = {k: a for name, m in s.groups[j] for k, a in _prefixed(m.params, name).items()}
        for _ in range(self.tangents):
            yield {k: _draw(rng, a.shape, a.dtype, self.distribution) for k, a in params.items()}

    def _block_estimate(self, j, s, rng):
        if self.guess == "weight":
            return super()._block_estimate(j, s, rng)
        group, record = s.groups[j], s.records[j]       # activity perturbation (Ren et al. §2)
        sites = [i for i, (_, m) in enumerate(group) if m.params]
        acc = {k: np.zeros_like(s.model.params[k]) for k in _names(group)}
        for _ in range(self.tangents):
            u = {i: _draw(rng, record[i][2].shape, record[i][2].dtype, self.distribution)
                 for i in sites}
            _, du = _sweep(group, s.inputs[j], s.seeds[j], u)     # u pushed to the block output
            c = self._per_sample(j, s, du)                        # s_n = Σ_i ⟨∂L/∂z_i,n, u_i,n⟩
            if self.scaling == "projection":
                sq = sum(_rowdot(u[i], u[i]) for i in sites)
                c = np.divide(c, sq, out=np.zeros_like(c), where=sq > 0)
            for i in sites:                                       # the layer's own VJP of c_n u_n
                name, m = group[i]
                g = m.backward(record[i][1], _rows(c, u[i]) * u[i], need_dx=False)[1]
                for k, a in g.items():
                    acc[f"{name}.{k}"] += a
        if self.tangents > 1:
            for a in acc.values():
                a /= a.dtype.type(self.tangents)
        return acc

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
