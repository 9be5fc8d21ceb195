#!/usr/bin/env python
"""Evaluation as a whole process, against the book's own ``ch06/eval.py``.

Issue 14 asks for evaluation at least 5x as fast as the book's script, measured the way a
student meets both: a command typed at the shell, from the interpreter's start to the printed
perplexity (imports, reading the corpus, loading the weights and the evaluation itself). Three
commands are timed, each as a child process of its own, with the wall clock
(``time.perf_counter`` around ``subprocess.run``)::

    book          python eval.py                                   (cwd BOOK/ch06)
    npgated_book  python -m npgated eval RUN --split test --protocol book
    npgated       python -m npgated eval RUN --split test          (the default protocol)

where BOOK is a checkout of the book's repository (oreilly-japan/deep-learning-from-scratch-2,
with the PTB text files in ``BOOK/dataset/`` and the trained ``BOOK/ch06/Rnnlm.pkl``) and RUN
holds the same weights, imported once with ``npgated import-book BOOK/ch06/Rnnlm.pkl``. The book
protocol is the book's ``eval_perplexity`` (10 streams, windows of 35, whole windows only); the
default protocol scores every target of the split. Both npgated commands read PTB from
``--data-dir`` (default ``$NPGATED_DATA_DIR``, else ``BOOK/dataset``).

How the measurement is kept honest:

* **The same interpreter and environment for all three**: ``sys.executable``, and the
  environment the other children of ``bench.py`` get (``harness.child_env``: the thread
  variables at ``--threads``, ``--unset-openblas-env`` as there, ``NPGATED_DATA_DIR`` passed
  through). The BLAS kernel they run is what ``npgated info`` reports in that environment.
* **Warm caches, said so**: the book's first run writes ``.npy``/``.pkl`` caches of the corpus
  next to its text files, npgated keeps an id cache of its own; one untimed warm-up of each
  command comes first (``--warmup``), so the timed runs read their caches. The result records
  whether the book's caches existed before.
* **Rounds against the machine's phases**: ``--repeats`` rounds, each runs the three commands
  once, the order reversed every other round; median, min and max per command. Before each
  timed process the parent waits for a quiet machine (``system.wait_for_quiet``) and records
  the load; around it, ``system.OthersMeter`` less the child's own CPU time gives the cores
  other processes used.
* **A faster wrong number is no result**: every perplexity is parsed from the output, and the
  speed is refused (the result holds ``error`` and no ratios) unless npgated's book protocol
  prints the number the book's script printed in the same round, to the digits npgated prints
  (within one unit of its last digit: 136.0776 for the book's ``Rnnlm.pkl``).

Run it on its own (from the repository root)::

    NPGATED_DATA_DIR=../shared/data/ptb python benchmarks/book_eval.py --book-dir BOOK

or through ``bench.py --book-dir BOOK``, which stores the result in its JSON and renders it
with ``report.book_eval_markdown``. Nothing of the book is copied here: the book's code runs
from the reader's checkout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import child_env
from system import ROOT, OthersMeter, wait_for_quiet

#: what the book's ch06/eval.py prints for its Rnnlm.pkl (shared/data/book/README.md)
BOOK_RNNLM_TEST_PPL = 136.0776

COMMANDS = ("book", "npgated_book", "npgated")
LABELS = {
    "book": "python eval.py",
    "npgated_book": "npgated eval RUN --split test --protocol book",
    "npgated": "npgated eval RUN --split test",
}
BOOK_CACHES = ("ptb.vocab.pkl", "ptb.test.npy")

# "test perplexity:  136.07759032293401" (the book), "test perplexity 136.0776 (book ...)"
_PPL = re.compile(r"perplexity:?[ \t]+([0-9]+(?:\.([0-9]+))?(?:[eE][+-]?[0-9]+)?)")


class BookEvalError(RuntimeError):
    """A command failed, printed no perplexity, or npgated's number differs from the book's."""


def parse_perplexity(text: str):
    """The last perplexity printed in ``text`` as ``(value, decimals)``, or None.

    ``decimals`` is the number of digits after the point as printed (None with an exponent),
    which sets the tolerance of :func:`agree`.
    """
    matches = list(_PPL.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    number, frac = m.group(1), m.group(2)
    if "e" in number.lower():
        return float(number), None
    return float(number), len(frac) if frac else 0


def agree(book: float, npgated: float, decimals) -> tuple[bool, float]:
    """Whether npgated's printed number is the book's to the digits printed; the tolerance.

    One unit of npgated's last printed digit (1e-4 for 4 decimals): round-to-nearest alone
    would allow half of it, the other half absorbs float32 against float64 at a rounding edge.
    """
    tol = 10.0 ** -(decimals if decimals is not None else 4)
    return abs(npgated - book) <= tol, tol


def resolve_data_dir(book_dir: Path, data_dir=None) -> Path:
    """PTB for npgated: ``data_dir``, else ``$NPGATED_DATA_DIR``, else the book's ``dataset/``."""
    for candidate in (data_dir, os.environ.get("NPGATED_DATA_DIR"), book_dir / "dataset"):
        if candidate and (Path(candidate) / "ptb.test.txt").is_file():
            return Path(candidate).resolve()
    raise FileNotFoundError(
        f"no PTB text files for npgated: none of --data-dir ({data_dir}), $NPGATED_DATA_DIR "
        f"({os.environ.get('NPGATED_DATA_DIR')}) or {book_dir / 'dataset'} holds ptb.test.txt; "
        "copy ptb.{train,valid,test}.txt into the book's dataset/ folder or set NPGATED_DATA_DIR"
    )


def check_book_dir(book_dir) -> Path:
    """The book checkout as a resolved path, or a FileNotFoundError naming what is missing."""
    book_dir = Path(book_dir).resolve()
    need = {  # the book's PTB loader reads its cache, else the text file, else downloads
        ("ch06/eval.py",): "the book's script",
        ("ch06/Rnnlm.pkl",): "the book's trained weights",
        ("dataset/ptb.train.txt", "dataset/ptb.vocab.pkl"): "the PTB train split (vocabulary)",
        ("dataset/ptb.test.txt", "dataset/ptb.test.npy"): "the PTB test split",
    }
    missing = [
        f"{rels[0]} ({what})"
        for rels, what in need.items()
        if not any((book_dir / rel).is_file() for rel in rels)
    ]
    if missing:
        raise FileNotFoundError(
            f"{book_dir} is not a usable checkout of the book's repository: missing "
            + ", ".join(missing)
            + ". Clone oreilly-japan/deep-learning-from-scratch-2 there, "
            "copy ptb.{train,valid,test}.txt into dataset/ and Rnnlm.pkl into ch06/"
        )
    return book_dir


def commands(book_dir: Path, run_dir: Path, data_dir: Path, python: str = sys.executable):
    """argv and working directory of the three timed commands."""
    npg = [
        python,
        "-m",
        "npgated",
        "eval",
        str(run_dir),
        "--split",
        "test",
        "--data-dir",
        str(data_dir),
    ]
    return {
        "book": ([python, "eval.py"], book_dir / "ch06"),
        "npgated_book": (npg + ["--protocol", "book"], ROOT),
        "npgated": (npg, ROOT),
    }


def _run(name, argv, cwd, env, timeout):
    """One process: (seconds, stdout, stderr, its cores (CPU s / wall s), others' cores)."""
    cpu0 = os.times()
    with OthersMeter() as meter:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise BookEvalError(f"{name}: `{' '.join(argv)}` ran past {timeout} s") from exc
        seconds = time.perf_counter() - t0
    cpu1 = os.times()
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise BookEvalError(
            f"{name}: `{' '.join(argv)}` (cwd {cwd}) exited with "
            f"{proc.returncode}: " + " | ".join(tail)
        )
    child_cpu = (
        cpu1.children_user - cpu0.children_user + cpu1.children_system - cpu0.children_system
    )
    others = None
    if meter.cores is not None:  # OthersMeter counts the child as "other": take it out
        others = round(max(0.0, meter.cores - child_cpu / seconds), 3)
    return seconds, proc.stdout, proc.stderr, round(child_cpu / seconds, 3), others


def _perplexity(name, stdout):
    parsed = parse_perplexity(stdout)
    if parsed is None:
        raise BookEvalError(
            f"{name} printed no perplexity; its output ended: {stdout.strip()[-200:]!r}"
        )
    return parsed


def _blas(env) -> dict:
    """What ``npgated info`` reports in the children's environment (the kernel they run)."""
    proc = subprocess.run(
        [sys.executable, "-m", "npgated", "info", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        facts = json.loads(proc.stdout)
    except ValueError:
        return {"error": (proc.stderr or proc.stdout).strip()[-300:]}
    kernels = [
        f"OpenBLAS {d.get('version')} kernel {d.get('architecture')}"
        for d in facts["blas"]["libraries"]
        if d.get("internal_api") == "openblas"
    ]
    return {
        "kernel": kernels[0] if kernels else facts["blas"]["numpy_build"].get("name"),
        "cpu": facts["cpu"]["model"],
        "numpy": facts["versions"]["numpy"],
        "warnings": facts["warnings"],
    }


def run_book_eval(
    book_dir,
    *,
    run_dir=None,
    data_dir=None,
    repeats=3,
    warmup=1,
    threads=2,
    unset_openblas_env=False,
    wait_quiet=60.0,
    max_busy=0.25,
    sample_s=1.0,
    timeout=900.0,
    log=None,
) -> dict:
    """Time the book's eval.py against npgated's eval, whole processes; the result as a dict.

    Parameters
    ----------
    book_dir : path
        A checkout of the book's repository with ``ch06/Rnnlm.pkl`` and the PTB text files in
        ``dataset/``.
    run_dir : path, optional
        An npgated run directory holding the book's weights already (``best.npz``). Default:
        ``npgated import-book BOOK/ch06/Rnnlm.pkl`` into a temporary one, removed afterwards.
    data_dir : path, optional
        PTB for npgated (default ``$NPGATED_DATA_DIR``, else ``BOOK/dataset``).
    repeats, warmup : int
        Timed rounds of the three commands; untimed runs of each first.
    threads, unset_openblas_env : as ``bench.py`` (``harness.child_env``).
    wait_quiet, max_busy, sample_s : the quiet-machine wait before each timed process.

    Returns
    -------
    dict
        ``commands`` (per command: argv, seconds of each round, median/min/max, perplexity,
        child and others' cores, load before), ``ratios`` (book median over each npgated
        median: ``book_protocol``, ``default_protocol``), ``perplexity_check``, ``blas``,
        ``env``. On failure or refusal ``error`` says why and ``ratios`` is None.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    book_dir = check_book_dir(book_dir)
    data_dir = resolve_data_dir(book_dir, data_dir)
    env = child_env(threads, unset_openblas_env)
    result = {
        "book_dir": str(book_dir),
        "data_dir": str(data_dir),
        "python": sys.executable,
        "python_version": platform.python_version(),
        "repeats": repeats,
        "warmup": warmup,
        "threads": threads,
        "unset_openblas_env": unset_openblas_env,
        "wait_quiet_s": wait_quiet,
        "max_busy_cores": max_busy,
        "env": {
            k: env.get(k)
            for k in (
                "OPENBLAS_CORETYPE",
                "OPENBLAS_L2_SIZE",
                "OMP_NUM_THREADS",
                "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS",
                "NPGATED_DATA_DIR",
            )
        },
        "book_caches_before": all((book_dir / "dataset" / f).is_file() for f in BOOK_CACHES),
        "expected_book_ppl": BOOK_RNNLM_TEST_PPL,
        "commands": {
            name: {
                "label": LABELS[name],
                "seconds": [],
                "perplexities": [],
                "child_cores": [],
                "others_cores": [],
                "load_before": [],
            }
            for name in COMMANDS
        },
        "perplexity_check": None,
        "ratios": None,
    }
    tmp_run = None
    try:
        result["blas"] = _blas(env)
        if run_dir is None:
            tmp_run = Path(tempfile.mkdtemp(prefix="npgated-book-eval-"))
            run_dir = tmp_run
            argv = [
                sys.executable,
                "-m",
                "npgated",
                "import-book",
                str(book_dir / "ch06" / "Rnnlm.pkl"),
                "--out",
                str(run_dir),
                "--data-dir",
                str(data_dir),
            ]
            _run("import-book", argv, ROOT, env, timeout)
            log(f"imported {book_dir / 'ch06' / 'Rnnlm.pkl'} into {run_dir}")
        result["run_dir"] = str(run_dir)
        specs = commands(book_dir, Path(run_dir), data_dir)
        for name in COMMANDS:
            argv, cwd = specs[name]
            result["commands"][name].update(argv=argv, cwd=str(cwd))
        for w in range(warmup):  # untimed; the book first, so its caches exist from here on
            printed = {}
            for name in COMMANDS:
                _, out, *_ = _run(name, *specs[name], env, timeout)
                printed[name] = _perplexity(name, out)
                if name == "npgated_book":
                    _check(result, printed["book"], printed["npgated_book"], f"warm-up {w + 1}")
            log(f"warm-up {w + 1}: " + ", ".join(f"{n} ppl {p[0]}" for n, p in printed.items()))
        for r in range(repeats):
            order = COMMANDS if r % 2 == 0 else COMMANDS[::-1]
            printed = {}
            for name in order:
                load = wait_for_quiet(max_busy, wait_quiet, sample_s)
                seconds, out, _, child, others = _run(name, *specs[name], env, timeout)
                printed[name] = _perplexity(name, out)
                c = result["commands"][name]
                c["seconds"].append(round(seconds, 3))
                c["perplexities"].append(printed[name][0])
                c["decimals"] = printed[name][1]
                c["child_cores"].append(child)
                c["others_cores"].append(others)
                c["load_before"].append(load)
                log(
                    f"round {r + 1}/{repeats} {name}: {seconds:.2f} s, perplexity "
                    f"{printed[name][0]}, busy before {load['busy_cores']}"
                )
            _check(result, printed["book"], printed["npgated_book"], f"round {r + 1}")
    except (BookEvalError, subprocess.SubprocessError, OSError) as exc:
        result["error"] = str(exc)
        return result
    finally:
        if tmp_run is not None:
            shutil.rmtree(tmp_run, ignore_errors=True)
            result["run_dir"] = f"{tmp_run} (temporary, removed)"
    for name in COMMANDS:
        c = result["commands"][name]
        c.update(
            median_s=statistics.median(c["seconds"]),
            min_s=min(c["seconds"]),
            max_s=max(c["seconds"]),
            perplexity=c["perplexities"][-1],
        )
    book_s = result["commands"]["book"]["median_s"]
    result["ratios"] = {
        "book_protocol": book_s / result["commands"]["npgated_book"]["median_s"],
        "default_protocol": book_s / result["commands"]["npgated"]["median_s"],
    }
    return result


def _check(result, book, npg, when):
    """Refuse (raise) unless npgated's book-protocol number is the book's; record the check."""
    ok, tol = agree(book[0], npg[0], npg[1])
    result["perplexity_check"] = {
        "book": book[0],
        "npgated_book": npg[0],
        "tolerance": tol,
        "agree": ok,
        "when": when,
    }
    if not ok or not math.isfinite(npg[0]):
        raise BookEvalError(
            f"refused: npgated's book protocol printed test perplexity {npg[0]} but the book's "
            f"eval.py printed {book[0]} ({when}; tolerance {tol:g}); a faster wrong number is "
            "no result"
        )


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Whole-process evaluation time: the book's ch06/eval.py against npgated "
        "eval (see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--book-dir",
        default=os.environ.get("NPGATED_BOOK_DIR"),
        help="checkout of the book's repository (default $NPGATED_BOOK_DIR)",
    )
    p.add_argument(
        "--run-dir",
        default=None,
        help="npgated run directory with the book's weights imported already "
        "(default: import-book into a temporary one)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="PTB for npgated (default $NPGATED_DATA_DIR, else BOOK/dataset)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed rounds of the three commands")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of each command first")
    p.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP threads per process")
    p.add_argument(
        "--unset-openblas-env",
        action="store_true",
        help="remove OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE in the children",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        help="seconds to wait for a quiet machine before each timed process",
    )
    p.add_argument(
        "--max-busy",
        type=float,
        default=0.25,
        help="'quiet' means at most this many cores busy (sampled over 1 s)",
    )
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per process")
    p.add_argument("--out", default=None, help="also write the result as JSON here")
    args = p.parse_args(argv)
    if not args.book_dir:
        p.error("--book-dir is required (or set NPGATED_BOOK_DIR)")
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        p.error("--repeats and --threads must be >= 1, --warmup >= 0")
    return args


def main(argv=None) -> int:
    from report import book_eval_markdown  # noqa: PLC0415 (benchmarks/report.py)

    args = parse_args(argv)
    result = run_book_eval(
        args.book_dir,
        run_dir=args.run_dir,
        data_dir=args.data_dir,
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
        unset_openblas_env=args.unset_openblas_env,
        wait_quiet=args.wait_quiet,
        max_busy=args.max_busy,
        timeout=args.timeout,
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(book_eval_markdown(result))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
