"""Small synthetic classification sets, generated from an explicit seed."""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_positive


def spirals(n_per_class: int = 200, n_classes: int = 3, *, noise: float = 0.2, turns: float = 1.0,
            rng=None, dtype=np.float32):
    """Interleaved 2-D spirals, one arm per class (the classic CS231n toy problem).

    Returns ``X (n_per_class·n_classes, 2)`` and integer labels ``y``. Arm ``k`` is
    ``r (sin θ, cos θ)`` with ``r ∈ [0, 1]`` and ``θ = 2π(turns·r + k/n_classes) + noise·ε``.
    Not linearly separable: a linear model stays near chance, a small MLP reaches ~99%.
    """
    check_positive(n_per_class, "n_per_class", integer=True)
    check_positive(n_classes, "n_classes", integer=True)
    check_positive(noise, "noise", allow_zero=True)
    rng = as_rng(rng)
    r = np.tile(np.linspace(0.0, 1.0, n_per_class), n_classes)
    y = np.repeat(np.arange(n_classes), n_per_class)
    theta = 2 * np.pi * (turns * r + y / n_classes) + noise * rng.standard_normal(r.shape)
    X = np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)
    order = rng.permutation(len(y))
    return X[order].astype(dtype), y[order]


def two_moons(n_samples: int = 400, *, noise: float = 0.1, rng=None, dtype=np.float32):
    """Two interleaving half circles in 2-D, labels 0 and 1, with Gaussian noise of std ``noise``."""
    check_positive(n_samples, "n_samples", integer=True)
    check_positive(noise, "noise", allow_zero=True)
    rng = as_rng(rng)
    n0 = n_samples // 2
    n1 = n_samples - n0
    t0 = np.linspace(0, np.pi, n0)
    t1 = np.linspace(0, np.pi, n1)
    X = np.concatenate([np.stack([np.cos(t0), np.sin(t0)], 1),
                        np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], 1)])
    X += noise * rng.standard_normal(X.shape)
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(n1, np.int64)])
    order = rng.permutation(n_samples)
    return X[order].astype(dtype), y[order]
