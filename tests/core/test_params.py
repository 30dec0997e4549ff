"""flatten/unflatten and save/load: round trips, atomic writes, clear errors, nothing lost."""
import os

import numpy as np
import pytest

import nograd
from nograd.core import Sequential, flatten_params, unflatten_params
from nograd.layers import BatchNorm1d, Linear, ReLU


def model(seed=0):
    return Sequential(Linear(3, 5, rng=seed), BatchNorm1d(5), ReLU(), Linear(5, 2, rng=seed + 1))


def test_flatten_unflatten_round_trip():
    p = model().params
    v = flatten_params(p)
    assert v.shape == (sum(a.size for a in p.values()),)
    q = unflatten_params(v, like=p)
    assert list(q) == list(p)
    for k in p:
        np.testing.assert_array_equal(q[k], p[k])
    with pytest.raises(ValueError, match="flat has"):
        unflatten_params(v[:-1], like=p)
    with pytest.raises(ValueError, match="flat"):
        unflatten_params(v.reshape(1, -1), like=p)


def test_save_load_round_trip_includes_buffers(tmp_path):
    a, b = model(0), model(10)
    a.forward(np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32), train=True)
    path = tmp_path / "ckpt.npz"
    nograd.save(a, path)
    arrays_before = {k: v for k, v in b.params.items()}
    nograd.load(b, path)
    for k, v in b.params.items():
        assert v is arrays_before[k]               # loaded in place: optimizers keep their references
        np.testing.assert_array_equal(v, a.params[k])
    for k, v in b.buffers.items():
        np.testing.assert_array_equal(v, a.buffers[k])
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(a(x), b(x))
    with np.load(path, allow_pickle=False) as f:   # a plain npz, no pickles
        assert "param/0.weight" in f.files


def test_save_keeps_exact_name_without_npz_suffix(tmp_path):
    path = tmp_path / "weights.bin"
    nograd.save(model(), path)
    assert path.exists() and not (tmp_path / "weights.bin.npz").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]   # no temporary left behind


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    nograd.save(model(0), path)
    good = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        nograd.save(model(1), path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]


def test_load_mismatches_are_clear_and_leave_model_untouched(tmp_path):
    path = tmp_path / "c.npz"
    nograd.save(model(), path)
    other = Sequential(Linear(3, 5, rng=0), ReLU(), Linear(5, 2, rng=1))
    with pytest.raises(ValueError, match="unexpected"):
        nograd.load(other, path)
    wide = Sequential(Linear(3, 6, rng=0), BatchNorm1d(6), ReLU(), Linear(6, 2, rng=1))
    before = {k: v.copy() for k, v in wide.params.items()}
    with pytest.raises(ValueError, match="shape"):
        nograd.load(wide, path)
    for k, v in wide.params.items():
        np.testing.assert_array_equal(v, before[k])
    bigger = Sequential(model(), Linear(2, 2, rng=0))
    with pytest.raises(ValueError, match="missing"):
        nograd.load(bigger, path)


def test_load_corrupt_or_foreign_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="not a readable"):
        nograd.load(model(), bad)
    good = tmp_path / "good.npz"
    nograd.save(model(), good)
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(ValueError, match="trunc.npz"):
        nograd.load(model(), trunc)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.zeros(3))
    with pytest.raises(ValueError, match="not a nograd checkpoint"):
        nograd.load(model(), foreign)
    with pytest.raises(ValueError, match="does not exist"):
        nograd.load(model(), tmp_path / "nope.npz")
    with pytest.raises(ValueError, match="folder"):
        nograd.save(model(), tmp_path / "no" / "such" / "dir.npz")
