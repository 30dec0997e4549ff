"""bench/grande_tabular.py: runs end to end on a tiny table and ends with one JSON line."""
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _run(*args):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "grande_tabular.py"), *args,
                          "--json"], env=env, capture_output=True, text=True, timeout=300,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_bench_on_a_tiny_table(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + 1
    folder = tmp_path / "openml" / "phoneme"
    folder.mkdir(parents=True)
    lines = ["V1,V2,V3,Class"] + [",".join(f"{v:.4f}" for v in r) + f",{c}" for r, c in zip(X, y)]
    (folder / "phoneme.csv").write_text("\n".join(lines) + "\n")
    res = _run("--data-dir", str(tmp_path), "--datasets", "phoneme", "--folds", "2", "--quick",
               "--n-estimators", "8", "--models", "grande")
    assert res["models"] == ["grande"] and res["datasets"] == ["phoneme"]
    assert res["mean_f1"]["grande"] > 0.7
    assert len(res["fold_f1"]["phoneme"]["grande"]) == 2 and res["max_fit_seconds_per_fold"] > 0


def test_bench_without_data_says_so(tmp_path):
    res = _run("--data-dir", str(tmp_path), "--models", "grande")
    assert "no dataset found" in res["skipped"]


def test_quick_means_two_small_tables_two_folds_one_thread():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_grande_bench", os.path.join(ROOT, "bench", "grande_tabular.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    quick = mod.parse_args(["--quick"])
    assert (quick.folds, quick.threads, tuple(quick.datasets)) == (2, 1, mod.QUICK_DATASETS)
    full = mod.parse_args([])
    assert (full.folds, full.threads, len(full.datasets)) == (5, None, 5)
    assert mod.parse_args(["--quick", "--folds", "3", "--threads", "2"]).folds == 3
