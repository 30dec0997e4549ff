"""Compressing trained models without backpropagation: post-training quantization
(:func:`quantize` — COMQ, GPTQ, round-to-nearest) and structured pruning (:func:`prune` —
MINI-LLM, magnitude, Wanda, Taylor).

The submodules are imported on first use, so ``import nograd.compress`` stays cheap.
"""
from __future__ import annotations

import importlib

#: public name -> submodule that defines it
_LAZY = {
    "quantize": "quantization",
    "prune": "pruning",
    "recover": "pruning",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
