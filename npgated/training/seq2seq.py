"""Training an encoder-decoder on the book's addition or date task (chapters 7 and 8).

The loop is :func:`fit_seq2seq`; each iteration is the five steps of the book, in order::

    model.zero_grads()                          # gradients accumulate: clear them first
    loss = model.forward(xs, ts)                # mean cross-entropy of the decoder's outputs
    model.backward()                            # through the decoder, then the encoder
    norm = clip_grads(model.grads, max_norm)    # global norm over the unique gradients
    optimizer.update(model.params, model.grads)

followed by logging. With npgated's threads on (``npgated.parallel``), the first three run as
:class:`npgated.training.split_batch.SplitBatch`: the batch's rows split over the threads,
each block on its own copy of the model, the gradients summed (the same gradient).
An epoch is one pass over the training questions in a shuffled order,
in minibatches of ``batch_size`` (the last, incomplete one left out, as the book's
``Trainer`` does); the order of epoch ``e`` is a permutation drawn from its own generator,
``numpy.random.default_rng([seed, e])``, so a resumed run sees the same minibatches as an
uninterrupted one without storing any generator state. After each epoch: the test accuracy
the book's way (greedy decoding, an answer counts only if every character matches; batched
here, one question at a time in the book), one log line and a ``metrics.jsonl`` record,
``best.npz`` when the accuracy improved, ``last.npz`` (resumable) and ``accuracy.png`` in
the run directory.

Faults lose nothing, as in the language-model loop (:mod:`npgated.training.loop`): a
non-finite loss or gradient norm stops training with :class:`TrainingDiverged` *before*
the update; Ctrl-C (SIGINT) or SIGTERM finishes the current iteration, writes a resumable
``last.npz`` and returns with ``interrupted`` set.

Checkpoint metadata (besides npgated's ``config`` of the model): ``task``, ``reverse``,
``vocab_checksum`` (of the task's character vocabulary), ``train_config`` (the
:class:`~npgated.training.seq2seq_config.Seq2seqConfig`), ``progress``, ``accuracy``.
``npgated eval``, ``generate`` and ``attention`` read the task and the reversal from there.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from npgated import allocator, backend
from npgated.optim import make_optimizer
from npgated.optim.clip import clip_grads, global_norm
from npgated.training.checkpoint import load_checkpoint, restore, save_checkpoint
from npgated.training.loop import Run, TrainingDiverged, _StopRequests
from npgated.training.seq2seq_config import Seq2seqConfig
from npgated.training.split_batch import SplitBatch

logger = logging.getLogger(__name__)

__all__ = [
    "Seq2seqProgress",
    "Seq2seqResult",
    "Seq2seqRun",
    "TrainingDiverged",
    "epoch_order",
    "fit_seq2seq",
    "task_meta",
    "train_seq2seq",
]


@dataclass
class Seq2seqProgress:
    """Where a run is; saved in checkpoints so that a resumed run continues exactly."""

    epoch: int = 1  # 1-based epoch in progress
    iteration: int = 0  # iterations done in this epoch
    total_iterations: int = 0
    best_accuracy: float | None = None
    best_epoch: int | None = None
    accuracies: list = field(default_factory=list)  # test accuracy (fraction) by epoch
    last_loss: float | None = None
    interval_loss: float = 0.0  # sum of losses since the last log line
    interval_count: int = 0
    train_seconds: float = 0.0  # of the epoch in progress (all sessions)


@dataclass
class Seq2seqResult:
    run_dir: Path
    best_accuracy: float | None
    accuracies: list
    progress: Seq2seqProgress
    interrupted: int | None = None  # the signal number that stopped the run, if any


class Seq2seqRun(Run):
    """The run directory (:class:`npgated.training.loop.Run`: config.json, metrics.jsonl,
    last.npz, best.npz) with the accuracy plot, accuracy.png, in place of the perplexity's."""

    def plot(self) -> Path:
        from npgated.training.plotting import plot_accuracy  # noqa: PLC0415

        return plot_accuracy(self.history(), self.dir / "accuracy.png")


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the ``n`` training questions in ``epoch`` (1-based): a permutation drawn
    from ``default_rng([seed, epoch])``, the same whenever it is asked for (resuming)."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def task_meta(task: str, reverse: bool, data) -> dict:
    """What every seq2seq checkpoint records about its data: the task, the reversal, the
    character vocabulary in id order (and its checksum), the widths of question and answer
    and the decoder's start character, so that a run answers questions without the file."""
    from npgated.data import sequence  # noqa: PLC0415

    V = len(data.char_to_id)
    return dict(
        task=task,
        reverse=bool(reverse),
        vocabulary=[data.id_to_char[i] for i in range(V)],
        vocab_checksum=sequence.vocab_checksum(data.char_to_id),
        question_length=int(data.x_train.shape[1]),
        answer_length=int(data.t_train.shape[1]) - 1,
        start_char=data.id_to_char[int(data.t_train[0, 0])],
    )


def _save(path, model, optimizer, progress: Seq2seqProgress, config: Seq2seqConfig, meta: dict):
    info = dict(meta, progress=progress.__dict__, train_config=config.to_dict())
    save_checkpoint(path, model, optimizer, meta=info)


def fit_seq2seq(
    model,
    optimizer,
    data,
    config: Seq2seqConfig,
    run: Seq2seqRun,
    progress: Seq2seqProgress,
    meta: dict,
    stop_after: int | None = None,
    evaluate=None,
):
    """Train until ``config.epochs`` are done; returns the signal number if interrupted.

    Parameters
    ----------
    model : an encoder-decoder of :mod:`npgated.models.seq2seq`
    optimizer : npgated.optim.Optimizer
    data : npgated.data.sequence task data
        ``x_train`` (n, T_enc) and ``t_train`` (n, 1 + T_dec) integer arrays on the host
        (the questions already reversed if the run reverses them), and the test split.
    config : Seq2seqConfig
    run : Seq2seqRun
    progress : Seq2seqProgress
        Where to start (a fresh one, or the one of a resumed checkpoint); updated in place.
    meta : dict
        Metadata every checkpoint carries (task, reverse, vocab_checksum).
    stop_after : int, optional
        Behave like a Ctrl-C after that many iterations in total (tests).
    evaluate : callable(model) -> (correct, total), optional
        The end-of-epoch test accuracy; default the book's metric on ``data``'s test split.
    """
    from npgated.models.seq2seq import accuracy  # noqa: PLC0415

    allocator.keep_freed_memory()
    x_train, t_train = data.x_train, data.t_train
    N = config.batch_size
    n = len(x_train)
    per_epoch = n // N
    if per_epoch < 1:
        raise ValueError(
            f"{n} training questions are fewer than one minibatch of "
            f"--batch-size {N}; use a smaller --batch-size"
        )
    per_epoch = min(per_epoch, config.max_iters or per_epoch)
    if evaluate is None:

        def evaluate(m):
            return accuracy(m, data.x_test, data.t_test)

    step = SplitBatch(model)  # the plain step unless npgated's threads are on
    with _StopRequests() as stop:
        while progress.epoch <= config.epochs:
            model.train()
            order = epoch_order(n, config.seed, progress.epoch)
            bar = tqdm(
                total=per_epoch,
                initial=progress.iteration,
                disable=not config.progress,
                desc=f"epoch {progress.epoch}/{config.epochs}",
                unit="it",
                leave=False,
            )
            tic = time.perf_counter()
            done_before = progress.iteration  # iterations of this epoch in earlier sessions
            seconds_before = progress.train_seconds
            while progress.iteration < per_epoch:
                if (
                    stop.signum is None
                    and stop_after is not None
                    and progress.total_iterations >= stop_after
                ):
                    stop.signum = 2  # SIGINT
                if stop.signum is not None:
                    bar.close()
                    progress.train_seconds = seconds_before + time.perf_counter() - tic
                    _save(run.last, model, optimizer, progress, config, meta)
                    logger.warning("interrupted: resumable checkpoint written to %s", run.last)
                    return stop.signum
                rows = order[progress.iteration * N : (progress.iteration + 1) * N]
                xs = backend.to_device(x_train[rows])
                ts = backend.to_device(t_train[rows])
                loss = step(xs, ts)  # zero_grads, forward, backward (rows over the threads)
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

                progress.iteration += 1
                progress.total_iterations += 1
                progress.last_loss = loss
                progress.interval_loss += loss
                progress.interval_count += 1
                bar.update(1)
                if config.progress:
                    bar.set_postfix(loss=f"{loss:.3f}")
                if progress.iteration % config.log_interval == 0 or progress.iteration == per_epoch:
                    ms = 1000 * (time.perf_counter() - tic) / (progress.iteration - done_before)
                    _log_interval(run, progress, per_epoch, ms)
            bar.close()
            train_seconds = seconds_before + time.perf_counter() - tic

            # -- end of epoch: test accuracy, checkpoints, plot -----------------------------
            model.eval()
            eval_tic = time.perf_counter()
            correct, total = evaluate(model)
            eval_seconds = time.perf_counter() - eval_tic
            acc = correct / total
            improved = progress.best_accuracy is None or acc > progress.best_accuracy
            if improved:
                progress.best_accuracy, progress.best_epoch = acc, progress.epoch
            progress.accuracies.append(acc)
            run.log(
                dict(
                    kind="test",
                    epoch=progress.epoch,
                    accuracy=acc,
                    correct=int(correct),
                    total=int(total),
                    improved=improved,
                    train_seconds=train_seconds,
                    eval_seconds=eval_seconds,
                )
            )
            logger.info(
                "| end of epoch %3d | test accuracy %6.2f %% (%d of %d) | train %.1f s "
                "| eval %.2f s%s",
                progress.epoch,
                100 * acc,
                correct,
                total,
                train_seconds,
                eval_seconds,
                " | best" if improved else "",
            )
            progress.epoch += 1
            progress.iteration = 0
            progress.train_seconds = 0.0
            epoch_meta = dict(meta, accuracy=acc)
            if improved:
                _save(run.best, model, optimizer, progress, config, epoch_meta)
            _save(run.last, model, optimizer, progress, config, epoch_meta)
            run.plot()
    return None


def _log_interval(run: Seq2seqRun, progress: Seq2seqProgress, per_epoch: int, ms: float) -> None:
    mean = progress.interval_loss / progress.interval_count
    logger.info(
        "| epoch %3d | %5d/%5d batches | ms/batch %7.1f | loss %6.3f",
        progress.epoch,
        progress.iteration,
        per_epoch,
        ms,
        mean,
    )
    run.log(
        dict(
            kind="train",
            epoch=progress.epoch,
            iteration=progress.iteration,
            progress=progress.epoch - 1 + progress.iteration / per_epoch,
            loss=mean,
            ms_per_batch=ms,
        )
    )
    progress.interval_loss, progress.interval_count = 0.0, 0


def train_seq2seq(
    config: Seq2seqConfig,
    data=None,
    resume: bool = False,
    stop_after: int | None = None,
    test_limit: int | None = None,
) -> Seq2seqResult:
    """Build everything from ``config`` and train; the test accuracy after every epoch.

    Parameters
    ----------
    config : Seq2seqConfig
    data : npgated.data.sequence task data, optional
        Default: the book's file of ``config.task`` from ``config.data_dir``, the book's
        split, the questions reversed if ``config.reverse``.
    resume : bool
        Continue from ``<run_dir>/last.npz`` (the config must describe the same model).
    stop_after : int, optional
        Stop as if interrupted after this many iterations in total (for tests).
    test_limit : int, optional
        Evaluate on the first ``test_limit`` test questions only (``--dry-run``).
    """
    from npgated.data import sequence  # noqa: PLC0415
    from npgated.models.seq2seq import build_seq2seq  # noqa: PLC0415

    backend.use(config.backend)
    if data is None:
        data = sequence.load_task(config.task, config.data_dir, reverse=config.reverse)
    if test_limit is not None:
        data = data._replace(x_test=data.x_test[:test_limit], t_test=data.t_test[:test_limit])
    if len(data.x_train) < config.batch_size:  # before anything is written
        raise ValueError(
            f"{len(data.x_train)} training questions are fewer than one minibatch "
            f"of --batch-size {config.batch_size}; use a smaller --batch-size"
        )
    model = build_seq2seq(
        dict(
            model=config.model,
            vocab_size=len(data.char_to_id),
            wordvec_size=config.wordvec_size,
            hidden_size=config.hidden_size,
            cell=config.cell,
        ),
        dtype=np.dtype(config.dtype),
        seed=config.seed,
    )
    # Adam as the book's (and the paper's efficient form): eps 1e-7 added before the bias
    # correction (npgated.optim.adam, A3'/A5'); the book's curves depend on it
    book_adam = dict(eps=1e-7, eps_hat=True) if config.optimizer == "adam" else {}
    optimizer = make_optimizer(config.optimizer, config.lr, **book_adam)
    run = Seq2seqRun(config.run_dir, config)
    progress = Seq2seqProgress()
    meta = task_meta(config.task, config.reverse, data)
    if resume:
        if not run.last.exists():
            raise FileNotFoundError(
                f"cannot resume: no checkpoint at {run.last}; start without --resume"
            )
        ckpt = load_checkpoint(run.last)
        for key in ("task", "reverse"):
            if ckpt.meta.get(key) != meta[key]:
                raise ValueError(
                    f"cannot resume: {run.last} was trained with {key} "
                    f"{ckpt.meta.get(key)!r}, this command asks for {meta[key]!r}"
                )
        restore(model, ckpt, optimizer, vocab_checksum=meta["vocab_checksum"])
        progress = Seq2seqProgress(**ckpt.meta["progress"])
        logger.info(
            "resumed from %s at epoch %d, iteration %d",
            run.last,
            progress.epoch,
            progress.iteration,
        )
    else:
        run.metrics_path.write_text("")
    logger.info("%r", model)
    interrupted = fit_seq2seq(
        model, optimizer, data, config, run, progress, meta, stop_after=stop_after
    )
    return Seq2seqResult(
        run.dir, progress.best_accuracy, list(progress.accuracies), progress, interrupted
    )
