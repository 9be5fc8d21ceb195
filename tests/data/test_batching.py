"""TBPTT and evaluation batching against plain-loop references."""

from __future__ import annotations

import numpy as np
import pytest

from npgated.data import TBPTTBatcher, eval_batches, eval_token_count, load_data

SIZES = [(1, 1), (1, 5), (3, 4), (4, 3), (5, 7), (2, 10)]


def reference_tbptt(corpus, N, T, n_batches):
    """The book's RnnlmTrainer.get_batch, written as a double loop over (t, i)."""
    xs, ts = corpus[:-1], corpus[1:]
    data_size = len(xs)
    jump = data_size // N
    offsets = [i * jump for i in range(N)]
    time_idx = 0
    batches = []
    for _ in range(n_batches):
        bx = np.empty((N, T), dtype=corpus.dtype)
        bt = np.empty((N, T), dtype=corpus.dtype)
        for t in range(T):
            for i, offset in enumerate(offsets):
                bx[i, t] = xs[(offset + time_idx) % data_size]
                bt[i, t] = ts[(offset + time_idx) % data_size]
            time_idx += 1
        batches.append((bx, bt))
    return batches


def make_corpus(n, seed=0):
    return np.random.default_rng(seed).integers(0, 50, size=n).astype(np.int32)


@pytest.mark.parametrize("N, T", SIZES)
def test_two_epochs_match_reference(N, T):
    corpus = make_corpus(103, seed=N * 10 + T)
    batcher = TBPTTBatcher(corpus, N, T)
    assert len(batcher) == 102 // (N * T)
    got = list(batcher) + list(batcher)  # time_idx carries into the second epoch
    want = reference_tbptt(corpus, N, T, 2 * len(batcher))
    assert len(got) == len(want)
    for b, ((xs, ts), (rx, rt)) in enumerate(zip(got, want)):
        assert xs.shape == ts.shape == (N, T)
        assert xs.dtype == ts.dtype == np.int32
        np.testing.assert_array_equal(xs, rx, err_msg=f"xs of batch {b}")
        np.testing.assert_array_equal(ts, rt, err_msg=f"ts of batch {b}")
    assert batcher.time_idx == 2 * len(batcher) * T


def test_targets_are_next_tokens():
    corpus = np.arange(61, dtype=np.int32)  # ids equal positions: easy to read
    batcher = TBPTTBatcher(corpus, 3, 5)
    xs, ts = next(iter(batcher))
    np.testing.assert_array_equal(xs[:, 0], [0, 20, 40])
    np.testing.assert_array_equal(ts, xs + 1)
    xs2, _ = batcher.next_batch()
    np.testing.assert_array_equal(xs2[:, 0], xs[:, -1] + 1)  # streams are contiguous


def test_state_dict_resumes_exactly():
    corpus = make_corpus(200, seed=3)
    a = TBPTTBatcher(corpus, 4, 6)
    epoch = iter(a)
    for _ in range(3):
        next(epoch)
    state = a.state_dict()
    assert state == {"time_idx": 18, "batch_size": 4, "time_size": 6, "data_size": 199}
    b = TBPTTBatcher(corpus, 4, 6)
    b.load_state_dict(dict(state))
    for _ in range(len(a) + 2):  # past the end of the epoch, across the boundary
        (xa, ta), (xb, tb) = a.next_batch(), b.next_batch()
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ta, tb)


def test_state_dict_mismatch():
    b = TBPTTBatcher(make_corpus(100), 2, 5)
    with pytest.raises(ValueError, match="time_size=7"):
        b.load_state_dict({"time_idx": 0, "batch_size": 2, "time_size": 7, "data_size": 99})
    with pytest.raises(ValueError, match="non-negative"):
        b.load_state_dict({"time_idx": -5})


def test_too_short_corpus():
    with pytest.raises(ValueError, match=r"20 tokens.*4 \* 5 = 20.*lower batch_size"):
        TBPTTBatcher(make_corpus(20), 4, 5)
    TBPTTBatcher(make_corpus(21), 4, 5)  # exactly one batch
    with pytest.raises(ValueError, match="batch_size"):
        TBPTTBatcher(make_corpus(20), 0, 5)
    with pytest.raises(ValueError, match="integer"):
        TBPTTBatcher(make_corpus(20).astype(np.float32), 2, 2)


@pytest.mark.parametrize("N, T", SIZES + [(3, 100), (7, 2)])
def test_eval_batches_cover_each_target_once(N, T):
    corpus = make_corpus(58, seed=N + T)
    L = 57 // N
    assert eval_token_count(corpus, N) == N * L
    batches = list(eval_batches(corpus, N, T))
    assert len(batches) == -(-L // T)
    widths = [xs.shape[1] for xs, _ in batches]
    assert all(w == T for w in widths[:-1]) and 0 < widths[-1] <= T
    assert sum(widths) == L
    xs_all = np.concatenate([xs for xs, _ in batches], axis=1)
    ts_all = np.concatenate([ts for _, ts in batches], axis=1)
    for i in range(N):  # a plain loop: stream i is a contiguous slice of the corpus
        for t in range(L):
            assert xs_all[i, t] == corpus[i * L + t]
            assert ts_all[i, t] == corpus[i * L + t + 1]
    assert ts_all.size == N * L and (len(corpus) - 1) - N * L < N


def test_eval_batches_too_short():
    with pytest.raises(ValueError, match="at least batch_size \\+ 1 = 6"):
        eval_batches(make_corpus(5), 5, 3)


def test_real_ptb_sizes(ptb_dir):
    corpus, _, _ = load_data("train", ptb_dir)
    assert len(TBPTTBatcher(corpus, 20, 35)) == 1327  # the book's max_iters
    valid, _, _ = load_data("valid", ptb_dir)
    assert eval_token_count(valid, 10) == 73_750
