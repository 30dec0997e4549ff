"""Text data for character-level language models: a character vocabulary, the contiguous
train/validation split and random windows, as nanoGPT prepares and samples Tiny Shakespeare.

Tiny Shakespeare (Karpathy 2015, char-rnn, github.com/karpathy/char-rnn, public domain text) ships
inside the package as ``nograd/data/files/tinyshakespeare.txt.xz``; see
``nograd/data/files/README.md`` for its provenance. The vocabulary, split and batch sampling follow
nanoGPT (Karpathy, github.com/karpathy/nanoGPT): ``data/shakespeare_char/prepare.py`` (sorted unique
characters, first 90 % of the ids for training) and ``train.py`` ``get_batch`` (uniform random
window starts, targets shifted by one).

Token ids are ``int64`` everywhere (``encode``, ``train``/``val``, the batches ``x`` and ``y``), the
integer type that :func:`nograd.core.losses.softmax_cross_entropy` and PyTorch take as class labels.

>>> vocab = CharVocab("hello world")
>>> vocab.size, vocab.chars
(8, ' dehlorw')
>>> ids = vocab.encode("hold")
>>> ids.tolist(), vocab.decode(ids)
([3, 5, 4, 1], 'hold')
>>> data = load_shakespeare()
>>> data.vocab.size, len(data.train), len(data.val)
(65, 1003854, 111540)
>>> x, y = data.get_batch("train", 4, 8, np.random.default_rng(0))
>>> x.shape, bool((x[:, 1:] == y[:, :-1]).all())
((4, 8), True)
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..core.checks import as_rng, check_float, check_positive

__all__ = ["CharVocab", "TextData", "load_text", "load_shakespeare", "SHAKESPEARE_FILE"]

SHAKESPEARE_FILE = "tinyshakespeare.txt.xz"
# the char-rnn input.txt: its length in characters (pure ASCII, so also bytes) and SHA-256
_SHAKESPEARE_CHARS = 1_115_394
_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
_MAX_CODE_POINT = 0x10FFFF
_CACHE: dict = {}


# --------------------------------------------------------------------------- code points
def _code_points(text: str) -> np.ndarray:
    """The code points of ``text`` as uint32 ``(len(text),)``; lone surrogates are kept."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _from_code_points(cps: np.ndarray) -> str:
    return np.ascontiguousarray(cps, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")


# --------------------------------------------------------------------------- vocabulary
class CharVocab:
    """A character vocabulary: the sorted unique characters of a text, id ``i`` ↔ ``chars[i]``.

    ``CharVocab(text)`` builds it as nanoGPT's ``data/shakespeare_char/prepare.py`` does
    (``chars = sorted(set(text))``, ``stoi``/``itos`` the two directions). Characters sort by code
    point, so any unicode text works. Encoding is vectorised (a binary search over the sorted code
    points), O(n log V) for n characters and V = :attr:`size`.

    Attributes
    ----------
    chars : str, the V characters in id order.
    size : int, V.
    stoi : dict str → int; itos : dict int → str.

    :meth:`to_dict` / :meth:`from_dict` store the vocabulary as one uint32 array of code points,
    so it can live inside an ``.npz`` next to model weights (no pickle).
    """

    def __init__(self, text: str):
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("text is empty; a vocabulary needs at least one character")
        self._set_codes(np.unique(_code_points(text)))

    def _set_codes(self, codes: np.ndarray) -> None:
        self._codes = codes.astype(np.uint32)
        self.chars = _from_code_points(self._codes)
        self.size = len(self.chars)
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}
        self.itos = dict(enumerate(self.chars))

    def __len__(self) -> int:
        return self.size

    def __eq__(self, other) -> bool:
        return isinstance(other, CharVocab) and self.chars == other.chars

    __hash__ = None

    def __repr__(self) -> str:
        return f"CharVocab(size={self.size})"

    def encode(self, text: str) -> np.ndarray:
        """The ids of the characters of ``text``: int64 ``(len(text),)``.

        A character outside the vocabulary raises ``ValueError`` naming it and its position.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        cps = _code_points(text)
        ids = np.searchsorted(self._codes, cps)
        known = ids < self.size
        known[known] = self._codes[ids[known]] == cps[known]
        if not known.all():
            pos = int(np.flatnonzero(~known)[0])
            raise ValueError(f"text has the character {text[pos]!r} (U+{ord(text[pos]):04X}) at "
                             f"position {pos}, which is not in the vocabulary of {self.size} "
                             f"characters")
        return ids.astype(np.int64)

    def decode(self, ids) -> str:
        """The text of a 1-D sequence of integer ids (ndarray or list), each in ``[0, size)``."""
        arr = np.asarray(ids)
        if arr.size == 0:
            return ""
        if arr.dtype.kind not in "iu":
            raise TypeError(f"ids must be integer token ids, got dtype {arr.dtype}")
        if arr.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {arr.shape}")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= self.size:
            raise ValueError(f"ids must lie in [0, {self.size}) for this vocabulary, got min {lo}, "
                             f"max {hi}")
        return _from_code_points(self._codes[arr])

    def to_dict(self) -> dict:
        """``{"chars": uint32 (V,)}``: the code points in id order, ready for ``np.savez``."""
        return {"chars": self._codes.copy()}

    @classmethod
    def from_dict(cls, d) -> "CharVocab":
        """The vocabulary stored by :meth:`to_dict` (a dict or a loaded ``.npz``, key ``"chars"``)."""
        if not isinstance(d, Mapping):
            raise TypeError(f"d must be a mapping with key 'chars', got {type(d).__name__}")
        if "chars" not in d:
            raise ValueError("d has no key 'chars' (the vocabulary's code points)")
        codes = np.asarray(d["chars"])
        if codes.dtype.kind not in "iu" or codes.ndim != 1 or codes.size == 0:
            raise ValueError(f"d['chars'] must be a non-empty 1-D integer array of code points, "
                             f"got dtype {codes.dtype}, shape {codes.shape}")
        codes = codes.astype(np.int64)        # signed, so that np.diff cannot wrap around
        if codes.min() < 0 or codes.max() > _MAX_CODE_POINT or np.any(np.diff(codes) <= 0):
            raise ValueError("d['chars'] must hold strictly increasing code points in "
                             f"[0, {_MAX_CODE_POINT:#x}]")
        vocab = cls.__new__(cls)
        vocab._set_codes(codes)
        return vocab


# --------------------------------------------------------------------------- split and batches
class TextData:
    """A text encoded with a :class:`CharVocab` and split contiguously into train and validation ids.

    With n = the number of characters, ``train = ids[:int(n * train_fraction)]`` and
    ``val = ids[int(n * train_fraction):]`` — nanoGPT's ``data/shakespeare_char/prepare.py`` with
    its ``train_fraction = 0.9``. The split is by position, not shuffled, so the validation text is
    text the model has never seen a window of. Each split needs at least 2 ids (one window of length 1).

    Parameters
    ----------
    text : the whole text (str).
    train_fraction : in (0, 1); 0.9 by default.
    vocab : a :class:`CharVocab` to encode with (e.g. one loaded with a model); by default built
        from ``text``.
    """

    SPLITS = ("train", "val")

    def __init__(self, text: str, *, train_fraction: float = 0.9, vocab: CharVocab | None = None):
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("text is empty; there is nothing to split into train and val")
        check_float(train_fraction, "train_fraction", low=0, high=1, low_open=True, high_open=True)
        if vocab is None:
            vocab = CharVocab(text)
        elif not isinstance(vocab, CharVocab):
            raise TypeError(f"vocab must be a CharVocab or None, got {type(vocab).__name__}")
        n = len(text)
        n_train = int(n * train_fraction)
        if n_train < 2 or n - n_train < 2:
            raise ValueError(f"text of {n} characters is too short to split: train_fraction="
                             f"{train_fraction} gives {n_train} train and {n - n_train} val "
                             f"characters, and each split needs at least 2")
        ids = vocab.encode(text)
        self.vocab = vocab
        self.train = ids[:n_train]
        self.val = ids[n_train:]

    def __repr__(self) -> str:
        return f"TextData(vocab_size={self.vocab.size}, train={len(self.train)}, val={len(self.val)})"

    def split(self, name: str) -> np.ndarray:
        """The id array of split ``"train"`` or ``"val"``."""
        if name == "train":
            return self.train
        if name == "val":
            return self.val
        raise ValueError(f"split must be 'train' or 'val', got {name!r}")

    def get_batch(self, split: str, batch_size: int, block_size: int, rng):
        r"""``batch_size`` random windows of ``block_size`` ids from a split, and their next ids.

        As nanoGPT's ``train.py`` ``get_batch``: with :math:`d` the split's ids and :math:`n` its
        length, draw starts :math:`i_b` uniformly from :math:`\{0, \dots, n - T - 1\}`
        (``rng.integers(n - T, size=B)``, the numpy form of ``torch.randint(n - T, (B,))``) and

        .. math::

            x_{bt} = d_{i_b + t}, \qquad y_{bt} = d_{i_b + t + 1}, \qquad t = 0, \dots, T - 1,

        so ``y`` is ``x`` shifted left by one: the next-character targets at every position.

        Shapes: returns ``x, y`` int64 ``(B, T)`` with B = ``batch_size``, T = ``block_size``.
        ``rng`` is a ``numpy.random.Generator`` (or an int seed); the same state gives the same batch.
        Cost O(B·T).
        """
        data = self.split(split)
        check_positive(batch_size, "batch_size", integer=True)
        check_positive(block_size, "block_size", integer=True)
        if rng is None:
            raise TypeError("rng must be a numpy.random.Generator or an int seed, got None")
        gen = as_rng(rng)
        n = len(data)
        if block_size >= n:
            raise ValueError(f"block_size={block_size} must be smaller than the {split!r} split's "
                             f"length {n} (a window and its shifted target need {block_size + 1} ids)")
        starts = gen.integers(n - block_size, size=int(batch_size))
        idx = starts[:, None] + np.arange(int(block_size))
        return data[idx], data[idx + 1]


# --------------------------------------------------------------------------- loading
def _shakespeare_text() -> str:
    """The shipped Tiny Shakespeare text, decompressed and checked once per process."""
    if "shakespeare" not in _CACHE:
        import hashlib
        import lzma
        from importlib.resources import files

        resource = files(__package__).joinpath("files").joinpath(SHAKESPEARE_FILE)
        try:
            raw = lzma.decompress(resource.read_bytes())
        except (OSError, lzma.LZMAError) as e:
            raise ValueError(f"cannot read the embedded {SHAKESPEARE_FILE} ({e}); the installation "
                             f"is damaged") from None
        if len(raw) != _SHAKESPEARE_CHARS or hashlib.sha256(raw).hexdigest() != _SHAKESPEARE_SHA256:
            raise ValueError(f"the embedded {SHAKESPEARE_FILE} is not the char-rnn input.txt "
                             f"(wrong size or SHA-256); the installation is damaged")
        _CACHE["shakespeare"] = raw.decode("ascii")
    return _CACHE["shakespeare"]


def load_text(spec: str, *, train_fraction: float = 0.9) -> TextData:
    """A :class:`TextData` by name: ``"shakespeare"`` (shipped) or ``"text:PATH"`` (any UTF-8 file).

    ``"text:PATH"`` reads the file as UTF-8 (a leading byte-order mark dropped; a gzip-compressed
    file is decompressed). A missing file raises ``ValueError`` naming the path; bytes that are not
    UTF-8, an empty file or one too short to split raise ``ValueError`` naming the file.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str ('shakespeare' or 'text:PATH'), got {type(spec).__name__}")
    if spec == "shakespeare":
        return TextData(_shakespeare_text(), train_fraction=train_fraction)
    if spec.startswith("text:"):
        from ._io import check_path, read_text

        path = check_path(spec[len("text:"):], "text file")
        text = read_text(path)
        try:
            return TextData(text, train_fraction=train_fraction)
        except ValueError as e:
            raise ValueError(f"{path!r}: {e}") from None
    raise ValueError(f"unknown text spec {spec!r}; use 'shakespeare' or 'text:PATH'")


def load_shakespeare(*, train_fraction: float = 0.9) -> TextData:
    """Tiny Shakespeare (Karpathy 2015, char-rnn) from the package, split as nanoGPT splits it.

    1,115,394 ASCII characters, a vocabulary of 65; the default split gives 1,003,854 train and
    111,540 val ids (the counts printed by nanoGPT's ``data/shakespeare_char/prepare.py``).
    """
    return load_text("shakespeare", train_fraction=train_fraction)
