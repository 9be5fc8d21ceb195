"""One child process per measurement, timed repeats, and rounds merged by their medians.

Every implementation runs in a process of its own (a child started per measurement: the parent
runs ``bench.py --_child SPEC``), with ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and
``MKL_NUM_THREADS`` set to ``--threads`` and ``torch.set_num_threads(--threads)``, so NumPy's
OpenBLAS threads and torch's OpenMP threads never compete inside one process, and each child's
peak RSS (``ru_maxrss``) is its own.

Inside a child, each step runs ``--warmup`` untimed times, then ``--repeats`` timed runs of
``--iters`` steps; the median over the repeats is reported. With ``--rounds R`` every
(preset, cell, implementation) runs in R children, the implementations alternating (A B, B A,
...), and the median over the rounds is reported (this virtual machine has slow and fast phases
of minutes; a single child can land in either).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from system import OPENBLAS_VARS, ROOT, THREAD_VARS, OthersMeter

BENCH = Path(__file__).resolve().parent / "bench.py"  # the children run its --_child mode


def time_runs(step, first, warmup, iters, repeats, tokens_per_iter):
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


def load_batches(spec):
    import numpy as np  # noqa: PLC0415

    data = np.load(spec["batches"])
    return {k: data[k] for k in data.files}


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


def add_round(results: list, result: dict) -> None:
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
        proc = subprocess.run(
            [sys.executable, str(BENCH), "--_child", str(spec_path)],
            env=env,
            timeout=timeout,
            cwd=ROOT,
        )
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
