#!/usr/bin/env python
"""Training and evaluation speed of npgated against PyTorch on the CPU, measured honestly.

One command (from the repository root)::

    python benchmarks/bench.py                      # all presets, LSTM and GRU, all impls
    python benchmarks/bench.py --presets book-small --cells lstm --iters 2 --repeats 1
    python benchmarks/bench.py --smoke              # seconds: tiny sizes, checks the plumbing

What is measured, for every (preset, cell, implementation):

* **training tokens/s**: ``zero_grads -> forward -> backward -> clip (global norm) -> SGD
  update`` on (N, T) windows, float32, N and T from the preset, V = 10,000; stateful (the
  recurrent state is carried between windows, truncated BPTT);
* **evaluation tokens/s**: eval-mode forward (loss included, no backward, dropout off) over
  contiguous windows of the test split;

each after ``--warmup`` untimed iterations, as the median over ``--repeats`` timed runs of
``--iters`` iterations, each implementation in a child process of its own. The
implementations: ``npgated`` with its own threads off (BLAS with ``--threads`` threads),
``npgated-threads`` with :mod:`npgated.parallel`'s ``--threads`` threads on (BLAS one thread
per call: how ``npgated eval`` runs, and ``npgated train`` for book-small), and ``torch``.

This file is the entry point: the command line and the schedule of children. The parts, one
idea each, are its neighbours in this folder (not a package: the script's folder is on
``sys.path``, so they import each other by name)::

    cases.py            a preset as a benchmark case (model, N, T, lr) and the windows it runs on
    harness.py          one child process per measurement, timed repeats, rounds and medians
    children.py         what a child measures (one kind per child): npgated's and PyTorch's steps
    gemm_only.py        what GEMMs alone allow: FLOPs per token, the ceiling, the GEMM-only step
    system.py           the machine: load, CPU time of others, memory, facts from npgated.info
    profiling.py        --profile: cProfile and the costliest source lines
    report.py           the tables (text, Markdown) and the results block of the docs
    ranks.py            --ranks K: one process against K MPI ranks (data-parallel speed)
    book_eval.py        --book-dir: whole-process evaluation against the book's ch06/eval.py
    torch_reference.py  the same models and training step in PyTorch

Results: a JSON file (``--out``, default ``benchmarks/results/<date>.json``) with the machine
(CPU model, cores, NumPy/torch versions, BLAS configuration and, with threadpoolctl installed,
the OpenBLAS kernel that ran), and a Markdown table next to it (same name, ``.md``);
``--update-readme`` also puts that table into ``benchmarks/README.md`` and ``docs/speed.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from cases import ALL_PRESETS, SMOKE, VOCAB, make_batches, preset_spec
from children import child_main
from gemm_only import GATES, GEMM_SIZES, gemm_flops_per_token
from harness import add_round, child_env, run_child
from report import (
    README_END,
    README_START,
    READMES,
    markdown_report,
    table_rows,
    text_table,
    update_readme,
)
from system import machine_info, wait_for_quiet

IMPLS = ("npgated", "npgated-threads", "torch")

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Training/evaluation tokens/s of npgated vs PyTorch "
        "(see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--presets",
        default=",".join(ALL_PRESETS),
        help="comma-separated presets of npgated.training.config.PRESETS",
    )
    p.add_argument("--cells", default="lstm,gru", help="comma-separated cells (lstm, gru, rnn)")
    p.add_argument(
        "--impl",
        default=",".join(IMPLS),
        help="comma-separated: npgated (its own threads off, BLAS threads), "
        "npgated-threads (npgated.parallel's threads on), torch",
    )
    p.add_argument("--iters", type=int, default=20, help="timed iterations per repeat")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (the median is reported)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="children per (preset, cell, implementation), the implementations "
        "alternating; the median over rounds is reported",
    )
    p.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP threads per child")
    p.add_argument(
        "--data",
        choices=("auto", "ptb", "random"),
        default="auto",
        help="auto: PTB when $NPGATED_DATA_DIR is set, else random ids",
    )
    p.add_argument(
        "--out",
        default=None,
        help="JSON output (default benchmarks/results/<date>.json; a .md beside it)",
    )
    p.add_argument(
        "--update-readme",
        action="store_true",
        help="also replace the results table in benchmarks/README.md and docs/speed.md",
    )
    p.add_argument(
        "--unset-openblas-env",
        action="store_true",
        help="remove OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE in the children",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        help="seconds to wait for a quiet machine before each child",
    )
    p.add_argument(
        "--max-busy",
        type=float,
        default=0.25,
        help="'quiet' means at most this many cores busy (sampled over 1 s)",
    )
    p.add_argument(
        "--gemm-sizes",
        default=",".join(map(str, GEMM_SIZES)),
        help="square sizes for the GEMM ceiling",
    )
    p.add_argument("--no-gemm", action="store_true", help="skip the GEMM ceiling children")
    p.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc malloc at its defaults in the npgated children too "
        "(by default they call npgated.allocator.keep_freed_memory(), as "
        "npgated's fit does; the torch children always keep the defaults)",
    )
    p.add_argument("--child-timeout", type=float, default=1800.0, help="seconds per child")
    p.add_argument(
        "--profile",
        action="store_true",
        help="instead of timing: cProfile npgated's training step (--iters "
        "iterations) for each preset and cell, print the top functions",
    )
    p.add_argument("--profile-top", type=int, default=25, help="rows of each profile listing")
    p.add_argument(
        "--profile-dir",
        default=str(Path(tempfile.gettempdir()) / "npgated-profiles"),
        help="where --profile writes <preset>-<cell>.prof (for snakeviz, pstats)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, 1 iteration, 1 repeat, no waiting: checks the plumbing",
    )
    p.add_argument(
        "--ranks",
        type=int,
        default=0,
        help="data-parallel mode (benchmarks/ranks.py): 1 process x --threads BLAS "
        "threads against RANKS MPI ranks x 1 thread, tok/s and all-reduce share",
    )
    p.add_argument(
        "--book-dir",
        default=os.environ.get("NPGATED_BOOK_DIR"),
        help="after the cases, time the book's ch06/eval.py against npgated eval as "
        "whole processes (benchmarks/book_eval.py); DIR is a checkout of the "
        "book's repository with its PTB files and ch06/Rnnlm.pkl "
        "(default $NPGATED_BOOK_DIR)",
    )
    p.add_argument(
        "--book-repeats",
        type=int,
        default=3,
        help="timed rounds of the three --book-dir commands (1 with --smoke)",
    )
    p.add_argument("--_child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.iters, args.warmup, args.repeats = 1, 1, 1
        args.wait_quiet, args.data = 0.0, "random"
        args.gemm_sizes = ",".join(map(str, SMOKE["gemm_sizes"]))
        args.book_repeats = 1
    for name in ("iters", "repeats", "threads", "rounds", "book_repeats"):
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
        if i not in IMPLS:
            p.error(f"unknown implementation {i!r}; choose from {', '.join(IMPLS)}")
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

        return ranks.run_ranks(args, preset_spec, make_batches, machine_info, wait_for_quiet, _log)

    if args.book_dir and not args.profile:  # a wrong path fails now, not after the cases
        import book_eval  # noqa: PLC0415 (benchmarks/book_eval.py, next to this file)

        try:
            book_eval.resolve_data_dir(book_eval.check_book_dir(args.book_dir))
        except FileNotFoundError as exc:
            _log(f"bench.py: error: --book-dir: {exc}")
            return 2
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
        "settings": {
            "threads": args.threads,
            "iters": args.iters,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "rounds": args.rounds,
            "data": data,
            "data_source": None,
            "unset_openblas_env": args.unset_openblas_env,
            "smoke": args.smoke,
            "wait_quiet_s": args.wait_quiet,
            "max_busy_cores": args.max_busy,
            "gemm_sizes": args.gemm_sizes,
            "vocab_size": VOCAB,
            "keep_freed_memory": not args.default_malloc,
        },
        "gemm": {},
        "results": [],
    }
    cases = [preset_spec(p, c, args.smoke) for p in args.presets for c in args.cells]
    common = dict(
        threads=args.threads,
        iters=args.iters,
        warmup=args.warmup,
        repeats=args.repeats,
        gemm_sizes=args.gemm_sizes,
        gemm_min_s=0.05 if args.smoke else 1.0,
        profile_top=args.profile_top,
        keep_freed_memory=not args.default_malloc,
    )
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
            jobs += [
                (impl, c)
                for c in cases
                for r in range(args.rounds)
                for impl in (impls if r % 2 == 0 else impls[::-1])
            ]
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
                    report["settings"]["data_source"] = make_batches(
                        path, case, n_windows, n_windows, data
                    )
                    batch_files[key] = str(path)
                spec["batches"] = batch_files[key]
                if kind == "profile":
                    prof_dir = Path(args.profile_dir)
                    prof_dir.mkdir(parents=True, exist_ok=True)
                    spec["profile_out"] = str(prof_dir / f"{case['preset']}-{case['cell']}.prof")
            load = wait_for_quiet(args.max_busy, args.wait_quiet, 0.1 if args.smoke else 1.0)
            if not load["quiet"] and not args.smoke:
                _log(
                    f"  machine not quiet after {load['waited_s']} s: {load['busy_cores']} cores "
                    f"busy (load average {load['loadavg'][0]}); measuring anyway"
                )
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
            result.update(
                preset=case["preset"],
                cell=case["cell"],
                impl=kind,
                model=case["model"],
                model_kwargs=case["model_kwargs"],
                N=case["N"],
                T=case["T"],
                flops_per_token=gemm_flops_per_token(case["model_kwargs"]),
            )
            if kind == "profile":
                report["results"].append(result)
                continue
            add_round(report["results"], result)
            if "error" not in result:
                _log(
                    f"  train {result['train']['tok_s']:,.0f} tok/s, eval "
                    f"{result['eval']['tok_s']:,.0f} tok/s, peak RSS {result['peak_rss_mib']} MiB"
                )
        if args.book_dir and not args.profile:
            _log(f"evaluation against the book's eval.py ({args.book_dir}) ...")
            report["book_eval"] = book_eval.run_book_eval(
                args.book_dir,
                repeats=args.book_repeats,
                threads=args.threads,
                unset_openblas_env=args.unset_openblas_env,
                wait_quiet=args.wait_quiet,
                max_busy=args.max_busy,
                sample_s=0.1 if args.smoke else 1.0,
                timeout=args.child_timeout,
                log=_log,
            )
            if "error" in report["book_eval"]:
                failed += 1
                _log(f"  FAILED: {report['book_eval']['error']}")
            else:
                r = report["book_eval"]["ratios"]
                _log(
                    f"  the book's eval.py over npgated eval: {r['book_protocol']:.2f}x (book "
                    f"protocol), {r['default_protocol']:.2f}x (default protocol)"
                )
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
            _log(f"updated the results table in {', '.join(map(str, READMES))}")
        else:
            _log(
                f"not every one of {', '.join(map(str, READMES))} has a {README_START} ... "
                f"{README_END} block: those without it were not updated"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
