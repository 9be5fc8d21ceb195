"""Tests of npgated/layers/rnn.py: step functions, RNN, TimeRNN."""

from __future__ import annotations

import numpy as np
import pytest

from npgated import backend, gradcheck
from npgated.layers.rnn import RNN, RNNStepCache, TimeRNN, rnn_step_backward, rnn_step_forward

N, T, D, H = 3, 4, 5, 6
TOL = 1e-7


# -- helpers --------------------------------------------------------------------------------
def host_params(seed=0, D=D, H=H, scale=0.5):
    """Wx (D, H), Wh (H, H), b (H,) on the host, float64."""
    r = np.random.default_rng(seed)
    return (
        r.standard_normal((D, H)) * scale,
        r.standard_normal((H, H)) * scale,
        r.standard_normal(H) * 0.1,
    )


def host_data(seed=1, N=N, T=T, D=D, H=H):
    """xs (N, T, D), h0 (N, H), dhs (N, T, H) on the host, float64."""
    r = np.random.default_rng(seed)
    return r.standard_normal((N, T, D)), r.standard_normal((N, H)), r.standard_normal((N, T, H))


def make_time_rnn(dev, dtype=np.float64, seed=0, D=D, H=H, **kwargs):
    return TimeRNN(*(dev(p, dtype) for p in host_params(seed, D, H)), **kwargs)


def cpu(a):
    return backend.to_cpu(a)


def reference_forward(xs, h0, Wx, Wh, b):
    """Plain-NumPy RNN written from the equations."""
    h = h0
    hs = np.empty(xs.shape[:2] + (Wh.shape[0],))
    for t in range(xs.shape[1]):
        h = np.tanh(xs[:, t] @ Wx + h @ Wh + b)
        hs[:, t] = h
    return hs, h


def step_loop(layer, xs, h0, dhs):
    """TimeRNN's computation as a loop of single-step RNN layers sharing its params.

    Returns hs, h_T, dxs, dh0, [dWx, dWh, db] (summed over steps) and the norms of the total
    dh at every step (what record_grad_norms should record), all on the host.
    """
    Wx, Wh, b = layer.params
    xp = backend.get_array_module(xs)
    T_ = xs.shape[1]
    steps = [RNN(Wx, Wh, b) for _ in range(T_)]
    h, hs = h0, []
    for t, step in enumerate(steps):
        h = step.forward(xp.ascontiguousarray(xs[:, t]), h)
        hs.append(cpu(h))
    dh_prev = xp.zeros_like(h0)
    dxs = [None] * T_
    norms = np.zeros(T_)
    for t in reversed(range(T_)):
        dh = dhs[:, t] + dh_prev
        norms[t] = np.linalg.norm(cpu(dh))
        dx, dh_prev = steps[t].backward(dh)
        dxs[t] = cpu(dx)
    grads = [sum(cpu(s.grads[k]) for s in steps) for k in range(3)]
    return np.stack(hs, axis=1), cpu(h), np.stack(dxs, axis=1), cpu(dh_prev), grads, norms


# -- gradient checks: TimeRNN ---------------------------------------------------------------
SCENARIOS = {  # name: (N, T, run a first window with a stateful layer)
    "stateless": (N, T, False),
    "stateful-second-window": (N, T, True),
    "T=1": (N, 1, False),
    "N=1": (1, T, False),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("wrt", ["xs", "Wx", "Wh", "b", "h0"])
def test_time_rnn_gradcheck(dev, scenario, wrt):
    n, t, second_window = SCENARIOS[scenario]
    xs, h0, _ = host_data(N=n, T=t)
    layer = make_time_rnn(dev, stateful=second_window)
    state = None
    if second_window:
        layer.forward(dev(np.random.default_rng(7).standard_normal((n, t, D))))
        state = {"h": layer.h.copy()}
    elif wrt == "h0":
        state = {"h": dev(h0)}
    r = gradcheck.check_layer(layer, (dev(xs),), wrt=wrt, state=state, seed=0)
    assert r.error <= TOL, f"TimeRNN d{wrt} ({scenario}): {r.error:.1e} at {r.worst_index}"


# -- gradient checks: step function and single-step layer -----------------------------------
@pytest.mark.parametrize("n", [N, 1])
def test_rnn_step_gradcheck(dev, n):
    r = np.random.default_rng(3)
    layer = RNN(*(dev(p) for p in host_params()))
    x = dev(r.standard_normal((n, D)))
    h_prev = dev(r.standard_normal((n, H)))
    dh_next = dev(r.standard_normal((n, H)))
    arrays = {"x": x, "h_prev": h_prev, **dict(zip(layer.param_names, layer.params))}

    def loss():
        return float(cpu((layer.forward(x, h_prev) * dh_next).sum()))

    def analytic():
        layer.zero_grads()
        layer.forward(x, h_prev)
        dx, dh = layer.backward(dh_next)
        return {"x": dx, "h_prev": dh, **dict(zip(layer.param_names, layer.grads))}

    for res in gradcheck.check_gradients(loss, analytic, arrays):
        assert res.error <= TOL, f"RNN d{res.name}: {res.error:.1e} at {res.worst_index}"


def test_step_functions_match_layer_and_cache_is_named(dev):
    Wx, Wh, b = (dev(p) for p in host_params())
    r = np.random.default_rng(4)
    x, h, dh = (
        dev(r.standard_normal((N, D))),
        dev(r.standard_normal((N, H))),
        dev(r.standard_normal((N, H))),
    )
    h_next, cache = rnn_step_forward(x, h, Wx, Wh, b)
    assert isinstance(cache, RNNStepCache)
    assert set(cache._fields) >= {"x", "h_prev", "h_next"}
    out = rnn_step_backward(dh, cache, Wx, Wh)
    assert [tuple(a.shape) for a in out] == [(N, D), (N, H), (D, H), (H, H), (H,)]
    layer = RNN(Wx, Wh, b)
    np.testing.assert_array_equal(cpu(layer.forward(x, h)), cpu(h_next))
    dx, dh_prev = layer.backward(dh)
    for got, want in zip([dx, dh_prev, *layer.grads], out):
        np.testing.assert_allclose(cpu(got), cpu(want), rtol=0, atol=1e-15)


def test_rnn_step_accumulates(dev):
    Wx, Wh, b = (dev(p) for p in host_params())
    r = np.random.default_rng(5)
    x, h = dev(r.standard_normal((N, D))), dev(r.standard_normal((N, H)))
    layer = RNN(Wx, Wh, b)
    layer.forward(x, h)
    layer.backward(h)
    once = [cpu(g).copy() for g in layer.grads]
    layer.forward(x, h)
    layer.backward(h)
    for g, g1 in zip(layer.grads, once):
        np.testing.assert_allclose(cpu(g), 2 * g1, rtol=1e-14)


# -- TimeRNN == a loop of RNN steps; == a plain-NumPy reference; == torch ------------------
@pytest.mark.parametrize("record", [False, True])
def test_time_rnn_equals_step_loop(dev, record):
    xs, h0, dhs = (dev(a) for a in host_data())
    layer = make_time_rnn(dev)
    layer.record_grad_norms = record
    layer.set_state(h0)
    hs = layer.forward(xs)
    dxs = layer.backward(dhs)
    ref_hs, ref_h, ref_dxs, ref_dh0, ref_grads, ref_norms = step_loop(layer, xs, h0, dhs)
    close = dict(rtol=0, atol=1e-12)
    np.testing.assert_allclose(cpu(hs), ref_hs, **close)
    np.testing.assert_allclose(cpu(layer.h), ref_h, **close)
    np.testing.assert_allclose(cpu(dxs), ref_dxs, **close)
    np.testing.assert_allclose(cpu(layer.dh), ref_dh0, **close)
    for name, g, ref in zip(layer.param_names, layer.grads, ref_grads):
        np.testing.assert_allclose(cpu(g), ref, err_msg=f"d{name}", **close)
    if record:
        assert isinstance(layer.grad_norms, np.ndarray)
        assert layer.grad_norms.dtype == np.float64 and layer.grad_norms.shape == (T,)
        np.testing.assert_allclose(layer.grad_norms, ref_norms, rtol=1e-12)
    else:
        assert layer.grad_norms is None


def test_record_grad_norms_does_not_change_gradients(dev):
    xs, h0, dhs = (dev(a) for a in host_data())
    results = []
    for record in (False, True):
        layer = make_time_rnn(dev)
        layer.record_grad_norms = record
        layer.set_state(h0)
        layer.forward(xs)
        dxs = layer.backward(dhs)
        results.append([cpu(a) for a in (dxs, layer.dh, *layer.grads)])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    assert TimeRNN.record_grad_norms is False


def test_time_rnn_matches_numpy_reference(dev):
    xs, h0, _ = host_data()
    layer = make_time_rnn(dev)
    layer.set_state(dev(h0))
    hs = layer.forward(dev(xs))
    ref_hs, ref_h = reference_forward(xs, h0, *host_params())
    np.testing.assert_allclose(cpu(hs), ref_hs, rtol=0, atol=1e-13)
    np.testing.assert_allclose(cpu(layer.h), ref_h, rtol=0, atol=1e-13)


def test_time_rnn_matches_torch(dev):
    torch = pytest.importorskip("torch")
    xs, h0, dhs = host_data()
    Wx, Wh, b = host_params()
    layer = make_time_rnn(dev)
    layer.set_state(dev(h0))
    hs = layer.forward(dev(xs))
    dxs = layer.backward(dev(dhs))

    net = torch.nn.RNN(D, H, nonlinearity="tanh", batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        net.weight_ih_l0.copy_(torch.from_numpy(Wx.T.copy()))
        net.weight_hh_l0.copy_(torch.from_numpy(Wh.T.copy()))
        net.bias_ih_l0.copy_(torch.from_numpy(b))
        net.bias_hh_l0.zero_()
    x_t = torch.tensor(xs, requires_grad=True)
    h0_t = torch.tensor(h0[None], requires_grad=True)
    out, h_n = net(x_t, h0_t)
    (out * torch.from_numpy(dhs)).sum().backward()

    close = dict(rtol=0, atol=1e-10)
    np.testing.assert_allclose(cpu(hs), out.detach().numpy(), **close)
    np.testing.assert_allclose(cpu(layer.h), h_n[0].detach().numpy(), **close)
    np.testing.assert_allclose(cpu(dxs), x_t.grad.numpy(), **close)
    np.testing.assert_allclose(cpu(layer.dh), h0_t.grad[0].numpy(), **close)
    dWx, dWh, db = (cpu(g) for g in layer.grads)
    np.testing.assert_allclose(dWx, net.weight_ih_l0.grad.numpy().T, **close)
    np.testing.assert_allclose(dWh, net.weight_hh_l0.grad.numpy().T, **close)
    np.testing.assert_allclose(db, net.bias_ih_l0.grad.numpy(), **close)


# -- dtypes ---------------------------------------------------------------------------------
def test_float32_stays_float32(dev):
    xs, h0, dhs = host_data()
    layer = make_time_rnn(dev, dtype=np.float32)
    layer.set_state(dev(h0, np.float32))
    hs = layer.forward(dev(xs, np.float32))
    dxs = layer.backward(dev(dhs, np.float32))
    for name, a in [
        ("hs", hs),
        ("dxs", dxs),
        ("h", layer.h),
        ("dh", layer.dh),
        *zip(("dWx", "dWh", "db"), layer.grads),
    ]:
        assert a.dtype == np.float32, f"{name} is {a.dtype}"
    step = RNN(*layer.params)
    h = step.forward(dev(xs[:, 0], np.float32), dev(h0, np.float32))
    assert h.dtype == np.float32
    assert all(a.dtype == np.float32 for a in step.backward(h))


def test_float32_and_float64_gradients_agree(dev):
    xs, h0, dhs = host_data()
    results = {}
    for dtype in (np.float32, np.float64):
        layer = make_time_rnn(dev, dtype=dtype)
        layer.set_state(dev(h0, dtype))
        hs = layer.forward(dev(xs, dtype))
        dxs = layer.backward(dev(dhs, dtype))
        results[dtype] = [hs, dxs, layer.dh, *layer.grads]
    for name, a, b in zip(
        ["hs", "dxs", "dh", "dWx", "dWh", "db"], results[np.float32], results[np.float64]
    ):
        err = gradcheck.rel_error(a, b)
        assert err <= 1e-4, f"{name}: float32 vs float64 rel. error {err:.1e}"


# -- state and truncated BPTT -----------------------------------------------------------------
def test_state_rules(dev):
    xs, h0, _ = host_data()
    xs, h0 = dev(xs), dev(h0)
    layer = make_time_rnn(dev)  # stateless
    zero_start = cpu(layer.forward(xs))
    np.testing.assert_array_equal(cpu(layer.h), zero_start[:, -1])
    assert not hasattr(layer, "c")
    np.testing.assert_array_equal(cpu(layer.forward(xs)), zero_start)  # carried h ignored
    layer.set_state(h0)  # a given state is used, once
    ref, _ = reference_forward(cpu(xs), cpu(h0), *host_params())
    np.testing.assert_allclose(cpu(layer.forward(xs)), ref, rtol=0, atol=1e-13)
    np.testing.assert_array_equal(cpu(layer.forward(xs)), zero_start)

    stateful = make_time_rnn(dev, stateful=True)
    np.testing.assert_array_equal(cpu(stateful.forward(xs)), zero_start)
    carried = cpu(stateful.h)
    ref, _ = reference_forward(cpu(xs), carried, *host_params())
    np.testing.assert_allclose(cpu(stateful.forward(xs)), ref, rtol=0, atol=1e-13)
    stateful.reset_state()
    assert stateful.h is None
    np.testing.assert_array_equal(cpu(stateful.forward(xs)), zero_start)


def test_eval_forward_matches_training_forward(dev):
    xs = dev(host_data()[0])
    layer = make_time_rnn(dev)
    train_hs = cpu(layer.forward(xs))
    layer.eval()
    np.testing.assert_array_equal(cpu(layer.forward(xs)), train_hs)


def test_tbptt_no_gradient_crosses_window(dev):
    r = np.random.default_rng(11)
    window1, window2 = dev(r.standard_normal((N, T, D))), dev(r.standard_normal((N, T, D)))
    dhs = dev(r.standard_normal((N, T, H)))
    layer = make_time_rnn(dev, stateful=True)
    layer.forward(window1)
    carried = layer.h.copy()
    layer.zero_grads()
    layer.forward(window2)
    dxs = layer.backward(dhs)

    fresh = make_time_rnn(dev)
    fresh.set_state(carried)
    fresh.forward(window2)
    fresh_dxs = fresh.backward(dhs)
    for a, b in zip([dxs, layer.dh, *layer.grads], [fresh_dxs, fresh.dh, *fresh.grads]):
        np.testing.assert_array_equal(cpu(a), cpu(b))


def test_stateful_batch_size_change_needs_reset(dev):
    layer = make_time_rnn(dev, stateful=True)
    layer.forward(dev(np.ones((N, T, D))))
    with pytest.raises(ValueError, match="reset_state"):
        layer.forward(dev(np.ones((N + 1, T, D))))
    layer.reset_state()
    assert layer.forward(dev(np.ones((N + 1, T, D)))).shape == (N + 1, T, H)


# -- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [TimeRNN, RNN])
def test_bad_param_shapes(cls):
    Wx, Wh, b = host_params()
    with pytest.raises(ValueError, match=r"Wx must have shape \(D, H\) = \(5, 6\), got \(5, 4\)"):
        cls(Wx[:, :4], Wh, b)
    with pytest.raises(ValueError, match=r"Wh must have shape \(H, H\) = \(6, 6\), got \(6, 4\)"):
        cls(Wx, Wh[:, :4], b)
    with pytest.raises(ValueError, match=r"b must have shape \(H,\) = \(6,?\), got \(4,?\)"):
        cls(Wx, Wh, b[:4])
    with pytest.raises(TypeError, match="one float dtype"):
        cls(Wx, Wh, b.astype(np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        cls(Wx, Wh.astype(np.int32), b)


def test_bad_inputs(dev):
    layer = make_time_rnn(dev)
    with pytest.raises(TypeError, match="float32.*float64"):
        layer.forward(dev(np.ones((N, T, D)), np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        layer.forward(dev(np.ones((N, T, D), dtype=np.int64)))
    with pytest.raises(ValueError, match="3 dimensions"):
        layer.forward(dev(np.ones((T, D))))
    with pytest.raises(ValueError, match=r"D = 5"):
        layer.forward(dev(np.ones((N, T, D - 1))))
    with pytest.raises(ValueError, match=r"h must have shape \(\?, 6\)"):
        layer.set_state(dev(np.ones((N, H - 1))))
    with pytest.raises(ValueError, match="no memory cell"):
        layer.set_state(dev(np.ones((N, H))), dev(np.ones((N, H))))
    with pytest.raises(TypeError, match="dtype float32"):
        layer.set_state(dev(np.ones((N, H)), np.float32))
    layer.set_state(dev(np.ones((N + 1, H))))
    with pytest.raises(ValueError, match="batch size"):
        layer.forward(dev(np.ones((N, T, D))))
    layer.forward(dev(np.ones((N, T, D))))
    with pytest.raises(ValueError, match=r"dhs must have the shape.*\(3, 4, 6\)"):
        layer.backward(dev(np.ones((N, T, H + 1))))


def test_backward_protocol_errors(dev):
    layer = make_time_rnn(dev)
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
    step = RNN(*layer.params)
    with pytest.raises(RuntimeError, match="before forward"):
        step.backward(dev(np.ones((N, H))))
    step.forward(dev(np.ones((N, D))), dev(np.ones((N, H))))
    step.backward(dev(np.ones((N, H))))
    with pytest.raises(RuntimeError, match="twice"):
        step.backward(dev(np.ones((N, H))))


def test_step_layer_bad_inputs(dev):
    step = RNN(*(dev(p) for p in host_params()))
    with pytest.raises(ValueError, match="h_prev"):
        step.forward(dev(np.ones((N, D))), dev(np.ones((N + 1, H))))
    with pytest.raises(ValueError, match="x must have shape"):
        step.forward(dev(np.ones((N, D + 1))), dev(np.ones((N, H))))


def test_bad_upstream_gradient_keeps_the_cache(dev):
    layer = make_time_rnn(dev)
    layer.forward(dev(np.ones((N, T, D))))
    with pytest.raises(ValueError, match="dhs"):
        layer.backward(dev(np.ones((N, T + 1, H))))
    assert layer.backward(dev(np.ones((N, T, H)))).shape == (N, T, D)
    step = RNN(*layer.params)
    x, h = dev(np.ones((N, D))), dev(np.ones((N, H)))
    step.forward(x, h)
    with pytest.raises(TypeError, match="dh_next"):
        step.backward(dev(np.ones((N, H)), np.float32))
    assert step.backward(h)[0].shape == (N, D)
