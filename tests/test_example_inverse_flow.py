"""examples/inverse_flow.py: --limit takes effect for the embedded digits too."""
import contextlib
import importlib.util
import io
import json
import os
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_limit_applies_to_the_digits():
    path = os.path.join(ROOT, "examples", "inverse_flow.py")
    spec = importlib.util.spec_from_file_location("_inverse_flow_example", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("error")         # no empty epoch (a mean of no batches)
        mod.main(["--limit", "40", "--epochs", "1", "--steps", "1", "--hidden", "4", "--json"])
    text = out.getvalue()
    assert "40 train /" in text
    assert json.loads(text.strip().splitlines()[-1])
