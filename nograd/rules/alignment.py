"""Old home of the alignment measures, kept so that existing imports work.

:class:`AlignmentLogger` is a :func:`nograd.fit` callback and :func:`update_angles` /
:func:`feedback_angles` measure rules rather than being one, so they moved to
:mod:`nograd.callbacks.alignment`. The names below are looked up there on first use (PEP 562 module
``__getattr__``), so importing :mod:`nograd.rules` does not import :mod:`nograd.train`.
"""
_MOVED = ("update_angles", "feedback_angles", "AlignmentLogger")
__all__ = list(_MOVED)          # the names resolved by __getattr__ below


def __getattr__(name):
    if name in _MOVED:
        from ..callbacks import alignment

        return getattr(alignment, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
