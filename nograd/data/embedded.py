"""Data shipped inside the package: the UCI optical digits (8×8), loaded with no download.

The file ``nograd/data/files/digits.csv.gz`` is the UCI "Optical Recognition of Handwritten Digits"
test set (Alpaydin & Kaynak 1998, doi:10.24432/C50P49), licensed CC BY 4.0; see
``nograd/data/files/README.md`` for the citation, licence and provenance.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_dtype, check_seed
from .split import stratified_split

__all__ = ["load_digits", "digits_path"]

_CACHE: dict = {}


def digits_path() -> str:
    """Filesystem path of the embedded ``digits.csv.gz`` (inside the installed package)."""
    import os

    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "files", "digits.csv.gz")


def _digits_raw():
    """The 1797 images as uint8 ``(N, 8, 8)`` and labels int64 ``(N,)``, parsed once per process."""
    if "digits" not in _CACHE:
        from ._io import read_text

        path = digits_path()
        text = read_text(path)
        table = np.array([line.split(",") for line in text.splitlines() if line.strip()],
                         dtype=np.float64)
        if table.shape != (1797, 65):
            raise ValueError(f"the embedded digits file {path!r} has shape {table.shape}, expected "
                             f"(1797, 65); the installation is damaged")
        images = table[:, :64].astype(np.uint8).reshape(-1, 8, 8)
        labels = table[:, 64].astype(np.int64)
        _CACHE["digits"] = (images, labels)
    return _CACHE["digits"]


def load_digits(*, test_size=0.25, seed=0, dtype=np.float32, flatten=True):
    """The UCI optical digits: 1797 images of 8×8 pixels, 10 classes, split into train and test.

    Pixels (counts 0..16) are scaled to [0, 1]. The split is stratified and seeded
    (:func:`nograd.data.stratified_split`): the default ``test_size=0.25``, ``seed=0`` gives the same
    1348/449 split on every machine, with every class within one sample of its share.

    Parameters
    ----------
    test_size : fraction in (0, 1) or number of test samples.
    seed : int seed of the split.
    dtype : float32 (default) or float64.
    flatten : ``True`` gives ``X`` of shape ``(N, 64)``; ``False`` gives images ``(N, 1, 8, 8)``.

    Returns
    -------
    X_train, y_train, X_test, y_test : labels are int64 in 0..9.

    >>> X_train, y_train, X_test, y_test = load_digits()
    >>> X_train.shape, X_test.shape, float(X_train.max())
    ((1348, 64), (449, 64), 1.0)
    """
    dt = check_dtype(dtype)
    check_seed(seed)
    if not isinstance(flatten, (bool, np.bool_)):
        raise TypeError(f"flatten must be a bool, got {flatten!r}")
    images, labels = _digits_raw()
    X = images.astype(dt) / dt.type(16)
    X = X.reshape(len(X), 64) if flatten else X.reshape(len(X), 1, 8, 8)
    return stratified_split(X, labels.copy(), test_size, rng=np.random.default_rng(seed))
