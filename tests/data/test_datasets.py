"""The embedded digits, the synthetic sets and load_dataset by name."""
import hashlib
import os

import numpy as np
import pytest

from nograd.data import available_datasets, blobs, load_dataset, load_digits, teacher
from nograd.data.embedded import digits_path


def test_embedded_file_is_the_licensed_one():
    with open(digits_path(), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert digest == "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
    notice = open(os.path.join(os.path.dirname(digits_path()), "README.md")).read()
    assert "CC BY 4.0" in notice and "10.24432/C50P49" in notice


def test_load_digits_split():
    X, y, Xt, yt = load_digits()
    assert X.shape == (1348, 64) and Xt.shape == (449, 64) and X.dtype == np.float32
    assert X.min() == 0 and X.max() == 1
    full = np.bincount(np.concatenate([y, yt]))
    assert full.tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert np.all(np.abs(np.bincount(yt) - full * 449 / 1797) < 1)      # stratified
    X2, y2, Xt2, yt2 = load_digits()
    assert np.array_equal(X, X2) and np.array_equal(yt, yt2)            # fixed split
    assert not np.array_equal(y, load_digits(seed=1)[1])
    imgs = load_digits(flatten=False, dtype=np.float64, test_size=100)
    assert imgs[0].shape == (1697, 1, 8, 8) and imgs[2].shape == (100, 1, 8, 8)
    np.testing.assert_array_equal(imgs[0].reshape(1697, 64), load_digits(test_size=100)[0])
    X[0, 0] = 5.0                                                       # callers get copies
    assert load_digits()[0][0, 0] != 5.0


def test_load_digits_bad_arguments():
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        load_digits(dtype=np.int32)
    with pytest.raises(TypeError, match="seed must be an int"):
        load_digits(seed=0.5)
    with pytest.raises(ValueError, match="test_size"):
        load_digits(test_size=0)


def test_blobs_and_teacher():
    X, y = blobs(101, 4, 3, rng=0)
    assert X.shape == (101, 3) and np.bincount(y).tolist() == [26, 25, 25, 25]
    X2, y2 = blobs(101, 4, 3, rng=0)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    # with tiny spread each blob is tight around its own centre
    Xs, ys = blobs(200, 3, 2, spread=0.01, rng=1)
    for c in range(3):
        assert Xs[ys == c].std(0).max() < 0.05
    Xt, yt = teacher(2000, 10, 4, hidden=(16,), rng=0)
    assert Xt.shape == (2000, 10) and set(np.unique(yt)) == {0, 1, 2, 3}
    assert np.bincount(yt).min() > 200          # centring keeps every class populated
    with pytest.raises(ValueError, match="hidden\\[1\\] must be positive"):
        teacher(10, 2, 2, hidden=(4, 0))
    with pytest.raises(ValueError, match="at least n_classes"):
        blobs(2, 3)


def test_load_dataset_by_name(tmp_path):
    ds = load_dataset("digits")
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    p = tmp_path / "t.csv"
    rng = np.random.default_rng(0)
    rows = ["f1,f2,kind,label"] + [f"{rng.normal(100, 20):.3f},{rng.normal():.3f},"
                                   f"{'ab'[i % 2]},{i % 3}" for i in range(60)]
    p.write_text("\n".join(rows) + "\n")
    ds = load_dataset(f"csv:{p}", target="label", seed=3)
    assert ds.num_classes == 3 and ds.input_shape == (4,) and len(ds.X_test) == 15
    np.testing.assert_allclose(ds.X_train.mean(0), 0, atol=1e-5)        # standardised on train
    for name in ("spirals", "moons", "blobs", "teacher"):
        ds = load_dataset(name, seed=1)
        assert len(ds.X_train) > len(ds.X_test) > 0
    assert "digits" in available_datasets() and "csv:PATH" in available_datasets()


@pytest.mark.parametrize("spec,match", [
    ("imagenet", "unknown dataset 'imagenet'; available: digits"),
    ("csv:", "needs a path after the colon"),
    ("digits:x", "only csv: and npz: take a path"),
    ("csv:/no/such.csv", "does not exist"),
    ("cifar10", "needs --data-dir"),
])
def test_load_dataset_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(spec)
