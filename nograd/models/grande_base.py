"""Old home of the GRANDE estimators' shared machinery, kept so that existing imports work.

It moved up to :mod:`nograd.estimators.grande_base` (it trains through :func:`nograd.train.fit`);
any name of that module is looked up there on first use (PEP 562 module ``__getattr__``).
"""
from . import _from_above

_PUBLIC = ("NotFittedError",)
__all__ = list(_PUBLIC)          # resolved by __getattr__ below


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _from_above("nograd.estimators.grande_base", name)
