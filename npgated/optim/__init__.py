"""Optimizers and gradient clipping, written out by hand.

Every optimizer updates a model's parameter arrays in place from their gradients::

    optimizer = make_optimizer("sgd", lr=1.0)
    norm = clip_grads(model.grads, max_norm=5.0)
    optimizer.update(model.params, model.grads)

and exposes ``lr`` (schedules assign to it) and ``state_dict()`` / ``load_state_dict()`` for
checkpoints. The code reaches the array module through the arrays, so it runs unchanged on
NumPy and CuPy.
"""

from __future__ import annotations

from npgated.optim.adagrad import AdaGrad, RMSprop
from npgated.optim.adam import Adam
from npgated.optim.asgd import ASGD
from npgated.optim.base import Optimizer
from npgated.optim.clip import clip_grads, global_norm
from npgated.optim.momentum import Momentum, Nesterov
from npgated.optim.sgd import SGD

__all__ = [
    "ASGD",
    "OPTIMIZERS",
    "AdaGrad",
    "Adam",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "RMSprop",
    "SGD",
    "clip_grads",
    "global_norm",
    "make_optimizer",
]

OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam, ASGD)}
"""Registry: name (as used in configs and on the command line) -> optimizer class."""


def make_optimizer(name: str, lr: float | None = None, **kwargs) -> Optimizer:
    """Build an optimizer by registry name, e.g. ``make_optimizer("adam", lr=1e-3, beta2=0.98)``.

    Parameters
    ----------
    name : str
        A key of :data:`OPTIMIZERS` (case-insensitive).
    lr : float, optional
        Learning rate; the class default when omitted.
    **kwargs
        Other hyperparameters of that optimizer.

    Raises
    ------
    ValueError
        Unknown name (the message lists the valid ones) or out-of-range hyperparameters.
    TypeError
        A hyperparameter the optimizer does not have (the message lists those it has).
    """
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {name!r}; valid optimizers are: {', '.join(OPTIMIZERS)}"
        )
    cls = OPTIMIZERS[key]
    unknown = sorted(set(kwargs) - set(cls.hyper_names))
    if unknown:
        raise TypeError(
            f"optimizer {key!r} has no hyperparameter(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(cls.hyper_names)}"
        )
    if lr is not None:
        kwargs["lr"] = lr
    return cls(**kwargs)
