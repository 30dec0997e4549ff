"""examples/causal_rnn.py runs, ends with one JSON line, and its three gradients agree."""
import importlib.util
import json
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def test_causal_rnn_example_runs_and_reports(capsys):
    spec = importlib.util.spec_from_file_location(
        "causal_rnn_example", os.path.join(ROOT, "examples", "causal_rnn.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--json", "--steps", "40", "--seed", "1"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    res = json.loads(last)
    for name in ("elman", "lstm"):
        r = res[name]
        assert r["D_vs_bptt"] < 1e-12 and r["fd_vs_bptt"] < 1e-6
        assert r["mse_after"] < r["mse_before"]
