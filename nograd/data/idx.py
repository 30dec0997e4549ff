"""IDX files (LeCun's format for MNIST and Fashion-MNIST) and the MNIST-style loaders.

An IDX file is a 4-byte magic number ``00 00 TT DD`` — ``TT`` the element type, ``DD`` the number
of dimensions — then ``DD`` big-endian 32-bit sizes, then the elements in C order, big-endian
(http://yann.lecun.com/exdb/mnist/, "File formats"). Image files have magic 2051 (ubyte, 3-D),
label files 2049 (ubyte, 1-D). Files may be gzip-compressed or raw.

Nothing is downloaded unless ``download=True`` is passed; a download is written to a temporary
name, its SHA-256 checked against the published digest, and only then renamed into place.
"""
from __future__ import annotations

import os
import struct

import numpy as np

from ..core.checks import check_dtype
from ._io import check_path, read_bytes

__all__ = ["load_idx", "load_mnist", "default_cache_dir", "MNIST_FILES"]

#: IDX type code -> element dtype (big-endian on disk)
IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def load_idx(path) -> np.ndarray:
    """Read an IDX file (gzip or raw) into an array of its stated shape and type.

    The magic number, the type code, the number of dimensions and the data length are all checked:
    a file that is not IDX, has an unknown type code, or holds fewer or more bytes than its header
    announces raises ``ValueError`` naming the path. Returns a writable array in native byte order
    (uint8 for ubyte files).
    """
    path = check_path(path)
    raw = read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path!r} is not an IDX file: {len(raw)} bytes, shorter than the 4-byte "
                         f"magic number")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path!r} is not an IDX file: magic number 0x{raw[:4].hex()} does not "
                         f"start with two zero bytes")
    code, ndim = raw[2], raw[3]
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise ValueError(f"{path!r}: unknown IDX type code 0x{code:02X} in magic number "
                         f"0x{raw[:4].hex()} (known: {known})")
    if ndim == 0:
        raise ValueError(f"{path!r}: the IDX magic number 0x{raw[:4].hex()} announces 0 dimensions")
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise ValueError(f"{path!r} is truncated: the header needs {head} bytes for {ndim} "
                         f"dimensions, the file has {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:head])
    dtype = IDX_TYPES[code]
    count = int(np.prod(shape, dtype=np.int64))
    need = count * dtype.itemsize
    have = len(raw) - head
    if have < need:
        raise ValueError(f"{path!r} is truncated: the header announces shape {shape} of {dtype.name} "
                         f"({need} bytes of data), but only {have} bytes follow")
    if have > need:
        raise ValueError(f"{path!r}: {have - need} unexpected bytes after the {need} bytes of data "
                         f"announced by the header (shape {shape}, {dtype.name})")
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=head).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))   # a native-order, writable copy


# --------------------------------------------------------------------------- MNIST-style sets
#: per kind: file stem -> (sha256 of the .gz, size in bytes)
MNIST_FILES = {
    "mnist": {
        "train-images-idx3-ubyte": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
        "train-labels-idx1-ubyte": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
        "t10k-images-idx3-ubyte": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
        "t10k-labels-idx1-ubyte": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
        "train-labels-idx1-ubyte": ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
        "t10k-images-idx3-ubyte": ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
        "t10k-labels-idx1-ubyte": ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
    },
}

MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}

_SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
           "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def default_cache_dir(kind: str = "mnist") -> str:
    """Where downloads go when no root is given: ``$NOGRAD_DATA/<kind>`` if that variable is set,
    else ``$XDG_CACHE_HOME/nograd/<kind>``, else ``~/.cache/nograd/<kind>``."""
    base = os.environ.get("NOGRAD_DATA")
    if not base:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(cache, "nograd")
    return os.path.join(base, kind)


def _find(root: str, stem: str) -> str | None:
    for name in (stem + ".gz", stem):
        p = os.path.join(root, name)
        if os.path.isfile(p):
            return p
    return None


def _urlopen(url: str, timeout: float = 60.0):
    """Open ``url`` for reading (a seam that tests replace; urllib is imported only here)."""
    import urllib.request

    return urllib.request.urlopen(url, timeout=timeout)


def _download(kind: str, stem: str, root: str) -> str:
    """Fetch ``stem.gz`` into ``root`` from the first mirror that serves bytes with the right SHA-256."""
    import hashlib
    import tempfile

    digest, size = MNIST_FILES[kind][stem]
    dest = os.path.join(root, stem + ".gz")
    problems = []
    for base in MIRRORS[kind]:
        url = base + stem + ".gz"
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}-", suffix=".part", dir=root)
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, _urlopen(url) as resp:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                    out.write(chunk)
            if h.hexdigest() != digest:
                problems.append(f"{url}: SHA-256 {h.hexdigest()[:12]}… differs from the published "
                                f"{digest[:12]}…")
                continue
            os.replace(tmp, dest)
            return dest
        except Exception as e:      # URLError, HTTPError, timeouts, IncompleteRead: next mirror
            problems.append(f"{url}: {getattr(e, 'reason', None) or e}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise ValueError(f"could not download {stem}.gz ({size} bytes) for {kind}: "
                     + "; ".join(problems)
                     + f". Place the file in {root!r} by hand (gzip or raw IDX) and run again")


def load_mnist(root=None, kind: str = "mnist", *, split: str = "all", download: bool = False,
               dtype=np.float32, flatten: bool = False):
    """MNIST or Fashion-MNIST from the original IDX files in ``root``.

    ``root`` is a folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each gzip-compressed (``.gz``) or
    raw. Without ``root`` the cache folder :func:`default_cache_dir` is used. Nothing is fetched
    unless ``download=True``: missing files then come from the official mirrors into ``root`` (created
    if needed), each checked against its published SHA-256; otherwise a missing file raises
    ``ValueError`` naming the files to place in ``root``.

    ``split="all"`` returns ``X_train, y_train, X_test, y_test``; ``"train"`` or ``"test"`` return
    only ``X, y`` of that part and need only its two files. Pixels are scaled to [0, 1]; images are
    ``(N, 1, 28, 28)``, or ``(N, 784)`` with ``flatten=True``; labels int64 in 0..9.
    """
    if kind not in MNIST_FILES:
        raise ValueError(f"kind must be one of {', '.join(MNIST_FILES)}, got {kind!r}")
    if split not in ("all", "train", "test"):
        raise ValueError(f"split must be 'all', 'train' or 'test', got {split!r}")
    if not isinstance(download, (bool, np.bool_)):
        raise TypeError(f"download must be a bool, got {download!r}")
    dt = check_dtype(dtype)
    if root is None:
        root = default_cache_dir(kind)
        if not download and not os.path.isdir(root):
            raise ValueError(f"no {kind} files: the cache folder {root!r} does not exist; pass "
                             f"root= (--data-dir) a folder with the IDX files, or download=True "
                             f"(--download) to fetch them")
    elif download:
        if isinstance(root, bool) or not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a path (str or os.PathLike), got {type(root).__name__}")
        root = os.fspath(root)
    else:
        root = check_path(root, "root", kind="dir")
    parts = ("train", "test") if split == "all" else (split,)
    stems = [s for p in parts for s in _SPLITS[p]]
    found = {s: _find(root, s) if os.path.isdir(root) else None for s in stems}
    missing = [s for s in stems if found[s] is None]
    if missing and download:
        os.makedirs(root, exist_ok=True)
        for s in missing:
            found[s] = _download(kind, s, root)
    elif missing:
        names = ", ".join(s + ".gz" for s in missing)
        raise ValueError(f"{kind} files missing from {root!r}: {names} (gzip or raw). Place them "
                         f"there, or pass download=True (--download) to fetch them with SHA-256 "
                         f"checks")
    out = []
    for p in parts:
        img_stem, lab_stem = _SPLITS[p]
        images = load_idx(found[img_stem])
        labels = load_idx(found[lab_stem])
        if images.dtype != np.uint8 or images.ndim != 3:
            raise ValueError(f"{found[img_stem]!r} is not an IDX image file: expected 3-D ubyte "
                             f"(magic 2051), got {images.ndim}-D {images.dtype}")
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise ValueError(f"{found[lab_stem]!r} is not an IDX label file: expected 1-D ubyte "
                             f"(magic 2049), got {labels.ndim}-D {labels.dtype}")
        if len(images) != len(labels):
            raise ValueError(f"{found[img_stem]!r} holds {len(images)} images but "
                             f"{found[lab_stem]!r} holds {len(labels)} labels")
        if labels.size and labels.max() > 9:
            raise ValueError(f"{found[lab_stem]!r} has label {labels.max()}; MNIST labels are 0..9")
        X = images.astype(dt) / dt.type(255)
        n, h, w = X.shape
        X = X.reshape(n, h * w) if flatten else X.reshape(n, 1, h, w)
        out += [X, labels.astype(np.int64)]
    return tuple(out)
