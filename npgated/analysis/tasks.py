"""Long-range dependency tasks, generated in code, and a small model to train on them.

Three synthetic problems whose answer depends on inputs far back in the sequence, so a
network can only solve them if gradients survive the trip back through time:

* the **adding problem** (Hochreiter & Schmidhuber 1997, "Long Short-Term Memory", Neural
  Computation 9(8), experiment 4; the variant of Le, Jaitly & Hinton 2015): each step holds a
  value in [0, 1) and a marker; exactly two steps are marked (one in the first half of the
  sequence, one in the second) and the target is the sum of the two marked values. A
  regression task: predicting the mean target (1.0) gives an MSE of 1/6, the baseline to beat;
* the **first-token problem** (the "latch" of Bengio, Simard & Frasconi 1994, "Learning
  long-term dependencies with gradient descent is difficult", IEEE TNN 5(2)): the first token
  is one of ``n_classes`` class tokens and decides the label; the T - 1 tokens after it are
  random distractors. Chance accuracy is ``1 / n_classes``;
* the **copy (recall) problem** (after Hochreiter & Schmidhuber 1997 and Arjovsky, Shah &
  Bengio 2016): ``n_copy`` symbols at the start, then distractor tokens, then a recall token
  at the last step; the network must output the ``n_copy`` symbols from its final state.
  Chance accuracy per symbol is ``1 / n_symbols``.

Every generator takes a seeded ``numpy.random.Generator`` (no global state) and returns host
NumPy arrays; token inputs are one-hot encoded so the recurrent layer reads them directly.

The model, :class:`LastStepModel`, is ``TimeRNN | TimeLSTM | TimeGRU`` followed by an
:class:`~npgated.layers.affine.Affine` read-out of the last hidden state and a loss: the
squared error :class:`MSELoss` (adding problem) or :class:`SoftmaxCrossEntropy` (the token
problems, one softmax per output symbol). :func:`train_task` trains it with Adam and
global-norm clipping and returns a :class:`TaskResult`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from npgated import backend, checks, functional
from npgated.layers.affine import Affine

__all__ = [
    "TASKS",
    "Task",
    "adding_problem",
    "first_token_problem",
    "copy_problem",
    "one_hot",
    "MSELoss",
    "SoftmaxCrossEntropy",
    "LastStepModel",
    "init_recurrent_params",
    "TaskResult",
    "train_task",
    "evaluate_task",
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
    ys = (values * markers).sum(axis=1, keepdims=True).astype(dtype)
    return xs, ys


def first_token_problem(
    N: int,
    T: int,
    rng: np.random.Generator,
    n_classes: int = 2,
    n_distractors: int = 4,
    dtype=np.float64,
):
    """A batch of the first-token ("latch") problem: the first token decides the label.

    Token ids ``0 .. n_classes-1`` are the class tokens, ``n_classes .. n_classes +
    n_distractors - 1`` the distractors; the vocabulary size is ``V = n_classes +
    n_distractors``.

    Parameters
    ----------
    N : int
        Number of sequences.
    T : int
        Sequence length, >= 1 (the label token plus T - 1 distractors).
    rng : numpy.random.Generator
    n_classes : int
        Number of labels (chance accuracy is 1 / n_classes).
    n_distractors : int
        Number of distinct distractor tokens.
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
    n_distractors = checks.check_positive_int(n_distractors, "n_distractors")
    rng = _check_rng(rng)
    ids = np.empty((N, T), dtype=np.int64)
    ids[:, 0] = rng.integers(0, n_classes, size=N)
    ids[:, 1:] = rng.integers(n_classes, n_classes + n_distractors, size=(N, T - 1))
    xs = one_hot(ids, n_classes + n_distractors, dtype=dtype)
    return xs, ids[:, :1].copy()


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
    ids[:, n_copy:-1] = rng.integers(n_symbols, n_symbols + n_distractors,
                                     size=(N, T - n_copy - 1))
    ids[:, -1] = V - 1
    xs = one_hot(ids, V, dtype=dtype)
    return xs, ids[:, :n_copy].copy()


@dataclass(frozen=True)
class Task:
    """A task the demo trains on: a generator and how to score it.

    Attributes
    ----------
    name : str
        Short name (``"adding"``, ``"first_token"``, ``"copy"``).
    kind : {"regression", "classification"}
        Decides the loss (MSE or softmax cross-entropy) and the score.
    make : callable
        ``make(N, T, rng, dtype=...) -> (xs, ys)``, one of the generators above.
    input_size : int
        D, the last dimension of ``xs``.
    n_outputs : int
        Regression: outputs per sequence. Classification: symbols per sequence.
    n_classes : int
        Classification: choices per symbol (chance accuracy ``1 / n_classes``); 0 otherwise.
    description : str
        One line for tables and plots.
    """

    name: str
    kind: str
    make: object
    input_size: int
    n_outputs: int
    n_classes: int
    description: str

    @property
    def output_size(self) -> int:
        """M, the size of the read-out layer's output."""
        return self.n_outputs * max(self.n_classes, 1)

    @property
    def chance(self) -> float:
        """The score of a model that ignores the long-range input (see :func:`evaluate_task`)."""
        return 0.0 if self.kind == "regression" else 1.0 / self.n_classes


TASKS = {
    "adding": Task("adding", "regression", adding_problem, 2, 1, 0,
                   "adding problem: sum of the two marked values"),
    "first_token": Task("first_token", "classification", first_token_problem, 6, 1, 2,
                        "first token decides the label (2 classes, 4 distractors)"),
    "copy": Task("copy", "classification", copy_problem, 8, 3, 4,
                 "recall the first 3 of 4 symbols after distractors"),
}
"""The tasks by name, with the generators' default sizes."""


# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------
class MSELoss:
    """Mean squared error of a batch of predictions (regression read-out).

    Notes
    -----
    For predictions y and targets t of shape (N, M), with K = N * M::

        F1  diff = y - t
        F2  L = sum(diff**2) / K

    Backward (dL/dy, since dL/d diff_k = 2 * diff_k / K and d diff / dy = 1)::

        B1  dy = dout * 2 * diff / K
    """

    def __init__(self):
        self.cache = None

    def forward(self, y, t):
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
        checks.check_shape(t, y.shape, "t")
        diff = y - t  # F1
        self.cache = diff
        return float((diff * diff).sum()) / diff.size  # F2

    def backward(self, dout: float = 1.0):
        """
        Returns
        -------
        dy : (N, M) array
        """
        diff = self.cache
        if diff is None:
            raise RuntimeError("MSELoss.backward called before forward (or twice)")
        self.cache = None
        return diff * (2.0 * dout / diff.size)  # B1


class SoftmaxCrossEntropy:
    """Softmax cross-entropy for M symbols per sequence, each a choice among C classes.

    Notes
    -----
    The scores (N, M * C) are viewed as K = N * M rows of C scores ``a``; with targets
    ``t`` (K,) and ``p = softmax(a)``::

        F1  logp = log_softmax(a)              (max subtracted: stable)
        F2  L = -sum_k logp[k, t_k] / K

    Backward (the classic simplification of softmax followed by log-likelihood)::

        B1  da = dout * (p - onehot(t)) / K,    p = exp(logp)
    """

    def __init__(self, n_classes: int):
        self.n_classes = checks.check_positive_int(n_classes, "n_classes")
        self.cache = None

    def forward(self, scores, t):
        """
        Parameters
        ----------
        scores : (N, M * C) float array
        t : (N, M) integer array, values in [0, C), on scores' backend

        Returns
        -------
        float
            The loss L.
        """
        C = self.n_classes
        checks.check_float(scores, "scores", ndim=2, symbolic="(N, M * C)")
        N, MC = scores.shape
        checks.check_shape(t, (N, MC // C), "t")
        checks.check_ids(t, C, "t")
        a = scores.reshape(N * (MC // C), C)
        logp = functional.log_softmax(a, axis=-1)  # F1
        t1 = t.reshape(-1)
        xp = backend.get_array_module(scores)
        picked = xp.take_along_axis(logp, t1[:, None], axis=1)
        self.cache = (logp, t1, scores.shape)
        return -float(picked.sum()) / t1.size  # F2

    def backward(self, dout: float = 1.0):
        """
        Returns
        -------
        dscores : (N, M * C) array
        """
        if self.cache is None:
            raise RuntimeError("SoftmaxCrossEntropy.backward called before forward (or twice)")
        logp, t1, shape = self.cache
        self.cache = None
        xp = backend.get_array_module(logp)
        da = xp.exp(logp)  # B1  p
        rows = xp.arange(t1.size)
        da[rows, t1] -= 1.0  # B1  p - onehot(t)
        da *= dout / t1.size  # B1
        return da.reshape(shape)


# ---------------------------------------------------------------------------------------
# The model: recurrent layer -> Affine on the last hidden state -> loss
# ---------------------------------------------------------------------------------------
CELLS = ("rnn", "lstm", "gru")
_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _check_cell(cell: str) -> str:
    key = str(cell).lower()
    if key not in _GATES:
        raise ValueError(f"unknown cell {cell!r}; choose one of: {', '.join(CELLS)}")
    return key


def _orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random (n, n) orthogonal matrix (QR of a Gaussian, signs fixed: Haar-distributed)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def init_recurrent_params(cell: str, D: int, H: int, rng: np.random.Generator,
                          dtype=np.float64, forget_bias: float = 1.0,
                          wh_init: str = "orthogonal"):
    """Initial ``(Wx, Wh, b)`` for a recurrent cell, on the host.

    The same recipe for every cell, so the comparison is about the cell, not the start:
    ``Wx`` Gaussian with variance 1 / D, each (H, H) block of ``Wh`` a random orthogonal
    matrix (Saxe, McClelland & Ganguli 2014; its singular values are all 1, the border
    between vanishing and exploding), ``b`` zero except the LSTM's forget-gate block, set to
    ``forget_bias`` (Gers, Schmidhuber & Cummins 2000; Jozefowicz et al. 2015).

    Parameters
    ----------
    cell : {"rnn", "lstm", "gru"}
    D, H : int
        Input and hidden sizes.
    rng : numpy.random.Generator
    dtype : float dtype
    forget_bias : float
        LSTM only: the initial bias of the forget gate (block 1 of i, f, g, o).

    Returns
    -------
    Wx : (D, kH) array
    Wh : (H, kH) array
    b : (kH,) array
        k = 1 (RNN), 4 (LSTM), 3 (GRU, ``reset_after=False`` layout).
    """
    cell = _check_cell(cell)
    k = _GATES[cell]
    Wx = rng.standard_normal((D, k * H)) / math.sqrt(D)
    if wh_init == "orthogonal":
        Wh = np.concatenate([_orthogonal(H, rng) for _ in range(k)], axis=1)
    else:
        Wh = rng.standard_normal((H, k * H)) / math.sqrt(H)
    b = np.zeros(k * H)
    if cell in ("lstm", "gru"):
        b[H:2 * H] = forget_bias  # LSTM f (blocks i, f, g, o); GRU z (blocks r, z, n)
    return Wx.astype(dtype), Wh.astype(dtype), b.astype(dtype)


def make_recurrent_layer(cell: str, Wx, Wh, b):
    """``TimeRNN``, ``TimeLSTM`` or ``TimeGRU`` built from the given parameters."""
    cell = _check_cell(cell)
    if cell == "rnn":
        from npgated.layers.rnn import TimeRNN  # noqa: PLC0415

        return TimeRNN(Wx, Wh, b)
    if cell == "lstm":
        from npgated.layers.lstm import TimeLSTM  # noqa: PLC0415

        return TimeLSTM(Wx, Wh, b)
    from npgated.layers.gru import TimeGRU  # noqa: PLC0415

    return TimeGRU(Wx, Wh, b)


class LastStepModel:
    """A recurrent layer read out at its last step: ``loss(Affine(rnn(xs)[:, -1]), ys)``.

    Parameters
    ----------
    cell : {"rnn", "lstm", "gru"}
    input_size : int
        D.
    hidden_size : int
        H.
    output_size : int
        M, the read-out's width (``Task.output_size``).
    n_classes : int
        0 for regression (:class:`MSELoss`); else C, and the M outputs are M / C softmax
        groups of C scores each (:class:`SoftmaxCrossEntropy`).
    rng : numpy.random.Generator
        For the initial parameters (:func:`init_recurrent_params`; the read-out is Gaussian
        with variance 1 / H, zero bias).
    dtype : float dtype
        Created on the active backend (``backend.to_device``).

    Notes
    -----
    Forward, for xs (N, T, D)::

        F1  hs = rnn(xs)                         (N, T, H)
        F2  y = hs[:, T-1] @ W + b               (N, M)
        F3  L = loss(y, ys)

    Backward: only the last step receives a gradient from the loss, so every other step's
    gradient is what flows back through time (which is what makes these tasks hard)::

        B1  dy = dL/dy                           (the loss's backward)
        B2  dh_T = dy @ W.T                      (the Affine's backward)
        B3  dhs = 0 except dhs[:, T-1] = dh_T
        B4  rnn.backward(dhs)                    (BPTT)
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, output_size: int,
                 n_classes: int, rng: np.random.Generator, dtype=np.float64,
                 forget_bias: float = 1.0, wh_init: str = "orthogonal"):
        self.cell = _check_cell(cell)
        D = checks.check_positive_int(input_size, "input_size")
        H = checks.check_positive_int(hidden_size, "hidden_size")
        M = checks.check_positive_int(output_size, "output_size")
        rng = _check_rng(rng)
        Wx, Wh, b = init_recurrent_params(self.cell, D, H, rng, dtype=dtype,
                                          forget_bias=forget_bias, wh_init=wh_init)
        self.rnn = make_recurrent_layer(self.cell, *(backend.to_device(p) for p in (Wx, Wh, b)))
        W = backend.to_device(rng.standard_normal((H, M)) / math.sqrt(H), dtype=dtype)
        self.head = Affine(W, backend.to_device(np.zeros(M), dtype=dtype))
        if n_classes:
            if M % n_classes:
                raise ValueError(f"output_size {M} is not a multiple of n_classes {n_classes}")
            self.loss = SoftmaxCrossEntropy(n_classes)
        else:
            self.loss = MSELoss()
        self.n_classes = int(n_classes)
        self.params = self.rnn.params + self.head.params
        self.grads = self.rnn.grads + self.head.grads
        self._hs_shape = None

    def zero_grads(self) -> None:
        for g in self.grads:
            g[...] = 0

    def predict(self, xs):
        """Read-out scores (N, M) for xs (N, T, D), without caching for backward."""
        self.rnn.eval()
        try:
            y = self.head.forward(self.rnn.forward(xs)[:, -1])  # F1, F2
        finally:
            self.rnn.train()
            self.head.cache = None
        return y

    def forward(self, xs, ys) -> float:
        """The loss for a batch (F1-F3); caches what backward needs."""
        hs = self.rnn.forward(xs)  # F1
        self._hs_shape = hs.shape
        y = self.head.forward(hs[:, -1])  # F2
        return self.loss.forward(y, ys)  # F3

    def backward(self) -> None:
        """Accumulate the gradients of the last forward's loss into ``grads`` (B1-B4)."""
        dy = self.loss.backward()  # B1
        dh_T = self.head.backward(dy)  # B2
        xp = backend.get_array_module(dh_T)
        dhs = xp.zeros(self._hs_shape, dtype=dh_T.dtype)  # B3
        dhs[:, -1] = dh_T  # B3
        self.rnn.backward(dhs)  # B4


# ---------------------------------------------------------------------------------------
# Training and scoring
# ---------------------------------------------------------------------------------------
def _to_backend(task: Task, xs, ys, dtype):
    xs = backend.to_device(xs, dtype=dtype)
    ys = backend.to_device(ys, dtype=dtype if task.kind == "regression" else None)
    return xs, ys


def evaluate_task(model: LastStepModel, task: Task, xs, ys) -> float:
    """The score of ``model`` on a fixed batch: 1 is perfect, ``task.chance`` is guessing.

    Regression: ``1 - MSE / MSE_mean``, where ``MSE_mean`` is the error of predicting the
    batch's mean target (the coefficient of determination R^2; 0 = no better than the mean).
    Classification: the fraction of output symbols predicted correctly (accuracy).

    Parameters
    ----------
    model : LastStepModel
    task : Task
    xs : (N, T, D) array on the model's backend, in its dtype
    ys : (N, n_outputs) targets on the model's backend
    """
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
    """

    task: str
    cell: str
    T: int
    seed: int
    score: float
    losses: list = field(default_factory=list)
    grad_norms: list = field(default_factory=list)
    seconds: float = 0.0


def train_task(task, cell: str, T: int, *, iters: int = 300, batch_size: int = 32,
               hidden_size: int = 32, lr: float = 0.01, max_norm: float = 1.0,
               seed: int = 0, n_test: int = 512, dtype=np.float32,
               forget_bias: float = 1.0, wh_init: str = "orthogonal", progress=None) -> TaskResult:
    """Train a :class:`LastStepModel` on fresh batches of ``task`` and score it.

    Each iteration draws a new batch (the data never repeats), then runs
    ``zero_grads -> forward -> backward -> clip_grads(max_norm) -> Adam step``.

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
        Global-norm clipping threshold (``math.inf``: no clipping).
    seed : int
        Seeds the initial parameters, the training batches and the test batch (separate
        streams), so a run is reproducible.
    n_test : int
        Size of the held-out batch the score is computed on.
    dtype : float dtype
    progress : callable, optional
        Called as ``progress(1)`` after each iteration (e.g. a tqdm bar's ``update``).

    Returns
    -------
    TaskResult
    """
    from npgated.optim import Adam, clip_grads  # noqa: PLC0415

    if isinstance(task, str):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
        task = TASKS[task]
    iters = checks.check_positive_int(iters, "iters")
    init_rng, data_rng, test_rng = (np.random.default_rng(s)
                                    for s in np.random.SeedSequence(seed).spawn(3))
    model = LastStepModel(cell, task.input_size, hidden_size, task.output_size,
                          task.n_classes, init_rng, dtype=dtype, forget_bias=forget_bias,
                          wh_init=wh_init)
    optimizer = Adam(lr=lr)
    result = TaskResult(task=task.name, cell=model.cell, T=int(T), seed=int(seed), score=0.0)
    start = time.perf_counter()
    for _ in range(iters):
        xs, ys = _to_backend(task, *task.make(batch_size, T, data_rng), dtype)
        model.zero_grads()
        loss = model.forward(xs, ys)
        model.backward()
        norm = clip_grads(model.grads, max_norm)
        result.losses.append(loss)
        result.grad_norms.append(norm)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            break  # diverged: score what is left (it will be poor)
        optimizer.update(model.params, model.grads)
        if progress is not None:
            progress(1)
    result.seconds = time.perf_counter() - start
    xs, ys = _to_backend(task, *task.make(n_test, T, test_rng), dtype)
    result.score = evaluate_task(model, task, xs, ys)
    return result
