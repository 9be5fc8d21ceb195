"""npgated.data.corpus: any text as words or characters, streamed, cached, memory-mapped.

Every test points ``NPGATED_CORPUS_CACHE`` at a folder in ``tmp_path``. The expected ids come
from a reference written here in plain Python (the whole text read at once), never from the
module itself.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from npgated.data import corpus, ptb
from npgated.data.batching import TBPTTBatcher, eval_batches
from npgated.data.corpus import EOS, UNK, DataError, Vocabulary, load_corpus, load_text

JAPANESE = (
    "吾輩は猫である。名前はまだ無い。\n"
    "どこで生れたかとんと見当がつかぬ。\r\n"
    "何でも薄暗いじめじめした所でニャーニャー泣いていた事だけは記憶している。\n"
)


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """The corpus id cache in tmp_path (not yet created); a fresh log-once set."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(corpus.CACHE_ENV_VAR, str(folder))
    monkeypatch.setattr(corpus, "_unwritable_reported", set())
    return folder


def files_in(folder):
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def write_folder(folder, train, valid, test, names="{}.txt", encoding="utf-8"):
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        (folder / names.format(split)).write_bytes(text.encode(encoding))
    return folder


# -- references: the whole text at once, in plain Python --------------------------------
def ref_words(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out = []
    for line in text.split("\n")[:-1]:
        out += line.split() + [EOS]
    return out + text.split("\n")[-1].split()


def ref_word_vocab(words):
    tokens = list(dict.fromkeys(words))
    return tokens if UNK in tokens else tokens + [UNK]


def ref_chars(text):
    return list(text.replace("\r\n", "\n").replace("\r", "\n"))


def ref_ids(tokens, vocab_tokens):
    index = {t: i for i, t in enumerate(vocab_tokens)}
    return [index.get(t, index[UNK]) for t in tokens]


def story(n_lines=200, seed=0):
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "über", "naïve", "café"]
    return "".join(
        " ".join(rng.choice(words, size=rng.integers(1, 9))) + "\n" for _ in range(n_lines)
    )


# -- word level ---------------------------------------------------------------------------
def test_word_level_folder(cache, tmp_path, caplog):
    train, valid, test = "the cat sat\non the mat\n", "the dog sat\n", "a cat\n"
    folder = write_folder(tmp_path / "text", train, valid, test)
    with caplog.at_level(logging.INFO, logger="npgated"):
        c = load_corpus(folder, "word")
    tokens = ref_word_vocab(ref_words(train))
    assert list(c.vocab.tokens) == tokens == ["the", "cat", "sat", EOS, "on", "mat", UNK]
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        ids = c[split]
        assert isinstance(ids, np.memmap) and ids.dtype == np.uint16 and not ids.flags.writeable
        assert ids.tolist() == ref_ids(ref_words(text), tokens), split
    assert c.unknown == {"train": 0, "valid": 1, "test": 1}
    assert "valid: 1 of 4 words (25.00 %) not in the vocabulary" in caplog.text


def test_ptb_files_give_ptb_loader_ids_and_checksum(cache, synthetic_ptb):
    c = load_corpus(synthetic_ptb, "word")
    for split in ("train", "valid", "test"):
        ids, word_to_id, _ = ptb.load_data(split, synthetic_ptb, cache=False)
        np.testing.assert_array_equal(c[split], ids)
    assert dict(c.vocab) == {**word_to_id, UNK: len(word_to_id)}  # the synthetic text has none
    assert (
        ptb.vocab_checksum(word_to_id)
        == corpus.vocab_checksum(word_to_id)
        == Vocabulary(list(word_to_id)).checksum
    )


def test_real_ptb_is_ptbs_vocabulary(cache, ptb_dir):
    c = load_corpus(ptb_dir, "word", splits=["valid"])
    valid, word_to_id, _ = ptb.load_data("valid", ptb_dir)
    assert len(c.vocab) == 10000 and c.vocab.checksum == ptb.vocab_checksum(word_to_id)
    np.testing.assert_array_equal(c.valid, valid)
    assert c.unknown["valid"] == 0


def test_min_count_and_max_vocab(cache, tmp_path, caplog):
    train = "a a a b b c\nd d d d\n"  # counts a3 b2 c1 d4 <eos>2
    folder = write_folder(tmp_path / "t", train, "a\n", "e\n")
    c = load_corpus(folder, "word", min_count=2)
    assert list(c.vocab.tokens) == ["a", "b", EOS, "d", UNK]
    assert c.unknown["train"] == 1 and c.train.tolist()[5] == c.vocab.unk_id
    c = load_corpus(folder, "word", max_vocab=3)  # d (4), a (3), then <unk>
    assert list(c.vocab.tokens) == ["a", "d", UNK]
    assert c.unknown["train"] == 5  # b b c <eos> <eos>
    c = load_corpus(folder, "word", max_vocab=4)  # d, a, then b and <eos> tie (2): b first seen
    assert list(c.vocab.tokens) == ["a", "b", "d", UNK]
    literal = write_folder(tmp_path / "u", "x <unk> y y\n", "x\n", "y\n")
    c = load_corpus(literal, "word", max_vocab=2)  # a <unk> in the text is kept as itself
    assert list(c.vocab.tokens) == [UNK, "y"]


# -- character level -----------------------------------------------------------------------
def test_char_level(cache, tmp_path):
    train, valid, test = "ab\r\nba c\n", "abz\n", "c\r"
    folder = write_folder(tmp_path / "c", train, valid, test)
    c = load_corpus(folder, "char")
    assert list(c.vocab.tokens) == ["\n", " ", "a", "b", "c", UNK]  # code point order
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        assert c[split].tolist() == ref_ids(ref_chars(text), c.vocab.tokens), split
    assert c.unknown == {"train": 0, "valid": 1, "test": 0}
    assert c.vocab.decode(c.valid) == "ab\ufffd\n"


def test_japanese_characters_and_words(cache, tmp_path):
    lines = JAPANESE.splitlines(keepends=True)
    folder = write_folder(tmp_path / "ja", JAPANESE * 3, lines[0], "猫は犬である。\n")
    c = load_corpus(folder, "char")
    chars = ref_chars(JAPANESE * 3)
    assert list(c.vocab.tokens) == sorted(set(chars)) + [UNK]
    assert c.train.tolist() == ref_ids(chars, c.vocab.tokens)
    assert c.unknown["test"] == 1  # 犬 never appears in training
    assert c.vocab.decode(c.valid) == lines[0]
    # word level splits on any Unicode white space, the ideographic space U+3000 too
    spaced = write_folder(tmp_path / "w", "吾輩は\u3000猫\u3000である\n猫\n", "猫\n", "犬\n")
    w = load_corpus(spaced, "word")
    assert list(w.vocab.tokens) == ["吾輩は", "猫", "である", EOS, UNK]


def test_other_encodings_decode_to_the_same_ids(cache, tmp_path):
    utf8 = load_corpus(write_folder(tmp_path / "u", JAPANESE, JAPANESE, JAPANESE), "char")
    sjis = write_folder(tmp_path / "s", JAPANESE, JAPANESE, JAPANESE, encoding="shift_jis")
    with pytest.raises(DataError, match=r"not valid utf-8 at byte offset \d.*--encoding"):
        load_corpus(sjis, "char")
    c = load_corpus(sjis, "char", encoding="shift_jis")
    assert c.vocab == utf8.vocab and c.train.tolist() == utf8.train.tolist()
    c = load_corpus(
        write_folder(tmp_path / "16", JAPANESE, JAPANESE, JAPANESE, encoding="utf-16"),
        "char",
        encoding="utf-16",
    )
    assert c.train.tolist() == utf8.train.tolist()


def test_utf8_byte_order_mark_is_skipped(cache, tmp_path):
    folder = write_folder(tmp_path / "b", "\ufeffhi\n", "\ufeffhi\n", "hi\n")
    c = load_corpus(folder, "char")
    assert list(c.vocab.tokens) == ["\n", "h", "i", UNK] and c.valid.tolist() == [1, 2, 0]


# -- one file cut by fractions --------------------------------------------------------------
@pytest.mark.parametrize("level", ["word", "char"])
def test_single_file_cut_at_line_breaks(cache, tmp_path, level):
    text = story(300)
    path = tmp_path / "all.txt"
    path.write_text(text, encoding="utf-8")
    c = load_corpus(path, level, fractions="0.8,0.1,0.1")
    src = c.sources
    assert src["train"].start == 0 and src["train"].end == src["valid"].start
    assert src["valid"].end == src["test"].start and src["test"].end == path.stat().st_size
    raw = path.read_bytes()
    for split in ("valid", "test"):
        assert raw[src[split].start - 1 : src[split].start] == b"\n"  # whole lines
    assert abs(src["train"].end / len(raw) - 0.8) < 0.02
    whole, _, _ = load_text(path, c.vocab, cache=False)
    np.testing.assert_array_equal(np.concatenate([c.train, c.valid, c.test]), whole)
    tokens = ref_words(text) if level == "word" else ref_chars(text)
    assert whole.tolist() == ref_ids(tokens, c.vocab.tokens)


def test_fractions_must_be_three_shares_summing_to_one():
    assert corpus.parse_fractions("0.9,0.05,0.05") == (0.9, 0.05, 0.05)
    for bad, message in (
        ("0.9,0.05,0.1", "sums to 1.05, not 1"),
        ("0.9,0.1", "three numbers"),
        ("1,0,0", "must be > 0"),
        ("a,b,c", "three numbers"),
    ):
        with pytest.raises(ValueError, match=message):
            corpus.parse_fractions(bad)


# -- streaming: any chunk size gives the ids of the whole text ------------------------------
@pytest.mark.parametrize("level", ["word", "char"])
@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_chunks_give_the_ids_of_the_whole_text(tmp_path, monkeypatch, level, chunk_size):
    monkeypatch.setenv(corpus.CACHE_ENV_VAR, str(tmp_path / f"cache{chunk_size}"))
    # multi-byte characters, \r\n and \r across chunk ends, a long line without a newline
    text = JAPANESE + "a\r\nb\rc  über\r\n" + "x" * 40 + " " + "é" * 70 + "\n" + story(20)
    folder = write_folder(tmp_path / "t", text, text[:200], text[-150:] + " end")
    whole = load_corpus(folder, level, chunk_size=1 << 20, cache=False)
    tokens = ref_words(text) if level == "word" else ref_chars(text)
    assert whole.train.tolist() == ref_ids(tokens, whole.vocab.tokens)
    small = load_corpus(folder, level, chunk_size=chunk_size)  # through the cache's files
    assert small.vocab == whole.vocab
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(small[split], whole[split])


def test_white_space_tables_are_str_isspace():
    """The word finder's two lists of white space are exactly the characters str.split
    separates at (ASCII ones by byte, the others replaced by a space first)."""
    ascii_space = [c for c in range(256) if corpus._SPACE[c]]
    assert ascii_space == [c for c in range(128) if chr(c).isspace()]
    assert set(corpus._UNICODE_SPACES) == {chr(c) for c in range(128, 0x110000) if chr(c).isspace()}


def random_text(rng, n_tokens):
    """Words of 1 to 24 UTF-8 bytes (the 8/9/16/17-byte edges included), separated by every
    kind of white space, with literal <eos> and <unk>."""
    pieces = [
        "a",
        "ab",
        "abcdefgh",
        "abcdefghi",
        "abcdefghijklmnop",
        "abcdefghijklmnopq",
        "\u00e9",
        "\u00e9" * 7,
        "\u00e9" * 8,
        "\u732b",
        "\u732b" * 5,
        "\u732b" * 6,
        EOS,
        UNK,
        "x" * 24,
        "na\u00efve",
        "\U0001f600",
    ]
    gaps = [
        " ",
        " ",
        " ",
        "\n",
        "\n",
        "\t",
        "  ",
        "\x0b",
        "\x0c",
        "\x1c",
        "\x1f",
        "\xa0",
        "\u3000",
        "\u2028",
        "\x85",
        " \n ",
        "\n\n",
        "\r\n",
    ]
    out = []
    for _ in range(n_tokens):
        word = pieces[rng.integers(len(pieces))]
        if rng.random() < 0.3:  # more distinct words
            word += str(rng.integers(50))
        out.append(word + gaps[rng.integers(len(gaps))])
    return "".join(out)


@pytest.mark.parametrize("seed", range(4))
def test_word_finder_agrees_with_str_split(tmp_path, seed):
    rng = np.random.default_rng(seed)
    train, valid = random_text(rng, 3000), random_text(rng, 500)
    folder = write_folder(tmp_path / "t", train, valid, valid[:40])
    c = load_corpus(folder, "word", chunk_size=int(rng.integers(64, 4096)), cache=False)
    tokens = ref_words(train)
    assert list(c.vocab.tokens) == ref_word_vocab(tokens)  # first appearance, long words too
    assert c.train.tolist() == ref_ids(tokens, c.vocab.tokens)
    assert c.valid.tolist() == ref_ids(ref_words(valid), c.vocab.tokens)
    unseen = sum(w not in c.vocab for w in ref_words(valid))
    assert c.unknown["valid"] == unseen


def test_word_vocabulary_beyond_uint16_and_growing_counts(tmp_path):
    words = [f"w{i}" for i in range(70000)]
    folder = write_folder(tmp_path / "big", " ".join(words) + "\n", "w1 w2\n", "w3\n")
    c = load_corpus(folder, "word", chunk_size=4096, cache=False)
    assert len(c.vocab) == 70002 and c.train.dtype == np.uint32
    assert c.train[:3].tolist() == [0, 1, 2] and c.train[-1] == c.vocab[EOS]


# -- the cache --------------------------------------------------------------------------------
def test_second_load_reads_the_cache(cache, tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "t", story(50), story(5, 1), story(5, 2))
    first = load_corpus(folder, "word")
    assert len([n for n in files_in(cache) if n.endswith(".ids.npy")]) == 3

    def refuse(*args, **kwargs):
        raise AssertionError("tokenised although the cache holds the ids")

    monkeypatch.setattr(corpus, "_build_word", refuse)
    monkeypatch.setattr(corpus, "_encode_fixed", refuse)
    again = load_corpus(folder, "word")
    assert again.vocab == first.vocab and isinstance(again.train, np.memmap)
    np.testing.assert_array_equal(again.train, first.train)


def test_an_edited_text_is_tokenised_again(cache, tmp_path):
    folder = write_folder(tmp_path / "t", "a b\n", "a\n", "b\n")
    assert load_corpus(folder, "word").valid.tolist() == [0, 2]
    (folder / "valid.txt").write_text("b b\n")
    assert load_corpus(folder, "word").valid.tolist() == [1, 1, 2]


@pytest.mark.parametrize("damage", ["flip", "truncate", "json"])
def test_the_checksum_catches_a_damaged_entry(cache, tmp_path, caplog, damage):
    folder = write_folder(tmp_path / "t", story(40), story(5, 1), story(5, 2))
    good = np.array(load_corpus(folder, "char").valid)
    c = load_corpus(folder, "char")
    key = next(
        k
        for k in {p.name.split(".")[0] for p in cache.glob("*.ids.npy")}
        if np.load(cache / f"{k}.ids.npy").tolist() == good.tolist()
    )
    npy, meta = cache / f"{key}.ids.npy", cache / f"{key}.ids.json"
    del c
    if damage == "flip":
        raw = bytearray(npy.read_bytes())
        raw[-3] ^= 1
        npy.write_bytes(bytes(raw))
    elif damage == "truncate":
        npy.write_bytes(npy.read_bytes()[:-10])
    else:
        meta.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="npgated"):
        again = load_corpus(folder, "char")
    assert "ignoring the corpus cache entry" in caplog.text
    np.testing.assert_array_equal(again.valid, good)
    fixed = load_corpus(folder, "char")  # rewritten: read back without a warning
    np.testing.assert_array_equal(fixed.valid, good)


def test_cache_off_and_unwritable(monkeypatch, tmp_path, caplog):
    folder = write_folder(tmp_path / "t", "a b\n", "a\n", "b\n")
    monkeypatch.setenv(corpus.CACHE_ENV_VAR, "off")
    c = load_corpus(folder, "word")
    assert not isinstance(c.train, np.memmap) and c.train.tolist() == [0, 1, 2]
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(corpus.CACHE_ENV_VAR, str(blocker / "cache"))
    monkeypatch.setattr(corpus, "_unwritable_reported", set())
    with caplog.at_level(logging.WARNING, logger="npgated"):
        c = load_corpus(folder, "word")
    assert c.train.tolist() == [0, 1, 2] and "cannot write the corpus cache" in caplog.text


# -- memory maps: batching reads windows, never the whole array -------------------------------
def test_batching_on_a_memory_map_reads_windows_only(cache, tmp_path):
    folder = write_folder(tmp_path / "t", story(400), story(40, 1), story(40, 2))
    c = load_corpus(folder, "char")
    assert isinstance(c.train, np.memmap)
    batcher = TBPTTBatcher(c.train, 4, 10)
    assert np.shares_memory(batcher._xs, c.train) and np.shares_memory(batcher._ts, c.train)
    in_memory = TBPTTBatcher(np.array(c.train), 4, 10)
    for _ in range(5):
        (xs, ts), (xs2, ts2) = batcher.next_batch(), in_memory.next_batch()
        assert xs.shape == (4, 10) and type(xs) is np.ndarray
        np.testing.assert_array_equal(xs, xs2)
        np.testing.assert_array_equal(ts, ts2)
    windows = list(eval_batches(c.valid, 3, 7))
    assert sum(ts.size for _, ts in windows) == 3 * ((len(c.valid) - 1) // 3)


# -- bad input: one line, nothing written ------------------------------------------------------
BAD = {
    "empty": (b"", "is empty"),
    "nul": (b"abc\ndef\x00ghi\n" * 3, "NUL byte at byte offset 7"),
    "utf8": ("héllo\n".encode() + b"w\xffrld\n", r"not valid utf-8 at byte offset 8 .*--encoding"),
    "short": (
        b"a b c\n",
        "has 4 words, too short for one training batch of N x T = 2 x 5 "
        r"tokens \(it needs 11\)",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("layout", ["file", "folder"])
def test_bad_input_is_one_line_and_writes_nothing(cache, tmp_path, case, layout):
    raw, message = BAD[case]
    if layout == "file":
        path = tmp_path / "text.txt"
        path.write_bytes(raw)
    else:
        path = tmp_path / "folder"
        path.mkdir()
        (path / "train.txt").write_bytes(raw)
        (path / "valid.txt").write_text("a b c d e f\n" * 10)
        (path / "test.txt").write_text("a b c d e f\n" * 10)
    with pytest.raises(DataError, match=message) as info:
        load_corpus(path, "word", fractions="0.98,0.01,0.01", batch=(2, 5))
    assert "\n" not in str(info.value)
    assert files_in(cache) == []


def test_missing_split_file_and_too_short_valid(cache, tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "train.txt").write_text("a b c\n" * 20)
    with pytest.raises(FileNotFoundError, match="has train.txt but no valid.txt: add valid.txt"):
        load_corpus(folder, "word")
    (folder / "valid.txt").write_text("a\n")
    (folder / "test.txt").write_text("a b c\n")
    with pytest.raises(
        DataError,
        match=r"valid.txt has 2 words, too short for evaluation in "
        r"N = 4 streams \(it needs 5\)",
    ):
        load_corpus(folder, "word", batch=(4, 2))
    assert files_in(cache) == []
    with pytest.raises(FileNotFoundError, match="not found"):
        load_corpus(tmp_path / "nowhere", "word")


# -- the vocabulary -----------------------------------------------------------------------------
def test_vocabulary_round_trip_checksums_and_difference():
    words = Vocabulary(["a", "b", EOS, UNK])
    assert words.checksum == ptb.vocab_checksum({"a": 0, "b": 1, EOS: 2, UNK: 3})
    chars = Vocabulary(["\n", "a", UNK], "char")
    assert chars.checksum != Vocabulary(["\n", "a", UNK]).checksum  # the level counts
    again = Vocabulary.from_dict(chars.to_dict())
    assert again == chars and again.tokens == chars.tokens
    with pytest.raises(DataError, match="does not match its checksum"):
        Vocabulary.from_dict({**chars.to_dict(), "tokens": ["\n", "b", UNK]})
    other = Vocabulary(["a", "c", EOS, UNK, "d"])
    assert words.difference(other) == "4 vs 5 words, 2 new ('c', 'd'), 1 gone ('b')"
    assert chars.encode("a\na").tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="the character 'z' at position 1 is not in"):
        chars.encode("az")
    with pytest.raises(ValueError, match="single characters"):
        Vocabulary(["ab"], "char")
    assert words.decode([0, 1, 2, 0]) == "a b\n a"
