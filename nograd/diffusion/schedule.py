r"""The DDPM forward process, its training loss and the time grids the samplers walk.

Ho et al. 2020 ("Denoising Diffusion Probabilistic Models"): a variance schedule
:math:`\beta_1 \dots \beta_T` (linear from ``1e-4`` to ``0.02`` over ``T = 1000`` steps, §4),
:math:`\alpha_t = 1 - \beta_t`, :math:`\bar\alpha_t = \prod_{s \le t} \alpha_s`, and the noising
distribution in closed form (eq. 4)

.. math::
    x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon, \qquad \epsilon \sim N(0, I).

The network :math:`\epsilon_\theta(x_t, t)` is trained on the simplified objective (eq. 14)
:math:`L_\text{simple} = E_{t, x_0, \epsilon} \| \epsilon - \epsilon_\theta(x_t, t) \|^2`
(here the mean over pixels, so its scale does not depend on the image size). Steps are indexed
``0 .. T-1`` in code (``t = 0`` is the paper's :math:`t = 1`).
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_array, check_float, check_positive


class NoiseSchedule:
    """A DDPM variance schedule: ``betas``, ``alphas`` and ``alpha_bar`` of shape ``(T,)`` (float64).

    ``kind="linear"``: :math:`\\beta_t` evenly from ``beta_start`` to ``beta_end`` (Ho et al. §4);
    ``kind="cosine"``: :math:`\\bar\\alpha_t = f(t)/f(0)`, :math:`f(t) = \\cos^2(\\frac{t/T + s}{1 + s}
    \\frac{\\pi}{2})`, ``s = 0.008``, betas clipped at 0.999 (Nichol & Dhariwal 2021, eq. 17).
    """

    def __init__(self, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 kind: str = "linear"):
        check_positive(num_steps, "num_steps", integer=True)
        check_float(beta_start, "beta_start", low=0, high=1, low_open=True, high_open=True)
        check_float(beta_end, "beta_end", low=0, high=1, low_open=True, high_open=True)
        if kind == "linear":
            betas = np.linspace(beta_start, beta_end, num_steps)
        elif kind == "cosine":
            s = 0.008
            f = np.cos((np.arange(num_steps + 1) / num_steps + s) / (1 + s) * np.pi / 2) ** 2
            betas = np.minimum(1 - f[1:] / f[:-1], 0.999)
        else:
            raise ValueError(f"kind must be 'linear' or 'cosine', got {kind!r}")
        self.num_steps, self.kind = int(num_steps), kind
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bar = np.cumprod(self.alphas)

    def __repr__(self):
        return f"NoiseSchedule(num_steps={self.num_steps}, kind={self.kind!r})"

    def _t(self, t, n):
        t = np.asarray(t)
        if t.dtype.kind not in "iu":
            raise TypeError(f"t must hold integer time steps, got dtype {t.dtype}")
        t = np.broadcast_to(t, (n,)) if t.ndim == 0 else t
        if t.shape != (n,):
            raise ValueError(f"t must be a scalar or have shape ({n},), got {t.shape}")
        if t.min() < 0 or t.max() >= self.num_steps:
            raise ValueError(f"t must lie in [0, {self.num_steps - 1}], got {t.min()}..{t.max()}")
        return t

    def q_sample(self, x0, t, noise):
        """``x_t = √ᾱ_t x0 + √(1-ᾱ_t) noise`` (eq. 4); ``x0, noise (N, ...)``, ``t (N,)`` ints."""
        check_array(x0, "x0", min_ndim=2)
        check_array(noise, "noise", min_ndim=2)
        if noise.shape != x0.shape:
            raise ValueError(f"noise must have x0's shape {x0.shape}, got {noise.shape}")
        t = self._t(t, x0.shape[0])
        ab = self.alpha_bar[t].reshape((-1,) + (1,) * (x0.ndim - 1))
        return (np.sqrt(ab) * x0 + np.sqrt(1 - ab) * noise).astype(x0.dtype)

    def timesteps(self, steps: int) -> np.ndarray:
        """``steps`` time indices from ``T-1`` down to ``0``, evenly spaced (rounded): the grid a
        DDIM sampler with ``steps`` network calls visits (Song et al. 2021, the "uniform" choice of sub-sequence)."""
        check_positive(steps, "steps", integer=True)
        if steps > self.num_steps:
            raise ValueError(f"steps must be at most num_steps = {self.num_steps}, got {steps}")
        if steps == 1:
            return np.array([self.num_steps - 1])
        return np.round(np.linspace(self.num_steps - 1, 0, steps)).astype(np.int64)


def ddpm_loss(model, schedule: NoiseSchedule, x0, *, rng=None, labels=None):
    r"""One Monte Carlo estimate of :math:`L_\text{simple}` (Ho et al. eq. 14) and its gradients.

    Draws ``t ~ U{0..T-1}`` and ``ε ~ N(0, I)`` per sample, forms ``x_t`` (eq. 4) and returns
    ``(loss, grads)``: ``loss = mean((ε_θ(x_t, t) - ε)²)`` over all entries, ``grads`` its
    gradients with respect to ``model.params`` (from the model's ``backward`` with
    ``dy = 2(ε_θ - ε)/size``). ``x0 (N, C, H, W)`` in the model's range (``[-1, 1]`` for images).
    """
    check_array(x0, "x0", ndim=4)
    rng = as_rng(rng)
    n = x0.shape[0]
    t = rng.integers(0, schedule.num_steps, n)
    noise = rng.standard_normal(x0.shape).astype(x0.dtype)
    xt = schedule.q_sample(x0, t, noise)
    eps, cache = model.forward(xt, t=t, labels=labels, train=True, rng=rng)
    diff = eps - noise
    loss = float(np.mean(diff.astype(np.float64) ** 2))
    _, grads = model.backward(cache, (2.0 / diff.size) * diff, need_dx=False)
    return loss, grads
