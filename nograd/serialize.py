"""Model files that know their model: the architecture as JSON beside the weights in one ``.npz``.

:func:`save_model` writes what :func:`nograd.save` writes — every parameter and buffer, no pickles —
plus one more entry, ``__nograd_spec__``: a JSON text saying how to rebuild the model, so that
:func:`load_model` needs nothing but the path::

    model = nograd.get_model("mlp", (1, 8, 8), 10, rng=0, hidden=(64,))
    nograd.save_model(model, "digits.npz")
    again = nograd.load_model("digits.npz")       # same class, same arrays, same outputs

The architecture is described one of two ways:

* a model built by :func:`nograd.get_model` records its name, input shape, number of classes and
  options (``model.build_spec``); the file stores them and :func:`load_model` calls ``get_model``
  again (any registered model, including those of the command line), then puts back the layers
  that replaced some of its own afterwards (layers declaring ``swapped_in``, such as the
  quantized layers of :func:`nograd.compress.quantize`), recorded as ``swaps``: their dotted
  path, class and constructor arguments;
* otherwise a :class:`~nograd.Sequential` / :class:`~nograd.Residual` tree of layers exported by
  :mod:`nograd.layers` is described generically: each layer's class name and the constructor
  arguments read back from the layer (an argument is the attribute of the same name; a boolean
  ``bias`` is whether the layer holds a ``bias`` array; others keep their defaults).

Either way :func:`save_model` first rebuilds the model from the description and compares it with
the model to save — the same module tree, the same parameter and buffer names, shapes and dtypes,
and the same settings (every number, string, tuple or fixed array the layers keep outside their
parameters) — and refuses, naming the first difference, a description that would not give the
model back. Option values are JSON numbers, strings, booleans, ``None``, lists; tuples and dtypes
are tagged (``{"tuple": [...]}``, ``{"dtype": "float32"}``) so they come back as they went in.

Files written by :func:`nograd.save` (weights only) still load with ``nograd.load(model, path)``;
:func:`load_model` on them says so. :func:`save` is :func:`nograd.save` plus the sweep of the
temporaries killed saves left in the folder (see :func:`sweep`).
"""
from __future__ import annotations

import inspect
import json
import os
import re
import time
import warnings
import zipfile

import numpy as np

from . import layers as _layers
from .core.module import Module, Residual, Sequential
from .core.params import SPEC_KEY, TMP_PREFIX, TMP_SUFFIX
from .core.params import load as _load_weights
from .core.params import save as _save_weights

__all__ = ["save", "save_model", "load_model", "read_spec", "describe", "build", "sweep"]

SPEC_VERSION = 1
#: how old an untouched temporary must be to count as left behind whatever its pid (seconds)
STALE_AFTER = 3600
_TMP = re.compile(re.escape(TMP_PREFIX) + r"(\d+)-[0-9a-f]+" + re.escape(TMP_SUFFIX))
#: constructor arguments that never describe a layer: randomness and initialisation of weights that
#: are loaded anyway, and the dtype (the file's arrays set it)
_SKIP = ("rng", "init", "dtype", "seed")


# --------------------------------------------------------------------------- temporaries
def _writer_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs on this machine (POSIX ``kill(pid, 0)`` only asks);
    ``False`` when it cannot be told (another OS, or a process of another user)."""
    if os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def sweep(folder) -> list[str]:
    """Remove from ``folder`` the temporaries that killed saves left; return their names.

    Only files named exactly as :func:`nograd.save` names its temporaries,
    ``.nograd-<pid>-<hex>.npz.tmp``, are considered, and only stale ones: untouched for
    :data:`STALE_AFTER` seconds (an hour: a save still under way writes to its file), or whose
    writer — the ``<pid>`` in the name — no longer runs on this machine. Another file, a save
    under way in this or another live process, or a recent file of a writer on another machine
    sharing the folder, is left alone.
    """
    folder = os.fspath(folder)
    gone = []
    for name in sorted(os.listdir(folder)):
        m = _TMP.fullmatch(name)
        if not m:
            continue
        full = os.path.join(folder, name)
        try:
            if time.time() - os.path.getmtime(full) > STALE_AFTER or _writer_gone(int(m[1])):
                os.remove(full)
                gone.append(name)
        except FileNotFoundError:       # another save removed it first
            pass
    return gone


def save(model, path, *, spec=None) -> None:
    """:func:`nograd.core.params.save` (weights, and ``spec`` JSON text when given), after
    removing the stale temporaries of killed saves from the target folder with a
    ``UserWarning`` that names them (:func:`sweep`). This is ``nograd.save``."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    gone = sweep(folder) if os.path.isdir(folder) else []
    if gone:
        many = len(gone) > 1
        warnings.warn(f"removed {len(gone)} temporary file{'s' if many else ''} left by "
                      f"{'interrupted saves' if many else 'an interrupted save'} in {folder}: "
                      f"{', '.join(gone)}", stacklevel=2)
    _save_weights(model, path, spec=spec)


# --------------------------------------------------------------------------- JSON values
def _encode(value, where):
    """``value`` as JSON data; tuples and dtypes tagged. ``where`` names it in the error."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            raise ValueError(f"{where} is {value}, which a JSON architecture cannot hold")
        return float(value)
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode(v, f"{where}[{k!r}]") for k, v in value.items()}}
    if isinstance(value, np.dtype) or isinstance(value, type) and issubclass(value, np.generic):
        return {"dtype": np.dtype(value).name}
    raise ValueError(f"{where} is a {type(value).__name__} ({str(value)[:40]}), which a JSON "
                     f"architecture cannot hold; save the weights alone with nograd.save(model, path)")


def _decode(data):
    """The inverse of :func:`_encode`."""
    if isinstance(data, list):
        return [_decode(v) for v in data]
    if isinstance(data, dict):
        (tag, inner), = data.items()
        if tag == "tuple":
            return tuple(_decode(v) for v in inner)
        if tag == "dict":
            return {k: _decode(v) for k, v in inner.items()}
        if tag == "dtype":
            return np.dtype(inner).type
        raise ValueError(f"unknown tag {tag!r} in the architecture")
    return data


# --------------------------------------------------------------------------- describe / build
def _layer_args(m, where) -> dict:
    """The constructor arguments of layer ``m`` read back from it (see the module docstring)."""
    cls = type(m)
    args = {}
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.name in _SKIP or p.kind is p.VAR_KEYWORD:
            continue
        if p.name in m.__dict__:
            value = m.__dict__[p.name]
        elif p.name == "bias" and isinstance(p.default, bool):
            value = "bias" in m._own
        elif p.default is not p.empty and p.kind is not p.VAR_POSITIONAL:
            continue
        else:
            raise ValueError(f"model{where}: {cls.__name__} keeps no attribute {p.name!r} for its "
                             f"constructor argument, so the file could not rebuild it; build the "
                             f"model with nograd.get_model, or save the weights alone with nograd.save")
        args[p.name] = _encode(value, f"model{where}: {cls.__name__}'s {p.name}")
    return args


def _describe_tree(m, where="") -> dict:
    cls = type(m)
    if cls is Sequential:
        return {"class": "Sequential",
                "children": [_describe_tree(c, f"{where}.{k}") for k, c in m.children.items()]}
    if cls is Residual:
        kids = m.children
        return {"class": "Residual", "body": _describe_tree(kids["body"], f"{where}.body"),
                "shortcut": (_describe_tree(kids["shortcut"], f"{where}.shortcut")
                             if "shortcut" in kids else None)}
    if getattr(_layers, cls.__name__, None) is not cls:
        raise ValueError(f"model{where or ' itself'} is a {cls.__name__}, neither a layer of "
                         f"nograd.layers nor a Sequential/Residual of them, and was not built by "
                         f"nograd.get_model: the file could not rebuild it; build the model with "
                         f"get_model, or save the weights alone with nograd.save(model, path)")
    return {"class": cls.__name__, "args": _layer_args(m, where)}


def _build_tree(d) -> Module:
    cls = d["class"]
    if cls == "Sequential":
        return Sequential(*[_build_tree(c) for c in d["children"]])
    if cls == "Residual":
        return Residual(_build_tree(d["body"]),
                        None if d["shortcut"] is None else _build_tree(d["shortcut"]))
    layer = getattr(_layers, cls, None)
    if not (isinstance(layer, type) and issubclass(layer, Module)):
        raise ValueError(f"the architecture names {cls!r}, which is not a layer of nograd.layers")
    args = {k: _decode(v) for k, v in d["args"].items()}
    star = [p.name for p in inspect.signature(layer.__init__).parameters.values()
            if p.kind is p.VAR_POSITIONAL]
    return layer(*(args.pop(star[0]) if star else ()), **args)


def describe(model, *, meta=None) -> dict:
    """The architecture of ``model`` as JSON-ready data (see the module docstring), with the
    model's dtype and ``meta`` (a dict of JSON-ready facts: the data, the rule, a seed ...).
    Raises ``ValueError`` naming what cannot be described; it does not check the description
    (:func:`save_model` does)."""
    if not isinstance(model, Module):
        raise TypeError(f"model must be a nograd Module, got {type(model).__name__}")
    spec = {"nograd_spec": SPEC_VERSION, "dtype": None if model.dtype is None else np.dtype(model.dtype).name}
    recorded = getattr(model, "build_spec", None)
    if isinstance(recorded, dict):
        spec["get_model"] = {"model": recorded["model"],
                             "input_shape": [int(d) for d in recorded["input_shape"]],
                             "num_classes": int(recorded["num_classes"]),
                             "options": {k: _encode(v, f"option {k!r} of model {recorded['model']!r}")
                                         for k, v in recorded["options"].items()}}
        swaps = [{"at": name, "class": type(m).__name__, "args": _layer_args(m, f".{name}")}
                 for name, m in model.modules() if getattr(type(m), "swapped_in", False)]
        if swaps:       # layers put in place after get_model built it (nograd.compress.quantize)
            spec["swaps"] = swaps
    else:
        spec["layers"] = _describe_tree(model)
    spec["meta"] = {k: _encode(v, f"meta[{k!r}]") for k, v in dict(meta or {}).items()}
    return spec


def _swap(model, at: str, layer: Module) -> None:
    """Put ``layer`` in place of the child at dotted path ``at`` of ``model``."""
    parent_name, _, key = at.rpartition(".")
    parent = dict(model.modules()).get(parent_name)
    if parent is None or key not in parent._children:
        raise ValueError(f"the architecture swaps a layer at {at!r}, which the model does not have")
    parent._children[key] = layer


def build(spec) -> Module:
    """A new model from ``spec`` (:func:`describe`'s data, or its JSON text); its weights are
    fresh (seed 0) until loaded, its float arrays in the spec's dtype."""
    if isinstance(spec, str):
        spec = json.loads(spec)
    if not isinstance(spec, dict) or spec.get("nograd_spec") != SPEC_VERSION:
        raise ValueError(f"not a nograd architecture of version {SPEC_VERSION}: "
                         f"{str(spec)[:60]}")
    if "get_model" in spec:
        from .models import get_model

        g = spec["get_model"]
        model = get_model(g["model"], tuple(g["input_shape"]), g["num_classes"], rng=0,
                          **{k: _decode(v) for k, v in g["options"].items()})
        for swap in spec.get("swaps", ()):
            _swap(model, swap["at"], _build_tree({"class": swap["class"], "args": swap["args"]}))
    else:
        model = _build_tree(spec["layers"])
    if spec.get("dtype") and model.dtype is not None and model.dtype != np.dtype(spec["dtype"]):
        model.astype(spec["dtype"])
    return model


def _settings(m) -> dict:
    """What a module keeps outside its arrays and children that decides what it computes: plain
    values (numbers, strings, None, tuples/lists of them) and fixed arrays."""
    out = {}
    for k, v in vars(m).items():
        if k in ("_own", "_buffers", "_children", "build_spec", "init_seed"):   # how, not what
            continue
        if isinstance(v, np.ndarray) or _plain(v):
            out[k] = v
    return out


def _plain(v) -> bool:
    if v is None or isinstance(v, (bool, int, float, str, np.integer, np.floating)):
        return True
    return isinstance(v, (tuple, list)) and all(_plain(x) for x in v)


def _difference(model, rebuilt):
    """The first way ``rebuilt`` differs from ``model`` (a sentence), or ``None``."""
    a, b = list(model.modules()), list(rebuilt.modules())
    if [(n, type(m)) for n, m in a] != [(n, type(m)) for n, m in b]:
        return (f"its modules are {[(n, type(m).__name__) for n, m in a][:6]}..., the description "
                f"gives {[(n, type(m).__name__) for n, m in b][:6]}...")
    for kind in ("params", "buffers"):
        x, y = getattr(model, kind), getattr(rebuilt, kind)
        if list(x) != list(y):
            return f"its {kind} are {list(x)}, the description gives {list(y)}"
        for k in x:
            if x[k].shape != y[k].shape or x[k].dtype != y[k].dtype:
                return (f"{k!r} is {x[k].dtype}{x[k].shape}, the description gives "
                        f"{y[k].dtype}{y[k].shape}")
    for (name, m), (_, r) in zip(a, b):
        s, t = _settings(m), _settings(r)
        for k in s.keys() & t.keys():
            u, v = s[k], t[k]
            same = (isinstance(u, np.ndarray) and isinstance(v, np.ndarray) and u.shape == v.shape
                    and np.array_equal(u, v)) if isinstance(u, np.ndarray) or isinstance(v, np.ndarray) else u == v
            if not same:
                return (f"{type(m).__name__} {name or '(the model)'} has {k} = {str(u)[:40]}, the "
                        f"description gives {str(v)[:40]}")
    return None


# --------------------------------------------------------------------------- files
def save_model(model, path, *, meta=None) -> None:
    """Write ``model`` to ``path``: its arrays as :func:`nograd.save` does (atomically, with the
    umask's mode, non-finite arrays refused) and its architecture as JSON (:func:`describe`), so
    that :func:`load_model` rebuilds it. ``meta`` (JSON-ready facts, e.g. the dataset and rule it
    was trained on) is stored with it. The description is checked first by rebuilding the model
    from it; a model it would not give back is refused with a ``ValueError`` naming the first
    difference (:func:`nograd.save` still writes its weights alone)."""
    spec = describe(model, meta=meta)
    try:
        rebuilt = build(spec)
    except (ValueError, TypeError) as e:
        raise ValueError(f"the recorded architecture of the model does not build ({e}); save the "
                         f"weights alone with nograd.save(model, path)") from None
    diff = _difference(model, rebuilt)
    if diff is not None:
        raise ValueError(f"the model's architecture cannot be saved: rebuilt from its description, "
                         f"{diff}; save the weights alone with nograd.save(model, path)")
    save(model, path, spec=json.dumps(spec))


def read_spec(path):
    """The architecture stored in ``path`` (:func:`describe`'s data), or ``None`` for a file
    written by :func:`nograd.save` (weights only). Reads that entry alone."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"path {path!r} " + ("is a directory, not a model file" if os.path.isdir(path)
                                              else "does not exist"))
    try:
        with np.load(path, allow_pickle=False) as data:
            text = str(data[SPEC_KEY]) if SPEC_KEY in data.files else None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise ValueError(f"path {path!r} is not a readable nograd .npz file ({e})") from None
    if text is None:
        return None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"path {path!r}: the stored architecture is not valid JSON ({e})") from None
    if not isinstance(spec, dict) or spec.get("nograd_spec") != SPEC_VERSION:
        raise ValueError(f"path {path!r}: the stored architecture is not of version {SPEC_VERSION}")
    return spec


def load_model(path) -> Module:
    """Rebuild the model saved in ``path`` by :func:`save_model` and load its arrays; returns it.

    A file written by :func:`nograd.save` holds weights but no architecture: a ``ValueError`` says
    so and how to load it (build the same model, then ``nograd.load(model, path)``)."""
    spec = read_spec(path)
    if spec is None:
        raise ValueError(f"path {os.fspath(path)!r} holds weights but no architecture (written by "
                         f"nograd.save, or by a version before save_model): build the same model, "
                         f"e.g. model = nograd.get_model(name, input_shape, num_classes), then "
                         f"nograd.load(model, path)")
    try:
        model = build(spec)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"path {os.fspath(path)!r}: the stored architecture does not build ({e})") from None
    return _load_weights(model, path)
