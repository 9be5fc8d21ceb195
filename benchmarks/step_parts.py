#!/usr/bin/env python
"""Where a training step's time goes: each layer's forward and backward, the loss, clipping,
the update and zeroing, timed one by one, with npgated's own threads off and on.

    python benchmarks/step_parts.py --preset book-small --cell lstm
    python benchmarks/step_parts.py --preset book-better --cell lstm --iters 5

The step is the benchmark's (``zero_grads -> forward -> backward -> clip -> SGD``, float32,
random token ids of the preset's (N, T), V = 10,000); each part is timed with
``time.perf_counter`` around its call, summed over ``--iters`` steps after a warm-up, for
``--rounds`` rounds alternating threads off (BLAS with its threads) and on
(:mod:`npgated.parallel`, BLAS one thread per call); the table shows the median per part in
milliseconds. Its sum is a little above an untimed step (the timer calls themselves).
Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict

import numpy as np
from cases import VOCAB, preset_spec

from npgated import allocator, parallel
from npgated.models.rnnlm import BetterRnnlm, Rnnlm
from npgated.optim import SGD, clip_grads
from npgated.training.config import PRESETS


def build(preset: str, cell: str):
    """The preset's model (float32) as the benchmark builds it, and its (N, T), lr and clip."""
    case = preset_spec(preset, cell, smoke=False)
    cls = BetterRnnlm if case["model"] == "BetterRnnlm" else Rnnlm
    model = cls(**case["model_kwargs"], seed=0, dtype=np.float32)
    return model, case["N"], case["T"], case["lr"], case["max_grad_norm"]


def time_parts(model, optimizer, max_norm, xs, ts, iters: int) -> dict:
    """Milliseconds per step of every part, summed over ``iters`` steps."""
    parts = defaultdict(float)
    clock = time.perf_counter
    layers = list(model.layers.items())
    for _ in range(iters):
        t0 = clock()
        model.zero_grads()
        parts["zero grads"] += clock() - t0
        out = xs
        for name, layer in layers:
            t0 = clock()
            out = layer.forward(out, ts) if name == "loss" else layer.forward(out)
            parts[f"F {name}"] += clock() - t0
        d = 1.0
        for name, layer in reversed(layers):
            t0 = clock()
            d = layer.backward(d)
            parts[f"B {name}"] += clock() - t0
        t0 = clock()
        if max_norm > 0:
            clip_grads(model.grads, max_norm)
        parts["clip"] += clock() - t0
        t0 = clock()
        optimizer.update(model.params, model.grads)
        parts["update"] += clock() - t0
    return {k: 1e3 * v / iters for k, v in parts.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--preset",
        default="book-small",
        choices=sorted(PRESETS),
        help="a preset of npgated.training.config (its model, N and T; the "
        "regularizers beyond dropout are not part of the benchmark's step)",
    )
    p.add_argument("--cell", default="lstm", choices=("lstm", "gru", "rnn"))
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--threads",
        type=int,
        default=max(2, parallel.available_cores()),
        help="npgated.parallel's threads in the 'on' column",
    )
    args = p.parse_args(argv)
    if args.threads < 2 or args.iters < 1 or args.rounds < 1:
        p.error("--threads must be >= 2 (the 'on' column), --iters and --rounds >= 1")
    allocator.keep_freed_memory()
    model, N, T, lr, max_norm = build(args.preset, args.cell)
    rng = np.random.default_rng(0)
    xs, ts = rng.integers(0, VOCAB, (N, T)), rng.integers(0, VOCAB, (N, T))
    optimizer = SGD(lr=lr)
    runs = {1: [], args.threads: []}
    for r in range(args.rounds):
        for n in runs if r % 2 == 0 else list(runs)[::-1]:
            parallel.use_threads(n)
            time_parts(model, optimizer, max_norm, xs, ts, 2)  # warm-up
            runs[n].append(time_parts(model, optimizer, max_norm, xs, ts, args.iters))
    parallel.use_threads(1)
    names = list(runs[1][0])
    med = {n: {k: statistics.median(run[k] for run in runs[n]) for k in names} for n in runs}
    on = args.threads
    print(
        f"{args.preset} {args.cell}, N={N}, T={T}: ms per step, median of {args.rounds} "
        f"rounds of {args.iters} steps"
    )
    print(f"| part | threads off | {on} threads |")
    print("|---|---:|---:|")
    for k in names:
        print(f"| {k} | {med[1][k]:.2f} | {med[on][k]:.2f} |")
    total = {n: sum(med[n].values()) for n in runs}
    print(f"| **sum** | **{total[1]:.1f}** | **{total[on]:.1f}** |")
    print(
        f"tokens/s from the sums: {N * T / total[1] * 1e3:,.0f} off, "
        f"{N * T / total[on] * 1e3:,.0f} on"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
