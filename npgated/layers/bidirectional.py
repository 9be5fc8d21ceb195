"""Bidirectional recurrent layers: one Time layer forward in time, one over the reversed sequence.

Schuster & Paliwal, "Bidirectional recurrent neural networks", IEEE Trans. Signal Processing
45 (1997); the bidirectional LSTM encoder of Bahdanau, Cho & Bengio (ICLR 2015), which the
book ("Deep Learning from Scratch 2", chapter 8) offers as an improvement of its attention
encoder with ``TimeBiLSTM``.

The layers are *compositions* of the existing Time layers, not copies of them: every
equation of a direction is that layer's own (see :mod:`npgated.layers.lstm` and
:mod:`npgated.layers.gru`); this module adds the reversal and the concatenation.

* :class:`TimeBidirectional` -- any two Time layers of one input size (TimeRNN, TimeLSTM,
  TimeGRU, with whatever options they were built with, e.g. ``recurrent_dropout``);
* :class:`TimeBiLSTM` -- the book's name and signature, ``TimeBiLSTM(Wx1, Wh1, b1, Wx2, Wh2,
  b2)``: two ``TimeLSTM`` (gate blocks i, f, g, o, npgated's order);
* :class:`TimeBiGRU` -- the same with two ``TimeGRU`` (``reset_after`` passed to both).

The output is (N, T, 2H): ``[:, :, :H]`` the forward direction's states, ``[:, :, H:]`` the
backward direction's, both indexed by the input position t, as ``torch.nn.LSTM(...,
bidirectional=True)`` lays them out. Final and initial states are stacked (2, N, H) like
torch's ``h_n`` of one bidirectional layer: index 0 the forward direction, 1 the backward.

Shapes: N batch, T time steps, D input size, H hidden size (of each direction).
"""

from __future__ import annotations

from npgated import backend, checks
from npgated.layers.base import Layer
from npgated.layers.gru import TimeGRU
from npgated.layers.lstm import TimeLSTM
from npgated.layers.recurrent import RecurrentLayer

__all__ = ["TimeBiGRU", "TimeBiLSTM", "TimeBidirectional"]


def _flip(xs):
    """Reverse the time axis of an (N, T, ...) array (a view)."""
    return xs[:, ::-1]


class TimeBidirectional(Layer):
    """A forward-in-time and a backward-in-time Time layer over one sequence, concatenated.

    Parameters
    ----------
    forward_layer : TimeRNN, TimeLSTM or TimeGRU
        Runs over t = 0, ..., T-1.
    backward_layer : the same kind
        Runs over the reversed sequence, t = T-1, ..., 0. Same input size D, hidden size H
        and dtype as ``forward_layer``; neither may be ``stateful`` (the backward direction
        of a window would need the next window's inputs, so no state can be carried).

    Attributes
    ----------
    params, grads : lists
        ``forward_layer.params + backward_layer.params`` (the very arrays) and their grads.
    param_names : tuple of str
        The layers' names with 1 (forward) and 2 (backward): ``("Wx1", "Wh1", "b1", "Wx2",
        "Wh2", "b2")``.
    h : (2, N, H) array or None
        After forward: [forward direction's h after step T-1, backward direction's h after
        step 0], like torch's ``h_n``. Likewise ``c`` when the layers have a memory cell.
    dh : (2, N, H) array or None
        After backward: the gradient w.r.t. the initial states of the two directions (the
        forward one enters at t = 0, the backward one at t = T-1); likewise ``dc``.

    Notes
    -----
    Forward, with fwd and bwd the two layers' own forwards and flip the reversal of the time
    axis (``xs[:, ::-1]``)::

        F1  hs_f = fwd(xs)                              (N, T, H)
        F2  hs_b = flip(bwd(flip(xs)))                  (N, T, H), indexed by input position
        F3  hs = [hs_f | hs_b]                          (N, T, 2H), concatenated on the last axis

    Backward, given dhs (N, T, 2H), with fwd' and bwd' the layers' own backwards (which also
    accumulate their parameters' gradients)::

        B1  dhs_f = dhs[:, :, :H];  dhs_b = dhs[:, :, H:]       F3 in reverse
        B2  dxs_f = fwd'(dhs_f);  dxs_b = flip(bwd'(flip(dhs_b)))   F1, F2 in reverse
        B3  dxs = dxs_f + dxs_b                         xs feeds both directions

    B2 flips twice because flip is its own inverse and its own transpose: the gradient of
    ``y = flip(x)`` is ``dx = flip(dy)``.

    Padding: the backward direction starts at position T-1. In a batch of sequences padded
    at the end it reads the padding first, so the padding reaches the backward states of the
    valid positions (``torch.nn.utils.rnn.pack_padded_sequence`` exists to avoid this; there
    is no equivalent here). A mask on the attention over these states keeps the padded
    *states* out, not what the recurrence carried from them.
    """

    def __init__(self, forward_layer, backward_layer):
        for name, layer in (("forward_layer", forward_layer), ("backward_layer", backward_layer)):
            if not isinstance(layer, RecurrentLayer):
                raise TypeError(
                    f"{name} must be a TimeRNN, TimeLSTM or TimeGRU, got {type(layer).__name__}"
                )
            if layer.stateful:
                raise ValueError(
                    f"{name} is stateful: a bidirectional layer carries no state across "
                    "windows (its backward direction would need the next window); build it "
                    "with stateful=False"
                )
        if type(forward_layer) is not type(backward_layer):
            raise TypeError(
                "both directions must be the same kind of layer, got "
                f"{type(forward_layer).__name__} and {type(backward_layer).__name__}"
            )
        for what in ("input_size", "hidden_size", "dtype"):
            a, b = getattr(forward_layer, what), getattr(backward_layer, what)
            if a != b:
                raise ValueError(
                    f"the two directions must have one {what}, got {a} (forward) and {b} (backward)"
                )
        if backend.get_array_module(forward_layer.params[0]) is not backend.get_array_module(
            backward_layer.params[0]
        ):
            raise TypeError("the two directions' parameters live on different backends")
        super().__init__()
        self.forward_layer = forward_layer
        self.backward_layer = backward_layer
        self.params = forward_layer.params + backward_layer.params
        self.param_names = tuple(f"{n}1" for n in forward_layer.param_names) + tuple(
            f"{n}2" for n in backward_layer.param_names
        )
        self.grads = forward_layer.grads + backward_layer.grads
        self.has_cell = forward_layer.has_cell
        self.h = self.dh = None
        if self.has_cell:
            self.c = self.dc = None
        self._hidden = forward_layer.hidden_size
        self._out_shape = None  # (N, T, 2H) of the last forward, until its backward

    # -- sizes, mode ----------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        """D, the size of one input vector."""
        return self.forward_layer.input_size

    @property
    def hidden_size(self) -> int:
        """H, the hidden size of *each* direction (the output has 2H features)."""
        return self._hidden

    @property
    def stateful(self) -> bool:
        """Always False (see the class docstring)."""
        return False

    def train(self, mode: bool = True):
        """Switch both directions (and this layer) to training mode; returns ``self``."""
        super().train(mode)
        self.forward_layer.train(mode)
        self.backward_layer.train(mode)
        return self

    def rebind(self, params, grads) -> None:
        """Compute with new parameter and gradient arrays (e.g. views of one flat buffer).

        The first ``len(forward_layer.params)`` go to the forward direction, the rest to the
        backward one; ``params``/``grads`` stay the concatenation of the two layers' lists.
        """
        params, grads = list(params), list(grads)
        k = len(self.forward_layer.params)
        self.forward_layer.rebind(params[:k], grads[:k])
        self.backward_layer.rebind(params[k:], grads[k:])
        self.params = self.forward_layer.params + self.backward_layer.params
        self.grads = self.forward_layer.grads + self.backward_layer.grads

    # -- state ----------------------------------------------------------------------------
    def set_state(self, h, c=None) -> None:
        """Start the next forward of each direction from the given state.

        Parameters
        ----------
        h : (2, N, H) array
            ``h[0]`` the forward direction's initial state (before t = 0), ``h[1]`` the
            backward direction's (before it reads t = T-1), as torch's ``h_0``.
        c : (2, N, H) array, optional
            Likewise for the memory cells (LSTM only); zeros if omitted.
        """
        checks.check_float(h, "h", ndim=3, dtype=self.dtype, symbolic="(2, N, H)")
        checks.check_shape(h, (2, None, self._hidden), "h")
        if c is not None:
            checks.check_float(c, "c", ndim=3, dtype=self.dtype, symbolic="(2, N, H)")
            checks.check_shape(c, h.shape, "c")
        self.forward_layer.set_state(h[0], None if c is None else c[0])
        self.backward_layer.set_state(h[1], None if c is None else c[1])

    def reset_state(self) -> None:
        """Forget any given state: the next forward starts both directions from zeros."""
        self.forward_layer.reset_state()
        self.backward_layer.reset_state()

    def _stack(self, name):
        """[forward layer's attribute, backward layer's] as one (2, N, H) array."""
        a, b = getattr(self.forward_layer, name), getattr(self.backward_layer, name)
        return backend.get_array_module(a).stack([a, b])

    # -- forward / backward -----------------------------------------------------------------
    def forward(self, xs):
        """
        Parameters
        ----------
        xs : (N, T, D) array

        Returns
        -------
        hs : (N, T, 2H) array
            ``hs[:, t, :H]`` the forward direction's state at t, ``hs[:, t, H:]`` the backward
            direction's. ``self.h`` (and ``self.c``) are the final states, (2, N, H).
        """
        xp = backend.get_array_module(xs)
        hs_f = self.forward_layer.forward(xs)  # F1
        hs_b = _flip(self.backward_layer.forward(_flip(xs)))  # F2
        self.h = self._stack("h")
        if self.has_cell:
            self.c = self._stack("c")
        hs = xp.concatenate([hs_f, hs_b], axis=2)  # F3
        self._out_shape = tuple(hs.shape)
        return hs

    def backward(self, dhs):
        """
        Parameters
        ----------
        dhs : (N, T, 2H) array

        Returns
        -------
        dxs : (N, T, D) array
            Also: adds both directions' parameter gradients to ``grads``; sets ``dh`` (and
            ``dc``), (2, N, H), the gradients w.r.t. the two initial states.
        """
        if self._out_shape is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward called before forward (or twice for one "
                "forward): call forward in training mode first"
            )
        H = self._hidden
        checks.check_float(dhs, "dhs", ndim=3, dtype=self.dtype, symbolic="(N, T, 2H)")
        if tuple(dhs.shape) != self._out_shape:
            raise ValueError(
                f"dhs must have shape (N, T, 2H) = {checks.shape_str(self._out_shape)}, that "
                f"of the forward's output, got {checks.shape_str(dhs.shape)}"
            )
        self._out_shape = None  # consumed: a second backward for this forward raises
        dhs_f, dhs_b = dhs[:, :, :H], dhs[:, :, H:]  # B1
        dxs_f = self.forward_layer.backward(dhs_f)  # B2
        dxs_b = _flip(self.backward_layer.backward(_flip(dhs_b)))  # B2
        self.dh = self._stack("dh")
        if self.has_cell:
            self.dc = self._stack("dc")
        return dxs_f + dxs_b  # B3

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.forward_layer!r}, {self.backward_layer!r})"


class TimeBiLSTM(TimeBidirectional):
    """The book's bidirectional LSTM: ``TimeBiLSTM(Wx1, Wh1, b1, Wx2, Wh2, b2)``.

    Parameters
    ----------
    Wx1, Wh1, b1 : (D, 4H), (H, 4H), (4H,) arrays
        The forward direction's :class:`~npgated.layers.lstm.TimeLSTM` (gate blocks i, f, g,
        o: npgated's and PyTorch's order; the book packs f, g, i, o).
    Wx2, Wh2, b2 : the same shapes
        The backward direction's TimeLSTM, run over the reversed sequence.
    stateful : bool
        Only False (the book's default) is accepted: see :class:`TimeBidirectional`.

    Attributes
    ----------
    forward_lstm, backward_lstm : TimeLSTM
        The two directions (the book's names; also ``forward_layer``, ``backward_layer``).
    h, c, dh, dc : (2, N, H) arrays
        See :class:`TimeBidirectional`.

    Notes
    -----
    The equations are :class:`TimeBidirectional`'s F1..F3, B1..B3, with fwd and bwd the two
    TimeLSTMs (whose own equations are in :mod:`npgated.layers.lstm`). ``params`` are the six
    arrays given, in the order given; ``param_names`` = ``("Wx1", "Wh1", "b1", "Wx2", "Wh2",
    "b2")``.
    """

    param_names = ("Wx1", "Wh1", "b1", "Wx2", "Wh2", "b2")

    def __init__(self, Wx1, Wh1, b1, Wx2, Wh2, b2, stateful: bool = False):
        super().__init__(TimeLSTM(Wx1, Wh1, b1, stateful), TimeLSTM(Wx2, Wh2, b2, stateful))

    @property
    def forward_lstm(self) -> TimeLSTM:
        return self.forward_layer

    @property
    def backward_lstm(self) -> TimeLSTM:
        return self.backward_layer


class TimeBiGRU(TimeBidirectional):
    """A bidirectional GRU: ``TimeBiGRU(Wx1, Wh1, b1, Wx2, Wh2, b2, reset_after=False)``.

    Parameters
    ----------
    Wx1, Wh1, b1 : (D, 3H), (H, 3H), (3H,) arrays (b1 (2, 3H) for ``reset_after=True``)
        The forward direction's :class:`~npgated.layers.gru.TimeGRU` (gate blocks r, z, n).
    Wx2, Wh2, b2 : the same shapes
        The backward direction's TimeGRU, run over the reversed sequence.
    stateful : bool
        Only False is accepted: see :class:`TimeBidirectional`.
    reset_after : bool
        Passed to both TimeGRUs (True: cuDNN / ``torch.nn.GRU``; False: Cho et al. / d2l).

    Attributes
    ----------
    forward_gru, backward_gru : TimeGRU
        The two directions (also ``forward_layer``, ``backward_layer``).
    h, dh : (2, N, H) arrays
        See :class:`TimeBidirectional`.

    Notes
    -----
    The equations are :class:`TimeBidirectional`'s F1..F3, B1..B3, with fwd and bwd the two
    TimeGRUs (whose own equations are in :mod:`npgated.layers.gru`).
    """

    param_names = ("Wx1", "Wh1", "b1", "Wx2", "Wh2", "b2")

    def __init__(
        self, Wx1, Wh1, b1, Wx2, Wh2, b2, stateful: bool = False, reset_after: bool = False
    ):
        super().__init__(
            TimeGRU(Wx1, Wh1, b1, stateful, reset_after),
            TimeGRU(Wx2, Wh2, b2, stateful, reset_after),
        )
        self.reset_after = bool(reset_after)

    @property
    def forward_gru(self) -> TimeGRU:
        return self.forward_layer

    @property
    def backward_gru(self) -> TimeGRU:
        return self.backward_layer
