r"""Networks for tables of numbers: a configurable MLP with batch normalisation, DiabetesNet, and
logistic regression. Training them (:func:`~nograd.estimators.tabular.train_classifier`,
:func:`~nograd.estimators.tabular.make_fit_predict` for :func:`nograd.data.cross_validate`) lives in
:mod:`nograd.estimators.tabular`; the old names here still work.

DiabetesNet (Zhang, Ahmed, Hasan, Gedeon & Hossain 2024, "DiabetesNet: A Deep Learning Approach
to Diabetes Diagnosis", arXiv:2403.07483, Method section) is the authors' notebook network: three blocks of
``Linear → sigmoid → BatchNorm1d`` (widths 64, 32, 16), then ``Linear(16, 2) → sigmoid``, trained
with softmax cross-entropy on those two sigmoids. nograd's earlier variant, ``Linear → BatchNorm1d
→ ReLU`` with a linear head, is :class:`TabularMLP` with its defaults (model ``tabular-mlp``).

>>> import numpy as np
>>> net = DiabetesNet(8, rng=0)
>>> [type(m).__name__ for m in net][:4], net[-2].out_features
(['Linear', 'Sigmoid', 'BatchNorm1d', 'Linear'], 2)
>>> out = net(np.zeros((3, 8), np.float32))
>>> out.shape, bool(np.all((out > 0) & (out < 1)))
((3, 2), True)
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_positive
from ..core.module import Sequential
from ..layers import BatchNorm1d, Dropout, Linear, Sigmoid, get_activation
from .registry import register_model

__all__ = ["TabularMLP", "DiabetesNet", "logistic_regression"]


class TabularMLP(Sequential):
    r"""``[Linear → BatchNorm1d → activation (→ Dropout)] × len(hidden)``, then a ``Linear`` head.

    Shapes: ``x (N, in_features) -> logits (N, num_classes)``.

    The defaults — hidden widths (64, 32, 16), batch normalisation after every hidden ``Linear``
    and before its ReLU (Ioffe & Szegedy 2015, §3.2), two outputs, no dropout — are nograd's
    earlier DiabetesNet variant; the authors' network is :class:`DiabetesNet`.
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


def _torch_default_linear(in_features, out_features, rng, dtype):
    """``Linear`` initialised as PyTorch's ``nn.Linear``: weight and bias both
    :math:`U(-1/\\sqrt{n_{in}}, 1/\\sqrt{n_{in}})` (``kaiming_uniform_(a=√5)`` and its bias rule)."""
    bound = 1.0 / np.sqrt(in_features)
    layer = Linear(in_features, out_features, rng=rng, dtype=dtype,
                   init=lambda shape, r, dt: r.uniform(-bound, bound, shape).astype(dt))
    layer.params["bias"][...] = rng.uniform(-bound, bound, out_features)
    return layer


class DiabetesNet(Sequential):
    r"""DiabetesNet as the authors built it (Zhang et al. 2024, arXiv:2403.07483, Method section,
    and their notebook as read for nograd issue #19, item 10).

    Shapes: ``x (N, in_features) -> p (N, 2)``, each entry in (0, 1). With
    :math:`\sigma(z) = 1/(1 + e^{-z})` and :math:`\mathrm{BN}` batch normalisation
    (:class:`~nograd.layers.BatchNorm1d`, eps :math:`10^{-5}`, momentum 0.1):

    .. math::
        h_0 = x, \qquad h_\ell = \mathrm{BN}_\ell\big(\sigma(h_{\ell-1} W_\ell^\top + b_\ell)\big)
        \ (\ell = 1, 2, 3;\ \text{widths } 64, 32, 16), \qquad
        p = \sigma(h_3 W_4^\top + b_4) \in (0, 1)^2.

    The normalisation comes *after* the sigmoid, and the output is a pair of sigmoids, not logits:
    the notebook applies softmax cross-entropy to them, so training minimises
    :math:`-\log \mathrm{softmax}(p)_y` (nograd's ``"cross-entropy"`` on this output; a test
    checks loss and gradients against PyTorch's ``CrossEntropyLoss`` on the same sigmoids).
    The predicted class is :math:`\arg\max_c p_c` (class 0 = no diabetes, 1 = diabetes). Since
    :math:`p \in (0,1)^2`, that loss is at least :math:`\log(1 + e^{-1}) \approx 0.313`.

    Weights and biases start as PyTorch's ``nn.Linear`` defaults, :math:`U(\pm 1/\sqrt{n_{in}})`
    (what a PyTorch notebook gets without asking), drawn from ``rng``. A :class:`Sequential`: forward, backward and jvp are the chain rule over
    its eleven layers. Batch norm uses batch statistics with ``train=True`` (a batch needs at least
    two samples) and the running statistics otherwise.
    """

    def __init__(self, in_features: int, *, rng=None, dtype=np.float32):
        check_positive(in_features, "in_features", integer=True)
        rng = as_rng(rng)
        layers, width = [], int(in_features)
        for h in (64, 32, 16):
            layers += [_torch_default_linear(width, h, rng, dtype), Sigmoid(),
                       BatchNorm1d(h, dtype=dtype)]
            width = h
        layers += [_torch_default_linear(width, 2, rng, dtype), Sigmoid()]
        super().__init__(*layers)
        self.in_features, self.num_classes, self.hidden = int(in_features), 2, (64, 32, 16)


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
    """DiabetesNet (Zhang et al. 2024): [Linear, sigmoid, BatchNorm1d] x 3 (64, 32, 16), Linear, sigmoid."""
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
