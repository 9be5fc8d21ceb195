"""One token at a time through a language model, in preallocated buffers.

Sampling text needs the model one step at a time: N = 1 sequence, T = 1 token, then the
next token depends on the draw. ``model.predict`` on a (1, 1) batch computes the right
numbers but is built for (N, T) windows: every call allocates the Time layers' (N, T + 1, H)
state and gate arrays, the embedding rows, the (1, 1, V) logits and the copies of the
state, and validates its inputs again. :class:`Stepper` computes the same function for one
token with every array allocated once, when it is built:

* the input of the first recurrent layer is a view of the embedding row ``E[token]``
  (TimeEmbedding's F1 without the copy that fancy indexing makes);
* per recurrent layer the state h (and c) as (H,) vectors, its gate pre-activations and
  the scratch of the cell equations, each written with ``out=`` or in place;
* the (V,) logits of the output layer, ``h @ W + b`` (``h @ E.T + b`` when tied).

Each step then calls only NumPy functions that write into these buffers. Scalars that
enter a NumPy operation are preallocated 0-d arrays (``half``): NumPy turns a Python float
operand into a fresh 0-d array on every call, and no buffer at all is the point here.

The equations are the layers' own: each cell below follows its module's step function,
with the same tags (``lstm_step_forward`` F1-F4 in :mod:`npgated.layers.lstm`,
``gru_step_forward`` F0-F5 for either ``reset_after`` variant in :mod:`npgated.layers.gru`,
``rnn_step_forward`` F1-F2 in :mod:`npgated.layers.rnn`), gate blocks in the layers' order
(LSTM i, f, g, o; GRU r, z, n), evaluated at N = 1 on 1-D vectors. The step functions
themselves allocate their results and a backward cache, and are left as the readable
reference; the Time layers' eval-mode loops are the same arithmetic on (N, T) arrays. The
tests hold the stepper to ``model.predict`` on the whole sequence (float64, 1e-12) for
every cell.

What the stepper computes is the model in eval mode (``model.eval()``): dropout, embedding
dropout, recurrent dropout and weight drop are identities there, and AR / TAR only watch.
It reads the arrays in the layers' ``params`` at construction (the very arrays, no
copies), so an in-place change of a parameter reaches the next step; a layer whose
parameter array is *replaced* needs a new Stepper.

The recurrent state
-------------------
While stepping, the state lives in the stepper's buffers, not in the layers:
:meth:`Stepper.load_state` copies each layer's carried state ``h`` (and ``c``) in (zeros
where none is carried), :meth:`Stepper.step` advances the buffers only, and
:meth:`Stepper.store_state` writes them back with ``layer.set_state`` so that a later
``model.predict`` continues from where the stepper stopped. Until ``store_state`` the
layers keep the state they had at ``load_state``. (Writing into the layers' ``h`` arrays
in place would keep them in sync for free, but a ``predict`` in between replaces those
arrays and would silently detach the stepper; the explicit hand-over cannot go stale.)

Backends
--------
Every operation goes through ``xp = backend.get_array_module(params)``, so the stepper runs
on NumPy, on CuPy and on the project's stand-in; the buffers live with the parameters.
The "no allocation per token" guarantee is NumPy's (measured there with NumPy's allocation
tracing): on a GPU each step is some twenty small kernel launches and the host sampler of
:mod:`npgated.models.generation` copies the (V,) logits to the host once per token, which
the stepper does not try to avoid.

Models it steps: :class:`~npgated.models.rnnlm.Rnnlm` and
:class:`~npgated.models.rnnlm.BetterRnnlm` with any cell (``lstm``, ``gru`` in both
``reset_after`` variants, ``rnn``), any number of layers, tied or untied output. A model
with another layer type (or a subclass of a known layer, which may compute something else)
is refused with the reason (:func:`unsupported_reason`), and ``generate`` then steps it
through ``model.predict``.
"""

from __future__ import annotations

from npgated import backend
from npgated.layers.activation_reg import ActivationRegularizer, TemporalActivationRegularizer
from npgated.layers.affine import TimeAffine
from npgated.layers.dropout import TimeDropout
from npgated.layers.embedding import TimeEmbedding
from npgated.layers.gru import TimeGRU
from npgated.layers.lstm import TimeLSTM, _gate_scale_shift
from npgated.layers.rnn import TimeRNN

__all__ = ["Stepper", "unsupported_reason"]

# Layers that are the identity in eval mode: the stepper passes over them.
_EVAL_IDENTITY = (TimeDropout, ActivationRegularizer, TemporalActivationRegularizer)


# ---------------------------------------------------------------------------------------
# One recurrent layer, one step (N = 1): h (and c) and the scratch of its equations
# ---------------------------------------------------------------------------------------
class _Cell:
    """What the three cells share: the layer, its parameters, the state buffers."""

    has_cell = False

    def __init__(self, layer, gates: int):
        self.layer = layer
        self.Wx, self.Wh, self.b = layer.params  # the layer's own arrays (no copies)
        xp = backend.get_array_module(self.Wx)
        H = self.Wh.shape[0]
        dtype = self.Wx.dtype
        self.xp, self.H = xp, H
        self.h = xp.zeros(H, dtype=dtype)  # h_{t-1} before a step, h_t after it
        self.c = xp.zeros(H, dtype=dtype) if self.has_cell else None
        self.a = xp.empty(gates * H, dtype=dtype)  # x @ Wx (+ ...): the pre-activations
        self.ah = xp.empty(gates * H, dtype=dtype)  # h_prev @ Wh
        self.half = xp.full((), 0.5, dtype=dtype)  # 0-d: no fresh 0-d array per use

    def _sigmoid(self, a) -> None:
        """``a <- sigma(a) = 0.5 * tanh(0.5 * a) + 0.5`` in place (functional.sigmoid)."""
        a *= self.half
        self.xp.tanh(a, out=a)
        a *= self.half
        a += self.half

    def _preactivation(self, x):
        """``a <- x @ Wx + h_prev @ Wh + b`` (F1 of the LSTM and the RNN step); returns a."""
        a = self.a
        self.xp.matmul(x, self.Wx, out=a)  # F1  x @ Wx
        self.xp.matmul(self.h, self.Wh, out=self.ah)  # F1  h_prev @ Wh
        a += self.ah  # F1
        a += self.b  # F1
        return a

    def load(self) -> None:
        """Copy the layer's carried state into h (and c); zeros where it carries none."""
        layer = self.layer
        pairs = [("h", self.h, layer.h)]
        if self.has_cell:
            pairs.append(("c", self.c, layer.c))
        for name, buf, state in pairs:
            if state is None:
                buf[...] = 0
                continue
            if tuple(state.shape) != (1, self.H):
                raise ValueError(
                    f"{type(layer).__name__} carries a state {name} of shape "
                    f"{tuple(state.shape)}, but the stepper advances one sequence, "
                    f"(1, {self.H}): call model.reset_state() (or read the prompt with "
                    "N = 1) before load_state()"
                )
            buf[...] = state[0]

    def store(self) -> None:
        """Give the layer this state (copies), as its next forward's initial state."""
        h = self.h.reshape(1, self.H).copy()
        if self.has_cell:
            self.layer.set_state(h, self.c.reshape(1, self.H).copy())
        else:
            self.layer.set_state(h)


class _LSTMCell(_Cell):
    """``lstm_step_forward`` (F1-F4) at N = 1, gate blocks i, f, g, o."""

    has_cell = True

    def __init__(self, layer):
        super().__init__(layer, gates=4)
        xp, H, a = self.xp, self.H, self.a
        # F2 for all four blocks at once (TimeLSTM's trick): scale * tanh(scale * a) + shift
        scale, shift = _gate_scale_shift(H, like=self.Wx)
        self.scale, self.shift = scale, shift
        self.i, self.f, self.g, self.o = a[:H], a[H : 2 * H], a[2 * H : 3 * H], a[3 * H :]
        self.ig = xp.empty(H, dtype=a.dtype)
        self.tanh_c = xp.empty(H, dtype=a.dtype)

    def step(self, x):
        xp, a = self.xp, self._preactivation(x)  # F1
        a *= self.scale  # F2  sigma on i, f, o; tanh on g
        xp.tanh(a, out=a)  # F2
        a *= self.scale  # F2
        a += self.shift  # F2
        self.c *= self.f  # F3  c_next = f * c_prev + i * g (c holds c_prev)
        xp.multiply(self.i, self.g, out=self.ig)  # F3
        self.c += self.ig  # F3
        xp.tanh(self.c, out=self.tanh_c)  # F4
        xp.multiply(self.o, self.tanh_c, out=self.h)  # F4  h_next = o * tanh(c_next)
        return self.h


class _GRUCell(_Cell):
    """``gru_step_forward`` (F0-F5) at N = 1, gate blocks r, z, n, either variant.

    Eval mode: no recurrent-dropout mask, so F0 is hm = h_prev.
    """

    def __init__(self, layer):
        super().__init__(layer, gates=3)
        xp, H, a = self.xp, self.H, self.a
        self.reset_after = layer.reset_after
        self.rz = xp.empty(2 * H, dtype=a.dtype)  # [r | z]
        self.r, self.z = self.rz[:H], self.rz[H:]
        self.n = xp.empty(H, dtype=a.dtype)
        if self.reset_after:
            self.b_x, self.b_h = self.b[0], self.b[1]  # input-side and hidden-side rows
        else:
            # reset_after=False multiplies by Wh's blocks separately (F1, F3): column views
            self.Wh_rz, self.Wh_n = self.Wh[:, : 2 * H], self.Wh[:, 2 * H :]
            self.rh = xp.empty(H, dtype=a.dtype)  # r * hm

    def step(self, x):
        xp, H, ax, ah, rz, n, h = self.xp, self.H, self.a, self.ah, self.rz, self.n, self.h
        xp.matmul(x, self.Wx, out=ax)  # F1, F3  x @ Wx (all three blocks)
        if self.reset_after:
            ax += self.b_x  # F1, F3  + b_x
            xp.matmul(h, self.Wh, out=ah)  # F1, F3  hm @ Wh (all three blocks)
            ah += self.b_h  # F1, F3  + b_h  (ah[2H:] is hn)
            xp.add(ax[: 2 * H], ah[: 2 * H], out=rz)  # F1  a_rz
            self._sigmoid(rz)  # F2  r, z
            xp.multiply(self.r, ah[2 * H :], out=n)  # F3  r * hn
            n += ax[2 * H :]  # F3  a_n = x @ Wx_n + b_x_n + r * hn
        else:
            ax += self.b  # F1, F3  + b
            a_rz = ah[: 2 * H]
            xp.matmul(h, self.Wh_rz, out=a_rz)  # F1  hm @ Wh_rz
            xp.add(ax[: 2 * H], a_rz, out=rz)  # F1  a_rz
            self._sigmoid(rz)  # F2  r, z
            xp.multiply(self.r, h, out=self.rh)  # F3  r * hm
            xp.matmul(self.rh, self.Wh_n, out=n)  # F3  (r * hm) @ Wh_n
            n += ax[2 * H :]  # F3  a_n = x @ Wx_n + (r * hm) @ Wh_n + b_n
        xp.tanh(n, out=n)  # F4
        h -= n  # F5  h_next = z * h_prev + (1 - z) * n = n + z * (h_prev - n)
        h *= self.z  # F5
        h += n  # F5
        return h


class _RNNCell(_Cell):
    """``rnn_step_forward`` (F1-F2) at N = 1."""

    def __init__(self, layer):
        super().__init__(layer, gates=1)

    def step(self, x):
        xp, a = self.xp, self._preactivation(x)  # F1
        xp.tanh(a, out=self.h)  # F2
        return self.h


_CELLS = {TimeLSTM: _LSTMCell, TimeGRU: _GRUCell, TimeRNN: _RNNCell}


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------
def unsupported_reason(model):
    """Why :class:`Stepper` cannot step ``model`` (a sentence), or None when it can.

    It can when the model's layers (without the loss) are a ``TimeEmbedding``, then any
    mix of stateful ``TimeLSTM`` / ``TimeGRU`` / ``TimeRNN`` layers and eval-mode
    identities (``TimeDropout``, AR, TAR), then a ``TimeAffine``; the exact classes, since
    a subclass may compute something else.
    """
    body = getattr(model, "_body", None)
    if body is None:
        return f"{type(model).__name__} is not a LanguageModel (no layer stack to step)"
    layers = body()
    if len(layers) < 3:
        return "the model has fewer than three layers (embedding, recurrent, output)"
    if type(layers[0]) is not TimeEmbedding:
        return f"the first layer is a {type(layers[0]).__name__}, not a TimeEmbedding"
    if type(layers[-1]) is not TimeAffine:
        return f"the last layer is a {type(layers[-1]).__name__}, not a TimeAffine"
    recurrent = 0
    for layer in layers[1:-1]:
        kind = type(layer)
        if kind in _CELLS:
            if not layer.stateful:
                return (
                    f"a {kind.__name__} is not stateful: predict restarts it from zeros at "
                    "every call, which a stepper would not"
                )
            recurrent += 1
        elif kind not in _EVAL_IDENTITY:
            return f"the stepper has no equations for a {kind.__name__} layer"
    if recurrent == 0:
        return "the model has no recurrent layer"
    return None


class Stepper:
    """The logits of a language model one token at a time, with no array allocated per step.

    Parameters
    ----------
    model : LanguageModel
        An ``Rnnlm`` or ``BetterRnnlm`` (see :func:`unsupported_reason`) in eval mode.

    Attributes
    ----------
    logits : (V,) array
        The buffer every :meth:`step` writes and returns (overwritten by the next step).
    vocab_size : int
        V.

    Notes
    -----
    One step, for token id ``k``, with layers l = 1..L and eval-mode dropout the identity::

        x_0 = E[k]                          TimeEmbedding F1 (a view of row k, no copy)
        x_l = cell_l(x_{l-1})               the cell's step equations (see the classes)
        logits = x_L @ W + b                TimeAffine F1 (tied: x_L @ E.T + b)

    The recurrent state is the stepper's own between :meth:`load_state` and
    :meth:`store_state` (module docstring).

    Raises
    ------
    TypeError
        The model has a layer the stepper has no equations for (the message says which).
    RuntimeError
        The model is in training mode (dropout would make predict differ): call
        ``model.eval()`` first.
    """

    def __init__(self, model):
        reason = unsupported_reason(model)
        if reason is not None:
            raise TypeError(f"Stepper cannot step this model: {reason}; use model.predict")
        if model.training:
            raise RuntimeError(
                "Stepper computes the model in eval mode (no dropout); call model.eval() "
                "first, as generate() does"
            )
        layers = model._body()
        self.E = layers[0].params[0]  # (V, D)
        xp = backend.get_array_module(self.E)
        self.xp = xp
        self.vocab_size = self.E.shape[0]
        self.cells = [_CELLS[type(layer)](layer) for layer in layers if type(layer) in _CELLS]
        affine = layers[-1]
        W = affine.params[0]
        self.W = W.T if affine.transposed else W  # (H, V); tied: the embedding's (V, D) .T
        self.b = affine.params[1] if affine.has_bias else None
        self.logits = xp.empty(self.W.shape[1], dtype=self.W.dtype)

    def load_state(self) -> None:
        """Start from the layers' carried state (after the prompt's forward; zeros if none)."""
        for cell in self.cells:
            cell.load()

    def store_state(self) -> None:
        """Hand the current state to the layers (``set_state``): predict continues from it."""
        for cell in self.cells:
            cell.store()

    def reset_state(self) -> None:
        """Zero the stepper's state (the layers are not touched)."""
        for cell in self.cells:
            cell.h[...] = 0
            if cell.c is not None:
                cell.c[...] = 0

    def step(self, token: int):
        """Feed one token id; return the (V,) logits of the next token (the :attr:`logits` buffer).

        Parameters
        ----------
        token : int
            A token id in [0, V).

        Returns
        -------
        logits : (V,) array
            Valid until the next step overwrites it; copy it to keep it.
        """
        if not 0 <= token < self.vocab_size:
            raise ValueError(
                f"token id {token} is out of range; valid ids are [0, {self.vocab_size})"
            )
        x = self.E[token]  # TimeEmbedding F1: a view of row k, no copy
        for cell in self.cells:
            x = cell.step(x)
        self.xp.matmul(x, self.W, out=self.logits)  # TimeAffine F1
        if self.b is not None:
            self.logits += self.b  # TimeAffine F1
        return self.logits
