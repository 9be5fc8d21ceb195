#!/usr/bin/env python
"""The book's training scripts, run with its own layers and with npgated.book's, side by side.

"Deep Learning from Scratch 2"'s chapter 6-8 scripts (``ch06/train_rnnlm.py``,
``ch07/train_seq2seq.py``, ``ch08/train.py``) train models built in the book's model files
(``ch06/rnnlm.py``, ``ch07/seq2seq.py``, ``ch08/attention_seq2seq.py``) from the layers of its
``common/time_layers.py`` and ``ch08/attention_layer.py``. npgated.book offers the same
layers computed by npgated (:mod:`npgated.book.time_layers`). This benchmark runs each chapter
twice, each time as a process of its own, from a checkout of the book's repository given by
``--book-dir`` (default ``$NPGATED_BOOK_DIR``):

``book``     ``PYTHONPATH`` = npgated, BOOK, BOOK/chNN: the book's model file imports the
             book's layers;
``npgated``  the same with the shim of :mod:`npgated.book.shim` first (written into a
             temporary folder at run time): the *same, unedited* model file imports
             npgated.book's layers instead.

Each child (``book_dropin_driver.py``, copied into the temporary folder and run from there)
runs the book's loop -- its batching, forward, backward, ``remove_duplicate``, ``clip_grads``
and optimizer, with the script's hyperparameters -- for ``--max-iters`` iterations, records
every iteration's loss and times its batch and its step, and for chapters 7-8 scores the first
``--eval-questions`` test questions with the book's ``eval_seq2seq``. Both children start
from the same weights (chapter 6: ``np.random.seed(--seed)``; chapters 7-8: the state the
book's ``sequence.load_data`` leaves, seed 1984, as in the book's own scripts), so their
losses must follow one trajectory, apart from float32 rounding, which SGD at lr 20 (chapter
6) amplifies over hundreds of iterations.

The report (Markdown on stdout; ``--out`` for the JSON) has per chapter the trajectory at
the book's printing points (every 20 iterations: ``exp`` of the mean loss since the last
print for chapter 6, the mean loss for 7-8, as the book's trainers print them), the largest
relative difference of the per-iteration losses, and the times (median step, median whole
iteration, the process's wall time, evaluation). Nothing of the book is copied into npgated:
its code runs from the reader's checkout, which is only read.

    NPGATED_DATA_DIR=../shared/data/ptb python benchmarks/book_dropin.py \\
        --book-dir BOOK --max-iters 200
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import child_env
from system import ROOT, wait_for_quiet

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "book_dropin_driver.py"
CHAPTERS = ("ch06", "ch07", "ch08")
IMPLS = ("book", "npgated")
PRINT_EVERY = 20  # the book's trainers print every 20 iterations (eval_interval=20)
TITLES = {
    "ch06": "ch06/train_rnnlm.py: Rnnlm (D = H = 100) on PTB, SGD lr 20, clip 0.25, batch 20 x 35",
    "ch07": "ch07/train_seq2seq.py: Seq2seq (D = 16, H = 128) on addition.txt, Adam, clip 5, "
    "batch 128",
    "ch08": "ch08/train.py: AttentionSeq2seq (D = 16, H = 256) on date.txt (reversed), Adam, "
    "clip 5, batch 128",
}
NEEDS = {  # files of the book's checkout each chapter reads
    "ch06": ("common/time_layers.py", "common/trainer.py", "ch06/rnnlm.py"),
    "ch07": (
        "common/time_layers.py",
        "ch07/seq2seq.py",
        "dataset/sequence.py",
        "dataset/addition.txt",
    ),
    "ch08": (
        "common/time_layers.py",
        "ch08/attention_layer.py",
        "ch08/attention_seq2seq.py",
        "ch07/seq2seq.py",
        "dataset/sequence.py",
        "dataset/date.txt",
    ),
}


class BookDropinError(RuntimeError):
    """A child failed or printed no result."""


def check_book_dir(book_dir, chapters) -> Path:
    """The checkout as a resolved path, or a FileNotFoundError naming what is missing."""
    if not book_dir:
        raise FileNotFoundError("no book checkout given: --book-dir or $NPGATED_BOOK_DIR")
    book_dir = Path(book_dir).resolve()
    missing = sorted(
        {rel for ch in chapters for rel in NEEDS[ch] if not (book_dir / rel).is_file()}
    )
    if missing:
        raise FileNotFoundError(
            f"{book_dir} is not a usable checkout of the book's repository "
            f"(oreilly-japan/deep-learning-from-scratch-2): missing {', '.join(missing)}"
        )
    return book_dir


def resolve_ptb(book_dir: Path, data_dir=None) -> Path:
    """PTB for chapter 6: ``data_dir``, else ``$NPGATED_DATA_DIR``, else ``BOOK/dataset``."""
    for candidate in (data_dir, os.environ.get("NPGATED_DATA_DIR"), book_dir / "dataset"):
        if candidate and (Path(candidate) / "ptb.train.txt").is_file():
            return Path(candidate).resolve()
    raise FileNotFoundError(
        f"chapter 6 needs PTB: none of --data-dir ({data_dir}), $NPGATED_DATA_DIR "
        f"({os.environ.get('NPGATED_DATA_DIR')}) or {book_dir / 'dataset'} holds ptb.train.txt"
    )


def child_argv(
    python,
    workdir: Path,
    chapter,
    max_iters,
    *,
    seed=None,
    data_dir=None,
    eval_questions=0,
    gpu=False,
) -> list:
    argv = [
        python,
        str(workdir / "driver.py"),
        "--chapter",
        chapter,
        "--max-iters",
        str(max_iters),
        "--eval-questions",
        str(eval_questions),
    ]
    if seed is not None:
        argv += ["--seed", str(seed)]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    if gpu:
        argv.append("--gpu")
    return argv


def child_pythonpath(impl, shim: Path, book_dir: Path, chapter) -> str:
    """The shim first for npgated, then npgated's checkout, the book's root and chapter."""
    parts = ([str(shim)] if impl == "npgated" else []) + [
        str(ROOT),
        str(book_dir),
        str(book_dir / chapter),
    ]
    return os.pathsep.join(parts)


def _run_child(argv, cwd, env, timeout):
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BookDropinError(f"`{' '.join(argv)}` ran past {timeout} s") from exc
    wall = time.perf_counter() - t0
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        raise BookDropinError(
            f"`{' '.join(argv)}` exited with {proc.returncode}: " + " | ".join(tail)
        )
    try:
        result = json.loads(lines[-1])
    except ValueError as exc:
        raise BookDropinError(f"`{' '.join(argv)}` printed no result: {lines[-1][:200]!r}") from exc
    result["process_s"] = wall
    return result


def printed_points(losses, chapter):
    """The book trainers' printed values: at iterations 0, 20, 40, ... (1-based 1, 21, 41,
    ...) the mean loss since the previous print; chapter 6 prints exp of it (perplexity)."""
    points, start = [], 0
    for it in range(len(losses)):
        if it % PRINT_EVERY == 0:
            window = losses[start : it + 1]
            mean = sum(window) / len(window)
            points.append((it + 1, math.exp(mean) if chapter == "ch06" else mean))
            start = it + 1
    return points


def compare(chapter_result: dict) -> dict:
    """Trajectory and time comparison of one chapter's two children."""
    b, n = chapter_result["book"], chapter_result["npgated"]
    pairs = list(zip(b["losses"], n["losses"]))
    rel = [abs(x - y) / max(abs(x), 1e-30) for x, y in pairs]
    first_off = next((k for k, r in enumerate(rel) if r > 1e-3), None)

    def med(xs):
        return statistics.median(xs) if xs else None

    out = {
        "max_rel_loss_diff": max(rel) if rel else None,
        "max_rel_loss_diff_first_20": max(rel[:20]) if rel else None,
        "first_iteration_off_by_1e-3": None if first_off is None else first_off + 1,
        "step_ms": {k: 1e3 * med(c["step_s"]) for k, c in (("book", b), ("npgated", n))},
        "iteration_ms": {
            k: 1e3 * med([s + t for s, t in zip(c["step_s"], c["batch_s"])])
            for k, c in (("book", b), ("npgated", n))
        },
        "process_s": {"book": b["process_s"], "npgated": n["process_s"]},
    }
    out["step_speedup"] = out["step_ms"]["book"] / out["step_ms"]["npgated"]
    out["iteration_speedup"] = out["iteration_ms"]["book"] / out["iteration_ms"]["npgated"]
    if "eval" in b and "eval" in n:
        out["eval_speedup"] = b["eval"]["seconds"] / n["eval"]["seconds"]
    return out


def run_book_dropin(
    book_dir,
    *,
    chapters=CHAPTERS,
    max_iters=100,
    data_dir=None,
    seed=None,
    eval_questions=100,
    threads=2,
    unset_openblas_env=False,
    gpu=False,
    wait_quiet=0.0,
    max_busy=0.25,
    sample_s=1.0,
    timeout=1800.0,
    log=None,
) -> dict:
    """Run every chapter with both layer sets; the result as a dict (see the module docstring).

    On a failure the result holds ``error`` and the chapters done so far.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    unknown = [c for c in chapters if c not in CHAPTERS]
    if unknown:
        raise ValueError(f"unknown chapters {unknown}; choose from {', '.join(CHAPTERS)}")
    book_dir = check_book_dir(book_dir, chapters)
    ptb_dir = resolve_ptb(book_dir, data_dir) if "ch06" in chapters else None
    env = child_env(threads, unset_openblas_env)
    env["MPLBACKEND"] = "Agg"  # the book's common/trainer.py imports pyplot
    result = {
        "book_dir": str(book_dir),
        "ptb_dir": None if ptb_dir is None else str(ptb_dir),
        "python": sys.executable,
        "python_version": platform.python_version(),
        "max_iters": max_iters,
        "seed": seed,
        "eval_questions": eval_questions,
        "threads": threads,
        "gpu": gpu,
        "wait_quiet_s": wait_quiet,
        "chapters": {},
    }
    work = Path(tempfile.mkdtemp(prefix="npgated-book-dropin-"))
    try:
        from npgated.book.shim import write_shim  # noqa: PLC0415

        shim = write_shim(work / "shim")
        shutil.copyfile(DRIVER, work / "driver.py")
        for i, chapter in enumerate(chapters):
            order = IMPLS if i % 2 == 0 else IMPLS[::-1]
            done = {}
            for impl in order:
                argv = child_argv(
                    sys.executable,
                    work,
                    chapter,
                    max_iters,
                    seed=seed,
                    data_dir=ptb_dir if chapter == "ch06" else None,
                    eval_questions=0 if chapter == "ch06" else eval_questions,
                    gpu=gpu,
                )
                child = dict(env, PYTHONPATH=child_pythonpath(impl, shim, book_dir, chapter))
                load = wait_for_quiet(max_busy, wait_quiet, sample_s) if wait_quiet else None
                try:
                    done[impl] = _run_child(argv, work, child, timeout)
                except BookDropinError as exc:  # the other layer set still runs
                    done[impl] = {"error": str(exc)}
                    log(f"{chapter} {impl}: failed: {exc}")
                    continue
                done[impl]["load_before"] = load
                log(
                    f"{chapter} {impl}: {len(done[impl]['losses'])} iterations, "
                    f"{done[impl]['process_s']:.1f} s, last loss {done[impl]['losses'][-1]:.4f}"
                    f" (layers: {done[impl]['layers_module']})"
                )
            if not any("error" in done[impl] for impl in IMPLS):
                done["comparison"] = compare(done)
            result["chapters"][chapter] = done
        failed = [
            f"{ch} {impl}"
            for ch, done in result["chapters"].items()
            for impl in IMPLS
            if "error" in done[impl]
        ]
        if failed:
            result["error"] = "failed: " + ", ".join(failed)
    except OSError as exc:
        result["error"] = str(exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


# -- the report ------------------------------------------------------------------------------
def _f(x, spec=".2f"):
    return "–" if x is None else format(x, spec)


def markdown(result: dict) -> str:
    """The Markdown report of :func:`run_book_dropin`'s result."""
    lines = ["## The book's scripts: its layers against npgated.book's", ""]
    for chapter, r in result["chapters"].items():
        if "comparison" not in r:
            lines += [f"### {TITLES[chapter]}", ""]
            for impl, label in (("book", "book layers"), ("npgated", "npgated.book")):
                c = r[impl]
                lines.append(
                    f"- {label}: "
                    + (
                        f"**failed**: {c['error']}"
                        if "error" in c
                        else f"{len(c['losses'])} iterations, last loss {c['losses'][-1]:.4f}, "
                        f"step median {1e3 * statistics.median(c['step_s']):.2f} ms, "
                        f"process {c['process_s']:.1f} s"
                    )
                )
            lines.append("")
            continue
        b, n, c = r["book"], r["npgated"], r["comparison"]
        what = "perplexity" if chapter == "ch06" else "loss"
        lines += [
            f"### {TITLES[chapter]}",
            "",
            f"Layers: `{b['layers_module']}` against `{n['layers_module']}`"
            + (
                f" (attention: `{b.get('attention_module')}` against `{n.get('attention_module')}`)"
                if chapter == "ch08"
                else ""
            )
            + ".",
            "",
            f"| iteration | book {what} | npgated.book {what} | relative difference |",
            "|---:|---:|---:|---:|",
        ]
        for (it, vb), (_, vn) in zip(
            printed_points(b["losses"], chapter), printed_points(n["losses"], chapter)
        ):
            lines.append(f"| {it} | {vb:.4f} | {vn:.4f} | {abs(vb - vn) / abs(vb):.1e} |")
        off = c["first_iteration_off_by_1e-3"]
        lines += [
            "",
            (
                f"Per-iteration losses ({len(b['losses'])} iterations): "
                f"largest relative difference "
                f"{_f(c['max_rel_loss_diff_first_20'], '.1e')} over the first 20, "
                f"{_f(c['max_rel_loss_diff'], '.1e')} over all"
                + (f"; first above 1e-3 at iteration {off}" if off else "")
                + "."
            ),
            "",
            "| | book layers | npgated.book | speed-up |",
            "|---|---:|---:|---:|",
            f"| step (forward, backward, merge, clip, update), median ms | "
            f"{c['step_ms']['book']:.2f} | {c['step_ms']['npgated']:.2f} | "
            f"{c['step_speedup']:.2f}× |",
            f"| iteration with the book's batching, median ms | "
            f"{c['iteration_ms']['book']:.2f} | {c['iteration_ms']['npgated']:.2f} | "
            f"{c['iteration_speedup']:.2f}× |",
            f"| whole process (imports, data, model, loop{', evaluation' if 'eval' in b else ''})"
            f", s | {b['process_s']:.1f} | {n['process_s']:.1f} | "
            f"{b['process_s'] / n['process_s']:.2f}× |",
        ]
        if "eval" in b and "eval" in n:
            eb, en = b["eval"], n["eval"]
            lines.append(
                f"| evaluation of {eb['questions']} test questions (the book's "
                f"`eval_seq2seq`), s; correct | {eb['seconds']:.2f}; {eb['correct']} | "
                f"{en['seconds']:.2f}; {en['correct']} | {c['eval_speedup']:.2f}× |"
            )
        lines.append("")
    backend_name = "CuPy (the book's GPU switch)" if result["gpu"] else "NumPy"
    lines.append(
        f"Python {result['python_version']}, {result['threads']} BLAS thread(s), "
        f"{backend_name}; each chapter's two "
        "runs are processes of their own, one after the other"
        + (
            f", each after waiting up to {result['wait_quiet_s']:.0f} s for a quiet machine"
            if result["wait_quiet_s"]
            else " (no wait for a quiet machine)"
        )
        + "."
    )
    if result.get("error"):
        lines += ["", f"**Not complete**: {result['error']}"]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="The book's ch. 6-8 training scripts with its own layers and with "
        "npgated.book's (see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--book-dir",
        default=os.environ.get("NPGATED_BOOK_DIR"),
        help="checkout of the book's repository (default $NPGATED_BOOK_DIR)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="PTB for chapter 6 (default $NPGATED_DATA_DIR, else BOOK/dataset)",
    )
    p.add_argument("--chapters", nargs="+", default=list(CHAPTERS), choices=CHAPTERS)
    p.add_argument("--max-iters", type=int, default=100, help="iterations per run")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="np.random.seed before the model is built (chapter 6: default 1984; "
        "chapters 7-8: default none, the book's own state)",
    )
    p.add_argument(
        "--eval-questions",
        type=int,
        default=100,
        help="chapters 7-8: test questions scored after training (0: none)",
    )
    p.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP threads per process")
    p.add_argument(
        "--unset-openblas-env",
        action="store_true",
        help="remove OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE in the children",
    )
    p.add_argument(
        "--gpu",
        action="store_true",
        help="the book's own switch common.config.GPU = True in both children "
        "(CuPy), set by the driver at run time",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="seconds to wait for a quiet machine before each run (0: no wait)",
    )
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per process")
    p.add_argument("--out", default=None, help="also write the result as JSON here")
    args = p.parse_args(argv)
    if not args.book_dir:
        p.error("--book-dir is required (or set NPGATED_BOOK_DIR)")
    if args.max_iters < 1 or args.threads < 1 or args.eval_questions < 0:
        p.error("--max-iters and --threads must be >= 1, --eval-questions >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = run_book_dropin(
            args.book_dir,
            chapters=tuple(args.chapters),
            max_iters=args.max_iters,
            data_dir=args.data_dir,
            seed=args.seed,
            eval_questions=args.eval_questions,
            threads=args.threads,
            unset_openblas_env=args.unset_openblas_env,
            gpu=args.gpu,
            wait_quiet=args.wait_quiet,
            timeout=args.timeout,
        )
    except FileNotFoundError as exc:
        print(f"book_dropin: {exc}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
