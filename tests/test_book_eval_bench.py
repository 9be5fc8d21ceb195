"""benchmarks/book_eval.py: whole-process evaluation against the book's eval.py, its plumbing.

The real measurement needs the book's code and PTB; these tests need neither. A book checkout in
miniature is made in a temporary folder: synthetic PTB text in ``dataset/``, a tiny ``Rnnlm``
written in the book's pickle format (``model_to_book``, what ``npgated export-book`` writes) as
``ch06/Rnnlm.pkl``, and a ``ch06/eval.py`` written by the test that prints a perplexity line in
the book's format: the number the book protocol gives for those weights (computed here with
npgated), or a wrong one. npgated's side is the real command line (``python -m npgated
import-book`` and ``eval``), so the parsing of its output is tested against what it prints.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

from npgated import cli
from npgated.data import ptb
from npgated.interop.book import model_from_book, model_to_book
from npgated.models.rnnlm import Rnnlm
from npgated.training.evaluate import eval_perplexity_book

HERE = Path(__file__).resolve().parent
BENCHMARKS = HERE.parent / "benchmarks"

# the book's eval.py prints a progress line (carriage returns) and then the numpy float
FAKE_EVAL = (
    "import sys\n"
    "print('evaluating perplexity ...')\n"
    "sys.stdout.write('\\r0 / 2\\r1 / 2')\n"
    "print('')\n"
    "print('test perplexity: ', {ppl!r})\n"
)
FAST = dict(wait_quiet=0.0, sample_s=0.05, timeout=120.0)


@pytest.fixture(scope="module")
def fake_book(tmp_path_factory):
    """(book dir, the book protocol's perplexity of its weights, a run dir holding them)."""
    spec = importlib.util.spec_from_file_location("_npgated_conftest", HERE / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    root = tmp_path_factory.mktemp("book_eval")
    book = root / "book"
    data = conftest.write_synthetic_ptb(book / "dataset", n_train=800, n_eval=800)
    _, word_to_id, _ = ptb.load_data("train", data)
    (book / "ch06").mkdir()
    pkl = model_to_book(Rnnlm(len(word_to_id), 8, 8, seed=0), book / "ch06" / "Rnnlm.pkl")
    corpus, _, _ = ptb.load_data("test", data)
    ppl = eval_perplexity_book(model_from_book(pkl), corpus, 10, 35)  # the float16 weights
    run = root / "run"
    assert cli.main(["import-book", str(pkl), "--out", str(run), "--data-dir", str(data)]) == 0
    return book, float(ppl), run


def _write_eval(book, ppl):
    (book / "ch06" / "eval.py").write_text(FAKE_EVAL.format(ppl=ppl))


def test_parse_the_perplexity_lines_of_both_scripts(benchmarks):
    be = benchmarks("book_eval")
    book_out = (
        "evaluating perplexity ...\n\r0 / 235\r1 / 235\ntest perplexity:  136.07759032293401\n"
    )
    assert be.parse_perplexity(book_out) == (136.07759032293401, 14)
    npg = "test perplexity 136.0776 (book protocol: N=10, T=35, whole windows)\n"
    assert be.parse_perplexity(npg) == (136.0776, 4)
    assert be.parse_perplexity("test perplexity 135.90\n") == (135.90, 2)
    assert be.parse_perplexity("Traceback ...\nValueError: no\n") is None
    assert be.agree(136.07759032293401, 136.0776, 4)[0]
    assert not be.agree(136.07759032293401, 136.0778, 4)[0]  # two units off in the 4th decimal


def test_three_whole_processes_timed_and_rendered(fake_book, benchmarks):
    """import-book, warm-up, two rounds (order reversed in the second), ratios, the table."""
    book, ppl, _ = fake_book
    _write_eval(book, ppl)
    be, report = benchmarks("book_eval"), benchmarks("report")
    logged = []
    result = be.run_book_eval(
        book, data_dir=book / "dataset", repeats=2, warmup=1, log=logged.append, **FAST
    )
    assert "error" not in result, result.get("error")
    assert result["run_dir"].endswith("(temporary, removed)")
    assert not Path(result["run_dir"].split(" (")[0]).exists()
    rounds = [ln.split(":")[0] for ln in logged if ln.startswith("round")]
    assert rounds == [
        "round 1/2 book",
        "round 1/2 npgated_book",
        "round 1/2 npgated",
        "round 2/2 npgated",
        "round 2/2 npgated_book",
        "round 2/2 book",
    ]
    for name in be.COMMANDS:
        c = result["commands"][name]
        assert len(c["seconds"]) == 2 and all(s > 0 for s in c["seconds"]), name
        assert c["min_s"] <= c["median_s"] <= c["max_s"], name
        assert len(c["load_before"]) == 2 and c["argv"][0] == sys.executable, name
    assert result["commands"]["book"]["cwd"] == str(book / "ch06")
    assert result["commands"]["npgated_book"]["perplexity"] == pytest.approx(ppl, abs=1e-4)
    assert result["perplexity_check"]["agree"] is True
    npg_default = result["commands"]["npgated"]["perplexity"]
    assert 1.0 < npg_default < 2 * len(ptb.load_data("train", book / "dataset")[1])
    ratios = result["ratios"]
    book_s = result["commands"]["book"]["median_s"]
    assert ratios["book_protocol"] == pytest.approx(
        book_s / result["commands"]["npgated_book"]["median_s"]
    )
    assert ratios["default_protocol"] > 0
    assert result["env"]["OPENBLAS_NUM_THREADS"] == "2" and result["blas"].get("kernel")
    assert result["book_caches_before"] is False  # the fake book writes no caches

    table = report.book_eval_markdown(result)
    assert report.BOOK_EVAL_TITLE in table
    assert "| `npgated eval RUN --split test --protocol book` | book |" in table
    assert f"{ratios['book_protocol']:.2f}×" in table
    # bench.py stores the result under "book_eval": the Markdown it writes then holds the table
    bench_report = {
        "date": "2026-12-02T00:00:00+00:00",
        "gemm": {},
        "results": [],
        "book_eval": result,
        "machine": {
            "cpu_model": "cpu",
            "cores": 2,
            "numpy": "2",
            "torch": None,
            "env": {},
            "numpy_blas": {},
        },
        "settings": {
            "threads": 2,
            "iters": 1,
            "warmup": 1,
            "repeats": 1,
            "data_source": "x",
            "unset_openblas_env": False,
            "smoke": True,
        },
    }
    assert table.strip() in report.markdown_report(bench_report)


def test_a_wrong_book_protocol_number_is_refused(fake_book, benchmarks):
    """The book printed another number: no speed is reported, the error names both."""
    book, ppl, run = fake_book
    wrong = ppl * 1.01
    _write_eval(book, wrong)
    be, report = benchmarks("book_eval"), benchmarks("report")
    result = be.run_book_eval(
        book,
        run_dir=run,
        data_dir=book / "dataset",
        repeats=3,
        warmup=1,
        log=lambda _: None,
        **FAST,
    )
    assert "refused" in result["error"] and repr(wrong) in result["error"]
    assert result["ratios"] is None and result["perplexity_check"]["agree"] is False
    assert all(not c["seconds"] for c in result["commands"].values())  # stopped at the warm-up
    assert run.exists()  # a run dir it was given is left alone
    rendered = report.book_eval_markdown(result)
    assert "no result" in rendered and "×" not in rendered


def test_a_failing_command_is_an_error_not_a_speed(fake_book, benchmarks):
    book, _, run = fake_book
    (book / "ch06" / "eval.py").write_text("raise SystemExit('the book broke')\n")
    be = benchmarks("book_eval")
    result = be.run_book_eval(
        book,
        run_dir=run,
        data_dir=book / "dataset",
        repeats=1,
        warmup=0,
        log=lambda _: None,
        **FAST,
    )
    assert "the book broke" in result["error"] and result["ratios"] is None


def test_an_incomplete_book_dir_is_named(tmp_path, benchmarks):
    (tmp_path / "ch06").mkdir()
    (tmp_path / "ch06" / "eval.py").write_text("")
    be = benchmarks("book_eval")
    with pytest.raises(FileNotFoundError, match=r"ch06/Rnnlm\.pkl.*dataset/ptb\.test\.txt"):
        be.check_book_dir(tmp_path)


def test_bench_takes_the_book_dir_from_the_flag_or_the_environment(
    tmp_path, benchmarks, monkeypatch
):
    monkeypatch.delenv("NPGATED_BOOK_DIR", raising=False)
    bench = benchmarks("bench")
    assert bench.parse_args([]).book_dir is None  # without it nothing changes
    args = bench.parse_args(["--smoke", "--book-dir", str(tmp_path)])
    assert args.book_dir == str(tmp_path) and args.book_repeats == 1
    monkeypatch.setenv("NPGATED_BOOK_DIR", str(tmp_path))
    assert bench.parse_args([]).book_dir == str(tmp_path)
    # a directory that is not the book's fails before any case is measured
    assert bench.main(["--smoke", "--book-dir", str(tmp_path / "nowhere")]) == 2
