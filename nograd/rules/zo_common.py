"""What the zeroth-order rules (:class:`~nograd.rules.spsa.SPSA`, :class:`~nograd.rules.mezo.MeZO`)
share: the objective they minimise and the choice of the parameters they perturb.

An objective is any callable ``objective(model, x, y) -> float`` or ``-> (float, output)``; it is
only evaluated, never differentiated, so it may be piecewise constant (:func:`zero_one_loss`).
:func:`loss_objective` turns a loss into one. :func:`select_params` picks parameters by name
(glob patterns or a predicate); ``_no_decay_names`` picks those a weight decay skips.

Both rules also share two guards around their probes. :func:`_check_batch` refuses a batch the
objective would refuse (a non-finite ``x`` or ``y``, a ``y`` without one target per sample) before
any parameter is perturbed. :func:`_move_buffers` makes the one training-mode pass per step that
moves a model's buffers (batch-norm running statistics), which the evaluation-mode probes never
touch; :func:`_put_back` undoes it when the step fails afterwards (issue #19, item 7).
"""
from __future__ import annotations

import fnmatch

import numpy as np

from ..core.checks import NonFiniteError, all_finite, check_positive
from ..losses import get_loss
from ..core.module import Module

__all__ = ["loss_objective", "zero_one_loss", "select_params"]


# --------------------------------------------------------------------------- objectives
def loss_objective(loss="cross-entropy", **loss_options):
    """The objective ``(model, x, y) -> (loss value, output)`` of a loss, in evaluation mode.

    Evaluation mode makes the objective a deterministic function of the parameters (no dropout
    mask; batch norms normalise with their running statistics and do not move them), so the two
    probes of one step see the same function — as in the MeZO authors' code, whose ``zo_forward``
    calls ``model.eval()``. The running statistics are moved by the rules themselves, once per
    step (:func:`_move_buffers`).
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


def _check_batch(x, y, who):
    """Refuse, before any parameter is perturbed, a batch the objective would refuse only after.

    ``x`` (an array) must be finite when it holds floats; ``y``, when given, must have one target
    per sample (``len(y) == len(x)``) and be finite when it holds floats. Raises
    :class:`~nograd.core.checks.NonFiniteError` (naming ``x`` or ``y``) or ``ValueError``. A
    target the loss refuses for its shape alone (``y`` of shape ``(N, 1)`` for ``N×C`` logits)
    needs the model's output and is still found by the objective.
    """
    if isinstance(x, np.ndarray) and x.dtype.kind == "f" and not all_finite(x):
        raise NonFiniteError(f"{who}: x contains NaN or inf")
    if y is None:
        return
    if hasattr(x, "__len__") and hasattr(y, "__len__") and len(y) != len(x):
        raise ValueError(f"{who}: y has {len(y)} targets for {len(x)} samples in x; one target "
                         f"per sample is needed (len(y) == len(x))")
    if isinstance(y, np.ndarray) and y.dtype.kind == "f" and not all_finite(y):
        raise NonFiniteError(f"{who}: y contains NaN or inf")


def _move_buffers(model, x, rng):
    r"""One training-mode pass ``model(x, train=True, rng=rng)`` at the current parameters, kept
    only for what it does to ``model.buffers`` (a batch norm's running averages
    :math:`m \leftarrow (1-\alpha)m + \alpha\mu_B`, :math:`v \leftarrow (1-\alpha)v +
    \alpha\frac{n}{n-1}\sigma^2_B`: the same move as a backprop step's forward pass).

    Returns a copy of the buffers as they were (for :func:`_put_back`), or ``None`` when the model
    has no buffers — then nothing runs, so models without them pay no extra pass. Costs one
    forward pass at the memory of inference, plus the copy of the buffers.
    """
    live = model.buffers
    if not live:
        return None
    saved = {k: v.copy() for k, v in live.items()}
    try:
        model(x, train=True, rng=rng)
    except BaseException:
        _put_back(model, saved)
        raise
    return saved


def _put_back(model, saved):
    """Write the buffers :func:`_move_buffers` saved back into ``model.buffers`` (no-op on None)."""
    if saved:
        for k, v in model.buffers.items():
            v[...] = saved[k]


def _check_flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


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
