"""IDX, MNIST-style and CIFAR-10 loaders on small files written in tmp_path."""
import gzip
import hashlib
import io
import os
import pickle
import struct

import numpy as np
import pytest

from nograd.data import idx as idx_mod
from nograd.data import load_cifar10, load_idx, load_mnist

SHARED_MNIST = "/work/shared/data/mnist"


def idx_bytes(arr, code=0x08, dtype=">u1"):
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + np.ascontiguousarray(arr, dtype=dtype).tobytes()


def write(path, data, gz=False):
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if gz else data)
    return str(path)


def snapshot(folder):
    return {p: (os.path.getsize(os.path.join(folder, p)), os.path.getmtime(os.path.join(folder, p)))
            for p in sorted(os.listdir(folder))}


# --------------------------------------------------------------------------- load_idx
@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip_ubyte(tmp_path, gz):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = write(tmp_path / "a.idx", idx_bytes(a), gz)
    before = snapshot(tmp_path)
    out = load_idx(p)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, a)
    out[0, 0, 0] = 99                    # a writable copy
    assert snapshot(tmp_path) == before  # nothing on disk changed


@pytest.mark.parametrize("code,dtype", [(0x09, ">i1"), (0x0B, ">i2"), (0x0C, ">i4"),
                                        (0x0D, ">f4"), (0x0E, ">f8")])
def test_idx_other_types_are_big_endian(tmp_path, code, dtype):
    a = np.array([[-3, 1, 2], [7, -100, 5]]).astype(dtype)
    out = load_idx(write(tmp_path / "a", idx_bytes(a, code, dtype)))
    assert out.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(out, a.astype(out.dtype))


def test_idx_truncated_data_names_path(tmp_path):
    data = idx_bytes(np.zeros((5, 4), np.uint8))
    p = write(tmp_path / "short.idx", data[:-3])
    with pytest.raises(ValueError, match=r"short\.idx.*truncated.*\(5, 4\).*17 bytes"):
        load_idx(p)


def test_idx_truncated_header(tmp_path):
    p = write(tmp_path / "h.idx", bytes([0, 0, 8, 3]) + b"\x00\x00\x00\x05")
    with pytest.raises(ValueError, match=r"h\.idx.*truncated.*header"):
        load_idx(p)


def test_idx_truncated_gzip(tmp_path):
    blob = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8).reshape(10, 100)))
    p = write(tmp_path / "cut.gz", blob[:len(blob) // 2])
    with pytest.raises(ValueError, match=r"cut\.gz.*gzip.*truncated or corrupt"):
        load_idx(p)


def test_idx_wrong_magic(tmp_path):
    p = write(tmp_path / "bad", b"\x12\x34\x08\x01\x00\x00\x00\x01\x07")
    with pytest.raises(ValueError, match=r"not an IDX file.*0x12340801"):
        load_idx(p)
    p = write(tmp_path / "tiny", b"\x00\x00")
    with pytest.raises(ValueError, match="not an IDX file"):
        load_idx(p)


def test_idx_unknown_type_code(tmp_path):
    p = write(tmp_path / "t", bytes([0, 0, 0x0A, 1]) + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="unknown IDX type code 0x0A"):
        load_idx(p)


def test_idx_trailing_bytes(tmp_path):
    p = write(tmp_path / "long", idx_bytes(np.zeros(3, np.uint8)) + b"\x01\x02")
    with pytest.raises(ValueError, match="2 unexpected bytes"):
        load_idx(p)


def test_idx_bad_path_arguments(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_idx(tmp_path / "nope")
    with pytest.raises(ValueError, match="is a folder"):
        load_idx(tmp_path)
    with pytest.raises(TypeError, match="path must be a path"):
        load_idx(3)


# --------------------------------------------------------------------------- load_mnist
def make_mnist(root, n_train=6, n_test=4, gz=True, skip=()):
    rng = np.random.default_rng(0)
    files = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labs = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr in (("images-idx3-ubyte", imgs), ("labels-idx1-ubyte", labs)):
            name = f"{stem}-{kind}"
            if name in skip:
                continue
            write(os.path.join(root, name + (".gz" if gz else "")), idx_bytes(arr), gz)
        files[stem] = (imgs, labs)
    return files


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_folder(tmp_path, gz):
    files = make_mnist(tmp_path, gz=gz)
    X, y, Xt, yt = load_mnist(tmp_path)
    assert X.shape == (6, 1, 28, 28) and X.dtype == np.float32 and Xt.shape == (4, 1, 28, 28)
    np.testing.assert_allclose(X[:, 0] * 255, files["train"][0], atol=1e-4)
    np.testing.assert_array_equal(yt, files["t10k"][1])
    assert y.dtype == np.int64
    Xf, _ = load_mnist(tmp_path, "fashion-mnist", split="train", flatten=True, dtype=np.float64)
    assert Xf.shape == (6, 784) and Xf.dtype == np.float64


def test_mnist_missing_file_names_it(tmp_path):
    make_mnist(tmp_path, skip=("train-images-idx3-ubyte",))
    with pytest.raises(ValueError, match=r"missing from .*train-images-idx3-ubyte\.gz.*download=True"):
        load_mnist(tmp_path)
    Xt, yt = load_mnist(tmp_path, split="test")      # the test part needs only its two files
    assert len(Xt) == len(yt) == 4


def test_mnist_count_mismatch(tmp_path):
    make_mnist(tmp_path)
    write(tmp_path / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.zeros(3, np.uint8)), gz=True)
    with pytest.raises(ValueError, match="4 images but .* 3 labels"):
        load_mnist(tmp_path, split="test")


def test_mnist_labels_file_where_images_expected(tmp_path):
    make_mnist(tmp_path)
    write(tmp_path / "t10k-images-idx3-ubyte.gz", idx_bytes(np.zeros(4, np.uint8)), gz=True)
    with pytest.raises(ValueError, match="not an IDX image file"):
        load_mnist(tmp_path, split="test")


def test_mnist_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        load_mnist(tmp_path, "kmnist")
    with pytest.raises(ValueError, match="split must be"):
        load_mnist(tmp_path, split="val")
    with pytest.raises(ValueError, match="root .* does not exist"):
        load_mnist(tmp_path / "absent")


def test_mnist_no_root_and_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NOGRAD_DATA", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="cache folder .* does not exist.*download=True"):
        load_mnist()


class FakeResponse(io.BytesIO):
    pass


def test_mnist_download_checks_sha256(tmp_path, monkeypatch):
    payload = {}
    rng = np.random.default_rng(1)
    table = {}
    for stem, n in (("t10k-images-idx3-ubyte", 3), ("t10k-labels-idx1-ubyte", 3)):
        arr = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) if "images" in stem \
            else np.array([1, 2, 3], np.uint8)
        blob = gzip.compress(idx_bytes(arr))
        payload[stem] = blob
        table[stem] = (hashlib.sha256(blob).hexdigest(), len(blob))
    monkeypatch.setitem(idx_mod.MNIST_FILES, "mnist", table)
    monkeypatch.setitem(idx_mod.MIRRORS, "mnist", ["https://mirror.invalid/"])
    calls = []

    def fake_urlopen(url, timeout=60.0):
        calls.append(url)
        return FakeResponse(payload[url.rsplit("/", 1)[1][:-3]])

    monkeypatch.setattr(idx_mod, "_urlopen", fake_urlopen)
    root = tmp_path / "dl"
    Xt, yt = load_mnist(root, split="test", download=True)
    assert yt.tolist() == [1, 2, 3] and len(calls) == 2
    assert sorted(os.listdir(root)) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    load_mnist(root, split="test", download=True)      # present now: nothing fetched again
    assert len(calls) == 2

    # a corrupted download is refused and leaves no file behind
    bad = tmp_path / "bad"
    monkeypatch.setattr(idx_mod, "_urlopen", lambda url, timeout=60.0: FakeResponse(b"garbage"))
    with pytest.raises(ValueError, match="SHA-256 .* differs"):
        load_mnist(bad, split="test", download=True)
    assert os.listdir(bad) == []


def test_mnist_download_offline_names_files(tmp_path, monkeypatch):
    def offline(url, timeout=60.0):
        raise OSError("network is unreachable")

    monkeypatch.setattr(idx_mod, "_urlopen", offline)
    with pytest.raises(ValueError, match=r"could not download t10k-images-idx3-ubyte\.gz.*"
                                         r"unreachable.*Place the file in"):
        load_mnist(tmp_path / "x", split="test", download=True)


@pytest.mark.skipif(not os.path.isdir(SHARED_MNIST), reason="shared MNIST files not present")
def test_real_mnist_test_split_and_missing_train_images():
    Xt, yt = load_mnist(SHARED_MNIST, split="test")
    assert Xt.shape == (10000, 1, 28, 28) and np.bincount(yt).tolist()[:3] == [980, 1135, 1032]
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz"):
        load_mnist(SHARED_MNIST)


# --------------------------------------------------------------------------- CIFAR-10
def make_cifar(root, n=4, corrupt=None):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"labels": [int(v) for v in rng.integers(0, 10, n)], b"batch_label": b"x"}
        if name == corrupt:
            d[b"data"] = d[b"data"][:, :100]
        with open(os.path.join(root, name), "wb") as f:
            pickle.dump(d, f)


def test_cifar10_batches(tmp_path):
    sub = tmp_path / "cifar-10-batches-py"
    sub.mkdir()
    make_cifar(sub)
    X, y, Xt, yt = load_cifar10(tmp_path)
    assert X.shape == (20, 3, 32, 32) and Xt.shape == (4, 3, 32, 32) and y.shape == (20,)
    assert 0 <= X.min() and X.max() <= 1 and y.dtype == np.int64
    Xf = load_cifar10(sub, flatten=True)[0]
    np.testing.assert_array_equal(Xf.reshape(X.shape), X)


def test_cifar10_errors(tmp_path):
    with pytest.raises(ValueError, match="missing .*data_batch_1.*test_batch"):
        load_cifar10(tmp_path)
    make_cifar(tmp_path, corrupt="data_batch_3")
    with pytest.raises(ValueError, match=r"data_batch_3.*shape \(N, 3072\)"):
        load_cifar10(tmp_path)
    make_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        f.write(b"not a pickle")
    with pytest.raises(ValueError, match="test_batch.*not a readable CIFAR-10"):
        load_cifar10(tmp_path)
