"""How a book-facing layer wraps an npgated layer: the two adapters and the gate maps.

Every layer of :mod:`npgated.book` is one of two kinds.

:class:`Shared` -- the book and npgated agree on the parameter layout (Affine, Embedding,
RNN). The npgated layer is built on the caller's arrays themselves, so ``params`` are the
very arrays the book's model file passed in, and ``grads`` are the npgated layer's own
gradient buffers (arrays of the parameters' shapes, allocated once, as the book's layers
allocate theirs). The book's *overwrite* semantics -- after ``backward`` the gradients hold
this call's gradient only -- become "zero, then let npgated accumulate"::

    O1  grads[k][...] = 0                  before the npgated layer's backward
    O2  grads[k] += d(params[k])           npgated's backward (B-tags of its module)

:class:`Permuted` -- the book packs the gate blocks in another order (LSTM: f, g, i, o;
npgated: i, f, g, o), and for the GRU with another sign (see :data:`GRU_GATES`). The
npgated layer then runs on arrays of its own layout that the adapter owns, refreshed from
the book's arrays at every forward (the book's optimizer updates the book's arrays in
place between two forwards), and the gradients go back into the book's layout::

    P1  own[..., blocks k] = sign_k * book[..., block order_k]      every forward
    O1  own_grads[k][...] = 0                                      before backward
    O2  own_grads[k] += d(own[k])                                  npgated's backward
    P2  grads[..., block order_k] = sign_k * own_grads[..., blocks k]   overwrite

P2 is the chain rule of P1: the map is a permutation of columns times +-1 per block, so
its transpose is the inverse permutation with the same signs. P1 copies ``Wx``, ``Wh`` and
``b`` once per forward, (D + H + 1) * kH numbers, while the forward's products do N * T
times as many multiply-adds: a small part of a training step, but about as long as the
step itself in the book's one-token-at-a-time generation (N = T = 1; see ``docs/book.md``).
Computing on the book's arrays directly would need a gate-order option in npgated's layers.

Nothing here keeps global state; the array module is taken from the arrays.
"""

from __future__ import annotations

from typing import NamedTuple

from npgated import backend


class GateMap(NamedTuple):
    """Where npgated's gate blocks come from in the book's layout.

    Attributes
    ----------
    order : tuple of int
        ``order[k]`` is the book's block that holds npgated's block k.
    signs : tuple of int
        +1 or -1 per npgated block: the book's block enters multiplied by it.
    """

    order: tuple
    signs: tuple

    @property
    def gates(self) -> int:
        return len(self.order)

    def to_npgated(self, book, out) -> None:
        """P1: ``out`` (npgated's layout) from ``book`` (the book's), along the last axis."""
        H = book.shape[-1] // self.gates
        xp = backend.get_array_module(book)
        for k, (j, s) in enumerate(zip(self.order, self.signs)):
            src = book[..., j * H : (j + 1) * H]
            dst = out[..., k * H : (k + 1) * H]
            if s > 0:
                dst[...] = src  # P1
            else:
                xp.negative(src, out=dst)  # P1

    def to_book(self, own, out) -> None:
        """P2: ``out`` (the book's layout) from ``own`` (npgated's), along the last axis."""
        H = own.shape[-1] // self.gates
        xp = backend.get_array_module(own)
        for k, (j, s) in enumerate(zip(self.order, self.signs)):
            src = own[..., k * H : (k + 1) * H]
            dst = out[..., j * H : (j + 1) * H]
            if s > 0:
                dst[...] = src  # P2
            else:
                xp.negative(src, out=dst)  # P2


#: LSTM: the book's blocks are [f | g | i | o], npgated's [i | f | g | o]
LSTM_GATES = GateMap(order=(2, 0, 1, 3), signs=(1, 1, 1, 1))

#: GRU: the book's blocks are [z | r | h~] with h_next = (1 - z) * h_prev + z * h~, npgated's
#: are [r | z | n] with h_next = z * h_prev + (1 - z) * n. So npgated's z is the book's
#: 1 - z = 1 - sigma(a) = sigma(-a): its pre-activation is the book's negated, which is the
#: book's z columns (and bias) negated. r and the candidate are the same.
GRU_GATES = GateMap(order=(1, 0, 2), signs=(1, -1, 1))


def zero(arrays) -> None:
    """O1: every array set to 0 in place."""
    for a in arrays:
        a[...] = 0


def full_like_state(value, like):
    """The book's TimeLSTM passes ``dc = 0`` (a number) to its first step's backward; npgated's
    step layers want an array: a number becomes an array of ``like``'s shape and dtype."""
    if hasattr(value, "shape"):
        return value
    return backend.get_array_module(like).full_like(like, value)


class BookLayer:
    """What every book-facing layer has: ``params``, ``grads``, ``param_names``, ``zero_grads``.

    ``zero_grads`` is not needed by the book's code (its layers overwrite), but lets npgated's
    tools (``npgated.gradcheck.check_layer``) drive a book-facing layer too.
    """

    param_names: tuple = ()

    def __init__(self):
        self.params, self.grads = [], []

    def zero_grads(self) -> None:
        """Set every gradient to zero in place (the book's code never needs it)."""
        zero(self.grads)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}={tuple(p.shape)}" for n, p in zip(self.param_names, self.params))
        return f"npgated.book.{type(self).__name__}({shapes})"


class Shared(BookLayer):
    """A book-facing layer whose npgated layer ``layer`` holds the caller's very arrays.

    ``params`` is ``layer.params`` (the arrays given) and ``grads`` is ``layer.grads`` (its
    own buffers, allocated once); :meth:`_backward` zeroes them before npgated's backward
    accumulates into them (O1, O2), so they hold this call's gradient only.
    """

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.params = layer.params
        self.grads = layer.grads
        self.param_names = layer.param_names

    def _backward(self, *args):
        zero(self.grads)  # O1
        return self.layer.backward(*args)  # O2


class Permuted(BookLayer):
    """A book-facing layer whose npgated layer runs on gate-permuted copies of its arrays.

    Parameters
    ----------
    params : (Wx, Wh, b)
        The book's arrays (kept as ``params``, never copied into).
    gate_map : GateMap
    make_layer : callable ``(Wx, Wh, b) -> npgated layer``
        Builds the npgated layer on the adapter's own arrays (npgated's layout).

    Attributes
    ----------
    layer : the npgated layer
    grads : list of arrays in the book's layout, allocated once (like the book's)
    """

    param_names = ("Wx", "Wh", "b")

    def __init__(self, params, gate_map: GateMap, make_layer):
        super().__init__()
        self.params = list(params)
        self.gate_map = gate_map
        xp = backend.get_array_module(self.params[0])
        self.grads = [xp.zeros(p.shape, dtype=p.dtype) for p in self.params]
        own = [xp.empty(p.shape, dtype=p.dtype) for p in self.params]
        for src, dst in zip(self.params, own):
            gate_map.to_npgated(src, dst)  # P1 (so the layer validates real values)
        self.layer = make_layer(*own)

    def _refresh(self) -> None:
        """P1: the npgated layer's arrays from the book's current values."""
        for src, dst in zip(self.params, self.layer.params):
            self.gate_map.to_npgated(src, dst)  # P1

    def _backward(self, *args):
        zero(self.layer.grads)  # O1
        out = self.layer.backward(*args)  # O2
        for src, dst in zip(self.layer.grads, self.grads):
            self.gate_map.to_book(src, dst)  # P2 (overwrites: this call's gradient only)
        return out
