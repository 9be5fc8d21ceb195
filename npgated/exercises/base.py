"""What every exercise shares: the template's markers, filling them in, the BPTT loop, the check.

An exercise is a Python file a student completes. Its forward passes are complete; each
backward pass to write is a *region* between two marker lines::

    # >>> your code: begin (part 1)
    raise NotImplementedError("Part 1: write lstm_step_backward (B1..B11)")
    # <<< your code: end

with the equations to implement (quoted from npgated's own docstrings, so they never drift
from the code) in the comments above it. ``npgated exercise check FILE`` runs each part's
checks: against central differences (:mod:`npgated.testing`, localized and diagnosed) and
against npgated's own implementation on the same numbers.

The tests fill every region with npgated's own code to prove that a right answer passes:
:func:`fill` puts the body of npgated's function there (``lstm_step_backward``'s body for
part 1; free names such as ``backend`` imported from the module it comes from), and a Time
layer's BPTT loop is :func:`time_backward`, the loop the check also drives a student's step
functions with. No solution is stored anywhere.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BEGIN = "# >>> your code: begin"
END = "# <<< your code: end"
_BEGIN_LINE = re.compile(r"^(\s*)# >>> your code: begin \((part \d+[a-z]?)\)\s*$")


def todo(part: str, what: str, indent: int = 4) -> str:
    """The region a student replaces: markers around a ``raise NotImplementedError``."""
    pad = " " * indent
    return f"{pad}{BEGIN} ({part})\n{pad}raise NotImplementedError({what!r})\n{pad}{END}\n"


def equation_comments(equations: dict, indent: int = 4) -> str:
    """``#   B1  dc = ...`` lines, continuation lines aligned under their text."""
    pad = " " * indent
    lines = []
    for tag, text in equations.items():
        first, *rest = text.split("\n")
        lines.append(f"{pad}#   {tag:<4s}{first}")
        lines.extend(f"{pad}#       {line}" for line in rest)
    return "\n".join(lines) + "\n"


def regions(source: str) -> dict:
    """``{part: (first line, last line)}`` of the marker regions (0-based, inclusive)."""
    found, lines = {}, source.splitlines()
    start = None
    for k, line in enumerate(lines):
        m = _BEGIN_LINE.match(line)
        if m:
            start = (k, m.group(2))
        elif line.strip() == END and start is not None:
            found[start[1]] = (start[0], k)
            start = None
    return found


def function_body(func) -> str:
    """The statements of ``func`` after its docstring, dedented to column 0."""
    source = textwrap.dedent(inspect.getsource(func))
    tree = ast.parse(source)
    node = tree.body[0]
    body = node.body
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(getattr(body[0], "value", None), ast.Constant)
    ):
        body = body[1:]
    lines = source.splitlines()
    start = body[0].lineno - 1
    end = node.end_lineno
    return textwrap.dedent("\n".join(lines[start:end])) + "\n"


def _defined_names(tree) -> set:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def free_names(body: str, template: str) -> list:
    """Names ``body`` reads that neither it, the template module nor builtins define."""
    used = {
        n.id
        for n in ast.walk(ast.parse(body))
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    }
    tree = ast.parse(template)
    module_level = set()
    for node in tree.body:  # what the file defines for everyone (not a function's locals)
        module_level |= (
            _defined_names(ast.Module(body=[node], type_ignores=[]))
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef))
            else {node.name}
        )
    args = {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    known = _defined_names(ast.parse(body)) | module_level | args
    return sorted(used - known - set(dir(builtins)))


def fill(source: str, part: str, body: str, module: str | None = None) -> str:
    """``source`` with the region of ``part`` replaced by ``body`` (indented to the region),
    plus an import from ``module`` of the names the body needs and the file lacks."""
    found = regions(source)
    if part not in found:
        raise ValueError(f"no region for {part!r}; the file has {sorted(found)}")
    first, last = found[part]
    lines = source.splitlines()
    indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
    needed = free_names(body, source) if module else []
    if needed:
        body = f"from {module} import {', '.join(needed)}\n" + body
    new = [indent + line if line.strip() else "" for line in body.rstrip("\n").split("\n")]
    return "\n".join(lines[:first] + new + lines[last + 1 :]) + "\n"


# ---------------------------------------------------------------------------------------
# Backpropagation through time over step functions
# ---------------------------------------------------------------------------------------
def time_backward(layer, dhs, step_backward, n_state: int):
    """BPTT over the caches of a Time layer built on step functions (the book's loop).

    Parameters
    ----------
    layer : object
        With ``params`` (Wx, Wh, b first), ``grads`` (added into), ``caches`` (the T step
        caches of the last forward).
    dhs : (N, T, H) array
        Gradient of the loss w.r.t. the layer's outputs h_1..h_T.
    step_backward : callable
        ``step_backward(dh, [dc,] cache, Wx, Wh) -> (dx, dh_prev, [dc_prev,] dWx, dWh, db)``
        (npgated's ``rnn_step_backward``, ``lstm_step_backward``, ``gru_step_backward``).
    n_state : int
        1 (RNN, GRU: h) or 2 (LSTM: h, c).

    Returns
    -------
    dxs : (N, T, D) array
        Also adds dWx, dWh, db into ``layer.grads`` and sets ``layer.dh`` (and ``layer.dc``),
        the gradients w.r.t. the initial state.

    Notes
    -----
    The loop runs t = T-1, ..., 0 from dh_next = dc_next = 0 (nothing arrives from beyond
    the window)::

        T1  dh = dhs[:, t] + dh_next        h_t feeds the loss and step t+1
        T2  dx, dh_next, [dc_next,] dWx_t, dWh_t, db_t =
                step_backward(dh, [dc_next,] cache_t, Wx, Wh)
        T3  dxs[:, t] = dx
        T4  dWx += dWx_t; dWh += dWh_t; db += db_t      one weight used at every step: sum
        T5  after the loop: dh0 = dh_next, dc0 = dc_next
    """
    Wx, Wh = layer.params[0], layer.params[1]
    N, T, H = dhs.shape
    carry = [np.zeros((N, H), dtype=dhs.dtype) for _ in range(n_state)]
    sums = [np.zeros_like(p) for p in layer.params]
    dxs = None
    for t in reversed(range(T)):
        dh = dhs[:, t] + carry[0]  # T1
        out = step_backward(dh, *carry[1:], layer.caches[t], Wx, Wh)  # T2
        dx, carry, dparams = out[0], list(out[1 : 1 + n_state]), out[1 + n_state :]
        if dxs is None:
            dxs = np.empty((N, T, dx.shape[1]), dtype=dx.dtype)
        dxs[:, t] = dx  # T3
        for total, d in zip(sums, dparams):
            total += d  # T4
    for grad, total in zip(layer.grads, sums):
        grad += total
    layer.dh = carry[0]  # T5
    if n_state == 2:
        layer.dc = carry[1]  # T5
    return dxs


class StepsThroughTime:
    """A Time layer (the book's protocol) made of a pair of step functions and
    :func:`time_backward`: how ``npgated exercise check`` runs a student's step functions
    over T steps, so that a step mistake shows per time step.

    Parameters
    ----------
    step_forward : callable
        ``step_forward(x, h_prev, [c_prev,] Wx, Wh, b, **kwargs) -> (h_next, [c_next,] cache)``.
    step_backward : callable
        See :func:`time_backward`.
    params : (Wx, Wh, b)
    n_state : int
        1 or 2 (with a memory cell c).
    forward_kwargs : dict, optional
        More keyword arguments of ``step_forward`` (``reset_after=True``).
    """

    param_names = ("Wx", "Wh", "b")

    def __init__(self, step_forward, step_backward, params, n_state, forward_kwargs=None):
        self.step_forward, self.step_backward = step_forward, step_backward
        self.params = list(params)
        self.grads = [np.zeros_like(p) for p in self.params]
        self.n_state = n_state
        self.kwargs = dict(forward_kwargs or {})
        self.stateful = False
        self.h = self.c = self.dh = self.dc = None
        self.caches = []

    def set_state(self, h, c=None):
        self.h, self.c = h, c

    def reset_state(self):
        self.h = self.c = None

    def forward(self, xs):
        N, T, _ = xs.shape
        H = self.params[1].shape[0]
        state = [self.h, self.c][: self.n_state]
        state = [
            s if (self.stateful and s is not None) else np.zeros((N, H), dtype=xs.dtype)
            for s in state
        ]
        hs = np.empty((N, T, H), dtype=xs.dtype)
        self.caches = []
        for t in range(T):
            *state, cache = self.step_forward(xs[:, t], *state, *self.params, **self.kwargs)
            hs[:, t] = state[0]
            self.caches.append(cache)
        self.h = state[0]
        self.c = state[1] if self.n_state == 2 else None
        return hs

    def backward(self, dhs):
        return time_backward(self, dhs, self.step_backward, self.n_state)


# ---------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------
class NotWritten(Exception):
    """A part's region still raises NotImplementedError."""


@dataclass
class Outcome:
    """One sub-check of one part: its label, and the report or a sentence."""

    part: str
    label: str
    ok: bool
    text: str
    summary: str = ""
    brief: str = ""


def run_report(label_part, label, make_report):
    """Run one sub-check; a NotImplementedError raised by the student's region becomes
    :class:`NotWritten`."""
    try:
        report = make_report()
    except NotImplementedError as exc:
        raise NotWritten(str(exc)) from exc
    worst = max((f.error for f in report.findings), default=0.0)
    summary = (
        f"ok ({len(report.findings)} gradients, worst rel. error {worst:.0e})"
        if report.ok
        else "WRONG"
    )
    return Outcome(label_part, label, report.ok, str(report), summary, report.brief())


def run_items(part: str, items) -> list:
    """Run ``(label, make_report)`` sub-checks in order; stop at one not written yet or one
    whose code raised (the traceback becomes its text)."""
    import traceback  # noqa: PLC0415

    out = []
    for name, make in items:
        try:
            out.append(run_report(part, name, make))
        except NotWritten as exc:
            out.append(Outcome(part, name, False, f"not written yet: {exc}", "not written yet"))
            break
        except Exception as exc:  # noqa: BLE001 (the student's code raised: show where)
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            out.append(
                Outcome(
                    part,
                    name,
                    False,
                    f"{name}: your code raised\n{text}",
                    f"raised {type(exc).__name__}: {exc}",
                )
            )
            break
    return out


def random_arrays(seed: int, *shapes):
    """float64 arrays of the given shapes, standard normal * 0.5, from one seeded generator."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) * 0.5 for s in shapes]


def exercise_path(path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give the exercise file, e.g. {path / 'lstm.py'}")
    return path
