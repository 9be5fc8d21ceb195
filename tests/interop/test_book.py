"""The book's weight pickles: safe loading, gate order, round trips, its number, the CLI."""

import builtins
import os
import pickle
import re

import numpy as np
import pytest

from npgated import cli
from npgated.data import ptb
from npgated.interop.book import (
    BookFormatError,
    book_ptb_vocabulary,
    gates_from_book,
    gates_to_book,
    load_book_pickle,
    model_from_book,
    model_to_book,
)
from npgated.layers.lstm import TimeLSTM
from npgated.models.rnnlm import BetterRnnlm, Rnnlm
from npgated.training.checkpoint import load_checkpoint, save_checkpoint
from npgated.training.evaluate import eval_perplexity_book

BOOK_TEST_PPL = 136.0776  # what the book's ch06/eval.py prints for Rnnlm.pkl


# ---------------------------------------------------------------------------------------
# helpers: book-style files and a book-style forward pass, written here from the equations
# ---------------------------------------------------------------------------------------
def book_arrays(rng, V=11, D=4, H=3, better=False):
    """Random float16 arrays in the book's order (and gate order, which is just columns)."""

    def w(*shape, scale=0.5):
        return (rng.standard_normal(shape) * scale).astype(np.float16)

    E = w(V, D)
    if not better:
        return [E, w(D, 4 * H), w(H, 4 * H), w(4 * H), w(H, V), w(V)]
    assert D == H
    return [
        E,
        w(D, 4 * H),
        w(H, 4 * H),
        w(4 * H),
        w(H, 4 * H),
        w(H, 4 * H),
        w(4 * H),
        E.T.copy(),
        w(V),
    ]


def write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=3)
    return path


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def book_lstm_forward(xs, Wx, Wh, b):
    """One LSTM over (N, T, D) from zero state, gate blocks sliced in the book's f, g, i, o."""
    N, T, D = xs.shape
    H = Wh.shape[0]
    h, c = np.zeros((N, H)), np.zeros((N, H))
    hs = np.empty((N, T, H))
    for t in range(T):
        a = xs[:, t] @ Wx + h @ Wh + b
        f, g = sigmoid(a[:, :H]), np.tanh(a[:, H : 2 * H])
        i, o = sigmoid(a[:, 2 * H : 3 * H]), sigmoid(a[:, 3 * H :])
        c = f * c + g * i
        h = o * np.tanh(c)
        hs[:, t] = h
    return hs


def book_logits(arrays, ids):
    """The book's Rnnlm (6 arrays) or BetterRnnlm (9, eval mode) forward, float64."""
    a = [np.asarray(x, dtype=np.float64) for x in arrays]
    hs = a[0][ids]
    for k in range(1, len(a) - 2, 3):
        hs = book_lstm_forward(hs, a[k], a[k + 1], a[k + 2])
    return hs @ a[-2] + a[-1]


def params_of(model):
    return {name: np.asarray(p).copy() for name, p, _ in model.named_params()}


# ---------------------------------------------------------------------------------------
# safe loading
# ---------------------------------------------------------------------------------------
class _RunsCode:
    """Unpickling this calls ``func(*args)``: what a malicious weight file would do."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("make", ["os.system", "builtins.exec"])
def test_refuses_a_pickle_that_runs_code(tmp_path, rng, make):
    marker = tmp_path / "pwned"
    if make == "os.system":
        evil, refused = _RunsCode(os.system, f"touch {marker}"), f"{os.system.__module__}.system"
    else:
        evil = _RunsCode(builtins.exec, f"open({str(marker)!r}, 'w').close()")
        refused = "builtins.exec"
    path = write_pickle(tmp_path / "evil.pkl", [book_arrays(rng)[0], evil])
    with pytest.raises(BookFormatError, match=re.escape(f"refused global {refused}")):
        load_book_pickle(path)
    with pytest.raises(BookFormatError, match="nothing was executed"):
        model_from_book(path)
    assert not marker.exists()
    if make == "builtins.exec":  # the same file does run its code through plain pickle.load
        with open(path, "rb") as f:
            pickle.load(f)
        assert marker.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ({"embed_W": np.zeros((3, 2))}, "holds a dict, not a list"),
        ((np.zeros((3, 2)),), "holds a tuple, not a list"),
        ([np.zeros((3, 2)), 5], "item 1 of the list is a int, not a NumPy array"),
        ([np.zeros((3, 2), dtype=np.int64)], "array 0 has dtype int64"),
        ([np.array(["a"], dtype=object)], "array 0 has dtype object"),
    ],
)
def test_refuses_anything_but_a_list_of_float_arrays(tmp_path, content, message):
    path = write_pickle(tmp_path / "odd.pkl", content)
    with pytest.raises(BookFormatError, match=re.escape(message)):
        load_book_pickle(path)


def test_refuses_truncated_and_missing_files(tmp_path, rng):
    good = pickle.dumps(book_arrays(rng), protocol=3)
    (tmp_path / "cut.pkl").write_bytes(good[: len(good) // 2])
    with pytest.raises(BookFormatError, match="not a readable pickle"):
        load_book_pickle(tmp_path / "cut.pkl")
    with pytest.raises(FileNotFoundError, match="no book weight file"):
        load_book_pickle(tmp_path / "absent.pkl")


def test_reads_numpy_1_files(tmp_path, rng):
    """The book's file was written by NumPy 1 (``numpy.core.multiarray._reconstruct``)."""
    arrays = book_arrays(rng)
    blob = pickle.dumps(arrays, protocol=3)
    old = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != blob
    (tmp_path / "old.pkl").write_bytes(old)
    for a, b in zip(load_book_pickle(tmp_path / "old.pkl"), arrays):
        assert a.dtype == b.dtype and np.array_equal(a.view(np.uint16), b.view(np.uint16))


# ---------------------------------------------------------------------------------------
# gate order
# ---------------------------------------------------------------------------------------
def test_gate_conversion_matches_a_book_style_lstm(rng):
    N, T, D, H = 3, 4, 5, 6
    Wx, Wh, b = rng.normal(size=(D, 4 * H)), rng.normal(size=(H, 4 * H)), rng.normal(size=4 * H)
    xs = rng.normal(size=(N, T, D))
    lstm = TimeLSTM(gates_from_book(Wx), gates_from_book(Wh), gates_from_book(b))
    np.testing.assert_allclose(
        lstm.forward(xs), book_lstm_forward(xs, Wx, Wh, b), rtol=1e-12, atol=1e-14
    )
    # without the conversion the same weights compute something else
    assert not np.allclose(TimeLSTM(Wx, Wh, b).forward(xs), book_lstm_forward(xs, Wx, Wh, b))
    for a in (Wx, Wh, b):
        assert np.array_equal(gates_to_book(gates_from_book(a)), a)


@pytest.mark.parametrize("better", [False, True], ids=["Rnnlm", "BetterRnnlm"])
def test_imported_model_computes_the_book_models_logits(tmp_path, rng, better):
    arrays = book_arrays(rng, V=13, D=4, H=4, better=better)
    path = write_pickle(tmp_path / "m.pkl", arrays)
    model = model_from_book(path, dtype=np.float64)
    assert type(model) is (BetterRnnlm if better else Rnnlm) and not model.training
    assert model.config["tie_weights"] if better else model.config["cell"] == "lstm"
    ids = rng.integers(0, 13, (2, 5))
    np.testing.assert_allclose(model.predict(ids), book_logits(arrays, ids), rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: Rnnlm(17, 5, 6, seed=3, dtype=np.float64),
        lambda: BetterRnnlm(17, 6, 6, num_layers=2, seed=3, dtype=np.float64, init=0.3),
    ],
    ids=["Rnnlm", "BetterRnnlm"],
)
def test_model_to_book_and_back_gives_float16_rounded_params(tmp_path, make):
    model = make()
    before = params_of(model)
    path = model_to_book(model, tmp_path / "out.pkl")
    assert [p.name for p in tmp_path.iterdir()] == ["out.pkl"]  # no temporary file left
    arrays = load_book_pickle(path)
    assert all(a.dtype == np.float16 for a in arrays)
    assert len(arrays) == (9 if isinstance(model, BetterRnnlm) else 6)

    fresh = make()
    ids_before = [id(p) for p in fresh.params]
    back = model_from_book(path, model=fresh)
    assert back is fresh and [id(p) for p in fresh.params] == ids_before  # written in place
    for name, value in params_of(fresh).items():
        np.testing.assert_array_equal(
            value, before[name].astype(np.float16).astype(np.float64), err_msg=name
        )
    if isinstance(model, BetterRnnlm):
        assert len(fresh.params) == 8  # the tied matrix once in the model
        assert np.array_equal(arrays[7], arrays[0].T)  # and twice in the book's file


def _roundtrip_is_bit_exact(src, tmp_path):
    original = load_book_pickle(src)
    model = model_from_book(src)
    written = load_book_pickle(model_to_book(model, tmp_path / "again.pkl"))
    assert len(written) == len(original)
    for k, (a, b) in enumerate(zip(written, original)):
        assert a.dtype == b.dtype == np.float16 and a.shape == b.shape, k
        assert np.array_equal(a.view(np.uint16), b.view(np.uint16)), f"array {k} differs"


@pytest.mark.parametrize("better", [False, True], ids=["Rnnlm", "BetterRnnlm"])
def test_book_file_import_export_is_bit_exact_synthetic(tmp_path, rng, better):
    src = write_pickle(tmp_path / "book.pkl", book_arrays(rng, V=9, D=3, H=3, better=better))
    _roundtrip_is_bit_exact(src, tmp_path)


def test_book_file_import_export_is_bit_exact_real(book_dir, tmp_path):
    _roundtrip_is_bit_exact(book_dir / "Rnnlm.pkl", tmp_path)


# ---------------------------------------------------------------------------------------
# files and models the book's format cannot hold
# ---------------------------------------------------------------------------------------
def _bad_files(rng):
    six = book_arrays(rng, V=11, D=4, H=3)
    nine = book_arrays(rng, V=11, D=4, H=4, better=True)
    wrong_wh = list(six)
    wrong_wh[2] = np.zeros((3, 16), np.float16)
    untied = list(nine)
    untied[7] = untied[7] + np.float16(1)
    bad_4h = list(six)
    bad_4h[1] = np.zeros((4, 10), np.float16)
    nan = list(six)
    nan[3] = np.full(12, np.nan, np.float16)
    return [
        (six[:5], "holds 5 arrays; the book's Rnnlm saves 6"),
        (wrong_wh, "array 2 (lstm_Wh) has shape (3, 16), expected (H, 4H) = (3, 12)"),
        (untied, "array 7 (affine_W) is not the transpose of array 0 (embed_W)"),
        (bad_4h, "embed_W must be (V, D) and lstm_Wx (D, 4H), got (11, 4) and (4, 10)"),
        (nan, "array 3 (lstm_b) holds non-finite values"),
    ]


@pytest.mark.parametrize("case", range(5))
def test_refuses_files_of_other_shapes(tmp_path, rng, case):
    arrays, message = _bad_files(rng)[case]
    path = write_pickle(tmp_path / "bad.pkl", arrays)
    with pytest.raises(BookFormatError, match=re.escape(message)):
        model_from_book(path)


def test_loading_into_a_model_of_another_size_names_the_difference(tmp_path, rng):
    path = write_pickle(tmp_path / "m.pkl", book_arrays(rng, V=11, D=4, H=3))
    with pytest.raises(
        BookFormatError,
        match=r"array 1 \(lstm_Wx, \(D, 4H\)\) has shape \(4, 12\) "
        r"but the model's lstm1.Wx is \(4, 20\)",
    ):
        model_from_book(path, model=Rnnlm(11, 4, 5, seed=0))
    with pytest.raises(
        BookFormatError, match="the book's Rnnlm .6 arrays. but the model is a BetterRnnlm"
    ):
        model_from_book(path, model=BetterRnnlm(11, 4, 4, seed=0))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Rnnlm(7, 3, 3, cell="gru", seed=0), "cell='gru' (the book's models are LSTMs)"),
        (lambda: Rnnlm(7, 3, 3, cell="rnn", seed=0), "cell='rnn'"),
        (lambda: BetterRnnlm(7, 3, 4, tie_weights=False, seed=0), "tie_weights=False"),
        (lambda: BetterRnnlm(7, 3, 3, num_layers=3, seed=0), "num_layers=3 (the book's has 2)"),
    ],
    ids=["gru", "rnn", "untied", "3-layers"],
)
def test_model_to_book_refuses_what_the_book_cannot_hold(tmp_path, make, message):
    model = make()
    with pytest.raises(BookFormatError, match=re.escape(message)):
        model_to_book(model, tmp_path / "x.pkl")
    with pytest.raises(BookFormatError, match=re.escape(message)):
        model_from_book(
            write_pickle(tmp_path / "m.pkl", book_arrays(np.random.default_rng(0))), model=model
        )
    assert not (tmp_path / "x.pkl").exists()


def test_model_to_book_refuses_values_beyond_float16(tmp_path):
    model = Rnnlm(7, 3, 3, seed=0)
    model.params[0][0, 0] = 1e5
    with pytest.raises(BookFormatError, match="embed.W .embed_W. holds values float16 cannot"):
        model_to_book(model, tmp_path / "x.pkl")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------
# the real file and the real data
# ---------------------------------------------------------------------------------------
def test_npgated_ptb_vocabulary_is_the_books(ptb_dir):
    _, word_to_id, _ = ptb.load_data("train", ptb_dir)
    assert book_ptb_vocabulary(ptb_dir / "ptb.train.txt") == word_to_id


@pytest.mark.slow
def test_real_file_gives_the_books_test_perplexity(book_dir, ptb_dir):
    """20-40 s on a shared 2-core machine: 235 windows of 10 x 35 through the V = 10,000 softmax."""
    model = model_from_book(book_dir / "Rnnlm.pkl")
    test, _, _ = ptb.load_data("test", ptb_dir)
    ppl = eval_perplexity_book(model, test)
    assert abs(ppl - BOOK_TEST_PPL) < 0.01, ppl


# ---------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------
def _one_line_error(capsys, code, message):
    assert code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_import_eval_generate_export_synthetic(tmp_path, rng, synthetic_ptb, capsys):
    _, word_to_id, _ = ptb.load_data("train", synthetic_ptb)
    V = len(word_to_id)
    src = write_pickle(tmp_path / "book.pkl", book_arrays(rng, V=V, D=4, H=4, better=True))
    run = tmp_path / "run"
    assert (
        cli.main(["import-book", str(src), "--out", str(run), "--data-dir", str(synthetic_ptb)])
        == 0
    )
    assert "imported the book's BetterRnnlm" in capsys.readouterr().out
    meta = load_checkpoint(run / "best.npz").meta
    assert meta["vocab_checksum"] == ptb.vocab_checksum(word_to_id)

    assert (
        cli.main(
            [
                "eval",
                str(run),
                "--split",
                "valid",
                "--protocol",
                "book",
                "--data-dir",
                str(synthetic_ptb),
            ]
        )
        == 0
    )
    printed = float(
        re.search(r"valid perplexity ([\d.]+) \(book protocol", capsys.readouterr().out).group(1)
    )
    valid, _, _ = ptb.load_data("valid", synthetic_ptb)
    assert printed == pytest.approx(eval_perplexity_book(model_from_book(src), valid), abs=1e-4)

    assert (
        cli.main(
            [
                "generate",
                str(run),
                "--start",
                "the cat",
                "--length",
                "8",
                "--data-dir",
                str(synthetic_ptb),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("the cat")

    assert cli.main(["export-book", str(run), "--out", str(tmp_path / "back.pkl")]) == 0
    for a, b in zip(load_book_pickle(tmp_path / "back.pkl"), load_book_pickle(src)):
        assert a.dtype == b.dtype and np.array_equal(a.view(np.uint16), b.view(np.uint16))


def test_cli_import_without_data_stores_no_checksum(tmp_path, rng, capsys):
    src = write_pickle(tmp_path / "book.pkl", book_arrays(rng))
    code = cli.main(
        [
            "import-book",
            str(src),
            "--out",
            str(tmp_path / "run"),
            "--data-dir",
            str(tmp_path / "nowhere"),
        ]
    )
    assert code == 0
    assert "no vocabulary checksum stored" in capsys.readouterr().err
    assert "vocab_checksum" not in load_checkpoint(tmp_path / "run" / "best.npz").meta


@pytest.mark.slow
def test_cli_real_file_end_to_end(book_dir, ptb_dir, tmp_path, capsys):
    """import-book, eval --protocol book (on the first 100 lines of test), generate, export."""
    data = tmp_path / "ptb"
    data.mkdir()
    for split in ("train", "valid"):
        (data / f"ptb.{split}.txt").symlink_to(ptb_dir / f"ptb.{split}.txt")
    lines = (ptb_dir / "ptb.test.txt").read_text().splitlines(keepends=True)
    (data / "ptb.test.txt").write_text("".join(lines[:100]))
    run = tmp_path / "book"
    assert (
        cli.main(
            ["import-book", str(book_dir / "Rnnlm.pkl"), "--out", str(run), "--data-dir", str(data)]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        cli.main(
            ["eval", str(run), "--split", "test", "--protocol", "book", "--data-dir", str(data)]
        )
        == 0
    )
    printed = float(re.search(r"test perplexity ([\d.]+)", capsys.readouterr().out).group(1))
    test, _, _ = ptb.load_data("test", data)
    expected = eval_perplexity_book(model_from_book(book_dir / "Rnnlm.pkl"), test)
    assert printed == pytest.approx(expected, abs=1e-4) and 50 < printed < 400
    assert (
        cli.main(
            [
                "generate",
                str(run),
                "--start",
                "the company said",
                "--length",
                "10",
                "--data-dir",
                str(data),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("the company said")
    assert cli.main(["export-book", str(run), "--out", str(tmp_path / "Rnnlm.pkl")]) == 0
    for a, b in zip(
        load_book_pickle(tmp_path / "Rnnlm.pkl"), load_book_pickle(book_dir / "Rnnlm.pkl")
    ):
        assert np.array_equal(a.view(np.uint16), b.view(np.uint16))


def test_cli_bad_inputs_are_one_line_exit_2(tmp_path, rng, capsys):
    out = ["--out", str(tmp_path / "run"), "--data-dir", str(tmp_path / "nowhere")]
    _one_line_error(
        capsys,
        cli.main(["import-book", str(tmp_path / "absent.pkl"), *out]),
        "no book weight file at",
    )

    marker = tmp_path / "pwned"
    evil = write_pickle(tmp_path / "evil.pkl", [_RunsCode(os.system, f"touch {marker}")])
    _one_line_error(capsys, cli.main(["import-book", str(evil), *out]), "refused global")
    assert not marker.exists()

    short = write_pickle(tmp_path / "short.pkl", book_arrays(rng)[:4])
    _one_line_error(capsys, cli.main(["import-book", str(short), *out]), "holds 4 arrays")
    assert not (tmp_path / "run").exists()

    gru = tmp_path / "gru.npz"
    save_checkpoint(gru, Rnnlm(7, 3, 3, cell="gru", seed=0))
    _one_line_error(
        capsys, cli.main(["export-book", str(gru), "--out", str(tmp_path / "g.pkl")]), "cell='gru'"
    )

    src = write_pickle(tmp_path / "ok.pkl", book_arrays(rng))
    assert cli.main(["import-book", str(src), *out]) == 0
    capsys.readouterr()
    _one_line_error(capsys, cli.main(["import-book", str(src), *out]), "pass --force")
    assert cli.main(["import-book", str(src), *out, "--force"]) == 0
    capsys.readouterr()
    _one_line_error(
        capsys,
        cli.main(["eval", str(tmp_path / "run"), "--protocol", "book", "--time-size", "20"]),
        "--protocol book evaluates with --time-size 35 exactly",
    )
