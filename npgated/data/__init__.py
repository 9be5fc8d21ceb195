"""Penn Treebank loading and truncated-BPTT batching (host-side NumPy).

::

    corpus, word_to_id, id_to_word = load_data("train")     # (929589,) int32
    batcher = TBPTTBatcher(corpus, batch_size=20, time_size=35)
    for xs, ts in batcher:                                   # one epoch of (N, T) windows
        ...
"""

from __future__ import annotations

from npgated.data.batching import TBPTTBatcher, eval_batches, eval_token_count
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
    "default_cache_dir",
    "download_ptb",
    "eval_batches",
    "eval_token_count",
    "ids_to_words",
    "load_data",
    "resolve_data_dir",
    "verify_checksums",
    "vocab_checksum",
    "words_to_ids",
]
