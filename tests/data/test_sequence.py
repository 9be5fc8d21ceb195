"""Tests of npgated/data/sequence.py: the book's addition/date files, vocabulary and split."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npgated import backend
from npgated.data import sequence as seq


def write(path: Path, lines) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def legacy_global_permutation(n: int, seed: int) -> np.ndarray:
    """The book's shuffle as the book calls it (the global legacy generator), run in a fresh
    interpreter so that this process's global generator is never touched."""
    code = (
        "import sys, numpy\n"
        f"i = numpy.arange({n})\n"
        f"numpy.random.seed({seed})\n"
        "numpy.random.shuffle(i)\n"
        "sys.stdout.write(' '.join(map(str, i.tolist())))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return np.array(out.stdout.split(), dtype=np.int64)


# ---------------------------------------------------------------------------------------
# Reading, vocabulary, split
# ---------------------------------------------------------------------------------------
def test_vocabulary_by_first_appearance_question_before_answer(tmp_path):
    path = write(tmp_path / "toy.txt", ["ab _c ", "ba _dz", "xa _cc"])
    questions, answers = seq.read_pairs(path)
    assert questions == ["ab ", "ba ", "xa "] and answers == ["_c ", "_dz", "_cc"]
    char_to_id, id_to_char = seq.build_vocab(questions, answers)
    # line 1 question "ab ", line 1 answer "_c ", line 2 answer "_dz", line 3 question "xa "
    assert list(char_to_id) == ["a", "b", " ", "_", "c", "d", "z", "x"]
    assert list(char_to_id.values()) == list(range(8))
    assert id_to_char == {i: c for c, i in char_to_id.items()}


@pytest.mark.parametrize("n", [10, 123, 50000])
def test_book_permutation_is_the_global_legacy_shuffle(n):
    state = np.random.get_state()[1].copy()  # only read: nothing here draws from it
    ours = seq.book_permutation(n, 1984)
    assert np.array_equal(np.random.get_state()[1], state), "the global generator was touched"
    assert np.array_equal(ours, legacy_global_permutation(n, 1984))
    assert sorted(ours.tolist()) == list(range(n))


def test_load_file_split_reverse_and_ids(tmp_path):
    lines = [f"{i:02d}+{(3 * i) % 97:<3d}_{i + (3 * i) % 97:<3d}" for i in range(40)]
    path = write(tmp_path / "sums.txt", lines)
    data = seq.load_file(path)
    assert data.task == "sums" and data.reverse is False
    assert data.x_train.shape == (36, 6) and data.x_test.shape == (4, 6)
    assert data.t_train.shape == (36, 4) and data.t_test.shape == (4, 4)
    assert data.x_train.dtype == np.int64
    order = seq.book_permutation(40)
    rows = [lines[k] for k in order]
    decoded = [
        q + a
        for q, a in zip(
            seq.decode(np.concatenate([data.x_train, data.x_test]), data.id_to_char),
            seq.decode(np.concatenate([data.t_train, data.t_test]), data.id_to_char),
        )
    ]
    assert decoded == rows  # shuffled rows, the last tenth the test split
    assert (data.t_train[:, 0] == data.start_id).all() and data.start_id == data.char_to_id["_"]
    assert data.question_width == 6 and data.answer_width == 3 and data.vocab_size == 13
    rev = seq.load_file(path, reverse=True)
    assert np.array_equal(rev.x_train, data.x_train[:, ::-1])
    assert rev.x_train.flags.c_contiguous
    assert np.array_equal(rev.t_train, data.t_train) and rev.reverse is True
    unshuffled = seq.load_file(path, seed=None)
    assert seq.decode(unshuffled.x_train[0], unshuffled.id_to_char) == lines[0][:6]


def test_load_task_and_resolve_data_dir(tmp_path, monkeypatch):
    write(tmp_path / "addition.txt", [f"{i}+{i:<3d}_{2 * i:<4d}" for i in range(100, 120)])
    data = seq.load_task("addition", tmp_path, reverse=True)
    assert data.task == "addition" and data.reverse and data.x_train.shape == (18, 7)
    monkeypatch.setenv(seq.BOOK_ENV_VAR, str(tmp_path))
    assert seq.resolve_data_dir() == tmp_path
    monkeypatch.delenv(seq.BOOK_ENV_VAR)
    monkeypatch.setenv("NPGATED_DATA_DIR", str(tmp_path / "ptb"))
    (tmp_path / "book").mkdir()
    assert seq.resolve_data_dir() == tmp_path / "book"
    monkeypatch.delenv("NPGATED_DATA_DIR")
    with pytest.raises(FileNotFoundError, match=seq.BOOK_ENV_VAR):
        seq.resolve_data_dir()


def test_missing_files_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"has no date\.txt .*NPGATED_BOOK_DATA_DIR"):
        seq.load_task("date", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nowhere .*not a folder.*--data-dir"):
        seq.resolve_data_dir(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"no data file at .*x\.txt"):
        seq.read_pairs(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="unknown task 'sums'; choose one of: addition, date"):
        seq.load_task("sums", tmp_path)


@pytest.mark.parametrize(
    "lines, message",
    [
        (["1+1_2", "2+2 4"], r"line 2: no '_'"),
        (
            ["1+1_2 ", "2+22_4 "],
            r"line 2: question of 4 and answer of 3 characters, but line 1 has 3",
        ),
        ([], "is empty"),
    ],
)
def test_malformed_files(tmp_path, lines, message):
    with pytest.raises(ValueError, match=message):
        seq.read_pairs(write(tmp_path / "bad.txt", lines))


# ---------------------------------------------------------------------------------------
# Characters <-> ids
# ---------------------------------------------------------------------------------------
VOCAB = {c: i for i, c in enumerate("0123456789+ _")}
ID_TO_CHAR = {i: c for c, i in VOCAB.items()}


def test_encode_decode_round_trip_and_padding(xp_name):
    ids = seq.encode(["12+3 ", "4+56 "], VOCAB)
    assert ids.shape == (2, 5) and ids.dtype == np.int64
    assert seq.decode(ids, ID_TO_CHAR) == ["12+3 ", "4+56 "]
    assert seq.decode(backend.to_device(ids[0]), ID_TO_CHAR) == "12+3 "  # device ids too
    q = seq.encode_questions(["12+3", "4+56"], VOCAB, 7)
    assert seq.decode(q, ID_TO_CHAR) == ["12+3   ", "4+56   "]
    r = seq.encode_questions("12+3", VOCAB, 7, reverse=True)
    assert seq.decode(r, ID_TO_CHAR) == ["   3+21"]


def test_encode_errors_say_what_is_wrong():
    with pytest.raises(
        ValueError,
        match=r"character 'x' at position 2 of '12x3' is not in the "
        r"task's vocabulary of 13 characters",
    ):
        seq.encode_questions(["12x3"], VOCAB, 7)
    with pytest.raises(
        ValueError,
        match=r"'12345678' has 8 characters; this task's rows hold "
        r"at most 7",
    ):
        seq.encode_questions(["12345678"], VOCAB, 7)
    with pytest.raises(ValueError, match="hold exactly 3"):
        seq.encode(["12", "123"], VOCAB, 3)
    with pytest.raises(ValueError, match="id 13 is not in the vocabulary of 13"):
        seq.decode(np.array([1, 13]), ID_TO_CHAR)


def test_vocab_checksum():
    a = seq.vocab_checksum(VOCAB)
    assert a == seq.vocab_checksum(dict(reversed(list(VOCAB.items()))))  # order of the dict
    swapped = dict(VOCAB, **{"0": 1, "1": 0})
    assert seq.vocab_checksum(swapped) != a
    with pytest.raises(ValueError, match="0 .. V-1"):
        seq.vocab_checksum({"a": 0, "b": 2})


# ---------------------------------------------------------------------------------------
# The book's files
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("task, V, T_enc, T_dec", [("addition", 13, 7, 4), ("date", 59, 29, 10)])
def test_the_books_files(book_file, task, V, T_enc, T_dec):
    path = book_file(seq.TASK_FILES[task])
    data = seq.load_task(task, path.parent)
    assert data.vocab_size == V
    assert data.x_train.shape == (45000, T_enc) and data.x_test.shape == (5000, T_enc)
    assert data.t_train.shape == (45000, 1 + T_dec) and data.answer_width == T_dec
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    q, a = first.split("_", 1)
    # the first line's characters get the first ids (question first, then "_" and the answer)
    assert list(data.char_to_id)[: len(set(q))] == list(dict.fromkeys(q))
    k = int(np.argsort(seq.book_permutation(50000))[0])  # where line 1 went
    row_x = data.x_train[k] if k < 45000 else data.x_test[k - 45000]
    row_t = data.t_train[k] if k < 45000 else data.t_test[k - 45000]
    assert seq.decode(row_x, data.id_to_char) == q and seq.decode(row_t, data.id_to_char) == "_" + a


def test_same_arrays_as_the_books_loader(book_file, tmp_path):
    """Against the book's own dataset/sequence.py (a checkout named by $NPGATED_BOOK_DIR)."""
    book = os.environ.get("NPGATED_BOOK_DIR")
    if not book or not (Path(book) / "dataset" / "date.txt").is_file():
        pytest.skip("set NPGATED_BOOK_DIR to a checkout of the book's repository")
    folder = book_file("date.txt").parent
    code = (
        "import sys, numpy\n"
        f"sys.path.insert(0, {book!r})\n"
        "from dataset import sequence\n"
        "(a, b), (c, d) = sequence.load_data('date.txt')\n"
        "numpy.savez(sys.argv[1], a=a, b=b, c=c, d=d,"
        " v=numpy.array(list(sequence.get_vocab()[0])))\n"
    )
    out = tmp_path / "book-date.npz"
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, cwd=book)
    with np.load(out) as ref:
        data = seq.load_task("date", folder)
        assert list(ref["v"]) == list(data.char_to_id)
        for key, ours in zip("abcd", (data.x_train, data.t_train, data.x_test, data.t_test)):
            assert np.array_equal(ref[key], ours), key
