"""Flat parameter dicts: flatten/unflatten to one vector, and save/load as ``.npz``.

>>> import numpy as np
>>> p = {"w": np.arange(6.0).reshape(2, 3), "b": np.array([7.0, 8.0])}
>>> v = flatten_params(p)
>>> v
array([0., 1., 2., 3., 4., 5., 7., 8.])
>>> q = unflatten_params(v, like=p)
>>> bool(np.array_equal(q["w"], p["w"])) and list(q) == ["w", "b"]
True
"""
from __future__ import annotations

import os
import tempfile
import zipfile

import numpy as np

FORMAT_KEY = "__nograd_format__"
FORMAT_VERSION = 1


def flatten_params(params: dict[str, np.ndarray]) -> np.ndarray:
    """Concatenate the arrays of ``params`` (in dict order) into one 1-D vector (a copy)."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict name -> array, got {type(params).__name__}")
    if not params:
        return np.zeros(0)
    for k, v in params.items():
        if not isinstance(v, np.ndarray):
            raise TypeError(f"params[{k!r}] must be a numpy.ndarray, got {type(v).__name__}")
    return np.concatenate([v.reshape(-1) for v in params.values()])


def unflatten_params(flat: np.ndarray, like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Split ``flat`` into arrays shaped like those of ``like`` (views of ``flat``, same order)."""
    if not isinstance(flat, np.ndarray) or flat.ndim != 1:
        raise ValueError(f"flat must be a 1-D numpy array, got {getattr(flat, 'shape', type(flat).__name__)}")
    total = sum(v.size for v in like.values())
    if flat.size != total:
        raise ValueError(f"flat has {flat.size} entries but like needs {total}")
    out, i = {}, 0
    for k, v in like.items():
        out[k] = flat[i:i + v.size].reshape(v.shape)
        i += v.size
    return out


def _state(model) -> dict[str, np.ndarray]:
    arrays = {f"param/{k}": v for k, v in model.params.items()}
    arrays.update({f"buffer/{k}": v for k, v in model.buffers.items()})
    return arrays


def save(model, path) -> None:
    """Write the model's parameters and buffers to ``path`` as an uncompressed ``.npz``.

    The file is written to a temporary name in the same folder and renamed over ``path`` only
    once complete, so an interrupted save never destroys a good file. No pickles are written.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"path {path!r}: folder {folder!r} does not exist")
    arrays = _state(model)
    arrays[FORMAT_KEY] = np.array(FORMAT_VERSION)
    fd, tmp = tempfile.mkstemp(prefix=".nograd-", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load(model, path):
    """Read ``path`` (written by :func:`save`) into the model's arrays, in place; returns the model.

    Every array is checked before any is written: a missing, extra or mis-shaped array, or a file
    that is not a readable ``.npz``, raises ``ValueError`` and leaves the model untouched.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"path {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise ValueError(f"path {path!r} is not a readable nograd .npz file ({e})") from None
    version = stored.pop(FORMAT_KEY, None)
    if version is None or int(version) != FORMAT_VERSION:
        raise ValueError(f"path {path!r} is not a nograd checkpoint (format key missing or "
                         f"unknown version {version!r})")
    target = _state(model)
    missing = [k.split("/", 1)[1] for k in target if k not in stored]
    extra = [k.split("/", 1)[1] for k in stored if k not in target]
    if missing or extra:
        raise ValueError(f"checkpoint {path!r} does not match the model: missing {missing}, "
                         f"unexpected {extra}")
    for k, dst in target.items():
        src = stored[k]
        if src.shape != dst.shape:
            raise ValueError(f"checkpoint {path!r}: {k.split('/', 1)[1]!r} has shape {src.shape}, "
                             f"the model expects {dst.shape}")
        if src.dtype.kind != "f" or not np.isfinite(src).all():
            raise ValueError(f"checkpoint {path!r}: {k.split('/', 1)[1]!r} must be finite floats")
    for k, dst in target.items():
        dst[...] = stored[k]
    return model
