"""Every benchmark and example answers ``--help`` with a description that is a whole sentence (the
first paragraph of its docstring), not a line cut mid-sentence."""
import contextlib
import glob
import importlib.util
import io
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(p for d in ("bench", "examples") for p in glob.glob(os.path.join(ROOT, d, "*.py"))
                 if not os.path.basename(p).startswith("_"))


def _help_text(path):
    sys.path.insert(0, os.path.dirname(path))
    try:
        spec = importlib.util.spec_from_file_location(f"_help_{os.path.basename(path)[:-3]}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
            mod.main(["--help"])
        assert stop.value.code == 0
        return out.getvalue()
    finally:
        sys.path.remove(os.path.dirname(path))


@pytest.mark.parametrize("path", SCRIPTS, ids=[os.path.relpath(p, ROOT) for p in SCRIPTS])
def test_help_description_is_a_whole_sentence(path):
    text = _help_text(path)
    body = text.split("\n\n", 1)[1]                       # after the usage block
    description = " ".join(body.split("options:")[0].split())
    assert description, f"{path}: --help has no description"
    assert description[-1] in ".)!?:`", f"{path}: --help description is cut: ...{description[-60:]!r}"
