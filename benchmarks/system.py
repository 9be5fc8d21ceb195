"""The machine the benchmark runs on: its load, the CPU time of others, memory, its facts.

Machine load: before each child the parent samples ``/proc/stat`` for one second (its children
are not running then) and waits up to ``--wait-quiet`` seconds until fewer than
``--max-busy`` cores are busy; it records that sample and ``os.getloadavg()`` (the 1-minute
load average also counts this benchmark's own previous child, so it is recorded but not used
to decide). During each timed repeat the child measures the CPU time other processes used
(system busy time minus its own) and records it as ``others_cores``.

The machine's description (CPU, vector extensions, versions, BLAS and the kernel it runs) comes
from :mod:`npgated.info`, the same facts ``npgated info`` prints.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


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
            return {
                "busy_cores": round(busy, 3),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
                "waited_s": round(waited, 1),
                "quiet": quiet,
            }
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
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            text=True,
            capture_output=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            text=True,
            capture_output=True,
            timeout=10,
        ).stdout.strip()
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


def threadpool_info():
    """The BLAS/OpenMP libraries this child loaded, with the kernel OpenBLAS runs (or None)."""
    from npgated import info as npinfo  # noqa: PLC0415

    return npinfo.blas_info()["libraries"]


def rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)  # bytes vs KiB
