"""What the zeroth-order rules (:class:`~nograd.rules.spsa.SPSA`, :class:`~nograd.rules.mezo.MeZO`)
share: the objective they minimise and the choice of the parameters they perturb.

An objective is any callable ``objective(model, x, y) -> float`` or ``-> (float, output)``; it is
only evaluated, never differentiated, so it may be piecewise constant (:func:`zero_one_loss`).
:func:`loss_objective` turns a loss into one. :func:`select_params` picks parameters by name
(glob patterns or a predicate); ``_no_decay_names`` picks those a weight decay skips.
"""
from __future__ import annotations

import fnmatch

import numpy as np

from ..core.checks import check_positive
from ..losses import get_loss
from ..core.module import Module

__all__ = ["loss_objective", "zero_one_loss", "select_params"]


# --------------------------------------------------------------------------- objectives
def loss_objective(loss="cross-entropy", **loss_options):
    """The objective ``(model, x, y) -> (loss value, output)`` of a loss, in evaluation mode.

    Evaluation mode makes the objective a deterministic function of the parameters (no dropout
    mask, no batch-statistics update), so the two probes of one step see the same function.
    """
    fn = get_loss(loss)

    def objective(model, x, y):
        out = model(x)
        if not np.isfinite(out).all():   # diverged: the rule raises FloatingPointError
            return float("nan"), out
        return fn(out, y, **loss_options)[0], out

    objective.__name__ = f"loss_objective({getattr(fn, '__name__', loss)})"
    return objective


def zero_one_loss(model, x, y):
    """The error rate ``1 - accuracy`` of ``model(x)`` against labels ``y``, and the output.

    Piecewise constant in the parameters: its gradient is zero almost everywhere, so no gradient
    method can use it, but a finite difference over a step ``ε`` sees the changes in the labels.
    """
    from ..metrics import accuracy

    out = model(x)
    return 1.0 - accuracy(y, out), out


def _resolve_objective(objective, loss, loss_options):
    if objective is None:
        return loss_objective(loss, **loss_options)
    if isinstance(objective, str):
        if objective == "zero-one":
            return zero_one_loss
        return loss_objective(objective, **loss_options)
    if callable(objective):
        return objective
    raise TypeError(f"objective must be None, 'zero-one', a loss name or a callable "
                    f"(model, x, y) -> float, got {type(objective).__name__}")


def _evaluate(objective, model, x, y, who):
    result = objective(model, x, y)
    out = None
    if isinstance(result, tuple):
        if len(result) != 2:
            raise TypeError(f"{who}: the objective must return a float or (float, output), "
                            f"got a tuple of {len(result)}")
        result, out = result
    try:
        value = float(result)
    except (TypeError, ValueError):
        raise TypeError(f"{who}: the objective must return a number, got "
                        f"{type(result).__name__}") from None
    return value, out


# --------------------------------------------------------------------------- parameter choice
def _matcher(spec, what):
    """A predicate on parameter names from patterns (str or list of str) or a callable."""
    if callable(spec):
        return spec
    pats = [spec] if isinstance(spec, str) else spec
    if not isinstance(pats, (list, tuple)) or not all(isinstance(p, str) for p in pats):
        raise TypeError(f"{what} must be a name pattern, a list of patterns or a callable "
                        f"name -> bool, got {spec!r}")
    return lambda name: any(fnmatch.fnmatchcase(name, p) for p in pats)


def select_params(model: Module, params=None, *, who: str = "rule") -> list[str]:
    """Names of ``model.params`` chosen by ``params``, in the model's order.

    ``params``: ``None`` (all), a glob pattern such as ``"4.*"`` (the last layer of an MLP) or
    ``"*.bias"``, a list of patterns, or a callable ``name -> bool``. Choosing nothing is an error.
    """
    if not isinstance(model, Module):
        raise TypeError(f"{who}: model must be a nograd Module, got {type(model).__name__}")
    names = list(model.params)
    if params is not None:
        keep = _matcher(params, "params")
        names = [n for n in names if keep(n)]
    if not names:
        raise ValueError(f"{who}: params={params!r} selects no parameter; the model has "
                         f"{list(model.params)}")
    for n in names:
        a = model.params[n]
        if a.dtype not in (np.float32, np.float64):
            raise ValueError(f"{who}: parameter {n!r} has dtype {a.dtype}; float32 or float64 "
                             f"needed")
    return names


def _no_decay_names(model: Module, no_decay) -> set:
    """``"auto"``: biases and the parameters of normalisation layers; else patterns/callable."""
    if no_decay is None:
        return set()
    if isinstance(no_decay, str) and no_decay == "auto":
        out = {n for n in model.params if n.rsplit(".", 1)[-1] == "bias"}
        for prefix, m in model.modules():
            if m.normalization:                    # the layers that declare it (DESIGN §2)
                out |= {f"{prefix}.{k}" if prefix else k for k in m.params}
        return out
    skip = _matcher(no_decay, "no_decay")
    return {n for n in model.params if skip(n)}


def _check_eps(eps):
    eps = float(check_positive(eps, "eps"))
    return eps
