"""npgated.testing: right code passes; each planted mistake is located and named.

The mistakes are planted into otherwise right code (npgated's own step functions, wrapped),
so every message is checked for the array, the gate block, the time step and the cause
that the numbers show. The exercises' text-level mistakes are in tests/test_exercise.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from npgated.layers.gru import GRU, TimeGRU, gru_step_backward, gru_step_forward
from npgated.layers.lstm import LSTM, TimeLSTM, lstm_step_backward, lstm_step_forward
from npgated.layers.rnn import rnn_step_backward, rnn_step_forward
from npgated.testing import (
    ProtocolError,
    assert_gradients,
    assert_step_backward,
    gradient_report,
    step_backward_report,
    step_equations,
)

N, T, D, H = 3, 4, 5, 6


def arrays(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) * 0.5 for s in shapes]


def lstm_inputs(seed=0):
    return tuple(arrays(seed, (N, D), (N, H), (N, H), (D, 4 * H), (H, 4 * H), (4 * H,)))


def planted(change):
    """lstm_step_backward with ``change(list of its six results)`` applied."""

    def backward(dh_next, dc_next, cache, Wx, Wh):
        out = [a.copy() for a in lstm_step_backward(dh_next, dc_next, cache, Wx, Wh)]
        change(out)
        return tuple(out)

    return backward


F = slice(H, 2 * H)  # the forget gate's block in npgated's i, f, g, o


# ---------------------------------------------------------------------------------------
# Right code passes
# ---------------------------------------------------------------------------------------
def test_npgated_step_functions_pass_with_their_gates_known():
    report = assert_step_backward(lstm_step_forward, lstm_step_backward, lstm_inputs())
    assert report.ok and [f.name for f in report.findings] == [
        "dx",
        "dh_prev",
        "dc_prev",
        "dWx",
        "dWh",
        "db",
    ]
    x, h, Wx, Wh, b = arrays(1, (N, D), (N, H), (D, H), (H, H), (H,))
    assert_step_backward(rnn_step_forward, rnn_step_backward, (x, h, Wx, Wh, b))
    for reset_after, b_shape in ((False, (3 * H,)), (True, (2, 3 * H))):
        x, h, Wx, Wh, b = arrays(2, (N, D), (N, H), (D, 3 * H), (H, 3 * H), b_shape)
        # a dict of keyword arguments; reset_after is not an array and has no gradient
        assert_step_backward(
            gru_step_forward,
            gru_step_backward,
            dict(x=x, h_prev=h, Wx=Wx, Wh=Wh, b=b, reset_after=reset_after),
        )


def test_npgated_layers_pass_single_step_and_time():
    x, h, c, Wx, Wh, b = lstm_inputs(3)
    assert_gradients(LSTM(Wx, Wh, b), (x, h, c))
    xs, h0, c0 = arrays(4, (N, T, D), (N, H), (N, H))
    report = assert_gradients(TimeLSTM(Wx, Wh, b), (xs,), state={"h": h0, "c": c0})
    assert [f.name for f in report.findings] == ["dxs", "dWx", "dWh", "db", "dh0", "dc0"]
    Wx, Wh, b = arrays(5, (D, 3 * H), (H, 3 * H), (2, 3 * H))
    assert_gradients(TimeGRU(Wx, Wh, b, reset_after=True), (xs,), state={"h": h0})
    assert_gradients(GRU(Wx, Wh, b, reset_after=True), (x, h))


class BookLSTM:
    """A user's single-step LSTM in the book's style: grads overwritten (``[...] =``), no
    param_names, parameters kept in the book's gate order f, g, i, o."""

    def __init__(self, Wx, Wh, b, bug=None):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.bug = bug
        self.cache = None

    @staticmethod
    def _to_ifgo(p):  # columns f, g, i, o -> i, f, g, o
        f, g, i, o = np.split(p, 4, axis=-1)
        return np.concatenate([i, f, g, o], axis=-1)

    @staticmethod
    def _to_fgio(p):
        i, f, g, o = np.split(p, 4, axis=-1)
        return np.concatenate([f, g, i, o], axis=-1)

    def forward(self, x, h_prev, c_prev):
        Wx, Wh, b = (self._to_ifgo(p) for p in self.params)
        h, c, self.cache = lstm_step_forward(x, h_prev, c_prev, Wx, Wh, b)
        return h, c

    def backward(self, dh_next, dc_next):
        Wx, Wh, _ = (self._to_ifgo(p) for p in self.params)
        dx, dh, dc, dWx, dWh, db = lstm_step_backward(dh_next, dc_next, self.cache, Wx, Wh)
        dWh = self._to_fgio(dWh)
        if self.bug == "forget":
            dWh[:, :H] *= 0.5  # the book's f block: columns 0:H
        self.grads[0][...] = self._to_fgio(dWx)
        self.grads[1][...] = dWh
        self.grads[2][...] = self._to_fgio(db)
        return dx, dh, dc


def test_a_book_style_layer_that_overwrites_grads_passes_and_its_blocks_are_named_fgio():
    x, h, c, Wx, Wh, b = lstm_inputs(6)
    assert_gradients(BookLSTM(Wx, Wh, b), (x, h, c), gates="fgio")
    with pytest.raises(AssertionError) as info:
        assert_gradients(BookLSTM(Wx, Wh, b, bug="forget"), (x, h, c), gates="fgio")
    message = str(info.value)
    assert "dWh, block f (forget gate)" in message and "blocks g, i, o" in message
    assert "block f (forget gate): exactly 0.5x the numeric gradient" in message
    # the constructor's argument names name the parameters of a class without param_names
    assert "dWx      ok" in message


def test_unknown_gate_order_numbers_the_blocks_and_says_how_to_name_them():
    x, h, c, Wx, Wh, b = lstm_inputs(6)
    report = gradient_report(BookLSTM(Wx, Wh, b, bug="forget"), (x, h, c))
    assert "dWh, block 1: rel. error" in str(report)
    assert "pass gates='ifgo' / 'fgio' (LSTM) or 'rzn' (GRU)" in str(report)


# ---------------------------------------------------------------------------------------
# Each diagnosis, planted into lstm_step_backward
# ---------------------------------------------------------------------------------------
def _flip_f(out):
    out[4][:, F] *= -1


def _twice(out):
    out[4] *= 2


def _zero_db(out):
    out[5][...] = 0


def _swap_if(out):
    for k in (3, 4, 5):
        i, f = out[k][..., :H].copy(), out[k][..., F].copy()
        out[k][..., :H], out[k][..., F] = f, i


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            _flip_f,
            [
                "dWh      WRONG",
                "dWh, block f (forget gate): rel. error 1.0e+00; blocks i, g, o",
                "block f (forget gate): the sign is flipped",
                "da_f is right (db's block f is), so the mistake is in dWh's product",
                "worst element [",
                "(block f): analytic",
            ],
        ),
        (_twice, ["dWh: exactly 2x the numeric gradient: counted twice", "B10 of npgated's"]),
        (_zero_db, ["db: it is all zeros: never written or never returned"]),
        (_swap_if, ["blocks i and f are swapped, each holds the other's numbers: the gate order"]),
    ],
)
def test_a_planted_mistake_is_located_and_named(change, expected):
    with pytest.raises(AssertionError) as info:
        assert_step_backward(lstm_step_forward, planted(change), lstm_inputs())
    message = str(info.value)
    for text in expected:
        assert text in message, f"{text!r} missing from:\n{message}"


def test_da_of_one_gate_wrong_names_the_equation_and_every_array_it_reaches():
    def backward(dh_next, dc_next, cache, Wx, Wh):  # B3 with a flipped sign
        cache = cache._replace(c_prev=-cache.c_prev)  # da_f = dc * (-c_prev) * f * (1 - f)
        dx, dh, _, dWx, dWh, db = lstm_step_backward(dh_next, dc_next, cache, Wx, Wh)
        dc_prev = lstm_step_backward(dh_next, dc_next, cache, Wx, Wh)[2]
        return dx, dh, dc_prev, dWx, dWh, db

    report = step_backward_report(lstm_step_forward, backward, lstm_inputs())
    text = str(report)
    assert not report.ok
    assert "db, block f (forget gate): rel. error 1.0e+00; blocks i, g, o" in text
    assert "da_f, is wrong (every weight gradient of the block inherits it) -- B3" in text
    assert "dc_prev  ok" in text  # B6 does not use da_f
    assert "follows from the wrong da_f (see" in text  # dx, dh_prev


def test_an_ignored_upstream_gradient_is_named():
    def backward(dh_next, dc_next, cache, Wx, Wh):
        return lstm_step_backward(dh_next, np.zeros_like(dc_next), cache, Wx, Wh)

    with pytest.raises(AssertionError, match="your backward never uses dc_next"):
        assert_step_backward(lstm_step_forward, backward, lstm_inputs())


def test_a_transposed_square_gradient_and_a_transposed_shape():
    x, h, Wx, Wh, b = arrays(1, (N, D), (N, H), (D, H), (H, H), (H,))

    def rnn_backward(dh_next, cache, Wx, Wh):
        dx, dh, dWx, dWh, db = rnn_step_backward(dh_next, cache, Wx, Wh)
        return dx, dh, dWx, dWh.T, db

    with pytest.raises(AssertionError, match="dWh: it is the transpose of the numeric gradient"):
        assert_step_backward(rnn_step_forward, rnn_backward, (x, h, Wx, Wh, b))

    def lstm_backward(dh_next, dc_next, cache, Wx, Wh):
        out = list(lstm_step_backward(dh_next, dc_next, cache, Wx, Wh))
        out[4] = out[4].T
        return tuple(out)

    with pytest.raises(
        AssertionError,
        match=r"dWh has shape \(24, 6\) but Wh is \(6, 24\): "
        "transposed",
    ):
        assert_step_backward(lstm_step_forward, lstm_backward, lstm_inputs())


def test_gru_reset_after_bias_rows_and_a_gate_sign():
    x, h, Wx, Wh, b = arrays(2, (N, D), (N, H), (D, 3 * H), (H, 3 * H), (2, 3 * H))

    def backward(dh_next, cache, Wx, Wh):
        dx, dh, dWx, dWh, db = gru_step_backward(dh_next, cache, Wx, Wh)
        db = db.copy()
        db[1, 2 * H :] *= -1  # the hidden-side bias of the candidate, b_hn
        return dx, dh, dWx, dWh, db

    with pytest.raises(AssertionError) as info:
        assert_step_backward(
            gru_step_forward, backward, dict(x=x, h_prev=h, Wx=Wx, Wh=Wh, b=b, reset_after=True)
        )
    message = str(info.value)
    assert "db, block n (candidate state)" in message and "blocks r, z" in message
    assert "block n by row: b[0] (input side) " in message
    assert "b[1] (hidden side) 1.0e+00" in message
    assert "dWx's block n is right, so da_n is: the mistake is in db's own sum" in message


# ---------------------------------------------------------------------------------------
# Time layers: the time step and BPTT's own mistakes
# ---------------------------------------------------------------------------------------
class MyTimeLSTM:
    """A user's Time layer on npgated's step functions (the book's state protocol), with a
    planted BPTT mistake."""

    def __init__(self, Wx, Wh, b, bug=None, state_protocol=True):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(p) for p in self.params]
        self.bug = bug
        self.h = self.c = self.dh = self.dc = None
        if state_protocol:
            self.stateful = False
            self.set_state = self._set_state

    def _set_state(self, h, c=None):
        self.h, self.c = h, c

    def forward(self, xs):
        Wx, Wh, b = self.params
        n, steps, _ = xs.shape
        stateful = getattr(self, "stateful", False)
        h = self.h if stateful and self.h is not None else np.zeros((n, H))
        c = self.c if stateful and self.c is not None else np.zeros((n, H))
        hs = np.empty((n, steps, H))
        self.caches = []
        for t in range(steps):
            h, c, cache = lstm_step_forward(xs[:, t], h, c, Wx, Wh, b)
            hs[:, t] = h
            self.caches.append(cache)
        self.h, self.c = h, c
        return hs

    def backward(self, dhs):
        Wx, Wh, _ = self.params
        n, steps, _ = dhs.shape
        dxs = np.zeros((n, steps, D))
        dh, dc = np.zeros((n, H)), np.zeros((n, H))
        for t in range(steps - 1, 0 if self.bug == "stop-at-1" else -1, -1):
            if self.bug in ("no-carry", "no-dh-carry"):
                dh = np.zeros((n, H))
            if self.bug == "no-carry":
                dc = np.zeros((n, H))
            dx, dh, dc, dWx, dWh, db = lstm_step_backward(
                dhs[:, t] + dh, dc, self.caches[t], Wx, Wh
            )
            dxs[:, t] = dx
            for grad, d in zip(self.grads, (dWx, dWh, db)):
                if self.bug == "assign":
                    grad[...] = d  # = instead of +=
                elif not (self.bug == "skip-first" and t == 0):
                    grad += d
        self.dh, self.dc = dh, dc
        return dxs


def time_case(seed=7):
    Wx, Wh, b = arrays(seed, (D, 4 * H), (H, 4 * H), (4 * H,))
    xs, h0, c0 = arrays(seed + 1, (N, T, D), (N, H), (N, H))
    return (Wx, Wh, b), xs, {"h": h0, "c": c0}


def test_a_users_time_layer_passes():
    params, xs, state = time_case()
    assert_gradients(MyTimeLSTM(*params), (xs,), gates="ifgo", state=state)


def test_overwriting_instead_of_accumulating_over_time_is_named():
    params, xs, state = time_case()
    with pytest.raises(AssertionError) as info:
        assert_gradients(MyTimeLSTM(*params, bug="assign"), (xs,), gates="ifgo", state=state)
    message = str(info.value)
    assert "dxs   ok" in message
    for g in ("dWx", "dWh", "db"):
        assert (
            f"{g} holds the contribution of step t=0 only (the last step the backward loop "
            f"visits): it is overwritten at every step ({g} = ...) instead of accumulated "
            f"over time ({g} += ...)"
        ) in message
    assert "weights t=0: 1, t=1: 0, t=2: 0, t=3: 0" in message


def test_a_skipped_step_is_named():
    params, xs, state = time_case()
    report = gradient_report(
        MyTimeLSTM(*params, bug="skip-first"), (xs,), gates="ifgo", state=state
    )
    assert "the contribution of step(s) t=0 to dWh is missing" in str(report)


def test_a_forgotten_carry_shows_right_at_the_last_step_only():
    params, xs, state = time_case()
    with pytest.raises(AssertionError) as info:
        assert_gradients(MyTimeLSTM(*params, bug="no-dh-carry"), (xs,), gates="ifgo", state=state)
    message = str(info.value)
    steps = message.split("per time step: ")[1].split("\n")[0].split(", ")
    assert [s.split()[0] for s in steps] == ["t=0", "t=1", "t=2", "t=3"]
    assert float(steps[3].split()[1]) < 1e-7 < min(float(s.split()[1]) for s in steps[:3])
    assert "first wrong step counted from the end: t=2 (of t=0..3)" in message
    assert (
        "dxs is right at the last step t=3 and wrong at every earlier one: what is carried "
        "back from step t+1 into step t is missing or wrong -- dh_next not added" in message
    )
    assert "follows from what is carried between steps (see dxs above)" in message
    # dh_next and dc_next both dropped: the gradients are exactly the per-step direct parts
    with pytest.raises(
        AssertionError,
        match=r"dxs holds only the direct part from dhs\[:, t\] "
        "at every step: nothing is carried back",
    ):
        assert_gradients(MyTimeLSTM(*params, bug="no-carry"), (xs,), gates="ifgo", state=state)


def test_a_loop_that_stops_before_the_first_step_is_named():
    params, xs, state = time_case()
    report = gradient_report(MyTimeLSTM(*params, bug="stop-at-1"), (xs,), gates="ifgo", state=state)
    text = str(report)
    assert "first wrong step counted from the end: t=0 (of t=0..3)" in text
    assert "dxs is zero at t=0 and right elsewhere: the backward loop never reaches t=0" in text
    assert "the contribution of step(s) t=0 to dWx is missing" in text


def test_without_the_state_protocol_the_first_step_alone_says_it_is_about_time():
    params, xs, _ = time_case()
    report = gradient_report(
        MyTimeLSTM(*params, bug="assign", state_protocol=False), (xs,), gates="ifgo"
    )
    assert not report.ok
    assert "on the first step alone (T = 1) every gradient is right" in str(report)


# ---------------------------------------------------------------------------------------
# Usage problems
# ---------------------------------------------------------------------------------------
def test_float32_parameters_are_refused_and_a_float32_output_is_reported():
    x, h, c, Wx, Wh, b = lstm_inputs()
    with pytest.raises(ProtocolError, match="float64 parameters"):
        assert_gradients(LSTM(*(p.astype(np.float32) for p in (Wx, Wh, b))), (x, h, c))

    class Float32Out(BookLSTM):
        def forward(self, *args):
            h, c = super().forward(*args)
            return h.astype("f"), c

    with pytest.raises(AssertionError, match=r"dtype='f'\) -- allocate with xs.dtype"):
        assert_gradients(Float32Out(Wx, Wh, b), (x, h, c), gates="fgio")


def test_a_backward_that_returns_too_little_is_reported():
    def backward(*args):
        return lstm_step_backward(*args)[:5]

    with pytest.raises(ProtocolError, match=r"takes \*args: name the forward's arguments"):
        assert_step_backward(lstm_step_forward, backward, lstm_inputs())
    with pytest.raises(AssertionError, match="returned 5 array"):
        assert_step_backward(
            lstm_step_forward, backward, lstm_inputs(), backward_inputs=("Wx", "Wh")
        )


def test_backward_arguments_are_matched_by_name_or_given():
    def fwd(x, W):
        return x @ W, (x, W)

    def bwd(dout, cache, weights):
        x, W = cache
        return dout @ W.T, x.T @ dout

    x, W = arrays(0, (N, D), (D, H))
    with pytest.raises(ProtocolError, match="backward_inputs"):
        assert_step_backward(fwd, bwd, (x, W))
    assert assert_step_backward(fwd, bwd, (x, W), backward_inputs=("W",)).ok


def test_equations_are_quoted_from_npgated_docstrings():
    eqs = step_equations(lstm_step_forward)
    assert list(eqs) == [f"B{k}" for k in range(1, 12)]
    assert eqs["B3"].startswith("da_f = dc * c_prev * f * (1 - f)")
    assert "reset_after=True" in step_equations(gru_step_backward)["B3"]


def test_the_example_names_its_planted_forget_gate_mistake(capsys):
    from pathlib import Path

    from npgated.usercode import load_module

    example = load_module(Path(__file__).resolve().parents[1] / "examples" / "check_my_lstm.py")
    assert example.main([]) == 0
    out = capsys.readouterr().out
    assert "dWh, block f (forget gate): rel. error" in out and "blocks i, g, o" in out
    assert "da_f is right (db's block f is), so the mistake is in dWh's product" in out
    assert "(h_prev, not h_next or c_prev)" in out
    assert example.main(["--fixed"]) == 0
    assert "my_lstm_backward: all 6 gradients agree" in capsys.readouterr().out
