"""The book's toy sequence-to-sequence tasks: ``addition.txt`` and ``date.txt`` (DLfS2 ch. 7-8).

"Deep Learning from Scratch 2" trains its encoder-decoders on two files of its repository
(``dataset/``), one question and its answer per line::

    16+75  _91                                  addition.txt: 7 + 1 + 4 characters
    september 27, 1994           _1994-09-27    date.txt:    29 + 1 + 10 characters

The question is the text before the first ``_``; the answer is ``_`` and what follows it (the
decoder reads ``_`` as its start symbol). Every question of a file has the same width, and
every answer too (spaces pad them on the right). This module reads them exactly as the book's
``dataset/sequence.py`` does, so that ids, splits and checkpoints agree with the book's:

* **vocabulary**: one character vocabulary for questions and answers, ids by first
  appearance, scanning the lines in file order, each line's question before its answer
  (addition: 13 characters, date: 59);
* **split**: the rows are shuffled with NumPy's legacy Mersenne-Twister generator seeded with
  1984 (the book calls ``numpy.random.seed(1984)``; ``numpy.random.shuffle``), and the last
  ``n // 10`` rows are the test split (5,000 of 50,000). Here the same permutation comes from
  a private ``numpy.random.RandomState(1984)``, so loading a task never touches the global
  generator (a test checks the permutation against the global-seed call in a fresh process);
* **reversed questions** (``reverse=True``): each question's characters in reverse order, the
  book's ``x[:, ::-1]`` (Sutskever, Vinyals & Le, "Sequence to Sequence Learning with Neural
  Networks", NeurIPS 2014, section 3.3). Answers are never reversed.

Usage::

    data = load_task("date", reverse=True)        # SequenceData: x_train (45000, 29), ...
    x = encode_questions(["March 1, 2001"], data.char_to_id, data.question_width,
                         reverse=data.reverse)     # (1, 29) ids, padded with spaces
    decode(ids, data.id_to_char)                   # ["1994-09-27", ...]

Where the files are: ``data_dir`` if given, else ``$NPGATED_BOOK_DATA_DIR``, else the folder
``book/`` beside the PTB folder ``$NPGATED_DATA_DIR`` (:func:`resolve_data_dir`).

Host-only code: every array here is a NumPy int64 array (move batches to a device with
:func:`npgated.backend.to_device`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "BOOK_ENV_VAR",
    "SPLIT_SEED",
    "START",
    "TASK_FILES",
    "SequenceData",
    "book_permutation",
    "build_vocab",
    "decode",
    "encode",
    "encode_questions",
    "load_file",
    "load_task",
    "read_pairs",
    "resolve_data_dir",
    "vocab_checksum",
]

TASK_FILES = {"addition": "addition.txt", "date": "date.txt"}
"""The book's tasks and their files (``dataset/`` of its repository)."""

BOOK_ENV_VAR = "NPGATED_BOOK_DATA_DIR"
"""Environment variable naming the folder with the book's data files."""

SPLIT_SEED = 1984
"""The seed of the book's shuffle (``dataset/sequence.py``'s ``load_data(seed=1984)``)."""

START = "_"
"""The separator between question and answer, and the decoder's start symbol."""


class SequenceData(NamedTuple):
    """One task, loaded and split the book's way.

    Attributes
    ----------
    x_train : (n_train, T_enc) int64 array
        Questions (reversed when ``reverse``).
    t_train : (n_train, 1 + T_dec) int64 array
        Answers, each starting with the id of ``_`` (the decoder's first input).
    x_test, t_test : (n_test, T_enc), (n_test, 1 + T_dec) int64 arrays
        The last tenth of the shuffled rows.
    char_to_id : dict[str, int]
    id_to_char : dict[int, str]
        The character vocabulary (ids 0 .. V-1 by first appearance).
    task : str
        ``"addition"``, ``"date"``, or the file's stem for another file.
    reverse : bool
        Whether the questions are reversed.
    """

    x_train: np.ndarray
    t_train: np.ndarray
    x_test: np.ndarray
    t_test: np.ndarray
    char_to_id: dict
    id_to_char: dict
    task: str
    reverse: bool

    @property
    def vocab_size(self) -> int:
        """V, the number of characters."""
        return len(self.char_to_id)

    @property
    def start_id(self) -> int:
        """The id of ``_``, the decoder's start symbol."""
        return self.char_to_id[START]

    @property
    def question_width(self) -> int:
        """T_enc, the characters of every question."""
        return self.x_train.shape[1]

    @property
    def answer_width(self) -> int:
        """T_dec, the characters of every answer after ``_`` (what the decoder generates)."""
        return self.t_train.shape[1] - 1


# ---------------------------------------------------------------------------------------
# Where the files are
# ---------------------------------------------------------------------------------------
def _how_to_fix() -> str:
    return (
        "put the book's addition.txt and date.txt (dataset/ of the book's repository, "
        "oreilly-japan/deep-learning-from-scratch-2) in a folder and pass it as data_dir "
        f"(--data-dir) or set {BOOK_ENV_VAR}=/path/to/that/folder"
    )


def resolve_data_dir(data_dir=None) -> Path:
    """The folder with the book's data files.

    ``data_dir`` if given; else ``$NPGATED_BOOK_DATA_DIR``; else ``book/`` beside the PTB
    folder named by ``$NPGATED_DATA_DIR``. The folder is not checked for the files here
    (:func:`load_task` names a missing one).

    Raises
    ------
    FileNotFoundError
        None of the three is given (or the folder does not exist), saying how to fix it.
    """
    if data_dir is not None:
        path, source = Path(data_dir), "data_dir"
    elif os.environ.get(BOOK_ENV_VAR):
        path, source = Path(os.environ[BOOK_ENV_VAR]), f"${BOOK_ENV_VAR}"
    elif os.environ.get("NPGATED_DATA_DIR"):
        path = Path(os.environ["NPGATED_DATA_DIR"]).parent / "book"
        source = "book/ beside $NPGATED_DATA_DIR"
    else:
        raise FileNotFoundError(f"no folder for the book's data files given: {_how_to_fix()}")
    if not path.is_dir():
        raise FileNotFoundError(f"{path} ({source}) is not a folder: {_how_to_fix()}")
    return path


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------
def read_pairs(path) -> tuple[list[str], list[str]]:
    """The questions and answers of a file in the book's format, in file order.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    questions : list of str
        The text before the first ``_`` of each line.
    answers : list of str
        ``_`` and the rest of the line (without its line break).

    Raises
    ------
    FileNotFoundError
        No such file (saying where to get it).
    ValueError
        An empty file, a line without ``_``, or a question or answer whose width differs
        from the first line's (naming the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {path}: {_how_to_fix()}")
    questions, answers = [], []
    # text mode, universal newlines: the book's open(file_path, 'r') reads "\r\n" as "\n"
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.removesuffix("\n")
            cut = line.find(START)
            if cut < 0:
                raise ValueError(
                    f"{path}, line {number}: no {START!r} between question and answer "
                    f"({line[:40]!r}); each line must read question{START}answer"
                )
            q, a = line[:cut], line[cut:]
            if questions and (len(q), len(a)) != (len(questions[0]), len(answers[0])):
                raise ValueError(
                    f"{path}, line {number}: question of {len(q)} and answer of {len(a)} "
                    f"characters, but line 1 has {len(questions[0])} and {len(answers[0])}; "
                    "every line must have the same widths (pad with spaces)"
                )
            questions.append(q)
            answers.append(a)
    if not questions:
        raise ValueError(f"{path} is empty: expected lines of the form question{START}answer")
    return questions, answers


def build_vocab(questions, answers) -> tuple[dict, dict]:
    """The book's character vocabulary: ids by first appearance, each line's question first.

    Returns
    -------
    char_to_id : dict[str, int]
    id_to_char : dict[int, str]
    """
    # All lines as one string, each question before its answer: the ids are the order of
    # the characters' first positions in it.
    text = "".join(q + a for q, a in zip(questions, answers))
    char_to_id = {ch: i for i, ch in enumerate(sorted(set(text), key=text.find))}
    return char_to_id, {i: ch for ch, i in char_to_id.items()}


def _code_points(text: str) -> np.ndarray:
    """The Unicode code points of ``text`` as a uint32 array (one per character)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def vocab_checksum(char_to_id: dict) -> str:
    """SHA-256 (hex) of the characters in id order (joined without separator).

    Stored in checkpoints so that a model is never used with another vocabulary.

    Raises
    ------
    ValueError
        If the ids are not exactly ``0 .. V-1`` or a key is not one character.
    """
    chars = sorted(char_to_id, key=char_to_id.__getitem__)
    if [char_to_id[c] for c in chars] != list(range(len(chars))):
        raise ValueError("char_to_id must map its characters to the ids 0 .. V-1 exactly once each")
    if any(len(c) != 1 for c in chars):
        raise ValueError("char_to_id must map single characters")
    return hashlib.sha256("".join(chars).encode("utf-8")).hexdigest()


def book_permutation(n: int, seed: int = SPLIT_SEED) -> np.ndarray:
    """The book's row order: ``numpy.random.seed(seed); numpy.random.shuffle(arange(n))``.

    Computed with a private legacy generator (``numpy.random.RandomState(seed)``, the same
    Mersenne Twister and the same shuffle algorithm that ``numpy.random.seed`` and
    ``numpy.random.shuffle`` use through NumPy's global ``RandomState``), so the global
    generator is left alone.

    Returns
    -------
    (n,) int64 array
    """
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    return order


# ---------------------------------------------------------------------------------------
# Characters <-> ids
# ---------------------------------------------------------------------------------------
def _unknown(ch, text, position, char_to_id) -> ValueError:
    known = "".join(sorted(char_to_id))
    return ValueError(
        f"character {ch!r} at position {position} of {text!r} is not in the task's "
        f"vocabulary of {len(char_to_id)} characters ({known!r}); use only those"
    )


def encode(texts, char_to_id: dict, width: int | None = None, pad: str | None = None) -> np.ndarray:
    """Strings of one width to an (n, width) int64 id array.

    Parameters
    ----------
    texts : str or sequence of str
        A single string gives one row.
    char_to_id : dict[str, int]
    width : int, optional
        The row length; default the length of the first string.
    pad : str, optional
        One character appended to shorter strings up to ``width`` (the book pads with
        ``" "``); without it every string must be ``width`` long.

    Raises
    ------
    ValueError
        A character outside the vocabulary (naming it, the string and the vocabulary), a
        string longer than ``width`` or, without ``pad``, of another length.
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if width is None:
        width = len(texts[0]) if texts else 0
    if pad is not None and (len(pad) != 1 or pad not in char_to_id):
        raise ValueError(f"pad must be one character of the vocabulary, got {pad!r}")
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    wrong = (lengths > width) if pad is not None else (lengths != width)
    if wrong.any():
        text = texts[int(np.argmax(wrong))]
        raise ValueError(
            f"{text!r} has {len(text)} characters; this task's "
            f"{'rows hold at most' if pad is not None else 'rows hold exactly'} {width}"
        )
    padded = [text.ljust(width, pad) for text in texts] if pad is not None else texts
    # one vectorised look-up: every character's code point found among the vocabulary's
    # (sorted) code points; a character not there is reported with its string and position
    codes = _code_points("".join(padded)).reshape(len(texts), width)
    known = sorted(char_to_id, key=ord)
    keys = np.array([ord(ch) for ch in known], dtype=np.uint32)
    values = np.array([char_to_id[ch] for ch in known], dtype=np.int64)
    where = np.minimum(np.searchsorted(keys, codes), max(len(keys) - 1, 0))
    found = keys[where] == codes if len(keys) else np.zeros(codes.shape, dtype=bool)
    if not found.all():
        row, position = np.argwhere(~found)[0].tolist()
        raise _unknown(padded[row][position], texts[row], position, char_to_id)
    return values[where] if len(keys) else np.empty(codes.shape, dtype=np.int64)


def encode_questions(questions, char_to_id: dict, width: int, reverse: bool = False) -> np.ndarray:
    """Questions typed by a user to model input: padded with spaces to ``width``, then
    reversed if the model reads reversed questions (as the book's rows are).

    Returns
    -------
    (n, width) int64 array
    """
    ids = encode(questions, char_to_id, width, pad=" ")
    return np.ascontiguousarray(ids[:, ::-1]) if reverse else ids


def decode(ids, id_to_char) -> list[str] | str:
    """Ids back to text: a 1-D array gives one string, a 2-D array one string per row.

    Parameters
    ----------
    ids : (n,) or (N, n) int array (host or device)
    id_to_char : dict[int, str] or sequence of str

    Raises
    ------
    ValueError
        An id the vocabulary lacks.
    """
    from npgated import backend  # noqa: PLC0415 (host-only module; only to accept device ids)

    host = np.asarray(backend.to_cpu(ids))
    if host.ndim not in (1, 2):
        raise ValueError(f"ids must be 1-D or 2-D, got shape {host.shape}")

    def row(r):
        out = []
        for i in r.tolist():
            try:
                out.append(id_to_char[i])
            except (KeyError, IndexError):
                raise ValueError(
                    f"id {i} is not in the vocabulary of {len(id_to_char)} characters"
                ) from None
        return "".join(out)

    return row(host) if host.ndim == 1 else [row(r) for r in host]


# ---------------------------------------------------------------------------------------
# Loading a task
# ---------------------------------------------------------------------------------------
def _read_uniform(path):
    """``(x, t, char_to_id, id_to_char)`` of a well-formed file in whole-array passes, else None.

    What :func:`read_pairs`, :func:`build_vocab` and :func:`encode` give, computed on the
    (n, W) code points of the file's lines at once instead of line by line: the book's
    date.txt (50,000 lines) in ~10 ms instead of ~110 ms (measured on a busy machine). Only
    for the files the book's format allows (every line of one width, its first ``_`` in one
    column, the same text-mode reading, universal newlines); anything else (also a missing,
    empty or malformed file) returns None and the line-by-line functions read it, or name
    what is wrong.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None  # read_pairs says what is missing
    body = text.removesuffix("\n")  # iterating over the file yields no line after the last \n
    n = body.count("\n") + 1
    width = body.find("\n") if n > 1 else len(body)
    codes = _code_points(body + "\n")
    if not body or codes.size != n * (width + 1):
        return None
    codes = codes.reshape(n, width + 1)
    # the n line breaks all in the last column: every line is `width` characters long
    if not (codes[:, width] == ord("\n")).all():
        return None
    codes = codes[:, :width]
    cut = body.find(START)  # line 1's question width
    is_start = codes == ord(START)
    if cut < 0 or cut >= width or not is_start[:, cut].all() or is_start[:, :cut].any():
        return None
    # the vocabulary: the characters present, by first position in the lines' joined text
    # (question before answer, line by line: the file's text without its line breaks)
    present = np.flatnonzero(np.bincount(codes.reshape(-1)))
    chars = sorted(map(chr, present.tolist()), key=body.find)
    char_to_id = {ch: i for i, ch in enumerate(chars)}
    lookup = np.zeros(int(present[-1]) + 1, dtype=np.int64)  # code point -> id
    lookup[[ord(ch) for ch in chars]] = np.arange(len(chars))
    ids = np.take(lookup, codes)
    return ids[:, :cut], ids[:, cut:], char_to_id, {i: ch for ch, i in char_to_id.items()}


def load_file(
    path, *, reverse: bool = False, seed: int | None = SPLIT_SEED, task: str | None = None
) -> SequenceData:
    """Load a file in the book's format with the book's vocabulary and split.

    Parameters
    ----------
    path : str or Path
    reverse : bool
        Reverse every question (the book's ``x[:, ::-1]``).
    seed : int or None
        Seed of the book's shuffle (1984). None: no shuffle, the file order (unlike the
        book's ``load_data(seed=None)``, which shuffles from the global generator's state).
    task : str, optional
        The name stored in the result; default the file's stem.

    Returns
    -------
    SequenceData
    """
    path = Path(path)
    fast = _read_uniform(path)
    if fast is not None:
        x, t, char_to_id, id_to_char = fast
    else:  # line by line: reads what the book's format allows, or names what is wrong
        questions, answers = read_pairs(path)
        char_to_id, id_to_char = build_vocab(questions, answers)
        x = encode(questions, char_to_id)
        t = encode(answers, char_to_id)
    if seed is not None:
        order = book_permutation(len(x), seed)
        x, t = x[order], t[order]
    else:  # the fast path's x and t are column blocks of one array
        x, t = np.ascontiguousarray(x), np.ascontiguousarray(t)
    if reverse:
        x = np.ascontiguousarray(x[:, ::-1])
    split = len(x) - len(x) // 10
    return SequenceData(
        x[:split],
        t[:split],
        x[split:],
        t[split:],
        char_to_id,
        id_to_char,
        task or path.stem,
        bool(reverse),
    )


def load_task(task: str, data_dir=None, *, reverse: bool = False) -> SequenceData:
    """Load one of the book's tasks (``"addition"`` or ``"date"``), split the book's way.

    Parameters
    ----------
    task : {"addition", "date"}
    data_dir : str or Path, optional
        The folder with the file; see :func:`resolve_data_dir`.
    reverse : bool
        Reverse every question.

    Raises
    ------
    ValueError
        An unknown task.
    FileNotFoundError
        No folder given, or the folder lacks the task's file (naming it and how to fix it).
    """
    if task not in TASK_FILES:
        raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(TASK_FILES)}")
    folder = resolve_data_dir(data_dir)
    path = folder / TASK_FILES[task]
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} has no {TASK_FILES[task]} for the {task} task: {_how_to_fix()}"
        )
    return load_file(path, reverse=reverse, task=task)
