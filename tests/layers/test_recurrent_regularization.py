"""Regularizing the recurrence: ``recurrent_dropout`` and ``weight_drop`` of the Time layers.

Checked on TimeRNN, TimeLSTM and TimeGRU (both ``reset_after`` variants):

- float64 central differences for every input, parameter and initial state, with the masks
  frozen by reseeding ``layer.rng`` before every forward;
- an explicit reference: a loop of the step functions fed with m * h_prev (the GRU's with its
  ``mask`` argument, since its carry z * h_prev stays unmasked) and Wh * M;
- the masks: one per window and the same at every step, drawn in the documented order,
  reproducible from the seed, cut to ``batch_shard``'s rows, not drawn in eval mode or at
  p = 0 (which is the plain layer, bit for bit);
- dtypes, backends (the ``dev`` fixture: numpy, the fake-cupy stand-in, cupy if present),
  validation and ``repr``.
"""

from __future__ import annotations

import numpy as np
import pytest

from npgated import backend, gradcheck
from npgated.layers.dropout import keep_mask
from npgated.layers.gru import TimeGRU, gru_step_backward, gru_step_forward
from npgated.layers.lstm import TimeLSTM, lstm_step_backward, lstm_step_forward
from npgated.layers.rnn import TimeRNN, rnn_step_backward, rnn_step_forward

N, T, D, H = 3, 4, 5, 6
TOL = 1e-6  # the task's bound for these checks (single plain layers reach ~1e-9 here)

# cell name: (class, gate blocks k, extra constructor kwargs, has a memory cell)
CELLS = {
    "rnn": (TimeRNN, 1, {}, False),
    "lstm": (TimeLSTM, 4, {}, True),
    "gru": (TimeGRU, 3, {"reset_after": False}, False),
    "gru-reset-after": (TimeGRU, 3, {"reset_after": True}, False),
}
OPTIONS = {
    "recurrent": {"recurrent_dropout": 0.4},
    "weight": {"weight_drop": 0.4},
    "both": {"recurrent_dropout": 0.4, "weight_drop": 0.3},
}


# -- helpers ------------------------------------------------------------------------------
def cpu(a):
    return None if a is None else backend.to_cpu(a)


def host_params(cell, seed=0, D=D, H=H):
    """Wx (D, kH), Wh (H, kH), b ((kH,) or (2, kH)) on the host, float64, O(1) activations."""
    _, k, kwargs, _ = CELLS[cell]
    r = np.random.default_rng(seed)
    b_shape = (2, k * H) if kwargs.get("reset_after") else (k * H,)
    return (
        r.standard_normal((D, k * H)) * 0.5,
        r.standard_normal((H, k * H)) * 0.5,
        r.standard_normal(b_shape) * 0.1,
    )


def make(cell, dev, dtype=np.float64, param_seed=0, D=D, H=H, **kwargs):
    """The cell's Time layer on the backend of ``dev``; ``kwargs`` go to the constructor."""
    cls, _, extra, _ = CELLS[cell]
    params = (dev(p, dtype) for p in host_params(cell, param_seed, D, H))
    return cls(*params, **extra, **kwargs)


def host_data(seed=1, N=N, T=T, D=D, H=H):
    """xs (N, T, D), h0 (N, H), c0 (N, H), dhs (N, T, H) on the host, float64."""
    r = np.random.default_rng(seed)
    return (
        r.standard_normal((N, T, D)),
        r.standard_normal((N, H)),
        r.standard_normal((N, H)),
        r.standard_normal((N, T, H)),
    )


def freeze(layer, seed=11):
    """A ``before_forward`` hook: the same masks at every evaluation."""

    def hook():
        layer.rng = np.random.default_rng(seed)

    return hook


def set_state(layer, cell, dev, h0, c0):
    if CELLS[cell][3]:
        layer.set_state(dev(h0), dev(c0))
    else:
        layer.set_state(dev(h0))


def run(layer, cell, dev, xs, h0, c0, dhs, seed=11):
    """Forward from (h0, c0) with frozen masks, then backward; all results on the host."""
    layer.zero_grads()
    set_state(layer, cell, dev, h0, c0)
    layer.rng = np.random.default_rng(seed)
    hs = layer.forward(dev(xs))
    dxs = layer.backward(dev(dhs))
    c = getattr(layer, "c", None)
    dc = getattr(layer, "dc", None)
    return {
        "hs": cpu(hs),
        "h": cpu(layer.h),
        "c": cpu(c),
        "dxs": cpu(dxs),
        "dh0": cpu(layer.dh),
        "dc0": cpu(dc),
        "dWx": cpu(layer.grads[0]),
        "dWh": cpu(layer.grads[1]),
        "db": cpu(layer.grads[2]),
    }


def step_reference(cell, params, xs, h0, c0, dhs, m, M):
    """The Time layer's numbers as a loop of the step functions on the host (float64).

    RNN and LSTM steps are given hm = m * h_prev and Wh_eff = Wh * M: h_prev enters them only
    through ``h_prev @ Wh``, so dL/dh_prev = m * (their dh_prev) and dL/dWh = M * (their dWh).
    The GRU's h_prev is also its carry (z * h_prev), so it gets h_prev and the mask.
    """
    Wx, Wh, b = params
    N_, T_, _ = xs.shape
    m = np.ones_like(h0) if m is None else m
    Wh_eff = Wh if M is None else Wh * M
    reset_after = CELLS[cell][2].get("reset_after", False)
    h, c, caches, hs = h0, c0, [], []
    for t in range(T_):
        x = xs[:, t]
        if cell == "rnn":
            h, cache = rnn_step_forward(x, m * h, Wx, Wh_eff, b)
        elif cell == "lstm":
            h, c, cache = lstm_step_forward(x, m * h, c, Wx, Wh_eff, b)
        else:
            h, cache = gru_step_forward(x, h, Wx, Wh_eff, b, reset_after, mask=m)
        caches.append(cache)
        hs.append(h)
    out = {"hs": np.stack(hs, axis=1), "h": h, "c": c if cell == "lstm" else None}

    dWx, dWh_eff, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)
    dh_next, dc_next = np.zeros_like(h0), np.zeros_like(h0)
    dxs = np.empty_like(xs)
    for t in reversed(range(T_)):
        dh = dhs[:, t] + dh_next
        if cell == "rnn":
            dx, dhm, gWx, gWh, gb = rnn_step_backward(dh, caches[t], Wx, Wh_eff)
            dh_next = m * dhm
        elif cell == "lstm":
            dx, dhm, dc_next, gWx, gWh, gb = lstm_step_backward(dh, dc_next, caches[t], Wx, Wh_eff)
            dh_next = m * dhm
        else:
            dx, dh_next, gWx, gWh, gb = gru_step_backward(dh, caches[t], Wx, Wh_eff)
        dxs[:, t] = dx
        dWx += gWx
        dWh_eff += gWh
        db += gb
    out.update(
        dxs=dxs,
        dh0=dh_next,
        dc0=dc_next if cell == "lstm" else None,
        dWx=dWx,
        dWh=dWh_eff if M is None else dWh_eff * M,
        db=db,
    )
    return out


# -- gradient checks ------------------------------------------------------------------------
def wrt_names(cell):
    return ["xs", "Wx", "Wh", "b", "h0"] + (["c0"] if CELLS[cell][3] else [])


GRAD_CASES = [
    pytest.param(cell, option, wrt, id=f"{cell}-{option}-{wrt}")
    for cell in CELLS
    for option in OPTIONS
    for wrt in wrt_names(cell)
]


@pytest.mark.parametrize("cell, option, wrt", GRAD_CASES)
def test_gradcheck_with_frozen_masks(dev, cell, option, wrt):
    xs, h0, c0, _ = host_data()
    layer = make(cell, dev, stateful=True, **OPTIONS[option])
    state = {"h": dev(h0), "c": dev(c0)} if CELLS[cell][3] else {"h": dev(h0)}
    r = gradcheck.check_layer(
        layer, (dev(xs),), wrt=wrt, state=state, before_forward=freeze(layer), seed=0
    )
    assert r.error <= TOL, f"{cell} {option} d{wrt}: {r.error:.1e} at {r.worst_index}"
    # The check ran with masks that drop something (else it proves nothing about them).
    m, M = layer.drop_masks
    for mask, ratio in ((m, "recurrent_dropout"), (M, "weight_drop")):
        if ratio in OPTIONS[option]:
            host = cpu(mask)
            assert (host == 0).any() and (host > 1).any()


# -- the explicit reference: a loop of step functions ------------------------------------------
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("cell", list(CELLS))
def test_time_layer_equals_loop_of_masked_steps(dev, cell, option):
    xs, h0, c0, dhs = host_data()
    layer = make(cell, dev, **OPTIONS[option])
    got = run(layer, cell, dev, xs, h0, c0, dhs)
    m, M = (cpu(a) for a in layer.drop_masks)
    want = step_reference(cell, host_params(cell), xs, h0, c0, dhs, m, M)
    for name, w in want.items():
        if w is None:
            assert got[name] is None
            continue
        np.testing.assert_allclose(got[name], w, rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("cell", list(CELLS))
def test_masks_are_the_same_at_every_step(dev, cell):
    """One window of T steps == T windows of one step, each drawing the same masks."""
    xs, h0, c0, _ = host_data()
    options = OPTIONS["both"]
    whole = make(cell, dev, stateful=True, **options)
    set_state(whole, cell, dev, h0, c0)
    whole.rng = np.random.default_rng(5)
    hs = cpu(whole.forward(dev(xs)))
    masks = [cpu(a) for a in whole.drop_masks]

    steps = make(cell, dev, stateful=True, **options)
    set_state(steps, cell, dev, h0, c0)
    for t in range(T):
        steps.rng = np.random.default_rng(5)  # the same masks as the whole window's
        h_t = cpu(steps.forward(dev(xs[:, t : t + 1])))
        for got, want in zip(steps.drop_masks, masks):
            np.testing.assert_array_equal(cpu(got), want)
        np.testing.assert_allclose(h_t[:, 0], hs[:, t], rtol=1e-13, atol=1e-14)


def test_dropped_units_are_visible_at_every_step(dev):
    """TimeRNN with Wx = 0, b = 0, Wh = I / 2: h_t = tanh(m * h_{t-1} / 2) element by element."""
    Hs = 8
    h0 = np.random.default_rng(2).uniform(0.5, 1.5, (N, Hs))
    layer = TimeRNN(
        dev(np.zeros((D, Hs))),
        dev(np.eye(Hs) / 2),
        dev(np.zeros(Hs)),
        recurrent_dropout=0.5,
        seed=3,
    )
    layer.set_state(dev(h0))
    hs = cpu(layer.forward(dev(np.ones((N, T, D)))))
    m = cpu(layer.drop_masks.recurrent)
    assert (m == 0).any() and (m == 2).any()
    h = h0
    for t in range(T):
        h = np.tanh(m * h / 2)
        np.testing.assert_allclose(hs[:, t], h, rtol=1e-14)
        assert (hs[:, t][m == 0] == 0).all() and (hs[:, t][m > 0] != 0).all()


# -- masks: drawing, order, reproducibility, sharding ----------------------------------------
@pytest.mark.parametrize("cell", list(CELLS))
def test_draw_order_and_scaling(dev, cell):
    p, q = 0.25, 0.5
    layer = make(cell, dev, recurrent_dropout=p, weight_drop=q, seed=9)
    layer.forward(dev(host_data()[0]))
    m, M = layer.drop_masks
    rng = np.random.default_rng(9)
    Wh = layer.params[1]
    want_m = keep_mask(rng, (N, H), p, Wh)  # the recurrent mask first ...
    want_M = keep_mask(rng, Wh.shape, q, Wh)  # ... then the weight mask
    np.testing.assert_array_equal(cpu(m), cpu(want_m))
    np.testing.assert_array_equal(cpu(M), cpu(want_M))
    assert set(np.unique(cpu(m))) <= {0.0, 1 / (1 - p)}
    assert set(np.unique(cpu(M))) <= {0.0, 1 / (1 - q)}
    assert m.shape == (N, H) and M.shape == tuple(Wh.shape)
    assert backend.get_array_module(m) is backend.get_array_module(Wh)


@pytest.mark.parametrize("cell", list(CELLS))
def test_same_seed_same_masks_new_window_new_masks(dev, cell):
    xs = dev(host_data()[0])
    a = make(cell, dev, **OPTIONS["both"], seed=4)
    b = make(cell, dev, **OPTIONS["both"], seed=4)
    a.forward(xs)
    b.forward(xs)
    first = [cpu(x) for x in a.drop_masks]
    for x, y in zip(first, b.drop_masks):
        np.testing.assert_array_equal(x, cpu(y))
    a.forward(xs)  # the next window draws new masks
    for x, y in zip(first, a.drop_masks):
        assert not np.array_equal(x, cpu(y))


@pytest.mark.parametrize("cell", list(CELLS))
def test_batch_shard_draws_the_global_batch_rows(dev, cell):
    n_global = 5
    xs, *_ = host_data(N=n_global)
    full = make(cell, dev, **OPTIONS["both"], seed=8)
    full.forward(dev(xs))
    shard = make(cell, dev, **OPTIONS["both"], seed=8)
    shard.batch_shard = (2, 4, n_global)
    shard.forward(dev(xs[2:4]))
    np.testing.assert_array_equal(
        cpu(shard.drop_masks.recurrent), cpu(full.drop_masks.recurrent)[2:4]
    )
    # Both generators advanced alike: the weight mask (drawn after it) is the same too.
    np.testing.assert_array_equal(cpu(shard.drop_masks.weight), cpu(full.drop_masks.weight))
    shard.batch_shard = (2, 5, n_global)  # 3 rows declared, 2 given
    with pytest.raises(ValueError, match="batch_shard"):
        shard.forward(dev(xs[2:4]))


# -- eval mode and p = 0: the plain layer ---------------------------------------------------
@pytest.mark.parametrize("cell", list(CELLS))
def test_eval_mode_drops_nothing(dev, cell):
    xs, h0, c0, _ = host_data()
    plain = make(cell, dev).eval()
    reg = make(cell, dev, **OPTIONS["both"], seed=1).eval()
    state = reg.rng.bit_generator.state
    for layer in (plain, reg):
        set_state(layer, cell, dev, h0, c0)
    np.testing.assert_array_equal(cpu(reg.forward(dev(xs))), cpu(plain.forward(dev(xs))))
    assert reg.rng.bit_generator.state == state
    assert reg.drop_masks == (None, None)


@pytest.mark.parametrize("cell", list(CELLS))
def test_zero_ratios_are_the_plain_layer(dev, cell):
    xs, h0, c0, dhs = host_data()
    plain = make(cell, dev)
    zero = make(cell, dev, recurrent_dropout=0.0, weight_drop=0.0, seed=1)
    want = run(plain, cell, dev, xs, h0, c0, dhs)
    got = run(zero, cell, dev, xs, h0, c0, dhs)
    zero.rng = np.random.default_rng(1)  # run() reseeds; check that a forward draws nothing
    state = zero.rng.bit_generator.state
    set_state(zero, cell, dev, h0, c0)
    zero.forward(dev(xs))
    assert zero.rng.bit_generator.state == state
    assert zero.drop_masks == (None, None)
    for name, w in want.items():
        if w is None:
            assert got[name] is None
        else:
            np.testing.assert_array_equal(got[name], w, err_msg=name)


# -- dtypes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", list(CELLS))
def test_float32_stays_float32_and_agrees_with_float64(dev, cell):
    xs, h0, c0, dhs = host_data()
    results = {}
    for dtype in (np.float32, np.float64):
        layer = make(cell, dev, dtype=dtype, **OPTIONS["both"])
        set_state(layer, cell, dev, h0.astype(dtype), c0.astype(dtype))
        layer.rng = np.random.default_rng(11)
        hs = layer.forward(dev(xs, dtype))
        dxs = layer.backward(dev(dhs, dtype))
        arrays = [hs, dxs, layer.dh, *layer.grads, *layer.drop_masks]
        if dtype == np.float32:
            assert all(a.dtype == np.float32 for a in arrays)
        results[dtype] = [cpu(a) for a in arrays]
    for a32, a64 in zip(results[np.float32], results[np.float64]):
        np.testing.assert_allclose(a32, a64, rtol=1e-4, atol=1e-5)


# -- validation and repr ---------------------------------------------------------------------
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"recurrent_dropout": 1.0}, ValueError, r"recurrent_dropout must be in \[0, 1\)"),
        ({"recurrent_dropout": -0.1}, ValueError, r"recurrent_dropout must be in \[0, 1\)"),
        ({"weight_drop": 1.5}, ValueError, r"weight_drop must be in \[0, 1\)"),
        ({"weight_drop": "half"}, TypeError, r"weight_drop must be a number"),
    ],
)
def test_bad_ratios(cell, kwargs, error, match):
    with pytest.raises(error, match=match):
        make(cell, lambda a, dtype=None: np.asarray(a, dtype=dtype), **kwargs)


@pytest.mark.parametrize("cell", list(CELLS))
def test_repr_names_the_options(cell):
    host = lambda a, dtype=None: np.asarray(a, dtype=dtype)  # noqa: E731
    text = repr(make(cell, host, recurrent_dropout=0.25, weight_drop=0.5))
    assert "recurrent_dropout=0.25" in text and "weight_drop=0.5" in text
    assert "dropout" not in repr(make(cell, host)) and "weight_drop" not in repr(make(cell, host))


@pytest.mark.parametrize("cell", list(CELLS))
def test_options_are_keyword_only(cell):
    cls, _, extra, _ = CELLS[cell]
    params = host_params(cell)
    with pytest.raises(TypeError):
        cls(*params, False, *extra.values(), 0.5)
