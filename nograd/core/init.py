"""Weight initialisers; every random one takes an explicit ``rng``.

Each initialiser has the signature ``name(shape, rng, dtype=np.float32, **opts)`` and returns a new
array of exactly that shape and dtype (float32 or float64). ``rng`` is a ``np.random.Generator``,
an integer seed or ``None`` (see :func:`nograd.core.checks.as_rng`); the same seed gives the same
array. Fans follow PyTorch's weight layout ``(out, in, *kernel)`` (:func:`fans`).

>>> import numpy as np
>>> w = xavier_uniform((4, 3), rng=0)
>>> w.shape, w.dtype
((4, 3), dtype('float32'))
>>> bool(np.all(np.abs(w) <= np.sqrt(6 / 7)))
True
>>> get_initializer("he_normal") is he_normal
True
"""
from __future__ import annotations

import math

import numpy as np

from .checks import as_rng, check_dtype, check_float, check_positive

__all__ = ["fans", "zeros", "constant", "uniform", "normal", "xavier_uniform", "xavier_normal",
           "he_uniform", "he_normal", "orthogonal", "INITIALISERS", "get_initializer"]


# --------------------------------------------------------------------------- argument checks
def _shape(shape) -> tuple[int, ...]:
    """Normalise ``shape`` (an int or a sequence of ints) to a tuple of non-negative ints."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be an int or a sequence of ints, got {shape!r}") from None
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"shape must contain ints, got {shape!r}")
        if d < 0:
            raise ValueError(f"shape must contain non-negative ints, got {shape!r}")
    return tuple(int(d) for d in dims)


def fans(shape) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of the given shape, in PyTorch's layout.

    For a weight ``(out, in, *kernel)`` with receptive field ``k = prod(kernel)``:
    ``fan_in = in * k`` and ``fan_out = out * k`` (a Linear weight ``(out, in)`` has ``k = 1``).
    A 1-D shape ``(n,)`` has ``fan_in = fan_out = n``; a 0-D shape has ``fan_in = fan_out = 1``.

    >>> fans((16, 3, 5, 5))
    (75, 400)
    """
    dims = _shape(shape)
    if len(dims) == 0:
        return 1, 1
    if len(dims) == 1:
        return dims[0], dims[0]
    receptive = math.prod(dims[2:])
    return dims[1] * receptive, dims[0] * receptive


# --------------------------------------------------------------------------- deterministic
def zeros(shape, rng=None, dtype=np.float32) -> np.ndarray:
    """All zeros: :math:`w = 0`. ``rng`` is accepted for a uniform signature and ignored."""
    return np.zeros(_shape(shape), dtype=check_dtype(dtype))


def constant(shape, rng=None, dtype=np.float32, value=0.0) -> np.ndarray:
    """Every entry equal to ``value``: :math:`w = c`. ``rng`` is ignored."""
    return np.full(_shape(shape), check_float(value, "value"), dtype=check_dtype(dtype))


# --------------------------------------------------------------------------- plain random
def uniform(shape, rng, dtype=np.float32, low=0.0, high=1.0) -> np.ndarray:
    """Independent draws :math:`w_{ij} \\sim U[\\mathrm{low}, \\mathrm{high})`."""
    shape, dt, gen = _shape(shape), check_dtype(dtype), as_rng(rng)
    low, high = check_float(low, "low"), check_float(high, "high")
    if not low < high:
        raise ValueError(f"low must be smaller than high, got low={low!r}, high={high!r}")
    w = gen.random(shape, dtype=dt)
    w *= high - low
    w += low
    return w


def normal(shape, rng, dtype=np.float32, mean=0.0, std=1.0) -> np.ndarray:
    """Independent draws :math:`w_{ij} \\sim \\mathcal{N}(\\mathrm{mean}, \\mathrm{std}^2)`."""
    shape, dt, gen = _shape(shape), check_dtype(dtype), as_rng(rng)
    mean = check_float(mean, "mean")
    std = float(check_positive(std, "std", allow_zero=True))
    w = gen.standard_normal(shape, dtype=dt)
    w *= std
    w += mean
    return w


def _symmetric_uniform(shape, rng, dtype, bound: float) -> np.ndarray:
    w = as_rng(rng).random(shape, dtype=dtype)      # [0, 1)
    w *= 2.0 * bound
    w -= bound                                      # [-bound, bound)
    return w


def _gain(gain) -> float:
    return float(check_positive(gain, "gain"))


# --------------------------------------------------------------------------- fan-scaled
def xavier_uniform(shape, rng, dtype=np.float32, gain=1.0) -> np.ndarray:
    """Glorot/Xavier uniform: :math:`w \\sim U(-a, a)`, :math:`a = g\\sqrt{6/(n_{in}+n_{out})}`.

    Keeps the variance of activations and of gradients roughly constant across layers
    (Glorot & Bengio, "Understanding the difficulty of training deep feedforward neural
    networks", AISTATS 2010, eq. 16).
    """
    shape, dt, gain = _shape(shape), check_dtype(dtype), _gain(gain)
    gen = as_rng(rng)
    if math.prod(shape) == 0:
        return np.zeros(shape, dt)
    fan_in, fan_out = fans(shape)
    return _symmetric_uniform(shape, gen, dt, gain * math.sqrt(6.0 / (fan_in + fan_out)))


def xavier_normal(shape, rng, dtype=np.float32, gain=1.0) -> np.ndarray:
    """Glorot/Xavier normal: :math:`w \\sim \\mathcal{N}(0, s^2)`, :math:`s = g\\sqrt{2/(n_{in}+n_{out})}`.

    Glorot & Bengio, AISTATS 2010 (the variance of their eq. 16 with a Gaussian).
    """
    shape, dt, gain = _shape(shape), check_dtype(dtype), _gain(gain)
    gen = as_rng(rng)
    if math.prod(shape) == 0:
        return np.zeros(shape, dt)
    fan_in, fan_out = fans(shape)
    return normal(shape, gen, dt, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def he_uniform(shape, rng, dtype=np.float32, gain=math.sqrt(2.0)) -> np.ndarray:
    """He/Kaiming uniform: :math:`w \\sim U(-a, a)`, :math:`a = g\\sqrt{3/n_{in}}`, :math:`g=\\sqrt2`.

    Preserves the forward variance through ReLU layers (He et al., "Delving deep into
    rectifiers", ICCV 2015, eq. 10); uniform with the same variance :math:`g^2/n_{in}`.
    """
    shape, dt, gain = _shape(shape), check_dtype(dtype), _gain(gain)
    gen = as_rng(rng)
    if math.prod(shape) == 0:
        return np.zeros(shape, dt)
    fan_in, _ = fans(shape)
    return _symmetric_uniform(shape, gen, dt, gain * math.sqrt(3.0 / fan_in))


def he_normal(shape, rng, dtype=np.float32, gain=math.sqrt(2.0)) -> np.ndarray:
    """He/Kaiming normal: :math:`w \\sim \\mathcal{N}(0, s^2)`, :math:`s = g/\\sqrt{n_{in}}`, :math:`g=\\sqrt2`.

    He et al., "Delving deep into rectifiers", ICCV 2015, eq. 10.
    """
    shape, dt, gain = _shape(shape), check_dtype(dtype), _gain(gain)
    gen = as_rng(rng)
    if math.prod(shape) == 0:
        return np.zeros(shape, dt)
    fan_in, _ = fans(shape)
    return normal(shape, gen, dt, 0.0, gain / math.sqrt(fan_in))


def orthogonal(shape, rng, dtype=np.float32, gain=1.0) -> np.ndarray:
    """(Semi-)orthogonal matrix times ``gain`` (Saxe et al., "Exact solutions to the nonlinear
    dynamics of learning in deep linear neural networks", ICLR 2014).

    The shape is flattened to ``(rows, cols) = (shape[0], prod(shape[1:]))`` (a 1-D shape is a
    single column). With :math:`G` Gaussian of shape ``(max, min)`` and :math:`G = QR`, the result is
    :math:`g\\, Q\\, \\mathrm{diag}(\\mathrm{sign}(\\mathrm{diag} R))`, transposed when wide, so
    :math:`W W^T = g^2 I` (wide) or :math:`W^T W = g^2 I` (tall). The sign correction makes the
    distribution uniform (Haar) over orthogonal matrices. The QR runs in float64.
    """
    shape, dt, gain = _shape(shape), check_dtype(dtype), _gain(gain)
    gen = as_rng(rng)
    if len(shape) == 0:
        raise ValueError("shape must have at least one dimension for orthogonal, got ()")
    if math.prod(shape) == 0:
        return np.zeros(shape, dt)
    rows = shape[0]
    cols = math.prod(shape[1:])
    wide = rows < cols
    g = gen.standard_normal((cols, rows) if wide else (rows, cols))
    q, r = np.linalg.qr(g)                          # q: (max, min), orthonormal columns
    q *= np.where(np.diagonal(r) < 0, -1.0, 1.0)    # column signs from diag(R)
    if wide:
        q = q.T
    q *= gain
    return np.ascontiguousarray(q.reshape(shape), dtype=dt)


INITIALISERS = {
    "zeros": zeros,
    "constant": constant,
    "uniform": uniform,
    "normal": normal,
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
    "orthogonal": orthogonal,
}


def get_initializer(name_or_callable):
    """Look up an initialiser by name in :data:`INITIALISERS`; a callable is returned unchanged."""
    if callable(name_or_callable):
        return name_or_callable
    if not isinstance(name_or_callable, str):
        raise TypeError(f"initializer must be a name or a callable, got {name_or_callable!r}")
    try:
        return INITIALISERS[name_or_callable]
    except KeyError:
        raise ValueError(f"unknown initializer {name_or_callable!r}; valid names: "
                         f"{', '.join(sorted(INITIALISERS))}") from None
