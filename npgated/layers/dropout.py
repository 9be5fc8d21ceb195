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
"""

from __future__ import annotations

from typing import NamedTuple

from npgated import backend, checks
from npgated.layers.base import Layer


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
        self.cache = None

    def _mask_shape(self, xs):
        return xs.shape

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
        u = self.rng.random(self._mask_shape(xs))
        mask = (u >= p) * (1.0 / (1.0 - p))  # F1
        mask = backend.to_device(mask, like=xs, dtype=xs.dtype)
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

    def _check_input(self, xs):
        checks.check_float(xs, "xs", ndim=3, symbolic="(N, T, D)")

    def _mask_shape(self, xs):
        N, T, D = xs.shape
        return (N, 1, D) if self.variational else (N, T, D)

    def __repr__(self) -> str:
        return (
            f"TimeDropout(dropout_ratio={self.dropout_ratio}, "
            f"variational={self.variational})"
        )
