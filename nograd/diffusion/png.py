"""A PNG writer in NumPy and zlib (no imaging library): grey or RGB images, and grids of samples.

PNG (ISO/IEC 15948, W3C PNG 2nd ed.): the 8-byte signature, then chunks ``length, type, data,
CRC-32(type + data)``: ``IHDR`` (width, height, bit depth 8, colour type 0 grey or 2 RGB),
``IDAT`` (the zlib-compressed scanlines, each preceded by filter byte 0 "None") and ``IEND``.
"""
from __future__ import annotations

import os
import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image) -> bytes:
    """The PNG bytes of ``image``: ``(H, W)`` grey or ``(H, W, 3)`` RGB, ``uint8``."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise TypeError(f"image must have dtype uint8, got {a.dtype}")
    if a.ndim == 2:
        colour = 0
    elif a.ndim == 3 and a.shape[2] == 3:
        colour = 2
    else:
        raise ValueError(f"image must be (H, W) or (H, W, 3), got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"image is empty (shape {a.shape})")
    h, w = a.shape[:2]
    rows = np.ascontiguousarray(a).reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return (_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9))
            + _chunk(b"IEND", b""))


def image_grid(images, *, nrow=8, pad=1, scale=4, low=-1.0, high=1.0):
    """Tile ``images (N, 1, H, W)`` or ``(N, H, W)`` (values in ``[low, high]``, clipped) into one
    ``uint8`` grey image: ``nrow`` per row, ``pad`` black pixels between tiles, each pixel
    repeated ``scale × scale`` (nearest neighbour) so that 8×8 digits are visible."""
    a = np.asarray(images, dtype=np.float64)
    if a.ndim == 4:
        if a.shape[1] != 1:
            raise ValueError(f"images must have one channel, got shape {a.shape}")
        a = a[:, 0]
    if a.ndim != 3 or a.shape[0] == 0:
        raise ValueError(f"images must be (N, 1, H, W) or (N, H, W) and non-empty, got shape {np.shape(images)}")
    if high <= low:
        raise ValueError(f"high must exceed low, got low={low}, high={high}")
    n, h, w = a.shape
    a = np.clip((a - low) / (high - low), 0, 1)
    a = np.repeat(np.repeat(a, scale, axis=1), scale, axis=2)
    h, w = h * scale, w * scale
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad))
    for k in range(n):
        r, c = divmod(k, cols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = a[k]
    return np.round(grid * 255).astype(np.uint8)


def write_png(path, image) -> None:
    """Write ``image`` (see :func:`encode_png`) to ``path`` (a temporary file, then renamed)."""
    data = encode_png(image)
    tmp = os.fspath(path) + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
