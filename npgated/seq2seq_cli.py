"""The encoder-decoder side of the ``npgated`` command line (the book's chapters 7 and 8).

:mod:`npgated.cli` builds the parser and dispatches here when a command concerns an
encoder-decoder: ``train`` with ``--task`` (or a seq2seq ``--model`` / ``--preset``),
``eval`` / ``generate`` / ``export-book`` on a run whose checkpoint holds one,
``import-book`` of a pickle that holds one, and ``attention``. The bodies live here so that
``cli.py`` stays a table of commands.

A seq2seq checkpoint's metadata names the ``task`` (``addition`` or ``date``), whether the
model reads its questions ``reverse``-d, the task's character ``vocabulary`` (in id order,
with its checksum), and the widths of question and answer, so ``generate`` and
``attention`` need no data file; ``eval`` reads the task's file from the book's data folder
(``--data-dir``, else ``$NPGATED_BOOK_DATA_DIR``, else ``book/`` beside
``$NPGATED_DATA_DIR``) and checks that its vocabulary is the one the model was trained on.

Bad input (a question with a character outside the vocabulary or longer than the
encoder's width, an ``--answer`` longer than the decoder's, a pickle of another model or
task, a missing data file) raises ``ValueError`` / ``FileNotFoundError`` with one line
saying what is wrong; ``cli.main`` prints it and exits with code 2 before anything is
written.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path


# ---------------------------------------------------------------------------------------
# npgated train --task ...: the flags and the routing
# ---------------------------------------------------------------------------------------
def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """Add :class:`Seq2seqConfig`'s fields to ``npgated train``'s parser.

    A field that the language models' :class:`TrainConfig` also has is the same flag: its
    choices are widened to both families' and its help names the encoder-decoder default.
    The others (``--task``, ``--reverse``) get a group of their own.
    """
    from npgated.training.seq2seq_config import PRESETS, Seq2seqConfig  # noqa: PLC0415

    hints = typing.get_type_hints(Seq2seqConfig)
    # argparse keeps the flags it has in _option_string_actions (public enough: stable
    # since Python 2.7, and the only way to extend a flag another function defined)
    existing = parser._option_string_actions  # noqa: SLF001
    group = parser.add_argument_group(
        "encoder-decoder (the book's ch. 7-8: --task addition|date, presets "
        + ", ".join(PRESETS)
        + ")"
    )
    for f in dataclasses.fields(Seq2seqConfig):
        flag = "--" + f.name.replace("_", "-")
        action = existing.get(flag)
        if action is not None:
            if action.choices is not None and "choices" in f.metadata:
                action.choices = tuple(action.choices) + tuple(
                    c for c in f.metadata["choices"] if c not in action.choices
                )
            if action.help and "(default:" in action.help and action.default is None:
                action.help = action.help.rstrip(")") + f"; seq2seq: {f.default})"
            continue
        kind = hints[f.name]
        kind = ([a for a in typing.get_args(kind) if a is not type(None)] or [kind])[0]
        default = "none: required unless a --preset names it" if f.name == "task" else f.default
        kw = dict(dest=f.name, default=None, help=f"{f.metadata['help']} (default: {default})")
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        group.add_argument(flag, type=kind, **kw)


def _lm_only() -> list[str]:
    from npgated.training.config import TrainConfig  # noqa: PLC0415
    from npgated.training.seq2seq_config import Seq2seqConfig  # noqa: PLC0415

    ours = {f.name for f in dataclasses.fields(Seq2seqConfig)}
    return [f.name for f in dataclasses.fields(TrainConfig) if f.name not in ours]


def wants_seq2seq(args) -> bool:
    """Does this ``npgated train`` command ask for an encoder-decoder?

    Yes when it names a task (``--task``), reverses (``--reverse``), or picks a seq2seq
    ``--model`` or ``--preset``.
    """
    from npgated.training.seq2seq_config import MODELS, PRESETS  # noqa: PLC0415

    return (
        getattr(args, "task", None) is not None
        or getattr(args, "reverse", None) is not None
        or getattr(args, "model", None) in MODELS
        or getattr(args, "preset", None) in PRESETS
    )


def config_from_args(args):
    """The :class:`Seq2seqConfig` of a ``npgated train`` command (preset, then flags)."""
    from npgated.training.seq2seq_config import PRESETS, Seq2seqConfig, preset  # noqa: PLC0415

    lm_flags = [name for name in _lm_only() if getattr(args, name, None) is not None]
    if lm_flags:
        flags = ", ".join("--" + n.replace("_", "-") for n in lm_flags)
        raise ValueError(
            f"{flags}: language-model option(s), not used by an encoder-decoder "
            "(--task/--reverse/a seq2seq --model or --preset); drop them"
        )
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Seq2seqConfig)
        if getattr(args, f.name, None) is not None
    }
    if args.dry_run:
        if given.get("max_iters") is not None or given.get("epochs") is not None:
            raise ValueError("--dry-run sets --epochs 1 --max-iters 3: do not combine them")
        given.update(epochs=1, max_iters=3, log_interval=1)
    if args.preset is None:
        if "task" not in given:
            raise ValueError(
                "an encoder-decoder needs its task: add --task addition or "
                "--task date (or a --preset: " + ", ".join(PRESETS) + ")"
            )
        return Seq2seqConfig(**given)
    if args.preset not in PRESETS:
        raise ValueError(
            f"--preset {args.preset} is a language-model preset; an encoder-"
            f"decoder takes one of: {', '.join(PRESETS)}"
        )
    return preset(args.preset, **given)


DRY_RUN_TEST_QUESTIONS = 500
"""--dry-run evaluates on this many test questions only."""


def cmd_train(args) -> int:
    from npgated import __version__, parallel  # noqa: PLC0415
    from npgated.data import sequence  # noqa: PLC0415
    from npgated.training.seq2seq import TrainingDiverged, train_seq2seq  # noqa: PLC0415

    config = config_from_args(args)
    data = sequence.load_task(config.task, config.data_dir, reverse=config.reverse)
    # every core unless NPGATED_THREADS says otherwise: each step's batch rows are split
    # over the threads (npgated.training.split_batch; NPGATED_THREADS=1: the plain step)
    parallel.use_threads(parallel.requested_threads())
    print(
        f"npgated {__version__}: training {config.model} ({config.cell}) on the "
        f"{config.task} task, {len(data.x_train):,} questions"
        f"{' reversed' if config.reverse else ''}, vocabulary {len(data.char_to_id)}; "
        f"run dir {config.run_dir}"
    )
    try:
        result = train_seq2seq(
            config,
            data,
            resume=args.resume,
            test_limit=DRY_RUN_TEST_QUESTIONS if args.dry_run else None,
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
    if result.best_accuracy is not None:
        print(
            f"best test accuracy {100 * result.best_accuracy:.2f} % "
            f"(epoch {result.progress.best_epoch})"
        )
    return 0


# ---------------------------------------------------------------------------------------
# runs: which checkpoints hold an encoder-decoder, loading them
# ---------------------------------------------------------------------------------------
def checkpoint_path(path) -> Path:
    """A checkpoint file, or a run directory's best.npz (else its last.npz)."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.npz" if (path / "best.npz").exists() else path / "last.npz"
    return path


def peek_meta(path) -> dict | None:
    """The metadata of a checkpoint without reading its arrays, or None if there is none
    (the caller's own loading then says what is wrong)."""
    import json  # noqa: PLC0415
    import zipfile  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    path = checkpoint_path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:  # lazy: reads only this member
            if "__meta__" not in data.files:
                return None
            meta = json.loads(data["__meta__"].tobytes().decode("utf-8"))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def is_seq2seq_run(path) -> bool:
    """Does the checkpoint (or run directory) hold an encoder-decoder?"""
    from npgated.training.seq2seq_config import MODELS  # noqa: PLC0415

    meta = peek_meta(path)
    return bool(meta) and (meta.get("config") or {}).get("model") in MODELS


def load_run(path):
    """``(model, meta)`` of a seq2seq checkpoint or run directory, in eval mode."""
    from npgated.models.seq2seq import build_seq2seq  # noqa: PLC0415
    from npgated.training.checkpoint import load_checkpoint, restore  # noqa: PLC0415

    ckpt = load_checkpoint(checkpoint_path(path))
    dtype = next(iter(ckpt.params.values())).dtype
    model = build_seq2seq(ckpt.meta["config"], dtype=dtype)
    restore(model, ckpt)
    model.eval()
    return model, ckpt.meta


class Vocabulary:
    """A run's characters (from its metadata) and the widths of its questions and answers."""

    def __init__(self, meta: dict):
        self.task = meta["task"]
        self.reverse = bool(meta["reverse"])
        self.id_to_char = dict(enumerate(meta["vocabulary"]))
        self.char_to_id = {c: i for i, c in self.id_to_char.items()}
        self.question_length = int(meta["question_length"])
        self.answer_length = int(meta["answer_length"])
        self.start_id = self.char_to_id[meta["start_char"]]

    def encode_questions(self, questions):
        """(N, question_length) ids of the questions, padded with spaces as the book's
        files are, reversed if the model reads them reversed. ValueError for a character
        outside the vocabulary or a question wider than the encoder's."""
        from npgated.data import sequence  # noqa: PLC0415

        return sequence.encode_questions(
            questions, self.char_to_id, self.question_length, reverse=self.reverse
        )

    def encode_answer(self, answer: str):
        """(1, 1 + answer_length) ids: the start character, then the answer padded with
        spaces. ValueError for a character outside the vocabulary or an answer longer than
        the decoder's."""
        from npgated.data import sequence  # noqa: PLC0415

        if len(answer) > self.answer_length:
            raise ValueError(
                f"answer {answer!r} has {len(answer)} characters; the {self.task} "
                f"decoder writes {self.answer_length}"
            )
        start = self.id_to_char[self.start_id]
        return sequence.encode(start + answer, self.char_to_id, 1 + self.answer_length, pad=" ")

    def decode(self, ids) -> str:
        from npgated.data import sequence  # noqa: PLC0415

        return sequence.decode(ids, self.id_to_char)


# ---------------------------------------------------------------------------------------
# npgated eval | generate | attention | import-book | export-book on an encoder-decoder
# ---------------------------------------------------------------------------------------
def cmd_eval(args) -> int:
    """``test accuracy P % (C of T)``: the book's metric on the task's test split."""
    from npgated.data import sequence  # noqa: PLC0415
    from npgated.models.seq2seq import accuracy  # noqa: PLC0415

    model, meta = load_run(args.checkpoint)
    task, reverse = meta["task"], bool(meta["reverse"])
    split = {"val": "test", "valid": "test"}.get(args.split, args.split)
    if args.split in ("val", "valid"):
        raise ValueError(
            f"the book's {task} task has a train and a test split only (its "
            "test split is what its scripts call 'val acc'); use --split test"
        )
    data = sequence.load_task(task, args.data_dir, reverse=reverse)
    checksum = sequence.vocab_checksum(data.char_to_id)
    if meta.get("vocab_checksum") not in (None, checksum):
        raise ValueError(
            f"the run's {task} vocabulary differs from the one of this "
            f"{sequence.TASK_FILES[task]}: the character ids would not match"
        )
    xs, ts = (data.x_test, data.t_test) if split == "test" else (data.x_train, data.t_train)
    correct, total = accuracy(model, xs, ts, beam_size=args.beam_size)
    print(
        f"{split} accuracy {100.0 * correct / total:.2f} % ({correct} of {total})"
        + ("" if args.beam_size is None else f" (beam search, {args.beam_size} beams)")
    )
    return 0


def cmd_generate(args) -> int:
    """The answers to ``--question``s, decoded together (one line each)."""
    model, meta = load_run(args.checkpoint)
    vocab = Vocabulary(meta)
    if not args.question:
        raise ValueError(
            "an encoder-decoder answers questions: give --question, e.g. "
            + (
                "--question '16+75'"
                if vocab.task == "addition"
                else "--question 'september 27, 1994'"
            )
        )
    xs = vocab.encode_questions(args.question)
    length = vocab.answer_length if args.length is None else args.length
    if not 1 <= length <= vocab.answer_length:
        raise ValueError(
            f"--length {length}: the {vocab.task} decoder writes answers of "
            f"{vocab.answer_length} characters; give 1 to {vocab.answer_length} "
            "or leave --length out"
        )
    ids = model.generate(xs, vocab.start_id, length, beam_size=args.beam_size)
    from npgated import backend  # noqa: PLC0415

    ids = backend.to_cpu(ids)
    width = max(len(q) for q in args.question)
    for q, row in zip(args.question, ids):
        print(f"{q.ljust(width)}  ->  {vocab.decode(row).rstrip()}")
    return 0


def cmd_attention(args) -> int:
    """Draw the attention map of one question (the book's ch08/visualize_attention.py)."""
    from npgated.analysis.attention_map import attention_weights, plot_attention  # noqa: PLC0415

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ValueError(f"--out {out}: give a .png, .pdf or .svg file name")
    model, meta = load_run(args.checkpoint)
    if meta["config"]["model"] != "AttentionSeq2seq":
        raise ValueError(
            f"{args.checkpoint} holds a {meta['config']['model']}, which has no "
            "attention weights: draw maps of an AttentionSeq2seq run"
        )
    vocab = Vocabulary(meta)
    xs = vocab.encode_questions([args.question])
    answer = args.answer
    if answer is None:  # the model's own (greedy) answer
        answer = vocab.decode(model.generate(xs, vocab.start_id, vocab.answer_length)[0])
    ts = vocab.encode_answer(answer)
    answer = answer.ljust(vocab.answer_length)
    weights = attention_weights(model, xs, ts, reverse=vocab.reverse)
    path = plot_attention(weights, args.question.ljust(vocab.question_length), answer, out)
    print(f"{args.question.rstrip()}  ->  {answer.rstrip()}")
    print(
        f"attention map ({len(answer)} output x {vocab.question_length} input characters) "
        f"written to {path}"
    )
    return 0


def add_attention_parser(sub) -> None:
    """``npgated attention RUN QUESTION --out FILE``."""
    p = sub.add_parser(
        "attention",
        help="draw an AttentionSeq2seq's attention map for one question",
        description="Answer QUESTION with an AttentionSeq2seq run (greedy decoding, or the "
        "given --answer, teacher-forced as the book's visualize_attention.py "
        "does) and draw the attention weights: one row per output character, one "
        "column per input character (in reading order, also for a model that "
        "reads reversed questions).",
    )
    p.add_argument("checkpoint", help="a .npz checkpoint or a run directory")
    p.add_argument("question", help='e.g. "september 27, 1994"')
    p.add_argument("--out", required=True, help="the image to write (.png, .pdf or .svg)")
    p.add_argument(
        "--answer", default=None, help="draw the weights for this answer (default: the model's own)"
    )
    p.set_defaults(func=cmd_attention)


def cmd_import_book(args) -> int:
    """One of the book's ch. 7-8 pickles -> RUN/best.npz, with the task's vocabulary."""
    from npgated.data import sequence  # noqa: PLC0415
    from npgated.interop.book_seq2seq import model_from_book  # noqa: PLC0415
    from npgated.training.checkpoint import save_checkpoint  # noqa: PLC0415

    if args.task is None:
        raise ValueError(
            f"{args.file} holds one of the book's encoder-decoders: say which "
            "task its character ids belong to with --task addition or --task date "
            "(and --reverse if it was trained on reversed questions)"
        )
    target = Path(args.out) / "best.npz"
    if target.exists() and not args.force:
        raise ValueError(f"{target} exists; choose another --out or pass --force to replace it")
    data = sequence.load_task(args.task, args.data_dir, reverse=bool(args.reverse))
    V = len(data.char_to_id)
    model = model_from_book(args.file, vocab_size=V)  # refuses a file of another task's V
    c = model.config
    from npgated.training.seq2seq import task_meta  # noqa: PLC0415

    meta = dict(
        task_meta(args.task, bool(args.reverse), data),
        source={"format": "dlfs2-pickle", "file": str(Path(args.file).resolve())},
    )
    save_checkpoint(target, model, meta=meta)
    print(
        f"imported the book's {c['model']} (V={V}, D={c['wordvec_size']}, "
        f"H={c['hidden_size']}, gates f,g,i,o -> i,f,g,o) for the {args.task} task"
        f"{' (reversed questions)' if args.reverse else ''} into {target}"
    )
    return 0


def cmd_export_book(args) -> int:
    from npgated.interop.book_seq2seq import model_to_book  # noqa: PLC0415

    model, meta = load_run(args.checkpoint)
    path = model_to_book(model, args.out)
    print(
        f"wrote {meta['config']['model']} ({meta['task']} task"
        f"{', reversed questions' if meta.get('reverse') else ''}) in the book's format "
        f"(float16, gates f,g,i,o) to {path}"
    )
    return 0


def book_pickle_kind(path) -> str | None:
    """``"seq2seq"`` for one of the book's ch. 7-8 weight pickles (10 arrays: encoder
    embedding and recurrent layer, decoder embedding, recurrent and output layer), ``"lm"``
    for another list of arrays (its language models: 6 or 9), None when the file cannot be
    read safely (the import then says why)."""
    from npgated.interop.book import load_book_pickle  # noqa: PLC0415

    try:
        arrays = load_book_pickle(path)
    except (ValueError, OSError):
        return None
    return "seq2seq" if len(arrays) == 10 else "lm"
