"""`npgated train --corpus PATH --level word|char`, then eval, generate and --resume with the
run directory alone; bad input: exit code 2, one line, nothing written.

Tiny models on small texts written to tmp_path; the corpus id cache is a folder in tmp_path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npgated import cli
from npgated.data import corpus

TINY = [
    "--wordvec-size",
    "8",
    "--hidden-size",
    "8",
    "--batch-size",
    "2",
    "--time-size",
    "6",
    "--lr",
    "1.0",
    "--no-progress",
]
ROOT = Path(__file__).resolve().parents[1]
JAPANESE = "吾輩は猫である。名前はまだ無い。\nどこで生れたかとんと見当がつかぬ。\n"


@pytest.fixture
def cache(monkeypatch, tmp_path):
    folder = tmp_path / "cache"
    monkeypatch.setenv(corpus.CACHE_ENV_VAR, str(folder))
    return folder


def play(n_lines=300, seed=0):
    rng = np.random.default_rng(seed)
    names, words = ["ROMEO:", "JULIET:"], ["love", "night", "light", "o", "sweet", "my", "the"]
    return "".join(
        f"{names[i % 2]}\n" + " ".join(rng.choice(words, size=6)) + "\n\n" for i in range(n_lines)
    )


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def one_error_line(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("level", ["char", "word"])
def test_single_file_train_eval_generate(cache, tmp_path, capsys, monkeypatch, level):
    text = tmp_path / "play.txt"
    text.write_text(play())
    run = tmp_path / "run"
    from npgated.training import loop  # noqa: PLC0415

    batched = []  # what the training batcher was given: the memory map itself

    def batcher(corpus, *args):
        batched.append(corpus)
        return real(corpus, *args)

    real = loop.TBPTTBatcher
    monkeypatch.setattr(loop, "TBPTTBatcher", batcher)
    code = cli.main(
        [
            "train",
            "--corpus",
            str(text),
            "--level",
            level,
            "--dry-run",
            "--run-dir",
            str(run),
            *TINY,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert len(batched) == 1 and isinstance(batched[0], np.memmap)
    assert batched[0].filename.startswith(str(cache))
    assert (run / "best.npz").exists() and (run / "perplexity.png").exists()
    history = records(run)
    assert {r["kind"] for r in history} == {"train", "valid", "test"}
    if level == "char":
        assert "bits per character" in out and "| bpc " in out
        for r in history:
            assert r["bpc"] == pytest.approx(np.log2(r["ppl"]), rel=1e-9)
    else:
        assert all("bpc" not in r for r in history) and "bits per character" not in out

    assert cli.main(["eval", str(run), "--split", "test"]) == 0  # nothing else needed
    out = capsys.readouterr().out
    last = out.splitlines()[-1]  # after the log line that names the corpus
    assert last.startswith("test perplexity")
    assert ("bits per character" in last) == (level == "char")

    start = "ROMEO:" if level == "char" else "love night"
    assert cli.main(["generate", str(run), "--start", start, "--length", "40", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(start)
    sample = out[len(start) :]
    if level == "char":
        assert len(sample) == 40 + 1  # each drawn character, then the final newline
        assert set(sample) <= set(play()) and "\ufffd" not in sample
    else:
        assert len(sample.split()) + sample.count("\n") >= 40


def test_char_sample_is_printed_as_it_is_drawn(cache, tmp_path, capsys, monkeypatch):
    text = tmp_path / "play.txt"
    text.write_text(play())
    run = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--corpus",
                str(text),
                "--level",
                "char",
                "--dry-run",
                "-q",
                "--run-dir",
                str(run),
                *TINY,
            ]
        )
        == 0
    )
    capsys.readouterr()
    from npgated.models import generation  # noqa: PLC0415

    seen = []
    real = generation.Sampler.draw

    def draw(self, logits):  # what stdout holds whenever the next token is drawn
        seen.append(capsys.readouterr().out)
        return real(self, logits)

    monkeypatch.setattr(generation.Sampler, "draw", draw)
    assert cli.main(["generate", str(run), "--start", "ROMEO:", "--length", "5"]) == 0
    assert seen[0] == "ROMEO:" and all(len(s) == 1 for s in seen[1:]) and len(seen) == 5


def test_folder_corpus_eval_on_another_text_and_japanese(cache, tmp_path, capsys, caplog):
    folder = tmp_path / "ja"
    folder.mkdir()
    (folder / "train.txt").write_text(JAPANESE * 30)
    (folder / "valid.txt").write_text(JAPANESE * 3)
    (folder / "test.txt").write_text(JAPANESE * 3)
    run = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--corpus",
                str(folder),
                "--level",
                "char",
                "--dry-run",
                "-q",
                "--run-dir",
                str(run),
                *TINY,
            ]
        )
        == 0
    )
    capsys.readouterr()
    other = tmp_path / "other.txt"
    other.write_text("吾輩は犬である。\n" * 5)  # 犬: never seen in training
    assert cli.main(["eval", str(run), "--corpus", str(other)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith(f"{other} perplexity") and "bits per character" in out
    assert "5 of 45 characters (11.11 %) not in the run's vocabulary" in out  # the log line
    assert cli.main(["generate", str(run), "--start", "吾輩は", "--length", "10"]) == 0
    sample = capsys.readouterr().out
    assert sample.startswith("吾輩は") and set(sample) <= set(JAPANESE)


def test_resume_needs_only_the_run_directory(cache, tmp_path, capsys):
    text = tmp_path / "play.txt"
    text.write_text(play())
    run = tmp_path / "run"
    argv = [
        "train",
        "--corpus",
        str(text),
        "--level",
        "char",
        "--epochs",
        "1",
        "--max-iters",
        "2",
        "--run-dir",
        str(run),
        "-q",
        *TINY,
    ]
    assert cli.main(argv) == 0
    assert cli.main(["train", "--run-dir", str(run), "--resume", "--epochs", "2", "-q"]) == 0
    assert [r["epoch"] for r in records(run) if r["kind"] == "valid"] == [1, 2]
    config = json.loads((run / "config.json").read_text())
    assert config["corpus"] == str(text) and config["epochs"] == 2 and config["hidden_size"] == 8
    capsys.readouterr()

    changed = tmp_path / "changed.txt"
    changed.write_text("Zebra!\n" + play())  # three characters more, in the train part
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    code = cli.main(
        [
            "train",
            "--run-dir",
            str(run),
            "--resume",
            "--epochs",
            "3",
            "-q",
            "--corpus",
            str(changed),
        ]
    )
    assert code == 2
    line = one_error_line(capsys)
    assert "another vocabulary" in line
    assert "(26 vs 31 characters, 5 new ('!', 'Z', 'a', ...))" in line
    assert "or start a new --run-dir" in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing written


def test_eval_refuses_a_changed_corpus(cache, tmp_path, capsys):
    text = tmp_path / "play.txt"
    text.write_text(play())
    run = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--corpus",
                str(text),
                "--level",
                "word",
                "--dry-run",
                "-q",
                "--run-dir",
                str(run),
                *TINY,
            ]
        )
        == 0
    )
    text.write_text(play(seed=1))
    capsys.readouterr()
    assert cli.main(["eval", str(run)]) == 2
    line = one_error_line(capsys)
    assert "has changed since training" in line and f"--corpus {text}" in line
    assert cli.main(["eval", str(run), "--corpus", str(text)]) == 0


def test_char_presets_train_on_any_corpus(cache, tmp_path, capsys):
    text = tmp_path / "play.txt"
    text.write_text(play())
    for preset in ("char-small", "char-lstm"):
        run = tmp_path / preset
        small = ["--hidden-size", "8", "--wordvec-size", "8", "--time-size", "5"]
        assert (
            cli.main(
                [
                    "train",
                    "--preset",
                    preset,
                    "--corpus",
                    str(text),
                    "--dry-run",
                    "-q",
                    "--batch-size",
                    "2",
                    "--run-dir",
                    str(run),
                    "--no-progress",
                    *small,
                ]
            )
            == 0
        ), capsys.readouterr().err
        config = json.loads((run / "config.json").read_text())
        assert config["level"] == "char"
    assert cli.main(["train", "--preset", "char-lstm", "--dry-run"]) == 2
    assert "--level char reads your own text: give --corpus PATH" in one_error_line(capsys)


@pytest.mark.parametrize("case", ["empty", "nul", "utf8", "short", "fractions", "no-valid"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(cache, tmp_path, capsys, case):
    path = tmp_path / "text.txt"
    extra = []
    if case == "empty":
        path.write_bytes(b"")
        expected = "is empty"
    elif case == "nul":
        path.write_bytes(b"ROMEO:\n\x00\x01\x02" * 100)
        expected = "NUL byte at byte offset 7: it is not a text file"
    elif case == "utf8":
        path.write_bytes(play().encode() + "Æsop\n".encode("latin-1"))
        expected = f"not valid utf-8 at byte offset {len(play().encode()):,} (0xc6"
    elif case == "short":
        path.write_text("ROMEO: o\n")
        expected = "too short for one training batch of N x T = 2 x 6 tokens (it needs 13)"
    elif case == "fractions":
        path.write_text(play())
        extra = ["--fractions", "0.8,0.1,0.2"]
        expected = "--fractions 0.8,0.1,0.2 sums to 1.1, not 1"
    else:
        path = tmp_path / "folder"
        path.mkdir()
        (path / "train.txt").write_text(play())
        (path / "test.txt").write_text(play())
        expected = "has train.txt but no valid.txt"
    run = tmp_path / "run"
    code = cli.main(
        ["train", "--corpus", str(path), "--level", "char", "--run-dir", str(run), *TINY, *extra]
    )
    assert code == 2
    assert expected in one_error_line(capsys)
    assert not run.exists()
    assert not cache.exists() or not any(cache.rglob("*"))


def test_char_rnn_example_trains_and_samples(cache):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "char_rnn.py"), "--iters", "60", "--length", "30"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "bits per character" in out.stdout
    sample = out.stdout.split("symbols: ")[-1].split("\n", 1)[1]
    assert sample.startswith("ROMEO:") and len(sample) >= 30


def test_tokenize_benchmark_smoke(tmp_path):
    """benchmarks/tokenize_corpus.py runs end to end on 1 MB (untimed: no speed asserted)."""
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "tokenize_corpus.py"),
            "--smoke",
            "--dir",
            str(tmp_path),
            "--json",
            str(tmp_path / "r.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "r.json").read_text())
    assert [r["level"] for r in results["tokenize"]] == ["word", "char"]
    assert all(r["tokens"] > 0 and r["peak_rss_mb"] > 0 for r in results["tokenize"])
    assert set(results["train"]["ms_per_step"]) == {"memmap", "in memory"}
    assert results["train"]["memmap_type"] == "memmap"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # corpus and cache deleted
