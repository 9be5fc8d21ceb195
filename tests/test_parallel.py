"""npgated.parallel: the thread pool, its switch, and the same numbers with threads on and off.

Tiny shapes never reach the module's size thresholds, so the ``split_everything`` fixture
lowers them: every product and element-wise pass below is then really split over the threads.
Results are compared to float tolerances (a BLAS kernel may round a block of rows differently
from the whole), element-wise passes exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from npgated import parallel
from npgated.layers import loss as loss_module
from npgated.models.rnnlm import BetterRnnlm, Rnnlm
from npgated.optim.adam import Adam
from npgated.optim.clip import clip_grads
from npgated.optim.sgd import SGD

threadpoolctl = pytest.importorskip("threadpoolctl")


@pytest.fixture
def threads_off_after():
    yield
    parallel.use_threads(1)


@pytest.fixture
def split_everything(monkeypatch, threads_off_after):
    """Two threads, and thresholds low enough that tiny test shapes are split."""
    monkeypatch.setattr(parallel, "MIN_FLOPS", 1)
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 4)
    monkeypatch.setattr(parallel, "MIN_ROWS", 2)
    monkeypatch.setattr(parallel, "MIN_COLS", 2)
    monkeypatch.setattr(loss_module, "_BLOCK_ELEMENTS", 64)  # several row blocks per loss
    monkeypatch.setattr(loss_module, "_FUSED_BLOCK_ELEMENTS", 64)
    monkeypatch.setattr(loss_module, "_FUSED_MIN_ROWS", 1)
    parallel.use_threads(2)


def _blas_threads():
    info = threadpoolctl.threadpool_info()
    return [lib["num_threads"] for lib in info if lib["user_api"] == "blas"]


# -- the switch --------------------------------------------------------------------------
def test_importing_and_using_npgated_starts_no_thread():
    code = (
        "import threading, numpy as np\n"
        "from npgated import parallel\n"
        "from npgated.models.rnnlm import Rnnlm\n"
        "m = Rnnlm(30, 4, 5, seed=0)\n"
        "m.forward(np.zeros((2, 3), dtype=np.int64), np.ones((2, 3), dtype=np.int64))\n"
        "print(parallel.threads(), threading.active_count())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != parallel.ENV_VAR}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    assert out == ["1", "1"]


def test_switch_pins_and_restores_blas(threads_off_after):
    before = _blas_threads()
    assert parallel.use_threads(2) == 2
    assert parallel.threads() == 2
    assert all(n == 1 for n in _blas_threads())  # BLAS runs one thread per call
    assert parallel.use_threads(1) == 1
    assert parallel.threads() == 1
    assert _blas_threads() == before  # BLAS's own threads back


def test_use_threads_rejects_bad_counts():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="thread count >= 1"):
            parallel.use_threads(bad)


def test_requested_threads_from_environment(monkeypatch):
    monkeypatch.setenv(parallel.ENV_VAR, "3")
    assert parallel.requested_threads() == 3
    monkeypatch.delenv(parallel.ENV_VAR)
    assert parallel.requested_threads() == parallel.available_cores() >= 1
    for bad in ("0", "two", "-2"):
        monkeypatch.setenv(parallel.ENV_VAR, bad)
        with pytest.raises(ValueError, match="NPGATED_THREADS"):
            parallel.requested_threads()


# -- the primitives ----------------------------------------------------------------------
@pytest.mark.parametrize("length, min_part", [(0, 1), (1, 1), (7, 1), (100, 30), (5, 10)])
def test_parts_cover_the_range_in_order(length, min_part, threads_off_after):
    for n in (1, 2, 3):
        parallel.use_threads(n)
        pieces = parallel.parts(length, min_part)
        assert 1 <= len(pieces) <= n
        assert pieces[0].start == 0 and pieces[-1].stop == length
        assert all(a.stop == b.start for a, b in zip(pieces, pieces[1:]))
        if len(pieces) > 1:
            assert all(p.stop - p.start >= min_part for p in pieces)


def test_run_uses_other_threads_keeps_order_and_raises(threads_off_after):
    parallel.use_threads(2)
    barrier = threading.Barrier(2, timeout=10)  # passes only if both pieces run at once

    def piece(k):
        barrier.wait()
        return k, threading.current_thread().name

    results = parallel.run(piece, [0, 1])
    assert [k for k, _ in results] == [0, 1]
    assert results[0][1] != results[1][1]

    done = []

    def failing(k):
        if k == 1:
            raise ZeroDivisionError("piece 1")
        done.append(k)

    with pytest.raises(ZeroDivisionError, match="piece 1"):
        parallel.run(failing, [0, 1, 2])
    assert sorted(done) == [0, 2]  # the other pieces finished before the error was raised


def test_run_nested_inside_a_piece_does_not_deadlock(threads_off_after):
    parallel.use_threads(2)

    def outer(k):
        return sum(parallel.run(lambda j: 10 * k + j, [0, 1, 2]))

    assert parallel.run(outer, [0, 1]) == [3, 33]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 8, 5), (3, 8, 70)])  # split by rows / by columns
def test_matmul_and_add_matmul_match_numpy(split_everything, dtype, shape):
    M, K, N = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(parallel.matmul(a, b), a @ b, rtol=tol, atol=tol)
    out = np.empty((M, N), dtype=dtype)
    assert parallel.matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, a @ b, rtol=tol, atol=tol)
    # transposed views as the backward passes use them: (a.T).T and c += a.T @ (a @ b)
    at = np.ascontiguousarray(a.T)
    np.testing.assert_allclose(parallel.matmul(at.T, b), a @ b, rtol=tol, atol=tol)
    c = rng.standard_normal((K, N)).astype(dtype)
    expected = c + a.T @ (a @ b)
    parallel.add_matmul(c, a.T, a @ b)
    np.testing.assert_allclose(c, expected, rtol=tol, atol=tol)
    bias = np.zeros(N, dtype=dtype)  # a 1-row result through a (1, N) view, as db uses it
    parallel.add_matmul(bias[None, :], np.ones((1, M), dtype=dtype), a @ b)
    np.testing.assert_allclose(bias, (a @ b).sum(axis=0), rtol=tol, atol=tol * M)


def test_each_is_exact_and_sees_every_element(split_everything):
    rng = np.random.default_rng(1)
    p = rng.standard_normal((37, 11))
    g = rng.standard_normal((37, 11))
    expected = p - 0.5 * g
    sizes = []

    def step(pb, gb):
        sizes.append(pb.size)
        pb -= 0.5 * gb

    parallel.each(step, p, g)
    assert len(sizes) == 2 and sum(sizes) == p.size
    np.testing.assert_array_equal(p, expected)  # element-wise: bit for bit
    with pytest.raises(ValueError, match="different sizes"):
        parallel.each(step, p, g[:3])


@pytest.mark.parametrize("threads", [1, 2])
def test_each_in_blocks_of_at_most_block_elements(split_everything, threads):
    """``block``: the calls see consecutive pieces of at most that size, every element once."""
    parallel.use_threads(threads)
    p = np.arange(95.0)
    seen = []
    parallel.each(lambda b: (seen.append((b[0], b.size)), b.__imul__(2)), p, block=10)
    assert all(size <= 10 for _, size in seen) and sum(size for _, size in seen) == 95
    assert len(seen) == 10  # 95 = 9 x 10 + 5; on two threads 47 = 4 x 10 + 7 and 48
    np.testing.assert_array_equal(p, 2 * np.arange(95.0))


# -- whole models: threads on and off compute the same step ------------------------------
def _train_step(model, optimizer, xs, ts):
    model.zero_grads()
    loss = float(model.forward(xs, ts))
    model.backward()
    norm = clip_grads(model.grads, 0.5)
    optimizer.update(model.params, model.grads)
    return loss, norm


def _models():
    return {
        "rnnlm-lstm": lambda: Rnnlm(40, 6, 7, cell="lstm", seed=3, dtype=np.float64),
        "better-gru-tied": lambda: BetterRnnlm(
            40, 8, 8, num_layers=2, cell="gru", seed=4, dtype=np.float64, dropout_ratio=0.0
        ),
        "better-rnn-untied": lambda: BetterRnnlm(
            40,
            6,
            9,
            num_layers=2,
            cell="rnn",
            seed=5,
            dtype=np.float64,
            tie_weights=False,
            dropout_ratio=0.0,
        ),
    }


@pytest.mark.parametrize("name", list(_models()))
@pytest.mark.parametrize("opt", [SGD, Adam])
def test_training_steps_equal_with_threads_on_and_off(monkeypatch, threads_off_after, name, opt):
    rng = np.random.default_rng(7)
    batches = [(rng.integers(0, 40, (6, 5)), rng.integers(0, 40, (6, 5))) for _ in range(3)]
    runs = {}
    for n in (1, 2):
        if n == 2:  # split everything, even at these tiny shapes
            for attr, value in [
                ("MIN_FLOPS", 1),
                ("MIN_ELEMENTS", 4),
                ("MIN_ROWS", 2),
                ("MIN_COLS", 2),
            ]:
                monkeypatch.setattr(parallel, attr, value)
            monkeypatch.setattr(loss_module, "_BLOCK_ELEMENTS", 64)
            monkeypatch.setattr(loss_module, "_FUSED_BLOCK_ELEMENTS", 64)
            monkeypatch.setattr(loss_module, "_FUSED_MIN_ROWS", 1)
        parallel.use_threads(n)
        model = _models()[name]()
        optimizer = opt(lr=0.1)
        trace = [_train_step(model, optimizer, xs, ts) for xs, ts in batches]
        model.eval()
        trace.append((float(model.forward(*batches[0])), 0.0))
        runs[n] = (trace, [p.copy() for p in model.params])
    (trace1, params1), (trace2, params2) = runs[1], runs[2]
    np.testing.assert_allclose(trace2, trace1, rtol=1e-12, atol=1e-14)
    for p1, p2 in zip(params1, params2):
        np.testing.assert_allclose(p2, p1, rtol=1e-11, atol=1e-13)


def test_each_command_has_its_measured_default(monkeypatch):
    """eval: every core; generate (and train, before its model is known): BLAS's threads;
    NPGATED_THREADS overrides."""
    from npgated import cli

    parser = cli.build_parser()
    monkeypatch.delenv(parallel.ENV_VAR, raising=False)
    wanted = {
        argv[0]: parallel.requested_threads(getattr(parser.parse_args(argv), "threads", 1))
        for argv in (["eval", "run"], ["train", "--dry-run"], ["generate", "run"])
    }
    assert wanted == {"eval": parallel.available_cores(), "train": 1, "generate": 1}
    monkeypatch.setenv(parallel.ENV_VAR, "2")
    assert parallel.requested_threads(1) == parallel.requested_threads(None) == 2


def test_pieces_run_under_the_callers_errstate(threads_off_after):
    """NumPy keeps errstate per thread: a worker's piece must see the caller's."""
    import warnings

    parallel.use_threads(2)
    x = np.array([1.0, -1.0])  # the second piece (on a worker thread) takes log(-1)

    def piece(i):
        return np.log(x[i : i + 1])

    with np.errstate(invalid="raise"), pytest.raises(FloatingPointError):
        parallel.run(piece, [0, 1])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("error")
        out = parallel.run(piece, [0, 1])
    assert np.isnan(out[1][0])


def test_training_threads_follow_the_recurrent_product(monkeypatch):
    """npgated train: its threads when h @ Wh is too small to split (book-small), else BLAS's."""
    from npgated import cli
    from npgated.training.config import PRESETS, TrainConfig

    monkeypatch.delenv(parallel.ENV_VAR, raising=False)
    chosen = {
        name: cli._training_threads(TrainConfig(**PRESETS[name]))
        for name in ("book-small", "book-better", "zaremba-small", "cpu-hour")
    }
    assert chosen == {"book-small": None, "book-better": 1, "zaremba-small": 1, "cpu-hour": 1}
    assert parallel.requested_threads(chosen["book-small"]) == parallel.available_cores()
