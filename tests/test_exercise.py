"""npgated exercise: every exercise round-trips, and a student's planted mistakes are named.

"Filled in with npgated's own code": :func:`npgated.exercises.solution_source` puts the body
of npgated's own backward into each region (nothing of it is stored in the package; a test
below says so). The mistakes are planted into that text, as a student would write them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npgated import cli, exercises
from npgated.exercises import base
from npgated.usercode import load_module

PACKAGE = Path(exercises.__file__).resolve().parent


def write(tmp_path, cell, source):
    path = tmp_path / f"{cell}.py"
    path.write_text(source)
    return path


def run_generated_tests(path):
    """Call every test of a generated test file, expanding its parametrize marks."""
    module = load_module(path)
    ran = 0
    for name, func in vars(module).items():
        if not name.startswith("test_"):
            continue
        cases = [{}]
        for mark in getattr(func, "pytestmark", []):
            argnames, values = mark.args
            argnames = [a.strip() for a in argnames.split(",")]
            cases = [
                {**case, **dict(zip(argnames, v if len(argnames) > 1 else (v,)))}
                for case in cases
                for v in values
            ]
        for case in cases:
            func(**case)
            ran += 1
    return ran


@pytest.mark.parametrize("cell", exercises.CELLS)
def test_an_exercise_round_trips(tmp_path, cell, capsys):
    assert cli.main(["exercise", cell, "--out", str(tmp_path)]) == 0
    assert f"wrote {tmp_path / cell}.py" in capsys.readouterr().out
    exercise, tests = tmp_path / f"{cell}.py", tmp_path / f"test_{cell}.py"
    assert exercise.is_file() and tests.is_file()

    # as written: every region still raises, the check says so and exits 1
    assert cli.main(["exercise", "check", str(exercise)]) == 1
    out = capsys.readouterr().out
    assert "not written yet: Part 1: write" in out and f"{cell}.py: not right yet" in out

    # a second write would overwrite the student's work: refused, exit 2, one line
    assert cli.main(["exercise", cell, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "already there" in err and "--force" in err and len(err.strip().splitlines()) == 1

    # filled in with npgated's own code: every check and every generated test passes
    exercise.write_text(exercises.solution_source(cell))
    assert cli.main(["exercise", "check", str(exercise)]) == 0
    out = capsys.readouterr().out
    assert f"{cell}.py: every part is right" in out and "WRONG" not in out
    assert "against central differences: ok" in out and "against npgated's" in out
    assert run_generated_tests(tests) >= 3


def test_the_generated_test_file_runs_under_pytest(tmp_path):
    exercises.write_exercise("rnn", tmp_path)
    (tmp_path / "rnn.py").write_text(exercises.solution_source("rnn"))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tmp_path / "test_rnn.py"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 passed" in run.stdout


def test_templates_quote_npgated_equations_and_compute_npgateds_forward(tmp_path):
    from npgated.layers import gru, lstm, rnn

    for cell, ref in (("lstm", lstm), ("gru", gru), ("rnn", rnn)):
        text = exercises.get(cell).template()
        for tag, equation in exercises.get(cell).equations().items():
            assert f"#   {tag:<4s}{equation.splitlines()[0]}" in text, (cell, tag)
        assert set(base.regions(text)) == {"part 1", "part 2"}
        module = load_module(write(tmp_path, cell, text))
        k = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
        x, h, c, Wx, Wh, b = base.random_arrays(
            0, (3, 5), (3, 6), (3, 6), (5, 6 * k), (6, 6 * k), (6 * k,)
        )
        state = (h, c) if cell == "lstm" else (h,)
        fwd, ref_fwd = (getattr(m, f"{cell}_step_forward") for m in (module, ref))
        for mine, theirs in zip(fwd(x, *state, Wx, Wh, b)[:-1], ref_fwd(x, *state, Wx, Wh, b)[:-1]):
            np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-14)
    assert set(base.regions(exercises.get("attention").template())) == {
        "part 1",
        "part 2",
        "part 3",
    }


def test_no_solution_is_stored_in_the_package():
    solution_lines = (
        "dWh = h_prev.T @ da  # B10",
        "dz = dh_next * (h_prev - n)  # B1",
        "ds = masked_softmax_backward(da[:, None, :], a)  # B3",
    )
    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        for line in solution_lines:
            assert line not in text, f"{path.name} holds {line!r}"
    assert solution_lines[0] in exercises.solution_source("lstm")


# ---------------------------------------------------------------------------------------
# Planted mistakes: part 1 (the step backward)
# ---------------------------------------------------------------------------------------
PLANTED = [
    (
        "lstm",
        "da_f = dc * c_prev * f * (1 - f)  # B3",
        "da_f = -dc * c_prev * f * (1 - f)  # B3",
        [
            "dWh, block f (forget gate): rel. error 1.0e+00; blocks i, g, o",
            "block f (forget gate): the sign is flipped",
            "da_f, is wrong (every weight gradient of the block inherits it) -- B3 of npgated's "
            "lstm_step_backward (B3: da_f = dc * c_prev * f * (1 - f))",
            "worst element [",
            "dxs: first wrong step counted from the end: t=3",
        ],
    ),
    (
        "lstm",
        "dWh = h_prev.T @ da  # B10",
        "dWh = h_prev.T @ da + h_prev.T @ da  # B10",
        ["dWh: exactly 2x the numeric gradient: counted twice"],
    ),
    (
        "lstm",
        "da_o = dh_next * tanh_c * o * (1 - o)  # B5",
        "da_o = dh_next * tanh_c * o * (1 - o) / 2  # B5",
        ["block o (output gate): exactly 0.5x the numeric gradient", "da_o"],
    ),
    (
        "lstm",
        "db = da.sum(axis=0)  # B11",
        "db = 0 * da.sum(axis=0)  # B11",
        ["db: it is all zeros: never written or never returned"],
    ),
    (
        "lstm",
        "da = xp.concatenate([da_i, da_f, da_g, da_o], axis=1)",
        "da = xp.concatenate([da_f, da_i, da_g, da_o], axis=1)",
        ["blocks i and f are swapped", "the gate order is mixed up"],
    ),
    (
        "lstm",
        "dc = dc_next + dh_next * o * (1 - tanh_c**2)  # B1",
        "dc = dh_next * o * (1 - tanh_c**2)  # B1",
        [
            "your backward never uses dc_next",
            "dxs: first wrong step counted from the end: t=2",
            "dxs is right at the last step t=3 and wrong at every earlier one",
        ],
    ),
    (
        "lstm",
        "dWh = h_prev.T @ da  # B10",
        "dWh = da.T @ h_prev  # B10",
        ["dWh has shape (24, 6) but Wh is (6, 24): transposed"],
    ),
    (
        "gru",
        "dz = dh_next * (h_prev - n)  # B1",
        "dz = dh_next * (n - h_prev)  # B1",
        ["block z (update gate): the sign is flipped", "Part 1 (reset_after=True)"],
    ),
    (
        "rnn",
        "dWh = cache.h_prev.T @ da  # B5",
        "dWh = da.T @ cache.h_prev  # B5",
        ["dWh: it is the transpose of the numeric gradient", "B5 of npgated's rnn_step_backward"],
    ),
    (
        "attention",
        "ds = masked_softmax_backward(da[:, None, :], a)  # B3",
        "ds = -masked_softmax_backward(da[:, None, :], a)  # B3",
        ["dh: the sign is flipped", "dhs: per time step: t=0"],
    ),
]


@pytest.mark.parametrize(
    "cell, old, new, expected", PLANTED, ids=[f"{p[0]}-{k}" for k, p in enumerate(PLANTED)]
)
def test_a_planted_step_mistake_is_named(tmp_path, cell, old, new, expected):
    source = exercises.solution_source(cell)
    assert source.count(old) == 1, f"{old!r} no longer in npgated's code: update the test"
    path = write(tmp_path, cell, source.replace(old, new))
    ok, text = exercises.check_exercise(path, parts=("part 1",))
    assert not ok
    for part in expected:
        assert part in text, f"{part!r} missing from:\n{text}"


# ---------------------------------------------------------------------------------------
# Planted mistakes: part 2 (a student's BPTT loop)
# ---------------------------------------------------------------------------------------
STUDENT_LOOP = """\
N, T, H = dhs.shape
dxs = np.empty((N, T, Wx.shape[0]))
dh_next, dc_next = np.zeros((N, H)), np.zeros((N, H))
dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)
for t in reversed(range(T)):
    dh = dhs[:, t] + dh_next  # T1
    dx, dh_next, dc_next, dWx_t, dWh_t, db_t = lstm_step_backward(dh, dc_next, caches[t], Wx, Wh)
    dxs[:, t] = dx  # T3
    dWx += dWx_t  # T4
    dWh += dWh_t  # T4
    db += db_t  # T4
self.grads[0] += dWx  # T5
self.grads[1] += dWh
self.grads[2] += db
self.dh, self.dc = dh_next, dc_next
return dxs
"""


@pytest.mark.parametrize(
    "old, new, expected",
    [
        (None, None, ["Part 2\n  against central differences: ok", "every part is right"]),
        (
            "dWh += dWh_t  # T4",
            "dWh = dWh_t  # T4",
            [
                "dWh holds the contribution of step t=0 only "
                "(the last step the backward loop visits): "
                "it is overwritten at every step (dWh = ...) instead of accumulated over time "
                "(dWh += ...)"
            ],
        ),
        (
            "dh = dhs[:, t] + dh_next  # T1",
            "dh = dhs[:, t]  # T1",
            [
                "first wrong step counted from the end: t=2",
                "dxs is right at the last step t=3 and wrong at every earlier one",
            ],
        ),
        (
            "self.dh, self.dc = dh_next, dc_next",
            "self.dh, self.dc = dh, dc_next",
            ["dh0   WRONG", "dxs   ok"],
        ),
    ],
)
def test_a_planted_bptt_mistake_is_named(tmp_path, old, new, expected):
    loop = STUDENT_LOOP if old is None else STUDENT_LOOP.replace(old, new)
    assert old is None or loop != STUDENT_LOOP
    source = base.fill(
        exercises.solution_source("lstm").replace(
            "return time_backward(self, dhs, lstm_step_backward, n_state=2)",
            "# >>> your code: begin (part 2)\nraise NotImplementedError\n# <<< your code: end",
        ),
        "part 2",
        loop,
    )
    ok, text = exercises.check_exercise(write(tmp_path, "lstm", source))
    assert ok == (old is None), text
    for part in expected:
        assert part in text, f"{part!r} missing from:\n{text}"


def test_exercise_command_errors(tmp_path, capsys):
    assert cli.main(["exercise", "check"]) == 2
    assert cli.main(["exercise", "lstm"]) == 2
    assert cli.main(["exercise", "check", str(tmp_path / "nope.py")]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "--out" in err
    # the student's code raises: the traceback is shown, exit 1
    source = exercises.solution_source("rnn").replace(
        "da = dh_next * (1 - cache.h_next**2)", "da = dh_next * (1 - cache.h_nxt**2)"
    )
    assert cli.main(["exercise", "check", str(write(tmp_path, "rnn", source))]) == 1
    out = capsys.readouterr().out
    assert "raised AttributeError" in out and "Traceback" in out and "h_nxt" in out
