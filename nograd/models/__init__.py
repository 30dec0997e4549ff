"""Model families and the registry that finds them by name.

>>> from nograd.models import get_model, available_models
>>> net = get_model("mlp", (1, 8, 8), 10, rng=0, hidden=(32,))
>>> [type(m).__name__ for m in net]
['Flatten', 'Linear', 'ReLU', 'Linear']
>>> "mlp" in available_models()
True

This room holds modules and the builders that make them; it imports neither :mod:`nograd.rules`
nor :mod:`nograd.train`. What trains itself lives in :mod:`nograd.estimators`: the GRANDE
estimators and the tabular training helpers moved there. Their old names here
(``nograd.models.GrandeClassifier``, ``nograd.models.grande``, ``nograd.models.grande_base``,
``nograd.models.tabular.make_fit_predict``, ...) still work: they are looked up in
:mod:`nograd.estimators` on first use, by :func:`_from_above`, the one place in this room that
reaches up (a test holds it to that).
"""
from .charlm import CharLM, charlm
from .cnn import cnn
from .diffusion import UNet
from .flow import InverseFlow, dequantize
from .flow_steps import ActNorm, AffineCoupling, Bijector, FlowStep
from .gpt import GPT, generate, gpt
from .grande_net import GrandeNet
from .hypernet import HyperLSTM, HyperNetwork, KernelGenerator
from .mlp import mlp
from .registry import available_models, get_model, model_description, register_model
from .tabular import DiabetesNet, TabularMLP, logistic_regression
from .vit import ViT, vit

__all__ = ["get_model", "available_models", "register_model", "model_description", "mlp", "cnn",
           "TabularMLP", "DiabetesNet", "logistic_regression", "HyperNetwork",
           "KernelGenerator", "HyperLSTM", "GrandeNet",
           "InverseFlow", "dequantize", "Bijector", "ActNorm",
           "AffineCoupling", "FlowStep", "GPT", "gpt", "generate", "ViT", "vit", "CharLM", "charlm", "UNet"]

# names that moved up to nograd.estimators (old name here -> the module that holds it now)
_MOVED = {"GrandeClassifier": "nograd.estimators.grande", "GrandeRegressor": "nograd.estimators.grande"}


def _from_above(module: str, name: str):
    """``getattr(module, name)`` for a name that moved out of this room into ``module`` above it.

    The import happens here, at first use, never when :mod:`nograd.models` is imported; the
    alias modules ``models/grande.py``, ``models/grande_base.py`` and ``models/tabular.py`` call
    this from their module ``__getattr__`` (PEP 562).
    """
    import importlib

    return getattr(importlib.import_module(module), name)


def __getattr__(name):
    if name in _MOVED:
        return _from_above(_MOVED[name], name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
