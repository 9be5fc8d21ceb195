"""What the three recurrent Time layers (TimeRNN, TimeLSTM, TimeGRU) have in common.

Not the math -- each cell derives its own forward and backward in its module -- only the
bookkeeping of truncated backpropagation through time (the book's ``stateful`` layers), which
would otherwise be written three times:

* parameter validation: ``Wx`` (D, kH), ``Wh`` (H, kH), ``b`` (kH,) with k gate blocks
  (k = 1 RNN, 4 LSTM, 3 GRU), one float dtype, one backend (:func:`check_recurrent_params`);
* the recurrent state: ``stateful``, ``h`` (and ``c`` for a cell with a memory cell),
  ``set_state()``, ``reset_state()``, and the rule that picks the initial state of a forward
  (:meth:`RecurrentLayer._initial_state`);
* the gradient w.r.t. that initial state after backward, ``dh`` (and ``dc``);
* input validation of ``xs`` and ``dhs`` (and of a single step's ``x``, ``h_prev``:
  :func:`check_step_inputs`);
* the optional recording of per-step gradient norms (``record_grad_norms``);
* the masks of the two regularizers of the recurrence that every cell offers
  (:meth:`RecurrentLayer._draw_drop_masks`; each cell derives where they enter its
  equations):

  - ``recurrent_dropout`` p: variational dropout in the time direction (Gal & Ghahramani,
    "A Theoretically Grounded Application of Dropout in Recurrent Neural Networks", NeurIPS
    2016; Keras calls it ``recurrent_dropout``). One keep-mask m of shape (N, H), scaled by
    1 / (1 - p), is drawn per forward window and multiplies h_{t-1} where it enters the
    product with ``Wh``, the same m at every step. The carries (the LSTM's c_{t-1}, the
    GRU's z * h_{t-1}) are not masked.
  - ``weight_drop`` q: DropConnect on the recurrent matrix (Wan et al., "Regularization of
    Neural Networks using DropConnect", ICML 2013; as in Merity, Keskar & Socher,
    "Regularizing and Optimizing LSTM Language Models", arXiv:1708.02182, 2017). One
    keep-mask M of ``Wh``'s shape (H, kH), scaled by 1 / (1 - q), is drawn per forward
    window and the window uses ``Wh_eff = Wh * M``; then ``dWh += (dL/dWh_eff) * M``.

  Both are drawn on the host from the layer's own generator ``rng`` (seeded, never the
  global ``np.random``) through :func:`npgated.layers.dropout.keep_mask`, in this order per
  forward window: the recurrent mask m first (with ``batch_shard``: under data-parallel
  training the mask of the global batch is drawn and this process keeps its rows), then the
  weight mask M (the same on every process). Reseeding ``layer.rng`` before a forward
  freezes both (as for ``TimeDropout``). In eval mode, and for a ratio of 0, nothing is
  drawn and nothing is multiplied: the layer is the plain one.

The rule for the initial state of a forward (the book's truncated BPTT, made explicit):

1. the state given by ``set_state()`` if one was given since the last forward;
2. else, if ``stateful``, the last state of the previous forward (``h``/``c``), if any;
3. else zeros.

After forward, ``h`` (and ``c``) hold the state after the last time step. The state is
carried across windows by *value*: no gradient crosses a window boundary.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npgated import backend, checks, parallel
from npgated.layers.base import Layer
from npgated.layers.dropout import keep_mask


def check_recurrent_params(Wx, Wh, b, gates: int, bias_rows: int | None = None):
    """Validate the parameters of a recurrent cell with ``gates`` blocks; return ``(D, H)``.

    Parameters
    ----------
    Wx : (D, gates * H) array
        Input-to-hidden weights.
    Wh : (H, gates * H) array
        Hidden-to-hidden weights (H is read from its first dimension).
    b : (gates * H,) array, or (bias_rows, gates * H) when ``bias_rows`` is given
        Bias (GRU with ``reset_after=True`` keeps an input-side and a hidden-side row).
    gates : int
        Number of gate blocks k (1 RNN, 4 LSTM, 3 GRU).
    bias_rows : int, optional
        If given, ``b`` must be 2-D with this many rows.

    Raises
    ------
    ValueError
        A shape does not match, with the expected symbolic and numeric shapes and the actual
        one, e.g. ``Wx must have shape (D, 4H) = (5, 24), got (5, 20)``.
    TypeError
        A parameter is not a floating-point array, or the parameters do not share one
        dtype or one backend.
    """
    for name, p in (("Wx", Wx), ("Wh", Wh), ("b", b)):
        checks.check_float(p, name)
    for name, p in (("Wx", Wx), ("Wh", Wh)):
        if p.ndim != 2:
            raise ValueError(f"{name} must be a 2-D matrix, got shape {checks.shape_str(p.shape)}")
    kH = "H" if gates == 1 else f"{gates}H"
    H = Wh.shape[0]
    D = Wx.shape[0]
    checks.check_param_shape(Wh, (H, gates * H), f"(H, {kH})", "Wh")
    checks.check_param_shape(Wx, (D, gates * H), f"(D, {kH})", "Wx")
    if bias_rows is None:
        checks.check_param_shape(b, (gates * H,), f"({kH},)", "b")
    else:
        checks.check_param_shape(b, (bias_rows, gates * H), f"({bias_rows}, {kH})", "b")
    if not (Wx.dtype == Wh.dtype == b.dtype):
        raise TypeError(
            f"Wx, Wh and b must share one float dtype, got {Wx.dtype}, {Wh.dtype}, {b.dtype}"
        )
    modules = {backend.get_array_module(p).__name__ for p in (Wx, Wh, b)}
    if len(modules) != 1:
        raise TypeError(
            f"Wx, Wh and b must live on one backend, got {sorted(modules)}: "
            "move them with backend.to_device(p)"
        )
    return D, H


def check_step_inputs(layer, x, h_prev, c_prev=None) -> None:
    """Inputs of a single-step layer: x (N, D), h_prev (N, H) (and c_prev (N, H)).

    All in the layer's dtype; D and H are read from ``layer.params[0]`` (Wx) and
    ``layer.params[1]`` (Wh). Raises ValueError (shape) or TypeError (dtype).
    """
    D, H = layer.params[0].shape[0], layer.params[1].shape[0]
    checks.check_float(x, "x", ndim=2, dtype=layer.dtype, symbolic="(N, D)")
    checks.check_shape(x, (None, D), "x")
    N = x.shape[0]
    checks.check_float(h_prev, "h_prev", ndim=2, dtype=layer.dtype, symbolic="(N, H)")
    checks.check_shape(h_prev, (N, H), "h_prev")
    if c_prev is not None:
        checks.check_float(c_prev, "c_prev", ndim=2, dtype=layer.dtype, symbolic="(N, H)")
        checks.check_shape(c_prev, (N, H), "c_prev")


class RecurrentDropMasks(NamedTuple):
    """The masks of one forward window (``layer.drop_masks``), for backward and inspection.

    Attributes
    ----------
    recurrent : (N, H) array or None
        m, the scaled keep-mask of ``recurrent_dropout`` (entries 0 or 1 / (1 - p)) that
        multiplies h_{t-1} where it enters the product with ``Wh``; None when none is used
        (p = 0 or eval mode).
    weight : (H, kH) array or None
        M, the scaled keep-mask of ``weight_drop`` (entries 0 or 1 / (1 - q)); the window
        uses ``Wh_eff = Wh * M``. None when none is used.
    """

    recurrent: object
    weight: object


class _Chunks:
    """A window run chunk by chunk (:meth:`RecurrentLayer.forward_chunk`): where it stands."""

    def __init__(self):
        self.inside = False  # a chunk's forward or backward is running now
        self.next_t = 0  # the step the next forward chunk starts at
        self.back_end = None  # the step the last backward chunk started at (None: none yet)
        self.masks = None  # (drop_masks, (m, Wh_eff)) of the window, once drawn
        self.caches = []  # the forward caches of the chunks, oldest first
        self.later = None  # (dh, dc) the last backward chunk left
        self.norms = []  # the backward chunks' grad_norms, in time order
        self.rows = []  # each backward chunk's rows of the weight gradients' products
        self.final = False  # the chunk running now is the window's first (its last backward)


class RecurrentLayer(Layer):
    """Base class of the Time layers: TBPTT state, its gradient, validation, gradient norms.

    Subclasses set ``has_cell = True`` if they carry a memory cell ``c`` (LSTM), call
    ``super().__init__(Wx, Wh, b, stateful=..., recurrent_dropout=..., weight_drop=...,
    seed=...)`` and, in ``forward``, fill the initial state with :meth:`_initial_state`,
    draw the window's masks with :meth:`_draw_drop_masks` and set ``self.h`` (and
    ``self.c``) to the last step's state; ``backward`` sets ``self.dh`` (and ``self.dc``).

    Parameters
    ----------
    recurrent_dropout : float in [0, 1)
        p, the drop probability of the time-direction mask m (N, H) (Gal & Ghahramani
        2016; see the module docstring). 0: none.
    weight_drop : float in [0, 1)
        q, the drop probability of the DropConnect mask M on ``Wh`` (Wan et al. 2013,
        Merity et al. 2017). 0: none.
    seed : int, numpy.random.Generator or None
        Seed of the layer's own host generator ``rng`` that draws both masks.

    Attributes
    ----------
    stateful : bool
        Carry the last state of one forward into the next (truncated BPTT over windows).
    h : (N, H) array or None
        The state after the last step of the last forward, or the state given by
        ``set_state``. Likewise ``c`` for layers with a memory cell.
    dh : (N, H) array or None
        After backward: the gradient of the loss w.r.t. the initial state ``h_0`` of the
        forward (likewise ``dc``). It is not fed to an earlier window (TBPTT).
    dstatic : (N, P) array or None
        After the backward of a ``forward(xs, static)`` (TimeLSTM, TimeGRU): the gradient of
        the loss w.r.t. ``static``, summed over the steps; None after any other backward.
    record_grad_norms : bool
        Class default False. When True, ``backward`` stores ``grad_norms``, a host float64
        array (T,) whose entry t is the Frobenius norm (over the batch) of the total gradient
        w.r.t. the hidden state output at step t: the upstream ``dhs[:, t]`` plus what flows
        back from step t + 1. When False (the default) no work is done for it and
        ``grad_norms`` is None.
    recurrent_dropout, weight_drop : float
        The two ratios (read-only by convention; validated at construction).
    rng : numpy.random.Generator
        The layer's host generator for the masks; replace it with a freshly seeded one to
        freeze the masks (the gradient checks do).
    batch_shard : (start, stop, N_global) or None
        Set by a data-parallel trainer: this process holds rows ``start:stop`` of the
        global batch, and the recurrent mask is drawn for all ``N_global`` rows (as one
        process would) and cut to these (see :func:`~npgated.layers.dropout.keep_mask`).
    drop_masks : RecurrentDropMasks or None
        The masks of the last forward (fields None where not used); None before one.

    Notes
    -----
    In eval mode (``training`` False, see ``eval()``) forward keeps no backward cache (and
    may reuse one step's buffer for what only backward needs); a backward after it raises a
    RuntimeError that says to call ``train()``.
    """

    has_cell = False
    record_grad_norms = False

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
        super().__init__(Wx, Wh, b)
        self.stateful = bool(stateful)
        self.recurrent_dropout = checks.check_ratio(recurrent_dropout, "recurrent_dropout")
        self.weight_drop = checks.check_ratio(weight_drop, "weight_drop")
        self.rng = backend.default_rng(seed)
        self.batch_shard = None  # (start, stop, N_global) under data-parallel training
        self.drop_masks = None
        self.h = None
        self.dh = None
        self.dstatic = None  # dL/dstatic of the last backward of a forward(xs, static)
        if self.has_cell:
            self.c = None
            self.dc = None
        self.grad_norms = None
        self.cache = None
        self._state_given = False  # set_state() called since the last forward
        self._eval_forward = False  # the last forward ran in eval mode (nothing cached)
        self._chunks = None  # the window being run chunk by chunk (forward_chunk), if any

    # -- sizes ------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        """D, the size of one input vector."""
        return self.params[0].shape[0]

    @property
    def hidden_size(self) -> int:
        """H, the size of the hidden state."""
        return self.params[1].shape[0]

    # -- the recurrent state ------------------------------------------------------------
    def set_state(self, h, c=None) -> None:
        """Start the next forward from this state (any ``stateful``).

        Parameters
        ----------
        h : (N, H) array
            Initial hidden state, on the parameters' backend, in their dtype.
        c : (N, H) array, optional
            Initial memory cell (layers with a cell only); zeros if omitted.

        The batch size N is checked against ``xs`` at the next forward.
        """
        name = type(self).__name__
        H = self.hidden_size
        states = (("h", h), ("c", c)) if c is not None else (("h", h),)
        if c is not None and not self.has_cell:
            raise ValueError(f"{name} has no memory cell: call set_state(h) without c")
        for label, s in states:
            checks.check_float(s, label, ndim=2, dtype=self.dtype, symbolic="(N, H)")
            checks.check_shape(s, (None, H), label)
            if backend.get_array_module(s) is not backend.get_array_module(self.params[0]):
                raise TypeError(
                    f"{label} lives on another backend than {name}'s parameters: move it "
                    "with backend.to_device(state, like=layer.params[0])"
                )
        if c is not None and c.shape != h.shape:
            raise ValueError(
                f"c must have the shape of h {checks.shape_str(h.shape)}, "
                f"got {checks.shape_str(c.shape)}"
            )
        self.h = h
        if self.has_cell:
            self.c = c
        self._state_given = True

    def reset_state(self) -> None:
        """Forget the carried state: the next forward starts from zeros."""
        self.h = None
        if self.has_cell:
            self.c = None
        self._state_given = False

    def _initial_state(self, N: int, h_out, c_out=None) -> None:
        """Write the initial state of this forward into ``h_out`` (and ``c_out``), (N, H) views.

        The state given by ``set_state()`` since the last forward; else the carried state if
        ``stateful``; else zeros (see the module docstring). Consumes the ``set_state`` flag.
        """
        given, self._state_given = self._state_given, False
        chunks = self._chunks
        if chunks is not None and chunks.inside and chunks.next_t > 0:
            given = True  # a later chunk of a window: the state the chunk before it left
        if given or (self.stateful and self.h is not None):
            if self.h.shape[0] != N:
                where = "the state given by set_state()" if given else "the carried state"
                raise ValueError(
                    f"{type(self).__name__}: {where} has batch size {self.h.shape[0]}, but "
                    f"xs has batch size {N}: call reset_state() (or set_state with N rows) "
                    "when the batch size changes"
                )
            h_out[...] = self.h
            if c_out is not None:
                if self.c is None:
                    c_out[...] = 0
                else:
                    c_out[...] = self.c
        else:
            h_out[...] = 0
            if c_out is not None:
                c_out[...] = 0

    # -- regularizing the recurrence ----------------------------------------------------
    def _draw_drop_masks(self, N: int, like):
        """Draw this window's masks; return ``(m, Wh_eff)``.

        In training mode, in this order from ``self.rng``: m = keep_mask (N, H) with ratio
        ``recurrent_dropout`` (cut to ``batch_shard``'s rows), then M = keep_mask of
        ``Wh``'s shape with ratio ``weight_drop``; a ratio of 0 draws nothing (the
        generator does not advance). ``m`` is None when not drawn; ``Wh_eff`` is ``Wh * M``,
        or ``Wh`` itself (no copy) when M is not drawn. Both masks go to ``drop_masks``.

        Notes
        -----
        With p = ``recurrent_dropout``, q = ``weight_drop``, and u (N, H), U (H, kH) uniform in
        [0, 1) from ``rng`` (the cells' M1, M2)::

            M1  m = (u >= p) / (1 - p)                       only if p > 0
            M2  M = (U >= q) / (1 - q);  Wh_eff = Wh * M     only if q > 0
        """
        chunks = self._chunks if self._chunks is not None and self._chunks.inside else None
        if chunks is not None and chunks.masks is not None:  # a later chunk of a window
            self.drop_masks, result = chunks.masks  # the window's masks, drawn once
            return result
        Wh = self.params[1]
        m = M = None
        if self.training and self.recurrent_dropout > 0.0:
            shape = (N, self.hidden_size)
            m = keep_mask(self.rng, shape, self.recurrent_dropout, like, self.batch_shard)  # M1
        if self.training and self.weight_drop > 0.0:
            M = keep_mask(self.rng, Wh.shape, self.weight_drop, Wh, None)  # M2
        self.drop_masks = RecurrentDropMasks(recurrent=m, weight=M)
        result = (m, Wh if M is None else Wh * M)  # M2
        if chunks is not None:
            chunks.masks = (self.drop_masks, result)
        return result

    # -- a window in chunks of time (npgated.pipeline) ------------------------------------
    def forward_chunk(self, xs, t0: int, T: int):
        """``forward`` over steps t0 .. t0 + Tc - 1 of a window of T steps, xs (N, Tc, D).

        Called for consecutive chunks from t0 = 0 to T, it computes what one ``forward`` of
        the whole window computes, one chunk at a time (this is what lets
        :mod:`npgated.pipeline` run layer l + 1 on chunk k while layer l runs chunk k + 1):
        the first chunk starts from the window's initial state (the rule of the module
        docstring) and draws the window's masks (M1, M2); each later chunk continues from
        the state the chunk before it left, with the same masks. After the last chunk ``h``
        (and ``c``) hold the window's last state. Training mode keeps each chunk's cache for
        :meth:`backward_chunk`; a plain ``backward`` after chunks raises.

        Returns
        -------
        hs : (N, Tc, H) array, the chunk's hidden states
        """
        if t0 == 0:
            self._chunks = _Chunks()
        chunks = self._chunks
        if chunks is None or chunks.next_t != t0 or not 0 < t0 + xs.shape[1] <= T:
            raise RuntimeError(
                f"{type(self).__name__}.forward_chunk: chunk from step {t0} of a window of "
                f"{T} steps, but the next chunk starts at step "
                f"{None if chunks is None else chunks.next_t}: run a window's chunks in order "
                "from t0 = 0"
            )
        chunks.inside = True
        try:
            hs = self.forward(xs)
        finally:
            chunks.inside = False
        chunks.next_t = t0 + xs.shape[1]
        if self.cache is not None:  # training mode: kept for backward_chunk
            chunks.caches.append(self.cache)
            self.cache = None
        return hs

    def backward_chunk(self, dhs, t0: int, T: int):
        """``backward`` over steps t0 .. t0 + Tc - 1 of a window run by :meth:`forward_chunk`.

        Called for the chunks in reverse order, from the window's last chunk down to t0 = 0,
        it computes what one ``backward`` of the whole window computes: the last chunk
        starts from a zero gradient after the window's last step (truncated BPTT), each
        earlier one from ``dh`` (and ``dc``) that the chunk after it left; the weight
        gradients are added once, over every chunk's rows, by the backward of t0 = 0
        (:meth:`_window_rows`). After t0 = 0, ``dh`` (and ``dc``) are the
        window's dL/dh_0 (and dL/dc_0) and ``grad_norms`` (if recorded) covers all T steps.

        Returns
        -------
        dxs : (N, Tc, D) array
        """
        chunks = self._chunks
        Tc = dhs.shape[1]
        end = None if chunks is None else T if chunks.back_end is None else chunks.back_end
        if chunks is None or not chunks.caches or chunks.next_t != T or end != t0 + Tc:
            raise RuntimeError(
                f"{type(self).__name__}.backward_chunk: chunk from step {t0} of a window of "
                f"{T} steps, but no forward_chunk in training mode left the chunk that ends "
                f"at step {t0 + Tc}: run the chunks' backward in reverse order after their "
                "forward in training mode"
            )
        self.cache = chunks.caches.pop()
        chunks.inside, chunks.final = True, t0 == 0
        try:
            dxs = self.backward(dhs)
        finally:
            chunks.inside = False
        chunks.later = (self.dh, getattr(self, "dc", None))
        chunks.back_end = t0
        if self.grad_norms is not None:
            chunks.norms.insert(0, self.grad_norms)
        if t0 == 0:
            if chunks.norms:
                self.grad_norms = np.concatenate(chunks.norms)
            self._chunks = None
        return dxs

    def _window_rows(self, *rows):
        """The rows the weight gradients of this backward sum over, or None (not yet).

        A backward of a whole window gets ``rows`` (each (N * T, ·)) back. A chunk's backward
        (:meth:`backward_chunk`) gets None, and its rows are kept; the window's first chunk,
        whose backward runs last, gets every chunk's rows stacked: the weight gradients are
        then one product over the window, as in a whole-window backward (one accumulation
        into dWh per chunk would read and write the (H, kH) matrices C times).
        """
        chunks = self._chunks
        if chunks is None or not chunks.inside:
            return rows
        chunks.rows.append(rows)
        if not chunks.final:
            return None
        xp = backend.get_array_module(rows[0])
        stacked = tuple(xp.concatenate(parts, axis=0) for parts in zip(*chunks.rows))
        chunks.rows = []
        return stacked

    def _grad_from_later(self, dh_next, dc_next=None) -> None:
        """Write into ``dh_next`` (and ``dc_next``) the gradient that arrives from after the
        last step of this backward: zero for a window (truncated BPTT); for a chunk of a
        window (:meth:`backward_chunk`), what the backward of the chunk after it left."""
        chunks = self._chunks
        later = chunks.later if chunks is not None and chunks.inside else None
        if later is None:
            dh_next[...] = 0
            if dc_next is not None:
                dc_next[...] = 0
            return
        dh_next[...] = later[0]
        if dc_next is not None:
            dc_next[...] = later[1]

    def __repr__(self) -> str:
        base = super().__repr__()[:-1]
        options = [f"stateful={self.stateful}"]
        for name in ("recurrent_dropout", "weight_drop"):
            if getattr(self, name):
                options.append(f"{name}={getattr(self, name)}")
        return f"{base}, {', '.join(options)})"

    # -- static inputs ------------------------------------------------------------------
    def _check_static(self, xs, static) -> int:
        """P, the number of static input columns (0 without ``static``), xs checked with it.

        With ``static`` (N, P) the input at step t is [static | xs[:, t]]: xs is (N, T, D - P).
        """
        if static is None:
            self._check_xs(xs)
            return 0
        checks.check_float(static, "static", ndim=2, dtype=self.dtype, symbolic="(N, P)")
        checks.check_float(xs, "xs", ndim=3, dtype=self.dtype, symbolic="(N, T, D - P)")
        N, P = static.shape
        if not 0 < P < self.input_size or xs.shape[0] != N or P + xs.shape[2] != self.input_size:
            raise ValueError(
                f"static (N, P) and xs (N, T, D - P) must share N and together give the "
                f"layer's D = {self.input_size} input columns (0 < P < D), got static "
                f"{checks.shape_str(static.shape)} and xs {checks.shape_str(xs.shape)}"
            )
        return P

    def _project_inputs(self, xs_t, static, T, N):
        """F0 without the bias: (T, N, kH) = xs_t @ Wx, xs_t the (T * N, D) input rows.

        With ``static`` (N, P) (F0s): xs_t holds the other D - P columns, and the static
        part static @ Wx[:P], the same at every step, is computed once and added to every
        step's rows (one (N, P) product instead of T).
        """
        Wx = self.params[0]
        P = 0 if static is None else static.shape[1]
        ax = parallel.matmul(xs_t, Wx[P:]).reshape(T, N, Wx.shape[1])  # the layers' F0
        if P:
            ax += parallel.matmul(static, Wx[:P])  # F0s  broadcast over the T steps
        return ax

    def _static_backward(self, da_x, static) -> int:
        """B8s, B9s for the static columns: sets ``dstatic``, adds into dWx[:P]; returns P.

        ``da_x`` (T, N, kH) is dL/d(F0's pre-activations). The static input reached every
        step, so its gradients sum over t, and sum_t (s.T @ da_t) = s.T @ (sum_t da_t): one
        (N, kH) sum and two small products instead of T of each.
        """
        if static is None:
            self.dstatic = None
            return 0
        Wx, dWx = self.params[0], self.grads[0]
        P = static.shape[1]
        da_sum = da_x.sum(axis=0)  # B8s, B9s  sum over t, (N, kH)
        self.dstatic = parallel.matmul(da_sum, Wx[:P].T)  # B8s
        parallel.add_matmul(dWx[:P], static.T, da_sum)  # B9s
        return P

    # -- validation -------------------------------------------------------------------
    def _check_xs(self, xs) -> None:
        """xs must be a float (N, T, D) array in the parameters' dtype."""
        checks.check_float(xs, "xs", ndim=3, dtype=self.dtype, symbolic="(N, T, D)")
        if xs.shape[2] != self.input_size:
            raise ValueError(
                f"xs must have shape (N, T, D) with D = {self.input_size}, "
                f"got {checks.shape_str(xs.shape)}"
            )

    def _check_dhs(self, dhs, expected_shape) -> None:
        """dhs must have the shape (N, T, H) of the forward's output and its dtype."""
        checks.check_float(dhs, "dhs", dtype=self.dtype)
        if tuple(dhs.shape) != tuple(expected_shape):
            raise ValueError(
                f"dhs must have the shape of the forward's output hs "
                f"{checks.shape_str(expected_shape)}, got {checks.shape_str(dhs.shape)}"
            )

    def _require_forward(self, cache_name: str = "cache"):
        if getattr(self, cache_name, None) is None and self._eval_forward:
            raise RuntimeError(
                f"{type(self).__name__}.backward after a forward in eval mode (nothing is "
                "cached then): call train() before the forward"
            )
        return super()._require_forward(cache_name)

    # -- gradient norms ---------------------------------------------------------------
    def _grad_norm_buffer(self, T: int, like):
        """A zeroed (T,) float64 buffer for squared norms on ``like``'s backend, or None."""
        if not self.record_grad_norms:
            self.grad_norms = None
            return None
        return backend.get_array_module(like).zeros(T, dtype=np.float64)

    def _store_grad_norms(self, squared) -> None:
        """``grad_norms`` = sqrt of the recorded squared norms, as a host float64 array."""
        if squared is not None:
            self.grad_norms = np.sqrt(backend.to_cpu(squared).astype(np.float64))
