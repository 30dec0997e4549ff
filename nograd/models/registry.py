"""The registry of model builders by name, used by ``get_model`` and the command line.

A builder is a function ``builder(input_shape, num_classes, *, rng, **options) -> Module`` where
``input_shape`` is the shape of one sample (``(64,)`` for a table, ``(1, 8, 8)`` for an image).
Adding a model family is one call::

    register_model("cnn", small_cnn, description="Conv2d/ReLU/pool stack, then a Linear head")

A builder that cannot take an input shape (say, a CNN given a flat table) raises ``ValueError``
with a message that names the shape it needs.
"""
from __future__ import annotations

import numpy as np

from typing import Callable

from ..core.checks import as_rng, check_positive, is_int
from ..core.module import Module

_MODELS: dict[str, tuple[Callable, str]] = {}


def register_model(name: str, builder: Callable, *, description: str = "") -> Callable:
    """Register ``builder`` under ``name`` (lowercase, hyphens); returns the builder.

    ``description`` is the one line that ``python -m nograd list`` prints (default: the first line of
    the builder's docstring).
    """
    if not isinstance(name, str) or not name or name != name.lower() or " " in name or "_" in name:
        raise ValueError(f"model names are lowercase with hyphens, got {name!r}")
    if not callable(builder):
        raise TypeError(f"builder must be callable, got {builder!r}")
    if name in _MODELS and _MODELS[name][0] is not builder:
        raise ValueError(f"a model is already registered as {name!r}: {_MODELS[name][0].__name__}")
    if not description:
        doc = (builder.__doc__ or "").strip()
        description = doc.splitlines()[0] if doc else builder.__name__
    _MODELS[name] = (builder, description)
    return builder


def available_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_MODELS)


def model_description(name: str) -> str:
    """The one-line description of a registered model."""
    _lookup(name)
    return _MODELS[name][1]


def _lookup(name):
    if not isinstance(name, str) or name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(available_models())}")
    return _MODELS[name][0]


def get_model(name: str, input_shape, num_classes: int, *, rng=None, **options) -> Module:
    """Build the model registered as ``name`` for samples of ``input_shape`` and ``num_classes``
    outputs, with initial weights drawn from ``rng`` (a Generator or int seed: same seed, same
    weights). ``options`` go to the builder (e.g. ``hidden=(128,)`` for ``"mlp"``). The model keeps
    ``build_spec`` (name, input shape, classes, options) for :func:`nograd.save_model`, and
    ``init_seed``: the int seed of the weights (drawn from the OS when ``rng`` is None, so
    ``get_model(..., rng=model.init_seed)`` draws them again), or None for a Generator.
    """
    builder = _lookup(name)
    if is_int(input_shape):
        input_shape = (int(input_shape),)
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(f"input_shape must be a tuple of positive ints, got {input_shape!r}") from None
    if not shape:
        raise ValueError("input_shape is empty; give the shape of one sample, e.g. (64,) or (1, 8, 8)")
    for i, d in enumerate(shape):
        check_positive(d, f"input_shape[{i}]", integer=True)
    check_positive(num_classes, "num_classes", integer=True)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if rng is None:                # a fresh seed, kept so the weights can be drawn again (DESIGN §4)
        rng = int(np.random.SeedSequence().entropy % 2 ** 63)
    model = builder(tuple(int(d) for d in shape), int(num_classes), rng=as_rng(rng), **options)
    if not isinstance(model, Module):
        raise TypeError(f"the builder of {name!r} returned {type(model).__name__}, not a nograd Module")
    # how it was built, which nograd.save_model writes beside the weights (nograd.serialize)
    model.init_seed = int(rng) if is_int(rng) else None
    model.build_spec = {"model": name, "input_shape": tuple(int(d) for d in shape),
                        "num_classes": int(num_classes), "options": dict(options)}
    return model
