"""Dot-product attention, the layers of the book's chapter 8, vectorised over decoder steps.

Bahdanau, Cho & Bengio, "Neural Machine Translation by Jointly Learning to Align and
Translate", ICLR 2015 (attention over the encoder's states); the dot-product score of Luong,
Pham & Manning, "Effective Approaches to Attention-based Neural Machine Translation", EMNLP
2015, which is the score "Deep Learning from Scratch 2" uses. The derivation, equation by
equation with the tags below, is in ``docs/derivations/attention.md``.

The book's four layers, with its names and signatures (no parameters: ``params = grads =
[]``):

    AttentionWeight  forward(hs, h) -> a          (N, T, H), (N, H) -> (N, T)
    WeightSum        forward(hs, a) -> c          (N, T, H), (N, T) -> (N, H)
    Attention        forward(hs, h) -> c          the two above; keeps ``attention_weight``
    TimeAttention    forward(hs_enc, hs_dec)      (N, T_enc, H), (N, T_dec, H) -> (N, T_dec, H)

The book builds :class:`TimeAttention` from one :class:`Attention` object per decoder step
and loops over them. Here it is three batched matrix products (decoder steps are
independent of each other given the encoder's states); :class:`AttentionWeight` and
:class:`WeightSum` are the same products with one query, T_dec = 1.

Every forward that computes weights takes an optional **mask** of the encoder positions a
query may look at, for batches of sequences of different lengths padded to T_enc:

* ``mask`` -- a boolean array, True where the position takes part (the convention of
  ``torch.nn.functional.scaled_dot_product_attention``; ``key_padding_mask`` of
  ``torch.nn.MultiheadAttention`` is the opposite), shape (N, T_enc), or (N, T_dec, T_enc)
  for one mask per decoder step;
* ``valid_lens`` -- (N,) integers (d2l's ``masked_softmax``): positions t < valid_lens[n]
  take part.

A masked position gets weight exactly 0 and its encoder state gradient exactly 0 (from this
layer). Every query needs at least one position: a row with none raises ValueError (its
softmax would be 0 / 0). A host (NumPy) mask or ``valid_lens`` is moved to the data's
backend first, so a mask never mixes host and device arrays (the book's CuPy failure).

The math (tags as in the code; q a query, T = T_enc; N-batched, written for one sequence)::

    F1  s = q @ hs.T              scores, s_t = sum_h hs[t, h] * q[h]
    F2  a = softmax(s)            over the encoder positions; masked: a_t = 0
    F3  c = a @ hs                context, c = sum_t a_t * hs[t]

    B1  da = dc @ hs.T            da_t = sum_h dc[h] * hs[t, h]
    B2  dhs = a.T @ dc            (the part through F3)
    B3  ds = a * (da - sum_t a_t * da_t)
    B4  dq = ds @ hs
    B5  dhs = ds.T @ q            (the part through F1)
    B6  dhs = B2 + B5             hs enters at F1 and F3

Shapes: N batch, T (T_enc) encoder steps, T_dec decoder steps, H hidden size.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npgated import backend, checks
from npgated.functional import softmax
from npgated.layers.base import Layer

__all__ = [
    "Attention",
    "AttentionWeight",
    "TimeAttention",
    "WeightSum",
    "attention_scores",
    "attention_scores_backward",
    "masked_softmax",
    "masked_softmax_backward",
    "valid_mask",
    "weighted_sum",
    "weighted_sum_backward",
]


# ---------------------------------------------------------------------------------------
# 1. Pure functions: batched over N and over the queries (T_q = 1 for one query)
# ---------------------------------------------------------------------------------------
def _t(a):
    """The batched transpose: (N, A, B) -> (N, B, A), a view."""
    return a.transpose(0, 2, 1)


def attention_scores(hs, qs):
    """F1: dot-product scores of every query against every encoder state.

    Parameters
    ----------
    hs : (N, T, H) array
        Encoder states.
    qs : (N, T_q, H) array
        Queries (decoder states).

    Returns
    -------
    s : (N, T_q, T) array
        ``s[n, j, t] = sum_h qs[n, j, h] * hs[n, t, h]``, i.e. ``qs @ hs.T`` per sequence.
    """
    return qs @ _t(hs)  # F1


def attention_scores_backward(ds, hs, qs):
    """B4, B5: the gradients of :func:`attention_scores` w.r.t. the queries and the states.

    Parameters
    ----------
    ds : (N, T_q, T) array
        Gradient w.r.t. the scores.
    hs : (N, T, H) array
    qs : (N, T_q, H) array

    Returns
    -------
    dqs : (N, T_q, H) array
        ``ds @ hs``.
    dhs : (N, T, H) array
        ``ds.T @ qs``.
    """
    dqs = ds @ hs  # B4
    dhs = _t(ds) @ qs  # B5
    return dqs, dhs


def masked_softmax(s, valid=None):
    """F2: softmax over the last axis; positions where ``valid`` is False get exactly 0.

    Parameters
    ----------
    s : (..., T) array
        Scores.
    valid : boolean array broadcastable to ``s``, optional
        True where a position takes part, on ``s``'s backend (see :func:`valid_mask`). Every
        row must have at least one True (checked by :func:`valid_mask`, not here).

    Returns
    -------
    a : array of ``s``'s shape and dtype
        ``a_t = exp(s_t - m) / sum_u exp(s_u - m)``, m the row's largest valid score (the
        stable softmax of :func:`npgated.functional.softmax`), with masked scores taken as
        -inf, so ``exp(-inf) = 0`` exactly and the valid weights sum to 1.
    """
    if valid is not None:
        xp = backend.get_array_module(s)
        s = xp.where(valid, s, -xp.inf)  # F2  masked: exp(-inf - m) = 0
    return softmax(s, axis=-1)  # F2


def masked_softmax_backward(da, a):
    """B3: the gradient of the softmax, from its output ``a`` (masked entries are 0).

    ``ds_t = a_t * (da_t - sum_u a_u * da_u)``: the Jacobian of the softmax is
    ``diag(a) - a a^T``, symmetric, so the vector-Jacobian product is ``a * da - a (a . da)``.
    Where ``a_t = 0`` (masked), ``ds_t = 0`` exactly.
    """
    return a * (da - (a * da).sum(axis=-1, keepdims=True))  # B3


def weighted_sum(hs, a):
    """F3: the contexts, ``c = a @ hs`` per sequence.

    Parameters
    ----------
    hs : (N, T, H) array
    a : (N, T_q, T) array
        Weights.

    Returns
    -------
    c : (N, T_q, H) array
        ``c[n, j] = sum_t a[n, j, t] * hs[n, t]``.
    """
    return a @ hs  # F3


def weighted_sum_backward(dc, hs, a):
    """B1, B2: the gradients of :func:`weighted_sum` w.r.t. the weights and the states.

    Returns
    -------
    da : (N, T_q, T) array
        ``dc @ hs.T``.
    dhs : (N, T, H) array
        ``a.T @ dc``; zero rows at positions whose weight is 0 for every query.
    """
    da = dc @ _t(hs)  # B1
    dhs = _t(a) @ dc  # B2
    return da, dhs


def valid_mask(N: int, T: int, like, mask=None, valid_lens=None, T_q: int | None = None):
    """The boolean mask of the positions that take part, on ``like``'s backend, or None.

    Parameters
    ----------
    N, T : int
        Batch size and number of encoder positions.
    like : array
        An array of the data: the mask is moved to its backend.
    mask : boolean array, optional
        (N, T), or (N, T_q, T) when ``T_q`` is given (one mask per query); True = take part.
        Host or device.
    valid_lens : integer array, optional
        (N,): positions ``t < valid_lens[n]`` take part; each in [1, T].
    T_q : int, optional
        The number of queries, when a per-query mask (N, T_q, T) is allowed.

    Returns
    -------
    valid : boolean array (N, 1, T) or (N, T_q, T) on ``like``'s backend, or None
        None when neither ``mask`` nor ``valid_lens`` is given (everything takes part).

    Raises
    ------
    ValueError
        Both given; a wrong shape or dtype; a length outside [1, T]; a row with no valid
        position (its softmax would be 0 / 0), naming the first such row.
    """
    if mask is not None and valid_lens is not None:
        raise ValueError("give either mask or valid_lens, not both")
    if mask is None and valid_lens is None:
        return None
    xp = backend.get_array_module(like)
    if valid_lens is not None:
        lens = backend.to_cpu(valid_lens)
        if lens.dtype.kind not in "iu" or lens.shape != (N,):
            raise ValueError(
                f"valid_lens must be an integer array of shape (N,) = ({N},), got dtype "
                f"{lens.dtype}, shape {checks.shape_str(lens.shape)}"
            )
        bad = (lens < 1) | (lens > T)
        if bad.any():
            n = int(np.argmax(bad))
            raise ValueError(
                f"valid_lens[{n}] = {int(lens[n])} is outside [1, T_enc] = [1, {T}]: every "
                "sequence needs at least one position to attend to (a row with no valid "
                "position has no softmax)"
            )
        lens = backend.to_device(lens, like=like)
        return (xp.arange(T)[None, :] < lens[:, None])[:, None, :]
    if not hasattr(mask, "dtype") or np.dtype(mask.dtype) != np.bool_:
        raise ValueError(
            "mask must be a boolean array (True where a position takes part), got "
            f"{getattr(mask, 'dtype', type(mask).__name__)}: convert with mask.astype(bool)"
        )
    shapes = [(N, T)] + ([(N, T_q, T)] if T_q is not None else [])
    if tuple(mask.shape) not in shapes:
        want = " or ".join(checks.shape_str(s) for s in shapes)
        names = "(N, T_enc)" + (" or (N, T_dec, T_enc)" if T_q is not None else "")
        raise ValueError(
            f"mask must have shape {names} = {want}, got {checks.shape_str(mask.shape)}"
        )
    empty = ~backend.to_cpu(mask).any(axis=-1)
    if empty.any():
        where = tuple(int(i) for i in np.argwhere(empty)[0])
        raise ValueError(
            f"mask row {where} has no True entry: every query needs at least one position "
            "to attend to (a row with no valid position has no softmax)"
        )
    valid = backend.to_device(mask, like=like)
    return valid[:, None, :] if valid.ndim == 2 else valid


def _check_states(hs, name_hs, q, name_q, q_ndim):
    """hs (N, T, H) and a query array (N, H) or (N, T_q, H): one float dtype, one backend."""
    checks.check_float(hs, name_hs, ndim=3, symbolic="(N, T, H)")
    symbolic = "(N, H)" if q_ndim == 2 else "(N, T_dec, H)"
    checks.check_float(q, name_q, ndim=q_ndim, dtype=hs.dtype, symbolic=symbolic)
    N, _, H = hs.shape
    if q.shape[0] != N or q.shape[-1] != H:
        raise ValueError(
            f"{name_q} must have shape {symbolic} with N = {N} and H = {H} (those of "
            f"{name_hs} {checks.shape_str(hs.shape)}), got {checks.shape_str(q.shape)}"
        )
    if backend.get_array_module(hs) is not backend.get_array_module(q):
        raise TypeError(
            f"{name_hs} and {name_q} live on different backends: move one with "
            f"backend.to_device(a, like=b)"
        )


def _check_grad(d, name, expected_shape, dtype):
    checks.check_float(d, name, dtype=dtype)
    if tuple(d.shape) != tuple(expected_shape):
        raise ValueError(
            f"{name} must have the shape of the forward's output "
            f"{checks.shape_str(expected_shape)}, got {checks.shape_str(d.shape)}"
        )


class AttentionCache(NamedTuple):
    """What the backward passes need from their forward.

    Attributes
    ----------
    hs : (N, T, H) array
        Encoder states.
    qs : (N, T_q, H) array or None
        Queries (decoder states); None in :class:`WeightSum`.
    a : (N, T_q, T) array
        The weights (0 at masked positions).
    """

    hs: object
    qs: object
    a: object


# ---------------------------------------------------------------------------------------
# 2. The book's single-query layers
# ---------------------------------------------------------------------------------------
class AttentionWeight(Layer):
    """The attention weights of one query over the encoder's states (F1, F2).

    Notes
    -----
    Forward, for each sequence n (``h`` is the query; the batched code is F1's
    ``h[:, None, :] @ hs.T``)::

        F1  s_t = sum_h hs[t, h] * h[h]                  s = hs @ h, (N, T)
        F2  a = softmax(s) over t                        masked positions: a_t = 0

    Backward, given da (N, T)::

        B3  ds = a * (da - sum_t a_t * da_t)
        B4  dh = sum_t ds_t * hs[t]                      dh = ds @ hs, (N, H)
        B5  dhs[t] = ds_t * h                            (N, T, H)
    """

    def __init__(self):
        super().__init__()
        self.cache = None
        self.valid = None

    def forward(self, hs, h, mask=None, valid_lens=None):
        """
        Parameters
        ----------
        hs : (N, T, H) array
            Encoder states.
        h : (N, H) array
            The query (a decoder state), in ``hs``'s dtype.
        mask : (N, T) boolean array, optional
            True where a position takes part (see the module docstring).
        valid_lens : (N,) integer array, optional
            Positions t < valid_lens[n] take part.

        Returns
        -------
        a : (N, T) array
            The weights; each row sums to 1, masked positions are exactly 0.
        """
        _check_states(hs, "hs", h, "h", q_ndim=2)
        N, T, _ = hs.shape
        self.valid = valid_mask(N, T, hs, mask=mask, valid_lens=valid_lens)
        qs = h[:, None, :]  # one query: (N, 1, H)
        s = attention_scores(hs, qs)  # F1
        a = masked_softmax(s, self.valid)  # F2
        self.cache = AttentionCache(hs, qs, a)
        return a[:, 0]

    def backward(self, da):
        """
        Parameters
        ----------
        da : (N, T) array

        Returns
        -------
        dhs : (N, T, H) array
        dh : (N, H) array
        """
        hs, qs, a = self._require_forward()
        _check_grad(da, "da", a[:, 0].shape, hs.dtype)
        self.cache = None  # consumed: a second backward for this forward raises
        ds = masked_softmax_backward(da[:, None, :], a)  # B3
        dqs, dhs = attention_scores_backward(ds, hs, qs)  # B4, B5
        return dhs, dqs[:, 0]


class WeightSum(Layer):
    """The context: the weighted sum of the encoder's states (F3).

    Notes
    -----
    Forward, for each sequence n (the batched code is F3's ``a[:, None, :] @ hs``)::

        F3  c = sum_t a_t * hs[t]                        (N, H)

    Backward, given dc (N, H)::

        B1  da_t = sum_h dc[h] * hs[t, h]                da = hs @ dc, (N, T)
        B2  dhs[t] = a_t * dc                            (N, T, H)
    """

    def __init__(self):
        super().__init__()
        self.cache = None

    def forward(self, hs, a):
        """
        Parameters
        ----------
        hs : (N, T, H) array
        a : (N, T) array
            Weights, in ``hs``'s dtype (any numbers; attention gives rows that sum to 1).

        Returns
        -------
        c : (N, H) array
        """
        checks.check_float(hs, "hs", ndim=3, symbolic="(N, T, H)")
        checks.check_float(a, "a", ndim=2, dtype=hs.dtype, symbolic="(N, T)")
        if tuple(a.shape) != tuple(hs.shape[:2]):
            raise ValueError(
                f"a must have shape (N, T) = {checks.shape_str(hs.shape[:2])} (those of hs "
                f"{checks.shape_str(hs.shape)}), got {checks.shape_str(a.shape)}"
            )
        a = a[:, None, :]  # one query: (N, 1, T)
        c = weighted_sum(hs, a)  # F3
        self.cache = AttentionCache(hs, None, a)
        return c[:, 0]

    def backward(self, dc):
        """
        Parameters
        ----------
        dc : (N, H) array

        Returns
        -------
        dhs : (N, T, H) array
        da : (N, T) array
        """
        hs, _, a = self._require_forward()
        _check_grad(dc, "dc", (hs.shape[0], hs.shape[2]), hs.dtype)
        self.cache = None
        da, dhs = weighted_sum_backward(dc[:, None, :], hs, a)  # B1, B2
        return dhs, da[:, 0]


class Attention(Layer):
    """One decoder step's attention: weights (F1, F2) then the context (F3).

    The book's composition of :class:`AttentionWeight` and :class:`WeightSum`; it keeps
    ``attention_weight`` (N, T), the last forward's weights, like the book.

    Notes
    -----
    Forward (h the query (N, H), hs the encoder states (N, T, H))::

        F1  s_t = sum_h hs[t, h] * h[h]
        F2  a = softmax(s)                               masked positions: a_t = 0
        F3  c = sum_t a_t * hs[t]

    Backward, given dc (N, H)::

        B1  da_t = sum_h dc[h] * hs[t, h]                WeightSum
        B2  dhs_c[t] = a_t * dc                          WeightSum
        B3  ds = a * (da - sum_t a_t * da_t)             AttentionWeight
        B4  dh = sum_t ds_t * hs[t]                      AttentionWeight
        B5  dhs_s[t] = ds_t * h                          AttentionWeight
        B6  dhs = dhs_c + dhs_s                          hs enters at F1 and F3
    """

    def __init__(self):
        super().__init__()
        self.attention_weight_layer = AttentionWeight()
        self.weight_sum_layer = WeightSum()
        self.attention_weight = None

    def forward(self, hs, h, mask=None, valid_lens=None):
        """
        Parameters
        ----------
        hs : (N, T, H) array
        h : (N, H) array
        mask : (N, T) boolean array, optional
        valid_lens : (N,) integer array, optional
            See :class:`AttentionWeight`.

        Returns
        -------
        c : (N, H) array
            The context.
        """
        a = self.attention_weight_layer.forward(hs, h, mask=mask, valid_lens=valid_lens)  # F1, F2
        c = self.weight_sum_layer.forward(hs, a)  # F3
        self.attention_weight = a
        return c

    def backward(self, dc):
        """
        Parameters
        ----------
        dc : (N, H) array

        Returns
        -------
        dhs : (N, T, H) array
        dh : (N, H) array
        """
        if self.weight_sum_layer.cache is None:
            raise RuntimeError(
                "Attention.backward called before forward (or twice for one forward): call "
                "forward first"
            )
        dhs_c, da = self.weight_sum_layer.backward(dc)  # B1, B2
        dhs_s, dh = self.attention_weight_layer.backward(da)  # B3, B4, B5
        return dhs_c + dhs_s, dh  # B6


# ---------------------------------------------------------------------------------------
# 3. All decoder steps at once
# ---------------------------------------------------------------------------------------
class TimeAttention(Layer):
    """Attention of every decoder step over the encoder's states: three batched products.

    The book loops over the decoder's steps with one :class:`Attention` per step; the steps
    do not depend on each other (given the decoder's states), so all T_dec of them are one
    batched matrix product each: (N, T_dec, H) @ (N, H, T_enc) for the scores and
    (N, T_dec, T_enc) @ (N, T_enc, H) for the contexts.

    Attributes
    ----------
    weights : (N, T_dec, T_enc) array or None
        The last forward's weights: ``weights[n, j]`` is decoder step j's distribution
        over the encoder positions of sequence n (exactly 0 where masked).
    attention_weights : (T_dec, N, T_enc) array or None
        The same numbers laid out as the book's list of per-step (N, T_enc) arrays: a
        transposed view of ``weights``, so ``attention_weights[j]`` is step j's (N, T_enc)
        weights, ``len(attention_weights)`` is T_dec, iterating yields the steps, and
        ``np.array(attention_weights)`` is the book's stacked (T_dec, N, T_enc) array (as
        its ``visualize_attention.py`` uses it).
    valid : boolean array (N, 1, T_enc) or (N, T_dec, T_enc), or None
        The mask of the last forward on the data's backend (None: no mask).

    Notes
    -----
    Forward, per sequence (``hs_enc`` (T_enc, H), ``hs_dec`` (T_dec, H); code: batched
    over N)::

        F1  S = hs_dec @ hs_enc.T             scores (T_dec, T_enc)
        F2  A = softmax(S) along each row     masked entries: A[j, t] = 0
        F3  C = A @ hs_enc                    contexts (T_dec, H)

    Backward, given dC (T_dec, H)::

        B1  dA = dC @ hs_enc.T                (T_dec, T_enc)
        B2  dhs_enc_c = A.T @ dC              through F3 (zero rows where masked)
        B3  dS = A * (dA - sum_t A[:, t] * dA[:, t])   row by row (zero where masked)
        B4  dhs_dec = dS @ hs_enc             (T_dec, H)
        B5  dhs_enc_s = dS.T @ hs_dec         through F1 (zero rows where masked)
        B6  dhs_enc = dhs_enc_c + dhs_enc_s

    Row j of these is exactly :class:`Attention`'s F1..B6 for the query ``hs_dec[j]``; the
    encoder gradient B6 sums the contributions of all T_dec steps (the book's
    ``dhs_enc += dhs`` over its loop).
    """

    def __init__(self):
        super().__init__()
        self.cache = None
        self.weights = None
        self.attention_weights = None
        self.valid = None

    def forward(self, hs_enc, hs_dec, mask=None, valid_lens=None):
        """
        Parameters
        ----------
        hs_enc : (N, T_enc, H) array
            Encoder states.
        hs_dec : (N, T_dec, H) array
            Decoder states (the queries), in ``hs_enc``'s dtype.
        mask : boolean array (N, T_enc) or (N, T_dec, T_enc), optional
            True where an encoder position takes part (module docstring).
        valid_lens : (N,) integer array, optional
            Encoder positions t < valid_lens[n] take part.

        Returns
        -------
        cs : (N, T_dec, H) array
            The contexts of every decoder step.
        """
        _check_states(hs_enc, "hs_enc", hs_dec, "hs_dec", q_ndim=3)
        N, T_enc, _ = hs_enc.shape
        T_dec = hs_dec.shape[1]
        self.valid = valid_mask(N, T_enc, hs_enc, mask=mask, valid_lens=valid_lens, T_q=T_dec)
        S = attention_scores(hs_enc, hs_dec)  # F1
        A = masked_softmax(S, self.valid)  # F2
        cs = weighted_sum(hs_enc, A)  # F3
        self.cache = AttentionCache(hs_enc, hs_dec, A)
        self.weights = A
        self.attention_weights = A.transpose(1, 0, 2)
        return cs

    def backward(self, dcs):
        """
        Parameters
        ----------
        dcs : (N, T_dec, H) array
            Gradient w.r.t. the contexts.

        Returns
        -------
        dhs_enc : (N, T_enc, H) array
        dhs_dec : (N, T_dec, H) array
        """
        hs_enc, hs_dec, A = self._require_forward()
        _check_grad(dcs, "dcs", hs_dec.shape, hs_enc.dtype)
        self.cache = None  # consumed: a second backward for this forward raises
        dA, dhs_enc = weighted_sum_backward(dcs, hs_enc, A)  # B1, B2
        dS = masked_softmax_backward(dA, A)  # B3
        dhs_dec, dhs_enc_s = attention_scores_backward(dS, hs_enc, hs_dec)  # B4, B5
        dhs_enc += dhs_enc_s  # B6
        return dhs_enc, dhs_dec
