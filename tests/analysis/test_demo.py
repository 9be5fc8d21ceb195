"""Tests of the offline demo (npgated.analysis.demo) and its figures (npgated.analysis.plots)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from npgated.analysis import demo, plots
from npgated.analysis.gradient_flow import ClippingTrace

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG_SIGNATURE)


@pytest.mark.slow
def test_quick_demo_writes_figures_and_table(tmp_path, monkeypatch, capsys):
    """``npgated demo --quick`` end to end (about 10 s on 2 cores): files, table, the gap."""
    monkeypatch.delenv("DISPLAY", raising=False)  # no display: the figures must not need one
    out = tmp_path / "demo"
    code = demo.main(argparse.Namespace(out=str(out), quick=True, seed=0))
    assert code == 0
    for name in ("grad_flow", "matrix_power", "clipping", "success_vs_length"):
        assert _is_png(out / f"{name}.png"), f"{name}.png is missing or empty"
    table = (out / "results.md").read_text()
    printed = capsys.readouterr().out
    for text in (table, printed):
        assert "| task (score; chance) | cell |" in text
        for cell in ("RNN", "LSTM", "GRU"):
            assert f"| {cell} |" in text
    results = json.loads((out / "results.json").read_text())
    assert results["seed"] == 0 and results["quick"] is True
    scores = results["scores"]
    assert set(scores) == set(demo.QUICK.lengths)
    # The point of the demo: at the longer length the RNN fails where gated cells succeed.
    for task, lengths in demo.QUICK.lengths.items():
        T = str(max(lengths))
        assert scores[task]["lstm"][T] >= 0.9, (task, scores[task])
        assert scores[task]["gru"][T] >= 0.9, (task, scores[task])
        assert scores[task]["rnn"][T] < scores[task]["lstm"][T] - 0.2, (task, scores[task])


def test_plots_are_written_without_a_display(tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    T = 20
    decay = {"rnn": 0.7 ** np.arange(T)[::-1], "lstm": np.ones(T), "gru": np.linspace(0.5, 1, T)}
    decay["rnn"][0] = 0.0  # an underflow must not break the log axis
    paths = [
        plots.plot_grad_flow({"init": decay, "trained": decay}, tmp_path / "a.png"),
        plots.plot_matrix_power(
            {"sigma 0.9": 0.9 ** np.arange(T), "sigma 1.1, tanh": 1.1 ** np.arange(T)},
            tmp_path / "b.png",
        ),
        plots.plot_clipping(
            ClippingTrace(
                max_norm=1.0,
                norms={"no clipping": [2.0, 50.0, float("inf")], "clipping": [2.0, 1.5, 1.2, 1.1]},
                losses={"no clipping": [1.0, 9.0, float("nan")], "clipping": [1.0, 0.8, 0.6, 0.5]},
                diverged_at={"no clipping": 2},
            ),
            tmp_path / "c.png",
        ),
        plots.plot_success(
            {"adding": {"rnn": {10: 0.9, 50: -3.0}, "lstm": {10: [0.99, 0.98], 50: [0.97, 0.99]}}},
            tmp_path / "sub" / "d.png",
            chance={"adding": 0.0},
        ),
    ]
    for path in paths:
        assert _is_png(path), path


def test_format_table_and_seeds_table(tmp_path):
    scores = {
        "adding": {"rnn": {10: 0.95, 50: 0.01}, "lstm": {10: 0.99, 50: 0.98}},
        "copy": {"rnn": {10: 1.0}, "lstm": {10: 1.0}},
    }
    table = demo.format_table(scores)
    lines = table.strip().splitlines()
    assert lines[0] == "| task (score; chance) | cell | T = 10 | T = 50 |"
    assert lines[2] == "| adding (R^2; 0) | RNN | **0.95** | 0.01 |"
    assert lines[-1] == "|  | LSTM | **1.00** | - |"
    files = []
    for seed, shift in ((0, 0.0), (1, -0.1)):
        path = tmp_path / f"r{seed}.json"
        shifted = {
            t: {c: {str(T): s + shift for T, s in by_T.items()} for c, by_T in pc.items()}
            for t, pc in scores.items()
        }
        path.write_text(json.dumps({"seed": seed, "scores": shifted}))
        files.append(path)
    merged_table, merged = demo.seeds_table(files)
    assert merged["adding"]["lstm"][50] == [0.98, pytest.approx(0.88)]
    assert "0.93 [0.88, 0.98]" in merged_table
    # the module's --merge: the same table and a figure, into --out
    code = demo._module_main(["--out", str(tmp_path / "m"), "--merge", *map(str, files)])
    assert code == 0
    assert "0.93 [0.88, 0.98]" in (tmp_path / "m" / "results_seeds.md").read_text()
    assert "seeds 0, 1" in (tmp_path / "m" / "results_seeds.md").read_text()
    assert _is_png(tmp_path / "m" / "success_vs_length_seeds.png")


def test_demo_config_is_checked(tmp_path):
    bad = demo.DemoConfig(lengths={"adding": (10,)}, iters={"adding": 1}, grad_flow_T=20)
    with pytest.raises(ValueError, match="grad_flow_T"):
        demo.run_demo(tmp_path, config=bad)


def test_module_entry_point_parses_the_cli_flags():
    result = subprocess.run(
        [sys.executable, "-m", "npgated.analysis.demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for flag in ("--out", "--quick", "--seed"):
        assert flag in result.stdout
