"""Configuration of an encoder-decoder training run (the book's chapters 7 and 8).

One frozen dataclass, the single source of truth, as :class:`npgated.training.config.TrainConfig`
is for the language models. ``npgated train`` takes its flags from both: a field of the same
name is one flag (``--hidden-size``, ``--lr``, ...), a flag only this class has (``--task``,
``--reverse``) selects encoder-decoder training, and so does a ``--model`` or ``--preset`` of
this family. The run directory gets the fields as ``config.json``; checkpoints keep them.

Presets (the book's scripts, read in ``ch07/train_seq2seq.py`` and ``ch08/train.py``)
-------
book-addition         ch. 7: ``Seq2seq`` on ``addition.txt``, wordvec 16, hidden 128, batch
                      128, 25 epochs, Adam (lr 0.001, the book's default), clip 5.0, the
                      questions as written (the book's ``is_reverse = False``; add
                      ``--reverse`` for its second experiment).
book-addition-peeky   ch. 7: ``PeekySeq2seq``, the same hyperparameters, reversed questions
                      (the book's third experiment: peeky + reversed).
book-date-attention   ch. 8: ``AttentionSeq2seq`` on ``date.txt``, wordvec 16, hidden 256,
                      batch 128, 10 epochs, Adam, clip 5.0, reversed questions (as
                      ``ch08/train.py`` does for every model it compares).

The book evaluates after every epoch on its test split (the last 10 % of the shuffled
lines, 5,000 questions) with greedy decoding, an answer counting only if every character
matches; npgated does the same, batched, and keeps the epoch of the best accuracy as
``best.npz``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

MODELS = ("Seq2seq", "PeekySeq2seq", "AttentionSeq2seq")
TASKS = ("addition", "date")
TASK_FILES = {"addition": "addition.txt", "date": "date.txt"}


def _f(default, help_text, **kw):
    return field(default=default, metadata={"help": help_text, **kw})


@dataclass(frozen=True)
class Seq2seqConfig:
    """Everything that defines an encoder-decoder training run."""

    # task and model
    task: str = _f(
        "addition", "the book's task: addition (addition.txt) or date (date.txt)", choices=TASKS
    )
    reverse: bool = _f(False, "feed the questions reversed (the book's is_reverse)")
    model: str = _f("Seq2seq", "encoder-decoder class", choices=MODELS)
    cell: str = _f("lstm", "recurrent cell of encoder and decoder", choices=("lstm", "gru"))
    wordvec_size: int = _f(16, "character embedding size D")
    hidden_size: int = _f(128, "hidden size H")
    # data
    data_dir: str | None = _f(None, "folder with the book's addition.txt and date.txt")
    batch_size: int = _f(128, "questions per minibatch N")
    # optimisation
    optimizer: str = _f(
        "adam", "optimizer", choices=("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
    )
    lr: float = _f(0.001, "learning rate")
    max_grad_norm: float = _f(5.0, "global gradient-norm clip (0 disables clipping)")
    epochs: int = _f(25, "number of epochs")
    max_iters: int | None = _f(None, "stop each epoch after this many iterations (quick runs)")
    # bookkeeping
    seed: int = _f(0, "seed for initialisation and the minibatch order")
    dtype: str = _f("float32", "compute dtype", choices=("float32", "float64"))
    backend: str = _f("numpy", "array backend", choices=("numpy", "cupy", "fake-cupy"))
    run_dir: str = _f(
        "runs/seq2seq", "where config.json, metrics.jsonl, checkpoints and accuracy.png go"
    )
    log_interval: int = _f(100, "iterations between log lines")
    progress: bool = _f(True, "show a tqdm progress bar")

    def __post_init__(self):
        _validate(self)

    def replace(self, **changes) -> Seq2seqConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> Seq2seqConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown seq2seq config fields {unknown}")
        return cls(**d)


def _validate(c: Seq2seqConfig) -> None:
    for f in dataclasses.fields(c):
        choices = f.metadata.get("choices")
        if choices and getattr(c, f.name) not in choices:
            raise ValueError(
                f"{f.name}={getattr(c, f.name)!r} is not valid for an encoder-decoder; choose "
                f"one of: {', '.join(choices)}"
            )
    for name in ("wordvec_size", "hidden_size", "batch_size", "epochs", "log_interval"):
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if c.max_iters is not None and (isinstance(c.max_iters, bool) or c.max_iters < 1):
        raise ValueError(f"max_iters must be a positive integer, got {c.max_iters!r}")
    if not c.lr > 0:
        raise ValueError(f"lr must be > 0, got {c.lr}")
    if not c.max_grad_norm >= 0:
        raise ValueError(f"max_grad_norm must be >= 0 (0 disables clipping), got {c.max_grad_norm}")


PRESETS: dict[str, dict] = {
    "book-addition": dict(
        task="addition",
        model="Seq2seq",
        cell="lstm",
        reverse=False,
        wordvec_size=16,
        hidden_size=128,
        batch_size=128,
        epochs=25,
        optimizer="adam",
        lr=0.001,
        max_grad_norm=5.0,
    ),
    "book-addition-peeky": dict(
        task="addition",
        model="PeekySeq2seq",
        cell="lstm",
        reverse=True,
        wordvec_size=16,
        hidden_size=128,
        batch_size=128,
        epochs=25,
        optimizer="adam",
        lr=0.001,
        max_grad_norm=5.0,
    ),
    "book-date-attention": dict(
        task="date",
        model="AttentionSeq2seq",
        cell="lstm",
        reverse=True,
        wordvec_size=16,
        hidden_size=256,
        batch_size=128,
        epochs=10,
        optimizer="adam",
        lr=0.001,
        max_grad_norm=5.0,
    ),
}


def preset(name: str, **overrides) -> Seq2seqConfig:
    """The config of a named preset with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown seq2seq preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return Seq2seqConfig(**{**PRESETS[name], **overrides})
