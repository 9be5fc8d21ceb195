"""Tests of npgated/layers/attention.py: AttentionWeight, WeightSum, Attention, TimeAttention.

Float64 central-difference checks of every input (with and without masks, on every backend),
forward values against a plain-NumPy reference written here, TimeAttention against the book's
loop of one Attention per decoder step, the mask's exact zeros, and the protocol and errors.
"""

from __future__ import annotations

import numpy as np
import pytest

from npgated import backend, gradcheck
from npgated.layers.attention import (
    Attention,
    AttentionWeight,
    TimeAttention,
    WeightSum,
    masked_softmax,
)

N, T_ENC, T_DEC, H = 3, 5, 4, 6
TOL = 1e-7

# The masks used throughout: sequence 0 has 3 valid positions, 1 has all 5, 2 has 1.
LENS = np.array([3, 5, 1])
MASK = np.arange(T_ENC)[None, :] < LENS[:, None]


def host(a):
    return backend.to_cpu(a)


def check_all(forward, backward, inputs: dict, seed=0):
    """Gradient-check ``backward`` against central differences of ``forward``.

    ``forward(**inputs) -> out``; ``backward(dout) -> {name: gradient}`` for every name in
    ``inputs`` (each checked). Returns the list of GradCheckResult.
    """
    out = forward(**inputs)
    r = np.random.default_rng(seed + 1)
    dout = backend.to_device(r.standard_normal(out.shape), like=out, dtype=out.dtype)

    def loss():
        return float(host(forward(**inputs) * dout).sum())

    def analytic():
        forward(**inputs)
        return backward(dout)

    return gradcheck.check_gradients(loss, analytic, inputs, seed=seed)


def assert_ok(results, what):
    for res in results:
        assert res.ok(TOL), f"{what}: {res}"


# -- plain NumPy references (written for this test, one sequence and one query at a time) ---
def ref_attention(hs, h, valid=None):
    """(a, c) of one query h (H,) over hs (T, H), valid (T,) bool or None."""
    s = np.array([np.dot(hs[t], h) for t in range(hs.shape[0])])
    if valid is not None:
        s = np.where(valid, s, -np.inf)
    e = np.exp(s - s.max())
    a = e / e.sum()
    return a, (a[:, None] * hs).sum(axis=0)


# -- gradient checks --------------------------------------------------------------------------
MASK_KINDS = ["none", "mask", "valid_lens"]


def mask_kwargs(kind, dev):
    if kind == "mask":
        return {"mask": dev(MASK)}
    if kind == "valid_lens":
        return {"valid_lens": dev(LENS)}
    return {}


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_time_attention_gradcheck(xp_name, dev, rng, kind):
    layer = TimeAttention()
    kw = mask_kwargs(kind, dev)
    inputs = {
        "hs_enc": dev(rng.standard_normal((N, T_ENC, H))),
        "hs_dec": dev(rng.standard_normal((N, T_DEC, H))),
    }

    def backward(dout):
        dhs_enc, dhs_dec = layer.backward(dout)
        return {"hs_enc": dhs_enc, "hs_dec": dhs_dec}

    assert_ok(
        check_all(lambda **x: layer.forward(**x, **kw), backward, inputs),
        f"TimeAttention ({kind}, {xp_name})",
    )


def test_time_attention_gradcheck_per_step_mask(xp_name, dev, rng):
    """A (N, T_dec, T_enc) mask: each decoder step its own positions (here: causal-like)."""
    mask3 = np.ones((N, T_DEC, T_ENC), dtype=bool)
    for j in range(T_DEC):
        mask3[:, j, j + 1 :] = False
    layer = TimeAttention()
    inputs = {
        "hs_enc": dev(rng.standard_normal((N, T_ENC, H))),
        "hs_dec": dev(rng.standard_normal((N, T_DEC, H))),
    }

    def backward(dout):
        dhs_enc, dhs_dec = layer.backward(dout)
        return {"hs_enc": dhs_enc, "hs_dec": dhs_dec}

    assert_ok(
        check_all(lambda **x: layer.forward(**x, mask=dev(mask3)), backward, inputs),
        "TimeAttention (per-step mask)",
    )
    assert np.all(host(layer.weights)[~mask3] == 0)


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_attention_gradcheck(xp_name, dev, rng, kind):
    layer = Attention()
    kw = mask_kwargs(kind, dev)
    inputs = {"hs": dev(rng.standard_normal((N, T_ENC, H))), "h": dev(rng.standard_normal((N, H)))}

    def backward(dout):
        dhs, dh = layer.backward(dout)
        return {"hs": dhs, "h": dh}

    assert_ok(
        check_all(lambda **x: layer.forward(**x, **kw), backward, inputs), f"Attention ({kind})"
    )


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_attention_weight_gradcheck(xp_name, dev, rng, kind):
    layer = AttentionWeight()
    kw = mask_kwargs(kind, dev)
    inputs = {"hs": dev(rng.standard_normal((N, T_ENC, H))), "h": dev(rng.standard_normal((N, H)))}

    def backward(dout):
        dhs, dh = layer.backward(dout)
        return {"hs": dhs, "h": dh}

    assert_ok(
        check_all(lambda **x: layer.forward(**x, **kw), backward, inputs),
        f"AttentionWeight ({kind})",
    )


def test_weight_sum_gradcheck(xp_name, dev, rng):
    layer = WeightSum()
    inputs = {
        "hs": dev(rng.standard_normal((N, T_ENC, H))),
        "a": dev(rng.standard_normal((N, T_ENC))),
    }

    def backward(dout):
        dhs, da = layer.backward(dout)
        return {"hs": dhs, "a": da}

    assert_ok(check_all(lambda **x: layer.forward(**x), backward, inputs), "WeightSum")


# -- forward values ---------------------------------------------------------------------------
@pytest.mark.parametrize("masked", [False, True])
def test_forward_matches_numpy_reference(xp_name, dev, rng, masked):
    hs_enc = rng.standard_normal((N, T_ENC, H))
    hs_dec = rng.standard_normal((N, T_DEC, H))
    layer = TimeAttention()
    kw = {"mask": dev(MASK)} if masked else {}
    cs = host(layer.forward(dev(hs_enc), dev(hs_dec), **kw))
    for n in range(N):
        for j in range(T_DEC):
            a, c = ref_attention(hs_enc[n], hs_dec[n, j], MASK[n] if masked else None)
            np.testing.assert_allclose(host(layer.weights)[n, j], a, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(cs[n, j], c, rtol=1e-12, atol=1e-14)
    # The single-query layers on the last decoder step.
    single = Attention()
    c1 = host(single.forward(dev(hs_enc), dev(hs_dec[:, -1]), **kw))
    np.testing.assert_allclose(c1, cs[:, -1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        host(single.attention_weight), host(layer.weights)[:, -1], rtol=1e-12, atol=1e-15
    )


def test_time_attention_equals_the_books_loop(xp_name, dev, rng):
    """One Attention per decoder step (the book's TimeAttention): same contexts, weights and
    gradients (the encoder's gradient summed over the steps)."""
    hs_enc = dev(rng.standard_normal((N, T_ENC, H)))
    hs_dec = dev(rng.standard_normal((N, T_DEC, H)))
    dcs = dev(rng.standard_normal((N, T_DEC, H)))
    layer = TimeAttention()
    cs = layer.forward(hs_enc, hs_dec, valid_lens=dev(LENS))
    dhs_enc, dhs_dec = layer.backward(dcs)
    dhs_enc_loop = np.zeros((N, T_ENC, H))
    for j in range(T_DEC):
        step = Attention()
        c = step.forward(hs_enc, hs_dec[:, j], valid_lens=dev(LENS))
        np.testing.assert_allclose(host(c), host(cs)[:, j], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(
            host(layer.attention_weights[j]), host(step.attention_weight), rtol=1e-12, atol=1e-15
        )
        dhs, dh = step.backward(dcs[:, j])
        dhs_enc_loop += host(dhs)
        np.testing.assert_allclose(host(dh), host(dhs_dec)[:, j], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(host(dhs_enc), dhs_enc_loop, rtol=1e-12, atol=1e-14)


def test_attention_weights_book_layout(rng):
    """``attention_weights`` reads like the book's list of per-step (N, T_enc) arrays."""
    layer = TimeAttention()
    layer.forward(rng.standard_normal((N, T_ENC, H)), rng.standard_normal((N, T_DEC, H)))
    assert layer.weights.shape == (N, T_DEC, T_ENC)
    assert len(layer.attention_weights) == T_DEC
    steps = list(layer.attention_weights)
    assert all(w.shape == (N, T_ENC) for w in steps)
    stacked = np.array(layer.attention_weights)  # what the book's visualize_attention.py does
    assert stacked.shape == (T_DEC, N, T_ENC)
    np.testing.assert_array_equal(stacked, layer.weights.transpose(1, 0, 2))
    np.testing.assert_allclose(layer.weights.sum(axis=-1), 1.0, rtol=1e-14)


# -- masks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["mask", "valid_lens", "host_mask"])
def test_masked_positions_are_exactly_zero(xp_name, dev, rng, form):
    hs_enc = dev(rng.standard_normal((N, T_ENC, H)))
    hs_dec = dev(rng.standard_normal((N, T_DEC, H)))
    kw = {"mask": dev(MASK), "valid_lens": dev(LENS), "host_mask": None}[form]
    kw = {"mask": MASK} if form == "host_mask" else {form: kw}  # host NumPy on any backend
    layer = TimeAttention()
    cs = layer.forward(hs_enc, hs_dec, **kw)
    assert backend.get_array_module(cs) is backend.get_array_module(hs_enc)
    assert backend.get_array_module(layer.valid) is backend.get_array_module(hs_enc)
    A = host(layer.weights)
    assert np.all(A[np.broadcast_to(~MASK[:, None, :], A.shape)] == 0)
    np.testing.assert_allclose(A.sum(axis=-1), 1.0, rtol=1e-14)
    dhs_enc, _ = layer.backward(dev(rng.standard_normal((N, T_DEC, H))))
    dhs_enc = host(dhs_enc)
    assert np.all(dhs_enc[~MASK] == 0)
    assert np.all(dhs_enc[MASK] != 0)
    # The single-query layers too.
    att = Attention()
    att.forward(hs_enc, hs_dec[:, 0], **kw)
    assert np.all(host(att.attention_weight)[~MASK] == 0)
    dhs, _ = att.backward(dev(rng.standard_normal((N, H))))
    assert np.all(host(dhs)[~MASK] == 0)


def test_masked_positions_do_not_change_the_output(rng):
    """Changing an encoder state at a masked position changes nothing (numeric gradient 0)."""
    hs_enc = rng.standard_normal((N, T_ENC, H))
    hs_dec = rng.standard_normal((N, T_DEC, H))
    layer = TimeAttention()
    cs = layer.forward(hs_enc, hs_dec, mask=MASK)
    hs_enc2 = hs_enc.copy()
    hs_enc2[~MASK] += 10.0
    np.testing.assert_array_equal(layer.forward(hs_enc2, hs_dec, mask=MASK), cs)


def test_full_row_equals_unmasked(xp_name, dev, rng):
    """Sequence 1 has every position valid: its numbers equal those of the unmasked layer."""
    hs_enc = dev(rng.standard_normal((N, T_ENC, H)))
    hs_dec = dev(rng.standard_normal((N, T_DEC, H)))
    dcs = dev(rng.standard_normal((N, T_DEC, H)))
    masked, plain = TimeAttention(), TimeAttention()
    cs_m = host(masked.forward(hs_enc, hs_dec, mask=dev(MASK)))
    cs_p = host(plain.forward(hs_enc, hs_dec))
    de_m, dd_m = (host(g) for g in masked.backward(dcs))
    de_p, dd_p = (host(g) for g in plain.backward(dcs))
    for got, want in (
        (cs_m, cs_p),
        (host(masked.weights), host(plain.weights)),
        (de_m, de_p),
        (dd_m, dd_p),
    ):
        np.testing.assert_allclose(got[1], want[1], rtol=1e-14, atol=1e-15)
    # ... and a mask of all True gives the unmasked numbers everywhere.
    full = TimeAttention()
    cs_full = full.forward(hs_enc, hs_dec, mask=dev(np.ones((N, T_ENC), bool)))
    np.testing.assert_allclose(host(cs_full), cs_p, rtol=1e-14, atol=1e-15)


def test_masked_softmax_is_stable():
    s = np.array([[1e4, 1e4 - 1.0, -1e4], [0.0, 1e308, 5.0]])
    a = masked_softmax(s, np.array([[True, True, False], [True, False, True]]))
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a.sum(axis=-1), 1.0)
    assert a[0, 2] == 0 and a[1, 1] == 0


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"mask": np.array([[True] * 5, [False] * 5, [True] * 5])}, r"mask row \(1,\) has no True"),
        ({"valid_lens": np.array([3, 0, 2])}, r"valid_lens\[1\] = 0 is outside \[1, T_enc\]"),
        ({"valid_lens": np.array([3, 6, 2])}, r"valid_lens\[1\] = 6"),
        ({"valid_lens": np.array([3.0, 1.0, 2.0])}, "integer array of shape"),
        ({"mask": np.ones((N, T_ENC), dtype=np.int64)}, "boolean array"),
        ({"mask": np.ones((N, T_ENC + 1), dtype=bool)}, r"mask must have shape"),
        ({"mask": MASK, "valid_lens": LENS}, "either mask or valid_lens"),
    ],
    ids=["empty-row", "zero-length", "too-long", "float-lens", "int-mask", "mask-shape", "both"],
)
def test_mask_errors(rng, kw, match):
    hs_enc, hs_dec = rng.standard_normal((N, T_ENC, H)), rng.standard_normal((N, T_DEC, H))
    with pytest.raises(ValueError, match=match):
        TimeAttention().forward(hs_enc, hs_dec, **kw)
    with pytest.raises(ValueError, match=match):
        Attention().forward(hs_enc, hs_dec[:, 0], **kw)


def test_per_step_mask_empty_row_raises(rng):
    mask3 = np.ones((N, T_DEC, T_ENC), dtype=bool)
    mask3[2, 1] = False
    with pytest.raises(ValueError, match=r"mask row \(2, 1\) has no True"):
        TimeAttention().forward(
            rng.standard_normal((N, T_ENC, H)), rng.standard_normal((N, T_DEC, H)), mask=mask3
        )
    with pytest.raises(ValueError, match=r"mask must have shape \(N, T_enc\) ="):
        Attention().forward(
            rng.standard_normal((N, T_ENC, H)), rng.standard_normal((N, H)), mask=mask3
        )


# -- protocol, dtypes, errors -------------------------------------------------------------------
LAYERS = [AttentionWeight, WeightSum, Attention, TimeAttention]


@pytest.mark.parametrize("cls", LAYERS)
def test_protocol(cls):
    layer = cls()
    assert layer.params == [] and layer.grads == [] and layer.param_names == ()
    assert layer.named_params() == []
    assert layer.training and not layer.eval().training and layer.train().training
    layer.zero_grads()  # nothing to zero, and no error


def _inputs(cls, rng, dtype=np.float64):
    hs = rng.standard_normal((N, T_ENC, H)).astype(dtype)
    second = {
        AttentionWeight: (N, H),
        Attention: (N, H),
        TimeAttention: (N, T_DEC, H),
        WeightSum: (N, T_ENC),
    }[cls]
    return hs, rng.standard_normal(second).astype(dtype)


@pytest.mark.parametrize("cls", LAYERS)
def test_backward_before_forward_and_twice(cls, rng):
    layer = cls()
    out = layer.forward(*_inputs(cls, rng))
    with pytest.raises(RuntimeError, match="before forward"):
        cls().backward(np.ones_like(out))
    layer.backward(np.ones_like(out))
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones_like(out))


@pytest.mark.parametrize("cls", LAYERS)
def test_float32_in_float32_out(xp_name, dev, cls, rng):
    a, b = _inputs(cls, rng, np.float32)
    layer = cls()
    out = layer.forward(dev(a), dev(b))
    assert out.dtype == np.float32
    grads = layer.backward(dev(np.ones(out.shape, dtype=np.float32)))
    assert all(g.dtype == np.float32 for g in grads)
    # float32 and float64 agree to float32 precision.
    layer64 = cls()
    out64 = layer64.forward(dev(a.astype(np.float64)), dev(b.astype(np.float64)))
    np.testing.assert_allclose(host(out), host(out64), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", LAYERS)
def test_shape_and_dtype_errors(cls, rng):
    a, b = _inputs(cls, rng)
    with pytest.raises(ValueError, match="dimensions"):
        cls().forward(a[0], b)
    with pytest.raises(ValueError, match="must have"):
        cls().forward(a[:, :, :-1] if cls is not WeightSum else a[:, :-1], b)
    with pytest.raises(ValueError):  # batch size differs
        cls().forward(a[:-1], b)
    with pytest.raises(TypeError, match="dtype"):
        cls().forward(a, b.astype(np.float32))
    layer = cls()
    out = layer.forward(a, b)
    with pytest.raises(ValueError, match="shape of the forward's output"):
        layer.backward(np.ones(out.shape[:-1] + (out.shape[-1] + 1,)))


def test_host_and_device_arrays_are_not_mixed(rng):
    previous = backend.current()
    backend.use("fake-cupy")
    try:
        hs = backend.to_device(rng.standard_normal((N, T_ENC, H)))
        with pytest.raises(TypeError, match="backend"):
            TimeAttention().forward(hs, rng.standard_normal((N, T_DEC, H)))
    finally:
        backend.use(previous)
