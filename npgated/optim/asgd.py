"""Averaged SGD (Polyak & Juditsky 1992, "Acceleration of Stochastic Approximation by
Averaging"), the optimizer of NT-ASGD (Merity, Keskar & Socher 2017, "Regularizing and
Optimizing LSTM Language Models").

The steps are plain SGD; once averaging is switched on, the optimizer also keeps the running
mean ``ax`` of the iterates produced since the switch, and the model is **evaluated** with
that mean while training continues from the last iterate. Averaging the tail of an SGD run
cancels much of the noise of the individual steps at a constant learning rate.

When to switch is the caller's decision (:meth:`ASGD.start_averaging`). NT-ASGD switches
when the validation perplexity has not improved for ``n`` epochs ("non-monotonically
triggered"); the training loop implements that rule (``TrainConfig.asgd_nonmono``), see
:func:`nonmono_trigger`.
"""

from __future__ import annotations

from contextlib import contextmanager

from npgated.optim.base import Optimizer


class ASGD(Optimizer):
    """SGD steps plus the running mean of the iterates since averaging was switched on.

    Parameters
    ----------
    lr : float
        Learning rate, > 0 (Merity et al. use 30 with clipping at norm 0.25).

    Attributes
    ----------
    averaging : bool
        Whether the mean is being kept (False until :meth:`start_averaging`).
    k : int
        Number of iterates averaged so far (0 right after the switch).

    Notes
    -----
    For each parameter ``p`` with gradient ``g`` and average ``ax`` (slot, same shape)::

        S1: p -= lr * g
        A1: k += 1;  ax += (p - ax) / k          (only while averaging; once per update)

    so after k updates since the switch, with iterates x_1 .. x_k (the parameters after
    each of those updates)::

        A2: ax = (x_1 + ... + x_k) / k

    A1 is the incremental form of A2 (no sum of k arrays is kept, so no growing value
    loses precision). ``k`` and ``averaging`` are part of :meth:`state_dict`, and ``ax``
    is a slot (``optim/<param>/ax`` in checkpoints), so a resumed run continues the same
    average.
    """

    name = "asgd"
    slot_names = ("ax",)
    hyper_names = ("lr",)

    def __init__(self, lr: float = 0.01):
        super().__init__(lr)
        self.averaging = False
        self.k = 0

    def start_averaging(self) -> None:
        """Switch averaging on: the mean starts afresh with the next update's iterate."""
        self.averaging = True
        self.k = 0

    @property
    def has_average(self) -> bool:
        """True when at least one iterate has been averaged (``ax`` is meaningful)."""
        return self.averaging and self.k > 0

    def update(self, params, grads) -> None:
        """An SGD step on every parameter (S1), then the average of the new iterate (A1)."""
        params, grads = list(params), list(grads)
        super().update(params, grads)  # S1 for every parameter
        if self.averaging:
            self.k += 1  # A1
            self._apply(self._average, params, grads)  # A1

    def _average(self, p, g, ax) -> None:
        ax += (p - ax) / self.k  # A1

    def _step(self, p, g, ax) -> None:
        p -= self.lr * g  # S1

    def swap_average(self, params) -> None:
        """Exchange the contents of ``params`` and the averages, in place and exactly.

        Called twice, it restores both bit for bit (values are copied, never recomputed).
        Does nothing while :attr:`has_average` is False.
        """
        if not self.has_average:
            return
        params = list(params)
        self._bind_check(params)
        for p, ax in zip(params, self.slots["ax"]):
            raw = p.copy()
            p[...] = ax
            ax[...] = raw

    @contextmanager
    def averaged(self, params):
        """``with optimizer.averaged(model.params): evaluate()``: the average swapped in,
        the last iterate swapped back afterwards (also on an exception)."""
        self.swap_average(params)
        try:
            yield self.has_average
        finally:
            self.swap_average(params)

    def _bind_check(self, params) -> None:
        signature = [(tuple(p.shape), p.dtype) for p in params]
        if signature != self._signature:
            raise ValueError(
                "ASGD.swap_average: the parameters differ from those the optimizer updates; "
                "pass the same list as to update()"
            )

    # -- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The base state plus ``"averaging"`` and ``"k"``."""
        state = super().state_dict()
        state.update(averaging=bool(self.averaging), k=int(self.k))
        return state

    def load_state_dict(self, state: dict, params=None) -> None:
        """Restore :meth:`state_dict` output (``averaging``/``k`` default to off/0)."""
        state = dict(state)
        averaging = state.pop("averaging", False)
        k = state.pop("k", 0)
        if not isinstance(averaging, bool):
            raise ValueError(f"ASGD state 'averaging' must be true or false, got {averaging!r}")
        if isinstance(k, bool) or int(k) != k or k < 0 or (k and not averaging):
            raise ValueError(
                f"ASGD state k must be an integer >= 0, and 0 unless averaging; got k={k!r}, "
                f"averaging={averaging!r}"
            )
        super().load_state_dict(state, params)
        self.averaging, self.k = averaging, int(k)


def nonmono_trigger(val_history, val_ppl, n: int) -> bool:
    """NT-ASGD's switch: has validation stopped improving for ``n`` epochs?

    Parameters
    ----------
    val_history : list of float
        Validation perplexities of the epochs **before** this one, oldest first.
    val_ppl : float
        This epoch's validation perplexity.
    n : int >= 1
        The non-monotone interval (Merity et al.: 5).

    Returns
    -------
    bool
        True when more than ``n`` earlier epochs exist and ``val_ppl`` is worse than the best
        of all of them except the last ``n``::

            T1: len(val_history) > n  and  val_ppl > min(val_history[:-n])

    (Merity et al.'s rule: the current result is compared with the best one from at least
    ``n`` epochs ago, so a short-lived improvement does not postpone the switch.)
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"the non-monotone interval n must be >= 1, got {n}")
    return len(val_history) > n and val_ppl > min(val_history[:-n])  # T1
