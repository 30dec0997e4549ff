r"""Predictions of a trained classifier: class probabilities and labels, in batches, in evaluation
mode — what ``predict_proba`` / ``predict`` are in scikit-learn.

The model's scores ``z`` become probabilities in one place: ``(N, C)`` scores with C ≥ 2 by the
softmax :math:`p_c = e^{z_c - \max z} / \sum_k e^{z_k - \max z}`
(:func:`nograd.layers.softmax.softmax`); ``(N,)`` or ``(N, 1)`` scores are the logit of the
positive class, :math:`p = (1 - σ(z), σ(z))`. A rule that predicts on its own (Forward-Forward's
goodness) is used when given, as :func:`nograd.train.predictor` does.

>>> import numpy as np, nograd as ng
>>> net = ng.Sequential(ng.Linear(4, 3, rng=0))
>>> x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
>>> p = predict_proba(net, x)
>>> p.shape, bool(np.allclose(p.sum(axis=1), 1)), predict(net, x).tolist() == p.argmax(1).tolist()
((5, 3), True, True)

Training mode is an argument in nograd (``forward(x, train=True)``), never a state of the model, so
there is no ``model.eval()`` to call first.
"""
from __future__ import annotations

import numpy as np

from .core.checks import check_positive

__all__ = ["predict_proba", "predict"]


def _scores(model, x, batch_size, rule):
    from .train import predictor

    check_positive(batch_size, "batch_size", integer=True)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"x must be a batch (N, ...), got shape {x.shape}; one sample is x[None]")
    if len(x) == 0:
        raise ValueError(f"x is empty (shape {x.shape})")
    fn = predictor(model, rule)
    return np.concatenate([fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def predict_proba(model, x, *, batch_size: int = 1024, rule=None) -> np.ndarray:
    """Class probabilities ``(N, C)`` of ``model`` on ``x`` (evaluation mode, batches of
    ``batch_size``); each row sums to 1. See the module docstring for how scores become
    probabilities."""
    from .layers.activations import sigmoid
    from .layers.softmax import softmax

    z = _scores(model, x, batch_size, rule)
    if z.ndim == 2 and z.shape[1] >= 2:
        return softmax(z, axis=1)
    if z.ndim == 1 or (z.ndim == 2 and z.shape[1] == 1):
        p = sigmoid(z.reshape(-1))
        return np.stack([1 - p, p], axis=1)
    raise ValueError(f"the model's scores must be (N, C) or (N,) logits, got shape {z.shape}")


def predict(model, x, *, batch_size: int = 1024, rule=None) -> np.ndarray:
    """Class labels ``(N,)`` int64: the most probable class of :func:`predict_proba`."""
    return predict_proba(model, x, batch_size=batch_size, rule=rule).argmax(axis=1).astype(np.int64)
