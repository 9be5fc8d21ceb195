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

The id cache. Tokenising the 5 MB train file to build the vocabulary takes about 0.3 s, so
the first load of a split saves its ids (int32) and the vocabulary (the train words in id
order) as one ``.npz`` in a per-user folder, ``$XDG_CACHE_HOME/npgated/ptb-ids`` (default
``~/.cache/npgated/ptb-ids``; ``NPGATED_PTB_CACHE=/path`` puts it elsewhere,
``NPGATED_PTB_CACHE=off`` or ``load_data(..., cache=False)`` turns it off). An entry is
keyed by the SHA-256 of the train text and of the split's text, hashed on every load
(a few ms), so an edited file is never answered with old ids; it carries the SHA-256 of its
own arrays (the vocabulary's is :func:`vocab_checksum`), checked on every read, so a
truncated or corrupted entry is logged and parsed again, never used. Entries are written
atomically (temporary file, then ``os.replace``); the least recently used beyond a dozen
are removed. An unwritable cache folder is logged once and the text parsed each time.
Deleting the folder clears the cache.

PTB is a word-level corpus with a fixed set of files: the tokenisation (``<eos>`` per line,
universal newlines), the vocabulary checksum, the cache root and :class:`DataError` are
:mod:`npgated.data.corpus`'s, which reads any other text (``npgated train --corpus``); the
same files given as ``--corpus`` give the same vocabulary and checksum.

This module is host-only code: it returns NumPy arrays; the training loop moves batches to
the device.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from npgated import backend
from npgated.data import corpus
from npgated.data.corpus import EOS, UNK, DataError
from npgated.io import atomic_write

__all__ = [
    "CACHE_ENV_VAR",
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
    "id_cache_dir",
    "ids_to_words",
    "load_data",
    "resolve_data_dir",
    "verify_checksums",
    "vocab_checksum",
    "words_to_ids",
]

logger = logging.getLogger(__name__)

ENV_VAR = "NPGATED_DATA_DIR"
CACHE_ENV_VAR = "NPGATED_PTB_CACHE"  # the id cache's folder, or "off" (see id_cache_dir)
SPLITS = corpus.SPLITS
_ALIASES = {"val": "valid"}

PTB_FILES = {split: f"ptb.{split}.txt" for split in SPLITS}
PTB_URL = "https://raw.githubusercontent.com/tomsercu/lstm/master/data/ptb.{split}.txt"
PTB_MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}

_CHUNK = 1 << 20  # bytes read at a time when downloading or hashing


# DataError (from npgated.data.corpus): here a failed download (offline machine, HTTP
# error), a checksum mismatch, or a word in valid/test that the train vocabulary lacks; the
# message says how to point npgated at a folder that already holds the files.


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
    return corpus.cache_root() / "ptb"


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
    import urllib.request  # noqa: PLC0415 (here: 13 ms of imports only a download needs)

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
                    raise DataError(f"could not download {url} ({exc}); {_how_to_fix()}") from exc
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
def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}. {_how_to_fix()}") from None


def _words(text: bytes, path: Path) -> list[str]:
    """The tokens of one file's bytes: its words, with ``<eos>`` after every line."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"cannot read {path}: {exc}. {_how_to_fix()}") from None
    words = corpus.split_words(corpus.normalize_newlines(decoded))  # <eos> per line
    if not words:
        raise DataError(f"{path} is empty: no tokens to load. {_how_to_fix()}")
    return words


def _parse_train(text: bytes, path: Path):
    """``(ids, word_to_id)`` of the train file: ids in order of first appearance."""
    words = _words(text, path)
    word_to_id = {w: i for i, w in enumerate(dict.fromkeys(words))}  # first appearance
    # ids < V <= len(words); np.fromiter raises OverflowError if one ever exceeded int32
    ids = np.fromiter((word_to_id[w] for w in words), dtype=np.int32, count=len(words))
    return ids, word_to_id


def _parse_split(text: bytes, path: Path, word_to_id: dict) -> np.ndarray:
    """The ids of a valid/test file under the train vocabulary."""
    words = _words(text, path)
    try:
        return np.fromiter((word_to_id[w] for w in words), dtype=np.int32, count=len(words))
    except KeyError as exc:
        raise DataError(
            f"{path} contains the word {exc.args[0]!r}, which is not in the training "
            "vocabulary; the valid/test files must use the train vocabulary "
            f"(map rare words to {UNK!r}). {_how_to_fix()}"
        ) from None


# ---------------------------------------------------------------------------------------
# The id cache: each parsed split saved once as a checksummed .npz
# ---------------------------------------------------------------------------------------
_CACHE_FORMAT = 1
_CACHE_MAX_ENTRIES = 12  # least recently used entries beyond this are removed (PTB needs 3)
_ENTRY_NAME = re.compile(r"^ptb\.(train|valid|test)\.[0-9a-f]{32}\.ids\.npz$")
_unwritable_reported: set = set()  # cache folders already reported unwritable (log once)


def id_cache_dir():
    """The folder of the id cache, or None when it is turned off.

    ``$NPGATED_PTB_CACHE`` when set (the value ``off`` turns the cache off), otherwise
    ``ptb-ids`` beside :func:`default_cache_dir` (``~/.cache/npgated/ptb-ids``).
    """
    value = os.environ.get(CACHE_ENV_VAR, "").strip()
    if value.lower() == "off":
        return None
    if value:
        return Path(value).expanduser()
    return default_cache_dir().parent / "ptb-ids"


def _sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


def _entry_path(store: Path, name: str, train_sha: str, split_sha: str) -> Path:
    """Entries are keyed by content: the train text (the vocabulary) and the split's text."""
    return store / f"ptb.{name}.{_sha256(f'{train_sha}:{split_sha}'.encode())[:32]}.ids.npz"


def _read_entry(path: Path, name: str, train_sha: str, split_sha: str):
    """``(ids, word_to_id)`` from a cache entry; None if it is absent or not exactly right.

    A present entry is used only if its metadata names this split and these source texts
    and its arrays match the checksums stored with them; anything else (truncated,
    corrupted, another format) is logged and answered with None, so the caller re-parses.
    """
    if not os.path.isfile(path):  # absent, or no folder to hold it (False, never raises)
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            ids, vocab, meta = data["ids"], data["vocab"], data["meta"]
        meta = json.loads(meta.tobytes().decode("utf-8"))
        expected = {
            "format": _CACHE_FORMAT,
            "split": name,
            "train_sha256": train_sha,
            "split_sha256": split_sha,
        }
        if not isinstance(meta, dict):
            raise ValueError(f"metadata is a JSON {type(meta).__name__}, not an object")
        differ = [k for k, v in expected.items() if meta.get(k) != v]
        if differ:
            problem = f"its {', '.join(differ)} differ from this data"
        elif ids.dtype != np.int32 or ids.shape != (meta["n_tokens"],):
            problem = f"ids of dtype {ids.dtype} and shape {ids.shape}"
        elif _sha256(ids) != meta["ids_sha256"]:
            problem = "the ids do not match their checksum"
        elif vocab.dtype != np.uint8 or _sha256(vocab) != meta["vocab_checksum"]:
            problem = "the vocabulary does not match its checksum"
        else:
            words = vocab.tobytes().decode("utf-8").split("\n")
            ids.flags.writeable = False
            return ids, {w: i for i, w in enumerate(words)}
    except FileNotFoundError:
        return None
    except (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
        problem = f"unreadable ({type(exc).__name__}: {exc})"  # ValueError: JSON, UTF-8 too
    logger.warning("ignoring the PTB id cache entry %s: %s; parsing the text again", path, problem)
    return None


def _write_entry(path: Path, name: str, train_sha: str, split_sha: str, ids, word_to_id):
    """Save ``(ids, word_to_id)`` atomically; an unwritable folder is logged once, not raised."""
    words = sorted(word_to_id, key=word_to_id.__getitem__)
    vocab = np.frombuffer("\n".join(words).encode("utf-8"), dtype=np.uint8)
    meta = {
        "format": _CACHE_FORMAT,
        "split": name,
        "train_sha256": train_sha,
        "split_sha256": split_sha,
        "n_tokens": len(ids),
        "vocab_size": len(words),
        "ids_sha256": _sha256(ids),
        "vocab_checksum": _sha256(vocab),
    }  # = vocab_checksum(word_to_id): the same bytes
    meta = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    try:
        atomic_write(path, lambda f: np.savez(f, ids=ids, vocab=vocab, meta=meta))
    except OSError as exc:
        if path.parent not in _unwritable_reported:
            _unwritable_reported.add(path.parent)
            logger.warning(
                "cannot write the PTB id cache in %s (%s): the text is parsed on every load; "
                "set %s to a writable folder, or to 'off' to stop caching",
                path.parent,
                exc,
                CACHE_ENV_VAR,
            )
        return
    logger.debug("saved the %s ids and vocabulary to %s", name, path)
    _prune(path.parent)


def _prune(store: Path) -> None:
    """Remove the least recently used entries beyond :data:`_CACHE_MAX_ENTRIES`."""
    try:
        entries = [p for p in store.iterdir() if _ENTRY_NAME.match(p.name)]
        entries.sort(key=lambda p: p.stat().st_mtime_ns)
    except OSError:  # an entry removed meanwhile by another process: prune next time
        return
    for old in entries[:-_CACHE_MAX_ENTRIES]:
        try:
            old.unlink()
        except OSError:
            pass


def _file_key(path: Path):
    stat = path.stat()  # re-read when the file changes
    return (str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _load(name: str, key, train_key, store):
    """``(ids, word_to_id)`` of one split, ids read-only; memoised per file version.

    With ``store`` (the id cache folder) a valid entry for these texts is used, else the
    texts are parsed and the result saved there; ``store`` None only parses.
    """
    train_path, path = Path(train_key[0]), Path(key[0])
    train_text = _read_bytes(train_path)  # hashed and parsed from the same bytes
    text = train_text if name == "train" else _read_bytes(path)
    if store is not None:
        train_sha = _sha256(train_text)
        split_sha = train_sha if name == "train" else _sha256(text)
        entry = _entry_path(store, name, train_sha, split_sha)
        found = _read_entry(entry, name, train_sha, split_sha)
        if found is not None:
            try:
                os.utime(entry)  # recently used: kept by _prune
            except OSError:
                pass
            return found
    if name == "train":
        ids, word_to_id = _parse_train(train_text, train_path)
    else:  # the vocabulary from a cached train entry, if any, else from parsing train
        cached = None
        if store is not None:
            cached = _read_entry(
                _entry_path(store, "train", train_sha, train_sha), "train", train_sha, train_sha
            )
        word_to_id = cached[1] if cached else _parse_train(train_text, train_path)[1]
        ids = _parse_split(text, path, word_to_id)
    ids.flags.writeable = False
    if store is not None:
        _write_entry(entry, name, train_sha, split_sha, ids, word_to_id)
    return ids, word_to_id


def load_data(split: str = "train", data_dir=None, *, verify: bool = False, cache: bool = True):
    """Load one PTB split as word ids, with the train-split vocabulary.

    Parameters
    ----------
    split : {"train", "valid", "val", "test"}
    data_dir : str or Path, optional
        Folder with the three files; default ``$NPGATED_DATA_DIR``, else the download cache.
    verify : bool
        Check the files' MD5 checksums first (about a tenth of a second).
    cache : bool
        Use the id cache (:func:`id_cache_dir`); False parses the text and saves nothing.

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
    The first load of a split parses the text (about 0.3 s for PTB) and saves the ids and
    the vocabulary in the id cache, keyed by the SHA-256 of the train text and of the
    split's text, with checksums of both arrays. Later loads, in any process, hash the
    texts (a few ms), check the entry and read it. Within a process results are also kept
    in memory per (file, modification time), so loading a split again costs only a copy.
    """
    name = _split_name(split)
    path = resolve_data_dir(data_dir)
    if verify:
        verify_checksums(path)
    train_key = _file_key(path / PTB_FILES["train"])
    key = train_key if name == "train" else _file_key(path / PTB_FILES[name])
    corpus, word_to_id = _load(name, key, train_key, id_cache_dir() if cache else None)
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
    return corpus.vocab_checksum(word_to_id)


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
                f"id {i} at position {position} is not in the vocabulary (size {len(id_to_word)})"
            ) from None
    return words
