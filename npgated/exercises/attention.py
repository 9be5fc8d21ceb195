"""The attention exercise: the backward passes of the book's three attention layers.

Part 1 ``AttentionWeight.backward`` (B3..B5), part 2 ``WeightSum.backward`` (B1, B2), part 3
``Attention.backward`` (B1..B6: the two above, and the two paths by which hs reaches the
loss). The reference is :mod:`npgated.layers.attention`; the equations are quoted from the
Notes of its classes, and the template's forwards keep the cache that its backwards read
(``(hs, qs, a)`` with the query as a batch of one, ``qs`` (N, 1, H), ``a`` (N, 1, T)).
"""

from __future__ import annotations

import importlib
import textwrap

from npgated import testing
from npgated.exercises import base

MODULE = "npgated.layers.attention"
SIZES = {"N": 3, "T": 5, "H": 4}
PARTS = (
    # part, class, forward's inputs, backward's outputs, tags
    ("part 1", "AttentionWeight", ("hs", "h"), ("dhs", "dh"), "B3..B5"),
    ("part 2", "WeightSum", ("hs", "a"), ("dhs", "da"), "B1, B2"),
    ("part 3", "Attention", ("hs", "h"), ("dhs", "dh"), "B1..B6"),
)


def _eqs(cls_name: str, prefix: str = "B") -> dict:
    cls = getattr(importlib.import_module(MODULE), cls_name)
    return testing.step_equations(cls, prefix)


def _doc_lines(equations: dict, indent: int) -> str:
    pad = " " * indent
    return "\n".join(f"{pad}{tag:<4s}{text}" for tag, text in equations.items())


class AttentionExercise:
    """The attention exercise (same interface as :class:`~.recurrent.RecurrentExercise`)."""

    cell = "attention"

    def required_names(self) -> list:
        return [cls for _, cls, *_ in PARTS]

    def template(self) -> str:
        return _TEMPLATE.format(
            F_weight=_doc_lines(_eqs("AttentionWeight", "F"), 8),
            F_sum=_doc_lines(_eqs("WeightSum", "F"), 8),
            F_all=_doc_lines(_eqs("Attention", "F"), 8),
            B_weight=base.equation_comments(_eqs("AttentionWeight"), 8).rstrip("\n"),
            B_sum=base.equation_comments(_eqs("WeightSum"), 8).rstrip("\n"),
            B_all=base.equation_comments(_eqs("Attention"), 8).rstrip("\n"),
            todo1=base.todo("part 1", "Part 1: write AttentionWeight.backward (B3..B5)", 8),
            todo2=base.todo("part 2", "Part 2: write WeightSum.backward (B1, B2)", 8),
            todo3=base.todo("part 3", "Part 3: write Attention.backward (B1..B6)", 8),
        )

    def solution(self) -> str:
        """The template with every region filled with the body of npgated's own method."""
        mod = importlib.import_module(MODULE)
        source = self.template()
        for part, cls, *_ in PARTS:
            body = base.function_body(getattr(mod, cls).backward)
            source = base.fill(source, part, body, MODULE)
        return source

    def test_template(self) -> str:
        N, T, H = (SIZES[s] for s in "NTH")
        return textwrap.dedent(f'''\
            """Tests for your attention.py (written by `npgated exercise attention`).

                python -m pytest test_attention.py

            The first uses npgated.testing as you would in your own tests: a wrong gradient fails
            with the array, the time step and the likely cause in the message. The second
            compares your numbers with npgated's own attention layers.
            """

            from pathlib import Path

            import numpy as np
            import pytest

            from npgated.exercises import compare_with_npgated
            from npgated.testing import assert_gradients
            from npgated.usercode import load_module

            HERE = Path(__file__).resolve().parent
            exercise = load_module(HERE / "attention.py")
            N, T, H = {N}, {T}, {H}


            def arrays(seed, *shapes):
                rng = np.random.default_rng(seed)
                return [rng.standard_normal(shape) for shape in shapes]


            @pytest.mark.parametrize("layer, second", [("AttentionWeight", (N, H)),
                                                       ("WeightSum", (N, T)),
                                                       ("Attention", (N, H))])
            def test_backward(layer, second):
                hs, other = arrays(0, (N, T, H), second)
                assert_gradients(getattr(exercise, layer)(), (hs, other))


            @pytest.mark.parametrize("part", ["part 1", "part 2", "part 3"])
            def test_same_numbers_as_npgated(part):
                ok, report = compare_with_npgated(HERE / "attention.py", part)
                assert ok, report
            ''')

    # -- the check ---------------------------------------------------------------------------
    def outcomes(self, module, parts=("part 1", "part 2", "part 3")):
        mod = importlib.import_module(MODULE)
        N, T, H = (SIZES[s] for s in "NTH")
        hs, h, a = base.random_arrays(0, (N, T, H), (N, H), (N, T))
        hs, h, a = hs * 2, h * 2, a * 2  # scores of a few units: weights far from uniform
        second = {"h": h, "a": a}
        out, wrong = [], []
        for part, cls, ins, _, tags in PARTS:
            if part not in parts:
                continue
            if part == "part 3" and wrong:
                out.append(
                    base.Outcome(
                        part,
                        "",
                        False,
                        "Part 3 runs your AttentionWeight and "
                        "WeightSum: make parts 1 and 2 right first.",
                        "not checked: parts 1 and 2 are not right yet",
                    )
                )
                continue
            inputs = (hs, second[ins[1]])
            student, ref = getattr(module, cls), getattr(mod, cls)
            items = [
                (
                    "against central differences",
                    lambda s=student, c=cls, i=inputs: testing.gradient_report(
                        s(), i, title=f"{c}.backward against central differences"
                    ),
                ),
                (
                    f"against npgated's {cls}",
                    lambda s=student, r=ref, c=cls, i=inputs, n=ins: self._compare(s, r, c, i, n),
                ),
            ]
            results = base.run_items(f"{part} ({cls}.backward, {tags})", items)
            if not all(o.ok for o in results):
                wrong.append(part)
            out += results
        return out

    def _compare(self, student, ref, cls, inputs, names):
        from npgated.exercises.recurrent import _compare, _forward_note  # noqa: PLC0415
        from npgated.gradcheck import upstream  # noqa: PLC0415

        theirs, mine = student(), ref()
        got_out, want_out = theirs.forward(*inputs), mine.forward(*inputs)
        (dout,) = upstream((want_out,), 3)
        got = theirs.backward(dout)
        want = mine.backward(dout)
        report = _compare(
            f"{cls}.backward against npgated's",
            list(names),
            got,
            want,
            None,
            f"npgated's {cls}",
            step_level=False,
        )
        _forward_note(report, [got_out], [want_out], f"{cls}.forward")
        return report


_TEMPLATE = '''\
"""Exercise: attention's backward passes by hand (written by `npgated exercise attention`).

The book's dot-product attention (chapter 8), one decoder query h over the encoder states hs:

Part 1  AttentionWeight.backward: the weights' gradients (B3..B5).
Part 2  WeightSum.backward: the context's gradients (B1, B2).
Part 3  Attention.backward: the two together; hs reaches the loss on two paths (B1..B6).

The forward passes are complete. Write the code between the lines
"# >>> your code: begin (part k)" and "# <<< your code: end", then check it:

    npgated exercise check attention.py    # what is wrong where; exit code 0 once right
    python -m pytest test_attention.py

The check compares your gradients with central differences of the forward pass (float64)
and with npgated's own AttentionWeight / WeightSum / Attention on the same numbers.

Shapes: N batch, T encoder steps, H hidden size. The caches keep the query as a batch of
one query, qs = h[:, None, :] (N, 1, H), and the weights as a (N, 1, T) (npgated's layers
do the same, so that one decoder step and all of them are the same batched products):
hs @ x per sequence is the (N, T, H) @ (N, H, 1) batched product, x.transpose(0, 2, 1)
the batched transpose.
"""

import numpy as np

EXERCISE = "attention"


class _Layer:
    """The book's protocol: params and grads (attention has no parameters), and the cache."""

    def __init__(self):
        self.params, self.grads = [], []
        self.cache = None

    def _require_forward(self):
        if self.cache is None:
            raise RuntimeError(f"{{type(self).__name__}}.backward called before forward")
        return self.cache


class AttentionWeight(_Layer):
    """The weights of one query h over the encoder states hs.

    Notes
    -----
    Forward, per sequence n (the batched code is qs @ hs.T with qs = h[:, None, :])::

{F_weight}
    """

    def forward(self, hs, h):
        """hs (N, T, H), h (N, H) -> a (N, T), each row summing to 1."""
        qs = h[:, None, :]  # the query as a batch of one: (N, 1, H)
        s = qs @ hs.transpose(0, 2, 1)  # F1  (N, 1, T)
        e = np.exp(s - s.max(axis=-1, keepdims=True))  # F2 (stable: the largest score is 0)
        a = e / e.sum(axis=-1, keepdims=True)  # F2
        self.cache = (hs, qs, a)
        return a[:, 0]

    def backward(self, da):
        """Part 1: da (N, T) -> (dhs (N, T, H), dh (N, H)).

        Softmax: ds_t = a_t * (da_t - sum_u a_u * da_u); then the two inputs of the scores.
        """
        # The equations, from npgated's AttentionWeight (Notes):
{B_weight}
        hs, qs, a = self._require_forward()  # qs (N, 1, H), a (N, 1, T)
{todo1}

class WeightSum(_Layer):
    """The context: the weighted sum of the encoder states.

    Notes
    -----
    Forward, per sequence n (the batched code is a[:, None, :] @ hs)::

{F_sum}
    """

    def forward(self, hs, a):
        """hs (N, T, H), a (N, T) -> c (N, H)."""
        a = a[:, None, :]  # one query: (N, 1, T)
        c = a @ hs  # F3  (N, 1, H)
        self.cache = (hs, None, a)
        return c[:, 0]

    def backward(self, dc):
        """Part 2: dc (N, H) -> (dhs (N, T, H), da (N, T))."""
        # The equations, from npgated's WeightSum (Notes):
{B_sum}
        hs, _, a = self._require_forward()  # a (N, 1, T)
{todo2}

class Attention(_Layer):
    """One decoder step's attention: the weights, then the context.

    Notes
    -----
    Forward (h the query (N, H), hs the encoder states (N, T, H))::

{F_all}
    """

    def __init__(self):
        super().__init__()
        self.attention_weight_layer = AttentionWeight()
        self.weight_sum_layer = WeightSum()
        self.attention_weight = None

    def forward(self, hs, h):
        """hs (N, T, H), h (N, H) -> c (N, H)."""
        a = self.attention_weight_layer.forward(hs, h)  # F1, F2
        c = self.weight_sum_layer.forward(hs, a)  # F3
        self.attention_weight = a
        return c

    def backward(self, dc):
        """Part 3: dc (N, H) -> (dhs (N, T, H), dh (N, H)), through both layers."""
        # The equations, from npgated's Attention (Notes):
{B_all}
{todo3}'''

EXERCISE = AttentionExercise()
