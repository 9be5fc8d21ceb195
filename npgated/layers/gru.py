"""Gated recurrent units: step functions, the single-step layer and the fast time layer.

The GRU (Cho et al., 2014, "Learning Phrase Representations using RNN Encoder-Decoder for
Statistical Machine Translation"; compared with the LSTM by Chung et al., 2014, "Empirical
Evaluation of Gated Recurrent Neural Networks on Sequence Modeling") keeps one state vector
``h`` and two gates: the reset gate ``r`` decides how much of ``h_prev`` enters the
candidate ``n``, the update gate ``z`` mixes ``h_prev`` and ``n``.

Two variants are in use and both are implemented (``reset_after``):

``reset_after=False`` (Cho et al. 2014; d2l.ai)
    ``n = tanh(x @ Wx_n + (r * h_prev) @ Wh_n + b_n)``, one bias vector ``b`` of shape (3H,).
    The reset gate acts *before* the recurrent matrix multiply, so one step needs two
    dependent matrix products with ``Wh``.
``reset_after=True`` (cuDNN, PyTorch ``nn.GRU``, Keras' default)
    ``n = tanh(x @ Wx_n + b_xn + r * (h_prev @ Wh_n + b_hn))``; ``b`` has shape (2, 3H): row 0
    is the input-side bias (PyTorch's ``bias_ih``), row 1 the hidden-side bias
    (``bias_hh``). ``b_hn`` must stay separate because ``r`` multiplies it. The reset gate
    acts *after* the multiply, so one step is a single ``h_prev @ Wh`` (cuDNN's reason).

Both use ``h_next = z * h_prev + (1 - z) * n`` (PyTorch and d2l). "Deep Learning from
Scratch 2" writes ``h_next = (1 - z) * h_prev + z * n``: its ``z`` is our ``1 - z``.

Parameters are packed gate blocks in the order r, z, n (PyTorch's order): ``Wx`` (D, 3H),
``Wh`` (H, 3H), columns ``[:H]`` reset, ``[H:2H]`` update, ``[2H:]`` candidate. PyTorch
stores the transposes: ``weight_ih_l0 = Wx.T``, ``weight_hh_l0 = Wh.T``, and for
``reset_after=True`` ``bias_ih_l0 = b[0]``, ``bias_hh_l0 = b[1]``.

The module has, in order: the pure step functions (:func:`gru_step_forward`,
:func:`gru_step_backward`) with the full equations, the readable single-step layer
:class:`GRU`, and the fast sequence layer :class:`TimeGRU` (truncated BPTT, stateful like
the book's ``TimeLSTM``).

:class:`TimeGRU` can regularize its recurrence (both off by default; the masks are drawn as
described in :mod:`npgated.layers.recurrent`):

* ``recurrent_dropout`` -- variational dropout in the time direction (Gal & Ghahramani, "A
  Theoretically Grounded Application of Dropout in Recurrent Neural Networks", NeurIPS
  2016): one mask m (N, H) per window multiplies h_prev in *every* product with ``Wh`` (the
  r, z gates and the candidate's ``h_prev @ Wh_n`` or ``(r * h_prev) @ Wh_n``) at every
  step, while the carry ``z * h_prev`` keeps the unmasked state;
* ``weight_drop`` -- DropConnect on ``Wh`` (Wan et al., "Regularization of Neural Networks
  using DropConnect", ICML 2013; the weight drop of Merity, Keskar & Socher, "Regularizing
  and Optimizing LSTM Language Models", 2017): one mask M of Wh's shape per window,
  ``Wh_eff = Wh * M``.

Because h_prev is both multiplied by ``Wh`` and carried, the step functions take the mask as
an argument (``mask``); ``Wh * M`` is simply given to them as ``Wh``.
"""

from __future__ import annotations

from typing import NamedTuple

from npgated import backend, checks, parallel
from npgated.functional import sigmoid
from npgated.layers.base import Layer
from npgated.layers.recurrent import RecurrentLayer, check_recurrent_params, check_step_inputs


# ---------------------------------------------------------------------------------------
# Validation shared by the layers
# ---------------------------------------------------------------------------------------
def _check_gru_params(Wx, Wh, b, reset_after: bool):
    """Validate ``Wx`` (D, 3H), ``Wh`` (H, 3H), ``b`` (3H,) or (2, 3H); return (D, H)."""
    try:
        return check_recurrent_params(Wx, Wh, b, gates=3, bias_rows=2 if reset_after else None)
    except ValueError as exc:
        if not str(exc).startswith("b "):
            raise
        hint = (
            " for reset_after=True (row 0: input-side bias, row 1: hidden-side bias)"
            if reset_after
            else " for reset_after=False"
        )
        raise ValueError(f"{exc}{hint}") from None


def _peek_cache(layer, cache_name: str = "cache"):
    """The forward cache for ``backward`` (the caller clears it, so a second backward raises).

    A forward in eval mode stores no cache; backward after it says so.
    """
    if getattr(layer, "cache", None) is None and getattr(layer, "_eval_forward", False):
        raise RuntimeError(
            f"{type(layer).__name__}.backward after a forward in eval mode: eval mode keeps "
            "no backward cache; call train() before the forward you want to differentiate"
        )
    return layer._require_forward(cache_name)


# ---------------------------------------------------------------------------------------
# 1. Pure step functions
# ---------------------------------------------------------------------------------------
class GRUStepCache(NamedTuple):
    """What :func:`gru_step_backward` needs from :func:`gru_step_forward`.

    Attributes
    ----------
    x : (N, D) array
        The input of the step.
    h_prev : (N, H) array
        The previous hidden state.
    r, z, n : (N, H) arrays
        Reset gate, update gate, candidate state (after their nonlinearities).
    hn : (N, H) array or None
        ``reset_after=True``: ``hm @ Wh_n + b_hn`` (what ``r`` multiplies in F3).
        ``reset_after=False``: None.
    reset_after : bool
        Which variant produced the cache.
    mask : (N, H) array or None
        The recurrent-dropout mask the step was given (None: no mask).
    """

    x: object
    h_prev: object
    r: object
    z: object
    n: object
    hn: object
    reset_after: bool
    mask: object = None


def _check_bias_variant(b, reset_after: bool) -> None:
    want = 2 if reset_after else 1
    if b.ndim != want:
        raise ValueError(
            f"b has shape {checks.shape_str(b.shape)} but reset_after={reset_after} needs "
            + ("(2, 3H): row 0 input-side, row 1 hidden-side bias" if reset_after else "(3H,)")
        )


def gru_step_forward(x, h_prev, Wx, Wh, b, reset_after: bool = False, mask=None):
    """One GRU step, forward.

    Parameters
    ----------
    x : (N, D) array
        Input at this step.
    h_prev : (N, H) array
        Previous hidden state.
    Wx : (D, 3H) array
        Input-to-hidden weights, gate blocks r, z, n.
    Wh : (H, 3H) array
        Hidden-to-hidden weights, gate blocks r, z, n.
    b : (3H,) array if ``reset_after=False``, (2, 3H) array if ``reset_after=True``
        Biases; for ``reset_after=True`` row 0 is the input-side and row 1 the hidden-side
        bias.
    reset_after : bool
        False: Cho et al. / d2l (reset before the recurrent product). True: cuDNN/PyTorch
        (reset after it, ``b_hn`` kept separate).
    mask : (N, H) array, optional
        A recurrent-dropout mask m (:class:`TimeGRU`'s ``recurrent_dropout``): h_prev enters
        the products with ``Wh`` as ``m * h_prev``; the carry of F5 stays ``h_prev``.
        None (default): no mask.

    Returns
    -------
    h_next : (N, H) array
    cache : GRUStepCache

    Notes
    -----
    Blocks of a (., 3H) array are written ``_r = [:, :H]``, ``_z = [:, H:2H]``,
    ``_n = [:, 2H:]``, ``_rz = [:, :2H]``. For ``reset_after=True`` write
    ``b_x = b[0]``, ``b_h = b[1]``; for ``reset_after=False`` let ``b_x = b`` and ``b_h = 0``.

    F0  hm = mask * h_prev                       (no mask: hm = h_prev)
    F1  a_rz = x @ Wx_rz + hm @ Wh_rz + b_x_rz + b_h_rz
    F2  r = sigma(a_r),  z = sigma(a_z)          (a_r = a_rz[:, :H], a_z = a_rz[:, H:])
    F3  reset_after=False:  a_n = x @ Wx_n + (r * hm) @ Wh_n + b_x_n
        reset_after=True:   hn = hm @ Wh_n + b_h_n;  a_n = x @ Wx_n + b_x_n + r * hn
    F4  n = tanh(a_n)
    F5  h_next = z * h_prev + (1 - z) * n        (the carry: h_prev, never masked)

    The backward equations are in :func:`gru_step_backward`.
    """
    _check_bias_variant(b, reset_after)
    H = h_prev.shape[1]
    hm = h_prev if mask is None else mask * h_prev  # F0
    if reset_after:
        ax = x @ Wx + b[0]  # F1, F3 (input side, all three blocks)
        ah = hm @ Wh + b[1]  # F1, F3 (hidden side, all three blocks)
        a_rz = ax[:, : 2 * H] + ah[:, : 2 * H]  # F1
        r = sigmoid(a_rz[:, :H])  # F2
        z = sigmoid(a_rz[:, H:])  # F2
        hn = ah[:, 2 * H :]  # F3
        a_n = ax[:, 2 * H :] + r * hn  # F3
    else:
        a_rz = x @ Wx[:, : 2 * H] + hm @ Wh[:, : 2 * H] + b[: 2 * H]  # F1
        r = sigmoid(a_rz[:, :H])  # F2
        z = sigmoid(a_rz[:, H:])  # F2
        hn = None
        a_n = x @ Wx[:, 2 * H :] + (r * hm) @ Wh[:, 2 * H :] + b[2 * H :]  # F3
    xp = backend.get_array_module(x)
    n = xp.tanh(a_n)  # F4
    h_next = z * h_prev + (1 - z) * n  # F5
    return h_next, GRUStepCache(x, h_prev, r, z, n, hn, bool(reset_after), mask)


def gru_step_backward(dh_next, cache: GRUStepCache, Wx, Wh):
    """One GRU step, backward.

    Parameters
    ----------
    dh_next : (N, H) array
        Gradient of the loss w.r.t. ``h_next`` (everything that flows into it).
    cache : GRUStepCache
        From :func:`gru_step_forward`; it records ``reset_after``.
    Wx : (D, 3H) array
    Wh : (H, 3H) array

    Returns
    -------
    dx : (N, D) array
    dh_prev : (N, H) array
    dWx : (D, 3H) array
    dWh : (H, 3H) array
    db : (3H,) array, or (2, 3H) for ``reset_after=True``
        Fresh arrays (the layers add them into their gradient buffers).

    Notes
    -----
    With the notation of :func:`gru_step_forward` (F1..F5), ``da_*`` the gradients w.r.t.
    the pre-activations and ``[p, q, s]`` the concatenation of (N, H) blocks along axis 1:

    B1  dz = dh_next * (h_prev - n);  dn = dh_next * (1 - z);  dh_prev = dh_next * z
    B2  da_n = dn * (1 - n**2)
    B3  reset_after=False:  drh = da_n @ Wh_n.T;  dr = drh * hm;  dhm = drh * r
        reset_after=True:   dhn = da_n * r;       dr = da_n * hn
    B4  da_r = dr * r * (1 - r);  da_z = dz * z * (1 - z)
    B5  da = [da_r, da_z, da_n];  dx = da @ Wx.T;  dWx = x.T @ da
    B6  reset_after=False:  dhm += da[:, :2H] @ Wh_rz.T
        reset_after=True:   dah = [da_r, da_z, dhn];  dhm = dah @ Wh.T
    B7  reset_after=False:  dWh_rz = hm.T @ da[:, :2H];  dWh_n = (r * hm).T @ da_n
        reset_after=True:   dWh = hm.T @ dah
    B8  reset_after=False:  db = da.sum(axis=0)
        reset_after=True:   db[0] = da.sum(axis=0);  db[1] = dah.sum(axis=0)
    B9  dh_prev += mask * dhm                    (no mask: dh_prev += dhm)

    (B3, reset_after=True: ``a_n = ... + r * hn`` gives ``d hn = da_n * r`` and
    ``dr = da_n * hn``; ``hn`` depends on ``hm`` through ``Wh_n`` and on ``b_hn``, so
    ``dhn`` joins the hidden-side gradient ``dah`` of B6-B8. B9: h_prev reaches the loss
    through the carry of F5 (B1) and through hm = mask * h_prev (F0), whose gradient dhm
    collects every product with ``Wh``.)
    """
    x, h_prev, r, z, n, hn, reset_after, mask = cache
    xp = backend.get_array_module(dh_next)
    H = h_prev.shape[1]
    hm = h_prev if mask is None else mask * h_prev  # F0
    dz = dh_next * (h_prev - n)  # B1
    dn = dh_next * (1 - z)  # B1
    dh_prev = dh_next * z  # B1
    da_n = dn * (1 - n * n)  # B2
    if reset_after:
        dhn = da_n * r  # B3
        dr = da_n * hn  # B3
    else:
        drh = da_n @ Wh[:, 2 * H :].T  # B3
        dr = drh * hm  # B3
        dhm = drh * r  # B3
    da_r = dr * r * (1 - r)  # B4
    da_z = dz * z * (1 - z)  # B4
    da = xp.concatenate((da_r, da_z, da_n), axis=1)  # B5
    dx = da @ Wx.T  # B5
    dWx = x.T @ da  # B5
    if reset_after:
        dah = xp.concatenate((da_r, da_z, dhn), axis=1)  # B6
        dhm = dah @ Wh.T  # B6
        dWh = hm.T @ dah  # B7
        db = xp.stack((da.sum(axis=0), dah.sum(axis=0)))  # B8
    else:
        dhm += da[:, : 2 * H] @ Wh[:, : 2 * H].T  # B6
        dWh = xp.concatenate(  # B7
            (hm.T @ da[:, : 2 * H], (r * hm).T @ da_n), axis=1
        )
        db = da.sum(axis=0)  # B8
    dh_prev += dhm if mask is None else mask * dhm  # B9
    return dx, dh_prev, dWx, dWh, db


# ---------------------------------------------------------------------------------------
# 2. The single-step layer (the textbook version)
# ---------------------------------------------------------------------------------------
class GRU(Layer):
    """One GRU step as a layer: ``h_next = GRU(x, h_prev)``.

    The readable version: it calls :func:`gru_step_forward` / :func:`gru_step_backward`
    (see them for the equations F1..F5, B1..B8) and adds the weight gradients into
    ``grads``. For sequences use :class:`TimeGRU`, which gives the same numbers faster.

    Parameters
    ----------
    Wx : (D, 3H) array
        Input-to-hidden weights, gate blocks r, z, n.
    Wh : (H, 3H) array
        Hidden-to-hidden weights, gate blocks r, z, n.
    b : (3H,) array, or (2, 3H) array for ``reset_after=True``
        Biases (row 0 input-side, row 1 hidden-side when ``reset_after=True``).
    reset_after : bool
        Which GRU variant (see the module docstring).
    """

    param_names = ("Wx", "Wh", "b")

    def __init__(self, Wx, Wh, b, reset_after: bool = False):
        self.D, self.H = _check_gru_params(Wx, Wh, b, reset_after)
        super().__init__(Wx, Wh, b)
        self.reset_after = bool(reset_after)
        self.cache = None
        self._eval_forward = False

    def forward(self, x, h_prev):
        """``h_next`` from ``x`` (N, D) and ``h_prev`` (N, H); returns (N, H)."""
        Wx, Wh, b = self.params
        check_step_inputs(self, x, h_prev)
        h_next, cache = gru_step_forward(x, h_prev, Wx, Wh, b, self.reset_after)
        self.cache = cache if self.training else None
        self._eval_forward = not self.training
        return h_next

    def backward(self, dh_next):
        """Gradients from ``dh_next`` (N, H); returns ``(dx (N, D), dh_prev (N, H))``.

        Adds ``dWx``, ``dWh``, ``db`` into ``grads``.
        """
        cache = _peek_cache(self)
        Wx, Wh, _ = self.params
        checks.check_float(dh_next, "dh_next", dtype=Wx.dtype)
        checks.check_shape(dh_next, cache.h_prev.shape, "dh_next")
        self.cache = None  # consumed: a second backward for this forward raises
        dx, dh_prev, dWx, dWh, db = gru_step_backward(dh_next, cache, Wx, Wh)
        self.grads[0] += dWx
        self.grads[1] += dWh
        self.grads[2] += db
        return dx, dh_prev


# ---------------------------------------------------------------------------------------
# 3. The Time layer (the fast version)
# ---------------------------------------------------------------------------------------
class TimeGRUCache(NamedTuple):
    """What ``TimeGRU.backward`` needs from the forward.

    Attributes
    ----------
    All time-major: a step's slice (``hs[t]``, ``gates[t]``) is one contiguous block.

    xs : (T * N, D) array
        The inputs' rows in (t, n) order (row t * N + n is ``xs[n, t]`` of the forward).
    hs : (T + 1, N, H) array
        The hidden states, the initial state at index 0 (``hs[t + 1]`` is h_t).
    gates : (T, N, 3H) array
        The packed activations r, z, n of every step.
    hn : (T, N, H) array or None
        ``reset_after=True``: ``(m * h_{t-1}) @ Wh_eff_n + b_hn`` of every step; else None.
    masks : RecurrentDropMasks
        The window's recurrent mask m (N, H) and weight mask M (H, 3H), None where unused.
    Wh_eff : (H, 3H) array
        ``Wh * M`` (``Wh`` itself when there is no weight mask).
    static : (N, P) array or None
        The static input of ``forward(xs, static)`` (then ``xs`` holds the other D - P
        columns).
    """

    xs: object
    hs: object
    gates: object
    hn: object
    masks: object
    Wh_eff: object
    static: object = None


class TimeGRU(RecurrentLayer):
    """A GRU over T time steps, with truncated-BPTT state (the fast layer).

    Computes the same numbers as T applications of :class:`GRU` (the tests check it), with
    the input projection of all steps in one GEMM before the time loop, only the recurrent
    products and element-wise math inside it, and the weight gradients as one GEMM each
    after the backward loop.

    Parameters
    ----------
    Wx : (D, 3H) array
        Input-to-hidden weights, gate blocks r, z, n.
    Wh : (H, 3H) array
        Hidden-to-hidden weights, gate blocks r, z, n.
    b : (3H,) array, or (2, 3H) array for ``reset_after=True``
        Biases (row 0 input-side, row 1 hidden-side when ``reset_after=True``).
    stateful : bool
        Carry the last hidden state into the next forward (see
        :mod:`npgated.layers.recurrent` for the rule that picks the initial state).
    reset_after : bool
        False: Cho et al. 2014 / d2l; True: cuDNN / PyTorch ``nn.GRU`` (module docstring).
    recurrent_dropout : float in [0, 1)
        p of the variational time-direction mask m (N, H) on h_{t-1} in every product with
        ``Wh`` (F1, F3), not in the carry of F5 (Gal & Ghahramani 2016). 0 (default): none.
    weight_drop : float in [0, 1)
        q of the DropConnect mask M (H, 3H) on ``Wh`` (Wan et al. 2013; Merity et al.
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
    The buffers are time-major (see :class:`TimeGRUCache`): h_{t-1} = hs[t] (hs[0] the
    initial state), h_t = hs[t + 1], blocks and biases named as in :func:`gru_step_forward`
    (F0..F5). Once per window, in training mode
    (:meth:`RecurrentLayer._draw_drop_masks`, in this order from ``rng``; u, U uniform in
    [0, 1))::

        M1  m = (u >= p) / (1 - p)                (N, H), only if recurrent_dropout p > 0
        M2  M = (U >= q) / (1 - q);  Wh_eff = Wh * M   (H, 3H), only if weight_drop q > 0

    Without a mask read m = 1 and Wh_eff = Wh below (and nothing is computed for it;
    Wh_eff_rz, Wh_eff_n are its blocks)::

        F0  ax = xs @ Wx + b_x            all T steps in one GEMM, (T, N, 3H);
                                          reset_after=True also adds b_h_rz to the r, z blocks
            hm = m * h_{t-1}              h_{t-1} as it enters the products with Wh_eff
        F1  a_rz = ax[t, :, :2H] + hm @ Wh_eff_rz
        F2  r = sigma(a_r),  z = sigma(a_z)
        F3  reset_after=False:  a_n = ax[t, :, 2H:] + (r * hm) @ Wh_eff_n
            reset_after=True:   hn = hm @ Wh_eff_n + b_hn;  a_n = ax[t, :, 2H:] + r * hn
        F4  n = tanh(a_n)
        F5  h_t = z * h_{t-1} + (1 - z) * n      the carry: h_{t-1} itself, never masked

    (reset_after=True computes F1 and F3's ``hm @ Wh_eff_n`` as one ``hm @ Wh_eff``.)

    Backward. Each gradient of the step backward (B1..B9 of :func:`gru_step_backward`) is
    ``dh`` times a factor that depends on the forward only, apart from the products with
    ``Wh_eff``. These factors are computed for all T steps at once before the loop (arrays
    (T, N, H), h_prev = h_{t-1}, hm = m * h_prev; the step equations they come from in
    brackets)::

        K1  kz = (h_prev - n) * z * (1 - z)                  da_z = dh * kz    [B1, B4]
        K2  kn = (1 - z) * (1 - n**2)                        da_n = dh * kn    [B1, B2]
        K3  reset_after=False:  kr = hm * r * (1 - r)        da_r = drh * kr   [B3, B4]
            reset_after=True:   kr = kn * r * hn * (1 - r)   da_r = dh * kr    [B3, B4]
        K4  reset_after=True:   khn = kn * r                 dhn = dh * khn    [B3]

    The loop runs t = T-1, ..., 0 from dh_next = 0 (nothing flows in from beyond the window:
    truncated BPTT)::

        B0  dh = dhs[:, t] + dh_next          total gradient of h_t
        B1  da_z = dh * kz;  da_n = dh * kn   (reset_after=True: da_r = dh * kr, dhn = dh * khn)
        B2  reset_after=False:  drh = da_n @ Wh_eff_n.T;  da_r = drh * kr
        B3  reset_after=False:  dh_next = dh * z + m * (drh * r + [da_r, da_z] @ Wh_eff_rz.T)
            reset_after=True:   dh_next = dh * z + m * ([da_r, da_z, dhn] @ Wh_eff.T)

    (B3: the carry's gradient dh * z is not masked; everything that reached hm is, B9 of
    the step.) After the loop, ``dh`` (the attribute) is the last dh_next = dL/dh_0, and
    with ``da = [da_r, da_z, da_n]`` over all T * N rows (one GEMM or sum each)::

        B4  dxs = da @ Wx.T
        B5  dWx += xs.T @ da
        B6  reset_after=False:  dWh_rz += (hm.T @ da_rz) * M_rz;  dWh_n += ((r * hm).T @ da_n) * M_n
            reset_after=True:   dWh += (hm.T @ dah) * M,  dah = [da_r, da_z, dhn]
        B7  reset_after=False:  db += da.sum(axis=(0, 1))
            reset_after=True:   db[0] += da.sum(axis=(0, 1));  db[1] += dah.sum(axis=(0, 1))

    (B6: L depends on Wh only through Wh_eff = Wh * M, so dL/dWh = M * dL/dWh_eff.)

    Static inputs, ``forward(xs, static)``: the same vector s (N, P) read at every step
    besides xs (N, T, D - P), the input at step t being [s | x_t], as for
    :class:`~npgated.layers.lstm.TimeLSTM` (its notes, F0s, B8s, B9s; here B4s, B5s): the
    part s @ Wx[:P] of F0 is computed once, dxs = da @ Wx[P:].T, dstatic = (sum_t da_t) @
    Wx[:P].T, dWx[P:] += xs.T @ da, dWx[:P] += s.T @ (sum_t da_t).
    """

    param_names = ("Wx", "Wh", "b")

    def __init__(
        self,
        Wx,
        Wh,
        b,
        stateful: bool = False,
        reset_after: bool = False,
        *,
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        seed=None,
    ):
        _check_gru_params(Wx, Wh, b, reset_after)
        super().__init__(
            Wx,
            Wh,
            b,
            stateful=stateful,
            recurrent_dropout=recurrent_dropout,
            weight_drop=weight_drop,
            seed=seed,
        )
        self.reset_after = bool(reset_after)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, reset_after={self.reset_after})"

    def forward(self, xs, static=None):
        """
        Parameters
        ----------
        xs : (N, T, D) array, or (N, T, D - P) with ``static``
        static : (N, P) array, optional
            Input columns that are the same at every step (see the class notes): the input
            at step t is [static | xs[:, t]].

        Returns
        -------
        hs : (N, T, H) array
            The hidden states h_1..h_T (a fresh array). ``self.h`` is h_T.
        """
        self._check_static(xs, static)
        b = self.params[2]
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
        # In eval mode the gate activations are not kept: one step's worth of buffer is
        # reused (index s = 0) instead of one slot per step (s = t).
        store = self.training
        gates = xp.empty((T if store else 1, N, 3 * H), dtype=dtype)  # r, z, n
        if self.reset_after:
            bias = b[0].copy()
            bias[: 2 * H] += b[1, : 2 * H]  # b_h_rz adds to the same pre-activation as b_x_rz
        else:
            bias = b
        ax = self._project_inputs(xs_t, static, T, N)  # F0 (with static: its part once)
        ax += bias  # F0

        # Preallocated per-step scratch: the hot loop writes with out= (no temporaries).
        hm = None if m is None else xp.empty((N, H), dtype=dtype)  # F0  m * h_{t-1}
        if self.reset_after:
            hn_all = xp.empty((T if store else 1, N, H), dtype=dtype)
            b_hn = b[1, 2 * H :]
            ah = xp.empty((N, 3 * H), dtype=dtype)
            step_mm = parallel.matmul_for(N, H, 3 * H, xs)  # F1's product, split or not
            for t in range(T):
                s = t if store else 0
                h_prev, g, hn = hs[t], gates[s], hn_all[s]
                rz, r, z, n = g[:, : 2 * H], g[:, :H], g[:, H : 2 * H], g[:, 2 * H :]
                h_in = h_prev
                if m is not None:
                    xp.multiply(h_prev, m, out=hm)  # F0
                    h_in = hm
                step_mm(h_in, Wh, out=ah)  # F1, F3 (hm @ Wh_eff, all three blocks)
                xp.add(ax[t, :, : 2 * H], ah[:, : 2 * H], out=rz)  # F1
                sigmoid(rz, out=rz)  # F2
                xp.add(ah[:, 2 * H :], b_hn, out=hn)  # F3
                xp.multiply(r, hn, out=n)  # F3
                n += ax[t, :, 2 * H :]  # F3
                xp.tanh(n, out=n)  # F4
                h_next = hs[t + 1]
                xp.subtract(h_prev, n, out=h_next)  # F5  h = n + z * (h_prev - n)
                h_next *= z  # F5
                h_next += n  # F5
        else:
            hn_all = None
            Wh_rz = xp.ascontiguousarray(Wh[:, : 2 * H])  # once per forward: contiguous GEMM
            Wh_n = xp.ascontiguousarray(Wh[:, 2 * H :])  # operands for the two products
            a_rz = xp.empty((N, 2 * H), dtype=dtype)
            rh = xp.empty((N, H), dtype=dtype)
            a_n = xp.empty((N, H), dtype=dtype)
            rz_mm = parallel.matmul_for(N, H, 2 * H, xs)  # the step's products, split or not
            n_mm = parallel.matmul_for(N, H, H, xs)
            for t in range(T):
                s = t if store else 0
                h_prev, g = hs[t], gates[s]
                rz, r, z, n = g[:, : 2 * H], g[:, :H], g[:, H : 2 * H], g[:, 2 * H :]
                h_in = h_prev
                if m is not None:
                    xp.multiply(h_prev, m, out=hm)  # F0
                    h_in = hm
                rz_mm(h_in, Wh_rz, out=a_rz)  # F1
                xp.add(ax[t, :, : 2 * H], a_rz, out=rz)  # F1
                sigmoid(rz, out=rz)  # F2
                xp.multiply(r, h_in, out=rh)  # F3
                n_mm(rh, Wh_n, out=a_n)  # F3
                xp.add(ax[t, :, 2 * H :], a_n, out=n)  # F3
                xp.tanh(n, out=n)  # F4
                h_next = hs[t + 1]
                xp.subtract(h_prev, n, out=h_next)  # F5  h = n + z * (h_prev - n)
                h_next *= z  # F5
                h_next += n  # F5

        self.h = hs[-1].copy()
        self._eval_forward = not store
        self.cache = (
            TimeGRUCache(xs_t, hs, gates, hn_all, self.drop_masks, Wh, static) if store else None
        )
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
        xs_t, hs, gates, hn, (m, M), Wh, static = cache  # Wh: Wh_eff of the forward
        T, N = gates.shape[:2]
        D = xs_t.shape[1]
        H = self.hidden_size
        self._check_dhs(dhs, (N, T, H))
        self.cache = None  # consumed: a second backward for this forward raises
        Wx = self.params[0]
        dWx, dWh, db = self.grads
        xp = backend.get_array_module(xs_t)
        dtype = xs_t.dtype

        # The known factors K1-K4 of all steps, time-major as the forward's buffers.
        r, z, n = gates[..., :H], gates[..., H : 2 * H], gates[..., 2 * H :]
        h_prev = hs[:-1]
        hm = h_prev if m is None else h_prev * m  # F0  m * h_{t-1}, all steps
        dh = xp.empty((N, H), dtype=dtype)
        # B3's GEMM runs as dh_next.T = Wh @ dah_t.T: it reads Wh as stored (no transposed
        # copy) and writes the (H, N) buffer dhT, whose transposed view is dh_next (for
        # OpenBLAS the faster orientation, ~20 % at H = 650, measured).
        dhT = xp.zeros((H, N), dtype=dtype)
        dh_next = dhT.T
        self._grad_from_later(dh_next)  # zero; a later chunk's (backward_chunk)
        norms = self._grad_norm_buffer(T, like=xs_t)

        if self.reset_after:
            # da[t] holds, per step, the blocks [da_r, da_z, dhn, da_n]: the first three
            # are the hidden-side gradient dah (one GEMM with Wh.T in the loop).
            # Before the loop they hold the factors kr, kz, khn, kn; B1 scales them by dh.
            da = xp.empty((T, N, 4, H), dtype=dtype)
            kn = (1 - z) * (1 - n * n)  # K2
            da[:, :, 3] = kn  # K2
            da[:, :, 2] = kn * r  # K4
            da[:, :, 0] = da[:, :, 2] * hn * (1 - r)  # K3
            da[:, :, 1] = (h_prev - n) * z * (1 - z)  # K1
            dah = da.reshape(T, N, 4 * H)[:, :, : 3 * H]  # [da_r, da_z, dhn] per step
            step_mm = parallel.matmul_for(H, 3 * H, N, xs_t)  # B3's product, split or not
            for t in reversed(range(T)):
                xp.add(dhs[:, t], dh_next, out=dh)  # B0  (out=: no temporary in the hot loop)
                if norms is not None:
                    norms[t] = (dh * dh).sum()
                da[t] *= dh[:, None, :]  # B1  all four blocks at once
                step_mm(Wh, dah[t].T, out=dhT)  # B3  (dh_next = dah_t @ Wh_eff.T)
                if m is not None:
                    dh_next *= m  # B3
                dh_next += dh * z[t]  # B3

            da2 = da.reshape(T * N, 4 * H)  # rows in (t, n) order, as xs_t's and hs's
            da_x = xp.concatenate((da2[:, : 2 * H], da2[:, 3 * H :]), axis=1)  # da
            da_h = da2[:, : 3 * H]  # dah
            P = self._static_backward(da_x.reshape(T, N, 3 * H), static)  # B4s, B5s
            dxs = parallel.matmul(da_x, Wx[P:].T).reshape(T, N, D)  # B4
            rows = self._window_rows(xs_t, da_x, hm.reshape(T * N, H), da_h)
            if rows is not None:  # None: a chunk of a window, summed with the others later
                x2, da_x, hm2, da_h = rows
                parallel.add_matmul(dWx[P:], x2.T, da_x)  # B5
                dWh_eff = parallel.matmul(hm2.T, da_h)  # B6  dL/dWh_eff
                if M is not None:
                    dWh_eff *= M  # B6
                dWh += dWh_eff  # B6
                db[0] += da_x.sum(axis=0)  # B7
                db[1] += da_h.sum(axis=0)  # B7
        else:
            # da[t] holds, per step, the blocks [da_r, da_z, da_n]; before the loop the
            # last two hold the factors kz, kn, which B1 scales by dh.
            da = xp.empty((T, N, 3, H), dtype=dtype)
            da[:, :, 1] = (h_prev - n) * z * (1 - z)  # K1
            da[:, :, 2] = (1 - z) * (1 - n * n)  # K2
            kr = hm * r * (1 - r)  # K3
            da3 = da.reshape(T, N, 3 * H)
            drhT = xp.empty((H, N), dtype=dtype)  # as dhT: drh = drhT.T
            drh = drhT.T
            n_mm = parallel.matmul_for(H, H, N, xs_t)  # the step's products, split or not
            rz_mm = parallel.matmul_for(H, 2 * H, N, xs_t)
            for t in reversed(range(T)):
                xp.add(dhs[:, t], dh_next, out=dh)  # B0  (out=: no temporary in the hot loop)
                if norms is not None:
                    norms[t] = (dh * dh).sum()
                da_t = da[t]
                da_t[:, 1:] *= dh[:, None, :]  # B1  da_z, da_n
                n_mm(Wh[:, 2 * H :], da_t[:, 2].T, out=drhT)  # B2  (drh = da_n @ Wh_n.T)
                xp.multiply(drh, kr[t], out=da_t[:, 0])  # B2  da_r
                rz_mm(Wh[:, : 2 * H], da3[t, :, : 2 * H].T, out=dhT)  # B3 (da_rz @ Wh_rz.T)
                drh *= r[t]  # B3
                dh_next += drh  # B3
                if m is not None:
                    dh_next *= m  # B3
                dh_next += dh * z[t]  # B3

            da2 = da.reshape(T * N, 3 * H)  # rows in (t, n) order, as xs_t's and hs's
            hm2 = hm.reshape(T * N, H)
            P = self._static_backward(da3, static)  # B4s, B5s
            dxs = parallel.matmul(da2, Wx[P:].T).reshape(T, N, D)  # B4
            rhm2 = r.reshape(T * N, H) * hm2  # B6  r * m * h_{t-1}
            rows = self._window_rows(xs_t, da2, hm2, rhm2)
            if rows is not None:  # None: a chunk of a window, summed with the others later
                x2, da2, hm2, rhm2 = rows
                parallel.add_matmul(dWx[P:], x2.T, da2)  # B5
                dWh_rz = parallel.matmul(hm2.T, da2[:, : 2 * H])  # B6
                dWh_n = parallel.matmul(rhm2.T, da2[:, 2 * H :])  # B6
                if M is not None:
                    dWh_rz *= M[:, : 2 * H]  # B6
                    dWh_n *= M[:, 2 * H :]  # B6
                dWh[:, : 2 * H] += dWh_rz  # B6
                dWh[:, 2 * H :] += dWh_n  # B6
                db += da2.sum(axis=0)  # B7

        self.dh = xp.ascontiguousarray(dh_next)
        self._store_grad_norms(norms)
        return xp.ascontiguousarray(dxs.transpose(1, 0, 2))  # (N, T, D)
