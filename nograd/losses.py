"""Losses: each returns ``(value, gradient wrt the prediction)``.

A loss is a plain function ``loss(pred, target, **opts) -> (value, dpred)``. ``value`` is a Python
float (mean reduction) and ``dpred`` is ∂value/∂pred, with pred's shape and dtype; the arithmetic
runs in pred's dtype (float32 or float64). Value and gradient come from one pass because they share
the expensive intermediates (the log-softmax, the softplus terms).

Losses are the one place where a learning rule starts its chain rule (backprop, FA, DFA) or its
forward-mode estimate (forward gradients, :func:`directional`). Look a loss up by name with
:func:`get_loss`; the names are the keys of :data:`LOSSES`.

This module sits above the layers and models, which never call a loss, and below the rules, the
fit loop and the estimators, which do; it imports only :mod:`nograd.core.checks`. It used to be
``nograd.core.losses``, which still gives the same names.

>>> import numpy as np
>>> value, dz = softmax_cross_entropy(np.zeros((2, 4)), np.array([0, 3]))
>>> round(value, 6), dz.shape        # log 4 for uniform logits
(1.386294, (2, 4))
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .core.checks import NonFiniteError, all_finite, check_array, check_like

__all__ = ["softmax_cross_entropy", "mse", "binary_cross_entropy_with_logits", "focal_loss",
           "directional", "get_loss", "LOSSES"]


# --------------------------------------------------------------------------------------------
# helpers: option checks and the stable log-softmax
# --------------------------------------------------------------------------------------------

def check_labels(y, n: int, num_classes: int | None = None, name: str = "y") -> np.ndarray:
    """Integer class labels of length ``n`` in ``[0, num_classes)``."""
    if not isinstance(y, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(y).__name__}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per sample), got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels but the batch has {n} samples")
    if n and num_classes is not None and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} has labels outside [0, {num_classes}): "
                         f"min {y.min()}, max {y.max()}")
    return y


def _check_number(value, name: str) -> float:
    """A finite real number (bools refused), returned as a Python float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not np.isfinite(value):
        raise NonFiniteError(f"{name} must be finite, got {value!r}")
    return float(value)


def _check_weights(w, name: str, dtype, shape=None, broadcast_to=None) -> np.ndarray:
    """Non-negative finite weights, cast to ``dtype``; exact ``shape`` or broadcastable."""
    arr = np.asarray(w)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} must have one entry per class, shape {shape}, got {arr.shape}")
    if broadcast_to is not None:
        try:
            ok = np.broadcast_shapes(arr.shape, broadcast_to) == broadcast_to
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{name} of shape {arr.shape} does not broadcast to the logits' "
                             f"shape {broadcast_to}")
    arr = arr.astype(np.float64)
    if not all_finite(arr):
        raise NonFiniteError(f"{name} contains NaN or inf")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must be non-negative, got min {arr.min()}")
    return arr.astype(dtype)


def _check_target_like(target, pred: np.ndarray, name: str = "target") -> np.ndarray:
    """A real-valued target of exactly pred's shape, finite, cast to pred's dtype."""
    if not isinstance(target, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(target).__name__}")
    if target.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {target.dtype}")
    if target.shape != pred.shape:
        raise ValueError(f"{name} has shape {target.shape} but the prediction has shape "
                         f"{pred.shape}; they must match exactly")
    if target.dtype.kind == "f" and not all_finite(target):
        raise NonFiniteError(f"{name} contains NaN or inf")
    return target.astype(pred.dtype, copy=False)


def _check_probabilities(target: np.ndarray, n: int, c: int, dtype) -> np.ndarray:
    """Rows of class probabilities: shape (n, c), non-negative, each summing to 1 (± 1e-4)."""
    if target.dtype.kind not in "biuf":
        raise TypeError(f"target must hold class probabilities, got dtype {target.dtype}")
    if target.shape != (n, c):
        raise ValueError(f"target must be integer labels of shape ({n},) or class probabilities "
                         f"of shape ({n}, {c}), got shape {target.shape}")
    t = target.astype(np.float64)
    if not all_finite(t):
        raise NonFiniteError("target contains NaN or inf")
    if t.min() < 0:
        raise ValueError(f"target has negative class probabilities (min {t.min():.6g})")
    sums = t.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-4)
    if bad.size:
        raise ValueError(f"target rows must sum to 1 (within 1e-4); row {bad[0]} sums to "
                         f"{sums[bad[0]]:.6g}")
    return target.astype(dtype)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """log softmax over axis 1 by the shifted log-sum-exp: z − m − log Σ exp(z − m), m = max z."""
    s = z - z.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


# --------------------------------------------------------------------------------------------
# the losses
# --------------------------------------------------------------------------------------------

def softmax_cross_entropy(logits, target, *, label_smoothing=0.0, class_weight=None):
    r"""Softmax cross-entropy of logits ``(N, C)`` against labels ``(N,)`` or probabilities ``(N, C)``.

    Shapes: logits (N, C) float; target (N,) integer in [0, C) or (N, C) rows of class
    probabilities (non-negative, summing to 1 within 1e-4); returns (float, (N, C)).
    Token-level form: logits (..., C), e.g. (B, T, V) from a language model, with target (...)
    integer, e.g. (B, T), or (..., C) probabilities; the leading axes are flattened into N
    (N = B·T), so the mean runs over all tokens and the gradient has the logits' shape. This is
    ``F.cross_entropy(logits.reshape(-1, C), target.reshape(-1))`` in PyTorch (nanoGPT's loss).

    With :math:`\log p = \operatorname{log\,softmax}(z)` (shifted log-sum-exp), each sample gets a
    weighted target row :math:`a_i` and the loss is normalised by :math:`D`:

    .. math::

        L = -\frac{1}{D}\sum_{i,c} a_{ic}\log p_{ic}, \qquad
        \frac{\partial L}{\partial z_{ik}} = \frac{1}{D}\Big(p_{ik}\sum_c a_{ic} - a_{ik}\Big),

    since :math:`\partial\log p_{ic}/\partial z_{ik} = \delta_{ck} - p_{ik}`. Integer labels
    :math:`y`: :math:`a_{ic} = w_c\,((1-\varepsilon)[c = y_i] + \varepsilon/C)` and
    :math:`D = \sum_i w_{y_i}` (:math:`D = N` without weights). Probability rows :math:`t`:
    :math:`a_{ic} = w_c\,((1-\varepsilon)t_{ic} + \varepsilon/C)` and :math:`D = N`. Without
    smoothing or weights the gradient is (softmax − target)/N. These are exactly the conventions
    of ``torch.nn.functional.cross_entropy(weight=w, label_smoothing=ε)``.

    References: Bridle (1990), "Probabilistic interpretation of feedforward classification network
    outputs"; Goodfellow, Bengio & Courville, *Deep Learning* (2016), §6.2.2.3; label smoothing:
    Szegedy et al. (2016), "Rethinking the Inception Architecture for Computer Vision", §7.
    """
    if isinstance(logits, np.ndarray) and logits.ndim > 2:
        lead, c = logits.shape[:-1], logits.shape[-1]
        if not isinstance(target, np.ndarray):
            raise TypeError(f"target must be a numpy.ndarray, got {type(target).__name__}")
        if target.shape == lead:
            flat = target.reshape(-1)
        elif target.shape == logits.shape:
            flat = target.reshape(-1, c)
        else:
            raise ValueError(f"target has shape {target.shape} but logits of shape {logits.shape} "
                             f"need integer labels of shape {lead} or class probabilities of "
                             f"shape {logits.shape}")
        value, dz = softmax_cross_entropy(logits.reshape(int(np.prod(lead)), c), flat,
                                          label_smoothing=label_smoothing,
                                          class_weight=class_weight)
        return value, dz.reshape(logits.shape)
    check_array(logits, "logits", ndim=2)
    n, c = logits.shape
    dt = logits.dtype
    eps = _check_number(label_smoothing, "label_smoothing")
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    w = None if class_weight is None else _check_weights(class_weight, "class_weight", dt,
                                                         shape=(c,))
    if isinstance(target, np.ndarray) and target.ndim == 2:
        a = _check_probabilities(target, n, c, dt)
        if eps:
            a = (1.0 - eps) * a + eps / c
        if w is not None:
            a = a * w
        denom = n
    else:
        y = check_labels(target, n, c, name="target")
        a = np.full((n, c), eps / c, dtype=dt)
        a[np.arange(n), y] += 1.0 - eps
        denom = n
        if w is not None:
            a *= w
            denom = w[y].sum()
            if not denom > 0:
                raise ValueError("class_weight gives the labels of this batch a total weight of 0")
    logp = _log_softmax(logits)
    # a·log p with 0·(−inf) read as 0 (a float32 log-softmax can underflow to −inf)
    terms = np.multiply(a, logp, out=np.zeros_like(a), where=a != 0)
    value = -terms.sum() / denom
    dz = (a.sum(axis=1, keepdims=True) * np.exp(logp) - a) / denom
    return float(value), dz.astype(dt, copy=False)


def mse(pred, target):
    r"""Mean squared error over all elements.

    Shapes: pred any shape, float; target exactly pred's shape (integers are cast); returns
    (float, pred's shape). With :math:`n` the number of elements:

    .. math::

        L = \frac{1}{n}\sum_j (x_j - t_j)^2, \qquad \frac{\partial L}{\partial x_j} = \frac{2}{n}(x_j - t_j).

    Reference: Goodfellow, Bengio & Courville, *Deep Learning* (2016), §5.1.4.
    """
    check_array(pred, "pred")
    t = _check_target_like(target, pred)
    diff = pred - t
    return float(np.sum(diff * diff) / diff.size), (2.0 / diff.size) * diff


def binary_cross_entropy_with_logits(logits, target, *, pos_weight=None):
    r"""Elementwise binary cross-entropy of sigmoid(logits) against targets in [0, 1], mean-reduced.

    Shapes: logits any shape, float; target the same shape (or (N,) for logits (N, 1)), values in
    [0, 1], floats or integers 0/1; pos_weight None or non-negative weights broadcastable to the
    logits (typically (C,) for the last axis). Returns (float, logits' shape).

    With :math:`\operatorname{sp}(u) = \log(1 + e^u) = \max(u, 0) + \log(1 + e^{-|u|})`, so that
    :math:`-\log\sigma(z) = \operatorname{sp}(-z)` and :math:`-\log(1-\sigma(z)) = \operatorname{sp}(z)`
    are computed without overflow, and :math:`n` elements:

    .. math::

        L = \frac{1}{n}\sum_j \big[p_j t_j\,\operatorname{sp}(-z_j) + (1 - t_j)\,\operatorname{sp}(z_j)\big],
        \qquad
        \frac{\partial L}{\partial z_j} = \frac{1}{n}\big[(p_j t_j + 1 - t_j)\,\sigma(z_j) - p_j t_j\big],

    using :math:`\operatorname{sp}'(z) = \sigma(z)`. Without ``pos_weight`` (:math:`p = 1`) the
    value is :math:`\max(z,0) - zt + \log(1+e^{-|z|})` and the gradient :math:`(\sigma(z) - t)/n`.

    References: Goodfellow, Bengio & Courville, *Deep Learning* (2016), §6.2.2.2; ``pos_weight`` as in
    ``torch.nn.BCEWithLogitsLoss``.
    """
    check_array(logits, "logits")
    if (isinstance(target, np.ndarray) and logits.ndim == 2 and logits.shape[1] == 1
            and target.shape == logits.shape[:1]):
        target = target.reshape(-1, 1)
    t = _check_target_like(target, logits)
    if t.min() < 0 or t.max() > 1:
        raise ValueError(f"target must hold values in [0, 1], got min {t.min()}, max {t.max()}")
    z = logits
    e = np.exp(-np.abs(z))
    log1p_e = np.log1p(e)
    sp_pos = np.maximum(z, 0) + log1p_e          # sp(z)  = −log(1 − σ(z))
    sp_neg = np.maximum(-z, 0) + log1p_e         # sp(−z) = −log σ(z)
    sig = 1.0 / (1.0 + e)                        # σ(|z|)
    sig = np.where(z >= 0, sig, e * sig)         # σ(z) without overflow
    if pos_weight is None:
        loss = t * sp_neg + (1.0 - t) * sp_pos
        dz = sig - t
    else:
        pt = _check_weights(pos_weight, "pos_weight", z.dtype, broadcast_to=z.shape) * t
        loss = pt * sp_neg + (1.0 - t) * sp_pos
        dz = (pt + 1.0 - t) * sig - pt
    return float(loss.sum() / z.size), dz / z.size


def focal_loss(logits, target, *, gamma=2.0, alpha=None):
    r"""Multi-class softmax focal loss with integer labels, mean over samples.

    Shapes: logits (N, C) float; target (N,) integer in [0, C); alpha None (all 1), a non-negative
    scalar (the same for every class) or non-negative per-class weights (C,). Returns (float, (N, C)).

    With :math:`p = \operatorname{softmax}(z_i)`, :math:`p_t = p_{y_i}`, :math:`\alpha_t = \alpha_{y_i}`:

    .. math::

        L = \frac{1}{N}\sum_i -\alpha_t (1 - p_t)^\gamma \log p_t, \qquad
        \frac{\partial L}{\partial z_{ik}} = \frac{\alpha_t}{N}\,(1 - p_t)^\gamma
            \Big(1 - \gamma\,\frac{p_t\log p_t}{1 - p_t}\Big)(p_k - \delta_{k y_i}).

    Derivation: :math:`\partial\log p_t/\partial z_k = \delta_{ky} - p_k` and
    :math:`\partial p_t/\partial z_k = p_t(\delta_{ky} - p_k)`, so
    :math:`\partial FL/\partial z_k = -\alpha_t[(1-p_t)^\gamma - \gamma(1-p_t)^{\gamma-1}p_t\log p_t]
    (\delta_{ky} - p_k)`; factor out :math:`(1-p_t)^\gamma`. The ratio
    :math:`\log p_t/(1-p_t) \to -1` as :math:`p_t \to 1`, so the factor is finite for every
    :math:`\gamma \ge 0`. Numerically, :math:`1 - p_t` is summed from the other classes' probabilities
    (no cancellation) and :math:`\log p_t = \log(1 - (1 - p_t))` by ``log1p`` when
    :math:`p_t > 1/2`. With :math:`\gamma = 0` and no alpha this is :func:`softmax_cross_entropy`.

    Reference: Lin, Goyal, Girshick, He & Dollár (2017), "Focal Loss for Dense Object Detection",
    ICCV, eq. 5.
    """
    check_array(logits, "logits", ndim=2)
    n, c = logits.shape
    dt = logits.dtype
    y = check_labels(target, n, c, name="target")
    g = _check_number(gamma, "gamma")
    if g < 0:
        raise ValueError(f"gamma must be non-negative, got {gamma!r}")
    if alpha is None:
        alpha_t = None
    elif np.ndim(alpha) == 0:
        alpha_t = _check_weights(alpha, "alpha", dt)
    else:
        alpha_t = _check_weights(alpha, "alpha", dt, shape=(c,))[y]
    rows = np.arange(n)
    logp_all = _log_softmax(logits)
    p_all = np.exp(logp_all)
    is_target = np.zeros((n, c), dtype=bool)
    is_target[rows, y] = True
    om = np.where(is_target, 0, p_all).sum(axis=1)                 # 1 − p_t
    logp = np.where(om < 0.5, np.log1p(-np.minimum(om, 0.5)), logp_all[rows, y])
    ratio = np.divide(logp, om, out=np.full_like(om, -1.0), where=om > 0)   # log p_t / (1 − p_t)
    modulating = om ** g                                           # (1 − p_t)^γ
    per_sample = -modulating * logp
    factor = modulating * (1.0 - g * np.exp(logp) * ratio)
    if alpha_t is not None:
        per_sample = alpha_t * per_sample
        factor = alpha_t * factor
    dz = p_all
    dz[rows, y] = -om                                              # p_k − δ_ky, exact at k = y
    dz *= (factor / n)[:, None]
    return float(per_sample.sum() / n), dz.astype(dt, copy=False)


# --------------------------------------------------------------------------------------------
# forward mode and the registry
# --------------------------------------------------------------------------------------------

def directional(loss, pred, target, dpred, **opts):
    r"""The loss and its forward-mode derivative along a tangent ``dpred`` of the prediction.

    ``loss`` is a name from :data:`LOSSES` or a loss function; ``dpred`` (a *tangent*, shaped like
    pred) is the direction, ``opts`` go to the loss. Returns (value, dvalue), both floats:

    .. math::

        \dot L = \frac{d}{d\epsilon} L(x + \epsilon\,\dot x)\Big|_{\epsilon=0}
               = \langle \nabla_x L, \dot x\rangle .

    A loss is a scalar, so its Jacobian–vector product is this one inner product with the reverse-
    mode gradient; forward-gradient training (Baydin et al. 2022, "Gradients without
    Backpropagation", §3) multiplies it back onto the tangent.
    """
    fn = get_loss(loss)
    value, grad = fn(pred, target, **opts)
    check_like(dpred, grad.shape, "dpred")
    if not all_finite(dpred):
        raise NonFiniteError("dpred contains NaN or inf")
    return value, float(np.vdot(grad, dpred))


LOSSES: dict[str, Callable] = {
    "cross-entropy": softmax_cross_entropy,
    "mse": mse,
    "bce": binary_cross_entropy_with_logits,
    "focal": focal_loss,
}


def get_loss(name_or_callable) -> Callable:
    """The loss function registered under a name in :data:`LOSSES`; a callable passes through."""
    if isinstance(name_or_callable, str):
        try:
            return LOSSES[name_or_callable]
        except KeyError:
            raise ValueError(f"unknown loss {name_or_callable!r}; valid names: "
                             f"{', '.join(LOSSES)}") from None
    if callable(name_or_callable):
        return name_or_callable
    raise TypeError(f"loss must be one of {', '.join(LOSSES)} or a callable, "
                    f"got {type(name_or_callable).__name__}")
