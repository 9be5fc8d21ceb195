"""A language model assembled the book's way, as a plain list of layers, against npgated's.

The book (DLfS2, ch. 6) ties the output layer to the embedding with ``TimeAffine(E.T, b)``
and collects ``params``/``grads`` as flat lists; its trainer then merges duplicates
(``remove_duplicate``: the same array twice, or one the transpose of the other, gets the
gradients added and the duplicate dropped). npgated's layers keep the arrays they are given,
so this works unchanged, and it must give the same loss and gradient as the ``tied_to``
model, whose single shared gradient buffer sums both contributions by construction.
"""

from __future__ import annotations

import numpy as np
import pytest

from npgated import backend
from npgated.layers.affine import TimeAffine
from npgated.layers.embedding import TimeEmbedding
from npgated.layers.loss import TimeSoftmaxWithLoss
from npgated.layers.lstm import TimeLSTM
from npgated.models.rnnlm import BetterRnnlm

V, H, N, T = 13, 6, 3, 5  # H is also the embedding size D (tying needs H == D)


class BookStyleLM:
    """Embedding -> LSTM -> Affine(E.T, b) -> softmax loss, as the book writes it."""

    def __init__(self, E, Wx, Wh, b, b_out):
        self.layers = [TimeEmbedding(E), TimeLSTM(Wx, Wh, b, stateful=True), TimeAffine(E.T, b_out)]
        self.loss_layer = TimeSoftmaxWithLoss()
        self.params, self.grads = [], []
        for layer in self.layers:
            self.params += layer.params
            self.grads += layer.grads

    def forward(self, xs, ts):
        for layer in self.layers:
            xs = layer.forward(xs)
        return self.loss_layer.forward(xs, ts)

    def backward(self, dout=1.0):
        dout = self.loss_layer.backward(dout)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)

    def zero_grads(self):
        for g in self.grads:
            g[...] = 0


def _is_transposed_view(a, b) -> bool:
    """b is a.T (a view of the same memory with the axes swapped)."""
    return (
        a.ndim == 2
        and b.ndim == 2
        and b.shape == a.shape[::-1]
        and b.strides == a.strides[::-1]
        and np.shares_memory(a, b)
    )


def remove_duplicate(params, grads):
    """The book trainer's merge, by identity instead of by value: the same array twice, or
    an array and its transposed view, become one parameter whose gradient is the sum."""
    params, grads = list(params), list(grads)
    i = 0
    while i < len(params):
        j = i + 1
        while j < len(params):
            if params[j] is params[i]:
                grads[i] = grads[i] + grads[j]
            elif _is_transposed_view(params[i], params[j]):
                grads[i] = grads[i] + grads[j].T
            else:
                j += 1
                continue
            del params[j], grads[j]
        i += 1
    return params, grads


def _tied_model():
    """npgated's tied model: one LSTM layer, no dropout, a nonzero output bias."""
    model = BetterRnnlm(
        V,
        H,
        H,
        num_layers=1,
        dropout_ratio=0.0,
        tie_weights=True,
        cell="lstm",
        seed=3,
        dtype=np.float64,
        init=0.3,
    )
    assert model.layers["affine"].params[0] is model.layers["embed"].params[0]
    return model


def _book_copy(model):
    """The book-style assembly on copies of the model's arrays."""
    p = {name: backend.to_cpu(a).copy() for name, a, _ in model.named_params()}
    return BookStyleLM(p["embed.W"], p["lstm1.Wx"], p["lstm1.Wh"], p["lstm1.b"], p["affine.b"])


@pytest.fixture
def batch():
    rng = np.random.default_rng(11)
    return rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))


def test_book_style_tying_shares_the_embedding_matrix():
    book = _book_copy(_tied_model())
    E = book.layers[0].params[0]
    W_out = book.layers[2].params[0]
    assert W_out.base is E and _is_transposed_view(E, W_out)
    assert not book.layers[2].fused  # a transposed view takes the plain path
    params, grads = remove_duplicate(book.params, book.grads)
    assert len(params) == len(book.params) - 1 == 5
    assert params[0] is E


def test_book_style_model_matches_the_tied_to_model(batch):
    xs, ts = batch
    model = _tied_model()
    book = _book_copy(model)

    model.reset_state()
    model.zero_grads()
    loss = float(model.forward(xs, ts))
    model.backward()

    book.zero_grads()
    book_loss = float(book.forward(xs, ts))
    book.backward()
    params, grads = remove_duplicate(book.params, book.grads)

    assert book_loss == pytest.approx(loss, rel=1e-12, abs=0)
    names = [n for n, _, _ in model.named_params()]
    assert len(grads) == len(names) == 5
    for name, g_model, g_book in zip(names, model.grads, grads):
        g_model = backend.to_cpu(g_model)
        assert np.abs(g_model).max() > 0, f"{name}: zero gradient tests nothing"
        np.testing.assert_allclose(
            g_book, g_model, rtol=1e-10, atol=1e-12, err_msg=f"book-style summed gradient of {name}"
        )


def test_an_sgd_step_on_the_embedding_reaches_the_output_layer(batch):
    """The book's update ``param -= lr * grad`` on the merged list moves both uses of E."""
    xs, ts = batch
    model = _tied_model()
    book = _book_copy(model)
    lr = 0.5
    for lm in (model, book):
        if lm is model:
            lm.reset_state()
        lm.zero_grads()
        lm.forward(xs, ts)
        lm.backward()
    params, grads = remove_duplicate(book.params, book.grads)
    for p, g in zip(params, grads):
        p -= lr * g
    for p, g in zip(model.params, model.grads):
        p -= lr * g
    model.reset_state()
    book.layers[1].reset_state()
    after_model, after_book = float(model.forward(xs, ts)), float(book.forward(xs, ts))
    assert after_book == pytest.approx(after_model, rel=1e-12, abs=0)
    np.testing.assert_allclose(
        book.layers[2].params[0], backend.to_cpu(model.params[0]).T, rtol=1e-12, atol=1e-14
    )
