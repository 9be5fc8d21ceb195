import math

import numpy as np
import pytest

from npgated import backend
from npgated.data import ptb
from npgated.data.batching import eval_token_count
from npgated.models.rnnlm import BetterRnnlm, Rnnlm
from npgated.training.config import TrainConfig
from npgated.training.evaluate import eval_perplexity, eval_perplexity_book
from npgated.training.loop import train


def test_uniform_model_has_perplexity_v(xp_name, rng):
    """All-zero output weights and bias: every word has probability 1/V, so ppl = V."""
    V = 37
    model = Rnnlm(V, 6, 6, seed=0, dtype=np.float64)
    for name, p, _ in model.named_params():
        if name.startswith("affine."):
            p[...] = 0
    corpus = rng.integers(0, V, 503)
    assert eval_perplexity(model, corpus, batch_size=4, time_size=7) == pytest.approx(V, rel=1e-12)


def test_matches_a_direct_computation(rng):
    """Same numbers as feeding each stream through the model window by window by hand."""
    V, N, T = 23, 3, 5
    model = BetterRnnlm(V, 8, 8, num_layers=2, dropout_ratio=0.5, seed=1, dtype=np.float64)
    corpus = rng.integers(0, V, 100)
    L = (len(corpus) - 1) // N
    xs_all = corpus[:-1][: N * L].reshape(N, L)
    ts_all = corpus[1:][: N * L].reshape(N, L)
    model.eval()
    model.reset_state()
    total = 0.0
    for start in range(0, L, T):
        xs, ts = xs_all[:, start : start + T], ts_all[:, start : start + T]
        total += float(model.forward(xs, ts)) * ts.size
    expected = math.exp(total / (N * L))
    assert eval_token_count(corpus, N) == N * L
    model.train()
    assert eval_perplexity(model, corpus, N, T) == pytest.approx(expected, rel=1e-12)
    assert model.training  # mode restored


@pytest.mark.slow
def test_short_real_ptb_run_lowers_perplexity(ptb_dir, tmp_path):
    """A few hundred iterations on the real Penn Treebank: validation perplexity falls."""
    train_c, w2i, _ = ptb.load_data("train", ptb_dir)
    valid, _, _ = ptb.load_data("valid", ptb_dir)
    valid = valid[: 20 * 35 * 10 + 1]
    config = TrainConfig(
        model="Rnnlm",
        wordvec_size=32,
        hidden_size=32,
        batch_size=20,
        time_size=35,
        lr=20.0,
        max_grad_norm=0.25,
        epochs=2,
        max_iters=120,
        progress=False,
        run_dir=str(tmp_path / "run"),
        seed=0,
    )
    result = train(config, (train_c, valid, None, w2i))
    records = [r for r in result.run_dir.joinpath("metrics.jsonl").read_text().splitlines()]
    import json

    valid_ppl = [json.loads(r)["ppl"] for r in records if json.loads(r)["kind"] == "valid"]
    assert len(valid_ppl) == 2
    assert valid_ppl[0] < 1500 and valid_ppl[1] < valid_ppl[0], valid_ppl
    assert backend.current() == "numpy"


def _book_protocol_by_loops(model, corpus, N, T):
    """The book's eval_perplexity written out with loops over windows, steps and streams."""
    L = len(corpus)
    jump, K = (L - 1) // N, (L - 1) // (N * T)
    model.eval()
    model.reset_state()
    losses = []
    for k in range(K):
        xs, ts = np.zeros((N, T), dtype=np.int64), np.zeros((N, T), dtype=np.int64)
        for t in range(T):
            for i in range(N):
                xs[i, t] = corpus[(i * jump + k * T + t) % L]
                ts[i, t] = corpus[(i * jump + k * T + t + 1) % L]
        losses.append(float(model.forward(xs, ts)))
    return math.exp(sum(losses) / K)


@pytest.mark.parametrize("n_tokens", [64, 61, 12 + 1])
def test_book_protocol_matches_a_loop_written_reference(rng, n_tokens):
    V, N, T = 19, 3, 4
    model = Rnnlm(V, 6, 7, seed=2, dtype=np.float64)
    corpus = rng.integers(0, V, n_tokens)
    expected = _book_protocol_by_loops(model, corpus, N, T)
    model.train()
    assert eval_perplexity_book(model, corpus, N, T) == pytest.approx(expected, rel=1e-12)
    assert model.training  # mode restored
    if (n_tokens - 1) % (N * T) == 0:  # whole windows cover every stream: the same tokens
        assert eval_perplexity(model, corpus, N, T) == pytest.approx(expected, rel=1e-12)
    else:  # the book skips the last (L - 1) // N % T targets of each stream
        assert eval_perplexity(model, corpus, N, T) != pytest.approx(expected, rel=1e-9)


def test_book_protocol_needs_one_whole_window(rng):
    with pytest.raises(ValueError, match="one whole window needs 13 tokens"):
        eval_perplexity_book(Rnnlm(5, 3, 3, seed=0), rng.integers(0, 5, 12), 3, 4)
