"""The rule contract (DESIGN.md §3) and the registry of rules by name.

A rule turns a model and a batch into update directions keyed like ``model.params``::

    grads, info = rule.grads(model, x, y, rng=rng)
    optimizer.step(grads)

Rules register under a lowercase, hyphenated name so that the command line and comparison
tables find every rule without being told about it.
"""
from __future__ import annotations

_REGISTRY: dict[str, type] = {}

#: training hyper-parameters every rule has; a rule's own ``defaults`` override some of them
BASE_DEFAULTS = {"optimizer": "adam", "lr": 1e-3, "epochs": 20, "batch_size": 64}


class Rule:
    """Base class of learning rules.

    Subclasses implement :meth:`grads`; they keep whatever state they need (feedback matrices,
    seeds, histories) on the rule, keyed by parameter name, never on the layers.
    """

    #: registered name, set by :func:`register`
    name: str = ""
    #: default training hyper-parameters for ``fit``/``compare`` (optimizer, lr, epochs, ...)
    defaults: dict = {}

    def grads(self, model, x, y, *, rng=None):
        """Return ``(grads, info)``: descent directions keyed like ``model.params`` and a dict
        with at least ``"loss"`` (a float) and ``"output"`` (the model's prediction on ``x``)."""
        raise NotImplementedError

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
