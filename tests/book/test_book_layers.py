"""Tests of npgated/book/{layers,time_layers,attention_layer}.py: the book-facing layers.

Each layer is checked against three things: the book's equations written here in plain NumPy
(its gate order f, g, i, o; its GRU's ``h = (1 - z) * h_prev + z * h~``), npgated's own layer
on the gate-permuted arrays (forward, input and state gradients, and the parameter gradients
permuted back), and finite differences of its own ``backward`` in the book's layout. Then the
book's semantics: ``grads`` are overwritten by each backward, ``params`` are the arrays given
(an in-place update reaches the next forward), and the book's state rules.
"""

from __future__ import annotations

import numpy as np
import pytest

from npgated import backend, gradcheck
from npgated.book import attention_layer as book_attention
from npgated.book import layers as book_layers
from npgated.book import time_layers as book
from npgated.interop.book import gates_from_book
from npgated.layers import attention, bidirectional, dropout, gru, loss, lstm, rnn
from npgated.layers.affine import TimeAffine
from npgated.layers.embedding import TimeEmbedding

N, T, D, H, V = 3, 4, 5, 6, 7
EXACT = 1e-12  # the same arithmetic on permuted arrays: equal up to summation order
GRADCHECK = 1e-7
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


# -- helpers ----------------------------------------------------------------------------------
def cpu(a):
    return backend.to_cpu(a)


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def host_params(cell, seed=0, D=D, H=H):
    """The book's Wx (D, kH), Wh (H, kH), b (kH,), float64."""
    r = np.random.default_rng(seed)
    k = GATES[cell]
    return (
        r.standard_normal((D, k * H)) * 0.5,
        r.standard_normal((H, k * H)) * 0.5,
        r.standard_normal(k * H) * 0.3,
    )


def host_data(seed=1):
    r = np.random.default_rng(seed)
    return (
        r.standard_normal((N, T, D)),
        r.standard_normal((N, H)),
        r.standard_normal((N, H)),
        r.standard_normal((N, T, H)),
    )


def to_npgated(cell, a):
    """The book's layout -> npgated's, written independently of npgated.book's GateMap:
    LSTM through npgated.interop.book (the weight importer); GRU [z | r | h~] -> [r | -z | h~]."""
    a = cpu(a)
    if cell == "lstm":
        return gates_from_book(a)
    if cell == "gru":
        z, r, n = np.split(a, 3, axis=-1)
        return np.concatenate([r, -z, n], axis=-1)
    return a.copy()


def to_book(cell, a):
    """The inverse of :func:`to_npgated` on a gradient (the map is a signed permutation)."""
    a = cpu(a)
    if cell == "lstm":
        i, f, g, o = np.split(a, 4, axis=-1)
        return np.concatenate([f, g, i, o], axis=-1)
    if cell == "gru":
        r, z, n = np.split(a, 3, axis=-1)
        return np.concatenate([-z, r, n], axis=-1)
    return a.copy()


def book_step(cell, x, h, c, Wx, Wh, b):
    """One step of the book's cell, from its equations (host float64)."""
    Hh = Wh.shape[0]
    if cell == "rnn":
        return np.tanh(x @ Wx + h @ Wh + b), None
    if cell == "lstm":
        a = x @ Wx + h @ Wh + b
        f, g = sigmoid(a[:, :Hh]), np.tanh(a[:, Hh : 2 * Hh])
        i, o = sigmoid(a[:, 2 * Hh : 3 * Hh]), sigmoid(a[:, 3 * Hh :])
        c = f * c + g * i
        return o * np.tanh(c), c
    blocks = [slice(k * Hh, (k + 1) * Hh) for k in range(3)]  # z, r, h~
    z = sigmoid(x @ Wx[:, blocks[0]] + h @ Wh[:, blocks[0]] + b[blocks[0]])
    r = sigmoid(x @ Wx[:, blocks[1]] + h @ Wh[:, blocks[1]] + b[blocks[1]])
    h_hat = np.tanh(x @ Wx[:, blocks[2]] + (r * h) @ Wh[:, blocks[2]] + b[blocks[2]])
    return (1 - z) * h + z * h_hat, None


def book_time_forward(cell, xs, h0, c0, params):
    h, c = h0, c0
    hs = np.empty((xs.shape[0], xs.shape[1], params[1].shape[0]))
    for t in range(xs.shape[1]):
        h, c = book_step(cell, xs[:, t], h, c, *params)
        hs[:, t] = h
    return hs, h, c


BOOK_TIME = {"rnn": book.TimeRNN, "lstm": book.TimeLSTM, "gru": book.TimeGRU}
NPG_TIME = {"rnn": rnn.TimeRNN, "lstm": lstm.TimeLSTM, "gru": gru.TimeGRU}
BOOK_STEP = {"rnn": book.RNN, "lstm": book.LSTM, "gru": book.GRU}
NPG_STEP = {"rnn": rnn.RNN, "lstm": lstm.LSTM, "gru": gru.GRU}


def assert_close(a, b, what, tol=EXACT):
    a, b = cpu(a), cpu(b)
    err = np.abs(a - b).max() / max(1e-30, np.abs(b).max())
    assert err <= tol, f"{what}: max relative difference {err:.1e}"


# -- recurrent layers: the book's equations, npgated's numbers, finite differences ------------
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_time_layer_is_the_books_math_computed_by_npgated(xp_name, dev, cell):
    params = host_params(cell)
    xs, h0, c0, dhs = host_data()
    has_c = cell == "lstm"
    layer = BOOK_TIME[cell](*(dev(p) for p in params), stateful=True)
    layer.set_state(dev(h0), dev(c0)) if has_c else layer.set_state(dev(h0))
    hs = layer.forward(dev(xs))
    dxs = layer.backward(dev(dhs))

    want_hs, want_h, want_c = book_time_forward(cell, xs, h0, c0 if has_c else None, params)
    assert_close(hs, want_hs, f"{cell} hs vs the book's equations", 1e-12)
    assert_close(layer.h, want_h, f"{cell} h_T vs the book's equations", 1e-12)

    ref = NPG_TIME[cell](*(dev(to_npgated(cell, p)) for p in params))
    ref.set_state(dev(h0), dev(c0)) if has_c else ref.set_state(dev(h0))
    assert_close(hs, ref.forward(dev(xs)), f"{cell} hs vs npgated's layer")
    assert_close(dxs, ref.backward(dev(dhs)), f"{cell} dxs")
    assert_close(layer.dh, ref.dh, f"{cell} dh")
    if has_c:
        assert_close(layer.c, want_c, "lstm c_T vs the book's equations", 1e-12)
        assert_close(layer.dc, ref.dc, "lstm dc")
    for name, g, g_ref in zip(("Wx", "Wh", "b"), layer.grads, ref.grads):
        assert_close(g, to_book(cell, g_ref), f"{cell} d{name} (npgated's, permuted back)")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_step_layer_is_the_books_math_computed_by_npgated(xp_name, dev, cell):
    params = host_params(cell, seed=2)
    xs, h0, c0, dhs = host_data(seed=3)
    x, dh = xs[:, 0], dhs[:, 0]
    layer = BOOK_STEP[cell](*(dev(p) for p in params))
    ref = NPG_STEP[cell](*(dev(to_npgated(cell, p)) for p in params))
    want_h, want_c = book_step(cell, x, h0, c0, *params)
    if cell == "lstm":
        h, c = layer.forward(dev(x), dev(h0), dev(c0))
        assert_close(c, want_c, "LSTM c_next vs the book's equations", 1e-12)
        out = layer.backward(dev(dh), 0)  # the book's TimeLSTM passes dc = 0 at first
        ref.forward(dev(x), dev(h0), dev(c0))
        want = ref.backward(dev(dh), dev(np.zeros_like(h0)))
    else:
        h = layer.forward(dev(x), dev(h0))
        out = layer.backward(dev(dh))
        ref.forward(dev(x), dev(h0))
        want = ref.backward(dev(dh))
    assert_close(h, want_h, f"{cell} step h_next vs the book's equations", 1e-12)
    for k, (a, b) in enumerate(zip(out, want)):
        assert_close(a, b, f"{cell} step backward output {k}")
    for name, g, g_ref in zip(("Wx", "Wh", "b"), layer.grads, ref.grads):
        assert_close(g, to_book(cell, g_ref), f"{cell} step d{name}")


@pytest.mark.parametrize(
    "cell,wrt",
    [(c, w) for c in ("rnn", "lstm", "gru") for w in ("xs", "Wx", "Wh", "b", "h0")]
    + [("lstm", "c0")],
)
def test_time_layer_gradcheck_in_the_books_layout(cell, wrt):
    params = host_params(cell, seed=4)
    xs, h0, c0, _ = host_data(seed=5)
    layer = BOOK_TIME[cell](*params, stateful=True)
    state = {"h": h0, "c": c0} if cell == "lstm" else {"h": h0}
    res = gradcheck.check_layer(layer, (xs,), wrt=wrt, state=state, seed=0)
    assert res.ok(GRADCHECK), f"book {cell} d{wrt}: {res}"


# -- the book's semantics --------------------------------------------------------------------
def _factories(cell):
    """(build on given arrays, forward+backward with a seed) for every parameterised layer."""

    def run_time(layer, seed):
        xs, _, _, dhs = host_data(seed)
        layer.forward(xs)
        layer.backward(dhs)

    return {
        "rnn": lambda: BOOK_TIME["rnn"](*host_params("rnn")),
        "lstm": lambda: BOOK_TIME["lstm"](*host_params("lstm")),
        "gru": lambda: BOOK_TIME["gru"](*host_params("gru")),
    }[cell], run_time


def _embedding_run(layer, seed):
    r = np.random.default_rng(seed)
    layer.forward(r.integers(0, V, (N, T)))
    layer.backward(r.standard_normal((N, T, D)))


def _affine_run(layer, seed):
    r = np.random.default_rng(seed)
    layer.forward(r.standard_normal((N, T, D)))
    layer.backward(r.standard_normal((N, T, V)))


def _affine2_run(layer, seed):
    r = np.random.default_rng(seed)
    layer.forward(r.standard_normal((N, D)))
    layer.backward(r.standard_normal((N, V)))


def _embedding2_run(layer, seed):
    r = np.random.default_rng(seed)
    layer.forward(r.integers(0, V, N))
    layer.backward(r.standard_normal((N, D)))


def _lstm_step_run(layer, seed):
    xs, h0, c0, dhs = host_data(seed)
    layer.forward(xs[:, 0], h0, c0)
    layer.backward(dhs[:, 0], dhs[:, 1])


_W = np.random.default_rng(9).standard_normal((V, D))
_Wa, _ba = np.random.default_rng(8).standard_normal((D, V)), np.zeros(V) + 0.1
OVERWRITE_CASES = {
    "TimeRNN": _factories("rnn"),
    "TimeLSTM": _factories("lstm"),
    "TimeGRU": _factories("gru"),
    "LSTM": (lambda: book.LSTM(*host_params("lstm")), _lstm_step_run),
    "TimeEmbedding": (lambda: book.TimeEmbedding(_W.copy()), _embedding_run),
    "Embedding": (lambda: book_layers.Embedding(_W.copy()), _embedding2_run),
    "TimeAffine": (lambda: book.TimeAffine(_Wa.copy(), _ba.copy()), _affine_run),
    "TimeAffine(E.T)": (lambda: book.TimeAffine(_W.copy().T, _ba.copy()), _affine_run),
    "Affine": (lambda: book_layers.Affine(_Wa.copy(), _ba.copy()), _affine2_run),
}


@pytest.mark.parametrize("name", list(OVERWRITE_CASES))
def test_backward_overwrites_grads(name):
    """Two backward calls leave the second call's gradients (the book's ``[...] =``), in the
    same arrays as before (the book's model collected them once), not the sum."""
    make, run = OVERWRITE_CASES[name]
    layer = make()
    buffers = list(layer.grads)
    run(layer, 11)
    first = [g.copy() for g in layer.grads]
    run(layer, 12)
    fresh = make()
    run(fresh, 12)
    assert all(a is b for a, b in zip(layer.grads, buffers)), "grads arrays replaced"
    for k, (g, want, g1) in enumerate(zip(layer.grads, fresh.grads, first)):
        np.testing.assert_allclose(g, want, rtol=1e-13, atol=1e-13, err_msg=f"{name} grads[{k}]")
        assert np.abs(g1).max() > 0 and not np.allclose(g, g1 + want), f"{name}: inconclusive"


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_params_are_the_arrays_given_and_in_place_updates_reach_forward(cell):
    params = [p.copy() for p in host_params(cell)]
    xs = host_data()[0]
    layer = BOOK_TIME[cell](*params)
    assert all(a is b for a, b in zip(layer.params, params))
    layer.forward(xs)
    for p in params:  # what the book's optimizer does between two iterations
        p *= 0.5
    moved = layer.forward(xs)
    want, _, _ = book_time_forward(cell, xs, np.zeros((N, H)), np.zeros((N, H)), params)
    assert_close(moved, want, f"{cell} after an in-place update", 1e-12)


def test_state_rules_are_the_books():
    params = host_params("lstm")
    xs, h0, c0, _ = host_data()
    zeros = np.zeros((N, H))

    def hs_from(h, c):
        return book_time_forward("lstm", xs, h, c, params)[0]

    loose = book.TimeLSTM(*params, stateful=False)
    loose.set_state(h0, c0)  # the book's non-stateful layer starts from zeros regardless
    assert_close(loose.forward(xs), hs_from(zeros, zeros), "not stateful: zeros")
    carry = book.TimeLSTM(*params, stateful=True)
    carry.set_state(h0)  # c = None: zeros
    first = carry.forward(xs)
    assert_close(first, hs_from(h0, zeros), "stateful, c None")
    h1, c1 = carry.h.copy(), carry.c.copy()
    assert_close(carry.forward(xs), hs_from(h1, c1), "stateful: carries h and c")
    carry.reset_state()
    assert carry.h is None and carry.c is None
    assert_close(carry.forward(xs), hs_from(zeros, zeros), "after reset_state")
    gru_layer = book.TimeGRU(*host_params("gru"))
    with pytest.raises(TypeError, match="no memory cell"):
        gru_layer.set_state(h0, c0)


# -- embedding, affine, loss, dropout ---------------------------------------------------------
def test_embedding_and_affine_are_npgateds(xp_name, dev):
    r = np.random.default_rng(21)
    W, ids, dout = r.standard_normal((V, D)), r.integers(0, V, (N, T)), r.standard_normal((N, T, D))
    emb, ref = book.TimeEmbedding(dev(W)), TimeEmbedding(dev(W.copy()))
    assert emb.params[0] is emb.W
    assert_close(emb.forward(dev(ids)), ref.forward(dev(ids)), "TimeEmbedding forward", 0)
    assert emb.backward(dev(dout)) is None
    ref.backward(dev(dout))
    assert_close(emb.grads[0], ref.grads[0], "TimeEmbedding dW")  # GPU atomics: any order

    b, x, dy = r.standard_normal(V), r.standard_normal((N, T, D)), r.standard_normal((N, T, V))
    ET = dev(W).T  # the book's tying: the embedding's matrix, transposed (a view)
    aff, ref = book.TimeAffine(ET, dev(b)), TimeAffine(dev(W.T.copy()), dev(b))
    assert aff.params[0] is ET
    assert_close(aff.forward(dev(x)), ref.forward(dev(x)), "TimeAffine(E.T) forward")
    assert_close(aff.backward(dev(dy)), ref.backward(dev(dy)), "TimeAffine dx")
    for k in range(2):
        assert_close(aff.grads[k], ref.grads[k], f"TimeAffine grads[{k}]")
    assert aff.grads[0].shape == (D, V)  # its own buffer, summed by the book's remove_duplicate


def test_time_softmax_with_loss(xp_name, dev):
    r = np.random.default_rng(22)
    xs, ts = r.standard_normal((N, T, V)), r.integers(0, V, (N, T))
    ts[0, 0] = -1  # the book's ignore_label
    layer = book.TimeSoftmaxWithLoss()
    assert layer.params == [] and layer.grads == [] and layer.ignore_label == -1
    value = float(layer.forward(dev(xs), dev(ts)))
    dxs = layer.backward()
    keep = (ts != -1).ravel()
    x2, t2 = xs.reshape(N * T, V), np.where(ts == -1, 0, ts).ravel()
    logp = x2 - np.log(np.exp(x2).sum(axis=1, keepdims=True))
    want = -(logp[np.arange(N * T), t2] * keep).sum() / keep.sum()
    assert value == pytest.approx(want, rel=1e-12)
    p = np.exp(logp)
    p[np.arange(N * T), t2] -= 1
    assert_close(dxs, (p * keep[:, None] / keep.sum()).reshape(N, T, V), "dxs", 1e-12)
    onehot = np.eye(V)[np.where(ts == -1, 0, ts)]
    ts_clean = np.where(ts == -1, 0, ts)
    assert float(layer.forward(dev(xs), dev(onehot))) == pytest.approx(
        float(book.TimeSoftmaxWithLoss().forward(dev(xs), dev(ts_clean))), rel=1e-12
    )


def test_softmax_with_loss_takes_one_hot_targets():
    r = np.random.default_rng(23)
    x, t = r.standard_normal((N, V)), r.integers(0, V, N)
    a, b = book_layers.SoftmaxWithLoss(), loss.SoftmaxWithLoss(ignore_label=None)
    assert float(a.forward(x, np.eye(V)[t])) == pytest.approx(float(b.forward(x, t)), rel=1e-14)
    np.testing.assert_allclose(a.backward(), b.backward(), rtol=1e-14)


def test_dropout_is_the_books_non_inverted_dropout():
    x = np.random.default_rng(24).standard_normal((50, 40)) + 3.0
    layer = book_layers.Dropout(0.3, seed=5)
    y = layer.forward(x)
    kept = y != 0
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_allclose(y[kept], x[kept], rtol=1e-14)  # no 1 / (1 - p) scaling
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), kept * 1.0, rtol=1e-14)
    np.testing.assert_allclose(layer.forward(x, train_flg=False), x * 0.7, rtol=1e-15)
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), np.full_like(x, 0.7))


def test_time_dropout_follows_train_flg(xp_name, dev):
    xs = dev(np.ones((N, T, D)))
    layer = book.TimeDropout(0.5, seed=3)
    assert layer.train_flg and layer.params == []
    ref = dropout.TimeDropout(0.5, variational=False, seed=3)
    assert_close(layer.forward(xs), ref.forward(xs), "TimeDropout mask", 0)
    layer.train_flg = False  # the book's BetterRnnlm.predict sets it so
    assert layer.forward(xs) is xs and not layer.layer.training


def test_np_is_the_active_backends_module(xp_name):
    made = book.np.zeros((2, 3), dtype=book.np.float32)
    assert backend.get_array_module(made) is backend.xp()
    assert made.dtype == np.float32 and "np" in book.__all__


def test_attention_layers_are_npgateds_and_have_no_parameters():
    for name in ("AttentionWeight", "WeightSum", "Attention", "TimeAttention"):
        cls = getattr(book_attention, name)
        assert cls is getattr(attention, name)
        assert cls().params == [] and cls().grads == []


# -- the bidirectional LSTM --------------------------------------------------------------------
def test_time_bilstm_is_the_books_math_computed_by_npgated(xp_name, dev):
    fwd, bwd = host_params("lstm", seed=31), host_params("lstm", seed=32)
    xs, _, _, _ = host_data(seed=33)
    dhs = np.random.default_rng(34).standard_normal((N, T, 2 * H))
    layer = book.TimeBiLSTM(*(dev(p) for p in fwd + bwd))
    assert layer.param_names == ("Wx1", "Wh1", "b1", "Wx2", "Wh2", "b2")
    hs = layer.forward(dev(xs))
    zeros = np.zeros((N, H))
    want_f = book_time_forward("lstm", xs, zeros, zeros, fwd)[0]
    want_b = book_time_forward("lstm", xs[:, ::-1], zeros, zeros, bwd)[0][:, ::-1]
    assert_close(
        hs,
        np.concatenate([want_f, want_b], axis=2),
        "TimeBiLSTM vs the book's equations (forward states, then backward ones by input position)",
        1e-12,
    )
    dxs = layer.backward(dev(dhs))
    ref = bidirectional.TimeBiLSTM(*(dev(to_npgated("lstm", p)) for p in fwd + bwd))
    assert_close(hs, ref.forward(dev(xs)), "TimeBiLSTM hs vs npgated's")
    assert_close(dxs, ref.backward(dev(dhs)), "TimeBiLSTM dxs")
    for name, g, g_ref in zip(layer.param_names, layer.grads, ref.grads):
        assert_close(g, to_book("lstm", g_ref), f"TimeBiLSTM d{name}")


@pytest.mark.parametrize("wrt", ["xs", "Wx1", "b1", "Wh2"])
def test_time_bilstm_gradcheck_in_the_books_layout(wrt):
    layer = book.TimeBiLSTM(*host_params("lstm", seed=35), *host_params("lstm", seed=36))
    res = gradcheck.check_layer(layer, (host_data(seed=37)[0],), wrt=wrt, seed=0)
    assert res.ok(GRADCHECK), f"book TimeBiLSTM d{wrt}: {res}"


def test_time_bilstm_overwrites_and_refuses_state():
    def make():
        return book.TimeBiLSTM(*host_params("lstm", seed=38), *host_params("lstm", seed=39))

    def run(layer, seed):
        r = np.random.default_rng(seed)
        layer.forward(r.standard_normal((N, T, D)))
        layer.backward(r.standard_normal((N, T, 2 * H)))

    layer, fresh = make(), make()
    run(layer, 1)
    run(layer, 2)
    run(fresh, 2)
    for g, want in zip(layer.grads, fresh.grads):
        np.testing.assert_allclose(g, want, rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="stateful"):
        book.TimeBiLSTM(*host_params("lstm"), *host_params("lstm"), stateful=True)
