"""Language models built from npgated layers: Rnnlm (book ch. 6) and BetterRnnlm (Zaremba)."""

from npgated.models.base import Model
from npgated.models.generation import generate
from npgated.models.rnnlm import BetterRnnlm, LanguageModel, Rnnlm, build_model

__all__ = ["BetterRnnlm", "LanguageModel", "Model", "Rnnlm", "build_model", "generate"]
