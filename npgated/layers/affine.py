"""Affine (fully connected) layers: ``x @ W + b``, for one step and for a whole sequence.

``TimeAffine`` applies one affine map to every time step of a sequence as a single matrix
product over the N * T rows (no loop over time). ``TimeAffine.tied_to(embedding)`` builds the
output layer of a language model whose weights are the input embedding's (Press & Wolf 2016,
"Using the Output Embedding to Improve Language Models"; Inan et al. 2016, "Tying Word
Vectors and Word Classifiers"): the layer holds *the same* (V, D) array as the embedding and
*the same* gradient buffer, computes ``hs @ W.T``, and since every backward accumulates, the
two contributions to dW add up by construction (no merge step, no copy of W).

Like every npgated layer, these keep the arrays they are given: ``params`` *are* the
constructor's W and b (the same objects), so an in-place change of W reaches ``forward``, and
the book's way of tying, ``TimeAffine(embed_W.T, b)``, shares the embedding's matrix (its
gradient is then a buffer of its own, to be summed by the trainer as the book's
``remove_duplicate`` does; ``tied_to`` shares the gradient buffer too).
"""

from __future__ import annotations

import numpy as np

from npgated import backend, checks, parallel
from npgated.layers.base import Layer


def _with_ones(x2):
    """``[x2 | 1]``: the (K, D) rows with a constant 1 appended, (K, D + 1), for ``[W ; b]``."""
    K, D = x2.shape
    x1 = backend.get_array_module(x2).empty((K, D + 1), dtype=x2.dtype)
    x1[:, :D] = x2
    x1[:, D] = 1
    return x1


def fuse_weight_and_bias(W, b):
    """Copy W and b into one (D + 1, M) array ``[W ; b]`` and return its two parts.

    Parameters
    ----------
    W : (D, M) float array
    b : (M,) float array, in W's dtype and on W's backend

    Returns
    -------
    W2 : (D, M) view, rows 0..D-1 of a new C-contiguous (D + 1, M) array
    b2 : (M,) view, its last row

    Notes
    -----
    ``TimeAffine(W2, b2)`` recognises this layout and computes its output with the bias
    inside one matrix product (see :class:`TimeAffine`); it keeps W2 and b2 themselves as
    its ``params``. Build the layer from the returned views, not from the arrays passed in.
    """
    checks.check_float(W, "W", ndim=2, symbolic="(D, M)")
    checks.check_float(b, "b", ndim=1, dtype=W.dtype, symbolic="(M,)")
    checks.check_param_shape(b, (W.shape[1],), "(M,)", "b")
    xp = backend.get_array_module(W)
    D, M = W.shape
    Wb = xp.empty((D + 1, M), dtype=W.dtype)  # [W ; b]
    Wb[:D] = W
    Wb[D] = b
    return Wb[:D], Wb[D]


def _address(a) -> int:
    """The address of ``a``'s first element (NumPy, the stand-in, CuPy)."""
    if isinstance(a, np.ndarray):  # NumPy and the stand-in (an ndarray subclass)
        return a.__array_interface__["data"][0]
    return a.data.ptr  # CuPy: a MemoryPointer


def _allocation(a):
    """The object that owns ``a``'s memory: two views of one buffer give the same object."""
    if isinstance(a, np.ndarray):
        # NumPy shortens chains of views of one type; the stand-in's views alternate
        # between two types, so walk the chain to its end.
        while isinstance(a.base, np.ndarray):
            a = a.base
        return a if a.base is None else a.base  # an ndarray, or a foreign buffer (mmap)
    return a.data.mem  # CuPy: the Memory every view of one allocation points into


def _fused_view(W, b):
    """The (D + 1, M) array ``[W ; b]`` when W and b are its two parts already, else None.

    True when W is C-contiguous (row stride M elements), b is contiguous and starts right
    after W's last element, and both live in one allocation, i.e. W = buf[:D], b = buf[D]
    for a C-contiguous (D + 1, M) array buf (what :func:`fuse_weight_and_bias` returns).
    The result is a view of that memory, never a copy.
    """
    D, M = W.shape
    s = W.dtype.itemsize
    if D == 0 or M == 0 or tuple(W.strides) != (M * s, s) or tuple(b.strides) != (s,):
        return None
    if _address(b) != _address(W) + D * M * s or _allocation(W) is not _allocation(b):
        return None
    if isinstance(W, np.ndarray):  # NumPy, and the stand-in keeps its type (subok)
        return np.lib.stride_tricks.as_strided(W, shape=(D + 1, M), strides=(M * s, s), subok=True)
    xp = backend.get_array_module(W)  # CuPy: a new header on the same memory
    return xp.ndarray((D + 1, M), dtype=W.dtype, memptr=W.data, strides=(M * s, s))


class _AffineMap(Layer):
    """Shared parameter handling and the two matrix products, on 2-D row blocks.

    ``transposed=False``: W has shape (D, M) and ``y = x @ W + b``.
    ``transposed=True``:  W has shape (M, D) and ``y = x @ W.T + b`` (tied output layer).
    """

    param_names = ("W", "b")

    def __init__(self, W, b=None, *, transposed: bool = False):
        symbolic = "(M, D)" if transposed else "(D, M)"
        checks.check_float(W, "W", ndim=2, symbolic=symbolic)
        self.transposed = bool(transposed)
        M = W.shape[0] if self.transposed else W.shape[1]
        if b is None:
            super().__init__(W)
            self.param_names = ("W",)
        else:
            checks.check_float(b, "b", ndim=1, dtype=W.dtype, symbolic="(M,)")
            checks.check_param_shape(b, (M,), "(M,)", "b")
            if backend.get_array_module(b) is not backend.get_array_module(W):
                raise TypeError(
                    "b and W live on different backends: move both with backend.to_device"
                )
            super().__init__(W, b)
        self.cache = None

    # -- sizes ------------------------------------------------------------------------
    @property
    def in_features(self) -> int:
        """D, the size of the last axis of the input."""
        W = self.params[0]
        return W.shape[1] if self.transposed else W.shape[0]

    @property
    def out_features(self) -> int:
        """M, the size of the last axis of the output (V for a tied output layer)."""
        W = self.params[0]
        return W.shape[0] if self.transposed else W.shape[1]

    @property
    def has_bias(self) -> bool:
        return len(self.params) == 2

    def _check_last_dim(self, x, name: str) -> None:
        D = self.in_features
        if x.shape[-1] != D:
            if self.transposed:
                raise ValueError(
                    f"{name} must have last dimension D = {D} (the embedding size of the "
                    f"tied weight matrix), got {x.shape[-1]} (shape "
                    f"{checks.shape_str(x.shape)}): with tied weights the hidden size must "
                    "equal the embedding size"
                )
            raise ValueError(
                f"{name} must have last dimension D = {D} (W has shape "
                f"{checks.shape_str(self.params[0].shape)}), got {x.shape[-1]} "
                f"(shape {checks.shape_str(x.shape)})"
            )

    # -- the two products, on (K, D) -> (K, M) row blocks ------------------------------
    def _forward_rows(self, x2):
        W = self.params[0]
        y2 = parallel.matmul(x2, W.T if self.transposed else W)  # F1 (.T is a view, no copy)
        if self.has_bias:
            b = self.params[1]

            def add_bias(rows):
                y2[rows] += b  # F1 (bias broadcast over the rows, in place)

            parallel.over_rows(add_bias, len(y2), b.size, y2)
        return y2

    def rows_into(self, x2, out):
        """F1 for a block of input rows into ``out`` (no (K, M) allocation): evaluation.

        Parameters
        ----------
        x2 : (K, D) array, input rows
        out : (K, M) array, overwritten with ``x2 @ W + b`` (``x2 @ W.T + b`` for a
            transposed, tied layer)

        Returns ``out``. One BLAS call in this thread (the caller shares the blocks out over
        threads); the bias is added as a second pass over the block.
        """
        W = self.params[0]
        xp = backend.get_array_module(x2)
        xp.matmul(x2, W.T if self.transposed else W, out=out)  # F1
        if self.has_bias:
            out += self.params[1]  # F1
        return out

    def _backward_rows(self, x2, dy2):
        W = self.params[0]
        if self.transposed:
            dx2 = parallel.matmul(dy2, W)  # B1 (transposed)
            parallel.add_matmul(self.grads[0], dy2.T, x2)  # B2 (transposed)
        else:
            dx2 = parallel.matmul(dy2, W.T)  # B1
            parallel.add_matmul(self.grads[0], x2.T, dy2)  # B2
        if self.has_bias:
            # B3 as a matrix-vector product, ones.T @ dy2 == dy2.sum(axis=0): BLAS runs it on
            # every core, NumPy's sum on one (measured 0.6 ms vs 2.5 ms for 700 x 10,000).
            xp = backend.get_array_module(dy2)
            ones = xp.ones((1, dy2.shape[0]), dtype=dy2.dtype)
            parallel.add_matmul(self.grads[1][None, :], ones, dy2)  # B3
        return dx2


class Affine(_AffineMap):
    """Fully connected layer ``y = x @ W + b`` on a batch of vectors.

    Parameters
    ----------
    W : (D, M) float array
    b : (M,) float array or None
        In W's dtype; ``None`` builds a layer without bias (``param_names == ("W",)``).

    Notes
    -----
    Forward, for x of shape (N, D)::

        F1  y = x @ W + b                      (N, M)

    Backward, given dy = dL/dy of shape (N, M)::

        B1  dx = dy @ W.T                      (N, D)
        B2  dW += x.T @ dy                     (D, M)
        B3  db += dy.sum(axis=0)               (M,)

    B2 and B3 accumulate (the training loop zeroes the gradients first).
    """

    def __init__(self, W, b=None):
        super().__init__(W, b)

    def forward(self, x):
        """Apply the layer.

        Parameters
        ----------
        x : (N, D) float array in the parameters' dtype

        Returns
        -------
        y : (N, M) array
        """
        checks.check_float(x, "x", ndim=2, dtype=self.dtype, symbolic="(N, D)")
        self._check_last_dim(x, "x")
        self.cache = x  # the input, for B2 (a reference, not a copy)
        return self._forward_rows(x)  # F1

    def backward(self, dy):
        """Gradients of the loss: accumulate into ``grads``, return dx.

        Parameters
        ----------
        dy : (N, M) float array, the gradient w.r.t. the output

        Returns
        -------
        dx : (N, D) array
        """
        x = self._require_forward()
        checks.check_float(dy, "dy", ndim=2, dtype=self.dtype, symbolic="(N, M)")
        checks.check_shape(dy, (x.shape[0], self.out_features), "dy")
        self.cache = None
        return self._backward_rows(x, dy)  # B1-B3


class TimeAffine(_AffineMap):
    """One affine map applied at every time step: ``ys[:, t] = xs[:, t] @ W + b``.

    Computed as a single (N * T, D) @ (D, M) matrix product, not T small ones.

    Parameters
    ----------
    W : (D, M) float array
    b : (M,) float array or None
        In W's dtype; ``None`` builds a layer without bias (``param_names == ("W",)``).
    transposed : bool, keyword-only
        W is given as (M, D) and used as ``W.T`` (build tied layers with :meth:`tied_to`).

    Attributes
    ----------
    transposed : bool
        False for a layer built from ``W``; True for one built with :meth:`tied_to`, which
        holds an embedding's (V, D) matrix and computes ``xs @ W.T``.
    fused : bool
        True when W and b are views of one (D + 1, M) array and the layer computes through
        it (see the Notes).

    Notes
    -----
    Forward, with x2 = xs.reshape(N * T, D)::

        F1  y2 = x2 @ W + b                    (N * T, M),  ys = y2.reshape(N, T, M)

    Backward, with dy2 = dys.reshape(N * T, M)::

        B1  dx2 = dy2 @ W.T                    (N * T, D),  dxs = dx2.reshape(N, T, D)
        B2  dW += x2.T @ dy2                   (D, M)
        B3  db += dy2.sum(axis=0)              (M,)

    Tied layer (W of shape (V, D), M = V): F1 is ``y2 = x2 @ W.T + b``, and B1, B2 become::

        B1  dx2 = dy2 @ W                      (N * T, D)
        B2  dW += dy2.T @ x2                   (V, D)

    Because ``grads[0]`` is the embedding's own gradient buffer, B2 adds the output layer's
    contribution to the embedding's: dW is the sum of both, by construction.

    ``params`` are the arrays given (``params[0] is W``, ``params[1] is b``): write into them
    in place and ``forward`` sees it. ``TimeAffine(E.T, b)`` with an embedding's (V, D) matrix
    E is the book's tied output layer: F1 reads E through the transposed view, and ``grads[0]``
    is the layer's own (D, V) buffer (add its transpose to the embedding's gradient, as the
    book's ``remove_duplicate`` does, or build the layer with :meth:`tied_to`).

    The fused path (the textbook trick of the bias as the weight of a constant input), taken
    when it costs no copy: when W and b are the two parts of one C-contiguous (D + 1, M)
    array Wb = [W ; b] (W = Wb[:D], b = Wb[D]; :func:`fuse_weight_and_bias` makes them), each
    input row gets a constant 1 appended, x1 = [x2 | 1] of shape (N * T, D + 1), and::

        F1      y2 = x1 @ Wb                   (= x2 @ W + 1 * b: the bias inside the GEMM)
        B2, B3  [dW ; db] += x1.T @ dy2        (last row: 1.T @ dy2 = dy2.sum(axis=0) = db)

    ``grads`` are then the two parts of one layer-owned (D + 1, M) buffer [dW ; db]. This
    saves the two passes over the (N * T, M) output that adding b and summing dy2 take
    (about 4 ms per PTB step at M = 10,000, measured). Any other W and b (separate arrays,
    a transposed view) take the plain path, F1 to B3 above, on the arrays as given.
    """

    def __init__(self, W, b=None, *, transposed: bool = False):
        super().__init__(W, b, transposed=transposed)
        self._Wb = self._dWb = None  # the fused [W ; b] view and [dW ; db] buffer, if any
        if self.has_bias and not self.transposed:
            self._Wb = _fused_view(W, b)  # a view of the caller's memory, or None
        if self._Wb is not None:
            D = W.shape[0]
            self._dWb = backend.get_array_module(W).zeros_like(self._Wb)  # [dW ; db]
            self.grads = [self._dWb[:D], self._dWb[D]]

    @property
    def fused(self) -> bool:
        """True when forward and backward use the fused ``[W ; b]`` view (one GEMM each)."""
        return self._Wb is not None

    def rebind(self, params, grads) -> None:
        """As :meth:`Layer.rebind`; a fused layer stays fused when the new W, b and dW, db
        are again the two parts of one (D + 1, M) array each (a model's flat buffers lay
        them out so), else it takes the plain path on the new arrays."""
        fused = self._Wb is not None
        super().rebind(params, grads)
        self._Wb = self._dWb = None
        if fused:
            Wb, dWb = _fused_view(*self.params), _fused_view(*self.grads)
            if Wb is not None and dWb is not None:
                self._Wb, self._dWb = Wb, dWb

    @classmethod
    def tied_to(cls, embedding, bias: bool = True) -> TimeAffine:
        """An output layer sharing ``embedding``'s (V, D) weight matrix and gradient buffer.

        Parameters
        ----------
        embedding : Embedding or TimeEmbedding
            Any layer whose ``params[0]`` is a (V, D) matrix.
        bias : bool
            Add a new (V,) bias, zero-initialised, in W's dtype and on W's backend.

        Returns
        -------
        TimeAffine
            ``params[0] is embedding.params[0]`` and ``grads[0] is embedding.grads[0]``;
            it computes ``xs @ W.T`` (xs of shape (N, T, D), output (N, T, V)).
        """
        if not getattr(embedding, "params", None):
            raise TypeError(
                f"tied_to needs an embedding layer with a (V, D) weight matrix, got "
                f"{type(embedding).__name__}"
            )
        W = embedding.params[0]
        checks.check_float(W, "embedding W", ndim=2, symbolic="(V, D)")
        b = None
        if bias:
            xp = backend.get_array_module(W)
            b = xp.zeros(W.shape[0], dtype=W.dtype)
        layer = cls(W, b, transposed=True)
        layer.grads[0] = embedding.grads[0]  # the same buffer: gradients sum by construction
        return layer

    def forward(self, xs):
        """Apply the layer at every time step.

        Parameters
        ----------
        xs : (N, T, D) float array in the parameters' dtype

        Returns
        -------
        ys : (N, T, M) array (M = V for a tied layer)
        """
        checks.check_float(xs, "xs", ndim=3, dtype=self.dtype, symbolic="(N, T, D)")
        self._check_last_dim(xs, "xs")
        N, T, D = xs.shape
        x2 = xs.reshape(N * T, D)
        if self._Wb is None:
            self.cache = x2  # the input rows, for B2 (a view, not a copy)
            return self._forward_rows(x2).reshape(N, T, self.out_features)  # F1
        x1 = _with_ones(x2)  # [x2 | 1]
        self.cache = x1  # for B2, B3
        return parallel.matmul(x1, self._Wb).reshape(N, T, self.out_features)  # F1 (bias included)

    def rows_into(self, x2, out):
        """F1 for a block of input rows into ``out``: the evaluation path.

        Parameters
        ----------
        x2 : (K, D) array, input rows
        out : (K, M) array, overwritten with ``x2 @ W + b``

        Returns ``out``. On the fused path the bias rides inside the GEMM (``[x2 | 1] @ Wb``,
        a small (K, D + 1) copy of the rows instead of a second pass over the (K, M) block);
        otherwise as :meth:`_AffineMap.rows_into`.
        """
        if self._Wb is None:
            return super().rows_into(x2, out)
        xp = backend.get_array_module(x2)
        return xp.matmul(_with_ones(x2), self._Wb, out=out)  # F1 (bias included)

    def backward(self, dys):
        """Gradients of the loss: accumulate into ``grads``, return dxs.

        Parameters
        ----------
        dys : (N, T, M) float array, the gradient w.r.t. the output

        Returns
        -------
        dxs : (N, T, D) array
        """
        x2 = self._require_forward()
        checks.check_float(dys, "dys", ndim=3, dtype=self.dtype, symbolic="(N, T, M)")
        N, T, M = dys.shape
        if N * T != x2.shape[0] or M != self.out_features:
            raise ValueError(
                f"dys must have shape (N, T, M) with N * T = {x2.shape[0]} and "
                f"M = {self.out_features}, got {checks.shape_str(dys.shape)}"
            )
        self.cache = None
        dy2 = dys.reshape(N * T, M)
        if self._Wb is None:
            dx2 = self._backward_rows(x2, dy2)  # B1-B3
        else:
            dx2 = parallel.matmul(dy2, self.params[0].T)  # B1
            parallel.add_matmul(self._dWb, x2.T, dy2)  # B2, B3 (x2 is [x2 | 1]: last row is db)
        return dx2.reshape(N, T, self.in_features)
