r"""DDIM (deterministic or stochastic) and DDPM ancestral sampling, written as linear steps.

Song, Meng & Ermon 2021 ("Denoising Diffusion Implicit Models", eq. 12): from :math:`x_t` and the
predicted noise :math:`\hat\epsilon = \epsilon_\theta(x_t, t)`, with :math:`s` the next (earlier)
step of the grid and :math:`\bar\alpha_{-1} = 1` after the last,

.. math::
    \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\hat\epsilon}{\sqrt{\bar\alpha_t}}, \qquad
    x_s = \sqrt{\bar\alpha_s}\,\hat x_0 + \sqrt{1 - \bar\alpha_s - \sigma^2}\,\hat\epsilon + \sigma z,

    \sigma = \eta \sqrt{\frac{1-\bar\alpha_s}{1-\bar\alpha_t}}\sqrt{1 - \frac{\bar\alpha_t}{\bar\alpha_s}}
    \quad \text{(eq. 16)}.

``η = 0`` is the deterministic DDIM sampler; ``η = 1`` on the full grid of ``T`` steps is DDPM's
ancestral sampler (Ho et al. 2020, Algorithm 2, with :math:`\sigma_t^2 = \tilde\beta_t`). Every step
is linear in :math:`(x_t, \hat\epsilon)`: :math:`x_s = a\,x_t + b\,\hat\epsilon + \sigma z` with
:math:`a = \sqrt{\bar\alpha_s/\bar\alpha_t}`, :math:`b = \sqrt{1-\bar\alpha_s-\sigma^2}
- \sqrt{\bar\alpha_s(1-\bar\alpha_t)/\bar\alpha_t}`, so its reverse mode is
:math:`\bar x_t = a\,\bar x_s + J_\epsilon^\top (b\,\bar x_s)` — which AlignProp chains through the
sampler (:mod:`nograd.diffusion.alignprop`).
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_array, check_float
from .schedule import NoiseSchedule


class DDIM:
    """A sampler over ``steps`` network calls of ``schedule`` with stochasticity ``eta``.

    Attributes: ``ts`` (the time indices visited, descending), and per step ``i`` the
    coefficients ``a[i], b[i], sigma[i]`` of :math:`x_{i+1} = a_i x_i + b_i \\hat\\epsilon_i + \\sigma_i z_i`
    (``x_0`` is the starting noise, ``x_S`` the sample), all float64 arrays of shape ``(S,)``.
    """

    def __init__(self, schedule: NoiseSchedule, steps: int = 50, eta: float = 0.0):
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        self.eta = check_float(eta, "eta", low=0)
        self.schedule = schedule
        self.ts = schedule.timesteps(steps)
        ab = schedule.alpha_bar[self.ts]
        ab_prev = np.append(schedule.alpha_bar[self.ts[1:]], 1.0)
        sigma = self.eta * np.sqrt((1 - ab_prev) / (1 - ab)) * np.sqrt(1 - ab / ab_prev)
        self.a = np.sqrt(ab_prev / ab)
        self.b = np.sqrt(np.maximum(1 - ab_prev - sigma ** 2, 0)) - np.sqrt(ab_prev * (1 - ab) / ab)
        self.sigma = sigma

    @property
    def steps(self) -> int:
        return len(self.ts)

    def __repr__(self):
        return f"DDIM(steps={self.steps}, eta={self.eta:g})"

    def step(self, x, eps, i, noise=None):
        """``x_{i+1} = a_i x + b_i eps + sigma_i noise`` (``noise`` needed when ``sigma_i > 0``)."""
        dt = x.dtype.type
        out = dt(self.a[i]) * x + dt(self.b[i]) * eps
        if self.sigma[i] > 0:
            if noise is None:
                raise ValueError(f"noise is required at step {i} (eta = {self.eta:g} > 0)")
            out += dt(self.sigma[i]) * noise
        return out

    def sample(self, model, x, *, labels=None, rng=None, trajectory=False):
        """Run the chain from the noise ``x (N, C, H, W)`` (e.g. ``rng.standard_normal``); returns
        the sample, or ``(sample, [x_0, ..., x_S])`` with ``trajectory=True``. ``rng`` draws the
        noise of stochastic steps."""
        check_array(x, "x", ndim=4)
        rng = as_rng(rng)
        xs = [x]
        for i, t in enumerate(self.ts):
            eps = model(x, t=np.full(x.shape[0], t), labels=labels)
            z = rng.standard_normal(x.shape).astype(x.dtype) if self.sigma[i] > 0 else None
            x = self.step(x, eps, i, z)
            if trajectory:
                xs.append(x)
        return (x, xs) if trajectory else x


def ddpm_sampler(schedule: NoiseSchedule, steps=None) -> DDIM:
    """DDPM's ancestral sampler (Ho et al. 2020, Algorithm 2, :math:`\\sigma_t^2 = \\tilde\\beta_t`):
    DDIM with ``η = 1`` over all ``T`` steps (or over ``steps`` evenly spaced ones, the strided
    version Nichol & Dhariwal 2021 use)."""
    return DDIM(schedule, schedule.num_steps if steps is None else steps, eta=1.0)


def sample_noise(shape, *, rng=None, dtype=np.float32):
    """The starting point ``x_0 ~ N(0, I)`` of a chain, shape ``(N, C, H, W)``."""
    return as_rng(rng).standard_normal(tuple(shape)).astype(dtype)
