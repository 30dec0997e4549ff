"""`import nograd` (and `import nograd.distributed`) never imports Ray; a missing Ray is named."""
import subprocess
import sys


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_import_nograd_does_not_import_ray():
    out = _run("import sys, nograd, nograd.distributed; print('ray' in sys.modules)")
    assert out.stdout.strip() == "False"


def test_missing_ray_gives_the_install_command():
    code = ("import sys; sys.modules['ray'] = None\n"
            "import numpy as np, nograd as ng\n"
            "from nograd.distributed import zo_data_parallel\n"
            "x = np.zeros((8, 2)); y = np.zeros(8, dtype=int)\n"
            "try:\n"
            "    zo_data_parallel(lambda: ng.models.mlp((2,), 2, hidden=(2,),"
            " rng=np.random.default_rng(0)), 'mezo', (x, y), batch_size=2, steps=1)\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    assert 'pip install "nograd[ray]"' in _run(code).stdout
