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


def test_eval_noise_scores_a_saved_gpt_on_fresh_batches(tmp_path):
    """bench/gpt_eval_noise.py: its overall mean is the plain mean loss of the batches a generator
    with its seed draws, val first (a recomputation written out here), and its estimates are the
    means of consecutive groups of ``--eval-iters`` batches."""
    import numpy as np

    from nograd.data.text import load_shakespeare
    from nograd.losses import softmax_cross_entropy
    from nograd.models import get_model
    from nograd.serialize import save_model

    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import gpt_eval_noise

    model = get_model("gpt", (8,), 65, rng=0, n_layer=1, n_head=2, n_embd=16)
    path = str(tmp_path / "tiny.npz")
    save_model(model, path)
    res = gpt_eval_noise.main(["--model-file", path, "--eval-iters", "3", "--draws", "4",
                               "--batch", "2", "--claim", "4.2", "--seed", "7"])
    data, rng = load_shakespeare(), np.random.default_rng(7)
    for split in ("val", "train"):
        losses = []
        for _ in range(12):
            x, y = data.get_batch(split, 2, 8, rng)
            losses.append(softmax_cross_entropy(model.forward(x, train=False)[0], y)[0])
        est = np.array(losses).reshape(4, 3).mean(axis=1)
        r = res[split]
        assert abs(r["mean_all_batches"] - np.mean(losses)) <= 5e-5
        assert abs(r["min_estimate"] - est.min()) <= 5e-5 and abs(r["max_estimate"] - est.max()) <= 5e-5
        assert r["share_at_or_below_claim"] == round(float((est < 4.25).mean()), 3)
    with pytest.raises(SystemExit):
        gpt_eval_noise.main(["--model-file", str(tmp_path / "missing.npz")])
