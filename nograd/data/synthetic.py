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


def blobs(n_samples: int = 300, n_classes: int = 3, n_features: int = 2, *, spread: float = 1.0,
          box: float = 10.0, rng=None, dtype=np.float32):
    r"""Isotropic Gaussian blobs, one per class.

    Class centres :math:`\mu_k` are drawn uniformly from the cube :math:`[-\text{box}/2,
    \text{box}/2]^d`; a sample of class :math:`k` is :math:`\mu_k + \text{spread}\cdot\varepsilon`,
    :math:`\varepsilon \sim N(0, I)`. The classes get ``n_samples // n_classes`` samples each, the
    first ``n_samples % n_classes`` classes one more. Returns ``X (n_samples, n_features)`` and labels
    ``y``, shuffled.
    """
    check_positive(n_samples, "n_samples", integer=True)
    check_positive(n_classes, "n_classes", integer=True)
    check_positive(n_features, "n_features", integer=True)
    check_positive(spread, "spread", allow_zero=True)
    check_positive(box, "box", allow_zero=True)
    if n_samples < n_classes:
        raise ValueError(f"n_samples={n_samples} must be at least n_classes={n_classes}")
    rng = as_rng(rng)
    centres = rng.uniform(-box / 2, box / 2, size=(n_classes, n_features))
    counts = np.full(n_classes, n_samples // n_classes)
    counts[:n_samples % n_classes] += 1
    y = np.repeat(np.arange(n_classes), counts)
    X = centres[y] + spread * rng.standard_normal((n_samples, n_features))
    order = rng.permutation(n_samples)
    return X[order].astype(dtype), y[order]


def teacher(n_samples: int = 1000, n_features: int = 20, n_classes: int = 4, *, hidden=(32,),
            rng=None, dtype=np.float32):
    r"""Inputs :math:`x \sim N(0, I)` labelled by a random "teacher" MLP.

    The teacher has ``tanh`` hidden layers of the given widths and weights
    :math:`W_l \sim N(0, 1/\text{fan\_in})`, biases :math:`N(0, 0.1^2)`; a sample's label is the
    argmax of the teacher's output after each output unit is centred by its mean over the samples
    (without the centring one class can take most samples). A student network of the teacher's
    shape can fit the labels exactly, which makes the set a clean test of a learning rule.
    Returns ``X (n_samples, n_features)`` and labels ``y``.
    """
    check_positive(n_samples, "n_samples", integer=True)
    check_positive(n_features, "n_features", integer=True)
    check_positive(n_classes, "n_classes", integer=True)
    if isinstance(hidden, (int, np.integer)):
        hidden = (hidden,)
    hidden = tuple(hidden)
    for i, h in enumerate(hidden):
        check_positive(h, f"hidden[{i}]", integer=True)
    rng = as_rng(rng)
    X = rng.standard_normal((n_samples, n_features))
    h = X
    sizes = (n_features,) + hidden + (n_classes,)
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)
        b = 0.1 * rng.standard_normal(fan_out)
        h = h @ W + b
        if i < len(sizes) - 2:
            h = np.tanh(h)
    y = np.argmax(h - h.mean(axis=0), axis=1).astype(np.int64)
    return X.astype(dtype), y
