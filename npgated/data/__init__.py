"""Penn Treebank loading and truncated-BPTT batching (host-side NumPy).

::

    corpus, word_to_id, id_to_word = load_data("train")     # (929589,) int32
    batcher = TBPTTBatcher(corpus, batch_size=20, time_size=35)
    for xs, ts in batcher:                                   # one epoch of (N, T) windows
        ...

    c = load_corpus("input.txt", "char")                     # any text: npgated.data.corpus
    c.train, c.valid, c.test, c.vocab                        # memory-mapped ids, Vocabulary
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# name -> the submodule that defines it. Imported on first use (PEP 562): a command that
# reads only the book's seq2seq files (npgated.data.sequence) or only batches ids
# (npgated.data.batching) does not load the text corpus and PTB modules (npgated.data.corpus
# alone is ~1,700 lines, compiled at every start where no bytecode is cached).
_WHERE = {
    "DataError": "ptb",
    "ENV_VAR": "ptb",
    "TBPTTBatcher": "batching",
    "Vocabulary": "corpus",
    "default_cache_dir": "ptb",
    "download_ptb": "ptb",
    "eval_batches": "batching",
    "eval_token_count": "batching",
    "ids_to_words": "ptb",
    "load_corpus": "corpus",
    "load_data": "ptb",
    "resolve_data_dir": "ptb",
    "verify_checksums": "ptb",
    "vocab_checksum": "ptb",
    "words_to_ids": "ptb",
}

__all__ = [
    "DataError",
    "ENV_VAR",
    "TBPTTBatcher",
    "Vocabulary",
    "default_cache_dir",
    "download_ptb",
    "eval_batches",
    "eval_token_count",
    "ids_to_words",
    "load_corpus",
    "load_data",
    "resolve_data_dir",
    "verify_checksums",
    "vocab_checksum",
    "words_to_ids",
]

if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from npgated.data.batching import TBPTTBatcher, eval_batches, eval_token_count
    from npgated.data.corpus import Vocabulary, load_corpus
    from npgated.data.ptb import (
        ENV_VAR,
        DataError,
        default_cache_dir,
        download_ptb,
        ids_to_words,
        load_data,
        resolve_data_dir,
        verify_checksums,
        vocab_checksum,
        words_to_ids,
    )


def __getattr__(name):
    """The names of ``__all__``, imported from their submodule on first access."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value  # later look-ups find it without this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
