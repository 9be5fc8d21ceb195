"""`npgated gradcheck FILE.py:NAME`: a user's class, factory or step functions, checked.

The user's file is written into a temporary folder; exit codes: 0 right, 1 wrong (or the
user's code raised: traceback on stderr), 2 a target that cannot be used (one line).
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from npgated import cli, usercode

USER_FILE = textwrap.dedent('''\
    import numpy as np

    from helpers import zeros_like_all  # a module beside this file
    from npgated.layers.lstm import lstm_step_backward, lstm_step_forward
    from npgated.layers.rnn import rnn_step_backward, rnn_step_forward


    class MyLSTM:
        """One LSTM step, npgated's gate order; bug="forget" halves dWh's forget block."""

        def __init__(self, Wx, Wh, b, bug=None):
            self.params = [Wx, Wh, b]
            self.grads = zeros_like_all(self.params)
            self.bug = bug

        def forward(self, x, h_prev, c_prev):
            h, c, self.cache = lstm_step_forward(x, h_prev, c_prev, *self.params)
            return h, c

        def backward(self, dh_next, dc_next):
            Wx, Wh, _ = self.params
            dx, dh, dc, dWx, dWh, db = lstm_step_backward(dh_next, dc_next, self.cache, Wx, Wh)
            if self.bug == "forget":
                H = Wh.shape[0]
                dWh[:, H:2 * H] *= 0.5
            for g, d in zip(self.grads, (dWx, dWh, db)):
                g[...] = d
            return dx, dh, dc


    class BuggyLSTM(MyLSTM):
        def __init__(self, Wx, Wh, b):
            super().__init__(Wx, Wh, b, bug="forget")


    class MyTimeRNN:
        """The book's protocol with state: set_state, h, dh."""

        def __init__(self, Wx, Wh, b, stateful=False):
            self.params = [Wx, Wh, b]
            self.grads = zeros_like_all(self.params)
            self.stateful = stateful
            self.h = self.dh = None

        def set_state(self, h):
            self.h = h

        def reset_state(self):
            self.h = None

        def forward(self, xs):
            N, T, _ = xs.shape
            H = self.params[1].shape[0]
            h = self.h if (self.stateful and self.h is not None) else np.zeros((N, H))
            hs, self.caches = [], []
            for t in range(T):
                h, cache = rnn_step_forward(xs[:, t], h, *self.params)
                hs.append(h)
                self.caches.append(cache)
            self.h = h
            return np.stack(hs, axis=1)

        def backward(self, dhs):
            Wx, Wh, _ = self.params
            dxs = np.empty((dhs.shape[0], dhs.shape[1], Wx.shape[0]))
            dh = np.zeros_like(dhs[:, 0])
            for t in reversed(range(dhs.shape[1])):
                dx, dh, dWx, dWh, db = rnn_step_backward(dhs[:, t] + dh, self.caches[t], Wx, Wh)
                dxs[:, t] = dx
                for g, d in zip(self.grads, (dWx, dWh, db)):
                    g += d
            self.dh = dh
            return dxs


    class Strange:
        def __init__(self, weights):
            self.params, self.grads = [weights], [np.zeros_like(weights)]


    class Raises(MyLSTM):
        def backward(self, dh_next, dc_next):
            raise ValueError("my own mistake")


    def make_layer():
        rng = np.random.default_rng(3)
        Wx, Wh, b = (rng.standard_normal(s) for s in ((4, 12), (3, 12), (12,)))
        inputs = tuple(rng.standard_normal(s) for s in ((2, 4), (2, 3), (2, 3)))
        return BuggyLSTM(Wx, Wh, b), inputs, {"gates": "ifgo"}
    ''')


@pytest.fixture
def user_file(tmp_path):
    (tmp_path / "helpers.py").write_text(
        "import numpy as np\n\n\ndef zeros_like_all(arrays):\n"
        "    return [np.zeros_like(a) for a in arrays]\n"
    )
    path = tmp_path / "my_layers.py"
    path.write_text(USER_FILE)
    return path


def test_a_right_class_passes_built_from_its_signature(user_file, capsys):
    path_before = list(sys.path)
    assert cli.main(["gradcheck", f"{user_file}:MyLSTM"]) == 0
    out = capsys.readouterr().out
    assert "built MyLSTM(Wx (5, 24), Wh (6, 24), b (24,))" in out
    assert "forward(x (3, 5), h_prev (3, 6), c_prev (3, 6))" in out
    assert "all 6 gradients agree" in out
    assert sys.path == path_before  # the file's folder was on sys.path only while importing


def test_a_time_layer_gets_an_initial_state(user_file, capsys):
    assert cli.main(["gradcheck", f"{user_file}:MyTimeRNN"]) == 0
    out = capsys.readouterr().out
    assert "xs (3, 4, 5)" in out and "initial state h0" in out and "dh0" in out


def test_a_wrong_class_exits_1_with_the_block_named(user_file, capsys):
    assert cli.main(["gradcheck", f"{user_file}:BuggyLSTM"]) == 1
    out = capsys.readouterr().out
    assert "dWh, block 2: rel. error" in out and "--gates" not in out  # unnamed: numbered
    assert "pass gates='ifgo'" in out
    assert cli.main(["gradcheck", f"{user_file}:BuggyLSTM", "--gates", "ifgo"]) == 1
    out = capsys.readouterr().out
    assert "dWh, block f (forget gate)" in out and "exactly 0.5x" in out


def test_a_factory_and_a_pair_of_step_functions(user_file, capsys):
    assert cli.main(["gradcheck", f"{user_file}:make_layer"]) == 1
    out = capsys.readouterr().out
    assert "make_layer() built BuggyLSTM" in out and "block f (forget gate)" in out
    assert cli.main(["gradcheck", f"{user_file}:lstm_step_forward,lstm_step_backward"]) == 0
    assert "gradient check of lstm_step_backward: all 6 gradients agree" in capsys.readouterr().out


@pytest.mark.parametrize(
    "target, message",
    [
        ("{f}:Strange", "cannot infer the shape of Strange.__init__'s argument 'weights'"),
        (
            "{f}:Nope",
            "has no 'Nope'; it defines: BuggyLSTM, MyLSTM, MyTimeRNN, Raises, Strange, make_layer",
        ),
        ("{f}:", "name what to check after the colon"),
        ("missing.py:MyLSTM", "missing.py: no such file"),
        ("everything", "unknown target 'everything'"),
    ],
)
def test_unusable_targets_exit_2_with_one_line(user_file, capsys, target, message):
    assert cli.main(["gradcheck", target.format(f=user_file)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_the_users_code_raising_exits_1_with_its_traceback(user_file, capsys):
    assert cli.main(["gradcheck", f"{user_file}:Raises"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: my own mistake" in err
    assert "npgated: Raises raised ValueError: my own mistake" in err


def test_the_suites_still_refuse_gates(capsys):
    assert cli.main(["gradcheck", "layers", "--gates", "ifgo"]) == 2
    assert "--gates is for FILE.py:NAME" in capsys.readouterr().err


def test_split_target():
    assert usercode.split_target("layers") is None
    assert usercode.split_target("a/b.py:C") == (usercode.Path("a/b.py"), "C")
