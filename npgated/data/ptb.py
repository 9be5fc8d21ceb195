"""The Penn Treebank language-modelling corpus (Mikolov's split): files, vocabulary, ids.

The three standard files ``ptb.{train,valid,test}.txt`` hold one sentence per line, words
separated by spaces, rare words already replaced by ``<unk>`` and numbers by ``N``
(Marcus et al. 1993; the split and preprocessing of Mikolov et al. 2010, used by Zaremba et
al. 2014 and every PTB language-model paper since).

Conventions (the same as the book's ``dataset/ptb.py``, so word ids agree with it):

* every newline becomes an ``"<eos>"`` token appended after the words of its line;
* the vocabulary is built from the **train** split only, in order of first appearance
  (``"aer"`` is 0, ``"banknote"`` 1, ...), giving 10,000 words;
* the valid and test splits are encoded with the train vocabulary; a word that never
  appears in train is an error (it cannot happen with the real files);
* token counts are 929,589 / 73,760 / 82,430 for train / valid / test.

Where the files come from (first match wins):

1. the ``data_dir`` argument;
2. the environment variable ``NPGATED_DATA_DIR``;
3. a per-user cache, ``$XDG_CACHE_HOME/npgated/ptb`` (default ``~/.cache/npgated/ptb``),
   filled on first use by downloading the three files from :data:`PTB_URL` and checking
   each against its MD5 in :data:`PTB_MD5`. A download goes to a temporary file in the
   cache directory and is renamed into place (``os.replace``) only once its checksum
   matches, so an interrupted or corrupted download never leaves a half-written file.

A directory given explicitly (1 or 2) is never written to; its files are checksummed only
when asked (``verify=True`` or :func:`verify_checksums`), to keep loading fast.

This module is host-only code: it returns NumPy arrays; the training loop moves batches to
the device.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from npgated import backend

__all__ = [
    "DataError",
    "ENV_VAR",
    "EOS",
    "PTB_FILES",
    "PTB_MD5",
    "PTB_URL",
    "SPLITS",
    "UNK",
    "default_cache_dir",
    "download_ptb",
    "ids_to_words",
    "load_data",
    "resolve_data_dir",
    "verify_checksums",
    "vocab_checksum",
    "words_to_ids",
]

logger = logging.getLogger(__name__)

ENV_VAR = "NPGATED_DATA_DIR"
EOS = "<eos>"
UNK = "<unk>"
SPLITS = ("train", "valid", "test")
_ALIASES = {"val": "valid"}

PTB_FILES = {split: f"ptb.{split}.txt" for split in SPLITS}
PTB_URL = "https://raw.githubusercontent.com/tomsercu/lstm/master/data/ptb.{split}.txt"
PTB_MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}

_CHUNK = 1 << 20  # bytes read at a time when downloading or hashing


class DataError(RuntimeError):
    """The PTB files could not be obtained or are not the expected ones.

    Raised for a failed download (offline machine, HTTP error), a checksum mismatch, or a
    word in valid/test that the train vocabulary lacks. The message says how to point
    npgated at a folder that already holds the files (``NPGATED_DATA_DIR``).
    """


def _how_to_fix() -> str:
    files = ", ".join(PTB_FILES[s] for s in SPLITS)
    return (
        f"put the three files ({files}) in a folder and set {ENV_VAR}=/path/to/that/folder "
        "(or pass data_dir=...)"
    )


# ---------------------------------------------------------------------------------------
# Where the files are
# ---------------------------------------------------------------------------------------
def _split_name(split: str) -> str:
    name = _ALIASES.get(split, split)
    if name not in SPLITS:
        raise ValueError(
            f"unknown split {split!r}; valid splits are: {', '.join(SPLITS)} (or 'val')"
        )
    return name


def default_cache_dir() -> Path:
    """The per-user download cache: ``$XDG_CACHE_HOME/npgated/ptb`` or ``~/.cache/npgated/ptb``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "npgated" / "ptb"


def resolve_data_dir(data_dir=None, *, download: bool = True) -> Path:
    """The folder holding the three PTB files, downloading them into the cache if needed.

    Parameters
    ----------
    data_dir : str or Path, optional
        Use this folder. Otherwise ``$NPGATED_DATA_DIR``, otherwise :func:`default_cache_dir`.
    download : bool
        Fetch missing files into the cache folder (only the cache is ever written to).

    Returns
    -------
    Path
        The resolved (absolute) folder.

    Raises
    ------
    FileNotFoundError
        A folder given by ``data_dir`` or ``NPGATED_DATA_DIR`` lacks one of the files.
    DataError
        The cache lacks a file and it cannot be downloaded (or ``download=False``).
    """
    if data_dir is not None:
        where = "data_dir"
    elif os.environ.get(ENV_VAR):
        data_dir, where = os.environ[ENV_VAR], f"${ENV_VAR}"
    else:
        cache = default_cache_dir()
        missing = [s for s in SPLITS if not (cache / PTB_FILES[s]).is_file()]
        if missing:
            if not download:
                raise DataError(
                    f"PTB files {[PTB_FILES[s] for s in missing]} are not in the cache "
                    f"{cache} and download=False; {_how_to_fix()}"
                )
            download_ptb(cache, splits=missing)
        return cache.resolve()

    path = Path(data_dir).expanduser().resolve()
    for split in SPLITS:
        if not (path / PTB_FILES[split]).is_file():
            raise FileNotFoundError(
                f"PTB file {path / PTB_FILES[split]} not found (folder from {where}); "
                f"{_how_to_fix()}, or unset {ENV_VAR} and leave data_dir empty to "
                f"download them into {default_cache_dir()}"
            )
    return path


# ---------------------------------------------------------------------------------------
# Downloading and checking
# ---------------------------------------------------------------------------------------
def _urlopen(url: str, timeout: float):
    """Open ``url`` for reading (a seam: tests replace it to serve local bytes)."""
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (fixed https URL)


def _md5_of_file(path: Path) -> str:
    md5 = hashlib.md5()  # noqa: S324 (a checksum, not security)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            md5.update(chunk)
    return md5.hexdigest()


def download_ptb(dest_dir=None, *, splits=SPLITS, timeout: float = 60.0) -> Path:
    """Download PTB files into ``dest_dir`` (default: the cache), checking each MD5.

    Each file is streamed into a temporary file in ``dest_dir`` while its MD5 is computed,
    and renamed to ``ptb.<split>.txt`` with ``os.replace`` only if the checksum matches;
    on any failure the temporary file is removed, so nothing half-written is left behind.

    Parameters
    ----------
    dest_dir : str or Path, optional
        Target folder (created if needed); default :func:`default_cache_dir`.
    splits : iterable of str
        Which files to fetch.
    timeout : float
        Seconds before a stalled connection is abandoned.

    Returns
    -------
    Path
        ``dest_dir``.

    Raises
    ------
    DataError
        The download failed (offline, HTTP error) or a checksum did not match.
    """
    dest = Path(dest_dir) if dest_dir is not None else default_cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    for split in (_split_name(s) for s in splits):
        url = PTB_URL.format(split=split)
        target = dest / PTB_FILES[split]
        logger.info("downloading %s to %s", url, target)
        fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{target.name}.", suffix=".part")
        try:
            md5 = hashlib.md5()  # noqa: S324
            with os.fdopen(fd, "wb") as out:
                try:
                    with _urlopen(url, timeout) as response:
                        for chunk in iter(lambda: response.read(_CHUNK), b""):
                            md5.update(chunk)
                            out.write(chunk)
                except OSError as exc:  # URLError, HTTPError, timeouts are OSErrors
                    raise DataError(
                        f"could not download {url} ({exc}); {_how_to_fix()}"
                    ) from exc
            got = md5.hexdigest()
            if got != PTB_MD5[split]:
                raise DataError(
                    f"checksum mismatch for {url}: MD5 {got}, expected {PTB_MD5[split]} "
                    f"(nothing was saved); {_how_to_fix()}"
                )
            os.replace(tmp_name, target)
        finally:
            if os.path.exists(tmp_name):
                os.remove(tmp_name)
    return dest


def verify_checksums(data_dir=None) -> dict:
    """Check the MD5 of the three files in ``data_dir`` (resolved as in :func:`load_data`).

    Returns
    -------
    dict
        ``{split: md5}`` when every file matches.

    Raises
    ------
    DataError
        Naming every file whose checksum differs from :data:`PTB_MD5`.
    """
    path = resolve_data_dir(data_dir)
    found = {split: _md5_of_file(path / PTB_FILES[split]) for split in SPLITS}
    bad = [
        f"{path / PTB_FILES[s]}: MD5 {found[s]}, expected {PTB_MD5[s]}"
        for s in SPLITS
        if found[s] != PTB_MD5[s]
    ]
    if bad:
        raise DataError(
            "PTB files differ from the standard ones: " + "; ".join(bad) + f". {_how_to_fix()}"
        )
    return found


# ---------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------
def _read_words(path: Path) -> list[str]:
    """The tokens of one file: its words, with ``<eos>`` after every line."""
    try:
        with open(path, encoding="utf-8") as f:
            words = f.read().replace("\n", f" {EOS} ").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}. {_how_to_fix()}") from None
    if not words:
        raise DataError(f"{path} is empty: no tokens to load. {_how_to_fix()}")
    return words


def _file_key(path: Path):
    stat = path.stat()  # re-parse when the file changes
    return (str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _parse_train(key):
    words = _read_words(Path(key[0]))
    word_to_id = {w: i for i, w in enumerate(dict.fromkeys(words))}  # first appearance
    corpus = np.fromiter((word_to_id[w] for w in words), dtype=np.int32, count=len(words))
    corpus.flags.writeable = False
    return corpus, word_to_id


@functools.lru_cache(maxsize=8)
def _parse_split(key, train_key):
    _, word_to_id = _parse_train(train_key)
    words = _read_words(Path(key[0]))
    try:
        corpus = np.fromiter((word_to_id[w] for w in words), dtype=np.int32, count=len(words))
    except KeyError as exc:
        raise DataError(
            f"{key[0]} contains the word {exc.args[0]!r}, which is not in the training "
            "vocabulary; the valid/test files must use the train vocabulary "
            f"(map rare words to {UNK!r}). {_how_to_fix()}"
        ) from None
    corpus.flags.writeable = False
    return corpus


def load_data(split: str = "train", data_dir=None, *, verify: bool = False):
    """Load one PTB split as word ids, with the train-split vocabulary.

    Parameters
    ----------
    split : {"train", "valid", "val", "test"}
    data_dir : str or Path, optional
        Folder with the three files; default ``$NPGATED_DATA_DIR``, else the download cache.
    verify : bool
        Check the files' MD5 checksums first (about a tenth of a second).

    Returns
    -------
    corpus : (n_tokens,) int32 numpy.ndarray
        Word ids of the split, ``<eos>`` after every line (a fresh, writable copy).
    word_to_id : dict[str, int]
        The train vocabulary, ids in order of first appearance (10,000 words).
    id_to_word : dict[int, str]
        Its inverse.

    Notes
    -----
    Parsed results are cached in memory per (file, modification time), so loading a
    split again costs only a copy.
    """
    name = _split_name(split)
    path = resolve_data_dir(data_dir)
    if verify:
        verify_checksums(path)
    train_key = _file_key(path / PTB_FILES["train"])
    if name == "train":
        corpus, word_to_id = _parse_train(train_key)
    else:
        _, word_to_id = _parse_train(train_key)
        corpus = _parse_split(_file_key(path / PTB_FILES[name]), train_key)
    id_to_word = {i: w for w, i in word_to_id.items()}
    return corpus.copy(), dict(word_to_id), id_to_word


# ---------------------------------------------------------------------------------------
# Words <-> ids
# ---------------------------------------------------------------------------------------
def vocab_checksum(word_to_id: dict) -> str:
    """SHA-256 (hex) of the vocabulary: the words in id order joined by ``"\\n"``.

    Stored in checkpoints so that a model is never evaluated with a different vocabulary.

    Raises
    ------
    ValueError
        If the ids are not exactly ``0 .. V-1``.
    """
    words = sorted(word_to_id, key=word_to_id.__getitem__)
    ids = [word_to_id[w] for w in words]
    if ids != list(range(len(ids))):
        raise ValueError("word_to_id must map its words to the ids 0 .. V-1 exactly once each")
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()


def words_to_ids(words, word_to_id: dict) -> np.ndarray:
    """Encode words as an int32 id array.

    Parameters
    ----------
    words : str or sequence of str
        A string is split on whitespace (``"the cat <eos>"``).
    word_to_id : dict[str, int]

    Returns
    -------
    (n,) int32 numpy.ndarray

    Raises
    ------
    ValueError
        Naming the first unknown word (PTB maps rare words to ``<unk>``).
    """
    if isinstance(words, str):
        words = words.split()
    ids = []
    for position, w in enumerate(words):
        try:
            ids.append(word_to_id[w])
        except KeyError:
            hint = f"; use {UNK!r} for rare words" if UNK in word_to_id else ""
            raise ValueError(
                f"unknown word {w!r} at position {position}: not in the vocabulary "
                f"of {len(word_to_id)} words{hint}"
            ) from None
    return np.asarray(ids, dtype=np.int32)


def ids_to_words(ids, id_to_word) -> list[str]:
    """Decode ids (a host or device array, or a sequence of ints) to words.

    Parameters
    ----------
    ids : (n,) int array or sequence of int
    id_to_word : dict[int, str] or sequence of str

    Raises
    ------
    ValueError
        Naming the first id the vocabulary lacks.
    """
    host = np.asarray(backend.to_cpu(ids)).reshape(-1)
    words = []
    for position, i in enumerate(host.tolist()):
        try:
            if isinstance(id_to_word, dict):
                words.append(id_to_word[i])
            else:
                if i < 0:
                    raise IndexError(i)
                words.append(id_to_word[i])
        except (KeyError, IndexError):
            raise ValueError(
                f"id {i} at position {position} is not in the vocabulary "
                f"(size {len(id_to_word)})"
            ) from None
    return words
