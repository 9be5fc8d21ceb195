"""SplitBatch: the batch's rows on two threads, each on its own model copy, gives the loss and
gradients of the whole batch (S1, S2 of npgated/training/split_batch.py)."""

import numpy as np
import pytest

from npgated import parallel
from npgated.models.seq2seq import AttentionSeq2seq, PeekySeq2seq, Seq2seq
from npgated.training import split_batch
from npgated.training.split_batch import SplitBatch

pytest.importorskip("threadpoolctl")


def _batch(rng, N, V=11, T_enc=5, T_dec=4):
    return rng.integers(0, V, (N, T_enc)), rng.integers(0, V, (N, 1 + T_dec))


def _plain(model, xs, ts):
    model.zero_grads()
    loss = float(model.forward(xs, ts))
    model.backward()
    return loss, [g.copy() for g in model.grads]


@pytest.mark.parametrize(
    "cls,cell",
    [(Seq2seq, "lstm"), (PeekySeq2seq, "lstm"), (AttentionSeq2seq, "lstm"), (Seq2seq, "gru")],
)
@pytest.mark.parametrize("N", [40, 37])  # equal and unequal blocks (S1, S2 weigh by N_j / N)
def test_split_equals_whole_batch(cls, cell, N, monkeypatch):
    rng = np.random.default_rng(3)
    model = cls(11, 6, 8, cell=cell, seed=1, dtype=np.float64)
    xs, ts = _batch(rng, N)
    loss0, grads0 = _plain(model, xs, ts)
    step = SplitBatch(model)
    monkeypatch.setattr(split_batch, "MIN_ROWS", 4)
    try:
        parallel.use_threads(2)
        assert len(step.blocks(N, xs)) == 2
        loss = step(xs, ts)
    finally:
        parallel.use_threads(1)
    assert len(step._replicas) == 1
    assert loss == pytest.approx(loss0, rel=1e-12)
    for name, g0, g in zip(model.param_names, grads0, model.grads):
        err = np.linalg.norm(g - g0) / max(np.linalg.norm(g0), 1e-300)
        assert err < 1e-12, name


def test_replica_follows_updates_and_switch_off(monkeypatch):
    """The replica gets the model's current parameters each step; with threads off the step
    is the plain one on the model (no replica)."""
    rng = np.random.default_rng(4)
    model = Seq2seq(11, 6, 8, seed=1, dtype=np.float64)
    xs, ts = _batch(rng, 32)
    step = SplitBatch(model)
    assert step.blocks(32, xs) == [slice(0, 32)]  # threads off: one block
    step(xs, ts)
    assert step._replicas == []
    monkeypatch.setattr(split_batch, "MIN_ROWS", 4)
    try:
        parallel.use_threads(2)
        step(xs, ts)
        for p in model.params:  # an update the replica must see at the next step
            p *= 0.5
        loss = step(xs, ts)
        grads = [g.copy() for g in model.grads]
    finally:
        parallel.use_threads(1)
    loss0, grads0 = _plain(model, xs, ts)
    assert loss == pytest.approx(loss0, rel=1e-12)
    for g0, g in zip(grads0, grads):
        assert np.linalg.norm(g - g0) <= 1e-12 * np.linalg.norm(g0)
