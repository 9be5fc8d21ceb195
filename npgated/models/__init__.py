"""Models built from npgated layers: the language models Rnnlm (book ch. 6) and BetterRnnlm
(Zaremba), and the encoder-decoders Seq2seq, PeekySeq2seq and AttentionSeq2seq (book ch. 7-8)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# name -> the submodule that defines it, imported on first use (PEP 562): ``npgated eval``
# of a language model loads npgated.models.rnnlm, not the generation and stepping modules
# it does not run (compiled at every start where no bytecode is cached).
_WHERE = {
    "AttentionSeq2seq": "seq2seq",
    "BetterRnnlm": "rnnlm",
    "LanguageModel": "rnnlm",
    "Model": "base",
    "PeekySeq2seq": "seq2seq",
    "Rnnlm": "rnnlm",
    "Seq2seq": "seq2seq",
    "build_model": "rnnlm",
    "build_seq2seq": "seq2seq",
    "generate": "generation",
}

__all__ = [
    "AttentionSeq2seq",
    "BetterRnnlm",
    "LanguageModel",
    "Model",
    "PeekySeq2seq",
    "Rnnlm",
    "Seq2seq",
    "build_model",
    "build_seq2seq",
    "generate",
]

if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from npgated.models.base import Model
    from npgated.models.generation import generate
    from npgated.models.rnnlm import BetterRnnlm, LanguageModel, Rnnlm, build_model
    from npgated.models.seq2seq import AttentionSeq2seq, PeekySeq2seq, Seq2seq, build_seq2seq


def __getattr__(name):
    """The names of ``__all__``, imported from their submodule on first access."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value  # later look-ups find it without this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
