r"""A character language model on a recurrent layer: embedding → RNN/GRU/LSTM (stacked allowed,
optionally inside a skip connection) → linear head, the model of the comparison of BPTT,
stationary state feedbacks and truncated BPTT (Caillon, Fagnou & Allauzen 2025 train GRU language
models whose recurrent layers each have a skip connection; ``p0lcAi/DSF``, ``Model``).

Shapes: token ids ``(B, T)`` → logits ``(B, T, V)``; position ``t``'s logits predict token ``t + 1``
from tokens ``0 … t`` (the recurrence is causal by construction).

>>> import numpy as np
>>> m = charlm((16,), 10, rng=0, hidden=8, embed=4)
>>> m(np.zeros((2, 16), np.int64)).shape
(2, 16, 10)
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_float, check_int, check_positive
from ..core.module import Residual, Sequential
from ..layers import GRU, LSTM, RNN, Embedding, Linear
from .registry import register_model

__all__ = ["CharLM", "charlm", "CELLS"]

#: the recurrent layers a CharLM can use, by name
CELLS = {"rnn": RNN, "gru": GRU, "lstm": LSTM}


class CharLM(Sequential):
    r"""Embedding ``(V, E)`` → recurrent layer ``E → H`` (``num_layers`` stacked) → Linear ``H → V``.

    .. math::
        e_t = W^{emb}_{i_t}, \quad h_t = \mathrm{cell}(h_{t-1}, e_t), \quad z_t = u_t W_{out}^\top + b,

    with :math:`u_t = h_t` and :math:`h_0 = 0` for each window; with ``skip``,
    :math:`u_t = h_t + e_t` (``E = H``) or :math:`u_t = h_t + e_t W_s^\top` (a bias-free projection
    ``E → H``), the recurrent layer then being block ``"1"``'s ``body`` (:attr:`recurrent`). A :class:`~nograd.core.Sequential` (children ``"0"``,
    ``"1"``, ``"2"``), so every rule that walks a chain of blocks sees the recurrent block by name.
    ``block_size`` is the training window length (what :func:`nograd.train_lm.train_lm` draws); the
    model itself runs any length.

    Parameters
    ----------
    vocab_size, block_size : vocabulary ``V`` and training window length.
    cell : ``"gru"`` (default), ``"lstm"`` or ``"rnn"``.
    hidden, embed : ``H`` and ``E`` (``embed`` defaults to ``H``).
    num_layers, dropout : the recurrent stack (dropout between stacked layers, in training).
    skip : a skip connection around the recurrent layer (a :class:`~nograd.core.Residual`), as in
        the authors' models; default False.
    rng, dtype : initial weights (PyTorch's initialisers) and their dtype.
    """

    def __init__(self, vocab_size: int, block_size: int, *, cell: str = "gru", hidden: int = 128,
                 embed: int | None = None, num_layers: int = 1, dropout: float = 0.0,
                 skip: bool = False, rng=None, dtype=np.float32):
        check_positive(vocab_size, "vocab_size", integer=True)
        check_positive(block_size, "block_size", integer=True)
        check_positive(hidden, "hidden", integer=True)
        embed = hidden if embed is None else embed
        check_positive(embed, "embed", integer=True)
        check_int(num_layers, "num_layers", low=1)
        check_float(dropout, "dropout", low=0, high=1, high_open=True)
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        if not isinstance(skip, (bool, np.bool_)):
            raise TypeError(f"skip must be a bool, got {skip!r}")
        rng = as_rng(rng)
        emb = Embedding(vocab_size, embed, rng=rng, dtype=dtype)
        rnn = CELLS[cell](embed, hidden, num_layers=num_layers, dropout=dropout, rng=rng, dtype=dtype)
        if skip:
            out = hidden * (2 if getattr(rnn, "bidirectional", False) else 1)
            rnn = Residual(rnn) if embed == out else Residual(
                rnn, Linear(embed, out, bias=False, rng=rng, dtype=dtype))
        super().__init__(emb, rnn, Linear(hidden, vocab_size, rng=rng, init="xavier_uniform",
                                          dtype=dtype))
        self.skip = bool(skip)
        self.vocab_size, self.block_size, self.cell = int(vocab_size), int(block_size), cell
        self.hidden, self.embed, self.num_layers = int(hidden), int(embed), int(num_layers)

    def generate(self, prompt, max_new_tokens: int, *, temperature: float = 1.0, rng=None):
        """Sample ``max_new_tokens`` ids after ``prompt`` (ids ``(T,)``), carrying the recurrent
        state from step to step (one step per new token); returns the ids with the prompt first."""
        ids = np.asarray(prompt)
        if ids.ndim != 1 or ids.dtype.kind not in "iu" or ids.size == 0:
            raise ValueError(f"prompt must be non-empty integer ids (T,), got {ids.dtype} of "
                             f"shape {ids.shape}")
        check_positive(max_new_tokens, "max_new_tokens", integer=True, allow_zero=True)
        temperature = float(check_positive(temperature, "temperature"))
        rng = as_rng(rng)
        emb, rnn, head = self[0], self.recurrent, self[2]
        out = list(ids.tolist())
        short = self[1]._children.get("shortcut") if self.skip else None

        def skip(e):                        # what the skip connection adds to the layer's output
            return 0 if not self.skip else (e if short is None else short(e))
        e = emb(ids[None])
        y, cache = rnn.forward(e)
        state = rnn.final_state(cache)
        for _ in range(max_new_tokens):
            z = head(y[:, -1] + skip(e[:, -1:])[:, -1] if self.skip else y[:, -1])
            z = z.astype(np.float64)[0] / temperature
            p = np.exp(z - z.max())
            nxt = int(rng.choice(len(p), p=p / p.sum()))
            out.append(nxt)
            e = emb(np.array([[nxt]]))
            y, cache = rnn.forward(e, state=state)
            state = rnn.final_state(cache)
        return np.array(out, np.int64)

    @property
    def recurrent(self):
        """The recurrent layer (inside the skip connection's Residual when ``skip``)."""
        return self[1]._children["body"] if self.skip else self[1]

    def extra_repr(self):
        return f"cell={self.cell!r}, block_size={self.block_size}, skip={self.skip}"


def charlm(input_shape, num_classes, *, rng=None, cell="gru", hidden=128, embed=None, num_layers=1,
           dropout=0.0, skip=False, dtype=np.float32):
    """Character LM: Embedding, then a GRU/LSTM/RNN, then a Linear head over the vocabulary.

    ``input_shape`` is ``(block_size,)``, the training window; ``num_classes`` the vocabulary size;
    the options are :class:`CharLM`'s."""
    if len(input_shape) != 1:
        raise ValueError(f"charlm reads windows of token ids: input_shape must be (block_size,), "
                         f"got {tuple(input_shape)}")
    return CharLM(num_classes, input_shape[0], cell=cell, hidden=hidden, embed=embed,
                  num_layers=num_layers, dropout=dropout, skip=skip, rng=rng, dtype=dtype)


register_model("charlm", charlm)
