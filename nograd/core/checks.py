"""Input validation shared by layers, losses, rules and the fit loop.

Every public entry point checks its arguments here, so that bad input fails early with a
``TypeError``/``ValueError`` that names the argument and says what was expected
(DESIGN.md §4). The checks are O(1) except the finiteness test, one pass over the array.

A value that must be finite and holds NaN or ±inf raises :class:`NonFiniteError` where it is
found; :func:`nograd.train.fit` recognises divergence by that type.
"""
from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


class NonFiniteError(FloatingPointError, ValueError):
    """An array or number that must be finite holds NaN or ±inf.

    Raised where the non-finite value is found (layer inputs, losses, gradients given to an
    optimizer, metrics, data loaders), with a message that names the argument. It is a
    ``FloatingPointError`` — the arithmetic went wrong, as when training diverges — and also a
    ``ValueError``, because a non-finite argument is bad input: ``except ValueError`` and
    ``pytest.raises(ValueError)`` written before this class existed still catch it.
    :func:`nograd.train.fit` checks its data finite on entry, so a ``NonFiniteError`` during a
    step means the run diverged; fit re-raises it as a ``NonFiniteError`` that names the epoch
    and batch.

    >>> import numpy as np
    >>> try:
    ...     check_array(np.array([[1.0, np.nan]]), "x")
    ... except NonFiniteError as e:
    ...     print(e, isinstance(e, FloatingPointError), isinstance(e, ValueError))
    x contains NaN or inf True True
    """


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
    """True when every entry of a float array is finite: a sum of squares first (one BLAS dot; a
    NaN or inf entry makes it non-finite, squares cannot cancel), the exact check on doubt."""
    if a.size == 0:
        return True
    contiguous = a.flags.c_contiguous or a.flags.f_contiguous      # ravel("K") is then a view
    f = a.ravel("K") if contiguous and a.dtype in FLOAT_DTYPES else None
    with np.errstate(over="ignore", invalid="ignore"):    # an overflow is settled below
        if np.isfinite(np.add.reduce(a, axis=None) if f is None else np.dot(f, f)):
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
    finite : refuse NaN and inf (:class:`NonFiniteError`).
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
        raise NonFiniteError(f"{name} contains NaN or inf")
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


def check_positive(value, name: str, *, integer=False, allow_zero=False):
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an int' if integer else 'a number'}, got {value!r}")
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {value!r}")
    return value


def check_dtype(dtype, name: str = "dtype") -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:              # not a dtype at all ("nonsense", a list, ...)
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


# --------------------------------------------------------------------------- scalar arguments
class ArgumentTypeError(TypeError, ValueError):
    """A scalar argument of the wrong type: not a number, a float where an integer is needed, or
    a bool (``True`` is an ``int`` to Python, never a count or a rate here).

    A ``TypeError``, and also a ``ValueError``: many checks that :func:`check_int` and
    :func:`check_float` replaced raised ``ValueError`` for a wrong type, and ``except ValueError``
    or ``pytest.raises(ValueError)`` written against them still catch it.
    """


_INTEGER_TYPES = (int, np.integer)
_REAL_TYPES = (int, float, np.integer, np.floating)


def is_int(value) -> bool:
    """True for a Python or NumPy integer that is not a bool."""
    return isinstance(value, _INTEGER_TYPES) and not isinstance(value, bool)


def _expected(noun, low, high, low_open, high_open, allow_none) -> str:
    """What a scalar check expects, in words: "a positive integer", "a number in [0, 1)", …"""
    article = "an" if noun == "integer" else "a"
    if low is None and high is None:
        text = "an integer" if noun == "integer" else "a finite number"
    elif high is None and low == 0:
        text = f"a positive {noun}" if low_open else f"a non-negative {noun}"
    elif high is None and low == 1 and noun == "integer":
        text = "a positive integer"
    elif high is None:
        text = f"{article} {noun} {'>' if low_open else '≥'} {low}"
    elif low is None:
        text = f"{article} {noun} {'<' if high_open else '≤'} {high}"
    else:
        text = f"{article} {noun} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    return text + (" or None" if allow_none else "")


def _in_range(value, low, high, low_open, high_open) -> bool:
    if low is not None and (value < low or (low_open and value == low)):
        return False
    return high is None or not (value > high or (high_open and value == high))


def check_int(value, name: str, *, low=None, high=None, allow_none=False):
    """An integer argument (Python or NumPy, never a bool) in ``[low, high]``; returns ``int(value)``
    (``None`` unchanged when ``allow_none``).

    A wrong type raises :class:`ArgumentTypeError`, a value out of range ``ValueError``; both
    messages name the argument and the expected range (``"n must be a positive integer, got 0"``).

    >>> check_int(np.int64(3), "n", low=1)
    3
    >>> check_int(0, "bit_depth", low=1, high=24, allow_none=True)
    Traceback (most recent call last):
    ...
    ValueError: bit_depth must be an integer in [1, 24] or None, got 0
    >>> try:
    ...     check_int(True, "n", low=1)
    ... except ValueError as e:
    ...     print(type(e).__name__, isinstance(e, TypeError), e)
    ArgumentTypeError True n must be a positive integer, got True
    """
    if value is None and allow_none:
        return None
    if not is_int(value):
        expected = _expected("integer", low, high, False, False, allow_none)
        raise ArgumentTypeError(f"{name} must be {expected}, got {value!r}")
    if not _in_range(value, low, high, False, False):
        expected = _expected("integer", low, high, False, False, allow_none)
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(value)


def check_float(value, name: str, *, low=None, high=None, low_open=False, high_open=False,
                allow_none=False):
    """A finite real argument (a Python or NumPy int or float, never a bool) in the interval from
    ``low`` to ``high`` (closed ends unless ``low_open``/``high_open``); returns ``float(value)``
    (``None`` unchanged when ``allow_none``).

    A wrong type raises :class:`ArgumentTypeError`, NaN or ±inf :class:`NonFiniteError`, a value
    out of range ``ValueError``; the messages name the argument and the expected range
    (``"dropout must be a number in [0, 1), got 1.0"``).

    >>> check_float(0.5, "p", low=0, high=1, high_open=True)
    0.5
    >>> check_float(float("inf"), "noise", low=0)
    Traceback (most recent call last):
    ...
    nograd.core.checks.NonFiniteError: noise must be a non-negative number, got inf
    >>> check_float(0, "lr", low=0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: lr must be a positive number, got 0
    """
    if value is None and allow_none:
        return None
    expected = _expected("number", low, high, low_open, high_open, allow_none)
    if isinstance(value, bool) or not isinstance(value, _REAL_TYPES):
        raise ArgumentTypeError(f"{name} must be {expected}, got {value!r}")
    if not np.isfinite(value):
        raise NonFiniteError(f"{name} must be {expected}, got {value!r}")
    if not _in_range(value, low, high, low_open, high_open):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return float(value)


def check_seed(seed, name: str = "seed") -> int:
    """A random seed: an integer (Python or NumPy, never a bool), returned as ``int``."""
    return check_int(seed, name)
