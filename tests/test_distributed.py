"""Data-parallel training (npgated/distributed.py).

In-process unit tests (no MPI): the stream split, the packed gradient buffer and the
global-norm clipping of the reduced buffer, the reduction simulated by adding the ranks'
buffers. Then a few ``mpiexec -n 2`` runs of the CLI on a tiny model in float64 with
variational, recurrent and embedding dropout, weight drop, AR/TAR and tying: the same
parameters and perplexities as one process, resume after a signal on one rank, a rank
failure that ends the job, and the launcher without mpi4py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npgated import backend, cli, distributed
from npgated.models.rnnlm import BetterRnnlm
from npgated.optim.clip import clip_grads
from npgated.training.checkpoint import load_checkpoint

HERE = Path(__file__).parent
FAULT_SCRIPT = HERE / "mpi_scripts" / "cli_with_fault.py"
MPI_TIMEOUT = 120  # seconds; a healthy run takes a few


# ---------------------------------------------------------------------------------------
# the stream split and the small pure helpers
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("N, K", [(4, 1), (4, 2), (20, 4), (6, 3)])
def test_shard_gives_each_rank_its_contiguous_streams(N, K):
    parts = [distributed.shard(N, r, K) for r in range(K)]
    assert parts[0][0] == 0 and parts[-1][1] == N
    assert all(stop - start == N // K for start, stop in parts)
    assert all(parts[r][1] == parts[r + 1][0] for r in range(K - 1))
    assert parts[1 % K] == ((1 % K) * N // K, ((1 % K) + 1) * N // K)


def test_shard_refuses_an_uneven_split():
    with pytest.raises(ValueError, match="20 streams cannot be split evenly over 3 ranks"):
        distributed.shard(20, 0, 3)


def test_blas_threads_and_device_share_the_machine():
    assert distributed.blas_threads(2, 2) == 1
    assert distributed.blas_threads(16, 3) == 5
    assert distributed.blas_threads(2, 4) == 1  # never 0
    assert [distributed.device_for(r, 2) for r in range(4)] == [0, 1, 0, 1]
    with pytest.raises(distributed.DistributedError, match="no GPU"):
        distributed.device_for(0, 0)


def test_launcher_detection():
    assert distributed.DataParallel.from_launcher({}) is None  # no launcher: plain run
    assert distributed.DataParallel.from_launcher({"PMI_RANK": "0", "PMI_SIZE": "1"}) is None
    env = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4"}
    assert distributed.launcher_env({**env, "HOME": "/"}) == env


def test_launcher_without_mpi4py_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now fails
    with pytest.raises(distributed.DistributedError, match=r"pip install npgated\[mpi\]"):
        distributed.DataParallel.from_launcher({"PMI_RANK": "1", "PMI_SIZE": "2"})
    with pytest.raises(distributed.DistributedError, match="PMIX_RANK=0"):  # size unknown
        distributed.DataParallel.from_launcher({"PMIX_RANK": "0"})


def test_cli_under_a_launcher_without_mpi4py_exits_with_one_line(tmp_path):
    """Every rank of ``mpiexec -n 2 npgated train`` without mpi4py: exit 2, one line, no run."""
    code = (
        "import sys; sys.modules['mpi4py'] = None; from npgated import cli; "
        "sys.exit(cli.main(sys.argv[1:]))"
    )
    env = {**_clean_env(), "PMI_RANK": "1", "PMI_SIZE": "2"}
    run = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "train",
            "--dry-run",
            "--run-dir",
            str(run),
            "--data-dir",
            str(tmp_path / "nodata"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install npgated[mpi]" in lines[0], proc.stderr
    assert not run.exists()


# ---------------------------------------------------------------------------------------
# the packed buffer and the clipping of the reduced gradient, two ranks simulated
# ---------------------------------------------------------------------------------------
class _StubComm:
    """Rank and size only: the reduction is done by the test."""

    def __init__(self, rank, size):
        self._rank, self._size = rank, size

    def Get_rank(self):
        return self._rank

    def Get_size(self):
        return self._size


def _tiny_model(seed=3, flat=None):
    return BetterRnnlm(
        vocab_size=11,
        wordvec_size=6,
        hidden_size=6,
        num_layers=2,
        dropout_ratio=0.3,
        variational=True,
        tie_weights=True,
        seed=seed,
        dtype=np.float64,
        recurrent_dropout=0.2,
        weight_drop=0.2,
        embedding_dropout=0.1,
        flat=flat,
    )


def _batch(rng, N=4, T=5, V=11, ignored=()):
    xs = rng.integers(0, V, size=(N, T))
    ts = rng.integers(0, V, size=(N, T))
    for row, col in ignored:
        ts[row, col] = -1
    return xs, ts


def test_buffer_packs_unique_gradients_once(xp_name):
    model = _tiny_model()
    buf = distributed.GradientBuffer(model.grads)
    assert buf.size == model.num_params()  # the tied (V, D) matrix once
    assert len(buf.views) == len(model.grads)
    for g in model.grads:
        g[...] = backend.to_device(np.arange(g.size, dtype=np.float64).reshape(g.shape), like=g)
    host = buf.pack(loss_sum=2.5, count=7, sigint=True)
    assert isinstance(host, np.ndarray) and host.shape == (buf.size + 4,)
    assert host[buf.size :].tolist() == [2.5, 7.0, 1.0, 0.0]
    start = 0
    for g in model.grads:
        np.testing.assert_array_equal(host[start : start + g.size], np.arange(g.size))
        start += g.size
    assert buf.pack(0.0, 1) is host or xp_name != "numpy"  # NumPy: one buffer, reused


@pytest.mark.parametrize("flat_on", [True, False], ids=["in-place", "packed"])
@pytest.mark.parametrize("max_grad_norm", [0.0, 0.05])
def test_reduced_buffer_gives_the_clipped_gradient_of_the_global_batch(
    xp_name, rng, max_grad_norm, flat_on
):
    """Two ranks' buffers summed and finished == one process on the whole batch.

    In place (the model's flat gradient buffer itself is reduced, the four scalars in its
    spare tail) and packed (separate gradient arrays copied into a buffer and back): the
    same numbers.

    Tied weights, variational, recurrent and embedding dropout and weight drop (masks of the
    global batch, each rank its rows), and
    ignored targets spread unevenly (rank 0 counts 8 targets, rank 1 counts 10), so the
    weighting by target counts matters; 0.05 clips (the norm is about 0.1), 0 does not.
    """
    xs, ts = _batch(rng, ignored=[(0, 1), (1, 0)])
    single = _tiny_model()
    single.zero_grads()
    loss_single = float(single.forward(xs, ts))
    single.backward()
    if max_grad_norm > 0:
        norm_single = clip_grads(single.grads, max_grad_norm)
    else:
        norm_single = clip_grads(single.grads, np.inf)
    assert max_grad_norm == 0 or norm_single > max_grad_norm  # the clipping case clips

    ranks = [distributed.DataParallel(_StubComm(r, 2)) for r in range(2)]
    models = [_tiny_model(flat=flat_on) for _ in ranks]
    hosts = []
    for dp, model in zip(ranks, models):
        dp.attach(model, batch_size=4)
        assert model.layers["drop0"].batch_shard == (dp.start, dp.stop, 4)
        assert dp.buffer.in_place == flat_on
        if flat_on:  # the model's own gradient buffer, nothing packed
            assert dp.buffer.flat is model.flat_buffers[0].storage
        hosts.append(dp.local_gradients(model, xs, ts))
    total = hosts[0] + hosts[1]  # what the Allreduce leaves in every rank's buffer
    assert total[-3] == 18  # the global count of targets
    for dp, model, host in zip(ranks, models, hosts):
        host[...] = total
        loss, norm = dp.buffer.finish(max_grad_norm)
        assert loss == pytest.approx(loss_single, rel=1e-12)
        assert norm == pytest.approx(norm_single, rel=1e-12)
        for name, g, ref in zip(model.param_names, model.grads, single.grads):
            np.testing.assert_allclose(
                backend.to_cpu(g), backend.to_cpu(ref), rtol=1e-10, atol=1e-15, err_msg=name
            )


def test_finish_reports_agreed_stop_requests():
    dp = distributed.DataParallel(_StubComm(0, 2))
    model = _tiny_model()
    dp.attach(model, batch_size=4)

    class Local:
        signum = signal.SIGTERM

    stop = dp.agreed_stop(Local())
    assert stop.signum is None  # nothing agreed yet
    host = dp.local_gradients(model, *_batch(np.random.default_rng(0)))
    assert host[-1] == 1.0 and host[-2] == 0.0  # SIGTERM travels in the buffer
    dp.allreduce = lambda h: None  # a reduction over one rank: the buffer as it is
    dp.gradients(model, *_batch(np.random.default_rng(0)), max_grad_norm=0.25)
    assert stop.signum == signal.SIGTERM
    stop.signum = signal.SIGINT  # what the loop sets itself (stop_after) applies at once
    assert stop.signum == signal.SIGINT


class _DisagreeingComm(_StubComm):
    """Two ranks whose second one reports other digests for ``differ``."""

    def __init__(self, differ):
        super().__init__(0, 2)
        self.differ = differ

    def allgather(self, items):
        return [items, {k: (v + "x" if k in self.differ else v) for k, v in items.items()}]


@pytest.mark.parametrize("what", ["configuration", "initial parameters", "training data"])
def test_start_check_names_what_differs(what):
    from npgated.training.config import TrainConfig  # noqa: PLC0415
    from npgated.training.loop import Progress  # noqa: PLC0415

    dp = distributed.DataParallel(_DisagreeingComm({what}))
    model = _tiny_model()
    with pytest.raises(
        distributed.DistributedError, match=f"ranks disagree on the {what} at the start"
    ):
        dp.check_start(TrainConfig(), model, np.arange(50), "abc", Progress())
    dp = distributed.DataParallel(_DisagreeingComm({"parameters"}))
    with pytest.raises(
        distributed.DistributedError, match="ranks disagree on the parameters after epoch 3"
    ):
        dp.check_params(model, 3)
    distributed.DataParallel(_DisagreeingComm(set())).check_params(model, 3)  # agreement


# ---------------------------------------------------------------------------------------
# mpiexec -n 2
# ---------------------------------------------------------------------------------------
def _mpiexec():
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed (pip install -e .[mpi])")
    found = Path(sys.executable).with_name("mpiexec")
    found = str(found) if found.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec next to the Python executable or on PATH")
    return found


def _clean_env():
    env = {
        k: v
        for k, v in os.environ.items()
        if not any(k in pair for pair in distributed.LAUNCHER_VARS)
    }
    env["MPLBACKEND"] = "Agg"
    return env


TINY = [
    "--model",
    "BetterRnnlm",
    "--num-layers",
    "2",
    "--wordvec-size",
    "8",
    "--hidden-size",
    "8",
    "--tie-weights",
    "--dropout",
    "0.3",
    "--variational",
    "--batch-size",
    "4",
    "--time-size",
    "5",
    "--lr",
    "1.0",
    "--epochs",
    "2",
    "--max-iters",
    "4",
    "--dtype",
    "float64",
    "--no-progress",
    "--log-interval",
    "2",
    # every regularizer that draws per-stream masks (batch_shard) or adds a penalty
    "--recurrent-dropout",
    "0.2",
    "--weight-drop",
    "0.2",
    "--embedding-dropout",
    "0.1",
    "--ar",
    "2",
    "--tar",
    "1",
]


def _mpi(args, timeout=MPI_TIMEOUT, env=None):
    cmd = [_mpiexec(), "-n", "2", sys.executable, *args]
    return subprocess.run(
        cmd, env={**_clean_env(), **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def _train_args(data, run_dir):
    return ["train", "--data-dir", str(data), "--run-dir", str(run_dir), *TINY]


def _params(run_dir):
    with np.load(Path(run_dir) / "last.npz") as z:
        return {k: z[k] for k in z.files if k.startswith("params/")}


def _ppls(run_dir):
    records = [
        json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    ]
    return [r["ppl"] for r in records if r["kind"] in ("valid", "test")]


def _max_rel_diff(a, b):
    assert a.keys() == b.keys()
    return max(np.linalg.norm(a[k] - b[k]) / max(np.linalg.norm(b[k]), 1e-300) for k in a)


@pytest.fixture(scope="module")
def mpi_runs(tmp_path_factory):
    """One single-process run (in-process CLI) and the same run under mpiexec -n 2."""
    _mpiexec()
    spec = importlib.util.spec_from_file_location("_npgated_conftest", HERE / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    write_synthetic_ptb = conftest.write_synthetic_ptb

    root = tmp_path_factory.mktemp("mpi")
    data = write_synthetic_ptb(root / "data", n_train=800, n_eval=200)
    assert cli.main([*_train_args(data, root / "single"), "-q"]) == 0
    proc = _mpi(["-m", "npgated.cli", *_train_args(data, root / "mpi")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return data, root, proc


def test_mpi_run_equals_the_single_process_run(mpi_runs):
    data, root, proc = mpi_runs
    assert _max_rel_diff(_params(root / "mpi"), _params(root / "single")) <= 1e-9
    mpi_ppl, single_ppl = _ppls(root / "mpi"), _ppls(root / "single")
    assert len(mpi_ppl) == len(single_ppl) == 3  # two validations and the test
    np.testing.assert_allclose(mpi_ppl, single_ppl, rtol=1e-9)
    assert proc.stdout.count("test perplexity") == 1  # rank 0 alone reports

    evals = _mpi(
        [
            "-m",
            "npgated.cli",
            "eval",
            str(root / "mpi"),
            "--data-dir",
            str(data),
            "--split",
            "valid",
            "--batch-size",
            "4",
        ]
    )
    assert evals.returncode == 0, evals.stderr
    assert (
        cli.main(
            [
                "eval",
                str(root / "single"),
                "--data-dir",
                str(data),
                "--split",
                "valid",
                "--batch-size",
                "4",
            ]
        )
        == 0
    )
    assert evals.stdout.strip().splitlines()[-1].startswith("valid perplexity")


def test_mpi_in_place_allreduce_equals_the_packed_one(mpi_runs, tmp_path):
    """The same mpiexec -n 2 run with separate gradient arrays (NPGATED_FLAT=0: packed into
    a buffer, reduced, unpacked) ends where the in-place run on the flat buffer ends."""
    data, root, _ = mpi_runs
    proc = _mpi(
        ["-m", "npgated.cli", *_train_args(data, tmp_path / "packed")], env={"NPGATED_FLAT": "0"}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _max_rel_diff(_params(tmp_path / "packed"), _params(root / "mpi")) <= 1e-12
    np.testing.assert_allclose(_ppls(tmp_path / "packed"), _ppls(root / "mpi"), rtol=1e-12)


def test_mpi_resume_after_a_signal_on_one_rank(mpi_runs):
    """SIGINT on rank 1 only: both ranks stop (exit 130); --resume ends where the full run does."""
    data, root, _ = mpi_runs
    run = root / "resumed"
    proc = _mpi([str(FAULT_SCRIPT), "1", "2", "sigint", "--", *_train_args(data, run)])
    assert proc.returncode == 128 + signal.SIGINT, proc.stdout + proc.stderr
    # rank 1's signal after step 2 travels in step 3's buffer: both stop after step 3
    assert load_checkpoint(run / "last.npz").meta["progress"]["total_iterations"] == 3
    proc = _mpi(["-m", "npgated.cli", *_train_args(data, run), "--resume"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resumed from" in proc.stdout
    assert _max_rel_diff(_params(run), _params(root / "mpi")) <= 1e-12
    np.testing.assert_allclose(_ppls(run), _ppls(root / "mpi"), rtol=1e-12)


def test_a_failing_rank_ends_the_job(tmp_path, mpi_runs):
    data, _, _ = mpi_runs
    proc = _mpi(
        [str(FAULT_SCRIPT), "1", "2", "raise", "--", *_train_args(data, tmp_path / "run")],
        timeout=60,
    )  # a hang fails here
    assert proc.returncode != 0
    assert "injected failure on rank 1" in proc.stderr


def test_bench_ranks_smoke_and_scaling_model(tmp_path):
    """benchmarks/bench.py --ranks 2 --smoke runs end to end; scaling.py reads its report."""
    _mpiexec()
    root = HERE.parent / "benchmarks"
    out = tmp_path / "ranks.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(root / "bench.py"),
            "--ranks",
            "2",
            "--smoke",
            "--presets",
            "book-small",
            "--out",
            str(out),
        ],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=MPI_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    case = json.loads(out.read_text())["cases"][0]
    assert case["single"]["tok_s"] > 0 and case["ranks"]["tok_s"] > 0
    assert 0 <= case["ranks"]["allreduce_share_in_step"] < 1
    assert "touched_rows" in case["ranks"]  # book-small is untied

    spec = importlib.util.spec_from_file_location("npgated_scaling", root / "scaling.py")
    scaling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scaling)
    # the ring model: 2 (K-1)/K of the bytes per link, 2 (K-1) latencies; nothing for K = 1
    assert scaling.ring_allreduce_seconds(1, 1e6, 1e9, 1e-5) == 0.0
    assert scaling.ring_allreduce_seconds(4, 1e6, 8e9, 1e-5) == pytest.approx(1.5e-3 + 6e-5)
    png = tmp_path / "scaling.png"
    assert scaling.main(["--ranks-json", str(out), "--png", str(png)]) == 0
    assert png.stat().st_size > 0


def test_each_rank_takes_its_share_of_the_cores():
    """limit_blas_threads: with npgated's threads on, the rank's share goes to them (BLAS one
    thread per call); with them off, to BLAS; two ranks on a 2-core machine get one each."""
    from threadpoolctl import threadpool_info

    from npgated import parallel

    def blas():
        return {d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"}

    if not blas():
        pytest.skip("threadpoolctl sees no BLAS library to limit")
    alone = distributed.DataParallel(_StubComm(0, 1), local_rank=0, local_size=1)
    pair = distributed.DataParallel(_StubComm(0, 2), local_rank=0, local_size=2)
    try:
        parallel.use_threads(2)
        assert alone.limit_blas_threads(cores=2) == 2
        assert parallel.threads() == 2 and blas() == {1}
        assert pair.limit_blas_threads(cores=2) == 1
        assert parallel.threads() == 1 and blas() == {1}  # off, and BLAS limited to the share
        pair._blas_limit.restore_original_limits()
        parallel.use_threads(1)
        assert pair.limit_blas_threads(cores=4) == 2
        assert parallel.threads() == 1  # npgated's threads stay off ...
        if blas() != {2}:  # a BLAS built without threads cannot take 2
            pytest.skip(f"this BLAS does not run 2 threads (threadpoolctl: {blas()})")
        assert blas() == {2}  # ... and BLAS takes the share
    finally:
        for dp in (alone, pair):
            if getattr(dp, "_blas_limit", None) is not None:
                dp._blas_limit.restore_original_limits()
        parallel.use_threads(1)
