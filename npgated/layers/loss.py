"""Softmax with cross-entropy loss over a vocabulary, for one step or a whole sequence.

The language-model loss of Zaremba et al. 2014 ("Recurrent Neural Network Regularization"):
the mean negative log-likelihood of the target words, averaged over the targets that are
not ``ignore_label`` (padding); perplexity is ``exp`` of it. It is computed through a
log-softmax with the row maximum subtracted first, so logits of +-1e4 give finite values.

With the output projection before it, this is the hot end of a small PTB model (of a ~45 ms
step of the book's model, ~30 ms are the three 10,000-wide GEMMs of the output layer and ~8 ms
this softmax over V = 10,000 words, measured 2026-11-30), so it is frugal with memory: in
training it allocates ONE (rows, V) buffer, which forward fills with exp(shifted logits) in
place and backward turns into the gradient in place; the caller's logits are never modified
(unless the caller says it may, ``overwrite_input``: then they are the buffer). In eval mode
there is no (rows, V) buffer: the row sums are computed block by block through a small scratch
array.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npgated import backend, checks, parallel
from npgated.layers.base import Layer

_SAFE_EXP = 30.0  # |row max| up to which exp needs no shift (see F2 in the Notes)
# Rows are processed in blocks of at most this many elements (2 MiB of float32), which stay
# in a core's cache between the passes over them (NumPy only; on a GPU one block).
_BLOCK_ELEMENTS = 1 << 19
# Blocks of the evaluation path that computes the logits itself (forward_affine): larger,
# because the block's GEMM runs faster on more rows (measured 2026-12-02 on the book's model,
# H = 100, V = 10,000, PTB test, 2 threads: 1.54 s with blocks of 52 rows, 1.52 s with 104,
# 1.49 s with 175, the size this gives at N * T = 350).
_FUSED_BLOCK_ELEMENTS = 1 << 21
_FUSED_MIN_ROWS = 32
# What forward_affine leaves as the cache: backward explains that nothing was kept.
_EVALUATED = "evaluated by forward_affine"


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
    def _in_parallel(blocks, fn, like, scratch=None) -> None:
        """``fn(rows, buf)`` for every row block, the blocks shared out over the threads of
        :mod:`npgated.parallel` in contiguous groups (all in this thread when it is off);
        ``buf`` is the thread's own scratch array of shape ``scratch`` (None without)."""
        xp = backend.get_array_module(like)

        def group(g):
            buf = None if scratch is None else xp.empty(scratch, dtype=like.dtype)
            for rows in blocks[g]:
                fn(rows, buf)

        parallel.run(group, parallel.parts(len(blocks), 1, like))

    @staticmethod
    def _exp_shifted(x2, out=None):
        """exp(x2 - m) and its row sums, m as in F2; returns (e, s, m). ``out`` may be x2.

        Block by block of rows, each block's max, exp and row sums done while it is in the
        cache (one pass over memory instead of three; ~20 % faster at (700, 10,000)); the
        blocks are shared out over the threads of :mod:`npgated.parallel`.
        """
        xp = backend.get_array_module(x2)
        R, V = x2.shape
        e = xp.empty_like(x2) if out is None else out
        s = xp.empty(R, dtype=x2.dtype)
        m = xp.empty(R, dtype=x2.dtype)
        ones = xp.ones(V, dtype=x2.dtype)

        def block(rows, _):
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
            # F4: the row sums as a matrix-vector product, e @ ones == e.sum(axis=1), ~9x
            # faster than NumPy's sum over rows (measured).
            xp.matmul(eb, ones, out=s[rows])  # F4

        _SoftmaxCrossEntropy._in_parallel(_SoftmaxCrossEntropy._row_blocks(x2), block, x2)
        return e, s, m

    @staticmethod
    def _sums_only(logits_of, targets, blocks, V, like):
        """(s, m, x_t) for rows given block by block, without any (R, V) array.

        Parameters
        ----------
        logits_of : callable ``(rows, buf) -> (r, V) array``
            The logits of the row slice ``rows``: a view of the caller's logits, or computed
            into ``buf`` (an (r, V) scratch block) and returned.
        targets : (R,) int array, the target ids (ignored rows pointing at a valid column)
        blocks : list of row slices covering the R rows
        V : int
        like : array whose dtype and module the results take

        Returns
        -------
        s, m : (R,) as ``_exp_shifted`` gives them
        x_t : (R,) the target's logit x[r, t[r]] (F3)

        For the loss value alone (evaluation): each block's exp goes to a scratch buffer
        (one per thread; the blocks are shared out over the threads of
        :mod:`npgated.parallel`), first unshifted (m = 0, no pass for the max); a row whose
        sum is not a normal finite number (an overflow to inf, or every entry underflowing)
        is redone by ``_exp_shifted`` on the block's logits (asked for again), which
        subtracts the row max there (such a row's max is beyond ``_SAFE_EXP``). Logits given
        as views are left as they were.
        """
        xp = backend.get_array_module(like)
        dtype = like.dtype
        R = targets.shape[0]
        s = xp.empty(R, dtype=dtype)
        m = xp.zeros(R, dtype=dtype)
        x_t = xp.empty(R, dtype=dtype)
        ones = xp.ones(V, dtype=dtype)
        rows_max = max((b.stop - b.start for b in blocks), default=0)
        tiny = float(np.finfo(dtype).tiny)

        def block(rows, scratch):  # scratch: this thread's (rows_max, V) block buffer
            eb = scratch[: rows.stop - rows.start]
            x, sb = logits_of(rows, eb), s[rows]
            x_t[rows] = x[xp.arange(x.shape[0]), targets[rows]]  # F3
            with np.errstate(over="ignore"):  # an overflow is caught just below
                xp.exp(x, out=eb)  # F4 with m = 0
            xp.matmul(eb, ones, out=sb)  # F4
            bad = ~(xp.isfinite(sb) & (sb >= tiny))
            if bool(bad.any()):  # F2 for this block: rare (|logits| beyond ~80)
                x = logits_of(rows, eb)
                _, s[rows], m[rows] = _SoftmaxCrossEntropy._exp_shifted(x, out=eb)

        _SoftmaxCrossEntropy._in_parallel(blocks, block, like, scratch=(rows_max, V))
        return s, m, x_t

    def _targets(self, t):
        """F1: (keep, safe_t, K) for the (R,) targets; ignored rows point at column 0."""
        xp = backend.get_array_module(t)
        if self.ignore_label is None:
            keep = xp.ones(t.shape[0], dtype=bool)
        else:
            keep = t != self.ignore_label  # F1
        safe_t = xp.where(keep, t, 0)  # ignored rows point at column 0, masked out by keep
        return keep, safe_t, int(keep.sum())  # F1

    @staticmethod
    def _mean_loss(x_t, m, s, keep, K):
        """F3, F5: the mean of -(x_t - m - log s) over the K kept rows (0 when K = 0)."""
        xp = backend.get_array_module(s)
        return -((x_t - m - xp.log(s)) * keep).sum() / max(K, 1)  # F3, F5

    def _forward_rows(self, x2, t, shape):
        xp = backend.get_array_module(x2)
        R, V = x2.shape
        keep, safe_t, K = self._targets(t)  # F1
        if self.training:
            x_t = x2[xp.arange(R), safe_t]  # F3 (gathered before the buffer is written)
            # F2, F4: the layer's one (R, V) buffer (the logits themselves if
            # overwrite_input), which backward turns into the gradient
            z, s, m = self._exp_shifted(x2, out=x2 if self.overwrite_input else None)
            self.cache = _LossCache(z, s, None, safe_t, keep, K, shape)
        else:
            # F2-F4 without an (R, V) result; backward (rare in eval) recomputes it
            s, m, x_t = self._sums_only(
                lambda rows, buf: x2[rows], safe_t, self._row_blocks(x2), V, x2
            )
            self.cache = _LossCache(None, None, x2, safe_t, keep, K, shape)
        return self._mean_loss(x_t, m, s, keep, K)  # F3, F5

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
        if cache is _EVALUATED:
            raise RuntimeError(
                f"{type(self).__name__}.backward after an evaluation forward (eval mode, "
                "forward_affine), which keeps nothing for backward: call model.train() "
                "before the forward you want to backpropagate"
            )
        self.cache = None
        e, s = cache.exp, cache.sums
        if e is None:  # eval-mode forward kept no buffer
            e, s, _ = self._exp_shifted(
                cache.logits, out=cache.logits if self.overwrite_input else None
            )
        xp = backend.get_array_module(e)
        scale = float(dout) / max(cache.count, 1)
        c = cache.keep * (scale / s)  # B1

        def scale_rows(rows):
            e[rows] *= c[rows, None]  # B2 (in place: e becomes dout / K * softmax on kept rows)

        parallel.over_rows(scale_rows, e.shape[0], e.shape[1], e)
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

    def forward_affine(self, hs, head, ts):
        """Evaluation only: the loss of ``head.forward(hs)`` without its (N, T, V) logits.

        Parameters
        ----------
        hs : (N, T, D) float array, the output layer's input
        head : TimeAffine, the output layer (its parameters as they are; tied or not)
        ts : (N, T) integer array, target ids in [0, V) or ``ignore_label``

        Returns
        -------
        loss : scalar, ``forward(head.forward(hs), ts)`` up to float rounding

        Raises
        ------
        RuntimeError
            In training mode (this path keeps nothing for backward).

        Notes
        -----
        F1-F5 of :class:`SoftmaxWithLoss` with the logits made block by block of rows
        (``head.rows_into``: x2 @ W + b into a scratch block of up to 2 Mi elements, 8 MiB in
        float32), each block's exp and row sums done while the block is fresh, the blocks
        shared out over the threads of :mod:`npgated.parallel`, each thread with its own
        scratch. The logits array of a
        PTB window (N * T * V floats, 14 MB at N = 10, T = 35) is never written to memory.
        Nothing is cached: ``backward`` afterwards raises.
        """
        if self.training:
            raise RuntimeError(
                "forward_affine is the evaluation path and keeps nothing for backward; call "
                "model.eval() first, or use forward(head.forward(hs), ts) to train"
            )
        checks.check_float(hs, "hs", ndim=3, symbolic="(N, T, D)")
        N, T, D = hs.shape
        V = head.out_features
        if D != head.in_features:
            raise ValueError(
                f"hs must have last dimension D = {head.in_features} (the input size of the "
                f"output layer), got shape {checks.shape_str(hs.shape)}"
            )
        if not hasattr(ts, "shape") or tuple(ts.shape) != (N, T):
            raise ValueError(
                f"ts must have shape (N, T) = ({N}, {T}) to match hs of shape "
                f"{checks.shape_str(hs.shape)}, got {checks.shape_str(getattr(ts, 'shape', ()))}"
            )
        checks.check_ids(ts, V, name="ts", ignore_label=self.ignore_label)
        t = backend.to_device(ts, like=hs).reshape(N * T)
        keep, safe_t, K = self._targets(t)  # F1
        x2 = hs.reshape(N * T, D)
        R = N * T
        if backend.get_array_module(hs) is np:
            # equal blocks of at most _FUSED_BLOCK_ELEMENTS, as many as a multiple of the
            # threads (each thread the same work), but no block under _FUSED_MIN_ROWS rows
            # (each block reads all of W: many threads on few rows would read it for nothing)
            k = max(1, min(parallel.threads(), R // _FUSED_MIN_ROWS))
            count = -(-R * V // _FUSED_BLOCK_ELEMENTS)  # ceil
            count = max(k, -(-count // k) * k)
        else:
            count = 1  # a device runs one block
        bounds = [R * i // count for i in range(count + 1)]
        blocks = [slice(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]
        self.cache = _EVALUATED  # nothing for backward (which says so)
        s, m, x_t = self._sums_only(
            lambda rows, buf: head.rows_into(x2[rows], buf), safe_t, blocks, V, hs
        )  # F1-F4
        return self._mean_loss(x_t, m, s, keep, K)  # F3, F5
