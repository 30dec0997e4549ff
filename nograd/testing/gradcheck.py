r"""Gradient checks for any module (or any function given its maps), in float64.

Three independent checks (DESIGN.md §6):

* :func:`check_vjp` — reverse mode against finite differences: for a random cotangent ``v`` and
  random directions ``u``, :math:`\langle \mathrm{backward}(v), u\rangle` must equal the derivative of
  :math:`t \mapsto \langle v, f(x + t u)\rangle`, estimated by a fourth-order central difference.
  The input and each parameter are checked separately, so a failure names the wrong one.
* :func:`check_jvp` — forward mode against finite differences: ``jvp(x, u)`` must equal
  :math:`(f(x + h u) - f(x - h u)) / 2h` (fourth order) as whole arrays.
* :func:`check_adjoint` — the two modes against each other with no differences at all:
  :math:`\langle \mathrm{backward}(v), u\rangle = \langle v, \mathrm{jvp}(u)\rangle`, which holds to
  rounding (~1e-12) when the maps are exact transposes.

Each returns the worst relative error found and raises ``AssertionError`` with a readable
message when a tolerance is exceeded. When the difference stencil straddles a kink (the
estimates with steps ``h`` and ``h/2`` disagree) the finite-difference checks raise
:class:`NonSmoothError` instead, naming the direction: move the input, not the tolerance. Randomness inside the module (dropout) is frozen by
passing a fresh generator seeded with ``seed`` to every evaluation.

>>> import numpy as np
>>> from nograd.layers import Linear, Tanh
>>> from nograd.core import Sequential
>>> net = Sequential(Linear(3, 4, rng=0, dtype=np.float64), Tanh())
>>> x = np.random.default_rng(1).normal(size=(5, 3))
>>> check_vjp(net, x) < 1e-6 and check_jvp(net, x) < 1e-6 and check_adjoint(net, x) < 1e-10
True

Plain functions work too, given their maps:

>>> f = np.sin
>>> check_adjoint(f, x, vjp=lambda x, dy: dy * np.cos(x), jvp=lambda x, dx: dx * np.cos(x)) < 1e-12
True
"""
from __future__ import annotations

import numpy as np

from ..core.module import Module


class FunctionModule(Module):
    """Wrap a parameter-free function and its hand-written maps as a :class:`Module`.

    ``f(x) -> y``; ``vjp(x, dy) -> dx``; ``jvp(x, dx) -> dy``. Either map may be omitted when only
    the other is checked.
    """

    def __init__(self, f, vjp=None, jvp=None):
        super().__init__()
        self.f, self._vjp, self._jvp = f, vjp, jvp

    def forward(self, x, *, train=False, rng=None, params=None):
        return np.asarray(self.f(x)), x

    def backward(self, cache, dy, *, params=None, need_dx=True):
        if self._vjp is None:
            raise TypeError("this check needs vjp=, the function's backward map")
        return np.asarray(self._vjp(cache, dy)), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        if self._jvp is None:
            raise TypeError("this check needs jvp=, the function's forward-mode map")
        y = np.asarray(self.f(x))
        return y, (np.zeros_like(y) if dx is None else np.asarray(self._jvp(x, dx)))


def _as_module(target, vjp, jvp):
    if isinstance(target, Module):
        if vjp is not None or jvp is not None:
            raise TypeError("vjp=/jvp= are for plain functions; a Module brings its own maps")
        return target
    if callable(target):
        return FunctionModule(target, vjp, jvp)
    raise TypeError(f"target must be a nograd Module or a callable, got {type(target).__name__}")


def _setup(module, x, params, seed):
    if params is None:
        params = module.params
    for k, v in params.items():
        if v.dtype != np.float64:
            raise TypeError(f"gradient checks run in float64: parameter {k!r} is {v.dtype} "
                            f"(call model.astype(np.float64))")
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype.kind == "f" and x.dtype != np.float64:
        raise TypeError(f"gradient checks run in float64: x is {x.dtype}")
    rng = np.random.default_rng(seed + 7919)
    has_x = x.dtype.kind == "f"
    return dict(params), rng, has_x


def _unit(arrays):
    total = np.sqrt(sum(float(np.sum(a * a)) for a in arrays.values()))
    return {k: a / total for k, a in arrays.items()} if total > 0 else arrays


def _directions(module, x, params, rng, has_x):
    """Separate unit directions: one for x, one per parameter, then one joint direction."""
    raw = {}
    if has_x:
        raw["x"] = rng.standard_normal(x.shape)
    for k, v in params.items():
        raw[k] = rng.standard_normal(v.shape)
    dirs = [(name, _unit({name: a})) for name, a in raw.items()]
    if len(raw) > 1:
        dirs.append(("all", _unit(raw)))
    return dirs


def _call(module, x, params, train, seed):
    return module.forward(x, train=train, rng=np.random.default_rng(seed), params=params)


def _shift(x, params, d, t):
    xs = x + t * d["x"] if "x" in d else x
    ps = {k: (v + t * d[k] if k in d else v) for k, v in params.items()}
    return xs, ps


def _fd(fun, h):
    """Fourth-order central difference of a scalar- or array-valued fun(t) at t = 0."""
    return (8 * (fun(h) - fun(-h)) - (fun(2 * h) - fun(-2 * h))) / (12 * h)


class NonSmoothError(AssertionError):
    """The finite-difference stencil straddles a non-smooth point (a ReLU kink, a max tie):
    the check cannot judge the gradient there. Resample the input away from the kink."""


def _fd_checked(fun, h, name, rtol, norm):
    """The difference quotient with step h, after checking that the function is smooth there.

    Two detectors: the fourth-order estimates with steps h and h/2 must agree (a kink inside the
    stencil moves relative to it), and the second-order one-sided slopes from the left and from
    the right must agree (a kink exactly at the centre, where the central estimates are blind).
    """
    f0, fp1, fm1, fp2, fm2 = fun(0.0), fun(h), fun(-h), fun(2 * h), fun(-2 * h)
    a = (8 * (fp1 - fm1) - (fp2 - fm2)) / (12 * h)
    b = _fd(fun, h / 2)
    right = (-3 * f0 + 4 * fp1 - fp2) / (2 * h)
    left = (3 * f0 - 4 * fm1 + fm2) / (2 * h)
    # rounding in the function values, amplified by the 1/h of a difference quotient
    noise = 256 * np.finfo(np.float64).eps * max(norm(f0), norm(fp2), norm(fm2)) / h
    tol = rtol * max(norm(a), norm(b)) + noise
    if norm(a - b) > tol or norm(right - left) > 100 * tol:
        raise NonSmoothError(f"the function is not smooth within ±{2 * h:g} of the input along "
                             f"{name!r} (difference estimates disagree: h vs h/2 by "
                             f"{norm(a - b):.1e}, left vs right slope by {norm(right - left):.1e}); "
                             f"move the input away from kinks such as ReLU at 0 and check again")
    return a, noise


def _fail(kind, name, err, tol, detail):
    raise AssertionError(f"{kind} check failed along {name!r}: relative error {err:.3e} > {tol:.1e}"
                         f" ({detail})")


def check_vjp(target, x, *, params=None, vjp=None, train=False, seed=0, h=1e-4, rtol=1e-6,
              atol=1e-12):
    """Check ``backward`` against finite differences; return the worst relative error.

    Parameters
    ----------
    target : a Module, or a function ``f(x)`` together with ``vjp=(x, dy) -> dx``.
    x : float64 input (integer input, e.g. for Embedding, checks the parameters only).
    params : parameter values to check at (default: the module's own).
    train : run the module in training mode (batch statistics, dropout with a frozen mask).
    seed : seeds the random directions and any randomness inside the module.
    h, rtol, atol : step and tolerances; the error is relative to the Cauchy–Schwarz bound
        ``‖v‖·‖J u‖``-style scale of each directional derivative.
    """
    module = _as_module(target, vjp, None)
    params, rng, has_x = _setup(module, x, params, seed)
    y, cache = _call(module, x, params, train, seed)
    v = rng.standard_normal(y.shape)
    dx, grads = module.backward(cache, v.astype(y.dtype), params=params)
    cot = dict(grads)
    if has_x:
        cot["x"] = dx
    worst = 0.0
    for name, d in _directions(module, x, params, rng, has_x):
        analytic = sum(float(np.sum(cot[k] * d[k])) for k in d)
        scale = sum(float(np.linalg.norm(cot[k]) * np.linalg.norm(d[k])) for k in d)

        def phi(t):
            xs, ps = _shift(x, params, d, t)
            return float(np.sum(v * _call(module, xs, ps, train, seed)[0]))

        numeric, noise = _fd_checked(phi, h, name, rtol, abs)
        # relative to the derivative's scale, but never below the rounding floor of the differences
        err = abs(numeric - analytic) / max(scale, abs(numeric), max(atol, noise) / rtol)
        if err > rtol:
            _fail("vjp", name, err, rtol, f"backward gives {analytic:.10g}, finite differences "
                                          f"{numeric:.10g}")
        worst = max(worst, err)
    return worst


def check_jvp(target, x, *, params=None, jvp=None, train=False, seed=0, h=1e-4, rtol=1e-6,
              atol=1e-12):
    """Check ``jvp`` against finite differences of the output; return the worst relative error.

    Also checks that the primal output of ``jvp`` equals ``forward``'s. Arguments as in
    :func:`check_vjp`, with ``jvp=(x, dx) -> dy`` for a plain function.
    """
    module = _as_module(target, None, jvp)
    params, rng, has_x = _setup(module, x, params, seed)
    y_ref = _call(module, x, params, train, seed)[0]
    worst = 0.0
    for name, d in _directions(module, x, params, rng, has_x):
        dparams = {k: a for k, a in d.items() if k != "x"} or None
        y, dy = module.jvp(x, d.get("x"), dparams, train=train, rng=np.random.default_rng(seed),
                           params=params)
        if y.shape != y_ref.shape or not np.allclose(y, y_ref, rtol=1e-12, atol=1e-12):
            raise AssertionError(f"jvp's primal output differs from forward's (direction {name!r})")
        if dy.shape != y.shape:
            raise AssertionError(f"jvp's tangent has shape {dy.shape}, output has {y.shape}")

        def fun(t):
            xs, ps = _shift(x, params, d, t)
            return _call(module, xs, ps, train, seed)[0]

        numeric, noise = _fd_checked(fun, h, name, rtol, lambda a: float(np.linalg.norm(a)))
        diff = float(np.linalg.norm(numeric - dy))
        err = diff / max(float(np.linalg.norm(numeric)), float(np.linalg.norm(dy)),
                         max(atol, noise) / rtol)
        if err > rtol:
            _fail("jvp", name, err, rtol, f"‖jvp − differences‖ = {diff:.3e}")
        worst = max(worst, err)
    return worst


def check_adjoint(target, x, *, params=None, vjp=None, jvp=None, train=False, seed=0, rtol=1e-9):
    """Check ⟨backward(v), u⟩ = ⟨v, jvp(u)⟩ for random ``v, u``; return the worst relative error.

    No finite differences are involved, so in float64 exact maps agree to ~1e-12; ``rtol``
    defaults to 1e-9. The error is relative to ``‖v‖·‖jvp(u)‖ + Σ‖backward(v)_k‖·‖u_k‖`` for the
    direction, or to a thousandth of the largest such scale over all directions when that is bigger
    (a parameter with an exactly zero derivative leaves only rounding noise on both sides).
    """
    module = _as_module(target, vjp, jvp)
    params, rng, has_x = _setup(module, x, params, seed)
    y, cache = _call(module, x, params, train, seed)
    v = rng.standard_normal(y.shape)
    dx, grads = module.backward(cache, v, params=params)
    cot = dict(grads)
    if has_x:
        cot["x"] = dx
    rows = []
    for name, d in _directions(module, x, params, rng, has_x):
        dparams = {k: a for k, a in d.items() if k != "x"} or None
        _, dy = module.jvp(x, d.get("x"), dparams, train=train, rng=np.random.default_rng(seed),
                           params=params)
        lhs = sum(float(np.sum(cot[k] * d[k])) for k in d)
        rhs = float(np.sum(v * dy))
        scale = (float(np.linalg.norm(v) * np.linalg.norm(dy))
                 + sum(float(np.linalg.norm(cot[k]) * np.linalg.norm(d[k])) for k in d))
        rows.append((name, lhs, rhs, scale))
    # a direction whose derivative is (nearly) zero — a bias followed by batch norm — is judged
    # against a thousandth of the largest directional scale, not against its own rounding noise
    floor = 1e-3 * max(r[3] for r in rows) if rows else 0.0
    worst = 0.0
    for name, lhs, rhs, scale in rows:
        err = abs(lhs - rhs) / max(scale, floor, 1e-300)
        if err > rtol:
            _fail("adjoint", name, err, rtol, f"⟨backward(v), u⟩ = {lhs:.15g}, "
                                              f"⟨v, jvp(u)⟩ = {rhs:.15g}")
        worst = max(worst, err)
    return worst
