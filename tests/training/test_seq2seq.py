"""The encoder-decoder training loop (npgated.training.seq2seq): order, learning, resuming."""

from __future__ import annotations

import json

import numpy as np
import pytest

from npgated.data import sequence
from npgated.training.checkpoint import load_checkpoint
from npgated.training.seq2seq import epoch_order, train_seq2seq
from npgated.training.seq2seq_config import Seq2seqConfig


def _config(run_dir, **kw):
    base = dict(
        task="addition",
        model="Seq2seq",
        wordvec_size=8,
        hidden_size=16,
        batch_size=32,
        epochs=2,
        max_iters=6,
        lr=0.01,
        log_interval=3,
        progress=False,
        run_dir=str(run_dir),
    )
    return Seq2seqConfig(**{**base, **kw})


def test_epoch_order_is_a_permutation_per_epoch_and_repeatable():
    a, b = epoch_order(100, 0, 1), epoch_order(100, 0, 2)
    assert sorted(a) == list(range(100)) and sorted(b) == list(range(100))
    assert not np.array_equal(a, b)
    assert np.array_equal(a, epoch_order(100, 0, 1))
    assert not np.array_equal(a, epoch_order(100, 1, 1))


def test_training_lowers_the_loss_and_records_every_epoch(tmp_path, synthetic_book_data):
    data = sequence.load_task("addition", synthetic_book_data, reverse=True)
    config = _config(tmp_path / "run", max_iters=None, epochs=2, reverse=True)
    result = train_seq2seq(config, data)
    records = [
        json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert losses[-1] < 0.85 * losses[0], losses  # 2.56 (uniform over 13) at the start
    tests = [r for r in records if r["kind"] == "test"]
    assert [r["epoch"] for r in tests] == [1, 2] and all(r["total"] == 100 for r in tests)
    assert result.accuracies == [r["accuracy"] for r in tests]
    best = load_checkpoint(tmp_path / "run" / "best.npz").meta
    assert best["accuracy"] == max(result.accuracies) and best["task"] == "addition"
    assert best["reverse"] is True and best["answer_length"] == 4
    assert (tmp_path / "run" / "accuracy.png").is_file()


def test_resume_continues_exactly(tmp_path, synthetic_book_data):
    """Stopped after 8 iterations (inside epoch 2) and resumed: the same parameters, optimizer
    state and accuracies as the run that was never stopped."""
    data = sequence.load_task("addition", synthetic_book_data)
    whole = train_seq2seq(_config(tmp_path / "whole"), data)
    stopped = train_seq2seq(_config(tmp_path / "parts"), data, stop_after=8)
    assert stopped.interrupted is not None and stopped.progress.epoch == 2
    resumed = train_seq2seq(_config(tmp_path / "parts"), data, resume=True)
    assert resumed.interrupted is None and resumed.accuracies == whole.accuracies
    a = load_checkpoint(tmp_path / "whole" / "last.npz")
    b = load_checkpoint(tmp_path / "parts" / "last.npz")
    for name, value in a.params.items():
        assert np.array_equal(value, b.params[name]), name
    for name, slots in a.optim_slots.items():
        for slot, value in slots.items():
            assert np.array_equal(value, b.optim_slots[name][slot]), (name, slot)


def test_resume_refuses_another_task_setting(tmp_path, synthetic_book_data):
    data = sequence.load_task("addition", synthetic_book_data)
    train_seq2seq(_config(tmp_path / "run", epochs=1, max_iters=2), data)
    reversed_data = sequence.load_task("addition", synthetic_book_data, reverse=True)
    with pytest.raises(ValueError, match="reverse"):
        train_seq2seq(
            _config(tmp_path / "run", epochs=1, max_iters=2, reverse=True),
            reversed_data,
            resume=True,
        )


@pytest.mark.parametrize("model", ["Seq2seq", "AttentionSeq2seq"])
def test_trains_on_every_backend(model, xp_name, tmp_path, synthetic_book_data):
    data = sequence.load_task("date", synthetic_book_data, reverse=True)
    result = train_seq2seq(
        _config(
            tmp_path / "run",
            task="date",
            model=model,
            epochs=1,
            max_iters=2,
            backend=xp_name,
            reverse=True,
        ),
        data,
    )
    assert result.progress.total_iterations == 2 and 0.0 <= result.best_accuracy <= 1.0
    assert all(
        np.isfinite(v).all() for v in load_checkpoint(tmp_path / "run" / "last.npz").params.values()
    )


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="cell='rnn' is not valid for an encoder-decoder"):
        Seq2seqConfig(cell="rnn")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        Seq2seqConfig(batch_size=0)
    with pytest.raises(ValueError, match="fewer than one minibatch"):
        train_seq2seq(
            Seq2seqConfig(batch_size=10_000, progress=False, run_dir=str(tmp_path / "run")),
            sequence.SequenceData(
                *(np.zeros((5, 3), np.int64),) * 4, {"a": 0}, {0: "a"}, "addition", False
            ),
        )
    assert not (tmp_path / "run").exists()
