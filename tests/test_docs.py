"""The pages under docs/ run and link as written.

* Every ```` ```python ```` block of ``docs/*.md`` and ``docs/derivations/*.md`` runs. The
  blocks of one page run in order in one namespace (a page reads like a notebook: a later block
  may use what an earlier one built), in a fresh temporary working directory, with matplotlib
  on the Agg backend. Blocks in any other fence (```` ```bash ````, ```` ```text ````, ...) are
  not run.
* A block that needs something the machine may lack says so in an HTML comment on the line
  right above its fence (invisible on GitHub)::

      <!-- requires: ptb, torch -->
      ```python

  ``ptb``: the Penn Treebank files (``NPGATED_DATA_DIR`` is set to their folder while the
  page runs); ``book``: the book's trained files in ``book/`` next to that folder;
  ``torch``, ``mpi4py``, ``cupy``: the package (CuPy with a usable GPU). When one is missing,
  the page's earlier blocks have run and the test is skipped from that block on, saying which
  requirement was missing (later blocks may depend on it).
* Every relative link of ``README.md`` and of the docs pages points at a file or folder that
  exists, and a ``#fragment`` into a Markdown page at one of its headings. Pages that other
  work is still writing are listed in ``PENDING``: a link to one that does not exist yet is a
  skip with the reason, not a failure.

The README's own blocks run in ``tests/test_readme.py``. Keep page examples small: the whole
file runs in a few seconds.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + sorted((DOCS / "derivations").glob("*.md"))
LINKED = [ROOT / "README.md", *PAGES]
#: pages linked from the README that other work of issue 20 is writing
PENDING = {DOCS / name for name in ("seq2seq.md", "own-text.md", "check-your-backward.md")}
PENDING.add(DOCS / "derivations" / "attention.md")

REQUIRES = re.compile(r"^<!--\s*requires:\s*([\w\s,-]+?)\s*-->$")
KNOWN = {"ptb", "book", "torch", "mpi4py", "cupy"}


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def blocks(path: Path) -> list[tuple[int, set[str], str]]:
    """(line of the fence, requirements, code) for each ```python block of a page."""
    found, fence, code, start, needs = [], None, [], 0, set()
    previous = ""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if fence is None:
            if stripped.startswith(("```", "~~~")):
                fence = stripped[: len(stripped) - len(stripped.lstrip(stripped[0]))]
                info = stripped[len(fence) :].strip()
                code, start = ([], number) if info == "python" else (None, number)
                m = REQUIRES.match(previous)
                needs = {n.strip() for n in m.group(1).split(",")} if m else set()
            elif stripped:
                previous = stripped
        elif stripped.startswith(fence) and not stripped.strip(fence[0]):
            if code is not None:
                found.append((start, needs, "\n".join(code) + "\n"))
            fence = None
        elif code is not None:
            code.append(line)
    return found


def data_dir() -> Path | None:
    env = os.environ.get("NPGATED_DATA_DIR")
    for path in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data" / "ptb"]:
        if (path / "ptb.train.txt").is_file():
            return path
    return None


def missing(need: str) -> str | None:
    """Why ``need`` is not available here, or None."""
    if need not in KNOWN:
        return f"unknown requirement {need!r} (known: {sorted(KNOWN)})"
    if need == "ptb":
        return None if data_dir() else "the PTB data (set NPGATED_DATA_DIR)"
    if need == "book":
        ptb = data_dir()
        ok = ptb is not None and (ptb.parent / "book" / "Rnnlm.pkl").is_file()
        return None if ok else "the book's files (book/ next to the PTB folder)"
    if need == "cupy":
        from npgated import backend  # noqa: PLC0415

        return None if backend.cupy_available() else "CuPy with a usable GPU"
    return None if importlib.util.find_spec(need) else f"the package {need}"


PAGES_WITH_CODE = [p for p in PAGES if blocks(p)]


@pytest.mark.parametrize("path", PAGES_WITH_CODE, ids=rel)
def test_page_code_runs(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if data_dir():
        monkeypatch.setenv("NPGATED_DATA_DIR", str(data_dir()))
    namespace = {"__name__": "__docs__"}
    for line, needs, code in blocks(path):
        for need in sorted(needs):
            why = missing(need)
            if why:
                if need not in KNOWN:
                    pytest.fail(f"{rel(path)}:{line}: {why}")
                pytest.skip(f"{rel(path)}: the block at line {line} and after need {why}")
        exec(compile(code, f"{rel(path)} (block at line {line})", "exec"), namespace)


# ------------------------------------------------------------------------------------------
# Links
# ------------------------------------------------------------------------------------------
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    fence = None
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            marker = stripped[: len(stripped) - len(stripped.lstrip(stripped[0]))]
            if fence is None:
                fence = marker
            elif marker.startswith(fence) and not stripped.strip(fence[0]):
                fence = None
            continue
        m = None if fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            out.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of the relative links outside code."""
    out, fence = [], None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            marker = stripped[: len(stripped) - len(stripped.lstrip(stripped[0]))]
            if fence is None:
                fence = marker
            elif marker.startswith(fence) and not stripped.strip(fence[0]):
                fence = None
            continue
        if fence is not None:
            continue
        text = re.sub(r"``.+?``|`[^`]+`", "", line)
        for target in LINK.findall(text):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, mailto:, ...
                out.append((number, target))
    return out


def resolve(page: Path, target: str) -> tuple[Path, str]:
    file, _, fragment = target.partition("#")
    return ((page.parent / file).resolve() if file else page), fragment


@pytest.mark.parametrize("path", LINKED, ids=rel)
def test_relative_links_resolve(path):
    problems = []
    for line, target in links(path):
        dest, fragment = resolve(path, target)
        if dest in PENDING and not dest.exists():
            continue  # test_pending_pages_exist says so
        if not dest.exists():
            problems.append(f"{rel(path)}:{line}: {target} does not exist")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            problems.append(f"{rel(path)}:{line}: {target}: no heading #{fragment} in {dest.name}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", sorted(PENDING), ids=rel)
def test_pending_pages_exist(page):
    linked_from = sorted({rel(p) for p in LINKED for _, t in links(p) if resolve(p, t)[0] == page})
    if not page.exists():
        pytest.skip(
            f"{rel(page)} (linked from {', '.join(linked_from) or 'nowhere'}) is being "
            "written by other work of issue 20"
        )
    assert page.read_text().strip(), f"{rel(page)} is empty"
