"""How the gradient travels back through time: measured on the library's own backward passes.

Three experiments behind the chapters' central claim (Bengio, Simard & Frasconi 1994;
Hochreiter 1991; Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent
neural networks"): in a plain RNN the gradient w.r.t. an early hidden state is a product of
T Jacobians, so it shrinks or grows exponentially with the distance; gates (LSTM, GRU)
keep an additive path open; clipping tames the growth.

* :func:`hidden_grad_norms` / :func:`model_grad_norms`: ||dL/dh_t|| for every step t of a
  real ``backward`` of ``TimeRNN`` / ``TimeLSTM`` / ``TimeGRU``, read from the layers'
  ``record_grad_norms`` option (see :mod:`npgated.layers.recurrent`), with the gradient
  entering at the last step only, so the curve shows how it fades going back in time.
* :func:`matrix_power_norms`: the book's experiment (ch. 6.1): ``dh`` pushed back through
  ``Wh`` alone, ``dh <- dh @ Wh.T`` for T steps, for matrices whose largest singular value
  is above or below 1: the norm grows or decays like ``sigma_max ** t``.
* :func:`clipping_trace`: the global gradient norm over training iterations of an RNN
  started in the exploding regime, with and without global-norm clipping.

Everything returns host NumPy arrays (or a dataclass of them); nothing is printed or drawn
here (see :mod:`npgated.analysis.plots`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from npgated import backend, checks
from npgated.analysis.tasks import (
    LastStepModel,
    get_task,
    init_recurrent_params,
    make_recurrent_layer,
    orthogonal,
    task_batch,
)
from npgated.optim import SGD, clip_grads

__all__ = [
    "ClippingTrace",
    "clipping_trace",
    "hidden_grad_norms",
    "init_grad_norms",
    "matrix_power_norms",
    "model_grad_norms",
    "scaled_matrix",
]


# ---------------------------------------------------------------------------------------
# ||dL/dh_t|| from a real backward pass
# ---------------------------------------------------------------------------------------
def hidden_grad_norms(layer, xs, dh_last=None, seed: int = 0) -> np.ndarray:
    """||dL/dh_t|| for t = 1..T when the loss sees only the last hidden state.

    Runs ``layer.forward(xs)`` and ``layer.backward(dhs)`` with ``dhs`` zero except at the
    last step, where it is ``dh_last``, with ``record_grad_norms`` switched on for the call.
    Leaves no trace on the layer: its gradient buffers, ``record_grad_norms`` and
    carried state are restored afterwards.

    Parameters
    ----------
    layer : TimeRNN, TimeLSTM or TimeGRU
        In training mode.
    xs : (N, T, D) array
        In the layer's dtype and on its backend.
    dh_last : (N, H) array, optional
        The gradient entering at the last step. Default: Gaussian, scaled to norm 1, drawn
        from ``seed`` (so ``norms[-1] == 1`` and the curve reads as a ratio).
    seed : int
        For the default ``dh_last``.

    Returns
    -------
    norms : (T,) float64 host array
        ``norms[t]`` = Frobenius norm over the batch of dL/dh at step t (0-based): the
        total gradient reaching the hidden state of step t.

    Notes
    -----
    With dhs nonzero only at step T-1, the total gradient at step t < T-1 is what BPTT
    carried back: for the RNN ``dh_t = dh_{t+1} * (1 - h_{t+1}**2) @ Wh.T``, a product of
    T-1-t Jacobians, hence the exponential shape.
    """
    N, T, _ = xs.shape
    H = layer.hidden_size
    xp = backend.get_array_module(xs)
    if dh_last is None:
        g = np.random.default_rng(seed).standard_normal((N, H))
        dh_last = backend.to_device(g / np.linalg.norm(g), like=xs, dtype=xs.dtype)
    saved_grads = [g.copy() for g in layer.grads]
    saved_state = (layer.h, getattr(layer, "c", None), layer._state_given)
    saved_flag = layer.record_grad_norms
    try:
        layer.record_grad_norms = True
        hs = layer.forward(xs)
        dhs = xp.zeros_like(hs)
        dhs[:, -1] = dh_last
        layer.backward(dhs)
        norms = layer.grad_norms
    finally:
        layer.record_grad_norms = saved_flag
        for g, s in zip(layer.grads, saved_grads):
            g[...] = s
        layer.h, layer._state_given = saved_state[0], saved_state[2]
        if layer.has_cell:
            layer.c = saved_state[1]
    return np.asarray(norms, dtype=np.float64)


def model_grad_norms(model: LastStepModel, xs, ys) -> np.ndarray:
    """||dL/dh_t|| for the model's own loss on a batch (t = 0..T-1), grads left unchanged.

    Parameters
    ----------
    model : LastStepModel
    xs : (N, T, D) array, ys : targets (as from :func:`~npgated.analysis.tasks.task_batch`)

    Returns
    -------
    norms : (T,) float64 host array
    """
    rnn = model.rnn
    saved = [g.copy() for g in model.grads]
    saved_flag = rnn.record_grad_norms
    try:
        rnn.record_grad_norms = True
        model.forward(xs, ys)
        model.backward()
        norms = rnn.grad_norms
    finally:
        rnn.record_grad_norms = saved_flag
        for g, s in zip(model.grads, saved):
            g[...] = s
    return np.asarray(norms, dtype=np.float64)


def init_grad_norms(
    cell: str,
    task="adding",
    T: int = 100,
    *,
    hidden_size: int = 32,
    batch_size: int = 64,
    seed: int = 0,
    dtype=np.float64,
    wh_init: str = "gaussian",
    gate_bias="chrono",
) -> np.ndarray:
    """:func:`hidden_grad_norms` of a freshly initialised cell on a batch of ``task``.

    The layer is built as :class:`~npgated.analysis.tasks.LastStepModel` would build it
    (:func:`~npgated.analysis.tasks.init_recurrent_params` with ``T_max = T``), so the curve
    is what training starts from. Returns (T,) float64, ``norms[-1] == 1``.
    """
    task = get_task(task)
    init_rng, data_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    params = init_recurrent_params(
        cell,
        task.input_size,
        hidden_size,
        init_rng,
        dtype=dtype,
        wh_init=wh_init,
        gate_bias=gate_bias,
        T_max=max(T, 3),
    )
    layer = make_recurrent_layer(cell, *(backend.to_device(p) for p in params))
    xs, _ = task_batch(task, batch_size, T, data_rng, dtype)
    return hidden_grad_norms(layer, xs, seed=seed)


# ---------------------------------------------------------------------------------------
# The matrix-power experiment (the book, ch. 6.1)
# ---------------------------------------------------------------------------------------
def scaled_matrix(
    H: int, sigma_max: float, rng: np.random.Generator, kind: str = "symmetric"
) -> np.ndarray:
    """A random (H, H) matrix whose largest singular value is ``sigma_max``.

    Parameters
    ----------
    H : int
    sigma_max : float
        The largest singular value, > 0.
    rng : numpy.random.Generator
    kind : {"symmetric", "gaussian"}
        ``"symmetric"``: ``Q @ diag(s) @ Q.T`` with Q orthogonal and singular values s spread
        evenly over [sigma_max / 2, sigma_max]; the matrix is normal, so its spectral radius
        is sigma_max too and ``||dh @ W.T**t||`` follows ``sigma_max ** t`` closely.
        ``"gaussian"``: the book's ``randn(H, H)``, rescaled; its spectral radius is only
        about half of sigma_max, so with sigma_max a little above 1 it still decays
        (sigma_max > 1 is necessary for explosion, not sufficient).

    Returns
    -------
    (H, H) float64 array
    """
    H = checks.check_positive_int(H, "H")
    if kind == "symmetric":
        q = orthogonal(H, rng)
        s = np.linspace(sigma_max / 2, sigma_max, H)
        return (q * s) @ q.T
    if kind == "gaussian":
        W = rng.standard_normal((H, H))
        return W * (sigma_max / np.linalg.norm(W, 2))
    raise ValueError(f"kind must be 'symmetric' or 'gaussian', got {kind!r}")


def matrix_power_norms(Wh, T: int, dh=None, hs=None) -> np.ndarray:
    """Norms of ``dh`` pushed back through time by ``Wh`` alone (or with tanh' too).

    Parameters
    ----------
    Wh : (H, H) array
    T : int
        Number of steps.
    dh : (N, H) array, optional
        The starting gradient (default: ones, N = 1, as in the book).
    hs : (N, T, H) array, optional
        Hidden states of a tanh RNN; if given, each step also multiplies by the tanh
        derivative ``1 - h**2`` (the real RNN backward, B1-B2 of ``TimeRNN``).

    Returns
    -------
    norms : (T + 1,) float64 host array
        ``norms[k]`` = ||dh after k steps|| / ||dh||, so ``norms[0] == 1``.

    Notes
    -----
    ::

        M1  dh_{k+1} = dh_k @ Wh.T                          (without tanh)
        M1' dh_{k+1} = (dh_k * (1 - h**2)) @ Wh.T            (with tanh; h of step T-1-k)
        so  ||dh_k|| <= sigma_max(Wh)**k * ||dh_0||   (and tanh' <= 1 only shrinks it more)
    """
    T = checks.check_positive_int(T, "T")
    Wh = np.asarray(backend.to_cpu(Wh), dtype=np.float64)
    H = Wh.shape[0]
    dh = np.ones((1, H)) if dh is None else np.asarray(backend.to_cpu(dh), dtype=np.float64)
    if hs is not None:
        hs = np.asarray(backend.to_cpu(hs), dtype=np.float64)
        if hs.shape[1] < T or hs.shape[2] != H or hs.shape[0] != dh.shape[0]:
            raise ValueError(
                f"hs must have shape (N, >= T, H) = ({dh.shape[0]}, >= {T}, {H}), got {hs.shape}"
            )
    norms = np.empty(T + 1)
    norms[0] = np.linalg.norm(dh)
    for k in range(T):
        if hs is not None:
            h = hs[:, -1 - k]
            dh = dh * (1 - h * h)  # M1'
        dh = dh @ Wh.T  # M1
        norms[k + 1] = np.linalg.norm(dh)
    return norms / norms[0]


# ---------------------------------------------------------------------------------------
# Clipping
# ---------------------------------------------------------------------------------------
@dataclass
class ClippingTrace:
    """Gradient norms and losses of two identical runs, without and with clipping.

    Attributes
    ----------
    max_norm : float
        The clipping threshold of the clipped run.
    norms, losses : dict
        ``{"no clipping": [...], "clipping": [...]}``: global gradient norm before
        clipping and training loss, per iteration (a run that diverged stops early).
    diverged_at : dict
        ``{label: iteration}`` for a run that diverged (its gradient norm or loss passed
        ``diverge_above`` or was not finite) and stopped there.
    T, sigma, lr : float
        The experiment's sequence length, ``Wh`` scale and SGD learning rate.
    """

    max_norm: float
    T: int = 0
    sigma: float = float("nan")
    lr: float = float("nan")
    norms: dict = field(default_factory=dict)
    losses: dict = field(default_factory=dict)
    diverged_at: dict = field(default_factory=dict)


def clipping_trace(
    T: int = 30,
    *,
    iters: int = 150,
    max_norm: float = 1.0,
    lr: float = 0.1,
    sigma: float = 1.5,
    hidden_size: int = 32,
    batch_size: int = 32,
    seed: int = 0,
    task="adding",
    diverge_above: float = 1e6,
    progress=None,
) -> ClippingTrace:
    """Train the same RNN twice with SGD, without and with global-norm clipping.

    The RNN starts in the exploding regime: ``Wh`` is orthogonal times ``sigma`` (> 1), so
    every singular value is ``sigma``, and where the tanh is not saturated the backward
    pass multiplies the gradient by about ``sigma`` per step. The unclipped SGD steps are
    as large as those gradients; the clipped ones are at most ``lr * max_norm``.

    Parameters
    ----------
    T : int
        Sequence length.
    iters : int
        SGD iterations per run.
    max_norm : float
        Threshold of the clipped run (:func:`npgated.optim.clip_grads`).
    lr : float
        SGD learning rate (the same for both runs).
    sigma : float
        Scale of the orthogonal ``Wh``.
    hidden_size, batch_size, seed : int
        Both runs start from the same parameters and see the same batches.
    task : Task or str
    diverge_above : float
        A run whose gradient norm or loss exceeds this (or is not finite) has diverged and
        stops (SGD would only overflow from there).
    progress : callable, optional
        Called as ``progress(1)`` per iteration.

    Returns
    -------
    ClippingTrace
    """
    task = get_task(task)
    trace = ClippingTrace(max_norm=float(max_norm), T=int(T), sigma=float(sigma), lr=float(lr))
    for label, threshold in (("no clipping", math.inf), ("clipping", max_norm)):
        init_rng, data_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)
        )
        model = LastStepModel("rnn", task, hidden_size, init_rng, dtype=np.float64)
        Wh = model.rnn.params[1]
        Wh[...] = backend.to_device(sigma * orthogonal(hidden_size, init_rng), like=Wh)
        optimizer = SGD(lr=lr)
        norms, losses = [], []
        # An unclipped run may overflow before it passes diverge_above: that ends it too.
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(iters):
                xs, ys = task_batch(task, batch_size, T, data_rng, np.float64)
                model.zero_grads()
                loss = model.forward(xs, ys)
                model.backward()
                norm = clip_grads(model.grads, threshold)
                norms.append(norm)
                losses.append(loss)
                if progress is not None:
                    progress(1)
                if not (norm <= diverge_above and loss <= diverge_above):  # nan too
                    trace.diverged_at[label] = len(norms) - 1
                    break
                optimizer.update(model.params, model.grads)
        trace.norms[label] = norms
        trace.losses[label] = losses
    return trace
