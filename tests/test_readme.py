"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index):
    code = BLOCKS[index]
    if "import torch" in code or "npgated.interop" in code:
        pytest.importorskip("torch")
    exec(compile(code, f"README.md block {index}", "exec"), {})


def test_readme_is_a_front_page():
    """At most 200 lines; the details live in docs/ (issue 20)."""
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move details to docs/"


def test_ci_runs_the_readmes_test_command():
    ci = (README.parent / ".ci" / "run").read_text()
    commands = re.findall(r"^(python -m pytest[^\n#]*?)\s*(?:#.*)?$", README.read_text(), re.M)
    assert commands, "the README shows no `python -m pytest` command"
    for command in commands:
        assert re.search(rf"^{re.escape(command)}\s*$", ci, re.M), (
            f".ci/run does not run the README's test command {command!r}"
        )
    assert re.search(r"^ruff check \.\s*$", ci, re.M), ".ci/run does not lint with ruff"
