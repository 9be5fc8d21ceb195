"""Gradient clipping by global norm (Pascanu, Mikolov & Bengio 2013, "On the difficulty of
training recurrent neural networks"), as used by Zaremba et al. 2014 (max norm 5).

The norm is taken over all gradients together, as if they were one vector, and every
gradient is scaled by the same factor, so the step keeps its direction.

Tied weights: pass each gradient array **once**. A matrix shared by the embedding and the
output layer has one gradient buffer (backward accumulates both uses into it); listing it
twice would count its squares twice in the norm and scale it twice. Models expose their
unique parameters and gradients (deduplicated by identity), which is what the training loop
passes here. When the gradients are the consecutive pieces of one flat buffer (a model's,
:mod:`npgated.flat`), the norm is one dot product over the buffer and the scale one pass.
"""

from __future__ import annotations

import math

from npgated import flat
from npgated.optim.base import check_range

__all__ = ["clip_grads", "global_norm"]

_TINY = 1e-6  # C2's guard in the denominator (the book's value)


def global_norm(grads) -> float:
    """The L2 norm of all gradients taken together, as a Python float.

    Parameters
    ----------
    grads : list of arrays
        Any shapes; already unique (see the module docstring).

    Notes
    -----
    ::

        C1: norm = sqrt(sum over arrays g of sum(g * g))

    The squares are summed on the arrays' device; one value is brought to the host.
    """
    whole = flat.covering(grads)  # the gradients as one flat buffer (npgated.flat), or None
    total = 0.0
    for g in [whole] if whole is not None else grads:
        g = g.reshape(-1)
        total = total + g @ g  # C1 (a device scalar on the GPU, no host sync yet)
    return math.sqrt(float(total))  # C1


def clip_grads(grads, max_norm: float) -> float:
    """Scale all gradients in place so that their global norm is at most ``max_norm``.

    Parameters
    ----------
    grads : list of arrays
        Unique gradient arrays (a tied matrix once), modified in place.
    max_norm : float
        Threshold, > 0 (``math.inf`` measures without clipping).

    Returns
    -------
    float
        The global norm **before** clipping. If it is not finite (inf or nan) nothing is
        scaled and it is returned as is, so the caller can stop training.

    Notes
    -----
    ::

        C1: norm = sqrt(sum over arrays g of sum(g * g))
        C2: if norm > max_norm: g *= max_norm / (norm + 1e-6)   for every g

    The 1e-6 (as in the book) leaves the clipped norm a hair below ``max_norm``.
    """
    if max_norm != math.inf:
        max_norm = check_range(max_norm, "max_norm", 0.0, low_open=True)
    whole = flat.covering(grads)  # the gradients as one flat buffer (npgated.flat), or None
    grads = [whole] if whole is not None else grads
    norm = global_norm(grads)  # C1
    if math.isfinite(norm) and norm > max_norm:
        rate = max_norm / (norm + _TINY)  # C2
        for g in grads:
            g *= rate  # C2
    return norm
