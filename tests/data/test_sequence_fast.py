"""load_file's whole-array reading (sequence._read_uniform) against the line-by-line functions
(read_pairs, build_vocab, encode): the same vocabulary, ids and split for every file the
book's format allows, and the same errors, from the line-by-line reader, for the others."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from npgated.data import sequence as seq


def line_by_line(path):
    """(x, t, char_to_id) as read_pairs, build_vocab and encode give them."""
    questions, answers = seq.read_pairs(path)
    char_to_id, _ = seq.build_vocab(questions, answers)
    return seq.encode(questions, char_to_id), seq.encode(answers, char_to_id), char_to_id


def check_same(path: Path):
    fast = seq._read_uniform(path)
    assert fast is not None, "a well-formed file took the line-by-line path"
    x, t, char_to_id = line_by_line(path)
    assert list(fast[2].items()) == list(char_to_id.items())  # the same ids in the same order
    assert fast[3] == {i: c for c, i in char_to_id.items()}
    assert fast[0].dtype == fast[1].dtype == np.int64
    assert np.array_equal(fast[0], x) and np.array_equal(fast[1], t)
    for seed in (1984, None):
        for reverse in (False, True):
            data = seq.load_file(path, seed=seed, reverse=reverse)
            order = seq.book_permutation(len(x), seed) if seed is not None else np.arange(len(x))
            xs = x[order][:, ::-1] if reverse else x[order]
            assert np.array_equal(np.concatenate([data.x_train, data.x_test]), xs)
            assert np.array_equal(np.concatenate([data.t_train, data.t_test]), t[order])
            assert all(a.flags.c_contiguous for a in (data.x_train, data.t_test))
            assert list(data.char_to_id.items()) == list(char_to_id.items())


@pytest.mark.parametrize(
    "text",
    [
        "ab _c \nba _dz\nxa _cc\n",  # the vocabulary by first appearance, question first
        "ab _c \nba _dz\nxa _cc",  # no line break after the last line
        "ab _c \r\nba _dz\r\nxa _cc\r\n",  # Windows line breaks (text mode reads them as \n)
        "ab _c \rba _dz\rxa _cc\r",  # old Mac line breaks
        "q_a\n",  # one line
        "_x\n_y\n",  # an empty question
        "12_\n34_\n",  # an answer that is the start symbol alone
        "é ü_\u00df\U0001f600\n\u65e5\u672cx_\u8a9e \n",  # beyond ASCII, beyond the BMP
        "a\x00_b\x0b\nc\x0c_\x1cd\n",  # characters that are no line break in text mode
        "a_b_\nc_d_\n",  # a second _ inside the answer
    ],
)
def test_whole_array_reading_is_the_line_by_line_reading(tmp_path, text):
    path = tmp_path / "task.txt"
    path.write_bytes(text.encode("utf-8"))
    check_same(path)


def test_a_book_sized_file(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 1000, 3000), rng.integers(0, 1000, 3000)
    lines = [f"{p}+{q}".ljust(7) + "_" + str(p + q).ljust(4) for p, q in zip(a, b)]
    path = tmp_path / "addition.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    check_same(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("1+1_2\n2+2 4\n", r"line 2: no '_'"),
        ("1+1_2 \n2+22_4 \n", r"line 2: question of 4 and answer of 3 characters"),
        ("1+1_2 \n2+2_4\n", r"line 2: question of 3 and answer of 2 characters"),
        ("1+1_2\n\n2+2_4\n", r"line 2: no '_'"),  # an empty line
        ("", "is empty"),
        ("\n", r"line 1: no '_'"),
        ("12+3_15\n1_+2_24\n", r"line 2: question of 1 and answer of 6"),  # _ further left
    ],
)
def test_malformed_files_get_the_line_by_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(text.encode("utf-8"))
    assert seq._read_uniform(path) is None
    with pytest.raises(ValueError, match=message):
        seq.load_file(path)


def test_a_missing_file_is_named(tmp_path):
    assert seq._read_uniform(tmp_path / "none.txt") is None
    with pytest.raises(FileNotFoundError, match=r"no data file at .*none\.txt"):
        seq.load_file(tmp_path / "none.txt")


def test_the_books_files(book_dir):
    paths = [Path(book_dir) / name for name in seq.TASK_FILES.values()]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"the book's addition.txt and date.txt not found in {book_dir}")
    for path in paths:
        check_same(path)
