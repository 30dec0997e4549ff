r"""Networks for tables of numbers: a configurable MLP with batch normalisation, DiabetesNet, and
logistic regression. Training them (:func:`~nograd.estimators.tabular.train_classifier`,
:func:`~nograd.estimators.tabular.make_fit_predict` for :func:`nograd.data.cross_validate`) lives in
:mod:`nograd.estimators.tabular`; the old names here still work.

DiabetesNet (Zhang, Ahmed, Hasan, Gedeon & Hossain 2024, "DiabetesNet: A Deep Learning Approach
to Diabetes Diagnosis", arXiv:2403.07483) is a backprop MLP, input → 64 → 32 → 16 → 2, with batch
normalisation after each hidden layer, trained on standardised features with the classes
re-balanced.

>>> import numpy as np
>>> net = DiabetesNet(8, rng=0)
>>> [type(m).__name__ for m in net][:3], net[-1].out_features
(['Linear', 'BatchNorm1d', 'ReLU'], 2)
>>> net(np.zeros((3, 8), np.float32)).shape
(3, 2)
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_positive
from ..core.module import Sequential
from ..layers import BatchNorm1d, Dropout, Linear, get_activation
from .registry import register_model

__all__ = ["TabularMLP", "DiabetesNet", "logistic_regression"]


class TabularMLP(Sequential):
    r"""``[Linear → BatchNorm1d → activation (→ Dropout)] × len(hidden)``, then a ``Linear`` head.

    Shapes: ``x (N, in_features) -> logits (N, num_classes)``.

    The defaults are DiabetesNet's: hidden widths (64, 32, 16), batch normalisation after every
    hidden ``Linear`` and before its ReLU (Ioffe & Szegedy 2015, §3.2), two outputs, no dropout.
    ``batch_norm=False`` leaves the norms out; ``dropout > 0`` adds inverted dropout after each
    activation. Weights are He-uniform from ``rng``, biases zero. It is a :class:`Sequential`, so
    its forward, backward and jvp are the chain rule over its layers, and batch-norm layers run on
    batch statistics when ``train=True`` and on running statistics otherwise. In training a batch
    needs at least two samples (the batch variance of one sample is zero).
    """

    def __init__(self, in_features: int, num_classes: int = 2, hidden=(64, 32, 16), *,
                 batch_norm: bool = True, dropout: float = 0.0, activation: str = "relu", rng=None,
                 dtype=np.float32):
        check_positive(in_features, "in_features", integer=True)
        check_positive(num_classes, "num_classes", integer=True)
        hidden = (hidden,) if isinstance(hidden, (int, np.integer)) else tuple(hidden)
        for i, h in enumerate(hidden):
            check_positive(h, f"hidden[{i}]", integer=True)
        get_activation(activation)          # an unknown name fails here
        rng = as_rng(rng)
        layers, width = [], int(in_features)
        for h in hidden:
            layers.append(Linear(width, int(h), rng=rng, dtype=dtype))
            if batch_norm:
                layers.append(BatchNorm1d(int(h), dtype=dtype))
            layers.append(get_activation(activation))
            if dropout:
                layers.append(Dropout(dropout))
            width = int(h)
        layers.append(Linear(width, int(num_classes), rng=rng, dtype=dtype))
        super().__init__(*layers)
        self.in_features, self.num_classes, self.hidden = int(in_features), int(num_classes), hidden


class DiabetesNet(TabularMLP):
    """DiabetesNet (Zhang et al. 2024): ``in_features → 64 → 32 → 16 → 2``, batch norm after each
    hidden layer, ReLU; a :class:`TabularMLP` with its defaults fixed. Output: two logits
    (class 0 = no diabetes, class 1 = diabetes)."""

    def __init__(self, in_features: int, *, rng=None, dtype=np.float32):
        super().__init__(in_features, 2, (64, 32, 16), batch_norm=True, rng=rng, dtype=dtype)


def logistic_regression(in_features: int, num_classes: int = 2, *, rng=None,
                        dtype=np.float32) -> Sequential:
    r"""Multinomial logistic regression: one ``Linear(in_features, num_classes)``, softmax in the loss.

    With two classes the two logits :math:`z_0, z_1` give :math:`P(1 \mid x) =
    \sigma(z_1 - z_0)`, which is binary logistic regression with weight :math:`w_1 - w_0`.
    """
    return Sequential(Linear(in_features, num_classes, rng=rng, dtype=dtype))


# --------------------------------------------------------------------------- registry
def _flat(input_shape, name):
    if len(input_shape) != 1:
        raise ValueError(f"{name} takes a table row (features,), got input_shape {tuple(input_shape)}")
    return int(input_shape[0])


def _tabular_mlp(input_shape, num_classes, *, rng=None, **options):
    """Linear/BatchNorm1d/ReLU MLP for tables, hidden (64, 32, 16) by default."""
    return TabularMLP(_flat(input_shape, "tabular-mlp"), num_classes, rng=rng, **options)


def _diabetesnet(input_shape, num_classes, *, rng=None, dtype=np.float32):
    """DiabetesNet (Zhang et al. 2024): input-64-32-16-2, batch norm after each hidden layer."""
    if num_classes != 2:
        raise ValueError(f"diabetesnet is a binary classifier (2 outputs), got num_classes={num_classes}")
    return DiabetesNet(_flat(input_shape, "diabetesnet"), rng=rng, dtype=dtype)


def _logistic(input_shape, num_classes, *, rng=None, dtype=np.float32):
    """Logistic regression: a single Linear layer, softmax cross-entropy."""
    return logistic_regression(_flat(input_shape, "logistic"), num_classes, rng=rng, dtype=dtype)


register_model("tabular-mlp", _tabular_mlp)
register_model("diabetesnet", _diabetesnet)
register_model("logistic", _logistic)


# --------------------------------------------------------------------------- moved names
_MOVED = ("train_classifier", "make_fit_predict")


def __getattr__(name):
    # training moved up to nograd.estimators.tabular; the old names are looked up there on first use
    if name in _MOVED:
        from . import _from_above

        return _from_above("nograd.estimators.tabular", name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
