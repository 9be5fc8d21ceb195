"""Tests for npgated.layers.gru: step functions, GRU, TimeGRU (both reset_after variants)."""

from __future__ import annotations

import numpy as np
import pytest

from npgated import backend, gradcheck
from npgated.layers.gru import GRU, GRUStepCache, TimeGRU, gru_step_backward, gru_step_forward

N, T, D, H = 3, 4, 5, 6
TOL = 1e-7
VARIANTS = [pytest.param(False, id="reset_before"), pytest.param(True, id="reset_after")]


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def host_params(seed, D=D, H=H, reset_after=False, dtype=np.float64, scale=0.5):
    """Host (Wx, Wh, b) with O(1) pre-activations on tiny shapes."""
    rng = np.random.default_rng(seed)
    Wx = rng.standard_normal((D, 3 * H)) * scale
    Wh = rng.standard_normal((H, 3 * H)) * scale
    b = rng.standard_normal((2, 3 * H) if reset_after else (3 * H,)) * scale
    return Wx.astype(dtype), Wh.astype(dtype), b.astype(dtype)


def host_data(seed, *shape, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def make_time(dev, seed=0, D=D, H=H, reset_after=False, dtype=np.float64, stateful=False):
    Wx, Wh, b = (dev(p) for p in host_params(seed, D, H, reset_after, dtype))
    return TimeGRU(Wx, Wh, b, stateful=stateful, reset_after=reset_after)


def cpu(a):
    return backend.to_cpu(a)


def sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def reference_forward(xs, h0, Wx, Wh, b, reset_after):
    """Plain-NumPy GRU written from the textbook equations with separate gate matrices.

    reset_after=False is d2l's (Cho et al.):  R = s(X W_xr + H W_hr + b_r),
    Z = s(X W_xz + H W_hz + b_z), H~ = tanh(X W_xh + (R * H) W_hh + b_h),
    H = Z * H + (1 - Z) * H~.  reset_after=True is PyTorch's nn.GRU formula.
    """
    Hs = h0.shape[1]
    W_xr, W_xz, W_xh = Wx[:, :Hs], Wx[:, Hs : 2 * Hs], Wx[:, 2 * Hs :]
    W_hr, W_hz, W_hh = Wh[:, :Hs], Wh[:, Hs : 2 * Hs], Wh[:, 2 * Hs :]
    h = h0
    out = []
    for t in range(xs.shape[1]):
        X = xs[:, t]
        if reset_after:
            bi, bh = b
            R = sig(X @ W_xr + bi[:Hs] + h @ W_hr + bh[:Hs])
            Z = sig(X @ W_xz + bi[Hs : 2 * Hs] + h @ W_hz + bh[Hs : 2 * Hs])
            Ht = np.tanh(X @ W_xh + bi[2 * Hs :] + R * (h @ W_hh + bh[2 * Hs :]))
        else:
            R = sig(X @ W_xr + h @ W_hr + b[:Hs])
            Z = sig(X @ W_xz + h @ W_hz + b[Hs : 2 * Hs])
            Ht = np.tanh(X @ W_xh + (R * h) @ W_hh + b[2 * Hs :])
        h = Z * h + (1 - Z) * Ht
        out.append(h)
    return np.stack(out, axis=1)


def step_loop(xs, h0, params, dhs, reset_after):
    """Run T single-step GRU layers forward and backward by hand (host or device)."""
    Tn = xs.shape[1]
    cells = [GRU(*params, reset_after=reset_after) for _ in range(Tn)]
    h = h0
    hs = []
    for t in range(Tn):
        h = cells[t].forward(xs[:, t], h)
        hs.append(cpu(h))
    xp = backend.get_array_module(xs)
    dh = xp.zeros_like(h0)
    dxs = np.zeros(xs.shape)
    norms = np.zeros(Tn)
    for t in reversed(range(Tn)):
        dh = dhs[:, t] + dh
        norms[t] = np.linalg.norm(cpu(dh))
        dx, dh = cells[t].backward(dh)
        dxs[:, t] = cpu(dx)
    grads = [sum(cpu(c.grads[i]) for c in cells) for i in range(3)]
    return np.stack(hs, axis=1), dxs, cpu(dh), grads, norms


# ---------------------------------------------------------------------------------------
# step functions and the single-step layer
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("reset_after", VARIANTS)
def test_step_functions_gradcheck(xp_name, dev, reset_after):
    Wx, Wh, b = (dev(p) for p in host_params(1, reset_after=reset_after))
    x, h_prev = dev(host_data(2, N, D)), dev(host_data(3, N, H))
    dout = dev(host_data(4, N, H))
    arrays = {"x": x, "h_prev": h_prev, "Wx": Wx, "Wh": Wh, "b": b}

    def loss():
        h_next, _ = gru_step_forward(x, h_prev, Wx, Wh, b, reset_after)
        return float(cpu(h_next * dout).sum())

    def analytic():
        _, cache = gru_step_forward(x, h_prev, Wx, Wh, b, reset_after)
        assert isinstance(cache, GRUStepCache) and cache.reset_after == reset_after
        dx, dh_prev, dWx, dWh, db = gru_step_backward(dout, cache, Wx, Wh)
        return {"x": dx, "h_prev": dh_prev, "Wx": dWx, "Wh": dWh, "b": db}

    for r in gradcheck.check_gradients(loss, analytic, arrays):
        assert r.error <= TOL, f"gru_step d{r.name}: {r.error:.1e} at {r.worst_index}"


@pytest.mark.parametrize("reset_after", VARIANTS)
def test_gru_layer_gradcheck(xp_name, dev, reset_after):
    layer = GRU(*(dev(p) for p in host_params(5, reset_after=reset_after)), reset_after=reset_after)
    x, h_prev = dev(host_data(6, N, D)), dev(host_data(7, N, H))
    dout = dev(host_data(8, N, H))
    Wx, Wh, b = layer.params
    arrays = {"x": x, "h_prev": h_prev, "Wx": Wx, "Wh": Wh, "b": b}

    def loss():
        return float(cpu(layer.forward(x, h_prev) * dout).sum())

    def analytic():
        layer.zero_grads()
        layer.forward(x, h_prev)
        dx, dh_prev = layer.backward(dout)
        return {
            "x": dx,
            "h_prev": dh_prev,
            "Wx": layer.grads[0],
            "Wh": layer.grads[1],
            "b": layer.grads[2],
        }

    for r in gradcheck.check_gradients(loss, analytic, arrays):
        assert r.error <= TOL, f"GRU d{r.name}: {r.error:.1e} at {r.worst_index}"


@pytest.mark.parametrize("reset_after", VARIANTS)
def test_gru_layer_matches_step_functions_and_accumulates(xp_name, dev, reset_after):
    params = [dev(p) for p in host_params(8, reset_after=reset_after)]
    layer = GRU(*params, reset_after=reset_after)
    x, h_prev = dev(host_data(9, N, D)), dev(host_data(10, N, H))
    dout = dev(host_data(11, N, H))
    h_next = layer.forward(x, h_prev)
    dx, dh_prev = layer.backward(dout)
    h_ref, cache = gru_step_forward(x, h_prev, *params, reset_after=reset_after)
    expected = gru_step_backward(dout, cache, params[0], params[1])
    np.testing.assert_array_equal(cpu(h_next), cpu(h_ref))
    np.testing.assert_array_equal(cpu(dx), cpu(expected[0]))
    np.testing.assert_array_equal(cpu(dh_prev), cpu(expected[1]))
    for g, g_ref in zip(layer.grads, expected[2:]):
        np.testing.assert_array_equal(cpu(g), cpu(g_ref))
    # backward accumulates into grads
    layer.forward(x, h_prev)
    layer.backward(dout)
    for g, g_ref in zip(layer.grads, expected[2:]):
        np.testing.assert_allclose(cpu(g), 2 * cpu(g_ref), rtol=1e-12, atol=1e-14)
    assert backend.get_array_module(h_next) is backend.xp()


def test_step_against_torch_grucell():
    torch = pytest.importorskip("torch")
    Wx, Wh, b = host_params(12, reset_after=True)
    x, h_prev, dout = host_data(13, N, D), host_data(14, N, H), host_data(15, N, H)
    h_next, cache = gru_step_forward(x, h_prev, Wx, Wh, b, reset_after=True)
    dx, dh_prev, dWx, dWh, db = gru_step_backward(dout, cache, Wx, Wh)

    cell = torch.nn.GRUCell(D, H).double()
    with torch.no_grad():
        cell.weight_ih.copy_(torch.from_numpy(Wx.T.copy()))
        cell.weight_hh.copy_(torch.from_numpy(Wh.T.copy()))
        cell.bias_ih.copy_(torch.from_numpy(b[0].copy()))
        cell.bias_hh.copy_(torch.from_numpy(b[1].copy()))
    xt = torch.tensor(x, requires_grad=True)
    ht = torch.tensor(h_prev, requires_grad=True)
    out = cell(xt, ht)
    (out * torch.from_numpy(dout)).sum().backward()
    close = dict(rtol=0, atol=1e-12)
    np.testing.assert_allclose(h_next, out.detach().numpy(), **close)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **close)
    np.testing.assert_allclose(dh_prev, ht.grad.numpy(), **close)
    np.testing.assert_allclose(dWx, cell.weight_ih.grad.numpy().T, **close)
    np.testing.assert_allclose(dWh, cell.weight_hh.grad.numpy().T, **close)
    np.testing.assert_allclose(db[0], cell.bias_ih.grad.numpy(), **close)
    np.testing.assert_allclose(db[1], cell.bias_hh.grad.numpy(), **close)


# ---------------------------------------------------------------------------------------
# TimeGRU gradient checks
# ---------------------------------------------------------------------------------------
WRT = ["xs", "Wx", "Wh", "b", "h0"]


@pytest.mark.parametrize("reset_after", VARIANTS)
@pytest.mark.parametrize("wrt", WRT)
def test_time_gradcheck_stateless(xp_name, dev, reset_after, wrt):
    layer = make_time(dev, 20, reset_after=reset_after)
    xs, h0 = dev(host_data(21, N, T, D)), dev(host_data(22, N, H))
    r = gradcheck.check_layer(layer, (xs,), wrt=wrt, state={"h": h0}, seed=0)
    assert r.error <= TOL, f"TimeGRU d{wrt}: {r.error:.1e} at {r.worst_index}"


@pytest.mark.parametrize("reset_after", VARIANTS)
@pytest.mark.parametrize("wrt", WRT)
def test_time_gradcheck_stateful_second_window(xp_name, dev, reset_after, wrt):
    layer = make_time(dev, 23, reset_after=reset_after, stateful=True)
    layer.forward(dev(host_data(24, N, T, D)))  # window 1 carries its last state
    carried = layer.h.copy()
    xs2 = dev(host_data(25, N, T, D))
    r = gradcheck.check_layer(layer, (xs2,), wrt=wrt, state={"h": carried}, seed=0)
    assert r.error <= TOL, f"TimeGRU (window 2) d{wrt}: {r.error:.1e} at {r.worst_index}"


@pytest.mark.parametrize("reset_after", VARIANTS)
@pytest.mark.parametrize("wrt", WRT)
@pytest.mark.parametrize("shape", [(N, 1), (1, T)], ids=["T=1", "N=1"])
def test_time_gradcheck_edge_shapes(xp_name, dev, reset_after, wrt, shape):
    n, t = shape
    layer = make_time(dev, 26, reset_after=reset_after)
    xs, h0 = dev(host_data(27, n, t, D)), dev(host_data(28, n, H))
    r = gradcheck.check_layer(layer, (xs,), wrt=wrt, state={"h": h0}, seed=0)
    assert r.error <= TOL, f"TimeGRU N={n} T={t} d{wrt}: {r.error:.1e} at {r.worst_index}"


# ---------------------------------------------------------------------------------------
# TimeGRU == a loop of GRU steps; forward against references
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("reset_after", VARIANTS)
def test_time_equals_loop_of_steps(xp_name, dev, reset_after):
    layer = make_time(dev, 30, reset_after=reset_after)
    xs, h0, dhs = dev(host_data(31, N, T, D)), dev(host_data(32, N, H)), dev(host_data(33, N, T, H))
    layer.set_state(h0)
    hs = layer.forward(xs)
    dxs = layer.backward(dhs)
    hs_ref, dxs_ref, dh0_ref, grads_ref, _ = step_loop(xs, h0, layer.params, dhs, reset_after)
    close = dict(rtol=0, atol=1e-12)
    np.testing.assert_allclose(cpu(hs), hs_ref, **close)
    np.testing.assert_allclose(cpu(layer.h), hs_ref[:, -1], **close)
    np.testing.assert_allclose(cpu(dxs), dxs_ref, **close)
    np.testing.assert_allclose(cpu(layer.dh), dh0_ref, **close)
    for name, g, g_ref in zip(layer.param_names, layer.grads, grads_ref):
        np.testing.assert_allclose(cpu(g), g_ref, err_msg=f"d{name}", **close)
    assert backend.get_array_module(hs) is backend.xp()
    assert backend.get_array_module(dxs) is backend.xp()


@pytest.mark.parametrize("reset_after", VARIANTS)
def test_time_forward_against_numpy_reference(xp_name, dev, reset_after):
    Wx, Wh, b = host_params(34, reset_after=reset_after)
    xs, h0 = host_data(35, N, T, D), host_data(36, N, H)
    layer = TimeGRU(dev(Wx), dev(Wh), dev(b), reset_after=reset_after)
    layer.set_state(dev(h0))
    hs = layer.forward(dev(xs))
    np.testing.assert_allclose(
        cpu(hs), reference_forward(xs, h0, Wx, Wh, b, reset_after), rtol=0, atol=1e-13
    )


@pytest.mark.parametrize("reset_after", VARIANTS)
def test_eval_forward_matches_training_forward(xp_name, dev, reset_after):
    layer = make_time(dev, 37, reset_after=reset_after)
    xs = dev(host_data(38, N, T, D))
    hs_train = cpu(layer.forward(xs))
    layer.eval()
    hs_eval = cpu(layer.forward(xs))
    assert layer.cache is None
    np.testing.assert_array_equal(hs_eval, hs_train)


def _torch_gru(torch, Wx, Wh, b):
    gru = torch.nn.GRU(D, H, batch_first=True).double()
    with torch.no_grad():
        gru.weight_ih_l0.copy_(torch.from_numpy(Wx.T.copy()))
        gru.weight_hh_l0.copy_(torch.from_numpy(Wh.T.copy()))
        gru.bias_ih_l0.copy_(torch.from_numpy(b[0].copy()))
        gru.bias_hh_l0.copy_(torch.from_numpy(b[1].copy()))
    return gru


def test_time_reset_after_against_torch():
    torch = pytest.importorskip("torch")
    Wx, Wh, b = host_params(40, reset_after=True)
    xs, h0, dhs = host_data(41, N, T, D), host_data(42, N, H), host_data(43, N, T, H)
    layer = TimeGRU(Wx, Wh, b, reset_after=True)
    layer.set_state(h0)
    hs = layer.forward(xs)
    dxs = layer.backward(dhs)

    gru = _torch_gru(torch, Wx, Wh, b)
    xt = torch.tensor(xs, requires_grad=True)
    ht = torch.tensor(h0[None], requires_grad=True)
    out, h_last = gru(xt, ht)
    (out * torch.from_numpy(dhs)).sum().backward()
    close = dict(rtol=0, atol=1e-10)
    np.testing.assert_allclose(hs, out.detach().numpy(), **close)
    np.testing.assert_allclose(layer.h, h_last.detach().numpy()[0], **close)
    np.testing.assert_allclose(dxs, xt.grad.numpy(), **close)
    np.testing.assert_allclose(layer.dh, ht.grad.numpy()[0], **close)
    dWx, dWh, db = layer.grads
    np.testing.assert_allclose(dWx, gru.weight_ih_l0.grad.numpy().T, **close)
    np.testing.assert_allclose(dWh, gru.weight_hh_l0.grad.numpy().T, **close)
    np.testing.assert_allclose(db[0], gru.bias_ih_l0.grad.numpy(), **close)
    np.testing.assert_allclose(db[1], gru.bias_hh_l0.grad.numpy(), **close)


def test_time_reset_before_against_torch_autograd():
    """No nn.GRU computes reset_after=False; differentiate d2l's equations with autograd."""
    torch = pytest.importorskip("torch")
    Wx, Wh, b = host_params(44, reset_after=False)
    xs, h0, dhs = host_data(45, N, T, D), host_data(46, N, H), host_data(47, N, T, H)
    layer = TimeGRU(Wx, Wh, b, reset_after=False)
    layer.set_state(h0)
    hs = layer.forward(xs)
    dxs = layer.backward(dhs)

    Wx_t, Wh_t, b_t, xs_t, h_t = (torch.tensor(a, requires_grad=True) for a in (Wx, Wh, b, xs, h0))
    h = h_t
    out = []
    for t in range(T):
        x = xs_t[:, t]
        R = torch.sigmoid(x @ Wx_t[:, :H] + h @ Wh_t[:, :H] + b_t[:H])
        Z = torch.sigmoid(x @ Wx_t[:, H : 2 * H] + h @ Wh_t[:, H : 2 * H] + b_t[H : 2 * H])
        Ht = torch.tanh(x @ Wx_t[:, 2 * H :] + (R * h) @ Wh_t[:, 2 * H :] + b_t[2 * H :])
        h = Z * h + (1 - Z) * Ht
        out.append(h)
    out = torch.stack(out, dim=1)
    (out * torch.from_numpy(dhs)).sum().backward()
    close = dict(rtol=0, atol=1e-10)
    np.testing.assert_allclose(hs, out.detach().numpy(), **close)
    np.testing.assert_allclose(dxs, xs_t.grad.numpy(), **close)
    np.testing.assert_allclose(layer.dh, h_t.grad.numpy(), **close)
    for name, g, gt in zip(layer.param_names, layer.grads, (Wx_t, Wh_t, b_t)):
        np.testing.assert_allclose(g, gt.grad.numpy(), err_msg=f"d{name}", **close)


# ---------------------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("reset_after", VARIANTS)
def test_float32_stays_float32_and_agrees_with_float64(xp_name, dev, reset_after):
    results = {}
    for dtype in (np.float32, np.float64):
        layer = make_time(dev, 50, reset_after=reset_after, dtype=dtype)
        xs = dev(host_data(51, N, T, D, dtype=dtype))
        dhs = dev(host_data(52, N, T, H, dtype=dtype))
        layer.set_state(dev(host_data(53, N, H, dtype=dtype)))
        hs = layer.forward(xs)
        dxs = layer.backward(dhs)
        arrays = [hs, dxs, layer.h, layer.dh, *layer.grads]
        for a in arrays:
            assert a.dtype == dtype
        results[dtype] = [cpu(a).astype(np.float64) for a in arrays]
    names = ["hs", "dxs", "h", "dh", "dWx", "dWh", "db"]
    for name, a32, a64 in zip(names, results[np.float32], results[np.float64]):
        err = gradcheck.rel_error(a32, a64)
        assert err <= 1e-4, f"{name}: float32 vs float64 relative error {err:.1e}"


# ---------------------------------------------------------------------------------------
# truncated BPTT state
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("reset_after", VARIANTS)
def test_stateful_windows_continue_the_sequence(xp_name, dev, reset_after):
    xs = dev(host_data(60, N, 2 * T, D))
    long_layer = make_time(dev, 61, reset_after=reset_after)
    hs_long = cpu(long_layer.forward(xs))
    layer = make_time(dev, 61, reset_after=reset_after, stateful=True)
    hs1 = cpu(layer.forward(xs[:, :T]))
    hs2 = cpu(layer.forward(xs[:, T:]))
    np.testing.assert_allclose(np.concatenate([hs1, hs2], axis=1), hs_long, rtol=0, atol=1e-14)
    # a stateless layer restarts from zeros every time (though h holds its last state)
    stateless = make_time(dev, 61, reset_after=reset_after)
    stateless.forward(xs[:, :T])
    np.testing.assert_array_equal(cpu(stateless.h), hs1[:, -1])
    fresh = make_time(dev, 61, reset_after=reset_after)
    np.testing.assert_array_equal(cpu(stateless.forward(xs[:, T:])), cpu(fresh.forward(xs[:, T:])))
    # reset_state() forgets the carried state
    layer.reset_state()
    np.testing.assert_allclose(cpu(layer.forward(xs[:, :T])), hs1, rtol=0, atol=0)


@pytest.mark.parametrize("reset_after", VARIANTS)
def test_tbptt_no_gradient_crosses_the_window(xp_name, dev, reset_after):
    xs1, xs2 = dev(host_data(62, N, T, D)), dev(host_data(63, N, T, D))
    dhs = dev(host_data(64, N, T, H))
    stateful = make_time(dev, 65, reset_after=reset_after, stateful=True)
    stateful.forward(xs1)
    carried = stateful.h.copy()
    stateful.zero_grads()
    stateful.forward(xs2)
    dxs = stateful.backward(dhs)

    fresh = make_time(dev, 65, reset_after=reset_after)
    fresh.set_state(carried)
    fresh.forward(xs2)
    dxs_fresh = fresh.backward(dhs)
    np.testing.assert_array_equal(cpu(dxs), cpu(dxs_fresh))
    np.testing.assert_array_equal(cpu(stateful.dh), cpu(fresh.dh))
    for name, g, g_fresh in zip(stateful.param_names, stateful.grads, fresh.grads):
        np.testing.assert_array_equal(cpu(g), cpu(g_fresh), err_msg=f"d{name}")


def test_set_state_batch_change_and_shapes(xp_name, dev):
    layer = make_time(dev, 66, stateful=True)
    layer.forward(dev(host_data(67, N, T, D)))
    with pytest.raises(ValueError, match="reset_state"):
        layer.forward(dev(host_data(68, N + 1, T, D)))
    layer.reset_state()
    assert layer.forward(dev(host_data(68, N + 1, T, D))).shape == (N + 1, T, H)
    with pytest.raises(ValueError, match="h must have shape"):
        layer.set_state(dev(np.zeros((N, H + 1))))
    with pytest.raises(TypeError, match="dtype"):
        layer.set_state(dev(np.zeros((N, H), dtype=np.float32)))
    layer.set_state(dev(np.zeros((N + 2, H))))
    with pytest.raises(ValueError, match="batch size"):
        layer.forward(dev(host_data(69, N, T, D)))


# ---------------------------------------------------------------------------------------
# gradient norms
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("reset_after", VARIANTS)
def test_record_grad_norms(xp_name, dev, reset_after):
    xs, h0, dhs = dev(host_data(70, N, T, D)), dev(host_data(71, N, H)), dev(host_data(72, N, T, H))
    plain = make_time(dev, 73, reset_after=reset_after)
    plain.set_state(h0)
    plain.forward(xs)
    dxs_plain = cpu(plain.backward(dhs))
    assert plain.grad_norms is None

    layer = make_time(dev, 73, reset_after=reset_after)
    layer.record_grad_norms = True
    layer.set_state(h0)
    layer.forward(xs)
    dxs = cpu(layer.backward(dhs))
    *_, norms_ref = step_loop(xs, h0, layer.params, dhs, reset_after)
    assert isinstance(layer.grad_norms, np.ndarray)
    assert layer.grad_norms.dtype == np.float64 and layer.grad_norms.shape == (T,)
    np.testing.assert_allclose(layer.grad_norms, norms_ref, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(dxs, dxs_plain)
    np.testing.assert_array_equal(cpu(layer.dh), cpu(plain.dh))
    for g, g_plain in zip(layer.grads, plain.grads):
        np.testing.assert_array_equal(cpu(g), cpu(g_plain))


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [GRU, TimeGRU])
def test_bad_param_shapes(cls):
    Wx, Wh, b = host_params(80)
    cases = [
        ((Wx[:, :12], Wh, b), {}, r"Wx must have shape \(D, 3H\) = \(5, 18\), got \(5, 12\)"),
        ((Wx, Wh[:, :12], b), {}, r"Wh must have shape \(H, 3H\) = \(6, 18\), got \(6, 12\)"),
        ((Wx, Wh, b[:17]), {}, r"b must have shape \(3H,\) = \(18,?\), got \(17,?\)"),
        (
            (Wx, Wh, b),
            {"reset_after": True},
            r"b must have shape \(2, 3H\) = \(2, 18\), got \(18,?\) for reset_after=True",
        ),
        ((Wx, Wh, np.zeros((2, 18))), {}, r"b must have shape \(3H,\) = \(18,?\), got \(2, 18\)"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            cls(*args, **kwargs)
    with pytest.raises(TypeError):
        cls(Wx, Wh.astype(np.float32), b)
    with pytest.raises(TypeError):
        cls(Wx.astype(np.int64), Wh, b)


def test_step_function_rejects_wrong_bias_variant():
    Wx, Wh, b = host_params(81)
    with pytest.raises(ValueError, match="reset_after=True"):
        gru_step_forward(host_data(1, N, D), host_data(2, N, H), Wx, Wh, b, reset_after=True)


@pytest.mark.parametrize("reset_after", VARIANTS)
def test_bad_inputs(xp_name, dev, reset_after):
    layer = make_time(dev, 82, reset_after=reset_after)
    with pytest.raises(TypeError, match="dtype"):
        layer.forward(dev(host_data(1, N, T, D, dtype=np.float32)))
    with pytest.raises(TypeError, match="floating"):
        layer.forward(dev(np.zeros((N, T, D), dtype=np.int64)))
    with pytest.raises(ValueError, match="3 dimensions"):
        layer.forward(dev(host_data(1, N, D)))
    with pytest.raises(ValueError, match="D = 5"):
        layer.forward(dev(host_data(1, N, T, D + 1)))
    layer.forward(dev(host_data(1, N, T, D)))
    with pytest.raises(ValueError, match="dhs must have the shape"):
        layer.backward(dev(host_data(2, N, T + 1, H)))
    layer.backward(dev(host_data(2, N, T, H)))  # the failed call did not consume the cache

    cell = GRU(*(dev(p) for p in host_params(83, reset_after=reset_after)), reset_after=reset_after)
    with pytest.raises(ValueError, match="x must have shape"):
        cell.forward(dev(host_data(1, N, D + 1)), dev(host_data(2, N, H)))
    with pytest.raises(ValueError, match="h_prev must have shape"):
        cell.forward(dev(host_data(1, N, D)), dev(host_data(2, N + 1, H)))
    with pytest.raises(TypeError, match="dtype"):
        cell.forward(dev(host_data(1, N, D, dtype=np.float32)), dev(host_data(2, N, H)))


@pytest.mark.parametrize("reset_after", VARIANTS)
def test_backward_protocol_errors(xp_name, dev, reset_after):
    xs, dhs = dev(host_data(1, N, T, D)), dev(host_data(2, N, T, H))
    x, h, dh = dev(host_data(3, N, D)), dev(host_data(4, N, H)), dev(host_data(5, N, H))
    time_layer = make_time(dev, 84, reset_after=reset_after)
    cell = GRU(*(dev(p) for p in host_params(85, reset_after=reset_after)), reset_after=reset_after)
    for layer, fwd, bwd in ((time_layer, (xs,), dhs), (cell, (x, h), dh)):
        name = type(layer).__name__
        with pytest.raises(RuntimeError, match="before forward"):
            layer.backward(bwd)
        layer.forward(*fwd)
        layer.backward(bwd)
        with pytest.raises(RuntimeError, match="twice"):
            layer.backward(bwd)
        layer.eval()
        layer.forward(*fwd)
        with pytest.raises(RuntimeError, match="train()"):
            layer.backward(bwd)
        layer.train()
        layer.forward(*fwd)
        layer.backward(bwd)
        assert name
