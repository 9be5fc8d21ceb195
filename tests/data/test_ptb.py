"""PTB loading: real counts, vocabulary order, data-dir resolution, checked downloads."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.error

import numpy as np
import pytest

from npgated import backend
from npgated.data import ptb
from npgated.data.ptb import (
    DataError,
    ids_to_words,
    load_data,
    resolve_data_dir,
    verify_checksums,
    vocab_checksum,
    words_to_ids,
)

TRAIN = "a b c\nb d a\n"
VALID = "d c\na\n"
TEST = "c c b\n"


def write_corpus(folder, train=TRAIN, valid=VALID, test=TEST):
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"ptb.{split}.txt").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """No NPGATED_DATA_DIR, and the cache inside tmp_path."""
    monkeypatch.delenv(ptb.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "npgated" / "ptb"


# ---------------------------------------------------------------------------------------
# The real files
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "split, n_tokens", [("train", 929_589), ("valid", 73_760), ("val", 73_760), ("test", 82_430)]
)
def test_real_counts(ptb_dir, split, n_tokens):
    corpus, word_to_id, id_to_word = load_data(split, ptb_dir)
    assert corpus.shape == (n_tokens,)
    assert corpus.dtype == np.int32
    assert len(word_to_id) == len(id_to_word) == 10_000
    assert corpus.min() >= 0 and corpus.max() < 10_000


def test_real_vocabulary_order(ptb_dir):
    corpus, word_to_id, id_to_word = load_data("train", ptb_dir)
    first_line = (ptb_dir / "ptb.train.txt").read_text().split("\n")[0].split()
    # first-appearance order: the first line holds 24 distinct words, then <eos>
    assert [word_to_id[w] for w in first_line] == list(range(24))
    assert word_to_id["<eos>"] == 24 and id_to_word[0] == "aer"
    assert ids_to_words(corpus[:25], id_to_word) == first_line + ["<eos>"]
    assert all(id_to_word[word_to_id[w]] == w for w in word_to_id)
    # valid/test are encoded with the train vocabulary
    _, valid_vocab, _ = load_data("valid", ptb_dir)
    assert valid_vocab == word_to_id


def test_real_checksums(ptb_dir):
    assert verify_checksums(ptb_dir) == ptb.PTB_MD5
    corpus, _, _ = load_data("test", ptb_dir, verify=True)
    assert len(corpus) == 82_430


def test_env_var_is_used(ptb_dir, monkeypatch):
    monkeypatch.setenv(ptb.ENV_VAR, str(ptb_dir))
    assert resolve_data_dir() == ptb_dir.resolve()


# ---------------------------------------------------------------------------------------
# Parsing conventions on a synthetic corpus
# ---------------------------------------------------------------------------------------
def test_synthetic_ids_and_eos(tmp_path):
    folder = write_corpus(tmp_path / "ptb")
    corpus, word_to_id, id_to_word = load_data("train", folder)
    assert word_to_id == {"a": 0, "b": 1, "c": 2, "<eos>": 3, "d": 4}
    np.testing.assert_array_equal(corpus, [0, 1, 2, 3, 1, 4, 0, 3])
    valid, vocab_v, _ = load_data("valid", folder)
    assert vocab_v == word_to_id
    np.testing.assert_array_equal(valid, [4, 2, 3, 0, 3])
    assert id_to_word == {i: w for w, i in word_to_id.items()}


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_windows_and_old_mac_newlines_end_lines(tmp_path, newline):
    lf = load_data("valid", write_corpus(tmp_path / "lf"), cache=False)
    other = write_corpus(
        tmp_path / "other", *(t.replace("\n", newline) for t in (TRAIN, VALID, TEST))
    )
    assert b"\r" in (other / "ptb.valid.txt").read_bytes()
    for cache in (False, True):  # the text as parsed, and as cached
        corpus, word_to_id, _ = load_data("valid", other, cache=cache)
        np.testing.assert_array_equal(corpus, lf[0])
        assert word_to_id == lf[1]


def test_results_are_fresh_copies(tmp_path):
    folder = write_corpus(tmp_path / "ptb")
    corpus, word_to_id, _ = load_data("train", folder)
    corpus[:] = 99
    word_to_id["zzz"] = 123
    again, vocab, _ = load_data("train", folder)
    assert again[0] == 0 and "zzz" not in vocab


def test_changed_file_is_reparsed(tmp_path):
    folder = write_corpus(tmp_path / "ptb")
    assert len(load_data("test", folder)[0]) == 4
    (folder / "ptb.test.txt").write_text("a b c d a\n")
    assert len(load_data("test", folder)[0]) == 6


def test_word_missing_from_train_vocab(tmp_path):
    folder = write_corpus(tmp_path / "ptb", valid="a zebra\n")
    with pytest.raises(DataError, match="zebra"):
        load_data("valid", folder)


def test_unknown_split(tmp_path):
    folder = write_corpus(tmp_path / "ptb")
    with pytest.raises(ValueError, match="valid splits are"):
        load_data("dev", folder)


def test_given_dir_missing_file(tmp_path):
    folder = write_corpus(tmp_path / "ptb")
    os.remove(folder / "ptb.valid.txt")
    with pytest.raises(FileNotFoundError, match="NPGATED_DATA_DIR") as info:
        load_data("train", folder)
    assert "ptb.valid.txt" in str(info.value)


def test_env_dir_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv(ptb.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"\$NPGATED_DATA_DIR"):
        load_data("train")


def test_env_dir_synthetic(tmp_path, monkeypatch):
    folder = write_corpus(tmp_path / "ptb")
    monkeypatch.setenv(ptb.ENV_VAR, str(folder))
    assert len(load_data("train")[0]) == 8


def test_verify_mismatch_names_file(tmp_path):
    folder = write_corpus(tmp_path / "ptb")
    with pytest.raises(DataError, match="ptb.train.txt.*expected"):
        verify_checksums(folder)
    with pytest.raises(DataError, match="NPGATED_DATA_DIR"):
        load_data("train", folder, verify=True)


# ---------------------------------------------------------------------------------------
# The download cache (no network: urlopen serves local bytes)
# ---------------------------------------------------------------------------------------
def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert ptb.default_cache_dir() == tmp_path / "x" / "npgated" / "ptb"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ptb.default_cache_dir() == tmp_path / "home" / ".cache" / "npgated" / "ptb"


def _serve(monkeypatch, payloads, target="seam"):
    """Make downloads return ``payloads[split]``; record the URLs asked for."""
    asked = []

    def fake_urlopen(url, timeout=None):
        asked.append(url)
        split = url.rsplit("ptb.", 1)[1].split(".")[0]
        payload = payloads[split]
        if isinstance(payload, Exception):
            raise payload
        return io.BytesIO(payload)

    if target == "seam":
        monkeypatch.setattr(ptb, "_urlopen", fake_urlopen)
    else:  # the real seam calls urllib.request.urlopen
        monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    return asked


def _good_payloads(monkeypatch):
    texts = {"train": TRAIN, "valid": VALID, "test": TEST}
    payloads = {s: t.encode() for s, t in texts.items()}
    for s, data in payloads.items():
        monkeypatch.setitem(ptb.PTB_MD5, s, hashlib.md5(data).hexdigest())
    return payloads


@pytest.mark.parametrize("target", ["seam", "urllib"])
def test_download_fills_cache(no_env, monkeypatch, target):
    asked = _serve(monkeypatch, _good_payloads(monkeypatch), target)
    corpus, word_to_id, _ = load_data("train")
    assert len(corpus) == 8 and len(word_to_id) == 5
    assert sorted(os.listdir(no_env)) == ["ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]
    assert asked == [ptb.PTB_URL.format(split=s) for s in ("train", "valid", "test")]
    assert asked[0] == "https://raw.githubusercontent.com/tomsercu/lstm/master/data/ptb.train.txt"
    load_data("valid")  # second use: nothing downloaded again
    assert len(asked) == 3


def test_download_only_missing_files(no_env, monkeypatch):
    payloads = _good_payloads(monkeypatch)
    write_corpus(no_env)
    os.remove(no_env / "ptb.test.txt")
    asked = _serve(monkeypatch, payloads)
    load_data("test")
    assert asked == [ptb.PTB_URL.format(split="test")]


def test_download_bad_checksum_leaves_nothing(no_env, monkeypatch):
    payloads = _good_payloads(monkeypatch)
    payloads["valid"] = b"tampered\n"
    _serve(monkeypatch, payloads)
    with pytest.raises(DataError, match="checksum mismatch.*NPGATED_DATA_DIR") as info:
        load_data("train")
    assert "ptb.valid.txt" in str(info.value)
    # train was good and kept; the bad file and every temporary file are gone
    assert sorted(os.listdir(no_env)) == ["ptb.train.txt"]


def test_real_md5s_reject_wrong_bytes(no_env, monkeypatch):
    _serve(monkeypatch, {s: b"not ptb\n" for s in ptb.SPLITS})
    with pytest.raises(DataError, match="f26c4b92c5fdc7b3f8c7cdcb991d8420"):
        load_data("train")
    assert os.listdir(no_env) == []


def test_offline_is_a_data_error(no_env, monkeypatch):
    _serve(monkeypatch, {s: urllib.error.URLError("no network") for s in ptb.SPLITS})
    with pytest.raises(DataError, match="could not download.*NPGATED_DATA_DIR") as info:
        load_data("train")
    for name in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"):
        assert name in str(info.value)
    assert os.listdir(no_env) == []


def test_no_download_when_disabled(no_env):
    with pytest.raises(DataError, match="download=False"):
        resolve_data_dir(download=False)


def test_download_real_files(ptb_dir, tmp_path, monkeypatch):
    _serve(monkeypatch, {s: (ptb_dir / f"ptb.{s}.txt").read_bytes() for s in ptb.SPLITS})
    dest = ptb.download_ptb(tmp_path / "cache")
    assert verify_checksums(dest) == ptb.PTB_MD5


# ---------------------------------------------------------------------------------------
# Words <-> ids, vocabulary checksum
# ---------------------------------------------------------------------------------------
def test_vocab_checksum():
    word_to_id = {"b": 1, "a": 0, "<eos>": 2}
    expected = hashlib.sha256(b"a\nb\n<eos>").hexdigest()
    assert vocab_checksum(word_to_id) == expected
    assert vocab_checksum({"a": 1, "b": 0, "<eos>": 2}) != expected
    with pytest.raises(ValueError, match="0 .. V-1"):
        vocab_checksum({"a": 0, "b": 2})


def test_words_to_ids_round_trip():
    word_to_id = {"a": 0, "<unk>": 1, "b": 2}
    id_to_word = {i: w for w, i in word_to_id.items()}
    ids = words_to_ids("b a <unk>", word_to_id)
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [2, 0, 1])
    np.testing.assert_array_equal(words_to_ids(["a", "b"], word_to_id), [0, 2])
    assert ids_to_words(ids, id_to_word) == ["b", "a", "<unk>"]
    assert ids_to_words([0, 2], ["a", "<unk>", "b"]) == ["a", "b"]


def test_words_to_ids_unknown_word():
    with pytest.raises(ValueError, match="'zebra' at position 1.*<unk>"):
        words_to_ids(["a", "zebra"], {"a": 0, "<unk>": 1})


def test_ids_to_words_unknown_id():
    with pytest.raises(ValueError, match="id 7 at position 0"):
        ids_to_words([7], {0: "a"})
    with pytest.raises(ValueError, match="id -1"):
        ids_to_words([-1], ["a"])


def test_ids_to_words_device_array(xp_name, dev):
    ids = dev(np.array([[1, 0]], dtype=np.int32))
    assert backend.get_array_module(ids) is not np or xp_name == "numpy"
    assert ids_to_words(ids, {0: "a", 1: "b"}) == ["b", "a"]
