r"""Tropical polynomials, Newton polytopes, and how poset filters compose.

In the max-plus semiring, :math:`a \oplus b = \max(a, b)` and :math:`a \otimes b = a + b`, so a
tropical polynomial in ``n`` variables is

.. math::
    f(x) = \bigoplus_k c_k \otimes x^{a_k} = \max_k \,(c_k + \langle a_k, x \rangle),

with exponent vectors :math:`a_k` and coefficients :math:`c_k`. Its Newton polytope is
:math:`\operatorname{conv}\{a_k\}`. With zero coefficients ``f`` is the support function of that
polytope, so the function and the polytope determine each other, and

- :math:`f \otimes g` (the sum of the functions) has the Minkowski sum of the polytopes,
- :math:`f \oplus g` (their maximum) has the convex hull of their union.

Poset filters (:mod:`nograd.layers.poset`) are such polynomials: ``f_P`` has the order polytope
``O(P)`` as Newton polytope. Dolores-Cuenca et al. (arXiv:2412.06097; the part on the operad of
posets acting on tropical polynomials) compose posets by substituting a poset ``Q`` for a point
``p`` of ``P`` (``P ∘_p Q``: replace ``p`` by a copy of ``Q``, every point of ``Q`` related to the
rest of ``P`` as ``p`` was) and follow the effect on the polytopes through the two operations
above. The two simplest cases:

- disjoint union :math:`P \sqcup Q`: :math:`f_{P \sqcup Q}(x, y) = f_P(x) \otimes f_Q(y)`, and
  :math:`O(P \sqcup Q)` is the Minkowski sum of :math:`O(P) \times 0` and :math:`0 \times O(Q)`;
- ordinal sum :math:`P \oplus Q` (all of ``P`` below all of ``Q``):
  :math:`f_{P \oplus Q}(x, y) = (f_P(x) \otimes \textstyle\sum_j y_j) \oplus f_Q(y)`, and
  :math:`O(P \oplus Q) = \operatorname{conv}(O(P) \times \{1\} \cup \{0\} \times O(Q))`.

This module holds functions on polynomials, polytopes and posets, not a layer, so it sits beside
the package's other tools rather than in :mod:`nograd.layers` (its old path,
``nograd.layers.tropical``, still works).

>>> from nograd.layers.poset import Poset
>>> two = Poset(2, [(0, 1)])                       # the 2-chain: max(0, x1, x0 + x1)
>>> f = poset_polynomial(two)
>>> float(f([1.0, -3.0])), float(f([2.0, 1.0]))
(0.0, 3.0)
>>> g = ordinal_sum_polynomial(f, poset_polynomial(Poset(1)))
>>> sorted(map(tuple, g.exponents.astype(int).tolist())) == sorted(map(tuple, poset_polynomial(Poset(3, [(0, 1), (1, 2)])).exponents.astype(int).tolist()))
True
"""
from __future__ import annotations

import numpy as np

from .layers.poset import Poset

__all__ = ["TropicalPolynomial", "tropical_eval", "newton_polytope", "minkowski_sum", "convex_hull",
           "poset_polynomial", "disjoint_union", "ordinal_sum", "substitute",
           "product_polynomial", "ordinal_sum_polynomial", "substitute_polynomial"]


def tropical_eval(exponents, x, coefficients=None):
    """``max_k (c_k + <a_k, x>)`` over the last axis of ``x``: ``exponents (m, n)``, ``x (..., n)``."""
    A = np.asarray(exponents, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] == 0:
        raise ValueError(f"exponents must be a non-empty (m, n) array, got shape {A.shape}")
    if x.shape[-1:] != (A.shape[1],):
        raise ValueError(f"x must have {A.shape[1]} variables in its last axis, got shape {x.shape}")
    vals = x @ A.T
    if coefficients is not None:
        vals = vals + np.asarray(coefficients, dtype=np.float64)
    return vals.max(axis=-1)


class TropicalPolynomial:
    """``f(x) = max_k (c_k + <a_k, x>)``; equal exponent vectors merge, keeping the larger ``c``."""

    def __init__(self, exponents, coefficients=None):
        A = np.asarray(exponents, dtype=np.float64)
        if A.ndim != 2 or A.shape[0] == 0 or not np.isfinite(A).all():
            raise ValueError(f"exponents must be a non-empty finite (m, n) array, got shape {A.shape}")
        c = np.zeros(len(A)) if coefficients is None else np.asarray(coefficients, dtype=np.float64)
        if c.shape != (len(A),):
            raise ValueError(f"coefficients must have shape ({len(A)},), got {c.shape}")
        merged = {}
        for a, ck in zip(map(tuple, A.tolist()), c.tolist()):
            merged[a] = max(ck, merged.get(a, -np.inf))
        keys = sorted(merged)
        self.exponents = np.array(keys, dtype=np.float64).reshape(len(keys), A.shape[1])
        self.coefficients = np.array([merged[k] for k in keys])

    @property
    def n_vars(self) -> int:
        return self.exponents.shape[1]

    def __call__(self, x):
        return tropical_eval(self.exponents, x, self.coefficients)

    def oplus(self, other: "TropicalPolynomial") -> "TropicalPolynomial":
        """Tropical sum: ``max(f, g)`` (same variables); the terms are united."""
        self._same_vars(other)
        return TropicalPolynomial(np.vstack([self.exponents, other.exponents]),
                                  np.concatenate([self.coefficients, other.coefficients]))

    def otimes(self, other: "TropicalPolynomial") -> "TropicalPolynomial":
        """Tropical product: ``f + g`` (same variables); exponents and coefficients add pairwise."""
        self._same_vars(other)
        A = (self.exponents[:, None, :] + other.exponents[None, :, :]).reshape(-1, self.n_vars)
        c = (self.coefficients[:, None] + other.coefficients[None, :]).reshape(-1)
        return TropicalPolynomial(A, c)

    def embed(self, positions, n_vars: int) -> "TropicalPolynomial":
        """The same function of variables ``positions`` among ``n_vars`` (the others unused)."""
        A = np.zeros((len(self.exponents), n_vars))
        A[:, list(positions)] = self.exponents
        return TropicalPolynomial(A, self.coefficients)

    def newton_polytope(self) -> np.ndarray:
        """Vertices of the convex hull of the exponent vectors (see :func:`newton_polytope`)."""
        return newton_polytope(self.exponents)

    def _same_vars(self, other):
        if not isinstance(other, TropicalPolynomial) or other.n_vars != self.n_vars:
            raise ValueError(f"need a TropicalPolynomial in {self.n_vars} variables, got {other!r}")

    def __repr__(self):
        return f"TropicalPolynomial({len(self.exponents)} terms in {self.n_vars} variables)"


def newton_polytope(points) -> np.ndarray:
    """Vertices of ``conv(points)``, unique, in lexicographic order.

    A point is a vertex when it is not a convex combination of the others (a linear feasibility
    problem, solved with SciPy's HiGHS; every 0/1 point is a vertex, which skips the solver).
    """
    from scipy.optimize import linprog  # lazy: SciPy only when a polytope is asked for

    P = np.unique(np.asarray(points, dtype=np.float64), axis=0)
    if P.ndim != 2 or len(P) == 0:
        raise ValueError(f"points must be a non-empty (m, n) array, got shape {np.shape(points)}")
    if np.isin(P, (0.0, 1.0)).all():
        return P
    keep = []
    for i in range(len(P)):
        others = np.delete(P, i, axis=0)
        if len(others) == 0:
            keep.append(i)
            continue
        A_eq = np.vstack([others.T, np.ones(len(others))])
        b_eq = np.concatenate([P[i], [1.0]])
        res = linprog(np.zeros(len(others)), A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        if res.status != 0:                       # infeasible: not in the hull of the others
            keep.append(i)
    return P[keep]


def minkowski_sum(A, B) -> np.ndarray:
    """Vertices of ``conv(A) + conv(B)`` (the hull of all pairwise sums)."""
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    return newton_polytope((A[:, None, :] + B[None, :, :]).reshape(-1, A.shape[1]))


def convex_hull(*point_sets) -> np.ndarray:
    """Vertices of the convex hull of the union of the point sets (the convex envelope)."""
    return newton_polytope(np.vstack([np.asarray(p, dtype=np.float64) for p in point_sets]))


# ---------------------------------------------------------------------- posets and their filters
def poset_polynomial(P: Poset) -> TropicalPolynomial:
    """``f_P``: exponents the up-set indicator vectors (vertices of the order polytope)."""
    return TropicalPolynomial(P.vertices())


def substitute(P: Poset, p: int, Q: Poset) -> Poset:
    """The operad composition ``P ∘_p Q``: point ``p`` of ``P`` replaced by a copy of ``Q``.

    Labels: ``P``'s points below ``p`` keep theirs, ``Q``'s points take ``p, …, p + |Q| - 1``, and
    ``P``'s later points shift up by ``|Q| - 1``. A point ``a`` of ``P`` is below every point of the
    copy when ``a < p``, above all of them when ``a > p``.
    """
    if not 0 <= p < P.n:
        raise ValueError(f"p must be a point of P (0..{P.n - 1}), got {p}")
    lab = [a if a < p else a + Q.n - 1 for a in range(P.n)]
    qs = [p + j for j in range(Q.n)]
    rel = [(lab[a], lab[b]) for a, b in P.relations if p not in (a, b)]
    rel += [(qs[a], qs[b]) for a, b in Q.relations]
    for a in range(P.n):
        if a != p and P.less[a, p]:
            rel += [(lab[a], q) for q in qs]
        if a != p and P.less[p, a]:
            rel += [(q, lab[a]) for q in qs]
    return Poset(P.n + Q.n - 1, rel)


def disjoint_union(P: Poset, Q: Poset) -> Poset:
    """``P ⊔ Q`` (``Q``'s points numbered after ``P``'s), i.e. ``(1 ⊔ 1) ∘ (P, Q)``."""
    return Poset(P.n + Q.n, list(P.relations) + [(a + P.n, b + P.n) for a, b in Q.relations])


def ordinal_sum(P: Poset, Q: Poset) -> Poset:
    """``P ⊕ Q``: ``P`` below ``Q`` (``Q``'s points numbered after ``P``'s), i.e. ``(1 < 1) ∘ (P, Q)``."""
    rel = list(P.relations) + [(a + P.n, b + P.n) for a, b in Q.relations]
    rel += [(a, b + P.n) for a in range(P.n) for b in range(Q.n)]
    return Poset(P.n + Q.n, rel)


def product_polynomial(f: TropicalPolynomial, g: TropicalPolynomial) -> TropicalPolynomial:
    """``f(x) ⊗ g(y)`` in the variables ``(x, y)``: the rule for the disjoint union."""
    n, m = f.n_vars, g.n_vars
    return f.embed(range(n), n + m).otimes(g.embed(range(n, n + m), n + m))


def ordinal_sum_polynomial(f: TropicalPolynomial, g: TropicalPolynomial) -> TropicalPolynomial:
    """``(f(x) ⊗ Σ_j y_j) ⊕ g(y)``: the rule for the ordinal sum (``x``'s poset below ``y``'s)."""
    n, m = f.n_vars, g.n_vars
    top = TropicalPolynomial(np.concatenate([np.zeros(n), np.ones(m)])[None])
    return f.embed(range(n), n + m).otimes(top).oplus(g.embed(range(n, n + m), n + m))


def substitute_polynomial(P: Poset, p: int, g: TropicalPolynomial) -> TropicalPolynomial:
    """``f_{P ∘_p Q}`` from ``P`` and ``g = f_Q`` alone, in the labels of :func:`substitute`.

    An up-set of ``P ∘_p Q`` is an up-set ``T`` of ``P`` with ``p`` expanded: to nothing when
    ``p ∉ T``; to all of ``Q`` when some point of ``T`` lies below ``p``; to any up-set of ``Q``
    when ``p`` is minimal in ``T``. So ``x_p`` is replaced by ``0``, ``Σ_j y_j`` or ``g(y)``::

        f = max( max_{p ∉ T} Σ_T x,  max_{p ∈ T, p min} Σ_{T-p} x + g(y),  max_{p ∈ T, not min} Σ_{T-p} x + Σ y ).
    """
    m = g.n_vars
    rows, coefs = [], []
    for T in P.vertices():
        x_part = np.delete(T, p).astype(np.float64)
        head, tail = x_part[:p], x_part[p:]
        if not T[p]:
            blocks = [(np.zeros(m), 0.0)]
        elif any(T[a] and P.less[a, p] for a in range(P.n)):
            blocks = [(np.ones(m), 0.0)]
        else:
            blocks = zip(g.exponents, g.coefficients)
        for b, c in blocks:
            rows.append(np.concatenate([head, b, tail]))
            coefs.append(c)
    return TropicalPolynomial(np.array(rows), np.array(coefs))
