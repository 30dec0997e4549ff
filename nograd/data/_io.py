"""File helpers shared by the loaders: path checks and reading plain or gzip-compressed bytes.

Loaders only read: nothing here writes to, moves or deletes a file.
"""
from __future__ import annotations

import os

GZIP_MAGIC = b"\x1f\x8b"


def check_path(path, name: str = "path", *, kind: str = "file") -> str:
    """Return ``path`` as a string after checking that it names an existing file (or folder).

    ``kind`` is ``"file"`` or ``"dir"``. Raises ``TypeError`` for a value that is not a path and
    ``ValueError`` naming the argument and the path when it is missing or of the wrong kind.
    """
    if isinstance(path, bool) or not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(path).__name__}")
    p = os.fsdecode(os.fspath(path))
    if not p:
        raise ValueError(f"{name} is an empty string; expected a path")
    if kind == "dir":
        if not os.path.isdir(p):
            what = "is a file, not a folder" if os.path.exists(p) else "does not exist"
            raise ValueError(f"{name} {p!r} {what}")
    else:
        if not os.path.isfile(p):
            what = "is a folder, not a file" if os.path.isdir(p) else "does not exist"
            raise ValueError(f"{name} {p!r} {what}")
    return p


def read_bytes(path: str) -> bytes:
    """All bytes of ``path``, decompressed when the file starts with the gzip magic ``1f 8b``.

    A truncated or corrupt gzip stream raises ``ValueError`` naming the path. The test is on the
    content, not the file name, so ``x.gz`` holding raw bytes and ``x`` holding gzip both work.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValueError(f"cannot read {path!r}: {e.strerror or e}") from None
    if raw[:2] != GZIP_MAGIC:
        return raw
    import gzip
    import zlib

    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise ValueError(f"{path!r}: the gzip data is truncated or corrupt ({e})") from None


def read_text(path: str) -> str:
    """The text of ``path`` (UTF-8, a leading byte-order mark dropped), gunzipped when needed."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path!r} is not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})"
                         ) from None
