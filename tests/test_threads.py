"""nograd.threads: BLAS thread limits set and restored (through threadpoolctl or ctypes)."""
import numpy as np
import pytest

import nograd
from nograd import threads


def _counts():
    return [lib["threads"] for lib in nograd.blas_libraries()]


@pytest.fixture(params=["auto", "ctypes"])
def backend(request, monkeypatch):
    if request.param == "ctypes":
        monkeypatch.setattr(threads, "_threadpoolctl", lambda: None)
    if not _counts():
        pytest.skip("no BLAS library reachable on this machine")
    return request.param


def test_context_manager_limits_and_restores(backend):
    before = _counts()
    with nograd.blas_threads(1):
        assert _counts() == [1] * len(before)
        a = np.ones((32, 32)) @ np.ones((32, 32))
    assert a[0, 0] == 32
    assert _counts() == before


def test_restored_when_the_block_raises(backend):
    before = _counts()
    with pytest.raises(RuntimeError), nograd.blas_threads(1):
        raise RuntimeError("inside")
    assert _counts() == before


def test_set_returns_a_record_that_restores(backend):
    before = _counts()
    prev = nograd.set_blas_threads(1)
    try:
        assert prev is not None and _counts() == [1] * len(before)
    finally:
        threads.restore_blas_threads(prev)
    assert _counts() == before


def test_ctypes_finds_numpys_openblas():
    import os
    cfg = np.show_config(mode="dicts") if hasattr(np, "show_config") else {}
    name = str(cfg.get("Build Dependencies", {}).get("blas", {}).get("name", "")).lower()
    if "openblas" not in name or not os.path.exists("/proc/self/maps"):
        pytest.skip(f"NumPy's BLAS is {name or 'unknown'}, not OpenBLAS on Linux")
    assert threads._openblas_handles(), "NumPy's OpenBLAS was not found in /proc/self/maps"


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "2", None])
def test_bad_n(n):
    with pytest.raises(ValueError, match="n must be a positive int"):
        nograd.set_blas_threads(n)
    with pytest.raises(ValueError, match="n must be a positive int"), nograd.blas_threads(n):
        pass
