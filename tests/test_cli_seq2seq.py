"""The encoder-decoder commands end to end: train, eval, generate, attention, import/export-book.

The book's acceptance check (issue 18) runs on the shared files when they are there: the
book's trained ``AttentionSeq2seq.pkl`` imported for the date task with reversed questions
answers 5000 of the 5000 test questions, as the book's ``ch08/train.py`` evaluation counts.
Everything else trains tiny models for a few iterations on small synthetic files in the
book's format (``synthetic_book_data``), so it needs no data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from npgated import cli
from npgated.data import sequence
from npgated.interop.book import load_book_pickle, model_to_book
from npgated.interop.book_seq2seq import model_to_book as seq2seq_to_book
from npgated.models.rnnlm import Rnnlm
from npgated.models.seq2seq import AttentionSeq2seq
from npgated.training.checkpoint import load_checkpoint

SHARED_BOOK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "book"
TINY = ["--wordvec-size", "8", "--hidden-size", "8", "--batch-size", "16", "--no-progress"]


def _book_folder() -> Path:
    env = os.environ.get("NPGATED_DATA_DIR")
    for folder in ([Path(env).parent / "book"] if env else []) + [SHARED_BOOK]:
        if (folder / "AttentionSeq2seq.pkl").is_file() and (folder / "date.txt").is_file():
            return folder
    pytest.skip("the book's AttentionSeq2seq.pkl and date.txt not found (../shared/data/book)")


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# ---------------------------------------------------------------------------------------
# the book's trained attention model
# ---------------------------------------------------------------------------------------
def test_the_books_attention_model_answers_5000_of_5000(tmp_path, capsys):
    book = _book_folder()
    run = tmp_path / "runs" / "date"
    assert (
        cli.main(
            [
                "import-book",
                str(book / "AttentionSeq2seq.pkl"),
                "--task",
                "date",
                "--reverse",
                "--out",
                str(run),
                "--data-dir",
                str(book),
            ]
        )
        == 0
    )
    assert "AttentionSeq2seq (V=59, D=16, H=256" in capsys.readouterr().out
    meta = load_checkpoint(run / "best.npz").meta
    assert meta["task"] == "date" and meta["reverse"] is True and len(meta["vocabulary"]) == 59
    data = sequence.load_task("date", book)
    assert meta["vocab_checksum"] == sequence.vocab_checksum(data.char_to_id)

    assert cli.main(["eval", str(run), "--data-dir", str(book)]) == 0
    assert capsys.readouterr().out.strip() == "test accuracy 100.00 % (5000 of 5000)"

    assert (
        cli.main(
            ["generate", str(run), "--question", "september 27, 1994", "--question", "2/10/93"]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split("->")[1].strip() for ln in lines] == ["1994-09-27", "1993-02-10"]

    png = tmp_path / "att.png"
    assert cli.main(["attention", str(run), "september 27, 1994", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "1994-09-27" in capsys.readouterr().out

    out = tmp_path / "AttentionSeq2seq.pkl"  # export-book: the book's arrays back, bit for bit
    assert cli.main(["export-book", str(run), "--out", str(out)]) == 0
    for ours, theirs in zip(load_book_pickle(out), load_book_pickle(book / "AttentionSeq2seq.pkl")):
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)


# ---------------------------------------------------------------------------------------
# training on small synthetic files
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize(
    "model, task",
    [("Seq2seq", "addition"), ("PeekySeq2seq", "addition"), ("AttentionSeq2seq", "date")],
)
def test_train_dry_run_eval_generate(model, task, cell, tmp_path, synthetic_book_data, capsys):
    run = tmp_path / "run"
    argv = [
        "train",
        "--task",
        task,
        "--model",
        model,
        "--cell",
        cell,
        "--reverse",
        "--dry-run",
        "--data-dir",
        str(synthetic_book_data),
        "--run-dir",
        str(run),
        *TINY,
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"training {model} ({cell}) on the {task} task" in out
    assert "| epoch   1 |     3/    3 batches" in out
    assert "| end of epoch   1 | test accuracy" in out
    for name in ("best.npz", "last.npz", "config.json", "metrics.jsonl", "accuracy.png"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert (config["task"], config["model"], config["cell"], config["reverse"]) == (
        task,
        model,
        cell,
        True,
    )
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    test = [r for r in records if r["kind"] == "test"]
    assert len(test) == 1 and test[0]["total"] == 100  # the last tenth of 1000 lines
    assert sum(r["kind"] == "train" for r in records) == 3

    assert cli.main(["eval", str(run), "--data-dir", str(synthetic_book_data)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("test accuracy ") and line.endswith(" of 100)")

    questions = ["1+2", "345+67"] if task == "addition" else ["march 3, 2001", "4/5/99"]
    assert cli.main(["generate", str(run), *sum((["--question", q] for q in questions), [])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split("->")[0].strip() for ln in lines] == questions
    if model == "AttentionSeq2seq":
        png = tmp_path / "map.png"
        assert cli.main(["attention", str(run), questions[0], "--out", str(png)]) == 0
        assert png.read_bytes()[:4] == b"\x89PNG"


def test_preset_and_flags(synthetic_book_data):
    from npgated import seq2seq_cli

    parser = cli.build_parser()
    args = parser.parse_args(["train", "--preset", "book-date-attention", "--hidden-size", "32"])
    assert seq2seq_cli.wants_seq2seq(args)
    c = seq2seq_cli.config_from_args(args)
    # ch08/train.py: AttentionSeq2seq, wordvec 16, batch 128, 10 epochs, Adam, clip 5, reversed
    assert (
        c.model,
        c.task,
        c.reverse,
        c.wordvec_size,
        c.hidden_size,
        c.batch_size,
        c.epochs,
        c.optimizer,
        c.lr,
        c.max_grad_norm,
    ) == ("AttentionSeq2seq", "date", True, 16, 32, 128, 10, "adam", 0.001, 5.0)
    args = parser.parse_args(["train", "--preset", "book-addition"])
    c = seq2seq_cli.config_from_args(args)  # ch07/train_seq2seq.py as it stands
    assert (c.model, c.task, c.reverse, c.hidden_size, c.epochs) == (
        "Seq2seq",
        "addition",
        False,
        128,
        25,
    )
    lm = parser.parse_args(["train", "--preset", "book-small"])
    assert not seq2seq_cli.wants_seq2seq(lm)


# ---------------------------------------------------------------------------------------
# bad input: one line, exit code 2, nothing written
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data folder, run of a dry-run Seq2seq on addition, run of an AttentionSeq2seq on date)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_npgated_conftest", Path(__file__).resolve().parent / "conftest.py"
    )
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    root = tmp_path_factory.mktemp("seq2seq_bad")
    data = conftest.write_synthetic_book_tasks(root / "data", n_lines=400)
    runs = {}
    for name, flags in (
        ("addition", ["--task", "addition"]),
        ("date", ["--task", "date", "--model", "AttentionSeq2seq"]),
    ):
        runs[name] = root / name
        assert (
            cli.main(
                [
                    "train",
                    *flags,
                    "--dry-run",
                    "--data-dir",
                    str(data),
                    "--run-dir",
                    str(runs[name]),
                    "-q",
                    *TINY,
                ]
            )
            == 0
        )
    return data, runs["addition"], runs["date"]


def test_bad_questions_and_answers(trained, tmp_path, capsys):
    _, addition, date = trained
    capsys.readouterr()
    assert cli.main(["generate", str(addition), "--question", "16+a5"]) == 2
    _one_line_error(capsys, "'a'", "not in the task's vocabulary")
    assert cli.main(["generate", str(addition), "--question", "1234+5678"]) == 2
    _one_line_error(capsys, "'1234+5678' has 9 characters", "at most 7")
    assert cli.main(["generate", str(addition), "--question", "1+1", "--length", "9"]) == 2
    _one_line_error(capsys, "--length 9", "answers of 4 characters")
    assert cli.main(["generate", str(addition)]) == 2
    _one_line_error(capsys, "give --question")
    png = tmp_path / "att.png"
    assert (
        cli.main(
            ["attention", str(date), "may 1, 2000", "--answer", "2000-05-01-x", "--out", str(png)]
        )
        == 2
    )
    _one_line_error(capsys, "has 12 characters", "decoder writes 10")
    assert cli.main(["attention", str(addition), "1+1", "--out", str(png)]) == 2
    _one_line_error(capsys, "holds a Seq2seq", "AttentionSeq2seq")
    assert not png.exists()


def test_bad_pickles_and_data(trained, tmp_path, capsys):
    data, addition, _ = trained
    out = tmp_path / "out"
    lm = model_to_book(Rnnlm(20, 4, 4, seed=0), tmp_path / "Rnnlm.pkl")
    assert cli.main(["import-book", str(lm), "--task", "date", "--out", str(out)]) == 2
    _one_line_error(capsys, "holds a language model")
    V_date = sequence.load_task("date", data).vocab_size
    att = seq2seq_to_book(AttentionSeq2seq(V_date, 4, 4, seed=0), tmp_path / "Att.pkl")
    assert (
        cli.main(
            [
                "import-book",
                str(att),
                "--task",
                "addition",
                "--data-dir",
                str(data),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    _one_line_error(capsys, f"for {V_date} characters", "another task")
    assert cli.main(["import-book", str(att), "--data-dir", str(data), "--out", str(out)]) == 2
    _one_line_error(capsys, "--task addition or --task date")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        cli.main(
            ["import-book", str(att), "--task", "date", "--data-dir", str(empty), "--out", str(out)]
        )
        == 2
    )
    _one_line_error(capsys, "has no date.txt")
    assert (
        cli.main(
            [
                "train",
                "--task",
                "date",
                "--dry-run",
                "--data-dir",
                str(empty),
                "--run-dir",
                str(out),
            ]
        )
        == 2
    )
    _one_line_error(capsys, "has no date.txt")
    assert cli.main(["eval", str(addition), "--data-dir", str(empty)]) == 2
    _one_line_error(capsys, "has no addition.txt")
    assert (
        cli.main(
            [
                "train",
                "--task",
                "addition",
                "--time-size",
                "5",
                "--run-dir",
                str(out),
                "--data-dir",
                str(data),
            ]
        )
        == 2
    )
    _one_line_error(capsys, "--time-size", "language-model option")
    assert (
        cli.main(["train", "--preset", "book-small", "--task", "date", "--run-dir", str(out)]) == 2
    )
    _one_line_error(capsys, "language-model preset")
    assert cli.main(["train", "--model", "Seq2seq", "--run-dir", str(out)]) == 2
    _one_line_error(capsys, "needs its task")
    assert not out.exists()


def test_date_attention_example_without_the_books_files(tmp_path):
    """Without the book's files the example trains a small model on dates it writes itself."""
    import subprocess
    import sys

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NPGATED_BOOK_DATA_DIR", "NPGATED_DATA_DIR")
    }
    env["OPENBLAS_NUM_THREADS"] = "1"  # tiny products: no threads to wait for
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve().parents[1] / "examples" / "seq2seq_date_attention.py"),
            "--data-dir",
            str(tmp_path),
            "--iters",
            "40",
            "--n-test",
            "50",
            "--out",
            str(tmp_path / "map.png"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "using dates written here instead" in out.stdout and "training a small one" in out.stdout
    losses = [
        float(ln.split("loss")[1]) for ln in out.stdout.splitlines() if ln.startswith("iteration")
    ]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert "(beam of 3:" in out.stdout and "test accuracy" in out.stdout and "of 50)" in out.stdout
    assert (tmp_path / "map.png").read_bytes()[:4] == b"\x89PNG"


def test_export_then_import_gives_the_same_model(trained, tmp_path, capsys):
    """A trained addition Seq2seq through the book's format and back: float16-close
    parameters, the same task metadata, and eval and generate work on the imported run."""
    data, addition, _ = trained
    pkl = tmp_path / "Seq2seq.pkl"
    assert cli.main(["export-book", str(addition), "--out", str(pkl)]) == 0
    run = tmp_path / "imported"
    assert (
        cli.main(
            [
                "import-book",
                str(pkl),
                "--task",
                "addition",
                "--data-dir",
                str(data),
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert "the book's Seq2seq (V=13, D=8, H=8" in capsys.readouterr().out
    a, b = load_checkpoint(addition / "best.npz"), load_checkpoint(run / "best.npz")
    assert a.params.keys() == b.params.keys()
    for name, value in a.params.items():
        np.testing.assert_allclose(b.params[name], value, rtol=2.0**-11, atol=1e-7, err_msg=name)
    for key in (
        "task",
        "reverse",
        "vocabulary",
        "vocab_checksum",
        "question_length",
        "answer_length",
        "start_char",
    ):
        assert a.meta[key] == b.meta[key], key
    assert cli.main(["eval", str(run), "--data-dir", str(data)]) == 0
    assert capsys.readouterr().out.strip().endswith("of 40)")
    assert cli.main(["generate", str(run), "--question", "1+2"]) == 0
