"""Data-parallel training on MPI: ``mpiexec -n K npgated train`` computes what one process does.

K processes (ranks) share one training run. Every rank holds the whole model and reads the
whole TBPTT batch of N streams, but computes only its rows: rank r gets the streams::

    start = r * N / K,  stop = (r + 1) * N / K          (N must be divisible by K)

so the global batch, the schedule and every hyperparameter are the single-process ones.
Each step (:meth:`DataParallel.gradients`), with K_r the targets rank r counts (its
non-ignored targets) and L_r the mean cross-entropy of its rows::

    D1  g_r = d(K_r * L_r) / d(theta)          backward with dout = K_r: the gradient of the
                                               rank's SUM of losses, at no extra cost
    D2  S = sum_r g_r,  K = sum_r K_r,  Lsum = sum_r K_r * L_r
                                               ONE in-place Allreduce of one buffer
    D3  g = S / K,  L = Lsum / K               the gradient and loss of the global mean loss
    D4  norm = ||S|| / K                       clipping on the global norm (C1 of clip.py)
    D5  g = S * rate,  rate = 1 / K,  times max_norm / (norm + 1e-6) if norm > max_norm
                                               C2 of clip.py fused with D3 into one pass

D3 weights every rank by its count of targets, so ``ignore_label`` stays exact. (Penalty
layers such as AR/TAR take ``dout`` as their weight too and average over the rank's own
elements; they are exact whenever every rank counts the same number of targets, as in
training from a corpus, where nothing is ignored.) Every rank
then applies the same update to the same numbers, so the parameters stay identical (checked
bit for bit after every epoch; a configuration, data and initial-parameter hash is compared
at the start). Dropout draws the *global* batch's mask from the shared seed and keeps the
rank's rows (``layer.batch_shard``, see :func:`npgated.layers.dropout.keep_mask`), so the
whole computation is the single-process one up to the order of floating-point sums.

The gradient buffer. A model with flat buffers (:mod:`npgated.flat`, the default) keeps
every unique gradient (a tied matrix once) as a view of one contiguous buffer that has four
spare elements at its end: the Allreduce runs **in place on that buffer**, and D5 scales it
in place, with no packing and no unpacking. Four scalars ride in the spare elements (the
loss sum, the target count, and whether a rank received SIGINT or SIGTERM), so one Allreduce
per step carries everything the ranks must agree on. A model with separate gradient arrays
(``NPGATED_FLAT=0``, or a layout the model could not flatten) gets the same buffer
preallocated here, and its gradients are *packed* into it and unpacked back, scaled by D5 in
the same pass (about 1 ms per book-small step). The embedding's
gradient is exchanged dense: exchanging only the rows of the batch's words was measured
(``benchmarks/bench.py --ranks 2``) and did not pay, as the output layer's (H, V) gradient is
as large and dense, and a tied embedding has every row touched.

Backends. NumPy: the buffer is reduced in place, nothing is allocated per step. CuPy: the
buffer lives on the device (packed there when the gradients are separate arrays) and is
staged through host memory for MPI (one device-to-host and
one host-to-device copy per step); each rank uses GPU ``local_rank % device_count``.

One writer. Rank 0 alone shows progress, logs, and writes ``metrics.jsonl``, the plot and the
checkpoints; the recurrent state saved in checkpoints is gathered from all ranks (the
single-process layout, N rows), so a run resumes bit for bit under MPI, and a checkpoint of
a single-process run resumes under MPI and vice versa.

Launch safety. Under an MPI launcher (its rank/size variables in the environment) without
``mpi4py``, every rank stops with one line (``pip install npgated[mpi]``) instead of K
independent runs writing one run directory. Under MPI, an error on any rank aborts all of
them (:func:`abort_if_running`): no rank waits forever in a collective.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from npgated import backend, flat, parallel
from npgated.launcher import LAUNCHER_VARS, launcher_env  # light: the CLI asks it first
from npgated.optim.clip import _TINY
from npgated.training.loop import Run

logger = logging.getLogger(__name__)

__all__ = [
    "DataParallel",
    "DistributedError",
    "GradientBuffer",
    "abort_if_running",
    "blas_threads",
    "device_for",
    "launcher_env",
    "shard",
]

INSTALL_HINT = "pip install npgated[mpi]"
_TAIL = ("loss_sum", "count", "sigint", "sigterm")  # scalars after the gradients in the buffer
# Where a run starts (compared across ranks at the start; timings are not compared)
_POSITION = ("epoch", "iteration", "total_iterations", "lr", "best_val_ppl", "schedule", "batcher")


class DistributedError(RuntimeError):
    """The ranks disagree (configuration, data, parameters) or MPI cannot be used."""


# ---------------------------------------------------------------------------------------
# pure helpers
# ---------------------------------------------------------------------------------------
def shard(n_global: int, rank: int, size: int) -> tuple[int, int]:
    """The streams ``start:stop`` of rank ``rank`` of ``size`` in a batch of ``n_global``.

    Raises ValueError if ``n_global`` is not divisible by ``size``.
    """
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} is not in 0..{size - 1}")
    if n_global % size:
        raise ValueError(
            f"batch size N = {n_global} streams cannot be split evenly over {size} ranks: "
            f"choose N divisible by {size} (e.g. --batch-size {max(size, n_global // size * size)})"
            f" or run with mpiexec -n K for a K that divides {n_global}"
        )
    per = n_global // size
    return rank * per, (rank + 1) * per


def _launched_size(found: dict) -> int | None:
    for _, size_var in LAUNCHER_VARS:
        if size_var and size_var in found:
            return int(found[size_var])
    return None  # launched, size unknown (PMIx, or only the local-rank variables)


def blas_threads(cores: int, local_ranks: int) -> int:
    """BLAS threads per rank: this machine's cores shared by the ranks on it (at least 1)."""
    return max(1, int(cores) // max(1, int(local_ranks)))


def device_for(local_rank: int, n_devices: int) -> int:
    """The GPU of a rank: ranks on one machine take its GPUs in turn."""
    if n_devices < 1:
        raise DistributedError("no GPU visible to this rank (CUDA device count is 0)")
    return local_rank % n_devices


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_ABORT_GRACE_S = 0.5  # seconds for the launcher to forward the error before an abort


def abort_if_running(code: int = 1) -> None:
    """Under MPI with several ranks, abort all of them with ``code`` (no rank left waiting).

    Does nothing when MPI was never started in this process (a single-process run), so it is
    safe to call from any error path.
    """
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is None or not MPI.Is_initialized() or MPI.Is_finalized():
        return
    if MPI.COMM_WORLD.Get_size() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        # The launcher forwards each rank's output through its own pipes; MPI_Abort tears
        # them down at once, and what this rank just wrote (the error) was lost now and then
        # (seen with MPICH's Hydra). A moment lets it through before every rank is stopped.
        time.sleep(_ABORT_GRACE_S)
        MPI.COMM_WORLD.Abort(int(code))


def rank_prefix() -> str:
    """``"rank r of K: "`` under MPI with several ranks, else ``""`` (for error lines)."""
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is None or not MPI.Is_initialized() or MPI.Is_finalized():
        return ""
    size = MPI.COMM_WORLD.Get_size()
    return f"rank {MPI.COMM_WORLD.Get_rank()} of {size}: " if size > 1 else ""


def _digest(*chunks) -> str:
    h = hashlib.blake2b(digest_size=16)
    for c in chunks:
        h.update(c if isinstance(c, bytes) else np.ascontiguousarray(backend.to_cpu(c)).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# the gradient buffer
# ---------------------------------------------------------------------------------------
class GradientBuffer:
    """One contiguous buffer holding every unique gradient, then four scalars (see D2).

    Parameters
    ----------
    grads : list of arrays
        The model's unique gradients (``model.grads``: a tied matrix once), one dtype and one
        backend.
    storage : (P + 4,) array, optional
        The model's own gradient buffer (``model.flat_buffers[0].storage``), of which
        ``grads`` are the consecutive pieces followed by four spare elements: then it *is*
        the buffer, reduced in place (``in_place``), and nothing is packed. Without it a
        buffer is allocated and the gradients are copied in and out.

    Attributes
    ----------
    flat : (P + 4,) array on the gradients' backend
        ``flat[:P]`` the gradients (P scalars in all), ``flat[P:]`` the loss sum,
        the target count and the two stop flags.
    size : int
        P.
    in_place : bool
        ``flat`` is the model's gradient buffer (no packing, no unpacking).
    """

    def __init__(self, grads, storage=None):
        grads = list(grads)
        if not grads:
            raise ValueError("a model without parameters has no gradients to exchange")
        dtype = grads[0].dtype
        for g in grads:
            if g.dtype != dtype:
                raise TypeError(f"all gradients must share one dtype, got {dtype} and {g.dtype}")
        xp = backend.get_array_module(grads[0])
        self.grads = grads
        self.size = sum(int(g.size) for g in grads)
        self.in_place = storage is not None
        if self.in_place:
            if storage.size != self.size + len(_TAIL) or not flat.tiles(
                grads, storage[: self.size]
            ):
                raise ValueError(
                    f"storage must be the ({self.size} + {len(_TAIL)},) buffer of which the "
                    "gradients are the consecutive pieces (model.flat_buffers[0].storage)"
                )
            self.flat = storage
            self.views = grads  # the gradients live in the buffer already
        else:
            self.flat = xp.zeros(self.size + len(_TAIL), dtype=dtype)
            # Views of the buffer shaped like each gradient, made once (no per-step objects).
            self.views = flat.views_like(self.flat[: self.size], grads)
        self.on_device = xp is not np
        self.host = self.flat if not self.on_device else None

    def pack(
        self, loss_sum: float, count: float, sigint: bool = False, sigterm: bool = False
    ) -> np.ndarray:
        """The scalars in (and the gradients, unless in place); returns the host array to
        reduce in place."""
        if not self.in_place:
            for g, v in zip(self.grads, self.views):
                v[...] = g  # D2 (packing)
        if self.on_device:  # stage through host memory for MPI
            self.host = backend.to_cpu(self.flat)
        self.host[self.size :] = (loss_sum, count, float(sigint), float(sigterm))
        return self.host

    def tail(self) -> dict:
        """The four reduced scalars as Python floats."""
        return dict(zip(_TAIL, (float(v) for v in self.host[self.size :])))

    def finish(self, max_grad_norm: float) -> tuple[float, float]:
        """After the Allreduce: unpack ``S`` into the gradients as the clipped mean gradient.

        Parameters
        ----------
        max_grad_norm : float
            Clip threshold on the global norm of the mean gradient (0 or inf: no clipping).

        Returns
        -------
        (loss, norm) : the global mean loss and the global norm before clipping (D3, D4).
        """
        tail = self.tail()
        K = max(tail["count"], 1.0)
        S = self.host[: self.size]
        norm = math.sqrt(float(S @ S)) / K  # D4 (C1 on the mean gradient S / K)
        rate = 1.0 / K  # D3
        if max_grad_norm > 0 and math.isfinite(norm) and norm > max_grad_norm:
            rate *= max_grad_norm / (norm + _TINY)  # D5 (C2)
        if self.on_device:
            self.flat[...] = backend.to_device(self.host, like=self.flat)
        xp = backend.get_array_module(self.flat)
        if self.in_place:
            S = self.flat[: self.size]
            xp.multiply(S, rate, out=S)  # D5: the model's gradients, scaled where they are
        else:
            for g, v in zip(self.grads, self.views):
                xp.multiply(v, rate, out=g)  # D5: unpacking and scaling in one pass
        return tail["loss_sum"] / K, norm  # D3


class _AgreedStop:
    """The training loop's stop flag under MPI: only what every rank knows.

    A signal reaches one rank at any moment; acting on it at once would leave the others
    waiting in the next Allreduce. So the local request (``local.signum``, set by the signal
    handler) travels in the next step's buffer, and ``signum`` is the agreed result of the
    last step. Requests the loop sets itself (``stop_after``) are the same on every rank and
    apply at once.
    """

    def __init__(self, local):
        self.local = local
        self.agreed = None
        self.forced = None

    @property
    def signum(self):
        return self.forced if self.forced is not None else self.agreed

    @signum.setter
    def signum(self, value):
        self.forced = value


class _FollowerRun(Run):
    """The run directory as seen by ranks other than 0: read (resume, best), never write."""

    def __init__(self, run_dir, config):  # no mkdir, no config.json
        self.dir = Path(run_dir)
        self.config = config
        self.metrics_path = self.dir / "metrics.jsonl"

    def log(self, record: dict) -> None:
        pass

    def plot(self) -> None:
        pass


# ---------------------------------------------------------------------------------------
# the data-parallel context
# ---------------------------------------------------------------------------------------
class DataParallel:
    """One rank's view of a data-parallel run (see the module docstring).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        The ranks of the run (``MPI.COMM_WORLD``).
    local_rank, local_size : int
        This rank's index among the ranks on its machine, and their number.

    Build it with :meth:`from_launcher`; :meth:`attach` a model to it.
    """

    def __init__(self, comm, local_rank: int = 0, local_size: int = 1):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.local_rank = int(local_rank)
        self.local_size = int(local_size)
        self.buffer = None
        self.start = self.stop = self.n_global = None
        self._stop = None
        self._blas_limit = None

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_launcher(cls, environ=None):
        """The context of this process when an MPI launcher started several ranks, else None.

        Raises
        ------
        DistributedError
            Launched by an MPI launcher (its variables are set) for more than one rank, or for
            an unknown number of ranks, but ``mpi4py`` cannot be imported.
        """
        found = launcher_env(environ)
        if not found:
            return None
        size = _launched_size(found)
        if size == 1:
            return None
        try:
            from mpi4py import MPI  # noqa: PLC0415 (optional dependency)
        except ImportError:
            seen = ", ".join(f"{k}={v}" for k, v in sorted(found.items()))
            raise DistributedError(
                f"started by an MPI launcher ({seen}) but mpi4py is not installed, so the "
                f"ranks cannot cooperate: {INSTALL_HINT} (or run without mpiexec)"
            ) from None
        comm = MPI.COMM_WORLD
        if comm.Get_size() == 1:
            return None
        local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
        dp = cls(comm, local.Get_rank(), local.Get_size())
        local.Free()
        dp.limit_blas_threads()
        return dp

    def limit_blas_threads(self, cores: int | None = None) -> int:
        """Give this rank its share of the machine's cores; returns that share.

        When npgated's own threads are on (:mod:`npgated.parallel`, as the command line
        starts them) the rank's share goes to them (BLAS then runs one thread per call);
        otherwise to BLAS (threadpoolctl).
        """
        from threadpoolctl import threadpool_limits  # noqa: PLC0415

        n = blas_threads(_cores() if cores is None else cores, self.local_size)
        if parallel.threads() > 1:
            parallel.use_threads(n)  # n == 1 turns them off and gives BLAS its threads back
        if parallel.threads() == 1:
            self._blas_limit = threadpool_limits(limits=n, user_api="blas")  # kept for the run
        return n

    def use_local_device(self) -> int | None:
        """With the CuPy backend, make GPU ``local_rank % device_count`` current; else None."""
        if backend.current() != "cupy":
            return None
        cupy = backend.xp()
        device = device_for(self.local_rank, cupy.cuda.runtime.getDeviceCount())
        cupy.cuda.Device(device).use()
        return device

    def attach(self, model, batch_size: int, gradients: bool = True) -> None:
        """Make ``model`` compute this rank's share of a batch of ``batch_size`` streams.

        Sets ``batch_shard`` on every layer that has it (dropout masks for the global batch),
        allocates the gradient buffer (unless ``gradients=False``: evaluation only), and sets
        ``model.data_parallel = self`` (read by the training loop, evaluation and
        checkpointing).
        """
        self.n_global = int(batch_size)
        self.start, self.stop = shard(self.n_global, self.rank, self.size)
        for layer in model.layers.values():
            if hasattr(layer, "batch_shard"):
                layer.batch_shard = (self.start, self.stop, self.n_global)
        self.buffer = None
        if gradients:  # the model's own gradient buffer when it has one: reduced in place
            fb = getattr(model, "flat_buffers", [])
            storage = (
                fb[0].storage
                if len(fb) == 1
                and fb[0].spare.size == len(_TAIL)
                and flat.tiles(model.grads, fb[0].grads)
                else None
            )
            self.buffer = GradientBuffer(model.grads, storage)
        model.data_parallel = self

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def run_dir(self, run_dir, config) -> Run:
        """Rank 0's :class:`Run` writes; the others only read the same directory."""
        return Run(run_dir, config) if self.is_writer else _FollowerRun(run_dir, config)

    # -- rows -------------------------------------------------------------------------------
    def rows(self, a):
        """This rank's rows of a batch-major array (its streams of ``a.shape[0]``)."""
        start, stop = shard(a.shape[0], self.rank, self.size)
        return a[start:stop]

    # -- one training step -----------------------------------------------------------------
    def agreed_stop(self, local):
        """Wrap the loop's stop flag (see :class:`_AgreedStop`)."""
        self._stop = _AgreedStop(local)
        return self._stop

    def gradients(self, model, xs, ts, max_grad_norm: float) -> tuple[float, float]:
        """zero_grads, forward, backward on this rank's rows, Allreduce, clip: D1..D5.

        Parameters
        ----------
        model : LanguageModel
            Attached to this context (:meth:`attach`).
        xs, ts : (N, T) int arrays
            The global batch (every rank reads the same).
        max_grad_norm : float
            As ``config.max_grad_norm`` (0: no clipping).

        Returns
        -------
        (loss, norm) : the global mean loss and the global gradient norm before clipping;
        ``model.grads`` hold the clipped gradient of the global mean loss, on every rank.
        """
        host = self.local_gradients(model, xs, ts)  # D1
        self.allreduce(host)  # D2
        loss, norm = self.buffer.finish(max_grad_norm)  # D3, D4, D5
        if self._stop is not None:
            tail = self.buffer.tail()
            if tail["sigterm"] > 0:
                self._stop.agreed = signal.SIGTERM
            elif tail["sigint"] > 0:
                self._stop.agreed = signal.SIGINT
        return loss, norm

    def local_gradients(self, model, xs, ts) -> np.ndarray:
        """D1 on this rank's rows of the global batch, packed: the host array to reduce.

        The buffer holds the gradient of the rank's *sum* of losses (backward with dout =
        its count of targets), the loss sum, the count and this rank's stop requests.
        """
        xs, ts = xs[self.start : self.stop], ts[self.start : self.stop]
        model.zero_grads()
        loss = float(model.forward(xs, ts))
        ignore = getattr(model.layers.get("loss"), "ignore_label", None)
        count = ts.size if ignore is None else int((backend.to_cpu(ts) != ignore).sum())
        model.backward(float(count))  # D1: the gradient of the rank's sum of losses
        signum = getattr(getattr(self._stop, "local", None), "signum", None)
        return self.buffer.pack(
            loss * count, count, signum == signal.SIGINT, signum == signal.SIGTERM
        )

    def allreduce(self, host) -> None:
        """Sum ``host`` (a contiguous host array) over the ranks, in place."""
        from mpi4py import MPI  # noqa: PLC0415

        self.comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)

    # -- evaluation, state, agreement ----------------------------------------------------
    def sum_over_ranks(self, *values: float) -> tuple[float, ...]:
        """Python floats summed over the ranks (evaluation totals)."""
        from mpi4py import MPI  # noqa: PLC0415

        buf = np.array(values, dtype=np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return tuple(float(v) for v in buf)

    def barrier(self) -> None:
        self.comm.Barrier()

    def gather_recurrent_state(self, model) -> dict | None:
        """The whole batch's recurrent state on rank 0 (N rows, the single-process layout).

        Collective: every rank calls it; rank 0 gets the dict, the others None.
        """
        parts = self.comm.gather(model.recurrent_state(), root=0)
        if not self.is_writer:
            return None
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}

    def local_recurrent_state(self, state: dict) -> dict:
        """This rank's rows of a saved (N-row) recurrent state."""
        out = {}
        for name, a in state.items():
            if a.shape[0] != self.n_global:
                raise DistributedError(
                    f"saved recurrent state {name} has {a.shape[0]} rows but the batch has "
                    f"N = {self.n_global} streams: resume with the batch size it was saved with"
                )
            out[name] = a[self.start : self.stop]
        return out

    def check_same(self, items: dict, when: str) -> None:
        """Compare ``{what: digest}`` across ranks; raise naming the first that differs."""
        every = self.comm.allgather(items)
        for name in items:
            for r, other in enumerate(every):
                if other.get(name) != every[0].get(name):
                    raise DistributedError(
                        f"the ranks disagree on the {name} {when} (rank 0: "
                        f"{every[0].get(name)}, rank {r}: {other.get(name)}); every rank must "
                        "run the same command on the same data and code; stopping all ranks"
                    )

    def check_start(self, config, model, corpus, vocab_checksum, progress) -> None:
        """Compare the configuration, data, position and initial parameters of all ranks."""
        self.check_same(
            {
                "configuration": _digest(config.to_json().encode()),
                "vocabulary": str(vocab_checksum),
                "training data": _digest(np.asarray(corpus)),
                "starting position": _digest(
                    json.dumps(
                        {k: getattr(progress, k, None) for k in _POSITION},
                        sort_keys=True,
                        default=str,
                    ).encode()
                ),
                "initial parameters": _digest(*model.params),
            },
            "at the start",
        )

    def check_params(self, model, epoch: int) -> None:
        """Compare a checksum of the parameters of all ranks (they must be identical)."""
        self.check_same({"parameters": _digest(*model.params)}, f"after epoch {epoch}")
