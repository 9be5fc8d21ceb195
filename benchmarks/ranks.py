#!/usr/bin/env python
"""Data-parallel speed: one process on all cores against K MPI ranks on one core each.

Run through the benchmark's front door (from the repository root)::

    python benchmarks/bench.py --ranks 2                          # book-small and book-better
    python benchmarks/bench.py --ranks 2 --presets book-small --iters 10 --repeats 2

For every preset (LSTM, float32, N and T of the preset, V = 10,000) it times the training
step ``zero_grads -> forward -> backward -> clip -> SGD`` twice:

* **1 process x K BLAS threads** (``npgated train``), the whole batch of N streams;
* **K ranks x 1 BLAS thread** (``mpiexec -n K npgated train``), N / K streams each, the
  step of :meth:`npgated.distributed.DataParallel.gradients` (the four scalars into the
  gradient buffer, one in-place ``Allreduce`` on it, clip; a model with separate gradient
  arrays, ``NPGATED_FLAT=0``, packs them into the buffer first and unpacks while clipping);

and reports tokens/s of the global batch, the speed-up, and the time shares inside the
distributed step: the ``Allreduce`` as the step sees it (transfer plus waiting for the slower
rank), the same ``Allreduce`` timed alone after a barrier (transfer only: the number the
scaling model in ``benchmarks/scaling.py`` uses), and what ``GradientBuffer.pack`` and
``finish`` take around it (the "pack + unpack" column: with the flat buffers, the default,
only the scalars, the norm and the scale remain of it).

The touched-rows question. The embedding's gradient is a dense (V, D) array, but only the
rows of the words in the batch are non-zero (unless the output layer is tied to it: then
every row is touched). For an untied model the worker also times the alternative exchange:
``Allreduce`` of everything but the embedding, plus an ``Allgather`` of each rank's touched
row ids and rows and a scatter-add of them (the extra work it needs), against the one dense
``Allreduce``. Whether it pays is then a matter of these measured milliseconds.

Results: ``benchmarks/results/<date>-ranks.json`` and ``.md`` (or ``--out``).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# =======================================================================================
# worker (one process, or one rank under mpiexec)
# =======================================================================================
def _worker(spec_path: str) -> int:
    import numpy as np  # noqa: PLC0415
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    from npgated import allocator, distributed  # noqa: PLC0415
    from npgated.models.rnnlm import BetterRnnlm, Rnnlm  # noqa: PLC0415
    from npgated.optim import SGD, clip_grads  # noqa: PLC0415

    spec = json.loads(Path(spec_path).read_text())
    allocator.keep_freed_memory()
    dp = distributed.DataParallel.from_launcher()  # limits BLAS to this rank's share
    limit = threadpool_limits(limits=spec["threads"], user_api="blas")  # noqa: F841
    K = 1 if dp is None else dp.size
    data = np.load(spec["batches"])
    txs, tts = data["train_xs"], data["train_ts"]
    cls = BetterRnnlm if spec["model"] == "BetterRnnlm" else Rnnlm
    model = cls(**spec["model_kwargs"], seed=0, dtype=np.float32)
    N, T, max_norm = spec["N"], spec["T"], spec["max_grad_norm"]
    optimizer = SGD(lr=spec["lr"])
    clock = {"allreduce": 0.0, "pack": 0.0}
    if dp is not None:
        dp.attach(model, N)
        buf, reduce_ = dp.buffer, dp.allreduce
        pack, finish = buf.pack, buf.finish

        def timed(fn, key):
            def call(*a, **k):
                t = time.perf_counter()
                out = fn(*a, **k)
                clock[key] += time.perf_counter() - t
                return out

            return call

        dp.allreduce = timed(reduce_, "allreduce")
        buf.pack, buf.finish = timed(pack, "pack"), timed(finish, "pack")

    def step(k):
        xs, ts = txs[k % len(txs)], tts[k % len(tts)]
        if dp is not None:
            dp.gradients(model, xs, ts, max_norm)
        else:
            model.zero_grads()
            model.forward(xs, ts)
            model.backward()
            clip_grads(model.grads, max_norm)
        optimizer.update(model.params, model.grads)

    k = 0
    for _ in range(spec["warmup"]):
        step(k)
        k += 1
    walls, reduce_share, pack_share = [], [], []
    for _ in range(spec["repeats"]):
        if dp is not None:
            dp.barrier()
        clock.update(allreduce=0.0, pack=0.0)
        t0 = time.perf_counter()
        for _ in range(spec["iters"]):
            step(k)
            k += 1
        wall = time.perf_counter() - t0
        walls.append(wall)
        reduce_share.append(clock["allreduce"] / wall)
        pack_share.append(clock["pack"] / wall)
    wall = statistics.median(walls)
    result = dict(
        ranks=K,
        threads=spec["threads"],
        params=model.num_params(),
        buffer_bytes=None if dp is None else int(dp.buffer.host.nbytes),
        tok_s=N * T * spec["iters"] / wall,
        tok_s_repeats=[round(N * T * spec["iters"] / w, 1) for w in walls],
        ms_per_step=1e3 * wall / spec["iters"],
    )
    if dp is not None:
        result["allreduce_share_in_step"] = statistics.median(reduce_share)
        result["pack_unpack_share"] = statistics.median(pack_share)
        result["allreduce_alone_ms"] = _time_alone(dp, dp.buffer.host, spec["iters"])
        if not spec["model_kwargs"].get("tie_weights"):
            result["touched_rows"] = _touched_rows(dp, model, txs, spec["iters"])
    if dp is None or dp.is_writer:
        Path(spec["result"]).write_text(json.dumps(result, indent=1))
    return 0


def _time_alone(dp, host, iters):
    """Median ms of one in-place Allreduce of ``host`` after a barrier (transfer only)."""
    times = []
    for _ in range(max(iters, 10)):
        dp.barrier()
        t = time.perf_counter()
        dp.allreduce(host)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def _touched_rows(dp, model, txs, iters):
    """The dense exchange of the embedding gradient against exchanging its touched rows."""
    import numpy as np  # noqa: PLC0415
    from mpi4py import MPI  # noqa: PLC0415

    emb = model.layers["embed"].grads[0]
    V, D = emb.shape
    host = dp.buffer.host
    emb_size = V * D  # the embedding's gradient comes first in the buffer (model order)
    rest = host[emb_size:]
    dense, sparse, extra, uniques = [], [], [], []
    for k in range(max(iters, 10)):
        xs = dp.rows(txs[k % len(txs)])
        dp.barrier()
        t = time.perf_counter()
        dp.comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
        dense.append(time.perf_counter() - t)

        dp.barrier()
        t0 = time.perf_counter()
        ids = np.unique(xs)  # the rows this rank touched
        rows = np.ascontiguousarray(emb[ids])
        t1 = time.perf_counter()
        dp.comm.Allreduce(MPI.IN_PLACE, rest, op=MPI.SUM)
        counts = np.array(dp.comm.allgather(len(ids)))
        all_ids = np.empty(counts.sum(), dtype=ids.dtype)
        dp.comm.Allgatherv(ids, (all_ids, counts))
        all_rows = np.empty((counts.sum(), D), dtype=rows.dtype)
        dp.comm.Allgatherv(rows, (all_rows, counts * D))
        t2 = time.perf_counter()
        emb[...] = 0  # the real path would scatter into a zeroed gradient
        np.add.at(emb.reshape(-1), (all_ids[:, None] * D + np.arange(D)).ravel(), all_rows.ravel())
        t3 = time.perf_counter()
        sparse.append(t2 - t1)
        extra.append((t1 - t0) + (t3 - t2))
        uniques.append(len(ids))
    dense_ms, sparse_ms = 1e3 * statistics.median(dense), 1e3 * statistics.median(sparse)
    extra_ms = 1e3 * statistics.median(extra)
    return dict(
        dense_allreduce_ms=dense_ms,
        rows_exchange_ms=sparse_ms,
        rows_gather_scatter_ms=extra_ms,
        saving_ms=dense_ms - sparse_ms - extra_ms,
        touched_rows_per_rank=statistics.median(uniques),
        vocab=V,
    )


# =======================================================================================
# parent
# =======================================================================================
def _mpiexec() -> str:
    found = Path(sys.executable).with_name("mpiexec")
    found = str(found) if found.exists() else shutil.which("mpiexec")
    if found is None:
        raise SystemExit("--ranks needs mpiexec: pip install -e .[mpi]")
    return found


def _run(spec: dict, ranks: int, workdir: Path, timeout: float) -> dict:
    spec_path = workdir / f"spec-{spec['preset']}-{ranks}.json"
    spec["result"] = str(workdir / f"result-{spec['preset']}-{ranks}.json")
    spec_path.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[v] = str(spec["threads"])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)]
    if ranks > 1:
        cmd = [_mpiexec(), "-n", str(ranks), *cmd]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"worker failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return json.loads(Path(spec["result"]).read_text())


def run_ranks(args, preset_spec, make_batches, machine_info, wait_for_quiet, log) -> int:
    """``bench.py --ranks K``: the helpers come from bench.py (presets, batches, machine)."""
    import datetime as _dt  # noqa: PLC0415

    K = args.ranks
    cores = args.threads  # the single process gets all of them; each rank one
    date = _dt.datetime.now().astimezone()
    out = Path(args.out) if args.out else HERE / "results" / f"{date:%Y-%m-%d}-ranks.json"
    data = (
        args.data
        if args.data != "auto"
        else ("ptb" if os.environ.get("NPGATED_DATA_DIR") else "random")
    )
    report = dict(
        date=date.isoformat(timespec="seconds"),
        command=sys.argv,
        ranks=K,
        machine=machine_info(),
        data=data,
        iters=args.iters,
        repeats=args.repeats,
        warmup=args.warmup,
        cases=[],
    )
    with tempfile.TemporaryDirectory(prefix="npgated-ranks-") as tmp:
        workdir = Path(tmp)
        for preset in args.presets:
            spec = preset_spec(preset, "lstm", smoke=args.smoke)
            if spec["N"] % K:
                log(f"{preset}: N = {spec['N']} is not divisible by {K} ranks; skipped")
                continue
            batches = workdir / f"batches-{preset}.npz"
            source = make_batches(batches, spec, max(args.iters, 4), 1, data)
            spec.update(
                batches=str(batches), iters=args.iters, repeats=args.repeats, warmup=args.warmup
            )
            case = dict(preset=preset, data_source=source, N=spec["N"], T=spec["T"])
            for ranks, threads in ((1, cores), (K, max(1, cores // K))):
                quiet = wait_for_quiet(args.max_busy, args.wait_quiet)
                log(f"{preset}: {ranks} process(es) x {threads} BLAS thread(s) ...")
                res = _run(dict(spec, threads=threads), ranks, workdir, args.child_timeout)
                res["quiet_before"] = quiet
                case["single" if ranks == 1 else "ranks"] = res
                log(f"  {res['tok_s']:,.0f} tok/s, {res['ms_per_step']:.1f} ms/step")
            case["speedup"] = case["ranks"]["tok_s"] / case["single"]["tok_s"]
            report["cases"].append(case)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    md = markdown(report)
    out.with_suffix(".md").write_text(md)
    print(md)
    log(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


def markdown(report: dict) -> str:
    K = report["ranks"]
    lines = [
        f"Data-parallel training, {report['date']} ({report['data']} windows, LSTM, "
        f"float32, median of {report['repeats']} x {report['iters']} steps)",
        "",
        f"| preset | 1 process x {K} threads tok/s | {K} ranks x 1 thread tok/s | "
        "speed-up | all-reduce share of the step (alone, ms) | pack + unpack share |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in report["cases"]:
        s, r = c["single"], c["ranks"]
        lines.append(
            f"| {c['preset']} | {s['tok_s']:,.0f} | {r['tok_s']:,.0f} | {c['speedup']:.2f}x | "
            f"{100 * r['allreduce_share_in_step']:.1f} % ({r['allreduce_alone_ms']:.2f} ms "
            f"for {r['buffer_bytes'] / 2**20:.1f} MiB) | {100 * r['pack_unpack_share']:.1f} % |"
        )
    rows = [c for c in report["cases"] if "touched_rows" in c["ranks"]]
    if rows:
        lines += [
            "",
            "Touched embedding rows instead of the dense (V, D) gradient (untied models):",
            "",
            "| preset | rows per rank | dense all-reduce ms | rows exchange ms | "
            "gather + scatter-add ms | saving per step ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for c in rows:
            t = c["ranks"]["touched_rows"]
            lines.append(
                f"| {c['preset']} | {t['touched_rows_per_rank']:.0f} of {t['vocab']:,} | "
                f"{t['dense_allreduce_ms']:.2f} | {t['rows_exchange_ms']:.2f} | "
                f"{t['rows_gather_scatter_ms']:.2f} | {t['saving_ms']:.2f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker(sys.argv[2]))
    raise SystemExit("run it as: python benchmarks/bench.py --ranks K [...]")
