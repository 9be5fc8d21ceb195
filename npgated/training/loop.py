"""Training a language model on a corpus: the loop, its bookkeeping, resuming.

The loop itself is :func:`fit`; each iteration is the five steps of the book, in order::

    model.zero_grads()                          # gradients accumulate: clear them first
    loss = model.forward(xs, ts)                # mean cross-entropy of one (N, T) window
    model.backward()                            # BPTT within the window
    norm = clip_grads(model.grads, max_norm)    # global norm over the unique gradients
    optimizer.update(model.params, model.grads)

followed by logging. After each epoch: validation perplexity, the learning-rate schedule,
``best.npz`` when validation improved, ``last.npz`` (resumable), ``metrics.jsonl`` and
``perplexity.png`` in the run directory.

Faults lose nothing: a non-finite loss or gradient norm stops training with
:class:`TrainingDiverged` *before* the update, and the last good checkpoint stays; Ctrl-C
(SIGINT) or SIGTERM finishes the current iteration, writes a resumable ``last.npz`` and
returns with ``interrupted`` set. Resuming restores parameters, optimizer state, the
recurrent state, every random generator, the batcher position and the schedule, so the run
continues with exactly the numbers an uninterrupted run produces.

NT-ASGD (Merity et al. 2017), with ``optimizer="asgd"``: at an epoch end, when validation
has not improved on the best of the epochs before the last ``asgd_nonmono`` ones
(:func:`npgated.optim.asgd.nonmono_trigger`), the optimizer starts averaging the iterates
(``asgd_nonmono = 0``: from the first step). From then on validation, ``best.npz`` and the
test evaluation use the averaged weights: swapped into the parameter arrays for the
evaluation and swapped back exactly (``ASGD.averaged``), while training continues from the
last iterate. ``best.npz`` then holds the averaged weights and no optimizer state (it is for
evaluation; resuming uses ``last.npz``).

A time budget (``time_budget`` minutes, everything included: validation passes and the
final test evaluation must fit). The clock starts when :func:`train` starts (a resumed run
adds the time already spent, and decides afresh under its own budget, so a larger one trains
on). Before every iteration the loop checks::

    elapsed + step + valid + test + margin > budget   ->  stop training now

``step``: the mean duration of a training iteration so far; ``valid``: the longest
validation pass measured so far (a resumed run starts from the mean of its earlier passes,
the only figure a checkpoint keeps; before any pass: the mean training forward pass per
validation window, a slight overestimate, since an evaluation window is a forward pass of
the same size without dropout or caches for the backward pass; a whole training step per
window where the forward pass is not timed apart, under data-parallel training); ``test``:
``valid`` scaled by the ratio of test to validation windows; ``margin``: the larger of two
steps and 1 % of the budget (checkpoints, plots, timing noise). On a stop mid-epoch the
epoch ends there (validation, schedule, checkpoints, as at a normal epoch end); right after
an epoch end it ends at once. Then :func:`train` evaluates the best checkpoint on the test
split and logs how the budget was spent. Every metrics.jsonl record carries ``elapsed``
(seconds since the run started).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from npgated import allocator, backend
from npgated.data import ptb
from npgated.data.batching import TBPTTBatcher
from npgated.data.corpus import DataError, Vocabulary, load_corpus
from npgated.models.rnnlm import build_model
from npgated.optim import make_optimizer
from npgated.optim.asgd import nonmono_trigger
from npgated.optim.clip import clip_grads, global_norm
from npgated.training.checkpoint import atomic_write, load_checkpoint, restore, save_checkpoint
from npgated.training.config import TrainConfig
from npgated.training.evaluate import eval_perplexity, eval_window_count
from npgated.training.plotting import plot_perplexity
from npgated.training.schedule import make_schedule

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became non-finite; nothing was updated or saved."""


@dataclass
class Progress:
    """Where a run is; saved in checkpoints so that a resumed run continues exactly."""

    epoch: int = 1  # 1-based epoch in progress
    iteration: int = 0  # iterations done in this epoch
    total_iterations: int = 0
    lr: float = 0.0
    best_val_ppl: float | None = None
    last_loss: float | None = None
    interval_loss: float = 0.0  # sum of losses since the last log line
    interval_count: int = 0
    schedule: dict = field(default_factory=dict)
    batcher: dict = field(default_factory=dict)
    val_history: list = field(default_factory=list)  # validation perplexities, by epoch
    elapsed: float = 0.0  # seconds since the run started (all sessions of a resumed run)
    valid_seconds: float = 0.0  # spent in validation passes
    valid_passes: int = 0
    budget_stop: bool = False  # training ended on the time budget


@dataclass
class TrainResult:
    run_dir: Path
    best_val_ppl: float | None
    test_ppl: float | None
    progress: Progress
    interrupted: int | None = None  # the signal number that stopped the run, if any


class RunClock:
    """The run's elapsed time and, under a time budget, when training must stop.

    See the module docstring for the rule. ``clock`` is injectable (tests pass a simulated
    one); it must return seconds, as ``time.monotonic`` does.
    """

    def __init__(self, budget_minutes: float | None = None, clock=time.monotonic):
        self.clock = clock
        self.total = None if budget_minutes is None else 60.0 * float(budget_minutes)
        self._start = clock()
        self.step_seconds = 0.0  # mean duration of one training iteration (this session)
        self._steps = 0
        self.forward_seconds = None  # mean duration of its forward pass, when timed apart
        self._forwards = 0
        self.valid_seconds = None  # the longest validation pass measured (resume: the mean)
        self.val_windows = 0  # windows of one validation pass
        self.test_windows = 0  # windows of the test evaluation

    def resume(self, progress: Progress) -> None:
        """Count the time a resumed run had already spent, and its validation passes."""
        self._start -= progress.elapsed
        if progress.valid_passes:
            self.valid_seconds = progress.valid_seconds / progress.valid_passes

    def elapsed(self) -> float:
        return self.clock() - self._start

    def record_step(self, seconds: float, forward: float | None = None) -> None:
        self._steps += 1
        self.step_seconds += (seconds - self.step_seconds) / self._steps
        if forward is not None:
            self._forwards += 1
            self.forward_seconds = (self.forward_seconds or 0.0) + (
                forward - (self.forward_seconds or 0.0)
            ) / self._forwards

    def record_valid(self, seconds: float) -> None:
        self.valid_seconds = max(self.valid_seconds or 0.0, seconds)

    def estimates(self) -> tuple[float, float]:
        """(valid, test): the expected seconds of one validation pass and of the test run."""
        if self.valid_seconds is not None:
            valid = self.valid_seconds
            per_window = valid / max(self.val_windows, 1)
        else:  # not measured yet: a training forward pass per window (else a whole step)
            per_window = self.step_seconds if self.forward_seconds is None else self.forward_seconds
            valid = per_window * self.val_windows
        return valid, per_window * self.test_windows

    def reserve(self) -> float:
        """valid + test + margin: the time kept for the evaluations still to come."""
        valid, test = self.estimates()
        return valid + test + max(2.0 * self.step_seconds, 0.01 * (self.total or 0.0))

    def must_stop(self) -> bool:
        """Under a budget: would one more step leave too little for the evaluations?"""
        if self.total is None:
            return False
        return self.elapsed() + self.step_seconds + self.reserve() > self.total

    def fraction(self) -> float:
        """The share of the budget's training time used: elapsed / (budget - reserve)."""
        available = self.total - self.reserve()
        return 1.0 if available <= 0 else self.elapsed() / available


class _StopRequests:
    """Turn SIGINT / SIGTERM into a flag checked between iterations (never mid-update)."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def _handler(self, signum, frame):
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        return False


class Run:
    """The run directory: config.json, metrics.jsonl, last.npz, best.npz, perplexity.png."""

    def __init__(self, run_dir, config: TrainConfig):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        atomic_write(self.dir / "config.json", lambda f: f.write(config.to_json().encode() + b"\n"))
        self.metrics_path = self.dir / "metrics.jsonl"

    @property
    def last(self) -> Path:
        return self.dir / "last.npz"

    @property
    def best(self) -> Path:
        return self.dir / "best.npz"

    def log(self, record: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def history(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line]

    def plot(self) -> None:
        plot_perplexity(self.history(), self.dir / "perplexity.png")


def save_state(
    path,
    model,
    optimizer,
    progress: Progress,
    config: TrainConfig,
    vocab_checksum: str | None,
    averaged: bool = False,
    vocab: dict | None = None,
) -> None:
    """Write a resumable checkpoint (parameters, optimizer, state, generators, position).

    ``averaged``: the parameters are ASGD's averages swapped in (``best.npz``); the file
    then records ``"averaged": true`` and stores no optimizer state (not resumable).
    ``vocab``: the vocabulary (``Vocabulary.to_dict()``), kept in the metadata so that
    eval, generate and resume need no data to rebuild it.
    """
    meta = dict(
        progress=progress.__dict__,
        train_config=config.to_dict(),
        vocab_checksum=vocab_checksum,
        rng_states=model.rng_states(),
    )
    if vocab is not None:
        meta["vocab"] = vocab
    if averaged:
        meta["averaged"] = True
        optimizer = None
    dp = getattr(model, "data_parallel", None)  # under MPI: the N-row state, rank 0 writes
    extra = model.recurrent_state() if dp is None else dp.gather_recurrent_state(model)
    if dp is not None and not dp.is_writer:
        return
    save_checkpoint(path, model, optimizer, meta=meta, extra=extra)


def _averaged(optimizer, model):
    """ASGD's averaged weights swapped into ``model`` (a no-op for other optimizers)."""
    if getattr(optimizer, "has_average", False):
        return optimizer.averaged(model.params)
    return contextlib.nullcontext(False)


def fit(
    model,
    optimizer,
    schedule,
    batcher,
    valid_corpus,
    config: TrainConfig,
    run: Run,
    progress: Progress,
    vocab_checksum=None,
    stop_after: int | None = None,
    run_clock: RunClock | None = None,
    vocab: dict | None = None,
):
    """Train until ``config.epochs`` are done; returns the signal number if interrupted.

    ``stop_after`` behaves like a Ctrl-C after that many iterations in total (tests).
    ``run_clock`` measures the run (and applies ``config.time_budget``); by default one
    started now, continuing ``progress.elapsed``. A stop on the budget returns None with
    ``progress.budget_stop`` set. ``vocab`` goes into every checkpoint's metadata.
    Character-level runs (``config.level == "char"``) log bits per character,
    ``bpc = loss / ln 2``, beside the perplexity.
    Before the first step it calls :func:`npgated.allocator.keep_freed_memory`, so that the
    large arrays of each step reuse the memory the previous step freed (no page faults).
    """
    allocator.keep_freed_memory()
    N, T = config.batch_size, config.time_size
    per_epoch = min(len(batcher), config.max_iters or len(batcher))
    if run_clock is None:
        run_clock = RunClock(config.time_budget)
        run_clock.resume(progress)
    if not run_clock.val_windows:
        run_clock.val_windows = eval_window_count(valid_corpus, N, T)
    by_time = getattr(schedule, "by_time", False) and run_clock.total is not None
    with _StopRequests() as stop:
        dp = getattr(model, "data_parallel", None)  # npgated.distributed under mpiexec
        if dp is not None:
            stop = dp.agreed_stop(stop)  # act only on stop requests every rank knows of
        while progress.epoch <= config.epochs and not progress.budget_stop:
            model.train()
            optimizer.lr = progress.lr
            bar = tqdm(
                total=per_epoch,
                initial=progress.iteration,
                disable=not config.progress,
                desc=f"epoch {progress.epoch}/{config.epochs}",
                unit="it",
                leave=False,
            )
            tic, tokens = time.perf_counter(), 0
            while progress.iteration < per_epoch:
                if (
                    stop.signum is None
                    and stop_after is not None
                    and progress.total_iterations >= stop_after
                ):
                    stop.signum = signal.SIGINT
                if stop.signum is not None:
                    bar.close()
                    progress.batcher = batcher.state_dict()
                    progress.elapsed = run_clock.elapsed()
                    save_state(
                        run.last, model, optimizer, progress, config, vocab_checksum, vocab=vocab
                    )
                    logger.warning("interrupted: resumable checkpoint written to %s", run.last)
                    return stop.signum
                budget_stop, fraction = _budget_check(run_clock, by_time, dp)
                if budget_stop:
                    progress.budget_stop = True
                    valid, test = run_clock.estimates()
                    logger.info(
                        "time budget: stopping training at %.0f s of %.0f s (kept "
                        "%.0f s for validation and %.0f s for the test evaluation)",
                        run_clock.elapsed(),
                        run_clock.total,
                        valid,
                        test,
                    )
                    break
                if by_time:
                    progress.lr = optimizer.lr = schedule.lr_at(fraction, config.lr)
                step_tic = run_clock.clock()
                xs, ts = batcher.next_batch()
                forward_seconds = None  # timed apart for the budget's estimates
                if dp is not None:  # this rank's rows, one Allreduce, clip on the global norm
                    loss, norm = dp.gradients(model, xs, ts, config.max_grad_norm)
                else:
                    model.zero_grads()
                    loss = float(model.forward(xs, ts))
                    forward_seconds = run_clock.clock() - step_tic
                    model.backward()
                    if config.max_grad_norm > 0:
                        norm = clip_grads(model.grads, config.max_grad_norm)
                    else:
                        norm = global_norm(model.grads)
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    bar.close()
                    raise TrainingDiverged(
                        f"non-finite {'loss' if not math.isfinite(loss) else 'gradient norm'} "
                        f"at epoch {progress.epoch}, iteration {progress.iteration + 1} "
                        f"(loss {loss}, gradient norm {norm}); last finite loss "
                        f"{progress.last_loss}. Nothing was updated; the last good checkpoint "
                        f"is {run.last if run.last.exists() else 'not written yet'}. "
                        "Try a smaller --lr or a smaller --max-grad-norm."
                    )
                optimizer.update(model.params, model.grads)
                run_clock.record_step(run_clock.clock() - step_tic, forward_seconds)

                progress.iteration += 1
                progress.total_iterations += 1
                progress.last_loss = loss
                progress.interval_loss += loss
                progress.interval_count += 1
                tokens += N * T
                bar.update(1)
                if config.progress:
                    elapsed = time.perf_counter() - tic
                    bar.set_postfix(
                        ppl=f"{math.exp(loss):.1f}",
                        lr=f"{progress.lr:.3g}",
                        tok_s=f"{tokens / max(elapsed, 1e-9):.0f}",
                    )
                if progress.iteration % config.log_interval == 0 or progress.iteration == per_epoch:
                    progress.elapsed = run_clock.elapsed()
                    _log_interval(
                        run, progress, per_epoch, tic, tokens, N * T, bpc=config.level == "char"
                    )
                if (
                    config.checkpoint_interval
                    and progress.total_iterations % config.checkpoint_interval == 0
                ):
                    progress.batcher = batcher.state_dict()
                    progress.elapsed = run_clock.elapsed()
                    save_state(
                        run.last, model, optimizer, progress, config, vocab_checksum, vocab=vocab
                    )
            bar.close()
            if progress.budget_stop and progress.iteration == 0:
                break  # the budget ran out right after an epoch end: nothing new to validate

            # -- end of epoch: validate, schedule, checkpoint, plot --------------------
            model.reset_state()
            val_ppl, averaged = None, False
            if valid_corpus is not None:
                with _averaged(optimizer, model) as averaged:
                    val_tic = run_clock.clock()
                    val_ppl = eval_perplexity(model, valid_corpus, N, T)
                    val_seconds = run_clock.clock() - val_tic
                run_clock.record_valid(val_seconds)
                progress.valid_seconds += val_seconds
                progress.valid_passes += 1
            if dp is not None:
                dp.check_params(model, progress.epoch)  # identical on every rank, or stop
            improved = val_ppl is not None and (
                progress.best_val_ppl is None or val_ppl < progress.best_val_ppl
            )
            progress.elapsed = run_clock.elapsed()
            record = dict(
                kind="valid",
                epoch=progress.epoch,
                ppl=val_ppl,
                lr=progress.lr,
                improved=improved,
                averaged=bool(averaged),
                elapsed=progress.elapsed,
            )
            bpc = _bpc(config, val_ppl)
            if bpc is not None:
                record["bpc"] = bpc
            run.log(record)
            logger.info(
                "| end of epoch %d | valid ppl %.2f%s | lr %.4g%s%s",
                progress.epoch,
                val_ppl if val_ppl is not None else float("nan"),
                "" if bpc is None else f" | bpc {bpc:.3f}",
                progress.lr,
                " | averaged" if averaged else "",
                " | best" if improved else "",
            )
            if improved:
                progress.best_val_ppl = val_ppl
            if _asgd_switch(optimizer, config, progress.val_history, val_ppl):
                optimizer.start_averaging()
                run.log(dict(kind="asgd", epoch=progress.epoch, elapsed=progress.elapsed))
                logger.info(
                    "| end of epoch %d | NT-ASGD: validation has not improved for "
                    "%d epochs: averaging from now on",
                    progress.epoch,
                    config.asgd_nonmono,
                )
            if val_ppl is not None:
                progress.val_history.append(val_ppl)
            progress.lr = schedule.step(progress.epoch, progress.lr, val_ppl)
            progress.schedule = schedule.state_dict()
            progress.epoch += 1
            progress.iteration = 0
            progress.batcher = batcher.state_dict()
            if improved:
                with _averaged(optimizer, model) as swapped:
                    save_state(
                        run.best,
                        model,
                        optimizer,
                        progress,
                        config,
                        vocab_checksum,
                        averaged=swapped,
                        vocab=vocab,
                    )
            save_state(run.last, model, optimizer, progress, config, vocab_checksum, vocab=vocab)
            run.plot()
    return None


def _budget_check(run_clock: RunClock, by_time: bool, dp) -> tuple[bool, float | None]:
    """(stop training now?, the used fraction of the budget for a by-time schedule).

    Under data-parallel training every rank must stop at the same iteration and use the
    same rate, but their clocks differ a little: one Allreduce agrees on them (a stop if
    any rank must stop, the mean fraction). Without a budget: (False, None), no work.
    """
    if run_clock.total is None:
        return False, None
    stop = run_clock.must_stop()
    fraction = run_clock.fraction() if by_time else 0.0
    if dp is not None:
        votes, fractions = dp.sum_over_ranks(float(stop), fraction)
        stop, fraction = votes > 0, fractions / dp.size
    return stop, fraction


def _asgd_switch(optimizer, config: TrainConfig, val_history, val_ppl) -> bool:
    """NT-ASGD: should averaging start after this epoch? (optimizer "asgd" only)"""
    if not hasattr(optimizer, "start_averaging") or optimizer.averaging:
        return False
    if val_ppl is None or config.asgd_nonmono == 0:
        return False
    return nonmono_trigger(val_history, val_ppl, config.asgd_nonmono)


def _log_interval(
    run: Run,
    progress: Progress,
    per_epoch: int,
    tic: float,
    tokens: int,
    tokens_per_iter: int,
    bpc: bool = False,
) -> None:
    mean = progress.interval_loss / progress.interval_count
    ms = 1000 * (time.perf_counter() - tic) * tokens_per_iter / max(tokens, 1)
    logger.info(
        "| epoch %3d | %5d/%5d batches | lr %.4g | ms/batch %7.1f | loss %5.2f | ppl %8.2f%s",
        progress.epoch,
        progress.iteration,
        per_epoch,
        progress.lr,
        ms,
        mean,
        math.exp(mean),
        f" | bpc {mean / math.log(2):.3f}" if bpc else "",
    )
    record = dict(
        kind="train",
        epoch=progress.epoch,
        iteration=progress.iteration,
        progress=progress.epoch - 1 + progress.iteration / per_epoch,
        loss=mean,
        ppl=math.exp(mean),
        lr=progress.lr,
        ms_per_batch=ms,
        elapsed=progress.elapsed,
    )
    if bpc:
        record["bpc"] = mean / math.log(2)
    run.log(record)
    progress.interval_loss, progress.interval_count = 0.0, 0


def _bpc(config: TrainConfig, ppl: float | None) -> float | None:
    """Bits per character of a character-level run: log2(perplexity) = loss / ln 2."""
    if config.level != "char" or ppl is None:
        return None
    return math.log2(ppl)


def load_corpora(config: TrainConfig, vocab: Vocabulary | None = None):
    """(train, valid, test, word_to_id, id_to_word) of ``config.corpus`` or of PTB.

    With ``config.corpus`` (:mod:`npgated.data.corpus`): read-only id arrays memory-mapped
    from the id cache, ``word_to_id`` a :class:`~npgated.data.corpus.Vocabulary` (built from
    train, or ``vocab`` when given: a run's own) and ``id_to_word`` its tokens; a part too
    short for one batch of ``config.batch_size x config.time_size`` is refused before
    anything is written. Otherwise PTB from ``config.data_dir``.
    """
    if config.corpus is not None:
        c = load_corpus(
            config.corpus,
            config.level,
            fractions=config.fractions,
            encoding=config.encoding,
            min_count=config.min_count,
            max_vocab=config.max_vocab,
            vocab=vocab,
            batch=(config.batch_size, config.time_size),
        )
        return c.train, c.valid, c.test, c.vocab, c.vocab.tokens
    train, word_to_id, id_to_word = ptb.load_data("train", config.data_dir)
    valid, _, _ = ptb.load_data("valid", config.data_dir)
    test, _, _ = ptb.load_data("test", config.data_dir)
    return train, valid, test, word_to_id, id_to_word


def train(
    config: TrainConfig,
    corpora=None,
    resume: bool = False,
    stop_after: int | None = None,
    data_parallel=None,
    clock=time.monotonic,
) -> TrainResult:
    """Build everything from ``config``, train, and evaluate the best model on the test set.

    Parameters
    ----------
    config : TrainConfig
    corpora : (train, valid, test, word_to_id), optional
        Token-id arrays and the vocabulary; default: PTB from ``config.data_dir``.
        ``valid`` / ``test`` may be None (no validation / no test evaluation).
    resume : bool
        Continue from ``<run_dir>/last.npz`` (the config must describe the same model).
    stop_after : int, optional
        Stop as if interrupted after this many iterations in total (for tests).
    data_parallel : npgated.distributed.DataParallel, optional
        Under ``mpiexec``: this rank's share of a data-parallel run (same results).
    clock : () -> float seconds
        The clock of ``config.time_budget`` and of the ``elapsed`` records (tests pass a
        simulated one).
    """
    run_clock = RunClock(config.time_budget, clock)  # the budget counts from here
    backend.use(config.backend)
    dp = data_parallel
    if dp is not None:
        dp.use_local_device()
    if corpora is None:
        train_c, valid_c, test_c, word_to_id, _ = load_corpora(config)
    else:
        train_c, valid_c, test_c, word_to_id = corpora[:4]
    vocab = Vocabulary.of(word_to_id, config.level)
    checksum = vocab.checksum
    model = build_model(
        dict(model=config.model, **config.model_kwargs(len(word_to_id))),
        dtype=np.dtype(config.dtype),
        seed=config.seed,
    )
    if dp is not None:
        dp.attach(model, config.batch_size)  # this rank's streams, dropout rows, buffer
    optimizer = make_optimizer(config.optimizer, config.lr)
    if config.optimizer == "asgd" and config.asgd_nonmono == 0:
        optimizer.start_averaging()  # averaged SGD from the first step
    schedule = _make_schedule(config)
    batcher = TBPTTBatcher(train_c, config.batch_size, config.time_size)
    if resume:  # read and checked before the run directory is touched
        last = Path(config.run_dir) / "last.npz"
        if not last.exists():
            raise FileNotFoundError(
                f"cannot resume: no checkpoint at {last}; start without --resume"
            )
        ckpt = load_checkpoint(last)
        _check_vocabulary(ckpt.meta, vocab, config, last)
    run = Run(config.run_dir, config) if dp is None else dp.run_dir(config.run_dir, config)
    progress = Progress(lr=config.lr)

    if resume:
        restore(model, ckpt, optimizer, vocab_checksum=checksum)
        progress = Progress(**ckpt.meta["progress"])
        model.set_rng_states(_rng_states_to_restore(model, ckpt.meta["rng_states"]))
        model.set_recurrent_state(
            ckpt.extra if dp is None else dp.local_recurrent_state(ckpt.extra)
        )
        batcher.load_state_dict(progress.batcher)
        if progress.schedule:
            schedule.load_state_dict(progress.schedule)
        run_clock.resume(progress)
        progress.budget_stop = False  # decided afresh under this session's --time-budget
        logger.info(
            "resumed from %s at epoch %d, iteration %d",
            run.last,
            progress.epoch,
            progress.iteration,
        )
    elif dp is None or dp.is_writer:
        run.metrics_path.write_text("")
    if dp is not None:
        dp.check_start(config, model, train_c, checksum, progress)
        config = config if dp.is_writer else config.replace(progress=False)  # one bar

    logger.info("%r", model)
    run_clock.test_windows = eval_window_count(test_c, config.batch_size, config.time_size)
    interrupted = fit(
        model,
        optimizer,
        schedule,
        batcher,
        valid_c,
        config,
        run,
        progress,
        vocab_checksum=checksum,
        stop_after=stop_after,
        run_clock=run_clock,
        vocab=vocab.to_dict(),
    )
    test_ppl = None
    if interrupted is None and test_c is not None:
        if dp is not None:
            dp.barrier()  # rank 0 has written the checkpoints the others read now
        best = run.best if run.best.exists() else run.last
        test_tic = run_clock.clock()
        restore(model, load_checkpoint(best), vocab_checksum=checksum)
        # last.npz holds the last iterate: with ASGD's average, evaluate the average
        with _averaged(optimizer, model) if best == run.last else contextlib.nullcontext():
            test_ppl = eval_perplexity(model, test_c, config.batch_size, config.time_size)
        test_seconds = run_clock.clock() - test_tic
        progress.elapsed = run_clock.elapsed()
        record = dict(kind="test", ppl=test_ppl, checkpoint=best.name, elapsed=progress.elapsed)
        bpc = _bpc(config, test_ppl)
        if bpc is not None:
            record["bpc"] = bpc
        run.log(record)
        logger.info(
            "| end of training | test ppl %.2f%s (%s)",
            test_ppl,
            "" if bpc is None else f" | bpc {bpc:.3f}",
            best.name,
        )
        if run_clock.total is not None:
            _log_budget(run, run_clock, progress, test_seconds)
    return TrainResult(run.dir, progress.best_val_ppl, test_ppl, progress, interrupted)


def _check_vocabulary(meta: dict, vocab: Vocabulary, config: TrainConfig, path) -> None:
    """Refuse to resume on data whose vocabulary is not the checkpoint's, saying how."""
    if meta.get("vocab_checksum") in (None, vocab.checksum):
        return
    stored = meta.get("vocab")
    what = (
        Vocabulary.from_dict(stored).difference(vocab)
        if stored
        else f"checksum {meta['vocab_checksum'][:12]} vs {vocab.checksum[:12]}"
    )
    data = config.corpus if config.corpus is not None else "PTB"
    raise DataError(
        f"cannot resume {path}: it was trained with another vocabulary than {data} gives now "
        f"({what}); resume with the corpus and the --level, --min-count, --max-vocab, "
        "--encoding and --fractions it was trained with (see config.json in the run "
        "directory), or start a new --run-dir"
    )


def _rng_states_to_restore(model, saved: dict) -> dict:
    """The saved generator states, plus the current one of each layer that has a generator
    but none saved and never draws (all its ratios 0): a checkpoint from before that layer
    had a generator (recurrent and embedding layers got theirs with their dropout options).
    A layer that draws still needs its saved state (``set_rng_states`` says which)."""
    states = dict(saved)
    ratios = ("dropout_ratio", "recurrent_dropout", "weight_drop", "embedding_dropout")
    for name, layer in model.layers.items():
        if (
            hasattr(layer, "rng")
            and name not in states
            and not any(getattr(layer, r, 0.0) for r in ratios)
        ):
            states[name] = layer.rng.bit_generator.state
    return states


def _log_budget(run: Run, run_clock: RunClock, progress: Progress, test_seconds: float) -> None:
    """How the time budget was spent: one log line and one metrics record."""
    spent = dict(
        budget=run_clock.total,
        elapsed=progress.elapsed,
        valid=progress.valid_seconds,
        valid_passes=progress.valid_passes,
        test=test_seconds,
        stopped_on_budget=progress.budget_stop,
        left=run_clock.total - progress.elapsed,
    )
    spent["train_and_other"] = progress.elapsed - progress.valid_seconds - test_seconds
    run.log(dict(kind="budget", **spent))
    logger.info(
        "| time budget %.0f s | used %.0f s: training and checkpoints %.0f s, "
        "%d validation passes %.0f s, test %.0f s | %.0f s left%s",
        run_clock.total,
        progress.elapsed,
        spent["train_and_other"],
        progress.valid_passes,
        progress.valid_seconds,
        test_seconds,
        spent["left"],
        " | training stopped on the budget" if progress.budget_stop else "",
    )


def _make_schedule(config: TrainConfig):
    if config.schedule == "plateau":
        return make_schedule("plateau", factor=config.lr_factor)
    if config.schedule == "step":
        return make_schedule("step", start_epoch=config.lr_decay_start, factor=config.lr_factor)
    if config.schedule == "budget-linear":
        return make_schedule("budget-linear")
    return make_schedule("constant")
