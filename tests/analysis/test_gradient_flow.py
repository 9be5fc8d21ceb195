"""Tests of npgated.analysis.gradient_flow: recorded ||dL/dh_t|| against independent paths,
the matrix-power experiment and the clipping trace."""

from __future__ import annotations

import math

import numpy as np
import pytest

from npgated import backend
from npgated.analysis import gradient_flow as gf
from npgated.analysis.tasks import (
    LastStepModel,
    init_recurrent_params,
    make_recurrent_layer,
    task_batch,
)
from npgated.layers.gru import GRU, gru_step_forward
from npgated.layers.lstm import LSTM, lstm_step_forward
from npgated.layers.rnn import RNN, rnn_step_forward

N, T, D, H = 3, 5, 4, 6
CELLS = ["rnn", "lstm", "gru"]


def _params(cell, seed=0):
    rng = np.random.default_rng(seed)
    Wx, Wh, b = init_recurrent_params(cell, D, H, rng, T_max=10)
    b = b + 0.1 * rng.standard_normal(b.shape)  # nonzero everywhere
    return Wx, Wh, b


def _data(seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, T, D)), rng.standard_normal((N, T, H))


def _step_loop_norms(cell, params, xs, dhs):
    """||dL/dh_t|| by running the single-step layer classes backwards by hand."""
    Wx, Wh, b = params
    cls = {"rnn": RNN, "lstm": LSTM, "gru": GRU}[cell]
    h, c = np.zeros((N, H)), np.zeros((N, H))
    steps = []
    for t in range(T):
        step = cls(Wx, Wh, b)
        if cell == "lstm":
            h, c = step.forward(xs[:, t], h, c)
        else:
            h = step.forward(xs[:, t], h)
        steps.append(step)
    norms = np.zeros(T)
    dh_next, dc_next = np.zeros((N, H)), np.zeros((N, H))
    for t in reversed(range(T)):
        dh = dhs[:, t] + dh_next
        norms[t] = np.linalg.norm(dh)
        if cell == "lstm":
            _, dh_next, dc_next = steps[t].backward(dh, dc_next)
        else:
            _, dh_next = steps[t].backward(dh)
    return norms


def _finite_difference_norms(cell, params, xs, dhs, eps=1e-6):
    """||dL/dh_t|| by central differences, L = sum_t <dhs[:, t], h_t>.

    The hidden state h_t is perturbed (c_t held fixed for the LSTM) and the remaining steps
    are rerun with the step functions.
    """
    Wx, Wh, b = params

    def step(x, h, c):
        if cell == "rnn":
            return rnn_step_forward(x, h, Wx, Wh, b)[0], c
        if cell == "lstm":
            h2, c2, _ = lstm_step_forward(x, h, c, Wx, Wh, b)
            return h2, c2
        return gru_step_forward(x, h, Wx, Wh, b)[0], c

    hs, cs = [], []
    h, c = np.zeros((N, H)), np.zeros((N, H))
    for t in range(T):
        h, c = step(xs[:, t], h, c)
        hs.append(h)
        cs.append(c)

    def loss_from(t, h_t):
        total = float((dhs[:, t] * h_t).sum())
        h, c = h_t, cs[t]
        for s in range(t + 1, T):
            h, c = step(xs[:, s], h, c)
            total += float((dhs[:, s] * h).sum())
        return total

    norms = np.zeros(T)
    for t in range(T):
        grad = np.zeros((N, H))
        for idx in np.ndindex(N, H):
            plus, minus = hs[t].copy(), hs[t].copy()
            plus[idx] += eps
            minus[idx] -= eps
            grad[idx] = (loss_from(t, plus) - loss_from(t, minus)) / (2 * eps)
        norms[t] = np.linalg.norm(grad)
    return norms


def _recorded_norms(cell, params, xs, dhs, dev):
    layer = make_recurrent_layer(cell, *(dev(p) for p in params))
    layer.record_grad_norms = True
    layer.forward(dev(xs))
    layer.backward(dev(dhs))
    norms = layer.grad_norms
    assert isinstance(norms, np.ndarray) and norms.dtype == np.float64 and norms.shape == (T,)
    return norms


@pytest.mark.parametrize("cell", CELLS)
def test_recorded_norms_equal_a_loop_of_step_layers(cell, dev):
    params, (xs, dhs) = _params(cell), _data()
    recorded = _recorded_norms(cell, params, xs, dhs, dev)
    reference = _step_loop_norms(cell, params, xs, dhs)
    np.testing.assert_allclose(
        recorded,
        reference,
        rtol=1e-12,
        atol=0,
        err_msg=f"Time{cell.upper()} grad_norms vs step loop",
    )


@pytest.mark.parametrize("cell", CELLS)
def test_recorded_norms_equal_finite_differences(cell):
    params, (xs, dhs) = _params(cell, seed=2), _data(seed=3)
    recorded = _recorded_norms(cell, params, xs, dhs, np.asarray)
    numeric = _finite_difference_norms(cell, params, xs, dhs)
    err = np.abs(recorded - numeric).max() / np.abs(numeric).max()
    assert err <= 1e-7, f"Time{cell.upper()} grad_norms vs finite differences: {err:.1e}"


@pytest.mark.parametrize("cell", CELLS)
def test_recording_changes_no_gradient(cell, dev):
    params, (xs, dhs) = _params(cell, seed=4), _data(seed=5)
    outputs = []
    for record in (False, True):
        layer = make_recurrent_layer(cell, *(dev(p) for p in params))
        layer.record_grad_norms = record
        hs = layer.forward(dev(xs))
        dxs = layer.backward(dev(dhs))
        outputs.append([hs, dxs, layer.dh, *layer.grads])
        assert (layer.grad_norms is not None) == record
    for name, a, b in zip(["hs", "dxs", "dh", "dWx", "dWh", "db"], *outputs):
        np.testing.assert_array_equal(
            backend.to_cpu(a), backend.to_cpu(b), err_msg=f"record_grad_norms changed {name}"
        )


@pytest.mark.parametrize("cell", CELLS)
def test_hidden_grad_norms_leaves_the_layer_as_it_was(cell, dev):
    params, (xs, _) = _params(cell, seed=6), _data(seed=7)
    layer = make_recurrent_layer(cell, *(dev(p) for p in params))
    for g in layer.grads:
        g[...] = 0.5
    norms = gf.hidden_grad_norms(layer, dev(xs), seed=0)
    assert norms.shape == (T,) and norms[-1] == pytest.approx(1.0)
    assert (norms > 0).all()
    assert layer.record_grad_norms is False
    for g in layer.grads:
        assert (backend.to_cpu(g) == 0.5).all()
    # the same numbers as recording by hand with the same dh_last
    dh_last = np.random.default_rng(3).standard_normal((N, H))
    dhs = np.zeros((N, T, H))
    dhs[:, -1] = dh_last
    expected = _step_loop_norms(cell, params, xs, dhs)
    np.testing.assert_allclose(
        gf.hidden_grad_norms(layer, dev(xs), dh_last=dev(dh_last)), expected, rtol=1e-12
    )


def test_rnn_gradient_vanishes_and_gated_cells_keep_it():
    """At initialisation on the adding problem (T = 60): the shape of grad_flow.png."""
    norms = {cell: gf.init_grad_norms(cell, "adding", 60, seed=0) for cell in CELLS}
    assert norms["rnn"][0] < 1e-4, "vanilla RNN: exponential decay"
    assert norms["gru"][0] > 1e-2
    assert norms["lstm"][0] > 1e-3
    # exponential: log-norm roughly linear in t for the RNN
    slope = np.polyfit(np.arange(40), np.log(norms["rnn"][:40]), 1)[0]
    assert slope > 0.1


def test_model_grad_norms_leaves_grads_and_has_the_model_shape():
    model = LastStepModel("lstm", "adding", 8, np.random.default_rng(0), T_max=20)
    xs, ys = task_batch("adding", 16, 20, np.random.default_rng(1))
    for g in model.grads:
        g[...] = 0.25
    norms = gf.model_grad_norms(model, xs, ys)
    assert norms.shape == (20,) and np.isfinite(norms).all() and (norms > 0).all()
    assert all((g == 0.25).all() for g in model.grads)
    assert model.rnn.record_grad_norms is False


# ---------------------------------------------------------------------------------------
# Matrix power
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["symmetric", "gaussian"])
@pytest.mark.parametrize("sigma", [0.5, 1.3])
def test_scaled_matrix_has_the_largest_singular_value(kind, sigma):
    W = gf.scaled_matrix(12, sigma, np.random.default_rng(0), kind=kind)
    assert np.linalg.norm(W, 2) == pytest.approx(sigma, rel=1e-12)


@pytest.mark.parametrize("sigma", [0.8, 1.2])
def test_matrix_power_grows_or_decays_like_sigma_to_the_k(sigma):
    rng = np.random.default_rng(1)
    W = gf.scaled_matrix(10, sigma, rng)
    k = np.arange(61)
    norms = gf.matrix_power_norms(W, 60, dh=rng.standard_normal((2, 10)))
    assert norms.shape == (61,) and norms[0] == 1.0
    assert (norms <= sigma**k * (1 + 1e-9)).all(), "||dh W^k|| <= sigma^k ||dh||"
    slope = np.polyfit(k[30:], np.log(norms[30:]), 1)[0]
    assert slope == pytest.approx(math.log(sigma), abs=0.02)
    assert (norms[-1] > 100) if sigma > 1 else (norms[-1] < 1e-4)


def test_matrix_power_with_tanh_is_the_rnn_backward():
    """With hidden states given, the recursion is TimeRNN's backward (upstream at T only)."""
    params, (xs, _) = _params("rnn", seed=8), _data(seed=9)
    Wx, Wh, b = params
    layer = make_recurrent_layer("rnn", Wx, Wh, b)
    hs = layer.forward(xs)
    dh = np.random.default_rng(0).standard_normal((N, H))
    dhs = np.zeros((N, T, H))
    dhs[:, -1] = dh
    expected = _step_loop_norms("rnn", params, xs, dhs)  # ||dL/dh_t||, t = 0..T-1
    norms = gf.matrix_power_norms(Wh, T - 1, dh=dh, hs=hs)  # k = 0..T-1 steps back
    np.testing.assert_allclose(norms * np.linalg.norm(dh), expected[::-1], rtol=1e-12)


# ---------------------------------------------------------------------------------------
# Clipping
# ---------------------------------------------------------------------------------------
def test_clipping_trace_tames_an_exploding_rnn():
    """Properties that hold for every summation order (BLAS kernel, thread count).

    The unclipped run is chaotic: after a few iterations its trajectory depends on rounding
    (with OpenBLAS's Haswell kernel it never passes ``diverge_above`` within 40 iterations,
    with others it does, at different iterations). So no divergence iteration is asserted;
    what any order gives is: gradients orders of magnitude above the threshold, a loss that
    blows up, and a clipped run that stays finite, bounded and learns.
    """
    max_norm, iters = 1.0, 40
    trace = gf.clipping_trace(
        T=20, iters=iters, max_norm=max_norm, sigma=2.0, hidden_size=16, batch_size=16, seed=0
    )
    unclipped, clipped = np.asarray(trace.norms["no clipping"]), np.asarray(trace.norms["clipping"])
    loss_u, loss_c = trace.losses["no clipping"], trace.losses["clipping"]
    assert unclipped[0] == clipped[0], "both runs start from the same parameters and batch"
    assert unclipped[0] > 10 * max_norm, "the starting gradient is far above max_norm"
    # without clipping: the gradient stays above the threshold by orders of magnitude (the
    # first iterations, before rounding differences grow, already pass 100 x max_norm) and
    # the loss explodes; a run that passed diverge_above stopped early, which is explosion too
    assert unclipped[:6].max() > 100 * max_norm
    assert np.median(unclipped) > 10 * max_norm
    assert max(loss_u) > 100 * loss_u[0], "the unclipped loss explodes"
    assert len(unclipped) == iters or "no clipping" in trace.diverged_at
    # with clipping: every step is at most lr * max_norm long, the run completes, its
    # gradient norms stay bounded and its loss goes down
    assert "clipping" not in trace.diverged_at and len(clipped) == iters
    assert np.isfinite(clipped).all() and clipped.max() < 1e4
    assert max(loss_c) < 10 * loss_c[0], "the clipped loss never explodes"
    assert np.mean(loss_c[-10:]) < loss_c[0], "the clipped run learns"
    assert max(loss_c) < max(loss_u) / 100
