"""docs/derivations/ and the code carry the same equation tags, and every link lands on its tag.

The layer modules number their equations (F1.. forward, B1.. backward, K1.. the backward's
precomputed factors, M1.. the dropout masks) in the Notes of a docstring and tag the code lines
that compute them with a comment (``# B3``). The pages of ``docs/derivations/`` render those
equations as mathematics and link each one to its lines. What ties them (the full convention is
in ``docs/derivations/README.md``):

* in the code, a tag is *defined* by a docstring line that starts with it followed by two
  spaces or by ``name =`` / ``name +=`` (``B3  da_f = ...``, ``B10 dWh = ...``; a list
  ``B2, B3`` or a range ``B2-B4`` defines each); a tag is *carried* by a comment that starts
  with it (``# B3``, ``# F3, F5``, ``# B2-B4  ...``, ``# F2: ...``);
* in a page, ``<!-- derivation: npgated/layers/lstm.py lstm_step_forward -->`` opens a section
  for the tags defined in that docstring (several qualified names: the union), and each
  equation is a line ``**B3** · [`lstm_step_backward`](../../npgated/layers/lstm.py#L171)``
  (a range ``#L171-L175`` when the tag spans lines) followed by its ``math`` block.

The tests: per module, the tags its comments carry are the tags its docstrings define; per
section, the page's tags are exactly the docstring's; per module, the tags of the code are the
tags of its pages, and every docstring that defines tags has a section; every link stays inside
the named function or class and its first and last lines carry the equation's tag; the math
uses only what GitHub renders reliably. Every page present is checked (a page another helper
adds is covered when it lands); a layer module without any page is a failure, except
``attention.py`` while ``docs/derivations/attention.md`` is not written yet (a skip that says so).

When code moves, ``python tests/test_derivations.py --relink`` rewrites every link's line
numbers from the tagged lines of the function the link names.
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES_DIR = ROOT / "docs" / "derivations"
PAGES = sorted(p for p in PAGES_DIR.glob("*.md") if p.name != "README.md")
ALL_MD = sorted(PAGES_DIR.glob("*.md"))
LAYERS = sorted(p for p in (ROOT / "npgated" / "layers").glob("*.py"))
#: modules whose page another helper is writing: skipped (with the reason) until it exists
PENDING = {"npgated/layers/attention.py": PAGES_DIR / "attention.md"}
#: the pages issue 20 asks for (the index lists them)
REQUIRED_PAGES = (
    "rnn.md",
    "lstm.md",
    "gru.md",
    "softmax-with-loss.md",
    "weight-tying.md",
    "dropout.md",
)

TAG = r"[A-Z][0-9]{1,2}"
TAG_LIST = rf"{TAG}(?:\s*[,-]\s*{TAG})*"
COMMENT_TAGS = re.compile(rf"#\s*({TAG_LIST})(?![\w'])")  # not "# F1's product"
DEFINITION = re.compile(rf"^\s*({TAG_LIST})(?: {{2,}}| (?=[A-Za-z_]\w* \+?= ))")
MARKER = re.compile(r"^<!--\s*derivation:\s*(\S+\.py)((?:\s+[\w.]+)+)\s*-->\s*$")
LABEL = re.compile(rf"^\*\*({TAG_LIST})\*\*(.*)$")
LINK = re.compile(r"\[`([\w.]+)`\]\(([^)#\s]+\.py)#L(\d+)(?:-L(\d+))?\)")
RELINK = "python tests/test_derivations.py --relink"


def expand(tags: str) -> list[str]:
    """``"B2-B4, B7"`` -> ``["B2", "B3", "B4", "B7"]``."""
    out = []
    for part in re.split(r"\s*,\s*", tags.strip()):
        if "-" in part:
            first, last = (s.strip() for s in part.split("-"))
            if first[0] != last[0] or int(last[1:]) < int(first[1:]):
                raise ValueError(f"bad tag range {part!r}")
            out += [f"{first[0]}{k}" for k in range(int(first[1:]), int(last[1:]) + 1)]
        else:
            out.append(part)
    return out


def order(tags) -> list[str]:
    return sorted(tags, key=lambda t: (t[0], int(t[1:])))


# ------------------------------------------------------------------------------------------
# The code side
# ------------------------------------------------------------------------------------------
@dataclass
class Module:
    rel: str  # "npgated/layers/lstm.py"
    lines: list[str]
    scopes: dict[str, tuple[int, int]] = field(default_factory=dict)  # qualname -> lines
    defined: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # qualname -> tags
    carried: dict[int, set[str]] = field(default_factory=dict)  # line -> comment tags
    trailing: set[int] = field(default_factory=set)  # lines whose comment follows code
    docstring_lines: dict[int, set[str]] = field(default_factory=dict)  # definition lines

    @property
    def defined_tags(self) -> set[str]:
        return {t for tags in self.defined.values() for t in tags}

    @property
    def carried_tags(self) -> set[str]:
        return {t for tags in self.carried.values() for t in tags}

    def tags_on(self, line: int) -> set[str]:
        return self.carried.get(line, set()) | self.docstring_lines.get(line, set())


@cache
def load_module(rel: str) -> Module:
    path = ROOT / rel
    source = path.read_text()
    mod = Module(rel, source.splitlines())

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                mod.scopes[name] = (child.lineno, child.end_lineno)
                if ast.get_docstring(child, clean=False) is not None:
                    doc = child.body[0]
                    for line in range(doc.lineno, doc.end_lineno + 1):
                        m = DEFINITION.match(mod.lines[line - 1])
                        if m:
                            tags = expand(m.group(1))
                            mod.docstring_lines[line] = set(tags)
                            for tag in tags:
                                mod.defined.setdefault(name, {}).setdefault(tag, []).append(line)
                walk(child, name + ".")

    walk(ast.parse(source), "")
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            m = COMMENT_TAGS.match(tok.string)
            if m:
                line = tok.start[0]
                mod.carried.setdefault(line, set()).update(expand(m.group(1)))
                if mod.lines[line - 1][: tok.start[1]].strip():
                    mod.trailing.add(line)
    return mod


# ------------------------------------------------------------------------------------------
# The page side
# ------------------------------------------------------------------------------------------
@dataclass
class Label:
    line: int  # in the page
    tags: list[str]
    qualname: str | None = None
    target: str | None = None  # module path relative to the repository root
    start: int | None = None
    end: int | None = None


@dataclass
class Section:
    line: int
    module: str
    qualnames: list[str]
    labels: list[Label] = field(default_factory=list)


@dataclass
class Page:
    path: Path
    sections: list[Section] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def scan(path: Path):
    """(line number, text, info) for every line of a Markdown file; info is None outside a
    fenced block, the fence's info string ("math", "python", "") on the lines inside it, and
    "/" + info on the closing fence line."""
    fence = info = None
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        stripped = text.strip()
        if fence is None:
            if stripped.startswith(("```", "~~~")):
                fence = stripped[: len(stripped) - len(stripped.lstrip(stripped[0]))]
                info = stripped[len(fence) :].strip()
                yield number, text, "<" + info
                continue
            yield number, text, None
        elif stripped.startswith(fence) and not stripped.strip(fence[0]):
            yield number, text, "/" + info
            fence = None
        else:
            yield number, text, info


def parse_page(path: Path) -> Page:
    page = Page(path)
    for number, text, info in scan(path):
        if info is not None:
            continue
        stripped = text.strip()
        m = MARKER.match(stripped)
        if m:
            page.sections.append(Section(number, m.group(1), m.group(2).split()))
            continue
        m = LABEL.match(text)
        if not m:
            continue
        where = f"{path.name}:{number}"
        try:
            label = Label(number, expand(m.group(1)))
        except ValueError as exc:
            page.errors.append(f"{where}: {exc}")
            continue
        if not page.sections:
            page.errors.append(
                f"{where}: equation {m.group(1)} before any "
                "<!-- derivation: MODULE QUALNAME --> marker"
            )
            continue
        section = page.sections[-1]
        links = LINK.findall(m.group(2))
        if len(links) != 1:
            page.errors.append(
                f"{where}: equation {m.group(1)} needs exactly one link "
                "[`qualname`](../../npgated/...py#Lstart[-Lend]) on its line"
            )
            continue
        qualname, href, start, end = links[0]
        target = (path.parent / href).resolve()
        try:
            target_rel = target.relative_to(ROOT).as_posix()
        except ValueError:
            target_rel = href
        if target_rel != section.module:
            page.errors.append(
                f"{where}: {m.group(1)} links to {href}, but its section is for {section.module}"
            )
            continue
        label.qualname, label.target = qualname, target_rel
        label.start, label.end = int(start), int(end or start)
        section.labels.append(label)
    for section in page.sections:
        if not (ROOT / section.module).is_file():
            page.errors.append(f"{path.name}:{section.line}: no module {section.module}")
            continue
        mod = load_module(section.module)
        for name in section.qualnames:
            if name not in mod.defined:
                page.errors.append(
                    f"{path.name}:{section.line}: {section.module} has no "
                    f"docstring {name} that defines equation tags"
                )
        for label in section.labels:
            if label.qualname not in mod.scopes:
                page.errors.append(
                    f"{path.name}:{label.line}: {section.module} has no "
                    f"function or class {label.qualname}"
                )
    return page


@cache
def pages() -> dict[Path, Page]:
    return {path: parse_page(path) for path in PAGES}


def sections_of(module: str) -> list[tuple[Page, Section]]:
    return [(page, s) for page in pages().values() for s in page.sections if s.module == module]


def tagged_modules() -> list[str]:
    """The layer modules whose code carries or defines tags, and any module a page names."""
    rels = {p.relative_to(ROOT).as_posix() for p in LAYERS}
    rels = {r for r in rels if load_module(r).defined or load_module(r).carried}
    for page in pages().values():
        rels |= {s.module for s in page.sections if (ROOT / s.module).is_file()}
    return sorted(rels)


# ------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------
def test_the_pages_of_issue_20_exist():
    missing = [name for name in REQUIRED_PAGES if not (PAGES_DIR / name).is_file()]
    assert not missing, f"docs/derivations/ lacks {missing}"
    index = (PAGES_DIR / "README.md").read_text()
    unlisted = [p.name for p in PAGES if f"({p.name})" not in index]
    assert not unlisted, f"docs/derivations/README.md does not link {unlisted}"


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_page_parses(path):
    page = pages()[path]
    assert not page.errors, "\n".join(page.errors)
    assert page.sections, f"{path.name} has no <!-- derivation: MODULE QUALNAME --> section"


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_each_section_has_the_docstrings_tags(path):
    problems = []
    for section in pages()[path].sections:
        mod = load_module(section.module)
        code = {t for name in section.qualnames for t in mod.defined.get(name, {})}
        doc = {t for label in section.labels for t in label.tags}
        where = f"{path.name}:{section.line} ({section.module} {' '.join(section.qualnames)})"
        if code - doc:
            problems.append(
                f"{where}: defined in the code, missing on the page: {order(code - doc)}"
            )
        if doc - code:
            problems.append(
                f"{where}: on the page, not defined in the docstring: {order(doc - code)}"
            )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_each_link_lands_on_its_tag(path):
    problems = []
    for section in pages()[path].sections:
        mod = load_module(section.module)
        for label in section.labels:
            where = f"{path.name}:{label.line} {','.join(label.tags)} -> {label.qualname}"
            lo, hi = mod.scopes.get(label.qualname, (0, -1))
            if not lo <= label.start <= label.end <= hi:
                problems.append(
                    f"{where}: lines {label.start}-{label.end} are not inside "
                    f"{label.qualname} (lines {lo}-{hi})"
                )
                continue
            first, last = mod.tags_on(label.start), mod.tags_on(label.end)
            inside = set().union(*(mod.tags_on(n) for n in range(label.start, label.end + 1)))
            if not (first & set(label.tags) and last & set(label.tags)):
                problems.append(
                    f"{where}: line {label.start} or {label.end} carries no "
                    f"{'/'.join(label.tags)} (it reads: "
                    f"{mod.lines[label.start - 1].strip()!r})"
                )
            elif set(label.tags) - inside:
                problems.append(
                    f"{where}: lines {label.start}-{label.end} do not carry "
                    f"{order(set(label.tags) - inside)}"
                )
    assert not problems, "\n".join(problems) + f"\nif the code moved, run: {RELINK}"


@pytest.mark.parametrize("module", tagged_modules())
def test_the_code_carries_every_defined_tag(module):
    """Comments and docstrings of one module use the same tags (a `# B12` without an
    equation, or an equation no line computes, is a mistake)."""
    mod = load_module(module)
    assert mod.carried_tags == mod.defined_tags, (
        f"{module}: tags in comments but defined in no docstring: "
        f"{order(mod.carried_tags - mod.defined_tags)}; defined but on no code line: "
        f"{order(mod.defined_tags - mod.carried_tags)}"
    )


@pytest.mark.parametrize("module", tagged_modules())
def test_every_tagged_docstring_has_a_page(module):
    mod = load_module(module)
    found = sections_of(module)
    if not found and module in PENDING and not PENDING[module].exists():
        pytest.skip(f"{PENDING[module].relative_to(ROOT)} is not written yet (issue 20)")
    covered = {name for _, s in found for name in s.qualnames}
    missing = sorted(set(mod.defined) - covered)
    assert not missing, (
        f"{module}: the equations of {missing} have no section in "
        "docs/derivations/ (<!-- derivation: MODULE QUALNAME -->)"
    )
    code = mod.defined_tags | mod.carried_tags
    doc = {t for _, s in found for label in s.labels for t in label.tags}
    assert code == doc, (
        f"{module}: tags of the code {order(code)} != tags of its pages {order(doc)}"
    )


# ------------------------------------------------------------------------------------------
# Math that GitHub renders
# ------------------------------------------------------------------------------------------
ENVIRONMENTS = {
    "aligned",
    "cases",
    "bmatrix",
    "pmatrix",
    "matrix",
    "array",
    "Bmatrix",
    "vmatrix",
    "smallmatrix",
}


SPANS = re.compile(r"\$`([^`\n]+?)`\$|``.+?``|`[^`\n]+`")
BEFORE_INLINE = " ([\"'/-\u2013\u2014"


def math_problems(path: Path) -> list[str]:
    """What would not render (or render wrongly) in GitHub's Markdown math.

    Display math goes in ```math blocks (GitHub hands their text to MathJax untouched),
    inline math in $`...`$ (the same protection); plain $$...$$ and $...$ are refused because
    Markdown reads ``_``, ``*`` and ``\\\\`` inside them first.
    """
    problems, tex, block = [], [], []
    for number, line, info in scan(path):
        if info is not None:
            if info == "<math":
                block = []
            elif info == "/math":
                tex.append((number, "\n".join(block), False))
            elif info == "math":
                block.append(line)
            continue
        rest = []
        last = 0
        for m in SPANS.finditer(line):
            rest.append(line[last : m.start()])
            last = m.end()
            if m.group(1) is not None:
                tex.append((number, m.group(1), True))
                if m.start() > 0 and line[m.start() - 1] not in BEFORE_INLINE:
                    problems.append(
                        f"{path.name}:{number}: inline math right after a "
                        "character (GitHub leaves it unrendered): put a space "
                        "before $`"
                    )
        rest.append(line[last:])
        if "$" in "".join(rest).replace("\\$", ""):
            problems.append(
                f"{path.name}:{number}: a $ outside $`...`$ and ```math (plain "
                "$...$ / $$...$$ math breaks on GitHub; escape a dollar as \\$)"
            )
    for number, body, is_inline in tex:
        where = f"{path.name}:{number}: math {body.strip()[:40]!r}"
        plain = body.replace("\\{", "").replace("\\}", "")
        if plain.count("{") != plain.count("}"):
            problems.append(f"{where}: unbalanced braces")
        if len(re.findall(r"\\left\b", body)) != len(re.findall(r"\\right\b", body)):
            problems.append(f"{where}: \\left without \\right")
        begins = re.findall(r"\\begin\{(\w+\*?)\}", body)
        if begins != re.findall(r"\\end\{(\w+\*?)\}", body):
            problems.append(f"{where}: \\begin/\\end do not match")
        if set(begins) - ENVIRONMENTS:
            problems.append(
                f"{where}: environment {sorted(set(begins) - ENVIRONMENTS)} (use "
                "aligned inside the block)"
            )
        if re.search(r"\\text\{[^}]*\\_", body):
            problems.append(
                f"{where}: \\_ inside \\text{{}} shows the backslash (MathJax has no "
                "text-mode \\_): use \\mathtt{a\\_b} or leave \\text first"
            )
        if is_inline and "\\\\" in body:
            problems.append(f"{where}: a line break in inline math")
    return problems


@pytest.mark.parametrize("path", ALL_MD, ids=lambda p: p.name)
def test_math_renders_on_github(path):
    problems = math_problems(path)
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------
# python tests/test_derivations.py --relink
# ------------------------------------------------------------------------------------------
def best_lines(mod: Module, qualname: str, tags: list[str]) -> list[int]:
    """The lines of ``qualname`` that carry any of ``tags``: code lines with a trailing tag
    comment if there are any, else whole-line tag comments, else docstring definitions."""
    lo, hi = mod.scopes[qualname]
    span = range(lo, hi + 1)
    wanted = set(tags)
    for lines in (
        [n for n in span if n in mod.trailing and mod.carried[n] & wanted],
        [n for n in span if mod.carried.get(n, set()) & wanted],
        [n for n in span if mod.docstring_lines.get(n, set()) & wanted],
    ):
        if lines:
            return lines
    return []


def relink() -> int:
    changed = 0
    for path in PAGES:
        page = parse_page(path)
        lines = path.read_text().split("\n")
        for section in page.sections:
            mod = load_module(section.module)
            for label in section.labels:
                if label.qualname not in mod.scopes:
                    print(f"{path.name}:{label.line}: no {label.qualname} in {section.module}")
                    continue
                found = best_lines(mod, label.qualname, label.tags)
                if not found:
                    print(
                        f"{path.name}:{label.line}: {label.qualname} carries no "
                        f"{label.tags}: link left as it was"
                    )
                    continue
                anchor = f"#L{found[0]}" + (f"-L{found[-1]}" if found[-1] != found[0] else "")
                old = lines[label.line - 1]
                new = re.sub(
                    r"(\]\([^)#\s]+\.py)#L\d+(?:-L\d+)?\)", rf"\g<1>{anchor})", old, count=1
                )
                if new != old:
                    lines[label.line - 1] = new
                    changed += 1
        path.write_text("\n".join(lines))
    print(f"{changed} link(s) rewritten")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["--relink"]:
        print(f"usage: {RELINK}", file=sys.stderr)
        sys.exit(2)
    sys.exit(relink())
