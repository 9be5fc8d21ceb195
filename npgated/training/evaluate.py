"""Perplexity of a language model over a whole corpus split.

    perplexity = exp( (1 / K) * sum_k -log p(w_k | w_<k) )

over the K target tokens of the split (every token but the first, less at most N - 1 dropped
at the end so that the split divides into N streams; see ``npgated.data.batching``). The
model runs in eval mode (no dropout, nothing cached for backward), its state carried from
window to window within each stream, and reset before and after.
"""

from __future__ import annotations

import math

from tqdm.auto import tqdm

from npgated.data.batching import eval_batches, eval_token_count


def eval_perplexity(model, corpus, batch_size: int = 10, time_size: int = 35,
                    progress: bool = False) -> float:
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
    was_training = model.training
    model.eval()
    model.reset_state()
    total, count = 0.0, 0
    try:
        batches = eval_batches(corpus, batch_size, time_size)
        n_windows = math.ceil(eval_token_count(corpus, batch_size) / (batch_size * time_size))
        for xs, ts in tqdm(batches, total=n_windows, disable=not progress,
                           desc="eval", unit="win", leave=False):
            if dp is not None:
                xs, ts = dp.rows(xs), dp.rows(ts)
            loss = float(model.forward(xs, ts))
            total += loss * ts.size
            count += ts.size
    finally:
        model.reset_state()
        model.train(was_training)
    if dp is not None:
        total, count = dp.sum_over_ranks(total, count)
    return math.exp(total / count)
