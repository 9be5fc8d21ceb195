"""Truncated-BPTT mini-batches from a token stream, built by fancy indexing (no Python loops).

Training (:class:`TBPTTBatcher`) follows the book's ``RnnlmTrainer`` exactly, so that runs
are comparable with it: the corpus is read as N parallel streams starting at evenly spaced
offsets, each batch is the next window of T tokens of every stream, and the position
counter carries over from one epoch to the next (the streams wrap around the end of the
corpus). Consecutive batches are therefore contiguous in every row, which is what lets a
stateful RNN carry its hidden state across batches (truncated BPTT, Williams & Peng 1990;
the batching of Zaremba et al. 2014).

Evaluation (:func:`eval_batches`) instead cuts the split into N contiguous streams once and
walks along them, so every target token (but at most N - 1 at the very end) is scored
exactly once.
"""

from __future__ import annotations

import numpy as np

from npgated import backend, checks

__all__ = ["TBPTTBatcher", "eval_batches", "eval_token_count"]


def _as_corpus(corpus) -> np.ndarray:
    corpus = np.asarray(backend.to_cpu(corpus))
    if corpus.ndim != 1:
        raise ValueError(f"corpus must be a 1-D array of token ids, got shape {corpus.shape}")
    if corpus.dtype.kind not in "iu":
        raise ValueError(f"corpus must hold integer token ids, got dtype {corpus.dtype}")
    return corpus


class TBPTTBatcher:
    """One epoch of (xs, ts) windows per iteration, the book's TBPTT order.

    Parameters
    ----------
    corpus : (n_tokens,) int numpy.ndarray
        Word ids (host array).
    batch_size : int
        N, the number of parallel streams.
    time_size : int
        T, the length of each window (the truncation length).

    Attributes
    ----------
    time_idx : int
        Position counter: the next batch starts at ``time_idx`` in every stream. It grows by
        T per batch and is **not** reset between epochs (as in the book).
    data_size : int
        ``len(corpus) - 1``, the number of (input, target) pairs.
    offsets : (N,) int64 numpy.ndarray
        Start of stream i: ``i * (data_size // N)``.

    Notes
    -----
    With ``xs_all = corpus[:-1]`` and ``ts_all = corpus[1:]``, batch b of the run (counting
    across epochs, so ``time_idx = b * T`` when it starts) is::

        idx[i, t] = (offsets[i] + time_idx + t) % data_size        # (N, T)
        xs = xs_all[idx],  ts = ts_all[idx]

    One epoch is ``len(batcher) = data_size // (N * T)`` batches; the tokens past that are
    reached in later epochs because ``time_idx`` keeps counting. Iterating after a
    ``break`` resumes at the next batch; :meth:`state_dict` saves ``time_idx`` so a run
    restored from a checkpoint sees exactly the batches it would have seen.
    """

    def __init__(self, corpus, batch_size: int, time_size: int):
        corpus = _as_corpus(corpus)
        N = checks.check_positive_int(batch_size, "batch_size")
        T = checks.check_positive_int(time_size, "time_size")
        if len(corpus) < N * T + 1:
            raise ValueError(
                f"corpus of {len(corpus)} tokens is too short for batch_size * time_size = "
                f"{N} * {T} = {N * T} (one batch needs {N * T + 1} tokens): lower "
                "batch_size or time_size, or use a longer corpus"
            )
        self.batch_size = N
        self.time_size = T
        self._xs = corpus[:-1]
        self._ts = corpus[1:]
        self.data_size = len(self._xs)
        self.offsets = np.arange(N, dtype=np.int64) * (self.data_size // N)
        self._steps = np.arange(T, dtype=np.int64)
        self.time_idx = 0

    def __len__(self) -> int:
        """Batches per epoch: ``data_size // (N * T)``."""
        return self.data_size // (self.batch_size * self.time_size)

    def next_batch(self):
        """The next (xs, ts) pair, each an (N, T) int array; advances ``time_idx`` by T."""
        idx = (self.offsets[:, None] + (self.time_idx + self._steps)[None, :]) % self.data_size
        self.time_idx += self.time_size
        return self._xs[idx], self._ts[idx]

    def __iter__(self):
        """Yield one epoch: ``len(self)`` batches from the current ``time_idx``."""
        for _ in range(len(self)):
            yield self.next_batch()

    def state_dict(self) -> dict:
        """``{"time_idx", "batch_size", "time_size", "data_size"}`` (plain ints, JSON-able)."""
        return {
            "time_idx": int(self.time_idx),
            "batch_size": self.batch_size,
            "time_size": self.time_size,
            "data_size": self.data_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore ``time_idx``; the sizes must match this batcher's (ValueError otherwise)."""
        for key in ("batch_size", "time_size", "data_size"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"batcher state has {key}={state[key]}, but this batcher has "
                    f"{key}={getattr(self, key)}: it was saved for another configuration "
                    "or corpus"
                )
        time_idx = state["time_idx"]
        if isinstance(time_idx, bool) or int(time_idx) != time_idx or time_idx < 0:
            raise ValueError(f"time_idx must be a non-negative integer, got {time_idx!r}")
        self.time_idx = int(time_idx)

    def __repr__(self) -> str:
        return (
            f"TBPTTBatcher(N={self.batch_size}, T={self.time_size}, "
            f"data_size={self.data_size}, time_idx={self.time_idx})"
        )


def _eval_length(n_tokens: int, N: int) -> int:
    L = (n_tokens - 1) // N
    if L < 1:
        raise ValueError(
            f"corpus of {n_tokens} tokens is too short for batch_size={N}: evaluation needs "
            f"at least batch_size + 1 = {N + 1} tokens; lower batch_size"
        )
    return L


def eval_token_count(corpus, batch_size: int) -> int:
    """Number of target tokens :func:`eval_batches` scores: ``N * ((len(corpus) - 1) // N)``."""
    N = checks.check_positive_int(batch_size, "batch_size")
    return N * _eval_length(len(corpus), N)


def eval_batches(corpus, batch_size: int, time_size: int):
    """Walk the whole split once, for evaluation: yields (xs, ts) of shape (N, t), t <= T.

    Parameters
    ----------
    corpus : (n_tokens,) int numpy.ndarray
    batch_size : int
        N, the number of contiguous streams.
    time_size : int
        T, the window length; the last window is shorter when ``L % T != 0``.

    Yields
    ------
    xs, ts : (N, t) int numpy.ndarray
        Inputs and targets (contiguous copies).

    Notes
    -----
    With ``L = (len(corpus) - 1) // N``, stream i is inputs ``corpus[i*L : (i+1)*L]`` and
    targets ``corpus[i*L + 1 : (i+1)*L + 1]``. Windows ``[s, s + T)`` for ``s = 0, T, 2T,
    ...`` cover every stream from start to end, so each of the ``N * L`` targets
    (:func:`eval_token_count`) is scored exactly once, in order within its stream, with the
    hidden state carried from window to window. The last ``(len(corpus) - 1) - N * L``
    targets (at most N - 1) are dropped; use N = 1 to score every token.
    """
    corpus = _as_corpus(corpus)
    N = checks.check_positive_int(batch_size, "batch_size")
    T = checks.check_positive_int(time_size, "time_size")
    L = _eval_length(len(corpus), N)
    xs_all = corpus[: N * L].reshape(N, L)
    ts_all = corpus[1 : N * L + 1].reshape(N, L)
    return _windows(xs_all, ts_all, T)  # validated now, batches produced lazily


def _windows(xs_all, ts_all, T):
    for s in range(0, xs_all.shape[1], T):
        yield np.ascontiguousarray(xs_all[:, s : s + T]), np.ascontiguousarray(ts_all[:, s : s + T])
