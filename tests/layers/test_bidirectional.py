"""Tests of npgated/layers/bidirectional.py: TimeBidirectional, TimeBiLSTM, TimeBiGRU.

Float64 central-difference checks of the input, all six parameters and both initial states
(on every backend), forward values against a step-by-step NumPy reference written here that
runs the second direction from t = T-1 down to 0, and the protocol and errors. PyTorch parity
(``torch.nn.LSTM(bidirectional=True)``) is in tests/interop/test_torch_attention.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from npgated import backend, gradcheck
from npgated.functional import sigmoid
from npgated.layers.base import Layer
from npgated.layers.bidirectional import TimeBidirectional, TimeBiGRU, TimeBiLSTM
from npgated.layers.gru import TimeGRU
from npgated.layers.lstm import TimeLSTM
from npgated.layers.rnn import TimeRNN

N, T, D, H = 3, 4, 5, 6
TOL = 1e-7
KINDS = ["lstm", "gru", "gru_reset_after"]


def host(a):
    return backend.to_cpu(a)


def make_params(kind, rng, dtype=np.float64):
    k = 4 if kind == "lstm" else 3
    out = []
    for _ in range(2):
        b_shape = (2, 3 * H) if kind == "gru_reset_after" else (k * H,)
        out += [
            rng.standard_normal((D, k * H)) * 0.5,
            rng.standard_normal((H, k * H)) * 0.5,
            rng.standard_normal(b_shape) * 0.5,
        ]
    return [p.astype(dtype) for p in out]


def make_layer(kind, params):
    if kind == "lstm":
        return TimeBiLSTM(*params)
    return TimeBiGRU(*params, reset_after=kind == "gru_reset_after")


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_every_input_parameter_and_state(xp_name, dev, rng, kind):
    layer = make_layer(kind, [dev(p) for p in make_params(kind, rng)])
    xs = dev(rng.standard_normal((N, T, D)))
    state = {"h": dev(rng.standard_normal((2, N, H)) * 0.5)}
    if kind == "lstm":
        state["c"] = dev(rng.standard_normal((2, N, H)) * 0.5)
    wrt = ["xs", *layer.param_names, *(["h0", "c0"] if kind == "lstm" else ["h0"])]
    for res in gradcheck.check_layer(layer, (xs,), wrt=wrt, state=state, seed=0):
        assert res.ok(TOL), f"{type(layer).__name__} ({kind}, {xp_name}): {res}"


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_from_zero_state(rng, kind):
    """Without set_state both directions start from zeros (the common use)."""
    layer = make_layer(kind, make_params(kind, rng))
    for res in gradcheck.check_layer(layer, (rng.standard_normal((N, T, D)),), seed=1):
        assert res.ok(TOL), str(res)


# -- forward values against a step-by-step reference ---------------------------------------
def ref_lstm(xs, Wx, Wh, b, h, c, times):
    """hs (N, T, H) of an LSTM (gates i, f, g, o) visiting the steps in ``times`` order."""
    hs = np.zeros((xs.shape[0], xs.shape[1], Wh.shape[0]))
    for t in times:
        a = xs[:, t] @ Wx + h @ Wh + b
        i, f, g, o = np.split(a, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        hs[:, t] = h
    return hs, h, c


def ref_gru(xs, Wx, Wh, b, h, times, reset_after):
    hs = np.zeros((xs.shape[0], xs.shape[1], Wh.shape[0]))
    Hh = Wh.shape[0]
    for t in times:
        if reset_after:
            ax = xs[:, t] @ Wx + b[0]
            ah = h @ Wh + b[1]
            r = sigmoid(ax[:, :Hh] + ah[:, :Hh])
            z = sigmoid(ax[:, Hh : 2 * Hh] + ah[:, Hh : 2 * Hh])
            n = np.tanh(ax[:, 2 * Hh :] + r * ah[:, 2 * Hh :])
        else:
            ax = xs[:, t] @ Wx + b
            r = sigmoid(ax[:, :Hh] + h @ Wh[:, :Hh])
            z = sigmoid(ax[:, Hh : 2 * Hh] + h @ Wh[:, Hh : 2 * Hh])
            n = np.tanh(ax[:, 2 * Hh :] + (r * h) @ Wh[:, 2 * Hh :])
        h = z * h + (1 - z) * n
        hs[:, t] = h
    return hs, h


@pytest.mark.parametrize("kind", KINDS)
def test_forward_matches_a_step_by_step_reference(xp_name, dev, rng, kind):
    params = make_params(kind, rng)
    layer = make_layer(kind, [dev(p) for p in params])
    xs = rng.standard_normal((N, T, D))
    h0 = rng.standard_normal((2, N, H)) * 0.5
    c0 = rng.standard_normal((2, N, H)) * 0.5
    layer.set_state(dev(h0), dev(c0) if kind == "lstm" else None)
    hs = host(layer.forward(dev(xs)))
    assert hs.shape == (N, T, 2 * H)
    forward_t, backward_t = range(T), range(T - 1, -1, -1)
    if kind == "lstm":
        hs_f, hf, cf = ref_lstm(xs, *params[:3], h0[0], c0[0], forward_t)
        hs_b, hb, cb = ref_lstm(xs, *params[3:], h0[1], c0[1], backward_t)
        np.testing.assert_allclose(host(layer.c), np.stack([cf, cb]), rtol=1e-12, atol=1e-13)
    else:
        ra = kind == "gru_reset_after"
        hs_f, hf = ref_gru(xs, *params[:3], h0[0], forward_t, ra)
        hs_b, hb = ref_gru(xs, *params[3:], h0[1], backward_t, ra)
    np.testing.assert_allclose(hs[:, :, :H], hs_f, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(hs[:, :, H:], hs_b, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(host(layer.h), np.stack([hf, hb]), rtol=1e-12, atol=1e-13)


def test_general_composition_with_rnn_and_options(rng):
    """TimeBidirectional over any two Time layers; the layers keep their own options."""

    def rnn():
        return TimeRNN(
            rng.standard_normal((D, H)), rng.standard_normal((H, H)), rng.standard_normal(H)
        )

    layer = TimeBidirectional(rnn(), rnn())
    assert layer.param_names == ("Wx1", "Wh1", "b1", "Wx2", "Wh2", "b2")
    for res in gradcheck.check_layer(layer, (rng.standard_normal((N, T, D)),), seed=2):
        assert res.ok(TOL), str(res)
    # A regularized recurrence: masks frozen by reseeding each direction before every forward.
    k = 4
    fwd = TimeLSTM(
        *(rng.standard_normal(s) * 0.5 for s in ((D, k * H), (H, k * H), (k * H,))),
        recurrent_dropout=0.3,
        weight_drop=0.2,
        seed=0,
    )
    bwd = TimeLSTM(
        *(rng.standard_normal(s) * 0.5 for s in ((D, k * H), (H, k * H), (k * H,))),
        recurrent_dropout=0.3,
        weight_drop=0.2,
        seed=1,
    )
    layer = TimeBidirectional(fwd, bwd)

    def freeze():
        fwd.rng, bwd.rng = np.random.default_rng(5), np.random.default_rng(6)

    for res in gradcheck.check_layer(
        layer, (rng.standard_normal((N, T, D)),), before_forward=freeze, seed=3
    ):
        assert res.ok(TOL), str(res)


# -- protocol -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_params_are_the_arrays_given_and_grads_accumulate(rng, kind):
    params = make_params(kind, rng)
    layer = make_layer(kind, params)
    assert len(layer.params) == 6 and all(p is q for p, q in zip(layer.params, params))
    assert layer.param_names == ("Wx1", "Wh1", "b1", "Wx2", "Wh2", "b2")
    assert layer.grads[0] is layer.forward_layer.grads[0]
    assert layer.grads[3] is layer.backward_layer.grads[0]
    assert [g.shape for g in layer.grads] == [p.shape for p in params]
    # A student's in-place perturbation reaches forward.
    xs = rng.standard_normal((N, T, D))
    before = layer.forward(xs)
    params[4][0, 0] += 1.0
    assert not np.array_equal(layer.forward(xs), before)
    # Backward accumulates: two backward passes give twice the gradients of one.
    dhs = rng.standard_normal((N, T, 2 * H))
    layer.zero_grads()
    layer.forward(xs)
    layer.backward(dhs)
    once = [g.copy() for g in layer.grads]
    layer.forward(xs)
    layer.backward(dhs)
    for g, g1 in zip(layer.grads, once):
        np.testing.assert_allclose(g, 2 * g1, rtol=1e-13, atol=1e-14)
    layer.zero_grads()
    assert all(not g.any() for g in layer.grads)


def test_book_names_and_modes(rng):
    lstm = make_layer("lstm", make_params("lstm", rng))
    assert lstm.forward_lstm is lstm.forward_layer and lstm.backward_lstm is lstm.backward_layer
    gru = make_layer("gru_reset_after", make_params("gru_reset_after", rng))
    assert gru.forward_gru.reset_after and gru.backward_gru.reset_after and gru.reset_after
    lstm.eval()
    assert not lstm.forward_lstm.training and not lstm.backward_lstm.training
    out = lstm.forward(rng.standard_normal((N, T, D)))
    with pytest.raises(RuntimeError, match="eval mode"):
        lstm.backward(np.ones_like(out))
    lstm.train()
    assert lstm.forward_lstm.training and lstm.backward_lstm.training


def test_state_shapes_and_reset(rng):
    layer = make_layer("lstm", make_params("lstm", rng))
    xs = rng.standard_normal((N, T, D))
    layer.forward(xs)
    assert layer.h.shape == layer.c.shape == (2, N, H)
    np.testing.assert_array_equal(layer.h[0], layer.forward_lstm.h)
    np.testing.assert_array_equal(layer.h[1], layer.backward_lstm.h)
    layer.backward(rng.standard_normal((N, T, 2 * H)))
    assert layer.dh.shape == layer.dc.shape == (2, N, H)
    zero_start = layer.forward(xs)
    layer.set_state(rng.standard_normal((2, N, H)))
    assert not np.allclose(layer.forward(xs), zero_start)
    np.testing.assert_array_equal(layer.forward(xs), zero_start)  # a given state is used once
    layer.set_state(rng.standard_normal((2, N, H)))
    layer.reset_state()
    np.testing.assert_array_equal(layer.forward(xs), zero_start)


def test_edge_sizes(rng):
    layer = make_layer("gru", make_params("gru", rng))
    for shape in ((1, 1, D), (1, T, D), (N, 1, D)):
        xs = rng.standard_normal(shape)
        for res in gradcheck.check_layer(layer, (xs,), seed=4):
            assert res.ok(TOL), f"{shape}: {res}"


@pytest.mark.parametrize("kind", KINDS)
def test_float32_in_float32_out(xp_name, dev, rng, kind):
    params32 = make_params(kind, rng, np.float32)
    xs = rng.standard_normal((N, T, D)).astype(np.float32)
    layer = make_layer(kind, [dev(p) for p in params32])
    hs = layer.forward(dev(xs))
    assert hs.dtype == np.float32
    dxs = layer.backward(dev(np.ones(hs.shape, dtype=np.float32)))
    assert dxs.dtype == np.float32 and all(g.dtype == np.float32 for g in layer.grads)
    layer64 = make_layer(kind, [dev(p.astype(np.float64)) for p in params32])
    np.testing.assert_allclose(
        host(hs), host(layer64.forward(dev(xs.astype(np.float64)))), rtol=1e-4, atol=1e-5
    )


def test_errors(rng):
    p = make_params("lstm", rng)
    with pytest.raises(ValueError, match="stateful"):
        TimeBiLSTM(*p, stateful=True)
    with pytest.raises(ValueError, match="hidden_size"):
        TimeBiLSTM(
            *p[:3], rng.standard_normal((D, 8)), rng.standard_normal((2, 8)), rng.standard_normal(8)
        )
    with pytest.raises(ValueError, match="Wx must have shape"):
        TimeBiLSTM(p[0][:, :-1], *p[1:])
    with pytest.raises(TypeError, match="same kind"):
        g = make_params("gru", rng)
        TimeBidirectional(TimeLSTM(*p[:3]), TimeGRU(*g[3:]))
    with pytest.raises(TypeError, match="TimeRNN, TimeLSTM or TimeGRU"):
        TimeBidirectional(object(), TimeLSTM(*p[3:]))
    layer = TimeBiLSTM(*p)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((N, T, 2 * H)))
    with pytest.raises(ValueError, match=r"xs must have shape \(N, T, D\)"):
        layer.forward(rng.standard_normal((N, T, D + 1)))
    out = layer.forward(rng.standard_normal((N, T, D)))
    with pytest.raises(ValueError, match=r"dhs must have shape \(N, T, 2H\)"):
        layer.backward(np.ones((N, T, H)))
    with pytest.raises(ValueError, match="dhs"):
        layer.backward(np.ones((N, T + 1, 2 * H)))
    layer.backward(np.ones_like(out))
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones_like(out))
    with pytest.raises(ValueError, match=r"h must have 3 dimensions \(2, N, H\)"):
        layer.set_state(np.ones((N, H)))
    with pytest.raises(TypeError, match="dtype"):
        layer.forward(rng.standard_normal((N, T, D)).astype(np.float32))


def test_rebind_reaches_both_directions(rng):
    """A flat-buffer model re-points every parameter (Layer.rebind): both directions follow."""
    if not hasattr(Layer, "rebind"):
        pytest.skip("Layer.rebind is not in this tree yet")
    layer = make_layer("lstm", make_params("lstm", rng))
    xs = rng.standard_normal((N, T, D))
    before = layer.forward(xs)
    params = [p.copy() for p in layer.params]
    grads = [np.zeros_like(p) for p in params]
    layer.rebind(params, grads)
    assert all(a is b for a, b in zip(layer.params, params))
    assert layer.forward_lstm.params[0] is params[0] and layer.backward_lstm.params[0] is params[3]
    np.testing.assert_array_equal(layer.forward(xs), before)
    layer.backward(np.ones((N, T, 2 * H)))
    assert all(g.any() for g in grads)
    params[5][:] += 1.0  # the backward direction's bias, through the new array
    assert not np.array_equal(layer.forward(xs), before)
