"""The book's training loop on npgated.book's layers gives the parameters of npgated's own loop.

The book's trainers (``common/trainer.py``) never zero gradients: each iteration is forward,
backward, ``remove_duplicate`` (a tied matrix's two gradients summed **in place** into the
first one, the duplicate dropped), clipping (in place) and the optimizer's update. That is
correct only because the book's layers overwrite their gradients. npgated's own loop is
zero_grads, forward, backward, clip, step, with one shared gradient buffer for a tied matrix.
Both loops are written here (the book's from its description, not its code) and must agree
to float64 precision after several iterations, with clipping active in some of them:

* ``rnnlm``: the book's ``BetterRnnlm`` shape -- embedding, a recurrent layer (RNN, LSTM,
  GRU; stateful, so the state crosses iterations), the output layer tied to the embedding
  the book's way, ``TimeAffine(E.T, b)``;
* ``seq2seq``: the book's ``Seq2seq`` shape -- an encoder whose last state starts the decoder
  (``set_state``) and gets the decoder's ``dh`` back.
"""

from __future__ import annotations

import numpy as np
import pytest

from npgated import backend
from npgated.book import time_layers as book
from npgated.interop.book import gates_from_book
from npgated.layers import gru, lstm, rnn
from npgated.layers.affine import TimeAffine
from npgated.layers.embedding import TimeEmbedding
from npgated.layers.loss import TimeSoftmaxWithLoss
from npgated.optim.clip import clip_grads
from npgated.optim.sgd import SGD

V, D, N, T = 11, 6, 3, 5  # D is also the hidden size (tying needs H == D)
ITERS, LR, MAX_NORM = 6, 2.0, 0.3
BOOK_CELL = {"rnn": book.TimeRNN, "lstm": book.TimeLSTM, "gru": book.TimeGRU}
NPG_CELL = {"rnn": rnn.TimeRNN, "lstm": lstm.TimeLSTM, "gru": gru.TimeGRU}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def to_npgated(cell, a):
    """The book's gate layout -> npgated's (see tests/book/test_book_layers.py)."""
    a = backend.to_cpu(a)
    if cell == "lstm":
        return gates_from_book(a)
    if cell == "gru":
        z, r, n = np.split(a, 3, axis=-1)
        return np.concatenate([r, -z, n], axis=-1)
    return a.copy()


# -- the book's loop --------------------------------------------------------------------------
def remove_duplicate(params, grads):
    """The book trainer's merge: the same array twice, or one equal to another's transpose,
    has its gradient added into the first one's array (in place) and is dropped."""
    params, grads = list(params), list(grads)
    i = 0
    while i < len(params):
        j = i + 1
        while j < len(params):
            a, b = params[i], params[j]
            if a is b:
                grads[i] += grads[j]
            elif a.ndim == 2 and b.ndim == 2 and a.T.shape == b.shape and bool((a.T == b).all()):
                grads[i] += grads[j].T
            else:
                j += 1
                continue
            del params[j], grads[j]
        i += 1
    return params, grads


def book_clip(grads, max_norm):
    """The book's clip_grads: the global norm, every gradient scaled in place if too large."""
    norm = float(sum(float((g * g).sum()) for g in grads)) ** 0.5
    rate = max_norm / (norm + 1e-6)
    if rate < 1:
        for g in grads:
            g *= rate


def book_iteration(model, xs, ts):
    loss = model.forward(xs, ts)
    model.backward()
    params, grads = remove_duplicate(model.params, model.grads)
    book_clip(grads, MAX_NORM)
    for p, g in zip(params, grads):
        p -= LR * g
    return float(loss)


# -- npgated's loop ---------------------------------------------------------------------------
def npgated_iteration(model, xs, ts, optimizer):
    params, grads = model.unique()
    for g in grads:
        g[...] = 0
    loss = model.forward(xs, ts)
    model.backward()
    norm = clip_grads(grads, MAX_NORM)
    optimizer.update(params, grads)
    return float(loss), norm


# -- the two models, each in both flavours ----------------------------------------------------
class LM:
    """Embedding -> recurrent layer -> output layer tied to the embedding -> loss."""

    def __init__(self, emb, cell, head, loss):
        self.layers, self.loss_layer = [emb, cell, head], loss
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

    def unique(self):
        seen, params, grads = set(), [], []
        for p, g in zip(self.params, self.grads):
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
                grads.append(g)
        return params, grads


class S2S(LM):
    """Encoder (embedding, LSTM) -> last state -> decoder (embedding, stateful LSTM, affine)."""

    def __init__(self, enc_emb, enc, dec_emb, dec, head, loss):
        self.enc, self.dec = [enc_emb, enc], [dec_emb, dec, head]
        self.loss_layer = loss
        self.params, self.grads = [], []
        for layer in self.enc + self.dec:
            self.params += layer.params
            self.grads += layer.grads

    def forward(self, xs, ts):
        hs = self.enc[1].forward(self.enc[0].forward(xs))
        self.hs = hs
        self.dec[1].set_state(hs[:, -1])
        out = ts[:, :-1]
        for layer in self.dec:
            out = layer.forward(out)
        return self.loss_layer.forward(out, ts[:, 1:])

    def backward(self):
        dout = self.loss_layer.backward(1.0)
        for layer in reversed(self.dec):
            dout = layer.backward(dout)
        xp = backend.get_array_module(self.hs)
        dhs = xp.zeros_like(self.hs)
        dhs[:, -1] = self.dec[1].dh
        self.enc[0].backward(self.enc[1].backward(dhs))


def host_arrays(cell, seed=0):
    r = np.random.default_rng(seed)
    k = GATES[cell]
    return {
        "E": r.standard_normal((V, D)) * 0.5,
        "Wx": r.standard_normal((D, k * D)) * 0.4,
        "Wh": r.standard_normal((D, k * D)) * 0.4,
        "b": r.standard_normal(k * D) * 0.1,
        "b_out": r.standard_normal(V) * 0.1,
        "E2": r.standard_normal((V, D)) * 0.5,
        "Wx2": r.standard_normal((D, k * D)) * 0.4,
        "Wh2": r.standard_normal((D, k * D)) * 0.4,
        "b2": r.standard_normal(k * D) * 0.1,
        "W_out": r.standard_normal((D, V)) * 0.4,
    }


def build(kind, cell, flavour, dev):
    a = host_arrays(cell)
    gates = (lambda x: dev(x)) if flavour == "book" else (lambda x: dev(to_npgated(cell, x)))
    if flavour == "book":
        Emb, Cell, Loss = book.TimeEmbedding, BOOK_CELL[cell], book.TimeSoftmaxWithLoss
    else:
        Emb, Cell, Loss = TimeEmbedding, NPG_CELL[cell], TimeSoftmaxWithLoss
    if kind == "rnnlm":
        E = dev(a["E"])
        emb = Emb(E)
        rec = Cell(gates(a["Wx"]), gates(a["Wh"]), gates(a["b"]), stateful=True)
        if flavour == "book":
            head = book.TimeAffine(E.T, dev(a["b_out"]))  # the book's tying
        else:
            head = TimeAffine.tied_to(emb)
            head.params[1][...] = dev(a["b_out"])
        return LM(emb, rec, head, Loss())
    enc = Cell(gates(a["Wx"]), gates(a["Wh"]), gates(a["b"]))
    dec = Cell(gates(a["Wx2"]), gates(a["Wh2"]), gates(a["b2"]), stateful=True)
    Head = book.TimeAffine if flavour == "book" else TimeAffine
    return S2S(
        Emb(dev(a["E"])),
        enc,
        Emb(dev(a["E2"])),
        dec,
        Head(dev(a["W_out"]), dev(a["b_out"])),
        Loss(),
    )


def batches():
    r = np.random.default_rng(7)
    return [(r.integers(0, V, (N, T)), r.integers(0, V, (N, T))) for _ in range(ITERS)]


@pytest.mark.parametrize(
    "kind,cell",
    [
        ("rnnlm", "lstm"),
        ("rnnlm", "gru"),
        ("rnnlm", "rnn"),
        ("seq2seq", "lstm"),
        ("seq2seq", "gru"),
    ],
)
def test_the_books_loop_gives_npgateds_parameters(xp_name, dev, kind, cell):
    book_model = build(kind, cell, "book", dev)
    own_model = build(kind, cell, "npgated", dev)
    optimizer = SGD(LR)
    norms = []
    for xs, ts in batches():
        loss_b = book_iteration(book_model, dev(xs), dev(ts))
        loss_n, norm = npgated_iteration(own_model, dev(xs), dev(ts), optimizer)
        norms.append(norm)
        assert loss_b == pytest.approx(loss_n, rel=1e-12)
    clipped = sum(n > MAX_NORM for n in norms)
    assert clipped > 0, f"clipping never active: norms {norms}"

    book_params, _ = remove_duplicate(book_model.params, book_model.grads)
    own_params, _ = own_model.unique()
    assert len(book_params) == len(own_params)
    start = host_arrays(cell)
    for k, (pb, pn) in enumerate(zip(book_params, own_params)):
        pb, pn = backend.to_cpu(pb), backend.to_cpu(pn)
        if pb.shape[-1] == GATES[cell] * D and cell != "rnn":
            pb = to_npgated(cell, pb)
        np.testing.assert_allclose(
            pb,
            pn,
            rtol=1e-10,
            atol=1e-12,
            err_msg=f"{kind}/{cell}: parameter {k} after {ITERS} iterations",
        )
    moved = np.abs(backend.to_cpu(book_params[0]) - start["E"]).max()
    assert moved > 1e-3, "the loop did not train"


def test_npgateds_own_layers_in_the_books_loop_train_on_a_running_sum():
    """Why npgated.book exists: npgated's own (accumulating) layers in the book's loop do not
    give npgated's parameters (their gradients are the sum of every iteration's so far)."""

    def ident(x):
        return np.asarray(x, dtype=np.float64)

    wrong = build("seq2seq", "rnn", "npgated", ident)  # untied: only the sums differ
    right = build("seq2seq", "rnn", "npgated", ident)
    optimizer = SGD(LR)
    for xs, ts in batches():
        book_iteration(wrong, xs, ts)  # no zero_grads
        npgated_iteration(right, xs, ts, optimizer)
    assert not np.allclose(wrong.unique()[0][0], right.unique()[0][0], rtol=1e-3)
