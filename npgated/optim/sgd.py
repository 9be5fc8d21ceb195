"""Plain stochastic gradient descent (Robbins & Monro 1951), as used by Zaremba et al. 2014."""

from __future__ import annotations

from npgated.optim.base import Optimizer


class SGD(Optimizer):
    """Stochastic gradient descent: step against the gradient.

    Parameters
    ----------
    lr : float
        Learning rate, > 0 (Zaremba et al. use 1.0 with clipping at norm 5).

    Notes
    -----
    For each parameter ``p`` with gradient ``g`` (any shape, updated in place)::

        S1: p -= lr * g

    No per-parameter state (``slots`` is empty).
    """

    name = "sgd"

    def __init__(self, lr: float = 0.01):
        super().__init__(lr)

    def _step(self, p, g) -> None:
        p -= self.lr * g  # S1
