"""Finite-difference checks of hand-written backward passes.

The check is the vector-Jacobian one (CS231n): pick a fixed random upstream gradient
``dout`` and compare, for an array ``x`` that the output depends on,

    analytic:  the gradient the layer's ``backward(dout)`` computes for x
    numeric:   d<out, dout>/dx_k ~ (L(x + h e_k) - L(x - h e_k)) / (2h),  L(x) = sum(out * dout)

element by element (central differences, h = 1e-5, float64). They are compared by the
norm-wise relative error

    err = ||a - n|| / max(1e-12, ||a|| + ||n||)

which, unlike the element-wise maximum, is not fooled by round-off on near-zero entries.
For large arrays (a V x D embedding) the *directional* variant (Chainer) perturbs along one
random unit direction u instead and compares <a, u> with (L(x + h u) - L(x - h u)) / (2h).

Checks must be run in float64: in float32 round-off (~1e-7 relative) swamps the O(h^2)
truncation error. Arrays are perturbed in place and restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from npgated import backend


@dataclass(frozen=True)
class GradCheckResult:
    """The outcome of checking one array.

    Attributes
    ----------
    name : str
        What was checked (``"Wx"``, ``"xs"``, ``"h0"``, ``"lstm1.Wh"``, ...).
    error : float
        Norm-wise relative error between analytic and numeric gradients.
    worst_index : tuple or None
        Index of the element with the largest absolute difference (None for directional).
    analytic, numeric : float
        The two values at ``worst_index`` (for directional checks: the two projections).
    directional : bool
        True if a random-direction check was used.
    """

    name: str
    error: float
    worst_index: tuple | None
    analytic: float
    numeric: float
    directional: bool = False

    def ok(self, tol: float) -> bool:
        return bool(self.error <= tol)

    def __str__(self) -> str:
        where = "directional" if self.directional else f"worst at {self.worst_index}"
        return (
            f"{self.name:<16s} rel.err {self.error:.2e}  ({where}: analytic "
            f"{self.analytic:+.6e}, numeric {self.numeric:+.6e})"
        )


def rel_error(a, n) -> float:
    """``||a - n|| / max(1e-12, ||a|| + ||n||)`` on host float64 copies."""
    a = backend.to_cpu(a).astype(np.float64).ravel()
    n = backend.to_cpu(n).astype(np.float64).ravel()
    return float(np.linalg.norm(a - n) / max(1e-12, np.linalg.norm(a) + np.linalg.norm(n)))


def _host_float(x) -> float:
    return float(backend.to_cpu(x).astype(np.float64).sum())


def numerical_gradient(loss: Callable[[], float], x, h: float = 1e-5) -> np.ndarray:
    """Central-difference gradient of the scalar ``loss()`` w.r.t. every element of ``x``.

    ``x`` is perturbed in place (it must be an array that ``loss`` reads) and restored.
    Returns a host float64 array of ``x``'s shape.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    for index in np.ndindex(*x.shape):
        old = x[index].item()
        x[index] = old + h
        plus = loss()
        x[index] = old - h
        minus = loss()
        x[index] = old
        grad[index] = (plus - minus) / (2 * h)
    return grad


def check_gradients(
    loss: Callable[[], float],
    analytic: Callable[[], Mapping[str, object]],
    arrays: Mapping[str, object],
    h: float = 1e-5,
    directional: tuple[str, ...] = (),
    seed: int = 0,
) -> list[GradCheckResult]:
    """Compare ``analytic()`` gradients with central differences of ``loss()``.

    Parameters
    ----------
    loss : () -> float
        Recomputes the scalar from scratch, reading the current values of ``arrays``.
    analytic : () -> {name: gradient}
        Runs forward and backward once and returns the analytic gradient of ``loss`` for
        each name in ``arrays`` (arrays of the same shapes; host or device).
    arrays : {name: array}
        The arrays to check; each is perturbed in place and restored.
    directional : names
        Use the random-direction check for these (large) arrays.
    seed : int
        Seed for the random directions.

    Returns
    -------
    list of GradCheckResult, one per name, in the order of ``arrays``.
    """
    grads = {name: backend.to_cpu(g).astype(np.float64) for name, g in analytic().items()}
    rng = np.random.default_rng(seed)
    results = []
    for name, x in arrays.items():
        a = grads[name]
        if a.shape != tuple(x.shape):
            raise ValueError(f"{name}: analytic gradient has shape {a.shape}, array {x.shape}")
        if name in directional:
            u = rng.standard_normal(x.shape)
            u /= np.linalg.norm(u)
            num = directional_derivative(loss, x, u, h)
            ana = float((a * u).sum())
            err = abs(ana - num) / max(1e-12, abs(ana) + abs(num))
            results.append(GradCheckResult(name, err, None, ana, num, directional=True))
            continue
        results.append(compare(name, a, numerical_gradient(loss, x, h)))
    return results


def compare(name: str, analytic, numeric) -> GradCheckResult:
    """The :class:`GradCheckResult` of two gradients of one shape: the norm-wise relative
    error and the element with the largest absolute difference (host float64 copies)."""
    a = backend.to_cpu(analytic).astype(np.float64)
    n = backend.to_cpu(numeric).astype(np.float64)
    worst = np.unravel_index(int(np.argmax(np.abs(a - n))), a.shape) if a.size else ()
    worst = tuple(int(i) for i in worst)
    return GradCheckResult(
        name,
        rel_error(a, n),
        worst,
        float(a[worst]) if a.size else 0.0,
        float(n[worst]) if n.size else 0.0,
    )


def directional_derivative(loss: Callable[[], float], x, u, h: float = 1e-5) -> float:
    """Central difference of ``loss()`` along the host array ``u`` (x's shape):
    ``(loss(x + h u) - loss(x - h u)) / (2h)``; ``x`` is moved in place and restored."""
    u_dev = backend.to_device(np.asarray(u, dtype=np.float64), like=x, dtype=x.dtype)
    x += h * u_dev
    plus = loss()
    x -= 2 * h * u_dev
    minus = loss()
    x += h * u_dev
    return (plus - minus) / (2 * h)


def upstream(outs: tuple, seed: int) -> tuple:
    """One fixed random upstream gradient per output in ``outs`` (see :func:`_upstream`);
    None for an output that is not a float array or a number (token ids, a cache)."""
    douts = []
    for k, out in enumerate(outs):
        floating = isinstance(out, float) or (
            hasattr(out, "dtype") and np.dtype(out.dtype).kind == "f"
        )
        douts.append(_upstream(out, seed + 7919 * k) if floating else None)
    return tuple(douts)


def vjp_loss(outs: tuple, douts: tuple) -> float:
    """``sum_k <outs[k], douts[k]>`` as a host float (the scalar the checks differentiate);
    outputs whose upstream gradient is None do not count."""
    return sum(_host_float(out * d) for out, d in zip(outs, douts) if d is not None)


def _upstream(out, seed: int):
    """A fixed random upstream gradient shaped like ``out`` (a float for a scalar out)."""
    rng = np.random.default_rng(seed + 1)
    shape = np.shape(backend.to_cpu(out))
    dout = rng.standard_normal(shape)
    if shape == ():
        return float(dout)
    return backend.to_device(dout, like=out, dtype=out.dtype)


def check_layer(
    layer,
    inputs: tuple,
    wrt=None,
    state: Mapping[str, object] | None = None,
    before_forward: Callable[[], None] | None = None,
    h: float = 1e-5,
    seed: int = 0,
    directional: tuple[str, ...] = (),
):
    """Finite-difference check of one layer's backward pass.

    Parameters
    ----------
    layer : Layer
        Built with float64 parameters.
    inputs : tuple
        Positional arguments of ``layer.forward``; ``inputs[0]`` is the differentiable input,
        named ``"xs"`` (integer inputs such as token ids or targets are not checked).
    wrt : str or sequence of str, optional
        What to check: ``"xs"``, any of ``layer.param_names``, ``"h0"``/``"c0"`` (the initial
        state given in ``state``). Default: the input (if float) and every parameter.
    state : {"h": h0, "c": c0}, optional
        For stateful recurrent layers: ``layer.set_state(**state)`` before every forward,
        so every evaluation starts from the same state; ``"h0"``/``"c0"`` are checked
        against ``layer.dh``/``layer.dc``.
    before_forward : callable, optional
        Called before every forward, e.g. to reseed a dropout layer's ``rng`` (frozen mask).

    Returns
    -------
    GradCheckResult if ``wrt`` is a single name, else a list of them.
    """
    xs = inputs[0]
    float_input = hasattr(xs, "dtype") and np.dtype(xs.dtype).kind == "f"
    single = isinstance(wrt, str)
    if wrt is None:
        names = (["xs"] if float_input else []) + list(layer.param_names)
    else:
        names = [wrt] if single else list(wrt)

    state = dict(state or {})
    state_names = {"h0": "h", "c0": "c"}
    param_index = {n: i for i, n in enumerate(layer.param_names)}
    arrays = {}
    for name in names:
        if name == "xs":
            arrays[name] = xs
        elif name in param_index:
            arrays[name] = layer.params[param_index[name]]
        elif name in state_names and state_names[name] in state:
            arrays[name] = state[state_names[name]]
        else:
            raise ValueError(
                f"cannot check {name!r}: expected 'xs', one of {layer.param_names}, or "
                "'h0'/'c0' together with state={'h': ..., 'c': ...}"
            )

    def run_forward():
        if state:
            layer.set_state(**state)
        if before_forward is not None:
            before_forward()
        return layer.forward(*inputs)

    dout = _upstream(run_forward(), seed)

    def loss() -> float:
        return _host_float(run_forward() * dout)

    def analytic():
        layer.zero_grads()
        run_forward()
        dxs = layer.backward(dout)
        grads = {}
        for name in names:
            if name == "xs":
                grads[name] = dxs
            elif name in param_index:
                grads[name] = layer.grads[param_index[name]]
            else:
                grads[name] = getattr(layer, "d" + state_names[name])
        return grads

    results = check_gradients(loss, analytic, arrays, h=h, directional=directional, seed=seed)
    return results[0] if single else results


def check_model(
    model,
    xs,
    ts,
    names=None,
    before_forward: Callable[[], None] | None = None,
    h: float = 1e-5,
    seed: int = 0,
    directional: tuple[str, ...] = (),
) -> list[GradCheckResult]:
    """Finite-difference check of a whole model whose ``forward(xs, ts)`` returns the loss.

    Every parameter in ``model.named_params()`` (``"lstm1.Wx"``-style names) is checked, or
    only ``names``. ``before_forward`` runs before every forward (reset the recurrent state,
    reseed dropout); by default ``model.reset_state()`` is called, when the model has it.
    """
    named = dict((n, p) for n, p, _ in model.named_params())
    grads_of = dict((n, g) for n, _, g in model.named_params())
    names = list(named) if names is None else list(names)

    def prepare():
        if before_forward is not None:
            before_forward()
        elif hasattr(model, "reset_state"):
            model.reset_state()

    def loss() -> float:
        prepare()
        return _host_float(model.forward(xs, ts))

    def analytic():
        model.zero_grads()
        prepare()
        model.forward(xs, ts)
        model.backward()
        return {n: grads_of[n] for n in names}

    return check_gradients(
        loss, analytic, {n: named[n] for n in names}, h=h, directional=directional, seed=seed
    )


def report(results) -> str:
    """One line per result, for printing (the CLI's ``gradcheck`` command)."""
    return "\n".join(str(r) for r in results)


# ---------------------------------------------------------------------------------------
# The suite behind `npgated gradcheck`: every layer and the models on tiny float64 shapes.
# ---------------------------------------------------------------------------------------
def _layer_cases(rng):
    """(title, layer, inputs, state, before_forward) for every layer, tiny shapes."""
    from npgated.layers.affine import TimeAffine  # noqa: PLC0415 (layers import nothing here)
    from npgated.layers.dropout import TimeDropout  # noqa: PLC0415
    from npgated.layers.embedding import TimeEmbedding  # noqa: PLC0415
    from npgated.layers.gru import TimeGRU  # noqa: PLC0415
    from npgated.layers.loss import TimeSoftmaxWithLoss  # noqa: PLC0415
    from npgated.layers.lstm import TimeLSTM  # noqa: PLC0415
    from npgated.layers.rnn import TimeRNN  # noqa: PLC0415

    N, T, D, H, V = 3, 4, 5, 6, 7

    def arr(*shape):
        return backend.to_device(rng.standard_normal(shape) * 0.5)

    xs = arr(N, T, D)
    ts = backend.to_device(rng.integers(0, V, (N, T)))
    dropout = TimeDropout(0.4, variational=True)

    def freeze():
        dropout.rng = np.random.default_rng(7)

    def frozen(layer, seed=7):
        """A before_forward hook: reseed ``layer.rng``, so every forward draws the same masks."""

        def hook():
            layer.rng = np.random.default_rng(seed)

        return hook

    yield "TimeAffine", TimeAffine(arr(D, V), arr(V)), (xs,), None, None
    yield "TimeDropout (variational, frozen mask)", dropout, (xs,), None, freeze
    yield "TimeSoftmaxWithLoss", TimeSoftmaxWithLoss(), (arr(N, T, V), ts), None, None
    h0, c0 = arr(N, H), arr(N, H)
    yield "TimeRNN", TimeRNN(arr(D, H), arr(H, H), arr(H), stateful=True), (xs,), {"h": h0}, None
    yield (
        "TimeLSTM",
        TimeLSTM(arr(D, 4 * H), arr(H, 4 * H), arr(4 * H), stateful=True),
        (xs,),
        {"h": h0, "c": c0},
        None,
    )
    for reset_after in (False, True):
        b = arr(2, 3 * H) if reset_after else arr(3 * H)
        yield (
            f"TimeGRU (reset_after={reset_after})",
            TimeGRU(arr(D, 3 * H), arr(H, 3 * H), b, stateful=True, reset_after=reset_after),
            (xs,),
            {"h": h0},
            None,
        )
    # Regularized recurrence (Gal & Ghahramani 2016; Wan et al. 2013): masks frozen.
    reg = {"recurrent_dropout": 0.3, "weight_drop": 0.3}
    title = "(recurrent_dropout, weight_drop, frozen masks)"
    layer = TimeRNN(arr(D, H), arr(H, H), arr(H), stateful=True, **reg)
    yield f"TimeRNN {title}", layer, (xs,), {"h": h0}, frozen(layer)
    layer = TimeLSTM(arr(D, 4 * H), arr(H, 4 * H), arr(4 * H), stateful=True, **reg)
    yield f"TimeLSTM {title}", layer, (xs,), {"h": h0, "c": c0}, frozen(layer)
    for reset_after in (False, True):
        b = arr(2, 3 * H) if reset_after else arr(3 * H)
        layer = TimeGRU(
            arr(D, 3 * H), arr(H, 3 * H), b, stateful=True, reset_after=reset_after, **reg
        )
        yield (
            f"TimeGRU (reset_after={reset_after}) {title}",
            layer,
            (xs,),
            {"h": h0},
            frozen(layer),
        )
    # Embedding dropout (Gal & Ghahramani 2016): whole word types, mask frozen.
    embed = TimeEmbedding(arr(V, D), embedding_dropout=0.4)
    yield "TimeEmbedding (embedding_dropout, frozen mask)", embed, (ts,), None, frozen(embed)


def _model_cases(target):
    from npgated.models.rnnlm import BetterRnnlm, Rnnlm  # noqa: PLC0415

    if target in ("rnnlm", "all"):
        for cell in ("rnn", "lstm", "gru"):
            model = Rnnlm(11, 5, 6, cell=cell, seed=0, dtype=np.float64, init=0.5)
            yield f"Rnnlm ({cell})", model, ()
    if target in ("better", "all"):
        yield (
            "BetterRnnlm (2 layers, tied, variational dropout)",
            BetterRnnlm(
                11, 6, 6, num_layers=2, dropout_ratio=0.3, seed=0, dtype=np.float64, init=0.5
            ),
            ("embed.W",),
        )


def run_suite(target: str = "layers", seed: int = 0):
    """Yield ``(title, results, tolerance)`` for each check of the chosen target.

    ``target``: ``"layers"`` (every layer), ``"rnnlm"``, ``"better"`` or ``"all"``.
    Runs on the active backend, in float64.
    """
    rng = np.random.default_rng(seed)
    if target in ("layers", "all"):
        for title, layer, inputs, state, before in _layer_cases(rng):
            wrt = None
            if state:
                wrt = ["xs", *layer.param_names, *(("h0", "c0") if "c" in state else ("h0",))]
            yield (
                title,
                check_layer(layer, inputs, wrt=wrt, state=state, before_forward=before, seed=seed),
                1e-7,
            )
    for title, model, directional in _model_cases(target):
        N, T, V = 2, 3, model.vocab_size
        xs = rng.integers(0, V, (N, T))
        ts = rng.integers(0, V, (N, T))
        drops = [layer for name, layer in model.layers.items() if name.startswith("drop")]

        def before(model=model, drops=drops):
            model.reset_state()
            for i, layer in enumerate(drops):
                layer.rng = np.random.default_rng(100 + i)

        yield (
            title,
            check_model(model, xs, ts, before_forward=before, seed=seed, directional=directional),
            1e-6,
        )
