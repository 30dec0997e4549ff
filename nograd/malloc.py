"""Keeping freed memory in the process during a training loop (glibc ``mallopt``).

A training step allocates and frees the same large arrays (activations, caches, gradients) every
iteration. With glibc's defaults, a block above the *mmap threshold* is mapped fresh on each
allocation and unmapped when freed, so every step pays a page fault for each 4 KiB page it writes
(about 20 ms of an 80 ms step of the nanoGPT-sized GPT on this project's CI machine;
``bench/gpt_step.py`` prints the step with and without). :func:`retain_freed_memory` raises the
mmap threshold to 32 MiB (glibc's ceiling) and the trim threshold to 1 GiB, so freed blocks stay in
the heap and are reused without faults — what PyTorch's caching allocators do on their own. The
process then keeps up to its peak heap in use. The setting lasts for the process: glibc has no call
that brings back its adaptive default (setting 128 KiB back fixes the threshold there, which is
slower than either). :func:`nograd.train_lm.train_lm` calls it unless ``retain_memory=False``.

>>> import nograd.malloc
>>> isinstance(nograd.malloc.retain_freed_memory(), bool)      # False off glibc
True

Off glibc (macOS, musl) the function changes nothing and returns ``False``.
"""
from __future__ import annotations

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3          # mallopt parameter numbers (malloc.h)
_MMAP_MAX_THRESHOLD = 32 * 1024 * 1024                 # glibc's largest mmap threshold (64-bit)


def _mallopt():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        f = libc.mallopt
    except (OSError, AttributeError):
        return None
    f.argtypes, f.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return f


def _set(mmap_threshold: int, trim_threshold: int) -> bool:
    f = _mallopt()
    if f is None:
        return False
    return bool(f(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(f(_M_TRIM_THRESHOLD, trim_threshold))


def retain_freed_memory() -> bool:
    """Keep freed blocks up to 32 MiB in the heap for reuse (glibc); True when it took effect."""
    return _set(_MMAP_MAX_THRESHOLD, 1 << 30)
