"""bench/gpt_step.py: runs end to end on a tiny GPT and ends with one JSON line of the figures."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TINY = ("--batch", "2", "--block", "8", "--layers", "1", "--embd", "16", "--heads", "2", "--vocab", "11",
        "--repeats", "2", "--warmup", "1", "--gen-long", "12", "--gen-repeats", "1", "--json")


def _run(*args):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpt_step.py"), *args], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return out, json.loads(out.strip().splitlines()[-1])


def test_bench_gpt_on_a_tiny_model():
    out, res = _run(*TINY)
    for key in ("nograd_ms", "gemm_bound_ms", "gen_tokens_per_s_cache", "gen_tokens_per_s_nocache",
                "gen_slide_tokens_per_s_cache", "gen_slide_tokens_per_s_nocache"):
        assert res[key] > 0, key
    # the times are printed rounded to 1e-3 ms, which on a tiny model's ~0.04 ms GEMM bound moves
    # the ratio by over 1 %: allow exactly that rounding (half a unit on each time, and on the ratio)
    n, g = res["nograd_ms"], res["gemm_bound_ms"]
    slack = (n / g) * (5e-4 / n + 5e-4 / (g - 5e-4)) + 5e-4
    assert abs(res["ratio_gemm"] - n / g) <= slack
    assert (res["layers"], res["embd"], res["heads"], res["block"], res["batch"]) == (1, 16, 2, 8, 2)
    assert res["gen_new_tokens"] == 7 and res["gen_long_new_tokens"] == 12
    assert res["threads"]["env"]["OPENBLAS_NUM_THREADS"] == "1" and "blas" in res["threads"]
    assert "threads: BLAS" in out and "window slides" in out
    try:
        import torch  # noqa: F401
    except ImportError:
        assert res["torch_ms"] is None and res["ratio_torch"] is None and res["first_loss_check"] is None
        return
    # the torch.nn peer starts from nograd's weights: the first losses agree (PyTorch pins nograd's GPT)
    check = res["first_loss_check"]
    assert check["ok"] and abs(check["nograd"] - check["torch"]) <= 1e-4, check
    assert res["torch_ms"] > 0 and res["ratio_torch"] == pytest.approx(res["nograd_ms"] / res["torch_ms"], rel=0.01)
    assert "first loss" in out and "OK" in out
