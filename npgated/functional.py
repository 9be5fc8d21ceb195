"""Pure functions of arrays used by the layers: stable sigmoid, softmax, cross-entropy.

Every function takes its array module from its input, so it runs on NumPy and CuPy alike,
and keeps the input's dtype (float32 stays float32).

Notes
-----
sigmoid(a) = 1 / (1 + exp(-a)) = 0.5 * tanh(0.5 * a) + 0.5          (no overflow for any a)
d sigmoid / da = sigmoid * (1 - sigmoid)
log_softmax(a)_v = a_v - m - log(sum_u exp(a_u - m)),  m = max_u a_u  (finite for |a| ~ 1e4)
softmax(a) = exp(log_softmax(a))
cross_entropy(a, t) = -log_softmax(a)_t, averaged over the non-ignored targets
d cross_entropy / da = (softmax(a) - onehot(t)) / K,  K = number of non-ignored targets
"""

from __future__ import annotations

from npgated import backend


def sigmoid(a, out=None):
    """Logistic sigmoid through tanh: ``0.5 * tanh(0.5 * a) + 0.5`` (never overflows).

    Parameters
    ----------
    a : array of any shape
    out : array, optional
        Write the result here (may be ``a`` itself, for in-place use in hot loops).
    """
    xp = backend.get_array_module(a)
    if out is None:
        return xp.tanh(a * 0.5) * 0.5 + 0.5
    xp.multiply(a, 0.5, out=out)
    xp.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def log_softmax(a, axis=-1):
    """``a - logsumexp(a)`` along ``axis``, with the max subtracted first (stable)."""
    xp = backend.get_array_module(a)
    shifted = a - a.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(a, axis=-1):
    """``exp(a) / sum(exp(a))`` along ``axis``, computed stably."""
    xp = backend.get_array_module(a)
    e = xp.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def cross_entropy(logits, targets, ignore_label=-1):
    """Mean cross-entropy of ``logits`` (K, V) against integer ``targets`` (K,).

    Targets equal to ``ignore_label`` contribute nothing and are not counted in the mean.
    Returns a 0-d array (or scalar) in the dtype of ``logits``; ``nan``-free even when every
    target is ignored (the loss is then 0).
    """
    xp = backend.get_array_module(logits)
    logp = log_softmax(logits, axis=-1)
    keep = targets != ignore_label
    safe_t = xp.where(keep, targets, 0)
    picked = xp.take_along_axis(logp, safe_t[:, None], axis=1)[:, 0]
    count = max(int(keep.sum()), 1)
    return -(picked * keep).sum() / count
