"""The book's ``common/layers.py`` layers of chapters 5-8, computed by npgated's layers.

Same names, constructor signatures and ``forward``/``backward`` signatures as the book's
("Deep Learning from Scratch 2", ``common/layers.py``), the book's *overwrite* semantics (after
``backward``, ``grads`` hold that call's gradient only, as the book's trainers expect: they
never zero gradients), and the numbers of npgated's layers:

=====================  =============================================  ==========================
book                   computed by                                    differences
=====================  =============================================  ==========================
``Affine(W, b)``       :class:`npgated.layers.affine.Affine`          none
``Embedding(W)``       :class:`npgated.layers.embedding.Embedding`    none
``SoftmaxWithLoss()``  :class:`npgated.layers.loss.SoftmaxWithLoss`   no ``+ 1e-7`` in the log
``Dropout(ratio)``     :class:`npgated.layers.dropout.Dropout`        its own ``rng`` (``seed=``)
=====================  =============================================  ==========================

``SoftmaxWithLoss``: the book computes ``-log(y_t + 1e-7)``; npgated the exact
``-log_softmax`` (no offset), which differs from the book's by at most 1e-7 / y_t relative
per target, i.e. nothing visible until a target's probability approaches 1e-7.

``Dropout``: the book's (non-inverted) dropout of chapter 6's first pages: in training
``y = x * mask`` with ``mask`` 0 or 1, at test time ``y = x * (1 - p)``. It is npgated's
inverted dropout (kept units scaled by 1 / (1 - p)) times (1 - p)::

    D1  y = (x * m) * (1 - p),   m = (u >= p) / (1 - p)     train_flg=True
    D2  y = x * (1 - p)                                   train_flg=False
    D3  dx = (dy * m) * (1 - p)  (after D1);  dx = dy * (1 - p)  (after D2)

Its masks come from the layer's own generator (``seed``), not from the global ``np.random``
the book draws from: the same distribution, not the same draws.

The layers follow the data's dtype (the book's ``.astype('f')`` arrays give float32) and
its backend (NumPy or CuPy arrays alike).
"""

from __future__ import annotations

from npgated.book._adapter import BookLayer, Shared
from npgated.layers import affine, dropout, embedding, loss

__all__ = ["Affine", "Dropout", "Embedding", "SoftmaxWithLoss"]


class Affine(Shared):
    """The book's ``Affine(W, b)``: ``out = x @ W + b`` on (N, D) rows.

    Parameters
    ----------
    W : (D, M) float array
    b : (M,) float array

    Notes
    -----
    :class:`npgated.layers.affine.Affine` on the very arrays given (F1, B1-B3 there);
    ``backward`` overwrites ``grads`` (O1, O2 of :mod:`npgated.book._adapter`).
    """

    def __init__(self, W, b):
        super().__init__(affine.Affine(W, b))

    def forward(self, x):
        """x : (N, D) array -> (N, M) array."""
        return self.layer.forward(x)

    def backward(self, dout):
        """dout : (N, M) array -> dx (N, D); ``grads`` = [dW, db] of this call."""
        return self._backward(dout)


class Embedding(Shared):
    """The book's ``Embedding(W)``: ``out = W[idx]`` for (N,) ids.

    Parameters
    ----------
    W : (V, D) float array

    Notes
    -----
    :class:`npgated.layers.embedding.Embedding` on the array given; ``backward`` overwrites
    ``grads[0]`` with the scatter-sum of ``dout`` into the looked-up rows (O1, O2).
    """

    def __init__(self, W):
        super().__init__(embedding.Embedding(W))
        self.idx = None

    def forward(self, idx):
        """idx : (N,) integer array -> (N, D) array."""
        out = self.layer.forward(idx)
        self.idx = idx
        return out

    def backward(self, dout):
        """dout : (N, D) array -> None; ``grads[0]`` = dW of this call."""
        return self._backward(dout)


class SoftmaxWithLoss(BookLayer):
    """The book's ``SoftmaxWithLoss()``: mean cross-entropy of the softmax of (N, V) scores.

    Targets are (N,) ids or (N, V) one-hot rows (converted with ``argmax``, as the book
    does). Computed by :class:`npgated.layers.loss.SoftmaxWithLoss` (no ignored label, as in
    the book's version of this layer).
    """

    def __init__(self):
        super().__init__()
        self.layer = loss.SoftmaxWithLoss(ignore_label=None)

    def forward(self, x, t):
        """x : (N, V) scores, t : (N,) ids or (N, V) one-hot -> scalar loss."""
        if t.size == x.size:
            t = t.argmax(axis=1)
        return self.layer.forward(x, t)

    def backward(self, dout=1):
        """-> dx (N, V): ``dout * (softmax - onehot) / N``."""
        return self.layer.backward(dout)


class Dropout(BookLayer):
    """The book's ``Dropout(dropout_ratio)``: non-inverted dropout (D1-D3 in the module).

    Parameters
    ----------
    dropout_ratio : float in [0, 1)
    seed : int, numpy.random.Generator or None, keyword-only
        Seed of the generator of the masks (npgated's; the book uses the global one).
    """

    def __init__(self, dropout_ratio=0.5, *, seed=None):
        super().__init__()
        self.layer = dropout.Dropout(dropout_ratio, seed=seed)
        self._trained = False

    @property
    def dropout_ratio(self) -> float:
        return self.layer.dropout_ratio

    def forward(self, x, train_flg=True):
        """x : array -> array of x's shape (D1 if ``train_flg`` else D2)."""
        keep = 1.0 - self.dropout_ratio
        self._trained = bool(train_flg)
        if train_flg:
            return self.layer.forward(x) * keep  # D1
        return x * keep  # D2

    def backward(self, dout):
        """dout -> dx (D3)."""
        keep = 1.0 - self.dropout_ratio
        if self._trained:
            return self.layer.backward(dout) * keep  # D3
        return dout * keep  # D3
