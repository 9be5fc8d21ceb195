"""The optimizer protocol: ``update(params, grads)`` in place, plus a checkpointable state.

Every npgated optimizer keeps the book's surface (``optimizer.update(params, grads)`` with
the two parallel lists a model exposes) and adds what resuming a run needs:

* ``lr`` is a plain, mutable attribute (learning-rate schedules assign to it);
* per-parameter state ("slots", e.g. Adam's ``m`` and ``v``) is created lazily on the first
  update as lists parallel to ``params``, with the dtype and on the device of each
  parameter, and updated in place afterwards (no per-step reallocation of state);
* ``state_dict()`` / ``load_state_dict()`` expose ``{"name", "hyper", "t", "slots"}`` so a
  checkpoint can store each slot array as ``optim/<param name>/<slot>``.

The parameter list must not change between calls (same count, shapes and dtypes); a model
passes its *unique* parameters, so a tied matrix appears once and is stepped once.
"""

from __future__ import annotations

import math

from npgated import backend, flat, parallel

WHOLE_BLOCK = 1 << 20  # elements per call of _step on whole buffers (its temporaries: 4 MB)


def check_lr(lr) -> float:
    """A learning rate: a finite number > 0."""
    return check_range(lr, "lr", low=0.0, low_open=True)


def check_range(value, name: str, low=None, high=None, low_open=False, high_open=False) -> float:
    """``value`` as a float inside the given interval, else ValueError stating it."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ValueError(f"{name} must be in {left}{lo}, {hi}{right}, got {value!r}")
    return value


class Optimizer:
    """Base class: parameter bookkeeping, lazily created slots, ``state_dict``.

    Subclasses set ``name`` (the registry key), ``slot_names`` and ``hyper_names``, store
    their hyperparameters as attributes, and implement :meth:`_step`, which updates one
    parameter in place from its gradient and its slot arrays.
    """

    name: str = "optimizer"
    slot_names: tuple[str, ...] = ()
    hyper_names: tuple[str, ...] = ("lr",)

    def __init__(self, lr: float):
        self.lr = lr
        self.t = 0  # number of updates done so far
        self.slots: dict[str, list] = {s: [] for s in self.slot_names}
        self._signature = None  # [(shape, dtype), ...] of the params, fixed on first update
        self._pending = None  # slots loaded before the params were known
        self._whole_key = self._whole_value = None  # see _whole

    # -- hyperparameters --------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The learning rate (mutable; validated to be a finite number > 0)."""
        return self._lr

    @lr.setter
    def lr(self, value) -> None:
        self._lr = check_lr(value)

    def hyper(self) -> dict:
        """The hyperparameters as ``{name: float}`` (constructor keyword arguments)."""
        return {k: float(getattr(self, k)) for k in self.hyper_names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.hyper().items())
        return f"{type(self).__name__}({args})"

    # -- the update ---------------------------------------------------------------------
    def update(self, params, grads) -> None:
        """Update every array in ``params`` in place from ``grads`` (parallel lists)."""
        params, grads = list(params), list(grads)
        self._bind(params, grads)
        self.t += 1
        self._apply(self._step, params, grads)

    def _apply(self, fn, params, grads) -> None:
        """``fn(p, g, *slots)`` over every parameter: element-wise work.

        When the parameters, the gradients and each slot are consecutive pieces of one flat
        buffer each (a model's flat buffers, :mod:`npgated.flat`; the slots are then made
        so), ``fn`` runs on the whole buffers, in consecutive blocks of at most
        :data:`WHOLE_BLOCK` elements (shared over npgated.parallel's threads); else once per
        parameter (large ones split over the threads). The work is element-wise, so the
        numbers are the same either way.
        """
        whole = self._whole(params, grads)
        if whole is not None:
            parallel.each(fn, *whole, block=WHOLE_BLOCK)
            return
        slots = [self.slots[s] for s in self.slot_names]
        for i, (p, g) in enumerate(zip(params, grads)):
            parallel.each(fn, p, g, *(slot[i] for slot in slots))

    def _whole(self, params, grads):
        """``(params, grads, *slots)`` as one flat array each, or None (see :meth:`_apply`).

        Found from the arrays' memory (:func:`npgated.flat.covering`), and remembered for
        as long as the same array objects come in.
        """
        arrays = [*params, *grads, *(a for s in self.slot_names for a in self.slots[s])]
        key = self._whole_key
        if key is not None and len(key) == len(arrays) and all(a is b for a, b in zip(key, arrays)):
            return self._whole_value
        P = len(params)
        lists = [params, grads] + [self.slots[s] for s in self.slot_names]
        whole = [flat.covering(lst) for lst in lists]
        if any(w is None for w in whole) or any(len(x) != P for x in lists):
            whole = None
        self._whole_key, self._whole_value = arrays, whole
        return whole

    def _step(self, p, g, *slots) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _bind(self, params, grads) -> None:
        """Check the lists; create (or adopt loaded) slots on the first call."""
        if len(params) != len(grads):
            raise ValueError(
                f"{type(self).__name__}.update: got {len(params)} params but "
                f"{len(grads)} grads; they must be parallel lists"
            )
        for k, (p, g) in enumerate(zip(params, grads)):
            if tuple(g.shape) != tuple(p.shape) or g.dtype != p.dtype:
                raise ValueError(
                    f"{type(self).__name__}.update: grads[{k}] has shape {tuple(g.shape)} "
                    f"and dtype {g.dtype}, but params[{k}] has shape {tuple(p.shape)} and "
                    f"dtype {p.dtype}"
                )
        signature = [(tuple(p.shape), p.dtype) for p in params]
        if self._signature is None:
            if self._pending is not None:
                self._adopt(self._pending, params)
                self._pending = None
            else:
                for s in self.slot_names:  # one flat buffer each when params tile one
                    self.slots[s] = flat.zeros_like_all(params)
            self._signature = signature
        elif signature != self._signature:
            raise ValueError(
                f"{type(self).__name__}.update: the parameters changed since the first "
                f"update ({_describe(self._signature)} before, {_describe(signature)} now); "
                "pass the same list every step, or make a new optimizer"
            )

    def _adopt(self, slots: dict, params) -> None:
        """Move loaded slot arrays next to ``params`` after checking counts and shapes."""
        for s in self.slot_names:
            arrays = slots[s]
            if len(arrays) != len(params):
                raise ValueError(
                    f"optimizer state has {len(arrays)} arrays for slot {s!r}, but there are "
                    f"{len(params)} parameters"
                )
            for k, (a, p) in enumerate(zip(arrays, params)):
                if tuple(a.shape) != tuple(p.shape):
                    raise ValueError(
                        f"optimizer state slot {s!r}[{k}] has shape {tuple(a.shape)}, but "
                        f"parameter {k} has shape {tuple(p.shape)}"
                    )
        adopted = {}
        for s in self.slot_names:  # one flat buffer each when params tile one
            adopted[s] = flat.zeros_like_all(params)
            for v, a, p in zip(adopted[s], slots[s], params):
                v[...] = backend.to_device(a, like=p, dtype=p.dtype)
        self.slots = adopted

    # -- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"name", "hyper", "t", "slots": {slot: [array per param]}}`` (slot copies).

        Before the first update the slot lists are empty. Arrays stay on their device;
        checkpoint code moves them to the host.
        """
        if self._pending is not None:
            slots = {s: [a.copy() for a in self._pending[s]] for s in self.slot_names}
        else:
            slots = {s: [a.copy() for a in self.slots[s]] for s in self.slot_names}
        return {"name": self.name, "hyper": self.hyper(), "t": int(self.t), "slots": slots}

    def load_state_dict(self, state: dict, params=None) -> None:
        """Restore hyperparameters, step count and slots from :meth:`state_dict` output.

        Parameters
        ----------
        state : dict
            ``{"name", "hyper", "t", "slots"}``; slot arrays may be host or device arrays.
        params : list of arrays, optional
            The parameters the state belongs to. Slot arrays are checked against them and
            moved to their device and dtype (``backend.to_device(a, like=param)``). Without
            it they are checked against the current slots if any exist, else kept until
            the first :meth:`update`, which checks them against its ``params``.

        Raises
        ------
        ValueError
            Wrong optimizer name, unknown or missing hyperparameters or slots, slot lists
            of different lengths, or counts/shapes that do not match the parameters.
        """
        cls = type(self).__name__
        if state.get("name") != self.name:
            raise ValueError(
                f"optimizer state is for {state.get('name')!r}, but this is {cls} ({self.name!r})"
            )
        hyper = dict(state.get("hyper", {}))
        if set(hyper) != set(self.hyper_names):
            raise ValueError(
                f"{cls} state hyperparameters {sorted(hyper)} differ from the expected "
                f"{sorted(self.hyper_names)}"
            )
        slots = state.get("slots", {})
        t = state.get("t", 0)
        if t == 0 and not any(len(v) for v in slots.values()):
            # Saved before the first update: no slot arrays exist yet (a checkpoint then
            # stores none, so the slot names may be missing too).
            slots = {s: [] for s in self.slot_names}
        if set(slots) != set(self.slot_names):
            raise ValueError(
                f"{cls} state slots {sorted(slots)} differ from the expected "
                f"{sorted(self.slot_names)}"
            )
        if isinstance(t, bool) or int(t) != t or t < 0:
            raise ValueError(f"{cls} state step count t must be an integer >= 0, got {t!r}")
        counts = {len(slots[s]) for s in self.slot_names}
        if len(counts) > 1:
            raise ValueError(f"{cls} state slots have different lengths: {sorted(counts)}")
        slots = {s: list(slots[s]) for s in self.slot_names}

        # Validate everything before changing anything.
        fresh = type(self)(**hyper)  # runs the constructor's range checks
        empty = not self.slot_names or not slots[self.slot_names[0]]
        if empty and self.slot_names and t > 0:
            raise ValueError(f"{cls} state has t={t} but no slot arrays")
        if empty:  # saved before the first update: start afresh at the next update
            self.slots = {s: [] for s in self.slot_names}
            self._signature = None
            self._pending = None
        elif params is not None:
            params = list(params)
            self._adopt(slots, params)  # checks counts and shapes, moves to the device
            self._signature = [(tuple(p.shape), p.dtype) for p in params]
            self._pending = None
        elif self._signature is not None:  # check against the slots it already has
            self._adopt(slots, self.slots[self.slot_names[0]])
        else:  # checked and moved at the first update, which knows the params
            self._pending = slots
        for k in self.hyper_names:
            setattr(self, k, getattr(fresh, k))
        self.t = int(t)


def _describe(signature) -> str:
    if len(signature) <= 4:
        return ", ".join(f"{s}:{d}" for s, d in signature) or "no params"
    return f"{len(signature)} params"
