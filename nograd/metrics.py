"""Metrics: classification scores, Hoyer sparsity, the alignment of two updates, FLOP counts.

>>> import numpy as np
>>> y_true = np.array([0, 0, 1, 1, 2])
>>> y_pred = np.array([0, 1, 1, 1, 2])
>>> accuracy(y_true, y_pred)
0.8
>>> confusion_matrix(y_true, y_pred).tolist()
[[1, 1, 0], [0, 2, 0], [0, 0, 1]]
>>> round(hoyer_sparsity(np.array([0.0, 0.0, 3.0, 0.0])), 6)
1.0
>>> round(angle({"w": np.array([1.0, 0.0])}, {"w": np.array([1.0, 1.0])}), 9)
45.0
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .core.checks import NonFiniteError, check_int

__all__ = ["predicted_labels", "accuracy", "confusion_matrix", "macro_f1", "sensitivity",
           "specificity", "roc_auc", "hoyer_sparsity", "cosine", "angle", "cosine_per_key", "angle_per_key",
           "count_flops"]


# --------------------------------------------------------------------------- labels
def predicted_labels(scores, name: str = "y_pred") -> np.ndarray:
    """Class labels from predictions: integer labels pass through; scores ``(N, C)`` with C ≥ 2
    give their argmax; float ``(N,)`` or ``(N, 1)`` are logits of the positive class, thresholded at 0.
    """
    if not isinstance(scores, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(scores).__name__}")
    if scores.dtype.kind in "iu":
        if scores.ndim != 1:
            raise ValueError(f"{name} holds integers, so it must be 1-D labels, got shape {scores.shape}")
        return scores
    if scores.dtype.kind == "b":
        return scores.astype(np.int64).reshape(-1)
    if scores.dtype.kind != "f":
        raise TypeError(f"{name} must hold labels or float scores, got dtype {scores.dtype}")
    if not np.isfinite(scores).all():
        raise NonFiniteError(f"{name} contains NaN or inf")
    if scores.ndim == 2 and scores.shape[1] >= 2:
        return scores.argmax(axis=1)
    if scores.ndim == 1 or (scores.ndim == 2 and scores.shape[1] == 1):
        return (scores.reshape(-1) > 0).astype(np.int64)
    raise ValueError(f"{name} must be labels (N,), logits (N,) or (N, 1), or scores (N, C), "
                     f"got shape {scores.shape}")


def _pair(y_true, y_pred):
    t = predicted_labels(y_true, "y_true")
    p = predicted_labels(y_pred, "y_pred")
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} samples but y_pred has {len(p)}")
    if len(t) == 0:
        raise ValueError("y_true is empty; a score needs at least one sample")
    if t.min() < 0 or p.min() < 0:
        raise ValueError("labels must be non-negative integers")
    return t, p


def accuracy(y_true, y_pred) -> float:
    """Fraction of samples whose predicted label equals the true one.

    ``y_pred`` may be labels or scores (see :func:`predicted_labels`); ``y_true`` labels or one-hot rows.
    Token level: scores ``(..., C)`` such as a language model's logits ``(B, T, V)``, against labels
    ``(...)`` or one-hot ``(..., C)``, are compared position by position over all B·T tokens.
    """
    if (isinstance(y_true, np.ndarray) and isinstance(y_pred, np.ndarray) and y_pred.ndim > 2
            and y_pred.dtype.kind == "f" and y_pred.shape[-1] >= 2
            and y_true.shape in (y_pred.shape[:-1], y_pred.shape)):
        c = y_pred.shape[-1]
        y_true = y_true.reshape(-1, c) if y_true.shape == y_pred.shape else y_true.reshape(-1)
        y_pred = y_pred.reshape(-1, c)
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """``M[i, j]`` = number of samples of true class ``i`` predicted as ``j``; shape ``(K, K)``,
    ``K = num_classes`` or one more than the largest label seen."""
    t, p = _pair(y_true, y_pred)
    k = int(max(t.max(), p.max())) + 1
    if num_classes is not None:
        check_int(num_classes, "num_classes")
        if num_classes < k:
            raise ValueError(f"num_classes={num_classes} but the labels go up to {k - 1}")
        k = int(num_classes)
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def macro_f1(y_true, y_pred, num_classes: int | None = None) -> float:
    r"""Unweighted mean over classes of :math:`F_1 = 2\,TP / (2\,TP + FP + FN)`.

    Classes that occur neither in ``y_true`` nor in ``y_pred`` are left out of the mean; a class
    that occurs in one of them but is never predicted correctly counts with :math:`F_1 = 0`.
    """
    m = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(m).astype(np.float64)
    fp = m.sum(axis=0) - tp
    fn = m.sum(axis=1) - tp
    present = (tp + fp + fn) > 0
    f1 = 2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])
    return float(f1.mean())


def _binary(y_true, y_pred, positive):
    t, p = _pair(y_true, y_pred)
    if positive not in (0, 1) or isinstance(positive, bool):
        raise ValueError(f"positive must be the label 0 or 1, got {positive!r}")
    if t.max() > 1 or p.max() > 1:
        raise ValueError(f"sensitivity and specificity are binary: labels must be 0 or 1, got up to "
                         f"{max(t.max(), p.max())}")
    return t == positive, p == positive


def sensitivity(y_true, y_pred, positive: int = 1) -> float:
    """True-positive rate (recall of the positive class) :math:`TP / (TP + FN)`, binary labels 0/1.

    Raises ``ValueError`` when ``y_true`` has no positive sample (the rate is undefined).
    """
    t, p = _binary(y_true, y_pred, positive)
    if not t.any():
        raise ValueError(f"sensitivity is undefined: y_true has no sample of the positive class {positive}")
    return float(np.mean(p[t]))


def specificity(y_true, y_pred, positive: int = 1) -> float:
    """True-negative rate :math:`TN / (TN + FP)`, binary labels 0/1.

    Raises ``ValueError`` when ``y_true`` has no negative sample (the rate is undefined).
    """
    t, p = _binary(y_true, y_pred, positive)
    if t.all():
        raise ValueError(f"specificity is undefined: y_true has no sample outside the positive "
                         f"class {positive}")
    return float(np.mean(~p[~t]))


def roc_auc(y_true, scores, positive: int = 1) -> float:
    r"""Area under the ROC curve of a binary scorer, ties counted as half (Hanley & McNeil 1982,
    "The meaning and use of the area under a ROC curve", Radiology 143, §2):

    .. math::
        \mathrm{AUC} = P(s_+ > s_-) + \tfrac12 P(s_+ = s_-)
                     = \frac{R_+ - n_+(n_+ + 1)/2}{n_+\, n_-},

    the Mann–Whitney statistic: :math:`R_+` is the sum of the positive samples' ranks among all
    scores, tied scores sharing their average rank. ``y_true`` holds labels 0/1 (``positive`` is the
    positive one); ``scores`` is ``(N,)`` — higher means more positive — or ``(N, 2)`` logits or
    probabilities per class, ranked by ``scores[:, positive] - scores[:, 1 - positive]``.
    Raises ``ValueError`` when ``y_true`` lacks one of the classes (the area is undefined).

    >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    t = predicted_labels(y_true, "y_true")
    if positive not in (0, 1) or isinstance(positive, bool):
        raise ValueError(f"positive must be the label 0 or 1, got {positive!r}")
    if len(t) and (t.min() < 0 or t.max() > 1):
        raise ValueError(f"roc_auc is binary: y_true labels must be 0 or 1, got {np.unique(t).tolist()}")
    if not isinstance(scores, np.ndarray) or scores.dtype.kind not in "iuf":
        raise TypeError(f"scores must be a real numpy array, got {type(scores).__name__}")
    if scores.ndim == 2 and scores.shape[1] == 2:
        s = scores[:, positive].astype(np.float64) - scores[:, 1 - positive]
    elif scores.ndim == 1 or (scores.ndim == 2 and scores.shape[1] == 1):
        s = scores.reshape(-1).astype(np.float64)
    else:
        raise ValueError(f"scores must be (N,) scores of the positive class or (N, 2) per-class "
                         f"scores, got shape {scores.shape}")
    if len(s) != len(t):
        raise ValueError(f"y_true has {len(t)} samples but scores has {len(s)}")
    if not np.isfinite(s).all():
        raise NonFiniteError("scores contains NaN or inf")
    pos = t == positive
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc is undefined: y_true has {n_pos} positive and {n_neg} negative "
                         f"samples; it needs both")
    values, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    below = np.cumsum(counts) - counts                  # samples with a strictly smaller score
    avg_rank = below + (counts + 1) / 2.0               # 1-based ranks, ties averaged
    r_pos = float(avg_rank[inverse.reshape(-1)][pos].sum())
    return (r_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


# --------------------------------------------------------------------------- sparsity
def hoyer_sparsity(x, axis: int = -1, *, zero: float = 1.0):
    r"""Hoyer's sparsity of each vector along ``axis`` (Hoyer 2004, "Non-negative matrix
    factorization with sparseness constraints", JMLR 5, eq. 1):

    .. math::
        s(x) = \frac{\sqrt n - \|x\|_1 / \|x\|_2}{\sqrt n - 1} \in [0, 1],

    1 for a vector with a single non-zero entry, 0 for a vector whose entries all have the same
    magnitude. An all-zero vector has no ratio; it is given ``zero``: 1 by default (no active
    entry at all), or ``np.nan`` to mark it as undefined and leave it out of later means, as
    :func:`nograd.analysis.sparsity` does (Tosato et al.). Returns a float for a 1-D ``x``, else an array without ``axis`` (one value per sample).
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype.kind not in "biuf" or x.ndim == 0:
        raise TypeError(f"x must be a real array with at least one axis, got {x.dtype} of shape {x.shape}")
    n = x.shape[axis]
    if n < 2:
        raise ValueError(f"x has {n} entries along axis {axis}; Hoyer sparsity needs at least 2")
    a = np.abs(x.astype(np.float64))
    if not np.isfinite(a).all():
        raise NonFiniteError("x contains NaN or inf")
    l1 = a.sum(axis=axis)
    l2 = np.sqrt((a * a).sum(axis=axis))
    ratio = np.divide(l1, l2, out=np.ones_like(l1), where=l2 > 0)
    s = (math.sqrt(n) - ratio) / (math.sqrt(n) - 1)
    s = np.clip(s, 0.0, 1.0)          # rounding can step a hair outside [0, 1]
    s = np.where(l2 > 0, s, float(zero))
    return float(s) if s.ndim == 0 else s


# --------------------------------------------------------------------------- alignment
def _as_dict(a, name):
    if isinstance(a, np.ndarray):
        return {"": a}
    if isinstance(a, Mapping):
        return a
    raise TypeError(f"{name} must be a dict name -> array or an array, got {type(a).__name__}")


def _matched(a, b):
    da, db = _as_dict(a, "a"), _as_dict(b, "b")
    if isinstance(a, np.ndarray) != isinstance(b, np.ndarray):
        raise TypeError("a and b must both be arrays or both be dicts")
    if list(da) != list(db) and set(da) != set(db):
        raise ValueError(f"a and b have different keys: only in a {sorted(set(da) - set(db))}, "
                         f"only in b {sorted(set(db) - set(da))}")
    out = {}
    for k in da:
        x, y = da[k], db[k]
        label = f"[{k!r}]" if k else ""
        for v, nm in ((x, "a"), (y, "b")):
            if not isinstance(v, np.ndarray) or v.dtype.kind not in "iuf":
                raise TypeError(f"{nm}{label} must be a real numpy array, got {type(v).__name__}")
        if x.shape != y.shape:
            raise ValueError(f"a{label} has shape {x.shape} but b{label} has shape {y.shape}")
        x64, y64 = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
        if not (np.isfinite(x64).all() and np.isfinite(y64).all()):
            raise NonFiniteError(f"a{label} or b{label} contains NaN or inf")
        out[k] = (x64, y64)
    if not out:
        raise ValueError("a and b are empty dicts")
    return out


def _angle_deg(pairs, what):
    """Angle between the concatenations, by Kahan's formula 2·atan2(‖â − b̂‖, ‖â + b̂‖) (exactly 0
    for identical inputs, accurate near 0° and 180°, where arccos of the cosine is not)."""
    na = math.sqrt(sum(float(x @ x) for x, _ in pairs))
    nb = math.sqrt(sum(float(y @ y) for _, y in pairs))
    if na == 0 or nb == 0:
        raise ValueError(f"{what}: {'a' if na == 0 else 'b'} is all zeros, so the angle is undefined")
    d = math.sqrt(sum(float(np.sum((x / na - y / nb) ** 2)) for x, y in pairs))
    s = math.sqrt(sum(float(np.sum((x / na + y / nb) ** 2)) for x, y in pairs))
    return math.degrees(2.0 * math.atan2(d, s))


def _cosine(pairs, what):
    na = math.sqrt(sum(float(x @ x) for x, _ in pairs))
    nb = math.sqrt(sum(float(y @ y) for _, y in pairs))
    if na == 0 or nb == 0:
        raise ValueError(f"{what}: {'a' if na == 0 else 'b'} is all zeros, so the cosine is undefined")
    c = sum(float(x @ y) for x, y in pairs) / (na * nb)
    return min(1.0, max(-1.0, c))


def cosine(a, b) -> float:
    r"""Cosine similarity :math:`\langle a, b\rangle / (\|a\|\,\|b\|)` of two arrays, or of two update
    dicts (same keys and shapes) taken as one long vector each — the overall alignment of a rule's
    update with the true gradient. Computed in float64; an all-zero side raises ``ValueError``."""
    return _cosine(list(_matched(a, b).values()), "cosine")


def angle(a, b) -> float:
    """The angle in degrees, in [0, 180], between ``a`` and ``b`` (arrays or update dicts taken as one
    vector each; see :func:`cosine`). Identical inputs give exactly 0."""
    return _angle_deg(list(_matched(a, b).values()), "angle")


def cosine_per_key(a, b) -> dict[str, float]:
    """:func:`cosine` of each entry of two update dicts separately (per layer)."""
    return {k: _cosine([v], f"cosine of {k!r}") for k, v in _matched(a, b).items()}


def angle_per_key(a, b) -> dict[str, float]:
    """:func:`angle` of each entry of two update dicts separately (per layer), in degrees."""
    return {k: _angle_deg([v], f"angle of {k!r}") for k, v in _matched(a, b).items()}


# --------------------------------------------------------------------------- FLOPs
#: elementwise FLOPs per entry (forward, backward) of the core layers without a matrix product
_ELEMENTWISE = {"Identity": (0, 0), "Flatten": (0, 0), "Dropout": (1, 1),
                "LayerNorm": (7, 14), "BatchNorm1d": (7, 14), "BatchNorm2d": (7, 14)}


def _conv_flops(module, x, y):
    """Conv2d / ConvTranspose2d by the direct arithmetic (whatever algorithm runs): a multiply-add
    per weight entry and output (Conv2d) or input (transposed) position, forward; twice the product
    backward (input cotangent and weight gradient); the bias one add per output entry each way."""
    from .layers import Conv2d

    kh, kw = module.kernel_size
    per_group_in = module.in_channels // module.groups
    positions = y[:, :1].size if isinstance(module, Conv2d) else x[:, :1].size
    mm = 2 * positions * module.out_channels * per_group_in * kh * kw
    bias = y.size if "bias" in module.params else 0
    return mm + bias, 2 * mm + bias


def _pool_flops(module, x, y):
    """Pooling: a comparison or an add per window entry forward; max pooling routes one value per
    output backward, average pooling spreads each output over its window."""
    from .layers import MaxPool2d

    if not hasattr(module, "kernel_size"):               # global / adaptive average: one add per input
        return x.size, x.size
    window = module.kernel_size[0] * module.kernel_size[1]
    return window * y.size, (y.size if isinstance(module, MaxPool2d) else window * y.size)


def _leaf_flops(module, x, y):
    """(forward, backward) FLOPs of one leaf module for input ``x`` and output ``y``."""
    from .layers import Activation, Embedding, Identity, Linear

    hook = getattr(module, "flops", None)
    if callable(hook):
        f = hook(x.shape, y.shape)
        fwd, bwd = (f, 2 * f) if isinstance(f, (int, np.integer)) else f
        return int(fwd), int(bwd)
    cls = type(module).__name__
    if isinstance(module, Linear):
        n = int(np.prod(x.shape[:-1]))
        mm = 2 * n * module.in_features * module.out_features
        bias = n * module.out_features if "bias" in module.params else 0
        return mm + bias, 2 * mm + bias
    if isinstance(module, Identity):
        return 0, 0
    if cls in ("Conv2d", "ConvTranspose2d"):
        return _conv_flops(module, x, y)
    if cls in ("MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "AdaptiveAvgPool2d"):
        return _pool_flops(module, x, y)
    if isinstance(module, Activation):
        return y.size, 2 * y.size
    if isinstance(module, Embedding):
        return 0, y.size
    if cls in _ELEMENTWISE:
        f, b = _ELEMENTWISE[cls]
        return f * y.size, b * y.size
    raise ValueError(f"count_flops has no count for {cls}; give the class a method "
                     f"flops(input_shape, output_shape) returning forward FLOPs (or a pair "
                     f"(forward, backward))")


def _walk(module, x, name, table):
    """Run ``module`` on ``x`` block by block along its structural view (:meth:`Module.chain`),
    entering ``"sum"`` composites (Residual) branch by branch; record each leaf's (or hooked
    block's) count in ``table`` under its dotted name. Returns ``(y, forward, backward)``."""
    from .core.module import dotted

    if callable(getattr(module, "flops", None)):
        blocks = [(name, module)]
    else:
        blocks = module.chain(name)
    fwd = bwd = 0
    for bname, m in blocks:
        if callable(getattr(m, "flops", None)) or not m.children:
            y = m(x)
            f, b = _leaf_flops(m, x, y)
            table[bname or type(m).__name__] = (f, b)
        elif m.combinator == "sum":
            f = b = 0
            for cname, branch in m.children.items():
                _, fb, bb = _walk(branch, x, dotted(bname, cname), table)
                f, b = f + fb, b + bb
            y = m(x)
            f += y.size * max(len(m.children) - 1, 1)     # the additions of the branches
        else:
            raise ValueError(f"count_flops cannot walk {type(m).__name__}; give it a method "
                             f"flops(input_shape, output_shape)")
        x, fwd, bwd = y, fwd + f, bwd + b
    return x, fwd, bwd


def count_flops(model, input_shape, *, batch_size: int = 1) -> dict:
    """Floating-point operations of one forward and one backward pass of ``model``.

    ``input_shape`` is the shape of one sample; the count is for a batch of ``batch_size``. Counts
    (a multiply-add is 2 FLOPs): Linear ``2·N·in·out`` (+ ``N·out`` for the bias) forward and twice
    the product (``dx`` and ``dW``, + ``N·out`` for ``db``) backward; activations 1 per output
    entry forward, 2 backward (the derivative and the product); LayerNorm/BatchNorm 7 per entry
    forward, 14 backward; Dropout 1 and 1; Flatten/Identity 0; Residual adds one per output entry;
    Conv2d/ConvTranspose2d ``2·positions·C_out·(C_in/groups)·k_h·k_w`` forward (the direct
    method's arithmetic, whatever algorithm runs) and twice that backward; 2-D pooling one
    operation per window entry forward, max pooling one per output backward.
    Other modules may define ``flops(input_shape, output_shape)`` returning forward FLOPs (backward
    is then taken as twice that) or a pair ``(forward, backward)``; a module with neither raises
    ``ValueError``. The model runs once, in evaluation mode, on zeros to learn the shapes.

    Returns ``{"forward": int, "backward": int, "per_layer": {name: (forward, backward)}}``.
    """
    from .core.checks import check_positive
    from .core.module import Module

    if not isinstance(model, Module):
        raise TypeError(f"model must be a nograd Module, got {type(model).__name__}")
    check_positive(batch_size, "batch_size", integer=True)
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise TypeError(f"input_shape must be a tuple of ints, got {input_shape!r}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"input_shape must be non-empty positive sizes, got {input_shape!r}")
    x = np.zeros((int(batch_size),) + shape, dtype=model.dtype or np.float32)
    table: dict = {}
    _, fwd, bwd = _walk(model, x, "", table)
    return {"forward": int(fwd), "backward": int(bwd), "per_layer": table}
