"""Embedding lookup: row ``i`` of a table for each integer index ``i``."""
from __future__ import annotations

import numpy as np

from ..core import init as _init
from ..core.checks import as_rng, check_dtype, check_like, check_positive
from ..core.module import Module


class Embedding(Module):
    r"""Look up rows of ``weight (num_embeddings, embedding_dim)``.

    Shapes: integer ``idx (...)`` → ``y (..., embedding_dim)``.

    .. math::
        y_{\dots} = W_{i_{\dots}}, \qquad \bar W_k = \sum_{\dots : i_{\dots} = k} \bar y_{\dots},
        \qquad \dot y_{\dots} = \dot W_{i_{\dots}}.

    The input is discrete, so it has no cotangent or tangent: ``backward`` returns ``dx = None``
    and ``jvp`` takes ``dx=None``. Initialised ``N(0, 1)`` as in PyTorch.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, rng=None, init="normal",
                 dtype=np.float32):
        super().__init__()
        check_positive(num_embeddings, "num_embeddings", integer=True)
        check_positive(embedding_dim, "embedding_dim", integer=True)
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        dt = check_dtype(dtype)
        self._own["weight"] = _init.get_initializer(init)(
            (self.num_embeddings, self.embedding_dim), as_rng(rng), dt)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"

    def _check(self, idx):
        if not isinstance(idx, np.ndarray):
            raise TypeError(f"idx must be a numpy.ndarray of integers, got {type(idx).__name__}")
        if idx.dtype.kind not in "iu":
            raise TypeError(f"idx must have an integer dtype, got {idx.dtype}")
        if idx.size == 0:
            raise ValueError(f"idx is empty (shape {idx.shape})")
        if idx.min() < 0 or idx.max() >= self.num_embeddings:
            raise ValueError(f"idx has entries outside [0, {self.num_embeddings}): "
                             f"min {idx.min()}, max {idx.max()}")

    def forward(self, x, *, train=False, rng=None, params=None):
        self._check(x)
        W = self._use(params)["weight"]
        return W[x], x

    def backward(self, cache, dy, *, params=None, need_dx=True):
        idx = cache
        W = self._use(params)["weight"]
        check_like(dy, idx.shape + (self.embedding_dim,))
        dW = np.zeros_like(W)
        np.add.at(dW, idx.reshape(-1), dy.reshape(-1, self.embedding_dim).astype(W.dtype, copy=False))
        return None, {"weight": dW}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        if dx is not None:
            raise ValueError("dx must be None: Embedding's integer input has no tangent")
        y, _ = self.forward(x, params=params)
        dparams = self._tangents(dparams)
        if dparams and "weight" in dparams:
            return y, dparams["weight"][x].astype(y.dtype, copy=False)
        return y, np.zeros_like(y)
