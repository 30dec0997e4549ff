"""nograd — a small neural-network engine in NumPy in which every derivative is written by hand.

Each layer states its forward map, its backward map (VJP) and its forward-mode map (JVP); learning
rules — backprop and the alternatives to it — are built from those maps. ``import nograd`` loads
numpy alone; Numba kernels, SciPy and plotting load where they are used.
"""
from . import core, data, layers, rules, testing
from .core import Module, Residual, Sequential, flatten_params, load, unflatten_params
from .core.checks import NonFiniteError
from .losses import get_loss
from .core.optim import SGD, Adam, AdamW, get_optimizer
from .optimizers import Adagrad, NAdam, RMSprop
from .layers import (GELU, BatchNorm1d, Dropout, Embedding, Flatten, Identity, LayerNorm, LeakyReLU,
                     Linear, ReLU, Sigmoid, Softplus, Softsign, Tanh)
from .rules import Backprop, Rule, available_rules, get_rule
from . import lora, metrics, models, train
from .models import available_models, get_model, register_model
from . import callbacks, estimators
from .estimators import GrandeClassifier, GrandeRegressor
from .threads import blas_libraries, blas_threads, set_blas_threads
from .train import DivergenceError, History, fit
from .inference import predict, predict_proba
from .serialize import load_model, save, save_model   # save: core save + sweep of stale temporaries

__version__ = "0.1.0"

__all__ = ["core", "data", "layers", "rules", "testing", "Module", "Sequential", "Residual", "save", "load",
           "flatten_params", "unflatten_params", "get_loss", "SGD", "Adam", "AdamW", "get_optimizer",
           "RMSprop", "Adagrad", "NAdam",
           "Linear", "ReLU", "LeakyReLU", "GELU", "Tanh", "Sigmoid", "Softsign", "Softplus",
           "Identity", "Dropout", "LayerNorm", "BatchNorm1d", "Flatten", "Embedding", "Backprop",
           "Rule", "get_rule", "available_rules", "metrics", "models", "train", "fit", "History",
           "callbacks", "estimators",
           "get_model", "available_models", "register_model", "GrandeClassifier", "GrandeRegressor",
           "blas_threads", "set_blas_threads", "blas_libraries", "lora", "NonFiniteError",
           "predict", "predict_proba", "save_model", "load_model", "DivergenceError"]

# every layer at the top level, as ng.Linear is: ng.Conv2d, ng.MaxPool2d, ng.LSTM, ...
globals().update({_n: getattr(layers, _n) for _n in layers.__all__})
__all__ += [_n for _n in layers.__all__ if _n not in __all__]


def __getattr__(name):
    # St(C) (nograd.causal) loads on first use, so `import nograd` stays within its time budget
    if name == "causal":
        import importlib

        return importlib.import_module(".causal", __name__)
    raise AttributeError(f"module 'nograd' has no attribute {name!r}")
