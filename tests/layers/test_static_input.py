"""Static inputs of the Time layers: ``forward(xs, static)`` (npgated/layers/recurrent.py F0s).

A peeky decoder reads the same vector (the encoder's h) at every step: its input at step t is
[static | xs[:, t]]. TimeLSTM and TimeGRU take that vector once and compute its part of the
input projection once. These tests hold the result to the layer run on the concatenated input
(forward, dxs, the parameters' gradients, dh/dc) and check every gradient, dstatic included,
by central differences in float64, on NumPy and fake-cupy.
"""

from __future__ import annotations

import numpy as np
import pytest

from npgated import backend, gradcheck
from npgated.layers.gru import TimeGRU
from npgated.layers.lstm import TimeLSTM

N, T, P, D2, H = 3, 4, 5, 2, 6
D = P + D2
KINDS = ["lstm", "gru", "gru_reset_after"]


def make(kind, rng, dev):
    k = 4 if kind == "lstm" else 3
    Wx = dev(rng.standard_normal((D, k * H)) * 0.5)
    Wh = dev(rng.standard_normal((H, k * H)) * 0.5)
    if kind == "lstm":
        return TimeLSTM(Wx, Wh, dev(rng.standard_normal(k * H) * 0.5))
    reset_after = kind == "gru_reset_after"
    b = dev(rng.standard_normal((2, 3 * H) if reset_after else (3 * H,)) * 0.5)
    return TimeGRU(Wx, Wh, b, reset_after=reset_after)


def twin(layer):
    """A second layer of the same kind with copies of ``layer``'s parameters."""
    params = [p.copy() for p in layer.params]
    if isinstance(layer, TimeLSTM):
        return TimeLSTM(*params)
    return TimeGRU(*params, reset_after=layer.reset_after)


@pytest.mark.parametrize("kind", KINDS)
def test_static_equals_the_concatenated_input(xp_name, dev, rng, kind):
    xp = backend.get_array_module(dev(np.zeros(1)))
    a = make(kind, rng, dev)
    b = twin(a)
    s = dev(rng.standard_normal((N, P)))
    xs = dev(rng.standard_normal((N, T, D2)))
    dhs = dev(rng.standard_normal((N, T, H)))
    h0 = dev(rng.standard_normal((N, H)))
    full = xp.concatenate((xp.broadcast_to(s[:, None, :], (N, T, P)), xs), axis=2)
    a.set_state(h0)
    b.set_state(h0)
    ha, hb = a.forward(full), b.forward(xs, s)
    np.testing.assert_allclose(backend.to_cpu(hb), backend.to_cpu(ha), rtol=1e-12, atol=1e-12)
    da, db = a.backward(dhs), b.backward(dhs)
    assert db.shape == (N, T, D2)
    assert b.dstatic.shape == (N, P)
    assert a.dstatic is None  # a forward without static leaves none
    close = dict(rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(backend.to_cpu(db), backend.to_cpu(da[..., P:]), **close)
    np.testing.assert_allclose(
        backend.to_cpu(b.dstatic), backend.to_cpu(da[..., :P].sum(axis=1)), **close
    )
    for name, ga, gb in zip(a.param_names, a.grads, b.grads):
        np.testing.assert_allclose(backend.to_cpu(gb), backend.to_cpu(ga), err_msg=name, **close)
    np.testing.assert_allclose(backend.to_cpu(b.dh), backend.to_cpu(a.dh), **close)
    if kind == "lstm":
        np.testing.assert_allclose(backend.to_cpu(b.dc), backend.to_cpu(a.dc), **close)


@pytest.mark.parametrize("kind", KINDS)
def test_static_gradients_by_central_differences(xp_name, dev, rng, kind):
    layer = make(kind, rng, dev)
    s = dev(rng.standard_normal((N, P)))
    xs = dev(rng.standard_normal((N, T, D2)))
    dout = dev(rng.standard_normal((N, T, H)))

    def loss():
        return float(backend.to_cpu(layer.forward(xs, s) * dout).sum())

    def analytic():
        layer.zero_grads()
        layer.forward(xs, s)
        dxs = layer.backward(dout)
        grads = {"xs": dxs, "static": layer.dstatic}
        grads.update(zip(layer.param_names, layer.grads))
        return grads

    arrays = {"xs": xs, "static": s, **dict(zip(layer.param_names, layer.params))}
    for res in gradcheck.check_gradients(loss, analytic, arrays, seed=0):
        assert res.ok(1e-7), f"{kind} with a static input ({xp_name}): {res}"


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_static_in_eval_mode_and_with_recurrent_masks(rng, kind):
    """Eval mode (nothing cached) and the recurrent dropout masks leave F0s as it is."""
    a = make(kind, rng, lambda x: x)
    a.eval()
    s = rng.standard_normal((N, P))
    xs = rng.standard_normal((N, T, D2))
    full = np.concatenate((np.broadcast_to(s[:, None, :], (N, T, P)), xs), axis=2)
    b = twin(a)
    b.eval()
    np.testing.assert_allclose(b.forward(xs, s), a.forward(full), rtol=1e-12, atol=1e-12)
    params = [p.copy() for p in a.params]
    cls = TimeLSTM if kind == "lstm" else TimeGRU
    c = cls(*params, recurrent_dropout=0.3, weight_drop=0.2, seed=7)
    d = cls(*[p.copy() for p in params], recurrent_dropout=0.3, weight_drop=0.2, seed=7)
    dhs = rng.standard_normal((N, T, H))
    np.testing.assert_allclose(d.forward(xs, s), c.forward(full), rtol=1e-12, atol=1e-12)
    dfull, dx = c.backward(dhs), d.backward(dhs)
    np.testing.assert_allclose(dx, dfull[..., P:], rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(d.dstatic, dfull[..., :P].sum(axis=1), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize(
    ("s_shape", "xs_shape", "message"),
    [
        ((N, P + 1), (N, T, D2), "together give the layer's D = 7"),
        ((N + 1, P), (N, T, D2), "must share N"),
        ((N, D), (N, T, 0), "0 < P < D"),
        ((N, P, 1), (N, T, D2), "static"),
    ],
)
def test_static_shapes_refused_with_the_reason(rng, s_shape, xs_shape, message):
    layer = make("lstm", rng, lambda x: x)
    with pytest.raises(ValueError, match=message):
        layer.forward(rng.standard_normal(xs_shape), rng.standard_normal(s_shape))
