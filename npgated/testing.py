"""Gradient checks for anyone's backward pass, with the mistake located and named.

Import it in your own pytest::

    from npgated.testing import assert_gradients, assert_step_backward

    def test_my_lstm():
        assert_gradients(MyLSTM(Wx, Wh, b), (x, h_prev, c_prev), gates="ifgo")

Both functions compare your analytic gradients with central differences (float64,
h = 1e-5) of the scalar ``L = sum_k <out_k, dout_k>`` for fixed random upstream gradients
``dout_k`` (the vector-Jacobian check of :mod:`npgated.gradcheck`, whose helpers do the
numerics), by the norm-wise relative error ``||a - n|| / max(1e-12, ||a|| + ||n||)``. When
an array disagrees they raise an ``AssertionError`` whose message says

* which array (``dWh``), and within an array packed in gate blocks along its last axis
  (``gates="ifgo"``: npgated's and PyTorch's LSTM; ``"fgio"``: the book's LSTM; ``"rzn"``:
  npgated's and PyTorch's GRU) which block: ``dWh, block f (forget gate): rel. error
  9.7e-01; blocks i, g, o: 3.1e-10``;
* for a sequence input (N, T, ...) the error at every time step and the first wrong step
  counted from the end, where a backpropagation-through-time mistake shows first;
* the worst element (index, analytic, numeric);
* what the numbers say, in words: exactly 2x or 0.5x the numeric gradient (counted twice /
  a factor missing), the sign flipped, the transpose, all zeros, one gate block holding
  another's numbers (the gate order), correct at the last step only (the carried dh / dc
  not added), and for a Time layer's weights, the contribution of one step only (``dW =``
  instead of ``dW +=`` inside the time loop).

The two entry points
--------------------
:func:`assert_gradients` checks a layer object with the book's protocol:

* ``layer.params`` / ``layer.grads``: lists of arrays, same order and shapes, ``params``
  holding the very arrays that ``forward`` reads (the check perturbs them in place);
* ``layer.forward(*inputs)`` returns one array or a tuple of them;
* ``layer.backward(*douts)`` (one upstream gradient per output) returns the gradients of the
  float inputs, one array or a tuple in the order of ``inputs``, and writes the parameter
  gradients into ``grads`` -- accumulating (``+=``, npgated) or overwriting (``[...] =``,
  the book): the check zeroes ``grads`` before each backward, so both are right.

It works for single-step layers (``forward(x, h_prev, c_prev) -> (h_next, c_next)``) and Time
layers (``forward(xs) -> hs``). A Time layer with the book's state protocol (``stateful``,
``set_state(h[, c])``, ``reset_state()``, ``h``/``c`` after forward, ``dh``/``dc`` after
backward) can also have its initial state checked (``state={"h": h0, "c": c0}``), and lets
the check split a weight's gradient into the contribution of each step.

:func:`assert_step_backward` checks a pair of CS231n-style step functions (see its
docstring for the calling convention; npgated's ``lstm_step_forward``/``_backward``,
``gru_step_*`` and ``rnn_step_*`` follow it).

Non-raising variants (:func:`gradient_report`, :func:`step_backward_report`) return the
:class:`GradientReport`; ``npgated gradcheck my_layers.py:MyLSTM`` prints it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from npgated import backend
from npgated.gradcheck import (
    compare,
    numerical_gradient,
    rel_error,
    upstream,
    vjp_loss,
)

__all__ = [
    "GATE_NAMES",
    "ProtocolError",
    "ArrayFinding",
    "GradientReport",
    "assert_gradients",
    "assert_step_backward",
    "gradient_report",
    "step_backward_report",
    "step_equations",
]

GATE_NAMES = {
    "i": "input gate",
    "f": "forget gate",
    "g": "candidate cell",
    "o": "output gate",
    "r": "reset gate",
    "z": "update gate",
    "n": "candidate state",
    "h": "candidate state",
}
"""What each letter of a ``gates`` string names (LSTM i, f, g, o; GRU r, z, n; Keras'
GRU calls its candidate h)."""


class ProtocolError(TypeError):
    """The object or functions given do not follow the protocol the check needs (no
    ``params``, float32 parameters, a backward that takes no cache, ...): a usage problem,
    not a wrong gradient."""


MATCH = 1e-5
"""Relative error under which two arrays count as equal for a diagnosis ("exactly 2x",
"the transpose"): loose enough for finite-difference noise (~1e-9), tight enough that a
coincidence is out of the question on random data."""


# ---------------------------------------------------------------------------------------
# Equations quoted from npgated's docstrings (the hints name the tag to look at)
# ---------------------------------------------------------------------------------------
_TAG_LINE = re.compile(r"^(\s*)([FB]\d+)\s+(.*\S)\s*$")


def step_equations(func, prefix: str = "B") -> dict:
    """``{tag: text}`` of the equation lines tagged ``B1``, ``B2``, ... (or ``F1``, ... with
    ``prefix="F"``) in a function's docstring, continuation lines joined.

    npgated writes the forward (F) and backward (B) equations of each step function in its
    Notes; the exercises and the hints of this module quote them from there, so that they
    never drift from the code.
    """
    equations: dict = {}
    current, indent = None, 0
    for line in (inspect.getdoc(func) or "").splitlines():
        m = _TAG_LINE.match(line)
        if m and m.group(2).startswith(prefix):
            current, indent = m.group(2), len(m.group(1))
            equations[current] = m.group(3)
        elif m or not line.strip():
            current = None
        elif current is not None and len(line) - len(line.lstrip()) > indent:
            equations[current] += "\n" + line.strip()
        else:
            current = None
    return {tag: re.sub(r" {3,}", "   ", text) for tag, text in equations.items()}


def _cell_of(letters: str) -> str | None:
    if set(letters) == set("ifgo"):
        return "lstm"
    if set(letters) in (set("rzn"), set("rzh")):
        return "gru"
    return None


def _step_function(cell: str):
    """The npgated function whose Notes hold the cell's B equations."""
    if cell == "lstm":
        from npgated.layers.lstm import lstm_step_forward  # noqa: PLC0415

        return lstm_step_forward, "lstm_step_backward"
    if cell == "gru":
        from npgated.layers.gru import gru_step_backward  # noqa: PLC0415

        return gru_step_backward, "gru_step_backward"
    from npgated.layers.rnn import rnn_step_forward  # noqa: PLC0415

    return rnn_step_forward, "rnn_step_backward"


# block letter -> the B tags of npgated's step backward that compute its gradient
_BLOCK_TAGS = {
    "lstm": {"i": ("B2",), "f": ("B3",), "g": ("B4",), "o": ("B5",)},
    "gru": {"r": ("B3", "B4"), "z": ("B1", "B4"), "n": ("B1", "B2"), "h": ("B1", "B2")},
}
# gradient name -> the B tags of npgated's step backward that compute it (single steps)
_ARRAY_TAGS = {
    "lstm": {
        "dx": ("B8",),
        "dh_prev": ("B7",),
        "dc_prev": ("B6",),
        "dWx": ("B9",),
        "dWh": ("B10",),
        "db": ("B11",),
    },
    "gru": {
        "dx": ("B5",),
        "dh_prev": ("B1", "B6", "B9"),
        "dWx": ("B5",),
        "dWh": ("B7",),
        "db": ("B8",),
    },
    "rnn": {"dx": ("B3",), "dh_prev": ("B2",), "dWx": ("B4",), "dWh": ("B5",), "db": ("B6",)},
}


def _quote(cell: str | None, tags) -> str:
    """``B3 of npgated's lstm_step_backward: da_f = dc * c_prev * f * (1 - f)``."""
    if cell is None or not tags:
        return ""
    func, fname = _step_function(cell)
    eqs = step_equations(func)
    text = "; ".join(f"{t}: {eqs[t]}".replace("\n", " / ") for t in tags if t in eqs)
    return f" -- {', '.join(tags)} of npgated's {fname} ({text})" if text else ""


# ---------------------------------------------------------------------------------------
# Gate layouts
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateLayout:
    """Gate blocks of width H along an array's last axis, named by ``letters``."""

    letters: str
    H: int

    def blocks(self):
        return [(g, slice(k * self.H, (k + 1) * self.H)) for k, g in enumerate(self.letters)]

    def label(self, letter: str) -> str:
        name = GATE_NAMES.get(letter)
        return f"{letter} ({name})" if name else letter


def _check_gates(gates):
    if gates is None:
        return None
    if not isinstance(gates, str) or len(set(gates)) != len(gates):
        raise ValueError(
            f"gates must be a string of distinct gate letters such as 'ifgo' (npgated, "
            f"PyTorch), 'fgio' (the book's LSTM), 'rzn' (GRU) or '' (none), got {gates!r}"
        )
    return gates


def known_gates(obj) -> str | None:
    """The gate order of npgated's own layers and step functions (None: unknown)."""
    from npgated.layers import gru, lstm, rnn  # noqa: PLC0415

    if obj in (lstm.lstm_step_forward,) or isinstance(obj, (lstm.LSTM, lstm.TimeLSTM)):
        return "ifgo"
    if obj in (gru.gru_step_forward,) or isinstance(obj, (gru.GRU, gru.TimeGRU)):
        return "rzn"
    if obj in (rnn.rnn_step_forward,) or isinstance(obj, (rnn.RNN, rnn.TimeRNN)):
        return ""
    return None


def _hidden_size(params: dict, k: int) -> int | None:
    """H from the parameters when they hold k gate blocks: a (H, kH) matrix (Wh) first."""
    for p in params.values():
        if p.ndim == 2 and p.shape[1] == k * p.shape[0]:
            return p.shape[0]
    return None


def _layouts(gates, params: dict):
    """``{name: GateLayout}`` for the parameters packed in gate blocks, plus a note when the
    blocks exist but are not named (``gates`` not given)."""
    if gates == "":
        return {}, None
    ks = [len(gates)] if gates else [4, 3]
    for k in ks:
        H = _hidden_size(params, k)
        if H is None and gates:
            widths = {p.shape[-1] for p in params.values() if p.ndim and p.shape[-1] % k == 0}
            H = min(widths) // k if widths else None
        if H:
            letters = gates or "".join(str(j + 1) for j in range(k))
            layout = GateLayout(letters, H)
            packed = {n: layout for n, p in params.items() if p.ndim and p.shape[-1] == k * H}
            note = None
            if not gates:
                note = (
                    f"the parameters look packed in {k} gate blocks of H = {H}; pass "
                    "gates='ifgo' / 'fgio' (LSTM) or 'rzn' (GRU) to have them named"
                )
            return packed, note
    return {}, None


def _is_param_name(name: str) -> bool:
    """Step-function arguments that are parameters: W*, U*, V*, b*, bias*."""
    return bool(re.match(r"^(W|U|V|b$|b_|bias)", name))


# ---------------------------------------------------------------------------------------
# What the numbers say
# ---------------------------------------------------------------------------------------
_CAUSES = {
    "zero": "it is all zeros: never written or never returned -- computed into a local "
    "name but not added to grads (grads[k][...] += ...), or the line is missing",
    "numeric-zero": "the numeric gradient is zero but yours is not: perturbing this array "
    "does not change the output -- does forward read the very array in "
    "params (not a copy made in __init__)?",
    "sign": "the sign is flipped: a minus sign too many or missing (1 - z for z, "
    "h_prev - n for n - h_prev, a subtraction for an addition)",
    "twice": "exactly 2x the numeric gradient: counted twice -- the same term added in two "
    "places (inside the loop and again after it, or two += for one gradient)",
    "half": "exactly 0.5x the numeric gradient: a factor 2 missing, or one of two equal "
    "contributions left out",
    "batch-div": "exactly 1/N x (N = batch size): divided by the batch size; a layer's "
    "backward sums over the batch (the loss layer averages, once)",
    "batch-mul": "exactly N x (N = batch size): multiplied by the batch size, or a sum over "
    "the batch taken twice",
    "transposed": "it is the transpose of the numeric gradient: the product is in the wrong "
    "order (x.T @ da vs da.T @ x) or Wh is used where Wh.T belongs",
    "transposed-reshaped": "it holds the numbers of the transpose, reshaped: a product in "
    "the wrong order (da.T @ x instead of x.T @ da) reshaped to fit",
}


def _relation(a, n, N=None):
    """(key, factor) when ``a`` is a simple function of ``n`` (see ``_CAUSES``), else None."""
    na, nn = float(np.linalg.norm(a)), float(np.linalg.norm(n))
    if na == 0.0 and nn == 0.0:
        return None
    if na <= 1e-10 * nn:
        return "zero", 0.0
    if nn <= 1e-10 * na:
        return "numeric-zero", None
    s = float((a * n).sum() / (n * n).sum())
    if rel_error(a, s * n) < MATCH:
        for target, key in ((-1.0, "sign"), (2.0, "twice"), (0.5, "half")):
            if abs(s - target) < 1e-3 * abs(target):
                return key, s
        if N and N > 1:
            for target, key in ((1.0 / N, "batch-div"), (float(N), "batch-mul")):
                if abs(s - target) < 1e-3 * target:
                    return key, s
        if abs(s - 1.0) > 1e-3:
            return "scale", s
    if a.ndim == 2 and a.shape[0] == a.shape[1] and rel_error(a, n.T) < MATCH:
        return "transposed", None
    if a.ndim == 2 and a.shape[0] != a.shape[1] and rel_error(a, n.T.reshape(a.shape)) < MATCH:
        return "transposed-reshaped", None
    return None


def _relation_text(rel) -> str:
    key, s = rel
    if key == "scale":
        return (
            f"exactly {s:.4g}x the numeric gradient everywhere: a constant factor too "
            "many or missing"
        )
    return _CAUSES[key]


def _fmt(x: float) -> str:
    return f"{x:.1e}"


# ---------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------
@dataclass
class ArrayFinding:
    """The verdict on one gradient.

    Attributes
    ----------
    name : str
        The gradient's name, ``"d" + the array's`` (``"dWh"``, ``"dxs"``, ``"dh0"``).
    error : float
        Norm-wise relative error against the numeric (or reference) gradient.
    ok : bool
        ``error <= tol``.
    worst : str
        The worst element: index, analytic, expected.
    details : list of str
        Localization: gate blocks, time steps.
    causes : list of str
        The likely causes the numbers point to, in words.
    """

    name: str
    error: float
    ok: bool
    worst: str = ""
    details: list = field(default_factory=list)
    causes: list = field(default_factory=list)
    blocks_wrong: str = ""
    flags: set = field(default_factory=set)
    n_blocks: int = 0


@dataclass
class GradientReport:
    """Everything one check found; ``str(report)`` is the message of the AssertionError."""

    title: str
    findings: list
    tol: float
    against: str = "central differences (float64, h = 1e-05)"
    notes: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    causes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(f.ok for f in self.findings)

    @property
    def wrong(self) -> list:
        return [f for f in self.findings if not f.ok]

    def _head(self) -> list:
        wrong = self.wrong
        if self.ok:
            count = (
                f"all {len(self.findings)} gradients agree"
                if len(self.findings) != 1
                else "the one gradient agrees"
            )
            head = f"{self.title}: {count} with {self.against}"
        elif wrong:
            head = (
                f"{self.title}: {len(wrong)} of {len(self.findings)} gradients disagree with "
                f"{self.against}, tolerance {self.tol:.0e}"
            )
        else:
            head = f"{self.title}: the check could not run to the end"
        lines = [head]
        width = max([len(f.name) for f in self.findings] + [4])
        for f in self.findings:
            status = "ok" if f.ok else "WRONG"
            lines.append(f"  {f.name:<{width}s}  {status:<5s}  rel. error {_fmt(f.error)}")
        lines.extend(f"  problem: {problem}" for problem in self.problems)
        lines.extend(f"likely cause (every array): {c}" for c in self.causes)
        return lines

    def brief(self) -> str:
        """The head line and the table, plus each wrong array's per-time-step lines."""
        lines = self._head()
        for f in self.wrong:
            lines.extend(
                f"  {f.name}: {d}"
                for d in f.details
                if d.startswith(("per time step", "first wrong step"))
            )
            if f.flags & {"carry", "overwrite"}:
                lines.extend(f"  {f.name}: likely cause: {c}" for c in f.causes)
        return "\n".join(lines)

    def __str__(self) -> str:
        lines = self._head()
        for f in self.wrong:
            lines.append("")
            lines.append(f"{f.name}: rel. error {_fmt(f.error)}")
            lines.extend(f"  {d}" for d in f.details)
            if f.worst:
                lines.append(f"  worst element {f.worst}")
            lines.extend(f"  likely cause: {c}" for c in f.causes)
        if self.notes:
            lines.append("")
            lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Analysis of one array
# ---------------------------------------------------------------------------------------
@dataclass
class _Spec:
    name: str  # the array's name: "Wh", "xs", "h0"
    analytic: np.ndarray
    expected: np.ndarray
    layout: GateLayout | None = None
    time_axis: int | None = None
    role: str = "input"  # "param", "input" or "state"
    N: int | None = None
    expected_label: str = "numeric"


def _grad_name(name: str) -> str:
    return "d" + name


def _block_errors(spec: _Spec):
    a, n = spec.analytic, spec.expected
    return [(g, rel_error(a[..., sl], n[..., sl])) for g, sl in spec.layout.blocks()]


def _analyze(spec: _Spec, tol: float, cell: str | None, probes=None, step_level=False):
    """An :class:`ArrayFinding` for one array, localized and diagnosed when it fails."""
    g = _grad_name(spec.name)
    a, n = spec.analytic, spec.expected
    result = compare(g, a, n)
    finding = ArrayFinding(g, result.error, result.error <= tol)
    if finding.ok:
        return finding
    where = list(result.worst_index)
    worst = f"{list(where)}"
    extra = []
    if spec.layout is not None and where:
        extra.append(f"block {spec.layout.letters[where[-1] // spec.layout.H]}")
    if spec.time_axis is not None and len(where) > spec.time_axis:
        extra.append(f"t={where[spec.time_axis]}")
    finding.worst = (
        f"{worst}{' (' + ', '.join(extra) + ')' if extra else ''}: analytic "
        f"{result.analytic:+.6e}, {spec.expected_label} {result.numeric:+.6e}"
    )

    whole = _relation(a, n, spec.N)
    if whole is not None:
        tags = _ARRAY_TAGS.get(cell or "", {}).get(g) if step_level else None
        finding.causes.append(f"{g}: {_relation_text(whole)}{_quote(cell, tags)}")
        finding.flags.add("whole")

    if spec.layout is not None:
        _localize_blocks(spec, finding, tol, cell, whole)
    if spec.time_axis is not None:
        _localize_steps(spec, finding, tol, probes)
    if spec.role == "param" and probes is not None and probes.has_time:
        _per_step_contributions(spec, finding, probes)
    return finding


def _finish(report: GradientReport, cell, step_level):
    """Hints from the pattern over all arrays, then a fallback for what has no cause yet."""
    if report.ok:
        return
    _cross_array_hints(report, cell, step_level)
    time_cause = next((f for f in report.wrong if "carry" in f.flags), None)
    da_cause = next((f for f in report.wrong if f.flags & {"da", "swapped"}), None)
    for f in report.wrong:
        if f.causes or "upstream" in f.flags:
            continue
        if time_cause is not None:
            f.causes.append(
                f"follows from what is carried between steps (see {time_cause.name} above)"
            )
            continue
        if da_cause is not None and f.name in ("dx", "dxs", "dh_prev", "dh0", "dc0"):
            if "swapped" in da_cause.flags:
                what = "gate blocks of da in the wrong order"
            else:
                what = "wrong " + ", ".join(f"da_{gl}" for gl in da_cause.blocks_wrong)
            f.causes.append(
                f"follows from the {what} (see {da_cause.name}): {f.name} is computed from da"
            )
            continue
        tags = _ARRAY_TAGS.get(cell or "", {}).get(f.name) if step_level else None
        if tags:
            f.causes.append(
                f"no simple pattern (factor, sign, transpose, one block): check "
                f"it line by line{_quote(cell, tags)}"
            )
        else:
            f.causes.append(
                "no simple pattern (factor, sign, transpose, one block, one "
                "step): compare the code with the equations line by line"
            )


def _localize_blocks(spec: _Spec, finding: ArrayFinding, tol, cell, whole):
    layout = spec.layout
    a, n = spec.analytic, spec.expected
    errors = _block_errors(spec)
    bad = [(gl, e) for gl, e in errors if e > tol]
    good = [(gl, e) for gl, e in errors if e <= tol]
    parts = [f"block {layout.label(gl)}: rel. error {_fmt(e)}" for gl, e in bad]
    if good:
        letters = ", ".join(gl for gl, _ in good)
        word = "block" if len(good) == 1 else "blocks"
        parts.append(f"{word} {letters}: {_fmt(max(e for _, e in good))}")
    finding.details.append(f"{finding.name}, " + "; ".join(parts))
    # a 2-row bias (GRU reset_after: input side b[0], hidden side b[1]): which row
    if a.ndim == 2 and a.shape[0] == 2 and spec.name.startswith("b"):
        labels = (
            ("input side", "hidden side")
            if _cell_of(layout.letters) == "gru"
            else ("row 0", "row 1")
        )
        for gl, _ in bad:
            sl = dict(layout.blocks())[gl]
            rows = [
                f"{spec.name}[{r}] ({labels[r]}) {_fmt(rel_error(a[r, sl], n[r, sl]))}"
                for r in range(2)
            ]
            finding.details.append(f"block {gl} by row: " + ", ".join(rows))
    finding.blocks_wrong = "".join(gl for gl, _ in bad)
    finding.n_blocks = len(errors)
    if not bad or (whole is not None and len(bad) == len(errors)):
        return
    blocks = dict(layout.blocks())
    swaps = {}
    for gl, _ in bad:
        sl = blocks[gl]
        rel = _relation(a[..., sl], n[..., sl], spec.N)
        if rel is not None:
            finding.causes.append(f"block {layout.label(gl)}: {_relation_text(rel)}")
            continue
        swapped = [
            q for q, slq in blocks.items() if q != gl and rel_error(a[..., sl], n[..., slq]) < MATCH
        ]
        if swapped:
            finding.flags.add("swapped")
            swaps[gl] = swapped[0]
    _swap_causes(finding, swaps, layout)


def _swap_causes(finding, swaps, layout):
    order = "(this check expects '%s'; npgated and PyTorch pack i, f, g, o, the book f, g, i, o)"
    for gl, q in swaps.items():
        if swaps.get(q) == gl:
            if layout.letters.index(gl) < layout.letters.index(q):
                finding.causes.append(
                    f"blocks {gl} and {q} are swapped, each holds the other's numbers: the gate "
                    f"order is mixed up {order % layout.letters}"
                )
        else:
            finding.causes.append(
                f"block {gl} holds the numbers of block {q}: the gate order is mixed up "
                f"{order % layout.letters}, or a slice [k*H:(k+1)*H] is off"
            )


def _step_errors(spec: _Spec):
    ax = spec.time_axis
    a, n = np.moveaxis(spec.analytic, ax, 0), np.moveaxis(spec.expected, ax, 0)
    return [rel_error(a[t], n[t]) for t in range(a.shape[0])], a, n


def _localize_steps(spec: _Spec, finding: ArrayFinding, tol, probes):
    errors, a, n = _step_errors(spec)
    T = len(errors)
    wrong = [t for t in range(T) if errors[t] > tol]
    cells = ", ".join(f"t={t} {_fmt(e)}" for t, e in enumerate(errors))
    finding.details.append(f"per time step: {cells}")
    if not wrong:
        return
    first = max(wrong)
    finding.details.append(f"first wrong step counted from the end: t={first} (of t=0..{T - 1})")
    carry = probes is not None and probes.carries
    if T > 1 and wrong == list(range(T - 1)) and carry:
        direct = probes.direct_part(spec.name) if probes is not None else None
        exact = (
            direct is not None
            and rel_error(a[:-1], np.moveaxis(direct, spec.time_axis, 0)[:-1]) < MATCH
        )
        finding.flags.add("carry")
        if exact:
            finding.causes.append(
                f"{finding.name} holds only the direct part from dhs[:, t] at every step: "
                "nothing is carried back from step t+1 -- dh_next (and for an LSTM dc_next) "
                "is never added to the step's upstream gradient (dh = dhs[:, t] + dh_next)"
            )
        else:
            finding.causes.append(
                f"{finding.name} is right at the last step t={T - 1} and wrong at every "
                "earlier one: what is carried back from step t+1 into step t is missing or "
                "wrong -- dh_next not added to dhs[:, t], or for an LSTM dc_next not added "
                "(B1: dc = dc_next + ...) or not carried (dc_prev = dc * f)"
            )
    elif T > 1 and wrong == [0]:
        if float(np.linalg.norm(a[0])) == 0.0:
            finding.causes.append(
                f"{finding.name} is zero at t=0 and right elsewhere: the backward loop never "
                "reaches t=0 (range(T - 1, 0, -1) stops at 1)"
            )
        else:
            finding.causes.append(
                f"{finding.name} is wrong only at t=0, the last step the backward loop visits: "
                "that step reads the wrong previous state (h_prev/c_prev of t=0 is the initial "
                "state, hs[:, t - 1] wraps around to the last one) or the loop ends early"
            )
    elif T > 1 and wrong == [T - 1]:
        finding.causes.append(
            f"{finding.name} is wrong only at the last step t={T - 1}, the first one the "
            "backward loop visits: check what the loop starts from (dh_next, dc_next = 0) "
            "and how the last step's upstream gradient dhs[:, -1] is read"
        )


def _per_step_contributions(spec: _Spec, finding: ArrayFinding, probes):
    """For a Time layer's weight: fit analytic = sum_t w_t * (contribution of step t)."""
    fit = probes.step_weights(spec.name, spec.analytic, spec.expected)
    if fit is None:
        return
    w = np.round(fit, 3) + 0.0  # + 0.0: no "-0"
    T = len(w)
    text = ", ".join(f"t={t}: {x:g}" for t, x in enumerate(w))
    finding.details.append(
        f"{finding.name} as a sum of the per-step contributions of the "
        f"numeric gradient: weights {text} (all 1 when right)"
    )
    ones = np.isclose(w, 1.0)
    zeros = np.isclose(w, 0.0)
    if zeros.sum() == T - 1 and ones.sum() == 1:
        s = int(np.flatnonzero(ones)[0])
        end = (
            "the last step the backward loop visits"
            if s == 0
            else "the first step the backward loop visits"
            if s == T - 1
            else f"step {s}"
        )
        finding.flags.add("overwrite")
        finding.causes.append(
            f"{finding.name} holds the contribution of step t={s} only ({end}): it is "
            f"overwritten at every step ({finding.name} = ...) instead of accumulated over "
            f"time ({finding.name} += ...)"
        )
    elif (ones | zeros).all() and zeros.any():
        missing = ", ".join(str(t) for t in np.flatnonzero(zeros))
        finding.causes.append(
            f"the contribution of step(s) t={missing} to {finding.name} is "
            "missing: the loop skips them"
        )
    elif np.allclose(w, w[0]):
        return  # the same factor at every step: the whole-array relation says it
    elif (ones | np.isclose(w, 2.0)).all():
        twice = ", ".join(str(t) for t in np.flatnonzero(np.isclose(w, 2.0)))
        finding.causes.append(f"the contribution of step(s) t={twice} is counted twice")


# ---------------------------------------------------------------------------------------
# Probes of a Time layer (per-step numbers the whole-array check cannot give)
# ---------------------------------------------------------------------------------------
class _TimeProbes:
    """Extra finite differences on a layer with a time axis, computed only on demand."""

    def __init__(self, run, T, carries, chainable, h, seed):
        self.run, self.T, self.carries, self.chainable = run, T, carries, chainable
        self.h, self.seed = h, seed
        self.has_time = T is not None and T > 1 and chainable

    def direct_part(self, name):
        """The gradient w.r.t. the sequence input ``name`` when step t's input affects only
        step t's output: upstream masked to step t, only ``xs[:, t]`` perturbed."""
        run = self.run
        x = run.arrays[name]
        out = np.zeros(x.shape)
        for t in range(self.T):
            douts = run.mask_douts(t, t + 1)
            view = x[:, t]
            out[:, t] = numerical_gradient(lambda d=douts: vjp_loss(run.outputs(), d), view, self.h)
        return out

    def step_weights(self, name, analytic, numeric):
        """Least-squares weights w_t with analytic ~ sum_t w_t c_t, where c_t is the
        numeric contribution of the parameter's use at step t (the weight perturbed at that
        step only), seen along random directions. None when the fit does not hold."""
        run = self.run
        p = run.arrays[name]
        T = self.T
        rng = np.random.default_rng(self.seed + 31)
        k = min(p.size, 2 * T + 4)
        U = rng.standard_normal((k, *p.shape))
        U /= np.sqrt((U * U).sum(axis=tuple(range(1, U.ndim)), keepdims=True))
        P = np.zeros((T, k))
        for j in range(k):
            for t in range(T):
                P[t, j] = run.chained_directional(t, p, U[j], self.h)
        whole = np.array([(numeric * U[j]).sum() for j in range(k)])
        if not np.allclose(P.sum(axis=0), whole, rtol=1e-5, atol=1e-7 * np.abs(whole).max()):
            return None  # the layer cannot be run piece by piece: no per-step statement
        y = np.array([(analytic * U[j]).sum() for j in range(k)])
        w, *_ = np.linalg.lstsq(P.T, y, rcond=None)
        if np.linalg.norm(P.T @ w - y) > 1e-5 * max(np.linalg.norm(y), 1e-12):
            return None
        return w


class _LayerRun:
    """Runs a layer's forward the same way for every evaluation and holds the arrays."""

    def __init__(self, layer, inputs, state, before_forward):
        self.layer, self.inputs = layer, list(inputs)
        self.state, self.before = state, before_forward
        self.arrays = {}  # name -> the array that the check perturbs
        self.douts = ()
        self.time_outputs = ()

    def prepare(self):
        layer = self.layer
        if self.state:
            layer.set_state(**self.state)
        elif hasattr(layer, "reset_state"):
            layer.reset_state()
        if self.before is not None:
            self.before()

    def outputs(self, inputs=None):
        self.prepare()
        return _as_tuple(self.layer.forward(*(self.inputs if inputs is None else inputs)))

    def loss(self):
        return vjp_loss(self.outputs(), self.douts)

    def mask_douts(self, start, stop):
        """The upstream gradients with every time step outside [start, stop) zeroed."""
        masked = []
        for k, d in enumerate(self.douts):
            if d is not None and k in self.time_outputs:
                m = np.zeros_like(d)
                m[:, start:stop] = d[:, start:stop]
                d = m
            masked.append(d)
        return tuple(masked)

    def _segment_inputs(self, start, stop):
        T = self.T
        return [x[:, start:stop] if _has_time(x, T) else x for x in self.inputs]

    def chained_directional(self, t, p, u, h):
        """d/de of the loss when the parameter ``p`` is moved by e*u at step t only: the
        sequence runs in three stateful pieces [0, t), [t], (t, T)."""
        vals = []
        for sign in (1.0, -1.0):
            vals.append(self._chained(t, p, sign * h * u))
        return (vals[0] - vals[1]) / (2 * h)

    def _chained(self, t, p, delta):
        layer = self.layer
        T = self.T
        stateful = getattr(layer, "stateful", None)
        self.prepare()
        total = 0.0
        try:
            layer.stateful = True
            for start, stop in ((0, t), (t, t + 1), (t + 1, T)):
                if stop <= start:
                    continue
                if start == t:
                    p += backend.to_device(delta, like=p, dtype=p.dtype)
                try:
                    outs = _as_tuple(layer.forward(*self._segment_inputs(start, stop)))
                finally:
                    if start == t:
                        p -= backend.to_device(delta, like=p, dtype=p.dtype)
                douts = []
                for k, d in enumerate(self.douts):
                    douts.append(
                        d[:, start:stop] if (d is not None and k in self.time_outputs) else None
                    )
                total += vjp_loss(outs, tuple(douts))
        finally:
            layer.stateful = stateful
        return total


def _as_tuple(x):
    if isinstance(x, list):
        return tuple(x)
    return x if isinstance(x, tuple) else (x,)


def _is_float_array(x) -> bool:
    return hasattr(x, "dtype") and hasattr(x, "shape") and np.dtype(x.dtype).kind == "f"


def _has_time(x, T) -> bool:
    return T is not None and hasattr(x, "shape") and len(x.shape) >= 2 and x.shape[1] == T


def _host(x):
    return backend.to_cpu(x).astype(np.float64)


def _arg_names(func, count: int) -> list:
    """Names of the first ``count`` positional parameters of ``func``."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = []
    for p in params:
        if p.kind == p.VAR_POSITIONAL:
            break
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
    names = names[:count]
    return names + [f"inputs[{k}]" for k in range(len(names), count)]


def _param_names(layer) -> list:
    """Names for ``layer.params``: ``param_names``, else attribute names holding the very
    arrays, else the constructor's required arguments when as many, else ``params[k]``."""
    params = layer.params
    names = getattr(layer, "param_names", None)
    if names is not None and len(names) == len(params):
        return list(names)
    found = []
    for p in params:
        attrs = [k for k, v in vars(layer).items() if v is p and not k.startswith("_")]
        found.append(attrs[0] if attrs else None)
    if all(found) and len(set(found)) == len(found):
        return found
    try:
        sig = list(inspect.signature(type(layer).__init__).parameters.values())[1:]
        required = [
            p.name
            for p in sig
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        required = []
    if len(required) == len(params):
        return required
    return [f"params[{k}]" for k in range(len(params))]


def _float64_copy(x, name):
    if not _is_float_array(x):
        return x
    return backend.to_device(backend.to_cpu(x).astype(np.float64), like=x, dtype=np.float64)


# ---------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------
def gradient_report(
    layer,
    inputs,
    *,
    gates: str | None = None,
    state: dict | None = None,
    wrt=None,
    before_forward: Callable[[], None] | None = None,
    tol: float = 1e-7,
    h: float = 1e-5,
    seed: int = 0,
    title: str | None = None,
    diagnose: bool = True,
) -> GradientReport:
    """The report of :func:`assert_gradients` without raising (same arguments)."""
    inputs = _as_tuple(inputs)
    gates = _check_gates(gates)
    if gates is None:
        gates = known_gates(layer)
    for attr in ("params", "grads", "forward", "backward"):
        if not hasattr(layer, attr):
            raise ProtocolError(
                f"{type(layer).__name__} has no {attr!r}: assert_gradients needs the book's "
                "protocol (params, grads, forward, backward); for step functions use "
                "assert_step_backward"
            )
    if len(layer.params) != len(layer.grads):
        raise ProtocolError(
            f"{type(layer).__name__} has {len(layer.params)} params but "
            f"{len(layer.grads)} grads: they must be parallel lists"
        )
    pnames = _param_names(layer)
    for name, p in zip(pnames, layer.params):
        if not _is_float_array(p) or np.dtype(p.dtype) != np.float64:
            raise ProtocolError(
                f"{name} is {getattr(p, 'dtype', type(p).__name__)}: build the layer with "
                "float64 parameters for a gradient check (float32 round-off, ~1e-7, hides "
                "the mistakes the check looks for)"
            )
    title = title or f"gradient check of {type(layer).__name__}"
    inputs = [_float64_copy(x, k) for k, x in enumerate(inputs)]
    in_names = _arg_names(layer.forward, len(inputs))
    state = {k: _float64_copy(v, k) for k, v in (state or {}).items()}
    T = next((x.shape[1] for x in inputs if _is_float_array(x) and x.ndim >= 3), None)
    N = next((x.shape[0] for x in inputs if hasattr(x, "shape") and len(x.shape) >= 2), None)

    run = _LayerRun(layer, inputs, state, before_forward)
    run.T = T
    saved_stateful = getattr(layer, "stateful", None)
    if state and saved_stateful is not None:
        layer.stateful = True  # the book's layers read set_state only when stateful
    try:
        return _layer_report(
            layer,
            run,
            inputs,
            in_names,
            pnames,
            state,
            gates,
            wrt,
            T,
            N,
            tol,
            h,
            seed,
            title,
            diagnose,
        )
    finally:
        if saved_stateful is not None:
            layer.stateful = saved_stateful


def _layer_report(
    layer, run, inputs, in_names, pnames, state, gates, wrt, T, N, tol, h, seed, title, diagnose
):
    report = GradientReport(title, [], tol)
    outs = run.outputs()
    run.douts = upstream(outs, seed)
    run.time_outputs = tuple(
        k for k, o in enumerate(outs) if _is_float_array(o) and o.ndim >= 3 and o.shape[1] == T
    )
    for k, o in enumerate(outs):
        if _is_float_array(o) and np.dtype(o.dtype) != np.float64:
            report.problems.append(
                f"forward's output {k} is {o.dtype} although every input and parameter is "
                "float64: an array allocated with a fixed dtype (the book's dtype='f') -- "
                "allocate with xs.dtype"
            )
    if report.problems:
        return report

    float_inputs = [(nm, x) for nm, x in zip(in_names, inputs) if _is_float_array(x)]
    state_names = {"h": "h0", "c": "c0"}
    candidates = [nm for nm, _ in float_inputs] + pnames + [state_names.get(k, k) for k in state]
    names = candidates if wrt is None else ([wrt] if isinstance(wrt, str) else list(wrt))
    unknown = [nm for nm in names if nm not in candidates]
    if unknown:
        raise ValueError(f"cannot check {unknown}: choose among {candidates}")

    arrays = dict(float_inputs)
    arrays.update(zip(pnames, layer.params))
    arrays.update({state_names.get(k, k): v for k, v in state.items()})
    run.arrays = arrays

    def analytic():
        for g in layer.grads:
            g[...] = 0
        outs = run.outputs()
        douts = [d for d, o in zip(run.douts, outs) if d is not None]
        returned = layer.backward(*douts)
        got = {}
        returned = () if returned is None else _as_tuple(returned)
        if len(returned) != len(float_inputs):
            want = ", ".join(_grad_name(nm) for nm, _ in float_inputs) or "nothing"
            report.problems.append(
                f"backward returned {len(returned)} array(s); it must return the gradient of "
                f"each float input of forward, in order: {want}"
            )
        for (nm, _), d in zip(float_inputs, returned):
            got[nm] = d
        for nm, g in zip(pnames, layer.grads):
            got[nm] = g
        for k in state:
            got[state_names.get(k, k)] = getattr(layer, "d" + k, None)
        return {nm: (None if v is None else _host(v)) for nm, v in got.items()}

    grads = analytic()
    params_by_name = dict(zip(pnames, layer.params))
    layouts, note = _layouts(gates, params_by_name)
    if note:
        report.notes.append(note)
    cell = _cell_of(gates) if gates else ("rnn" if gates == "" and "Wh" in pnames else None)
    carries = T is not None and bool(run.time_outputs)
    chainable = (
        carries
        and hasattr(layer, "set_state")
        and hasattr(layer, "stateful")
        and run.before is None
    )
    probes = _TimeProbes(run, T, carries, chainable, h, seed) if T is not None else None
    step_level = T is None

    for nm in names:
        x = arrays[nm]
        a = grads.get(nm)
        if a is None:
            report.findings.append(
                ArrayFinding(
                    _grad_name(nm),
                    float("inf"),
                    False,
                    causes=[
                        f"no gradient for {nm}: "
                        + (
                            f"layer.d{nm[0]} is not set by backward"
                            if nm in ("h0", "c0")
                            else "backward did not return it"
                        )
                    ],
                )
            )
            continue
        if a.shape != tuple(x.shape):
            report.findings.append(_shape_finding(nm, a.shape, tuple(x.shape)))
            continue
        numeric = numerical_gradient(run.loss, x, h)
        role = "param" if nm in params_by_name else ("state" if nm in ("h0", "c0") else "input")
        spec = _Spec(
            nm,
            a,
            numeric,
            layouts.get(nm) if role == "param" else None,
            1 if (role == "input" and x.ndim >= 3 and T is not None) else None,
            role,
            N,
        )
        if diagnose:
            report.findings.append(
                _analyze(spec, tol, cell, probes if role != "state" else None, step_level)
            )
        else:
            err = rel_error(a, numeric)
            report.findings.append(ArrayFinding(_grad_name(nm), err, err <= tol))
    if diagnose and not report.ok:
        checked = [
            (nm, arrays[nm], grads[nm])
            for nm in names
            if grads.get(nm) is not None and grads[nm].shape == tuple(arrays[nm].shape)
        ]
        if len(checked) == len(names):
            _ignored_upstream(
                report,
                checked,
                lambda d: vjp_loss(run.outputs(), d),
                run.douts,
                _arg_names(layer.backward, len(run.douts)),
                h,
            )
        _finish(report, cell, step_level)
        if T is not None and T > 1 and not chainable:
            _short_sequence_probe(report, layer, inputs, state, run, T, gates, wrt, tol, h, seed)
    return report


def _ignored_upstream(report, checked, loss_with, douts, dout_names, h):
    """Does the analytic gradient equal the numeric one with the upstream gradient of one
    output set to zero? Then backward never uses that upstream gradient (dc_next ignored)."""
    floats = [k for k, d in enumerate(douts) if d is not None]
    if report.ok or len(floats) < 2:
        return
    for k in floats:
        masked = tuple(None if j == k else d for j, d in enumerate(douts))
        matches = []
        for _, x, a in checked:
            numeric = numerical_gradient(lambda m=masked: loss_with(m), x, h)
            matches.append(rel_error(a, numeric) < 1e-6)
        if all(matches):
            dname = dout_names[k] if k < len(dout_names) else f"the gradient of output {k}"
            cause = (
                f"your backward never uses {dname}: every gradient equals the numeric one "
                f"with {dname} = 0 -- it must be added where the output it belongs to is "
                "computed" + (" (B1: dc = dc_next + ...)" if dname == "dc_next" else "")
            )
            report.causes.append(cause)
            for f in report.wrong:
                f.flags.add("upstream")
            return


def _shape_finding(name, got, want):
    g = _grad_name(name)
    if len(got) == 2 and got == want[::-1]:
        cause = f"{g} has shape {got} but {name} is {want}: transposed (x.T @ da, not da.T @ x)"
    else:
        cause = f"{g} has shape {got} but {name} is {want}: a gradient has its array's shape"
    return ArrayFinding(g, float("inf"), False, causes=[cause])


def _cross_array_hints(report: GradientReport, cell, step_level):
    """What the pattern over arrays says (LSTM/GRU/RNN parameter names Wx, Wh, b)."""
    status = {f.name: f.ok for f in report.findings}
    if not {"dWx", "dWh", "db"} <= set(status):
        return
    by_name = {f.name: f for f in report.findings}
    if any(f.flags & {"carry", "overwrite", "upstream", "swapped"} for f in report.wrong):
        return  # a time-loop mistake: every block inherits it, the blocks say nothing
    # gate blocks: a block wrong in db means its pre-activation gradient da_<gate> is wrong
    # (every weight gradient of that block inherits it); right in db: the product is wrong
    db, dWx = by_name["db"], by_name["dWx"]

    def da_wrong(gl):  # wrong in db and in dWx (both are sums of da_<gate>'s rows)
        return (gl in db.blocks_wrong or (not db.ok and not db.blocks_wrong)) and (
            gl in dWx.blocks_wrong or (not dWx.ok and not dWx.blocks_wrong)
        )

    for g in ("db", "dWx", "dWh"):
        f = by_name[g]
        if f.blocks_wrong and len(f.blocks_wrong) == f.n_blocks:
            continue  # every block wrong: the blocks say nothing
        for gl in f.blocks_wrong:
            label = GATE_NAMES.get(gl, "")
            label = f"{gl} ({label})" if label else gl
            if g == "db" and not da_wrong(gl):
                rows = (
                    " -- see the rows above: for a GRU with reset_after, b[1]'s block n is "
                    "the hidden-side bias b_hn, whose gradient is dhn = da_n * r, not da_n"
                    if gl == "n" and db.n_blocks == 3
                    else ""
                )
                f.causes.append(
                    f"block {label}: dWx's block {gl} is right, so da_{gl} is: the "
                    f"mistake is in db's own sum over the batch{rows}"
                )
            elif da_wrong(gl):
                f.flags.add("da")
                if g == "db" or "db" not in [x.name for x in report.wrong]:
                    tags = _quote(cell, _BLOCK_TAGS.get(cell or "", {}).get(gl))
                    f.causes.append(
                        f"block {label}: the gradient of the gate's pre-activation, "
                        f"da_{gl}, is wrong (every weight gradient of the block "
                        f"inherits it){tags}"
                    )
                else:
                    f.causes.append(f"block {label}: da_{gl} is wrong (see db)")
            elif g != "db":
                f.causes.append(
                    f"block {label}: da_{gl} is right (db's block {gl} is), so the "
                    f"mistake is in {g}'s product for the block's columns"
                )
    if status["db"] and status["dWx"] and not status["dWh"] and "whole" not in by_name["dWh"].flags:
        tags = _quote(cell, _ARRAY_TAGS.get(cell or "", {}).get("dWh")) if step_level else ""
        by_name["dWh"].causes.append(
            "db and dWx are right, so da is: the mistake is in dWh's own product -- the state "
            f"it multiplies (h_prev, not h_next or c_prev) or the transpose{tags}"
        )
    if status["db"] and status["dWh"] and not status["dWx"] and "whole" not in by_name["dWx"].flags:
        tags = _quote(cell, _ARRAY_TAGS.get(cell or "", {}).get("dWx")) if step_level else ""
        by_name["dWx"].causes.append(
            f"db and dWh are right, so da is: the mistake is in dWx's own product (x.T @ da){tags}"
        )
    params_ok = status["db"] and status["dWx"] and status["dWh"]
    for g in ("dx", "dxs", "dh_prev", "dc_prev"):
        if params_ok and g in status and not status[g]:
            tags = _quote(cell, _ARRAY_TAGS.get(cell or "", {}).get(g)) if step_level else ""
            by_name[g].causes.append(
                f"every parameter gradient is right, so da is: the mistake is in how {g} is "
                f"formed from it{tags}"
            )


def _short_sequence_probe(report, layer, inputs, state, run, T, gates, wrt, tol, h, seed):
    """Without the state protocol: do the same arrays pass on the first step alone?"""
    if not any(f.name.startswith("dW") or f.name == "db" for f in report.wrong):
        return
    short = [x[:, :1] if _has_time(x, T) else x for x in inputs]
    try:
        probe = gradient_report(
            layer,
            tuple(short),
            gates=gates,
            state=state,
            wrt=wrt,
            before_forward=run.before,
            tol=tol,
            h=h,
            seed=seed,
            diagnose=False,
        )
    except Exception:  # noqa: BLE001 (a probe only: the main report stands)
        return
    if probe.ok:
        report.notes.append(
            "on the first step alone (T = 1) every gradient is right: the mistake is in how "
            "the steps are combined -- a weight gradient overwritten at each step (dW = ...) "
            "instead of accumulated (dW += ...), or the gradient carried from step t+1"
        )


def assert_gradients(
    layer,
    inputs,
    *,
    gates: str | None = None,
    state: dict | None = None,
    wrt=None,
    before_forward: Callable[[], None] | None = None,
    tol: float = 1e-7,
    h: float = 1e-5,
    seed: int = 0,
    title: str | None = None,
) -> GradientReport:
    """Check a layer's backward against central differences; raise with the mistake located.

    Parameters
    ----------
    layer : object with the book's protocol
        ``params`` and ``grads`` (parallel lists of float64 arrays; ``params`` the very arrays
        ``forward`` reads), ``forward(*inputs)`` returning one array or a tuple,
        ``backward(*douts)`` taking one upstream gradient per output and returning the
        gradients of the float inputs (one array or a tuple, in the order of ``inputs``).
        ``grads`` may be accumulated into or overwritten: they are zeroed before each
        backward. Your own class, npgated's, single-step or Time.
    inputs : array or tuple
        The positional arguments of ``forward``. Float arrays are checked (as float64
        copies); integer arrays (token ids) are passed as they are. A float input of shape
        (N, T, ...) is a sequence: its error is reported per time step.
    gates : str, optional
        How the gate blocks are packed along the parameters' last axis: ``"ifgo"``
        (npgated's and PyTorch's LSTM), ``"fgio"`` (the book's LSTM), ``"rzn"`` (npgated's
        and PyTorch's GRU, also with ``reset_after``'s (2, 3H) bias), ``""`` for none.
        Default: known for npgated's classes; for others the blocks are numbered.
    state : dict, optional
        ``{"h": h0}`` or ``{"h": h0, "c": c0}`` for a Time layer with the book's state
        protocol: ``set_state(**state)`` before every forward (with ``stateful`` on), and
        ``h0``/``c0`` are checked against ``layer.dh``/``layer.dc``. Without it a layer with
        ``reset_state`` is reset before every forward.
    wrt : str or list of str, optional
        Only these arrays (input names from ``forward``'s signature, parameter names, "h0",
        "c0"). Default: all.
    before_forward : callable, optional
        Called before every forward, e.g. to reseed a dropout layer's generator.
    tol : float
        Largest norm-wise relative error that passes (1e-7: single layers on tiny shapes).
    h : float
        Finite-difference step.
    seed : int
        Seed of the random upstream gradients.
    title : str, optional
        The report's first words (default: "gradient check of <class name>").

    Returns
    -------
    GradientReport
        When every gradient agrees (print it for the per-array errors).

    Raises
    ------
    AssertionError
        With the report: per array, per gate block, per time step, the worst element and
        the likely cause.
    """
    report = gradient_report(
        layer,
        inputs,
        gates=gates,
        state=state,
        wrt=wrt,
        before_forward=before_forward,
        tol=tol,
        h=h,
        seed=seed,
        title=title,
    )
    if not report.ok:
        raise AssertionError(str(report))
    return report


# ---------------------------------------------------------------------------------------
# Step functions
# ---------------------------------------------------------------------------------------
def _bind(func, inputs):
    """(names, values, call) for ``inputs`` given as a tuple (positional) or a dict."""
    if isinstance(inputs, dict):
        names = list(inputs)
        values = [inputs[k] for k in names]

        def call(vals):
            return func(**dict(zip(names, vals)))
    else:
        values = list(_as_tuple(inputs))
        names = _arg_names(func, len(values))

        def call(vals):
            return func(*vals)

    return names, values, call


def _backward_extras(backward_fn, n_douts, in_names, backward_inputs):
    """The names of the forward inputs passed to ``backward_fn`` after the cache."""
    if backward_inputs is not None:
        extras = list(backward_inputs)
    else:
        try:
            params = list(inspect.signature(backward_fn).parameters.values())
        except (TypeError, ValueError):
            params = []
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if any(p.kind == p.VAR_POSITIONAL for p in params) and len(positional) < n_douts + 1:
            raise ProtocolError(
                f"{getattr(backward_fn, '__name__', 'backward_fn')} takes *args: name the "
                "forward's arguments it takes after the cache with backward_inputs=(...) "
                "(e.g. ('Wx', 'Wh'); () for none)"
            )
        if len(positional) < n_douts + 1:
            raise ProtocolError(
                f"{getattr(backward_fn, '__name__', 'backward_fn')} takes "
                f"{len(positional)} positional arguments; it must take one upstream gradient "
                f"per output of forward_fn ({n_douts}), then the cache"
            )
        extras = [p.name for p in positional[n_douts + 1 :] if p.default is p.empty]
    unknown = [e for e in extras if e not in in_names]
    if unknown:
        raise ProtocolError(
            f"backward_fn takes {unknown} after the cache, which are not arguments of "
            f"forward_fn ({in_names}): name them like forward_fn's, or pass "
            "backward_inputs=(...) with the forward argument names to give it"
        )
    return extras


def step_backward_report(
    forward_fn,
    backward_fn,
    inputs,
    *,
    gates: str | None = None,
    wrt=None,
    backward_inputs=None,
    tol: float = 1e-7,
    h: float = 1e-5,
    seed: int = 0,
    title: str | None = None,
) -> GradientReport:
    """The report of :func:`assert_step_backward` without raising (same arguments)."""
    gates = _check_gates(gates)
    if gates is None:
        gates = known_gates(forward_fn)
    names, values, call = _bind(forward_fn, inputs)
    values = [_float64_copy(v, nm) for nm, v in zip(names, values)]
    fname = getattr(forward_fn, "__name__", "forward_fn")
    bname = getattr(backward_fn, "__name__", "backward_fn")
    title = title or f"gradient check of {bname}"
    report = GradientReport(title, [], tol)

    def forward(vals=None):
        result = call(values if vals is None else vals)
        if not isinstance(result, (tuple, list)) or len(result) < 2:
            raise ProtocolError(
                f"{fname} must return (outputs..., cache), got {type(result).__name__}"
            )
        return tuple(result[:-1]), result[-1]

    outs, cache = forward()
    for k, o in enumerate(outs):
        if _is_float_array(o) and np.dtype(o.dtype) != np.float64:
            report.problems.append(
                f"{fname}'s output {k} is {o.dtype} although its inputs are "
                "float64: a fixed dtype somewhere (dtype='f')"
            )
            return report
    douts = upstream(outs, seed)
    extras = _backward_extras(backward_fn, len(outs), names, backward_inputs)
    float_names = [nm for nm, v in zip(names, values) if _is_float_array(v)]
    if wrt is None:
        checked = float_names
    else:
        checked = [wrt] if isinstance(wrt, str) else list(wrt)
        bad = [nm for nm in checked if nm not in float_names]
        if bad:
            raise ValueError(f"cannot check {bad}: choose among {float_names}")

    def loss():
        return vjp_loss(forward()[0], douts)

    outs, cache = forward()
    by_name = dict(zip(names, values))
    returned = backward_fn(
        *[d for d in douts if d is not None], cache, *[by_name[e] for e in extras]
    )
    returned = () if returned is None else _as_tuple(returned)
    if len(returned) != len(checked):
        want = ", ".join(_grad_name(nm) for nm in checked)
        report.problems.append(
            f"{bname} returned {len(returned)} array(s); it must return one gradient per float "
            f"input of {fname}, in order: {want} ({len(checked)}; pass wrt=[...] to name "
            "them otherwise)"
        )
        return report
    params = {nm: by_name[nm] for nm in float_names if _is_param_name(nm)}
    layouts, note = _layouts(gates, params)
    if note:
        report.notes.append(note)
    cell = _cell_of(gates) if gates else ("rnn" if gates == "" and "Wh" in names else None)
    N = next(
        (
            v.shape[0]
            for nm, v in zip(names, values)
            if _is_float_array(v) and v.ndim >= 2 and not _is_param_name(nm)
        ),
        None,
    )
    analytic_of = {}
    for nm, d in zip(checked, returned):
        x = by_name[nm]
        if d is None:
            report.findings.append(
                ArrayFinding(
                    _grad_name(nm), float("inf"), False, causes=[f"{bname} returned None for it"]
                )
            )
            continue
        a = _host(d)
        if a.shape != tuple(x.shape):
            report.findings.append(_shape_finding(nm, a.shape, tuple(x.shape)))
            continue
        numeric = numerical_gradient(loss, x, h)
        role = "param" if nm in params else "input"
        spec = _Spec(nm, a, numeric, layouts.get(nm), None, role, N)
        report.findings.append(_analyze(spec, tol, cell, None, True))
        analytic_of[nm] = a
    if not report.ok and len(analytic_of) == len(checked):
        dout_names = _arg_names(backward_fn, len(outs))
        _ignored_upstream(
            report,
            [(nm, by_name[nm], analytic_of[nm]) for nm in checked],
            lambda d: vjp_loss(forward()[0], d),
            douts,
            dout_names,
            h,
        )
    _finish(report, cell, True)
    return report


def assert_step_backward(
    forward_fn,
    backward_fn,
    inputs,
    *,
    gates: str | None = None,
    wrt=None,
    backward_inputs=None,
    tol: float = 1e-7,
    h: float = 1e-5,
    seed: int = 0,
    title: str | None = None,
) -> GradientReport:
    """Check a pair of step functions against central differences; raise with the mistake
    located.

    What it expects (the CS231n shape of API, which npgated's ``lstm_step_forward`` /
    ``lstm_step_backward``, ``gru_step_*`` and ``rnn_step_*`` follow):

    * ``forward_fn(*inputs)`` (or ``forward_fn(**inputs)`` when ``inputs`` is a dict)
      returns ``(out_1, ..., out_k, cache)``: the outputs, then one cache object as the last
      element (``(h_next, c_next, cache)``; ``(h_next, cache)``);
    * ``backward_fn(dout_1, ..., dout_k, cache, *more)`` takes one upstream gradient per
      output, then the cache, then possibly more arguments of the forward -- npgated's pass
      the weights: ``lstm_step_backward(dh_next, dc_next, cache, Wx, Wh)``. Which ones is read
      from ``backward_fn``'s signature: its required arguments after the cache must be named
      like ``forward_fn``'s (or give ``backward_inputs=("Wx", "Wh")``);
    * it returns one gradient per float array argument of ``forward_fn``, in the same order
      (``dx, dh_prev, dc_prev, dWx, dWh, db``); arguments that are not float arrays
      (``reset_after=True``, ``mask=None``) have none. If it returns fewer, name the ones it
      returns with ``wrt=[...]``.

    Parameters
    ----------
    forward_fn, backward_fn : callables
        As above.
    inputs : tuple or dict
        The arguments of ``forward_fn`` (float arrays are checked as float64 copies).
    gates : str, optional
        Gate packing of the parameter arguments' last axis (``"ifgo"``, ``"fgio"``,
        ``"rzn"``, ``""``); known for npgated's step functions. Parameters are the
        arguments named ``W...``, ``U...``, ``V...``, ``b``, ``b_...``, ``bias...``.
    wrt : list of str, optional
        The argument names the returned gradients belong to (default: every float one).
    backward_inputs : tuple of str, optional
        The forward arguments ``backward_fn`` takes after the cache (default: read from its
        signature).
    tol, h, seed
        As in :func:`assert_gradients`.
    title : str, optional
        The report's first words (default: "gradient check of <backward_fn's name>").

    Returns
    -------
    GradientReport

    Raises
    ------
    AssertionError
        With the report (array, gate block, worst element, likely cause).
    """
    report = step_backward_report(
        forward_fn,
        backward_fn,
        inputs,
        gates=gates,
        wrt=wrt,
        backward_inputs=backward_inputs,
        tol=tol,
        h=h,
        seed=seed,
        title=title,
    )
    if not report.ok:
        raise AssertionError(str(report))
    return report


def compare_report(
    title: str, specs, *, against: str, tol: float = 1e-10, gates=None, step_level: bool = True
) -> GradientReport:
    """A report comparing analytic gradients with reference ones (not finite differences):
    ``specs`` is a list of ``(name, analytic, expected)`` host arrays; names of parameters
    packed in gate blocks (per ``gates``) are localized by block, (N, T, ...) arrays named
    ``xs`` by time step. Used by ``npgated exercise check`` against npgated's own code."""
    report = GradientReport(title, [], tol, against=against)
    params = {nm: np.asarray(e) for nm, _, e in specs if _is_param_name(nm)}
    layouts, _ = _layouts(gates, params) if gates is not None else ({}, None)
    cell = _cell_of(gates) if gates else None
    for nm, a, e in specs:
        a, e = _host(a), _host(e)
        if a.shape != e.shape:
            report.findings.append(_shape_finding(nm, a.shape, e.shape))
            continue
        spec = _Spec(
            nm,
            a,
            e,
            layouts.get(nm),
            1 if (a.ndim >= 3 and nm.endswith("s")) else None,
            "param" if nm in params else "input",
            expected_label="npgated's",
        )
        report.findings.append(_analyze(spec, tol, cell, None, step_level))
    _finish(report, cell, step_level)
    return report
