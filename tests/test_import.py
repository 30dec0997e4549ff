"""`import nograd` loads numpy alone (DESIGN.md §1)."""
import subprocess
import sys


def test_import_is_light():
    code = ("import sys, nograd; heavy = [m for m in ('numba', 'scipy', 'matplotlib', 'torch', "
            "'hypothesis', 'sklearn') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import nograd pulled in: {out.stdout.strip()}"


def test_public_api_is_there():
    import nograd
    for name in nograd.__all__:
        assert hasattr(nograd, name), name
