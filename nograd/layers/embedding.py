"""Embedding lookup: row ``i`` of a table for each integer index ``i``."""
from __future__ import annotations

import numpy as np

from ..core import init as _init
from ..core.checks import as_rng, check_array, check_dtype, check_like, check_positive
from ..core.module import Module


def scatter_add_rows(shape, idx, rows):
    """``out[i] = Σ_{n: idx_n = i} rows[n]`` into zeros of ``shape`` (``rows`` is ``(N, D)``).

    Equal to ``np.add.at(out, idx.ravel(), rows)`` but by a stable sort of the ids and one
    ``np.add.reduceat`` over the runs of equal ids (about 7× faster for a GPT batch of 768 tokens).
    """
    flat = idx.reshape(-1)
    order = np.argsort(flat, kind="stable")
    ids = flat[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    out = np.zeros(shape, rows.dtype)
    out[ids[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    return out


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
        return None, {"weight": scatter_add_rows(W.shape, idx, dy.reshape(-1, self.embedding_dim).astype(W.dtype, copy=False))}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        if dx is not None:
            raise ValueError("dx must be None: Embedding's integer input has no tangent")
        y, _ = self.forward(x, params=params)
        dparams = self._tangents(dparams)
        if dparams and "weight" in dparams:
            return y, dparams["weight"][x].astype(y.dtype, copy=False)
        return y, np.zeros_like(y)


class PositionalEmbedding(Module):
    r"""Learned absolute positions: ``y = x + P[:T]`` (Gehring et al. 2017, §3.1; GPT-2's ``wpe``).

    Shapes: ``x (B, T, E)`` with ``T ≤ max_len`` → ``y (B, T, E)``; ``weight (max_len, E)``.
    ``offset`` (inference with a key/value cache) adds rows ``offset … offset+T-1`` instead.

    .. math::
        y_{btc} = x_{btc} + P_{tc}, \qquad \bar x = \bar y, \quad \bar P_{tc} = \textstyle\sum_b \bar y_{btc},
        \qquad \dot y = \dot x + \dot P_{:T}.

    Initialised ``N(0, 0.02²)`` as in GPT-2 / nanoGPT unless ``init`` says otherwise.
    """

    def __init__(self, max_len: int, embedding_dim: int, *, rng=None, init=None, dtype=np.float32):
        super().__init__()
        check_positive(max_len, "max_len", integer=True)
        check_positive(embedding_dim, "embedding_dim", integer=True)
        self.max_len, self.embedding_dim = int(max_len), int(embedding_dim)
        dt = check_dtype(dtype)
        shape = (self.max_len, self.embedding_dim)
        if init is None:
            self._own["weight"] = _init.normal(shape, as_rng(rng), dt, std=0.02)
        else:
            self._own["weight"] = _init.get_initializer(init)(shape, as_rng(rng), dt)

    def extra_repr(self):
        return f"{self.max_len}, {self.embedding_dim}"

    def _rows(self, x, params, offset=0):
        check_array(x, "x", ndim=3)
        T = x.shape[1]
        if x.shape[2] != self.embedding_dim:
            raise ValueError(f"x must be (batch, time, {self.embedding_dim}), got shape {x.shape}")
        if offset + T > self.max_len:
            raise ValueError(f"x has {T} positions (after offset {offset}); the table holds {self.max_len}")
        return self._use(params)["weight"][offset:offset + T]

    def forward(self, x, *, train=False, rng=None, params=None, offset: int = 0):
        P = self._rows(x, params, offset)
        return x + P.astype(x.dtype, copy=False), x.shape

    def backward(self, cache, dy, *, params=None, need_dx=True):
        shape = cache
        check_like(dy, shape)
        W = self._use(params)["weight"]
        dW = np.zeros_like(W)
        dW[:shape[1]] = dy.sum(axis=0)
        return (dy.copy() if need_dx else None), {"weight": dW}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, _ = self.forward(x, params=params)
        dparams = self._tangents(dparams) or {}
        dy = np.zeros_like(y) if dx is None else check_like(dx, x.shape, "dx").copy()
        if "weight" in dparams:
            dy += dparams["weight"][:x.shape[1]].astype(y.dtype, copy=False)
        return y, dy
