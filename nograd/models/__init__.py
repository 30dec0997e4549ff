"""Model families and the registry that finds them by name.

>>> from nograd.models import get_model, available_models
>>> net = get_model("mlp", (1, 8, 8), 10, rng=0, hidden=(32,))
>>> [type(m).__name__ for m in net]
['Flatten', 'Linear', 'ReLU', 'Linear']
>>> "mlp" in available_models()
True
"""
from .cnn import cnn
from .flow import InverseFlow, dequantize
from .flow_steps import ActNorm, AffineCoupling, Bijector, FlowStep
from .grande import GrandeClassifier, GrandeRegressor
from .gpt import GPT, generate, gpt
from .grande_net import GrandeNet
from .hypernet import HyperLSTM, HyperNetwork, KernelGenerator
from .mlp import mlp
from .registry import available_models, get_model, model_description, register_model
from .tabular import DiabetesNet, TabularMLP, logistic_regression
from .vit import ViT, vit

__all__ = ["get_model", "available_models", "register_model", "model_description", "mlp", "cnn",
           "TabularMLP", "DiabetesNet", "logistic_regression", "HyperNetwork",
           "KernelGenerator", "HyperLSTM", "GrandeNet", "GrandeClassifier", "GrandeRegressor",
           "InverseFlow", "dequantize", "Bijector", "ActNorm",
           "AffineCoupling", "FlowStep", "GPT", "gpt", "generate", "ViT", "vit"]
