"""Old path of :mod:`nograd.schedules`, which moved out of core (``nograd.core.optim`` re-exports it)."""


def __getattr__(name):  # PEP 562: every name, ``__all__`` included, is looked up there
    from .. import schedules
    return getattr(schedules, name)
