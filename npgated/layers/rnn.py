"""The vanilla (Elman) recurrent layer: h_t = tanh(x_t @ Wx + h_{t-1} @ Wh + b).

Elman, "Finding structure in time", Cognitive Science 14 (1990); backpropagation through
time as in Werbos, "Backpropagation through time: what it does and how to do it",
Proc. IEEE 78 (1990).

:class:`TimeRNN` can regularize its recurrence (both off by default; the masks are drawn as
described in :mod:`npgated.layers.recurrent`):

* ``recurrent_dropout`` -- variational dropout in the time direction (Gal & Ghahramani, "A
  Theoretically Grounded Application of Dropout in Recurrent Neural Networks", NeurIPS
  2016): one mask m (N, H) per window multiplies h_{t-1} in ``h_{t-1} @ Wh`` at every step;
* ``weight_drop`` -- DropConnect on ``Wh`` (Wan et al., "Regularization of Neural Networks
  using DropConnect", ICML 2013; the weight drop of Merity, Keskar & Socher, "Regularizing
  and Optimizing LSTM Language Models", 2017): one mask M of Wh's shape per window,
  ``Wh_eff = Wh * M``.

The step functions need no option for either: they are pure functions of arrays and are
given ``m * h_prev`` and ``Wh * M`` (the tests build the Time layer's numbers that way).

The module has three parts, the same in ``lstm.py`` and ``gru.py``:

1. pure step functions ``rnn_step_forward`` / ``rnn_step_backward`` (one time step, all the
   equations, a named :class:`RNNStepCache`);
2. :class:`RNN`, the readable single-step layer built on them;
3. :class:`TimeRNN`, the fast layer over a whole (N, T, D) sequence: the input projection of
   all T steps is one GEMM before the time loop, the weight gradients are one GEMM each
   after the backward loop, and the loop itself does only ``h @ Wh`` and element-wise math.

Shapes: N batch, T time steps, D input size, H hidden size.
"""

from __future__ import annotations

from typing import NamedTuple

from npgated import backend, checks, parallel
from npgated.layers.base import Layer
from npgated.layers.recurrent import RecurrentLayer, check_recurrent_params, check_step_inputs

__all__ = [
    "RNNStepCache",
    "rnn_step_forward",
    "rnn_step_backward",
    "RNN",
    "TimeRNNCache",
    "TimeRNN",
]


# ---------------------------------------------------------------------------------------
# 1. Step functions
# ---------------------------------------------------------------------------------------
class RNNStepCache(NamedTuple):
    """What ``rnn_step_backward`` needs from ``rnn_step_forward``.

    Attributes
    ----------
    x : (N, D) array
        The step's input.
    h_prev : (N, H) array
        The previous hidden state.
    h_next : (N, H) array
        The new hidden state tanh(a) (its derivative is 1 - h_next**2).
    """

    x: object
    h_prev: object
    h_next: object


def rnn_step_forward(x, h_prev, Wx, Wh, b):
    """One step of the vanilla RNN.

    Parameters
    ----------
    x : (N, D) array
        Input at this step.
    h_prev : (N, H) array
        Hidden state of the previous step.
    Wx : (D, H) array
    Wh : (H, H) array
    b : (H,) array

    Returns
    -------
    h_next : (N, H) array
    cache : RNNStepCache

    Notes
    -----
    Forward::

        F1  a = x @ Wx + h_prev @ Wh + b
        F2  h_next = tanh(a)

    Backward, given dh_next = dL/dh_next (see :func:`rnn_step_backward`)::

        B1  da = dh_next * (1 - h_next**2)          tanh' = 1 - tanh**2
        B2  dh_prev = da @ Wh.T
        B3  dx = da @ Wx.T
        B4  dWx = x.T @ da
        B5  dWh = h_prev.T @ da
        B6  db = da.sum(axis=0)                      b is broadcast over the batch
    """
    xp = backend.get_array_module(x)
    a = x @ Wx + h_prev @ Wh + b  # F1
    h_next = xp.tanh(a)  # F2
    return h_next, RNNStepCache(x=x, h_prev=h_prev, h_next=h_next)


def rnn_step_backward(dh_next, cache: RNNStepCache, Wx, Wh):
    """Backward of :func:`rnn_step_forward` (equations B1..B6 in its Notes).

    Parameters
    ----------
    dh_next : (N, H) array
        Gradient of the loss w.r.t. ``h_next``.
    cache : RNNStepCache
        From the matching forward.
    Wx : (D, H) array
    Wh : (H, H) array

    Returns
    -------
    dx : (N, D) array
    dh_prev : (N, H) array
    dWx : (D, H) array
    dWh : (H, H) array
    db : (H,) array
    """
    da = dh_next * (1 - cache.h_next**2)  # B1
    dh_prev = da @ Wh.T  # B2
    dx = da @ Wx.T  # B3
    dWx = cache.x.T @ da  # B4
    dWh = cache.h_prev.T @ da  # B5
    db = da.sum(axis=0)  # B6
    return dx, dh_prev, dWx, dWh, db


# ---------------------------------------------------------------------------------------
# 2. The single-step layer
# ---------------------------------------------------------------------------------------
class RNN(Layer):
    """One step of a vanilla RNN as a layer (the textbook version; see :class:`TimeRNN`).

    Parameters
    ----------
    Wx : (D, H) array
    Wh : (H, H) array
    b : (H,) array
        All of one float dtype; the layer computes in it.

    Notes
    -----
    ``forward(x, h_prev)`` is :func:`rnn_step_forward` (F1-F2); ``backward(dh_next)`` is
    :func:`rnn_step_backward` (B1-B6) and *adds* dWx, dWh, db to ``grads``.
    """

    param_names = ("Wx", "Wh", "b")

    def __init__(self, Wx, Wh, b):
        check_recurrent_params(Wx, Wh, b, gates=1)
        super().__init__(Wx, Wh, b)
        self.cache = None

    def forward(self, x, h_prev):
        """
        Parameters
        ----------
        x : (N, D) array
        h_prev : (N, H) array

        Returns
        -------
        h_next : (N, H) array
        """
        Wx, Wh, b = self.params
        check_step_inputs(self, x, h_prev)
        h_next, self.cache = rnn_step_forward(x, h_prev, Wx, Wh, b)
        return h_next

    def backward(self, dh_next):
        """
        Parameters
        ----------
        dh_next : (N, H) array

        Returns
        -------
        dx : (N, D) array
        dh_prev : (N, H) array
        """
        cache = self._require_forward()
        checks.check_float(dh_next, "dh_next", dtype=self.dtype)
        checks.check_shape(dh_next, cache.h_next.shape, "dh_next")
        self.cache = None  # consumed: a second backward for this forward raises
        Wx, Wh, _ = self.params
        dx, dh_prev, dWx, dWh, db = rnn_step_backward(dh_next, cache, Wx, Wh)
        self.grads[0] += dWx
        self.grads[1] += dWh
        self.grads[2] += db
        return dx, dh_prev


# ---------------------------------------------------------------------------------------
# 3. The Time layer
# ---------------------------------------------------------------------------------------
class TimeRNNCache(NamedTuple):
    """What ``TimeRNN.backward`` needs from the forward.

    Attributes
    ----------
    All time-major: a step's slice (``hs[t]``) is one contiguous block.

    xs : (T * N, D) array
        The inputs' rows in (t, n) order (row t * N + n is ``xs[n, t]`` of the forward).
    hs : (T + 1, N, H) array
        The hidden states, the initial state at index 0 (``hs[t + 1]`` is h_t).
    masks : RecurrentDropMasks
        The window's recurrent mask m (N, H) and weight mask M (H, H), None where unused.
    Wh_eff : (H, H) array
        ``Wh * M`` (``Wh`` itself when there is no weight mask).
    """

    xs: object
    hs: object
    masks: object
    Wh_eff: object


class TimeRNN(RecurrentLayer):
    """A vanilla RNN over T time steps, with truncated-BPTT state.

    Computes the same numbers as T applications of :class:`RNN` (the tests check it), with
    the input projection of all steps in one GEMM before the time loop, only ``h @ Wh`` and
    element-wise math inside it, and the weight gradients as one GEMM each after the
    backward loop.

    Parameters
    ----------
    Wx : (D, H) array
        Input-to-hidden weights.
    Wh : (H, H) array
        Hidden-to-hidden weights.
    b : (H,) array
        Bias. All three of one float dtype; the layer computes in it.
    stateful : bool
        Carry the last hidden state into the next forward (see
        :mod:`npgated.layers.recurrent` for the rule that picks the initial state).
    recurrent_dropout : float in [0, 1)
        p of the variational time-direction mask m (N, H) on h_{t-1} in F1 (Gal &
        Ghahramani 2016). 0 (default): none.
    weight_drop : float in [0, 1)
        q of the DropConnect mask M (H, H) on ``Wh`` (Wan et al. 2013; Merity et al.
        2017). 0 (default): none.
    seed : int, numpy.random.Generator or None
        Seed of ``rng``, the layer's own host generator for the masks.

    Attributes
    ----------
    h, dh, stateful, record_grad_norms, grad_norms, rng, batch_shard, drop_masks
        See :class:`~npgated.layers.recurrent.RecurrentLayer`. ``grad_norms[t]`` is the
        norm of ``dh`` at B0 below (upstream plus what flows back from step t + 1).

    Notes
    -----
    The buffers are time-major (see :class:`TimeRNNCache`): h_{t-1} = hs[t] (hs[0] the
    initial state), h_t = hs[t + 1]. Once per window, in training mode
    (:meth:`RecurrentLayer._draw_drop_masks`, in this order from ``rng``; u, U uniform in
    [0, 1))::

        M1  m = (u >= p) / (1 - p)                (N, H), only if recurrent_dropout p > 0
        M2  M = (U >= q) / (1 - q);  Wh_eff = Wh * M   (H, H), only if weight_drop q > 0

    Without a mask read m = 1 and Wh_eff = Wh below (and nothing is computed for it)::

        F0  ax = xs @ Wx + b                      all T steps in one GEMM, (T, N, H)
        F1  a_t = ax[t] + (m * h_{t-1}) @ Wh_eff   the only GEMM in the loop
        F2  h_t = tanh(a_t)

    Backward. The step backward (B1..B6 of :func:`rnn_step_backward`) is linear in ``dh``,
    and the factor that multiplies it depends on the forward only, so it is computed for all
    T steps at once before the loop::

        K1  k = 1 - hs[1:]**2                     tanh' of every step, (T, N, H)

    and the loop runs t = T-1, ..., 0 with dh_next = 0 at the start (nothing arrives from
    beyond the window: truncated BPTT)::

        B0  dh = dhs[:, t] + dh_next              total gradient of h_t
        B1  da_t = dh * k[t]
        B2  dh_next = (da_t @ Wh_eff.T) * m       for step t - 1

    after it, ``dh`` (the attribute) is the last dh_next = dL/dh_0, and with ``da`` over
    all T * N rows (one GEMM or sum each)::

        B3  dxs = da @ Wx.T
        B4  dWx += xs.T @ da
        B5  dWh += ((m * hs[:-1]).T @ da) * M
        B6  db += da.sum(axis=(0, 1))

    B2 and B5 with the masks: h_{t-1} reaches the loss through F1 only as hm = m * h_{t-1},
    so dL/dh_{t-1} = m * dL/dhm = m * (da_t @ Wh_eff.T); and L depends on Wh only through
    Wh_eff = Wh * M, so dL/dWh = M * dL/dWh_eff = M * sum_t hm_{t-1}.T @ da_t, one GEMM
    over the masked states.
    """

    param_names = ("Wx", "Wh", "b")

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
        check_recurrent_params(Wx, Wh, b, gates=1)
        super().__init__(
            Wx,
            Wh,
            b,
            stateful=stateful,
            recurrent_dropout=recurrent_dropout,
            weight_drop=weight_drop,
            seed=seed,
        )

    def forward(self, xs):
        """
        Parameters
        ----------
        xs : (N, T, D) array

        Returns
        -------
        hs : (N, T, H) array
            The hidden states h_1..h_T (a fresh array). ``self.h`` is h_T.
        """
        self._check_xs(xs)
        Wx, _, b = self.params
        N, T, D = xs.shape
        H = self.hidden_size
        xp = backend.get_array_module(xs)
        dtype = xs.dtype

        # Every buffer is laid out time-major, (T, N, .) in memory: step t's slice is one
        # contiguous block, and the element-wise passes of the loop run faster than on the
        # rows of an (N, T, .) layout, strided by T. xs_t holds the inputs' rows in the same
        # (t, n) order.
        xs_t = xp.ascontiguousarray(xs.transpose(1, 0, 2)).reshape(T * N, D)
        hs = xp.empty((T + 1, N, H), dtype=dtype)  # hs[t + 1] is h_t, hs[0] the initial h
        self._initial_state(N, hs[0])
        m, Wh = self._draw_drop_masks(N, like=xs)  # M1, M2 (m None, Wh the parameter: none)
        ax = parallel.matmul(xs_t, Wx).reshape(T, N, H)  # F0
        ax += b  # F0

        # Preallocated per-step scratch: the hot loop writes with out= (no temporaries).
        ah = xp.empty((N, H), dtype=dtype)
        hm = None if m is None else xp.empty((N, H), dtype=dtype)  # m * h_{t-1}
        step_mm = parallel.matmul_for(N, H, H, xs)  # F1's product, split or not
        for t in range(T):
            a = ax[t]  # (N, H) view: a_t is built in place
            h_prev = hs[t]
            if m is not None:
                xp.multiply(h_prev, m, out=hm)  # F1  m * h_{t-1}
                h_prev = hm
            step_mm(h_prev, Wh, out=ah)  # F1
            a += ah  # F1
            xp.tanh(a, out=hs[t + 1])  # F2

        self.h = hs[-1].copy()
        store = self.training
        self._eval_forward = not store
        self.cache = TimeRNNCache(xs_t, hs, self.drop_masks, Wh) if store else None
        # (N, T, H) in the caller's usual C order (a transposing copy: nothing shares memory
        # with the cache)
        return xp.ascontiguousarray(hs[1:].transpose(1, 0, 2))

    def backward(self, dhs):
        """
        Parameters
        ----------
        dhs : (N, T, H) array
            Gradient of the loss w.r.t. the forward's output.

        Returns
        -------
        dxs : (N, T, D) array
            Also: adds dWx, dWh, db to ``grads``; sets ``dh`` = dL/dh_0, (N, H).
        """
        cache = self._require_forward()
        xs_t, hs, (m, M), Wh = cache  # Wh: Wh_eff of the forward
        T, N = hs.shape[0] - 1, hs.shape[1]
        D = xs_t.shape[1]
        H = self.hidden_size
        self._check_dhs(dhs, (N, T, H))
        self.cache = None  # consumed: a second backward for this forward raises
        Wx = self.params[0]
        dWx, dWh, db = self.grads
        xp = backend.get_array_module(xs_t)
        dtype = xs_t.dtype

        # K1 is written into the da buffer (time-major, as the forward's), which the loop
        # then multiplies in place by dh.
        da = xp.multiply(hs[1:], hs[1:])  # K1  (T, N, H)
        xp.subtract(1, da, out=da)  # K1

        # B2 runs as dh_next.T = Wh @ da_t.T: the GEMM reads Wh as stored (no transposed
        # copy) and writes the (H, N) buffer dhT, whose transposed view is dh_next.
        dhT = xp.zeros((H, N), dtype=dtype)
        dh_next = dhT.T
        self._grad_from_later(dh_next)  # zero; a later chunk's (backward_chunk)
        dh = xp.empty((N, H), dtype=dtype)
        norms = self._grad_norm_buffer(T, like=xs_t)
        step_mm = parallel.matmul_for(H, H, N, xs_t)  # B2's product, split or not
        for t in reversed(range(T)):
            xp.add(dhs[:, t], dh_next, out=dh)  # B0  (out=: no temporaries in the hot loop)
            if norms is not None:
                norms[t] = (dh * dh).sum()
            da[t] *= dh  # B1
            step_mm(Wh, da[t].T, out=dhT)  # B2  (dh_next = dhT.T = da_t @ Wh_eff.T)
            if m is not None:
                dh_next *= m  # B2

        da2 = da.reshape(T * N, H)  # rows in (t, n) order, as xs_t's and hs's
        dxs = parallel.matmul(da2, Wx.T).reshape(T, N, D)  # B3
        dxs = xp.ascontiguousarray(dxs.transpose(1, 0, 2))  # (N, T, D)
        hm = hs[:-1] if m is None else hs[:-1] * m  # B5  m * h_{t-1}
        rows = self._window_rows(xs_t, hm.reshape(T * N, H), da2)
        if rows is not None:  # None: a chunk of a window, summed with the others later
            x2, hm2, da2 = rows
            parallel.add_matmul(dWx, x2.T, da2)  # B4
            dWh_eff = parallel.matmul(hm2.T, da2)  # B5  dL/dWh_eff
            if M is not None:
                dWh_eff *= M  # B5
            dWh += dWh_eff  # B5
            db += da2.sum(axis=0)  # B6
        self.dh = xp.ascontiguousarray(dh_next)
        self._store_grad_norms(norms)
        return dxs
