"""Models built from npgated layers: the language models Rnnlm (book ch. 6) and BetterRnnlm
(Zaremba), and the encoder-decoders Seq2seq, PeekySeq2seq and AttentionSeq2seq (book ch. 7-8)."""

from npgated.models.base import Model
from npgated.models.generation import generate
from npgated.models.rnnlm import BetterRnnlm, LanguageModel, Rnnlm, build_model
from npgated.models.seq2seq import AttentionSeq2seq, PeekySeq2seq, Seq2seq, build_seq2seq

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
