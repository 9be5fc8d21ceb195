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
