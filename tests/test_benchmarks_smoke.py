"""The benchmark script (benchmarks/bench.py) runs end to end in its tiny --smoke mode.

Nothing under benchmarks/ is collected by pytest; this test keeps the script from rotting: one
smoke run of the most involved preset (two layers, dropout, tying) for LSTM and GRU, with
PyTorch when it is installed, checking that every child process reported a measurement and
that the JSON and Markdown outputs are written.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
BENCH = BENCHMARKS / "bench.py"


@pytest.mark.parametrize(
    "name",
    [
        "bench",
        "book_eval",
        "cases",
        "children",
        "gemm_only",
        "harness",
        "profiling",
        "report",
        "step_parts",
        "system",
    ],
)
def test_every_part_of_the_benchmark_imports(name, benchmarks):
    """Each module of the split benchmark imports on its own, with a docstring saying its idea."""
    module = benchmarks(name)
    assert module.__doc__ and Path(module.__file__).parent == BENCHMARKS


def test_one_command_line(benchmarks):
    """bench.py is the one entry point: its flags parse as before the split."""
    args = benchmarks("bench").parse_args(["--smoke", "--presets", "book-small", "--ranks", "2"])
    assert args.presets == ["book-small"] and args.ranks == 2 and args.iters == 1
    assert args.cells == ["lstm", "gru"] and args.impl == ["npgated", "npgated-threads", "torch"]
    assert args.gemm_sizes == [64, 128]


@pytest.mark.parametrize(
    ("preset", "expected"),
    [("book-small", 6_480_000), ("book-better", 79_560_000)],  # the ceiling inputs
)
def test_training_flops_per_token(preset, expected, benchmarks):
    cases, gemm_only = benchmarks("cases"), benchmarks("gemm_only")
    flops = gemm_only.gemm_flops_per_token(cases.preset_spec(preset, "lstm")["model_kwargs"])
    assert flops["train"] == expected
    assert flops["train"] == 3 * flops["forward"]


def _run(tmp_path, *args):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(BENCH), "--smoke", *args, "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, f"bench.py failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "train tok/s" in proc.stdout
    return json.loads(out.read_text()), out.with_suffix(".md").read_text()


def _check_results(report, expected):
    got = {(r["preset"], r["cell"], r["impl"]) for r in report["results"]}
    assert got == expected
    for r in report["results"]:
        label = f"{r['preset']} {r['cell']} {r['impl']}"
        assert "error" not in r, f"{label}: {r['error']}"
        assert r["train"]["tok_s"] > 0 and r["eval"]["tok_s"] > 0, label
        assert r["peak_rss_mib"] > 0, label
        assert all("float32" in d for d in r["dtypes"]), f"{label}: {r['dtypes']}"
        assert r["env"]["OPENBLAS_NUM_THREADS"] == "2", label


def test_bench_smoke_npgated(tmp_path):
    """Every npgated child (one layer / two layers with dropout and tying; LSTM / GRU) reports."""
    report, markdown = _run(
        tmp_path, "--presets", "book-small,book-better", "--cells", "lstm,gru", "--impl", "npgated"
    )
    _check_results(
        report, {(p, c, "npgated") for p in ("book-small", "book-better") for c in ("lstm", "gru")}
    )
    assert report["gemm"]["numpy"]["best_gflops"] > 0
    assert report["machine"]["cpu_model"]
    assert report["settings"]["smoke"] is True
    assert "| book-better | gru | npgated |" in markdown


def test_bench_smoke_against_torch(tmp_path):
    """npgated and the PyTorch reference side by side: both children report, ratio computed."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    report, markdown = _run(
        tmp_path,
        "--presets",
        "book-better",
        "--cells",
        "gru",
        "--impl",
        "npgated,torch",
        "--no-gemm",
    )
    _check_results(report, {("book-better", "gru", "npgated"), ("book-better", "gru", "torch")})
    assert report["machine"]["torch"]
    npg = next(r for r in report["results"] if r["impl"] == "npgated")
    assert npg["keep_freed_memory"] in (True, False)  # npgated runs as its fit runs it
    assert "keep_freed_memory" not in next(r for r in report["results"] if r["impl"] == "torch")
    assert npg["gemm_only_train"]["tok_s"] > 0 and npg["gemm_only_eval"]["tok_s"] > 0
    row = "| book-better | gru | npgated |"
    assert row in markdown
    line = next(ln for ln in markdown.splitlines() if ln.startswith(row))
    assert line.split("|")[7].strip().endswith("×"), line  # train ×torch is filled in


def test_rounds_are_merged_as_the_median_of_the_rounds(benchmarks):
    harness = benchmarks("harness")
    results = []
    for tok_s, rss in ((100.0, 10.0), (300.0, 30.0), (200.0, 20.0)):
        harness.add_round(
            results,
            {
                "preset": "p",
                "cell": "lstm",
                "impl": "npgated",
                "peak_rss_mib": rss,
                "train": {"tok_s": tok_s, "ms_per_iter": 1e3 / tok_s, "others_cores": [0.1]},
                "eval": {"tok_s": 3 * tok_s, "ms_per_iter": 1.0, "others_cores": [0.2]},
            },
        )
    assert len(results) == 1
    merged = results[0]
    assert merged["train"]["tok_s"] == 200.0 and merged["eval"]["tok_s"] == 600.0
    assert merged["train"]["tok_s_rounds"] == [100.0, 300.0, 200.0]
    assert merged["train"]["others_cores"] == [0.1, 0.1, 0.1]
    assert merged["peak_rss_mib"] == 30.0 and len(merged["rounds"]) == 3


def test_update_readme_fills_both_readmes(benchmarks, monkeypatch, tmp_path):
    """--update-readme replaces the marked block of benchmarks/README.md and docs/speed.md."""
    report = benchmarks("report")
    files = []
    for name in ("bench.md", "project.md"):
        path = tmp_path / name
        path.write_text(f"before\n{report.README_START}\nold table\n{report.README_END}\nafter\n")
        files.append(path)
    monkeypatch.setattr(report, "READMES", tuple(files))
    assert report.update_readme("new table\n") is True
    for path in files:
        assert path.read_text() == (
            f"before\n{report.README_START}\nnew table\n{report.README_END}\nafter\n"
        )
    files[1].write_text("no markers\n")
    assert report.update_readme("x\n") is False
    assert files[1].read_text() == "no markers\n"  # left alone


def test_the_readmes_have_the_results_markers(benchmarks):
    report = benchmarks("report")
    assert report.SPEED_PAGE in report.READMES and report.SPEED_PAGE.name == "speed.md"
    for path in report.READMES:
        text = path.read_text()
        assert text.count(report.README_START) == 1 and text.count(report.README_END) == 1, path


def test_step_parts_times_every_part(benchmarks, capsys):
    """benchmarks/step_parts.py: one row per layer phase plus clip/update/zeroing, both modes."""
    step_parts = benchmarks("step_parts")
    assert (
        step_parts.main(
            ["--preset", "book-small", "--iters", "1", "--rounds", "1", "--threads", "2"]
        )
        == 0
    )
    out = capsys.readouterr().out
    for part in (
        "zero grads",
        "F embed",
        "F lstm1",
        "F affine",
        "F loss",
        "B loss",
        "B affine",
        "B lstm1",
        "B embed",
        "clip",
        "update",
        "**sum**",
    ):
        assert f"| {part} |" in out, part
    assert "| part | threads off | 2 threads |" in out
