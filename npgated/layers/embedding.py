"""Word embeddings: a lookup of rows of a (V, D) matrix by token id.

An embedding is an affine layer applied to one-hot inputs, written as the row lookup it
reduces to (Bengio et al. 2003, "A Neural Probabilistic Language Model"): ``W[ids]``. Its
gradient touches only the rows that were looked up, so backward adds into those rows in
place (``dW[ids[k]] += dout[k]``, with repeated ids summed) and never builds a dense (V, D)
temporary or a one-hot matrix.

How the rows are summed: ``backend.scatter_add`` (``np.add.at`` on the host,
``cupyx.scatter_add`` on the GPU). It was measured against sort-and-reduce alternatives for
the Penn Treebank case of Zaremba et al. 2014 (medium model: N * T = 20 * 35 = 700 ids,
V = 10000, D = 650, float32, Zipf-distributed and uniform ids), NumPy 2.4 on the shared 2-core
development machine, per backward call, median (min) of 200 calls with a 28 MB array
touched between calls as a training step does (no GPU was available for the comparison)::

    np.add.at(dW, ids, dout), row-wise                 4.5-7.0 ms (min 3.9-4.1, stable)
    argsort + np.add.reduceat, then dW[u] += sums       3.1-9.6 ms (min 2.4-4.4)
    np.unique + one bincount over (unique id, column)   7.9-15  ms (min 5.7-12; 1.3-1.7 hot)
    np.unique + one-hot (U, 700) @ dout GEMM            25-60   ms under load (min 2.9-17)

The bincount and one-hot variants win only in hot-cache micro-benchmarks on a quiet machine:
they allocate several (700, 650) temporaries (the bincount one ~11 MB of int64 and float64),
which makes them slower and erratic in a real step. argsort + reduceat saved ~1 ms on
Zipf-distributed ids but not on uniform ones, and ``add.reduceat`` is not reachable through
the portable array module (CuPy documents it only in recent releases). ``add.at`` (fast since
NumPy 1.25, numpy#5922) was the most predictable, allocates nothing, and is a single atomic
kernel on CuPy, so the layers use ``backend.scatter_add``.

On NumPy, ``backend.scatter_add`` calls ``add.at`` on the flat (V * D,) view of dW with the
flat positions ``ids[k] * D + j`` (``add.at``'s fast path is for one-dimensional operands
only): the same sums, median 1.0 ms (Zipf ids) and 1.2 ms (uniform ids) instead of 4.4 ms in
the measurement above (200 calls each, 2026-11-30): ~0.25 % of a ~420 ms book-better
training step instead of ~1 %. The flat index array (700 * 650 int64, 3.6 MB) is its only
temporary.

Embedding dropout (:class:`TimeEmbedding`'s ``embedding_dropout``) drops whole word *types*:
Gal & Ghahramani, "A Theoretically Grounded Application of Dropout in Recurrent Neural
Networks", NeurIPS 2016 (section 4.2, dropout on the word embeddings), used as "embedding
dropout" by Merity, Keskar & Socher, "Regularizing and Optimizing LSTM Language Models"
(2017). One keep-mask of shape (V, 1) per forward window, scaled by 1 / (1 - p), zeroes
every occurrence of a dropped word in the window; it is applied to the looked-up rows
(``W[ids] * mask[ids]``), so no masked (V, D) copy of W is made, and backward scales the
rows it scatters by the same factors.
"""

from __future__ import annotations

from npgated import backend, checks
from npgated.layers.base import Layer
from npgated.layers.dropout import keep_mask


class Embedding(Layer):
    """Look up one embedding vector per token id: ``out = W[ids]``.

    Parameters
    ----------
    W : (V, D) float array
        The embedding matrix, one row per word of the vocabulary.

    Notes
    -----
    Forward, for ids of shape (N,) with values in [0, V)::

        F1  out = W[ids]                                  (N, D)

    Backward, given dout of shape (N, D) (ids are integers: no gradient flows to them)::

        B1  dW[ids[k]] += dout[k]   for every k           (repeated ids are summed)

    B1 is ``dW += onehot(ids).T @ dout`` without building the one-hot matrix; it writes
    only the rows that were used.
    """

    param_names = ("W",)

    def __init__(self, W):
        checks.check_float(W, "W", ndim=2, symbolic="(V, D)")
        super().__init__(W)
        self.cache = None

    @property
    def vocab_size(self) -> int:
        return self.params[0].shape[0]

    @property
    def embedding_size(self) -> int:
        return self.params[0].shape[1]

    def _lookup(self, ids, ndim: int):
        """Validate ids, move them next to W, gather the rows (F1)."""
        W = self.params[0]
        checks.check_ids(ids, W.shape[0], name="ids", ndim=ndim)
        ids = backend.to_device(ids, like=W)  # host batches are fine: moved once here
        self.cache = ids  # the ids, for B1
        return W[ids]  # F1

    def _scatter(self, dout, row_scale=None):
        """Validate dout against the cached ids and add it into their rows of dW (B1).

        ``row_scale`` (ids.shape + (1,)), if given, multiplies each position's dout first.
        """
        ids = self._require_forward()
        D = self.embedding_size
        checks.check_float(dout, "dout", dtype=self.dtype)
        checks.check_shape(dout, tuple(ids.shape) + (D,), "dout")
        self.cache = None
        K = ids.size
        values = dout.reshape(K, D)
        if row_scale is not None:
            values = values * row_scale.reshape(K, 1)
        backend.scatter_add(self.grads[0], ids.reshape(K), values)  # B1

    def forward(self, ids):
        """Look up the embeddings.

        Parameters
        ----------
        ids : (N,) integer array
            Token ids in [0, V); a host array is moved to W's backend.

        Returns
        -------
        out : (N, D) array in W's dtype
        """
        return self._lookup(ids, ndim=1)

    def backward(self, dout):
        """Accumulate dout into the rows of dW that were looked up.

        Parameters
        ----------
        dout : (N, D) float array

        Returns
        -------
        None (token ids have no gradient)
        """
        self._scatter(dout)
        return None


class TimeEmbedding(Embedding):
    """Embedding lookup for a batch of sequences: ``out[n, t] = W[ids[n, t]]``.

    Parameters
    ----------
    W : (V, D) float array
    embedding_dropout : float in [0, 1)
        p, the probability of dropping a word type (a row of W) for a whole forward window
        (Gal & Ghahramani 2016; Merity et al. 2017). 0 (default): none.
    seed : int, numpy.random.Generator or None
        Seed of the layer's own host generator ``rng`` that draws the mask.

    Attributes
    ----------
    rng : numpy.random.Generator
        Draws the mask; replace it with a freshly seeded one to freeze the mask.
    batch_shard : None
        Present for uniformity with the other stochastic layers and unused: the mask has one
        entry per word type, not per stream, so every process draws the same one.
    drop_mask : (V, 1) array or None
        The scaled keep-mask of the last forward (None in eval mode or for p = 0).

    Notes
    -----
    Forward, for ids of shape (N, T). In training mode with p > 0, once per window (u
    uniform in [0, 1) of shape (V, 1), from ``rng``)::

        M1  mask = (u >= p) / (1 - p)                     (V, 1): one entry per word type
        F1  out = W[ids] * mask[ids]                      (N, T, D) = (W * mask)[ids]

    and otherwise (eval mode or p = 0; nothing drawn) mask = 1::

        F1  out = W[ids]                                  (N, T, D)

    Backward, given dout of shape (N, T, D), over all N * T positions at once::

        B1  dW[ids[n, t]] += dout[n, t] * mask[ids[n, t]]   for every n, t (repeated ids summed)

    (F1 is linear in the row W[ids[n, t]] with the factor mask[ids[n, t]].)
    """

    def __init__(self, W, *, embedding_dropout: float = 0.0, seed=None):
        super().__init__(W)
        self.embedding_dropout = checks.check_ratio(embedding_dropout, "embedding_dropout")
        self.rng = backend.default_rng(seed)
        self.batch_shard = None  # unused (one mask entry per word type), for uniformity
        self.drop_mask = None
        self._row_scale = None  # mask[ids] (N, T, 1) of the last forward, for B1

    def __repr__(self) -> str:
        base = super().__repr__()
        if self.embedding_dropout:
            base = f"{base[:-1]}, embedding_dropout={self.embedding_dropout})"
        return base

    def forward(self, ids):
        """Look up the embeddings of every token of every sequence.

        Parameters
        ----------
        ids : (N, T) integer array
            Token ids in [0, V); a host array is moved to W's backend.

        Returns
        -------
        out : (N, T, D) array in W's dtype
        """
        out = self._lookup(ids, ndim=2)  # F1  W[ids] (a fresh array: fancy indexing copies)
        self.drop_mask = self._row_scale = None
        p = self.embedding_dropout
        if self.training and p > 0.0:
            W = self.params[0]
            self.drop_mask = keep_mask(self.rng, (W.shape[0], 1), p, W, None)  # M1
            self._row_scale = self.drop_mask[self.cache]  # mask[ids], (N, T, 1)
            out *= self._row_scale  # F1
        return out

    def backward(self, dout):
        """Accumulate dout into the rows of dW that were looked up.

        Parameters
        ----------
        dout : (N, T, D) float array

        Returns
        -------
        None (token ids have no gradient)
        """
        self._scatter(dout, self._row_scale)  # B1 (raises before any change if dout is bad)
        self._row_scale = None
        return None
