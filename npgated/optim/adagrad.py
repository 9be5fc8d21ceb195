"""Adaptive per-coordinate learning rates: AdaGrad (Duchi, Hazan & Singer 2011) and RMSprop
(Tieleman & Hinton 2012, Coursera lecture 6.5).

Both divide the step by the root of an accumulated squared gradient; AdaGrad sums it over
the whole run (so its steps only shrink), RMSprop keeps an exponential moving average.
``eps`` is added to the root (outside the square root), as in the book and PyTorch.
"""

from __future__ import annotations

from npgated.optim.base import Optimizer, check_range


class AdaGrad(Optimizer):
    """AdaGrad: learning rate scaled by the inverse root of the summed squared gradients.

    Parameters
    ----------
    lr : float
        Learning rate, > 0.
    eps : float
        Added to the denominator, > 0.

    Notes
    -----
    For each parameter ``p`` with gradient ``g`` and accumulator ``h`` (zero at first)::

        G1: h += g * g
        G2: p -= lr * g / (sqrt(h) + eps)
    """

    name = "adagrad"
    slot_names = ("h",)
    hyper_names = ("lr", "eps")

    def __init__(self, lr: float = 0.01, eps: float = 1e-7):
        super().__init__(lr)
        self.eps = check_range(eps, "eps", 0.0, low_open=True)

    def _step(self, p, g, h) -> None:
        h += g * g  # G1
        denom = h**0.5  # G2
        denom += self.eps  # G2
        p -= self.lr * g / denom  # G2


class RMSprop(Optimizer):
    """RMSprop: learning rate scaled by the inverse root of a moving average of g * g.

    Parameters
    ----------
    lr : float
        Learning rate, > 0.
    decay_rate : float
        Weight ``rho`` of the old average, in [0, 1).
    eps : float
        Added to the denominator, > 0.

    Notes
    -----
    For each parameter ``p`` with gradient ``g`` and average ``h`` (zero at first)::

        R1: h = rho * h + (1 - rho) * g * g
        R2: p -= lr * g / (sqrt(h) + eps)
    """

    name = "rmsprop"
    slot_names = ("h",)
    hyper_names = ("lr", "decay_rate", "eps")

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99, eps: float = 1e-7):
        super().__init__(lr)
        self.decay_rate = check_range(decay_rate, "decay_rate", 0.0, 1.0, high_open=True)
        self.eps = check_range(eps, "eps", 0.0, low_open=True)

    def _step(self, p, g, h) -> None:
        h *= self.decay_rate  # R1
        h += (1.0 - self.decay_rate) * (g * g)  # R1
        denom = h**0.5  # R2
        denom += self.eps  # R2
        p -= self.lr * g / denom  # R2
