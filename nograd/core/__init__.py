"""The contract and the tiny engine: modules, parameters, optimizers, initialisers, checks."""
from . import init, losses, optim
from .module import Module, Residual, Sequential
from .params import flatten_params, load, save, unflatten_params

__all__ = ["Module", "Sequential", "Residual", "flatten_params", "unflatten_params", "save", "load",
           "init", "losses", "optim"]
