#!/usr/bin/env python
"""Training and evaluation speed of npgated against PyTorch on the CPU, measured honestly.

One command (from the repository root)::

    python benchmarks/bench.py                      # all presets, LSTM and GRU, npgated and torch
    python benchmarks/bench.py --presets book-small --cells lstm --iters 2 --repeats 1
    python benchmarks/bench.py --smoke              # seconds: tiny sizes, checks the plumbing

What is measured, for every (preset, cell, implementation):

* **training tokens/s**: ``zero_grads -> forward -> backward -> clip (global norm) -> SGD
  update`` on (N, T) windows, float32, N and T from the preset, V = 10,000; stateful (the
  recurrent state is carried between windows, truncated BPTT);
* **evaluation tokens/s**: eval-mode forward (loss included, no backward, dropout off) over
  contiguous windows of the test split;

each after ``--warmup`` untimed iterations, as the median over ``--repeats`` timed runs of
``--iters`` iterations. With ``--rounds R`` every (preset, cell, implementation) runs in R
children, the implementations alternating (A B, B A, ...), and the median over the rounds is
reported (this virtual machine has slow and fast phases of minutes; a single child can land in
either). Batches are real PTB windows when ``$NPGATED_DATA_DIR`` is set (train
split for training, test split for evaluation), otherwise random ids from a seeded generator;
both implementations see the same ids.

Every implementation runs in a process of its own (a child started per measurement), with
``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` set to ``--threads`` and
``torch.set_num_threads(--threads)``, so NumPy's OpenBLAS threads and torch's OpenMP threads
never compete inside one process, and each child's peak RSS (``ru_maxrss``) is its own.

Allocator: each implementation runs as its users run it. The npgated (and NumPy GEMM) children
first call :func:`npgated.allocator.keep_freed_memory`, as ``npgated.training.fit`` and the
``npgated`` command do (glibc malloc keeps freed large blocks for the next step instead of
unmapping them); ``--default-malloc`` leaves glibc's defaults there too. The PyTorch children
keep glibc's defaults: measured on 2026-11-30 (book-better LSTM, two alternating runs each),
the setting made PyTorch slower (1,487 and 1,611 tok/s with it, 1,635 and 1,791 without; its
peak RSS grew from ~760 to ~1,270 MiB) while it made npgated faster (1,752 and 1,650 tok/s
with it, 1,607 and 1,603 without).

GEMM-only step: the npgated child also times a step that makes only npgated's GEMM calls at
their exact shapes and layouts (``_gemm_only_steps``), so the table shows how close the
implementation is to what its GEMMs allow, and the largest ratio to PyTorch they allow.

Machine load: before each child the parent samples ``/proc/stat`` for one second (its children
are not running then) and waits up to ``--wait-quiet`` seconds until fewer than
``--max-busy`` cores are busy; it records that sample and ``os.getloadavg()`` (the 1-minute
load average also counts this benchmark's own previous child, so it is recorded but not used
to decide). During each timed repeat the child measures the CPU time other processes used
(system busy time minus its own) and records it as ``others_cores``.

GEMM ceiling: a separate NumPy child measures the best float32 matrix-multiply rate (GFLOP/s)
over square sizes. Training GEMM FLOPs per token (element-wise work not counted)::

    k     = gates per cell (LSTM 4, GRU 3, RNN 1)
    D_1   = D (embedding size), D_l = H for l > 1
    fwd   = sum over layers l of 2 * D_l * k*H      # input projection  x @ Wx
          + sum over layers l of 2 * H   * k*H      # recurrent         h @ Wh
          + 2 * H * V                               # output projection h @ W_out
    train = 3 * fwd     # backward: one GEMM for the input gradient and one for the
                        # weight gradient per forward GEMM, each as large as the forward one

The embedding lookup costs no FLOPs. ``GFLOP/s = train tok/s * train / 1e9``; the fraction of
the ceiling is that over the NumPy GEMM rate, and ``ceiling tok/s = GEMM rate / train`` is the
speed a run would reach if it did nothing but GEMMs at the best rate.

Results: a JSON file (``--out``, default ``benchmarks/results/<date>.json``) with the machine
(CPU model, cores, NumPy/torch versions, BLAS configuration and, with threadpoolctl installed,
the OpenBLAS kernel that ran), and a Markdown table next to it (same name, ``.md``);
``--update-readme`` also puts that table into ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
README = HERE / "README.md"
README_START = "<!-- bench:results:start -->"
README_END = "<!-- bench:results:end -->"

VOCAB = 10_000
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
ALL_PRESETS = ("book-small", "book-better", "zaremba-small")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
GEMM_SIZES = (512, 1024, 1536, 2048)
# --smoke: every preset shrunk to this (tying keeps D == H), one iteration of everything
SMOKE = dict(vocab_size=200, size=16, batch_size=4, time_size=5, gemm_sizes=(64, 128))


# =======================================================================================
# Presets and FLOP counts
# =======================================================================================
def preset_spec(name: str, cell: str, smoke: bool = False) -> dict:
    """The model and training settings of one benchmark case, from npgated's presets."""
    from npgated.training.config import PRESETS  # noqa: PLC0415 (light: dataclasses only)

    if name not in PRESETS:
        raise SystemExit(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    p = PRESETS[name]
    init = p.get("init", "book")
    init = "book" if init == "book" else float(init)
    D, H, V = p["wordvec_size"], p["hidden_size"], VOCAB
    N, T = p["batch_size"], p["time_size"]
    if smoke:
        D = H = SMOKE["size"]
        V, N, T = SMOKE["vocab_size"], SMOKE["batch_size"], SMOKE["time_size"]
    kw = dict(vocab_size=V, wordvec_size=D, hidden_size=H, cell=cell, init=init)
    if p["model"] == "BetterRnnlm":
        kw.update(num_layers=p["num_layers"], dropout_ratio=p.get("dropout", 0.0),
                  variational=p.get("variational", True),
                  tie_weights=p.get("tie_weights", False))
    return dict(preset=name, cell=cell, model=p["model"], model_kwargs=kw, N=N, T=T,
                lr=p["lr"], max_grad_norm=p["max_grad_norm"])


def gemm_flops_per_token(model_kwargs: dict) -> dict:
    """GEMM FLOPs per token: ``forward`` (evaluation) and ``train`` (3x forward); see top."""
    k = GATES[model_kwargs["cell"]]
    D, H = model_kwargs["wordvec_size"], model_kwargs["hidden_size"]
    V, L = model_kwargs["vocab_size"], model_kwargs.get("num_layers", 1)
    fwd = 0
    for layer in range(L):
        d_in = D if layer == 0 else H
        fwd += 2 * d_in * k * H + 2 * H * k * H
    fwd += 2 * H * V
    return {"forward": fwd, "train": 3 * fwd}


# =======================================================================================
# Machine: load, CPU time of others, description
# =======================================================================================
def _proc_stat():
    """(busy ticks, total ticks, number of CPUs) from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    fields = [int(v) for v in lines[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    ncpu = sum(1 for ln in lines if ln.startswith("cpu") and ln[3:4].isdigit())
    return total - idle, total, max(ncpu, 1)


def busy_cores(interval: float = 1.0):
    """Average number of busy cores (all processes) over ``interval`` seconds, or None."""
    a = _proc_stat()
    if a is None:
        return None
    time.sleep(interval)
    b = _proc_stat()
    dtotal = b[1] - a[1]
    if dtotal <= 0:
        return 0.0
    return (b[0] - a[0]) / (dtotal / b[2])


def wait_for_quiet(max_busy: float, wait_s: float, sample_s: float = 1.0) -> dict:
    """Wait (up to ``wait_s``) until at most ``max_busy`` cores are busy; report what was seen."""
    start = time.monotonic()
    while True:
        busy = busy_cores(sample_s)
        if busy is None:  # no /proc/stat: fall back to the 1-minute load average
            busy = os.getloadavg()[0]
        waited = time.monotonic() - start
        quiet = busy <= max_busy
        if quiet or waited >= wait_s:
            return {"busy_cores": round(busy, 3), "loadavg": [round(x, 2) for x in os.getloadavg()],
                    "waited_s": round(waited, 1), "quiet": quiet}
        time.sleep(min(4.0, max(0.0, wait_s - waited)))


class OthersMeter:
    """CPU time used by *other* processes while a block runs (in cores, averaged)."""

    MIN_WALL = 0.5

    def __init__(self):
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __enter__(self):
        self.stat0, self.own0, self.t0 = _proc_stat(), _own_cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = wall = time.perf_counter() - self.t0
        stat1, own1 = _proc_stat(), _own_cpu()
        self.own_cores = (own1 - self.own0) / wall if wall > 0 else None
        # /proc/stat counts in ticks (10 ms): blocks shorter than MIN_WALL are not measured
        if self.stat0 is None or stat1 is None or wall < self.MIN_WALL:
            self.cores = None
        else:
            system_busy = (stat1[0] - self.stat0[0]) / self.tick
            others = (system_busy - (own1 - self.own0)) / wall
            self.cores = min(float(stat1[2]), max(0.0, others))
        return False


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _mem_total_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_revision():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True, timeout=10).stdout.strip()
        return f"{rev}{'+dirty' if dirty else ''}" if rev else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    """The machine's facts, from ``npgated.info`` (what ``npgated info`` prints) plus a few."""
    import numpy as np  # noqa: PLC0415

    from npgated import info as npinfo  # noqa: PLC0415

    facts = npinfo.collect()
    cpu = facts["cpu"]
    return {
        "cpu_model": cpu["model"],
        "cpu_flags": cpu["vector_flags"] or [],
        "cores": cpu["cores"],
        "cores_available": cpu["cores_available"],
        "mem_total_gib": _mem_total_gib(),
        "platform": facts["platform"],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": facts["versions"]["torch"],
        "npgated_git": _git_revision(),
        "env": {v: os.environ.get(v) for v in OPENBLAS_VARS + THREAD_VARS},
        "numpy_blas": facts["blas"]["numpy_build"],
        "blas_kernel_warnings": facts["warnings"],
    }


# =======================================================================================
# Children: one process per measurement
# =======================================================================================
def _threadpool_info():
    """The BLAS/OpenMP libraries this child loaded, with the kernel OpenBLAS runs (or None)."""
    from npgated import info as npinfo  # noqa: PLC0415

    return npinfo.blas_info()["libraries"]


def _rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)  # bytes vs KiB


def _time_runs(step, first, warmup, iters, repeats, tokens_per_iter):
    """Warm up, then ``repeats`` timed runs of ``iters`` calls ``step(k)``; k counts on."""
    k = first
    for _ in range(warmup):
        step(k)
        k += 1
    secs, others, own = [], [], []
    for _ in range(repeats):
        with OthersMeter() as meter:
            for _ in range(iters):
                step(k)
                k += 1
        secs.append(meter.wall)
        others.append(None if meter.cores is None else round(meter.cores, 3))
        own.append(None if meter.own_cores is None else round(meter.own_cores, 3))
    tok_s = [tokens_per_iter * iters / s for s in secs]
    return {
        "tok_s": statistics.median(tok_s),
        "tok_s_repeats": [round(x, 1) for x in tok_s],
        "ms_per_iter": round(1e3 * statistics.median(secs) / iters, 3),
        "others_cores": others,
        "own_cores": own,
    }


def _load_batches(spec):
    import numpy as np  # noqa: PLC0415

    data = np.load(spec["batches"])
    return {k: data[k] for k in data.files}


def _child_gemm_numpy(spec, result):
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(0)
    rates = {}
    for n in spec["gemm_sizes"]:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        c = np.empty((n, n), dtype=np.float32)
        rates[str(n)] = _best_gemm_rate(lambda: np.matmul(a, b, out=c), n, spec["gemm_min_s"])
    result["gflops_by_size"] = rates
    result["best_gflops"] = max(rates.values())


def _child_gemm_torch(spec, result):
    import torch  # noqa: PLC0415

    torch.set_num_threads(spec["threads"])
    g = torch.Generator().manual_seed(0)
    rates = {}
    with torch.no_grad():
        for n in spec["gemm_sizes"]:
            a = torch.randn(n, n, generator=g)
            b = torch.randn(n, n, generator=g)
            c = torch.empty(n, n)
            rates[str(n)] = _best_gemm_rate(lambda: torch.mm(a, b, out=c), n, spec["gemm_min_s"])
    result["gflops_by_size"] = rates
    result["best_gflops"] = max(rates.values())
    result["torch_version"] = torch.__version__
    result["torch_threads"] = torch.get_num_threads()


def _best_gemm_rate(fn, n, min_s):
    fn()  # warm up (thread pool start, page faults)
    best = math.inf
    start = time.perf_counter()
    runs = 0
    while runs < 3 or time.perf_counter() - start < min_s:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return round(2 * n**3 / best / 1e9, 2)


def _gemm_only_steps(spec):
    """(train, eval) callables doing only the GEMMs of one npgated step, at its exact shapes.

    The same calls as the layers make, in the same order and orientation, on arrays laid out
    as theirs are (per-step slices of the (N, T + 1, H) state buffer, transposed views of the
    gate gradients): the time the step would take if everything that is not a GEMM (gate
    nonlinearities, softmax, dropout, clipping, the update, Python) were free. Its tokens/s
    is the most this design can reach with this BLAS on this machine.
    """
    import numpy as np  # noqa: PLC0415

    kw = spec["model_kwargs"]
    N, T = spec["N"], spec["T"]
    V, D, H = kw["vocab_size"], kw["wordvec_size"], kw["hidden_size"]
    G = GATES[kw["cell"]] * H
    L = kw.get("num_layers", 1)
    tied = kw.get("tie_weights", False)
    rng = np.random.default_rng(0)

    def a(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    fwd, bwd = [], []  # lists of (A, B, out) for np.matmul(A, B, out=out)
    for layer in range(L):
        d_in = D if layer == 0 else H
        Wx, Wh, xs, hs = a(d_in, G), a(H, G), a(N * T, d_in), a(N, T + 1, H)
        gates, da = a(N * T, G), a(N, T, G)
        dhT, dxs, dWx, dWh = a(H, N), a(N * T, d_in), a(d_in, G), a(H, G)
        fwd.append([(xs, Wx, gates)] + [(hs[:, t], Wh, a(N, G)) for t in range(T)])
        bwd.insert(0, [(Wh, da[:, t].T, dhT) for t in reversed(range(T))]
                   + [(da.reshape(N * T, G), Wx.T, dxs),
                      (xs.T, da.reshape(N * T, G), dWx),
                      (hs[:, :-1].reshape(N * T, H).T, da.reshape(N * T, G), dWh)])
    logits, dx = a(N * T, V), a(N * T, H)
    if tied:  # x @ W.T; dx = dy @ W; dW = dy.T @ x (bias added separately)
        W, x, dW = a(V, H), a(N * T, H), a(V, H)
        out_f = [(x, W.T, logits)]
        out_b = [(logits, W, dx), (logits.T, x, dW)]
    else:  # bias folded in: [x | 1] @ [W ; b]
        Wb, x1, dWb = a(H + 1, V), a(N * T, H + 1), a(H + 1, V)
        out_f = [(x1, Wb, logits)]
        out_b = [(logits, Wb[:H].T, dx), (x1.T, logits, dWb)]
    train_calls = [c for f in fwd for c in f] + out_f + out_b + [c for b in bwd for c in b]
    eval_calls = [c for f in fwd for c in f] + out_f

    def runner(calls):
        def step(k):
            for A, B, out in calls:
                np.matmul(A, B, out=out)
        return step

    return runner(train_calls), runner(eval_calls)


def _child_npgated(spec, result):
    import numpy as np  # noqa: PLC0415

    from npgated.models.rnnlm import BetterRnnlm, Rnnlm  # noqa: PLC0415
    from npgated.optim import SGD, clip_grads  # noqa: PLC0415

    b = _load_batches(spec)
    cls = BetterRnnlm if spec["model"] == "BetterRnnlm" else Rnnlm
    model = cls(**spec["model_kwargs"], seed=0, dtype=np.float32)
    optimizer = SGD(lr=spec["lr"])
    max_norm = spec["max_grad_norm"]
    result["num_params"] = model.num_params()
    result["rss_after_setup_mib"] = _rss_mib()
    losses = []

    def train_step(k):
        j = k % len(b["train_xs"])
        model.zero_grads()
        loss = model.forward(b["train_xs"][j], b["train_ts"][j])
        model.backward()
        if max_norm > 0:
            clip_grads(model.grads, max_norm)
        optimizer.update(model.params, model.grads)
        losses.append(loss)

    def eval_step(k):
        j = k % len(b["eval_xs"])
        losses.append(model.forward(b["eval_xs"][j], b["eval_ts"][j]))

    if spec["kind"] == "profile":
        return _profile(spec, result, model, train_step)
    tokens = spec["N"] * spec["T"]
    model.train()
    result["train"] = _time_runs(train_step, 0, spec["warmup"], spec["iters"],
                                 spec["repeats"], tokens)
    result["rss_after_train_mib"] = _rss_mib()
    dtypes = {f"loss:{getattr(losses[-1], 'dtype', type(losses[-1]).__name__)}"}
    train_losses, losses[:] = [float(x) for x in losses], []
    model.eval()
    model.reset_state()
    result["eval"] = _time_runs(eval_step, 0, spec["warmup"], spec["iters"], spec["repeats"],
                                tokens)
    dtypes |= {f"eval loss:{getattr(losses[-1], 'dtype', type(losses[-1]).__name__)}"}
    dtypes |= {str(p.dtype) for p in model.params} | {str(g.dtype) for g in model.grads}
    result["dtypes"] = sorted(dtypes)
    # The model's peak memory, before the GEMM-only arrays below add their own.
    result["peak_rss_mib"] = _rss_mib()
    gemm_train, gemm_eval = _gemm_only_steps(spec)
    result["gemm_only_train"] = _time_runs(gemm_train, 0, spec["warmup"], spec["iters"],
                                           spec["repeats"], tokens)
    result["gemm_only_eval"] = _time_runs(gemm_eval, 0, spec["warmup"], spec["iters"],
                                          spec["repeats"], tokens)
    result["loss_first_last"] = [train_losses[0], train_losses[-1]]
    result["eval_loss_mean"] = float(np.mean([float(x) for x in losses]))


def _profile(spec, result, model, train_step):
    """cProfile of ``iters`` training steps, then (with line_profiler) the costliest lines."""
    import cProfile  # noqa: PLC0415
    import pstats  # noqa: PLC0415

    for k in range(spec["warmup"]):
        train_step(k)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for k in range(spec["iters"]):
        train_step(spec["warmup"] + k)
    prof.disable()
    wall = time.perf_counter() - t0
    out = Path(spec["profile_out"])
    prof.dump_stats(str(out))
    print(f"\n=== cProfile: {spec['preset']} {spec['cell']} npgated, {spec['iters']} training "
          f"iterations, {1e3 * wall / spec['iters']:.1f} ms/iter under the profiler "
          f"(stats in {out}) ===")
    stats = pstats.Stats(prof, stream=sys.stdout).strip_dirs()
    stats.sort_stats("tottime").print_stats(spec["profile_top"])
    result["profile"] = str(out)
    result["profile_ms_per_iter"] = round(1e3 * wall / spec["iters"], 2)
    _line_profile(spec, result, model, train_step)


def _line_profile(spec, result, model, train_step):
    """The costliest source lines of the layers, optimizer and clipping (needs line_profiler).

    NumPy operators and ufuncs are invisible to cProfile (they are not Python calls), so the
    time of a Time layer's loop shows up only as its ``forward``; per line it is visible.
    """
    try:
        from line_profiler import LineProfiler  # noqa: PLC0415
    except ImportError:
        print("(pip install line_profiler for the per-line listing)")
        return
    import linecache  # noqa: PLC0415

    from npgated.optim import clip, sgd  # noqa: PLC0415

    names = ("forward", "backward", "_forward_rows", "_backward_rows", "_scatter", "_lookup")
    funcs = {id(f): f for layer in model.layers.values() for n in names
             if callable(f := getattr(type(layer), n, None))}
    for f in (sgd.SGD._step, clip.clip_grads, clip.global_norm, type(model).zero_grads):
        funcs[id(f)] = f
    lp = LineProfiler()
    for f in funcs.values():
        lp.add_function(f)
    first = spec["warmup"] + spec["iters"]
    t0 = time.perf_counter()
    lp.runcall(lambda: [train_step(first + k) for k in range(spec["iters"])])
    wall_ms = 1e3 * (time.perf_counter() - t0) / spec["iters"]
    stats = lp.get_stats()
    callees = {f.__name__ + "(" for f in funcs.values()}
    rows = []
    for (filename, _, func), lines in stats.timings.items():
        for lineno, hits, t in lines:
            code = linecache.getline(filename, lineno).strip()
            if any(c in code for c in callees):  # its time is listed line by line elsewhere
                continue
            rows.append((t * stats.unit * 1e3 / spec["iters"], hits // spec["iters"],
                         f"{Path(filename).name}:{lineno}", func, code))
    rows.sort(reverse=True)
    print(f"\n=== lines: {spec['preset']} {spec['cell']} npgated, {wall_ms:.1f} ms/iter under "
          "line_profiler; ms and calls per training iteration ===")
    print(f"{'ms':>8} {'%':>5} {'calls':>6}  {'where':<18} {'function':<28} code")
    listed = []
    for ms, calls, where, func, code in rows[: spec["profile_top"]]:
        print(f"{ms:8.2f} {100 * ms / wall_ms:5.1f} {calls:6d}  {where:<18} {func:<28} {code[:80]}")
        listed.append({"ms": round(ms, 3), "calls": calls, "where": where, "code": code})
    result["profile_lines"] = listed
    result["profile_lines_ms_per_iter"] = round(wall_ms, 2)


def _load_torch_reference():
    """``benchmarks/torch_reference.py`` as a module (benchmarks/ is not a package)."""
    loader = importlib.util.spec_from_file_location("torch_reference", HERE / "torch_reference.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def _child_torch(spec, result):
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    torch_reference = _load_torch_reference()

    torch.set_num_threads(spec["threads"])
    result["torch_version"] = torch.__version__
    result["torch_threads"] = torch.get_num_threads()
    b = {k: torch.from_numpy(v.astype(np.int64)) for k, v in _load_batches(spec).items()}
    model = torch_reference.build(spec["model_kwargs"], seed=0)
    trainer = torch_reference.TorchTrainer(model, spec["lr"], spec["max_grad_norm"])
    result["num_params"] = sum(p.numel() for p in model.parameters())
    result["rss_after_setup_mib"] = _rss_mib()
    losses = []

    def train_step(k):
        j = k % len(b["train_xs"])
        losses.append(trainer.train_step(b["train_xs"][j], b["train_ts"][j]))

    def eval_step(k):
        j = k % len(b["eval_xs"])
        losses.append(trainer.eval_step(b["eval_xs"][j], b["eval_ts"][j]))

    tokens = spec["N"] * spec["T"]
    result["train"] = _time_runs(train_step, 0, spec["warmup"], spec["iters"],
                                 spec["repeats"], tokens)
    result["rss_after_train_mib"] = _rss_mib()
    train_losses, losses[:] = [float(x) for x in losses], []
    model.reset_state()
    result["eval"] = _time_runs(eval_step, 0, spec["warmup"], spec["iters"], spec["repeats"],
                                tokens)
    result["dtypes"] = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})
    result["loss_first_last"] = [train_losses[0], train_losses[-1]]
    result["eval_loss_mean"] = float(np.mean([float(x) for x in losses]))


TORCH_KINDS = ("gemm-torch", "torch")
CHILDREN = {"gemm-numpy": _child_gemm_numpy, "gemm-torch": _child_gemm_torch,
            "npgated": _child_npgated, "profile": _child_npgated, "torch": _child_torch}


def child_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    result = {"kind": spec["kind"], "pid": os.getpid(),
              "env": {v: os.environ.get(v) for v in OPENBLAS_VARS + THREAD_VARS}}
    code = 0
    try:
        if spec.get("keep_freed_memory", True) and spec["kind"] not in TORCH_KINDS:
            # npgated as its fit and command line run it. PyTorch keeps glibc's defaults:
            # these settings made its training ~10 % slower here (see the module docstring).
            from npgated import allocator  # noqa: PLC0415

            result["keep_freed_memory"] = allocator.keep_freed_memory()
        CHILDREN[spec["kind"]](spec, result)
    except Exception:  # noqa: BLE001 (reported to the parent, which goes on)
        result["error"] = traceback.format_exc(limit=8)
        code = 1
    result.setdefault("peak_rss_mib", _rss_mib())
    result["threadpool"] = _threadpool_info()
    Path(spec["result"]).write_text(json.dumps(result, indent=1))
    return code


# =======================================================================================
# Parent: batches, scheduling children, tables
# =======================================================================================
def make_batches(path: Path, spec: dict, n_train: int, n_eval: int, data: str, seed: int = 0):
    """Save (n, N, T) int32 windows to ``path`` (.npz); returns a description of the source."""
    import numpy as np  # noqa: PLC0415

    N, T, V = spec["N"], spec["T"], spec["model_kwargs"]["vocab_size"]
    if data == "ptb":
        from npgated.data import ptb  # noqa: PLC0415
        from npgated.data.batching import TBPTTBatcher, eval_batches  # noqa: PLC0415

        train, _, _ = ptb.load_data("train")
        test, _, _ = ptb.load_data("test")
        batcher = TBPTTBatcher(train, N, T)
        pairs = [batcher.next_batch() for _ in range(n_train)]
        wins = [(x, t) for x, t in eval_batches(test, N, T) if x.shape[1] == T][:n_eval]
        txs, tts = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
        exs, ets = np.stack([w[0] for w in wins]), np.stack([w[1] for w in wins])
        source = f"PTB from {ptb.resolve_data_dir(download=False)}"
    else:
        rng = np.random.default_rng(seed)
        txs, tts = rng.integers(0, V, (2, n_train, N, T))
        exs, ets = rng.integers(0, V, (2, n_eval, N, T))
        source = f"random ids (seed {seed})"
    np.savez(path, train_xs=txs.astype(np.int32), train_ts=tts.astype(np.int32),
             eval_xs=exs.astype(np.int32), eval_ts=ets.astype(np.int32))
    return source


def child_env(threads: int, unset_openblas: bool) -> dict:
    env = dict(os.environ)
    for v in THREAD_VARS:
        env[v] = str(threads)
    if unset_openblas:
        for v in OPENBLAS_VARS:
            env.pop(v, None)
    # the child imports npgated from this checkout even without an editable install
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


_ROUND_KEYS = ("train", "eval", "gemm_only_train", "gemm_only_eval")


def _add_round(results: list, result: dict) -> None:
    """Append ``result``, or merge it into the earlier round of the same case.

    A merged case keeps every round (``rounds``: the per-round measurements) and reports, for
    each of train, eval and the GEMM-only steps, the median over the rounds of the per-round
    medians (``tok_s``); its peak RSS is the largest.
    """
    key = (result["preset"], result["cell"], result["impl"])
    first = next((r for r in results if (r["preset"], r["cell"], r["impl"]) == key), None)
    if first is None:
        result["rounds"] = [{k: result.get(k) for k in _ROUND_KEYS + ("load_before",)}]
        results.append(result)
        return
    if "error" in result or "error" in first:
        first.setdefault("error", result.get("error"))
        return
    first["rounds"].append({k: result.get(k) for k in _ROUND_KEYS + ("load_before",)})
    for k in _ROUND_KEYS:
        per_round = [r[k] for r in first["rounds"] if r.get(k)]
        if not per_round:
            continue
        merged = dict(per_round[0])
        merged["tok_s"] = statistics.median(x["tok_s"] for x in per_round)
        merged["tok_s_rounds"] = [round(x["tok_s"], 1) for x in per_round]
        merged["ms_per_iter"] = round(statistics.median(x["ms_per_iter"] for x in per_round), 3)
        merged["others_cores"] = [c for x in per_round for c in (x.get("others_cores") or [])]
        first[k] = merged
    first["peak_rss_mib"] = max(first.get("peak_rss_mib") or 0, result.get("peak_rss_mib") or 0)


def run_child(spec: dict, workdir: Path, env: dict, timeout: float) -> dict:
    spec_path = workdir / f"spec-{spec['id']}.json"
    spec["result"] = str(workdir / f"result-{spec['id']}.json")
    spec_path.write_text(json.dumps(spec))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_child",
                               str(spec_path)], env=env, timeout=timeout, cwd=ROOT)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    wall = round(time.perf_counter() - t0, 2)
    try:
        result = json.loads(Path(spec["result"]).read_text())
    except (OSError, ValueError):
        result = {"error": f"child exited with {rc} and wrote no result"}
    if rc != 0 and "error" not in result:
        result["error"] = f"child exited with {rc}"
    result["child_wall_s"] = wall
    return result


def _fmt_int(x):
    return "–" if x is None else f"{x:,.0f}"


def _fmt(x, spec=".2f", suffix=""):
    return "–" if x is None else f"{x:{spec}}{suffix}"


def table_rows(report: dict) -> list[dict]:
    """One flat row per (preset, cell, impl) with the derived columns."""
    ceiling = (report["gemm"].get("numpy") or {}).get("best_gflops")
    rows = []
    by_key = {(r["preset"], r["cell"], r["impl"]): r for r in report["results"]}
    for r in report["results"]:
        train = (r.get("train") or {}).get("tok_s")
        ev = (r.get("eval") or {}).get("tok_s")
        torch_r = by_key.get((r["preset"], r["cell"], "torch"))
        t_train = (torch_r or {}).get("train", {}).get("tok_s") if r["impl"] != "torch" else None
        t_eval = (torch_r or {}).get("eval", {}).get("tok_s") if r["impl"] != "torch" else None
        gflops = train * r["flops_per_token"]["train"] / 1e9 if train else None
        g_train = (r.get("gemm_only_train") or {}).get("tok_s")
        g_eval = (r.get("gemm_only_eval") or {}).get("tok_s")
        others = [x for rep in ("train", "eval")
                  for x in ((r.get(rep) or {}).get("others_cores") or []) if x is not None]
        rows.append({
            "preset": r["preset"], "cell": r["cell"], "impl": r["impl"],
            "train": train, "eval": ev,
            "eval_over_train": ev / train if ev and train else None,
            "train_ratio": train / t_train if train and t_train else None,
            "eval_ratio": ev / t_eval if ev and t_eval else None,
            "gflops": gflops,
            "ceiling_frac": gflops / ceiling if gflops and ceiling else None,
            "ceiling_tok_s": ceiling * 1e9 / r["flops_per_token"]["train"] if ceiling else None,
            "gemm_only": g_train,
            "of_gemm_only": train / g_train if train and g_train else None,
            "gemm_only_ratio": g_train / t_train if g_train and t_train else None,
            "eval_of_gemm_only": ev / g_eval if ev and g_eval else None,
            "rss": r.get("peak_rss_mib"),
            "busy_before": (r.get("load_before") or {}).get("busy_cores"),
            "others_max": max(others) if others else None,
            "error": r.get("error"),
        })
    return rows


HEADER = ["preset", "cell", "impl", "train tok/s", "eval tok/s", "eval/train", "train ×torch",
          "eval ×torch", "GFLOP/s", "of GEMM ceiling", "ceiling tok/s", "GEMM-only tok/s",
          "of GEMM-only", "GEMM-only ×torch", "eval of GEMM-only", "peak RSS MiB",
          "busy before", "others during"]


def _cells(row):
    if row["error"]:
        first = row["error"].strip().splitlines()[-1][:60]
        return [row["preset"], row["cell"], row["impl"], f"error: {first}"] + [""] * 14
    return [row["preset"], row["cell"], row["impl"], _fmt_int(row["train"]), _fmt_int(row["eval"]),
            _fmt(row["eval_over_train"], ".2f", "×"), _fmt(row["train_ratio"], ".2f", "×"),
            _fmt(row["eval_ratio"], ".2f", "×"), _fmt(row["gflops"], ".1f"),
            _fmt(None if row["ceiling_frac"] is None else 100 * row["ceiling_frac"], ".0f", " %"),
            _fmt_int(row["ceiling_tok_s"]), _fmt_int(row.get("gemm_only")),
            _fmt(None if row.get("of_gemm_only") is None else 100 * row["of_gemm_only"], ".0f",
                 " %"),
            _fmt(row.get("gemm_only_ratio"), ".2f", "×"),
            _fmt(None if row.get("eval_of_gemm_only") is None
                 else 100 * row["eval_of_gemm_only"], ".0f", " %"),
            _fmt(row["rss"], ".0f"),
            _fmt(row["busy_before"], ".2f"), _fmt(row["others_max"], ".2f")]


def text_table(rows) -> str:
    cells = [HEADER] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    right = set(range(3, len(HEADER)))
    out = []
    for n, c in enumerate(cells):
        out.append("  ".join(s.rjust(w) if i in right else s.ljust(w)
                             for i, (s, w) in enumerate(zip(c, widths))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_report(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    gemm = report["gemm"]
    kernel = None
    for r in report["results"] + [gemm.get("numpy") or {}]:
        for d in r.get("threadpool") or []:
            if d.get("internal_api") == "openblas":
                kernel = f"OpenBLAS {d.get('version')} kernel {d.get('architecture')}"
    blas = kernel or ((m.get("numpy_blas") or {}).get("name") or "?")
    lines = [
        f"Measured {report['date']} on {m['cpu_model']} ({m['cores']} cores, "
        f"{s['threads']} threads per process), NumPy {m['numpy']} ({blas}), "
        f"PyTorch {m['torch'] or 'not installed'}; npgated {m.get('npgated_git') or '?'}.",
        f"Float32, {s['iters']} iterations per repeat after {s['warmup']} warm-up, median of "
        f"{s['repeats']} repeats"
        + (f", then the median over {s['rounds']} rounds (a child each, the implementations "
           f"alternating)" if s.get("rounds", 1) > 1 else "")
        + f"; data: {s['data_source']}; "
        f"OPENBLAS_CORETYPE={m['env'].get('OPENBLAS_CORETYPE')!s}, "
        f"OPENBLAS_L2_SIZE={m['env'].get('OPENBLAS_L2_SIZE')!s}"
        f"{' (unset in the children)' if s['unset_openblas_env'] else ''}"
        f"{'; SMOKE RUN (tiny sizes, numbers meaningless)' if s['smoke'] else ''}.",
        f"GEMM ceiling (best fp32 GEMM, NumPy): "
        f"{_fmt((gemm.get('numpy') or {}).get('best_gflops'), '.1f')} GFLOP/s"
        + (f"; PyTorch: {_fmt(gemm['torch'].get('best_gflops'), '.1f')} GFLOP/s"
           if gemm.get("torch") else "") + ".",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" if i < 3 else "---:" for i in range(len(HEADER))) + "|",
    ]
    for row in table_rows(report):
        lines.append("| " + " | ".join(_cells(row)) + " |")
    lines += ["", "`train ×torch` and `eval ×torch`: npgated tokens/s over PyTorch's in the same "
              "run. `GFLOP/s`: training GEMM FLOPs per token × tokens/s; `of GEMM ceiling`: that "
              "over the best NumPy GEMM rate; `ceiling tok/s`: the GEMM-only limit at that "
              "best rate. `GEMM-only tok/s`: measured in the npgated process, a training step "
              "that makes only npgated's GEMM calls, at their exact shapes and layouts (the "
              "most this design reaches with this BLAS: everything else free); `of GEMM-only`: "
              "npgated's training rate over it; `GEMM-only ×torch`: it over PyTorch's training "
              "rate, the largest `train ×torch` possible; `eval of GEMM-only`: the same for "
              "evaluation (forward GEMMs only). `busy before`: cores busy (all processes) in "
              "the second before the child started; `others during`: most cores used by other "
              "processes during a timed repeat."]
    # npgated.info's check of the BLAS kernel against the CPU (e.g. OPENBLAS_CORETYPE=Haswell
    # on an AVX-512 machine): numbers measured so are not this machine's best
    lines += [f"\n**WARNING**: {w}" for w in m.get("blas_kernel_warnings") or []]
    return "\n".join(lines) + "\n"


def update_readme(markdown: str) -> bool:
    text = README.read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    README.write_text(f"{head}{README_START}\n{markdown}{README_END}{tail}")
    return True


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Training/evaluation tokens/s of npgated vs PyTorch (see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--presets", default=",".join(ALL_PRESETS),
                   help="comma-separated presets of npgated.training.config.PRESETS")
    p.add_argument("--cells", default="lstm,gru", help="comma-separated cells (lstm, gru, rnn)")
    p.add_argument("--impl", default="npgated,torch", help="comma-separated: npgated, torch")
    p.add_argument("--iters", type=int, default=20, help="timed iterations per repeat")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (the median is reported)")
    p.add_argument("--rounds", type=int, default=1,
                   help="children per (preset, cell, implementation), the implementations "
                        "alternating; the median over rounds is reported")
    p.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP threads per child")
    p.add_argument("--data", choices=("auto", "ptb", "random"), default="auto",
                   help="auto: PTB when $NPGATED_DATA_DIR is set, else random ids")
    p.add_argument("--out", default=None,
                   help="JSON output (default benchmarks/results/<date>.json; a .md beside it)")
    p.add_argument("--update-readme", action="store_true",
                   help="also replace the results table in benchmarks/README.md")
    p.add_argument("--unset-openblas-env", action="store_true",
                   help="remove OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE in the children")
    p.add_argument("--wait-quiet", type=float, default=60.0,
                   help="seconds to wait for a quiet machine before each child")
    p.add_argument("--max-busy", type=float, default=0.25,
                   help="'quiet' means at most this many cores busy (sampled over 1 s)")
    p.add_argument("--gemm-sizes", default=",".join(map(str, GEMM_SIZES)),
                   help="square sizes for the GEMM ceiling")
    p.add_argument("--no-gemm", action="store_true", help="skip the GEMM ceiling children")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc malloc at its defaults in the npgated children too "
                        "(by default they call npgated.allocator.keep_freed_memory(), as "
                        "npgated's fit does; the torch children always keep the defaults)")
    p.add_argument("--child-timeout", type=float, default=1800.0, help="seconds per child")
    p.add_argument("--profile", action="store_true",
                   help="instead of timing: cProfile npgated's training step (--iters "
                        "iterations) for each preset and cell, print the top functions")
    p.add_argument("--profile-top", type=int, default=25, help="rows of each profile listing")
    p.add_argument("--profile-dir", default=str(Path(tempfile.gettempdir()) / "npgated-profiles"),
                   help="where --profile writes <preset>-<cell>.prof (for snakeviz, pstats)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes, 1 iteration, 1 repeat, no waiting: checks the plumbing")
    p.add_argument("--ranks", type=int, default=0,
                   help="data-parallel mode (benchmarks/ranks.py): 1 process x --threads BLAS "
                        "threads against RANKS MPI ranks x 1 thread, tok/s and all-reduce share")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.iters, args.warmup, args.repeats = 1, 1, 1
        args.wait_quiet, args.data = 0.0, "random"
        args.gemm_sizes = ",".join(map(str, SMOKE["gemm_sizes"]))
    for name in ("iters", "repeats", "threads", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    args.presets = [x for x in args.presets.split(",") if x]
    args.cells = [x for x in args.cells.split(",") if x]
    args.impl = [x for x in args.impl.split(",") if x]
    for c in args.cells:
        if c not in GATES:
            p.error(f"unknown cell {c!r}; choose from {', '.join(GATES)}")
    for i in args.impl:
        if i not in ("npgated", "torch"):
            p.error(f"unknown implementation {i!r}; choose from npgated, torch")
    args.gemm_sizes = [int(x) for x in args.gemm_sizes.split(",") if x]
    return args


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._child:
        return child_main(args._child)
    if args.ranks:  # data-parallel mode: its own module
        import ranks  # noqa: PLC0415 (benchmarks/ranks.py, next to this file)

        return ranks.run_ranks(args, preset_spec, make_batches, machine_info, wait_for_quiet,
                               _log)

    date = _dt.datetime.now().astimezone()
    if args.out:
        out = Path(args.out)
    elif args.smoke:
        out = Path(tempfile.gettempdir()) / "npgated-bench-smoke.json"
    else:
        out = HERE / "results" / f"{date:%Y-%m-%d}.json"
    impls = list(args.impl)
    if "torch" in impls and importlib.util.find_spec("torch") is None:
        _log("torch is not installed: measuring npgated only")
        impls.remove("torch")
    data = args.data
    if data == "auto":
        data = "ptb" if os.environ.get("NPGATED_DATA_DIR") else "random"

    env = child_env(args.threads, args.unset_openblas_env)
    report = {
        "date": date.isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else list(argv)),
        "machine": machine_info(),
        "settings": {"threads": args.threads, "iters": args.iters, "warmup": args.warmup,
                     "repeats": args.repeats, "rounds": args.rounds, "data": data,
                     "data_source": None,
                     "unset_openblas_env": args.unset_openblas_env, "smoke": args.smoke,
                     "wait_quiet_s": args.wait_quiet, "max_busy_cores": args.max_busy,
                     "gemm_sizes": args.gemm_sizes, "vocab_size": VOCAB,
                     "keep_freed_memory": not args.default_malloc},
        "gemm": {},
        "results": [],
    }
    cases = [preset_spec(p, c, args.smoke) for p in args.presets for c in args.cells]
    common = dict(threads=args.threads, iters=args.iters, warmup=args.warmup,
                  repeats=args.repeats, gemm_sizes=args.gemm_sizes,
                  gemm_min_s=0.05 if args.smoke else 1.0, profile_top=args.profile_top,
                  keep_freed_memory=not args.default_malloc)
    failed = 0
    workdir = Path(tempfile.mkdtemp(prefix="npgated-bench-"))
    try:
        jobs = []
        if args.profile:
            jobs = [("profile", c) for c in cases]
        else:
            if not args.no_gemm:
                # PyTorch's own GEMM rate is for information only: skipped in smoke runs
                with_torch = "torch" in impls and not args.smoke
                jobs += [("gemm-numpy", None)] + ([("gemm-torch", None)] if with_torch else [])
            # Rounds alternate the implementations' order (A B, B A, A B, ...) so that a slow
            # phase of the machine does not fall on one of them only.
            jobs += [(impl, c) for c in cases for r in range(args.rounds)
                     for impl in (impls if r % 2 == 0 else impls[::-1])]
        batch_files = {}
        for n, (kind, case) in enumerate(jobs, 1):
            spec = dict(common, kind=kind, id=n)
            label = kind
            if case is not None:
                spec.update(case)
                label = f"{case['preset']} {case['cell']} {kind}"
                key = (case["N"], case["T"], case["model_kwargs"]["vocab_size"])
                if key not in batch_files:
                    path = workdir / f"batches-{len(batch_files)}.npz"
                    n_windows = args.warmup + args.iters * args.repeats
                    report["settings"]["data_source"] = make_batches(path, case, n_windows,
                                                                     n_windows, data)
                    batch_files[key] = str(path)
                spec["batches"] = batch_files[key]
                if kind == "profile":
                    prof_dir = Path(args.profile_dir)
                    prof_dir.mkdir(parents=True, exist_ok=True)
                    spec["profile_out"] = str(prof_dir / f"{case['preset']}-{case['cell']}.prof")
            load = wait_for_quiet(args.max_busy, args.wait_quiet, 0.1 if args.smoke else 1.0)
            if not load["quiet"] and not args.smoke:
                _log(f"  machine not quiet after {load['waited_s']} s: {load['busy_cores']} cores "
                     f"busy (load average {load['loadavg'][0]}); measuring anyway")
            _log(f"[{n}/{len(jobs)}] {label} ...")
            result = run_child(spec, workdir, env, args.child_timeout)
            result["load_before"] = load
            if "error" in result:
                failed += 1
                _log(f"  FAILED: {result['error'].strip().splitlines()[-1]}")
            if kind.startswith("gemm"):
                report["gemm"][kind.split("-")[1]] = result
                _log(f"  best {result.get('best_gflops')} GFLOP/s {result.get('gflops_by_size')}")
                continue
            result.update(preset=case["preset"], cell=case["cell"], impl=kind,
                          model=case["model"], model_kwargs=case["model_kwargs"],
                          N=case["N"], T=case["T"],
                          flops_per_token=gemm_flops_per_token(case["model_kwargs"]))
            if kind == "profile":
                report["results"].append(result)
                continue
            _add_round(report["results"], result)
            if "error" not in result:
                _log(f"  train {result['train']['tok_s']:,.0f} tok/s, eval "
                     f"{result['eval']['tok_s']:,.0f} tok/s, peak RSS {result['peak_rss_mib']} MiB")
    except KeyboardInterrupt:
        _log("interrupted: writing what was measured")
        report["interrupted"] = True
        failed += 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    if args.profile:
        return 1 if failed else 0
    for r in report["results"] + list(report["gemm"].values()):
        if r.get("torch_version") and not report["machine"]["torch"]:
            report["machine"]["torch"] = r["torch_version"]
    rows = table_rows(report)
    print(text_table(rows))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    markdown = markdown_report(report)
    out.with_suffix(".md").write_text(markdown)
    _log(f"wrote {out} and {out.with_suffix('.md')}")
    if args.update_readme:
        if update_readme(markdown):
            _log(f"updated the results table in {README}")
        else:
            _log(f"{README} has no {README_START} ... {README_END} block: not updated")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
