"""Issue 6: every mistake at a public boundary gets an error that names the problem.

One test per bad input: the error type, and that the message says what was wrong
(the offending value, its position, the valid range, expected vs actual shapes).
"""

import numpy as np
import pytest

from npgated.data import ptb
from npgated.data.batching import TBPTTBatcher, eval_batches
from npgated.layers.affine import TimeAffine
from npgated.layers.dropout import TimeDropout
from npgated.layers.embedding import TimeEmbedding
from npgated.layers.gru import TimeGRU
from npgated.layers.loss import TimeSoftmaxWithLoss
from npgated.layers.lstm import TimeLSTM
from npgated.models.rnnlm import BetterRnnlm, Rnnlm
from npgated.optim import make_optimizer

rng = np.random.default_rng(0)
N, T, D, H, V = 3, 4, 5, 6, 10


def lstm(**kw):
    return TimeLSTM(
        rng.standard_normal((D, 4 * H)), rng.standard_normal((H, 4 * H)), np.zeros(4 * H), **kw
    )


# -- token ids ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ids, message",
    [
        (np.array([[1.0, 2.0]]), "must hold integer token ids, got dtype float64"),
        (
            np.array([[1, -2]]),
            r"token id -2 at position \(0, 1\) is out of range; valid ids are \[0, 10\)",
        ),
        (np.array([[3, 4], [10, 0]]), r"token id 10 at position \(1, 0\) is out of range"),
    ],
)
def test_bad_token_ids(ids, message):
    with pytest.raises(ValueError, match=message):
        TimeEmbedding(rng.standard_normal((V, D))).forward(ids)


def test_bad_targets_allow_only_the_ignore_label():
    loss = TimeSoftmaxWithLoss(ignore_label=-1)
    xs = rng.standard_normal((N, T, V))
    ts = np.zeros((N, T), dtype=np.int64)
    ts[2, 3] = -1
    loss.forward(xs, ts)  # the ignore label is fine
    ts[1, 1] = -3
    with pytest.raises(ValueError, match=r"token id -3 at position \(1, 1\).*ignore label -1"):
        loss.forward(xs, ts)


def test_model_rejects_out_of_vocabulary_input():
    with pytest.raises(ValueError, match=r"token id 10 .* valid ids are \[0, 10\)"):
        Rnnlm(V, D, H).forward(np.full((2, 3), 10), np.zeros((2, 3), dtype=int))


# -- shapes ------------------------------------------------------------------------------
def test_input_target_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        Rnnlm(V, D, H).forward(np.zeros((2, 3), dtype=int), np.zeros((2, 4), dtype=int))


def test_wrong_rank():
    with pytest.raises(ValueError, match=r"3 dimensions \(N, T, D\), got shape \(4, 5\)"):
        lstm().forward(rng.standard_normal((T, D)))


def test_wrong_last_dim():
    with pytest.raises(ValueError, match=r"\(\?, \?, 5\)|D = 5|5"):
        lstm().forward(rng.standard_normal((N, T, D + 1)))


def test_set_state_wrong_shape():
    layer = lstm(stateful=True)
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        layer.set_state(np.zeros((N, H - 1)))


def test_inconsistent_parameter_sizes():
    with pytest.raises(
        ValueError, match=r"Wx must have shape \(D, 4H\) = \(5, 24\), got \(5, 20\)"
    ):
        TimeLSTM(rng.standard_normal((D, 20)), rng.standard_normal((H, 4 * H)), np.zeros(4 * H))
    with pytest.raises(ValueError, match=r"b must have shape \(2, 3H\)"):
        TimeGRU(
            rng.standard_normal((D, 3 * H)),
            rng.standard_normal((H, 3 * H)),
            np.zeros(3 * H),
            reset_after=True,
        )


def test_tying_with_different_sizes():
    with pytest.raises(ValueError, match="hidden_size=6, wordvec_size=5"):
        BetterRnnlm(V, 5, 6, tie_weights=True)
    tied = TimeAffine.tied_to(TimeEmbedding(rng.standard_normal((V, D))))
    with pytest.raises(ValueError, match="6"):
        tied.forward(rng.standard_normal((N, T, 6)))


def test_wrong_dtype_is_not_silently_cast():
    with pytest.raises(TypeError, match="float32 but the layer's parameters are float64"):
        lstm().forward(rng.standard_normal((N, T, D)).astype(np.float32))


# -- call order --------------------------------------------------------------------------
def test_backward_before_forward_and_twice():
    layer = lstm()
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((N, T, H)))
    layer.forward(rng.standard_normal((N, T, D)))
    layer.backward(np.zeros((N, T, H)))
    with pytest.raises(RuntimeError, match="twice"):
        layer.backward(np.zeros((N, T, H)))


# -- data and hyperparameters -------------------------------------------------------------
def test_missing_data_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="NPGATED_DATA_DIR"):
        ptb.load_data("train", tmp_path)


def test_empty_split(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"ptb.{split}.txt").write_text("")
    with pytest.raises(ptb.DataError, match="is empty"):
        ptb.load_data("train", tmp_path)


def test_corpus_shorter_than_one_batch():
    with pytest.raises(ValueError, match="too short for batch_size \\* time_size = 20 \\* 35"):
        TBPTTBatcher(np.arange(50), 20, 35)
    with pytest.raises(ValueError, match="too short"):
        list(eval_batches(np.arange(5), 20, 35))


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
def test_dropout_ratio_out_of_range(p):
    with pytest.raises(ValueError, match=r"dropout_ratio must be in \[0, 1\)"):
        TimeDropout(p)


def test_optimizer_hyperparameters_out_of_range():
    with pytest.raises(ValueError, match="lr"):
        make_optimizer("sgd", lr=-1.0)
    with pytest.raises(ValueError, match="sgd"):
        make_optimizer("lion", lr=1.0)
