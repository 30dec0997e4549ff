"""Character vocabulary, nanoGPT's split and windows, the shipped Tiny Shakespeare, text files."""
import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nograd.data import CharVocab, TextData, load_shakespeare, load_text
from nograd.data import text as text_module

# ------------------------------------------------------------------------------------------
# vocabulary
# ------------------------------------------------------------------------------------------

# any code point, lone surrogates included (st.text() alone leaves them out)
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, codec=None, categories=None)


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=60) | st.text(ANY_CHAR, min_size=1, max_size=60))
def test_round_trip_on_arbitrary_unicode(s):
    vocab = CharVocab(s)
    ids = vocab.encode(s)
    assert ids.dtype == np.int64 and ids.shape == (len(s),)
    assert vocab.decode(ids) == s
    assert vocab.decode(ids.tolist()) == s
    # nanoGPT's prepare.py: chars = sorted(set(data)), stoi = {ch: i}, encode = [stoi[c] for c in s]
    chars = sorted(set(s))
    assert vocab.chars == "".join(chars) and vocab.size == len(chars) == len(vocab)
    stoi = {ch: i for i, ch in enumerate(chars)}
    assert vocab.stoi == stoi and vocab.itos == {i: ch for ch, i in stoi.items()}
    assert ids.tolist() == [stoi[c] for c in s]
    assert CharVocab.from_dict(vocab.to_dict()) == vocab


def test_astral_characters_and_surrogates():
    s = "a\U0001F600b\ud800é\U0010FFFF"
    vocab = CharVocab(s)
    assert vocab.size == 6 and vocab.decode(vocab.encode(s)) == s
    assert vocab.encode("\U0010FFFF").tolist() == [5] and vocab.encode("").shape == (0,)
    assert vocab.decode([]) == ""


def test_vocab_saved_inside_an_npz_without_pickle(tmp_path):
    vocab = CharVocab("to be, or not to be — ¿qué? 日本")
    stored = vocab.to_dict()
    assert stored["chars"].dtype == np.uint32
    path = tmp_path / "model.npz"
    np.savez(path, weight=np.zeros(3), **stored)
    with np.load(path, allow_pickle=False) as z:
        back = CharVocab.from_dict(z)
    assert back == vocab and back.stoi == vocab.stoi
    assert back != CharVocab("to be")


@pytest.mark.parametrize("d, exc, match", [
    ([1, 2], TypeError, "mapping"),
    ({}, ValueError, "no key 'chars'"),
    ({"chars": np.array([], np.uint32)}, ValueError, "non-empty"),
    ({"chars": np.array([1.0, 2.0])}, ValueError, "integer"),
    ({"chars": np.array([[97, 98]])}, ValueError, "1-D"),
    ({"chars": np.array([98, 97], np.uint32)}, ValueError, "increasing"),
    ({"chars": np.array([97, 97])}, ValueError, "increasing"),
    ({"chars": np.array([-1, 97])}, ValueError, "code points"),
    ({"chars": np.array([97, 0x110000])}, ValueError, "code points"),
])
def test_from_dict_rejects_bad_input(d, exc, match):
    with pytest.raises(exc, match=match):
        CharVocab.from_dict(d)


def test_vocab_errors():
    vocab = CharVocab("abc")
    with pytest.raises(ValueError, match=r"'z' \(U\+007A\) at position 2"):
        vocab.encode("abz")
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 3\).*max 3"):
        vocab.decode(np.array([0, 3]))
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 3\).*min -1"):
        vocab.decode([-1, 0])
    with pytest.raises(TypeError, match="ids must be integer"):
        vocab.decode(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="ids must be 1-D"):
        vocab.decode(np.zeros((2, 2), np.int64))
    with pytest.raises(TypeError, match="text must be a str"):
        vocab.encode(b"abc")
    with pytest.raises(ValueError, match="text is empty"):
        CharVocab("")
    with pytest.raises(TypeError, match="text must be a str"):
        CharVocab(["a", "b"])


# ------------------------------------------------------------------------------------------
# the split and the windows, on a text whose ids are their own positions
# ------------------------------------------------------------------------------------------

# 200 distinct characters in increasing code-point order: id k sits at position k
DISTINCT = "".join(chr(0x100 + k) for k in range(200))


def test_split_is_contiguous_ninety_ten():
    data = TextData(DISTINCT)
    assert np.array_equal(data.train, np.arange(180)) and np.array_equal(data.val, np.arange(180, 200))
    assert data.train.dtype == data.val.dtype == np.int64
    other = TextData(DISTINCT, train_fraction=0.75)
    assert len(other.train) == 150 and len(other.val) == 50
    # nanoGPT: n = len(data); train = data[:int(n*0.9)]
    for n in (11, 97, 1001):
        data = TextData("ab" * (n // 2) + "c" * (n % 2))
        assert len(data.train) == int(n * 0.9) and len(data.val) == n - int(n * 0.9)


@pytest.mark.parametrize("split, lo, n", [("train", 0, 180), ("val", 180, 20)])
def test_windows_come_from_the_split_and_cover_every_start(split, lo, n):
    data, T = TextData(DISTINCT), 4
    x, y = data.get_batch(split, 3000, T, np.random.default_rng(1))
    assert x.shape == y.shape == (3000, T) and x.dtype == y.dtype == np.int64
    starts = x[:, 0]
    # each row is a run of consecutive positions of the split, and y is x shifted by one
    assert np.array_equal(x, starts[:, None] + np.arange(T))
    assert np.array_equal(y, x + 1)
    # every start 0 .. n-T-1 of the split is drawn (nanoGPT: randint(len(data) - block_size))
    assert set(starts.tolist()) == set(range(lo, lo + n - T))


def test_longest_window_and_targets_of_real_text():
    data = TextData(DISTINCT)
    x, y = data.get_batch("val", 2, 19, 0)          # 20 val ids: only start 0 fits
    assert np.array_equal(x, np.tile(np.arange(180, 199), (2, 1)))
    assert np.array_equal(y, np.tile(np.arange(181, 200), (2, 1)))
    shakes = load_shakespeare()
    x, y = shakes.get_batch("train", 8, 32, np.random.default_rng(5))
    assert np.array_equal(x[:, 1:], y[:, :-1])
    line = shakes.vocab.decode(x[0]) + shakes.vocab.decode(y[0, -1:])
    assert shakes.vocab.decode(y[0]) == line[1:]


def test_same_seed_same_batch():
    data = TextData(DISTINCT)
    a = data.get_batch("train", 16, 8, np.random.default_rng(3))
    b = data.get_batch("train", 16, 8, np.random.default_rng(3))
    c = data.get_batch("train", 16, 8, np.random.default_rng(4))
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert np.array_equal(data.get_batch("train", 16, 8, 3)[0], a[0])   # an int seed works too


@pytest.mark.parametrize("args, exc, match", [
    (("test", 2, 4, 0), ValueError, "split must be 'train' or 'val'"),
    (("train", 0, 4, 0), ValueError, "batch_size must be positive"),
    (("train", -3, 4, 0), ValueError, "batch_size"),
    (("train", 2.0, 4, 0), TypeError, "batch_size must be an int"),
    (("train", 2, 0, 0), ValueError, "block_size must be positive"),
    (("train", 2, 180, 0), ValueError, r"block_size=180 must be smaller than the 'train' split's length 180"),
    (("val", 2, 20, 0), ValueError, "block_size=20 must be smaller"),
    (("train", 2, 4, None), TypeError, "rng"),
    (("train", 2, 4, "seed"), TypeError, "rng"),
])
def test_get_batch_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        TextData(DISTINCT).get_batch(*args)


def test_text_data_errors():
    with pytest.raises(ValueError, match="too short to split.*9 train and 1 val"):
        TextData("abcdefghij")
    with pytest.raises(ValueError, match="text is empty"):
        TextData("")
    with pytest.raises(TypeError, match="text must be a str"):
        TextData(b"abc")
    for frac in (0.0, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="train_fraction"):
            TextData(DISTINCT, train_fraction=frac)
    with pytest.raises(TypeError, match="train_fraction"):
        TextData(DISTINCT, train_fraction="0.9")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        TextData(DISTINCT, vocab=CharVocab(DISTINCT[:100]))
    with pytest.raises(TypeError, match="vocab must be a CharVocab"):
        TextData(DISTINCT, vocab="abc")
    shared = CharVocab(DISTINCT + "xyz")
    assert TextData(DISTINCT, vocab=shared).vocab is shared


# ------------------------------------------------------------------------------------------
# Tiny Shakespeare shipped in the package, and text:PATH
# ------------------------------------------------------------------------------------------

def test_shipped_shakespeare_has_nanogpt_numbers():
    data = load_shakespeare()
    # nanoGPT data/shakespeare_char/prepare.py prints: vocab size 65, 1,003,854 / 111,540 tokens
    assert data.vocab.size == 65
    assert data.vocab.chars == "\n !$&',-.3:;?" + "".join(map(chr, range(65, 91))) + \
        "".join(map(chr, range(97, 123)))
    assert (len(data.train), len(data.val)) == (1_003_854, 111_540)
    assert data.vocab.decode(data.train[:14]) == "First Citizen:"
    assert data.vocab.decode(data.val[-12:]) == "Whiles thou art waking.\n"[-12:]
    same = load_text("shakespeare")
    assert np.array_equal(same.val, data.val) and same.vocab == data.vocab


def test_damaged_shipped_file_is_reported(monkeypatch):
    monkeypatch.setattr(text_module, "_CACHE", {})
    monkeypatch.setattr(text_module, "_SHAKESPEARE_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="installation is damaged"):
        load_shakespeare()


def test_text_file_spec(tmp_path):
    body = "Ça va? Très bien — 日本語.\n" * 5
    path = tmp_path / "corpus.txt"
    path.write_text(body, encoding="utf-8")
    data = load_text(f"text:{path}")
    assert data.vocab == CharVocab(body)
    n = len(body)
    assert len(data.train) == int(n * 0.9) and len(data.val) == n - int(n * 0.9)
    assert data.vocab.decode(np.concatenate([data.train, data.val])) == body
    assert len(load_text(f"text:{path}", train_fraction=0.5).train) == n // 2
    zipped = tmp_path / "corpus.txt.gz"
    zipped.write_bytes(gzip.compress(body.encode("utf-8")))
    assert np.array_equal(load_text(f"text:{zipped}").train, data.train)


def test_text_file_errors(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(ValueError, match=f"text file '{missing}' does not exist"):
        load_text(f"text:{missing}")
    with pytest.raises(ValueError, match="is a folder"):
        load_text(f"text:{tmp_path}")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café crème brûlée, à la carte\n".encode("latin-1"))
    with pytest.raises(ValueError, match=f"'{latin1}' is not UTF-8"):
        load_text(f"text:{latin1}")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=f"'{empty}': text is empty"):
        load_text(f"text:{empty}")
    short = tmp_path / "short.txt"
    short.write_text("hello", encoding="utf-8")
    with pytest.raises(ValueError, match=f"'{short}': text of 5 characters is too short"):
        load_text(f"text:{short}")
    corrupt = tmp_path / "corrupt.txt.gz"
    corrupt.write_bytes(gzip.compress(b"some text " * 50)[:-9])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_text(f"text:{corrupt}")
    with pytest.raises(ValueError, match="unknown text spec 'shakespear'"):
        load_text("shakespear")
    with pytest.raises(ValueError, match="empty string"):
        load_text("text:")
    with pytest.raises(TypeError, match="spec must be a str"):
        load_text(tmp_path)


def test_batches_feed_the_token_loss_and_accuracy():
    from nograd.core.losses import softmax_cross_entropy
    from nograd.metrics import accuracy

    data, rng = load_shakespeare(), np.random.default_rng(2)
    x, y = data.get_batch("val", 4, 16, rng)
    V = data.vocab.size
    logits = rng.normal(size=(4, 16, V))
    hits = [[logits[b, t].argmax() == y[b, t] for t in range(16)] for b in range(4)]
    assert accuracy(y, logits) == pytest.approx(np.mean(hits), abs=1e-15)
    assert accuracy(np.eye(V)[y], logits) == accuracy(y, logits)        # one-hot targets
    oracle = 20.0 * np.eye(V)[y]
    assert accuracy(y, oracle) == 1.0 and accuracy(x, oracle) < 0.5
    value, grad = softmax_cross_entropy(oracle, y)
    assert value < 1e-6 and grad.shape == (4, 16, V)
    with pytest.raises(ValueError, match="y_true"):
        accuracy(y[:, :-1], logits)
