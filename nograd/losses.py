"""Losses: each returns ``(value, gradient wrt the prediction)``.

A loss is a plain function ``loss(pred, target, **opts) -> (value, dpred)``. ``value`` is a Python
float (mean reduction) and ``dpred`` is ∂value/∂pred, with pred's shape and dtype; the arithmetic
runs in pred's dtype (float32 or float64). Value and gradient come from one pass because they share
the expensive intermediates (the log-softmax, the softplus terms).

Losses are the one place where a learning rule starts its chain rule (backprop, FA, DFA) or its
forward-mode estimate (forward gradients, :func:`directional`). Look a loss up by name with
:func:`get_loss`; the names are the keys of :data:`LOSSES`.

This module sits above the layers and models, which never call a loss, and below the rules, the
fit loop and the estimators, which do; it imports only :mod:`nograd.core.checks` and its own
argument checks (:mod:`nograd.loss_checks`). It used to be ``nograd.core.losses``, which still gives
the same names.

Classification: :func:`softmax_cross_entropy` (labels or probabilities, label smoothing, class
weights, ``ignore_index``), :func:`nll_loss` (on log-probabilities), :func:`focal_loss`,
:func:`binary_cross_entropy_with_logits`, :func:`kl_div`. Regression: :func:`mse`, :func:`l1_loss`,
:func:`huber_loss`. Each matches its ``torch.nn.functional`` namesake (mean reduction).

>>> import numpy as np
>>> value, dz = softmax_cross_entropy(np.zeros((2, 4)), np.array([0, 3]))
>>> round(value, 6), dz.shape        # log 4 for uniform logits
(1.386294, (2, 4))
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .core.checks import NonFiniteError, all_finite, check_array, check_like
from .loss_checks import (check_ignore_index, check_labels, check_number, check_probabilities,
                          check_target_like, check_weights, flatten_tokens, kept_labels, log_softmax)

__all__ = ["softmax_cross_entropy", "nll_loss", "mse", "l1_loss", "huber_loss",
           "binary_cross_entropy_with_logits", "focal_loss", "kl_div", "directional", "get_loss",
           "LOSSES"]


# --------------------------------------------------------------------------------------------
# the losses
# --------------------------------------------------------------------------------------------

def softmax_cross_entropy(logits, target, *, label_smoothing=0.0, class_weight=None,
                          ignore_index=None):
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
    smoothing or weights the gradient is (softmax − target)/N. ``ignore_index`` (integer labels
    only): a sample labelled with it gets :math:`a_i = 0` and leaves :math:`D`, so it adds nothing
    to the loss or the gradient (padding tokens); at least one sample must remain. These are exactly
    the conventions of ``torch.nn.functional.cross_entropy(weight=w, label_smoothing=ε,
    ignore_index=k)``, except that PyTorch's default ``ignore_index`` is −100 and here it is None.

    References: Bridle (1990), "Probabilistic interpretation of feedforward classification network
    outputs"; Goodfellow, Bengio & Courville, *Deep Learning* (2016), §6.2.2.3; label smoothing:
    Szegedy et al. (2016), "Rethinking the Inception Architecture for Computer Vision", §7.
    """
    if isinstance(logits, np.ndarray) and logits.ndim > 2:
        flat_z, flat = flatten_tokens(logits, target, "logits", probabilities=True)
        value, dz = softmax_cross_entropy(flat_z, flat, label_smoothing=label_smoothing,
                                          class_weight=class_weight, ignore_index=ignore_index)
        return value, dz.reshape(logits.shape)
    check_array(logits, "logits", ndim=2)
    n, c = logits.shape
    dt = logits.dtype
    eps = check_number(label_smoothing, "label_smoothing")
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    w = None if class_weight is None else check_weights(class_weight, "class_weight", dt,
                                                         shape=(c,))
    ignore = check_ignore_index(ignore_index)
    if isinstance(target, np.ndarray) and target.ndim == 2:
        if ignore is not None:
            raise ValueError(f"ignore_index applies to integer labels, not to class probabilities "
                             f"(target of shape {target.shape}); drop those rows instead")
        a = check_probabilities(target, n, c, dt)
        if eps:
            a = (1.0 - eps) * a + eps / c
        if w is not None:
            a = a * w
        denom = n
    else:
        y = check_labels(target, n, c, name="target", ignore_index=ignore)
        rows, kept = kept_labels(y, ignore)
        a = np.zeros((n, c), dtype=dt)
        a[rows] = eps / c
        a[rows, kept] += 1.0 - eps
        denom = rows.size
        if w is not None:
            a *= w
            denom = w[kept].sum()
            if not denom > 0:
                raise ValueError("class_weight gives the labels of this batch a total weight of 0")
    logp = log_softmax(logits)
    # a·log p with 0·(−inf) read as 0 (a float32 log-softmax can underflow to −inf)
    terms = np.multiply(a, logp, out=np.zeros_like(a), where=a != 0)
    value = -terms.sum() / denom
    dz = (a.sum(axis=1, keepdims=True) * np.exp(logp) - a) / denom
    return float(value), dz.astype(dt, copy=False)


def nll_loss(log_probs, target, *, class_weight=None, ignore_index=None):
    r"""Negative log-likelihood of integer labels under given log-probabilities, weighted mean.

    Shapes: log_probs (N, C) float, e.g. a log-softmax output; target (N,) integer in [0, C);
    class_weight None or non-negative (C,); returns (float, (N, C)). Token form: log_probs
    (..., C) with target (...), flattened as in :func:`softmax_cross_entropy`. The values are not
    checked to be log-probabilities (the loss is linear in them). With the kept samples
    :math:`S` (those not labelled ``ignore_index``):

    .. math::

        L = -\frac{1}{D}\sum_{i \in S} w_{y_i}\,x_{i y_i}, \quad D = \sum_{i \in S} w_{y_i},
        \qquad \frac{\partial L}{\partial x_{ik}} = -\frac{w_{y_i}}{D}\,[k = y_i]\,[i \in S],

    with :math:`w = 1` without weights (then :math:`D = |S|`). This is
    ``torch.nn.functional.nll_loss(weight=w, ignore_index=k)``; composed with a log-softmax it is
    :func:`softmax_cross_entropy`.

    Reference: Goodfellow, Bengio & Courville, *Deep Learning* (2016), §5.5 and §6.2.1.1.
    """
    if isinstance(log_probs, np.ndarray) and log_probs.ndim > 2:
        flat_x, flat = flatten_tokens(log_probs, target, "log_probs", probabilities=False)
        value, dx = nll_loss(flat_x, flat, class_weight=class_weight, ignore_index=ignore_index)
        return value, dx.reshape(log_probs.shape)
    check_array(log_probs, "log_probs", ndim=2)
    n, c = log_probs.shape
    dt = log_probs.dtype
    ignore = check_ignore_index(ignore_index)
    y = check_labels(target, n, c, name="target", ignore_index=ignore)
    rows, kept = kept_labels(y, ignore)
    wy = (np.ones(rows.size, dtype=dt) if class_weight is None else
          check_weights(class_weight, "class_weight", dt, shape=(c,))[kept])
    denom = wy.sum()
    if not denom > 0:
        raise ValueError("class_weight gives the labels of this batch a total weight of 0")
    value = -np.dot(wy, log_probs[rows, kept]) / denom
    dx = np.zeros_like(log_probs)
    dx[rows, kept] = -wy / denom
    return float(value), dx


def mse(pred, target):
    r"""Mean squared error over all elements.

    Shapes: pred any shape, float; target exactly pred's shape (integers are cast); returns
    (float, pred's shape). With :math:`n` the number of elements:

    .. math::

        L = \frac{1}{n}\sum_j (x_j - t_j)^2, \qquad \frac{\partial L}{\partial x_j} = \frac{2}{n}(x_j - t_j).

    Reference: Goodfellow, Bengio & Courville, *Deep Learning* (2016), §5.1.4.
    """
    check_array(pred, "pred")
    t = check_target_like(target, pred)
    diff = pred - t
    return float(np.sum(diff * diff) / diff.size), (2.0 / diff.size) * diff


def l1_loss(pred, target):
    r"""Mean absolute error over all elements.

    Shapes: pred any shape, float; target exactly pred's shape (integers are cast); returns
    (float, pred's shape). With :math:`n` the number of elements:

    .. math::

        L = \frac{1}{n}\sum_j |x_j - t_j|, \qquad
        \frac{\partial L}{\partial x_j} = \frac{1}{n}\operatorname{sign}(x_j - t_j),

    taking the subgradient 0 at :math:`x_j = t_j`, as ``torch.nn.functional.l1_loss`` does.

    Reference: Goodfellow, Bengio & Courville, *Deep Learning* (2016), §6.2.1.2 (the mean absolute
    error predicts the median).
    """
    check_array(pred, "pred")
    diff = pred - check_target_like(target, pred)
    return float(np.sum(np.abs(diff)) / diff.size), np.sign(diff) * (1.0 / diff.size)


def huber_loss(pred, target, *, delta=1.0):
    r"""Huber loss, mean over all elements: quadratic within ``delta`` of the target, linear beyond.

    Shapes: pred any shape, float; target exactly pred's shape; delta a positive number; returns
    (float, pred's shape). With :math:`d_j = x_j - t_j` and :math:`m_j = \min(|d_j|, \delta)`:

    .. math::

        \ell_j = \begin{cases} \tfrac12 d_j^2 & |d_j| \le \delta \\
                  \delta(|d_j| - \tfrac12\delta) & \text{otherwise} \end{cases}
                = m_j\,(|d_j| - \tfrac12 m_j), \qquad
        \frac{\partial L}{\partial x_j} = \frac{1}{n}\operatorname{clip}(d_j, -\delta, \delta).

    Both branches agree in value and slope at :math:`|d_j| = \delta`, so the loss is :math:`C^1`.
    This is ``torch.nn.functional.huber_loss(delta=δ)``; dividing by δ gives PyTorch's
    ``smooth_l1_loss(beta=δ)``.

    Reference: Huber (1964), "Robust Estimation of a Location Parameter", *Annals of Mathematical
    Statistics* 35(1), §4.
    """
    check_array(pred, "pred")
    diff = pred - check_target_like(target, pred)
    d = check_number(delta, "delta")
    if d <= 0:
        raise ValueError(f"delta must be positive, got {delta!r}")
    a = np.abs(diff)
    m = np.minimum(a, d)
    value = np.sum(m * (a - 0.5 * m)) / diff.size
    return float(value), np.clip(diff, -d, d) * (1.0 / diff.size)


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
    t = check_target_like(target, logits)
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
        pt = check_weights(pos_weight, "pos_weight", z.dtype, broadcast_to=z.shape) * t
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
    g = check_number(gamma, "gamma")
    if g < 0:
        raise ValueError(f"gamma must be non-negative, got {gamma!r}")
    if alpha is None:
        alpha_t = None
    elif np.ndim(alpha) == 0:
        alpha_t = check_weights(alpha, "alpha", dt)
    else:
        alpha_t = check_weights(alpha, "alpha", dt, shape=(c,))[y]
    rows = np.arange(n)
    logp_all = log_softmax(logits)
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


KL_REDUCTIONS = ("batchmean", "sum", "mean")


def kl_div(log_probs, target, *, reduction="batchmean", log_target=False):
    r"""Kullback–Leibler divergence :math:`\mathrm{KL}(p\,\|\,q)` of a target distribution
    :math:`p` from a predicted one given as log-probabilities :math:`\log q` (PyTorch's ``kl_div``).

    Shapes: log_probs any shape (typically (N, C)), float; target exactly that shape — the
    probabilities :math:`p` (non-negative), or :math:`\log p` with ``log_target=True``; returns
    (float, log_probs' shape). Pointwise, with :math:`0 \log 0 = 0`:

    .. math::

        \ell_j = p_j(\log p_j - x_j), \qquad L = \frac{1}{D}\sum_j \ell_j, \qquad
        \frac{\partial L}{\partial x_j} = -\frac{p_j}{D},

    where :math:`x = \log q` and :math:`D` is the reduction: ``"batchmean"`` (the default) divides
    by N = log_probs.shape[0], which is the mean over samples of the true divergence;
    ``"sum"`` by 1; ``"mean"`` by the number of elements (PyTorch's default, which PyTorch itself
    notes is not the divergence). The rows are not required to sum to 1, as in PyTorch.

    Reference: Kullback & Leibler (1951), "On Information and Sufficiency", *Annals of Mathematical
    Statistics* 22(1); as a training loss for soft targets, Hinton, Vinyals & Dean (2015),
    "Distilling the Knowledge in a Neural Network", §2.
    """
    check_array(log_probs, "log_probs")
    t = check_target_like(target, log_probs)
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"reduction must be one of 'batchmean', 'sum', 'mean', got {reduction!r}")
    if not isinstance(log_target, (bool, np.bool_)):
        raise TypeError(f"log_target must be a bool, got {log_target!r}")
    if log_target:
        p, logp = np.exp(t), t
    else:
        if t.min() < 0:
            raise ValueError(f"target must hold non-negative probabilities, got min {t.min():.6g}"
                             f" (pass log_target=True for log-probabilities)")
        p = t
        logp = np.log(t, out=np.zeros_like(t), where=t > 0)      # 0 log 0 = 0
    denom = {"batchmean": log_probs.shape[0], "sum": 1, "mean": log_probs.size}[reduction]
    value = np.sum(p * (logp - log_probs)) / denom
    return float(value), p * (-1.0 / denom)


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
    "nll": nll_loss,
    "l1": l1_loss,
    "huber": huber_loss,
    "kl": kl_div,
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
