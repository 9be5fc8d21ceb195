#!/usr/bin/env python
"""The book's chapter 7-8 scripts against ``npgated train`` / ``npgated eval``, whole processes.

Issue 18 asks for encoder-decoder training at least 3x as fast as the book's code per epoch,
and the test-set evaluation (5,000 questions) at least 10x as fast as the book's
one-question-at-a-time loop, both measured side by side in one run, as a student meets
them: a command typed at the shell, from the interpreter's start to the printed accuracy.

(a) Training. For each experiment, two child processes, one after the other:

    book     the book's own script (``ch07/train_seq2seq.py`` or ``ch08/train.py``) from a
             checkout of its repository (``--book-dir``, default ``$NPGATED_BOOK_DIR``), with
             the experiment's settings: the script's own lines for the reversal, the model
             and ``max_epoch`` replaced in memory (each replacement must match exactly once,
             else the run stops: the checkout differs from the one this was written for).
             Nothing of the book is copied here or written into the checkout: the script
             runs with a temporary working directory (``ch08/train.py``'s ``save_params``
             writes there) and ``MPLBACKEND=Agg`` (its ``plt.show()`` draws nothing).
    npgated  ``python -m npgated train --preset P [flags] --data-dir BOOK/dataset``, the
             same data files, the same hyperparameters.

Each line a child prints is timestamped as it arrives (unbuffered output). From those: the
test accuracy per epoch (the book's ``val acc X%`` lines; npgated's ``| end of epoch``
lines) and, per epoch, the **training** time (from the previous epoch's accuracy line, or
the process start, to the first line of the evaluation: the book's first ``Q`` line,
npgated's last ``batches`` line) and the **evaluation** time (from there to the accuracy
line). Epoch 1 includes the start-up (imports, reading the data) for both. The ratio of the
medians over the epochs (over epochs 2.. when there are at least two, free of start-up)
is what the issue's 3x target is about.

(b) Evaluation of the 5,000 test questions of ``date.txt`` with the book's trained
``ch08/AttentionSeq2seq.pkl`` (or ``--eval-pkl``): the book's protocol (its
``eval_seq2seq`` called on one question at a time, greedy decoding, reversed questions,
every character must match), run by a few lines written here that import the book's own
modules from the checkout, against ``npgated eval RUN``, where RUN holds the same weights
(``npgated import-book`` once, untimed). ``--repeats`` rounds, the order reversed every other
round, median/min/max. A faster wrong number is no result: the speed is refused unless both
print the same count.

Numbers are only as quiet as the machine: each result records the busy cores before each
timed process (``system.wait_for_quiet``, ``--wait-quiet`` seconds at most).

Run (from the repository root)::

    python benchmarks/seq2seq.py --book-dir /path/to/deep-learning-from-scratch-2 \\
        --experiments addition,addition-reversed,addition-peeky,date-attention,date-peeky,\
date-baseline

and ``--epochs 1 --experiments addition`` for a short check. The Markdown report goes to
stdout and to ``benchmarks/results/<date>-seq2seq.md`` (with the JSON beside it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import child_env
from system import ROOT, machine_info, wait_for_quiet

RESULTS = Path(__file__).resolve().parent / "results"

_REVERSE = (r"^is_reverse = False", "is_reverse = True", 1)


def _model_line(active: str) -> list:
    """Edits that leave one ``model = X(...)`` line of the script active: ``active``'s.
    (Each edit: pattern, replacement, how many lines it must match; "+": at least one.)"""
    return [
        (r"^model = ", "# model = ", "+"),
        (rf"^# ?model = {active}\(", f"model = {active}(", 1),
    ]


CH7 = "ch07/train_seq2seq.py"
CH8 = "ch08/train.py"

EXPERIMENTS = {
    # name: (book script, edits to its lines, npgated train flags)
    "addition": (CH7, [], ["--preset", "book-addition"]),
    "addition-reversed": (CH7, [_REVERSE], ["--preset", "book-addition", "--reverse"]),
    "addition-peeky": (
        CH7,
        [_REVERSE, *_model_line("PeekySeq2seq")],
        ["--preset", "book-addition-peeky"],
    ),
    "date-attention": (CH8, [], ["--preset", "book-date-attention"]),
    "date-peeky": (
        CH8,
        _model_line("PeekySeq2seq"),
        ["--preset", "book-date-attention", "--model", "PeekySeq2seq"],
    ),
    "date-baseline": (
        CH8,
        _model_line("Seq2seq"),
        ["--preset", "book-date-attention", "--model", "Seq2seq"],
    ),
}
TITLES = {
    "addition": "ch. 7 addition, Seq2seq",
    "addition-reversed": "ch. 7 addition, Seq2seq, reversed",
    "addition-peeky": "ch. 7 addition, PeekySeq2seq, reversed",
    "date-attention": "ch. 8 date, AttentionSeq2seq, reversed",
    "date-peeky": "ch. 8 date, PeekySeq2seq, reversed",
    "date-baseline": "ch. 8 date, Seq2seq, reversed",
}
EPOCHS = {CH7: 25, CH8: 10}

# What runs the book's script: its text with the edits, executed as __main__ (sys.argv[1]:
# the script, [2]: the book's root, [3]: JSON list of [pattern, replacement, lines it must match])
BOOK_RUNNER = r"""
import json, os, re, sys
script, root, edits = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with open(script, encoding="utf-8") as f:
    src = f.read()
for pattern, repl, expected in edits:
    src, n = re.subn(pattern, repl, src, flags=re.M)
    if n == 0 or (expected != "+" and n != expected):
        sys.exit(f"the book's {script}: edit {pattern!r} matched {n} lines, not {expected} "
                 "(another version of the script?)")
# ch08/train.py imports ch07.peeky_seq2seq, which imports its sibling as "seq2seq":
# the book runs with ch07 importable too
sys.path[:0] = [os.path.dirname(script), os.path.join(root, "ch07"), root]
sys.argv = [script]
exec(compile(src, script, "exec"), {"__name__": "__main__", "__file__": script})
"""

# The book's evaluation protocol with its own modules: eval_seq2seq on one test question at
# a time (sys.argv[1]: the book's root, [2]: task file, [3]: model class, [4]: module,
# [5]: the pickle, [6]: wordvec, [7]: hidden, [8]: "1" to reverse the questions)
BOOK_EVAL = r"""
import importlib, os, sys
root, task, cls, module, pkl, D, H, rev = sys.argv[1:9]
sys.path[:0] = [os.path.join(root, "ch07"), os.path.join(root, "ch08"), root]
from dataset import sequence
from common.util import eval_seq2seq
(_, _), (x_test, t_test) = sequence.load_data(task)
char_to_id, id_to_char = sequence.get_vocab()
if rev == "1":
    x_test = x_test[:, ::-1]
model = getattr(importlib.import_module(module), cls)(len(char_to_id), int(D), int(H))
model.load_params(pkl)
correct = sum(eval_seq2seq(model, x_test[[i]], t_test[[i]], id_to_char, False, rev == "1")
              for i in range(len(x_test)))
print("val acc %.3f%% (%d of %d)" % (100.0 * correct / len(x_test), correct, len(x_test)))
"""

_BOOK_ACC = re.compile(r"val acc ([0-9.]+)%")
_NPG_ACC = re.compile(r"test accuracy +([0-9.]+) % \((\d+) of (\d+)\)")
_BOOK_COUNT = re.compile(r"val acc ([0-9.]+)% \((\d+) of (\d+)\)")


class Seq2seqBenchError(RuntimeError):
    """A command failed, printed no accuracy, or the two evaluations disagree."""


def check_book_dir(book_dir, scripts=(CH7, CH8)) -> Path:
    """The checkout as a resolved path, or FileNotFoundError naming what is missing."""
    book_dir = Path(book_dir).resolve()
    need = [
        *scripts,
        "dataset/sequence.py",
        "dataset/addition.txt",
        "dataset/date.txt",
        "common/util.py",
    ]
    missing = [rel for rel in need if not (book_dir / rel).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{book_dir} is not a usable checkout of the book's repository: missing "
            f"{', '.join(missing)}. Clone oreilly-japan/deep-learning-from-scratch-2 there"
        )
    return book_dir


def run_timed(argv, cwd, env, timeout):
    """Run a child, timestamping every line of its output; ``(seconds, [(t, line)], rc)``.

    ``t`` counts from just before the process started. stderr is merged into stdout.
    """
    t0 = time.perf_counter()
    lines = []
    with subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as proc:
        try:
            for line in proc.stdout:
                lines.append((time.perf_counter() - t0, line.rstrip("\n")))
                if time.perf_counter() - t0 > timeout:
                    proc.kill()
                    raise Seq2seqBenchError(f"`{' '.join(map(str, argv))}` ran past {timeout} s")
        finally:
            proc.wait()
    return time.perf_counter() - t0, lines, proc.returncode


def _tail(lines, k=5):
    return " | ".join(line for _, line in lines[-k:])


def book_epochs(lines) -> list[dict]:
    """Per epoch of the book's script: accuracy (fraction), train and eval seconds."""
    epochs, start, first_q = [], 0.0, None
    for t, line in lines:
        if first_q is None and line.startswith("Q "):
            first_q = t
        m = _BOOK_ACC.search(line)
        if m:
            eval_start = first_q if first_q is not None else t
            epochs.append(
                dict(
                    accuracy=float(m.group(1)) / 100.0,
                    train_s=eval_start - start,
                    eval_s=t - eval_start,
                    end_s=t,
                )
            )
            start, first_q = t, None
    return epochs


def npgated_epochs(lines) -> list[dict]:
    """Per epoch of ``npgated train``: accuracy, train and eval seconds (as book_epochs)."""
    epochs, start, last_batch = [], 0.0, None
    for t, line in lines:
        if "batches |" in line:
            last_batch = t
        m = _NPG_ACC.search(line)
        if m and "end of epoch" in line:
            eval_start = last_batch if last_batch is not None else t
            epochs.append(
                dict(
                    accuracy=int(m.group(2)) / int(m.group(3)),
                    train_s=eval_start - start,
                    eval_s=t - eval_start,
                    end_s=t,
                )
            )
            start, last_batch = t, None
    return epochs


def _median_epoch(epochs, key):
    values = [e[key] for e in (epochs[1:] if len(epochs) >= 2 else epochs)]
    return statistics.median(values) if values else None


def run_training(
    book_dir: Path,
    name: str,
    *,
    epochs=None,
    env=None,
    timeout=86400.0,
    wait_quiet=60.0,
    max_busy=0.25,
    sample_s=1.0,
    log=print,
) -> dict:
    """Experiment ``name``: the book's script and ``npgated train``, one after the other."""
    script, edits, flags = EXPERIMENTS[name]
    n_epochs = epochs or EPOCHS[script]
    edits = [*edits, (r"^max_epoch = \d+", f"max_epoch = {n_epochs}", 1)]
    env = dict(env or os.environ)
    env["MPLBACKEND"] = "Agg"
    result = dict(
        name=name,
        title=TITLES[name],
        epochs=n_epochs,
        book_script=script,
        book_edits=edits,
        npgated_flags=flags,
    )
    work = Path(tempfile.mkdtemp(prefix=f"npgated-seq2seq-{name}-"))
    try:
        runner = work / "run_book_script.py"
        runner.write_text(BOOK_RUNNER)
        argv_book = [
            sys.executable,
            "-u",
            str(runner),
            str(book_dir / script),
            str(book_dir),
            json.dumps(edits),
        ]
        run_dir = work / "npgated-run"
        argv_npg = [
            sys.executable,
            "-u",
            "-m",
            "npgated",
            "train",
            *flags,
            "--epochs",
            str(n_epochs),
            "--data-dir",
            str(book_dir / "dataset"),
            "--run-dir",
            str(run_dir),
            "--no-progress",
        ]
        for side, argv, cwd, parse in (
            ("book", argv_book, work, book_epochs),
            ("npgated", argv_npg, ROOT, npgated_epochs),
        ):
            load = wait_for_quiet(max_busy, wait_quiet, sample_s)
            log(f"{name}: {side} ({n_epochs} epochs) ...")
            seconds, lines, rc = run_timed(argv, cwd, env, timeout)
            if rc != 0:
                raise Seq2seqBenchError(f"{name}: {side} exited with {rc}: {_tail(lines)}")
            per_epoch = parse(lines)
            if len(per_epoch) != n_epochs:
                raise Seq2seqBenchError(
                    f"{name}: {side} printed {len(per_epoch)} accuracy "
                    f"lines for {n_epochs} epochs: {_tail(lines)}"
                )
            result[side] = dict(
                argv=[str(a) for a in argv],
                seconds=round(seconds, 2),
                epochs=per_epoch,
                load_before=load,
                median_train_s=_median_epoch(per_epoch, "train_s"),
                median_eval_s=_median_epoch(per_epoch, "eval_s"),
            )
            log(
                f"{name}: {side} {seconds:.1f} s, accuracy by epoch "
                + ", ".join(f"{100 * e['accuracy']:.2f}" for e in per_epoch)
            )
        b, n = result["book"], result["npgated"]
        result["ratios"] = dict(
            train=b["median_train_s"] / n["median_train_s"],
            eval=b["median_eval_s"] / max(n["median_eval_s"], 1e-9),
            process=b["seconds"] / n["seconds"],
        )
    except Seq2seqBenchError as exc:
        result["error"] = str(exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def run_eval(
    book_dir: Path,
    *,
    pkl=None,
    repeats=3,
    env=None,
    timeout=3600.0,
    wait_quiet=60.0,
    max_busy=0.25,
    sample_s=1.0,
    log=print,
) -> dict:
    """(b): the book's one-at-a-time evaluation loop against ``npgated eval``, whole processes."""
    pkl = Path(pkl or book_dir / "ch08" / "AttentionSeq2seq.pkl").resolve()
    env = dict(env or os.environ)
    result = dict(
        pkl=str(pkl),
        repeats=repeats,
        task="date.txt",
        model="AttentionSeq2seq",
        reverse=True,
        commands={},
    )
    if not pkl.is_file():
        result["error"] = f"no trained model at {pkl} (ch08/AttentionSeq2seq.pkl of the book)"
        return result
    work = Path(tempfile.mkdtemp(prefix="npgated-seq2seq-eval-"))
    try:
        run_dir = work / "run"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "npgated",
                "import-book",
                str(pkl),
                "--task",
                "date",
                "--reverse",
                "--out",
                str(run_dir),
                "--data-dir",
                str(book_dir / "dataset"),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise Seq2seqBenchError(f"npgated import-book failed: {proc.stderr.strip()}")
        runner = work / "book_eval.py"
        runner.write_text(BOOK_EVAL)
        specs = {
            "book": (
                [
                    sys.executable,
                    str(runner),
                    str(book_dir),
                    "date.txt",
                    "AttentionSeq2seq",
                    "attention_seq2seq",
                    str(pkl),
                    "16",
                    "256",
                    "1",
                ],
                work,
                _BOOK_COUNT,
            ),
            "npgated": (
                [
                    sys.executable,
                    "-m",
                    "npgated",
                    "eval",
                    str(run_dir),
                    "--data-dir",
                    str(book_dir / "dataset"),
                ],
                ROOT,
                _NPG_ACC,
            ),
        }
        for name, (argv, _, _) in specs.items():
            result["commands"][name] = dict(
                argv=[str(a) for a in argv], seconds=[], counts=[], load_before=[]
            )
        for r in range(repeats):
            order = list(specs) if r % 2 == 0 else list(specs)[::-1]
            counts = {}
            for name in order:
                argv, cwd, pattern = specs[name]
                load = wait_for_quiet(max_busy, wait_quiet, sample_s)
                seconds, lines, rc = run_timed(argv, cwd, env, timeout)
                if rc != 0:
                    raise Seq2seqBenchError(f"eval {name} exited with {rc}: {_tail(lines)}")
                m = [pattern.search(line) for _, line in lines]
                m = [x for x in m if x]
                if not m:
                    raise Seq2seqBenchError(f"eval {name} printed no accuracy: {_tail(lines)}")
                counts[name] = (int(m[-1].group(2)), int(m[-1].group(3)))
                c = result["commands"][name]
                c["seconds"].append(round(seconds, 3))
                c["counts"].append(counts[name])
                c["load_before"].append(load)
                log(
                    f"eval round {r + 1}/{repeats} {name}: {seconds:.2f} s, "
                    f"{counts[name][0]} of {counts[name][1]}"
                )
            if counts["book"] != counts["npgated"]:
                raise Seq2seqBenchError(
                    f"refused: the book's loop counted {counts['book'][0]} of "
                    f"{counts['book'][1]}, npgated eval {counts['npgated'][0]} of "
                    f"{counts['npgated'][1]}; a faster wrong number is no result"
                )
        for c in result["commands"].values():
            c.update(
                median_s=statistics.median(c["seconds"]),
                min_s=min(c["seconds"]),
                max_s=max(c["seconds"]),
            )
        result["ratio"] = (
            result["commands"]["book"]["median_s"] / result["commands"]["npgated"]["median_s"]
        )
    except (Seq2seqBenchError, subprocess.SubprocessError, OSError) as exc:
        result["error"] = str(exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
def _pct(values):
    return " ".join(f"{100 * v:.1f}" for v in values)


def markdown(report: dict) -> str:
    m = report["machine"]
    out = [f"## Encoder-decoder: the book's scripts vs npgated ({report['date'][:10]})", ""]
    if report.get("note"):
        out += [f"**{report['note']}**", ""]
    out += [
        f"Machine: {m.get('cpu_model', '?')}, {m.get('cores', '?')} cores, Python "
        f"{report['python_version']}, NumPy {m.get('numpy', '?')}; BLAS threads "
        f"{report['threads']} per process. Command: `{report['command']}`.",
        "",
    ]
    train = report.get("training", [])
    if train:
        out += [
            "### Training: time per epoch and test accuracy per epoch",
            "",
            "Train = the epoch's training pass, eval = its test evaluation (5,000 "
            "questions; the book one at a time, npgated batched), medians over epochs "
            "2.. (epoch 1 holds the start-up). Accuracy in % after each epoch.",
            "",
            "| experiment | epochs | book train s | npgated train s | train speed-up "
            "| book eval s | npgated eval s | book accuracy by epoch | npgated accuracy "
            "by epoch |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for r in train:
            if "error" in r:
                out.append(
                    f"| {r['title']} | {r['epochs']} | no result: {r['error']} | | | | | | |"
                )
                continue
            b, n = r["book"], r["npgated"]
            out.append(
                f"| {r['title']} | {r['epochs']} | {b['median_train_s']:.1f} | "
                f"{n['median_train_s']:.1f} | {r['ratios']['train']:.2f}× | "
                f"{b['median_eval_s']:.2f} | {n['median_eval_s']:.2f} | "
                f"{_pct(e['accuracy'] for e in b['epochs'])} | "
                f"{_pct(e['accuracy'] for e in n['epochs'])} |"
            )
        out.append("")
    ev = report.get("eval")
    if ev:
        out += ["### Evaluation of the 5,000 test questions (whole process)", ""]
        if "error" in ev:
            out += [f"no result: {ev['error']}", ""]
        else:
            b, n = ev["commands"]["book"], ev["commands"]["npgated"]
            out += [
                f"`{Path(ev['pkl']).name}` on date.txt, reversed questions; "
                f"{ev['repeats']} rounds (order alternating), seconds median (min-max).",
                "",
                "| command | seconds | correct | speed-up |",
                "|---|---:|---:|---:|",
                f"| the book's `eval_seq2seq` loop, one question at a time | "
                f"{b['median_s']:.2f} ({b['min_s']:.2f}-{b['max_s']:.2f}) | "
                f"{b['counts'][-1][0]} of {b['counts'][-1][1]} | 1× |",
                f"| `npgated eval RUN` | {n['median_s']:.2f} ({n['min_s']:.2f}-"
                f"{n['max_s']:.2f}) | {n['counts'][-1][0]} of {n['counts'][-1][1]} | "
                f"{ev['ratio']:.1f}× |",
                "",
            ]
    return "\n".join(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="The book's ch. 7-8 training scripts and evaluation loop against npgated "
        "train / eval, whole processes (see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--book-dir",
        default=os.environ.get("NPGATED_BOOK_DIR"),
        help="checkout of the book's repository (default $NPGATED_BOOK_DIR)",
    )
    p.add_argument(
        "--experiments",
        default="addition,date-attention",
        help="comma-separated, of: " + ", ".join(EXPERIMENTS) + "; 'none' skips training",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="shorten every experiment to this many epochs (default: the book's "
        "25 for ch. 7, 10 for ch. 8)",
    )
    p.add_argument("--no-eval", action="store_true", help="skip (b), the evaluation timing")
    p.add_argument(
        "--eval-pkl",
        default=None,
        help="the trained AttentionSeq2seq pickle (default BOOK/ch08/AttentionSeq2seq.pkl)",
    )
    p.add_argument("--repeats", type=int, default=3, help="rounds of (b)")
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
    p.add_argument("--note", default=None, help="a line for the report (e.g. 'noisy')")
    p.add_argument(
        "--out",
        default=None,
        help="report path without suffix (default benchmarks/results/"
        "<date>-seq2seq); .md and .json are written",
    )
    args = p.parse_args(argv)
    if not args.book_dir:
        p.error("--book-dir is required (or set NPGATED_BOOK_DIR)")
    names = [] if args.experiments == "none" else args.experiments.split(",")
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        p.error(f"unknown experiment(s) {unknown}; choose from {', '.join(EXPERIMENTS)}")
    if args.epochs is not None and args.epochs < 1 or args.repeats < 1 or args.threads < 1:
        p.error("--epochs, --repeats and --threads must be >= 1")
    args.names = names
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        book_dir = check_book_dir(args.book_dir)
    except FileNotFoundError as exc:
        print(f"seq2seq.py: error: {exc}", file=sys.stderr)
        return 2

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    env = child_env(args.threads, args.unset_openblas_env)
    now = datetime.datetime.now(datetime.timezone.utc)
    report = dict(
        date=now.isoformat(timespec="seconds"),
        machine=machine_info(),
        python_version=platform.python_version(),
        threads=args.threads,
        note=args.note,
        command="python benchmarks/seq2seq.py "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        training=[],
        eval=None,
    )
    quiet = dict(wait_quiet=args.wait_quiet, max_busy=args.max_busy)
    for name in args.names:
        report["training"].append(
            run_training(book_dir, name, epochs=args.epochs, env=env, log=log, **quiet)
        )
    if not args.no_eval:
        report["eval"] = run_eval(
            book_dir, pkl=args.eval_pkl, repeats=args.repeats, env=env, log=log, **quiet
        )
    text = markdown(report)
    out = Path(args.out) if args.out else RESULTS / f"{now.date().isoformat()}-seq2seq"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(text)
    failed = [r for r in report["training"] if "error" in r]
    failed += [report["eval"]] if report["eval"] and "error" in report["eval"] else []
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
