"""Layers: each a :class:`~nograd.core.module.Module` with forward, backward and jvp."""
from .activations import (ACTIVATIONS, ELU, GELU, Activation, Hardtanh, Identity, LeakyReLU, Mish,
                          ReLU, Sigmoid, SiLU, Softplus, Softsign, Tanh, get_activation)
from .attention import MultiheadAttention, scaled_dot_product_attention
from .conv import Conv2d, ConvTranspose2d
from .conv1d import Conv1d
from .dropout import Dropout, Dropout2d
from .embedding import Embedding, PositionalEmbedding
from .entmax import Entmax15, entmax15
from .fused import FusedSequential
from .invconv import InverseConv2d
from .linear import Linear
from .lora import LoRA
from .norm import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm
from .patch import PatchEmbed
from .pool import (AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, GlobalAvgPool2d, MaxPool1d, MaxPool2d,
                   Upsample2d)
from .prelu import PReLU
from .quantized import QuantizedConv2d, QuantizedLinear
from .recurrent import GRU, LSTM, RNN
from .rmsnorm import RMSNorm
from .poset import Poset, PosetPool2d, four_point_posets, get_poset
from .shape import Flatten, Reshape
from .softmax import LogSoftmax, Softmax
from .time_embedding import SinusoidalEmbedding
from .transformer import TransformerBlock

__all__ = ["Linear", "Identity", "ReLU", "LeakyReLU", "GELU", "Tanh", "Sigmoid", "Softsign",
           "Softplus", "Activation", "Dropout", "LayerNorm", "BatchNorm1d", "Flatten", "Embedding",
           "Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "Upsample2d",
           "BatchNorm2d", "GroupNorm", "Reshape", "PosetPool2d", "Poset", "four_point_posets", "get_poset",
           "InverseConv2d", "RNN", "LSTM", "GRU", "Entmax15", "entmax15", "ACTIVATIONS",
           "get_activation", "LoRA", "RMSNorm", "SiLU", "PatchEmbed", "MultiheadAttention",
           "scaled_dot_product_attention", "PositionalEmbedding", "Softmax", "LogSoftmax",
           "TransformerBlock", "ELU", "Mish", "PReLU", "Hardtanh", "Dropout2d", "AdaptiveAvgPool2d",
           "Conv1d", "MaxPool1d", "AvgPool1d", "SinusoidalEmbedding", "QuantizedLinear",
           "QuantizedConv2d", "FusedSequential"]
