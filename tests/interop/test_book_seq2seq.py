"""Tests of npgated/interop/book_seq2seq.py: the book's encoder-decoder pickles in and out."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npgated.data import sequence
from npgated.interop.book import BookFormatError, gates_to_book, load_book_pickle
from npgated.interop.book_seq2seq import infer_book_seq2seq, model_from_book, model_to_book
from npgated.models.rnnlm import Rnnlm
from npgated.models.seq2seq import AttentionSeq2seq, PeekySeq2seq, Seq2seq, seq2seq_accuracy

KINDS = ("Seq2seq", "PeekySeq2seq", "AttentionSeq2seq")
V, D, H = 11, 5, 6


def book_shapes(kind):
    D_dec = H + D if kind == "PeekySeq2seq" else D
    H_out = H if kind == "Seq2seq" else 2 * H
    return [
        (V, D),
        (D, 4 * H),
        (H, 4 * H),
        (4 * H,),
        (V, D),
        (D_dec, 4 * H),
        (H, 4 * H),
        (4 * H,),
        (H_out, V),
        (V,),
    ]


def book_arrays(kind, seed=0):
    """What the book's save_params writes: float16 arrays in its params order (gates f,g,i,o)."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * 0.5).astype(np.float16) for s in book_shapes(kind)]


def write_pickle(path, arrays):
    with open(path, "wb") as f:
        pickle.dump(list(arrays), f, protocol=3)
    return path


# --- a plain NumPy reading of the book's chapter 7-8 forward (its gate order, its concatenations)
def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def book_lstm(xs, h, Wx, Wh, b):
    """The book's TimeLSTM: gate blocks f, g, i, o; c_0 = 0."""
    c = np.zeros_like(h)
    hs = []
    for t in range(xs.shape[1]):
        a = xs[:, t] @ Wx + h @ Wh + b
        f, g = _sigmoid(a[:, :H]), np.tanh(a[:, H : 2 * H])
        i, o = _sigmoid(a[:, 2 * H : 3 * H]), _sigmoid(a[:, 3 * H :])
        c = f * c + g * i
        h = o * np.tanh(c)
        hs.append(h)
    return np.stack(hs, axis=1)


def book_loss(kind, arrays, xs, ts):
    Ee, Wxe, Whe, be, Ed, Wxd, Whd, bd, W, b = (a.astype(np.float64) for a in arrays)
    N = len(xs)
    hs_enc = book_lstm(Ee[xs], np.zeros((N, H)), Wxe, Whe, be)
    h = hs_enc[:, -1]
    es = Ed[ts[:, :-1]]
    if kind == "PeekySeq2seq":
        peek = np.repeat(h[:, None], es.shape[1], axis=1)
        u = np.concatenate([peek, book_lstm(np.concatenate([peek, es], 2), h, Wxd, Whd, bd)], 2)
    else:
        hs_dec = book_lstm(es, h, Wxd, Whd, bd)
        if kind == "AttentionSeq2seq":
            s = np.einsum("nth,nsh->nts", hs_dec, hs_enc)
            a = np.exp(s - s.max(axis=2, keepdims=True))
            a /= a.sum(axis=2, keepdims=True)
            u = np.concatenate([np.einsum("nts,nsh->nth", a, hs_enc), hs_dec], 2)
        else:
            u = hs_dec
    logits = u @ W + b
    logits -= logits.max(axis=2, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=2, keepdims=True))
    return -np.take_along_axis(logp, ts[:, 1:, None], axis=2).mean()


# ---------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_import_infers_the_model_and_computes_the_books_loss(kind, tmp_path):
    arrays = book_arrays(kind)
    path = write_pickle(tmp_path / f"{kind}.pkl", arrays)
    model = model_from_book(path, vocab_size=V, dtype=np.float64)
    assert type(model).__name__ == kind and not model.training
    assert model.config == {
        "model": kind,
        "vocab_size": V,
        "wordvec_size": D,
        "hidden_size": H,
        "cell": "lstm",
        "init": "book",
        "reset_after": True,
    }
    rng = np.random.default_rng(1)
    xs, ts = rng.integers(0, V, (4, 5)), rng.integers(0, V, (4, 4))
    loss = float(model.forward(xs, ts))
    assert abs(loss - book_loss(kind, arrays, xs, ts)) <= 1e-12 * loss


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_is_bit_for_bit(kind, tmp_path):
    arrays = book_arrays(kind, seed=2)
    model = model_from_book(write_pickle(tmp_path / "in.pkl", arrays))
    out = model_to_book(model, tmp_path / "out.pkl")
    back = load_book_pickle(out)
    assert len(back) == 10
    for k, (a, b) in enumerate(zip(arrays, back)):
        assert b.dtype == np.float16 and np.array_equal(a, b), k
    again = model_from_book(out)
    assert all(np.array_equal(p, q) for p, q in zip(model.params, again.params))


@pytest.mark.parametrize("kind", KINDS)
def test_export_of_an_npgated_model(kind, tmp_path):
    """A float32 model trained a few steps here: the book's layout (shapes, gate order f,g,i,o,
    float16) and, read by the book's equations, the model's loss up to float16 rounding."""
    from npgated.optim import make_optimizer  # noqa: PLC0415

    cls = {"Seq2seq": Seq2seq, "PeekySeq2seq": PeekySeq2seq, "AttentionSeq2seq": AttentionSeq2seq}
    model = cls[kind](V, D, H, seed=0)
    rng = np.random.default_rng(3)
    xs, ts = rng.integers(0, V, (8, 5)), rng.integers(0, V, (8, 4))
    adam = make_optimizer("adam", 0.01)
    for _ in range(5):
        model.zero_grads()
        model.forward(xs, ts)
        model.backward()
        adam.update(model.params, model.grads)
    arrays = load_book_pickle(model_to_book(model, tmp_path / "m.pkl"))
    assert [a.shape for a in arrays] == book_shapes(kind)
    assert all(a.dtype == np.float16 for a in arrays)
    Wx = model.params[1]
    np.testing.assert_array_equal(arrays[1][:, :H], Wx[:, H : 2 * H].astype(np.float16))  # f
    np.testing.assert_array_equal(arrays[1][:, 2 * H : 3 * H], Wx[:, :H].astype(np.float16))  # i
    np.testing.assert_array_equal(arrays[7], gates_to_book(model.params[7]).astype(np.float16))
    model.eval()
    loss = float(model.forward(xs, ts))
    assert abs(book_loss(kind, arrays, xs, ts) - loss) <= 1e-2 * loss


def test_the_books_classes_load_an_export(tmp_path):
    """The book's own AttentionSeq2seq ($NPGATED_BOOK_DIR) reads an npgated export and answers
    as npgated does with the float16 weights."""
    book = os.environ.get("NPGATED_BOOK_DIR")
    if not book or not (Path(book) / "ch08" / "attention_seq2seq.py").is_file():
        pytest.skip("set NPGATED_BOOK_DIR to a checkout of the book's repository")
    model = AttentionSeq2seq(V, D, H, seed=4, init=0.3)
    path = model_to_book(model, tmp_path / "AttentionSeq2seq.pkl")
    xs = np.random.default_rng(5).integers(0, V, (6, 5))
    np.save(tmp_path / "xs.npy", xs)
    code = (
        "import sys, numpy as np\n"
        f"sys.path[:0] = [{book!r}, {str(Path(book) / 'ch08')!r}]\n"
        "from attention_seq2seq import AttentionSeq2seq\n"
        f"m = AttentionSeq2seq({V}, {D}, {H})\n"
        f"m.load_params({str(path)!r})\n"
        f"xs = np.load({str(tmp_path / 'xs.npy')!r})\n"
        "print(' '.join(str(int(i)) for q in xs for i in m.generate(q[None], 0, 4)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    theirs = np.array(out.stdout.split(), dtype=np.int64).reshape(6, 4)
    ours = model_from_book(path).generate(xs, 0, 4)
    assert np.array_equal(theirs, ours)


# ---------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------
def test_a_language_model_pickle_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    lm = [
        rng.standard_normal(s).astype(np.float16)
        for s in [(V, D), (D, 4 * H), (H, 4 * H), (4 * H,), (H, V), (V,)]
    ]
    path = write_pickle(tmp_path / "Rnnlm.pkl", lm)
    with pytest.raises(
        BookFormatError,
        match=r"holds 6 arrays \(that is the book's chapter-6 "
        r"Rnnlm.*save 10",
    ):
        model_from_book(path)


def test_the_language_model_reader_points_to_this_module(tmp_path):
    from npgated.interop import book  # noqa: PLC0415

    path = write_pickle(tmp_path / "m.pkl", book_arrays("PeekySeq2seq"))
    with pytest.raises(BookFormatError, match=r"10 is one of its encoder-decoders .*book_seq2seq"):
        book.model_from_book(path)


def test_the_real_rnnlm_pickle_is_refused(book_dir):
    with pytest.raises(BookFormatError, match="chapter-6 Rnnlm"):
        model_from_book(book_dir / "Rnnlm.pkl")


def test_another_tasks_vocabulary_is_refused(tmp_path):
    path = write_pickle(tmp_path / "m.pkl", book_arrays("Seq2seq"))
    with pytest.raises(
        BookFormatError,
        match=r"Seq2seq for 11 characters, but the task's "
        r"vocabulary has 59 .*another task",
    ):
        model_from_book(path, vocab_size=59)


def test_inconsistent_shapes_are_refused(tmp_path):
    arrays = book_arrays("AttentionSeq2seq")
    arrays[6] = arrays[6][:, :-4]
    with pytest.raises(
        BookFormatError,
        match=r"array 6 \(decoder lstm_Wh\) has shape \(6, 20\), "
        r"expected \(6, 24\)",
    ):
        infer_book_seq2seq(arrays)


def test_models_the_book_cannot_hold_are_refused(tmp_path):
    with pytest.raises(BookFormatError, match="cell='gru'"):
        model_to_book(Seq2seq(V, D, H, cell="gru", seed=0), tmp_path / "a.pkl")
    with pytest.raises(BookFormatError, match="not an encoder-decoder: Rnnlm"):
        model_to_book(Rnnlm(V, D, H, seed=0), tmp_path / "b.pkl")
    model = Seq2seq(V, D, H, seed=0)
    model.params[-1][0] = 1e6
    with pytest.raises(BookFormatError, match=r"decoder\.affine\.b .*float16"):
        model_to_book(model, tmp_path / "c.pkl")
    assert not list(tmp_path.iterdir())  # nothing written


# ---------------------------------------------------------------------------------------
# The book's trained model
# ---------------------------------------------------------------------------------------
@pytest.mark.slow  # reads the real data; the 5,000 questions take ~5 s on 2 cores
def test_the_books_attention_model_answers_all_5000_dates(book_file):
    """ch08/AttentionSeq2seq.pkl on date.txt, reversed questions, greedy decoding, every test
    question: the book's evaluation counts 5000 of 5000."""
    pkl, date = book_file("AttentionSeq2seq.pkl"), book_file("date.txt")
    data = sequence.load_task("date", date.parent, reverse=True)
    model = model_from_book(pkl, vocab_size=data.vocab_size)
    assert type(model) is AttentionSeq2seq
    assert (model.config["wordvec_size"], model.config["hidden_size"]) == (16, 256)
    assert seq2seq_accuracy(model, data.x_test, data.t_test) == (5000, 5000)
