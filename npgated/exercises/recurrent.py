"""The recurrent exercises (RNN, LSTM, GRU): a step backward (part 1) and a Time layer's BPTT
(part 2), written by the student, checked against finite differences and npgated's code.

Each cell module (:mod:`.rnn`, :mod:`.lstm`, :mod:`.gru`) gives a :class:`RecurrentExercise`
the cell's own text -- the cache and the complete step forward -- and this module writes the
rest of the file around it: the part 1 region with the B equations quoted from npgated's
docstring, the Time layer with its complete forward and the part 2 region, and the pytest
file.
"""

from __future__ import annotations

import importlib
import textwrap
from dataclasses import dataclass, field

from npgated import testing
from npgated.exercises import base

SIZES = {"N": 3, "T": 4, "D": 5, "H": 6}


@dataclass
class RecurrentExercise:
    """What one recurrent cell's exercise needs.

    Attributes
    ----------
    cell : str
        "rnn", "lstm" or "gru" (the file is ``<cell>.py``).
    title : str
        The cell's name in words.
    gates : str
        The gate order of the packed parameters ("" for the RNN).
    n_state : int
        1 (h) or 2 (h, c).
    module : str
        npgated's module with the reference step functions and Time layer.
    step_forward, step_backward, time_class : str
        Their names (the same in the exercise file and in ``module``).
    equations_from : str
        The function of ``module`` whose docstring lists the B equations.
    cell_source : str
        The cell's part of the template: the cache NamedTuple and the complete step forward.
    backward_signature : str
        ``def lstm_step_backward(dh_next, dc_next, cache, Wx, Wh):`` plus its docstring.
    variants : list of dict
        Keyword arguments of the step forward and the Time layer to check each with (the
        GRU's ``reset_after``); ``[{}]`` for one.
    """

    cell: str
    title: str
    gates: str
    n_state: int
    module: str
    step_forward: str
    step_backward: str
    time_class: str
    equations_from: str
    cell_source: str
    backward_signature: str
    notes: str = ""
    variants: list = field(default_factory=lambda: [{}])

    # -- the reference ---------------------------------------------------------------------
    def reference(self):
        mod = importlib.import_module(self.module)
        return (
            getattr(mod, self.step_forward),
            getattr(mod, self.step_backward),
            getattr(mod, self.time_class),
        )

    def equations(self, prefix: str = "B") -> dict:
        mod = importlib.import_module(self.module)
        return testing.step_equations(getattr(mod, self.equations_from), prefix)

    @property
    def k(self) -> int:
        return max(len(self.gates), 1)

    def required_names(self) -> list:
        return [self.step_forward, self.step_backward, self.time_class]

    def solution(self) -> str:
        """The template with both regions filled from npgated's own code: part 1 with the
        body of npgated's step backward, part 2 with :func:`base.time_backward`."""
        _, ref_bwd, _ = self.reference()
        source = base.fill(self.template(), "part 1", base.function_body(ref_bwd), self.module)
        loop = f"return time_backward(self, dhs, {self.step_backward}, n_state={self.n_state})\n"
        return base.fill(source, "part 2", loop, "npgated.exercises.base")

    # -- the files ---------------------------------------------------------------------------
    def template(self) -> str:
        """The exercise file, both regions still to write."""
        eqs = self.equations()
        tags = f"{min(eqs, key=_tag_key)}..{max(eqs, key=_tag_key)}"
        step_bwd = (
            f"{self.backward_signature}"
            f"    # The equations, from npgated's {self.equations_from} (Notes):\n"
            f"{base.equation_comments(eqs)}"
            + (f"    #\n{_comment(self.notes)}" if self.notes else "")
            + base.todo("part 1", f"Part 1: write {self.step_backward} ({tags})")
        )
        return "".join(
            [
                self._header(tags),
                "\n\nfrom typing import NamedTuple\n\nimport numpy as np\n\n",
                f'EXERCISE = "{self.cell}"\n\n\n',
                _SIGMOID,
                "\n\n",
                textwrap.dedent(self.cell_source).strip("\n"),
                "\n\n\n",
                step_bwd,
                "\n\n",
                self._time_class(),
            ]
        )

    def _header(self, tags) -> str:
        state = "h, c" if self.n_state == 2 else "h"
        order = (
            f"the {self.k} gate blocks of Wx (D, {self.k}H), Wh (H, {self.k}H) and b are "
            f"packed in the order {', '.join(self.gates)}"
            if self.gates
            else "Wx (D, H), Wh (H, H), b (H,)"
        )
        return textwrap.dedent(f'''\
            """Exercise: the {self.title}'s backward pass by hand (`npgated exercise {self.cell}`).

            Part 1  {self.step_backward}: the gradients of one time step ({tags}).
            Part 2  {self.time_class}.backward: backpropagation through time over T steps.

            The forward passes are complete. Write the code between the lines
            "# >>> your code: begin (part k)" and "# <<< your code: end", then check it:

                npgated exercise check {self.cell}.py    # what is wrong where; exit 0 once right
                python -m pytest test_{self.cell}.py

            The check compares your gradients with central differences of the forward pass
            (float64) and with npgated's own {self.step_backward} / {self.time_class} on the
            same numbers; a wrong one is reported with the array, the gate block, the time step
            and the likely cause.

            @@CONVENTIONS@@
            """''').replace(
            "@@CONVENTIONS@@",
            textwrap.fill(
                f"Conventions (npgated's): N batch, D input size, H hidden size, T time steps, "
                f"state {state}; {order}. Everything runs in the dtype of the data (the checks "
                "use float64).",
                92,
            ),
        )

    def _time_class(self) -> str:
        c = self.n_state == 2
        extra = ", ".join(f"{k}={v!r}" for k, v in self._time_kwargs_doc().items())
        ctor = f"def __init__(self, Wx, Wh, b, stateful=False{', ' + extra if extra else ''}):"
        kw_attrs = "".join(f"        self.{k} = {k}\n" for k in self._time_kwargs_doc())
        kw_call = "".join(f", {k}=self.{k}" for k in self._time_kwargs_doc())
        state_args = "h, c" if c else "h"
        hc = "``h``, ``c``" if c else "``h``"
        dhc = "``dh``, ``dc``" if c else "``dh``"
        carry_doc = "dh_next = dc_next = 0" if c else "dh_next = 0"
        step_call = (
            f"dx, dh_next, dc_next, dWx_t, dWh_t, db_t = {self.step_backward}(dh, "
            "dc_next, caches[t], Wx, Wh)"
            if c
            else f"dx, dh_next, dWx_t, dWh_t, db_t = {self.step_backward}(dh, caches[t], Wx, Wh)"
        )
        after = "self.dh = dh_next; self.dc = dc_next" if c else "self.dh = dh_next"
        text = f'''\
class {self.time_class}:
    """The {self.title} over T time steps, built on the two step functions above.

    The book's protocol: ``params`` and ``grads`` (parallel lists), ``forward(xs) -> hs``,
    ``backward(dhs) -> dxs``; ``stateful``, {hc} (the state after the last forward),
    ``set_state``, ``reset_state``, and after backward {dhc}: the gradient(s) w.r.t. the
    initial state.
    """

    {ctor}
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.stateful = stateful
{kw_attrs}        self.h = self.c = None
        self.dh = self.dc = None
        self.caches = []

    def set_state(self, h, c=None):
        self.h, self.c = h, c

    def reset_state(self):
        self.h = self.c = None

    def forward(self, xs):
        """xs (N, T, D) -> hs (N, T, H): the hidden states h_1..h_T."""
        Wx, Wh, b = self.params
        N, T, D = xs.shape
        H = Wh.shape[0]
        if not self.stateful or self.h is None:
            self.h = np.zeros((N, H), dtype=xs.dtype)
'''
        if c:
            text += """\
        if not self.stateful or self.c is None:
            self.c = np.zeros((N, H), dtype=xs.dtype)
"""
        text += f'''\
        hs = np.empty((N, T, H), dtype=xs.dtype)
        self.caches = []
        {state_args} = {"self.h, self.c" if c else "self.h"}
        for t in range(T):
            {state_args}, cache = {self.step_forward}(xs[:, t], {state_args}, Wx, Wh, b{kw_call})
            hs[:, t] = h
            self.caches.append(cache)
        self.h{", self.c" if c else ""} = {state_args}
        return hs

    def backward(self, dhs):
        """Part 2: backpropagation through time.

        Parameters
        ----------
        dhs : (N, T, H) array
            Gradient of the loss w.r.t. the outputs h_1..h_T.

        Returns
        -------
        dxs : (N, T, D) array
            Also adds dWx, dWh, db into ``self.grads`` (``+=``: the check sets them to zero
            before each backward) and sets {dhc}, the gradient(s) w.r.t. the initial
            state.
        """
        # The loop runs t = T-1, ..., 0 with {carry_doc} at the start
        # (nothing flows in from beyond the window):
        #   T1  dh = dhs[:, t] + dh_next        h_t feeds the loss and step t+1
        #   T2  {step_call.replace(" = ", " =" + chr(10) + "        #         ", 1)}
        #   T3  dxs[:, t] = dx
        #   T4  dWx += dWx_t;  dWh += dWh_t;  db += db_t   the same weights at every step
        #   T5  after the loop: add dWx, dWh, db into self.grads;
        #       {after}
        caches = self.caches
        Wx, Wh, b = self.params
{base.todo("part 2", f"Part 2: write {self.time_class}.backward (T1..T5)", indent=8)}'''
        return text

    def _time_kwargs_doc(self) -> dict:
        keys = {}
        for variant in self.variants:
            for k in variant:
                keys[k] = False
        return keys

    def test_template(self) -> str:
        """The pytest file written beside the exercise."""
        N, T, D, H = (SIZES[s] for s in "NTDH")
        k = self.k
        c = self.n_state == 2
        step_shapes = ["(N, D)", "(N, H)"] + (["(N, H)"] if c else [])
        step_names = ["x", "h_prev"] + (["c_prev"] if c else [])
        kH = f"{k} * H" if k > 1 else "H"
        params = f"(D, {kH}), (H, {kH}), bias_shape(options)"
        state = '{"h": h0, "c": c0}' if c else '{"h": h0}'
        state_names = "h0, c0" if c else "h0"
        state_shapes = "(N, H), (N, H)" if c else "(N, H)"
        gates = f'"{self.gates}"'
        step_kwargs = ", ".join(f"{n}={n}" for n in step_names)
        variants = self._variant_params()
        return textwrap.dedent(f'''\
            """Tests for your {self.cell}.py (written by `npgated exercise {self.cell}`).

                python -m pytest test_{self.cell}.py

            The first two use npgated.testing as you would in your own tests: a wrong gradient
            fails with the array, the gate block, the time step and the likely cause in the
            message. The last compares your numbers with npgated's own {self.step_backward}
            and {self.time_class}.
            """

            from pathlib import Path

            import numpy as np
            import pytest

            from npgated.exercises import compare_with_npgated
            from npgated.testing import assert_gradients, assert_step_backward
            from npgated.usercode import load_module

            HERE = Path(__file__).resolve().parent
            exercise = load_module(HERE / "{self.cell}.py")
            N, T, D, H = {N}, {T}, {D}, {H}


            def arrays(seed, *shapes):
                rng = np.random.default_rng(seed)
                return [rng.standard_normal(shape) * 0.5 for shape in shapes]


            def bias_shape(options):
                return (2, {kH}) if options.get("reset_after") else ({kH},)


            @pytest.mark.parametrize("options", {variants})
            def test_part1_step_backward(options):
                {", ".join(step_names)}, Wx, Wh, b = arrays(
                    0, {", ".join(step_shapes)}, {params})
                assert_step_backward(exercise.{self.step_forward}, exercise.{self.step_backward},
                                     dict({step_kwargs}, Wx=Wx, Wh=Wh, b=b, **options),
                                     gates={gates})


            @pytest.mark.parametrize("options", {variants})
            def test_part2_time_backward(options):
                xs, {state_names}, Wx, Wh, b = arrays(
                    1, (N, T, D), {state_shapes}, {params})
                layer = exercise.{self.time_class}(Wx, Wh, b, **options)
                assert_gradients(layer, (xs,), gates={gates}, state={state})


            @pytest.mark.parametrize("part", ["part 1", "part 2"])
            def test_same_numbers_as_npgated(part):
                ok, report = compare_with_npgated(HERE / "{self.cell}.py", part)
                assert ok, report
            ''')

    def _variant_params(self) -> str:
        def one(variant):
            return "{" + ", ".join(f'"{k}": {v!r}' for k, v in variant.items()) + "}"

        return "[" + ", ".join(one(v) for v in self.variants) + "]"

    # -- the check -----------------------------------------------------------------------------
    def shapes(self, reset_after: bool = False):
        N, T, D, H = (SIZES[s] for s in "NTDH")
        k = self.k
        b = (2, k * H) if reset_after else (k * H,)
        return {
            "Wx": (D, k * H),
            "Wh": (H, k * H),
            "b": b,
            "x": (N, D),
            "h": (N, H),
            "xs": (N, T, D),
        }

    def outcomes(self, module, parts=("part 1", "part 2")):
        """Run the checks of ``parts`` on the student's ``module``; a list of Outcomes."""
        results = []
        for variant in self.variants:
            label = (
                " (" + ", ".join(f"{k}={v}" for k, v in variant.items()) + ")" if variant else ""
            )
            results += self._variant_outcomes(module, variant, label, parts)
        return results

    def _variant_outcomes(self, module, variant, label, parts):
        ref_fwd, ref_bwd, ref_time = self.reference()
        fwd = getattr(module, self.step_forward)
        bwd = getattr(module, self.step_backward)
        time_cls = getattr(module, self.time_class)
        sh = self.shapes(bool(variant.get("reset_after")))
        c = self.n_state == 2
        x, h_prev, c_prev, Wx, Wh, b = base.random_arrays(
            0, sh["x"], sh["h"], sh["h"], sh["Wx"], sh["Wh"], sh["b"]
        )
        step_in = dict(
            x=x, h_prev=h_prev, **({"c_prev": c_prev} if c else {}), Wx=Wx, Wh=Wh, b=b, **variant
        )
        xs, h0, c0 = base.random_arrays(1, sh["xs"], sh["h"], sh["h"])
        state = {"h": h0, "c": c0} if c else {"h": h0}
        out = []
        part1_ok = True
        if "part 1" in parts:
            items = [
                (
                    "against central differences",
                    lambda: testing.step_backward_report(
                        fwd,
                        bwd,
                        step_in,
                        gates=self.gates,
                        title=f"{self.step_backward}{label} against central differences",
                    ),
                ),
                (
                    f"against npgated's {self.step_backward}",
                    lambda: self._compare_step(fwd, bwd, ref_fwd, ref_bwd, step_in, label),
                ),
                (
                    f"through time (your step functions in npgated's BPTT loop, T = {SIZES['T']})",
                    lambda: testing.gradient_report(
                        base.StepsThroughTime(fwd, bwd, (Wx, Wh, b), self.n_state, variant),
                        (xs,),
                        gates=self.gates,
                        state=state,
                        title=f"your {self.step_forward} / {self.step_backward}{label} "
                        "in npgated's "
                        "BPTT loop (npgated.exercises.base.time_backward)",
                    ),
                ),
            ]
            part1 = self._run(f"part 1{label}", items)
            part1_ok = all(o.ok for o in part1)
            out += part1
        if "part 2" in parts:
            if not part1_ok:
                out.append(
                    base.Outcome(
                        f"part 2{label}",
                        "",
                        False,
                        f"Part 2 runs your {self.step_backward}: make part 1 right first.",
                        "not checked: part 1 is not right yet",
                    )
                )
                return out
            items = [
                (
                    "against central differences",
                    lambda: testing.gradient_report(
                        time_cls(Wx, Wh, b, **variant),
                        (xs,),
                        gates=self.gates,
                        state=state,
                        title=f"{self.time_class}{label} against central differences",
                    ),
                ),
                (
                    f"against npgated's {self.time_class}",
                    lambda: self._compare_time(
                        time_cls, ref_time, (Wx, Wh, b), xs, state, variant, label
                    ),
                ),
            ]
            out += self._run(f"part 2{label}", items)
        return out

    def _run(self, part, items):
        return base.run_items(part, items)

    def _compare_step(self, fwd, bwd, ref_fwd, ref_bwd, step_in, label):
        from npgated.gradcheck import upstream  # noqa: PLC0415

        *outs, cache = fwd(**step_in)
        *ref_outs, ref_cache = ref_fwd(**step_in)
        douts = upstream(tuple(ref_outs), 3)
        Wx, Wh = step_in["Wx"], step_in["Wh"]
        got = bwd(*douts, cache, Wx, Wh)
        want = ref_bwd(*douts, ref_cache, Wx, Wh)
        names = [n for n, v in step_in.items() if hasattr(v, "shape")]
        report = _compare(
            f"{self.step_backward}{label} against npgated's",
            names,
            got,
            want,
            self.gates,
            f"npgated's {self.step_backward}",
            step_level=True,
        )
        _forward_note(report, outs, ref_outs, self.step_forward)
        return report

    def _compare_time(self, time_cls, ref_time, params, xs, state, variant, label):
        from npgated.gradcheck import upstream  # noqa: PLC0415

        def run(layer):
            for g in layer.grads:
                g[...] = 0
            layer.stateful = True
            layer.set_state(**state)
            hs = layer.forward(xs)
            return hs

        ref = ref_time(*params, stateful=True, **variant)
        ref_hs = run(ref)
        (dhs,) = upstream((ref_hs,), 5)
        ref_dxs = ref.backward(dhs)
        layer = time_cls(*params, **variant)
        hs = run(layer)
        dxs = layer.backward(dhs)
        names = ["xs", "Wx", "Wh", "b", "h0"] + (["c0"] if self.n_state == 2 else [])
        got = [dxs, *layer.grads, layer.dh] + ([layer.dc] if self.n_state == 2 else [])
        want = [ref_dxs, *ref.grads, ref.dh] + ([ref.dc] if self.n_state == 2 else [])
        report = _compare(
            f"{self.time_class}{label} against npgated's",
            names,
            got,
            want,
            self.gates,
            f"npgated's {self.time_class}",
            step_level=False,
        )
        _forward_note(report, [hs], [ref_hs], f"{self.time_class}.forward")
        return report


def _tag_key(tag: str):
    return int(tag[1:])


def _comment(text: str) -> str:
    lines = textwrap.dedent(text).strip().split("\n")
    return "".join(f"    # {line}".rstrip() + "\n" for line in lines)


def _compare(title, names, got, want, gates, against, step_level):
    got = () if got is None else (got if isinstance(got, (tuple, list)) else (got,))
    if len(got) != len(want):
        report = testing.GradientReport(title, [], 1e-9, against=against)
        report.problems.append(
            f"returned {len(got)} arrays, npgated's returns {len(want)}: "
            + ", ".join("d" + n for n in names)
        )
        return report
    missing = [n for n, g in zip(names, got) if g is None]
    if missing:
        report = testing.GradientReport(title, [], 1e-9, against=against)
        report.problems.append(f"no gradient for {', '.join(missing)} (None)")
        return report
    return testing.compare_report(
        title,
        list(zip(names, got, want)),
        against=against,
        tol=1e-9,
        gates=gates,
        step_level=step_level,
    )


def _forward_note(report, outs, ref_outs, name):
    from npgated.gradcheck import rel_error  # noqa: PLC0415

    if len(outs) != len(ref_outs) or any(rel_error(a, b) > 1e-12 for a, b in zip(outs, ref_outs)):
        report.notes.append(
            f"your {name} computes other numbers than npgated's: this "
            "comparison assumes the forward pass of the exercise as written"
        )


_SIGMOID = '''\
def sigmoid(a):
    """sigma(a) = 1 / (1 + exp(-a)), computed as 0.5 * tanh(0.5 * a) + 0.5 (never overflows)."""
    return 0.5 * np.tanh(0.5 * a) + 0.5
'''
