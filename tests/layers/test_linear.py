"""Linear's forward at small batches takes ``x Wᵀ`` as ``(W xᵀ)ᵀ`` (faster in OpenBLAS there): the
output is the same array, bit for bit and C-ordered, as ``x Wᵀ + b`` (leading axes, no bias,
float64 input to float32 weights, both dtypes), and the rule's bounds are where it says.
The registry (tests/registry.py) runs the gradient, adjoint, dtype and determinism checks."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nograd.layers import Linear
from nograd.layers import linear as linear_module

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


@SETTINGS
@given(n=st.integers(1, 40), k=st.integers(100, 400), m=st.integers(200, 600), lead=st.booleans(),
       bias=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_small_batch_forward_is_x_w_transposed_bit_for_bit(n, k, m, lead, bias, dtype, seed):
    rng = np.random.default_rng(seed)
    lin = Linear(k, m, bias=bias, rng=rng, dtype=dtype)
    if bias:
        lin.params["bias"][...] = rng.standard_normal(m)
    x = rng.standard_normal(((2,) if lead else ()) + (n, k)).astype(dtype)
    y, cache = lin.forward(x)
    W = lin.params["weight"]
    ref = (x.reshape(-1, k) @ W.T).reshape(x.shape[:-1] + (m,))
    if bias:
        ref += lin.params["bias"]
    assert cache is x and y.flags.c_contiguous
    assert y.dtype == ref.dtype and y.shape == ref.shape and y.tobytes() == ref.tobytes()


def test_the_rule_applies_where_it_says():
    W = np.zeros((256, 128), np.float32)
    rows = linear_module.SMALL_BATCH_MAX_ROWS
    assert linear_module._small_batch(np.zeros((2, 128), np.float32), W)
    assert linear_module._small_batch(np.zeros((rows, 128), np.float32), W)
    assert not linear_module._small_batch(np.zeros((1, 128), np.float32), W)
    assert not linear_module._small_batch(np.zeros((rows + 1, 128), np.float32), W)
    assert not linear_module._small_batch(np.zeros((8, 128), np.float32), W[:255])
    assert not linear_module._small_batch(np.zeros((8, 127), np.float32), W[:, :127].copy())
    assert not linear_module._small_batch(np.zeros((128, 8), np.float32).T, W)   # not C-ordered
    lin = Linear(128, 256, rng=0)                                  # float64 input, float32 weights
    x = np.random.default_rng(1).standard_normal((8, 128))
    y = lin.forward(x)[0]
    assert y.dtype == np.float64
    assert y.tobytes() == (x @ lin.params["weight"].astype(np.float64).T + lin.params["bias"]).tobytes()
