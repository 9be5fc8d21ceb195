"""The layer protocol every npgated layer follows (the book's, with three additions).

A layer holds
    params : list of arrays        the trainable parameters
    grads  : list of arrays        their gradients, same order and shapes as ``params``
    param_names : tuple of str     class-level names for ``params`` (``("Wx", "Wh", "b")``)
    training : bool                set by ``train()`` / ``eval()``; dropout reads it
and implements
    forward(xs, ...) -> out
    backward(dout)   -> dxs        fills ``grads`` and returns the gradient w.r.t. the input

The one departure from the book: ``backward`` **accumulates** into ``grads`` (``dW += ...``)
instead of overwriting them (``dW[...] = ...``). Two layers that share one weight array also
share one gradient buffer, so weight tying is correct by construction and no merge step
exists; the price is that the training loop calls ``zero_grads()`` before each backward.
"""

from __future__ import annotations

from npgated import backend


class Layer:
    """Base class: parameter bookkeeping, the train/eval switch, zeroing gradients."""

    param_names: tuple[str, ...] = ()

    def __init__(self, *params):
        self.params = list(params)
        self.grads = [backend.get_array_module(p).zeros_like(p) for p in self.params]
        self.training = True

    # -- train / eval ---------------------------------------------------------------
    def train(self, mode: bool = True):
        """Switch to training mode (dropout active); returns ``self``."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Switch to inference mode (dropout is the identity); returns ``self``."""
        return self.train(False)

    # -- parameters -------------------------------------------------------------------
    def zero_grads(self) -> None:
        """Set every gradient buffer to zero, in place (buffers are shared when tied)."""
        for g in self.grads:
            g[...] = 0

    def rebind(self, params, grads) -> None:
        """Compute with ``params`` and ``grads`` from now on instead of the arrays held now.

        For a model that moves every parameter into one flat buffer (:mod:`npgated.flat`):
        the new arrays have the old ones' shapes, dtypes and values. A layer that keeps a
        reference of its own to a parameter or gradient (a fused layout, a transposed copy)
        overrides this to re-point it; the model checks afterwards that no old memory is
        still held.
        """
        self.params[:] = params  # in place: whatever shares these lists sees the new arrays
        self.grads[:] = grads

    def named_params(self):
        """``[(name, param, grad), ...]`` in the order of ``params``."""
        return list(zip(self.param_names, self.params, self.grads))

    @property
    def dtype(self):
        """The dtype the layer computes in (that of its first parameter)."""
        return self.params[0].dtype if self.params else None

    def _require_forward(self, cache_name: str = "cache"):
        """Return the forward cache, or raise a RuntimeError if forward has not run."""
        cache = getattr(self, cache_name, None)
        if cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward called before forward (or twice for "
                "one forward): call forward in training mode first"
            )
        return cache

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}={tuple(p.shape)}" for n, p in zip(self.param_names, self.params))
        return f"{type(self).__name__}({shapes})"
