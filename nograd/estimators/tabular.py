r"""Training the tabular networks of :mod:`nograd.models.tabular` (DiabetesNet, the tabular MLP,
logistic regression) with backprop, and the ``fit_predict`` that :func:`nograd.data.cross_validate`
runs in every fold.

DiabetesNet's protocol (Zhang, Ahmed, Hasan, Gedeon & Hossain 2024, "DiabetesNet: A Deep Learning
Approach to Diabetes Diagnosis", arXiv:2403.07483): softmax cross-entropy, Adam at 1e-3, batches of
32, a fixed number of epochs, the classes re-balanced inside the training folds only (the
re-balancing is :func:`nograd.data.cross_validate`'s ``balance``).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.standard_normal((64, 3)).astype(np.float32); y = (X[:, 0] > 0).astype(np.int64)
>>> fp = make_fit_predict("logistic", epochs=30, lr=0.05)
>>> logits = fp(X[:48], y[:48], X[48:], rng=0)
>>> logits.shape, float(np.mean(logits.argmax(1) == y[48:])) > 0.8
((16, 2), True)
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_positive
from ..core.optim import get_optimizer
from ..models.registry import available_models, get_model
from ..rules.backprop import Backprop
from ..train import fit

__all__ = ["train_classifier", "make_fit_predict"]


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
