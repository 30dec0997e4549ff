"""Old home of the GRANDE estimators, kept so that existing imports work.

:class:`GrandeClassifier` and :class:`GrandeRegressor` train themselves, so they moved up to
:mod:`nograd.estimators.grande`; the network, :class:`~nograd.models.grande_net.GrandeNet`, stays in
this room. ``from nograd.models.grande import GrandeClassifier`` still works: the names below are
looked up in the new module on first use (PEP 562 module ``__getattr__``).
"""
from . import _from_above

_MOVED = ("GrandeClassifier", "GrandeNet", "GrandeRegressor", "NotFittedError")
__all__ = list(_MOVED)          # the names resolved by __getattr__ below


def __getattr__(name):
    if name in _MOVED:
        return _from_above("nograd.estimators.grande", name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
