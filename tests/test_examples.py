"""The example scripts run as documented (on a small synthetic corpus)."""

import os
import subprocess
import sys
from pathlib import Path

from npgated import cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_generate_text_example(tmp_path, synthetic_ptb):
    run = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--dry-run",
                "--data-dir",
                str(synthetic_ptb),
                "--run-dir",
                str(run),
                "--hidden-size",
                "8",
                "--wordvec-size",
                "8",
                "--batch-size",
                "2",
                "--no-progress",
                "-q",
            ]
        )
        == 0
    )
    env = {**os.environ, "NPGATED_DATA_DIR": str(synthetic_ptb)}
    out = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "generate_text.py"),
            str(run),
            "--start",
            "the cat",
            "--length",
            "15",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("the cat") and len(out.stdout.split()) >= 10


def test_training_examples_parse_their_arguments():
    for script in ("train_better_rnnlm.py",):
        out = subprocess.run(
            [sys.executable, str(EXAMPLES / script), "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0 and "--epochs" in out.stdout


def test_attention_layer_example():
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "attention_layer.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith("OK"), out.stdout


def test_seq2seq_addition_example(tmp_path):
    """Without the book's addition.txt the example trains on random sums it writes itself."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NPGATED_BOOK_DATA_DIR", "NPGATED_DATA_DIR")
    }
    out = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "seq2seq_addition.py"),
            "--iters",
            "200",
            "--hidden-size",
            "16",
            "--batch-size",
            "32",
            "--model",
            "PeekySeq2seq",
            "--reverse",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "using random sums instead" in out.stdout
    losses = [
        float(line.split("loss")[1])
        for line in out.stdout.splitlines()
        if line.startswith("iteration")
    ]
    assert len(losses) == 2 and losses[1] < losses[0] < 2.565  # log(13): the uniform guess
    assert "test accuracy" in out.stdout and out.stdout.count(" model: ") == 5


def test_flat_and_pipeline_example():
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "flat_and_pipeline.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith("OK"), out.stdout
    assert out.stdout.count("ms/step") == 4
