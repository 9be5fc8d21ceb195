"""Tests of npgated/models/seq2seq.py: Seq2seq, PeekySeq2seq, AttentionSeq2seq."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from npgated import backend, gradcheck
from npgated.functional import log_softmax
from npgated.models import build_model
from npgated.models.seq2seq import (
    AttentionSeq2seq,
    PeekySeq2seq,
    Seq2seq,
    build_seq2seq,
    seq2seq_accuracy,
)
from npgated.training.checkpoint import CheckpointError, load_checkpoint, restore, save_checkpoint

CLASSES = {"Seq2seq": Seq2seq, "PeekySeq2seq": PeekySeq2seq, "AttentionSeq2seq": AttentionSeq2seq}
V, D, H = 7, 3, 4
N, T_ENC, T_ANS = 2, 4, 4  # ts has 1 + 3 columns: 3 decoder steps


def make(name, cell, dtype=np.float64, seed=1, **kw):
    # init=0.5: U(-0.5, 0.5) everywhere, biases included, so every parameter matters
    kw.setdefault("init", 0.5)
    return CLASSES[name](V, D, H, cell=cell, seed=seed, dtype=dtype, **kw)


def batch(seed=0, n=N, t_enc=T_ENC, t_ans=T_ANS):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (n, t_enc)), rng.integers(0, V, (n, t_ans))


def scores_of(model, xs, ts_in):
    """Training-path scores (N, T, V) for decoder inputs ts_in (white box: the Time layers)."""
    u = model._decode(backend.to_device(ts_in), model._encode(backend.to_device(xs)))
    return model.layers["decoder.affine"].forward(u)


# ---------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("name", list(CLASSES))
def test_gradients(name, cell, xp_name):
    model = make(name, cell)
    xs, ts = batch()
    # element by element on NumPy; on the device stand-in (20x slower per operation) one
    # random direction per parameter, enough to catch a backend mistake
    directional = tuple(model.param_names) if xp_name != "numpy" else ()
    results = gradcheck.check_model(model, xs, ts, directional=directional)
    assert [r.name for r in results] == model.param_names
    worst = max(results, key=lambda r: r.error)
    assert worst.error <= 1e-6, f"{name} ({cell}) {worst}"


def test_gradients_cho_gru_and_directional_embeddings():
    model = make("PeekySeq2seq", "gru", reset_after=False)
    xs, ts = batch(1, n=3, t_enc=5, t_ans=5)
    results = gradcheck.check_model(
        model, xs, ts, directional=("encoder.embed.W", "decoder.embed.W")
    )
    worst = max(results, key=lambda r: r.error)
    assert worst.error <= 1e-6, str(worst)


# ---------------------------------------------------------------------------------------
# Forward: teacher forcing, eval path, against the step functions
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("name", list(CLASSES))
def test_loss_is_teacher_forcing_through_the_step_path(name, cell, xp_name):
    """forward (Time layers, all steps at once) equals the mean negative log-likelihood that
    the decoder's step path (generate's) gives when fed ts[:, :-1] one step at a time."""
    model = make(name, cell)
    xs, ts = batch(2, n=3)
    loss = float(model.forward(xs, ts))
    hs_enc = model._encode(backend.to_device(xs))
    if not model.attentive:
        hs_enc = hs_enc[:, -1:]
    h = hs_enc[:, -1]
    c = model._initial_c(h)
    nll = 0.0
    ts_dev = backend.to_device(ts)
    for t in range(ts.shape[1] - 1):
        scores, h, c, _ = model._step(ts_dev[:, t], h, c, hs_enc)
        logp = backend.to_cpu(log_softmax(scores, axis=1))
        nll -= logp[np.arange(len(ts)), ts[:, t + 1]].sum()
    assert abs(loss - nll / (len(ts) * (ts.shape[1] - 1))) <= 1e-12 * abs(loss)
    model.eval()
    assert abs(float(model.forward(xs, ts)) - loss) <= 1e-12 * abs(loss)  # the fused eval path


def test_the_decoder_reads_ts_without_its_last_column():
    model = make("AttentionSeq2seq", "lstm")
    xs, ts = batch(3)
    other = ts.copy()
    other[:, -1] = (other[:, -1] + 1) % V  # only a target changes, no decoder input
    a, b = scores_of(model, xs, ts[:, :-1]), scores_of(model, xs, other[:, :-1])
    assert np.array_equal(backend.to_cpu(a), backend.to_cpu(b))
    assert float(model.forward(xs, ts)) != float(model.forward(xs, other))


def test_parameters_in_the_books_order_and_shapes():
    expected = {
        "Seq2seq": [(V, D), (D, 16), (H, 16), (16,), (V, D), (D, 16), (H, 16), (16,), (H, V), (V,)],
        "PeekySeq2seq": [
            (V, D),
            (D, 16),
            (H, 16),
            (16,),
            (V, D),
            (H + D, 16),
            (H, 16),
            (16,),
            (2 * H, V),
            (V,),
        ],
        "AttentionSeq2seq": [
            (V, D),
            (D, 16),
            (H, 16),
            (16,),
            (V, D),
            (D, 16),
            (H, 16),
            (16,),
            (2 * H, V),
            (V,),
        ],
    }
    for name, shapes in expected.items():
        model = CLASSES[name](V, D, H, seed=0)
        assert model.param_names == [
            "encoder.embed.W",
            "encoder.lstm.Wx",
            "encoder.lstm.Wh",
            "encoder.lstm.b",
            "decoder.embed.W",
            "decoder.lstm.Wx",
            "decoder.lstm.Wh",
            "decoder.lstm.b",
            "decoder.affine.W",
            "decoder.affine.b",
        ]
        assert [tuple(p.shape) for p in model.params] == shapes, name
        assert all(p.dtype == np.float32 for p in model.params)
    gru = Seq2seq(V, D, H, cell="gru", seed=0)
    assert gru.param_names[1] == "encoder.gru.Wx" and gru.params[3].shape == (2, 12)


def test_book_initialisation():
    model = Seq2seq(50, 16, 64, seed=0, dtype=np.float64)
    p = dict(zip(model.param_names, model.params))
    assert 0.005 < p["encoder.embed.W"].std() < 0.015  # N(0, 1) / 100
    assert abs(p["encoder.lstm.Wx"].std() * 4 - 1) < 0.1  # N(0, 1) / sqrt(16)
    assert abs(p["decoder.affine.W"].std() * 8 - 1) < 0.1  # N(0, 1) / sqrt(64)
    assert not p["decoder.lstm.b"].any() and not p["decoder.affine.b"].any()
    again = Seq2seq(50, 16, 64, seed=0, dtype=np.float64)
    assert all(np.array_equal(a, b) for a, b in zip(model.params, again.params))


# ---------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("name", list(CLASSES))
def test_greedy_is_the_argmax_of_its_own_teacher_forcing(name, cell, xp_name):
    model = make(name, cell)
    xs, _ = batch(4, n=5)
    out = model.generate(xs, 2, 6)
    assert isinstance(out, np.ndarray) and out.shape == (5, 6) and out.dtype == np.int64
    ts_in = np.concatenate([np.full((5, 1), 2), out[:, :-1]], axis=1)
    forced = backend.to_cpu(scores_of(model, xs, ts_in))
    assert np.array_equal(forced.argmax(axis=2), out)
    if model.attentive:  # the weights of the generated characters, as forward gives them
        w = backend.to_cpu(model.attention_weights)
        assert w.shape == (5, 6, T_ENC)
        assert np.allclose(w.sum(axis=2), 1)
        assert np.allclose(
            w, backend.to_cpu(model.layers["decoder.attention"].weights), rtol=0, atol=1e-12
        )
    else:
        assert model.attention_weights is None


@pytest.mark.parametrize("name", list(CLASSES))
def test_batched_generation_equals_one_question_at_a_time(name):
    model = make(name, "lstm", dtype=np.float32)
    xs, _ = batch(5, n=6)
    starts = np.array([0, 1, 2, 3, 4, 5])
    for beam in (None, 3):
        together = model.generate(xs, starts, 5, beam_size=beam)
        alone = np.concatenate(
            [model.generate(xs[[i]], starts[i], 5, beam_size=beam) for i in range(6)]
        )
        assert np.array_equal(together, alone), beam


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("name", list(CLASSES))
def test_beam_size_one_is_greedy(name, cell, xp_name):
    model = make(name, cell, init="book", dtype=np.float32)
    xs, _ = batch(6, n=40)
    greedy = model.generate(xs, 0, 6)
    w = None if model.attention_weights is None else backend.to_cpu(model.attention_weights)
    assert np.array_equal(model.generate(xs, 0, 6, beam_size=1), greedy)
    if w is not None:
        assert np.array_equal(backend.to_cpu(model.attention_weights), w)


def sequence_logp(model, xs, start, seqs):
    """log P(seq | question) of each row of seqs (n, L), by teacher forcing."""
    ts_in = np.concatenate([np.full((len(seqs), 1), start), seqs[:, :-1]], axis=1)
    logp = log_softmax(backend.to_cpu(scores_of(model, xs, ts_in)), axis=2)
    return np.take_along_axis(logp, seqs[..., None], axis=2)[..., 0].sum(axis=1)


@pytest.mark.parametrize("name", list(CLASSES))
def test_beam_search_with_enough_beams_finds_the_most_probable_answer(name, xp_name):
    """With V ** (L - 1) beams nothing is ever pruned: the answer is the exhaustive argmax."""
    model = make(name, "lstm")
    xs, _ = batch(7, n=3)
    L = 3
    every = np.array(list(itertools.product(range(V), repeat=L)))  # all V ** L answers
    best = model.generate(xs, 1, L, beam_size=V ** (L - 1))
    for i in range(3):
        logp = sequence_logp(model, np.repeat(xs[[i]], len(every), axis=0), 1, every)
        assert np.array_equal(best[i], every[np.argmax(logp)])
    greedy = model.generate(xs, 1, L)
    assert (sequence_logp(model, xs, 1, best) >= sequence_logp(model, xs, 1, greedy) - 1e-12).all()


def test_accuracy_counts_whole_answers(xp_name):
    model = make("AttentionSeq2seq", "gru", dtype=np.float32)
    xs, _ = batch(8, n=30)
    guess = model.generate(xs, 3, 4)
    t = np.concatenate([np.full((30, 1), 3), guess], axis=1)
    t[::3, 2] = (t[::3, 2] + 1) % V  # one wrong character spoils an answer
    assert seq2seq_accuracy(model, xs, t, batch_size=7) == (20, 30)
    t[1, 1:] = (t[1, 1:] + 1) % V
    assert seq2seq_accuracy(model, xs, t) == (19, 30)
    assert seq2seq_accuracy(model, xs, t, beam_size=1) == (19, 30)


def test_generate_leaves_the_mode_and_keeps_no_cache():
    model = make("Seq2seq", "lstm")
    model.generate(batch()[0], 0, 3)
    assert model.training
    with pytest.raises(RuntimeError):
        model.layers["encoder.lstm"].backward(np.zeros((N, T_ENC, H)))


# ---------------------------------------------------------------------------------------
# dtype, errors, config, checkpoints
# ---------------------------------------------------------------------------------------
def test_float32_gradients_agree_with_float64():
    xs, ts = batch(9)
    grads = []
    for dtype in (np.float32, np.float64):
        model = make("PeekySeq2seq", "lstm", dtype=dtype)
        model.zero_grads()
        loss = model.forward(xs, ts)
        assert loss.dtype == dtype
        model.backward()
        grads.append([g.copy() for g in model.grads])
    for g32, g64 in zip(*grads):
        assert g32.dtype == np.float32
        assert gradcheck.rel_error(g32, g64) < 1e-4


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: Seq2seq(V, D, H, cell="rnn"), "unknown cell 'rnn' for an encoder-decoder"),
        (lambda m: m.forward(np.zeros((2, 3), int), np.zeros((3, 4), int)), r"ts must have shape"),
        (lambda m: m.forward(np.zeros((2, 3), int), np.zeros((2, 1), int)), r"T_dec >= 1"),
        (lambda m: m.forward(np.full((2, 3), V), np.zeros((2, 4), int)), r"xs: token id 7"),
        (lambda m: m.forward(np.zeros((2, 3)), np.zeros((2, 4), int)), "integer token ids"),
        (lambda m: m.generate(np.zeros((2, 3), int), 0, 3, beam_size=0), "beam_size must be"),
        (lambda m: m.generate(np.zeros((2, 3), int), [0, 1, 2], 3), r"one per question \(2,\)"),
        (lambda m: m.generate(np.zeros((2, 3), int), V, 3), "start_id: token id 7"),
        (lambda m: build_seq2seq({"model": "Rnnlm", "vocab_size": V}), "unknown encoder-decoder"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(make("Seq2seq", "lstm"))


@pytest.mark.parametrize("name", list(CLASSES))
def test_checkpoint_round_trip_through_build_model(name, tmp_path, xp_name):
    model = make(name, "gru", dtype=np.float32, seed=3)
    xs, ts = batch(10)
    model.eval()
    loss = float(model.forward(xs, ts))
    path = save_checkpoint(tmp_path / "m.npz", model, meta={"task": "toy"})
    ckpt = load_checkpoint(path)
    assert ckpt.meta["config"] == model.config
    back = build_model(ckpt.meta["config"], dtype=np.float32)  # what cli._load_model does
    assert type(back) is type(model) and back.config == model.config
    restore(back, ckpt)
    assert float(back.eval().forward(xs, ts)) == loss
    assert np.array_equal(back.generate(xs, 0, 5), model.generate(xs, 0, 5))
    other = build_seq2seq(dict(model.config, hidden_size=H + 1))
    with pytest.raises(CheckpointError, match="hidden_size: checkpoint 4 vs model 5"):
        restore(other, ckpt)
