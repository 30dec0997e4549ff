"""Input validation shared by layers, losses, rules and the fit loop.

Every public entry point checks its arguments here, so that bad input fails early with a
``TypeError``/``ValueError`` that names the argument and says what was expected
(DESIGN.md §4). The checks are O(1) except the finiteness test, which is one
vectorised reduction over the array.
"""
from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def as_rng(rng, name: str = "rng") -> np.random.Generator:
    """Return a ``np.random.Generator`` from a Generator, an integer seed, a sequence of
    non-negative integer seeds (``(seed, fold)``) or ``None``.

    ``None`` gives a fresh, unseeded generator (not reproducible); pass a seed for
    reproducible results. Legacy ``np.random.RandomState`` is refused: nograd keeps no
    global random state.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(rng)
    if (isinstance(rng, (tuple, list)) and rng
            and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in rng)):
        return np.random.default_rng(list(rng))      # e.g. (seed, fold): one stream per pair
    raise TypeError(f"{name} must be a numpy.random.Generator, an int seed (or a sequence of "
                    f"non-negative ints) or None, got {type(rng).__name__}")


def all_finite(a: np.ndarray) -> bool:
    """True when every entry of a float array is finite (a sum first, exact check on doubt)."""
    if a.size == 0:
        return True
    with np.errstate(over="ignore", invalid="ignore"):    # an overflowing sum is settled below
        if np.isfinite(np.add.reduce(a, axis=None)):
            return True
    return bool(np.isfinite(a).all())


def check_array(x, name: str = "x", *, ndim=None, min_ndim=None, float_only=True,
                finite=True, nonempty=True) -> np.ndarray:
    """Validate an array argument and return it unchanged.

    Parameters
    ----------
    x : the value to check; must already be a ``np.ndarray``.
    name : the argument name used in error messages.
    ndim : exact number of dimensions required (an int or a tuple of allowed values).
    min_ndim : smallest number of dimensions allowed.
    float_only : require float32 or float64.
    finite : refuse NaN and inf.
    nonempty : refuse arrays with a zero-length batch (first) axis.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if float_only and x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}, got shape {x.shape}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {x.shape}")
    if nonempty and (x.ndim == 0 or x.shape[0] == 0 or x.size == 0):
        raise ValueError(f"{name} is empty (shape {x.shape}); a batch needs at least one sample")
    if finite and x.dtype.kind == "f" and not all_finite(x):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def check_last_dim(x: np.ndarray, size: int, name: str = "x") -> None:
    if x.shape[-1] != size:
        raise ValueError(f"{name} must have {size} features in its last axis, got shape {x.shape}")


def check_like(dy, shape, name: str = "dy") -> np.ndarray:
    """Validate a cotangent/tangent: an ndarray of the given shape with a float dtype."""
    if not isinstance(dy, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(dy).__name__}")
    if dy.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {dy.shape}")
    if dy.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {dy.dtype}")
    return dy


def check_labels(y, n: int, num_classes: int | None = None, name: str = "y") -> np.ndarray:
    """Integer class labels of length ``n`` in ``[0, num_classes)``."""
    if not isinstance(y, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(y).__name__}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per sample), got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels but the batch has {n} samples")
    if n and num_classes is not None and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} has labels outside [0, {num_classes}): "
                         f"min {y.min()}, max {y.max()}")
    return y


def check_positive(value, name: str, *, integer=False, allow_zero=False):
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an int' if integer else 'a number'}, got {value!r}")
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {value!r}")
    return value


def check_dtype(dtype, name: str = "dtype") -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt
