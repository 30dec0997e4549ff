"""Backpropagation: the exact gradient by the chain rule run in reverse (Rumelhart, Hinton &
Williams 1986, "Learning representations by back-propagating errors", Nature 323)."""
from __future__ import annotations

from ..core.losses import get_loss
from .base import Rule, register


@register("backprop")
class Backprop(Rule):
    r"""Exact gradients of a loss through the model's own ``backward``.

    One forward pass in training mode, the loss and its derivative :math:`\partial L/\partial \hat y`,
    then ``model.backward`` from the output: :math:`\nabla_θ L = J_θ^\top\, \partial L/\partial\hat y`.

    Parameters
    ----------
    loss : a loss name (``"cross-entropy"``, ``"mse"``, ``"bce"``, ``"focal"``) or a callable
        ``(pred, target) -> (value, dpred)``.
    **loss_options : passed to the loss (e.g. ``gamma=2`` for focal, ``label_smoothing=0.1``).
    """

    defaults = {"optimizer": "adam", "lr": 1e-3, "epochs": 20}

    def __init__(self, loss="cross-entropy", **loss_options):
        self.loss = get_loss(loss)
        self.loss_options = loss_options

    def grads(self, model, x, y, *, rng=None):
        out, cache = model.forward(x, train=True, rng=rng)
        value, dout = self.loss(out, y, **self.loss_options)
        _, grads = model.backward(cache, dout, need_dx=False)
        return grads, {"loss": value, "output": out}

    def __repr__(self):
        name = getattr(self.loss, "__name__", repr(self.loss))
        return f"Backprop(loss={name})"
