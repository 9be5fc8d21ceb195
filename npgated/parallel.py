"""Every core for large operations: products and element-wise passes split over threads.

Why this module exists
----------------------
On a 2-core machine NumPy's OpenBLAS runs each large matrix product on both cores, but the
work between the products runs on one core while the other idles: the softmax's ``exp``
over the (N * T, V) logits, the gradient scale, the optimizer's update, the clipping norm,
zeroing the gradients — a third of a step of the book's model (measured 2026-11-30) —
and, in evaluation, the ``exp`` of every logit.
Running those in threads of our own does not help as long as OpenBLAS keeps its own
threads: they keep spinning on the cores for a while after each product, and our threads
compete with them.

So npgated owns the parallelism. With ``use_threads(n)``, n >= 2:

* BLAS runs every call in one thread (``threadpoolctl``), so no BLAS thread competes;
* a pool of n - 1 worker threads plus the calling thread split each *large* matrix product
  (along the longer side of its output, by rows or by columns) and each large element-wise
  pass into n parts; NumPy releases the GIL inside BLAS calls and ufunc loops, so the parts
  run at the same time on different cores.

Work too small to pay for a hand-over between threads (about 20 microseconds) runs in the
calling thread: ``MIN_FLOPS`` for products, ``MIN_ELEMENTS`` for element-wise passes.

The layers keep their equations: they call :func:`matmul` / :func:`add_matmul` where they
would write ``a @ b`` / ``c += a @ b`` for a product that can be large, and the loss, the
optimizer and ``zero_grads`` hand their row or parameter blocks to :func:`run` /
:func:`each`. No thread code lives in a layer. :mod:`npgated.pipeline` hands whole stages of
a recurrent stack to :func:`run`; inside a piece of :func:`run` nothing is split again (the
piece has its core; its parts would only run one after the other there). (Clipping's norm
and scale stayed plain: split, they were measured slower.)

Same numbers
------------
Splitting never splits a sum: every output element of a product is computed by one BLAS
call over the whole inner dimension, and an element-wise pass computes each element alone.
Whether a BLAS kernel rounds an element the same way inside a block of 175 rows as inside
one of 350 is the BLAS's business, so the tests compare threaded and plain results to float
tolerances (element-wise passes are bit-identical).

The switch
----------
Off (one thread, BLAS as configured) until :func:`use_threads` is called: importing npgated
or calling ``npgated.training.fit`` starts no thread and changes no BLAS setting (a library
user calls ``npgated.parallel.use_threads()`` once). The ``npgated`` command uses the number
the environment asks for (``NPGATED_THREADS``), or else what was measured faster on a 2-core
machine (2026-12-02, README "Speed"): ``eval`` every core this process may run on (its
blocks of logits split well: ~1.8 s instead of ~2.0 s for the book's model on PTB test);
``train`` every core when the recurrent step's ``h @ Wh`` is too small to be split anyway
(below :data:`MIN_FLOPS`: the book's 1 x 100 model trains 9-15 % faster), else BLAS's own
threads (a product of 20-32 rows split over these threads runs slower than over OpenBLAS's:
zaremba-small 17-22 % slower, a 2 x 300 LSTM 11 %, book-better about even); ``generate``
BLAS's own threads (its (1, H) @ (H, V) product, too small to split, would run on one
pinned BLAS thread instead of two: 2x slower).
Keeping BLAS's threads outside the split work was measured too and is far worse: OpenBLAS's
idle threads keep spinning on the cores the pool needs (book-small 22,300 -> 14,300 tok/s).
Under ``mpiexec`` each rank takes its share of the machine's cores (``npgated.distributed``).
``use_threads(1)`` (for the command: ``NPGATED_THREADS=1``) is the plain path: every function
below is then the plain NumPy expression and BLAS gets its own threads back. This is the
library's one process-wide setting besides the backend switch, and like it, it is read where
work is done, never stored in a layer.

On a GPU (CuPy arrays, or the project's stand-in) nothing is split: the device runs the
whole operation.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from npgated import backend

__all__ = [
    "use_threads",
    "threads",
    "requested_threads",
    "parts",
    "run",
    "each",
    "over_rows",
    "matmul",
    "matmul_for",
    "add_matmul",
    "available_cores",
    "MIN_FLOPS",
    "MIN_ELEMENTS",
    "MIN_ROWS",
    "MIN_COLS",
]

ENV_VAR = "NPGATED_THREADS"
MIN_FLOPS = 1 << 22  # a product below ~4 MFLOP (~40 us on one core) stays in one thread
MIN_ELEMENTS = 1 << 16  # an element-wise pass below 64 Ki elements stays in one thread
MIN_ROWS = 16  # a product split by rows gives each thread at least this many rows
MIN_COLS = 32  # a product split by columns gives each thread at least this many columns


class _Pool:
    """n - 1 worker threads, and BLAS limited to one thread per call while the pool lives."""

    def __init__(self, n: int):
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 (only when threads are used)

        self.n = n
        self._blas = threadpool_limits(limits=1, user_api="blas")
        self._executor = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="npgated")

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._blas.restore_original_limits()


_pool: _Pool | None = None
_lock = threading.Lock()
_inside = threading.local()  # .active: this thread is running a piece of run()


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def requested_threads(default: int | None = None) -> int:
    """``$NPGATED_THREADS`` if set (an integer >= 1), else ``default``, else
    :func:`available_cores`."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return available_cores() if default is None else default
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(
            f"{ENV_VAR}={value!r} is not a thread count: set it to an integer >= 1 "
            f"(1 turns npgated's threads off), or unset it to use every core"
        )
    return n


def use_threads(n: int | None = None) -> int:
    """Run large operations on ``n`` threads (1: off). Returns the number now in use.

    Parameters
    ----------
    n : int or None
        Threads, >= 1; None takes :func:`requested_threads` (``$NPGATED_THREADS``, else the
        available cores).
    """
    global _pool
    if n is None:
        n = requested_threads()
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"use_threads needs a thread count >= 1 (1 = off), got {n!r}")
    n = int(n)
    with _lock:
        if (_pool.n if _pool is not None else 1) == n:
            return n
        if _pool is not None:
            _pool.close()
            _pool = None
        if n > 1:
            _pool = _Pool(n)
    return n


def threads() -> int:
    """The number of threads large operations use now (1 when off)."""
    pool = _pool
    return 1 if pool is None else pool.n


def _share() -> int:
    """How many threads this call may split work over: :func:`threads`, or 1 inside a piece
    of :func:`run` (the piece has its thread; a nested split would run its parts one after
    the other there, as smaller and slower BLAS calls)."""
    return 1 if getattr(_inside, "active", False) else threads()


def _host(*arrays) -> bool:
    """True when every array is a plain host NumPy array (not CuPy, not the stand-in)."""
    return all(type(a) is np.ndarray for a in arrays)


def parts(length: int, min_part: int = 1, *arrays) -> list:
    """``range(length)`` as at most :func:`threads` contiguous slices of >= ``min_part`` each.

    One slice (the whole range) when threads are off or ``arrays`` are not host arrays.
    """
    n = _share()
    if n > 1 and arrays and not _host(*arrays):
        n = 1
    k = max(1, min(n, length // max(1, min_part)))
    bounds = [length * i // k for i in range(k + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(k)]


def run(fn, pieces) -> list:
    """``[fn(p) for p in pieces]``, the pieces on the pool's threads at the same time.

    The first piece runs in the calling thread; an exception in any piece is raised here
    after every piece has finished. Every piece runs under the caller's ``np.errstate``
    (NumPy keeps it per thread: a worker would otherwise use the defaults).
    """
    pieces = list(pieces)
    pool = _pool
    if pool is None or len(pieces) < 2 or getattr(_inside, "active", False):
        # off, nothing to share, or called from inside a piece: a nested hand-over could
        # wait for a worker that is busy running the caller (a deadlock), so run here
        return [fn(p) for p in pieces]
    errstate = np.geterr()
    futures = [pool._executor.submit(_as_piece, fn, p, errstate) for p in pieces[1:]]
    try:
        first = _as_piece(fn, pieces[0], errstate)
    finally:
        rest = [f.exception() for f in futures]  # wait for all before anything is raised
    for err in rest:
        if err is not None:
            raise err
    return [first] + [f.result() for f in futures]


def _as_piece(fn, piece, errstate):
    """``fn(piece)`` under ``errstate``, this thread marked as running a piece (:func:`run`)."""
    _inside.active = True
    try:
        with np.errstate(**errstate):
            return fn(piece)
    finally:
        _inside.active = False


def over_rows(fn, n_rows: int, row_size: int, *arrays) -> None:
    """``fn(rows)`` for contiguous row slices of ``range(n_rows)`` shared over the threads.

    For an element-wise pass over the rows of (n_rows, row_size) arrays (a bias added to
    every row, a per-row scale): each thread gets at least :data:`MIN_ELEMENTS` elements;
    one call with all rows when the threads are off or ``arrays`` are not host arrays.
    """
    run(fn, parts(n_rows, 1 + MIN_ELEMENTS // max(1, row_size), *arrays))


def each(fn, *arrays, min_elements: int | None = None, block: int | None = None) -> None:
    """Call ``fn(*blocks)`` on matching flat blocks of the equally sized ``arrays``.

    For element-wise in-place work (an optimizer's update, a gradient scale): ``fn`` sees
    1-D views of the same element range of every array. Arrays that are not C-contiguous
    (no flat view) are handed over whole. Blocks have at least ``min_elements`` elements
    (default :data:`MIN_ELEMENTS`); with ``block``, at most that many (host arrays, threads
    on or off): ``fn``'s temporaries then stay small, in cache and on the heap (a temporary
    above 32 MiB gets fresh pages from the system at every call, see
    :mod:`npgated.allocator`: an SGD step over book-better's 41 MB flat buffer took twice
    as long whole as in blocks of 1 Mi elements, measured on a busy machine).
    """
    min_elements = MIN_ELEMENTS if min_elements is None else min_elements
    size = arrays[0].size
    if any(a.size != size for a in arrays):
        raise ValueError(f"each: arrays of different sizes {[a.size for a in arrays]}")
    flat_ok = _host(*arrays) and all(a.flags.c_contiguous for a in arrays)
    if block is not None and flat_ok and size > block:

        def piece(*views):
            n = views[0].size
            for start in range(0, n, block):
                fn(*(v[start : start + block] for v in views))
    else:
        piece = fn
    if _share() == 1 or size < 2 * min_elements or not flat_ok:
        piece(*((a.reshape(-1) for a in arrays) if piece is not fn else arrays))
        return
    flat = [a.reshape(-1) for a in arrays]
    run(lambda s: piece(*(f[s] for f in flat)), parts(size, min_elements))


def _split_product(a, b):
    """How to split ``a @ b`` (2-D host arrays): ("rows" | "cols", slices), or None."""
    M, K = a.shape
    N = b.shape[1]
    if 2 * M * K * N < MIN_FLOPS or _share() == 1 or not _host(a, b):  # cheapest test first
        return None
    # Along the output's longer side: each thread then reads only its share of the larger
    # operand (measured 2026-12-02 on 2 cores: the output layer's dW, 101 x 700 @ 700 x 10,000,
    # 5.65 ms by columns against 6.63 by rows; its dx, 700 x 10,000 @ 10,000 x 100, 5.84 by
    # rows against 7.06 by columns; the other shapes of the models equal or better so)
    if N >= 2 * MIN_COLS and (N > M or M < 2 * MIN_ROWS):
        return "cols", parts(N, MIN_COLS)
    if M >= 2 * MIN_ROWS:
        return "rows", parts(M, MIN_ROWS)
    return None


def matmul_for(M: int, K: int, N: int, like):
    """The matmul for the repeated (M, K) @ (K, N) products of a loop, decided once.

    A Time layer's per-step products all have one shape: this returns the array module's
    plain ``matmul`` when a product of that size is never split (threads off, too small, or
    a device), else :func:`matmul`; call the result as ``mm(a, b, out=...)`` inside the loop,
    so no step repeats the decision.
    """
    if _share() == 1 or 2 * M * K * N < MIN_FLOPS or not _host(like):
        return backend.get_array_module(like).matmul
    return matmul


def matmul(a, b, out=None):
    """``a @ b`` for 2-D ``a`` (M, K) and ``b`` (K, N), into ``out`` (M, N) if given.

    Large products are split over the threads along the output's longer side, by rows of
    ``a`` or by columns of ``b``; each part is one BLAS call over the whole inner dimension K.
    """
    plan = _split_product(a, b)
    if plan is None:
        if out is None:
            return a @ b
        xp = np if type(a) is np.ndarray else backend.get_array_module(a)
        return xp.matmul(a, b, out=out)
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    how, pieces = plan
    if how == "rows":
        run(lambda s: np.matmul(a[s], b, out=out[s]), pieces)
    else:
        run(lambda s: np.matmul(a, b[:, s], out=out[:, s]), pieces)
    return out


def add_matmul(c, a, b) -> None:
    """``c += a @ b`` in place (c (M, N), a (M, K), b (K, N)): a gradient accumulation.

    Split like :func:`matmul`; each part adds its block of the product to its block of c.
    """
    plan = _split_product(a, b)
    if plan is None:
        c += a @ b
        return
    how, pieces = plan
    if how == "rows":

        def part(s):
            c[s] += a[s] @ b
    else:

        def part(s):
            c[:, s] += a @ b[:, s]

    run(part, pieces)
