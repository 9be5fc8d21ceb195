"""SGD with classical momentum (Polyak 1964) and Nesterov's accelerated gradient (Nesterov 1983).

Both keep one velocity ``v`` per parameter, in the convention of the book and CS231n, where
the velocity already includes the learning rate (``v = momentum * v - lr * g``). PyTorch's
``torch.optim.SGD(momentum=...)`` keeps ``buf = momentum * buf + g`` and steps ``lr * buf``
instead; the two give identical trajectories while ``lr`` is constant (``v = -lr * buf``) and
differ only in how a learning-rate change affects the velocity already accumulated.

The Nesterov update is the reformulation of Bengio, Boulanger-Lewandowski & Pascanu 2013
("Advances in optimizing recurrent networks"; Sutskever et al. 2013), which evaluates the
gradient at the stored parameters rather than at a look-ahead point.
"""

from __future__ import annotations

from npgated.optim.base import Optimizer, check_range


class Momentum(Optimizer):
    """SGD with classical (heavy-ball) momentum.

    Parameters
    ----------
    lr : float
        Learning rate, > 0.
    momentum : float
        Velocity decay ``mu``, in [0, 1).

    Notes
    -----
    For each parameter ``p`` with gradient ``g`` and velocity ``v`` (same shape as ``p``,
    zero before the first update)::

        M1: v = mu * v - lr * g
        M2: p += v
    """

    name = "momentum"
    slot_names = ("v",)
    hyper_names = ("lr", "momentum")

    def __init__(self, lr: float = 0.01, momentum: float = 0.9):
        super().__init__(lr)
        self.momentum = check_range(momentum, "momentum", 0.0, 1.0, high_open=True)

    def _step(self, p, g, v) -> None:
        v *= self.momentum  # M1
        v -= self.lr * g  # M1
        p += v  # M2


class Nesterov(Optimizer):
    """SGD with Nesterov momentum (Bengio et al. 2013 form).

    Parameters
    ----------
    lr : float
        Learning rate, > 0.
    momentum : float
        Velocity decay ``mu``, in [0, 1).

    Notes
    -----
    For each parameter ``p`` with gradient ``g`` and velocity ``v`` (zero at first)::

        N1: v = mu * v - lr * g
        N2: p += mu * v - lr * g          (v is the new velocity from N1)

    Derivation: Nesterov's method steps from a look-ahead point ``q = p + mu * v``; writing
    the update in terms of ``q`` instead of ``p`` and renaming ``q`` to ``p`` gives N1-N2,
    so the gradient is taken at the stored parameters. This equals PyTorch's
    ``SGD(momentum=mu, nesterov=True)`` at constant ``lr``.
    """

    name = "nesterov"
    slot_names = ("v",)
    hyper_names = ("lr", "momentum")

    def __init__(self, lr: float = 0.01, momentum: float = 0.9):
        super().__init__(lr)
        self.momentum = check_range(momentum, "momentum", 0.0, 1.0, high_open=True)

    def _step(self, p, g, v) -> None:
        v *= self.momentum  # N1
        v -= self.lr * g  # N1
        p += self.momentum * v  # N2
        p -= self.lr * g  # N2
