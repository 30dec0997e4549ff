"""Estimators: models that train themselves, with the scikit-learn interface where it applies.

This room sits on top of the others: an estimator builds a network from :mod:`nograd.models`,
trains it with :func:`nograd.train.fit` and a rule from :mod:`nograd.rules`, and answers
``fit`` / ``predict`` / ``score``. Models never import from here.

- :class:`GrandeClassifier`, :class:`GrandeRegressor` — GRANDE (Marton et al., ICLR 2024) with
  early stopping and the four per-group learning rates (:mod:`nograd.estimators.grande`).
- :func:`train_classifier`, :func:`make_fit_predict` — backprop training of the tabular networks
  (DiabetesNet, tabular MLP, logistic regression) for :func:`nograd.data.cross_validate`
  (:mod:`nograd.estimators.tabular`).
"""
from .grande import GrandeClassifier, GrandeRegressor, NotFittedError
from .tabular import make_fit_predict, train_classifier

__all__ = ["GrandeClassifier", "GrandeRegressor", "NotFittedError", "train_classifier",
           "make_fit_predict"]
