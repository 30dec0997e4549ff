r"""AlignProp: fine-tune a diffusion model by backpropagating a reward through its sampler.

Prabhudesai, Goyal, Pathak & Fragkiadaki 2023, "Aligning Text-to-Image Diffusion Models with
Reward Backpropagation" (arXiv 2310.03739). Sample :math:`x_T \to \dots \to x_0` with DDIM
(η = 0), score the final image with a differentiable reward :math:`r(x_0)`, and ascend
:math:`J(\theta) = E_{x_T}[r(x_0)]` by backpropagating through every sampler update and denoiser
call into LoRA adapters of the U-Net only. Two devices make it affordable (its method section):

- **gradient checkpointing** of each denoiser call: the forward pass keeps only each call's
  *input* :math:`x_t`; the backward pass runs that call's forward again to rebuild its cache just
  before its backward. Memory holds ``K`` inputs plus one call's activations, instead of ``K``
  calls' activations;
- **randomized truncated backpropagation**: the gradient flows through the last ``K`` steps only
  (the earlier denoiser outputs are treated as constants), with ``K`` drawn afresh every update;
  the paper draws ``K ~ Uniform(0, 50)`` for its 50 steps (and its code draws the truncation
  step uniformly over the chain). Here ``K ~ U{k_min, ..., k_max}``, default ``U{1, ..., S}`` for
  ``S`` sampler steps (``K = 0`` would give no gradient).

Per step ``i`` (of ``S``) the sampler computes :math:`x_{i+1} = a_i x_i + b_i \epsilon_\theta(x_i, t_i)`
(:class:`~nograd.diffusion.samplers.DDIM`), so with :math:`\bar x_S = \nabla_{x_0} J`:

.. math::
    \bar\theta \mathrel{+}= J_\theta\epsilon(x_i)^\top (b_i \bar x_{i+1}), \qquad
    \bar x_i = a_i \bar x_{i+1} + J_x\epsilon(x_i)^\top (b_i \bar x_{i+1}),
    \qquad i = S-1, \dots, S-K.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_array, check_int
from ..core.module import Module
from ..models.diffusion_lora import lora_params
from .rewards import Reward
from .samplers import DDIM


def default_keys(model):
    """The names of ``model``'s LoRA arrays, or of all its arrays when it has no adapter."""
    keys = list(lora_params(model))
    return keys or list(model.params)


def _ts(sampler, i, n):
    return np.full(n, sampler.ts[i])


def reward_gradient(model: Module, sampler: DDIM, reward: Reward, x, *, K=None, checkpoint=True,
                    labels=None, keys=None, rng=None):
    r"""Sample from ``x`` and return ``(r, x0, grads)``: the rewards ``r (N,)``, the samples and
    the gradient of the **mean** reward with respect to the arrays ``keys`` of ``model``.

    Parameters
    ----------
    model : the noise predictor (a :class:`~nograd.models.diffusion.UNet`, usually with LoRA).
    sampler : a :class:`~nograd.diffusion.samplers.DDIM` (η > 0 works too: its noise is drawn from
        ``rng`` in the forward pass and held fixed, a reparameterised gradient).
    reward : a :class:`~nograd.diffusion.rewards.Reward`.
    x : the starting noise ``(N, C, H, W)``.
    K : backpropagate through the last ``K`` of the ``S`` steps (``None``: all of them).
    checkpoint : keep only each denoiser call's input and recompute its forward in the backward
        pass (``False``: keep every call's cache, as plain backprop through the chain would).
    keys : names in ``model.params`` to return gradients for (default: every array).
    """
    check_array(x, "x", ndim=4)
    S = sampler.steps
    K = S if K is None else check_int(K, "K", low=1, high=S)
    keys = list(model.params) if keys is None else list(keys)
    unknown = [k for k in keys if k not in model.params]
    if unknown:
        raise ValueError(f"keys {unknown} are not arrays of the model")
    rng = as_rng(rng)
    n, first = x.shape[0], S - K
    saved = {}
    for i in range(S):
        t = _ts(sampler, i, n)
        if i >= first and not checkpoint:
            eps, saved[i] = model.forward(x, t=t, labels=labels)
        else:
            if i >= first:
                saved[i] = x
            eps = model(x, t=t, labels=labels)
        z = rng.standard_normal(x.shape).astype(x.dtype) if sampler.sigma[i] > 0 else None
        x = sampler.step(x, eps, i, z)
    r, g = reward.value_and_grad(x)
    dx = g / x.dtype.type(n)
    grads = {k: np.zeros_like(model.params[k]) for k in keys}
    dt = x.dtype.type
    for i in range(S - 1, first - 1, -1):
        item = saved.pop(i)
        cache = model.forward(item, t=_ts(sampler, i, n), labels=labels)[1] if checkpoint else item
        dxin, gi = model.backward(cache, dt(sampler.b[i]) * dx, need_dx=i > first)
        del cache, item
        for k in keys:
            grads[k] += gi[k]
        if i > first:
            dx = dt(sampler.a[i]) * dx + dxin
    return r, x, grads


class AlignProp:
    """Reward fine-tuning by backpropagation through the sampler (see the module docstring).

    Parameters
    ----------
    sampler : the :class:`~nograd.diffusion.samplers.DDIM` sampler (the paper: η = 0).
    reward : the differentiable reward to maximise.
    k_min, k_max : the truncation ``K ~ U{k_min..k_max}`` drawn at every step (default 1 and
        ``S``); ``k_min = k_max = S`` is full backpropagation, ``= 1`` the last step only.
    checkpoint : gradient checkpointing of the denoiser calls (default True).
    """

    def __init__(self, sampler: DDIM, reward: Reward, *, k_min: int = 1, k_max=None, checkpoint: bool = True):
        if not isinstance(sampler, DDIM):
            raise TypeError(f"sampler must be a DDIM sampler, got {type(sampler).__name__}")
        if not isinstance(reward, Reward):
            raise TypeError(f"reward must be a nograd.diffusion.rewards.Reward, got {type(reward).__name__}")
        S = sampler.steps
        self.k_max = S if k_max is None else check_int(k_max, "k_max", low=1, high=S)
        self.k_min = check_int(k_min, "k_min", low=1, high=self.k_max)
        self.sampler, self.reward, self.checkpoint = sampler, reward, bool(checkpoint)

    def __repr__(self):
        return (f"AlignProp({self.sampler!r}, {self.reward!r}, K~U{{{self.k_min}..{self.k_max}}}, "
                f"checkpoint={self.checkpoint})")

    def draw_k(self, rng) -> int:
        """One truncation length ``K ~ U{k_min, ..., k_max}``."""
        return int(as_rng(rng).integers(self.k_min, self.k_max + 1))

    def step(self, model: Module, optimizer, n: int, shape, *, rng=None, labels=None, keys=None) -> dict:
        """One update: draw ``n`` noises of ``shape`` (one sample's, e.g. ``(1, 8, 8)``) and ``K``,
        sample, backpropagate the mean reward into the arrays ``keys`` (default: the model's LoRA
        arrays, :func:`~nograd.models.diffusion_lora.lora_params`) and step ``optimizer`` (built over
        those arrays) with the negated gradient: ascent on the reward.

        Returns ``{"reward": mean r, "rewards": r, "K": K, "queries": n, "samples": x0}``.
        """
        rng = as_rng(rng)
        n = check_int(n, "n", low=1)
        keys = default_keys(model) if keys is None else keys
        x = rng.standard_normal((n,) + tuple(shape)).astype(model.dtype or np.float32)
        K = self.draw_k(rng)
        r, x0, g = reward_gradient(model, self.sampler, self.reward, x, K=K, checkpoint=self.checkpoint,
                                   labels=labels, keys=keys, rng=rng)
        optimizer.step({k: -v for k, v in g.items()})
        return {"reward": float(np.mean(r)), "rewards": r, "K": K, "queries": n, "samples": x0}
