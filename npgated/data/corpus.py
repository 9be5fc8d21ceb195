"""Your own text as a language-modelling corpus: words or characters, any size, any script.

A corpus is either a folder holding ``train.txt``, ``valid.txt`` and ``test.txt`` (PyTorch's
``word_language_model`` layout; PTB's ``ptb.{train,valid,test}.txt`` names work too) or one
text file cut into three contiguous parts, train, valid and test, by ``fractions`` (char-rnn's
``train_frac``/``val_frac``). Each part is a :class:`Source`: a file and a byte range.

Tokens
------
word level   the words of each line (``str.split``: any Unicode whitespace separates), then
             ``<eos>`` for its newline, as in PTB (Mikolov et al. 2010) and the book: the
             line ``"a b\\n"`` is ``a``, ``b``, ``<eos>``. A last line without a newline gets
             no ``<eos>``.
char level   Unicode code points, newline a symbol of its own; the character ``"ア"`` is one
             token whatever its UTF-8 length. No other normalisation (no case folding, no
             NFC) is applied.

In both, ``\\r\\n`` and ``\\r`` are read as ``\\n`` (Python's universal newlines), and a UTF-8
byte-order mark at the start of a file is skipped.

Vocabulary (:class:`Vocabulary`), built from the train part only
------------------------------------------------------------------
word level   ids in order of first appearance (PTB's ``"aer"`` is 0, as in the book), keeping
             the words seen at least ``min_count`` times and, with ``max_vocab``, only the
             ``max_vocab - 1`` most frequent of those (ties: the earlier first) plus ``<unk>``;
             ``<unk>`` is appended when train lacks it. On PTB's own files (which already
             map rare words to ``<unk>``) this is exactly PTB's 10,000-word vocabulary.
char level   the code points in increasing order (nanoGPT's ``shakespeare_char``), filtered
             the same way, then ``<unk>``.

Every other token, in train (a word below ``min_count``) or in valid/test (a word or a
character training never saw), becomes ``<unk>``; how many is logged. The vocabulary's
:attr:`Vocabulary.checksum` is stored in checkpoints and its tokens in their metadata, so a run
needs nothing else to be evaluated, resumed or sampled.

Any size: streaming, two passes, a memory-mapped id cache
---------------------------------------------------------
Text is read ``chunk_size`` bytes at a time through an incremental decoder (a multi-byte
character split between two chunks is decoded whole); word level cuts each piece at its last
line break, so memory is bounded by the chunk (and the number of distinct words), never by
the file. Word level finds the words of a piece in its UTF-8 bytes with NumPy (a word starts
where a non-space byte follows a space; the rare non-ASCII white space is replaced by a
space first) and looks them all up at once in a hash table of NumPy arrays keyed by their
bytes (:class:`_WordTable`: exact for words of up to 16 bytes, a dict for longer ones). The
train part is read once: words get provisional ids as they are met, the provisional ids go
to a temporary file and their counts to ``np.bincount``; the vocabulary is chosen from the
counts (in order of first appearance) and a lookup table maps provisional to final ids in a
second, array-only pass. Character level needs no provisional ids: code points come
vectorised (``np.frombuffer(text.encode("utf-32-le"), np.uint32)``), a first pass counts
them with ``np.bincount`` and a second maps them through a dense table indexed by code
point.

The ids go to a cache folder, ``$XDG_CACHE_HOME/npgated/corpus-ids`` (default
``~/.cache/npgated/corpus-ids``; ``NPGATED_CORPUS_CACHE=/path`` puts it elsewhere,
``NPGATED_CORPUS_CACHE=off`` or ``cache=False`` keeps the ids in memory), as ``.npy`` files
of ``uint16`` (V <= 65,536) or ``uint32``, which training opens with ``mmap_mode="r"``: a
corpus larger than memory trains, its windows read from disk as the batcher needs them.
Entries are keyed by the SHA-256 of the text (hashed on every load, about 0.6 s per GB) with
the level, the encoding and the vocabulary (its options, or its checksum when it is given),
so an edited file is never answered with old ids. Each ``.npy`` carries the SHA-256 of its
ids in a JSON file beside it, checked on every load; a corrupted or truncated entry is
logged and rebuilt. Everything is written to temporary files first and renamed into place
(``os.replace``) only when every part has been read and checked: bad input leaves nothing
behind. The least recently used entries beyond a few dozen are removed.

Bad input raises :class:`DataError` with one line saying what is wrong and how to fix it:
an empty file, a NUL byte (not text), bytes the encoding cannot decode (with the byte offset
and a hint to ``encoding``), a part too short for one training batch (with the numbers),
``fractions`` that do not sum to 1, a folder without ``valid.txt``.

This module is host-only code (NumPy); it shares its pieces with :mod:`npgated.data.ptb`,
which is a word-level corpus with a fixed, checksummed set of files.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "CACHE_ENV_VAR",
    "CHUNK_SIZE",
    "DEFAULT_FRACTIONS",
    "EOS",
    "LEVELS",
    "SPLITS",
    "UNK",
    "Corpus",
    "DataError",
    "Source",
    "Vocabulary",
    "cache_dir",
    "cache_root",
    "check_unchanged",
    "codec_name",
    "find_sources",
    "load_corpus",
    "load_text",
    "normalize_newlines",
    "parse_fractions",
    "split_words",
    "vocab_checksum",
]

logger = logging.getLogger(__name__)

EOS = "<eos>"
UNK = "<unk>"
LEVELS = ("word", "char")
SPLITS = ("train", "valid", "test")
CACHE_ENV_VAR = "NPGATED_CORPUS_CACHE"
CHUNK_SIZE = 1 << 20  # bytes read and tokenised at a time (measured: 1 MiB is as fast as 4)
DEFAULT_FRACTIONS = (0.9, 0.05, 0.05)

_FORMAT = 1
_CODE_POINTS = 0x110000  # Unicode's code space: U+0000 .. U+10FFFF
_SEARCH = 1 << 20  # bytes searched for a line break after a --fractions cut
_CACHE_MAX_ENTRIES = 32  # id files kept (least recently used removed); vocabularies as many
_STALE_SECONDS = 86400.0  # temporary files older than this are left-overs of a killed run
_PROGRESS_SECONDS = 15.0  # a log line this often while a large part is tokenised
_BOM = codecs.BOM_UTF8
_unwritable_reported: set = set()  # cache folders already reported unwritable (log once)


class DataError(RuntimeError):
    """A corpus cannot be read or used: a missing or empty file, bytes that are not text in
    the given encoding, a part too short for one batch, a vocabulary that does not match.

    The message is one line that says what is wrong and how to fix it (the command line
    prints it and exits with status 2). :mod:`npgated.data.ptb` raises it too.
    """


# ---------------------------------------------------------------------------------------
# Text -> tokens: the rules both levels and the PTB loader share
# ---------------------------------------------------------------------------------------
def normalize_newlines(text: str) -> str:
    """``\\r\\n`` and ``\\r`` as ``\\n`` (the universal newlines of text-mode ``open``)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def split_words(text: str) -> list[str]:
    """The word tokens of ``text`` (newlines already ``\\n``): each line's words, then ``<eos>``."""
    return text.replace("\n", f" {EOS} ").split()


def _checksum(tokens, level: str) -> str:
    if level == "word":  # the words joined by newlines: PTB's checksum since npgated 0.1
        blob = "\n".join(tokens)
    else:  # characters include "\n": NUL (never in accepted text) separates them
        blob = "char\0" + "\0".join(tokens)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def vocab_checksum(vocab) -> str:
    """SHA-256 (hex) of a vocabulary: a :class:`Vocabulary`'s own, or of a ``word -> id``
    dict the words in id order joined by ``"\\n"`` (the word-level rule).

    Raises
    ------
    ValueError
        If a dict's ids are not exactly ``0 .. V-1``.
    """
    if isinstance(vocab, Vocabulary):
        return vocab.checksum
    words = sorted(vocab, key=vocab.__getitem__)
    if [vocab[w] for w in words] != list(range(len(words))):
        raise ValueError("word_to_id must map its words to the ids 0 .. V-1 exactly once each")
    return _checksum(words, "word")


class Vocabulary(Mapping):
    """The tokens of a corpus in id order: a read-only ``token -> id`` mapping.

    Parameters
    ----------
    tokens : sequence of str
        Token of id 0, 1, ... (words, or single characters and ``"<unk>"``).
    level : {"word", "char"}
    source : dict, optional
        Where it was built from (JSON-able: file, SHA-256 of the train text, options); kept
        with the run for messages and checks.

    Attributes
    ----------
    tokens : tuple of str
    level : str
    unk_id : int or None
        The id of ``"<unk>"``.
    checksum : str
        SHA-256 of the tokens (see :func:`vocab_checksum`); two vocabularies are the same
        exactly when their checksums are.
    """

    def __init__(self, tokens, level: str = "word", source: dict | None = None):
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        self.tokens = tuple(str(t) for t in tokens)
        self.level = level
        self._index = {t: i for i, t in enumerate(self.tokens)}
        if len(self._index) != len(self.tokens):
            raise ValueError("a vocabulary lists every token once")
        if level == "char":
            bad = [t for t in self.tokens if len(t) != 1 and t != UNK]
            if bad:
                raise ValueError(
                    f"a character vocabulary holds single characters and {UNK!r}, got {bad[:3]}"
                )
        if any("\0" in t for t in self.tokens):
            raise ValueError("a vocabulary cannot hold the NUL character")
        self.source = dict(source or {})
        self.unk_id = self._index.get(UNK)
        self.checksum = _checksum(self.tokens, level)

    # -- the Mapping protocol (word_to_id everywhere in npgated) --
    def __getitem__(self, token):
        return self._index[token]

    def __contains__(self, token):
        return token in self._index

    def __iter__(self):
        return iter(self.tokens)

    def __len__(self):
        return len(self.tokens)

    def __eq__(self, other):
        if isinstance(other, Vocabulary):
            return self.level == other.level and self.checksum == other.checksum
        return Mapping.__eq__(self, other)

    __hash__ = None

    def __repr__(self):
        return f"Vocabulary({self.describe()}, checksum {self.checksum[:12]})"

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned dtype holding every id: uint16 up to 65,536 tokens, else uint32."""
        return np.dtype(np.uint16 if len(self) <= 1 << 16 else np.uint32)

    @property
    def unit(self) -> str:
        return "characters" if self.level == "char" else "words"

    def describe(self) -> str:
        """``"char level, 65 symbols"``, ``"word level, 10,000 words"``."""
        noun = "symbols" if self.level == "char" else "words"
        return f"{self.level} level, {len(self):,} {noun}"

    # -- text <-> ids (for prompts and samples; corpora go through load_corpus) --
    def encode(self, text: str) -> np.ndarray:
        """The ids of a prompt: its words (split on whitespace) or its characters.

        Raises
        ------
        ValueError
            Naming the first token the vocabulary lacks.
        """
        tokens = text.split() if self.level == "word" else list(normalize_newlines(text))
        ids = []
        for position, token in enumerate(tokens):
            try:
                ids.append(self._index[token])
            except KeyError:
                what = "word" if self.level == "word" else "character"
                raise ValueError(
                    f"the {what} {token!r} at position {position} is not in the run's "
                    f"vocabulary ({self.describe()}): training never saw it; choose another "
                    "--start"
                ) from None
        return np.asarray(ids, dtype=np.int64)

    def token_text(self, token_id: int) -> str:
        """How one token is printed: a character as itself (``<unk>`` as U+FFFD), a word
        followed by a space, ``<eos>`` as a newline."""
        token = self.tokens[int(token_id)]
        if self.level == "char":
            return "\ufffd" if token == UNK else token
        return "\n" if token == EOS else token + " "

    def decode(self, ids) -> str:
        """The text of ``ids``: characters joined, or words joined by spaces with ``<eos>``
        as a line break."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        if self.level == "char":
            return "".join(self.token_text(i) for i in ids)
        return " ".join(self.tokens[i] for i in ids).replace(f" {EOS}", "\n")

    # -- stored with a run --
    def to_dict(self) -> dict:
        """JSON-able: level, tokens, checksum and source (checkpoint metadata)."""
        return {
            "level": self.level,
            "tokens": list(self.tokens),
            "checksum": self.checksum,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        """Rebuild from :meth:`to_dict`; the stored checksum must match (else DataError)."""
        try:
            vocab = cls(d["tokens"], d.get("level", "word"), d.get("source"))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"the stored vocabulary is malformed ({exc})") from None
        if d.get("checksum") not in (None, vocab.checksum):
            raise DataError(
                "the stored vocabulary does not match its checksum: the run's metadata is damaged"
            )
        return vocab

    @classmethod
    def of(cls, vocab, level: str = "word") -> Vocabulary:
        """``vocab`` itself if it is a Vocabulary, else one from a ``word -> id`` dict."""
        if isinstance(vocab, Vocabulary):
            return vocab
        return cls(sorted(vocab, key=vocab.__getitem__), level)

    def difference(self, other: Vocabulary) -> str:
        """What differs between two vocabularies, in a few words (for error messages)."""
        if self.level != other.level:
            return f"{self.describe()} vs {other.describe()}"
        mine, theirs = set(self.tokens), set(other.tokens)
        parts = [f"{len(self):,} vs {len(other):,} {self.unit}"]
        only_theirs = [t for t in other.tokens if t not in mine]
        only_mine = [t for t in self.tokens if t not in theirs]
        if only_theirs:
            parts.append(f"{len(only_theirs):,} new ({_some(only_theirs)})")
        if only_mine:
            parts.append(f"{len(only_mine):,} gone ({_some(only_mine)})")
        if not only_theirs and not only_mine:
            first = next(i for i, (a, b) in enumerate(zip(self.tokens, other.tokens)) if a != b)
            parts.append(
                f"the same tokens in another order (id {first}: "
                f"{self.tokens[first]!r} vs {other.tokens[first]!r})"
            )
        return ", ".join(parts)


def _some(tokens, k: int = 3) -> str:
    shown = ", ".join(repr(t) for t in tokens[:k])
    return shown + (", ..." if len(tokens) > k else "")


# ---------------------------------------------------------------------------------------
# Where the text is: files and byte ranges
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """One part of a corpus: the bytes ``[start, end)`` of ``path``."""

    path: Path
    start: int
    end: int
    whole: bool = True  # the whole file (less a byte-order mark), not a --fractions part

    @property
    def size(self) -> int:
        return self.end - self.start

    def describe(self) -> str:
        if self.whole:
            return str(self.path)
        return f"{self.path} (bytes {self.start:,}-{self.end:,})"


def parse_fractions(fractions) -> tuple[float, float, float]:
    """``"0.9,0.05,0.05"`` or three numbers -> a (train, valid, test) tuple summing to 1.

    Raises
    ------
    ValueError
        Unless there are three positive shares adding up to 1 (within 1e-6).
    """
    text = fractions if isinstance(fractions, str) else ",".join(str(f) for f in fractions)
    try:
        shares = tuple(float(s) for s in text.split(","))
    except ValueError:
        shares = ()
    how = "give three shares train,valid,test that add up to 1, e.g. --fractions 0.9,0.05,0.05"
    if len(shares) != 3 or not all(math.isfinite(s) for s in shares):
        raise ValueError(f"--fractions {text!r} is not three numbers: {how}")
    if min(shares) <= 0:
        raise ValueError(
            f"--fractions {text}: every share must be > 0 (each part is needed): {how}"
        )
    if abs(sum(shares) - 1.0) > 1e-6:
        raise ValueError(f"--fractions {text} sums to {sum(shares):.6g}, not 1: {how}")
    return shares


def codec_name(encoding: str) -> str:
    """The canonical codec name (``"utf-8"``, ``"shift_jis"``), or ValueError."""
    try:
        return codecs.lookup(encoding).name
    except (LookupError, TypeError):
        raise ValueError(
            f"unknown --encoding {encoding!r}: use a Python codec name such as "
            "utf-8, latin-1, cp1252, shift_jis, euc-jp, gb18030 or utf-16"
        ) from None


def _ascii_compatible(codec: str) -> bool:
    """Whether the byte 0x0A is always a newline and 0x00 always NUL (never part of a
    multi-byte character): UTF-8, the ISO/Windows code pages, Shift_JIS, EUC, GB18030 ...;
    not UTF-16/32."""
    if codec.startswith(("utf-16", "utf-32", "utf_16", "utf_32")):
        return False
    try:
        return codecs.getincrementalencoder(codec)().encode("\n a\0") == b"\n a\0"
    except (UnicodeError, LookupError):
        return False


_FOLDER_NAMES = {split: (f"{split}.txt", f"ptb.{split}.txt") for split in SPLITS}


def find_sources(path, fractions=DEFAULT_FRACTIONS, encoding: str = "utf-8", splits=SPLITS) -> dict:
    """The :class:`Source` of each split of the corpus at ``path``.

    Parameters
    ----------
    path : str or Path
        A folder with ``train.txt``, ``valid.txt``, ``test.txt`` (or ``ptb.*.txt``), or one
        text file.
    fractions : str or sequence of 3 float
        Train, valid, test shares of a single file (ignored for a folder). Cuts are moved
        forward to the next line break (else the next space; else, in UTF-8, the next
        character), so that no line, word or character is split.
    encoding : str
    splits : iterable of str
        Which splits to return.

    Raises
    ------
    FileNotFoundError, DataError
        A missing path or split file, an empty file.
    """
    codec = codec_name(encoding)
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"corpus {p} not found: give a folder with train.txt, valid.txt "
            "and test.txt, or one text file"
        )
    splits = [_split_name(s) for s in splits]
    if p.is_dir():
        found = {}
        for split in SPLITS:
            names = _FOLDER_NAMES[split]
            hit = next((p / n for n in names if (p / n).is_file()), None)
            if hit is None:
                other = next((p / n for n in _FOLDER_NAMES["train"] if (p / n).is_file()), None)
                if split == "train" or other is None:
                    raise FileNotFoundError(
                        f"{p} has no train.txt (nor ptb.train.txt): a corpus folder holds "
                        "train.txt, valid.txt and test.txt; or give one text file to split "
                        "by --fractions"
                    )
                raise FileNotFoundError(
                    f"{p} has {other.name} but no {names[0]}: add {names[0]} (a folder "
                    "corpus needs train.txt, valid.txt and test.txt), or train on one file "
                    f"split by --fractions (--corpus {other})"
                )
            found[split] = hit
        return {s: _whole_file(found[s], codec) for s in splits}
    shares = parse_fractions(fractions)
    size = p.stat().st_size
    start = _bom_length(p, codec)
    if size - start <= 0:
        raise DataError(f"{p} is empty: there is no text to train on")
    if not _ascii_compatible(codec):
        raise DataError(
            f"cannot cut {p} into parts by --fractions in the {codec} encoding (its line "
            "breaks are not single bytes): convert it to UTF-8 (iconv -f "
            f"{codec} -t utf-8) or give a folder with train.txt, valid.txt and test.txt"
        )
    cuts = [start]
    with open(p, "rb") as f:
        for share in (shares[0], shares[0] + shares[1]):
            target = start + round(share * (size - start))
            cuts.append(_boundary(f, max(target, cuts[-1]), size, codec, p))
    cuts.append(size)
    parts = {s: Source(p, cuts[i], cuts[i + 1], whole=False) for i, s in enumerate(SPLITS)}
    return {s: parts[s] for s in splits}


def _split_name(split: str) -> str:
    name = {"val": "valid"}.get(split, split)
    if name not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are: {', '.join(SPLITS)}")
    return name


def _bom_length(path: Path, codec: str) -> int:
    if codec != "utf-8":
        return 0
    with open(path, "rb") as f:
        return len(_BOM) if f.read(len(_BOM)) == _BOM else 0


def _whole_file(path: Path, codec: str) -> Source:
    size = path.stat().st_size
    start = _bom_length(path, codec)
    if size - start <= 0:
        raise DataError(f"{path} is empty: there is no text in it")
    return Source(path, start, size)


def _boundary(f, target: int, size: int, codec: str, path: Path) -> int:
    """The first place at or after ``target`` where a part may start (see find_sources)."""
    if target >= size:
        return size
    lo = max(target - 1, 0)  # a cut right after a newline stays where it is
    f.seek(lo)
    window = f.read(_SEARCH)
    for sep in (b"\n", b" "):
        i = window.find(sep)
        if i >= 0:
            return lo + i + 1
    if codec == "utf-8":  # no line break nor space: the next character's first byte
        lead = np.flatnonzero((np.frombuffer(window, np.uint8)[1:] & 0xC0) != 0x80)
        if lead.size:
            return lo + 1 + int(lead[0])
    if len(window) < _SEARCH:  # reached the end of the file
        return size
    raise DataError(
        f"cannot cut {path} near byte {target:,} for --fractions: no line break or "
        f"space in the next {_SEARCH:,} bytes; give a folder with train.txt, "
        "valid.txt and test.txt instead"
    )


# ---------------------------------------------------------------------------------------
# Streaming: bytes -> decoded text -> tokens, one chunk at a time
# ---------------------------------------------------------------------------------------
def _hint(codec: str) -> str:
    if codec == "utf-8":
        return (
            "if the file is in another encoding, give it with --encoding (e.g. latin-1, "
            "cp1252, shift_jis, euc-jp, gb18030, utf-16)"
        )
    return "check --encoding (the file may be UTF-8, the default)"


def _text_pieces(source: Source, codec: str, chunk_size: int):
    """Yield the decoded text of ``source`` in pieces of about ``chunk_size`` bytes, newlines
    normalised, as ``(text, bytes read so far)``.

    Raises DataError at the first NUL or undecodable byte, with its offset in the file.
    """
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    ascii_nul = _ascii_compatible(codec)
    held = ""  # a "\r" at a piece's end: the next piece may start with its "\n"
    chars = 0  # characters decoded so far (for the NUL position in UTF-16/32 text)
    pos = source.start
    try:
        f = open(source.path, "rb")  # noqa: SIM115 (closed in the finally below)
    except OSError as exc:
        raise DataError(f"cannot read {source.path}: {exc}") from None
    try:
        f.seek(pos)
        while pos < source.end:
            raw = f.read(min(chunk_size, source.end - pos))
            if not raw:
                raise DataError(
                    f"{source.path} became shorter while it was read (now "
                    f"{pos:,} bytes); read it again when it is complete"
                )
            if ascii_nul:
                nul = raw.find(b"\0")
                if nul >= 0:
                    raise DataError(
                        f"{source.path} has a NUL byte at byte offset {pos + nul:,}: it is not a "
                        "text file (UTF-16 or UTF-32 text: give --encoding utf-16 or utf-32)"
                    )
            buffered = len(decoder.getstate()[0])  # bytes of a character begun in the last chunk
            final = pos + len(raw) >= source.end
            try:
                text = decoder.decode(raw, final)
            except UnicodeDecodeError as exc:
                offset = pos - buffered + exc.start
                bad = exc.object[exc.start : exc.start + 1].hex() or "end of file"
                raise DataError(
                    f"{source.path} is not valid {codec} at byte offset {offset:,} "
                    f"(0x{bad}: {exc.reason}); {_hint(codec)}"
                ) from None
            pos += len(raw)
            if not ascii_nul:
                nul = text.find("\0")
                if nul >= 0:
                    raise DataError(
                        f"{source.path} has a NUL character (character {chars + nul:,} "
                        "of the text): it is not a text file"
                    )
                chars += len(text)
            text = held + text
            held = ""
            if text.endswith("\r") and not final:
                text, held = text[:-1], "\r"
            text = normalize_newlines(text)
            if text:
                yield text, pos - source.start
        if held:
            yield "\n", pos - source.start
    finally:
        f.close()


class _Progress:
    """A log line every ``_PROGRESS_SECONDS`` while a large part is tokenised."""

    def __init__(self, what: str, total: int):
        self.what, self.total = what, total
        self.start = self.last = time.perf_counter()

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last >= _PROGRESS_SECONDS:
            self.last = now
            logger.info(
                "%s: %d %% (%.0f of %.0f MB, %.1f MB/s)",
                self.what,
                100 * done // max(self.total, 1),
                done / 1e6,
                self.total / 1e6,
                done / 1e6 / max(now - self.start, 1e-9),
            )


def _word_texts(source: Source, codec: str, chunk_size: int, what: str = ""):
    """Yield the text in pieces that end at a line break (or a space): no word is cut.

    Pieces of a quarter of ``chunk_size``: the arrays of :class:`_WordTable` then stay in
    the processor's cache (measured: 57 MB/s with 256 KiB, 50 MB/s with 1 MiB).
    """
    progress = _Progress(what or source.describe(), source.size)
    carry = ""
    for text, done in _text_pieces(source, codec, max(chunk_size // 4, 1)):
        text = carry + text
        cut = text.rfind("\n") + 1
        if cut == 0:  # one long line: cut at a space (words end there too)
            cut = text.rfind(" ") + 1
        carry = text[cut:]
        if cut:
            yield text[:cut]
        progress(done)
    if carry:
        yield carry


def _char_batches(source: Source, codec: str, chunk_size: int, what: str = ""):
    """Yield (n,) uint32 arrays of code points, vectorised through UTF-32."""
    progress = _Progress(what or source.describe(), source.size)
    for text, done in _text_pieces(source, codec, chunk_size):
        yield np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        progress(done)


def _sha256_of(source: Source, chunk_size: int = 1 << 22) -> str:
    h = hashlib.sha256()
    try:
        with open(source.path, "rb") as f:
            f.seek(source.start)
            left = source.size
            while left > 0:
                block = f.read(min(chunk_size, left))
                if not block:
                    break
                h.update(block)
                left -= len(block)
    except OSError as exc:
        raise DataError(f"cannot read {source.path}: {exc}") from None
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# Where ids go: a .npy file written as it streams, or memory
# ---------------------------------------------------------------------------------------
class _IdsFile:
    """Ids appended chunk by chunk to a temporary ``.npy`` in ``folder``.

    The header is written first for the largest 1-D shape and rewritten at the end with the
    real length: a 1-D header is always 128 bytes (``numpy.lib.format`` pads it to a
    multiple of 64), so the data never moves. :meth:`finish` renames it into place.
    """

    def __init__(self, folder: Path, dtype):
        self.dtype = np.dtype(dtype)
        self.n = 0
        self.sha = hashlib.sha256()
        fd, self.tmp = tempfile.mkstemp(dir=folder, prefix=".ids.", suffix=".npy.tmp")
        self.f = os.fdopen(fd, "wb")
        self.header = self._header(10**15)
        self.f.write(self.header)

    def _header(self, n: int) -> bytes:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            buf,
            {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": (n,),
            },
        )
        return buf.getvalue()

    def write(self, ids: np.ndarray) -> None:
        data = np.ascontiguousarray(ids, dtype=self.dtype).data
        self.sha.update(data)
        self.f.write(data)
        self.n += len(ids)

    def close(self) -> None:
        """The file complete, synced and closed (still under its temporary name)."""
        header = self._header(self.n)
        if len(header) != len(self.header):  # cannot happen for 1-D arrays; never corrupt
            raise RuntimeError("the .npy header changed length")
        self.f.seek(0)
        self.f.write(header)
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        _normal_permissions(self.tmp)

    def discard(self) -> None:
        if not self.f.closed:
            self.f.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


class _IdsMemory:
    """Ids collected in memory (cache off or unwritable)."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.parts, self.n = [], 0
        self.sha = hashlib.sha256()

    def write(self, ids: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=self.dtype)
        self.sha.update(ids.data)
        self.parts.append(ids)
        self.n += len(ids)

    def array(self) -> np.ndarray:
        ids = np.concatenate(self.parts) if self.parts else np.empty(0, self.dtype)
        ids.flags.writeable = False
        return ids

    def close(self) -> None:
        pass

    def discard(self) -> None:
        self.parts = []


# ---------------------------------------------------------------------------------------
# The cache folder
# ---------------------------------------------------------------------------------------
def cache_root() -> Path:
    """npgated's per-user cache folder: ``$XDG_CACHE_HOME/npgated`` or ``~/.cache/npgated``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "npgated"


def cache_dir():
    """The id cache's folder, or None when it is turned off (``NPGATED_CORPUS_CACHE=off``)."""
    value = os.environ.get(CACHE_ENV_VAR, "").strip()
    if value.lower() == "off":
        return None
    if value:
        return Path(value).expanduser()
    return cache_root() / "corpus-ids"


def _key(**fields) -> str:
    return hashlib.sha256(
        json.dumps({"format": _FORMAT, **fields}, sort_keys=True).encode("utf-8")
    ).hexdigest()[:40]


class _Cache:
    """Reading, writing and pruning the entries of one cache folder (None: no cache).

    An id entry is ``<key>.ids.npy`` with ``<key>.ids.json`` (its length, dtype, SHA-256 of
    the ids, unknown-token count); a vocabulary entry is ``<key>.vocab.json``. Nothing is
    renamed into place before :meth:`commit`; :meth:`discard` removes what was staged.
    """

    _NAME = re.compile(r"^[0-9a-f]{40}\.(ids\.npy|ids\.json|vocab\.json)$")

    def __init__(self, folder):
        self.folder = None if folder is None else Path(folder)
        self.staged = []  # (temporary path, final path, json text or None)
        self.sinks = []
        self.created = False  # the folder made by this load (removed again on bad input)

    def _mkdir(self) -> None:
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            self.created = True

    # -- reading --
    def _json(self, path: Path):
        if not path.is_file():
            return None
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise TypeError(f"a JSON {type(meta).__name__}, not an object")
            return meta
        except (OSError, TypeError, ValueError) as exc:
            self._ignore(path, f"unreadable ({exc})")
            return None

    def _ignore(self, path, problem):
        logger.warning(
            "ignoring the corpus cache entry %s: %s; tokenising the text again", path, problem
        )

    def read_vocab(self, key: str):
        if self.folder is None:
            return None
        path = self.folder / f"{key}.vocab.json"
        meta = self._json(path)
        if meta is None:
            return None
        try:
            vocab = Vocabulary(meta["tokens"], meta["level"], meta.get("source"))
            if vocab.checksum != meta["checksum"]:
                raise ValueError("the tokens do not match their checksum")
        except (KeyError, TypeError, ValueError) as exc:
            self._ignore(path, str(exc))
            return None
        _touch(path)
        return vocab

    def read_ids(self, key: str, dtype):
        """``(memory-mapped ids, meta)`` of an entry whose checksum holds, else None."""
        if self.folder is None:
            return None
        meta_path = self.folder / f"{key}.ids.json"
        path = self.folder / f"{key}.ids.npy"
        meta = self._json(meta_path)
        if meta is None:
            return None
        try:
            ids = np.load(path, mmap_mode="r", allow_pickle=False)
            if ids.dtype != np.dtype(dtype) or ids.shape != (meta["n_tokens"],):
                raise ValueError(
                    f"ids of dtype {ids.dtype} and shape {ids.shape}, expected "
                    f"{np.dtype(dtype)} and ({meta['n_tokens']},)"
                )
            if _sha256_of(Source(path, ids.offset, ids.offset + ids.nbytes)) != meta["ids_sha256"]:
                raise ValueError("the ids do not match their checksum (corrupted or truncated)")
        except FileNotFoundError:
            return None
        except (OSError, KeyError, TypeError, ValueError, EOFError) as exc:
            self._ignore(path, str(exc))
            return None
        _touch(path)
        _touch(meta_path)
        return ids, meta

    # -- writing: staged, then committed all together --
    def ids_sink(self, dtype):
        if self.folder is not None:
            try:
                self._mkdir()
                sink = _IdsFile(self.folder, dtype)
            except OSError as exc:
                self._unwritable(exc)
            else:
                self.sinks.append(sink)
                return sink
        return _IdsMemory(dtype)

    def scratch(self):
        """A temporary file for provisional ids (deleted when closed, even on a crash)."""
        if self.folder is not None:
            try:
                self._mkdir()
                return tempfile.TemporaryFile(dir=self.folder, prefix=".scratch.")
            except OSError as exc:
                self._unwritable(exc)
        return None

    def _unwritable(self, exc):
        if self.folder not in _unwritable_reported:
            _unwritable_reported.add(self.folder)
            logger.warning(
                "cannot write the corpus cache in %s (%s): the ids stay in memory; "
                "set %s to a writable folder, or to 'off'",
                self.folder,
                exc,
                CACHE_ENV_VAR,
            )
        self.folder = None

    def stage_ids(self, key: str, sink, meta: dict):
        """The array to use now: the staged file memory-mapped, or the in-memory ids."""
        sink.close()
        meta = {
            **meta,
            "n_tokens": sink.n,
            "dtype": sink.dtype.name,
            "ids_sha256": sink.sha.hexdigest(),
        }
        if isinstance(sink, _IdsMemory):
            return sink.array(), meta
        final = self.folder / f"{key}.ids.npy"
        self.staged.append((sink.tmp, final, None))
        self.staged.append((None, self.folder / f"{key}.ids.json", json.dumps(meta, indent=1)))
        return np.load(sink.tmp, mmap_mode="r", allow_pickle=False), meta

    def stage_vocab(self, key: str, vocab: Vocabulary, meta: dict):
        if self.folder is None:
            return
        text = json.dumps({**meta, **vocab.to_dict()}, ensure_ascii=False)
        self.staged.append((None, self.folder / f"{key}.vocab.json", text))

    def commit(self) -> None:
        """Rename the staged files into place (id files before the JSON that vouches for
        them) and prune the folder. A failure here is logged: the run goes on."""
        try:
            for tmp, final, text in self.staged:
                if text is not None:
                    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".meta.", suffix=".tmp")
                    with os.fdopen(fd, "w", encoding="utf-8") as f:
                        f.write(text)
                    _normal_permissions(tmp)
                os.replace(tmp, final)
        except OSError as exc:
            logger.warning("could not save the corpus ids in the cache %s (%s)", self.folder, exc)
        finally:
            self.staged = []
            self.sinks = []
        if self.folder is not None:
            _prune(self.folder)

    def discard(self) -> None:
        for sink in self.sinks:
            sink.discard()
        self.sinks, self.staged = [], []
        if self.created:
            try:
                self.folder.rmdir()  # only if empty
            except OSError:
                pass


def _normal_permissions(path) -> None:
    """mkstemp creates 0600: give the file the permissions ``open`` would (0666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _touch(path: Path) -> None:
    try:
        os.utime(path)  # recently used: kept by _prune
    except OSError:
        pass


def _prune(folder: Path) -> None:
    """Remove the least recently used entries beyond :data:`_CACHE_MAX_ENTRIES` per kind,
    and temporary files a killed process left behind."""
    try:
        names = list(folder.iterdir())
        now = time.time()
        for p in names:
            if (
                p.name.startswith(".")
                and p.name.endswith(".tmp")
                and now - p.stat().st_mtime > _STALE_SECONDS
            ):
                p.unlink()
        for kind in ("ids.json", "vocab.json"):
            entries = sorted(
                (p for p in names if _Cache._NAME.match(p.name) and p.name.endswith(kind)),
                key=lambda p: p.stat().st_mtime_ns,
            )
            for old in entries[:-_CACHE_MAX_ENTRIES]:
                old.unlink()
                if kind == "ids.json":
                    old.with_name(old.name.replace(".json", ".npy")).unlink(missing_ok=True)
    except OSError:  # removed meanwhile by another process: prune next time
        pass


# ---------------------------------------------------------------------------------------
# Tokenising one part
# ---------------------------------------------------------------------------------------
# Word level, vectorised. str.split() separates words at the characters for which
# str.isspace() is true: 10 ASCII ones (the table below) and 17 others, which a piece of text
# rarely holds; those are replaced by a space first (the same separation), so that the words
# can be found in the UTF-8 bytes with NumPy: a word starts where a non-space byte follows a
# space. (tests/data/test_corpus.py checks both lists against str.isspace over all of Unicode.)
_SPACE = np.zeros(256, dtype=bool)
_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
_UNICODE_SPACES = (
    "\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_UNICODE_SPACE_BYTES = tuple(c.encode("utf-8") for c in _UNICODE_SPACES)
_TO_SPACE = str.maketrans({c: " " for c in _UNICODE_SPACES})
_KEY_BYTES = 16  # a word of up to 16 UTF-8 bytes is keyed by those bytes: two uint64
_LOW = np.array([(1 << 8 * min(n, 8)) - 1 for n in range(_KEY_BYTES + 1)], dtype=np.uint64)
_HIGH = np.array([(1 << 8 * max(n - 8, 0)) - 1 for n in range(_KEY_BYTES + 1)], dtype=np.uint64)
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F))  # odd multipliers


def _key_of(word: str):
    """``(low, high)``: the uint64 key of a word of up to 16 UTF-8 bytes (its bytes,
    zero-padded, little-endian, in two halves), or None for a longer (or empty) word."""
    data = word.encode("utf-8")
    if not 0 < len(data) <= _KEY_BYTES:
        return None
    data = data.ljust(_KEY_BYTES, b"\0")
    return int.from_bytes(data[:8], "little"), int.from_bytes(data[8:], "little")


_EOS_KEY = _key_of(EOS)


def _word_spans(data: bytes):
    """``(padded, starts, ends)``: the words of UTF-8 ``data`` (white space ASCII only) are
    ``data[starts[i]:ends[i]]``; ``padded`` is ``data`` and 16 zero bytes."""
    padded = data + bytes(_KEY_BYTES)  # every 16-byte read of _word_keys stays inside
    space = _SPACE[np.frombuffer(data, dtype=np.uint8)].view(np.int8)
    edge = np.diff(space, prepend=np.int8(1), append=np.int8(1))
    starts = np.flatnonzero(edge == -1)  # a non-space after a space: a word begins
    ends = np.flatnonzero(edge == 1)  # a space (or the end) after a non-space
    return padded, starts, ends


def _word_keys(padded: bytes, starts, ends):
    """``(low, high, short)``: the two uint64 halves of each word's key and whether it has
    one (up to 16 bytes); a longer word gets low = 0, which no word's key has."""
    lengths = ends - starts
    short = lengths <= _KEY_BYTES
    n_bytes = len(padded) - _KEY_BYTES
    # the 8 bytes at every offset, read unaligned, then masked to the word's length
    at = np.ndarray((n_bytes,), dtype="<u8", buffer=padded, strides=(1,))
    at8 = np.ndarray((n_bytes,), dtype="<u8", buffer=padded, offset=8, strides=(1,))
    low = np.zeros(len(starts), dtype=np.uint64)
    high = np.zeros(len(starts), dtype=np.uint64)
    s, length = starts[short], lengths[short]
    low[short] = at[s] & _LOW[length]
    high[short] = at8[s] & _HIGH[length]
    return low, high, short


class _WordTable:
    """``word -> id`` for the words of UTF-8 byte strings, found and looked up with NumPy.

    A word of up to 16 bytes (nearly every word of the languages written with spaces) is its
    bytes as a key of two uint64 (exact: accepted text holds no NUL byte that could be
    mistaken for the padding), held in an open-addressing hash table of NumPy arrays with
    linear probing: a lookup of all of a chunk's tokens at once is a few vectorised rounds,
    one probe further for the tokens still unresolved each time. Longer words are looked up
    one at a time in a dict. A newline is the word ``<eos>`` (PTB's rule), so ``<eos>``
    written in the text is the same token.

    Building (``assign=True``) gives each new word the next id and records the position of
    its first appearance (:attr:`first`); with a fixed vocabulary (:meth:`of`) an unknown
    word is ``unk`` and counted in :attr:`misses`.
    """

    def __init__(self, capacity: int = 1 << 12):
        size = 1 << max(int(capacity * 2 - 1).bit_length(), 4)  # at most half full
        self.low = np.zeros(size, dtype=np.uint64)  # 0: an empty slot (no word has low 0)
        self.high = np.zeros(size, dtype=np.uint64)
        self.slot_ids = np.zeros(size, dtype=np.uint32)
        self.filled = 0
        self.long = {}  # words of more than 16 bytes
        self.n = 0  # ids given so far
        self.first = np.empty(1024, dtype=np.int64)  # token position of each id's first use
        self.unk = None
        self.misses = 0

    @classmethod
    def of(cls, vocab: Vocabulary) -> _WordTable:
        table = cls(len(vocab))
        ids = [
            i
            for i, t in enumerate(vocab.tokens)  # a token with white space is never met
            if t and "".join(t.split()) == t
        ]
        data = " ".join(vocab.tokens[i] for i in ids).encode("utf-8")
        padded, starts, ends = _word_spans(data)
        low, high, short = _word_keys(padded, starts, ends)
        ids = np.array(ids, dtype=np.uint32)
        table._insert(low[short], high[short], ids[short])
        for i, a, z in zip(ids[~short].tolist(), starts[~short].tolist(), ends[~short].tolist()):
            table.long[data[a:z].decode("utf-8")] = i
        table.n, table.unk = len(vocab), vocab.unk_id
        return table

    # -- the hash table --
    def _slot(self, low, high):
        shift = np.uint64(64 - (len(self.low).bit_length() - 1))
        return ((low * _MIX[0]) ^ (high * _MIX[1])) >> shift

    def _find(self, low, high) -> np.ndarray:
        """The slot of each key, -1 where it is absent."""
        mask = np.uint64(len(self.low) - 1)
        found = np.full(len(low), -1, dtype=np.int64)
        todo = np.arange(len(low))
        slot = self._slot(low, high)
        while len(todo):
            at_low = self.low[slot]
            hit = (at_low == low[todo]) & (self.high[slot] == high[todo])
            found[todo[hit]] = slot[hit]
            go_on = ~hit & (at_low != 0)  # occupied by another word: probe the next slot
            todo, slot = todo[go_on], (slot[go_on] + np.uint64(1)) & mask
        return found

    def _insert(self, low, high, ids) -> None:
        """Put keys that are absent (and distinct) into the table, growing it when needed."""
        if 2 * (self.filled + len(low)) > len(self.low):
            old = self.low != 0
            keep = self.low[old], self.high[old], self.slot_ids[old]
            size = len(self.low)
            while 2 * (self.filled + len(low)) > size:
                size *= 2
            self.low = np.zeros(size, dtype=np.uint64)
            self.high = np.zeros(size, dtype=np.uint64)
            self.slot_ids = np.zeros(size, dtype=np.uint32)
            self.filled = 0
            self._insert(*keep)
        mask = np.uint64(len(self.low) - 1)
        todo = np.arange(len(low))
        slot = self._slot(low, high)
        while len(todo):
            free = np.flatnonzero(self.low[slot] == 0)
            taken, first = np.unique(slot[free], return_index=True)  # one key per free slot
            winners = todo[free[first]]
            self.low[taken], self.high[taken] = low[winners], high[winners]
            self.slot_ids[taken] = ids[winners]
            placed = np.zeros(len(todo), dtype=bool)
            placed[free[first]] = True
            todo, slot = todo[~placed], (slot[~placed] + np.uint64(1)) & mask
        self.filled += len(low)

    def words(self) -> list[str]:
        """The word of every id (building)."""
        out = [""] * self.n
        used = np.flatnonzero(self.low)
        for low, high, i in zip(
            self.low[used].tolist(), self.high[used].tolist(), self.slot_ids[used].tolist()
        ):
            data = low.to_bytes(8, "little") + high.to_bytes(8, "little")
            out[i] = data.rstrip(b"\0").decode("utf-8")
        for word, i in self.long.items():
            out[i] = word
        return out

    def _new_ids(self, m: int, positions) -> np.ndarray:
        ids = np.arange(self.n, self.n + m, dtype=np.uint32)
        if self.n + m > len(self.first):
            self.first = np.concatenate(
                [self.first, np.empty(max(m, len(self.first)), dtype=np.int64)]
            )
        self.first[self.n : self.n + m] = positions
        self.n += m
        return ids

    # -- text -> ids --
    def encode(self, text: str, offset: int = 0, assign: bool = False) -> np.ndarray:
        """The (n,) uint32 ids of the word tokens of ``text`` (whole lines, newlines as
        ``\n``); ``offset``: the position of its first token in the whole corpus."""
        data = text.encode("utf-8")
        if not data.isascii() and any(s in data for s in _UNICODE_SPACE_BYTES):
            data = text.translate(_TO_SPACE).encode("utf-8")
        padded, starts, ends = _word_spans(data)
        newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
        n = len(starts) + len(newlines)
        eos_at = np.searchsorted(starts, newlines) + np.arange(len(newlines))  # token order
        word_at = np.ones(n, dtype=bool)
        word_at[eos_at] = False
        word_at = np.flatnonzero(word_at)
        low = np.empty(n, dtype=np.uint64)
        high = np.empty(n, dtype=np.uint64)
        low[eos_at], high[eos_at] = _EOS_KEY
        low[word_at], high[word_at], short = _word_keys(padded, starts, ends)
        ids = np.empty(n, dtype=np.uint32)
        self._short(low, high, ids, offset, assign)
        long_at = word_at[~short]
        if len(long_at):
            self._long(data, long_at, starts[~short], ends[~short], ids, offset, assign)
        return ids

    def _short(self, low, high, ids, offset, assign) -> None:
        """ids of the tokens with a key (those with low 0 are left for _long)."""
        slot = self._find(low, high)
        found = slot >= 0
        ids[found] = self.slot_ids[slot[found]]
        at = np.flatnonzero(~found & (low != 0))
        if not len(at):
            return
        if not assign:
            ids[at] = self.unk
            self.misses += len(at)
            return
        # the new words, each once, in order of first appearance (a stable sort keeps it)
        order = np.lexsort((high[at], low[at]))
        lo, hi = low[at][order], high[at][order]
        starts = np.flatnonzero(np.r_[True, (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])])
        group = np.cumsum(np.r_[False, (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])])
        new_ids = self._new_ids(len(starts), offset + at[order[starts]])
        ids[at[order]] = new_ids[group]
        self._insert(lo[starts], hi[starts], new_ids)

    def _long(self, data, at, starts, ends, ids, offset, assign) -> None:
        """ids of the words of more than 16 bytes, one dict lookup each."""
        long = self.long
        found = []
        for t, a, z in zip(at.tolist(), starts.tolist(), ends.tolist()):
            word = data[a:z].decode("utf-8")
            i = long.get(word)
            if i is None:
                if assign:
                    i = long[word] = int(self._new_ids(1, offset + t)[0])
                else:
                    i = self.unk
                    self.misses += 1
            found.append(i)
        ids[at] = found


def _encode_fixed(
    source: Source, vocab: Vocabulary, codec: str, sink, chunk_size: int, what: str
) -> int:
    """Write the ids of ``source`` under a given vocabulary to ``sink``; the unknown count."""
    if vocab.unk_id is None:
        raise DataError(f"the vocabulary has no {UNK!r}: it cannot encode unseen tokens")
    if vocab.level == "word":
        table = _WordTable.of(vocab)
        for text in _word_texts(source, codec, chunk_size, what):
            sink.write(table.encode(text))
        return table.misses
    table = np.full(_CODE_POINTS, vocab.unk_id, dtype=sink.dtype)
    for i, token in enumerate(vocab.tokens):
        if token != UNK:
            table[ord(token)] = i
    unknown = 0
    for cps in _char_batches(source, codec, chunk_size, what):
        ids = table[cps]
        unknown += int(np.count_nonzero(ids == vocab.unk_id))
        sink.write(ids)
    return unknown


def _choose(counts: np.ndarray, unk_index, min_count: int, max_vocab) -> np.ndarray:
    """Provisional ids kept in the vocabulary, in order: those seen ``min_count`` times,
    at most ``max_vocab - 1`` (the most frequent; ties: the earlier), a literal ``<unk>``
    always (it takes one of the places)."""
    keep = counts >= min_count
    if unk_index is not None:
        keep[unk_index] = False
    candidates = np.flatnonzero(keep)
    if max_vocab is not None and len(candidates) > max_vocab - 1:
        order = np.argsort(-counts[candidates], kind="stable")[: max_vocab - 1]
        candidates = np.sort(candidates[order])
    if unk_index is not None:
        candidates = np.sort(np.append(candidates, unk_index))
    return candidates


def _count_into(counts: np.ndarray, ids: np.ndarray, size: int) -> np.ndarray:
    """Add the occurrences of ``ids`` (< size) to ``counts``, grown by doubling as needed."""
    if len(counts) < size:
        grown = np.zeros(max(size, 2 * len(counts)), dtype=np.int64)
        grown[: len(counts)] = counts
        counts = grown
    if size > 8 * len(ids):  # many distinct words, few tokens: sort rather than scan V
        values, c = np.unique(ids, return_counts=True)
        counts[values] += c
    else:
        c = np.bincount(ids)
        counts[: len(c)] += c
    return counts


def _build_word(source, codec, cache: _Cache, chunk_size, min_count, max_vocab, what):
    """First pass at word level: provisional ids and their counts, then the vocabulary.

    Provisional ids are given as words are met (in :class:`_WordTable`'s order); the
    vocabulary puts the kept words in order of first appearance, and ``table`` maps
    provisional ids to final ones for the second, array-only pass.
    """
    words = _WordTable()
    counts = np.zeros(1024, dtype=np.int64)
    scratch = cache.scratch()  # provisional ids (uint32), or in memory without a cache
    parts = []
    n = 0
    try:
        for text in _word_texts(source, codec, chunk_size, what):
            ids = words.encode(text, offset=n, assign=True)
            counts = _count_into(counts, ids, words.n)
            n += len(ids)
            if scratch is not None:
                scratch.write(ids.data)
            else:
                parts.append(ids)
        order = np.argsort(words.first[: words.n], kind="stable")  # by first appearance
        spelled = words.words()
        by_first = [spelled[i] for i in order]
        counts = counts[: words.n][order]
        unk_rank = by_first.index(UNK) if UNK in by_first else None
        kept = _choose(counts, unk_rank, min_count, max_vocab)  # ranks, in order
        tokens = [by_first[r] for r in kept]
        if unk_rank is None:
            tokens.append(UNK)
        vocab = Vocabulary(tokens, "word")
        table = np.full(words.n, vocab.unk_id, dtype=vocab.dtype)  # provisional -> final
        table[order[kept]] = np.arange(len(kept), dtype=vocab.dtype)
        unknown = int(counts.sum() - counts[kept].sum())
    except BaseException:
        if scratch is not None:
            scratch.close()
        raise

    def final_ids():  # the second pass: arrays only
        if scratch is None:
            for part in parts:
                yield table[part]
            return
        scratch.seek(0)
        step = max(chunk_size // 4, 1)
        while True:
            part = np.fromfile(scratch, dtype=np.uint32, count=step)
            if not len(part):
                return
            yield table[part]

    return vocab, n, unknown, final_ids, scratch


def _build_char(source, codec, chunk_size, min_count, max_vocab, what):
    """First pass at character level: code point counts."""
    counts = np.zeros(_CODE_POINTS, dtype=np.int64)
    n = 0
    for cps in _char_batches(source, codec, chunk_size, what):
        c = np.bincount(cps)
        counts[: len(c)] += c
        n += len(cps)
    present = np.flatnonzero(counts)
    kept = present[_choose(counts[present], None, min_count, max_vocab)]
    vocab = Vocabulary([chr(c) for c in kept] + [UNK], "char")
    unknown = int(n - counts[kept].sum())
    return vocab, n, unknown


# ---------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------
@dataclass
class Corpus:
    """The token ids of a corpus's splits with their vocabulary.

    Attributes
    ----------
    train, valid, test : (n,) uint16/uint32 numpy.ndarray or None
        Read-only ids, memory-mapped from the cache (in memory when it is off); None for a
        split not asked for.
    vocab : Vocabulary
    sources : dict[str, Source]
    unknown : dict[str, int]
        Tokens of each split that became ``<unk>`` (train: below ``min_count`` or beyond
        ``max_vocab``; valid/test: also never seen in train).
    """

    train: np.ndarray | None
    valid: np.ndarray | None
    test: np.ndarray | None
    vocab: Vocabulary
    sources: dict = field(default_factory=dict)
    unknown: dict = field(default_factory=dict)

    def __getitem__(self, split: str):
        return getattr(self, _split_name(split))


def _too_short(split: str, source: Source, n: int, batch, unit: str):
    N, T = batch
    if split == "train":
        need, what = N * T + 1, f"one training batch of N x T = {N} x {T} tokens"
        fix = "lower --batch-size or --time-size, or use a longer text"
    else:
        need, what = N + 1, f"evaluation in N = {N} streams"
        fix = (
            "lower --batch-size, or give it more text"
            if source.whole
            else "raise its share in --fractions, lower --batch-size, or use a longer text"
        )
    if n < need:
        part = source.describe() if source.whole else f"the {split} part of {source.describe()}"
        raise DataError(f"{part} has {n:,} {unit}, too short for {what} (it needs {need:,}): {fix}")


def load_corpus(
    path,
    level: str = "word",
    *,
    fractions=DEFAULT_FRACTIONS,
    encoding: str = "utf-8",
    min_count: int = 1,
    max_vocab: int | None = None,
    vocab: Vocabulary | None = None,
    splits=SPLITS,
    batch=None,
    cache: bool = True,
    chunk_size: int = CHUNK_SIZE,
) -> Corpus:
    """Tokenise a corpus (or read its ids from the cache) into memory-mapped id arrays.

    Parameters
    ----------
    path : str or Path
        A folder with ``train.txt``, ``valid.txt``, ``test.txt`` (or PTB's names), or one
        text file cut by ``fractions``.
    level : {"word", "char"}
    fractions : str or 3 floats
        Train, valid, test shares of a single file.
    encoding : str
        Codec of the text (default UTF-8).
    min_count : int
        Tokens seen fewer times in train become ``<unk>``.
    max_vocab : int, optional
        At most this many tokens, ``<unk>`` included: the most frequent.
    vocab : Vocabulary, optional
        Use this vocabulary (a trained run's) instead of building one; ``level`` must agree.
    splits : iterable of str
        Splits to return (the vocabulary always comes from train).
    batch : (N, T), optional
        Refuse a train part shorter than one batch (``N * T + 1`` tokens) and valid/test
        parts shorter than ``N + 1``, before anything is written.
    cache : bool
        Use the id cache (:func:`cache_dir`); False keeps the ids in memory.
    chunk_size : int
        Bytes read and tokenised at a time.

    Returns
    -------
    Corpus

    Raises
    ------
    FileNotFoundError, DataError, ValueError
        Bad input (see the module docstring): one line, nothing written to the cache.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    if vocab is not None and vocab.level != level:
        raise DataError(
            f"the run's vocabulary is {vocab.describe()}: give --level {vocab.level}, not {level}"
        )
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be a positive integer, got {min_count!r}")
    if max_vocab is not None and (
        isinstance(max_vocab, bool) or not isinstance(max_vocab, int) or max_vocab < 2
    ):
        raise ValueError(
            f"max_vocab must be an integer >= 2 (one token and {UNK}), got {max_vocab!r}"
        )
    chunk_size = int(chunk_size)
    codec = codec_name(encoding)
    wanted = [_split_name(s) for s in splits]
    sources = find_sources(path, fractions, encoding)
    store = _Cache(cache_dir() if cache else None)
    arrays, unknown = {}, {}
    try:
        needed = wanted if vocab is not None else dict.fromkeys(["train", *wanted])
        sha = {s: _sha256_of(sources[s]) for s in needed}
        if vocab is None:
            options = {
                "level": level,
                "encoding": codec,
                "min_count": min_count,
                "max_vocab": max_vocab,
                "text": sha["train"],
            }
            vocab_key = _key(kind="vocab", **options)
            vocab = store.read_vocab(vocab_key)
            if vocab is None:
                vocab = _build_train(
                    sources["train"],
                    codec,
                    level,
                    store,
                    chunk_size,
                    min_count,
                    max_vocab,
                    sha["train"],
                    batch,
                    arrays,
                    unknown,
                )
                source = {
                    "corpus": str(Path(path).expanduser().resolve()),
                    "train_sha256": sha["train"],
                    "encoding": codec,
                    "min_count": min_count,
                    "max_vocab": max_vocab,
                }
                vocab = Vocabulary(vocab.tokens, level, source)
                store.stage_vocab(vocab_key, vocab, {"format": _FORMAT, "kind": "vocab"})
        for split in wanted:
            if split in arrays:
                continue
            ids, meta = _ids_of(
                sources[split], split, vocab, codec, store, chunk_size, sha[split], level
            )
            if batch is not None:
                _too_short(split, sources[split], len(ids), batch, vocab.unit)
            arrays[split], unknown[split] = ids, meta.get("unknown", 0)
        store.commit()
    except BaseException:
        store.discard()
        raise
    for split in wanted:
        if unknown.get(split):
            n = len(arrays[split])
            why = (
                "below --min-count or beyond --max-vocab"
                if split == "train"
                else "not in the vocabulary"
            )
            logger.info(
                "%s: %s of %s %s (%.2f %%) %s, read as %s",
                split,
                f"{unknown[split]:,}",
                f"{n:,}",
                vocab.unit,
                100.0 * unknown[split] / n,
                why,
                UNK,
            )
    logger.info(
        "corpus %s (%s): %s",
        path,
        vocab.describe(),
        ", ".join(f"{s} {len(arrays[s]):,}" for s in wanted),
    )
    return Corpus(
        train=arrays.get("train"),
        valid=arrays.get("valid"),
        test=arrays.get("test"),
        vocab=vocab,
        sources={s: sources[s] for s in wanted},
        unknown={s: unknown.get(s, 0) for s in wanted},
    )


def _ids_meta(level, codec, vocab, text_sha):
    return {
        "kind": "ids",
        "level": level,
        "encoding": codec,
        "vocab": vocab.checksum,
        "text": text_sha,
    }


def _ids_of(source, split, vocab, codec, store: _Cache, chunk_size, text_sha, level):
    """``(ids, meta)`` of one part under ``vocab``: from the cache, or tokenised and staged."""
    fields = _ids_meta(level, codec, vocab, text_sha)
    key = _key(**fields)
    hit = store.read_ids(key, vocab.dtype)
    if hit is not None:
        logger.debug("%s: %d ids from the cache", split, len(hit[0]))
        return hit
    sink = store.ids_sink(vocab.dtype)
    unknown = _encode_fixed(
        source, vocab, codec, sink, chunk_size, f"tokenising {split} ({source.describe()})"
    )
    return store.stage_ids(key, sink, {**fields, "format": _FORMAT, "unknown": unknown})


def _build_train(
    source,
    codec,
    level,
    store: _Cache,
    chunk_size,
    min_count,
    max_vocab,
    text_sha,
    batch,
    arrays,
    unknown,
) -> Vocabulary:
    """Build the vocabulary from the train part; its ids go to ``arrays["train"]``."""
    what = f"tokenising train ({source.describe()})"
    tic = time.perf_counter()
    if level == "word":
        vocab, n, unk, final_ids, scratch = _build_word(
            source, codec, store, chunk_size, min_count, max_vocab, what
        )
    else:
        vocab, n, unk = _build_char(source, codec, chunk_size, min_count, max_vocab, what)
        scratch = None
    try:
        if n == 0:
            raise DataError(f"{source.describe()} holds no words, only white space")
        if batch is not None:
            _too_short("train", source, n, batch, vocab.unit)
        fields = _ids_meta(level, codec, vocab, text_sha)
        sink = store.ids_sink(vocab.dtype)
        if level == "word":
            for ids in final_ids():
                sink.write(ids)
        else:
            _encode_fixed(source, vocab, codec, sink, chunk_size, what + ", pass 2")
    finally:
        if scratch is not None:
            scratch.close()
    ids, _ = store.stage_ids(_key(**fields), sink, {**fields, "format": _FORMAT, "unknown": unk})
    arrays["train"], unknown["train"] = ids, unk
    seconds = time.perf_counter() - tic
    logger.info(
        "train: %s %s, vocabulary of %s (%.1f s, %.1f MB/s)",
        f"{n:,}",
        vocab.unit,
        f"{len(vocab):,}",
        seconds,
        source.size / 1e6 / max(seconds, 1e-9),
    )
    return vocab


def check_unchanged(
    vocab: Vocabulary, path, *, fractions=DEFAULT_FRACTIONS, encoding: str = "utf-8"
) -> None:
    """Refuse a corpus whose train text is not the one ``vocab`` was built from.

    Raises
    ------
    DataError
        When the SHA-256 of the train part differs from ``vocab.source["train_sha256"]``
        (nothing is checked for a vocabulary that does not record it).
    """
    recorded = vocab.source.get("train_sha256")
    if recorded is None:
        return
    source = find_sources(path, fractions, encoding, splits=["train"])["train"]
    if _sha256_of(source) != recorded:
        raise DataError(
            f"the run's corpus {path} has changed since training (its train text is not the "
            "one the run's vocabulary was built from, so the vocabulary may differ): evaluate "
            f"it under the run's vocabulary with --corpus {path} (unseen tokens become "
            f"{UNK}), or train again"
        )


def load_text(
    path,
    vocab: Vocabulary,
    *,
    split: str = "test",
    encoding: str = "utf-8",
    batch_size: int | None = None,
    cache: bool = True,
    chunk_size: int = CHUNK_SIZE,
):
    """The ids of another text under a run's vocabulary (``npgated eval RUN --corpus PATH``).

    Parameters
    ----------
    path : str or Path
        A corpus folder (its ``split`` file is read) or one text file (read whole).
    vocab : Vocabulary
        Unseen tokens become ``<unk>``; their count is logged and returned.
    split : str
    encoding : str
    batch_size : int, optional
        Refuse a text shorter than ``batch_size + 1`` tokens (evaluation in N streams).
    cache, chunk_size : as in :func:`load_corpus`.

    Returns
    -------
    ids : (n,) numpy.ndarray (memory-mapped from the cache when it is on)
    source : Source
    unknown : int
    """
    codec = codec_name(encoding)
    p = Path(path).expanduser()
    if p.is_dir():
        source = find_sources(p, encoding=encoding, splits=[split])[_split_name(split)]
    elif p.is_file():
        source = _whole_file(p, codec)
    else:
        raise FileNotFoundError(
            f"corpus {p} not found: give a folder with train.txt, "
            "valid.txt and test.txt, or one text file"
        )
    store = _Cache(cache_dir() if cache else None)
    try:
        ids, meta = _ids_of(
            source,
            _split_name(split),
            vocab,
            codec,
            store,
            chunk_size,
            _sha256_of(source),
            vocab.level,
        )
        if batch_size is not None:
            _too_short(_split_name(split), source, len(ids), (batch_size, 1), vocab.unit)
        store.commit()
    except BaseException:
        store.discard()
        raise
    unknown = meta.get("unknown", 0)
    if unknown:
        logger.info(
            "%s: %s of %s %s (%.2f %%) not in the run's vocabulary, read as %s",
            source.describe(),
            f"{unknown:,}",
            f"{len(ids):,}",
            vocab.unit,
            100.0 * unknown / len(ids),
            UNK,
        )
    return ids, source, unknown
