"""Inverted dropout, per element or variational (one mask per sequence).

Dropout (Srivastava et al. 2014) zeroes each unit with probability p during training. The
*inverted* form scales the kept units by 1 / (1 - p) at training time, so the expected value
of every unit is unchanged and inference is the identity (no rescaling at test time).

Zaremba et al. 2014 ("Recurrent Neural Network Regularization") apply it to the non-recurrent
connections of an LSTM language model with a fresh mask at every time step
(``variational=False``). Gal & Ghahramani 2016 ("A Theoretically Grounded Application of
Dropout in Recurrent Neural Networks") draw ONE mask per sequence and reuse it at every
time step (``variational=True``): a mask of shape (N, 1, D) broadcast over T.

Masks are drawn on the host from the layer's own generator ``self.rng`` (seeded, never the
global ``np.random``) and moved next to the data, so a seed gives the same masks on every
backend; replacing ``layer.rng`` with a freshly seeded generator freezes the mask (that is
how the gradient check holds it fixed).

Data-parallel training (several processes, each holding some of the N streams) must drop
exactly the units one process would drop. A layer whose masks have one row per stream
therefore has ``batch_shard``: ``None`` (the whole batch is here) or ``(start, stop,
N_global)``, set by the distributed trainer; :func:`keep_mask` then draws the mask for all
``N_global`` streams from the layer's generator, as a single process would, and keeps rows
``start:stop``. Every process advances its generator identically, so the masks stay in step.
"""

from __future__ import annotations

from typing import NamedTuple

from npgated import backend, checks
from npgated.layers.base import Layer


def keep_mask(rng, shape, p, like, batch_shard=None):
    """A scaled keep-mask ``(u >= p) / (1 - p)`` of ``shape``, in ``like``'s dtype and backend.

    Parameters
    ----------
    rng : numpy.random.Generator
        The layer's own host generator (u is drawn from it in float64 on the host, so one seed
        gives the same mask in float32 and float64 and on every backend).
    shape : tuple
        The mask's shape; its first axis is the batch axis N when ``batch_shard`` is given.
    p : float in (0, 1)
        The drop probability.
    like : array
        Gives the dtype and the backend of the result.
    batch_shard : (start, stop, N_global) or None
        Draw for ``N_global`` rows and return rows ``start:stop`` (``stop - start`` must equal
        ``shape[0]``): the local part of the mask a single process would draw.

    Returns
    -------
    mask : array of ``shape`` with entries 0 or 1 / (1 - p)
    """
    shape = tuple(shape)
    if batch_shard is None:
        u = rng.random(shape)
    else:
        start, stop, n_global = batch_shard
        if stop - start != shape[0]:
            raise ValueError(
                f"batch_shard {tuple(batch_shard)} holds {stop - start} streams but the input "
                f"has N = {shape[0]}: the local batch must be rows start:stop of the global one"
            )
        u = rng.random((n_global,) + shape[1:])[start:stop]
    mask = (u >= p) * (1.0 / (1.0 - p))  # F1
    return backend.to_device(mask, like=like, dtype=like.dtype)


class _DropoutCache(NamedTuple):
    mask: object  # the scaled keep-mask in the data's dtype, or None for the identity
    shape: tuple  # the input's shape, to validate dys


class Dropout(Layer):
    """Inverted dropout on an array of any shape, with a fresh mask per element.

    Parameters
    ----------
    dropout_ratio : float in [0, 1)
        p, the probability of dropping a unit. p = 0 is the identity.
    seed : int, numpy.random.Generator or None
        Seed of the layer's own host generator ``self.rng``.

    Notes
    -----
    Training mode, for x of any shape, with u uniform in [0, 1) of x's shape::

        F1  mask = (u >= p) / (1 - p)          (kept units scaled, dropped ones 0)
        F2  y = x * mask

    Backward (the same mask: y is linear in x)::

        B1  dx = dy * mask

    Eval mode (``layer.eval()``): y = x and dx = dy.
    """

    param_names = ()

    def __init__(self, dropout_ratio: float = 0.5, seed=None):
        super().__init__()
        self.dropout_ratio = checks.check_ratio(dropout_ratio)
        self.rng = backend.default_rng(seed)
        self.batch_shard = None  # (start, stop, N_global) under data-parallel training
        self.cache = None

    def _mask_shape(self, shape):
        return tuple(shape)

    def _check_input(self, xs):
        checks.check_float(xs, "x")

    def forward(self, xs):
        """Drop units at random (training) or pass ``xs`` through (eval).

        Parameters
        ----------
        xs : float array of any shape (``TimeDropout``: (N, T, D))

        Returns
        -------
        ys : array of xs's shape and dtype
        """
        self._check_input(xs)
        p = self.dropout_ratio
        if not self.training or p == 0.0:
            self.cache = _DropoutCache(mask=None, shape=tuple(xs.shape))
            return xs
        # Drawn in float64 on the host whatever the data's dtype, so float32 and float64 runs
        # (and NumPy and CuPy runs) with one seed drop the same units.
        mask = keep_mask(self.rng, self._mask_shape(xs.shape), p, xs, self.batch_shard)  # F1
        self.cache = _DropoutCache(mask=mask, shape=tuple(xs.shape))
        return xs * mask  # F2

    def backward(self, dys):
        """Gradient w.r.t. the input: the upstream gradient through the forward mask.

        Parameters
        ----------
        dys : float array of the forward input's shape

        Returns
        -------
        dxs : array of dys's shape
        """
        cache = self._require_forward()
        checks.check_shape(dys, cache.shape, "dys")
        self.cache = None
        if cache.mask is None:
            return dys  # B1 with mask = 1 (eval mode or p = 0)
        checks.check_float(dys, "dys", dtype=cache.mask.dtype)
        return dys * cache.mask  # B1

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dropout_ratio={self.dropout_ratio})"


class TimeDropout(Dropout):
    """Inverted dropout on sequences, per element or variational (one mask over T).

    Parameters
    ----------
    dropout_ratio : float in [0, 1)
        p, the probability of dropping a unit. p = 0 is the identity.
    variational : bool
        True: one mask of shape (N, 1, D) per batch, the same at every time step
        (Gal & Ghahramani 2016). False: an independent mask of shape (N, T, D)
        (Zaremba et al. 2014).
    seed : int, numpy.random.Generator or None
        Seed of the layer's own host generator ``self.rng``.

    Notes
    -----
    Training mode, for xs of shape (N, T, D), u uniform in [0, 1) of shape (N, 1, D) if
    variational else (N, T, D)::

        F1  mask = (u >= p) / (1 - p)
        F2  ys = xs * mask                     (broadcast over T when variational)

    Backward::

        B1  dxs = dys * mask

    Eval mode: ys = xs and dxs = dys.
    """

    def __init__(self, dropout_ratio: float = 0.5, variational: bool = False, seed=None):
        super().__init__(dropout_ratio, seed=seed)
        self.variational = bool(variational)
        self._window_mask = None  # the mask of the window run by forward_chunk

    def _check_input(self, xs):
        checks.check_float(xs, "xs", ndim=3, symbolic="(N, T, D)")

    def _mask_shape(self, shape):
        N, T, D = shape
        return (N, 1, D) if self.variational else (N, T, D)

    def forward_chunk(self, xs, t0: int, T: int):
        """``forward`` over steps t0 .. t0 + Tc - 1 of a window of T steps, xs (N, Tc, D).

        The first chunk (t0 = 0) draws the mask of the whole window, the draw ``forward``
        makes for an (N, T, D) input (F1); every chunk is multiplied by its part of it (F2),
        so the chunks of a window get exactly ``forward``'s numbers (:mod:`npgated.pipeline`).
        """
        self._check_input(xs)
        N, Tc, D = xs.shape
        p = self.dropout_ratio
        if t0 == 0:
            self._window_mask = None
            if self.training and p > 0.0:
                self._window_mask = keep_mask(
                    self.rng, self._mask_shape((N, T, D)), p, xs, self.batch_shard
                )  # F1
        mask = self._window_mask
        if mask is None:
            return xs
        return xs * (mask if self.variational else mask[:, t0 : t0 + Tc])  # F2

    def backward_chunk(self, dys, t0: int, T: int):
        """``backward`` over steps t0 .. t0 + Tc - 1 of the window of the last chunks'
        forward (:meth:`forward_chunk`): B1 with the chunk's part of the window's mask."""
        mask = self._window_mask
        if mask is None:
            return dys  # B1 with mask = 1 (eval mode or p = 0)
        return dys * (mask if self.variational else mask[:, t0 : t0 + dys.shape[1]])  # B1

    def __repr__(self) -> str:
        return f"TimeDropout(dropout_ratio={self.dropout_ratio}, variational={self.variational})"
