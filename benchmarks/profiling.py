"""``--profile``: cProfile of npgated's training step, then its costliest source lines.

The profile replaces the timing: for each preset and cell, cProfile by function (saved as
``.prof`` under ``--profile-dir``), then, with ``line_profiler`` installed, the source lines of
the layers, the optimizer and the clipping that cost most, in ms per iteration.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def run_profile(spec, result, model, train_step):
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
    print(
        f"\n=== cProfile: {spec['preset']} {spec['cell']} npgated, {spec['iters']} training "
        f"iterations, {1e3 * wall / spec['iters']:.1f} ms/iter under the profiler "
        f"(stats in {out}) ==="
    )
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
    funcs = {
        id(f): f
        for layer in model.layers.values()
        for n in names
        if callable(f := getattr(type(layer), n, None))
    }
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
            rows.append(
                (
                    t * stats.unit * 1e3 / spec["iters"],
                    hits // spec["iters"],
                    f"{Path(filename).name}:{lineno}",
                    func,
                    code,
                )
            )
    rows.sort(reverse=True)
    print(
        f"\n=== lines: {spec['preset']} {spec['cell']} npgated, {wall_ms:.1f} ms/iter under "
        "line_profiler; ms and calls per training iteration ==="
    )
    print(f"{'ms':>8} {'%':>5} {'calls':>6}  {'where':<18} {'function':<28} code")
    listed = []
    for ms, calls, where, func, code in rows[: spec["profile_top"]]:
        print(f"{ms:8.2f} {100 * ms / wall_ms:5.1f} {calls:6d}  {where:<18} {func:<28} {code[:80]}")
        listed.append({"ms": round(ms, 3), "calls": calls, "where": where, "code": code})
    result["profile_lines"] = listed
    result["profile_lines_ms_per_iter"] = round(wall_ms, 2)
