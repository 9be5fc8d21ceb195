"""Long-range dependency tasks, generated in code, and a small model to train on them.

Three synthetic problems whose answer depends on inputs far back in the sequence, so a
network can only learn them if the gradient survives the trip back through time:

* the **adding problem** (Hochreiter & Schmidhuber 1997, "Long Short-Term Memory", Neural
  Computation 9(8), experiment 4; in the form of Le, Jaitly & Hinton 2015): each step holds
  a value in [0, 1) and a marker; exactly two steps are marked, one in each half of the
  sequence, and the target is the sum of the two marked values. Regression: predicting the
  mean target (1.0) gives an MSE of 1/6, the baseline to beat;
* the **first-token problem** (the "latch" of Bengio, Simard & Frasconi 1994, "Learning
  long-term dependencies with gradient descent is difficult", IEEE TNN 5(2); Hochreiter &
  Schmidhuber's experiment 2): the first token is one of ``n_classes`` class tokens and
  decides the label; the T - 1 tokens after it are random distractors (by default random
  class tokens themselves). Chance accuracy is ``1 / n_classes``;
* the **copy (recall) problem** (after Hochreiter & Schmidhuber 1997 and Arjovsky, Shah &
  Bengio 2016): ``n_copy`` symbols at the start, then distractors, then a recall token at the
  last step; the network outputs the symbols from its final state. Chance accuracy per
  symbol is ``1 / n_symbols``.

Every generator takes a seeded ``numpy.random.Generator`` (no global state) and returns host
NumPy arrays; tokens are one-hot encoded so the recurrent layer reads them directly.

The model, :class:`LastStepModel`, is ``TimeRNN | TimeLSTM | TimeGRU`` followed by an
:class:`~npgated.layers.affine.Affine` read-out of the last hidden state and a loss (the
squared error :class:`MSELoss` for the adding problem, ``SoftmaxWithLoss`` for the token
problems). :func:`train_task` trains it with Adam and global-norm clipping (Pascanu, Mikolov
& Bengio 2013) and returns a :class:`TaskResult`.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import numpy as np

from npgated import backend, checks
from npgated.layers.affine import Affine
from npgated.layers.gru import TimeGRU
from npgated.layers.loss import SoftmaxWithLoss
from npgated.layers.lstm import TimeLSTM
from npgated.layers.rnn import TimeRNN
from npgated.optim import Adam, clip_grads

__all__ = [
    "ADDING_BASELINE_MSE",
    "CELLS",
    "TASKS",
    "LastStepModel",
    "MSELoss",
    "Task",
    "TaskResult",
    "adding_problem",
    "adding_target",
    "copy_problem",
    "copy_target",
    "evaluate_task",
    "first_token_problem",
    "first_token_target",
    "get_task",
    "init_recurrent_params",
    "make_recurrent_layer",
    "one_hot",
    "orthogonal",
    "task_batch",
    "train_task",
]

ADDING_BASELINE_MSE = 1.0 / 6.0
"""MSE of always predicting the mean target 1.0 in the adding problem: Var(u1 + u2) = 2/12."""


# ---------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------
def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    return rng


def one_hot(ids, depth: int, dtype=np.float64) -> np.ndarray:
    """One-hot encode integer ids.

    Parameters
    ----------
    ids : (...) integer array with values in [0, depth)
    depth : int
        Number of distinct tokens V.
    dtype : float dtype

    Returns
    -------
    (..., depth) array
        1.0 at the id's position, 0.0 elsewhere.
    """
    ids = np.asarray(ids)
    checks.check_ids(ids, depth, "ids")
    out = np.zeros(ids.shape + (depth,), dtype=dtype)
    np.put_along_axis(out, ids[..., None], 1.0, axis=-1)
    return out


def adding_target(xs) -> np.ndarray:
    """The adding problem's answer for given inputs: the sum of the marked values.

    Parameters
    ----------
    xs : (N, T, 2) array
        Values in column 0, markers (0 or 1) in column 1.

    Returns
    -------
    ys : (N, 1) array, in xs's dtype
        ``sum_t xs[:, t, 0] * xs[:, t, 1]``: unmarked steps contribute nothing.
    """
    xs = np.asarray(xs)
    return (xs[..., 0] * xs[..., 1]).sum(axis=1, keepdims=True)


def first_token_target(xs) -> np.ndarray:
    """The first-token problem's answer: the id of the (one-hot) first token, (N, 1) int64.

    Only ``xs[:, 0]`` is read; the distractors after it cannot change the label.
    """
    return np.asarray(xs)[:, 0].argmax(axis=-1)[:, None].astype(np.int64)


def copy_target(xs, n_copy: int) -> np.ndarray:
    """The copy problem's answer: the ids of the first ``n_copy`` (one-hot) tokens, (N, n_copy).

    Only ``xs[:, :n_copy]`` is read.
    """
    return np.asarray(xs)[:, :n_copy].argmax(axis=-1).astype(np.int64)


def adding_problem(N: int, T: int, rng: np.random.Generator, dtype=np.float64):
    """A batch of the adding problem.

    Parameters
    ----------
    N : int
        Number of sequences.
    T : int
        Sequence length, >= 2.
    rng : numpy.random.Generator
    dtype : float dtype of the returned arrays

    Returns
    -------
    xs : (N, T, 2) array
        ``xs[:, t, 0]`` a value drawn uniformly from [0, 1); ``xs[:, t, 1]`` the marker,
        1.0 at exactly two steps of each sequence (one in ``[0, T // 2)``, one in
        ``[T // 2, T)``), 0.0 elsewhere.
    ys : (N, 1) array
        The sum of the two marked values, in [0, 2).
    """
    N = checks.check_positive_int(N, "N")
    T = checks.check_positive_int(T, "T")
    if T < 2:
        raise ValueError(f"the adding problem needs T >= 2 (two marked steps), got T = {T}")
    rng = _check_rng(rng)
    half = T // 2
    values = rng.random((N, T))
    first = rng.integers(0, half, size=N)
    second = rng.integers(half, T, size=N)
    markers = np.zeros((N, T))
    rows = np.arange(N)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    xs = np.stack([values, markers], axis=-1).astype(dtype)
    return xs, adding_target(xs)


def first_token_problem(
    N: int,
    T: int,
    rng: np.random.Generator,
    n_classes: int = 2,
    n_distractors: int | None = None,
    dtype=np.float64,
):
    """A batch of the first-token ("latch") problem: the first token decides the label.

    Token ids ``0 .. n_classes-1`` are the class tokens. By default (``n_distractors=None``)
    the T - 1 tokens after the first are random class tokens too: the same symbols that
    decide the label, at the wrong time, so the network must store the first one and
    then ignore its look-alikes (an input gate's job); ``V = n_classes``. With
    ``n_distractors=k`` they are drawn from k separate tokens ``n_classes .. n_classes+k-1``
    instead (an easier variant: their input weights can simply go to zero);
    ``V = n_classes + k``.

    Parameters
    ----------
    N : int
        Number of sequences.
    T : int
        Sequence length, >= 1 (the label token plus T - 1 distractors).
    rng : numpy.random.Generator
    n_classes : int
        Number of labels (chance accuracy is 1 / n_classes).
    n_distractors : int or None
        None: distractors are class tokens; else the number of separate distractor tokens.
    dtype : float dtype of ``xs``

    Returns
    -------
    xs : (N, T, V) array
        One-hot tokens: ``xs[:, 0]`` a class token, ``xs[:, 1:]`` uniform distractors.
    ys : (N, 1) int64 array
        The label: the id of the first token.
    """
    N = checks.check_positive_int(N, "N")
    T = checks.check_positive_int(T, "T")
    n_classes = checks.check_positive_int(n_classes, "n_classes")
    if n_distractors is None:
        low, V = 0, n_classes
    else:
        n_distractors = checks.check_positive_int(n_distractors, "n_distractors")
        low, V = n_classes, n_classes + n_distractors
    rng = _check_rng(rng)
    ids = np.empty((N, T), dtype=np.int64)
    ids[:, 0] = rng.integers(0, n_classes, size=N)
    ids[:, 1:] = rng.integers(low, V, size=(N, T - 1))
    xs = one_hot(ids, V, dtype=dtype)
    return xs, first_token_target(xs)


def copy_problem(
    N: int,
    T: int,
    rng: np.random.Generator,
    n_symbols: int = 4,
    n_copy: int = 3,
    n_distractors: int = 3,
    dtype=np.float64,
):
    """A batch of the copy (recall) problem: remember the first ``n_copy`` symbols.

    Token ids: ``0 .. n_symbols-1`` symbols, then ``n_distractors`` distractor ids, then one
    recall id (the last); ``V = n_symbols + n_distractors + 1``.

    Parameters
    ----------
    N : int
        Number of sequences.
    T : int
        Sequence length, >= n_copy + 1.
    rng : numpy.random.Generator
    n_symbols : int
        Alphabet of the symbols to remember (chance accuracy 1 / n_symbols).
    n_copy : int
        How many symbols to remember.
    n_distractors : int
        Number of distinct distractor tokens between the symbols and the recall token.
    dtype : float dtype of ``xs``

    Returns
    -------
    xs : (N, T, V) array
        One-hot tokens: ``n_copy`` symbols, ``T - n_copy - 1`` distractors, the recall token.
    ys : (N, n_copy) int64 array
        The symbols to output, in order.
    """
    N = checks.check_positive_int(N, "N")
    T = checks.check_positive_int(T, "T")
    n_symbols = checks.check_positive_int(n_symbols, "n_symbols")
    n_copy = checks.check_positive_int(n_copy, "n_copy")
    n_distractors = checks.check_positive_int(n_distractors, "n_distractors")
    if T < n_copy + 1:
        raise ValueError(f"the copy problem needs T >= n_copy + 1 = {n_copy + 1}, got T = {T}")
    rng = _check_rng(rng)
    V = n_symbols + n_distractors + 1
    ids = np.empty((N, T), dtype=np.int64)
    ids[:, :n_copy] = rng.integers(0, n_symbols, size=(N, n_copy))
    ids[:, n_copy:-1] = rng.integers(n_symbols, n_symbols + n_distractors, size=(N, T - n_copy - 1))
    ids[:, -1] = V - 1
    xs = one_hot(ids, V, dtype=dtype)
    return xs, copy_target(xs, n_copy)


@dataclass(frozen=True)
class Task:
    """A task to train on: a generator and how to read out and score it.

    Attributes
    ----------
    name : str
        Short name (``"adding"``, ``"first_token"``, ``"copy"``).
    kind : {"regression", "classification"}
        Decides the loss (:class:`MSELoss` or softmax cross-entropy) and the score.
    make : callable
        ``make(N, T, rng, dtype=...) -> (xs, ys)``, one of the generators above.
    input_size : int
        D, the last dimension of ``xs``.
    n_outputs : int
        Values (regression) or symbols (classification) to predict per sequence.
    n_classes : int
        Classification: choices per symbol (chance accuracy ``1 / n_classes``); 0 otherwise.
    min_length : int
        The shortest sequence the generator accepts.
    description : str
        One line for tables and plots.
    """

    name: str
    kind: str
    make: object
    input_size: int
    n_outputs: int
    n_classes: int
    min_length: int
    description: str

    @property
    def output_size(self) -> int:
        """M, the width of the read-out layer: ``n_outputs * max(n_classes, 1)``."""
        return self.n_outputs * max(self.n_classes, 1)

    @property
    def chance(self) -> float:
        """The score of a model that ignores the inputs (see :func:`evaluate_task`)."""
        return 0.0 if self.kind == "regression" else 1.0 / self.n_classes

    @property
    def metric(self) -> str:
        """What the score is: ``"R^2"`` or ``"accuracy"``."""
        return "R^2" if self.kind == "regression" else "accuracy"


TASKS = {
    "adding": Task(
        name="adding",
        kind="regression",
        make=adding_problem,
        input_size=2,
        n_outputs=1,
        n_classes=0,
        min_length=2,
        description="adding problem: the sum of the two marked values",
    ),
    "first_token": Task(
        name="first_token",
        kind="classification",
        make=functools.partial(first_token_problem, n_classes=2),
        input_size=2,
        n_outputs=1,
        n_classes=2,
        min_length=1,
        description="the first of T random bits is the label (the other bits distract)",
    ),
    "copy": Task(
        name="copy",
        kind="classification",
        make=functools.partial(copy_problem, n_symbols=4, n_copy=2, n_distractors=3),
        input_size=8,
        n_outputs=2,
        n_classes=4,
        min_length=3,
        description="recall the first 2 symbols (of 4) after distractors (3 kinds)",
    ),
}
"""The tasks by name, with the sizes the demo uses."""


def get_task(task) -> Task:
    """``task`` itself if it is a :class:`Task`, else ``TASKS[task]`` (ValueError if unknown)."""
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[task]


# ---------------------------------------------------------------------------------------
# The squared-error loss (the softmax one is npgated.layers.loss.SoftmaxWithLoss)
# ---------------------------------------------------------------------------------------
class MSELoss:
    """Mean squared error of a batch of predictions (the regression read-out).

    Notes
    -----
    For predictions y and targets t of shape (N, M), with K = N * M::

        F1  diff = y - t
        F2  L = sum(diff**2) / K

    Backward, given dout = dJ/dL: since dL/d diff = 2 * diff / K and d diff / dy = 1::

        B1  dy = dout * 2 * diff / K
    """

    def __init__(self):
        self.cache = None

    def forward(self, y, t) -> float:
        """
        Parameters
        ----------
        y : (N, M) float array
            Predictions.
        t : (N, M) float array
            Targets, in y's dtype and on y's backend.

        Returns
        -------
        float
            The loss L.
        """
        checks.check_float(y, "y", ndim=2, symbolic="(N, M)")
        checks.check_float(t, "t", dtype=y.dtype)
        checks.check_shape(t, y.shape, "t")
        diff = y - t  # F1
        self.cache = diff
        return float((diff * diff).sum()) / diff.size  # F2

    def backward(self, dout: float = 1.0):
        """
        Parameters
        ----------
        dout : float
            Upstream gradient of the scalar loss.

        Returns
        -------
        dy : (N, M) array
        """
        diff = self.cache
        if diff is None:
            raise RuntimeError("MSELoss.backward called before forward (or twice for one forward)")
        self.cache = None
        return diff * (2.0 * float(dout) / diff.size)  # B1


# ---------------------------------------------------------------------------------------
# Initialisation and the model: recurrent layer -> Affine on the last hidden state -> loss
# ---------------------------------------------------------------------------------------
CELLS = ("rnn", "lstm", "gru")
_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _check_cell(cell: str) -> str:
    key = str(cell).lower()
    if key not in _GATES:
        raise ValueError(f"unknown cell {cell!r}; choose one of: {', '.join(CELLS)}")
    return key


def orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random (n, n) orthogonal matrix (QR of a Gaussian matrix, signs fixed: Haar)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def init_recurrent_params(
    cell: str,
    D: int,
    H: int,
    rng: np.random.Generator,
    *,
    dtype=np.float64,
    wh_init: str = "gaussian",
    gate_bias="chrono",
    T_max: int | None = None,
):
    """Initial ``(Wx, Wh, b)`` of a recurrent cell, as host arrays.

    Parameters
    ----------
    cell : {"rnn", "lstm", "gru"}
    D, H : int
        Input and hidden sizes.
    rng : numpy.random.Generator
    dtype : float dtype
    wh_init : {"gaussian", "orthogonal"}
        ``"gaussian"``: every weight N(0, 1 / fan_in), the book's ``randn(H, kH) / sqrt(H)``;
        ``"orthogonal"``: each (H, H) block of ``Wh`` a random orthogonal matrix (Saxe et
        al. 2014), all singular values 1. ``Wx`` is Gaussian, variance 1 / D, either way.
    gate_bias : "chrono" or float
        The bias of the gate that keeps the old state (LSTM forget gate f, GRU update gate z,
        which keeps ``h_prev`` in npgated's ``h = z * h_prev + (1 - z) * n``); ignored for
        the RNN, which has no gate. A float sets that block to the constant (1.0 is the
        classic LSTM choice, Gers, Schmidhuber & Cummins 2000; Jozefowicz et al. 2015).
        ``"chrono"`` is the chrono initialisation (Tallec & Ollivier 2018, "Can recurrent
        neural networks warp time?"): ``b_f = log(u)``, u ~ U(1, T_max - 1) per unit, so that
        unit's memory lasts about u steps at the start, and for the LSTM ``b_i = -b_f`` so it
        writes in proportion (the GRU's ``1 - z`` does that by itself). All other biases 0.
    T_max : int, optional
        The longest dependency expected; required for ``gate_bias="chrono"``.

    Returns
    -------
    Wx : (D, kH) array
    Wh : (H, kH) array
    b : (kH,) array
        k = 1 (RNN), 4 (LSTM, blocks i, f, g, o), 3 (GRU, blocks r, z, n,
        ``reset_after=False`` layout).
    """
    cell = _check_cell(cell)
    D = checks.check_positive_int(D, "D")
    H = checks.check_positive_int(H, "H")
    k = _GATES[cell]
    Wx = rng.standard_normal((D, k * H)) / math.sqrt(D)
    if wh_init == "gaussian":
        Wh = rng.standard_normal((H, k * H)) / math.sqrt(H)
    elif wh_init == "orthogonal":
        Wh = np.concatenate([orthogonal(H, rng) for _ in range(k)], axis=1)
    else:
        raise ValueError(f"wh_init must be 'gaussian' or 'orthogonal', got {wh_init!r}")
    b = np.zeros(k * H)
    if cell != "rnn":
        if isinstance(gate_bias, str):
            if gate_bias != "chrono":
                raise ValueError(f"gate_bias must be 'chrono' or a number, got {gate_bias!r}")
            if T_max is None or T_max < 3:
                raise ValueError(f"gate_bias='chrono' needs T_max >= 3, got {T_max!r}")
            keep = np.log(rng.uniform(1.0, T_max - 1.0, size=H))
            if cell == "lstm":
                b[:H] = -keep  # input gate i
        else:
            keep = float(gate_bias)
        b[H : 2 * H] = keep  # LSTM f (blocks i, f, g, o); GRU z (blocks r, z, n)
    return Wx.astype(dtype), Wh.astype(dtype), b.astype(dtype)


def make_recurrent_layer(cell: str, Wx, Wh, b):
    """A ``TimeRNN``, ``TimeLSTM`` or ``TimeGRU`` (``reset_after=False``) with these params."""
    cell = _check_cell(cell)
    if cell == "rnn":
        return TimeRNN(Wx, Wh, b)
    if cell == "lstm":
        return TimeLSTM(Wx, Wh, b)
    return TimeGRU(Wx, Wh, b)


class LastStepModel:
    """A recurrent layer read out at its last step: ``loss(Affine(rnn(xs)[:, -1]), ys)``.

    Parameters
    ----------
    cell : {"rnn", "lstm", "gru"}
    task : Task or str
        Sets D, the read-out width M and the loss: :class:`MSELoss` for regression,
        :class:`~npgated.layers.loss.SoftmaxWithLoss` over ``n_outputs`` groups of
        ``n_classes`` scores for classification.
    hidden_size : int
        H.
    rng : numpy.random.Generator
        For the initial parameters (:func:`init_recurrent_params`; the read-out weight is
        N(0, 1 / H), its bias 0).
    dtype : float dtype
        The parameters are created on the active backend (``backend.to_device``).
    wh_init, gate_bias, T_max
        Passed to :func:`init_recurrent_params`.

    Attributes
    ----------
    rnn : TimeRNN, TimeLSTM or TimeGRU
    head : Affine
    params, grads : lists of arrays
        The recurrent layer's then the read-out's (for the optimizer and ``clip_grads``).

    Notes
    -----
    Forward, for xs (N, T, D)::

        F1  hs = rnn(xs)                         (N, T, H)
        F2  y = hs[:, T-1] @ W + b               (N, M)
        F3  L = loss(y, ys)

    Backward. Only the last step receives a gradient from the loss; every other step gets
    only what flows back through time, which is what makes these tasks hard::

        B1  dy = dL/dy                           (the loss's backward)
        B2  dh_T = dy @ W.T                      (the Affine's backward; also dW, db)
        B3  dhs = 0 except dhs[:, T-1] = dh_T
        B4  rnn.backward(dhs)                    (BPTT: dWx, dWh, db)
    """

    def __init__(
        self,
        cell: str,
        task,
        hidden_size: int,
        rng: np.random.Generator,
        *,
        dtype=np.float64,
        wh_init: str = "gaussian",
        gate_bias="chrono",
        T_max: int | None = None,
    ):
        self.cell = _check_cell(cell)
        self.task = get_task(task)
        D = self.task.input_size
        H = checks.check_positive_int(hidden_size, "hidden_size")
        M = self.task.output_size
        rng = _check_rng(rng)
        host = init_recurrent_params(
            self.cell, D, H, rng, dtype=dtype, wh_init=wh_init, gate_bias=gate_bias, T_max=T_max
        )
        self.rnn = make_recurrent_layer(self.cell, *(backend.to_device(p) for p in host))
        W = backend.to_device(rng.standard_normal((H, M)) / math.sqrt(H), dtype=dtype)
        self.head = Affine(W, backend.to_device(np.zeros(M), dtype=dtype))
        self.loss = MSELoss() if self.task.kind == "regression" else SoftmaxWithLoss()
        self.params = self.rnn.params + self.head.params
        self.grads = self.rnn.grads + self.head.grads
        self._hs_shape = None

    def zero_grads(self) -> None:
        """Set every gradient buffer to zero (backward accumulates)."""
        for g in self.grads:
            g[...] = 0

    def predict(self, xs):
        """Read-out scores (N, M) for ``xs`` (N, T, D); nothing is cached for backward."""
        self.rnn.eval()
        try:
            y = self.head.forward(self.rnn.forward(xs)[:, -1])  # F1, F2
        finally:
            self.rnn.train()
            self.head.cache = None
        return y

    def forward(self, xs, ys) -> float:
        """The loss of a batch (F1-F3), caching what :meth:`backward` needs.

        Parameters
        ----------
        xs : (N, T, D) array in the model's dtype, on its backend
        ys : (N, n_outputs) array: float targets (regression) or integer ids

        Returns
        -------
        float
        """
        hs = self.rnn.forward(xs)  # F1
        self._hs_shape = hs.shape
        y = self.head.forward(hs[:, -1])  # F2
        if self.task.kind == "regression":
            return self.loss.forward(y, ys)  # F3
        C = self.task.n_classes
        return float(self.loss.forward(y.reshape(-1, C), ys.reshape(-1)))  # F3

    def backward(self) -> None:
        """Accumulate the gradients of the last forward's loss into ``grads`` (B1-B4)."""
        dy = self.loss.backward()  # B1
        dh_T = self.head.backward(dy.reshape(self._hs_shape[0], -1))  # B2
        xp = backend.get_array_module(dh_T)
        dhs = xp.zeros(self._hs_shape, dtype=dh_T.dtype)  # B3
        dhs[:, -1] = dh_T  # B3
        self.rnn.backward(dhs)  # B4


# ---------------------------------------------------------------------------------------
# Training and scoring
# ---------------------------------------------------------------------------------------
def task_batch(task, N: int, T: int, rng: np.random.Generator, dtype=np.float64):
    """``(xs, ys)`` of ``task`` on the active backend: xs in ``dtype``, ys in ``dtype``
    (regression) or int64 ids (classification)."""
    task = get_task(task)
    xs, ys = task.make(N, T, rng)
    xs = backend.to_device(xs, dtype=dtype)
    ys = backend.to_device(ys, dtype=dtype if task.kind == "regression" else None)
    return xs, ys


def evaluate_task(model: LastStepModel, xs, ys) -> float:
    """The score of ``model`` on a batch: 1 is perfect, ``task.chance`` is guessing.

    Regression: ``R^2 = 1 - MSE / MSE_mean``, with ``MSE_mean`` the error of predicting the
    batch's mean target (0: no better than the mean; the adding problem's MSE_mean is about
    1/6). Classification: the fraction of output symbols predicted correctly.

    Parameters
    ----------
    model : LastStepModel
    xs : (N, T, D) array, in the model's dtype and on its backend
    ys : (N, n_outputs) targets (as from :func:`task_batch`)
    """
    task = model.task
    y = backend.to_cpu(model.predict(xs)).astype(np.float64)
    t = backend.to_cpu(ys)
    if task.kind == "regression":
        t = t.astype(np.float64)
        mse = float(((y - t) ** 2).mean())
        baseline = float(((t - t.mean()) ** 2).mean())
        return 1.0 - mse / baseline
    pred = y.reshape(len(y), -1, task.n_classes).argmax(axis=-1)
    return float((pred == t).mean())


@dataclass
class TaskResult:
    """What :func:`train_task` measured.

    Attributes
    ----------
    task, cell : str
    T : int
        Sequence length.
    seed : int
    score : float
        :func:`evaluate_task` on a held-out batch after training.
    losses : list of float
        Training loss per iteration.
    grad_norms : list of float
        Global gradient norm per iteration, before clipping.
    seconds : float
        Wall-clock training time.
    model : LastStepModel
        The trained model.
    """

    task: str
    cell: str
    T: int
    seed: int
    score: float = float("nan")
    losses: list = field(default_factory=list)
    grad_norms: list = field(default_factory=list)
    seconds: float = 0.0
    model: LastStepModel | None = field(default=None, repr=False)


def train_task(
    task,
    cell: str,
    T: int,
    *,
    iters: int = 300,
    batch_size: int = 32,
    hidden_size: int = 32,
    lr: float = 0.01,
    max_norm: float = 1.0,
    seed: int = 0,
    n_test: int = 512,
    dtype=np.float32,
    wh_init: str = "gaussian",
    gate_bias="chrono",
    progress=None,
) -> TaskResult:
    """Train a :class:`LastStepModel` on fresh batches of ``task`` and score it.

    Each iteration draws a new batch (the data never repeats, so there is no overfitting to
    speak of), then ``zero_grads -> forward -> backward -> clip_grads(max_norm) -> Adam``.

    Parameters
    ----------
    task : Task or str
        One of :data:`TASKS` (or its name).
    cell : {"rnn", "lstm", "gru"}
    T : int
        Sequence length.
    iters, batch_size, hidden_size : int
    lr : float
        Adam's step size.
    max_norm : float
        Global-norm clipping threshold (``math.inf``: measure, do not clip).
    seed : int
        Seeds three independent streams: initial parameters, training batches, test batch.
    n_test : int
        Size of the held-out batch the score is computed on.
    dtype : float dtype
    wh_init, gate_bias
        See :func:`init_recurrent_params`; ``T_max`` is ``T``.
    progress : callable, optional
        Called as ``progress(1)`` after each iteration (e.g. a tqdm bar's ``update``).

    Returns
    -------
    TaskResult
        Training stops early if the loss or the gradient norm is not finite; the score is
        then that of the model as it was.
    """
    task = get_task(task)
    T = checks.check_positive_int(T, "T")
    if T < task.min_length:
        raise ValueError(f"task {task.name!r} needs T >= {task.min_length}, got T = {T}")
    iters = checks.check_positive_int(iters, "iters")
    init_rng, data_rng, test_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    model = LastStepModel(
        cell,
        task,
        hidden_size,
        init_rng,
        dtype=dtype,
        wh_init=wh_init,
        gate_bias=gate_bias,
        T_max=max(T, 3),
    )
    optimizer = Adam(lr=lr)
    result = TaskResult(task=task.name, cell=model.cell, T=T, seed=int(seed), model=model)
    start = time.perf_counter()
    for _ in range(iters):
        xs, ys = task_batch(task, batch_size, T, data_rng, dtype)
        model.zero_grads()
        loss = model.forward(xs, ys)
        model.backward()
        norm = clip_grads(model.grads, max_norm)
        result.losses.append(loss)
        result.grad_norms.append(norm)
        if progress is not None:
            progress(1)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            break
        optimizer.update(model.params, model.grads)
    result.seconds = time.perf_counter() - start
    xs, ys = task_batch(task, n_test, T, test_rng, dtype)
    result.score = evaluate_task(model, xs, ys)
    return result
