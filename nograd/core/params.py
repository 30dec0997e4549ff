"""Flat parameter dicts: flatten/unflatten to one vector, and save/load as ``.npz`` (no pickles)."""
from __future__ import annotations

import os
import zipfile

import numpy as np

FORMAT_KEY, FORMAT_VERSION = "__nograd_format__", 1
SPEC_KEY = "__nograd_spec__"              # optional JSON text: the architecture (nograd.serialize)
TMP_PREFIX, TMP_SUFFIX = ".nograd-", ".npz.tmp"     # temporaries: .nograd-<pid>-<12 hex>.npz.tmp


def flatten_params(params: dict[str, np.ndarray]) -> np.ndarray:
    """Concatenate the arrays of ``params`` (in dict order) into one 1-D vector (a copy)."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict name -> array, got {type(params).__name__}")
    for k, v in params.items():
        if not isinstance(v, np.ndarray):
            raise TypeError(f"params[{k!r}] must be a numpy.ndarray, got {type(v).__name__}")
    return np.concatenate([v.reshape(-1) for v in params.values()]) if params else np.zeros(0)


def unflatten_params(flat: np.ndarray, like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Split ``flat`` into arrays shaped like those of ``like`` (views of ``flat``, same order)."""
    if not isinstance(flat, np.ndarray) or flat.ndim != 1:
        raise ValueError(f"flat must be a 1-D numpy array, got {getattr(flat, 'shape', type(flat).__name__)}")
    ends = np.cumsum([0] + [v.size for v in like.values()])
    if flat.size != ends[-1]:
        raise ValueError(f"flat has {flat.size} entries but like needs {ends[-1]}")
    return {k: flat[a:b].reshape(v.shape) for (k, v), a, b in zip(like.items(), ends[:-1], ends[1:])}


def _state(model) -> dict[str, np.ndarray]:
    return {**{f"param/{k}": v for k, v in model.params.items()},
            **{f"buffer/{k}": v for k, v in model.buffers.items()}}


def _check(path, key, a, shape=None):
    """Refuse an array as :func:`load` does (and :func:`save`, with the same message)."""
    if shape is not None and a.shape != shape:
        raise ValueError(f"checkpoint {path!r}: {key[key.index('/') + 1:]!r} has shape {a.shape}, "
                         f"the model expects {shape}")
    if a.dtype.kind not in "fiu" or (a.dtype.kind == "f" and not np.isfinite(a).all()):
        raise ValueError(f"checkpoint {path!r}: {key[key.index('/') + 1:]!r} must be finite floats "
                         f"(or integers: the packed codes of a quantized layer)")


def save(model, path, *, spec=None) -> None:
    """Write the model's parameters and buffers to ``path`` as an uncompressed ``.npz``, with
    ``spec`` (JSON text: the architecture, see :func:`nograd.save_model`) if given.

    Written to a temporary ``.nograd-<pid>-<hex>.npz.tmp`` beside ``path`` and renamed over it once
    complete (an interrupted save never destroys a good file), with ``np.save``'s mode (0666 less the
    umask); ``nograd.save`` (:func:`nograd.serialize.save`) first removes the temporaries killed saves
    left. Arrays that are neither finite floats nor integers are refused with :func:`load`'s message; a directory
    ``path`` or an unwritable folder is a ``ValueError``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(folder):
        raise ValueError(f"path {path!r} is a directory; give a file name such as model.npz"
                         if os.path.isdir(path) else f"path {path!r}: folder {folder!r} does not exist")
    if not isinstance(spec, (str, type(None))):
        raise TypeError(f"spec must be a str (JSON text) or None, got {type(spec).__name__}")
    arrays = _state(model)
    for k, v in arrays.items():
        _check(path, k, v)
    arrays.update({FORMAT_KEY: np.array(FORMAT_VERSION)}, **({} if spec is None else {SPEC_KEY: np.array(spec)}))
    tmp = os.path.join(folder, f"{TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}{TMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except PermissionError:
        raise ValueError(f"path {path!r}: folder {folder!r} is not writable") from None
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

    Every array is checked before any is written: a missing, extra, mis-shaped or non-finite array,
    or a file that is not a readable ``.npz``, raises ``ValueError`` and leaves the model untouched.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"path {path!r} " + ("is a directory, not a checkpoint file"
                                              if os.path.isdir(path) else "does not exist"))
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = {k: data[k] for k in data.files if k != SPEC_KEY}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise ValueError(f"path {path!r} is not a readable nograd .npz file ({e})") from None
    version = stored.pop(FORMAT_KEY, None)
    if version is None or int(version) != FORMAT_VERSION:
        raise ValueError(f"path {path!r} is not a nograd checkpoint (format key missing or "
                         f"unknown version {version!r})")
    target = _state(model)
    missing, extra = ([k[k.index("/") + 1:] for k in a if k not in b] for a, b in ((target, stored), (stored, target)))
    if missing or extra:
        raise ValueError(f"checkpoint {path!r} does not match the model: missing {missing}, "
                         f"unexpected {extra}")
    for k, dst in target.items():
        _check(path, k, stored[k], dst.shape)
    for k, dst in target.items():
        dst[...] = stored[k]
    return model
