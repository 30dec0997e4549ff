"""Old path of :mod:`nograd.losses`, which moved out of core (only the rules and above use it)."""


def __getattr__(name):  # PEP 562: every name, ``__all__`` included, is looked up there
    from .. import losses
    return getattr(losses, name)
