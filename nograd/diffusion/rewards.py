r"""Differentiable rewards of generated images, each with its own gradient.

AlignProp (Prabhudesai et al. 2023) needs a reward :math:`r(x_0)` that is differentiable in the
image (the LAION aesthetic predictor, HPSv2, PickScore, a JPEG-compressibility surrogate). At the
scale of 8×8 digits two stand-ins play those roles:

- :class:`ClassifierReward` — :math:`r(x) = \log p_\phi(c \mid x)` under a nograd classifier trained
  on the same digits: a learned scorer, like the aesthetic predictor (a small head trained on human
  ratings of real images), with the same weakness — an optimiser can find images it over-rates.
- :class:`SymmetryReward` — :math:`r(x) = -\frac{1}{P}\sum (x - \mathrm{flip}(x))^2`, the
  left–right mirror error: a hand-written score of a visual property independent of the class,
  like "aesthetics" (a preference over *how* an image looks, not *what* it shows), which the data
  does not favour by itself.

Every reward maps a batch ``x (N, C, H, W)`` in the sampler's range ``[-1, 1]`` to ``r (N,)`` and
``value_and_grad(x)`` returns ``(r, g)`` with ``g[n] = ∂r_n/∂x_n``.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_int
from ..core.module import Module


class Reward:
    """Base: ``value_and_grad(x) -> (r (N,), dr/dx (N, ...))``; calling gives ``r`` alone."""

    def value_and_grad(self, x):
        raise NotImplementedError

    def __call__(self, x):
        return self.value_and_grad(x)[0]


class ClassifierReward(Reward):
    r"""``r(x) = log softmax(f((x + 1)/2))_c``: the log-probability of class ``target``.

    ``classifier`` is any nograd module mapping images in ``[0, 1]`` (``(N, 1, 8, 8)``) to logits
    ``(N, K)``. With :math:`p = \mathrm{softmax}(z)`, :math:`\partial r/\partial z = e_c - p`, sent
    back through the classifier's ``backward`` and halved for the map :math:`x \mapsto (x+1)/2`.
    """

    def __init__(self, classifier: Module, target: int):
        if not isinstance(classifier, Module):
            raise TypeError(f"classifier must be a nograd Module, got {type(classifier).__name__}")
        self.classifier = classifier
        self.target = check_int(target, "target", low=0)

    def __repr__(self):
        return f"ClassifierReward(target={self.target})"

    def value_and_grad(self, x):
        check_array(x, "x", ndim=4)
        z, cache = self.classifier.forward((x + 1) / 2)
        if self.target >= z.shape[1]:
            raise ValueError(f"target must be below the classifier's {z.shape[1]} classes, got {self.target}")
        z64 = z.astype(np.float64)
        m = z64.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(z64 - m).sum(axis=1))
        r = z64[:, self.target] - lse
        dz = -np.exp(z64 - lse[:, None])
        dz[:, self.target] += 1
        dx, _ = self.classifier.backward(cache, dz.astype(z.dtype))
        return r, (0.5 * dx).astype(x.dtype)


class SymmetryReward(Reward):
    r"""``r(x) = -mean((x - flip(x))²)`` over each image's ``P`` entries (flip: the last axis).

    With :math:`F` the (symmetric, involutive) mirror, :math:`d = x - Fx` and :math:`Fd = -d`, so
    :math:`\partial r/\partial x = -\frac{2}{P}(I - F)^\top d = -\frac{4}{P} d`.
    """

    def __repr__(self):
        return "SymmetryReward()"

    def value_and_grad(self, x):
        check_array(x, "x", min_ndim=2)
        d = x - x[..., ::-1]
        p = d[0].size
        r = -np.mean(d.reshape(len(x), -1).astype(np.float64) ** 2, axis=1)
        return r, (-4.0 / p) * d
