"""What a bug report (or a benchmark) needs to know about this machine: ``npgated info``.

Versions (npgated, Python, NumPy, and CuPy, PyTorch, mpi4py when installed), the active
backend, the BLAS NumPy calls and the kernel it runs (from threadpoolctl), the CPU model and
its vector extensions (from /proc/cpuinfo on Linux), and the environment variables that
change what BLAS does. :func:`collect` returns all of it as a JSON-friendly dict,
:func:`format_info` as text for a terminal or an issue.

Why the kernel matters: OpenBLAS picks its kernel for the CPU at load time, and the variable
``OPENBLAS_CORETYPE`` overrides that choice. Forcing an older kernel than the CPU supports
costs a lot of speed silently (measured by this project: with ``OPENBLAS_CORETYPE=Haswell``
on an AVX-512 machine the book-better preset trained at 0.83x PyTorch's speed instead of
1.22x), and the kernel also decides the order of floating-point sums, so results differ in
their last bits between machines. :func:`kernel_warnings` says when the kernel is below (or
above) what the CPU can run.

Nothing here imports CuPy, PyTorch or mpi4py: their versions come from the installed
package metadata, so ``npgated info`` stays fast and starts no GPU or MPI runtime.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import numpy as np

from npgated import __version__, backend, parallel

#: Environment variables that change BLAS's kernel, cache sizes or threads (and the backend).
ENV_VARS = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NPGATED_BACKEND",
    "NPGATED_THREADS",
    "NPGATED_FLAT",
    "NPGATED_PIPELINE",
)

#: The /proc/cpuinfo flags reported, from the oldest extension to the newest.
VECTOR_FLAGS = (
    "sse4_2",
    "avx",
    "fma",
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)

# Vector levels, lowest first; a kernel and a CPU are compared by their index here.
LEVELS = ("sse2", "sse3", "ssse3", "sse4_2", "avx", "avx2", "avx512")

# OpenBLAS's x86-64 core names (as in OPENBLAS_CORETYPE and threadpoolctl's "architecture",
# compared in lower case) -> the widest vector extension that kernel uses.
CORETYPE_LEVELS = {
    "prescott": "sse3",
    "core2": "ssse3",
    "penryn": "ssse3",
    "dunnington": "ssse3",
    "nehalem": "sse4_2",
    "atom": "ssse3",
    "nano": "sse3",
    "opteron": "sse2",
    "opteron_sse3": "sse3",
    "barcelona": "sse3",
    "bobcat": "sse3",
    "sandybridge": "avx",
    "bulldozer": "avx",
    "piledriver": "avx",
    "steamroller": "avx",
    "haswell": "avx2",
    "excavator": "avx2",
    "zen": "avx2",
    "skylakex": "avx512",
    "cooperlake": "avx512",
    "sapphirerapids": "avx512",
}

MEASURED = (
    "measured by npgated: with OPENBLAS_CORETYPE=Haswell on an AVX-512 machine the "
    "book-better preset trained at 0.83x PyTorch's speed instead of 1.22x"
)


# ---------------------------------------------------------------------------------------
# The pieces
# ---------------------------------------------------------------------------------------
def _read_cpuinfo(path="/proc/cpuinfo") -> tuple[str | None, list[str] | None]:
    """(model name, all flags) of the first processor in ``path``; (None, None) if unreadable."""
    model, flags = None, None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key in ("flags", "features") and flags is None:  # x86 / ARM
                    flags = value.split()
                if model is not None and flags is not None:
                    break
    except OSError:
        pass
    return model, flags


def cpu_info(cpuinfo_path="/proc/cpuinfo") -> dict:
    """The CPU: model, cores, and which of :data:`VECTOR_FLAGS` it has.

    Returns
    -------
    dict with ``model`` (str), ``machine`` (``platform.machine()``), ``cores`` and
    ``cores_available`` (int), ``vector_flags`` (list of str, or None where the flags cannot
    be read, e.g. not Linux) and ``vector_level`` (one of :data:`LEVELS` or None).
    """
    model, flags = _read_cpuinfo(cpuinfo_path)
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    vector = None if flags is None else [f for f in VECTOR_FLAGS if f in set(flags)]
    return {
        "model": model or platform.processor() or platform.machine() or "unknown",
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "cores_available": available,
        "vector_flags": vector,
        "vector_level": cpu_level(vector),
    }


def cpu_level(flags) -> str | None:
    """The widest vector level (:data:`LEVELS`) a CPU with these flags runs; None if unknown."""
    if flags is None:
        return None
    flags = set(flags)
    if "avx512f" in flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    if "avx" in flags:
        return "avx"
    if "sse4_2" in flags:
        return "sse4_2"
    return None  # an older x86 or another architecture: nothing to compare with


def blas_info() -> dict:
    """NumPy's BLAS as built, and every BLAS/OpenMP library loaded, as threadpoolctl sees it.

    Returns
    -------
    dict with ``numpy_build`` (name, version and OpenBLAS's build configuration from
    ``numpy.show_config``, or None) and
    ``libraries``: one dict per loaded library (``internal_api``, ``version``,
    ``architecture`` = the kernel OpenBLAS runs, ``num_threads``, ``threading_layer``,
    ``filepath``), or None when threadpoolctl is not installed.
    """
    out = {"numpy_build": None, "libraries": None}
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        out["numpy_build"] = {k: blas.get(k) for k in ("name", "version", "openblas configuration")}
    except Exception:  # noqa: BLE001 (older NumPy: no dict mode; a bug report must not fail)
        pass
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415
    except ImportError:
        return out
    keep = (
        "user_api",
        "internal_api",
        "version",
        "architecture",
        "num_threads",
        "threading_layer",
        "prefix",
        "filepath",
    )
    out["libraries"] = [{k: d.get(k) for k in keep} for d in threadpool_info()]
    return out


def _package_version(name: str) -> str | None:
    """The installed version of a distribution, without importing it (None if absent)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cupy_version() -> str | None:
    """CuPy's version from its metadata: it ships as cupy, cupy-cuda12x, cupy-rocm-..."""
    names = metadata.packages_distributions().get("cupy", [])
    for name in names:
        version = _package_version(name)
        if version:
            return f"{version} ({name})" if name != "cupy" else version
    return None


def versions() -> dict:
    """npgated, Python, NumPy, and CuPy / PyTorch / mpi4py / threadpoolctl when installed."""
    return {
        "npgated": __version__,
        "python": f"{platform.python_version()} ({platform.python_implementation()}, "
        f"{sys.executable})",
        "numpy": np.__version__,
        "cupy": _cupy_version(),
        "torch": _package_version("torch"),
        "mpi4py": _package_version("mpi4py"),
        "threadpoolctl": _package_version("threadpoolctl"),
    }


def environment(environ=None) -> dict:
    """The values of :data:`ENV_VARS` (None for an unset variable)."""
    environ = os.environ if environ is None else environ
    return {v: environ.get(v) for v in ENV_VARS}


def _active_backend() -> str:
    try:
        return backend.current()
    except ValueError as exc:  # a bad NPGATED_BACKEND: report it instead of failing
        return f"invalid ({exc})"


# ---------------------------------------------------------------------------------------
# The warning
# ---------------------------------------------------------------------------------------
def kernel_warnings(cpu_flags, env=None, openblas_architectures=()) -> list[str]:
    """Warnings when the BLAS kernel does not match the CPU.

    Parameters
    ----------
    cpu_flags : list of str or None
        The CPU's flags (``/proc/cpuinfo``); None when unknown (no warning can be given).
    env : dict, optional
        Environment variables (default ``os.environ``); ``OPENBLAS_CORETYPE`` is read.
    openblas_architectures : sequence of str
        The kernels the loaded OpenBLAS libraries report (threadpoolctl's "architecture").

    Returns
    -------
    list of str, empty when all is well. A line for an ``OPENBLAS_CORETYPE`` that forces a
    kernel below the CPU's level (slow) or above it (illegal instructions), one for an
    unknown core name, and, without the variable, one for a loaded OpenBLAS that runs a
    kernel below the CPU's level (an OpenBLAS built without the newer kernels).
    """
    env = os.environ if env is None else env
    level = cpu_level(cpu_flags)
    found = []
    forced = (env.get("OPENBLAS_CORETYPE") or "").strip()
    if forced:
        kernel = CORETYPE_LEVELS.get(forced.lower())
        if kernel is None:
            found.append(
                f"OPENBLAS_CORETYPE={forced} is not an x86-64 core name this check "
                "knows; OpenBLAS may ignore it (unset it to let OpenBLAS choose)"
            )
        elif level is not None and LEVELS.index(kernel) < LEVELS.index(level):
            found.append(
                f"OPENBLAS_CORETYPE={forced} forces an {kernel.upper()} kernel on a CPU with "
                f"{level.upper()}: BLAS runs slower than this machine allows ({MEASURED}); "
                "unset OPENBLAS_CORETYPE unless you need that kernel (e.g. to reproduce "
                "another machine's rounding)"
            )
        elif level is not None and LEVELS.index(kernel) > LEVELS.index(level):
            found.append(
                f"OPENBLAS_CORETYPE={forced} asks for an {kernel.upper()} kernel but this CPU "
                f"only has {level.upper()}: expect crashes (illegal instruction); unset it"
            )
        return found
    for arch in openblas_architectures:
        kernel = CORETYPE_LEVELS.get(str(arch or "").lower())
        if kernel is not None and level is not None and LEVELS.index(kernel) < LEVELS.index(level):
            found.append(
                f"OpenBLAS runs its {arch} ({kernel.upper()}) kernel on a CPU with "
                f"{level.upper()}: this OpenBLAS build lacks the newer kernel and is slower "
                "than the machine allows (an OpenBLAS built with DYNAMIC_ARCH, such as "
                "NumPy's wheels, picks it)"
            )
    return found


# ---------------------------------------------------------------------------------------
# All of it
# ---------------------------------------------------------------------------------------
def collect(cpuinfo_path="/proc/cpuinfo", environ=None) -> dict:
    """Everything :func:`format_info` prints, as a JSON-friendly dict.

    Keys: ``versions``, ``backend``, ``platform``, ``cpu`` (:func:`cpu_info`), ``blas``
    (:func:`blas_info`), ``env`` (:func:`environment`) and ``warnings``
    (:func:`kernel_warnings`, a list of str).
    """
    cpu = cpu_info(cpuinfo_path)
    blas = blas_info()
    env = environment(environ)
    archs = [
        d.get("architecture")
        for d in blas["libraries"] or []
        if d.get("internal_api") == "openblas"
    ]
    return {
        "versions": versions(),
        "backend": _active_backend(),
        "platform": platform.platform(),
        "cpu": cpu,
        "blas": blas,
        "env": env,
        "threads": parallel.threads(),
        "warnings": kernel_warnings(cpu["vector_flags"], env, archs),
    }


def format_info(info: dict) -> str:
    """The dict of :func:`collect` as the text ``npgated info`` prints."""
    v, cpu, blas = info["versions"], info["cpu"], info["blas"]
    lines = [
        f"npgated        {v['npgated']}",
        f"python         {v['python']}",
        f"numpy          {v['numpy']}",
    ]
    for name in ("cupy", "torch", "mpi4py", "threadpoolctl"):
        lines.append(f"{name:<15}{v.get(name) or 'not installed'}")
    lines += [
        f"backend        {info['backend']}",
        f"platform       {info['platform']}",
        f"cpu            {cpu['model']} ({cpu['cores_available']} of {cpu['cores']} "
        "cores available)",
    ]
    flags = cpu["vector_flags"]
    lines.append(
        "vector ext.    "
        + (
            "unknown (no /proc/cpuinfo)"
            if flags is None
            else " ".join(flags) or "none of " + ", ".join(VECTOR_FLAGS)
        )
    )
    build = blas["numpy_build"] or {}
    lines.append(f"numpy's BLAS   {build.get('name') or '?'} {build.get('version') or ''}".rstrip())
    if blas["libraries"] is None:
        lines.append("loaded BLAS    unknown (pip install threadpoolctl to see the kernel)")
    for d in blas["libraries"] or []:
        lines.append(
            f"loaded {d.get('user_api') or '?':<8}{d.get('internal_api')} "
            f"{d.get('version') or ''}, kernel {d.get('architecture') or '?'}, "
            f"{d.get('num_threads')} threads ({d.get('filepath')})"
        )
    lines.append(
        f"npgated threads {info.get('threads', 1)} (npgated.parallel; NPGATED_THREADS, "
        "else eval: every core, train/generate: BLAS's threads; 1 = off)"
    )
    for name, value in info["env"].items():
        lines.append(f"{name:<21}{'(unset)' if value is None else value}")
    lines += [f"WARNING: {w}" for w in info["warnings"]]
    return "\n".join(lines)
