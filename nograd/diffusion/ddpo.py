r"""DDPO: the policy-gradient baseline of AlignProp — REINFORCE over the stochastic sampler.

Black, Janner, Du, Kostrikov & Levine 2023, "Training Diffusion Models with Reinforcement Learning"
(arXiv 2305.13301). Denoising is a multi-step decision process: each stochastic step
:math:`x_{i+1} \sim N(\mu_\theta(x_i), \sigma_i^2 I)` with :math:`\mu_\theta = a_i x_i + b_i
\epsilon_\theta(x_i, t_i)` (DDIM with η = 1, :class:`~nograd.diffusion.samplers.DDIM`) is an action
whose log-likelihood is known in closed form:

.. math::
    \log p_\theta(x_{i+1} \mid x_i) = -\frac{\|x_{i+1} - \mu_\theta(x_i)\|^2}{2\sigma_i^2} + c, \qquad
    \nabla_\theta \log p = J_\theta\epsilon^\top\Big(b_i \frac{x_{i+1} - \mu_\theta}{\sigma_i^2}\Big).

The reward of the final image only is known, so with advantages :math:`A_n = (r_n - \bar r)/s_r`
(rewards standardised over the batch; the paper normalises per prompt) DDPO_IS minimises
the clipped importance-sampled surrogate, averaged over samples and steps,

.. math::
    L = \frac{1}{N S'}\sum_{n,i} \max\big(-A_n \rho_{n,i},\ -A_n\,\mathrm{clip}(\rho_{n,i}, 1-\varepsilon, 1+\varepsilon)\big),
    \qquad \rho = \frac{p_\theta(x_{i+1} \mid x_i)}{p_{\theta_\text{old}}(x_{i+1} \mid x_i)},

over ``inner_epochs`` passes on one batch of trajectories; with one pass, :math:`\rho = 1` and the
gradient is DDPO_SF's, :math:`-\frac{1}{NS'}\sum A_n \nabla \log p`. Steps with
:math:`\sigma_i = 0` (the last step of the grid ends at :math:`\bar\alpha = 1`) are deterministic
and carry no likelihood; :math:`S'` counts the others.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_float, check_int
from ..core.module import Module
from .alignprop import default_keys
from .rewards import Reward
from .samplers import DDIM


class DDPO:
    """Policy-gradient fine-tuning of a diffusion model (see the module docstring).

    Parameters
    ----------
    sampler : a stochastic :class:`~nograd.diffusion.samplers.DDIM` (``eta > 0``; DDPO uses 1).
    reward : any :class:`~nograd.diffusion.rewards.Reward` (its gradient is not used).
    inner_epochs : gradient steps on each batch of trajectories (DDPO's default: 1).
    clip : the ratio clip ``ε`` (DDPO: 1e-4).
    """

    def __init__(self, sampler: DDIM, reward: Reward, *, inner_epochs: int = 1, clip: float = 1e-4):
        if not isinstance(sampler, DDIM):
            raise TypeError(f"sampler must be a DDIM sampler, got {type(sampler).__name__}")
        if not np.any(sampler.sigma > 0):
            raise ValueError("sampler must be stochastic (eta > 0): DDPO needs step likelihoods")
        if not isinstance(reward, Reward):
            raise TypeError(f"reward must be a nograd.diffusion.rewards.Reward, got {type(reward).__name__}")
        self.sampler, self.reward = sampler, reward
        self.inner_epochs = check_int(inner_epochs, "inner_epochs", low=1)
        self.clip = check_float(clip, "clip", low=0, low_open=True)

    def __repr__(self):
        return f"DDPO({self.sampler!r}, {self.reward!r}, inner_epochs={self.inner_epochs}, clip={self.clip:g})"

    def rollout(self, model, x, *, rng=None, labels=None):
        """Sample from ``x``: ``(states [x_0..x_S], old means [mu_0..mu_{S-1}])``."""
        rng = as_rng(rng)
        s = self.sampler
        xs, mus = [x], []
        for i in range(s.steps):
            eps = model(x, t=np.full(len(x), s.ts[i]), labels=labels)
            mu = x.dtype.type(s.a[i]) * x + x.dtype.type(s.b[i]) * eps
            z = rng.standard_normal(x.shape).astype(x.dtype) if s.sigma[i] > 0 else 0
            x = mu + x.dtype.type(s.sigma[i]) * z
            xs.append(x)
            mus.append(mu)
        return xs, mus

    def surrogate_grads(self, model, xs, mus, adv, *, labels=None, keys=None):
        """Gradient of the clipped surrogate ``L`` (module docstring) at the model's current arrays,
        for trajectories ``xs``, behaviour means ``mus`` and advantages ``adv (N,)``; returns
        ``(grads, mean clipped fraction)``."""
        s = self.sampler
        keys = default_keys(model) if keys is None else list(keys)
        grads = {k: np.zeros_like(model.params[k]) for k in keys}
        live = [i for i in range(s.steps) if s.sigma[i] > 0]
        n = len(adv)
        scale = 1.0 / (n * len(live))
        clipped = []
        for i in live:
            x, x_next = xs[i], xs[i + 1]
            eps, cache = model.forward(x, t=np.full(n, s.ts[i]), labels=labels)
            mu = x.dtype.type(s.a[i]) * x + x.dtype.type(s.b[i]) * eps
            var = s.sigma[i] ** 2
            axes = tuple(range(1, x.ndim))
            new = -np.sum((x_next - mu).astype(np.float64) ** 2, axis=axes) / (2 * var)
            old = -np.sum((x_next - mus[i]).astype(np.float64) ** 2, axis=axes) / (2 * var)
            ratio = np.exp(new - old)
            lo, hi = 1 - self.clip, 1 + self.clip
            active = -adv * ratio >= -adv * np.clip(ratio, lo, hi)        # the unclipped term is the max
            clipped.append(float(np.mean(~active)))
            dratio = np.where(active, -adv, 0.0) * scale                   # dL/dρ
            coef = dratio * ratio * s.b[i] / var                           # dL/dlogp · b / σ²
            deps = (coef.reshape((-1,) + (1,) * (x.ndim - 1)) * (x_next - mu)).astype(x.dtype)
            _, gi = model.backward(cache, deps, need_dx=False)
            for k in keys:
                grads[k] += gi[k]
        return grads, float(np.mean(clipped))

    def step(self, model: Module, optimizer, n: int, shape, *, rng=None, labels=None, keys=None) -> dict:
        """Roll out ``n`` samples, score them once (``n`` reward queries) and take ``inner_epochs``
        optimizer steps on the surrogate. Returns ``{"reward", "rewards", "queries", "samples",
        "clipped"}``."""
        rng = as_rng(rng)
        n = check_int(n, "n", low=2)
        x = rng.standard_normal((n,) + tuple(shape)).astype(model.dtype or np.float32)
        xs, mus = self.rollout(model, x, rng=rng, labels=labels)
        r = np.asarray(self.reward(xs[-1]), dtype=np.float64)
        adv = (r - r.mean()) / (r.std() + 1e-8)
        frac = 0.0
        for _ in range(self.inner_epochs):
            g, frac = self.surrogate_grads(model, xs, mus, adv, labels=labels, keys=keys)
            optimizer.step(g)
        return {"reward": float(np.mean(r)), "rewards": r, "queries": n, "samples": xs[-1], "clipped": frac}
