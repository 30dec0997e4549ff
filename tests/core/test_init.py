"""Tests for nograd.core.init: shapes and dtypes, determinism, the variance formulas, orthogonality."""
import math

import numpy as np
import pytest

from nograd.core import init as I
from nograd.core.init import (INITIALISERS, constant, fans, get_initializer, he_normal, he_uniform,
                              normal, orthogonal, uniform, xavier_normal, xavier_uniform, zeros)

RANDOM = ["uniform", "normal", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal",
          "orthogonal"]
SHAPES = [(5,), 6, (4, 3), (3, 7), (3, 2, 3, 3), (2, 3, 4)]


# ------------------------------------------------------------------------------------------
# shapes, dtypes, determinism
# ------------------------------------------------------------------------------------------

def test_registry_has_every_initialiser():
    assert set(INITIALISERS) == {"zeros", "constant", "uniform", "normal", "xavier_uniform",
                                 "xavier_normal", "he_uniform", "he_normal", "orthogonal"}
    for name, fn in INITIALISERS.items():
        assert fn is getattr(I, name)


@pytest.mark.parametrize("name", sorted(INITIALISERS))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, "float32"])
def test_shape_and_dtype_exact(name, shape, dtype):
    w = INITIALISERS[name](shape, 0, dtype=dtype)
    want = (shape,) if isinstance(shape, int) else shape
    assert isinstance(w, np.ndarray)
    assert w.shape == want
    assert w.dtype == np.dtype(dtype)
    assert np.isfinite(w).all()
    assert w.flags.c_contiguous and w.flags.writeable


def test_default_dtype_is_float32():
    for fn in INITIALISERS.values():
        assert fn((3, 4), 0).dtype == np.float32


@pytest.mark.parametrize("name", RANDOM)
def test_same_seed_same_array(name):
    fn = INITIALISERS[name]
    a = fn((6, 5), 123)
    b = fn((6, 5), np.random.default_rng(123))
    c = fn((6, 5), 124)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    gen = np.random.default_rng(7)
    first, second = fn((6, 5), gen), fn((6, 5), gen)           # a Generator is advanced
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("name", sorted(INITIALISERS))
def test_zero_size_shapes(name):
    w = INITIALISERS[name]((0, 5), 0)
    assert w.shape == (0, 5) and w.dtype == np.float32


def test_zeros_and_constant():
    np.testing.assert_array_equal(zeros((2, 3)), np.zeros((2, 3)))
    w = constant((2, 3), value=0.25, dtype=np.float64)
    assert w.dtype == np.float64 and np.all(w == 0.25)
    assert np.all(constant(4) == 0.0)


# ------------------------------------------------------------------------------------------
# fans
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,want", [
    ((10, 20), (20, 10)),              # Linear (out, in)
    ((16, 3, 5, 5), (75, 400)),        # Conv2d (out, in, kh, kw)
    ((8, 4, 3), (12, 24)),             # Conv1d
    ((2, 3, 2, 2, 2), (24, 16)),       # Conv3d
    ((7,), (7, 7)),
    (7, (7, 7)),
    ((), (1, 1)),
])
def test_fans(shape, want):
    assert fans(shape) == want


# ------------------------------------------------------------------------------------------
# the formulas, checked on large draws
# ------------------------------------------------------------------------------------------

def test_xavier_uniform_bound_and_std():
    w = xavier_uniform((300, 500), 0, dtype=np.float64)
    a = math.sqrt(6 / 800)
    assert np.abs(w).max() <= a
    assert np.abs(w).max() > 0.99 * a                          # the bound is the right one
    assert np.std(w) == pytest.approx(a / math.sqrt(3), rel=0.03)
    assert abs(np.mean(w)) < 0.01 * a


def test_xavier_uniform_float32_and_gain():
    w = xavier_uniform((256, 64, 3, 3), 1, gain=2.0)            # fan_in 576, fan_out 2304
    a = 2.0 * math.sqrt(6 / (576 + 2304))
    assert w.dtype == np.float32
    assert np.abs(w).max() <= a * (1 + 1e-6)
    assert np.std(w, dtype=np.float64) == pytest.approx(a / math.sqrt(3), rel=0.03)


def test_xavier_normal_std():
    w = xavier_normal((400, 300), 0)
    assert np.std(w, dtype=np.float64) == pytest.approx(math.sqrt(2 / 700), rel=0.03)
    w = xavier_normal((400, 300), 0, gain=0.5)
    assert np.std(w, dtype=np.float64) == pytest.approx(0.5 * math.sqrt(2 / 700), rel=0.03)


def test_he_uniform_bound_and_std():
    shape = (128, 32, 3, 3)                                     # fan_in = 288
    w = he_uniform(shape, 0, dtype=np.float64)
    a = math.sqrt(2) * math.sqrt(3 / 288)
    assert np.abs(w).max() <= a
    assert np.abs(w).max() > 0.99 * a
    assert np.std(w) == pytest.approx(math.sqrt(2 / 288), rel=0.03)      # = a / sqrt(3)
    w = he_uniform((500, 200), 0, dtype=np.float64, gain=1.0)
    assert np.abs(w).max() <= math.sqrt(3 / 200)


def test_he_normal_std():
    w = he_normal((500, 400), 0)
    assert np.std(w, dtype=np.float64) == pytest.approx(math.sqrt(2 / 400), rel=0.03)
    w = he_normal((64, 16, 5, 5), 0, gain=1.0)                  # fan_in = 400
    assert np.std(w, dtype=np.float64) == pytest.approx(1 / 20, rel=0.03)
    w = he_normal((50000, 2), 0, gain=1.0)                      # small fan: 1/sqrt(2), exactly
    assert np.std(w, dtype=np.float64) == pytest.approx(math.sqrt(0.5), rel=0.02)


def test_uniform_and_normal():
    w = uniform((200, 300), 0, np.float64, low=-2.0, high=5.0)
    assert w.min() >= -2.0 and w.max() < 5.0
    assert np.mean(w) == pytest.approx(1.5, abs=0.05)
    assert np.std(w) == pytest.approx(7 / math.sqrt(12), rel=0.03)
    w = normal((200, 300), 0, np.float64, mean=3.0, std=0.5)
    assert np.mean(w) == pytest.approx(3.0, abs=0.01)
    assert np.std(w) == pytest.approx(0.5, rel=0.03)
    assert np.all(normal((3, 3), 0, std=0.0, mean=1.0) == 1.0)


# ------------------------------------------------------------------------------------------
# orthogonal
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("shape", [(3, 7), (7, 3), (6, 6), (4, 2, 3, 3), (50, 20), (1, 5)],
                         ids=str)
def test_orthogonal_rows_or_columns(shape, dtype, tol):
    w = orthogonal(shape, 0, dtype=dtype)
    assert w.shape == shape and w.dtype == dtype
    m = w.reshape(shape[0], -1).astype(np.float64)
    rows, cols = m.shape
    gram = m @ m.T if rows <= cols else m.T @ m
    np.testing.assert_allclose(gram, np.eye(min(rows, cols)), atol=tol, rtol=0)


def test_orthogonal_gain_and_vector():
    w = orthogonal((4, 9), 3, dtype=np.float64, gain=2.0)
    np.testing.assert_allclose(w @ w.T, 4 * np.eye(4), atol=1e-12)
    v = orthogonal(5, 3, dtype=np.float64)                      # 1-D: one unit column
    assert np.linalg.norm(v) == pytest.approx(1.0, rel=1e-12)


def test_orthogonal_sign_correction_makes_signs_symmetric():
    """Without the diag(R) sign fix, Householder QR gives Q[0, 0] < 0 every time."""
    firsts = np.array([orthogonal((3, 3), seed, dtype=np.float64)[0, 0] for seed in range(200)])
    assert 0.35 < np.mean(firsts > 0) < 0.65
    tall = np.array([orthogonal((5, 2), seed, dtype=np.float64)[0, 0] for seed in range(200)])
    assert 0.35 < np.mean(tall > 0) < 0.65


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call,exc,match", [
    (lambda: xavier_uniform((3, -1), 0), ValueError, "shape"),
    (lambda: zeros((-2,)), ValueError, "shape"),
    (lambda: he_normal((3, 2.5), 0), TypeError, "shape"),
    (lambda: he_normal("abc", 0), TypeError, "shape"),
    (lambda: normal(None, 0), TypeError, "shape"),
    (lambda: xavier_normal((3, 4), 0, dtype=np.int32), TypeError, "dtype"),
    (lambda: zeros((3, 4), dtype=np.float16), TypeError, "dtype"),
    (lambda: orthogonal((3, 4), 0, dtype="nonsense"), TypeError, "dtype"),
    (lambda: xavier_uniform((3, 4), 0, gain=0.0), ValueError, "gain"),
    (lambda: he_uniform((3, 4), 0, gain=-1.0), ValueError, "gain"),
    (lambda: orthogonal((3, 4), 0, gain="big"), TypeError, "gain"),
    (lambda: uniform((3, 4), 0, low=1.0, high=1.0), ValueError, "low"),
    (lambda: uniform((3, 4), 0, low=float("nan")), ValueError, "low"),
    (lambda: normal((3, 4), 0, std=-1.0), ValueError, "std"),
    (lambda: normal((3, 4), 0, mean="0"), TypeError, "mean"),
    (lambda: constant((3, 4), value=float("inf")), ValueError, "value"),
    (lambda: xavier_uniform((3, 4), "seed"), TypeError, "rng"),
    (lambda: he_normal((3, 4), np.random.RandomState(0)), TypeError, "rng"),
    (lambda: orthogonal((), 0), ValueError, "shape"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_get_initializer():
    assert get_initializer("orthogonal") is orthogonal
    custom = lambda shape, rng, dtype=np.float32: np.ones(shape, dtype)   # noqa: E731
    assert get_initializer(custom) is custom
    with pytest.raises(ValueError, match="he_normal.*xavier_uniform"):
        get_initializer("kaiming")
    with pytest.raises(TypeError, match="initializer"):
        get_initializer(3)
