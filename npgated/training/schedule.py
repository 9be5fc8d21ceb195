"""Learning-rate schedules, applied once per epoch.

Two schedules from the literature this project reproduces:

* :class:`DivideOnPlateau`: the book's ``RnnlmTrainer`` recipe (and PyTorch's
  word_language_model): after each epoch, if the validation perplexity is not better than
  the best so far, divide the learning rate by 4.
* :class:`StepDecay`: Zaremba, Sutskever & Vinyals 2014 ("Recurrent neural network
  regularization"): keep the initial rate for a fixed number of epochs, then multiply it by
  a constant decay every epoch (small config: lr 1 for 4 epochs, then halved each epoch,
  13 epochs in all).

A third, :class:`BudgetLinear`, is not per epoch: under a time budget
(``TrainConfig.time_budget``) it decays the rate linearly with the fraction of the budget
used, so the run ends near a small rate whatever the number of epochs that fit.

Interface: after finishing epoch ``epoch`` (1-based) at rate ``lr`` with validation
perplexity ``val_ppl``, the training loop calls ``lr = schedule.step(epoch, lr, val_ppl)``
and trains the next epoch at the returned rate. ``state_dict()`` / ``load_state_dict()``
carry what a resumed run needs (the best perplexity so far).
"""

from __future__ import annotations

import math

__all__ = [
    "SCHEDULES",
    "BudgetLinear",
    "ConstantLR",
    "DivideOnPlateau",
    "Schedule",
    "StepDecay",
    "make_schedule",
]


def _check_step_args(epoch, lr) -> tuple[int, float]:
    if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 1:
        raise ValueError(f"epoch must be a 1-based integer, got {epoch!r}")
    lr = float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    return int(epoch), lr


def _check_factor(factor) -> float:
    factor = float(factor)
    if not (math.isfinite(factor) and factor > 1.0):
        raise ValueError(
            f"factor must be a finite number > 1 (the lr is divided by it), got {factor!r}"
        )
    return factor


class Schedule:
    """Base class: ``step(epoch, lr, val_ppl) -> lr`` for the next epoch, and its state."""

    name = "schedule"
    arg_names: tuple[str, ...] = ()  # constructor keyword arguments

    def step(self, epoch: int, lr: float, val_ppl: float | None = None) -> float:
        """The learning rate for epoch ``epoch + 1``, after epoch ``epoch`` ran at ``lr``."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """``{"name": ..., **hyperparameters and state}`` (JSON-able)."""
        return {"name": self.name}

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`; ValueError if it belongs to another schedule."""
        if state.get("name") != self.name:
            raise ValueError(
                f"schedule state is for {state.get('name')!r}, but this is "
                f"{type(self).__name__} ({self.name!r})"
            )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.state_dict().items() if k != "name")
        return f"{type(self).__name__}({args})"


class ConstantLR(Schedule):
    """Keep the learning rate unchanged: ``step`` returns ``lr``."""

    name = "constant"
    arg_names: tuple[str, ...] = ()

    def step(self, epoch: int, lr: float, val_ppl: float | None = None) -> float:
        _, lr = _check_step_args(epoch, lr)
        return lr


class DivideOnPlateau(Schedule):
    """Divide the rate by ``factor`` when validation perplexity stops improving (the book).

    Parameters
    ----------
    factor : float
        Divisor, > 1 (the book uses 4).

    Attributes
    ----------
    best_ppl : float or None
        The best (lowest) validation perplexity seen so far.

    Notes
    -----
    After epoch e with validation perplexity ``ppl``::

        P1: if best_ppl is None or ppl < best_ppl:  best_ppl = ppl;  lr_next = lr
        P2: else:                                   lr_next = lr / factor

    A perplexity equal to the best, or nan, counts as no improvement. The best is never
    reset, so the rate keeps dropping each epoch until the best is beaten.
    """

    name = "plateau"
    arg_names = ("factor",)

    def __init__(self, factor: float = 4.0):
        self.factor = _check_factor(factor)
        self.best_ppl: float | None = None

    def step(self, epoch: int, lr: float, val_ppl: float | None = None) -> float:
        _, lr = _check_step_args(epoch, lr)
        if val_ppl is None:
            raise ValueError(
                "DivideOnPlateau needs the validation perplexity: call step(epoch, lr, val_ppl)"
            )
        val_ppl = float(val_ppl)
        if self.best_ppl is None or val_ppl < self.best_ppl:  # P1
            self.best_ppl = val_ppl
            return lr
        return lr / self.factor  # P2

    def state_dict(self) -> dict:
        return {"name": self.name, "factor": self.factor, "best_ppl": self.best_ppl}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.factor = _check_factor(state.get("factor", self.factor))
        best = state.get("best_ppl")
        self.best_ppl = None if best is None else float(best)


class StepDecay(Schedule):
    """Keep the rate for the first epochs, then divide it by ``factor`` after every epoch.

    Parameters
    ----------
    start_epoch : int
        The last epoch (1-based) trained at the initial rate; decay begins after it.
        Zaremba et al.'s ``max_epoch``: 4 (small), 6 (medium), 14 (large).
    factor : float
        Divisor, > 1: 2 for Zaremba small; the paper gives 1.2 for medium (its TensorFlow
        code uses 1.25, a decay of 0.8) and 1.15 for large.

    Notes
    -----
    ``step(epoch, lr)`` returns ``lr / factor`` when ``epoch >= start_epoch`` and ``lr``
    otherwise, so the rate used **during** 1-based epoch e is::

        D1: lr_e = lr_1 / factor ** max(0, e - start_epoch)

    With the defaults (Zaremba small, lr_1 = 1): epochs 1-4 at 1, epoch 5 at 0.5, epoch 6 at
    0.25, ..., epoch 13 at 1 / 2**9. This is TensorFlow's PTB tutorial formula
    ``lr_decay ** max(i + 1 - max_epoch, 0)`` with 0-based i = e - 1. The schedule is
    stateless: the result depends on ``epoch`` only, so resuming is exact.
    """

    name = "step"
    arg_names = ("start_epoch", "factor")

    def __init__(self, start_epoch: int = 4, factor: float = 2.0):
        if isinstance(start_epoch, bool) or int(start_epoch) != start_epoch or start_epoch < 1:
            raise ValueError(f"start_epoch must be a 1-based integer >= 1, got {start_epoch!r}")
        self.start_epoch = int(start_epoch)
        self.factor = _check_factor(factor)

    def step(self, epoch: int, lr: float, val_ppl: float | None = None) -> float:
        epoch, lr = _check_step_args(epoch, lr)
        return lr / self.factor if epoch >= self.start_epoch else lr

    def lr_at(self, epoch: int, initial_lr: float) -> float:
        """The rate used during 1-based ``epoch`` when epoch 1 used ``initial_lr`` (D1)."""
        epoch, initial_lr = _check_step_args(epoch, initial_lr)
        return initial_lr / self.factor ** max(0, epoch - self.start_epoch)  # D1

    def state_dict(self) -> dict:
        return {"name": self.name, "start_epoch": self.start_epoch, "factor": self.factor}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        restored = StepDecay(
            state.get("start_epoch", self.start_epoch), state.get("factor", self.factor)
        )
        self.start_epoch, self.factor = restored.start_epoch, restored.factor


class BudgetLinear(Schedule):
    """Decay the rate linearly over a time budget, by the fraction of it already used.

    Parameters
    ----------
    final_ratio : float in (0, 1)
        The rate never goes below ``final_ratio * lr_1`` (it must stay > 0).

    Notes
    -----
    The training loop (with ``TrainConfig.time_budget``) calls :meth:`lr_at` before every
    iteration with the fraction ``u`` of the budget's training time used so far::

        L1: u = elapsed / (budget - reserve)     clipped to [0, 1]
        L2: lr = lr_1 * max(1 - u, final_ratio)

    where ``reserve`` is the time the loop keeps for the last validation pass, the test
    evaluation and a margin (see :mod:`npgated.training.loop`). The per-epoch :meth:`step`
    leaves the rate unchanged. The rate depends on the wall clock, so runs with this
    schedule are not bit-reproducible (all other schedules are).
    """

    name = "budget-linear"
    arg_names = ("final_ratio",)
    by_time = True  # the loop sets the rate per iteration from the elapsed fraction

    def __init__(self, final_ratio: float = 0.01):
        final_ratio = float(final_ratio)
        if not 0.0 < final_ratio < 1.0:
            raise ValueError(f"final_ratio must be in (0, 1), got {final_ratio!r}")
        self.final_ratio = final_ratio

    def step(self, epoch: int, lr: float, val_ppl: float | None = None) -> float:
        _, lr = _check_step_args(epoch, lr)
        return lr

    def lr_at(self, fraction: float, initial_lr: float) -> float:
        """The rate after ``fraction`` of the budget's training time (L1, L2)."""
        _, initial_lr = _check_step_args(1, initial_lr)
        u = min(max(float(fraction), 0.0), 1.0)  # L1
        return initial_lr * max(1.0 - u, self.final_ratio)  # L2

    def state_dict(self) -> dict:
        return {"name": self.name, "final_ratio": self.final_ratio}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.final_ratio = BudgetLinear(state.get("final_ratio", self.final_ratio)).final_ratio


SCHEDULES = {cls.name: cls for cls in (ConstantLR, DivideOnPlateau, StepDecay, BudgetLinear)}
"""Registry: name (as used in configs and on the command line) -> schedule class."""


def make_schedule(name: str, **kwargs) -> Schedule:
    """Build a schedule by registry name: ``make_schedule("step", start_epoch=4, factor=2)``.

    Raises
    ------
    ValueError
        Unknown name (the message lists the valid ones) or out-of-range arguments.
    TypeError
        An argument the schedule does not take (the message lists those it takes).
    """
    key = str(name).lower()
    if key not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid schedules are: {', '.join(SCHEDULES)}")
    cls = SCHEDULES[key]
    accepted = cls.arg_names
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"schedule {key!r} takes no argument(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(accepted) or 'no arguments'}"
        )
    return cls(**kwargs)
