"""The long short-term memory layer (LSTM) with a forget gate.

Hochreiter & Schmidhuber, "Long short-term memory", Neural Computation 9 (1997); the forget
gate from Gers, Schmidhuber & Cummins, "Learning to forget: continual prediction with
LSTM", Neural Computation 12 (2000). The language models built on it follow Zaremba,
Sutskever & Vinyals, "Recurrent neural network regularization", arXiv:1409.2329 (2014).

Gate layout: the four gate blocks of ``Wx`` (D, 4H), ``Wh`` (H, 4H) and ``b`` (4H,) are in
PyTorch/cuDNN order **i, f, g, o** (input gate, forget gate, candidate cell, output gate),
so converting to ``torch.nn.LSTM`` is a transpose (``weight_ih = Wx.T``, ``weight_hh =
Wh.T``) and a bias split (``b_ih + b_hh = b``). The book ("Deep Learning from Scratch 2")
packs them f, g, i, o instead.

The module has three parts, the same in ``rnn.py`` and ``gru.py``:

1. pure step functions ``lstm_step_forward`` / ``lstm_step_backward`` (one time step, all the
   equations, a named :class:`LSTMStepCache`);
2. :class:`LSTM`, the readable single-step layer built on them;
3. :class:`TimeLSTM`, the fast layer over a whole (N, T, D) sequence: the input projection of
   all T steps is one GEMM before the time loop, the weight gradients are one GEMM each
   after the backward loop, and the loop itself does only ``h @ Wh`` and element-wise math
   on one packed (N, T, 4H) array of gates.

Shapes: N batch, T time steps, D input size, H hidden size.
"""

from __future__ import annotations

from typing import NamedTuple

from npgated import backend, checks
from npgated.functional import sigmoid
from npgated.layers.base import Layer
from npgated.layers.recurrent import RecurrentLayer, check_recurrent_params, check_step_inputs

__all__ = [
    "LSTMStepCache",
    "lstm_step_forward",
    "lstm_step_backward",
    "LSTM",
    "TimeLSTMCache",
    "TimeLSTM",
]


# ---------------------------------------------------------------------------------------
# 1. Step functions
# ---------------------------------------------------------------------------------------
class LSTMStepCache(NamedTuple):
    """What ``lstm_step_backward`` needs from ``lstm_step_forward``.

    Attributes
    ----------
    x : (N, D) array
        The step's input.
    h_prev, c_prev : (N, H) arrays
        The previous hidden state and memory cell.
    i, f, g, o : (N, H) arrays
        Input gate, forget gate, candidate cell, output gate (after their activations).
    tanh_c : (N, H) array
        tanh(c_next).
    """

    x: object
    h_prev: object
    c_prev: object
    i: object
    f: object
    g: object
    o: object
    tanh_c: object


def lstm_step_forward(x, h_prev, c_prev, Wx, Wh, b):
    """One step of the LSTM.

    Parameters
    ----------
    x : (N, D) array
        Input at this step.
    h_prev : (N, H) array
        Hidden state of the previous step.
    c_prev : (N, H) array
        Memory cell of the previous step.
    Wx : (D, 4H) array
    Wh : (H, 4H) array
    b : (4H,) array
        Gate blocks in the order i, f, g, o (columns ``k*H:(k+1)*H`` for k = 0..3).

    Returns
    -------
    h_next : (N, H) array
    c_next : (N, H) array
    cache : LSTMStepCache

    Notes
    -----
    Forward, with sigma(a) = 1 / (1 + exp(-a)) = 0.5 * tanh(0.5 * a) + 0.5::

        F1  a = x @ Wx + h_prev @ Wh + b                    (N, 4H) = [a_i | a_f | a_g | a_o]
        F2  i = sigma(a_i), f = sigma(a_f), g = tanh(a_g), o = sigma(a_o)
        F3  c_next = f * c_prev + i * g
        F4  h_next = o * tanh(c_next)

    Backward, given dh_next = dL/dh_next and dc_next = dL/dc_next from later in time
    (sigma' = sigma * (1 - sigma), tanh' = 1 - tanh**2, tanh_c = tanh(c_next))::

        B1  dc = dc_next + dh_next * o * (1 - tanh_c**2)    total gradient of c_next
        B2  da_i = dc * g * i * (1 - i)
        B3  da_f = dc * c_prev * f * (1 - f)
        B4  da_g = dc * i * (1 - g**2)
        B5  da_o = dh_next * tanh_c * o * (1 - o)
        B6  dc_prev = dc * f
        B7  dh_prev = da @ Wh.T                              da = [da_i | da_f | da_g | da_o]
        B8  dx = da @ Wx.T
        B9  dWx = x.T @ da
        B10 dWh = h_prev.T @ da
        B11 db = da.sum(axis=0)                              b is broadcast over the batch
    """
    xp = backend.get_array_module(x)
    H = h_prev.shape[1]
    a = x @ Wx + h_prev @ Wh + b  # F1
    i = sigmoid(a[:, :H])  # F2
    f = sigmoid(a[:, H : 2 * H])  # F2
    g = xp.tanh(a[:, 2 * H : 3 * H])  # F2
    o = sigmoid(a[:, 3 * H :])  # F2
    c_next = f * c_prev + i * g  # F3
    tanh_c = xp.tanh(c_next)  # F4
    h_next = o * tanh_c  # F4
    cache = LSTMStepCache(x=x, h_prev=h_prev, c_prev=c_prev, i=i, f=f, g=g, o=o, tanh_c=tanh_c)
    return h_next, c_next, cache


def lstm_step_backward(dh_next, dc_next, cache: LSTMStepCache, Wx, Wh):
    """Backward of :func:`lstm_step_forward` (equations B1..B11 in its Notes).

    Parameters
    ----------
    dh_next : (N, H) array
        Gradient of the loss w.r.t. ``h_next``.
    dc_next : (N, H) array
        Gradient of the loss w.r.t. ``c_next`` arriving from later steps (zeros at the end).
    cache : LSTMStepCache
        From the matching forward.
    Wx : (D, 4H) array
    Wh : (H, 4H) array

    Returns
    -------
    dx : (N, D) array
    dh_prev : (N, H) array
    dc_prev : (N, H) array
    dWx : (D, 4H) array
    dWh : (H, 4H) array
    db : (4H,) array
    """
    xp = backend.get_array_module(dh_next)
    x, h_prev, c_prev, i, f, g, o, tanh_c = (
        cache.x, cache.h_prev, cache.c_prev, cache.i, cache.f, cache.g, cache.o, cache.tanh_c
    )
    dc = dc_next + dh_next * o * (1 - tanh_c**2)  # B1
    da_i = dc * g * i * (1 - i)  # B2
    da_f = dc * c_prev * f * (1 - f)  # B3
    da_g = dc * i * (1 - g**2)  # B4
    da_o = dh_next * tanh_c * o * (1 - o)  # B5
    dc_prev = dc * f  # B6
    da = xp.concatenate([da_i, da_f, da_g, da_o], axis=1)
    dh_prev = da @ Wh.T  # B7
    dx = da @ Wx.T  # B8
    dWx = x.T @ da  # B9
    dWh = h_prev.T @ da  # B10
    db = da.sum(axis=0)  # B11
    return dx, dh_prev, dc_prev, dWx, dWh, db


# ---------------------------------------------------------------------------------------
# 2. The single-step layer
# ---------------------------------------------------------------------------------------
class LSTM(Layer):
    """One step of an LSTM as a layer (the textbook version; see :class:`TimeLSTM`).

    Parameters
    ----------
    Wx : (D, 4H) array
    Wh : (H, 4H) array
    b : (4H,) array
        Gate blocks i, f, g, o; all of one float dtype, the layer computes in it.

    Notes
    -----
    ``forward(x, h_prev, c_prev)`` is :func:`lstm_step_forward` (F1-F4);
    ``backward(dh_next, dc_next)`` is :func:`lstm_step_backward` (B1-B11) and *adds* dWx,
    dWh, db to ``grads``.
    """

    param_names = ("Wx", "Wh", "b")

    def __init__(self, Wx, Wh, b):
        check_recurrent_params(Wx, Wh, b, gates=4)
        super().__init__(Wx, Wh, b)
        self.cache = None

    def forward(self, x, h_prev, c_prev):
        """
        Parameters
        ----------
        x : (N, D) array
        h_prev : (N, H) array
        c_prev : (N, H) array

        Returns
        -------
        h_next : (N, H) array
        c_next : (N, H) array
        """
        Wx, Wh, b = self.params
        check_step_inputs(self, x, h_prev, c_prev)
        h_next, c_next, self.cache = lstm_step_forward(x, h_prev, c_prev, Wx, Wh, b)
        return h_next, c_next

    def backward(self, dh_next, dc_next):
        """
        Parameters
        ----------
        dh_next : (N, H) array
        dc_next : (N, H) array

        Returns
        -------
        dx : (N, D) array
        dh_prev : (N, H) array
        dc_prev : (N, H) array
        """
        cache = self._require_forward()
        self.cache = None
        for name, d in (("dh_next", dh_next), ("dc_next", dc_next)):
            checks.check_float(d, name, dtype=self.dtype)
            checks.check_shape(d, cache.h_prev.shape, name)
        Wx, Wh, _ = self.params
        dx, dh_prev, dc_prev, dWx, dWh, db = lstm_step_backward(dh_next, dc_next, cache, Wx, Wh)
        self.grads[0] += dWx
        self.grads[1] += dWh
        self.grads[2] += db
        return dx, dh_prev, dc_prev


# ---------------------------------------------------------------------------------------
# 3. The Time layer
# ---------------------------------------------------------------------------------------
class TimeLSTMCache(NamedTuple):
    """What ``TimeLSTM.backward`` needs from the forward.

    Attributes
    ----------
    xs : (N, T, D) array
        The inputs.
    hs, cs : (N, T + 1, H) arrays
        Hidden states and memory cells, the initial state at index 0 (``hs[:, t + 1]`` is h_t).
    gates : (N, T, 4H) array
        The gates [i | f | g | o] of every step, after their activations.
    tanh_cs : (N, T, H) array
        tanh(c_t) of every step.
    """

    xs: object
    hs: object
    cs: object
    gates: object
    tanh_cs: object


class TimeLSTM(RecurrentLayer):
    """An LSTM over T time steps, with truncated-BPTT state.

    Parameters
    ----------
    Wx : (D, 4H) array
    Wh : (H, 4H) array
    b : (4H,) array
        Gate blocks i, f, g, o (PyTorch order; the book packs f, g, i, o); all of one float
        dtype, the layer computes in it.
    stateful : bool
        Carry the last (h, c) into the next forward (see :mod:`npgated.layers.recurrent` for
        the rule that picks the initial state).

    Attributes
    ----------
    h, c, dh, dc, stateful, record_grad_norms, grad_norms
        See :class:`~npgated.layers.recurrent.RecurrentLayer`.

    Notes
    -----
    The equations of :func:`lstm_step_forward` / :func:`lstm_step_backward`, arranged for
    speed. With h_0, c_0 the initial state, hs[:, t + 1] = h_t, cs[:, t + 1] = c_t, and
    ``gates`` one packed (N, T, 4H) array (a_t is built in ``gates[:, t]`` and overwritten
    by the gates [i | f | g | o]), forward::

        F0  ax = xs @ Wx + b                      all T steps in one GEMM, (N, T, 4H)
        F1  a_t = ax[:, t] + h_{t-1} @ Wh         in the loop: the only GEMM per step
        F2  i, f, g, o = sigma(a_i), sigma(a_f), tanh(a_g), sigma(a_o)
        F3  c_t = f * c_{t-1} + i * g
        F4  h_t = o * tanh(c_t)

    Backward, for t = T-1 down to 0, starting from dh_prev = dc_prev = 0 (nothing arrives
    from beyond the window: truncated BPTT). The activation derivatives
    ``dact = [i*(1-i) | f*(1-f) | 1-g**2 | o*(1-o)]`` and ``o * (1 - tanh_c**2)`` are
    computed for all steps at once before the loop::

        B0  dh = dhs[:, t] + dh_prev              total gradient of h_t (dh_prev from step t+1)
        B1  dc = dc_prev + dh * o * (1 - tanh_c**2)
        B2  da_i = dc * g * dact_i
        B3  da_f = dc * c_{t-1} * dact_f
        B4  da_g = dc * i * dact_g
        B5  da_o = dh * tanh_c * dact_o
        B6  dc_prev = dc * f                      for step t - 1; after the loop dL/dc_0
        B7  dh_prev = da_t @ Wh.T                 for step t - 1; after the loop dL/dh_0
        B8  dxs = da @ Wx.T                       after the loop, all T steps in one GEMM
        B9  dWx = xs.T @ da                       contracted over N and T in one GEMM
        B10 dWh = hs[:, :-1].T @ da               likewise
        B11 db = da.sum(axis=(0, 1))
    """

    param_names = ("Wx", "Wh", "b")
    has_cell = True

    def __init__(self, Wx, Wh, b, stateful: bool = False):
        check_recurrent_params(Wx, Wh, b, gates=4)
        super().__init__(Wx, Wh, b, stateful=stateful)

    def forward(self, xs):
        """
        Parameters
        ----------
        xs : (N, T, D) array

        Returns
        -------
        hs : (N, T, H) array
            The hidden states h_1..h_T (a fresh array). ``self.h``, ``self.c`` are h_T, c_T.
        """
        self._check_xs(xs)
        Wx, Wh, b = self.params
        N, T, D = xs.shape
        H = self.hidden_size
        xp = backend.get_array_module(xs)

        hs = xp.empty((N, T + 1, H), dtype=xs.dtype)
        cs = xp.empty((N, T + 1, H), dtype=xs.dtype)
        tanh_cs = xp.empty((N, T, H), dtype=xs.dtype)
        self._initial_state(N, hs[:, 0], cs[:, 0])
        gates = (xs.reshape(N * T, D) @ Wx).reshape(N, T, 4 * H)  # F0
        gates += b  # F0
        # In the loop, out= and in-place operators write into the preallocated buffers:
        # no temporaries per step in the hot loop.
        for t in range(T):
            a = gates[:, t]  # (N, 4H) view: a_t, then the gates, in place
            a += hs[:, t] @ Wh  # F1
            sigmoid(a[:, : 2 * H], out=a[:, : 2 * H])  # F2  i, f
            xp.tanh(a[:, 2 * H : 3 * H], out=a[:, 2 * H : 3 * H])  # F2  g
            sigmoid(a[:, 3 * H :], out=a[:, 3 * H :])  # F2  o
            i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            c = cs[:, t + 1]
            xp.multiply(f, cs[:, t], out=c)  # F3
            c += i * g  # F3
            xp.tanh(c, out=tanh_cs[:, t])  # F4
            xp.multiply(o, tanh_cs[:, t], out=hs[:, t + 1])  # F4

        self.h = hs[:, -1].copy()
        self.c = cs[:, -1].copy()
        self._eval_forward = not self.training
        self.cache = (
            TimeLSTMCache(xs=xs, hs=hs, cs=cs, gates=gates, tanh_cs=tanh_cs)
            if self.training
            else None
        )
        return hs[:, 1:].copy()

    def backward(self, dhs):
        """
        Parameters
        ----------
        dhs : (N, T, H) array
            Gradient of the loss w.r.t. the forward's output.

        Returns
        -------
        dxs : (N, T, D) array
            Also: adds dWx, dWh, db to ``grads``; sets ``dh`` = dL/dh_0 and ``dc`` = dL/dc_0,
            (N, H) each.
        """
        cache = self._require_forward()
        self.cache = None
        xs, hs, cs, gates, tanh_cs = cache
        N, T, D = xs.shape
        H = self.hidden_size
        self._check_dhs(dhs, (N, T, H))
        Wx, Wh, _ = self.params
        dWx, dWh, db = self.grads
        xp = backend.get_array_module(xs)

        # Activation derivatives of all steps at once (vectorised over T, outside the loop).
        i, f, g, o = (gates[..., k * H : (k + 1) * H] for k in range(4))
        dact = xp.empty_like(gates)
        dact[..., :H] = i * (1 - i)  # B2  sigma'
        dact[..., H : 2 * H] = f * (1 - f)  # B3  sigma'
        dact[..., 2 * H : 3 * H] = 1 - g * g  # B4  tanh'
        dact[..., 3 * H :] = o * (1 - o)  # B5  sigma'
        o_dtanh = o * (1 - tanh_cs * tanh_cs)  # B1  o * tanh'(c_t)

        WhT = xp.ascontiguousarray(Wh.T)  # once per backward: a contiguous operand for GEMM
        da = xp.empty_like(gates)
        dh = xp.empty((N, H), dtype=xs.dtype)
        dc = xp.empty((N, H), dtype=xs.dtype)
        dh_prev = xp.zeros((N, H), dtype=xs.dtype)  # nothing arrives from beyond step T
        dc_prev = xp.zeros((N, H), dtype=xs.dtype)
        norms = self._grad_norm_buffer(T, like=xs)
        # out= and in-place operators: no temporaries per step in the hot loop.
        for t in reversed(range(T)):
            xp.add(dhs[:, t], dh_prev, out=dh)  # B0
            if norms is not None:
                norms[t] = (dh * dh).sum()
            xp.multiply(dh, o_dtanh[:, t], out=dc)  # B1
            dc += dc_prev  # B1
            da_t = da[:, t]
            xp.multiply(dc, gates[:, t, 2 * H : 3 * H], out=da_t[:, :H])  # B2  dc * g
            xp.multiply(dc, cs[:, t], out=da_t[:, H : 2 * H])  # B3  dc * c_{t-1}
            xp.multiply(dc, gates[:, t, :H], out=da_t[:, 2 * H : 3 * H])  # B4  dc * i
            xp.multiply(dh, tanh_cs[:, t], out=da_t[:, 3 * H :])  # B5  dh * tanh_c
            da_t *= dact[:, t]  # B2-B5  times the activation derivatives
            xp.multiply(dc, gates[:, t, H : 2 * H], out=dc_prev)  # B6  dc * f
            dh_prev = da_t @ WhT  # B7

        da2 = da.reshape(N * T, 4 * H)
        dxs = (da2 @ Wx.T).reshape(N, T, D)  # B8
        dWx += xs.reshape(N * T, D).T @ da2  # B9
        dWh += hs[:, :-1].reshape(N * T, H).T @ da2  # B10
        db += da2.sum(axis=0)  # B11
        self.dh = dh_prev
        self.dc = dc_prev
        self._store_grad_norms(norms)
        return dxs
