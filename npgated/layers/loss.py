"""Softmax with cross-entropy loss over a vocabulary, for one step or a whole sequence.

The language-model loss of Zaremba et al. 2014 ("Recurrent Neural Network Regularization"):
the mean negative log-likelihood of the target words, averaged over the targets that are
not ``ignore_label`` (padding); perplexity is ``exp`` of it. It is computed through a
log-softmax with the row maximum subtracted first, so logits of +-1e4 give finite values.

With the output projection before it, this is the hot end of a small PTB model (of a ~45 ms
step of the book's model, ~30 ms are the three 10,000-wide GEMMs of the output layer and ~8 ms
this softmax over V = 10,000 words, measured 2026-11-30), so it is frugal with memory: in training it allocates ONE
(rows, V) buffer, which forward fills with exp(shifted logits) in place and backward turns
into the gradient in place; the caller's logits are never modified (unless the caller says it
may, ``overwrite_input``: then they are the buffer). In eval mode there is no (rows, V) buffer:
the row sums are computed block by block through a small scratch array.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npgated import backend, checks
from npgated.layers.base import Layer


_SAFE_EXP = 30.0  # |row max| up to which exp needs no shift (see F2 in the Notes)
# Rows are processed in blocks of at most this many elements (2 MiB of float32), which stay
# in a core's cache between the passes over them (NumPy only; on a GPU one block).
_BLOCK_ELEMENTS = 1 << 19


class _LossCache(NamedTuple):
    exp: object  # (R, V) exp(shifted logits), the layer's buffer (None in eval mode)
    sums: object  # (R,) exp.sum(axis=1) (None in eval mode)
    logits: object  # (R, V) the caller's logits as rows (a view, used only in eval mode)
    targets: object  # (R,) target ids, ignored positions replaced by 0
    keep: object  # (R,) bool, True where the target is not ignore_label
    count: int  # K, the number of non-ignored targets
    shape: tuple  # the shape of the logits as given, for the returned gradient


class _SoftmaxCrossEntropy(Layer):
    """The loss on rows: logits (R, V) and targets (R,). Subclasses only reshape."""

    param_names = ()

    def __init__(self, ignore_label=-1):
        if ignore_label is not None and (
            isinstance(ignore_label, bool) or not isinstance(ignore_label, (int, np.integer))
        ):
            raise TypeError(f"ignore_label must be an integer or None, got {ignore_label!r}")
        super().__init__()
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        self.cache = None
        # True: forward may overwrite the logits it is given, using them as its buffer
        # (a model whose logits are an intermediate result sets this; saves one (R, V)
        # allocation and one pass over it per step).
        self.overwrite_input = False

    def _validate(self, xs, ts, symbolic: str, t_symbolic: str):
        checks.check_float(xs, "xs", ndim=symbolic.count(",") + 1, symbolic=symbolic)
        if not hasattr(ts, "shape") or not hasattr(ts, "dtype"):
            raise TypeError(f"ts must be an integer array, got {type(ts).__name__}")
        if tuple(ts.shape) != tuple(xs.shape[:-1]):
            raise ValueError(
                f"ts must have shape {t_symbolic} = {checks.shape_str(xs.shape[:-1])} to match "
                f"xs of shape {symbolic} = {checks.shape_str(xs.shape)}, got "
                f"{checks.shape_str(ts.shape)}"
            )
        checks.check_ids(ts, xs.shape[-1], name="ts", ignore_label=self.ignore_label)
        return backend.to_device(ts, like=xs)  # host targets are fine: moved once here

    @staticmethod
    def _row_blocks(x2):
        """Row ranges of at most ``_BLOCK_ELEMENTS`` elements (NumPy); one range on a GPU."""
        R, V = x2.shape
        step = max(1, R if backend.get_array_module(x2) is not np else _BLOCK_ELEMENTS // V)
        return [slice(r0, min(r0 + step, R)) for r0 in range(0, R, step)]

    @staticmethod
    def _exp_shifted(x2, out=None):
        """exp(x2 - m) and its row sums, m as in F2; returns (e, s, m). ``out`` may be x2.

        Block by block of rows, each block's max, exp and row sums done while it is in the
        cache (one pass over memory instead of three; ~20 % faster at (700, 10,000)).
        """
        xp = backend.get_array_module(x2)
        R, V = x2.shape
        e = xp.empty_like(x2) if out is None else out
        s = xp.empty(R, dtype=x2.dtype)
        m = xp.empty(R, dtype=x2.dtype)
        ones = xp.ones(V, dtype=x2.dtype)
        for rows in _SoftmaxCrossEntropy._row_blocks(x2):
            x, eb, mb = x2[rows], e[rows], m[rows]
            xp.max(x, axis=1, out=mb)  # F2
            # F2: shifting by the row max costs a pass over the block; it is needed only
            # when exp could overflow or every entry of a row underflow. With all row maxima
            # in [-SAFE, SAFE], exp(x) <= e^30 and s >= e^-30: finite even in float32.
            if float(abs(mb).max()) <= _SAFE_EXP:
                mb[...] = 0
                xp.exp(x, out=eb)  # F4 (unshifted: the same softmax, one pass fewer)
            else:
                xp.subtract(x, mb[:, None], out=eb)  # F2
                xp.exp(eb, out=eb)  # F4 (in place)
            # F4: the row sums as a matrix-vector product, e @ ones == e.sum(axis=1): BLAS
            # runs it multi-threaded, ~5x faster than NumPy's sum (measured).
            xp.matmul(eb, ones, out=s[rows])  # F4
        return e, s, m

    @staticmethod
    def _sums_only(x2):
        """(s, m) as ``_exp_shifted`` gives them, without writing any (R, V) array.

        For the loss value alone (evaluation): each block's exp goes to one small scratch
        buffer, first unshifted (m = 0, no pass for the max); a row whose sum is not a normal
        finite number (an overflow to inf, or every entry underflowing) is redone by
        ``_exp_shifted``, which subtracts the row max there (such a row's max is beyond
        ``_SAFE_EXP``). The logits are left as they were.
        """
        xp = backend.get_array_module(x2)
        R, V = x2.shape
        s = xp.empty(R, dtype=x2.dtype)
        m = xp.zeros(R, dtype=x2.dtype)
        ones = xp.ones(V, dtype=x2.dtype)
        blocks = _SoftmaxCrossEntropy._row_blocks(x2)
        scratch = xp.empty((blocks[0].stop - blocks[0].start if blocks else 0, V),
                           dtype=x2.dtype)
        tiny = float(np.finfo(x2.dtype).tiny)
        for rows in blocks:
            x, sb = x2[rows], s[rows]
            eb = scratch[: x.shape[0]]
            with np.errstate(over="ignore"):  # an overflow is caught just below
                xp.exp(x, out=eb)  # F4 with m = 0
            xp.matmul(eb, ones, out=sb)  # F4
            bad = ~(xp.isfinite(sb) & (sb >= tiny))
            if bool(bad.any()):  # F2 for this block: rare (|logits| beyond ~80)
                _, s[rows], m[rows] = _SoftmaxCrossEntropy._exp_shifted(x, out=eb)
        return s, m

    def _forward_rows(self, x2, t, shape):
        xp = backend.get_array_module(x2)
        R, V = x2.shape
        if self.ignore_label is None:
            keep = xp.ones(R, dtype=bool)
        else:
            keep = t != self.ignore_label  # F1
        safe_t = xp.where(keep, t, 0)  # ignored rows point at column 0, masked out by keep
        K = int(keep.sum())  # F1
        x_t = x2[xp.arange(R), safe_t]  # F3 (gathered before the buffer is written)
        if self.training:
            # F2, F4: the layer's one (R, V) buffer (the logits themselves if
            # overwrite_input), which backward turns into the gradient
            z, s, m = self._exp_shifted(x2, out=x2 if self.overwrite_input else None)
            self.cache = _LossCache(z, s, None, safe_t, keep, K, shape)
        else:
            # F2, F4 without an (R, V) result; backward (rare in eval) recomputes it
            s, m = self._sums_only(x2)
            self.cache = _LossCache(None, None, x2, safe_t, keep, K, shape)
        loss = -((x_t - m - xp.log(s)) * keep).sum() / max(K, 1)  # F3, F5
        return loss

    def backward(self, dout=1.0):
        """Gradient of ``dout * loss`` w.r.t. the logits.

        Parameters
        ----------
        dout : float
            The upstream gradient of the scalar loss (1.0 when the loss is the objective).

        Returns
        -------
        dxs : array of the logits' shape and dtype
            ``dout * (softmax - onehot) / K`` on the rows with a non-ignored target, 0 on the
            others. In training mode this is the layer's forward buffer, overwritten in place.
        """
        cache = self._require_forward()
        self.cache = None
        e, s = cache.exp, cache.sums
        if e is None:  # eval-mode forward kept no buffer
            e, s, _ = self._exp_shifted(
                cache.logits, out=cache.logits if self.overwrite_input else None)
        xp = backend.get_array_module(e)
        scale = float(dout) / max(cache.count, 1)
        c = cache.keep * (scale / s)  # B1
        e *= c[:, None]  # B2 (in place: e becomes dout / K * softmax on kept rows)
        e[xp.arange(e.shape[0]), cache.targets] -= cache.keep * scale  # B3
        return e.reshape(cache.shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ignore_label={self.ignore_label})"


class SoftmaxWithLoss(_SoftmaxCrossEntropy):
    """Softmax followed by mean cross-entropy, on a batch of logit vectors.

    Parameters
    ----------
    ignore_label : int or None
        Targets equal to it contribute nothing to the loss and are not counted in the mean.

    Notes
    -----
    For logits x of shape (N, V) and integer targets t of shape (N,), rows r = 0..N-1::

        F1  keep = (t != ignore_label),  K = keep.sum()    (N,) bool, int
        F2  m = x.max(axis=1),  z = x - m[:, None]         (N,), (N, V): shifted logits <= 0
        F3  z_t = x[r, t[r]] - m[r]                        (N,), the target's shifted logit
        F4  e = exp(z),  s = e.sum(axis=1)                 (N, V), (N,); 1 <= s <= V
        F5  L = -sum(keep * (z_t - log(s))) / max(K, 1)    scalar; z_t - log(s) = log softmax

    F2-F4 never overflow: exp sees only values <= 0, and s >= 1 so log(s) is finite. The
    shift does not change the softmax (e and s both scale by exp(-m)), so when every row
    maximum lies in [-30, 30] the code uses m = 0 and saves the pass that subtracts it:
    exp(x) <= e^30 and s >= e^-30 are then finite in float32 too. In eval mode, where only
    the loss is needed, the code first tries m = 0 without looking at the maximum, and redoes
    with the shift only the rows whose s came out inf or below the smallest normal number.

    Backward, given dout = dJ/dL (a scalar), with softmax = e / s[:, None]::

        B1  c = keep * dout / (max(K, 1) * s)              (N,)
        B2  dx = c[:, None] * e                            (= dout / K * softmax, 0 if ignored)
        B3  dx[r, t[r]] -= keep[r] * dout / max(K, 1)

    so dx = dout * (softmax - onehot(t)) / K on the kept rows. With K = 0 the loss is 0 and
    the gradient is 0 (no nan).
    """

    def forward(self, xs, ts):
        """The mean cross-entropy of the softmax of ``xs`` against ``ts``.

        Parameters
        ----------
        xs : (N, V) float array, the logits (not modified)
        ts : (N,) integer array, target ids in [0, V) or ``ignore_label``; may be a host
            array when xs is on the device

        Returns
        -------
        loss : scalar (0-d array or NumPy scalar) in xs's dtype
        """
        ts = self._validate(xs, ts, "(N, V)", "(N,)")
        return self._forward_rows(xs, ts, tuple(xs.shape))


class TimeSoftmaxWithLoss(_SoftmaxCrossEntropy):
    """Softmax cross-entropy at every time step, averaged over all non-ignored targets.

    Parameters
    ----------
    ignore_label : int or None
        Targets equal to it contribute nothing to the loss and are not counted in the mean.

    Notes
    -----
    The equations of :class:`SoftmaxWithLoss` (F1-F5, B1-B3) on the N * T rows
    ``x = xs.reshape(N * T, V)``, ``t = ts.reshape(N * T)``: one vectorised computation, no
    loop over time. The mean is over all non-ignored (n, t) positions, K of them, so
    ``exp(L)`` is the perplexity of the batch.
    """

    def forward(self, xs, ts):
        """The mean cross-entropy over all time steps.

        Parameters
        ----------
        xs : (N, T, V) float array, the logits (not modified)
        ts : (N, T) integer array, target ids in [0, V) or ``ignore_label``; may be a host
            array when xs is on the device

        Returns
        -------
        loss : scalar (0-d array or NumPy scalar) in xs's dtype
        """
        ts = self._validate(xs, ts, "(N, T, V)", "(N, T)")
        N, T, V = xs.shape
        return self._forward_rows(xs.reshape(N * T, V), ts.reshape(N * T), tuple(xs.shape))
