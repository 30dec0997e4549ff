"""The registry of every learning rule, for the battery in ``test_rule_registry.py``.

An entry says, for one registered rule name (``nograd.rules.available_rules()``):

- how to build the rule for a fast run (``options``; ``seed=`` is added when the rule takes one);
- a tiny model it trains and the problem (``model(dtype, rng)``, ``data(dtype)``, what
  ``info["loss"]`` is);
- whether its update depends on its seed and generator (``random``);
- a model it must refuse in ``check_model``, and the words the error must contain (the rule's
  class name, and the refused layer's when there is one);
- the short training run (optimizer, epochs, batch size) and its bar: the mean training loss of the
  last epoch is at most ``loss_ratio`` times that of the first;
- checks a rule is known to fail (``known``, check name → reason): the battery marks them
  ``xfail(strict=True)``, so a fix shows up as an unexpected pass.

A rule registered without an entry here, or an entry without a registered rule, fails
``test_every_registered_rule_has_an_entry``; a new rule adds its entry here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from nograd.core import Residual, Sequential
from nograd.core.optim import SGD, Adam
from nograd.data import blobs
from nograd.layers import Conv2d, Flatten, LayerNorm, Linear, Tanh, TransformerBlock
from nograd.rules import get_rule

#: the problem every entry trains on: 3 Gaussian blobs in 4 dimensions
N_SAMPLES, N_CLASSES, N_FEATURES = 60, 3, 4
#: the seed of the model's initial weights (the rule's own seed is what the battery varies)
MODEL_SEED = 11


def blobs_task(dtype=np.float32):
    """``(X (60, 4), y (60,))``: 3 blobs, centres in ``[-2, 2]^4``, unit spread; integer labels."""
    return blobs(N_SAMPLES, N_CLASSES, N_FEATURES, box=4.0, rng=0, dtype=np.dtype(dtype))


def mlp(d_in=N_FEATURES, hidden=(16, 16)):
    """A builder ``(dtype, rng) -> Linear(d_in, h1) Tanh ... Linear(h_last, 3)`` (two hidden
    layers, so that the rules' paths to a layer below another hidden layer are exercised)."""
    def make(dtype, rng):
        sizes = (d_in, *hidden)
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [Linear(a, b, rng=rng, dtype=dtype), Tanh()]
        return Sequential(*layers, Linear(sizes[-1], N_CLASSES, rng=rng, dtype=dtype))
    return make


# ------------------------------------------------------------------ models a rule must refuse
def with_attention():
    """A chain with a TransformerBlock (a composite with its own backward) in the middle."""
    r = np.random.default_rng(0)
    return Sequential(Linear(4, 4, rng=r), TransformerBlock(4, 2, rng=r), Linear(4, 3, rng=r))


def residual():
    """A Residual block at the top: no single chain of layers."""
    r = np.random.default_rng(0)
    return Residual(Sequential(Linear(4, 4, rng=r), Tanh()))


def with_layernorm():
    """An MLP with a LayerNorm (trainable arrays that are not a feedback weight)."""
    r = np.random.default_rng(0)
    return Sequential(Linear(4, 6, rng=r), LayerNorm(6), Tanh(), Linear(6, 3, rng=r))


def with_conv():
    """A convolution before the fully connected layers."""
    r = np.random.default_rng(0)
    return Sequential(Conv2d(1, 2, 3, rng=r), Flatten(), Linear(8, 6, rng=r), Tanh(),
                      Linear(6, 3, rng=r))


def no_params():
    """A model with nothing to train."""
    return Sequential(Tanh())


def adam(lr):
    return lambda params: Adam(params, lr=lr)


def sgd(lr):
    return lambda params: SGD(params, lr=lr)


@dataclass(frozen=True)
class RuleEntry:
    name: str                                   # the registered name
    options: dict = field(default_factory=dict)  # constructor options for a fast tiny run
    seeded: bool = True                         # the constructor takes seed=
    random: bool = True                         # another seed gives another update
    model: Callable = mlp()                     # model(dtype, rng) -> Module it trains
    data: Callable = blobs_task                 # data(dtype) -> (X, y)
    loss: str = "softmax cross-entropy of the model's output"   # what info["loss"] is
    refuse: Callable | None = None              # refuse() -> a model check_model must refuse
    refuse_layer: str | None = None             # the class the refusal must name (with the rule)
    refuse_options: dict | None = None          # other options for the refusal (None: options)
    optimizer: Callable = adam(0.01)            # optimizer(params) for the short run
    epochs: int = 20
    batch_size: int = 20
    loss_ratio: float = 0.5                     # bar: last epoch's loss <= ratio * first epoch's
    known: dict = field(default_factory=dict)   # check name -> reason it is known to fail

    def make(self, seed=0, options=None):
        """The rule, built through the registry (``get_rule``) with ``seed`` when it takes one."""
        opts = dict(self.options if options is None else options)
        if self.seeded:
            opts["seed"] = seed
        return get_rule(self.name, **opts)

    def build(self, dtype=np.float32):
        """``(model, X, y)`` in ``dtype``, the model's weights drawn from :data:`MODEL_SEED`."""
        model = self.model(np.dtype(dtype), np.random.default_rng(MODEL_SEED))
        X, y = self.data(dtype)
        return model, X, y


_FEEDBACK = {"refuse": with_attention, "refuse_layer": "TransformerBlock"}
_CHAIN = {"refuse": residual, "refuse_layer": "Residual"}
_LAYERWISE = {"refuse": with_conv, "refuse_layer": "Conv2d"}
_MEZO_RESTORE = ("MeZO's default (exact_restore=False) does the paper's in-place arithmetic "
                 "theta + eps z - 2 eps z + eps z, which does not give theta back bit for bit "
                 "(documented in its docstring); exact_restore=True does")

ENTRIES = [
    RuleEntry("backprop", seeded=False, random=False, loss_ratio=0.2),
    RuleEntry("fa", **_FEEDBACK, loss_ratio=0.3),
    # uSF: B = sign(W) * sqrt(2/fan_in) follows the weights; nothing in it is drawn
    RuleEntry("usf", random=False, **_FEEDBACK, loss_ratio=0.3),
    RuleEntry("frsf", **_FEEDBACK, loss_ratio=0.3),
    RuleEntry("brsf", **_FEEDBACK, loss_ratio=0.3),
    RuleEntry("dfa", **_CHAIN, loss_ratio=0.3),
    RuleEntry("optical-dfa", **_CHAIN, loss_ratio=0.35),
    # PEPITA and AFA refuse norm layers, which the FA family and DFA accept
    RuleEntry("pepita", refuse=with_layernorm, refuse_layer="LayerNorm", epochs=30, loss_ratio=0.7),
    RuleEntry("afa", refuse=with_layernorm, refuse_layer="LayerNorm", epochs=30, loss_ratio=0.7),
    # Forward-Forward: the label goes into the input, appended to the 4 features (first Linear
    # takes 4 + 3); its loss is the sum of the hidden layers' FF losses
    RuleEntry("ff", model=mlp(d_in=N_FEATURES + N_CLASSES), **_LAYERWISE,
              loss="sum of the hidden layers' Forward-Forward losses", loss_ratio=0.45),
    RuleEntry("mono-forward", **_LAYERWISE, loss="last layer's cross-entropy", loss_ratio=0.25),
    RuleEntry("foton", random=False, **_LAYERWISE, loss_ratio=0.15,
              loss="cross-entropy of temperature x output"),
    # weight guesses train any module; activation guesses need a Sequential
    RuleEntry("forward-gradient", options={"tangents": 2}, refuse=residual, refuse_layer="Residual",
              refuse_options={"guess": "activation"}, epochs=30, loss_ratio=0.5),
    RuleEntry("forward-gradient-local", **_CHAIN, loss_ratio=0.3),
    RuleEntry("spsa", refuse=no_params, optimizer=sgd(0.05), epochs=30, loss_ratio=0.45),
    # MeZO refuses a NaN in x and a y without len(x) targets before perturbing (those cases pass);
    # a y of shape (N, 1) is refused by the loss, which needs the output, so only after theta + eps z
    RuleEntry("mezo", refuse=no_params, optimizer=sgd(0.05), epochs=30, loss_ratio=0.45,
              known={"grads-change-nothing": _MEZO_RESTORE,
                     "refused-batch-changes-nothing":
                         "y of shape (N, 1) is refused by the loss (it must see the (N, 3) logits), "
                         "so only after MeZO's first in-place perturbation theta + eps z; the "
                         "paper's arithmetic (exact_restore=False) then restores theta to an ulp, "
                         "not bit for bit. The other refused batches (one label too few, a NaN "
                         "in x) are caught before theta is touched and leave it bit for bit"}),
    # pipelined backprop (three stages on the mlp, delays 4, 2, 0) with SC+LWP, which apply SGD
    # with momentum themselves: the optimizer must be SGD; nothing is drawn
    RuleEntry("pipelined", seeded=False, random=False, refuse=no_params,
              optimizer=lambda params: SGD(params, lr=0.02, momentum=0.9), loss_ratio=0.3),
]


# ------------------------------------------------------------------ recurrent rules (issue #27)
def gru_sequence(dtype, rng):
    """GRU(1 → 8) over the 4 features read as a sequence of 4 steps, then Flatten, Linear(32, 3)."""
    from nograd.layers import GRU

    return Sequential(GRU(1, 8, rng=rng, dtype=dtype), Flatten(), Linear(4 * 8, N_CLASSES, rng=rng,
                                                                         dtype=dtype))


def blobs_sequence(dtype=np.float32):
    """The blobs as sequences ``(60, 4, 1)``: one feature per time step."""
    X, y = blobs_task(dtype)
    return X.reshape(N_SAMPLES, N_FEATURES, 1), y


def gru_in_residual():
    """A GRU inside a Residual block's chain: DSF replaces the backward of recurrent blocks of a
    chain (or of a skip connection around one) only."""
    from nograd.layers import GRU

    r = np.random.default_rng(0)
    return Sequential(Residual(Sequential(GRU(4, 4, rng=r), Linear(4, 4, rng=r))), Flatten(),
                      Linear(4, 3, rng=r))


_RECURRENT = {"model": gru_sequence, "data": blobs_sequence, "refuse": gru_in_residual,
              "refuse_layer": "Residual", "epochs": 30}
ENTRIES += [
    RuleEntry("dsf", seeded=False, random=False, **_RECURRENT, loss_ratio=0.5),   # the authors' A
    RuleEntry("tbptt", seeded=False, random=False, **_RECURRENT, loss_ratio=0.5),
]


def with_batchnorm():
    """An MLP with BatchNorm1d: batch statistics couple the samples VCAS drops."""
    from nograd.layers import BatchNorm1d

    r = np.random.default_rng(0)
    return Sequential(Linear(4, 6, rng=r), BatchNorm1d(6), Tanh(), Linear(6, 3, rng=r))


# VCAS with fixed ratios (the controller starts at ratio 1, which is backprop): samples drawn
ENTRIES += [RuleEntry("vcas", options={"act_ratio": 0.5, "weight_ratio": 0.5, "adapt": False},
                      refuse=with_batchnorm, refuse_layer="BatchNorm1d", loss_ratio=0.3)]

BY_NAME = {e.name: e for e in ENTRIES}
