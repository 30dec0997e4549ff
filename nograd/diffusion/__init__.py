"""Diffusion models on the module contract: schedule and loss, samplers, rewards, AlignProp, DDPO.

- :mod:`.schedule` — the DDPM noise schedule and :math:`L_\\text{simple}` (Ho et al. 2020);
- :mod:`.samplers` — DDIM (Song et al. 2021) and DDPM ancestral sampling as linear steps;
- :mod:`.alignprop` — reward backpropagation through the sampler with checkpointing and randomized
  truncation (Prabhudesai et al. 2023);
- :mod:`.ddpo` — the policy-gradient baseline (Black et al. 2023);
- :mod:`.rewards` — differentiable rewards with their own backward;
- :mod:`.png` — a PNG writer for sample grids; :mod:`.pretrained` — the shipped digits model.

The U-Net itself is :class:`nograd.models.diffusion.UNet`; its LoRA adapters are in
:mod:`nograd.models.diffusion_lora`.
"""
from .alignprop import AlignProp, reward_gradient
from .ddpo import DDPO
from .png import encode_png, image_grid, write_png
from .samplers import DDIM, ddpm_sampler, sample_noise
from .rewards import ClassifierReward, Reward, SymmetryReward
from .schedule import NoiseSchedule, ddpm_loss

__all__ = ["NoiseSchedule", "ddpm_loss", "DDIM", "ddpm_sampler", "sample_noise", "encode_png",
           "image_grid", "write_png", "AlignProp", "reward_gradient", "DDPO", "Reward", "ClassifierReward",
           "SymmetryReward"]
