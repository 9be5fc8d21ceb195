"""The decoder's start state: ``set_state`` in, ``dh``/``dc`` out (npgated/layers/recurrent.py).

An encoder-decoder (the book's chapter 7) starts its decoder from the encoder's last state with
``decoder.set_state(h)``; after ``decoder.backward``, ``decoder.dh`` is the gradient w.r.t. that
state, and the encoder receives it as the upstream gradient of its last output. These tests
check the whole path end to end in float64 by central differences: the encoder's parameters get
their gradient only through the decoder's ``dh`` (and ``dc``).
"""

from __future__ import annotations

import numpy as np
import pytest

from npgated import backend, gradcheck
from npgated.layers.gru import TimeGRU
from npgated.layers.lstm import TimeLSTM

N, T_ENC, T_DEC, D, H = 3, 4, 3, 5, 6
TOL = 1e-6


def make(kind, rng, dev):
    k = 4 if kind == "lstm" else 3
    Wx, Wh = dev(rng.standard_normal((D, k * H)) * 0.5), dev(rng.standard_normal((H, k * H)) * 0.5)
    if kind == "lstm":
        return TimeLSTM(Wx, Wh, dev(rng.standard_normal(k * H) * 0.5))
    reset_after = kind == "gru_reset_after"
    b = dev(rng.standard_normal((2, 3 * H) if reset_after else (3 * H,)) * 0.5)
    return TimeGRU(Wx, Wh, b, reset_after=reset_after)


def encoder_decoder(kind, rng, dev, pass_c=False):
    """(loss, analytic, arrays) of L = sum(decoder(xs_dec; h0 = encoder(xs_enc)[-1]) * dout)."""
    enc, dec = make(kind, rng, dev), make(kind, rng, dev)
    xs_enc = dev(rng.standard_normal((N, T_ENC, D)))
    xs_dec = dev(rng.standard_normal((N, T_DEC, D)))
    dout = dev(rng.standard_normal((N, T_DEC, H)))

    def forward():
        enc.forward(xs_enc)
        if pass_c:
            dec.set_state(enc.h, enc.c)  # the final (h, c) of the encoder
        else:
            dec.set_state(enc.h)  # the book: h only (c starts at zero)
        return dec.forward(xs_dec)

    def loss():
        return float(backend.to_cpu(forward() * dout).sum())

    def analytic():
        for layer in (enc, dec):
            layer.zero_grads()
        forward()  # the decoder's output hs_dec; its gradient is dout
        dxs_dec = dec.backward(dout)
        xp = backend.get_array_module(dout)
        dhs_enc = xp.zeros((N, T_ENC, H), dtype=dout.dtype)
        dhs_enc[:, -1] = dec.dh  # h_T of the encoder is the decoder's initial state
        dc_enc = dec.dc if pass_c else None
        dxs_enc = enc.backward(dhs_enc, dc_last=dc_enc) if pass_c else enc.backward(dhs_enc)
        grads = {"enc.xs": dxs_enc, "dec.xs": dxs_dec}
        for name, layer in (("enc", enc), ("dec", dec)):
            for pname, g in zip(layer.param_names, layer.grads):
                grads[f"{name}.{pname}"] = g
        return grads

    arrays = {"enc.xs": xs_enc, "dec.xs": xs_dec}
    for name, layer in (("enc", enc), ("dec", dec)):
        for pname, p in zip(layer.param_names, layer.params):
            arrays[f"{name}.{pname}"] = p
    return loss, analytic, arrays, enc, dec


@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_reset_after"])
def test_encoder_gets_its_gradient_through_the_decoders_dh(xp_name, dev, rng, kind):
    loss, analytic, arrays, enc, _ = encoder_decoder(kind, rng, dev)
    results = gradcheck.check_gradients(loss, analytic, arrays, seed=0)
    for res in results:
        assert res.ok(TOL), f"{kind} encoder-decoder ({xp_name}): {res}"
    # The encoder's parameters got a gradient, and only through dh: it is not zero.
    assert all(float(abs(backend.to_cpu(g)).sum()) > 0 for g in enc.grads)


def test_encoder_gets_the_gradient_of_its_last_cell_through_dc(xp_name, dev, rng):
    """Passing (h, c): the encoder's c_T gradient is the decoder's dc, given to backward."""
    loss, analytic, arrays, _, _ = encoder_decoder("lstm", rng, dev, pass_c=True)
    for res in gradcheck.check_gradients(loss, analytic, arrays, seed=1):
        assert res.ok(TOL), f"LSTM encoder-decoder passing (h, c) ({xp_name}): {res}"


def test_dh_dc_are_the_gradients_of_the_given_state(rng):
    """Non-stateful use: the state given by set_state is the initial state of the next forward
    only, and dh/dc are the gradients w.r.t. it (checked by central differences)."""
    layer = make("lstm", rng, lambda a: a)
    assert not layer.stateful
    xs = rng.standard_normal((N, T_DEC, D))
    state = {"h": rng.standard_normal((N, H)), "c": rng.standard_normal((N, H))}
    for res in gradcheck.check_layer(layer, (xs,), wrt=["h0", "c0"], state=state, seed=2):
        assert res.ok(1e-7), str(res)
    # used once: the next forward (no set_state) starts from zeros again
    layer.set_state(state["h"], state["c"])
    from_state = layer.forward(xs)
    from_zeros = layer.forward(xs)
    layer.reset_state()
    np.testing.assert_array_equal(layer.forward(xs), from_zeros)
    assert not np.allclose(from_state, from_zeros)


def test_dc_argument_errors(rng):
    layer = make("lstm", rng, lambda a: a)
    hs = layer.forward(rng.standard_normal((N, T_DEC, D)))
    with pytest.raises(ValueError, match=r"dc_last must have shape"):
        layer.backward(np.ones_like(hs), dc_last=np.ones((N, H + 1)))
    with pytest.raises(TypeError, match="dtype"):
        layer.backward(np.ones_like(hs), dc_last=np.ones((N, H), dtype=np.float32))
    # a bad dc consumed nothing: the valid call still runs
    layer.backward(np.ones_like(hs), dc_last=np.zeros((N, H)))
