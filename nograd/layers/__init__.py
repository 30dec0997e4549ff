"""Layers: each a :class:`~nograd.core.module.Module` with forward, backward and jvp."""
from .activations import (ACTIVATIONS, GELU, Activation, Identity, LeakyReLU, ReLU, Sigmoid,
                          Softplus, Softsign, Tanh, get_activation)
from .dropout import Dropout
from .embedding import Embedding
from .linear import Linear
from .norm import BatchNorm1d, LayerNorm
from .shape import Flatten

__all__ = ["Linear", "Identity", "ReLU", "LeakyReLU", "GELU", "Tanh", "Sigmoid", "Softsign",
           "Softplus", "Activation", "Dropout", "LayerNorm", "BatchNorm1d", "Flatten", "Embedding",
           "ACTIVATIONS", "get_activation"]
