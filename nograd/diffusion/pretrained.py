"""The pretrained digits model shipped with nograd: a U-Net and the reward classifier, in one file.

``weights/digits.npz`` (written by ``examples/diffusion_digits.py``) holds the U-Net's arrays
(``unet/<name>``, stored as float16 to keep the package small; loaded as float32), the reward
classifier's arrays (``classifier/<name>``, float32) and a JSON ``config`` (the U-Net's and the
classifier's constructor arguments, the noise schedule and how they were trained). Loading
rebuilds both models from the config, checks every array's name and shape, and never unpickles.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..models.diffusion import UNet
from ..models.mlp import mlp
from .schedule import NoiseSchedule

DEFAULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "digits.npz")


def build_classifier(hidden=(64,), *, rng=0, dtype=np.float32):
    """The reward classifier: an 8×8 → ``hidden`` (tanh) → 10 MLP on images in ``[0, 1]`` (smooth,
    so the reward's gradient has no kinks)."""
    return mlp((1, 8, 8), 10, hidden=tuple(hidden), activation="tanh", rng=rng, dtype=dtype)


def save_pretrained(path, unet, classifier, config: dict) -> None:
    """Write both models and ``config`` (JSON-able; must hold ``"unet"``, ``"classifier"`` and
    ``"schedule"`` argument dicts) to ``path`` (compressed ``.npz``, written then renamed)."""
    for key in ("unet", "classifier", "schedule"):
        if key not in config:
            raise ValueError(f"config must hold {key!r}")
    arrays = {f"unet/{k}": v.astype(np.float16) for k, v in unet.params.items()}
    arrays.update({f"classifier/{k}": v.astype(np.float32) for k, v in classifier.params.items()})
    arrays["config"] = np.frombuffer(json.dumps(config).encode(), dtype=np.uint8)
    tmp = os.fspath(path) + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_pretrained(path=None):
    """``(unet, classifier, schedule, config)`` from ``path`` (default: the shipped weights)."""
    path = DEFAULT_PATH if path is None else os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"path {path!r} does not exist; run examples/diffusion_digits.py to write it")
    with np.load(path, allow_pickle=False) as data:
        stored = {k: data[k] for k in data.files}
    config = json.loads(bytes(stored.pop("config")).decode())
    unet = UNet(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in config["unet"].items()}, rng=0)
    classifier = build_classifier(**config["classifier"])
    for prefix, model in (("unet/", unet), ("classifier/", classifier)):
        for k, v in model.params.items():
            a = stored.get(prefix + k)
            if a is None or a.shape != v.shape:
                raise ValueError(f"{path!r}: array {prefix + k} is missing or has the wrong shape")
            v[...] = a.astype(v.dtype)
    return unet, classifier, NoiseSchedule(**config["schedule"]), config
