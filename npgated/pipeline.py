"""Both cores on the recurrence: a stack of recurrent layers pipelined over chunks of time.

Why
---
The recurrence is sequential in time: step t of a layer needs its step t - 1. A step's
product ``h @ Wh`` has only N rows (20 for the book's models), and a BLAS splits such a
product over two cores poorly. But in a stack, layer l + 1 at step t - 1 does not wait for
layer l at step t: the two are independent. So the window of T steps is cut into C chunks
of consecutive steps, and layer l runs chunk k + 1 while layer l + 1 runs chunk k, each in
its own thread with one BLAS thread (``npgated.parallel``'s pool, which pins BLAS to one
thread per call)::

    thread 1   layer 1: | chunk 0 | chunk 1 | chunk 2 | ... | chunk C-1 |
    thread 2   layer 2:           | chunk 0 | chunk 1 | ... | chunk C-2 | chunk C-1 |

Backward runs the same in reverse: the top layer starts with the last chunk, and layer l
runs chunk k as soon as layer l + 1 has handed down the gradient of its input there. With
L layers on L cores a window takes about (C + L - 1) / C of one layer's time instead of L
times it, less what a hand-over costs (a few tens of microseconds, C + L - 1 per pass).

What it computes
----------------
Exactly what the layers compute one after the other, to float rounding: the equations stay
in the layers. A recurrent layer's :meth:`~npgated.layers.recurrent.RecurrentLayer.forward_chunk`
is its stateful ``forward`` over the chunk, continuing from the state the chunk before it
left, with the window's masks drawn once at the first chunk (the draws ``forward`` makes for
the whole window); :meth:`~npgated.layers.recurrent.RecurrentLayer.backward_chunk` is its
``backward`` over the chunk starting from the gradient ``dh`` (and ``dc``) the chunk after
it left, the weight gradients summed over all chunks at the last; ``TimeDropout`` applies its
chunk's part of the window's mask. Every generator draws what it draws in sequential order
(each layer has its own and draws at its first chunk), so dropout masks, recurrent masks
and the TBPTT state carried to the next window are the sequential ones. What differs is
only how sums are grouped: the input projection and the input gradient are one matrix
product per chunk instead of one per window, and the weight gradients (one product over the
window, as in sequential backward) sum the rows in chunk order (``tests/test_pipeline.py``
holds both paths to the same numbers in float64).

Where it applies
----------------
To the *stack*: the layers from the first recurrent layer of a model's body to its last,
when there are at least two and every layer between them can run in chunks (dropout). The
layers before the stack (embedding, input dropout) and after it (the last dropout, AR/TAR,
the output layer, the loss) run on the whole window as before. Each stage is one recurrent
layer and the chunkable layers after it up to the next recurrent layer.

The switch
----------
``NPGATED_PIPELINE`` in the environment:

* unset (or ``auto``): on when npgated's threads are on (``npgated.parallel``, >= 2) and no
  more of them than the stack has layers (inside a stage nothing is split: on a machine with
  many cores, splitting each product uses them better), the arrays are NumPy arrays, the
  stack has >= 2 recurrent layers and every one of them has
  :data:`MIN_HIDDEN` <= H <= :data:`MAX_HIDDEN`. Above that band the products of one layer
  split well over the threads, and a layer on one core is slower than its share of both:
  measured on two cores of a 16-core Xeon virtual machine (2026-12-04, whole training
  steps, median of 5 rounds, a noisy sanity check, not the project's benchmark), 2 x 200
  LSTM 67 ms pipelined against 72 ms sequential (either threads), 2 x 650 323 against 296
  ms, 2 x 1,500 1,259 against 1,004 ms; a 2 x 650 layer's forward took 76-94 ms on one core
  against 50 ms split over two. Below the band the Python work of a step, which holds the
  interpreter lock, is a large share (a guess, not measured). Both bounds wait for the
  quiet benchmark on the target machine;
* ``1``: on for every stack of >= 2 recurrent layers with at least 2 chunks, whatever H (with
  npgated's threads off the chunks run one after the other in this thread: the same numbers,
  for tests);
* ``0``: off, the layers one after the other on whole windows.

Chunks: ``C = min(T, CHUNKS_PER_STAGE * L)`` of (nearly) equal length.
"""

from __future__ import annotations

import os
import threading
from typing import NamedTuple

import numpy as np

from npgated import backend, parallel
from npgated.layers.recurrent import RecurrentLayer

__all__ = [
    "CHUNKS_PER_STAGE",
    "ENV_VAR",
    "MAX_HIDDEN",
    "MIN_HIDDEN",
    "Plan",
    "backward",
    "forward",
    "mode",
    "plan",
]

ENV_VAR = "NPGATED_PIPELINE"
MIN_HIDDEN = 128  # auto: every recurrent layer of the stack at least this wide ...
MAX_HIDDEN = 400  # ... and at most this wide (see the module docstring)
CHUNKS_PER_STAGE = 4  # chunks per window per stage: fill and drain cost (L - 1) / (C + L - 1)


def mode() -> str:
    """``"auto"``, ``"on"`` or ``"off"`` from ``$NPGATED_PIPELINE`` (see the module docstring)."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in ("", "auto"):
        return "auto"
    if value in ("1", "on", "yes", "true"):
        return "on"
    if value in ("0", "off", "no", "false"):
        return "off"
    raise ValueError(
        f"{ENV_VAR}={value!r} is not a switch: set it to 0 (off), 1 (on for every stack of "
        "recurrent layers) or auto (on for wide stacks when npgated's threads are on), or "
        "unset it (auto)"
    )


class Plan(NamedTuple):
    """How a forward ran the stack (what its backward must mirror).

    Attributes
    ----------
    start, stop : int
        The stack is ``layers[start:stop]``.
    stages : list of lists of layers
        Each a recurrent layer and the chunkable layers after it.
    bounds : list of (t0, t1)
        The chunks of the window, in time order.
    T : int
        The window's length.
    """

    start: int
    stop: int
    stages: list
    bounds: list
    T: int


def _stack(layers):
    """``(start, stop, stages)`` of the pipelinable stack in ``layers``, or None."""
    recurrent = [i for i, layer in enumerate(layers) if isinstance(layer, RecurrentLayer)]
    if len(recurrent) < 2:
        return None
    start, stop = recurrent[0], recurrent[-1] + 1
    stages = []
    for layer in layers[start:stop]:
        if not (hasattr(layer, "forward_chunk") and hasattr(layer, "backward_chunk")):
            return None
        if isinstance(layer, RecurrentLayer):
            stages.append([layer])
        else:
            stages[-1].append(layer)
    return start, stop, stages


def plan(layers, xs) -> Plan | None:
    """The plan for running ``layers`` on ``xs`` (N, T, ...) pipelined, or None (sequential).

    ``xs`` is the input of the stack's first layer (its N, T, backend decide), or of the
    first of ``layers`` when the caller only asks whether a plan exists.
    """
    how = mode()
    if how == "off":
        return None
    found = _stack(list(layers))
    if found is None or getattr(xs, "ndim", 0) < 2:
        return None
    start, stop, stages = found
    if how == "auto" and (
        not 2 <= parallel.threads() <= len(stages)
        or type(xs) is not np.ndarray
        or not all(MIN_HIDDEN <= stage[0].hidden_size <= MAX_HIDDEN for stage in stages)
    ):
        return None
    T = int(xs.shape[1])
    C = min(T, CHUNKS_PER_STAGE * len(stages))
    if C < 2:
        return None
    edges = [T * k // C for k in range(C + 1)]
    return Plan(start, stop, stages, list(zip(edges[:-1], edges[1:])), T)


def forward(layers, xs):
    """Run ``layers`` one after another on ``xs``, their recurrent stack pipelined when it
    applies; returns ``(out, plan)``, ``plan`` None when nothing was pipelined.

    Pass ``plan`` to :func:`backward` for the backward of this forward.
    """
    layers = list(layers)
    found = _stack(layers) if mode() != "off" else None
    out = xs
    if found is None:
        for layer in layers:
            out = layer.forward(out)
        return out, None
    start, stop, _ = found
    for layer in layers[:start]:
        out = layer.forward(out)
    p = plan(layers, out)
    if p is None:
        for layer in layers[start:stop]:
            out = layer.forward(out)
    else:
        out = _forward_stack(p, out)
    for layer in layers[stop:]:
        out = layer.forward(out)
    return out, p


def backward(layers, dout, p: Plan | None):
    """Backward through ``layers`` (in reverse) from ``dout``, mirroring the forward that
    returned ``p``; returns the gradient w.r.t. that forward's input."""
    layers = list(layers)
    d = dout
    if p is None:
        for layer in reversed(layers):
            d = layer.backward(d)
        return d
    for layer in reversed(layers[p.stop :]):
        d = layer.backward(d)
    d = _backward_stack(p, d)
    for layer in reversed(layers[: p.start]):
        d = layer.backward(d)
    return d


# ---------------------------------------------------------------------------------------
# the schedule
# ---------------------------------------------------------------------------------------
class _Handoff:
    """Chunk results handed from one stage to the next, with an event per chunk; a failure
    in any stage wakes every waiting one (which then stops)."""

    def __init__(self, stages: int, chunks: int):
        self.values = [[None] * chunks for _ in range(stages)]
        self.ready = [[threading.Event() for _ in range(chunks)] for _ in range(stages)]
        self.failed = False

    def put(self, stage: int, k: int, value) -> None:
        self.values[stage][k] = value
        self.ready[stage][k].set()

    def take(self, stage: int, k: int):
        self.ready[stage][k].wait()
        if self.failed:
            raise _Stopped
        value, self.values[stage][k] = self.values[stage][k], None
        return value

    def fail(self) -> None:
        self.failed = True
        for row in self.ready:
            for event in row:
                event.set()


class _Stopped(Exception):
    """Another stage failed; this one stops (its error is the one raised)."""


def _run_stages(order, stage_fn, handoff) -> None:
    """Every stage of ``order`` at the same time on npgated's threads (the first in this
    thread); one after the other in ``order`` when the threads are off. Stages only wait for
    stages earlier in ``order``, which started first, so no thread waits forever."""

    def run_one(s):
        try:
            stage_fn(s)
        except _Stopped:
            pass
        except BaseException:
            handoff.fail()
            raise

    parallel.run(run_one, order)


def _forward_stack(p: Plan, xs):
    L, T = len(p.stages), p.T
    handoff = _Handoff(L, len(p.bounds))
    outs = [None] * len(p.bounds)

    def stage(s):
        for k, (t0, t1) in enumerate(p.bounds):
            h = xs[:, t0:t1] if s == 0 else handoff.take(s - 1, k)
            for layer in p.stages[s]:
                h = layer.forward_chunk(h, t0, T)
            if s == L - 1:
                outs[k] = h
            else:
                handoff.put(s, k, h)

    _run_stages(range(L), stage, handoff)
    return backend.get_array_module(outs[0]).concatenate(outs, axis=1)


def _backward_stack(p: Plan, dys):
    L, T = len(p.stages), p.T
    handoff = _Handoff(L, len(p.bounds))
    douts = [None] * len(p.bounds)

    def stage(s):
        for k in reversed(range(len(p.bounds))):
            t0, t1 = p.bounds[k]
            d = dys[:, t0:t1] if s == L - 1 else handoff.take(s + 1, k)
            for layer in reversed(p.stages[s]):
                d = layer.backward_chunk(d, t0, T)
            if s == 0:
                douts[k] = d
            else:
                handoff.put(s, k, d)

    _run_stages(range(L - 1, -1, -1), stage, handoff)
    return backend.get_array_module(douts[0]).concatenate(douts, axis=1)
