r"""Zeroth-order training: SPSA and MeZO estimate the gradient from objective values alone.

Both rules evaluate an *objective* at two points :math:`\theta \pm \varepsilon z` along a random
direction :math:`z` and use the central difference as the directional derivative:

.. math::

    \hat g = \frac{\mathcal L(\theta + \varepsilon z) - \mathcal L(\theta - \varepsilon z)}
                 {2\varepsilon}\, z
    \;\approx\; z z^\top \nabla\mathcal L(\theta), \qquad \mathbb E\,[z z^\top] = I .

No derivative of the model is used, only ``forward``; so the objective can be any callable
``objective(model, x, y) -> float`` (or ``-> (float, output)``), including non-differentiable
ones such as the error rate :func:`zero_one_loss` or ``1 - macro-F1``. The objective is minimised.

- :class:`SPSA` (Spall 1992; :mod:`nograd.rules.spsa`) returns the estimate as an ordinary
  gradient dict, so any optimizer applies it; it keeps a copy of the perturbed arrays and restores
  them exactly.
- :class:`MeZO` (Malladi et al. 2023; :mod:`nograd.rules.mezo`) never stores :math:`z`: it perturbs
  the parameters in place, regenerating :math:`z` from a seed each time, and — when the optimizer's
  step is plain SGD — applies the update the same way, so a step needs the memory of inference
  (see ``bench/memory_zo.py``).
- What both share — :func:`loss_objective`, :func:`zero_one_loss`, :func:`select_params` — is in
  :mod:`nograd.rules.zo_common`.

This module gathers the family: every name above imports from here.

References: J. C. Spall (1992), "Multivariate stochastic approximation using a simultaneous
perturbation gradient approximation", IEEE Trans. Automatic Control 37(3), eq. 2.2; S. Malladi,
T. Gao, E. Nichani, A. Damian, J. D. Lee, D. Chen, S. Arora (2023), "Fine-Tuning Language Models
with Just Forward Passes", NeurIPS, §2 (Definition 1: SPSA and n-SPSA; Definition 2: ZO-SGD) and
Algorithm 1 (MeZO).
"""
from .mezo import _CHUNK, MeZO  # noqa: F401  (_CHUNK: the z chunk size, read by the tests)
from .spsa import SPSA
from .zo_common import _no_decay_names, loss_objective, select_params, zero_one_loss  # noqa: F401

__all__ = ["SPSA", "MeZO", "loss_objective", "zero_one_loss", "select_params"]
