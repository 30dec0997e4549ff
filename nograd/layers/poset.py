r"""Poset filters: pooling by the tropical polynomial of a poset's order polytope.

Dolores-Cuenca, Guzmán-Sáenz, Kim, López-Moreno and Mendoza-Cortes, "Order Theory in the Context of
Machine Learning: an application" (arXiv:2412.06097, 2024), §1. A finite poset ``P`` on points
``0..n-1`` has the order polytope :math:`O(P) = \{v \in [0,1]^n : v_a \le v_b \text{ when } a < b\}`,
whose vertices are the indicator vectors of the *up-sets* of ``P`` (sets closed upwards; the empty
set and ``P`` itself included). Its tropical polynomial is the max over those vertices,

.. math::
    f_P(x) = \max_{U \text{ up-set of } P} \; \sum_{i \in U} x_i ,

a parameter-free, convex, positively homogeneous map with :math:`f_P \ge 0` (the empty set gives 0).
Placed on the four positions of a 2×2 window (row-major: 0 1 / 2 3), it is a pooling filter. The
placement matters (a poset and a relabelling of it are different filters); the 16 named posets sit
where the authors' code puts them (:func:`get_poset`). The antichain gives
:math:`\sum_i \mathrm{ReLU}(x_i)`, the 4-chain ``0 < 1 < 2 < 3`` the largest suffix sum
``max(0, x3, x2+x3, x1+x2+x3, x0+…+x3)``. Away from ties ``f_P`` is linear with gradient the arg-max
vertex, so backward sends ``dy`` to every point of the winning up-set (max pooling sends it to one).

Note: on inputs ``x ≥ 0`` (a ReLU before the pooling) the whole window is the arg-max up-set of
every poset, so every poset filter then equals sum pooling; the filters differ on signed inputs.

>>> P = four_point_posets()
>>> len(P), [p.name for p in P][:3], P[-1].name
(16, ['antichain', '2+1+1', 'wedge+1'], 'chain')
>>> N = get_poset("N"); N.covers, len(N.up_sets())
(((0, 1), (2, 1), (2, 3)), 8)
"""
from __future__ import annotations

import functools

import numpy as np

from ..core.checks import check_array, check_int, check_like
from ..core.module import Module
from .conv import _pair

MAX_POINTS = 16     # up-sets are stored as bitmasks of at most 16 bits


class Poset:
    """A finite partial order on the points ``0..n-1`` (``n ≤ 16``).

    ``relations`` are pairs ``(a, b)`` meaning ``a < b``; the transitive closure is taken, and a
    cycle (``a < b < … < a``) is refused. ``less[a, b]`` is the strict order.
    """

    def __init__(self, n, relations=(), *, name=None):
        n = check_int(n, "n", low=1, high=MAX_POINTS)
        relations = list(relations)
        less = np.zeros((n, n), dtype=bool)
        for pair in relations:
            a, b = (int(t) for t in pair)
            if not (0 <= a < n and 0 <= b < n) or a == b:
                raise ValueError(f"relation {pair!r} must be a pair of distinct points in 0..{n - 1}")
            less[a, b] = True
        for k in range(n):                      # Warshall: transitive closure
            less |= less[:, k:k + 1] & less[k:k + 1, :]
        if less.diagonal().any():
            raise ValueError(f"relations {relations!r} contain a cycle; a poset is acyclic")
        less.setflags(write=False)
        self.n, self.less, self.name = n, less, name

    # ------------------------------------------------------------------ structure
    @property
    def covers(self) -> tuple:
        """The Hasse diagram: pairs ``a < b`` with nothing strictly between them."""
        L = self.less
        between = (L.astype(np.int64) @ L.astype(np.int64)) > 0
        return tuple((int(a), int(b)) for a, b in zip(*np.nonzero(L & ~between)))

    @property
    def relations(self) -> tuple:
        """Every strict relation ``a < b``."""
        return tuple((int(a), int(b)) for a, b in zip(*np.nonzero(self.less)))

    def up_sets(self) -> tuple:
        """Bitmasks of the up-sets (bit ``i`` ↔ point ``i``), by size, then by value: ``0`` (the empty
        set) first, the whole set last. This is the tie-break order of :class:`PosetPool2d`."""
        above = [sum(1 << int(b) for b in np.nonzero(self.less[a])[0]) for a in range(self.n)]
        ups = [m for m in range(1 << self.n)
               if all(above[a] & ~m == 0 for a in range(self.n) if m >> a & 1)]
        return tuple(sorted(ups, key=lambda m: (bin(m).count("1"), m)))

    def vertices(self) -> np.ndarray:
        """The vertices of the order polytope: indicator vectors of :meth:`up_sets`, ``(m, n)``."""
        ups = np.array(self.up_sets(), dtype=np.int64)
        return ((ups[:, None] >> np.arange(self.n)) & 1).astype(np.int64)

    def linear_extensions(self):
        """Every total order of the points compatible with ``P`` (tuples, lexicographic order; the
        first is built greedily, taking the smallest point whose lower points are all placed)."""
        below = [set(np.nonzero(self.less[:, b])[0].tolist()) for b in range(self.n)]

        def extend(prefix, placed):
            if len(prefix) == self.n:
                yield tuple(prefix)
                return
            for p in range(self.n):
                if p not in placed and below[p] <= placed:
                    yield from extend(prefix + [p], placed | {p})

        return extend([], frozenset())

    def levels(self) -> list:
        """Points grouped by height (length of the longest chain below them), lowest first."""
        height = [0] * self.n
        for a in next(self.linear_extensions()):
            for b in range(self.n):
                if self.less[a, b]:
                    height[b] = max(height[b], height[a] + 1)
        return [[p for p in range(self.n) if height[p] == h] for h in range(max(height) + 1)]

    def hasse_diagram(self) -> str:
        """A text drawing: the highest level first, then the cover relations.

        >>> print(get_poset("diamond").hasse_diagram())
        diamond
            3
          1   2
            0
        covers: 0<1 0<2 1<3 2<3
        """
        lines = [self.name or f"poset on {self.n} points"]
        rows = [" ".join(f"{p:>3}" for p in lev) for lev in self.levels()[::-1]]
        width = max(len(r) for r in rows)
        lines += [(" " * ((width - len(r)) // 2) + r).rstrip() for r in rows]
        lines.append("covers: " + (" ".join(f"{a}<{b}" for a, b in self.covers) or "none"))
        return "\n".join(lines)

    # ------------------------------------------------------------------ isomorphism
    def relabel(self, perm) -> "Poset":
        """The same order with point ``i`` renamed ``perm[i]``."""
        perm = [int(p) for p in perm]
        if sorted(perm) != list(range(self.n)):
            raise ValueError(f"perm must be a permutation of 0..{self.n - 1}, got {perm!r}")
        return Poset(self.n, [(perm[a], perm[b]) for a, b in self.relations], name=self.name)

    def _code(self, order) -> int:
        """Bits ``less[order[i], order[j]]`` for ``i < j``, the first pair most significant."""
        code = 0
        for i in range(self.n):
            for j in range(i + 1, self.n):
                code = 2 * code + int(self.less[order[i], order[j]])
        return code

    @functools.cached_property
    def _canonical(self):
        if self.n > 8:
            raise ValueError(f"canonical forms are computed by brute force, for n <= 8; this poset has {self.n}")
        best = max(self.linear_extensions(), key=self._code)
        return self._code(best), best

    def canonical_form(self) -> tuple:
        """A complete isomorphism invariant: ``(n, code)``, the largest code over all labellings
        that follow a linear extension. Two posets are isomorphic iff their forms are equal."""
        return self.n, self._canonical[0]

    def canonical(self) -> "Poset":
        """This poset relabelled by its canonical labelling (a natural one: ``a < b`` ⇒ ``a < b``)."""
        order = self._canonical[1]
        perm = [0] * self.n
        for new, old in enumerate(order):
            perm[old] = new
        return self.relabel(perm)

    def is_isomorphic(self, other: "Poset") -> bool:
        return isinstance(other, Poset) and self.canonical_form() == other.canonical_form()

    def dual(self) -> "Poset":
        """The opposite order (``a < b`` becomes ``b < a``)."""
        return Poset(self.n, [(b, a) for a, b in self.relations])

    def __eq__(self, other):
        return isinstance(other, Poset) and self.n == other.n and bool((self.less == other.less).all())

    def __hash__(self):
        return hash((self.n, self.less.tobytes()))

    def __repr__(self):
        name = f", name={self.name!r}" if self.name else ""
        return f"Poset({self.n}, {list(self.covers)}{name})"


# ---------------------------------------------------------------------- the sixteen
def enumerate_posets(n: int) -> list:
    """One canonical representative of every isomorphism class of posets on ``n ≤ 5`` points,
    ordered by number of relations, then canonical code.

    Every poset has a natural labelling, so it suffices to close each set of pairs ``i < j`` under
    transitivity and keep one per canonical form: 1, 2, 5, 16, 63 classes for n = 1..5.
    """
    n = check_int(n, "n", low=1, high=5)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    seen = {}
    for bits in range(1 << len(pairs)):
        rel = [p for k, p in enumerate(pairs) if bits >> k & 1]
        P = Poset(n, rel)
        if len(P.relations) != len(rel):     # not closed: its closure is enumerated elsewhere
            continue
        seen.setdefault(P.canonical_form(), P)
    return sorted((P.canonical() for P in seen.values()),
                  key=lambda P: (len(P.relations), P.canonical_form()))


# The 16 posets on a 2×2 window (positions 0 1 / 2 3), placed as in the authors' code: their
# ``dict_posets`` (poset_utils.py of github.com/mendozacortesgroup/Poset-filters) lists, for each row
# 0..15 of the paper's table, the up-set indicator vectors as coefficient tuples over the row-major
# window. Each entry here is ``name: (row, covers)``, the covers read off that list; only these
# placements are typed in: the classes are enumerated, and every entry must fall into its own class.
_PLACEMENT = {
    "co-claw": (0, [(0, 3), (1, 3), (2, 3)]), "antichain": (1, []), "2+1+1": (2, [(0, 1)]),
    "co-Y": (3, [(0, 2), (1, 2), (2, 3)]), "wedge+1": (4, [(0, 2), (1, 2)]),
    "vee+1": (5, [(0, 1), (0, 2)]), "2+2": (6, [(0, 1), (2, 3)]), "Y": (7, [(0, 1), (1, 2), (1, 3)]),
    "3-chain+1": (8, [(0, 1), (1, 2)]), "claw": (9, [(0, 1), (0, 2), (0, 3)]),
    "hook": (10, [(0, 1), (0, 2), (2, 3)]),              # the 3-chain 0<2<3, and 1 above its bottom
    "bowtie": (11, [(0, 2), (0, 3), (1, 2), (1, 3)]),
    "N": (12, [(0, 1), (2, 1), (2, 3)]),                 # their ``filter_n``; not a natural labelling
    "chain": (13, [(0, 1), (1, 2), (2, 3)]), "diamond": (14, [(0, 1), (0, 2), (1, 3), (2, 3)]),
    "co-hook": (15, [(0, 2), (2, 3), (1, 3)]),           # the 3-chain 0<2<3, and 1 below its top
}


@functools.lru_cache(maxsize=1)
def four_point_posets() -> tuple:
    """The 16 posets on 4 points up to isomorphism, named and placed on the 2×2 window as in the
    authors' code (see :func:`get_poset`).

    The classes are enumerated (:func:`enumerate_posets`); each is then given in the authors'
    placement, so that ``PosetPool2d(P)`` computes their filter, not an isomorphic copy of it with
    the window positions permuted (for N, hook and co-hook the canonical labelling differs).
    Order: that of the enumeration, by number of relations (the antichain first, the 4-chain
    last). Raises ``RuntimeError`` if the enumeration does not give 16 classes or the placements
    do not match them one to one.
    """
    found = enumerate_posets(4)
    if len(found) != 16:
        raise RuntimeError(f"enumerated {len(found)} posets on 4 points, expected 16")
    placed = {}
    for name, (_, covers) in _PLACEMENT.items():
        P = Poset(4, covers, name=name)
        placed[P.canonical_form()] = P
    out = tuple(placed.get(P.canonical_form()) for P in found)
    if len(placed) != 16 or None in out:
        raise RuntimeError("the poset placements do not match the enumerated posets one to one")
    return out


def get_poset(name) -> Poset:
    """A 4-point poset by name (see :func:`four_point_posets`) or by its row ``0..15`` in the
    authors' table (arXiv:2412.06097; the key of ``dict_posets`` in their code, e.g. 12 is "N").

    Its points are the 2×2 window positions (0 1 / 2 3) where the authors put them; e.g. N is
    ``0 < 1 > 2 < 3``, with up-sets ``{}, {1}, {3}, {0,1}, {1,3}, {0,1,3}, {1,2,3}, {0,1,2,3}``.
    """
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
        rows = {row: n for n, (row, _) in _PLACEMENT.items()}
        if int(name) not in rows:
            raise ValueError(f"poset row must be in 0..15 (the authors' table), got {name}")
        name = rows[int(name)]
    for P in four_point_posets():
        if P.name == name:
            return P
    raise ValueError(f"unknown poset {name!r}; names: {', '.join(P.name for P in four_point_posets())}")


def up_set_table(P: Poset, dtype=np.uint8):
    """The kernels' table (see :mod:`nograd.kernels.poset_ref`): ``elem, parent, cand, masks``.

    Entry ``k`` is the point set ``masks[k]``; its sum is ``x[elem[k]] + sum(parent[k])`` with
    ``elem`` the lowest position in the set, so every sum is taken in one fixed order (positions
    from the highest down), whatever the poset. The entries are the up-sets (``cand`` true) and
    the sets met on the way to them (``cand`` false), ordered by size, then bitmask: parents come
    first, and the candidates appear in the tie-break order of :meth:`Poset.up_sets`.
    """
    ups = set(P.up_sets())
    need = set()
    for m in ups:
        while m:
            need.add(m)
            m &= m - 1                               # drop the lowest point
    entries = [0] + sorted(need, key=lambda m: (bin(m).count("1"), m))
    where = {m: k for k, m in enumerate(entries)}
    elem = np.zeros(len(entries), dtype=np.int64)
    parent = np.zeros(len(entries), dtype=np.int64)
    for k, m in enumerate(entries[1:], start=1):
        low = (m & -m).bit_length() - 1
        elem[k], parent[k] = low, where[m & (m - 1)]
    cand = np.array([m in ups for m in entries], dtype=np.bool_)
    return elem, parent, cand, np.array(entries, dtype=dtype)


# ---------------------------------------------------------------------- the layer
def _kernels():
    from ..kernels import poset as K  # lazy: Numba loads on the first poset pooling call

    return K


class PosetPool2d(Module):
    r"""Pooling by a poset filter: ``y[n, c, o] = f_P(x[n, c, window o])`` (arXiv:2412.06097, §1).

    Shapes: ``x (N, C, H, W) -> y (N, C, OH, OW)`` with ``OH = ⌈(H - KH)/s⌉ + 1`` (one window for an
    input smaller than it; a last window that would start past the edge is dropped): windows that
    reach past the bottom or right edge read zeros there, so odd sizes are zero-padded as in the
    authors' code (2×2: ``OH = ⌈H/2⌉``). No parameters.

    ``poset`` is a :class:`Poset` or the name of a 4-point one (``"chain"``, ``"N"``, …; named ones
    are placed as in the authors' code, :func:`get_poset`). Its points are the window positions in
    row-major order, so a poset with ``n`` points needs a window with
    ``KH·KW = n``: ``kernel_size`` defaults to 2×2 for ``n = 4`` and must be given otherwise; the
    limit is ``n ≤ 16``, and the cost per window is one add and one compare per up-set (up to
    ``2^n``). ``stride`` defaults to the window size (2).

    Derivatives, with :math:`U^*(o)` the arg-max up-set of window ``o``:

    .. math::
        \bar x_i = \sum_{o : i \in U^*(o)} \bar y_o, \qquad \dot y_o = \sum_{i \in U^*(o)} \dot x_i .

    Ties (several up-sets reaching the max) go to the first in :meth:`Poset.up_sets` order: the
    smallest up-set, then the smallest bitmask; e.g. a window of zeros sends no gradient, like
    ReLU's derivative 0 at 0. The derivative is undefined at ties; the gradient checks avoid them.
    The authors' code takes the first maximum of its own list, also ordered by size, so the two
    can differ only at ties between up-sets of equal size.
    """

    def __init__(self, poset, stride=None, *, kernel_size=None):
        super().__init__()
        if isinstance(poset, str):
            poset = get_poset(poset)
        if not isinstance(poset, Poset):
            raise TypeError(f"poset must be a Poset or a 4-point poset name, got {type(poset).__name__}")
        if kernel_size is None:
            if poset.n != 4:
                raise ValueError(f"a poset on {poset.n} points needs kernel_size with KH*KW = {poset.n}")
            kernel_size = 2
        self.kernel_size = _pair(kernel_size, "kernel_size")
        if self.kernel_size[0] * self.kernel_size[1] != poset.n:
            raise ValueError(f"kernel_size {self.kernel_size} has {np.prod(self.kernel_size)} positions "
                             f"but the poset has {poset.n} points")
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride")
        self.poset = poset
        self._arg_dtype = np.uint8 if poset.n <= 8 else np.uint16
        self._table = up_set_table(poset, self._arg_dtype)

    def extra_repr(self):
        name = self.poset.name or repr(self.poset)
        return f"{name}, kernel_size={self.kernel_size}, stride={self.stride}"

    def output_shape(self, shape):
        N, C, H, W = shape
        (KH, KW), (sh, sw) = self.kernel_size, self.stride
        OH, OW = -(-max(H - KH, 0) // sh) + 1, -(-max(W - KW, 0) // sw) + 1
        return N, C, OH - ((OH - 1) * sh >= H), OW - ((OW - 1) * sw >= W)

    def _geometry(self):
        return (*self.kernel_size, *self.stride)

    def forward(self, x, *, train=False, rng=None, params=None):
        check_array(x, "x", ndim=4)
        self._use(params)
        shape = self.output_shape(x.shape)
        y = np.empty(shape, dtype=x.dtype)
        arg = np.empty(shape, dtype=self._arg_dtype)
        _kernels().posetpool_forward(np.ascontiguousarray(x), *self._geometry(), shape[2], shape[3],
                                     *self._table, y, arg)
        return y, (arg, x.shape)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        arg, xshape = cache
        check_like(dy, arg.shape)
        if not need_dx:
            return None, {}
        dx = np.empty(xshape, dtype=dy.dtype)
        return _kernels().posetpool_backward(np.ascontiguousarray(dy), arg, *self._geometry(), dx), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y, (arg, _) = self.forward(x, params=params)

        def gather(d):
            out = np.empty(y.shape, dtype=y.dtype)
            return _kernels().posetpool_jvp(np.ascontiguousarray(d, dtype=y.dtype), arg,
                                            *self._geometry(), out)
        return self._input_jvp(x, dx, dparams, y, gather)
