#!/usr/bin/env python
"""A model written the way "Deep Learning from Scratch 2" writes them, on npgated.book's layers.

The book's model files build a list of layers, collect ``params`` and ``grads`` once, and its
trainers run forward, backward, ``remove_duplicate`` (the tied output matrix ``E.T`` has its
gradient added to the embedding's), clipping and the update -- without ever zeroing a
gradient, because the book's layers overwrite them. ``npgated.book.time_layers`` gives such
layers, computed by npgated. This script trains one small model three ways on a learnable
sequence (no data files needed) and compares the parameters they end at::

    A  npgated.book's layers in the book's loop (no zeroing)
    B  npgated's own layers (gate blocks permuted to npgated's order), gradients zeroed first
       in every iteration: npgated's own loop, the reference
    C  npgated's own layers in the book's loop: they add to their gradients, so every update
       uses the running sum of all gradients so far -- another optimizer, silently

A ends where B ends (float32 rounding apart); C does not. Run it with::

    python examples/book_dropin.py

To run the book's own scripts this way, see docs/book.md ("Drop-in layers for the book's
scripts").
"""

from __future__ import annotations

import argparse

import numpy as np

from npgated.book import time_layers as book
from npgated.interop.book import gates_from_book
from npgated.layers import TimeAffine, TimeEmbedding, TimeLSTM, TimeSoftmaxWithLoss


class BookStyleLM:
    """Embedding -> LSTM -> output layer tied the book's way, ``TimeAffine(E.T, b)``."""

    def __init__(self, layers, V, D, gates=lambda a: a, seed=0):
        rn = np.random.default_rng(seed).standard_normal
        E = (rn((V, D)) / 10).astype("f")
        Wx = (rn((D, 4 * D)) / np.sqrt(D)).astype("f")
        Wh = (rn((D, 4 * D)) / np.sqrt(D)).astype("f")
        b = np.zeros(4 * D, "f")  # gate blocks f, g, i, o, as the book's model files build them
        self.layers = [
            layers["TimeEmbedding"](E),
            layers["TimeLSTM"](gates(Wx), gates(Wh), gates(b), stateful=True),
            layers["TimeAffine"](E.T, np.zeros(V, "f")),
        ]
        self.loss_layer = layers["TimeSoftmaxWithLoss"]()
        self.params, self.grads = [], []
        for layer in self.layers:
            self.params += layer.params
            self.grads += layer.grads

    def forward(self, xs, ts):
        for layer in self.layers:
            xs = layer.forward(xs)
        return self.loss_layer.forward(xs, ts)

    def backward(self):
        dout = self.loss_layer.backward(1.0)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)


def remove_duplicate(params, grads):
    """The book trainer's merge: an array and its transposed view become one parameter, the
    second gradient added (transposed) into the first one's array, in place."""
    params, grads = list(params), list(grads)
    for j in range(len(params) - 1, 0, -1):
        for i in range(j):
            if params[j].base is params[i] and params[j].shape == params[i].shape[::-1]:
                grads[i] += grads[j].T
                del params[j], grads[j]
                break
    return params, grads


def train_the_books_way(model, data, iters, zero_first=False, lr=1.0, max_norm=1.0, N=8, T=10):
    """The book's loop: forward, backward, merge, clip, SGD; no zeroing unless ``zero_first``."""
    losses = []
    for it in range(iters):
        if zero_first:
            for g in model.grads:
                g[...] = 0
        start = (np.arange(N) * (len(data) // N) + it * T)[:, None] + np.arange(T)
        xs, ts = data[start % len(data)], data[(start + 1) % len(data)]
        losses.append(float(model.forward(xs, ts)))
        model.backward()
        params, grads = remove_duplicate(model.params, model.grads)
        norm = np.sqrt(sum(float((g * g).sum()) for g in grads))
        if norm > max_norm:
            for g in grads:
                g *= max_norm / (norm + 1e-6)
        for p, g in zip(params, grads):
            p -= lr * g
    return losses


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=150)
    args = p.parse_args(argv)
    V, D = 12, 16
    data = np.tile(np.arange(V), 50)  # 0, 1, ..., 11, 0, 1, ...: each next word is determined
    own = {
        "TimeEmbedding": TimeEmbedding,
        "TimeLSTM": TimeLSTM,
        "TimeAffine": TimeAffine,
        "TimeSoftmaxWithLoss": TimeSoftmaxWithLoss,
    }
    drop_in = {name: getattr(book, name) for name in own}
    runs = {
        "A npgated.book, book's loop": (BookStyleLM(drop_in, V, D), False),
        "B npgated's layers, zeroed": (BookStyleLM(own, V, D, gates_from_book), True),
        "C npgated's layers, book's loop": (BookStyleLM(own, V, D, gates_from_book), False),
    }
    for label, (model, zero_first) in runs.items():
        losses = train_the_books_way(model, data, args.iters, zero_first)
        print(
            f"{label:32s} loss {losses[0]:.4f} -> {np.mean(losses[-10:]):.4f} "
            f"(mean of the last 10 of {args.iters} iterations)"
        )
    reference = runs["B npgated's layers, zeroed"][0].params
    for label in ("A npgated.book, book's loop", "C npgated's layers, book's loop"):
        params = list(runs[label][0].params)
        if label.startswith("A"):  # the book's gate order f, g, i, o -> npgated's
            params[1:4] = [gates_from_book(p) for p in params[1:4]]
        diff = max(float(np.abs(p - q).max() / np.abs(q).max()) for p, q in zip(params, reference))
        print(f"{label}: parameters differ from B's by {diff:.1e} (largest, relative)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
