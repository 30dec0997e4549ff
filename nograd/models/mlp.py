"""The multilayer perceptron: ``Linear → activation`` blocks and a ``Linear`` head."""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_positive
from ..core.module import Sequential
from ..layers import Flatten, Linear, get_activation
from .registry import register_model


def mlp(input_shape, num_classes, *, rng=None, hidden=(256, 256), activation="relu",
        dtype=np.float32) -> Sequential:
    """Linear/ReLU MLP, hidden sizes (256, 256) by default; flattens image inputs.

    ``Sequential([Flatten()], Linear(d, h1), act, Linear(h1, h2), act, …, Linear(hk, num_classes))``
    with ``d = prod(input_shape)``; the ``Flatten`` is there only when a sample has more than one
    axis. Weights are He-uniform from ``rng``, biases zero. The output is raw logits.
    """
    if isinstance(hidden, (int, np.integer)):
        hidden = (hidden,)
    hidden = tuple(hidden)
    for i, h in enumerate(hidden):
        check_positive(h, f"hidden[{i}]", integer=True)
    get_activation(activation)          # fail early on an unknown name
    rng = as_rng(rng)
    layers = []
    if len(input_shape) > 1:
        layers.append(Flatten())
    width = int(np.prod(input_shape))
    for h in hidden:
        layers += [Linear(width, h, rng=rng, dtype=dtype), get_activation(activation)]
        width = h
    layers.append(Linear(width, num_classes, rng=rng, dtype=dtype))
    return Sequential(*layers)


register_model("mlp", mlp)
