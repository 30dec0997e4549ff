r"""Second-order forward mode for the modules whose second derivative is known.

The differential operator of St(C) applied twice, ``D(D(f))``, runs the *jvp of the jvp* of a step
map. The module contract states first derivatives only, so :func:`jet2` supplies the missing piece,

.. math::
    \mathrm{jet2}(m, x, a, b) = \bigl(m(x),\; J a,\; J b,\; \partial^2 m(x)[a, b]\bigr),

where each direction may include parameter tangents (``pa``, ``pb``) and :math:`\partial^2 m[a, b]`
is the symmetric second derivative along the joint directions. It is defined, by hand, for
``Linear`` (bilinear in input and weight: :math:`a\,\dot W_b^\top + b\,\dot W_a^\top`), the
elementwise activations with their :math:`f''`, ``Sequential`` and ``Residual`` (the second-order
chain rule :math:`(g∘f)''[a,b] = g''[f'a, f'b] + g'\,f''[a,b]`), and any module with a ``jet2``
method (the wirings and products of :mod:`nograd.causal`). Other modules raise ``TypeError``.

>>> import numpy as np
>>> from nograd.layers import Tanh
>>> x, a, b = np.array([[0.3]]), np.array([[1.0]]), np.array([[2.0]])
>>> y, ya, yb, yab = jet2(Tanh(), x, a, b)
>>> t = np.tanh(0.3)
>>> bool(np.allclose(yab, -2 * t * (1 - t * t) * 2.0))
True
"""
from __future__ import annotations

import math

import numpy as np

from ..core.module import Module, Residual, Sequential
from ..layers.activations import (GELU, Identity, LeakyReLU, ReLU, Sigmoid, Softplus, Softsign,
                                  Tanh, sigmoid)
from ..layers.linear import Linear


def _f2_gelu(m, x, y):
    if m.approximate != "none":
        raise TypeError("jet2 knows the second derivative of the exact GELU only")
    return np.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi)) * (2 - x * x)


def _f2_softplus(m, x, y):
    s = sigmoid(x * x.dtype.type(m.beta))
    return m.beta * s * (1 - s)


# f''(x) for each activation class, given the input x and the output y = f(x)
_F2 = {
    Identity: lambda m, x, y: np.zeros_like(x),
    ReLU: lambda m, x, y: np.zeros_like(x),
    LeakyReLU: lambda m, x, y: np.zeros_like(x),
    Tanh: lambda m, x, y: -2 * y * (1 - y * y),
    Sigmoid: lambda m, x, y: y * (1 - y) * (1 - 2 * y),
    Softsign: lambda m, x, y: -2 * np.sign(x) / (1 + np.abs(x)) ** 3,
    Softplus: _f2_softplus,
    GELU: _f2_gelu,
}


def jet2(m: Module, x, a=None, b=None, *, pa=None, pb=None, params=None):
    """Return ``(y, J·(a, pa), J·(b, pb), ∂²m(x)[(a, pa), (b, pb)])`` (evaluation mode).

    ``a``, ``b``: input directions shaped like ``x`` (``None`` means zero); ``pa``, ``pb``:
    parameter tangents keyed like ``m.params`` (missing keys mean zero).
    """
    a = np.zeros_like(x) if a is None else a
    b = np.zeros_like(x) if b is None else b
    own = getattr(m, "jet2", None)
    if own is not None:
        return own(x, a, b, pa=pa, pb=pb, params=params)
    if isinstance(m, Sequential):
        return _sequential(m, x, a, b, pa, pb, params)
    if isinstance(m, Residual):
        return _residual(m, x, a, b, pa, pb, params)
    if type(m) is Linear:
        y, ya = m.jvp(x, a, pa, params=params)
        _, yb = m.jvp(x, b, pb, params=params)
        yab = np.zeros_like(y)
        if pa and "weight" in pa:
            yab += b @ pa["weight"].T.astype(x.dtype, copy=False)
        if pb and "weight" in pb:
            yab += a @ pb["weight"].T.astype(x.dtype, copy=False)
        return y, ya, yb, yab
    f2 = _F2.get(type(m))
    if f2 is not None:
        y = m.forward(x, params=params)[0]
        d1 = m.df(x, y)
        return y, d1 * a, d1 * b, f2(m, x, y) * a * b
    raise TypeError(f"second derivatives of {type(m).__name__} are not known to nograd.causal "
                    f"(D(D(f)) needs them); known: Linear, Sequential, Residual, "
                    f"{', '.join(c.__name__ for c in _F2)} and modules with a jet2 method")


def _sequential(m, x, a, b, pa, pb, params):
    ab = np.zeros_like(x)
    for name, layer in m._children.items():
        sub = m._split(params, name)
        y, ya, yb, yab = jet2(layer, x, a, b, pa=m._split(pa, name), pb=m._split(pb, name),
                              params=sub)
        ab = yab + layer.jvp(x, ab, None, params=sub)[1]
        x, a, b = y, ya, yb
    return x, a, b, ab


def _residual(m, x, a, b, pa, pb, params):
    body = m._children["body"]
    out = jet2(body, x, a, b, pa=m._split(pa, "body"), pb=m._split(pb, "body"),
               params=m._split(params, "body"))
    short = m._children.get("shortcut")
    if short is None:
        side = (x, a, b, np.zeros_like(x))
    else:
        side = jet2(short, x, a, b, pa=m._split(pa, "shortcut"), pb=m._split(pb, "shortcut"),
                    params=m._split(params, "shortcut"))
    return tuple(u + v for u, v in zip(out, side))
