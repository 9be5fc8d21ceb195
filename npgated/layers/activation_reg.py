"""Activation regularization (AR) and temporal activation regularization (TAR).

Merity, Keskar & Socher 2017, "Regularizing and Optimizing LSTM Language Models" (AWD-LSTM),
add two penalties on the outputs of the **last** recurrent layer to the cross-entropy:

* AR, an L2 penalty on the dropped outputs ``m * h`` (what the output layer sees), which keeps
  the activations small;
* TAR, a slowness penalty on the raw outputs ``h``: the squared difference between
  consecutive time steps of one window, which discourages large jumps of the hidden state.

Both are written here as param-free layers whose **forward is the identity** (the penalty is
a side value, ``layer.penalty``) and whose backward adds the penalty's gradient to the
gradient flowing down. Placed in a model's stack (``BetterRnnlm``: TAR right after the last
recurrent layer, AR right after the last dropout), they add exactly the gradient of::

    J = cross_entropy + AR + TAR

while the loss the model returns (and the perplexity reported from it) stays the
cross-entropy alone. In eval mode (``layer.eval()``) they do nothing: the penalty is 0 and
nothing is cached.

"mean" is over every element of the window: N * T * H for AR, and N * (T - 1) * H for TAR
(the T - 1 differences inside the window; the state carried in from the previous window is
not compared with the first step, and T = 1 gives no difference and no penalty).
"""

from __future__ import annotations

from npgated import checks
from npgated.layers.base import Layer
from npgated.optim.base import check_range


class _Regularizer(Layer):
    """Identity forward, penalty on the side; ``dpenalty`` scales its gradient.

    ``dpenalty`` is the upstream gradient of the penalty term in the objective (1.0: the
    penalty is added to the loss as is). A model whose ``backward(dout)`` scales the loss
    gradient by ``dout`` sets ``dpenalty = dout`` before backpropagating.
    """

    param_names = ()
    coef_name = "coef"

    def __init__(self, coef: float):
        super().__init__()
        self.coef = check_range(coef, self.coef_name, low=0.0)
        self.penalty = 0.0  # the penalty of the last training-mode forward (a Python float)
        self.dpenalty = 1.0
        self.cache = None

    def _active(self, hs) -> bool:
        checks.check_float(hs, "hs", ndim=3, symbolic="(N, T, H)")
        self.penalty = 0.0
        return self.training and self.coef > 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.coef_name}={self.coef:g})"


class ActivationRegularizer(_Regularizer):
    """AR: ``alpha * mean(hs ** 2)`` over the N * T * H elements of its input.

    Parameters
    ----------
    alpha : float >= 0
        Weight of the penalty (Merity et al. use 2 on the dropped outputs of the last
        layer). 0 makes the layer a plain identity.

    Notes
    -----
    For hs of shape (N, T, H) (in BetterRnnlm the dropped outputs ``m * h`` of the last
    recurrent layer), K = N * T * H, training mode::

        F1  ys = hs                                   (identity)
        F2  penalty = alpha / K * sum(hs * hs)

    Backward, given dys (N, T, H) and the penalty's upstream gradient ``dpenalty``::

        B1  dhs = dys + dpenalty * (2 * alpha / K) * hs

    Eval mode: ys = hs, penalty = 0, dhs = dys.
    """

    coef_name = "alpha"

    def __init__(self, alpha: float = 0.0):
        super().__init__(alpha)

    @property
    def alpha(self) -> float:
        return self.coef

    def forward(self, hs):
        """Pass ``hs`` (N, T, H) through; in training mode record ``penalty`` (F2)."""
        if self._active(hs):
            N, T, H = hs.shape
            flat = hs.reshape(-1)
            self.penalty = float(self.coef / (N * T * H) * (flat @ flat))  # F2
            self.cache = (hs, tuple(hs.shape))
        else:
            self.cache = (None, tuple(hs.shape))
        return hs  # F1

    def backward(self, dys):
        """``dys`` (N, T, H) plus the penalty's gradient (B1)."""
        hs, shape = self._require_forward()
        checks.check_shape(dys, shape, "dys")
        self.cache = None
        if hs is None:
            return dys  # eval mode or alpha = 0
        N, T, H = shape
        return dys + (self.dpenalty * 2.0 * self.coef / (N * T * H)) * hs  # B1


class TemporalActivationRegularizer(_Regularizer):
    """TAR: ``beta * mean((h_t - h_{t-1}) ** 2)`` over the N * (T - 1) * H differences.

    Parameters
    ----------
    beta : float >= 0
        Weight of the penalty (Merity et al. use 1 on the raw outputs of the last layer).
        0 makes the layer a plain identity.

    Notes
    -----
    For hs of shape (N, T, H) (in BetterRnnlm the raw outputs of the last recurrent layer),
    K = N * (T - 1) * H, training mode::

        F1  ys = hs                                   (identity)
        F2  d = hs[:, 1:] - hs[:, :-1]                (N, T - 1, H)
        F3  penalty = beta / K * sum(d * d)           (0 when T = 1)

    Backward, given dys (N, T, H) and the penalty's upstream gradient ``dpenalty``; each
    difference involves two steps, with opposite signs::

        B1  dd = dpenalty * (2 * beta / K) * d
        B2  dhs = dys;  dhs[:, 1:] += dd;  dhs[:, :-1] -= dd

    Eval mode: ys = hs, penalty = 0, dhs = dys.
    """

    coef_name = "beta"

    def __init__(self, beta: float = 0.0):
        super().__init__(beta)

    @property
    def beta(self) -> float:
        return self.coef

    def forward(self, hs):
        """Pass ``hs`` (N, T, H) through; in training mode record ``penalty`` (F2, F3)."""
        if self._active(hs) and hs.shape[1] > 1:
            N, T, H = hs.shape
            d = hs[:, 1:] - hs[:, :-1]  # F2
            flat = d.reshape(-1)
            self.penalty = float(self.coef / (N * (T - 1) * H) * (flat @ flat))  # F3
            self.cache = (d, tuple(hs.shape))
        else:
            self.cache = (None, tuple(hs.shape))
        return hs  # F1

    def backward(self, dys):
        """``dys`` (N, T, H) plus the penalty's gradient (B1, B2)."""
        d, shape = self._require_forward()
        checks.check_shape(dys, shape, "dys")
        self.cache = None
        if d is None:
            return dys  # eval mode, beta = 0 or T = 1
        N, T, H = shape
        dd = (self.dpenalty * 2.0 * self.coef / (N * (T - 1) * H)) * d  # B1
        dhs = dys.copy()  # B2 (a copy: dys belongs to the layer above)
        dhs[:, 1:] += dd  # B2
        dhs[:, :-1] -= dd  # B2
        return dhs
