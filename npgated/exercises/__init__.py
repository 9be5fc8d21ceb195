"""Exercises: write a backward pass yourself, and find out where it is wrong.

``npgated exercise rnn|lstm|gru|attention --out DIR`` writes ``DIR/<cell>.py`` (the forward
passes complete, the backward passes to write, their equations in the comments) and
``DIR/test_<cell>.py`` (a pytest file using :mod:`npgated.testing`);
``npgated exercise check DIR/<cell>.py`` runs every part's checks -- against central
differences, localized and diagnosed, and against npgated's own implementation -- and says
what is wrong where.

One module per exercise holds its template (:mod:`.rnn`, :mod:`.lstm`, :mod:`.gru`,
:mod:`.attention`); :mod:`.base` has what they share.
"""

from __future__ import annotations

import importlib
from pathlib import Path

CELLS = ("rnn", "lstm", "gru", "attention")

__all__ = [
    "CELLS",
    "get",
    "write_exercise",
    "solution_source",
    "check_exercise",
    "compare_with_npgated",
    "outcomes_text",
]


def get(cell: str):
    """The exercise object of ``cell`` (one of :data:`CELLS`)."""
    if cell not in CELLS:
        raise ValueError(f"unknown exercise {cell!r}; choose one of {', '.join(CELLS)}")
    return importlib.import_module(f"npgated.exercises.{cell}").EXERCISE


def write_exercise(cell: str, out, force: bool = False) -> list:
    """Write ``out/<cell>.py`` and ``out/test_<cell>.py``; returns their paths.

    Refuses (ValueError, nothing written) when one of them exists, unless ``force``.
    """
    exercise = get(cell)
    out = Path(out)
    files = {
        out / f"{cell}.py": exercise.template(),
        out / f"test_{cell}.py": exercise.test_template(),
    }
    existing = [str(p) for p in files if p.exists()]
    if existing and not force:
        raise ValueError(
            f"{', '.join(existing)} already there: choose another --out, or pass "
            "--force to replace (your code in it would be lost)"
        )
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    return list(files)


def solution_source(cell: str) -> str:
    """The exercise file with every region filled in from npgated's own code (the tests
    use it to show that a right answer passes; nothing of it is stored)."""
    return get(cell).solution()


def _exercise_of(module, path: Path):
    cell = getattr(module, "EXERCISE", None) or path.stem
    if cell not in CELLS:
        raise ValueError(
            f"{path} is not an npgated exercise (no EXERCISE = 'lstm' line, and "
            f"its name is none of {', '.join(c + '.py' for c in CELLS)})"
        )
    return get(cell)


def run_outcomes(path, parts=None):
    """Load the student's file and run the checks; ``(exercise, outcomes)``."""
    from npgated import usercode  # noqa: PLC0415
    from npgated.exercises import base  # noqa: PLC0415

    path = base.exercise_path(path)
    try:
        module = usercode.load_module(path)
    except usercode.UserCodeError:
        raise
    except Exception as exc:  # noqa: BLE001 (a syntax error, an import that fails, ...)
        raise usercode.UserCodeRaised(f"importing {path}", exc) from exc
    exercise = _exercise_of(module, path)
    missing = [n for n in exercise.required_names() if not hasattr(module, n)]
    if missing:
        raise ValueError(
            f"{path} lacks {', '.join(missing)}: write the exercise again with "
            f"npgated exercise {exercise.cell} --out DIR"
        )
    kwargs = {} if parts is None else {"parts": parts}
    return exercise, exercise.outcomes(module, **kwargs)


def outcomes_text(path, outcomes) -> str:
    """The report ``npgated exercise check`` prints: one line per sub-check, then the full
    report of each one that failed."""
    lines, details = [], []
    part, shown = None, set()
    for o in outcomes:
        if o.part != part:
            part = o.part
            lines.append(part[:1].upper() + part[1:])
        status = o.summary or ("ok" if o.ok else "WRONG")
        lines.append(f"  {o.label}: {status}" if o.label else f"  {status}")
        if not o.ok:
            # in full the first failing check of a part; the others add their table and
            # time steps (the same mistake seen another way)
            details.append(o.brief if (o.part in shown and o.brief) else o.text)
            shown.add(o.part)
    ok = bool(outcomes) and all(o.ok for o in outcomes)
    lines.append(
        f"{Path(path).name}: every part is right" if ok else f"{Path(path).name}: not right yet"
    )
    return "\n".join(lines + [""] + ["\n\n".join(details)] if details else lines)


def check_exercise(path, parts=None):
    """``(ok, text)``: every check of the exercise file at ``path`` (or only ``parts``)."""
    _, outcomes = run_outcomes(path, parts)
    return all(o.ok for o in outcomes), outcomes_text(path, outcomes)


def compare_with_npgated(path, part: str):
    """``(ok, text)`` of the comparison of one part with npgated's own implementation."""
    _, outcomes = run_outcomes(path, (part,))
    mine = [o for o in outcomes if "npgated" in o.label or not o.ok]
    return all(o.ok for o in mine), outcomes_text(path, mine)
