import signal
import subprocess
import sys

import numpy as np
import pytest

from npgated import cli
from npgated.training.checkpoint import load_checkpoint

SMALL = [
    "--wordvec-size",
    "12",
    "--hidden-size",
    "12",
    "--batch-size",
    "4",
    "--time-size",
    "5",
    "--lr",
    "1.0",
    "--no-progress",
]


def test_train_dry_run_eval_generate(tmp_path, synthetic_ptb, capsys):
    run = tmp_path / "run"
    code = cli.main(
        [
            "train",
            "--preset",
            "book-small",
            "--dry-run",
            "--data-dir",
            str(synthetic_ptb),
            "--run-dir",
            str(run),
            *SMALL,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "test perplexity" in out and "| epoch   1 |" in out
    assert (run / "last.npz").exists() and (run / "perplexity.png").exists()

    assert cli.main(["eval", str(run), "--data-dir", str(synthetic_ptb), "--split", "valid"]) == 0
    assert "valid perplexity" in capsys.readouterr().out

    assert (
        cli.main(
            [
                "generate",
                str(run / "last.npz"),
                "--start",
                "the cat",
                "--length",
                "12",
                "--data-dir",
                str(synthetic_ptb),
                "--seed",
                "3",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert text.startswith("the cat") and len(text.split()) >= 12


def test_gradcheck_command(capsys):
    assert cli.main(["gradcheck", "layers"]) == 0
    out = capsys.readouterr().out
    assert "TimeLSTM: ok" in out and "all gradients agree" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--preset", "nope"], "unknown preset 'nope'"),
        (["train", "--cell", "transformer"], "invalid choice: 'transformer'"),
        (["train", "--backend", "tpu"], "invalid choice: 'tpu'"),
        (["train", "--dry-run", "--epochs", "3"], "do not combine"),
        (["train", "--model", "Rnnlm", "--dropout", "0.5"], "use --model BetterRnnlm"),
        (["eval", "/nonexistent/ckpt.npz"], "no checkpoint at"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, message, capsys, synthetic_ptb):
    with pytest.raises(SystemExit) if "invalid choice" in message else _nothing():
        data = ["--data-dir", str(synthetic_ptb)] if argv[0] == "train" else []
        code = cli.main([*argv, *data])
        assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_missing_data_dir_is_a_clear_error(tmp_path, capsys):
    code = cli.main(["train", "--dry-run", "--data-dir", str(tmp_path / "nowhere")])
    assert code == 2
    err = capsys.readouterr().err
    assert "NPGATED_DATA_DIR" in err and "Traceback" not in err


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_writes_resumable_checkpoint(tmp_path, synthetic_ptb, sig, code):
    """A signal to a training subprocess: exit 130/143 with last.npz; --resume finishes the run."""
    run = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "npgated.cli",
        "train",
        "--data-dir",
        str(synthetic_ptb),
        "--run-dir",
        str(run),
        "--epochs",
        "2",
        "--log-interval",
        "1",
        *SMALL,
        "--model",
        "BetterRnnlm",
        "--num-layers",
        "2",
        "--hidden-size",
        "48",
        "--wordvec-size",
        "48",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait for training to be under way (a log line per iteration), then interrupt
    for line in proc.stdout:
        if "batches" in line:
            break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "resumable checkpoint" in err
    ckpt = load_checkpoint(run / "last.npz")
    assert ckpt.meta["progress"]["total_iterations"] >= 1
    resumed = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "test perplexity" in resumed.stdout
    # the resumed run ends where an uninterrupted one ends, with the same numbers
    final = load_checkpoint(run / "last.npz")
    assert final.meta["progress"]["epoch"] == 3 and final.meta["progress"]["iteration"] == 0
    reference_run = tmp_path / "reference"
    argv_ref = [a if a != str(run) else str(reference_run) for a in argv]
    ref = subprocess.run(argv_ref, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    reference = load_checkpoint(reference_run / "last.npz")
    for name, value in reference.params.items():
        np.testing.assert_array_equal(final.params[name], value, err_msg=name)
    assert final.meta["progress"]["best_val_ppl"] == reference.meta["progress"]["best_val_ppl"]
