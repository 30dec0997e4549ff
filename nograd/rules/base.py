"""The rule contract (DESIGN.md §3) and the registry of rules by name.

A rule turns a model and a batch into parameter updates. :func:`nograd.train.fit` runs, for every
batch, ::

    info = rule.step(model, x, y, optimizer=optimizer, rng=rng)

whose default is the two lines ``grads, info = rule.grads(model, x, y, rng=rng)`` and
``optimizer.step(grads)``, then the :meth:`Rule.after_step` hook. Rules register under a lowercase,
hyphenated name so that the command line and comparison tables find every rule without being told
about it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

_REGISTRY: dict[str, type] = {}

#: training hyper-parameters every rule has; a rule's own ``defaults`` override some of them
BASE_DEFAULTS = {"optimizer": "adam", "lr": 1e-3, "epochs": 20, "batch_size": 64}

#: the prefix of every name in :attr:`Rule.params`, so that no name can be a model's
PARAM_PREFIX = "rule."


class Rule:
    r"""Base class of learning rules: the contract between a rule, a model and one optimizer.

    **Arrays and shapes.** A model's trainable arrays are ``model.params`` (dotted names, the live
    arrays). A rule may own trainable arrays too — Mono-Forward's projections, the auxiliary heads
    of local forward gradients — in :attr:`params`, a dict name → array whose names start with
    ``"rule."`` (so they never clash with a model's). :func:`~nograd.train.fit` adds them to *the
    same optimizer* as parameter groups (:meth:`add_params_to`), so learning rates, weight decay
    and schedules reach them as they reach the model; no rule keeps a private optimizer. Any other
    state (feedback matrices, seeds, histories) lives on the rule, keyed by parameter name, never
    on the layers.

    **One step.** :meth:`grads` returns ``(grads, info)``: ``grads[name]`` is a descent direction
    :math:`d` shaped like the array it updates (for backprop :math:`d = \nabla_\theta L`), keyed
    like ``model.params`` — any subset: a missing name is not updated — plus the names of
    :attr:`params`; ``info`` holds at least ``"loss"`` (a float) and ``"output"`` (the model's
    prediction on ``x``, or ``None``), and may hold metrics; ``info["record"]``, a dict of numbers,
    becomes columns of ``fit``'s History (each epoch's row takes the epoch's last batch's values —
    VCAS's running FLOP totals). :meth:`grads` changes nothing but the
    rule's lazily created arrays. :meth:`step` is one training step, and what ``fit`` calls:
    :meth:`prepare`, :meth:`grads`, :meth:`add_params_to`, ``optimizer.step(grads)`` (the
    optimizer applies :math:`\theta \leftarrow \theta - \eta\,\mathrm{update}(d)` in place),
    then :meth:`after_step`. A non-finite loss skips the update (``fit`` then reports the batch).

    **What to override.** Always :meth:`grads`, and :meth:`check_model` to refuse a model the rule
    cannot train (a ``ValueError`` at once, naming what is wrong). :meth:`prepare` when the rule
    creates arrays (shapes from the model and an example batch) or must put the model on a
    constraint set before training; :meth:`param_options` to give the rule's group other
    hyper-parameters than the optimizer's defaults (e.g. a head lr); :meth:`after_step` for a
    constraint applied after each update (FOTON's orthonormalisation). :meth:`step` itself only when
    the update cannot be a gradient dict handed to the optimizer — MeZO regenerates its random
    direction in place and reads the optimizer's hyper-parameters through its public API
    (:meth:`~nograd.core.optim.Optimizer.lr_of`, :meth:`~nograd.core.optim.Optimizer.plain_sgd`),
    never its internals — or when applying updates layer by layer saves memory (Mono-Forward).
    """

    #: registered name, set by :func:`register`
    name: str = ""
    #: default training hyper-parameters for ``fit``/``compare`` (optimizer, lr, epochs, ...)
    defaults: dict = {}
    #: the rule's own trainable arrays, ``"rule.<...>"`` → array (none by default)
    params: Mapping = MappingProxyType({})

    def grads(self, model, x, y, *, rng=None):
        """Return ``(grads, info)``: descent directions keyed like ``model.params`` (a subset is
        fine) and :attr:`params`, and a dict with at least ``"loss"`` (a float) and ``"output"``
        (the model's prediction on ``x``)."""
        raise NotImplementedError

    def step(self, model, x, y, *, optimizer, rng=None) -> dict:
        """One training step; returns ``info``. Default: :meth:`prepare`, :meth:`grads`, the
        rule's arrays into the optimizer (:meth:`add_params_to`), ``optimizer.step(grads)``,
        :meth:`after_step`. With a non-finite loss nothing is updated and ``info`` is returned
        as it is, for the caller to report (``fit`` raises ``NonFiniteError`` naming the batch)."""
        self.prepare(model, x)
        grads, info = self.grads(model, x, y, rng=rng)
        if not math.isfinite(float(info["loss"])):
            return info
        self.add_params_to(optimizer)
        optimizer.step(grads)
        self.after_step(model, optimizer)
        return info

    def prepare(self, model, x) -> None:
        """Set up for training ``model`` before a step: create :attr:`params` (``x``, an example
        batch, gives shapes) or put the model on a constraint set. Called by ``fit`` once before
        training and by :meth:`step` at every step, so it must do nothing when already done.
        Default: nothing."""

    def param_options(self) -> dict:
        """Hyper-parameters of the group :meth:`add_params_to` creates for :attr:`params`,
        overriding the optimizer's defaults (e.g. ``{"lr": 0.01}``). Default: none."""
        return {}

    def add_params_to(self, optimizer) -> None:
        """Add the arrays of :attr:`params` that ``optimizer`` does not hold yet as one parameter
        group (``optimizer.add_param_group(missing, **self.param_options())``). Refuses, with a
        ``ValueError``, a name outside ``"rule.<...>"`` or an optimizer that holds another array
        under one of the names (another rule's, or one this rule replaced)."""
        own = self.params
        if not own:
            return
        who = type(self).__name__
        held = getattr(optimizer, "params", None)
        adder = getattr(optimizer, "add_param_group", None)
        if not isinstance(held, Mapping) or not callable(adder):
            raise TypeError(f"{who} trains arrays of its own (rule.params) and the optimizer "
                            f"{type(optimizer).__name__} cannot take them: it needs a params dict "
                            f"and add_param_group (a nograd Optimizer has both)")
        missing = {}
        for name, p in own.items():
            if not str(name).startswith(PARAM_PREFIX):
                raise ValueError(f"{who}.params[{name!r}]: the names of a rule's own arrays start "
                                 f"with {PARAM_PREFIX!r}, so that they cannot clash with a model's")
            q = held.get(name)
            if q is None:
                missing[name] = p
            elif q is not p:
                raise ValueError(f"the optimizer holds another array than {who}.params[{name!r}] "
                                 f"under that name (another rule's, or one this rule replaced); "
                                 f"use a new optimizer, or one rule per optimizer")
        if missing:
            adder(missing, **self.param_options())

    def after_step(self, model, optimizer) -> None:
        """Called by :meth:`step` after every update: a constraint on the new weights (FOTON's
        orthonormalisation), in place. Default: nothing."""

    @classmethod
    def hyperparameters(cls) -> dict:
        """The rule's default training hyper-parameters: :data:`BASE_DEFAULTS` (optimizer, lr,
        epochs, batch_size) overridden by the class's own ``defaults``. ``compare`` and ``train``
        on the command line use these unless the user gives other values. ``defaults`` may also
        hold ``"optimizer_options"`` (e.g. ``{"momentum": 0.9}`` for SGD), passed to the optimizer
        when the user keeps the rule's optimizer."""
        return {**BASE_DEFAULTS, **cls.defaults}

    def check_model(self, model) -> None:
        """Raise ``ValueError`` at once if this rule cannot train ``model``."""

    def __repr__(self):
        return f"{type(self).__name__}()"


def register(name: str):
    """Class decorator: register a :class:`Rule` subclass under ``name`` (lowercase, hyphens)."""
    if not name or name != name.lower() or " " in name or "_" in name:
        raise ValueError(f"rule names are lowercase with hyphens, got {name!r}")

    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"a rule is already registered as {name!r}: {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return deco


def available_rules() -> list[str]:
    """Names of every registered rule, sorted."""
    return sorted(_REGISTRY)


def get_rule(name, **kwargs) -> Rule:
    """Instantiate the rule registered as ``name`` (a :class:`Rule` instance passes through)."""
    if isinstance(name, Rule):
        return name
    try:
        cls = _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown rule {name!r}; registered rules: {available_rules()}") from None
    return cls(**kwargs)
