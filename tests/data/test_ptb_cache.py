"""The PTB id cache: written on the first load, read on the next, checked, never trusted blindly.

Every test points ``NPGATED_PTB_CACHE`` at a folder in ``tmp_path`` and clears the in-process
memo (``ptb._load``) where it plays "a new process", so the disk cache is what is tested.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile

import numpy as np
import pytest

from npgated.data import ptb
from npgated.data.ptb import load_data, vocab_checksum

TRAIN = "a b c\nb d a\n"
VALID = "d c\na\n"
TEST = "c c b\n"


def write_corpus(folder, train=TRAIN, valid=VALID, test=TEST):
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"ptb.{split}.txt").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """The id cache folder (in tmp_path, not yet created); a fresh memo and log-once set."""
    folder = tmp_path / "ids"
    monkeypatch.setenv(ptb.CACHE_ENV_VAR, str(folder))
    monkeypatch.setattr(ptb, "_unwritable_reported", set())
    ptb._load.cache_clear()
    yield folder
    ptb._load.cache_clear()


def new_process():
    """Forget what this process parsed: the next load must come from disk or the text."""
    ptb._load.cache_clear()


def entries(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def no_parsing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the text was parsed although the cache holds it")

    monkeypatch.setattr(ptb, "_parse_train", refuse)
    monkeypatch.setattr(ptb, "_parse_split", refuse)


def parsed(split, folder):
    """What parsing gives, bypassing the cache."""
    new_process()
    return load_data(split, folder, cache=False)


def assert_same(got, expected):
    corpus, word_to_id, id_to_word = got
    assert corpus.dtype == np.int32 and corpus.flags.writeable
    np.testing.assert_array_equal(corpus, expected[0])
    assert list(word_to_id.items()) == list(expected[1].items())  # ids and order
    assert id_to_word == expected[2]
    assert vocab_checksum(word_to_id) == vocab_checksum(expected[1])


def test_default_and_configured_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(ptb.CACHE_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert ptb.id_cache_dir() == tmp_path / "x" / "npgated" / "ptb-ids"
    assert ptb.id_cache_dir().parent == ptb.default_cache_dir().parent
    monkeypatch.setenv(ptb.CACHE_ENV_VAR, str(tmp_path / "elsewhere"))
    assert ptb.id_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.setenv(ptb.CACHE_ENV_VAR, "off")
    assert ptb.id_cache_dir() is None


def test_written_on_first_load_then_read(cache, tmp_path, monkeypatch):
    folder = write_corpus(tmp_path / "ptb")
    expected = {s: parsed(s, folder) for s in ptb.SPLITS}
    assert entries(cache) == []  # cache=False saved nothing
    new_process()
    first = {s: load_data(s, folder) for s in ptb.SPLITS}
    names = entries(cache)
    assert len(names) == 3 and {n.split(".")[1] for n in names} == set(ptb.SPLITS)
    assert all(n.endswith(".ids.npz") for n in names)
    new_process()
    no_parsing(monkeypatch)
    for split in ptb.SPLITS:
        assert_same(first[split], expected[split])
        assert_same(load_data(split, folder), expected[split])
    assert entries(cache) == names


def test_entry_holds_checksummed_arrays(cache, tmp_path):
    folder = write_corpus(tmp_path / "ptb")
    corpus, word_to_id, _ = load_data("valid", folder)
    (path,) = cache.iterdir()
    with np.load(path, allow_pickle=False) as data:
        ids, vocab, meta = data["ids"], data["vocab"], json.loads(data["meta"].tobytes())
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, corpus)
    assert vocab.tobytes().decode().split("\n") == ["a", "b", "c", "<eos>", "d"]
    assert meta["vocab_checksum"] == vocab_checksum(word_to_id)
    assert meta["split"] == "valid" and meta["n_tokens"] == len(corpus) == 5


def test_split_reuses_cached_train_vocabulary(cache, tmp_path, monkeypatch):
    folder = write_corpus(tmp_path / "ptb")
    expected = parsed("test", folder)
    load_data("train", folder)
    new_process()

    def refuse(*args):
        raise AssertionError("train was parsed although its entry is cached")

    monkeypatch.setattr(ptb, "_parse_train", refuse)
    assert_same(load_data("test", folder), expected)
    assert len(entries(cache)) == 2


def test_real_ptb_cached_equals_parsed(ptb_dir, cache):
    expected = parsed("test", ptb_dir)
    new_process()
    first = load_data("test", ptb_dir)
    new_process()
    again = load_data("test", ptb_dir)
    for got in (first, again):
        assert_same(got, expected)
    assert len(again[0]) == 82_430 and len(again[1]) == 10_000
    assert 0 <= again[0].min() and again[0].max() < 10_000


def test_changed_text_is_parsed_again(cache, tmp_path):
    folder = write_corpus(tmp_path / "ptb")
    test_file = folder / "ptb.test.txt"
    np.testing.assert_array_equal(load_data("test", folder)[0], [2, 2, 1, 3])
    # the same size and modification time, other words: only the content tells them apart
    stat = test_file.stat()
    test_file.write_text("a d b\n")
    os.utime(test_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert test_file.stat().st_size == stat.st_size
    new_process()
    np.testing.assert_array_equal(load_data("test", folder)[0], [0, 4, 1, 3])
    # another train text is another vocabulary: the test ids change with it
    (folder / "ptb.train.txt").write_text("d c b a\n")
    new_process()
    corpus, word_to_id, _ = load_data("test", folder)
    assert word_to_id == {"d": 0, "c": 1, "b": 2, "a": 3, "<eos>": 4}
    np.testing.assert_array_equal(corpus, [3, 0, 2, 4])
    assert len(entries(cache)) == 3


def _rewrite(path, drop=(), **changes):
    """Save the entry again, a valid zip, with arrays replaced or dropped (checksums kept)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k not in drop}
    for key, change in changes.items():
        arrays[key] = change(arrays[key])
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _meta(**fields):
    def change(meta):
        content = json.loads(meta.tobytes())
        content.update(fields)
        return np.frombuffer(json.dumps(content).encode(), dtype=np.uint8)

    return change


def _flip_first(a):
    a = a.copy()
    a[0] = a[0] + 1
    return a


CORRUPTIONS = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(b"not an npz file at all\n" * 10),
    "flipped byte": lambda p: p.write_bytes(
        (lambda b: b[:200] + bytes([b[200] ^ 0xFF]) + b[201:])(p.read_bytes())
    ),
    "ids changed": lambda p: _rewrite(p, ids=_flip_first),
    "ids shortened": lambda p: _rewrite(p, ids=lambda a: a[:-1]),
    "ids as int64": lambda p: _rewrite(p, ids=lambda a: a.astype(np.int64)),
    "vocab changed": lambda p: _rewrite(p, vocab=_flip_first),
    "no vocab": lambda p: _rewrite(p, drop=("vocab",)),
    "other format": lambda p: _rewrite(p, meta=_meta(format=999)),
    "other split": lambda p: _rewrite(p, meta=_meta(split="train")),
    "meta not json": lambda p: _rewrite(p, meta=lambda a: np.frombuffer(b"{", np.uint8)),
    "meta not an object": lambda p: _rewrite(p, meta=lambda a: np.frombuffer(b"[]", np.uint8)),
}


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupt_entry_is_reported_and_parsed_again(cache, tmp_path, caplog, monkeypatch, how):
    folder = write_corpus(tmp_path / "ptb")
    expected = parsed("valid", folder)
    new_process()
    load_data("valid", folder)
    (path,) = cache.iterdir()
    CORRUPTIONS[how](path)
    new_process()
    with caplog.at_level(logging.WARNING, logger="npgated.data.ptb"):
        got = load_data("valid", folder)
    assert_same(got, expected)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and "parsing" in warnings[0]
    # the entry was written again, whole: the next process reads it without a word
    caplog.clear()
    new_process()
    no_parsing(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="npgated.data.ptb"):
        assert_same(load_data("valid", folder), expected)
    assert caplog.records == []


def test_unwritable_cache_is_logged_once_and_parsed(monkeypatch, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the cache folder's parent should be\n")
    monkeypatch.setenv(ptb.CACHE_ENV_VAR, str(blocker / "ids"))  # mkdir fails, even as root
    monkeypatch.setattr(ptb, "_unwritable_reported", set())
    folder = write_corpus(tmp_path / "ptb")
    expected = {s: parsed(s, folder) for s in ptb.SPLITS}
    new_process()
    with caplog.at_level(logging.WARNING, logger="npgated.data.ptb"):
        for split in ptb.SPLITS:
            assert_same(load_data(split, folder), expected[split])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "cannot write" in warnings[0] and ptb.CACHE_ENV_VAR in warnings[0]
    assert sorted(os.listdir(tmp_path)) == ["a-file", "ptb"]
    new_process()


def test_explicit_data_dir_is_never_written(cache, tmp_path):
    folder = write_corpus(tmp_path / "ptb")
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    for _ in range(2):
        for split in ptb.SPLITS:
            load_data(split, folder)
        new_process()
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()} == before
    assert len(entries(cache)) == 3


def test_cache_off_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    folder = write_corpus(tmp_path / "ptb")
    monkeypatch.setenv(ptb.CACHE_ENV_VAR, "off")
    new_process()
    np.testing.assert_array_equal(load_data("valid", folder)[0], [4, 2, 3, 0, 3])
    monkeypatch.delenv(ptb.CACHE_ENV_VAR)
    new_process()
    np.testing.assert_array_equal(load_data("valid", folder, cache=False)[0], [4, 2, 3, 0, 3])
    assert not (tmp_path / "xdg").exists()
    new_process()


def test_least_recently_used_entries_are_removed(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(ptb, "_CACHE_MAX_ENTRIES", 2)
    cache.mkdir()
    (cache / "model.npz").write_bytes(b"not ours")  # a file of another name is never touched
    folders = [write_corpus(tmp_path / f"ptb{k}", test=f"{'a b ' * (k + 1)}\n") for k in range(3)]

    def load(k):
        """The entry names that loading corpus k added to the cache."""
        before = set(entries(cache))
        new_process()
        load_data("test", folders[k])
        return set(entries(cache)) - before

    (first,), (second,) = load(0), load(1)
    past = 1_000_000_000  # make the order unambiguous on coarse file clocks
    os.utime(cache / first, ns=(past, past))
    os.utime(cache / second, ns=(2 * past, 2 * past))
    assert load(0) == set()  # a hit, which marks `first` as recently used again
    (third,) = load(2)
    assert entries(cache) == sorted([first, third, "model.npz"])


def test_entry_files_are_npz_without_pickles(cache, tmp_path):
    folder = write_corpus(tmp_path / "ptb")
    load_data("train", folder)
    (path,) = cache.iterdir()
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["ids.npy", "meta.npy", "vocab.npy"]
    with np.load(path, allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)
