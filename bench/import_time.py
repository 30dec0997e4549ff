"""Time `import nograd` in a fresh interpreter beside `import numpy` (median of N runs).

    python bench/import_time.py [--runs 5] [--json]

Each run starts a new Python process that imports numpy, then nograd, and reports both
durations measured inside the process (so interpreter start-up is excluded). Target: nograd adds
at most 30 ms over numpy.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

CODE = """
import time, sys
t0 = time.perf_counter(); import numpy; t1 = time.perf_counter()
import nograd; t2 = time.perf_counter()
heavy = [m for m in ('numba', 'scipy', 'matplotlib', 'torch') if m in sys.modules]
print(t1 - t0, t2 - t1, ','.join(heavy))
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # measure imports from bytecode, as a user's second run does: some environments set
    # PYTHONDONTWRITEBYTECODE, which would make every run recompile the sources
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="nograd-pycache-")
    subprocess.run([sys.executable, "-c", CODE], env=env, check=True, capture_output=True)  # warm .pyc
    numpy_s, nograd_s, heavy = [], [], set()
    for _ in range(args.runs):
        out = subprocess.run([sys.executable, "-c", CODE], env=env, check=True, capture_output=True,
                             text=True).stdout.split()
        numpy_s.append(float(out[0]))
        nograd_s.append(float(out[1]))
        if len(out) > 2:
            heavy.update(out[2].split(","))
    res = {"benchmark": "import_time", "runs": args.runs,
           "numpy_ms": round(1e3 * statistics.median(numpy_s), 2),
           "nograd_extra_ms": round(1e3 * statistics.median(nograd_s), 2),
           "heavy_modules": sorted(heavy)}
    print(f"import numpy            {res['numpy_ms']:8.1f} ms (median of {args.runs})")
    print(f"import nograd (after)   {res['nograd_extra_ms']:8.1f} ms   (target <= 30 ms)")
    print(f"heavy modules loaded:   {', '.join(res['heavy_modules']) or 'none'}")
    if args.json:
        print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
