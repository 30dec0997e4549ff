r"""Networks for tables of numbers: a configurable MLP with batch normalisation, DiabetesNet, and
logistic regression — plus the training call that :func:`nograd.data.cross_validate` needs.

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
from .registry import available_models, get_model, register_model

__all__ = ["TabularMLP", "DiabetesNet", "logistic_regression", "train_classifier",
           "make_fit_predict"]


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


# --------------------------------------------------------------------------- training
def train_classifier(model, X, y, *, epochs: int = 100, batch_size: int = 32, lr: float = 1e-3,
                     optimizer: str = "adam", rng=None):
    """Train ``model`` with backprop on softmax cross-entropy for ``epochs`` epochs; returns the
    :class:`nograd.train.History`. ``rng`` draws the batch order (and dropout masks).

    No early stopping: there is no validation set to stop on inside a cross-validation fold (the
    test fold must not choose the epoch). When ``len(X) % batch_size == 1`` the batch size is raised
    by one until it is not, because the last batch of an epoch would hold a single sample, which
    batch normalisation cannot standardise in training. ``fit(..., drop_last=True)`` would avoid the
    batch of one too, but by leaving a sample out of every epoch; raising the batch size trains on
    every sample.
    """
    from ..core.optim import get_optimizer
    from ..rules import Backprop
    from ..train import fit

    check_positive(batch_size, "batch_size", integer=True)
    n = len(X)
    bs = int(batch_size)
    while n > 1 and bs < n and n % bs == 1:
        bs += 1
    opt = get_optimizer(optimizer, model.params, lr=lr)
    return fit(model, Backprop("cross-entropy"), opt, (X, y), epochs=epochs, batch_size=bs,
               rng=as_rng(rng), progress=False)


def make_fit_predict(model: str = "diabetesnet", *, epochs: int = 100, batch_size: int = 32,
                     lr: float = 1e-3, optimizer: str = "adam", **model_options):
    """A ``fit_predict(X_train, y_train, X_test, *, rng) -> logits (N_test, C)`` for
    :func:`nograd.data.cross_validate`: builds the registered ``model`` afresh (initial weights from
    ``rng``), trains it with :func:`train_classifier`, and scores ``X_test`` in evaluation mode.
    The arguments are checked here, before any fold runs.
    """
    check_positive(epochs, "epochs", integer=True)
    check_positive(batch_size, "batch_size", integer=True)
    check_positive(lr, "lr")
    if model not in available_models():
        raise ValueError(f"unknown model {model!r}; registered models: {', '.join(available_models())}")

    def fit_predict(X_train, y_train, X_test, *, rng=None):
        rng = as_rng(rng)
        num_classes = max(2, int(y_train.max()) + 1)
        net = get_model(model, X_train.shape[1:], num_classes, rng=rng,
                        **{"dtype": X_train.dtype, **model_options})
        train_classifier(net, X_train, y_train, epochs=epochs, batch_size=batch_size, lr=lr,
                         optimizer=optimizer, rng=rng)
        return np.concatenate([net(X_test[i:i + 1024]) for i in range(0, len(X_test), 1024)])

    fit_predict.__name__ = f"fit_predict_{model.replace('-', '_')}"
    return fit_predict
