"""A small convolutional network: ``[Conv2d → ReLU → MaxPool2d] × k``, then a ``Linear`` head."""
from __future__ import annotations

import math

import numpy as np

from ..core.checks import as_rng, check_positive
from ..core.module import Sequential
from ..layers import Conv2d, Flatten, FusedSequential, Linear, MaxPool2d, ReLU, Reshape
from .registry import register_model


def cnn(input_shape, num_classes, *, rng=None, channels=(32, 64), kernel_size=3,
        dtype=np.float32) -> Sequential:
    """Conv3×3/ReLU/maxpool2 blocks (32, 64 channels), then a Linear head; images (C, H, W).

    Each block is ``Conv2d(c_in, c, kernel_size, padding=kernel_size // 2)``, ``ReLU``,
    ``MaxPool2d(2)``; the reference CNN of ``bench/cnn_step.py`` is ``cnn((3, 32, 32), 10)``. A flat input whose length is a square (64 for the 8×8 digits, 784 for
    MNIST) is read as a one-channel square image through a leading :class:`Reshape`.

    The chain is a :class:`~nograd.layers.FusedSequential`: each block runs as one fused
    convolution/ReLU/pooling pass, with the plain :class:`Sequential`'s numbers entry for entry.
    """
    shape = tuple(input_shape)
    layers = []
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        if side * side != shape[0]:
            raise ValueError(f"cnn needs images (C, H, W) or a flat square image; input_shape "
                             f"{shape} is neither")
        shape = (1, side, side)
        layers.append(Reshape(shape))
    if len(shape) != 3:
        raise ValueError(f"cnn needs input_shape (C, H, W), got {shape}")
    channels = (channels,) if isinstance(channels, (int, np.integer)) else tuple(channels)
    for i, c in enumerate(channels):
        check_positive(c, f"channels[{i}]", integer=True)
    check_positive(kernel_size, "kernel_size", integer=True)
    rng = as_rng(rng)
    c_in, h, w = shape
    for c in channels:
        if h < 2 or w < 2:
            raise ValueError(f"cnn: {len(channels)} pooling blocks halve {shape[1:]} below 1 pixel; "
                             f"use fewer channels entries")
        layers += [Conv2d(c_in, c, kernel_size, padding=kernel_size // 2, rng=rng, dtype=dtype), ReLU(),
                   MaxPool2d(2)]
        c_in, h, w = c, h // 2, w // 2
    layers += [Flatten(), Linear(c_in * h * w, num_classes, rng=rng, dtype=dtype)]
    return FusedSequential(*layers)


register_model("cnn", cnn)
