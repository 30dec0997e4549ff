"""Backpropagation: the exact gradient by the chain rule run in reverse (Rumelhart, Hinton &
Williams 1986, "Learning representations by back-propagating errors", Nature 323)."""
from __future__ import annotations

import math

from ..core.checks import check_int
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
    shards : opt-in data parallelism over threads: ``None`` (default) runs the serial step; an
        int ``k`` splits each batch into ``k`` shards run in ``k`` threads with BLAS at one thread
        (:class:`nograd.parallel.ShardedStep`; the same gradient up to float rounding; batch norm
        synchronised across the shards; ``class_weight``/``ignore_index`` refused). It pays on steps of a few ms and more.
        The optimizer update then runs over the same threads too (Adam/AdamW; bit-identical).
    **loss_options : passed to the loss (e.g. ``gamma=2`` for focal, ``label_smoothing=0.1``).
    """

    defaults = {"optimizer": "adam", "lr": 1e-3, "epochs": 20}

    def __init__(self, loss="cross-entropy", *, shards=None, **loss_options):
        self.loss = get_loss(loss)
        self.loss_options = loss_options
        self.shards = None if shards is None else check_int(shards, "shards", low=1)
        if self.shards is not None:
            from ..parallel import check_loss_options

            check_loss_options(loss_options)
        self._sharded = None                      # the ShardedStep of the last model, made lazily

    def __getstate__(self):                       # copies leave the worker threads behind
        return {**self.__dict__, "_sharded": None}

    def check_model(self, model) -> None:
        if self.shards is not None:
            from ..parallel import check_shardable

            check_shardable(model)

    def grads(self, model, x, y, *, rng=None):
        if self.shards is not None:
            step = self._sharded
            if step is None or step.model is not model:
                from ..parallel import ShardedStep

                if step is not None:
                    step.close()
                step = self._sharded = ShardedStep(model, self.loss, self.shards, **self.loss_options)
            return step.grads(x, y, rng=rng)
        out, cache = model.forward(x, train=True, rng=rng)
        value, dout = self.loss(out, y, **self.loss_options)
        _, grads = model.backward(cache, dout, need_dx=False)
        return grads, {"loss": value, "output": out}

    def step(self, model, x, y, *, optimizer, rng=None) -> dict:
        """The rule contract's step; sharded, the optimizer's update is spread over the threads
        (:meth:`nograd.parallel.ShardedStep.update`)."""
        if self.shards is None:
            return super().step(model, x, y, optimizer=optimizer, rng=rng)
        self.prepare(model, x)
        grads, info = self.grads(model, x, y, rng=rng)
        if not math.isfinite(float(info["loss"])):
            return info
        self.add_params_to(optimizer)
        self._sharded.update(optimizer, grads)
        self.after_step(model, optimizer)
        return info

    def __repr__(self):
        name = getattr(self.loss, "__name__", repr(self.loss))
        return f"Backprop(loss={name})" if self.shards is None else \
            f"Backprop(loss={name}, shards={self.shards})"
