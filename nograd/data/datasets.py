"""Datasets by name, as the command line names them: ``load_dataset("digits")``,
``load_dataset("csv:path/to/table.csv", target="Class")``.

Every dataset comes back as a :class:`Dataset` with a fixed train/test split. Tables (``csv:``)
are split stratified with the seed and standardised with the training set's statistics; image sets
are scaled to [0, 1] and kept as images ``(N, C, H, W)`` (an MLP flattens them itself).
"""
from __future__ import annotations

import numpy as np

__all__ = ["Dataset", "load_dataset", "available_datasets"]


class Dataset:
    """A train/test split and what it is: ``name``, ``X_train``, ``y_train``, ``X_test``,
    ``y_test``, ``num_classes`` and ``info`` (loader details, e.g. a CSV's feature names)."""

    def __init__(self, name, X_train, y_train, X_test, y_test, num_classes, info=None):
        self.name, self.num_classes, self.info = name, int(num_classes), dict(info or {})
        self.X_train, self.y_train, self.X_test, self.y_test = X_train, y_train, X_test, y_test

    @property
    def input_shape(self) -> tuple:
        """Shape of one sample."""
        return tuple(self.X_train.shape[1:])

    def __repr__(self):
        return (f"Dataset({self.name!r}: train {self.X_train.shape}, test {self.X_test.shape}, "
                f"{self.num_classes} classes)")


#: name -> one-line description (``csv:`` and ``npz:`` take a path after the colon)
DATASETS = {
    "digits": "UCI optical digits, 1797 images 8x8, 10 classes; embedded, no download (CC BY 4.0)",
    "mnist": "MNIST IDX files from --data-dir (or the cache; --download fetches them)",
    "fashion-mnist": "Fashion-MNIST IDX files from --data-dir (or the cache; --download fetches them)",
    "cifar10": "CIFAR-10 python batches from --data-dir (pickles: trusted files only)",
    "spirals": "synthetic: 3 interleaved 2-D spirals, 300 + 100 per class, from the seed",
    "moons": "synthetic: two moons in 2-D, 600 + 200 samples, from the seed",
    "blobs": "synthetic: 4 Gaussian blobs in 10-D, 600 + 200 samples, from the seed",
    "teacher": "synthetic: 20-D Gaussian inputs labelled by a random MLP, 4 classes, 1875 + 625",
    "csv:PATH": "a CSV table; --target names the class column (default: the last)",
    "npz:PATH": "an .npz archive with X_train, y_train, X_test, y_test",
}


def available_datasets() -> dict[str, str]:
    """Dataset names (and the ``csv:``/``npz:`` forms) with a one-line description each."""
    return dict(DATASETS)


def _num_classes(*ys) -> int:
    return int(max(int(y.max()) for y in ys)) + 1


def load_dataset(spec: str, *, data_dir=None, target=-1, seed: int = 0, download: bool = False,
                 test_size=0.25, dtype=np.float32, non_numeric="error") -> Dataset:
    """Load the dataset named by ``spec`` (see :func:`available_datasets`) as a :class:`Dataset`.

    ``data_dir`` is the folder of the file-based sets (mnist, fashion-mnist, cifar10); ``target``
    the class column of a CSV; ``seed`` fixes the split of digits and CSV tables and the draw of
    the synthetic sets; ``download`` allows the MNIST loaders to fetch missing files;
    ``non_numeric`` says what a CSV's stray non-numbers in a numeric column are
    (:func:`nograd.data.load_csv`): ``"error"`` (default), or ``"missing"`` — such cells are missing
    and their rows, with any row that has an empty cell, are dropped. Unknown names
    and bad files raise ``ValueError``.
    """
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"the dataset must be a name such as 'digits' or 'csv:PATH', got {spec!r}")
    from .split import stratified_split, standardise
    from .synthetic import blobs, spirals, teacher, two_moons

    kind, _, arg = spec.partition(":")
    info: dict = {}
    if kind in ("csv", "npz"):
        if not arg:
            raise ValueError(f"--data {kind}: needs a path after the colon, e.g. {kind}:table.{kind}")
        if kind == "csv":
            from .tabular import load_csv

            if non_numeric not in ("error", "missing"):
                raise ValueError(f"non_numeric must be 'error' or 'missing', got {non_numeric!r}")
            X, y, info = load_csv(arg, target, dtype=dtype, non_numeric=non_numeric,
                                  missing="drop" if non_numeric == "missing" else "error",
                                  return_info=True)
            if len(np.unique(y)) < 2:
                raise ValueError(f"{arg!r}: the target column {info['target_name']!r} has a single "
                                 f"class; classification needs at least two")
            parts = stratified_split(X, y, test_size, rng=np.random.default_rng(seed))
            Xtr, Xte = standardise(parts[0], parts[2])
            parts = (Xtr, parts[1], Xte, parts[3])
            info["standardised"] = True
        else:
            from .tabular import load_npz

            parts = load_npz(arg, dtype=dtype)
        name = f"{kind}:{arg}"
    elif arg:
        raise ValueError(f"unknown dataset {spec!r}; only csv: and npz: take a path")
    elif spec == "digits":
        from .embedded import load_digits

        parts = load_digits(test_size=test_size, seed=seed, dtype=dtype, flatten=False)
        name = spec
    elif spec in ("mnist", "fashion-mnist"):
        from .idx import load_mnist

        parts = load_mnist(data_dir, spec, download=download, dtype=dtype)
        name = spec
    elif spec == "cifar10":
        from .cifar import load_cifar10

        if data_dir is None:
            raise ValueError("--data cifar10 needs --data-dir: a folder with the CIFAR-10 python "
                             "batches (data_batch_1..5, test_batch)")
        parts = load_cifar10(data_dir, dtype=dtype)
        name = spec
    elif spec in ("spirals", "moons", "blobs", "teacher"):
        rng = np.random.default_rng(seed)
        if spec == "spirals":
            X, y = spirals(400, 3, noise=0.15, rng=rng, dtype=dtype)
        elif spec == "moons":
            X, y = two_moons(800, noise=0.15, rng=rng, dtype=dtype)
        elif spec == "blobs":
            X, y = blobs(800, 4, 10, spread=2.0, box=6.0, rng=rng, dtype=dtype)
        else:
            X, y = teacher(2500, 20, 4, rng=rng, dtype=dtype)
        parts = stratified_split(X, y, test_size, rng=rng)
        name = spec
    else:
        raise ValueError(f"unknown dataset {spec!r}; available: "
                         f"{', '.join(k for k in DATASETS)}")
    X_train, y_train, X_test, y_test = parts
    return Dataset(name, X_train, y_train, X_test, y_test, _num_classes(y_train, y_test), info)
