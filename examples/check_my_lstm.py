"""A student's LSTM step, backward written by hand with one mistake, and what npgated says.

    python examples/check_my_lstm.py            # the report of the planted mistake
    python examples/check_my_lstm.py --fixed    # the same code with the mistake fixed

The student builds the weight gradients gate by gate and, in the forget gate's block of
dWh, multiplies with c_prev where h_prev belongs. One relative error per array would only
say "dWh is wrong"; npgated.testing.assert_step_backward says which block, that the gate's
da_f is right (db's block is), and that the product itself is the mistake. Exit code 0
either way (the report is the point); see docs/check-your-backward.md.
"""

from __future__ import annotations

import argparse

import numpy as np

from npgated.testing import assert_step_backward


def sigmoid(a):
    return 0.5 * np.tanh(0.5 * a) + 0.5


def my_lstm_forward(x, h_prev, c_prev, Wx, Wh, b):
    """One step; gate blocks i, f, g, o along the last axis (npgated's and PyTorch's order)."""
    H = h_prev.shape[1]
    a = x @ Wx + h_prev @ Wh + b
    i, f, o = sigmoid(a[:, :H]), sigmoid(a[:, H : 2 * H]), sigmoid(a[:, 3 * H :])
    g = np.tanh(a[:, 2 * H : 3 * H])
    c_next = f * c_prev + i * g
    h_next = o * np.tanh(c_next)
    cache = {
        "x": x,
        "h_prev": h_prev,
        "c_prev": c_prev,
        "i": i,
        "f": f,
        "g": g,
        "o": o,
        "c_next": c_next,
        "Wx": Wx,
        "Wh": Wh,
    }
    return h_next, c_next, cache


def my_lstm_backward(dh_next, dc_next, cache, fixed=False):
    """The gradients of x, h_prev, c_prev, Wx, Wh, b (in the forward's argument order)."""
    x, h_prev, c_prev = cache["x"], cache["h_prev"], cache["c_prev"]
    i, f, g, o = cache["i"], cache["f"], cache["g"], cache["o"]
    tanh_c = np.tanh(cache["c_next"])
    dc = dc_next + dh_next * o * (1 - tanh_c**2)
    da_i = dc * g * i * (1 - i)
    da_f = dc * c_prev * f * (1 - f)
    da_g = dc * i * (1 - g**2)
    da_o = dh_next * tanh_c * o * (1 - o)
    da = np.hstack([da_i, da_f, da_g, da_o])
    state_f = h_prev if fixed else c_prev  # the planted mistake: c_prev in the f block of dWh
    dWh = np.hstack([h_prev.T @ da_i, state_f.T @ da_f, h_prev.T @ da_g, h_prev.T @ da_o])
    dWx = x.T @ da
    db = da.sum(axis=0)
    return da @ cache["Wx"].T, da @ cache["Wh"].T, dc * f, dWx, dWh, db


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fixed", action="store_true", help="check the corrected backward")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    N, D, H = 3, 5, 6
    shapes = [(N, D), (N, H), (N, H), (D, 4 * H), (H, 4 * H), (4 * H,)]
    x, h_prev, c_prev, Wx, Wh, b = (rng.standard_normal(s) * 0.5 for s in shapes)

    def backward(dh_next, dc_next, cache):
        return my_lstm_backward(dh_next, dc_next, cache, fixed=args.fixed)

    try:
        report = assert_step_backward(
            my_lstm_forward,
            backward,
            (x, h_prev, c_prev, Wx, Wh, b),
            gates="ifgo",
            title="my_lstm_backward",
        )
    except AssertionError as exc:
        print(exc)
    else:
        print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
