"""Training configuration: one frozen dataclass, the single source of truth.

The command line is generated from these fields (``help`` from each field's metadata), the
run directory gets them as ``config.json``, and checkpoints store them. Presets are partial
configs applied on top of the defaults, and every field stays overridable.

Presets
-------
book-small      DLfS2 ch. 6 ``train_rnnlm.py``: Rnnlm 100/100, 1 layer, batch 20, T 35,
                SGD lr 20, clip 0.25, 4 epochs (book: test perplexity ~136).
book-better     DLfS2 ch. 6 ``train_better_rnnlm.py``: BetterRnnlm 650/650, 2 layers,
                dropout 0.5, tied, SGD lr 20 divided by 4 on a validation plateau, 40 epochs.
zaremba-small   Zaremba et al. 2014 small: 2 x 200 LSTM, no dropout, T 20, batch 20,
                init U(-0.1, 0.1), 13 epochs, the rate halved every epoch after epoch 4. Their
                lr 1 and clip 5 act on the gradient of the loss SUMMED over the T = 20 steps
                (mean over the batch only); npgated's loss is the mean over all N * T tokens, so
                the same updates are lr 1 * T = 20 and clip 5 / T = 0.25.
cpu-hour        the best PTB model one CPU hour bought on the project's 2-core machine,
                everything included (time_budget 60): BetterRnnlm 2 x 300 LSTM, tied, batch 32,
                T 35, variational dropout 0.3 between layers, recurrent dropout 0.15, embedding
                dropout 0.05, AR 1, TAR 1 (Merity et al. 2017), SGD lr 20 decayed linearly over
                the budget, clip 0.25; the epoch count is an upper bound, the budget ends the run
                (measured 2026-12-02: 19 epochs, valid 88.36, test 84.66 in 59 min 14 s).
char-small      Karpathy's min-char-rnn at its scale, on characters of any --corpus: a vanilla
                RNN, H 100, T 25, batch 1, Adagrad lr 0.1, init scale 0.01. min-char-rnn
                clips every gradient element to +-5 of the loss summed over its 25 steps;
                here the global norm of the per-token mean is clipped at 5 / 25 = 0.2.
char-lstm       char-rnn's (Karpathy 2015) recommended larger model with its training
                defaults, on characters of any --corpus: 2 x 512 LSTM, T 100, batch 50,
                lr 2e-3, the rate times 0.97 after every epoch from the 10th, clip 5
                (global norm; char-rnn clips elementwise), init U(-0.08, 0.08), no dropout,
                50 epochs; its one-hot input is an embedding of 64 here. The optimizer is
                Adam where char-rnn used RMSprop: RMSprop's average of g * g starts at
                zero, so its first steps are lr / sqrt(1 - rho) (10 lr at npgated's rho
                0.99) on every weight, and on PTB's characters it stalled at 4.3 bpc after
                60 steps where Adam (bias-corrected) reached 3.4 (2026-12-04, 1 MB of PTB).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field


def _f(default, help_text, **kw):
    return field(default=default, metadata={"help": help_text, **kw})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run."""

    # model
    model: str = _f("Rnnlm", "model class", choices=("Rnnlm", "BetterRnnlm"))
    cell: str = _f("lstm", "recurrent cell", choices=("lstm", "gru", "rnn"))
    wordvec_size: int = _f(100, "embedding size D")
    hidden_size: int = _f(100, "hidden size H")
    num_layers: int = _f(1, "number of stacked recurrent layers (BetterRnnlm)")
    dropout: float = _f(0.0, "dropout ratio in [0, 1) (BetterRnnlm)")
    variational: bool = _f(True, "variational dropout: one mask per sequence, reused over time")
    tie_weights: bool = _f(False, "tie the output matrix to the embedding (needs H == D)")
    init: str = _f("book", "initialisation: 'book' (scaled normal) or a uniform scale like 0.1")
    recurrent_dropout: float = _f(
        0.0,
        "dropout ratio on h_{t-1} in the recurrent product, one "
        "mask per window (BetterRnnlm; Gal & Ghahramani 2016)",
    )
    weight_drop: float = _f(
        0.0,
        "DropConnect ratio on the recurrent matrix Wh, one mask per "
        "window (BetterRnnlm; Merity et al. 2017)",
    )
    embedding_dropout: float = _f(
        0.0,
        "ratio of word types whose embedding row is dropped per "
        "window (BetterRnnlm; Gal & Ghahramani 2016)",
    )
    ar: float = _f(
        0.0,
        "activation regularization alpha: alpha * mean((m * h)^2) on the last "
        "layer's dropped outputs (BetterRnnlm; Merity et al. 2017 use 2)",
    )
    tar: float = _f(
        0.0,
        "temporal activation regularization beta: beta * mean((h_t - h_{t-1})^2) "
        "on the last layer's outputs (BetterRnnlm; Merity et al. 2017 use 1)",
    )
    # data
    data_dir: str | None = _f(
        None,
        "folder with ptb.{train,valid,test}.txt "
        "(default: $NPGATED_DATA_DIR, else download to a cache)",
    )
    corpus: str | None = _f(
        None,
        "your own text instead of PTB: a folder with train.txt, "
        "valid.txt, test.txt (or ptb.*.txt), or one file cut by "
        "--fractions (docs/own-text.md)",
    )
    level: str = _f(
        "word",
        "tokens of --corpus: words (<eos> per line) or characters (Unicode code points)",
        choices=("word", "char"),
    )
    fractions: str = _f(
        "0.9,0.05,0.05", "train,valid,test shares of a single --corpus file (contiguous parts)"
    )
    encoding: str = _f("utf-8", "text encoding of --corpus")
    min_count: int = _f(1, "--corpus: tokens seen fewer times in train become <unk>")
    max_vocab: int | None = _f(
        None, "--corpus: keep at most this many tokens, <unk> included (the most frequent)"
    )
    batch_size: int = _f(20, "batch size N (parallel streams)")
    time_size: int = _f(35, "truncated-BPTT window T")
    # optimisation
    optimizer: str = _f(
        "sgd",
        "optimizer",
        choices=("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "asgd"),
    )
    lr: float = _f(20.0, "learning rate")
    max_grad_norm: float = _f(0.25, "global gradient-norm clip (0 disables clipping)")
    schedule: str = _f(
        "constant",
        "learning-rate schedule",
        choices=("constant", "plateau", "step", "budget-linear"),
    )
    lr_factor: float = _f(4.0, "divide the learning rate by this (plateau and step schedules)")
    lr_decay_start: int = _f(4, "step schedule: first epoch after which the lr is divided")
    asgd_nonmono: int = _f(
        5,
        "asgd: start averaging when validation has not improved on the "
        "best of the epochs before the last n (NT-ASGD's n; 0: average "
        "from the first step)",
    )
    epochs: int = _f(4, "number of epochs")
    time_budget: float | None = _f(
        None,
        "minutes for the whole run, validation and the final "
        "test evaluation included; training stops in time",
    )
    max_iters: int | None = _f(None, "stop each epoch after this many iterations (quick runs)")
    # bookkeeping
    seed: int = _f(0, "seed for initialisation and dropout")
    dtype: str = _f("float32", "compute dtype", choices=("float32", "float64"))
    backend: str = _f("numpy", "array backend", choices=("numpy", "cupy", "fake-cupy"))
    run_dir: str = _f(
        "runs/npgated", "where config.json, metrics.jsonl, checkpoints and the plot go"
    )
    log_interval: int = _f(100, "iterations between log lines")
    checkpoint_interval: int = _f(
        0, "also save last.npz every this many iterations (0: epoch ends only)"
    )
    progress: bool = _f(True, "show a tqdm progress bar")

    def __post_init__(self):
        _validate(self)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}")
        return cls(**d)

    def init_value(self):
        """``"book"`` or the uniform scale as a float."""
        return "book" if self.init == "book" else float(self.init)

    def model_kwargs(self, vocab_size: int) -> dict:
        """Keyword arguments for the model class."""
        kw = dict(
            vocab_size=vocab_size,
            wordvec_size=self.wordvec_size,
            hidden_size=self.hidden_size,
            cell=self.cell,
            init=self.init_value(),
        )
        if self.model == "BetterRnnlm":
            kw.update(
                num_layers=self.num_layers,
                dropout_ratio=self.dropout,
                variational=self.variational,
                tie_weights=self.tie_weights,
            )
            kw.update({name: getattr(self, name) for name in _REGULARIZERS})
        return kw


_REGULARIZERS = ("recurrent_dropout", "weight_drop", "embedding_dropout", "ar", "tar")
"""BetterRnnlm-only options, passed to the model under the same names."""


def _validate(c: TrainConfig) -> None:
    for f in dataclasses.fields(c):
        choices = f.metadata.get("choices")
        if choices and getattr(c, f.name) not in choices:
            raise ValueError(
                f"{f.name}={getattr(c, f.name)!r} is not valid; choose one of: {', '.join(choices)}"
            )
    for name in (
        "wordvec_size",
        "hidden_size",
        "num_layers",
        "batch_size",
        "time_size",
        "epochs",
        "log_interval",
    ):
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if c.max_iters is not None and c.max_iters < 1:
        raise ValueError(f"max_iters must be a positive integer, got {c.max_iters!r}")
    if c.checkpoint_interval < 0:
        raise ValueError(f"checkpoint_interval must be >= 0, got {c.checkpoint_interval}")
    for name in ("dropout", "recurrent_dropout", "weight_drop", "embedding_dropout"):
        if not 0.0 <= getattr(c, name) < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {getattr(c, name)}")
    for name in ("ar", "tar"):
        if not 0.0 <= getattr(c, name) < float("inf"):
            raise ValueError(f"{name} must be a finite number >= 0, got {getattr(c, name)}")
    if (
        isinstance(c.asgd_nonmono, bool)
        or not isinstance(c.asgd_nonmono, int)
        or c.asgd_nonmono < 0
    ):
        raise ValueError(f"asgd_nonmono must be an integer >= 0, got {c.asgd_nonmono!r}")
    if c.time_budget is not None and not 0.0 < c.time_budget < float("inf"):
        raise ValueError(f"time_budget must be a positive number of minutes, got {c.time_budget}")
    if c.schedule == "budget-linear" and c.time_budget is None:
        raise ValueError(
            "schedule 'budget-linear' decays over the time budget: give "
            "--time-budget MINUTES or choose another --schedule"
        )
    if not c.lr > 0:
        raise ValueError(f"lr must be > 0, got {c.lr}")
    if c.max_grad_norm < 0:
        raise ValueError(f"max_grad_norm must be >= 0 (0 disables clipping), got {c.max_grad_norm}")
    if not c.lr_factor > 1:
        raise ValueError(f"lr_factor must be > 1, got {c.lr_factor}")
    if c.init != "book":
        try:
            scale = float(c.init)
        except ValueError:
            raise ValueError(f"init must be 'book' or a positive number, got {c.init!r}") from None
        if not scale > 0:
            raise ValueError(f"init must be 'book' or a positive number, got {c.init!r}")
    if c.model == "Rnnlm" and (c.num_layers != 1 or c.dropout or c.tie_weights):
        raise ValueError(
            "Rnnlm has one layer, no dropout and no tying: use --model BetterRnnlm for "
            "num_layers/dropout/tie_weights"
        )
    if c.model == "Rnnlm":
        used = [name for name in _REGULARIZERS if getattr(c, name)]
        if used:
            raise ValueError(
                f"Rnnlm has no {', '.join(used)}: these regularize BetterRnnlm; use --model "
                "BetterRnnlm or set them to 0"
            )
    _validate_corpus(c)
    if c.tie_weights and c.hidden_size != c.wordvec_size:
        raise ValueError(
            f"tie_weights needs hidden_size == wordvec_size, got {c.hidden_size} and "
            f"{c.wordvec_size}"
        )


def _validate_corpus(c: TrainConfig) -> None:
    """--corpus and its options (the text itself is checked when it is read)."""
    from npgated.data.corpus import codec_name, parse_fractions  # noqa: PLC0415

    parse_fractions(c.fractions)
    codec_name(c.encoding)
    if isinstance(c.min_count, bool) or not isinstance(c.min_count, int) or c.min_count < 1:
        raise ValueError(f"min_count must be a positive integer, got {c.min_count!r}")
    if c.max_vocab is not None and (
        isinstance(c.max_vocab, bool) or not isinstance(c.max_vocab, int) or c.max_vocab < 2
    ):
        raise ValueError(
            f"max_vocab must be an integer >= 2 (a token and <unk>), got {c.max_vocab!r}"
        )
    if c.corpus is None:
        if c.level != "word":
            raise ValueError(
                "--level char reads your own text: give --corpus PATH (a folder "
                "with train.txt, valid.txt, test.txt, or one file; PTB's folder "
                "works too)"
            )
        if c.min_count != 1 or c.max_vocab is not None:
            raise ValueError(
                "--min-count and --max-vocab shape the vocabulary of --corpus; "
                "PTB's is fixed: give --corpus PATH or drop them"
            )
    elif c.data_dir is not None:
        raise ValueError("give either --corpus (your own text) or --data-dir (PTB), not both")


PRESETS: dict[str, dict] = {
    "book-small": dict(
        model="Rnnlm",
        cell="lstm",
        wordvec_size=100,
        hidden_size=100,
        batch_size=20,
        time_size=35,
        optimizer="sgd",
        lr=20.0,
        max_grad_norm=0.25,
        schedule="constant",
        epochs=4,
    ),
    "book-better": dict(
        model="BetterRnnlm",
        cell="lstm",
        wordvec_size=650,
        hidden_size=650,
        num_layers=2,
        dropout=0.5,
        variational=True,
        tie_weights=True,
        batch_size=20,
        time_size=35,
        optimizer="sgd",
        lr=20.0,
        max_grad_norm=0.25,
        schedule="plateau",
        lr_factor=4.0,
        epochs=40,
    ),
    "zaremba-small": dict(
        model="BetterRnnlm",
        cell="lstm",
        wordvec_size=200,
        hidden_size=200,
        num_layers=2,
        dropout=0.0,
        tie_weights=False,
        batch_size=20,
        time_size=20,
        optimizer="sgd",
        lr=20.0,
        max_grad_norm=0.25,
        schedule="step",
        lr_factor=2.0,
        lr_decay_start=4,
        init="0.1",
        epochs=13,
    ),
    "cpu-hour": dict(
        model="BetterRnnlm",
        cell="lstm",
        wordvec_size=300,
        hidden_size=300,
        num_layers=2,
        dropout=0.3,
        variational=True,
        tie_weights=True,
        recurrent_dropout=0.15,
        weight_drop=0.0,
        embedding_dropout=0.05,
        ar=1.0,
        tar=1.0,
        batch_size=32,
        time_size=35,
        optimizer="sgd",
        lr=20.0,
        max_grad_norm=0.25,
        schedule="budget-linear",
        epochs=40,
        time_budget=60.0,
    ),
    "char-small": dict(
        level="char",
        model="Rnnlm",
        cell="rnn",
        wordvec_size=100,
        hidden_size=100,
        batch_size=1,
        time_size=25,
        optimizer="adagrad",
        lr=0.1,
        max_grad_norm=0.2,
        schedule="constant",
        init="0.01",
        epochs=10,
    ),
    "char-lstm": dict(
        level="char",
        model="BetterRnnlm",
        cell="lstm",
        wordvec_size=64,
        hidden_size=512,
        num_layers=2,
        dropout=0.0,
        tie_weights=False,
        batch_size=50,
        time_size=100,
        optimizer="adam",
        lr=2e-3,
        max_grad_norm=5.0,
        schedule="step",
        lr_factor=1 / 0.97,
        lr_decay_start=10,
        init="0.08",
        epochs=50,
    ),
}


def preset(name: str, **overrides) -> TrainConfig:
    """The config of a named preset with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return TrainConfig(**{**PRESETS[name], **overrides})
