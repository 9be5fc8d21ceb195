"""Perplexity of a language model over a whole corpus split.

    perplexity = exp( (1 / K) * sum_k -log p(w_k | w_<k) )

over the K target tokens of the split (every token but the first, less at most N - 1 dropped
at the end so that the split divides into N streams; see ``npgated.data.batching``). The
model runs in eval mode (no dropout, nothing cached for backward), its state carried from
window to window within each stream, and reset before and after.

:func:`eval_perplexity_book` instead reproduces the book's ``eval_perplexity`` (DLfS2
``common/util.py``) number for number, to compare with the perplexities the book prints; see
its Notes for how the two protocols differ.
"""

from __future__ import annotations

import math
import sys
from contextlib import contextmanager

import numpy as np

from npgated import backend, checks
from npgated.data.batching import eval_batches, eval_token_count


def _progress(iterable, show: bool, **kwargs):
    """``iterable`` with a tqdm bar when ``show``, else ``iterable`` itself.

    tqdm is imported only when a bar is shown, and as ``tqdm.auto`` (a notebook's widget)
    only under IPython: its asyncio variant, which ``tqdm.auto`` also imports, is ~20 ms of
    start-up that a command-line ``npgated eval`` does not use.
    """
    if not show:
        return iterable
    if "IPython" in sys.modules:
        from tqdm.auto import tqdm  # noqa: PLC0415
    else:
        from tqdm.std import tqdm  # noqa: PLC0415
    return tqdm(iterable, **kwargs)


def eval_window_count(corpus, batch_size: int, time_size: int) -> int:
    """Number of (N, T) windows :func:`eval_perplexity` runs over ``corpus`` (the last of
    each stream may be shorter than T); 0 for no corpus."""
    if corpus is None:
        return 0
    return math.ceil(eval_token_count(corpus, batch_size) / (batch_size * time_size))


@contextmanager
def _evaluating(model):
    """Eval mode and a fresh state for the block; the state reset and the previous mode
    restored afterwards (also on an exception)."""
    was_training = model.training
    model.eval()
    model.reset_state()
    try:
        yield
    finally:
        model.reset_state()
        model.train(was_training)


def eval_perplexity(
    model, corpus, batch_size: int = 10, time_size: int = 35, progress: bool = False
) -> float:
    """Perplexity of ``model`` on ``corpus`` (a 1-D array of token ids).

    Parameters
    ----------
    model : LanguageModel
    corpus : (L,) int array
    batch_size : int
        Number of parallel streams N (more is faster; the result changes only through the
        state resets at stream starts and the at most N - 1 dropped final tokens).
    time_size : int
        Window length T.
    progress : bool
        Show a tqdm bar.
    """
    dp = getattr(model, "data_parallel", None)  # under MPI: this rank's streams, then a sum
    total, count = 0.0, 0
    with _evaluating(model):
        batches = eval_batches(corpus, batch_size, time_size)
        for xs, ts in _progress(
            batches,
            progress,
            total=eval_window_count(corpus, batch_size, time_size),
            desc="eval",
            unit="win",
            leave=False,
        ):
            if dp is not None:
                xs, ts = dp.rows(xs), dp.rows(ts)
            loss = float(model.forward(xs, ts))
            total += loss * ts.size
            count += ts.size
    if dp is not None:
        total, count = dp.sum_over_ranks(total, count)
    return math.exp(total / count)


def eval_perplexity_book(
    model, corpus, batch_size: int = 10, time_size: int = 35, progress: bool = False
) -> float:
    """Perplexity of ``model`` on ``corpus`` exactly as the book's ``eval_perplexity`` computes it.

    Parameters
    ----------
    model : LanguageModel
    corpus : (L,) int array
        Token ids of the whole split.
    batch_size : int
        N, the number of streams (the book evaluates with 10).
    time_size : int
        T, the window length (the book uses 35).
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    float
        ``exp(mean of the K window losses)``.

    Raises
    ------
    ValueError
        If the corpus is too short for one whole window (``len(corpus) - 1 < N * T``).

    Notes
    -----
    With ``L = len(corpus)``, ``jump = (L - 1) // N`` and ``K = (L - 1) // (N * T)``, window
    k = 0 .. K-1 reads, for stream i and step t::

        pos[i, t] = i * jump + k * T + t                         (N, T)
        xs = corpus[pos % L],  ts = corpus[(pos + 1) % L]

    The model's state is reset once, then carried from window to window; the result is
    ``exp((1 / K) * sum_k loss_k)`` with ``loss_k`` the mean cross-entropy of window k.

    How it differs from :func:`eval_perplexity` (npgated's default protocol): the book's
    streams start ``jump`` tokens apart as here, but only the ``K`` whole windows are read,
    so the last ``jump % T`` targets of every stream (at most T - 1; on the PTB test split,
    82,430 tokens, jump = 8,242 and K = 235, so 17 per stream, 170 in all) are never scored,
    whereas the default protocol scores all ``N * jump`` targets, the last window of each
    stream being shorter. Both reset the state once and carry it within each stream; both
    average over tokens, the book's through windows of equal size. The positions wrap modulo
    L as in the book, though with this K they never reach L.
    """
    corpus = np.asarray(backend.to_cpu(corpus))
    if corpus.ndim != 1 or corpus.dtype.kind not in "iu":
        raise ValueError(
            f"corpus must be a 1-D array of integer token ids, got shape {corpus.shape} and "
            f"dtype {corpus.dtype}"
        )
    N = checks.check_positive_int(batch_size, "batch_size")
    T = checks.check_positive_int(time_size, "time_size")
    L = len(corpus)
    K = (L - 1) // (N * T)
    if K < 1:
        raise ValueError(
            f"corpus of {L} tokens is too short for the book protocol with batch_size * "
            f"time_size = {N} * {T}: one whole window needs {N * T + 1} tokens; lower "
            "batch_size or time_size"
        )
    jump = (L - 1) // N
    starts = np.arange(N, dtype=np.int64)[:, None] * jump + np.arange(T, dtype=np.int64)[None, :]
    total = 0.0
    with _evaluating(model):
        for k in _progress(range(K), progress, desc="eval (book)", unit="win", leave=False):
            pos = starts + k * T  # (N, T)
            total += float(model.forward(corpus[pos % L], corpus[(pos + 1) % L]))
    return math.exp(total / K)
