"""Keeping freed memory for the next training step (glibc ``malloc`` settings).

Why this module exists
----------------------
A training step allocates and frees the same large arrays every time: the logits, an
(N * T, V) array (28 MB for PTB at N = 20, T = 35, V = 10,000, float32), the gate buffers of
the recurrent layers (7 MB each at H = 650), their gradients. NumPy takes that memory from
the C library's ``malloc``. With its default, adaptive settings, glibc's ``malloc`` hands such
blocks out as freshly mapped pages and gives them back to the operating system when they are
freed (``munmap``, or trimming the top of its heap), so the next step touches new pages
again: one page fault per 4 KiB page, each with the kernel zeroing the page. Measured on the
book-better model (2 x 650 LSTM, V = 10,000, N = 20, T = 35): about 3,700 page faults per
training step with the defaults, none after :func:`keep_freed_memory`, and the step 8-12 %
faster (see ``benchmarks/README.md``).

What it does
------------
Two ``mallopt`` settings of the running process:

* ``M_MMAP_THRESHOLD``: blocks up to this size come from ``malloc``'s heap instead of their
  own mapping (glibc accepts at most 32 MiB on 64-bit systems);
* ``M_TRIM_THRESHOLD``: freed memory at the top of the heap is given back to the system only
  beyond this size.

The cost: the process keeps its peak memory instead of returning it between steps (its peak
RSS is unchanged). The settings are per process and cannot be undone except by calling
:func:`keep_freed_memory` with other values; on anything other than glibc (macOS, Windows,
musl) the function does nothing and returns False.

``npgated.training.fit`` and the ``npgated`` command call it; library users who train with
their own loop call it once themselves.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["keep_freed_memory", "MAX_MMAP_THRESHOLD"]

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MAX_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's upper limit on 64-bit (HEAP_MAX_SIZE / 2)
_DEFAULT_TRIM_THRESHOLD = 1024 * 1024 * 1024


def _glibc():
    """The C library as a ctypes handle if it is glibc (has ``mallopt``), else None.

    Asked of the C library itself (``confstr``), not by ``platform.libc_ver`` (which reads
    the interpreter's binary) or ``ctypes.util.find_library`` (which may start a subprocess):
    every ``npgated`` command pays for this at start-up (measured ~18 ms those ways).
    """
    if platform.system() != "Linux":
        return None
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):  # not glibc (musl), or no confstr
        return None
    if not version.startswith("glibc"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return libc


def keep_freed_memory(
    mmap_threshold: int = MAX_MMAP_THRESHOLD, trim_threshold: int = _DEFAULT_TRIM_THRESHOLD
) -> bool:
    """Let ``malloc`` reuse freed large blocks instead of returning them to the system.

    Parameters
    ----------
    mmap_threshold : int
        Bytes; blocks up to this size are served from the heap. 1 ..
        :data:`MAX_MMAP_THRESHOLD` (32 MiB, the default and glibc's limit).
    trim_threshold : int
        Bytes of free memory the heap may keep at its top; >= 0 (default 1 GiB).

    Returns
    -------
    bool
        True if the settings were applied (glibc), False where there is no glibc.

    Raises
    ------
    ValueError
        A threshold out of range (glibc would silently ignore it).
    RuntimeError
        glibc refused a setting.
    """
    for name, value, low, high, why in (
        (
            "mmap_threshold",
            mmap_threshold,
            1,
            MAX_MMAP_THRESHOLD,
            " (glibc's limit on 64-bit systems is 32 MiB)",
        ),
        ("trim_threshold", trim_threshold, 0, 2**31 - 1, " (a C int)"),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer number of bytes, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high} bytes{why}, got {value}")
    libc = _glibc()
    if libc is None:
        return False
    for param, value, name in (
        (_M_MMAP_THRESHOLD, mmap_threshold, "M_MMAP_THRESHOLD"),
        (_M_TRIM_THRESHOLD, trim_threshold, "M_TRIM_THRESHOLD"),
    ):
        if libc.mallopt(param, value) != 1:
            raise RuntimeError(f"glibc's mallopt refused {name} = {value}")
    return True
