"""Tokenising a large generated corpus (npgated.data.corpus): throughput, peak memory, and the
training step on a memory-mapped corpus against the same ids in memory.

    python benchmarks/tokenize_corpus.py           # a 1 GB corpus in $TMPDIR, then deleted
    python benchmarks/tokenize_corpus.py --size-mb 50 --alphabet japanese
    python benchmarks/tokenize_corpus.py --smoke   # a few MB: checks that it runs

The corpus is generated, never downloaded: lines of 4 to 30 pseudo-words drawn from a Zipf
distribution (exponent 1) over ``--words`` distinct words of 1 to 12 letters (mean about 5,
English's average), about 5.6 bytes a word with its space. ``--alphabet`` chooses the letters:
``latin`` (a-z, pure ASCII), ``accented`` (a quarter of the letters outside ASCII: 2-byte
UTF-8), ``japanese`` (kana and kanji: 3-byte UTF-8, no spaces within a line, so that word level
reads whole lines as words; the character level is the meaningful one there).

Each measurement runs in a fresh child process (``python tokenize_corpus.py --child ...``) with the
id cache in a temporary folder: the wall time of :func:`npgated.data.corpus.load_corpus` on the
single file (cut 0.9/0.05/0.05, hashing, both passes and writing the ids included) gives MB/s
(10^6 bytes of text per second; per second of the child's CPU time too, a figure that a
busy machine disturbs less), and ``getrusage(RUSAGE_SELF).ru_maxrss`` the peak resident
memory of the whole child (the interpreter and NumPy included; their share, measured before
tokenising, is reported beside it). Targets (issue 19): >= 20 MB/s word level, >= 50 MB/s
character level, peak RSS <= 500 MB whatever the corpus size.

The training comparison (``--train-steps``, word level): one child times ``steps`` training
steps of a small model (Rnnlm 100/100, N 20, T 35, SGD) with its batches drawn from the
memory-mapped train ids, and the same number from a copy of them in memory, alternating in
rounds; the medians of ms/step are reported. The ids file was just written, so its pages are
likely in the page cache: the comparison shows the cost of the memory map itself (fancy
indexing a memmap, page-table walks), not of a cold disk.

Numbers depend on the machine and its load; the script prints both with the results. It
never runs under pytest (tests/test_cli_corpus.py runs its --smoke mode only, untimed).

(Not called ``tokenize.py``: run as a script, its folder comes first on ``sys.path`` and a
file of that name would stand in for the standard library's ``tokenize``, which ``inspect``
and ``linecache`` import.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LEVELS = ("word", "char")
TARGETS = {"word": 20.0, "char": 50.0}  # MB/s
RSS_TARGET_MB = 500.0

_ALPHABETS = {
    "latin": "abcdefghijklmnopqrstuvwxyz",
    "accented": "abcdefghijklmnopqrstuvwxyzéèàüöäçñßø",
    "japanese": "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほ"
    "まみむめもやゆよらりるれろわをん日本語文字猫犬山川田中人大小月火水木金土年時間",
}


# ---------------------------------------------------------------------------------------
# the corpus
# ---------------------------------------------------------------------------------------
def generate(
    path: Path, size_mb: float, n_words: int = 50_000, alphabet: str = "latin", seed: int = 0
) -> int:
    """Write about ``size_mb`` MB of generated text to ``path``; returns its size in bytes."""
    rng = np.random.default_rng(seed)
    letters = _ALPHABETS[alphabet]
    lengths = np.clip(rng.poisson(4.2, size=n_words) + 1, 1, 12)
    vocab = np.array(
        ["".join(letters[i] for i in rng.integers(0, len(letters), size=n)) for n in lengths],
        dtype=object,
    )
    cdf = np.cumsum(1.0 / np.arange(1, n_words + 1))
    cdf /= cdf[-1]
    sep = "" if alphabet == "japanese" else " "
    target = int(size_mb * 1e6)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            ids = np.minimum(np.searchsorted(cdf, rng.random(200_000)), n_words - 1)
            words = vocab[ids]
            ends = np.cumsum(rng.integers(4, 31, size=len(ids)))
            ends = ends[ends < len(ids)]
            lines = [sep.join(words[a:b]) for a, b in zip(np.r_[0, ends[:-1]], ends)]
            block = ("\n".join(lines) + "\n").encode("utf-8")
            f.write(block.decode("utf-8"))
            written += len(block)
    return path.stat().st_size


# ---------------------------------------------------------------------------------------
# children: one measurement each, in a fresh process
# ---------------------------------------------------------------------------------------
def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def child_tokenize(path: str, level: str, cache: str) -> dict:
    os.environ["NPGATED_CORPUS_CACHE"] = cache
    from npgated.data.corpus import load_corpus  # noqa: PLC0415

    baseline = _rss_mb()
    tic, cpu = time.perf_counter(), time.process_time()
    c = load_corpus(path, level, fractions="0.9,0.05,0.05")
    seconds, cpu = time.perf_counter() - tic, time.process_time() - cpu
    size = Path(path).stat().st_size
    return {
        "level": level,
        "seconds": seconds,
        "mb_per_s": size / 1e6 / seconds,
        "cpu_seconds": cpu,
        "mb_per_cpu_s": size / 1e6 / cpu,
        "peak_rss_mb": _rss_mb(),
        "baseline_rss_mb": baseline,
        "bytes": size,
        "tokens": int(sum(len(c[s]) for s in ("train", "valid", "test"))),
        "vocab": len(c.vocab),
        "dtype": str(c.train.dtype),
    }


def child_train(path: str, cache: str, steps: int, rounds: int) -> dict:
    os.environ["NPGATED_CORPUS_CACHE"] = cache
    from npgated.data.batching import TBPTTBatcher  # noqa: PLC0415
    from npgated.data.corpus import load_corpus  # noqa: PLC0415
    from npgated.models.rnnlm import build_model  # noqa: PLC0415
    from npgated.optim import make_optimizer  # noqa: PLC0415
    from npgated.optim.clip import clip_grads  # noqa: PLC0415

    c = load_corpus(path, "word", splits=["train"])  # from the cache written before
    mapped = c.train
    in_memory = np.array(mapped)  # the same ids, in memory
    model = build_model(
        dict(model="Rnnlm", vocab_size=len(c.vocab), wordvec_size=100, hidden_size=100),
        dtype=np.float32,
        seed=0,
    )
    optimizer = make_optimizer("sgd", 1.0)
    batchers = {
        "memmap": TBPTTBatcher(mapped, 20, 35),
        "in memory": TBPTTBatcher(in_memory, 20, 35),
    }
    times = {name: [] for name in batchers}
    for _ in range(rounds):
        for name, batcher in batchers.items():
            tic = time.perf_counter()
            for _ in range(steps):
                xs, ts = batcher.next_batch()
                model.zero_grads()
                model.forward(xs, ts)
                model.backward()
                clip_grads(model.grads, 0.25)
                optimizer.update(model.params, model.grads)
            times[name].append(1000.0 * (time.perf_counter() - tic) / steps)
    return {
        "ms_per_step": {k: float(np.median(v)) for k, v in times.items()},
        "rounds": rounds,
        "steps": steps,
        "tokens": len(mapped),
        "memmap_type": type(mapped).__name__,
    }


def _run_child(*args) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
        f"NumPy {np.__version__}; load average {load:.1f} at the start"
    )


def markdown(results: dict) -> str:
    lines = [
        f"Corpus: {results['size_mb']:.0f} MB generated ({results['alphabet']}), "
        f"{results['words']:,} distinct words. Machine: {results['machine']}.",
        "",
        "| level | MB/s | target | seconds | MB per CPU second | tokens | vocabulary | "
        "peak RSS (MB) | of which interpreter + NumPy | target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["tokenize"]:
        lines.append(
            f"| {r['level']} | {r['mb_per_s']:.1f} | >= {TARGETS[r['level']]:.0f} | "
            f"{r['seconds']:.1f} | {r['mb_per_cpu_s']:.1f} | {r['tokens']:,} | "
            f"{r['vocab']:,} | "
            f"{r['peak_rss_mb']:.0f} | {r['baseline_rss_mb']:.0f} | "
            f"<= {RSS_TARGET_MB:.0f} |"
        )
    if results.get("train"):
        t = results["train"]
        ms = t["ms_per_step"]
        lines += [
            "",
            f"Training step (Rnnlm 100/100, N 20, T 35, word level, {t['tokens']:,} "
            f"train tokens; median of {t['rounds']} rounds of {t['steps']} steps): "
            f"memory-mapped {ms['memmap']:.2f} ms, in memory {ms['in memory']:.2f} ms "
            f"({ms['memmap'] / ms['in memory']:.3f}x).",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size-mb", type=float, default=1000.0, help="corpus size (default 1 GB)")
    p.add_argument("--words", type=int, default=50_000, help="distinct words")
    p.add_argument("--alphabet", default="latin", choices=sorted(_ALPHABETS))
    p.add_argument(
        "--levels",
        nargs="+",
        default=None,
        choices=LEVELS,
        help="default: both; character level only for --alphabet japanese (its "
        "lines have no spaces: every line would be a word)",
    )
    p.add_argument("--train-steps", type=int, default=30, help="steps per round (0: skip)")
    p.add_argument("--train-rounds", type=int, default=5)
    p.add_argument(
        "--dir",
        default=None,
        help="where the corpus and the cache go (default: $TMPDIR); both are deleted at the end",
    )
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--smoke", action="store_true", help="1 MB, 2 steps: checks that it runs")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "tokenize":
            result = child_tokenize(*rest)
        else:
            result = child_train(rest[0], rest[1], int(rest[2]), int(rest[3]))
        print(json.dumps(result))
        return 0
    if args.levels is None:
        args.levels = ["char"] if args.alphabet == "japanese" else list(LEVELS)
    if args.smoke:
        args.size_mb, args.words, args.train_steps, args.train_rounds = 1.0, 2000, 2, 1
    work = Path(tempfile.mkdtemp(prefix="npgated-tokenize-", dir=args.dir))
    try:
        path = work / "corpus.txt"
        tic = time.perf_counter()
        size = generate(path, args.size_mb, args.words, args.alphabet)
        print(
            f"generated {size / 1e6:.0f} MB in {time.perf_counter() - tic:.0f} s: {path}",
            flush=True,
        )
        results = {
            "size_mb": size / 1e6,
            "alphabet": args.alphabet,
            "words": args.words,
            "machine": machine(),
            "tokenize": [],
            "train": None,
        }
        for level in args.levels:
            cache = work / f"cache-{level}"
            r = _run_child("tokenize", path, level, cache)
            results["tokenize"].append(r)
            print(
                f"{level}: {r['mb_per_s']:.1f} MB/s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True
            )
            if level != "word" or not args.train_steps:
                shutil.rmtree(cache)
        if args.train_steps and "word" in args.levels:
            results["train"] = _run_child(
                "train", path, work / "cache-word", args.train_steps, args.train_rounds
            )
        print(markdown(results))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
