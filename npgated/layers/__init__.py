"""Book-style layers: ``params``/``grads`` lists, ``forward``/``backward``, TBPTT state.

Each module holds one concept, its forward equations (F1..) and hand-derived backward
equations (B1..) in the docstrings next to the code that computes them:

    affine      Affine, TimeAffine (with weight tying: TimeAffine.tied_to(embedding), or
                the book's TimeAffine(E.T, b): params are the very arrays passed in)
    embedding   Embedding, TimeEmbedding (embedding_dropout: whole word types per window)
    dropout     Dropout, TimeDropout (variational: one mask per sequence), keep_mask
    loss        SoftmaxWithLoss, TimeSoftmaxWithLoss
    recurrent   RecurrentLayer: TBPTT state, recurrent_dropout and weight_drop masks
    rnn         rnn_step_forward/backward, RNN, TimeRNN
    lstm        lstm_step_forward/backward, LSTM, TimeLSTM (gates i, f, g, o)
    gru         gru_step_forward/backward, GRU, TimeGRU (gates r, z, n; reset_after)
    activation_reg  ActivationRegularizer (AR), TemporalActivationRegularizer (TAR)
    attention   AttentionWeight, WeightSum, Attention, TimeAttention (dot-product attention,
                batched over decoder steps; mask / valid_lens for padded encoder positions)
    bidirectional   TimeBidirectional, TimeBiLSTM, TimeBiGRU (two Time layers, one over the
                reversed sequence, outputs concatenated)
"""

from npgated.layers.activation_reg import ActivationRegularizer, TemporalActivationRegularizer
from npgated.layers.affine import Affine, TimeAffine
from npgated.layers.attention import Attention, AttentionWeight, TimeAttention, WeightSum
from npgated.layers.base import Layer
from npgated.layers.bidirectional import TimeBidirectional, TimeBiGRU, TimeBiLSTM
from npgated.layers.dropout import Dropout, TimeDropout
from npgated.layers.embedding import Embedding, TimeEmbedding
from npgated.layers.gru import GRU, TimeGRU
from npgated.layers.loss import SoftmaxWithLoss, TimeSoftmaxWithLoss
from npgated.layers.lstm import LSTM, TimeLSTM
from npgated.layers.rnn import RNN, TimeRNN

__all__ = [
    "ActivationRegularizer",
    "TemporalActivationRegularizer",
    "Affine",
    "Attention",
    "AttentionWeight",
    "Dropout",
    "Embedding",
    "GRU",
    "LSTM",
    "Layer",
    "RNN",
    "SoftmaxWithLoss",
    "TimeAffine",
    "TimeBiGRU",
    "TimeBiLSTM",
    "TimeBidirectional",
    "TimeDropout",
    "TimeEmbedding",
    "TimeGRU",
    "TimeLSTM",
    "TimeRNN",
    "TimeAttention",
    "TimeSoftmaxWithLoss",
    "WeightSum",
]
