"""seq2seq_accuracy with npgated's threads on: batches shared out over the threads, each
thread decoding with its own copy of the model; the count is the one threads off give."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from npgated import parallel
from npgated.models.seq2seq import AttentionSeq2seq, PeekySeq2seq, Seq2seq, seq2seq_accuracy

V, D, H = 7, 3, 4


@pytest.fixture
def threads():
    """parallel.use_threads, the previous setting restored afterwards."""
    previous = parallel.threads()
    yield parallel.use_threads
    parallel.use_threads(previous)


def _task(model, n, seed):
    """Questions and answers of which some are the model's greedy answers, some spoilt."""
    rng = np.random.default_rng(seed)
    xs = rng.integers(0, V, (n, 5))
    t = np.concatenate([np.full((n, 1), 2), model.generate(xs, 2, 4)], axis=1)
    wrong = rng.random(n) < 0.4
    t[wrong, 1 + rng.integers(0, 4)] += 1
    t %= V
    return xs, t, n - int(wrong.sum())


@pytest.mark.parametrize("cls", [Seq2seq, PeekySeq2seq, AttentionSeq2seq])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_threads_count_what_one_thread_counts(cls, cell, threads):
    model = cls(V, D, H, cell=cell, seed=3, init=0.5, dtype=np.float32)
    xs, t, expected = _task(model, 61, seed=4)
    params = [p.copy() for p in model.params]
    threads(1)
    plain = {bs: seq2seq_accuracy(model, xs, t, batch_size=bs) for bs in (1, 7, 61)}
    beams = seq2seq_accuracy(model, xs, t, batch_size=9, beam_size=2)
    assert plain == {bs: (expected, 61) for bs in (1, 7, 61)}
    for n in (2, 3):
        threads(n)
        for bs in (1, 7, 61, 250):
            assert seq2seq_accuracy(model, xs, t, batch_size=bs) == (expected, 61), (n, bs)
        assert seq2seq_accuracy(model, xs, t, batch_size=9, beam_size=2) == beams, n
    assert model.training  # the caller's model: mode as it was, parameters untouched
    assert all(np.array_equal(p, q) for p, q in zip(model.params, params))


def test_each_thread_decodes_with_its_own_model(threads, monkeypatch):
    model = AttentionSeq2seq(V, D, H, seed=5, init=0.5, dtype=np.float32)
    xs, t, expected = _task(model, 40, seed=6)
    seen = []
    generate = AttentionSeq2seq.generate

    def spy(self, *args, **kwargs):
        seen.append((id(self), threading.get_ident()))
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(AttentionSeq2seq, "generate", spy)
    threads(2)
    assert seq2seq_accuracy(model, xs, t, batch_size=5) == (expected, 40)
    assert len(seen) == 8  # every batch once
    models = {m for m, _ in seen}
    assert len(models) == 2 and id(model) in models
    # one model per thread, four batches each
    assert len({(m, th) for m, th in seen}) == 2
    assert sorted(sum(m == k for m, _ in seen) for k in models) == [4, 4]
