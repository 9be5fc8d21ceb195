"""The ``npgated`` command line: train, eval, generate, gradcheck, demo, import-book, export-book.

``train``'s flags are generated from :class:`npgated.training.config.TrainConfig`, so every
hyperparameter is a flag (``--hidden-size 200``) with the field's help text, and a preset
(``--preset book-small``) fills in the rest. Exit codes: 0 success, 1 training diverged,
2 bad usage or input (one line on stderr, no traceback), 130 / 143 interrupted by SIGINT /
SIGTERM after writing a resumable checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import time
import traceback
import typing
from pathlib import Path

from npgated import __version__, allocator, parallel

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (and exit code 2), and whose flags may be
    added when it is first used (:meth:`defer`)."""

    _deferred = ()

    def defer(self, add_flags) -> None:
        """Call ``add_flags(self)`` only when this parser parses or prints its help or usage:
        ``train``'s flags generated from two config dataclasses are then not built (nor
        their modules imported) at the start of every other command."""
        self._deferred = (*self._deferred, add_flags)

    def _ready(self) -> None:
        deferred, self._deferred = self._deferred, ()
        for add_flags in deferred:
            add_flags(self)

    def parse_known_args(self, args=None, namespace=None):
        self._ready()
        return super().parse_known_args(args, namespace)

    def format_help(self):
        self._ready()
        return super().format_help()

    def format_usage(self):
        self._ready()
        return super().format_usage()

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _usage_error(message: str) -> int:
    from npgated.distributed import abort_if_running, rank_prefix  # noqa: PLC0415

    print(f"npgated: error: {rank_prefix()}{message}", file=sys.stderr)
    abort_if_running(EXIT_USAGE)  # under mpiexec: stop every rank, none left waiting
    return EXIT_USAGE


def _data_parallel():
    """This rank's DataParallel when mpiexec started several ranks, else None.

    Ranks other than 0 print nothing on stdout and log only errors: rank 0 speaks for the run.
    Without a launcher's variables, npgated.distributed (MPI, the training loop) is not
    even imported: a plain eval or generate loads only what it uses.
    """
    from npgated.launcher import launcher_env  # noqa: PLC0415

    if not launcher_env():
        return None
    from npgated.distributed import DataParallel  # noqa: PLC0415

    dp = DataParallel.from_launcher()
    if dp is not None and not dp.is_writer:
        logging.getLogger("npgated").setLevel(logging.ERROR)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    return dp


# ---------------------------------------------------------------------------------------
# flags generated from the config dataclass
# ---------------------------------------------------------------------------------------
def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    from npgated.training.config import TrainConfig  # noqa: PLC0415

    hints = typing.get_type_hints(TrainConfig)
    group = parser.add_argument_group("hyperparameters (override the preset)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        base = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
        kind = base[0]
        kw = dict(dest=f.name, default=None, help=f"{f.metadata['help']} (default: {f.default})")
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        group.add_argument(flag, type=kind, **kw)


def _config_from_args(args):
    from npgated.training.config import PRESETS, TrainConfig, preset  # noqa: PLC0415

    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name) is not None
    }
    if args.dry_run:
        if given.get("max_iters") is not None or given.get("epochs") is not None:
            raise ValueError("--dry-run sets --epochs 1 --max-iters 3: do not combine them")
        given.update(epochs=1, max_iters=3, log_interval=1)
    if args.preset is None:
        saved = _saved_config(given.get("run_dir")) if args.resume else None
        if saved is not None:  # --resume: the run's configuration, the flags given on top
            return TrainConfig.from_dict({**saved, **given})
        return TrainConfig(**given)
    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; choose one of: {', '.join(PRESETS)}")
    return preset(args.preset, **given)


def _saved_config(run_dir):
    """The ``config.json`` of a run directory (None when there is none): ``--resume``
    without a preset continues with the run's own settings."""
    import json  # noqa: PLC0415

    from npgated.training.config import TrainConfig  # noqa: PLC0415

    path = Path(run_dir or TrainConfig.run_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path} to resume ({exc}): give the run's flags") from None
    return saved if isinstance(saved, dict) else None


def _bpc_text(level, ppl) -> str:
    """``" (1.234 bits per character)"`` for a character-level run, else ``""``."""
    import math  # noqa: PLC0415

    return f" ({math.log2(ppl):.3f} bits per character)" if level == "char" else ""


# ---------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------
def _training_threads(config):
    """npgated's threads for training when ``NPGATED_THREADS`` is unset: None (every core)
    when the recurrent step's product ``h @ Wh`` is too small to be split anyway (below
    ``parallel.MIN_FLOPS``; then only the loss, the output layer and the update are split:
    book-small trains 9-15 % faster so), else 1 (BLAS's own threads, which split those
    products better: zaremba-small 17-22 % and a 2 x 300 LSTM 11 % slower with ours).
    Measured 2026-12-02, benchmarks/results/2026-12-02*.md."""
    from npgated.models.rnnlm import GATES  # noqa: PLC0415

    H = config.hidden_size
    step_flops = 2 * config.batch_size * H * GATES[config.cell] * H
    return None if step_flops < parallel.MIN_FLOPS else 1


def cmd_train(args) -> int:
    from npgated import seq2seq_cli  # noqa: PLC0415

    if seq2seq_cli.wants_seq2seq(args):  # --task, --reverse, a seq2seq --model or --preset
        return seq2seq_cli.cmd_train(args)
    from npgated.training.loop import TrainingDiverged, load_corpora, train  # noqa: PLC0415

    dp = _data_parallel()  # None unless mpiexec started several ranks
    config = _config_from_args(args)
    if dp is None:  # NPGATED_THREADS, else what was measured faster for this model
        parallel.use_threads(parallel.requested_threads(_training_threads(config)))
    corpora = load_corpora(config)
    train_c, valid, test, word_to_id, _ = corpora
    if args.dry_run:  # a quick end-to-end run: evaluate on a few windows only
        keep = 10 * config.batch_size * config.time_size + 1
        valid, test = valid[:keep], test[:keep]
    unit = "characters" if config.level == "char" else "tokens"
    print(
        f"npgated {__version__}: training {config.model} ({config.cell}) on "
        f"{len(train_c):,} {unit}, vocabulary {len(word_to_id):,}; run dir {config.run_dir}"
    )
    try:
        result = train(
            config, (train_c, valid, test, word_to_id), resume=args.resume, data_parallel=dp
        )
    except TrainingDiverged as exc:
        print(f"npgated: training stopped: {exc}", file=sys.stderr)
        return 1
    if result.interrupted is not None:
        print(
            f"interrupted: resumable checkpoint in {Path(config.run_dir) / 'last.npz'}; "
            "continue with the same command and --resume",
            file=sys.stderr,
        )
        return 128 + int(result.interrupted)
    if result.best_val_ppl is not None:
        print(
            f"best valid perplexity {result.best_val_ppl:.2f}"
            f"{_bpc_text(config.level, result.best_val_ppl)}"
        )
    if result.test_ppl is not None:
        print(f"test perplexity {result.test_ppl:.2f}{_bpc_text(config.level, result.test_ppl)}")
    return 0


def _load_model(path):
    """(model, meta) from a checkpoint file or a run directory (its best.npz, else last.npz)."""
    from npgated.models.rnnlm import build_model  # noqa: PLC0415
    from npgated.training.checkpoint import load_checkpoint, restore  # noqa: PLC0415

    path = Path(path)
    if path.is_dir():
        path = path / "best.npz" if (path / "best.npz").exists() else path / "last.npz"
    ckpt = load_checkpoint(path)
    dtype = next(iter(ckpt.params.values())).dtype
    config = ckpt.meta["config"]
    if config.get("model", "Rnnlm") in ("Rnnlm", "BetterRnnlm"):
        # no flat buffers: nothing trains here, and they cost a copy of the parameters and
        # a zeroed gradient buffer as large (~30 ms for the book's Rnnlm, measured)
        config = {**config, "flat": False}
    model = build_model(config, dtype=dtype)
    restore(model, ckpt)
    return model, ckpt.meta


def cmd_eval(args) -> int:
    from npgated import seq2seq_cli  # noqa: PLC0415

    if seq2seq_cli.is_seq2seq_run(args.checkpoint):  # the book's ch. 7-8 accuracy
        return seq2seq_cli.cmd_eval(args)
    if args.beam_size is not None:
        return _usage_error("--beam-size is for encoder-decoder runs; this is a language model")
    from npgated.training.evaluate import eval_perplexity, eval_perplexity_book  # noqa: PLC0415

    if args.protocol == "book":  # the book's eval_perplexity: 10 streams, windows of 35
        for flag, value, book in (
            ("--batch-size", args.batch_size, 10),
            ("--time-size", args.time_size, 35),
        ):
            if value is not None and value != book:
                return _usage_error(
                    f"--protocol book evaluates with {flag} {book} exactly, "
                    f"got {flag} {value}; drop the flag or use --protocol default"
                )
    dp = _data_parallel()  # None unless mpiexec started several ranks
    if dp is not None:
        dp.use_local_device()
    model, meta = _load_model(args.checkpoint)
    corpus, vocab, what = _eval_text(args, meta)
    if args.protocol == "book":
        ppl = eval_perplexity_book(model, corpus, 10, 35, progress=True)
        print(
            f"{what} perplexity {ppl:.4f} (book protocol: N=10, T=35, whole windows)"
            f"{_bpc_text(vocab.level, ppl)}"
        )
        return 0
    batch_size = 10 if args.batch_size is None else args.batch_size
    time_size = 35 if args.time_size is None else args.time_size
    if dp is not None:  # each rank scores its streams; the sums are reduced
        dp.attach(model, batch_size, gradients=False)
    ppl = eval_perplexity(model, corpus, batch_size, time_size, progress=dp is None or dp.is_writer)
    print(f"{what} perplexity {ppl:.2f}{_bpc_text(vocab.level, ppl)}")
    return 0


def _run_vocabulary(meta, data_dir, word_to_id=None):
    """The vocabulary of a language-model checkpoint: the one stored in its metadata, or,
    for a checkpoint without one (imported, or older) or with ``--data-dir``, PTB's
    (``word_to_id`` when the caller has loaded it already)."""
    from npgated.data import ptb  # noqa: PLC0415
    from npgated.data.corpus import DataError, Vocabulary  # noqa: PLC0415

    stored = Vocabulary.from_dict(meta["vocab"]) if meta.get("vocab") else None
    if stored is not None and data_dir is None and word_to_id is None:
        return stored
    if word_to_id is None:
        _, word_to_id, _ = ptb.load_data("train", data_dir)
    vocab = Vocabulary.of(word_to_id)
    if meta.get("vocab_checksum") not in (None, vocab.checksum):
        what = stored.difference(vocab) if stored is not None else "another checksum"
        raise DataError(
            f"the checkpoint was trained with another vocabulary than PTB's from "
            f"{ptb.resolve_data_dir(data_dir)} ({what}): evaluate it on its own text "
            "(drop --data-dir) or on another with --corpus PATH"
        )
    return vocab


def _eval_text(args, meta):
    """``(ids, vocabulary, name)`` of what ``npgated eval`` scores: ``--corpus PATH`` under the
    run's vocabulary, else the run's own corpus (``--split``), else PTB."""
    from npgated.data import corpus as text  # noqa: PLC0415
    from npgated.data import ptb  # noqa: PLC0415

    config = meta.get("train_config") or {}
    batch_size = 10 if args.batch_size is None else args.batch_size
    if args.corpus is not None:
        if not meta.get("vocab"):
            raise text.DataError(
                "this checkpoint stores no vocabulary (imported, or written "
                "before npgated kept it): --corpus needs one; evaluate it on "
                "PTB (--data-dir)"
            )
        if args.data_dir is not None:
            raise ValueError("give either --corpus (another text) or --data-dir (PTB), not both")
        vocab = text.Vocabulary.from_dict(meta["vocab"])
        ids, source, _ = text.load_text(
            args.corpus,
            vocab,
            split=args.split,
            encoding=args.encoding or "utf-8",
            batch_size=batch_size,
        )
        return ids, vocab, source.describe()
    if config.get("corpus") is not None and args.data_dir is None:
        vocab = _run_vocabulary(meta, None)
        options = dict(
            fractions=config.get("fractions", text.DEFAULT_FRACTIONS),
            encoding=args.encoding or config.get("encoding", "utf-8"),
        )
        text.check_unchanged(vocab, config["corpus"], **options)
        c = text.load_corpus(
            config["corpus"],
            vocab.level,
            vocab=vocab,
            splits=[args.split],
            batch=(batch_size, 1),
            **options,
        )
        return c[args.split], vocab, args.split
    if args.encoding is not None:
        raise ValueError("--encoding is for --corpus or a run on its own text, not PTB")
    corpus, word_to_id, _ = ptb.load_data(args.split, args.data_dir)
    return corpus, _run_vocabulary(meta, args.data_dir, word_to_id), args.split


def cmd_import_book(args) -> int:
    from npgated import seq2seq_cli  # noqa: PLC0415

    kind = seq2seq_cli.book_pickle_kind(args.file)  # None: unreadable (said below)
    if kind == "seq2seq":  # the book's ch. 7-8 models
        return seq2seq_cli.cmd_import_book(args)
    if kind == "lm" and (args.task is not None or args.reverse):
        return _usage_error(
            f"{args.file} holds a language model (the book's Rnnlm), not an "
            "encoder-decoder: drop --task/--reverse"
        )
    from npgated.data import ptb  # noqa: PLC0415
    from npgated.interop.book import book_ptb_vocabulary, model_from_book  # noqa: PLC0415
    from npgated.training.checkpoint import save_checkpoint  # noqa: PLC0415

    target = Path(args.out) / "best.npz"
    if target.exists() and not args.force:
        return _usage_error(f"{target} exists; choose another --out or pass --force to replace it")
    model = model_from_book(args.file)
    V = model.vocab_size
    meta = {"source": {"format": "dlfs2-pickle", "file": str(Path(args.file).resolve())}}
    try:  # the book's ids are PTB's by first appearance: store npgated's checksum if they agree
        data_dir = ptb.resolve_data_dir(args.data_dir, download=False)
        _, word_to_id, _ = ptb.load_data("train", data_dir)
    except (FileNotFoundError, ptb.DataError) as exc:
        print(
            f"npgated: note: no vocabulary checksum stored (PTB not found: {exc})", file=sys.stderr
        )
    else:
        if len(word_to_id) != V:
            print(
                f"npgated: note: no vocabulary checksum stored: the model has V={V}, "
                f"PTB's vocabulary {len(word_to_id)} words",
                file=sys.stderr,
            )
        elif book_ptb_vocabulary(data_dir / ptb.PTB_FILES["train"]) != word_to_id:
            raise ValueError(
                f"the book's PTB vocabulary built from {data_dir} differs from "
                "npgated's: the word ids would not match"
            )
        else:
            meta["vocab_checksum"] = ptb.vocab_checksum(word_to_id)
    save_checkpoint(target, model, meta=meta)
    c = model.config
    print(
        f"imported the book's {c['model']} (V={V}, D={c['wordvec_size']}, "
        f"H={c['hidden_size']}, gates f,g,i,o -> i,f,g,o) into {target}"
    )
    return 0


def cmd_export_book(args) -> int:
    from npgated import seq2seq_cli  # noqa: PLC0415

    if seq2seq_cli.is_seq2seq_run(args.checkpoint):
        return seq2seq_cli.cmd_export_book(args)
    from npgated.interop.book import model_to_book  # noqa: PLC0415

    model, _ = _load_model(args.checkpoint)
    path = model_to_book(model, args.out)
    print(f"wrote {model.config['model']} in the book's format (float16, gates f,g,i,o) to {path}")
    return 0


def cmd_generate(args) -> int:
    from npgated import seq2seq_cli  # noqa: PLC0415

    if seq2seq_cli.is_seq2seq_run(args.checkpoint):  # answers to --question
        return seq2seq_cli.cmd_generate(args)
    if args.question or args.beam_size is not None:
        return _usage_error(
            "--question/--beam-size are for encoder-decoder runs; this is a "
            "language model (use --start)"
        )
    args.length = 100 if args.length is None else args.length
    from npgated.data.corpus import EOS, UNK  # noqa: PLC0415
    from npgated.models.generation import generate  # noqa: PLC0415

    model, meta = _load_model(args.checkpoint)
    vocab = _run_vocabulary(meta, args.data_dir)
    chars = vocab.level == "char"
    prompt = args.start
    if prompt is None:  # PTB's habit ("you"), else the start of a line
        prompt = "\n" if chars else ("you" if "you" in vocab else EOS)
    start = vocab.encode(prompt)
    if not len(start):
        raise ValueError("--start is empty: give at least one word or character")
    skip_tokens = args.skip if args.skip is not None else ([UNK] if chars else [UNK, "N"])
    skip = [vocab[w] for w in skip_tokens if w in vocab]
    on_token = None
    if chars:  # printed as it is drawn
        sys.stdout.write(prompt)
        sys.stdout.flush()

        def on_token(token):
            sys.stdout.write(vocab.token_text(token))
            sys.stdout.flush()

    t0 = time.perf_counter()
    ids = generate(
        model,
        start,
        args.length,
        temperature=args.temperature,
        top_k=args.top_k,
        skip_ids=skip,
        seed=args.seed,
        on_token=on_token,
    )
    seconds = time.perf_counter() - t0  # the prompt's steps and the sampled ones
    print() if chars else print(vocab.decode(ids))
    # the speed on stderr, so that stdout stays just the text (for pipes and files)
    n = len(ids) - len(start)
    rate = f"{n / seconds:,.0f}" if seconds > 0 else "inf"
    print(f"npgated: generated {n} tokens in {seconds:.3f} s ({rate} tokens/s)", file=sys.stderr)
    return 0


GRADCHECK_SUITES = ("layers", "rnnlm", "better", "all")


def _gradcheck_user_code(args) -> int:
    """``npgated gradcheck FILE.py:NAME``: the localized report of npgated.testing."""
    from npgated import usercode  # noqa: PLC0415

    try:
        report, built = usercode.check_target(args.target, gates=args.gates, seed=args.seed)
    except usercode.UserCodeRaised as exc:
        print(exc.text, file=sys.stderr, end="")
        print(f"npgated: {exc}", file=sys.stderr)
        return 1
    print(built)
    print(report)
    return 0 if report.ok else 1


def cmd_gradcheck(args) -> int:
    from npgated.gradcheck import report, run_suite  # noqa: PLC0415

    if args.target not in GRADCHECK_SUITES:
        if ":" not in args.target:
            return _usage_error(
                f"gradcheck: unknown target {args.target!r}; choose one of "
                f"{', '.join(GRADCHECK_SUITES)} or FILE.py:NAME (your own layer "
                "class, a factory, or forward_fn,backward_fn)"
            )
        return _gradcheck_user_code(args)
    if args.gates is not None:
        return _usage_error("--gates is for FILE.py:NAME targets (npgated's layers know theirs)")
    failed = 0
    for title, results, tol in run_suite(args.target, seed=args.seed):
        worst = max(r.error for r in results)
        status = "ok" if worst <= tol else "FAIL"
        failed += status == "FAIL"
        print(f"== {title}: {status} (worst {worst:.1e}, tolerance {tol:.0e})")
        if args.verbose or status == "FAIL":
            print(report(results))
    print(
        "all gradients agree with finite differences" if not failed else f"{failed} check(s) failed"
    )
    return 1 if failed else 0


def cmd_exercise(args) -> int:
    """``npgated exercise CELL --out DIR`` writes an exercise; ``exercise check FILE`` checks it."""
    from npgated import exercises, usercode  # noqa: PLC0415

    if args.what == "check":
        if args.file is None or args.out is not None:
            return _usage_error(
                "exercise check takes the exercise file and no --out, e.g. "
                "npgated exercise check ex/lstm.py"
            )
        try:
            ok, text = exercises.check_exercise(args.file)
        except usercode.UserCodeRaised as exc:
            print(exc.text, file=sys.stderr, end="")
            print(f"npgated: {exc}", file=sys.stderr)
            return 1
        print(text)
        return 0 if ok else 1
    if args.file is not None:
        return _usage_error(f"exercise {args.what} takes no file: write it with --out DIR")
    if args.out is None:
        return _usage_error(f"exercise {args.what}: say where to write it, e.g. --out ex")
    paths = exercises.write_exercise(args.what, args.out, force=args.force)
    print(
        f"wrote {paths[0]} (the exercise) and {paths[1]} (its tests); fill in the regions "
        f"marked '>>> your code', then run: npgated exercise check {paths[0]}"
    )
    return 0


def cmd_demo(args) -> int:
    from npgated.analysis.demo import main as demo_main  # noqa: PLC0415

    return demo_main(args)


def cmd_info(args) -> int:
    import json  # noqa: PLC0415

    from npgated import info  # noqa: PLC0415

    facts = info.collect()
    print(json.dumps(facts, indent=2) if args.json else info.format_info(facts))
    return 0


# ---------------------------------------------------------------------------------------
def _add_train_flags(p) -> None:
    """``train``'s hyperparameter flags: TrainConfig's, then Seq2seqConfig's."""
    _add_config_flags(p)
    from npgated import seq2seq_cli  # noqa: PLC0415 (light: argparse and dataclasses)

    seq2seq_cli.add_train_flags(p)  # --task, --reverse; --model Seq2seq ... (chapters 7-8)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="npgated", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"npgated {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "train",
        help="train a language model on PTB or your own text",
        description="Train a language model; flags override the preset.",
    )
    p.add_argument(
        "--preset",
        help="book-small, book-better, zaremba-small, cpu-hour; "
        "encoder-decoders: book-addition, book-addition-peeky, "
        "book-date-attention",
    )
    p.add_argument("--resume", action="store_true", help="continue from <run-dir>/last.npz")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="one epoch of 3 iterations and a short evaluation (end-to-end check)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no log lines")
    p.defer(_add_train_flags)  # built when `train` parses or prints help, not for every command
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="perplexity of a checkpoint on a split of its text (or "
        "PTB), or on another text (--corpus)",
    )
    p.set_defaults(threads=None)  # npgated.parallel: every available core
    p.add_argument("checkpoint", help="a .npz checkpoint or a run directory")
    p.add_argument("--split", default="test", choices=("train", "valid", "val", "test"))
    p.add_argument(
        "--data-dir",
        default=None,
        help="PTB folder (default: $NPGATED_DATA_DIR); for an encoder-decoder run "
        "the folder with the book's addition.txt/date.txt (default: "
        "$NPGATED_BOOK_DATA_DIR, else book/ beside $NPGATED_DATA_DIR)",
    )
    p.add_argument(
        "--beam-size",
        type=int,
        default=None,
        help="encoder-decoder: beam search with this many beams instead of the "
        "book's greedy decoding",
    )
    p.add_argument("--batch-size", type=int, default=None, help="parallel streams (default 10)")
    p.add_argument("--time-size", type=int, default=None, help="window length (default 35)")
    p.add_argument(
        "--protocol",
        default="default",
        choices=("default", "book"),
        help="default: every target of N contiguous streams; book: the book's "
        "eval_perplexity (N=10, T=35, whole windows only)",
    )
    p.add_argument(
        "--corpus",
        default=None,
        help="another text under the run's vocabulary: a folder (its --split file) "
        "or one file (read whole); unseen tokens become <unk>",
    )
    p.add_argument(
        "--encoding",
        default=None,
        help="encoding of --corpus (default utf-8; the run's own for its corpus)",
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "import-book",
        help="checkpoint from the book's weight pickle (Rnnlm.pkl, AttentionSeq2seq.pkl, ...)",
        description="Read one of the book's (DLfS2) weight pickles safely and "
        "write it as an npgated checkpoint RUN_DIR/best.npz.",
    )
    p.add_argument("file", help="the book's pickle, e.g. ch06/Rnnlm.pkl")
    p.add_argument("--out", required=True, help="run directory for best.npz")
    p.add_argument(
        "--data-dir",
        default=None,
        help="PTB folder, to record the vocabulary checksum "
        "(default: $NPGATED_DATA_DIR); with --task the folder with the "
        "book's addition.txt/date.txt (default: $NPGATED_BOOK_DATA_DIR, "
        "else book/ beside $NPGATED_DATA_DIR)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing best.npz")
    p.add_argument(
        "--task",
        default=None,
        choices=("addition", "date"),
        help="an encoder-decoder pickle (ch. 7-8): the task whose characters its "
        "ids are; --data-dir is then the folder with the task's file",
    )
    p.add_argument(
        "--reverse",
        action="store_true",
        help="the encoder-decoder was trained on reversed questions",
    )
    p.set_defaults(func=cmd_import_book)

    p = sub.add_parser(
        "export-book",
        help="write a checkpoint as the book's weight pickle",
        description="Write an LSTM Rnnlm or a tied 2-layer BetterRnnlm in the "
        "book's format (a pickled list of float16 arrays).",
    )
    p.add_argument("checkpoint", help="a .npz checkpoint or a run directory")
    p.add_argument("--out", required=True, help="the .pkl file to write")
    p.set_defaults(func=cmd_export_book)

    p = sub.add_parser("generate", help="sample text from a checkpoint")
    p.add_argument("checkpoint", help="a .npz checkpoint or a run directory")
    p.add_argument(
        "--start",
        default=None,
        help="prompt: words, space separated (default 'you' on PTB, else <eos>), "
        "or characters for a char-level run (default a newline)",
    )
    p.add_argument(
        "--length",
        type=int,
        default=None,
        help="number of words to sample (default 100; an encoder-decoder: the answer's width)",
    )
    p.add_argument(
        "--question",
        action="append",
        default=[],
        help="encoder-decoder: a question to answer (repeat for several, answered "
        "together), e.g. --question '16+75'",
    )
    p.add_argument(
        "--beam-size",
        type=int,
        default=None,
        help="encoder-decoder: beam search with this many beams (default greedy)",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="> 1 flatter, < 1 sharper")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely")
    p.add_argument(
        "--skip",
        nargs="*",
        default=None,
        help="tokens never sampled (default: <unk> and N; <unk> at char level)",
    )
    p.add_argument("--seed", type=int, default=0, help="same seed, same text")
    p.add_argument("--data-dir", default=None, help="PTB folder (default: $NPGATED_DATA_DIR)")
    p.set_defaults(func=cmd_generate)

    from npgated import seq2seq_cli  # noqa: PLC0415 (light: argparse and dataclasses)

    seq2seq_cli.add_attention_parser(sub)  # npgated attention RUN QUESTION --out FILE

    p = sub.add_parser(
        "gradcheck",
        help="finite-difference report for every layer or a model, "
        "or for your own code (FILE.py:NAME)",
    )
    p.add_argument(
        "target",
        nargs="?",
        default="layers",
        help="layers (default: every layer), rnnlm, better, all; or FILE.py:NAME -- "
        "your layer class (built with small random shapes from its "
        "constructor's signature), a factory returning (layer, inputs), or "
        "forward_fn,backward_fn (step functions); see docs/check-your-backward.md",
    )
    p.add_argument(
        "--gates",
        default=None,
        help="FILE.py:NAME only: gate packing of the parameters' last axis, e.g. "
        "ifgo (npgated, PyTorch), fgio (the book's LSTM), rzn (GRU)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-v", "--verbose", action="store_true", help="one line per array")
    p.set_defaults(func=cmd_gradcheck)

    p = sub.add_parser(
        "exercise",
        help="write your own backward pass: an exercise to fill in "
        "(rnn, lstm, gru, attention), or check one",
        description="npgated exercise lstm --out ex writes ex/lstm.py (forward "
        "complete, backward to write) and ex/test_lstm.py; npgated "
        "exercise check ex/lstm.py says what is wrong where (exit 1 "
        "until it is right). See docs/check-your-backward.md.",
    )
    p.add_argument(
        "what",
        choices=("rnn", "lstm", "gru", "attention", "check"),
        help="the exercise to write, or check",
    )
    p.add_argument("file", nargs="?", default=None, help="check: the exercise file")
    p.add_argument("--out", default=None, help="the folder to write the exercise into")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(func=cmd_exercise)

    p = sub.add_parser(
        "demo",
        help="offline: vanishing gradients and long-range tasks, "
        "RNN vs LSTM vs GRU (no data needed)",
    )
    p.add_argument("--out", default="demo", help="folder for the table and figures")
    p.add_argument("--quick", action="store_true", help="fewer lengths and steps")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "info",
        help="versions, BLAS kernel, CPU and environment for a bug report",
        description="What a bug report needs: versions, the backend, the BLAS "
        "library and the kernel it runs, the CPU's vector "
        "extensions and the OPENBLAS_*/thread variables, with a "
        "WARNING when the kernel is below what the CPU supports.",
    )
    p.add_argument("--json", action="store_true", help="print the facts as JSON")
    p.set_defaults(func=cmd_info)
    return parser


def _configure_logging(level) -> None:
    """Library code logs to the "npgated" logger; the CLI prints its records to stdout."""
    logger = logging.getLogger("npgated")
    for handler in list(logger.handlers):
        if getattr(handler, "_npgated_cli", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._npgated_cli = True
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    allocator.keep_freed_memory()  # a process of our own: reuse freed memory between steps
    threads_before = parallel.threads()
    try:
        # NPGATED_THREADS, else the command's measured default (npgated.parallel's docstring)
        parallel.use_threads(parallel.requested_threads(getattr(args, "threads", 1)))
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        return _usage_error(str(exc))
    except KeyboardInterrupt:  # outside the training loop (which handles it itself)
        return 128 + signal.SIGINT
    except Exception as exc:  # data/checkpoint/backend errors: one line, no traceback
        from npgated.backend import BackendError  # noqa: PLC0415
        from npgated.data.ptb import DataError  # noqa: PLC0415
        from npgated.distributed import DistributedError, abort_if_running, rank_prefix  # noqa
        from npgated.training.checkpoint import CheckpointError  # noqa: PLC0415

        if isinstance(exc, (BackendError, DataError, CheckpointError, DistributedError)):
            return _usage_error(str(exc))
        if rank_prefix():  # under mpiexec: report, then stop every rank (no hang)
            traceback.print_exc()
            print(f"npgated: error: {rank_prefix()}{type(exc).__name__}: {exc}", file=sys.stderr)
            abort_if_running(1)
        raise
    finally:
        parallel.use_threads(threads_before)  # main() called in-process leaves it as it was


if __name__ == "__main__":
    sys.exit(main())
