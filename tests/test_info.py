"""``npgated info`` and ``python -m npgated``: the facts a bug report needs, and the warning
when OPENBLAS_CORETYPE forces a BLAS kernel below what the CPU supports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import npgated
from npgated import cli, info

ROOT = Path(__file__).resolve().parents[1]

AVX512 = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 avx512f avx512bw avx512_vnni"
AVX2 = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2"


def _cpuinfo(tmp_path, flags, model="Test CPU @ 2.0GHz"):
    path = tmp_path / "cpuinfo"
    block = f"processor\t: 0\nmodel name\t: {model}\nflags\t\t: {flags}\n\n"
    path.write_text(block + block.replace("processor\t: 0", "processor\t: 1"))
    return path


# -- the CPU ------------------------------------------------------------------------------
def test_cpu_info_reads_model_and_vector_flags(tmp_path):
    cpu = info.cpu_info(_cpuinfo(tmp_path, AVX512))
    assert cpu["model"] == "Test CPU @ 2.0GHz"
    assert cpu["vector_flags"] == [
        "sse4_2",
        "avx",
        "fma",
        "avx2",
        "avx512f",
        "avx512bw",
        "avx512_vnni",
    ]
    assert cpu["vector_level"] == "avx512"
    assert cpu["cores"] >= 1 and 1 <= cpu["cores_available"] <= cpu["cores"]


def test_cpu_info_degrades_without_proc_cpuinfo(tmp_path):
    cpu = info.cpu_info(tmp_path / "missing")
    assert cpu["vector_flags"] is None and cpu["vector_level"] is None
    assert isinstance(cpu["model"], str) and cpu["model"]


@pytest.mark.parametrize(
    ("flags", "level"),
    [
        (AVX512, "avx512"),
        (AVX2, "avx2"),
        ("sse4_2 avx", "avx"),
        ("sse4_2", "sse4_2"),
        ("avx avx2", "avx"),  # AVX2 without FMA is not Haswell-class: OpenBLAS would not use it
        ("fp asimd", None),
        (None, None),
    ],
)
def test_cpu_level(flags, level):
    assert info.cpu_level(None if flags is None else flags.split()) == level


# -- the warning ---------------------------------------------------------------------------
@pytest.mark.parametrize("coretype", ["Haswell", "Sandybridge", "HASWELL", "Nehalem", "Zen"])
def test_warns_when_the_forced_kernel_is_below_the_cpu(coretype):
    found = info.kernel_warnings(AVX512.split(), {"OPENBLAS_CORETYPE": coretype})
    assert len(found) == 1
    assert f"OPENBLAS_CORETYPE={coretype}" in found[0] and "slower" in found[0]
    assert "0.83x" in found[0], "the warning cites the measured cost"


@pytest.mark.parametrize(
    ("flags", "coretype"),
    [
        (AVX512, "SkylakeX"),
        (AVX512, "CooperLake"),
        (AVX2, "Haswell"),
        (AVX2, "Zen"),
        (AVX512, ""),
        (AVX512, None),
    ],
)
def test_no_warning_when_the_kernel_fits(flags, coretype):
    env = {} if coretype is None else {"OPENBLAS_CORETYPE": coretype}
    assert info.kernel_warnings(flags.split(), env) == []


def test_warns_when_the_forced_kernel_is_above_the_cpu():
    found = info.kernel_warnings(AVX2.split(), {"OPENBLAS_CORETYPE": "SkylakeX"})
    assert len(found) == 1 and "illegal instruction" in found[0]


def test_unknown_core_name_and_unknown_cpu():
    found = info.kernel_warnings(AVX512.split(), {"OPENBLAS_CORETYPE": "Pentium9000"})
    assert len(found) == 1 and "Pentium9000" in found[0]
    # flags unknown (not Linux): nothing to compare with, no warning
    assert info.kernel_warnings(None, {"OPENBLAS_CORETYPE": "Haswell"}) == []


def test_warns_when_openblas_itself_runs_an_older_kernel():
    found = info.kernel_warnings(AVX512.split(), {}, openblas_architectures=["Haswell"])
    assert len(found) == 1 and "Haswell" in found[0]
    assert info.kernel_warnings(AVX512.split(), {}, openblas_architectures=["SkylakeX"]) == []
    # a forced kernel is the explanation: one warning about the variable, not two
    found = info.kernel_warnings(
        AVX512.split(), {"OPENBLAS_CORETYPE": "Haswell"}, openblas_architectures=["Haswell"]
    )
    assert len(found) == 1 and "OPENBLAS_CORETYPE" in found[0]


# -- everything together --------------------------------------------------------------------
def test_collect_with_a_fake_cpu_and_env(tmp_path):
    env = {"OPENBLAS_CORETYPE": "Sandybridge", "OPENBLAS_NUM_THREADS": "1"}
    facts = info.collect(cpuinfo_path=_cpuinfo(tmp_path, AVX512), environ=env)
    assert set(facts) >= {"versions", "backend", "platform", "cpu", "blas", "env", "warnings"}
    assert facts["versions"]["npgated"] == npgated.__version__
    assert facts["versions"]["numpy"]
    assert facts["env"]["OPENBLAS_CORETYPE"] == "Sandybridge"
    assert facts["env"]["OPENBLAS_NUM_THREADS"] == "1" and facts["env"]["OMP_NUM_THREADS"] is None
    assert len(facts["warnings"]) == 1
    assert json.loads(json.dumps(facts)) == facts  # JSON-friendly as it is
    text = info.format_info(facts)
    assert "WARNING: OPENBLAS_CORETYPE=Sandybridge" in text
    assert (
        "avx512f" in text and "Test CPU" in text and f"npgated        {npgated.__version__}" in text
    )


def test_blas_info_reports_the_loaded_kernel():
    pytest.importorskip("threadpoolctl")
    blas = info.blas_info()
    assert isinstance(blas["libraries"], list)
    for d in blas["libraries"]:
        assert set(d) >= {"internal_api", "version", "architecture", "num_threads"}
    if any(d["internal_api"] == "openblas" for d in blas["libraries"]):
        assert any(d["architecture"] for d in blas["libraries"])


def test_collect_imports_neither_torch_nor_cupy():
    code = (
        "import sys; from npgated import info; info.collect(); "
        "print(sorted(m for m in ('torch', 'cupy', 'mpi4py') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- the command line ---------------------------------------------------------------------
def test_cli_info_prints_and_exits_0(capsys):
    assert cli.main(["info"]) == 0
    text = capsys.readouterr().out
    for key in ("npgated", "numpy", "backend", "OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS"):
        assert key in text


def test_cli_info_json_parses(capsys):
    assert cli.main(["info", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["versions"]["npgated"] == npgated.__version__
    assert isinstance(facts["warnings"], list)


def _python_m(*args):
    return subprocess.run(
        [sys.executable, "-m", "npgated", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_python_m_npgated_version():
    out = _python_m("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"npgated {npgated.__version__}"


def test_python_m_npgated_info():
    out = _python_m("info")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"npgated        {npgated.__version__}")
    assert "OPENBLAS_CORETYPE" in out.stdout


def test_python_m_npgated_bad_usage_exits_2():
    out = _python_m("no-such-command")
    assert out.returncode == 2 and "invalid choice" in out.stderr
