"""What ``nograd.save`` does to the folder it writes in (issue #20): the file gets the user's umask
like ``np.save``, a directory path or an unwritable folder is one clear error, temporaries left by a
killed save are removed on the next save (only ours, only stale ones), a model with NaN/inf
weights is refused with the message ``load`` gives, and the optional architecture entry of
``nograd.save_model`` files is ignored by ``nograd.load``."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import nograd
from nograd.core import Sequential
from nograd.core.params import SPEC_KEY, TMP_PREFIX, TMP_SUFFIX
from nograd.layers import BatchNorm1d, Linear, ReLU


def model(seed=0):
    return Sequential(Linear(3, 5, rng=seed), BatchNorm1d(5), ReLU(), Linear(5, 2, rng=seed + 1))


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_saved_file_gets_the_umask_mode_like_np_save(tmp_path, umask_027):
    nograd.save(model(), tmp_path / "m.npz")
    np.save(tmp_path / "ref.npy", np.zeros(2))
    mode = os.stat(tmp_path / "m.npz").st_mode & 0o777
    assert mode == os.stat(tmp_path / "ref.npy").st_mode & 0o777 == 0o640


def test_directory_path_is_one_clear_error(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        nograd.save(model(), tmp_path / "d")
    with pytest.raises(ValueError, match="is a directory, not a checkpoint file"):
        nograd.load(model(), tmp_path / "d")
    assert os.listdir(tmp_path / "d") == []


def test_unwritable_folder_is_one_clear_error(tmp_path, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(ValueError, match="folder .* is not writable"):
        nograd.save(model(), tmp_path / "m.npz")


def test_non_finite_weights_are_refused_at_save_with_the_load_message(tmp_path):
    good = model()
    nograd.save(good, tmp_path / "m.npz")
    bad = model()
    bad.params["3.bias"][1] = np.nan
    with pytest.raises(ValueError) as at_save:
        nograd.save(bad, tmp_path / "m.npz")
    assert "'3.bias'" in str(at_save.value)
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]           # the good file is untouched
    nograd.load(model(), tmp_path / "m.npz")
    # the same message load gives for a file holding the same NaN
    arrays = {f"param/{k}": v for k, v in bad.params.items()}
    arrays.update({f"buffer/{k}": v for k, v in bad.buffers.items()})
    np.savez(tmp_path / "nan.npz", __nograd_format__=np.array(1), **arrays)
    with pytest.raises(ValueError) as at_load:
        nograd.load(model(), tmp_path / "nan.npz")
    assert str(at_load.value) == str(at_save.value).replace("m.npz", "nan.npz")
    bad.buffers["1.running_var"][0] = np.inf
    bad.params["3.bias"][1] = 0.0
    with pytest.raises(ValueError, match="'1.running_var'"):
        nograd.save(bad, tmp_path / "m.npz")


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_ours_are_removed_on_the_next_save(tmp_path):
    old = time.time() - 2 * 3600
    dead = tmp_path / f"{TMP_PREFIX}{_dead_pid()}-abc123{TMP_SUFFIX}"         # killed writer
    aged = tmp_path / f"{TMP_PREFIX}{os.getpid()}-def456{TMP_SUFFIX}"         # untouched > 1 h
    live = tmp_path / f"{TMP_PREFIX}{os.getpid()}-0a1b2c{TMP_SUFFIX}"         # a save under way
    theirs = [tmp_path / ".nograd-notes.txt", tmp_path / f"x{TMP_PREFIX}1-ab{TMP_SUFFIX}",
              tmp_path / f"{TMP_PREFIX}1-ab{TMP_SUFFIX}.bak", tmp_path / ".other-1-ab.npz.tmp",
              tmp_path / f"{TMP_PREFIX}notapid-ab{TMP_SUFFIX}"]
    for p in [dead, aged, live] + theirs:
        p.write_bytes(b"x" * 100)
    os.utime(aged, (old, old))
    for p in theirs:
        os.utime(p, (old, old))
    with pytest.warns(UserWarning, match="removed 2 temporary files left by interrupted saves"):
        nograd.save(model(), tmp_path / "m.npz")
    left = set(os.listdir(tmp_path))
    assert dead.name not in left and aged.name not in left
    assert {live.name, "m.npz"} | {p.name for p in theirs} == left


def test_a_killed_save_leaves_a_temporary_that_the_next_save_removes(tmp_path):
    # a writer killed while writing: its temporary stays (the name carries its pid) ...
    code = ("import os, sys, numpy as np, nograd\n"
            "from nograd.layers import Linear\n"
            "np.savez = lambda f, **a: (f.write(b'partial'), f.flush(), os.kill(os.getpid(), 9))\n"
            f"nograd.save(nograd.Sequential(Linear(3, 2, rng=0)), {str(tmp_path / 'm.npz')!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith(TMP_PREFIX) and left[0].endswith(TMP_SUFFIX)
    # ... and the next save to that folder removes it, and says so
    with pytest.warns(UserWarning, match="removed 1 temporary file left by an interrupted save"):
        nograd.save(model(), tmp_path / "other.npz")
    assert os.listdir(tmp_path) == ["other.npz"]


def test_load_ignores_the_architecture_entry(tmp_path):
    a, b = model(0), model(3)
    nograd.save(a, tmp_path / "m.npz", spec='{"kind": "test"}')
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        assert str(f[SPEC_KEY]) == '{"kind": "test"}'
    nograd.load(b, tmp_path / "m.npz")
    for k, v in a.params.items():
        np.testing.assert_array_equal(b.params[k], v)
    with pytest.raises(TypeError, match="spec must be a str"):
        nograd.save(a, tmp_path / "m.npz", spec={"kind": "test"})
