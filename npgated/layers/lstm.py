"""The long short-term memory layer (LSTM) with a forget gate.

Hochreiter & Schmidhuber, "Long short-term memory", Neural Computation 9 (1997); the forget
gate from Gers, Schmidhuber & Cummins, "Learning to forget: continual prediction with
LSTM", Neural Computation 12 (2000). The language models built on it follow Zaremba,
Sutskever & Vinyals, "Recurrent neural network regularization", arXiv:1409.2329 (2014).

:class:`TimeLSTM` can regularize its recurrence (both off by default; the masks are drawn
as described in :mod:`npgated.layers.recurrent`):

* ``recurrent_dropout`` -- variational dropout in the time direction (Gal & Ghahramani, "A
  Theoretically Grounded Application of Dropout in Recurrent Neural Networks", NeurIPS
  2016): one mask m (N, H) per window multiplies h_{t-1} in ``h_{t-1} @ Wh`` at every step;
  the memory cell c_{t-1} is carried unmasked;
* ``weight_drop`` -- DropConnect on ``Wh`` (Wan et al., "Regularization of Neural Networks
  using DropConnect", ICML 2013), the AWD-LSTM's weight drop (Merity, Keskar & Socher,
  "Regularizing and Optimizing LSTM Language Models", 2017): one mask M of Wh's shape per
  window, ``Wh_eff = Wh * M``.

The step functions need no option for either: they are pure functions of arrays and are
given ``m * h_prev`` and ``Wh * M`` (the tests build the Time layer's numbers that way).

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
   on one packed, time-major (T, N, 4H) array of gates.

Shapes: N batch, T time steps, D input size, H hidden size.
"""

from __future__ import annotations

from typing import NamedTuple

from npgated import backend, checks, parallel
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
        cache.x,
        cache.h_prev,
        cache.c_prev,
        cache.i,
        cache.f,
        cache.g,
        cache.o,
        cache.tanh_c,
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
        for name, d in (("dh_next", dh_next), ("dc_next", dc_next)):
            checks.check_float(d, name, dtype=self.dtype)
            checks.check_shape(d, cache.h_prev.shape, name)
        self.cache = None  # consumed: a second backward for this forward raises
        Wx, Wh, _ = self.params
        dx, dh_prev, dc_prev, dWx, dWh, db = lstm_step_backward(dh_next, dc_next, cache, Wx, Wh)
        self.grads[0] += dWx
        self.grads[1] += dWh
        self.grads[2] += db
        return dx, dh_prev, dc_prev


# ---------------------------------------------------------------------------------------
# 3. The Time layer
# ---------------------------------------------------------------------------------------
def _gate_scale_shift(H: int, like):
    """(4H,) vectors ``scale``, ``shift`` with ``scale * tanh(scale * a) + shift`` = F2.

    On the sigmoid blocks i, f, o: scale = 0.5, shift = 0.5, since sigma(a) = 0.5 *
    tanh(0.5 * a) + 0.5; on the tanh block g: scale = 1, shift = 0. This lets the time loop
    apply all four activations to the packed (N, 4H) pre-activation in four array operations
    instead of nine.
    """
    xp = backend.get_array_module(like)
    scale = xp.full(4 * H, 0.5, dtype=like.dtype)
    shift = xp.full(4 * H, 0.5, dtype=like.dtype)
    scale[2 * H : 3 * H] = 1
    shift[2 * H : 3 * H] = 0
    return scale, shift


class TimeLSTMCache(NamedTuple):
    """What ``TimeLSTM.backward`` needs from the forward.

    Attributes
    ----------
    All time-major: a step's slice (``hs[t]``, ``gates[t]``) is one contiguous block.

    xs : (T * N, D) array
        The inputs' rows in (t, n) order (row t * N + n is ``xs[n, t]`` of the forward).
    hs, cs : (T + 1, N, H) arrays
        Hidden states and memory cells, the initial state at index 0 (``hs[t + 1]`` is h_t).
    gates : (T, N, 4H) array
        The gates [i | f | g | o] of every step, after their activations.
    tanh_cs : (T, N, H) array
        tanh(c_t) of every step.
    masks : RecurrentDropMasks
        The window's recurrent mask m (N, H) and weight mask M (H, 4H), None where unused.
    Wh_eff : (H, 4H) array
        ``Wh * M`` (``Wh`` itself when there is no weight mask).
    static : (N, P) array or None
        The static input of ``forward(xs, static)`` (then ``xs`` holds the other D - P
        columns).
    """

    xs: object
    hs: object
    cs: object
    gates: object
    tanh_cs: object
    masks: object
    Wh_eff: object
    static: object = None


class TimeLSTM(RecurrentLayer):
    """An LSTM over T time steps, with truncated-BPTT state.

    Computes the same numbers as T applications of :class:`LSTM` (the tests check it), with
    the input projection of all steps in one GEMM before the time loop, only ``h @ Wh`` and
    element-wise math inside it, and the weight gradients as one GEMM each after the
    backward loop.

    Parameters
    ----------
    Wx : (D, 4H) array
        Input-to-hidden weights, gate blocks i, f, g, o.
    Wh : (H, 4H) array
        Hidden-to-hidden weights, gate blocks i, f, g, o.
    b : (4H,) array
        Bias, gate blocks i, f, g, o (PyTorch order; the book packs f, g, i, o). All three
        of one float dtype; the layer computes in it.
    stateful : bool
        Carry the last (h, c) into the next forward (see :mod:`npgated.layers.recurrent` for
        the rule that picks the initial state).
    recurrent_dropout : float in [0, 1)
        p of the variational time-direction mask m (N, H) on h_{t-1} in F1 (Gal &
        Ghahramani 2016). 0 (default): none.
    weight_drop : float in [0, 1)
        q of the DropConnect mask M (H, 4H) on ``Wh`` (Wan et al. 2013; Merity et al.
        2017). 0 (default): none.
    seed : int, numpy.random.Generator or None
        Seed of ``rng``, the layer's own host generator for the masks.

    Attributes
    ----------
    h, c, dh, dc, stateful, record_grad_norms, grad_norms, rng, batch_shard, drop_masks
        See :class:`~npgated.layers.recurrent.RecurrentLayer`. ``grad_norms[t]`` is the
        norm of ``dh`` at B0 below (upstream plus what flows back from step t + 1).

    Notes
    -----
    The buffers are time-major (see :class:`TimeLSTMCache`): h_{t-1} = hs[t], c_{t-1} =
    cs[t] (index 0: the initial state), h_t = hs[t + 1], c_t = cs[t + 1]; ``gates[t]`` (N, 4H)
    first holds the pre-activation a_t and is then overwritten, in place, by the gates
    [i | f | g | o].
    Once per window, in training mode (:meth:`RecurrentLayer._draw_drop_masks`, in this
    order from ``rng``; u, U uniform in [0, 1))::

        M1  m = (u >= p) / (1 - p)                (N, H), only if recurrent_dropout p > 0
        M2  M = (U >= q) / (1 - q);  Wh_eff = Wh * M   (H, 4H), only if weight_drop q > 0

    Without a mask read m = 1 and Wh_eff = Wh below (and nothing is computed for it)::

        F0  ax = xs @ Wx + b                      all T steps in one GEMM, (T, N, 4H)
        F1  a_t = ax[:, t] + (m * h_{t-1}) @ Wh_eff   the only GEMM in the loop
        F2  [i | f | g | o] = scale * tanh(scale * a_t) + shift
        F3  c_t = f * c_{t-1} + i * g
        F4  h_t = o * tanh(c_t)

    F2 is lstm_step_forward's F2 for all four blocks in one pass: ``scale`` = 0.5 and
    ``shift`` = 0.5 on the i, f, o blocks (sigma(a) = 0.5 * tanh(0.5 * a) + 0.5), ``scale``
    = 1 and ``shift`` = 0 on the g block (tanh).

    Backward. The step backward (B1..B11 of :func:`lstm_step_backward`) is linear in
    (dh, dc), and the factors that multiply them depend on the forward only, except for the
    product with ``Wh``. So they are computed for all T steps at once before the loop (all
    arrays (T, N, 4H) or (T, N, H); tanh_c = tanh(c_t))::

        K1  k = [g * i*(1-i) | c_{t-1} * f*(1-f) | i * (1-g**2) | tanh_c * o*(1-o)]
        K2  kc = o * (1 - tanh_c**2)

    and the loop runs t = T-1, ..., 0 with dh_next = 0 and dc_next = 0 at the start (nothing
    arrives from beyond the window: truncated BPTT; ``backward(dhs, dc_last)`` starts
    dc_next at the gradient of the last cell c_T instead, for an encoder whose final (h, c)
    starts a decoder)::

        B0  dh = dhs[:, t] + dh_next              total gradient of h_t
        B1  dc = dc_next + dh * kc[t]             total gradient of c_t
        B2-B4  [da_i | da_f | da_g] = dc * k[t, :, :3H]
        B5  da_o = dh * k[t, :, 3H:]
        B6  dc_next = dc * f                      for step t - 1 (the carry: no mask)
        B7  dh_next = (da_t @ Wh_eff.T) * m       for step t - 1

    after it, ``dh`` and ``dc`` (the attributes) are the last dh_next = dL/dh_0 and
    dc_next = dL/dc_0, and with ``da`` = [da_i | da_f | da_g | da_o] over all N * T rows
    (one GEMM or sum each)::

        B8  dxs = da @ Wx.T
        B9  dWx += xs.T @ da
        B10 dWh += ((m * hs[:-1]).T @ da) * M
        B11 db += da.sum(axis=(0, 1))

    B7 and B10 with the masks: h_{t-1} reaches the loss through F1 only as the product
    hm = m * h_{t-1}, so dL/dh_{t-1} = m * dL/dhm = m * (da_t @ Wh_eff.T) (the cell's own
    carry goes through c, B6); and L depends on Wh only through Wh_eff = Wh * M, so dL/dWh
    = M * dL/dWh_eff = M * sum_t hm_{t-1}.T @ da_t, one GEMM over the masked states.

    Static inputs, ``forward(xs, static)``: a layer that reads the same vector s (N, P) at
    every step besides xs (N, T, D - P), its input at step t being [s | x_t] (the peeky
    decoder of :mod:`npgated.models.seq2seq` reads the encoder's h so). Wx's first P rows
    read s; the part s @ Wx[:P] is the same at every step and is computed once
    (:meth:`~npgated.layers.recurrent.RecurrentLayer._project_inputs`,
    :meth:`~npgated.layers.recurrent.RecurrentLayer._static_backward`)::

        F0s ax = xs @ Wx[P:] + b + s @ Wx[:P]    the last term (N, 4H), added at every t
        B8s dxs = da @ Wx[P:].T;  dstatic = (sum_t da_t) @ Wx[:P].T
        B9s dWx[P:] += xs.T @ da;  dWx[:P] += s.T @ (sum_t da_t)

    The same numbers as ``forward`` of the concatenation [s repeated | xs], up to rounding,
    with T - 1 fewer products for the static part in each of F0, B8 and B9.
    """

    param_names = ("Wx", "Wh", "b")
    has_cell = True

    def __init__(
        self,
        Wx,
        Wh,
        b,
        stateful: bool = False,
        *,
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        seed=None,
    ):
        check_recurrent_params(Wx, Wh, b, gates=4)
        super().__init__(
            Wx,
            Wh,
            b,
            stateful=stateful,
            recurrent_dropout=recurrent_dropout,
            weight_drop=weight_drop,
            seed=seed,
        )

    def forward(self, xs, static=None):
        """
        Parameters
        ----------
        xs : (N, T, D) array, or (N, T, D - P) with ``static``
        static : (N, P) array, optional
            Input columns that are the same at every step (F0s in the class notes): the
            input at step t is [static | xs[:, t]].

        Returns
        -------
        hs : (N, T, H) array
            The hidden states h_1..h_T (a fresh array). ``self.h``, ``self.c`` are h_T, c_T.
        """
        self._check_static(xs, static)
        b = self.params[2]
        N, T, D = xs.shape
        H = self.hidden_size
        xp = backend.get_array_module(xs)
        dtype = xs.dtype

        # Every buffer is laid out time-major, (T, N, .) in memory: step t's slice is one
        # contiguous block, and the element-wise passes of the loop run ~3x faster than on
        # the rows of an (N, T, .) layout, strided by T (measured: 8 vs 24 us for one
        # (128, 512) float32 pass). xs_t holds the inputs' rows in the same (t, n) order.
        store = self.training
        xs_t = xp.ascontiguousarray(xs.transpose(1, 0, 2)).reshape(T * N, D)
        hs = xp.empty((T + 1, N, H), dtype=dtype)  # hs[t + 1] is h_t, hs[0] the initial h
        cs = xp.empty((T + 1, N, H), dtype=dtype)
        gates = self._project_inputs(xs_t, static, T, N)  # F0 (F0s with static)
        gates += b  # F0
        self._initial_state(N, hs[0], cs[0])
        m, Wh = self._draw_drop_masks(N, like=xs)  # M1, M2 (m None, Wh the parameter: none)
        # In eval mode tanh(c_t) is not kept: one step's worth of buffer is reused (index
        # s = 0) instead of one slot per step (s = t).
        tanh_cs = xp.empty((T if store else 1, N, H), dtype=dtype)
        scale, shift = _gate_scale_shift(H, like=xs)

        # Preallocated per-step scratch: the hot loop writes with out= (no temporaries).
        ah = xp.empty((N, 4 * H), dtype=dtype)
        ig = xp.empty((N, H), dtype=dtype)
        hm = None if m is None else xp.empty((N, H), dtype=dtype)  # m * h_{t-1}
        step_mm = parallel.matmul_for(N, H, 4 * H, xs)  # F1's product, split or not
        for t in range(T):
            a, c_prev, c, tanh_c = gates[t], cs[t], cs[t + 1], tanh_cs[t if store else 0]
            i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            h_prev = hs[t]
            if m is not None:
                xp.multiply(h_prev, m, out=hm)  # F1  m * h_{t-1}
                h_prev = hm
            step_mm(h_prev, Wh, out=ah)  # F1
            a += ah  # F1
            a *= scale  # F2
            xp.tanh(a, out=a)  # F2
            a *= scale  # F2
            a += shift  # F2
            xp.multiply(f, c_prev, out=c)  # F3
            xp.multiply(i, g, out=ig)  # F3
            c += ig  # F3
            xp.tanh(c, out=tanh_c)  # F4
            xp.multiply(o, tanh_c, out=hs[t + 1])  # F4

        self.h = hs[-1].copy()
        self.c = cs[-1].copy()
        self._eval_forward = not store
        self.cache = (
            TimeLSTMCache(xs_t, hs, cs, gates, tanh_cs, self.drop_masks, Wh, static)
            if store
            else None
        )
        # (N, T, H) in the caller's usual C order (a transposing copy: nothing shares memory
        # with the cache)
        return xp.ascontiguousarray(hs[1:].transpose(1, 0, 2))

    def backward(self, dhs, dc_last=None):
        """
        Parameters
        ----------
        dhs : (N, T, H) array
            Gradient of the loss w.r.t. the forward's output.
        dc_last : (N, H) array, optional
            Gradient of the loss w.r.t. the last memory cell c_T (``self.c`` after forward),
            when something else used it: an encoder whose final (h, c) a decoder started
            from with ``set_state(h, c)`` passes the decoder's ``dc`` here (the gradient of
            h_T arrives in ``dhs[:, -1]``). Default: no such use (zeros).

        Returns
        -------
        dxs : (N, T, D) array
            Also: adds dWx, dWh, db to ``grads``; sets ``dh`` = dL/dh_0 and ``dc`` = dL/dc_0,
            (N, H) each.
        """
        cache = self._require_forward()
        xs_t, hs, cs, gates, tanh_cs, (m, M), Wh, static = cache  # Wh: Wh_eff of the forward
        T, N = gates.shape[:2]
        D = xs_t.shape[1]
        H = self.hidden_size
        self._check_dhs(dhs, (N, T, H))
        if dc_last is not None:
            checks.check_float(dc_last, "dc_last", dtype=self.dtype)
            checks.check_shape(dc_last, (N, H), "dc_last")
        self.cache = None  # consumed: a second backward for this forward raises
        Wx = self.params[0]
        dWx, dWh, db = self.grads
        xp = backend.get_array_module(xs_t)
        dtype = xs_t.dtype

        # The known factors K1-K2 of all steps (time-major, as the forward's buffers). K1 is
        # written into the da buffer, which the loop then multiplies in place, block by
        # block, by dc or dh. Each gate y = scale * tanh(scale * a) + shift (F2) has the
        # derivative dy/da = scale**2 - (y - shift)**2 (sigma': y (1 - y) = 1/4 - (y - 1/2)**2;
        # tanh': 1 - y**2), so K1 is that, in three passes over the whole contiguous buffer,
        # times each block's partner (g, c_{t-1}, i, tanh_c): four passes over H-wide blocks,
        # which cost ~6x a contiguous pass each (short inner loops), instead of twelve.
        i, f, g = gates[..., :H], gates[..., H : 2 * H], gates[..., 2 * H : 3 * H]
        o = gates[..., 3 * H :]
        scale, shift = _gate_scale_shift(H, like=xs_t)
        da = xp.subtract(gates, shift)  # K1  (T, N, 4H): y - shift
        xp.square(da, out=da)  # K1
        xp.subtract(scale * scale, da, out=da)  # K1  dy/da of all four gates
        blocks = da.reshape(T, N, 4, H)  # a view: blocks[t, :, k] is block k of da_t
        blocks[:, :, 0] *= g  # K1  g * i * (1 - i)
        blocks[:, :, 1] *= cs[:-1]  # K1  c_{t-1} * f * (1 - f)
        blocks[:, :, 2] *= i  # K1  i * (1 - g**2)
        blocks[:, :, 3] *= tanh_cs  # K1  tanh_c * o * (1 - o)
        kc = tanh_cs * tanh_cs  # K2  o * (1 - tanh_c**2)
        xp.subtract(1, kc, out=kc)  # K2
        kc *= o  # K2

        # B7 runs as dh_next.T = Wh @ da_t.T: the GEMM reads Wh as stored (no transposed
        # copy) and writes the (H, N) buffer dhT, whose transposed view is dh_next. For
        # OpenBLAS this orientation is also the faster one (~15 % at H = 650, measured).
        dhT = xp.zeros((H, N), dtype=dtype)
        dh_next = dhT.T
        dh = xp.empty((N, H), dtype=dtype)
        dc = xp.empty((N, H), dtype=dtype)
        dc_next = xp.zeros((N, H), dtype=dtype)
        self._grad_from_later(dh_next, dc_next)  # zero; a later chunk's (backward_chunk)
        if dc_last is not None:
            dc_next[...] = dc_last  # the gradient of c_T from a user of the final state
        norms = self._grad_norm_buffer(T, like=xs_t)
        step_mm = parallel.matmul_for(H, 4 * H, N, xs_t)  # B7's product, split or not
        for t in reversed(range(T)):
            xp.add(dhs[:, t], dh_next, out=dh)  # B0  (out=: no temporaries in the hot loop)
            if norms is not None:
                norms[t] = (dh * dh).sum()
            xp.multiply(dh, kc[t], out=dc)  # B1
            dc += dc_next  # B1
            blocks[t, :, :3] *= dc[:, None, :]  # B2-B4  blocks i, f, g at once
            blocks[t, :, 3] *= dh  # B5
            xp.multiply(dc, f[t], out=dc_next)  # B6
            step_mm(Wh, da[t].T, out=dhT)  # B7  (dh_next = dhT.T = da_t @ Wh_eff.T)
            if m is not None:
                dh_next *= m  # B7

        P = self._static_backward(da, static)  # B8s, B9s: dstatic, dWx[:P]
        da2 = da.reshape(T * N, 4 * H)  # rows in (t, n) order, as xs_t's and hs's
        dxs = parallel.matmul(da2, Wx[P:].T).reshape(T, N, D)  # B8 (B8s: Wx[P:])
        dxs = xp.ascontiguousarray(dxs.transpose(1, 0, 2))  # (N, T, D)
        hm = hs[:-1] if m is None else hs[:-1] * m  # B10  m * h_{t-1}
        rows = self._window_rows(xs_t, hm.reshape(T * N, H), da2)
        if rows is not None:  # None: a chunk of a window, summed with the others later
            x2, hm2, da2 = rows
            parallel.add_matmul(dWx[P:], x2.T, da2)  # B9 (B9s: dWx[P:])
            dWh_eff = parallel.matmul(hm2.T, da2)  # B10  dL/dWh_eff
            if M is not None:
                dWh_eff *= M  # B10
            dWh += dWh_eff  # B10
            db += da2.sum(axis=0)  # B11
        self.dh = xp.ascontiguousarray(dh_next)
        self.dc = dc_next
        self._store_grad_norms(norms)
        return dxs
