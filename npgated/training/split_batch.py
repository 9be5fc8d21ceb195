"""One training step's forward and backward with the minibatch split over npgated's threads.

Why
---
An encoder-decoder's step is a chain of small products (``h @ Wh`` of 128 rows, 11 times
forward and 11 times backward for the book's addition model) with element-wise work between
them. Split product by product (:func:`npgated.parallel.matmul`) every step hands work over
twice and the element-wise work stays on one core. Split by *rows of the batch* instead, each
thread runs a whole forward and backward of its half on its own copy of the model, and the
threads meet once per training step.

How (data parallelism inside one process)
-----------------------------------------
With k = :func:`npgated.parallel.threads` >= 2 and a batch of N >= 2 * :data:`MIN_ROWS` rows,
the rows are cut into k contiguous blocks of sizes N_1..N_k. Block 1 runs on ``model`` itself,
block j > 1 on a replica: a second model of the same architecture whose parameter arrays hold
a copy of ``model``'s (refreshed before every step; the optimizer only ever updates
``model``) and whose gradients and caches are its own. With L_j the mean loss of block j over
its N_j * T_dec answer characters, the batch's mean loss and its gradient are

    S1  L = sum_j (N_j / N) * L_j
    S2  dL/dtheta = sum_j (N_j / N) * dL_j/dtheta

so block j runs ``backward(dout=N_j / N)`` (the models' ``backward`` scales by ``dout``),
and the replicas' gradients are added to ``model``'s (S2). The mathematics is the one of the
whole batch; only the order of floating-point sums differs (tests compare to tolerances).

One place, one switch: :class:`SplitBatch` decides at every call (threads on and the batch
large enough, host NumPy arrays) and otherwise runs the plain ``zero_grads``, ``forward``,
``backward`` of ``model``. ``NPGATED_THREADS=1`` (``parallel.use_threads(1)``) turns it off.
"""

from __future__ import annotations

import numpy as np

from npgated import parallel

__all__ = ["SplitBatch", "MIN_ROWS"]

MIN_ROWS = 16  # each thread gets at least this many rows of the batch


def _copy_into(dst_arrays, src_arrays) -> None:
    for d, s in zip(dst_arrays, src_arrays):
        np.copyto(d, s)


class SplitBatch:
    """``loss = step(xs, ts)``: zero the gradients, forward and backward of a minibatch.

    Parameters
    ----------
    model : an encoder-decoder (``forward(xs, ts)``, ``backward(dout)``, ``zero_grads()``,
        ``params``/``grads``)
    make_replica : callable() -> model, optional
        A fresh model of the same architecture and dtype (its parameters are overwritten).
        Default: ``npgated.models.seq2seq.build_seq2seq(model.config, model.dtype)``.

    Notes
    -----
    After a call ``model.grads`` hold dL/dtheta of the whole batch (S2) and the returned loss
    is S1, as a Python float. Replicas are built on first use, one per extra thread.
    """

    def __init__(self, model, make_replica=None):
        self.model = model
        self._make_replica = make_replica
        self._replicas: list = []

    def _replica(self, j: int):
        while len(self._replicas) < j:
            if self._make_replica is not None:
                r = self._make_replica()
            else:
                from npgated.models.seq2seq import build_seq2seq  # noqa: PLC0415

                r = build_seq2seq(self.model.config, dtype=self.model.dtype)
            if [p.shape for p in r.params] != [p.shape for p in self.model.params]:
                raise ValueError("SplitBatch: the replica's parameters do not match the model's")
            self._replicas.append(r)
        return self._replicas[j - 1]

    def blocks(self, n_rows: int, xs) -> list:
        """The row blocks of a batch of ``n_rows`` (one block: no split)."""
        if parallel.threads() < 2 or type(xs) is not np.ndarray:
            return [slice(0, n_rows)]
        k = max(1, min(parallel.threads(), n_rows // MIN_ROWS))
        bounds = [n_rows * i // k for i in range(k + 1)]
        return [slice(bounds[i], bounds[i + 1]) for i in range(k)]

    def __call__(self, xs, ts) -> float:
        model = self.model
        N = xs.shape[0]
        blocks = self.blocks(N, xs)
        if len(blocks) == 1:
            model.zero_grads()
            loss = model.forward(xs, ts)
            model.backward()
            return float(loss)
        workers = [model] + [self._replica(j) for j in range(1, len(blocks))]
        for r in workers[1:]:
            _copy_into(r.params, model.params)  # the optimizer updated model's only
            r.train(model.training)

        def part(j):
            m, rows = workers[j], blocks[j]
            m.zero_grads()
            loss = m.forward(xs[rows], ts[rows])
            m.backward((rows.stop - rows.start) / N)  # S2
            return float(loss)

        losses = parallel.run(part, range(len(blocks)))
        for r in workers[1:]:
            for g, gr in zip(model.grads, r.grads):
                g += gr  # S2
        return sum((b.stop - b.start) / N * loss for b, loss in zip(blocks, losses))  # S1
