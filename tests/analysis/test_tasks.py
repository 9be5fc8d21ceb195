"""Tests of npgated.analysis.tasks: the generators, the loss, the model, a short training run."""

from __future__ import annotations

import numpy as np
import pytest

from npgated import backend
from npgated.analysis import tasks
from npgated.analysis.demo import blas_threads
from npgated.analysis.tasks import (
    ADDING_BASELINE_MSE,
    TASKS,
    LastStepModel,
    MSELoss,
    adding_problem,
    adding_target,
    copy_problem,
    copy_target,
    first_token_problem,
    first_token_target,
    init_recurrent_params,
    train_task,
)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Small GEMMs: one BLAS thread is faster, and much faster on a busy machine."""
    with blas_threads(1):
        yield


# ---------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("T", [2, 3, 10, 57, 200])
def test_adding_problem_shapes_ranges_and_markers(T):
    xs, ys = adding_problem(64, T, np.random.default_rng(0))
    assert xs.shape == (64, T, 2) and ys.shape == (64, 1)
    assert xs.dtype == np.float64 and ys.dtype == np.float64
    values, markers = xs[..., 0], xs[..., 1]
    assert values.min() >= 0.0 and values.max() < 1.0
    assert set(np.unique(markers)) <= {0.0, 1.0}
    assert (markers.sum(axis=1) == 2).all(), "exactly two marked steps per sequence"
    half = T // 2
    assert (markers[:, :half].sum(axis=1) == 1).all(), "one marker in the first half"
    assert (markers[:, half:].sum(axis=1) == 1).all(), "one marker in the second half"
    assert ys.min() >= 0.0 and ys.max() < 2.0
    np.testing.assert_allclose(ys[:, 0], (values * markers).sum(axis=1))


def test_adding_target_depends_on_marked_steps_only():
    rng = np.random.default_rng(1)
    xs, ys = adding_problem(32, 40, rng)
    np.testing.assert_array_equal(adding_target(xs), ys)
    unmarked = xs[..., 1] == 0
    perturbed = xs.copy()
    perturbed[..., 0][unmarked] = rng.random(int(unmarked.sum()))
    np.testing.assert_array_equal(adding_target(perturbed), ys)
    # ... and a marked value does change it
    marked = xs.copy()
    row, t = 0, int(np.flatnonzero(xs[0, :, 1])[0])
    marked[row, t, 0] += 0.25
    assert adding_target(marked)[row, 0] == pytest.approx(ys[row, 0] + 0.25)


def test_adding_baseline_is_the_variance_of_the_target():
    _, ys = adding_problem(20000, 20, np.random.default_rng(2))
    assert ys.mean() == pytest.approx(1.0, abs=0.02)
    assert ys.var() == pytest.approx(ADDING_BASELINE_MSE, rel=0.05)


def test_first_token_problem():
    xs, ys = first_token_problem(
        50, 30, np.random.default_rng(3), n_classes=3, n_distractors=5, dtype=np.float32
    )
    assert xs.shape == (50, 30, 8) and xs.dtype == np.float32
    assert ys.shape == (50, 1) and ys.dtype == np.int64
    assert (xs.sum(axis=-1) == 1).all(), "one-hot"
    ids = xs.argmax(axis=-1)
    assert (ids[:, 0] < 3).all(), "the first token is a class token"
    assert (ids[:, 1:] >= 3).all(), "the others are distractors"
    np.testing.assert_array_equal(ys[:, 0], ids[:, 0])
    assert set(np.unique(ys)) == {0, 1, 2}


def test_first_token_problem_default_distractors_are_class_tokens():
    xs, ys = first_token_problem(400, 12, np.random.default_rng(9))
    assert xs.shape == (400, 12, 2) and ys.shape == (400, 1)
    assert (xs.sum(axis=-1) == 1).all()
    ids = xs.argmax(axis=-1)
    np.testing.assert_array_equal(ys[:, 0], ids[:, 0])
    assert set(np.unique(ids[:, 1:])) == {0, 1}, "distractors use the class tokens"
    # the distractors carry no information about the label
    assert abs((ids[:, 1:] == ys).mean() - 0.5) < 0.03


def test_first_token_target_ignores_distractors():
    rng = np.random.default_rng(4)
    xs, ys = first_token_problem(40, 20, rng)
    other, _ = first_token_problem(40, 20, rng)
    perturbed = xs.copy()
    perturbed[:, 1:] = other[:, 1:]
    np.testing.assert_array_equal(first_token_target(perturbed), ys)


def test_copy_problem():
    xs, ys = copy_problem(30, 12, np.random.default_rng(5), n_symbols=4, n_copy=3, n_distractors=2)
    V = 4 + 2 + 1
    assert xs.shape == (30, 12, V) and ys.shape == (30, 3)
    assert (xs.sum(axis=-1) == 1).all()
    ids = xs.argmax(axis=-1)
    assert (ids[:, :3] < 4).all()
    assert ((ids[:, 3:-1] >= 4) & (ids[:, 3:-1] < 6)).all()
    assert (ids[:, -1] == V - 1).all(), "the recall token ends every sequence"
    np.testing.assert_array_equal(ys, ids[:, :3])
    # the target is a function of the first n_copy steps only
    other, _ = copy_problem(
        30, 12, np.random.default_rng(6), n_symbols=4, n_copy=3, n_distractors=2
    )
    perturbed = xs.copy()
    perturbed[:, 3:] = other[:, 3:]
    np.testing.assert_array_equal(copy_target(perturbed, 3), ys)


@pytest.mark.parametrize("name", list(TASKS))
def test_generators_are_reproducible_and_match_the_task(name):
    task = TASKS[name]
    a = task.make(8, 15, np.random.default_rng(7))
    b = task.make(8, 15, np.random.default_rng(7))
    c = task.make(8, 15, np.random.default_rng(8))
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])
    xs, ys = a
    assert xs.shape[-1] == task.input_size
    assert ys.shape == (8, task.n_outputs)


def test_generator_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="T >= 2"):
        adding_problem(4, 1, rng)
    with pytest.raises(ValueError, match="n_copy \\+ 1"):
        copy_problem(4, 3, rng, n_copy=3)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        adding_problem(4, 10, 0)
    with pytest.raises(ValueError, match="positive integer"):
        first_token_problem(0, 10, rng)
    with pytest.raises(ValueError, match="unknown task"):
        tasks.get_task("parity")


# ---------------------------------------------------------------------------------------
# Loss, initialisation, model
# ---------------------------------------------------------------------------------------
def test_mse_loss_forward_backward(rng):
    y, t = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    loss = MSELoss()
    value = loss.forward(y, t)
    assert value == pytest.approx(((y - t) ** 2).mean())
    dy = loss.backward(2.0)
    h = 1e-6
    numeric = np.zeros_like(y)
    for idx in np.ndindex(y.shape):
        yp, ym = y.copy(), y.copy()
        yp[idx] += h
        ym[idx] -= h
        numeric[idx] = 2.0 * (((yp - t) ** 2).mean() - ((ym - t) ** 2).mean()) / (2 * h)
    np.testing.assert_allclose(dy, numeric, rtol=1e-6, atol=1e-9)
    with pytest.raises(RuntimeError, match="before forward"):
        loss.backward()
    with pytest.raises(ValueError, match="t must have shape"):
        loss.forward(y, t[:, :2])


@pytest.mark.parametrize("cell,k", [("rnn", 1), ("lstm", 4), ("gru", 3)])
def test_init_recurrent_params(cell, k):
    rng = np.random.default_rng(0)
    Wx, Wh, b = init_recurrent_params(cell, 5, 8, rng, dtype=np.float32, T_max=100)
    assert Wx.shape == (5, k * 8) and Wh.shape == (8, k * 8) and b.shape == (k * 8,)
    assert Wx.dtype == Wh.dtype == b.dtype == np.float32
    if cell == "rnn":
        assert (b == 0).all()
        return
    keep = b[8:16]  # forget gate (LSTM) / update gate z (GRU)
    assert (keep >= 0).all() and (keep <= np.log(99) + 1e-6).all(), "chrono: log U(1, T-1)"
    if cell == "lstm":
        np.testing.assert_array_equal(b[:8], -keep)  # input gate
        assert (b[16:] == 0).all()
    _, Wh_o, b_c = init_recurrent_params(cell, 5, 8, rng, wh_init="orthogonal", gate_bias=1.0)
    np.testing.assert_allclose(Wh_o[:, :8].T @ Wh_o[:, :8], np.eye(8), atol=1e-12)
    assert (b_c[8:16] == 1.0).all()


def test_init_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="T_max"):
        init_recurrent_params("lstm", 2, 4, rng)
    with pytest.raises(ValueError, match="wh_init"):
        init_recurrent_params("rnn", 2, 4, rng, wh_init="eye")
    with pytest.raises(ValueError, match="unknown cell"):
        init_recurrent_params("transformer", 2, 4, rng)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("task", ["adding", "copy"])
def test_last_step_model_gradients(cell, task):
    """Every parameter gradient of the model against central differences (float64)."""
    rng = np.random.default_rng(11)
    model = LastStepModel(cell, task, 5, rng, T_max=6)
    xs, ys = TASKS[task].make(3, 6, rng)
    model.zero_grads()
    model.forward(xs, ys)
    model.backward()
    h = 1e-5
    for name, p, g in zip(["Wx", "Wh", "b", "W", "b_head"], model.params, model.grads):
        numeric = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            lp = model.forward(xs, ys)
            p[idx] = old - h
            lm = model.forward(xs, ys)
            p[idx] = old
            numeric[idx] = (lp - lm) / (2 * h)
        err = np.linalg.norm(g - numeric) / max(1e-12, np.linalg.norm(g) + np.linalg.norm(numeric))
        assert err <= 1e-7, f"LastStepModel({cell}, {task}) d{name}: {err:.1e}"


def test_model_runs_on_the_fake_device(xp_name):
    model = LastStepModel("gru", "first_token", 4, np.random.default_rng(0), T_max=5)
    xs, ys = tasks.task_batch("first_token", 3, 5, np.random.default_rng(1))
    assert backend.get_array_module(xs) is backend.get_array_module(model.params[0])
    model.zero_grads()
    loss = model.forward(xs, ys)
    model.backward()
    assert np.isfinite(loss)
    assert all(float((g * g).sum()) > 0 for g in model.grads)
    score = tasks.evaluate_task(model, xs, ys)
    assert 0.0 <= score <= 1.0


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------
def test_lstm_learns_the_adding_problem_at_small_T():
    """A short run beats the mean-prediction baseline (R^2 = 0, MSE 1/6) by a clear margin."""
    result = train_task("adding", "lstm", 10, iters=120, seed=0)
    final_mse = float(np.mean(result.losses[-20:]))
    assert final_mse < 0.25 * ADDING_BASELINE_MSE, f"training MSE {final_mse:.3f}"
    assert result.score > 0.75, f"held-out R^2 {result.score:.3f} (0 = mean prediction)"
    assert len(result.losses) == len(result.grad_norms) == 120


def test_train_task_is_reproducible_and_reports_progress():
    calls = []
    a = train_task("first_token", "rnn", 5, iters=6, seed=3, progress=calls.append)
    b = train_task("first_token", "rnn", 5, iters=6, seed=3)
    assert calls == [1] * 6
    assert a.losses == b.losses and a.score == b.score
    with pytest.raises(ValueError, match="needs T >= 3"):
        train_task("copy", "rnn", 2, iters=1)
