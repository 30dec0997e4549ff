r"""The differential operator of St(C): forward mode through time, without unrolling.

For a stateful morphism :math:`(i, f): X \to Y` with step :math:`f: S \times X \to S \times Y`,
Sprunger & Katsumata (LICS 2019) define :math:`D(i, f): X \times X \to Y \times Y` as the stateful
morphism with state :math:`S \times S`, initial state :math:`(i, 0)` and step the tangent map of
:math:`f` (the Cartesian derivative of C, rearranged):

.. math::
    \bigl((s, \dot s), (x, \dot x)\bigr) \mapsto \bigl((s', \dot s'), (y, \dot y)\bigr), \qquad
    (s', y) = f(s, x), \quad (\dot s', \dot y) = J_f(s, x)\,(\dot s, \dot x)
        + \partial_\theta f \cdot \dot\theta .

The tangent state :math:`\dot s` is the derivative of the state with respect to everything so
far; it starts at 0 because :math:`i` is a constant. Running :math:`D(f)` on a sequence gives
the directional derivative of the outputs, one step at a time, in O(1) memory in the length —
and it equals the jvp of the unrolled network (D commutes with unrolling). Reverse mode is BPTT
on the unrolled network (:meth:`~nograd.causal.Stateful.backward`); the two agree by the adjoint
identity
:math:`\langle \bar y, D f \cdot \dot x\rangle = \langle \mathrm{BPTT}(\bar y), \dot x\rangle`.

In the Cartesian differential form (Blute, Cockett & Seely 2009, axioms [CD.1–7]) the derivative
is the second output block, ``D(f) >> (discard ⊗ id)``; the chain rule [CD.5] reads
``D(f >> g) ≈ (π₀ >> f, D(f) >> π₁) >> D(g)``, the tangent is linear [CD.2], and second
derivatives are symmetric [CD.7] — all tested in ``tests/causal``.

>>> import numpy as np
>>> from nograd.causal import delay, equivalent
>>> equivalent(D(delay([3.0])), delay([3.0, 0.0]))     # a register's tangent is a register
True
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_like
from .second import jet2
from .stateful import Stateful, _Delegate


class Tangent(_Delegate):
    r"""The tangent map of a module,
    :math:`T m: (z, \dot z) \mapsto (m(z), J_m(z)\dot z + \partial_\theta m\,\dot\theta)`.

    With ``n_state = S`` the columns are laid out as D's step needs them:
    input ``[s, ṡ, x, ẋ]``, output ``[s', ṡ', y, ẏ]`` (``z = [s, x]``). Parameter tangents
    ``dparams`` (keyed like ``m.params``) are constants of the map. Its own jvp — needed by
    ``D(D(f))`` — uses the second derivative of ``m`` (:func:`~nograd.causal.second.jet2`).
    Reverse mode through a tangent map would need second-order reverse maps, which the module
    contract does not state, so :meth:`backward` raises ``TypeError``.
    """

    def __init__(self, m, dparams=None, n_state: int = 0):
        super().__init__()
        self._children["step"] = m
        self.dparams, self.n_state = dparams, int(n_state)

    def _unpack(self, zz, name):
        S = self.n_state
        if zz.ndim != 2 or zz.shape[1] < 2 * S or zz.shape[1] % 2:
            raise ValueError(f"{name} must be (batch, 2 * (S + n)) with S = {S}, got {zz.shape}")
        n = zz.shape[1] // 2 - S
        s, ds, x, dx = zz[:, :S], zz[:, S:2 * S], zz[:, 2 * S:2 * S + n], zz[:, 2 * S + n:]
        return np.concatenate([s, x], 1), np.concatenate([ds, dx], 1)

    def _pack(self, y, dy):
        S = self.n_state
        return np.concatenate([y[:, :S], dy[:, :S], y[:, S:], dy[:, S:]], 1)

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x", ndim=2, nonempty=False)
        z, dz = self._unpack(x, "x")
        y, dy = self.step.jvp(z, dz, self.dparams, train=train, rng=rng, params=params)
        return self._pack(y, dy), None

    def backward(self, cache, dy, *, params=None, need_dx=True):
        raise TypeError("reverse mode through a tangent map (BPTT of D(f)) needs second-order "
                        "reverse maps, which nograd modules do not state; differentiate D(f) in "
                        "forward mode (D(D(f))), or run BPTT on f itself")

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        check_array(x, "x", ndim=2, nonempty=False)
        dx = np.zeros_like(x) if dx is None else check_like(dx, x.shape, "dx")
        z, dz = self._unpack(x, "x")
        u, du = self._unpack(dx, "dx")
        y, yu, ydz, yu_dz = jet2(self.step, z, u, dz, pa=dparams, pb=self.dparams, params=params)
        jdu = self.step.jvp(z, du, None, params=params)[1]
        return self._pack(y, ydz), self._pack(yu, yu_dz + jdu)

    def jet2(self, x, a, b, *, pa=None, pb=None, params=None):
        raise TypeError("jet2 of a tangent map needs third derivatives (D(D(D(f))) or the jvp "
                        "of D(D(f))), which nograd.causal does not provide")

    def extra_repr(self):
        return f"n_state={self.n_state}"


def D(f: Stateful, dparams=None) -> Stateful:
    """The differential operator: ``D(f): X ⊗ X → Y ⊗ Y`` on ``[x, ẋ] ↦ [y, ẏ]``.

    State ``[s, ṡ]`` initialised ``(i, 0)``; step :class:`Tangent` of ``f.step``. ``dparams``
    (keyed like ``f.params``) differentiates along the parameters as well, held constant in time.
    """
    if not isinstance(f, Stateful):
        raise TypeError(f"f must be a Stateful morphism, got {type(f).__name__}")
    if dparams:
        unknown = set(dparams) - set(f.params)
        if unknown:
            raise ValueError(f"dparams has unknown keys {sorted(unknown)}; expected some of "
                             f"{list(f.params)}")
    init = np.concatenate([f.init, np.zeros_like(f.init)])
    return Stateful(init, Tangent(f.step, dparams, f.n_state), 2 * f.n_in, 2 * f.n_out)
