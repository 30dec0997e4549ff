"""Hypothesis strategies for nograd tests: bounded shapes and finite float arrays.

Hypothesis is imported here only (``import nograd`` never loads it). Install the ``test`` extra.

>>> from hypothesis import given
>>> @given(float_arrays(shapes(min_dims=2, max_dims=2)))
... def test(x):
...     assert np.isfinite(x).all()
>>> test()
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def shapes(*, min_dims=1, max_dims=3, min_side=1, max_side=6):
    """Array shapes with every side in ``[min_side, max_side]``."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def float_arrays(shape, *, dtype=np.float64, bound=3.0, away_from_zero=0.0):
    """Finite arrays with entries in ``[-bound, bound]``; with ``away_from_zero=m`` every entry has
    ``|x| >= m`` (to keep ReLU-like kinks out of finite differences)."""
    elements = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=64)
    if away_from_zero:
        elements = elements.filter(lambda v: abs(v) >= away_from_zero)
    return hnp.arrays(np.dtype(dtype), shape, elements=elements)


def seeds():
    """Integer seeds for ``np.random.default_rng``."""
    return st.integers(0, 2**32 - 1)


def batch_sizes(max_size=5):
    return st.integers(1, max_size)
