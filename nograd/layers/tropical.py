"""Old home of :mod:`nograd.tropical` (tropical polynomials, Newton polytopes, composing poset
filters), kept so that existing imports work. It holds no layer, so it moved out of
:mod:`nograd.layers`; the names below are looked up there on first use (PEP 562 module
``__getattr__``), which keeps this room from importing a module above it at import time.
"""
_MOVED = ("TropicalPolynomial", "tropical_eval", "newton_polytope", "minkowski_sum", "convex_hull",
           "poset_polynomial", "disjoint_union", "ordinal_sum", "substitute",
           "product_polynomial", "ordinal_sum_polynomial", "substitute_polynomial")
__all__ = list(_MOVED)          # the names resolved by __getattr__ below


def __getattr__(name):
    if name in _MOVED:
        from .. import tropical

        return getattr(tropical, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
