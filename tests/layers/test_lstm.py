"""Tests of npgated/layers/lstm.py: step functions, LSTM, TimeLSTM."""

from __future__ import annotations

import numpy as np
import pytest

from npgated import backend, gradcheck
from npgated.layers.lstm import (
    LSTM,
    LSTMStepCache,
    TimeLSTM,
    lstm_step_backward,
    lstm_step_forward,
)

N, T, D, H = 3, 4, 5, 6
TOL = 1e-7


# -- helpers --------------------------------------------------------------------------------
def host_params(seed=0, D=D, H=H, scale=0.5):
    """Wx (D, 4H), Wh (H, 4H), b (4H,) on the host, float64."""
    r = np.random.default_rng(seed)
    return (
        r.standard_normal((D, 4 * H)) * scale,
        r.standard_normal((H, 4 * H)) * scale,
        r.standard_normal(4 * H) * 0.1,
    )


def host_data(seed=1, N=N, T=T, D=D, H=H):
    """xs (N, T, D), h0 (N, H), c0 (N, H), dhs (N, T, H) on the host, float64."""
    r = np.random.default_rng(seed)
    return (
        r.standard_normal((N, T, D)),
        r.standard_normal((N, H)),
        r.standard_normal((N, H)),
        r.standard_normal((N, T, H)),
    )


def make_time_lstm(dev, dtype=np.float64, seed=0, D=D, H=H, **kwargs):
    return TimeLSTM(*(dev(p, dtype) for p in host_params(seed, D, H)), **kwargs)


def cpu(a):
    return backend.to_cpu(a)


def np_sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def reference_forward(xs, h0, c0, Wx, Wh, b):
    """Plain-NumPy LSTM written from the equations (gate order i, f, g, o)."""
    N_, T_, _ = xs.shape
    H_ = Wh.shape[0]
    h, c = h0, c0
    hs = np.empty((N_, T_, H_))
    for t in range(T_):
        a = xs[:, t] @ Wx + h @ Wh + b
        i = np_sigmoid(a[:, :H_])
        f = np_sigmoid(a[:, H_ : 2 * H_])
        g = np.tanh(a[:, 2 * H_ : 3 * H_])
        o = np_sigmoid(a[:, 3 * H_ :])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs[:, t] = h
    return hs, h, c


def step_loop(layer, xs, h0, c0, dhs):
    """Run TimeLSTM's computation as a loop of single-step LSTM layers sharing its params.

    Returns hs, h_T, c_T, dxs, dh0, dc0, [dWx, dWh, db] (summed over steps) and the norms
    of the total dh at every step (what record_grad_norms should record), all on the host.
    """
    Wx, Wh, b = layer.params
    xp = backend.get_array_module(xs)
    T_ = xs.shape[1]
    steps = [LSTM(Wx, Wh, b) for _ in range(T_)]
    h, c, hs = h0, c0, []
    for t, step in enumerate(steps):
        h, c = step.forward(xp.ascontiguousarray(xs[:, t]), h, c)
        hs.append(cpu(h))
    h_T, c_T = cpu(h), cpu(c)
    dh_prev = xp.zeros_like(h0)
    dc_prev = xp.zeros_like(c0)
    dxs = [None] * T_
    norms = np.zeros(T_)
    for t in reversed(range(T_)):
        dh = dhs[:, t] + dh_prev
        norms[t] = np.linalg.norm(cpu(dh))
        dx, dh_prev, dc_prev = steps[t].backward(dh, dc_prev)
        dxs[t] = cpu(dx)
    grads = [sum(cpu(s.grads[k]) for s in steps) for k in range(3)]
    return (
        np.stack(hs, axis=1),
        h_T,
        c_T,
        np.stack(dxs, axis=1),
        cpu(dh_prev),
        cpu(dc_prev),
        grads,
        norms,
    )


# -- gradient checks: TimeLSTM ------------------------------------------------------------------
SCENARIOS = {  # name: (N, T, run a first window with a stateful layer)
    "stateless": (N, T, False),
    "stateful-second-window": (N, T, True),
    "T=1": (N, 1, False),
    "N=1": (1, T, False),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("wrt", ["xs", "Wx", "Wh", "b", "h0", "c0"])
def test_time_lstm_gradcheck(dev, scenario, wrt):
    n, t, second_window = SCENARIOS[scenario]
    xs, h0, c0, _ = host_data(N=n, T=t)
    layer = make_time_lstm(dev, stateful=second_window)
    state = None
    if second_window:
        first = dev(np.random.default_rng(7).standard_normal((n, t, D)))
        layer.forward(first)  # carries (h, c) into the next window
        state = {"h": layer.h.copy(), "c": layer.c.copy()}
    elif wrt in ("h0", "c0"):
        state = {"h": dev(h0), "c": dev(c0)}
    r = gradcheck.check_layer(layer, (dev(xs),), wrt=wrt, state=state, seed=0)
    assert r.error <= TOL, f"TimeLSTM d{wrt} ({scenario}): {r.error:.1e} at {r.worst_index}"


# -- gradient checks: step function and single-step layer -----------------------------------
def check_step(dev, N_=N):
    """Finite differences through the LSTM class for x, h_prev, c_prev, Wx, Wh, b."""
    r = np.random.default_rng(3)
    layer = LSTM(*(dev(p) for p in host_params()))
    x = dev(r.standard_normal((N_, D)))
    h_prev = dev(r.standard_normal((N_, H)))
    c_prev = dev(r.standard_normal((N_, H)))
    dh_next = dev(r.standard_normal((N_, H)))
    dc_next = dev(r.standard_normal((N_, H)))
    arrays = {"x": x, "h_prev": h_prev, "c_prev": c_prev}
    arrays.update(zip(layer.param_names, layer.params))

    def loss():
        h, c = layer.forward(x, h_prev, c_prev)
        return float(cpu((h * dh_next).sum() + (c * dc_next).sum()))

    def analytic():
        layer.zero_grads()
        layer.forward(x, h_prev, c_prev)
        dx, dh, dc = layer.backward(dh_next, dc_next)
        return {"x": dx, "h_prev": dh, "c_prev": dc, **dict(zip(layer.param_names, layer.grads))}

    return gradcheck.check_gradients(loss, analytic, arrays)


@pytest.mark.parametrize("n", [N, 1])
def test_lstm_step_gradcheck(dev, n):
    for r in check_step(dev, n):
        assert r.error <= TOL, f"LSTM d{r.name}: {r.error:.1e} at {r.worst_index}"


def test_step_functions_match_layer_and_cache_is_named(dev):
    Wx, Wh, b = (dev(p) for p in host_params())
    r = np.random.default_rng(4)
    x, h, c, dh, dc = (dev(r.standard_normal(s)) for s in [(N, D)] + [(N, H)] * 4)
    h_next, c_next, cache = lstm_step_forward(x, h, c, Wx, Wh, b)
    assert isinstance(cache, LSTMStepCache)
    assert set(cache._fields) >= {"x", "h_prev", "c_prev", "i", "f", "g", "o", "tanh_c"}
    out = lstm_step_backward(dh, dc, cache, Wx, Wh)
    assert [tuple(a.shape) for a in out] == [
        (N, D),
        (N, H),
        (N, H),
        (D, 4 * H),
        (H, 4 * H),
        (4 * H,),
    ]
    layer = LSTM(Wx, Wh, b)
    h2, c2 = layer.forward(x, h, c)
    np.testing.assert_array_equal(cpu(h2), cpu(h_next))
    np.testing.assert_array_equal(cpu(c2), cpu(c_next))
    dx, dh_prev, dc_prev = layer.backward(dh, dc)
    for got, want in zip([dx, dh_prev, dc_prev, *layer.grads], [out[0], out[1], out[2], *out[3:]]):
        np.testing.assert_allclose(cpu(got), cpu(want), rtol=0, atol=1e-15)


def test_lstm_step_accumulates(dev):
    Wx, Wh, b = (dev(p) for p in host_params())
    r = np.random.default_rng(5)
    x, h, c, dh, dc = (dev(r.standard_normal(s)) for s in [(N, D)] + [(N, H)] * 4)
    layer = LSTM(Wx, Wh, b)
    layer.forward(x, h, c)
    layer.backward(dh, dc)
    once = [cpu(g).copy() for g in layer.grads]
    layer.forward(x, h, c)
    layer.backward(dh, dc)
    for g, g1 in zip(layer.grads, once):
        np.testing.assert_allclose(cpu(g), 2 * g1, rtol=1e-14)


# -- TimeLSTM == a loop of LSTM steps; == a plain-NumPy reference --------------------------
@pytest.mark.parametrize("record", [False, True])
def test_time_lstm_equals_step_loop(dev, record):
    xs, h0, c0, dhs = (dev(a) for a in host_data())
    layer = make_time_lstm(dev)
    layer.record_grad_norms = record
    layer.set_state(h0, c0)
    hs = layer.forward(xs)
    dxs = layer.backward(dhs)
    ref_hs, ref_h, ref_c, ref_dxs, ref_dh0, ref_dc0, ref_grads, ref_norms = step_loop(
        layer, xs, h0, c0, dhs
    )
    close = dict(rtol=0, atol=1e-12)
    np.testing.assert_allclose(cpu(hs), ref_hs, **close)
    np.testing.assert_allclose(cpu(layer.h), ref_h, **close)
    np.testing.assert_allclose(cpu(layer.c), ref_c, **close)
    np.testing.assert_allclose(cpu(dxs), ref_dxs, **close)
    np.testing.assert_allclose(cpu(layer.dh), ref_dh0, **close)
    np.testing.assert_allclose(cpu(layer.dc), ref_dc0, **close)
    for name, g, ref in zip(layer.param_names, layer.grads, ref_grads):
        np.testing.assert_allclose(cpu(g), ref, err_msg=f"d{name}", **close)
    if record:
        assert isinstance(layer.grad_norms, np.ndarray)
        assert layer.grad_norms.dtype == np.float64 and layer.grad_norms.shape == (T,)
        np.testing.assert_allclose(layer.grad_norms, ref_norms, rtol=1e-12)
    else:
        assert layer.grad_norms is None


def test_record_grad_norms_does_not_change_gradients(dev):
    xs, h0, c0, dhs = (dev(a) for a in host_data())
    results = []
    for record in (False, True):
        layer = make_time_lstm(dev)
        layer.record_grad_norms = record
        layer.set_state(h0, c0)
        layer.forward(xs)
        dxs = layer.backward(dhs)
        results.append([cpu(a) for a in (dxs, layer.dh, layer.dc, *layer.grads)])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    assert TimeLSTM.record_grad_norms is False


def test_time_lstm_matches_numpy_reference(dev):
    xs, h0, c0, _ = host_data()
    params = host_params()
    layer = make_time_lstm(dev)
    layer.set_state(dev(h0), dev(c0))
    hs = layer.forward(dev(xs))
    ref_hs, ref_h, ref_c = reference_forward(xs, h0, c0, *params)
    np.testing.assert_allclose(cpu(hs), ref_hs, rtol=0, atol=1e-13)
    np.testing.assert_allclose(cpu(layer.h), ref_h, rtol=0, atol=1e-13)
    np.testing.assert_allclose(cpu(layer.c), ref_c, rtol=0, atol=1e-13)


def test_time_lstm_matches_torch(dev):
    torch = pytest.importorskip("torch")
    xs, h0, c0, dhs = host_data()
    Wx, Wh, b = host_params()
    layer = make_time_lstm(dev)
    layer.set_state(dev(h0), dev(c0))
    hs = layer.forward(dev(xs))
    dxs = layer.backward(dev(dhs))

    net = torch.nn.LSTM(D, H, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        net.weight_ih_l0.copy_(torch.from_numpy(Wx.T.copy()))
        net.weight_hh_l0.copy_(torch.from_numpy(Wh.T.copy()))
        net.bias_ih_l0.copy_(torch.from_numpy(b))
        net.bias_hh_l0.zero_()
    x_t = torch.tensor(xs, requires_grad=True)
    h0_t = torch.tensor(h0[None], requires_grad=True)
    c0_t = torch.tensor(c0[None], requires_grad=True)
    out, (h_n, c_n) = net(x_t, (h0_t, c0_t))
    (out * torch.from_numpy(dhs)).sum().backward()

    close = dict(rtol=0, atol=1e-10)
    np.testing.assert_allclose(cpu(hs), out.detach().numpy(), **close)
    np.testing.assert_allclose(cpu(layer.h), h_n[0].detach().numpy(), **close)
    np.testing.assert_allclose(cpu(layer.c), c_n[0].detach().numpy(), **close)
    np.testing.assert_allclose(cpu(dxs), x_t.grad.numpy(), **close)
    np.testing.assert_allclose(cpu(layer.dh), h0_t.grad[0].numpy(), **close)
    np.testing.assert_allclose(cpu(layer.dc), c0_t.grad[0].numpy(), **close)
    dWx, dWh, db = (cpu(g) for g in layer.grads)
    np.testing.assert_allclose(dWx, net.weight_ih_l0.grad.numpy().T, **close)
    np.testing.assert_allclose(dWh, net.weight_hh_l0.grad.numpy().T, **close)
    np.testing.assert_allclose(db, net.bias_ih_l0.grad.numpy(), **close)
    np.testing.assert_allclose(db, net.bias_hh_l0.grad.numpy(), **close)


# -- dtypes ---------------------------------------------------------------------------------
def test_float32_stays_float32(dev):
    xs, h0, c0, dhs = host_data()
    layer = make_time_lstm(dev, dtype=np.float32)
    layer.set_state(dev(h0, np.float32), dev(c0, np.float32))
    hs = layer.forward(dev(xs, np.float32))
    dxs = layer.backward(dev(dhs, np.float32))
    for name, a in [
        ("hs", hs),
        ("dxs", dxs),
        ("h", layer.h),
        ("c", layer.c),
        ("dh", layer.dh),
        ("dc", layer.dc),
        *zip(("dWx", "dWh", "db"), layer.grads),
    ]:
        assert a.dtype == np.float32, f"{name} is {a.dtype}"
    step = LSTM(*layer.params)
    h, c = step.forward(dev(xs[:, 0], np.float32), dev(h0, np.float32), dev(c0, np.float32))
    assert h.dtype == c.dtype == np.float32
    assert all(a.dtype == np.float32 for a in step.backward(h, c))


def test_float32_and_float64_gradients_agree(dev):
    xs, h0, c0, dhs = host_data()
    results = {}
    for dtype in (np.float32, np.float64):
        layer = make_time_lstm(dev, dtype=dtype)
        layer.set_state(dev(h0, dtype), dev(c0, dtype))
        hs = layer.forward(dev(xs, dtype))
        dxs = layer.backward(dev(dhs, dtype))
        results[dtype] = [hs, dxs, layer.dh, layer.dc, *layer.grads]
    for name, a, b in zip(
        ["hs", "dxs", "dh", "dc", "dWx", "dWh", "db"], results[np.float32], results[np.float64]
    ):
        err = gradcheck.rel_error(a, b)
        assert err <= 1e-4, f"{name}: float32 vs float64 rel. error {err:.1e}"


# -- state and truncated BPTT -----------------------------------------------------------------
def test_state_rules(dev):
    xs, h0, c0, _ = host_data()
    xs, h0, c0 = dev(xs), dev(h0), dev(c0)
    layer = make_time_lstm(dev)  # stateless
    zero_start = cpu(layer.forward(xs))
    assert layer.h.shape == (N, H) and layer.c.shape == (N, H)
    np.testing.assert_array_equal(cpu(layer.h), zero_start[:, -1])
    # a stateless layer ignores the carried state ...
    np.testing.assert_array_equal(cpu(layer.forward(xs)), zero_start)
    # ... but uses a state given by set_state, once
    layer.set_state(h0, c0)
    given = cpu(layer.forward(xs))
    assert not np.allclose(given, zero_start)
    np.testing.assert_array_equal(cpu(layer.forward(xs)), zero_start)
    # set_state(h) without c starts the cell from zeros
    layer.set_state(h0)
    ref, _, _ = reference_forward(cpu(xs), cpu(h0), np.zeros((N, H)), *host_params())
    np.testing.assert_allclose(cpu(layer.forward(xs)), ref, rtol=0, atol=1e-13)

    stateful = make_time_lstm(dev, stateful=True)
    first = cpu(stateful.forward(xs))
    np.testing.assert_array_equal(first, zero_start)
    h_carry, c_carry = cpu(stateful.h), cpu(stateful.c)
    second = cpu(stateful.forward(xs))
    ref, _, _ = reference_forward(cpu(xs), h_carry, c_carry, *host_params())
    np.testing.assert_allclose(second, ref, rtol=0, atol=1e-13)
    stateful.reset_state()
    assert stateful.h is None and stateful.c is None
    np.testing.assert_array_equal(cpu(stateful.forward(xs)), zero_start)


def test_eval_forward_matches_training_forward(dev):
    xs = dev(host_data()[0])
    layer = make_time_lstm(dev)
    train_hs = cpu(layer.forward(xs))
    layer.eval()
    np.testing.assert_array_equal(cpu(layer.forward(xs)), train_hs)


def test_tbptt_no_gradient_crosses_window(dev):
    r = np.random.default_rng(11)
    window1, window2 = dev(r.standard_normal((N, T, D))), dev(r.standard_normal((N, T, D)))
    dhs = dev(r.standard_normal((N, T, H)))
    layer = make_time_lstm(dev, stateful=True)
    layer.forward(window1)
    carried = layer.h.copy(), layer.c.copy()
    layer.zero_grads()
    layer.forward(window2)
    dxs = layer.backward(dhs)

    fresh = make_time_lstm(dev)
    fresh.set_state(*carried)
    fresh.forward(window2)
    fresh_dxs = fresh.backward(dhs)
    for a, b in zip(
        [dxs, layer.dh, layer.dc, *layer.grads], [fresh_dxs, fresh.dh, fresh.dc, *fresh.grads]
    ):
        np.testing.assert_array_equal(cpu(a), cpu(b))


def test_stateful_batch_size_change_needs_reset(dev):
    layer = make_time_lstm(dev, stateful=True)
    layer.forward(dev(np.ones((N, T, D))))
    with pytest.raises(ValueError, match="reset_state"):
        layer.forward(dev(np.ones((N + 1, T, D))))
    layer.reset_state()
    assert layer.forward(dev(np.ones((N + 1, T, D)))).shape == (N + 1, T, H)


# -- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [TimeLSTM, LSTM])
def test_bad_param_shapes(cls):
    Wx, Wh, b = host_params()
    wx_msg = r"Wx must have shape \(D, 4H\) = \(5, 24\), got \(5, 20\)"
    with pytest.raises(ValueError, match=wx_msg):
        cls(Wx[:, :20], Wh, b)
    wh_msg = r"Wh must have shape \(H, 4H\) = \(6, 24\), got \(6, 20\)"
    with pytest.raises(ValueError, match=wh_msg):
        cls(Wx, Wh[:, :20], b)
    with pytest.raises(ValueError, match=r"b must have shape \(4H,\) = \(24,?\), got \(20,?\)"):
        cls(Wx, Wh, b[:20])
    with pytest.raises(TypeError, match="one float dtype"):
        cls(Wx.astype(np.float32), Wh, b)
    with pytest.raises(TypeError, match="floating-point"):
        cls(Wx.astype(np.int64), Wh, b)


def test_bad_inputs(dev):
    layer = make_time_lstm(dev)
    with pytest.raises(TypeError, match="float32.*float64"):
        layer.forward(dev(np.ones((N, T, D)), np.float32))
    with pytest.raises(ValueError, match="3 dimensions"):
        layer.forward(dev(np.ones((N, D))))
    with pytest.raises(ValueError, match=r"D = 5"):
        layer.forward(dev(np.ones((N, T, D + 1))))
    with pytest.raises(ValueError, match=r"h must have shape \(\?, 6\)"):
        layer.set_state(dev(np.ones((N, H + 1))))
    with pytest.raises(ValueError, match="c must have the shape of h"):
        layer.set_state(dev(np.ones((N, H))), dev(np.ones((N + 1, H))))
    with pytest.raises(TypeError, match="dtype float32"):
        layer.set_state(dev(np.ones((N, H)), np.float32))
    layer.set_state(dev(np.ones((N + 1, H))))
    with pytest.raises(ValueError, match="batch size"):
        layer.forward(dev(np.ones((N, T, D))))
    layer.forward(dev(np.ones((N, T, D))))
    with pytest.raises(ValueError, match=r"dhs must have the shape.*\(3, 4, 6\)"):
        layer.backward(dev(np.ones((N, T + 1, H))))


def test_set_state_on_another_backend(xp_name, dev):
    if xp_name == "numpy":
        pytest.skip("host arrays are the numpy backend's own")
    layer = make_time_lstm(dev)
    with pytest.raises(TypeError, match="backend"):
        layer.set_state(np.ones((N, H)))


def test_backward_protocol_errors(dev):
    layer = make_time_lstm(dev)
    dhs = dev(np.ones((N, T, H)))
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(dhs)
    layer.forward(dev(np.ones((N, T, D))))
    layer.backward(dhs)
    with pytest.raises(RuntimeError, match="twice"):
        layer.backward(dhs)
    layer.eval()
    layer.forward(dev(np.ones((N, T, D))))
    with pytest.raises(RuntimeError, match=r"train\(\)"):
        layer.backward(dhs)
    step = LSTM(*layer.params)
    with pytest.raises(RuntimeError, match="before forward"):
        step.backward(dev(np.ones((N, H))), dev(np.ones((N, H))))


def test_step_layer_bad_inputs(dev):
    step = LSTM(*(dev(p) for p in host_params()))
    x, h = dev(np.ones((N, D))), dev(np.ones((N, H)))
    with pytest.raises(ValueError, match="c_prev"):
        step.forward(x, h, dev(np.ones((N + 1, H))))
    with pytest.raises(TypeError, match="x has dtype float32"):
        step.forward(dev(np.ones((N, D)), np.float32), h, h)


def test_bad_upstream_gradient_keeps_the_cache(dev):
    layer = make_time_lstm(dev)
    layer.forward(dev(np.ones((N, T, D))))
    with pytest.raises(ValueError, match="dhs"):
        layer.backward(dev(np.ones((N, T, H + 1))))
    assert layer.backward(dev(np.ones((N, T, H)))).shape == (N, T, D)
    step = LSTM(*layer.params)
    x, h = dev(np.ones((N, D))), dev(np.ones((N, H)))
    step.forward(x, h, h)
    with pytest.raises(ValueError, match="dc_next"):
        step.backward(h, dev(np.ones((N + 1, H))))
    assert step.backward(h, h)[0].shape == (N, D)
