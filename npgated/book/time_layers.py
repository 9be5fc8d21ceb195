"""The book's ``common/time_layers.py``, computed by npgated's layers: a drop-in.

Replace, in a model file of "Deep Learning from Scratch 2" (``ch06/rnnlm.py``,
``ch07/seq2seq.py``, ...), the line::

    from common.time_layers import *

by::

    from npgated.book.time_layers import *

and the book's scripts train the same model with npgated's layers: the same names,
constructor and method signatures, the same parameter layout (so the model file's arrays,
its pickles and the book's optimizers stay as they are), and the book's semantics where they
differ from npgated's own layers:

* **gate order**: the LSTM's ``Wx`` (D, 4H), ``Wh`` (H, 4H), ``b`` (4H,) hold the gate blocks
  in the book's order f, g, i, o (npgated's own ``TimeLSTM``: i, f, g, o); the GRU's hold the
  book's z, r, h~ with the book's ``h_next = (1 - z) * h_prev + z * h~`` (npgated's: r, z, n
  and ``h_next = z * h_prev + (1 - z) * n``, whose z is the book's 1 - z);
* **overwrite**: after ``backward``, ``grads`` hold this call's gradient only (npgated's
  own layers add to them, and its training loop zeroes them first; the book's trainers never
  zero, so npgated's own layers swapped into the book's code would train on the running sum
  of every gradient so far, without any error);
* **state**: ``stateful``, ``h`` (and ``c``), ``set_state``, ``reset_state`` and ``dh`` as the
  book has them: a layer that is not stateful starts every forward from zeros, even after
  ``set_state``; a stateful one from the last state (or the one set).

How each layer computes (see :mod:`npgated.book._adapter` for O1, O2, P1, P2):

====================================  ==================================  ================
book                                  computed by (npgated)               adapter
====================================  ==================================  ================
``RNN``, ``TimeRNN``                  ``layers.rnn.RNN``, ``TimeRNN``     same arrays
``LSTM``, ``TimeLSTM``                ``layers.lstm.LSTM``, ``TimeLSTM``  gates permuted
``GRU``, ``TimeGRU``                  ``layers.gru`` (reset_after=False)  permuted, z signed
``TimeEmbedding``                     ``layers.embedding.TimeEmbedding``  same arrays
``TimeAffine``                        ``layers.affine.TimeAffine``        same arrays
``TimeSoftmaxWithLoss``               ``layers.loss.TimeSoftmaxWithLoss`` (no parameters)
``TimeDropout``                       ``layers.dropout.TimeDropout``      (no parameters)
``TimeBiLSTM``                        ``layers.bidirectional``            gates permuted
``Affine``, ``Embedding``, ...        see :mod:`npgated.book.layers`
====================================  ==================================  ================

The attention layers of chapter 8 are in :mod:`npgated.book.attention_layer`.

``np``: the book's model files take ``np`` from this star-import (the book's
``common.time_layers`` re-exports ``common.np``). Here it is the array module of npgated's
active backend (``NPGATED_BACKEND=cupy`` or ``npgated.backend.use("cupy")`` for CuPy), looked
up at each use. The layers themselves compute wherever their arrays live.

Differences that remain: ``TimeDropout`` draws its masks from its own generator
(``seed=``), not from the global ``np.random`` (same distribution, other draws); every layer
computes in its arrays' dtype (the book allocates float32 whatever the data);
``TimeSoftmaxWithLoss`` needs the targets' ids in range (the book's would index with a wrong
id silently).
"""

from __future__ import annotations

from npgated import backend
from npgated.book._adapter import (
    GRU_GATES,
    LSTM_GATES,
    BookLayer,
    Permuted,
    Shared,
    full_like_state,
)
from npgated.book.layers import Affine, Dropout, Embedding, SoftmaxWithLoss
from npgated.layers import affine, bidirectional, dropout, embedding, gru, loss, lstm, rnn

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Affine",
    "Dropout",
    "Embedding",
    "SoftmaxWithLoss",
    "TimeAffine",
    "TimeBiLSTM",
    "TimeDropout",
    "TimeEmbedding",
    "TimeGRU",
    "TimeLSTM",
    "TimeRNN",
    "TimeSoftmaxWithLoss",
    "np",
]


class _ActiveArrayModule:
    """The array module of npgated's active backend, looked up at every attribute access."""

    def __getattr__(self, name):
        return getattr(backend.xp(), name)

    def __repr__(self) -> str:
        return f"<npgated.book np: the {backend.current()} array module>"


#: ``np`` for the book's model files (``np.random.randn``, ``np.zeros``, ``np.sqrt``, ...)
np = _ActiveArrayModule()


# ---------------------------------------------------------------------------------------
# Single-step cells
# ---------------------------------------------------------------------------------------
class RNN(Shared):
    """The book's ``RNN(Wx, Wh, b)``: one step ``h_next = tanh(x @ Wx + h_prev @ Wh + b)``.

    :class:`npgated.layers.rnn.RNN` on the arrays given; ``backward`` overwrites ``grads``.
    """

    def __init__(self, Wx, Wh, b):
        super().__init__(rnn.RNN(Wx, Wh, b))

    def forward(self, x, h_prev):
        """x (N, D), h_prev (N, H) -> h_next (N, H)."""
        return self.layer.forward(x, h_prev)

    def backward(self, dh_next):
        """dh_next (N, H) -> (dx (N, D), dh_prev (N, H)); ``grads`` of this call."""
        return self._backward(dh_next)


class LSTM(Permuted):
    """The book's ``LSTM(Wx, Wh, b)``: one step, gate blocks f, g, i, o.

    Parameters
    ----------
    Wx : (D, 4H) array
    Wh : (H, 4H) array
    b : (4H,) array
        Gate blocks in the book's order f, g, i, o.

    Notes
    -----
    :class:`npgated.layers.lstm.LSTM` (lstm_step_forward/backward, F1-F4, B1-B11) on the
    gate-permuted copies P1, refreshed every forward; ``backward`` writes ``grads`` back in
    the book's layout (P2). ``dc_next`` may be the number 0, as the book's TimeLSTM passes.
    """

    def __init__(self, Wx, Wh, b):
        super().__init__((Wx, Wh, b), LSTM_GATES, lstm.LSTM)

    def forward(self, x, h_prev, c_prev):
        """x (N, D), h_prev (N, H), c_prev (N, H) -> (h_next, c_next), (N, H) each."""
        self._refresh()  # P1
        return self.layer.forward(x, h_prev, c_prev)

    def backward(self, dh_next, dc_next):
        """(dh_next, dc_next) -> (dx (N, D), dh_prev (N, H), dc_prev (N, H))."""
        return self._backward(dh_next, full_like_state(dc_next, dh_next))


class GRU(Permuted):
    """The book's ``GRU(Wx, Wh, b)``: one step, blocks z, r, h~, ``h = (1-z) h + z h~``.

    Parameters
    ----------
    Wx : (D, 3H) array
    Wh : (H, 3H) array
    b : (3H,) array
        Blocks in the book's order z (update), r (reset), h~ (candidate).

    Notes
    -----
    :class:`npgated.layers.gru.GRU` with ``reset_after=False`` (the reset gate before the
    product, as the book's ``(r * h_prev) @ Whh``) on the copies P1 of
    :data:`~npgated.book._adapter.GRU_GATES`: r and h~ as they are, z negated (npgated's z is
    the book's 1 - z = sigma(-a_z)).
    """

    def __init__(self, Wx, Wh, b):
        super().__init__((Wx, Wh, b), GRU_GATES, gru.GRU)

    def forward(self, x, h_prev):
        """x (N, D), h_prev (N, H) -> h_next (N, H)."""
        self._refresh()  # P1
        return self.layer.forward(x, h_prev)

    def backward(self, dh_next):
        """dh_next (N, H) -> (dx (N, D), dh_prev (N, H))."""
        return self._backward(dh_next)


# ---------------------------------------------------------------------------------------
# Time layers with the book's truncated-BPTT state
# ---------------------------------------------------------------------------------------
class _BookState:
    """The book's state rules, kept in the book's attributes and handed to npgated's layer.

    ``h`` (and ``c``), ``dh``, ``stateful``, ``set_state``, ``reset_state`` as in the book:
    a forward starts from ``h`` (``c``) when the layer is stateful and it is set, else from
    zeros (each of h and c on its own), and leaves the last state in ``h`` (``c``).
    """

    has_cell = False

    def _init_state(self, stateful):
        self.stateful = stateful
        self.h, self.dh = None, None
        if self.has_cell:
            self.c = None

    def set_state(self, h, c=None):
        """Start the next forward from ``h`` (and ``c``; zeros if None) when stateful."""
        self.h = h
        if self.has_cell:
            self.c = c
        elif c is not None:
            raise TypeError(f"{type(self).__name__} has no memory cell: set_state(h)")

    def reset_state(self):
        """Forget the state: the next forward starts from zeros."""
        self.h = None
        if self.has_cell:
            self.c = None

    def _hand_state(self):
        """Give npgated's layer this forward's initial state (the book's rule).

        npgated's layer is stateful itself: when the book's ``h`` (and ``c``) are still the
        arrays it left after its last forward, it carries them on without being told (no
        ``set_state`` and its checks at every step of the book's one-token generation).
        """
        layer = self.layer
        h = self.h if self.stateful else None
        c = self.c if self.stateful and self.has_cell else None
        if h is None and c is None:
            layer.reset_state()  # zeros
        elif h is layer.h and (not self.has_cell or c is layer.c):
            return  # its own last state: carried by npgated's stateful layer
        elif self.has_cell:
            layer.set_state(backend.get_array_module(c).zeros_like(c) if h is None else h, c)
        else:
            layer.set_state(h)

    def _take_state(self):
        self.h = self.layer.h
        if self.has_cell:
            self.c = self.layer.c

    def _forward_time(self, xs):
        self._hand_state()
        hs = self.layer.forward(xs)
        self._take_state()
        return hs

    def _backward_time(self, dhs):
        dxs = self._backward(dhs)
        self.dh = self.layer.dh
        if self.has_cell:
            self.dc = self.layer.dc
        return dxs


def _stateful(cls):
    """A builder of npgated's Time layer ``cls`` that carries its state (see _hand_state)."""
    return lambda Wx, Wh, b: cls(Wx, Wh, b, stateful=True)


class TimeRNN(_BookState, Shared):
    """The book's ``TimeRNN(Wx, Wh, b, stateful=False)`` over (N, T, D) inputs.

    :class:`npgated.layers.rnn.TimeRNN` on the arrays given. After ``backward``, ``grads``
    hold this call's gradients and ``dh`` is dL/dh_0, (N, H).
    """

    def __init__(self, Wx, Wh, b, stateful=False):
        Shared.__init__(self, rnn.TimeRNN(Wx, Wh, b, stateful=True))
        self._init_state(stateful)

    def forward(self, xs):
        """xs (N, T, D) -> hs (N, T, H)."""
        return self._forward_time(xs)

    def backward(self, dhs):
        """dhs (N, T, H) -> dxs (N, T, D)."""
        return self._backward_time(dhs)


class TimeLSTM(_BookState, Permuted):
    """The book's ``TimeLSTM(Wx, Wh, b, stateful=False)``, gate blocks f, g, i, o.

    Parameters
    ----------
    Wx : (D, 4H) array
    Wh : (H, 4H) array
    b : (4H,) array
        In the book's gate order f, g, i, o; these arrays are ``params`` (the book's
        optimizer updates them in place).
    stateful : bool

    Notes
    -----
    :class:`npgated.layers.lstm.TimeLSTM` (F0-F4, K1-K2, B0-B11 there) on the gate-permuted
    copies P1, refreshed every forward; ``backward`` writes this call's gradients into
    ``grads`` in the book's layout (O1, O2, P2) and sets ``dh`` = dL/dh_0 (and ``dc`` =
    dL/dc_0, which the book does not have).
    """

    has_cell = True

    def __init__(self, Wx, Wh, b, stateful=False):
        Permuted.__init__(self, (Wx, Wh, b), LSTM_GATES, _stateful(lstm.TimeLSTM))
        self._init_state(stateful)
        self.dc = None

    def forward(self, xs):
        """xs (N, T, D) -> hs (N, T, H)."""
        self._refresh()  # P1
        return self._forward_time(xs)

    def backward(self, dhs):
        """dhs (N, T, H) -> dxs (N, T, D)."""
        return self._backward_time(dhs)


class TimeGRU(_BookState, Permuted):
    """The book's ``TimeGRU(Wx, Wh, b, stateful=False)``, blocks z, r, h~.

    :class:`npgated.layers.gru.TimeGRU` (``reset_after=False``) on the copies P1 of
    :data:`~npgated.book._adapter.GRU_GATES` (z negated: npgated's z is the book's 1 - z);
    ``grads`` in the book's layout (P2), ``dh`` = dL/dh_0.
    """

    def __init__(self, Wx, Wh, b, stateful=False):
        Permuted.__init__(self, (Wx, Wh, b), GRU_GATES, _stateful(gru.TimeGRU))
        self._init_state(stateful)

    def forward(self, xs):
        """xs (N, T, D) -> hs (N, T, H)."""
        self._refresh()  # P1
        return self._forward_time(xs)

    def backward(self, dhs):
        """dhs (N, T, H) -> dxs (N, T, D)."""
        return self._backward_time(dhs)


# ---------------------------------------------------------------------------------------
# The rest of a language model
# ---------------------------------------------------------------------------------------
class TimeBiLSTM(Permuted):
    """The book's ``TimeBiLSTM(Wx1, Wh1, b1, Wx2, Wh2, b2, stateful=False)``, gates f, g, i, o.

    Parameters
    ----------
    Wx1, Wh1, b1 : (D, 4H), (H, 4H), (4H,) arrays
        The forward direction's LSTM, in the book's gate order f, g, i, o.
    Wx2, Wh2, b2 : the same shapes
        The backward direction's, run over the reversed sequence.
    stateful : bool
        Only False (the book's default; no script of the book sets it) is accepted: a
        bidirectional layer cannot carry a state from one window to the next, and npgated's
        :class:`~npgated.layers.bidirectional.TimeBidirectional` says so.

    Notes
    -----
    :class:`npgated.layers.bidirectional.TimeBiLSTM` (F1-F3, B1-B3 there: the forward
    states first, then the backward direction's, both by input position, as the book
    concatenates them) on the gate-permuted copies P1 of the six arrays; ``grads`` hold this
    call's six gradients in the book's layout (O1, O2, P2).
    """

    param_names = ("Wx1", "Wh1", "b1", "Wx2", "Wh2", "b2")

    def __init__(self, Wx1, Wh1, b1, Wx2, Wh2, b2, stateful=False):
        def make(*own):
            return bidirectional.TimeBiLSTM(*own, stateful=stateful)

        super().__init__((Wx1, Wh1, b1, Wx2, Wh2, b2), LSTM_GATES, make)

    def forward(self, xs):
        """xs (N, T, D) -> hs (N, T, 2H): [forward states | backward states]."""
        self._refresh()  # P1
        return self.layer.forward(xs)

    def backward(self, dhs):
        """dhs (N, T, 2H) -> dxs (N, T, D)."""
        return self._backward(dhs)


class TimeEmbedding(Shared):
    """The book's ``TimeEmbedding(W)``: ``out[n, t] = W[xs[n, t]]``.

    :class:`npgated.layers.embedding.TimeEmbedding` on the array given (one scatter-add over
    all N * T positions); ``backward`` overwrites ``grads[0]`` and returns None.
    """

    def __init__(self, W):
        super().__init__(embedding.TimeEmbedding(W))
        self.W = W

    def forward(self, xs):
        """xs (N, T) integer ids -> (N, T, D)."""
        return self.layer.forward(xs)

    def backward(self, dout):
        """dout (N, T, D) -> None; ``grads[0]`` = dW of this call."""
        return self._backward(dout)


class TimeAffine(Shared):
    """The book's ``TimeAffine(W, b)``: ``out[:, t] = xs[:, t] @ W + b``, one GEMM.

    :class:`npgated.layers.affine.TimeAffine` on the arrays given; the book's tying
    ``TimeAffine(embed_W.T, b)`` keeps the transposed view as ``params[0]`` and has a
    gradient of its own, which the book's ``remove_duplicate`` adds to the embedding's.
    """

    def __init__(self, W, b):
        super().__init__(affine.TimeAffine(W, b))

    def forward(self, x):
        """x (N, T, D) -> (N, T, M)."""
        return self.layer.forward(x)

    def backward(self, dout):
        """dout (N, T, M) -> dx (N, T, D); ``grads`` = [dW, db] of this call."""
        return self._backward(dout)


class TimeSoftmaxWithLoss(BookLayer):
    """The book's ``TimeSoftmaxWithLoss()``: mean cross-entropy over all (n, t) targets.

    Targets equal to ``ignore_label`` (-1, as in the book) are left out of the mean; one-hot
    targets (N, T, V) are converted with ``argmax``, as the book does. Computed by
    :class:`npgated.layers.loss.TimeSoftmaxWithLoss` (F1-F5, B1-B3 there).
    """

    def __init__(self):
        super().__init__()
        self.layer = loss.TimeSoftmaxWithLoss(ignore_label=-1)

    @property
    def ignore_label(self):
        return self.layer.ignore_label

    @ignore_label.setter
    def ignore_label(self, value):
        self.layer.ignore_label = None if value is None else int(value)

    def forward(self, xs, ts):
        """xs (N, T, V) scores, ts (N, T) ids or (N, T, V) one-hot -> scalar loss."""
        if ts.ndim == 3:
            ts = ts.argmax(axis=2)
        return self.layer.forward(xs, ts)

    def backward(self, dout=1):
        """-> dxs (N, T, V)."""
        return self.layer.backward(dout)


class TimeDropout(BookLayer):
    """The book's ``TimeDropout(dropout_ratio=0.5)``: inverted dropout, a mask per element.

    ``train_flg`` (the book's switch, set by its ``BetterRnnlm.predict``) is npgated's
    ``training``. Computed by :class:`npgated.layers.dropout.TimeDropout` with
    ``variational=False`` (a fresh mask for every (n, t, d), as the book draws it), from the
    layer's own generator (``seed``), not from the global ``np.random``.
    """

    def __init__(self, dropout_ratio=0.5, *, seed=None):
        super().__init__()
        self.layer = dropout.TimeDropout(dropout_ratio, variational=False, seed=seed)

    @property
    def dropout_ratio(self) -> float:
        return self.layer.dropout_ratio

    @property
    def train_flg(self) -> bool:
        return self.layer.training

    @train_flg.setter
    def train_flg(self, value):
        self.layer.train(bool(value))

    def forward(self, xs):
        """xs (N, T, D) -> (N, T, D)."""
        return self.layer.forward(xs)

    def backward(self, dout):
        """dout (N, T, D) -> dxs."""
        return self.layer.backward(dout)
