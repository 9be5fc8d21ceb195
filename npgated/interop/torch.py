"""PyTorch interop: the same recurrent layers and language models, in npgated and in torch.

Students check their understanding against the framework they will use next, and a
reference implementation earns trust by agreeing with it to the last digit. This module
converts in both directions and measures the agreement:

* layers: :func:`from_torch` turns a ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` (any
  ``num_layers``, ``batch_first`` either way) into one npgated Time layer per torch layer;
  :func:`to_torch` builds the torch module from a list of Time layers;
* models: :func:`model_to_torch` exports an ``Rnnlm`` / ``BetterRnnlm`` to
  :class:`NpgatedTorchLM`, an ``nn.Module`` of the same architecture (embedding, stacked
  recurrent layers, dropout, linear decoder tied to the embedding when the model is), and
  :func:`model_from_torch` imports one back, so a model trained in npgated can be evaluated or
  fine-tuned in PyTorch and vice versa;
* :func:`parity_report`: relative errors between an npgated stack and a torch module on one
  input (outputs, final states and every gradient).

The layout (npgated's parameters were laid out for this; see :mod:`npgated.layers.lstm`,
:mod:`npgated.layers.gru`), for torch layer k::

    Wx = weight_ih_lk.T     (D, kH)        k = 4 (LSTM, gates i, f, g, o), 3 (GRU, r, z, n), 1
    Wh = weight_hh_lk.T     (H, kH)
    LSTM, RNN:  b = bias_ih_lk + bias_hh_lk                (kH,)   torch adds both anyway
    GRU:        b = stack([bias_ih_lk, bias_hh_lk])        (2, 3H) TimeGRU(reset_after=True)

The GRU must keep both bias rows because the reset gate multiplies the hidden-side candidate
bias: ``n = tanh(x Wx_n + b_in + r * (h Wh_n + b_hn))`` (cuDNN's variant, npgated's
``reset_after=True``). The other GRU, ``reset_after=False`` (Cho et al. 2014, "Learning
Phrase Representations using RNN Encoder-Decoder for Statistical Machine Translation";
d2l.ai), has no torch equivalent and is refused. Going back, :func:`to_torch` puts an LSTM's
or RNN's ``b`` into ``bias_ih`` and zeros into ``bias_hh``: the torch module computes the same
function, and npgated -> torch -> npgated is exact, bit for bit. (torch -> npgated -> torch
is exact up to the rounding of ``bias_ih + bias_hh``.)

Not convertible, each refused with an error that names the option: ``bidirectional=True``,
``proj_size > 0`` (LSTM projections), ``nonlinearity='relu'``, the ``reset_after=False`` GRU,
stacks whose sizes do not chain or whose hidden sizes differ, stacks mixing cell kinds. A torch
module's inter-layer ``dropout`` has no place in a list of Time layers: :func:`from_torch`
logs a warning and drops it (insert ``TimeDropout`` layers yourself).

PyTorch is an optional dependency (``pip install npgated[torch]``); this is the only module
of npgated that imports it.

Example
-------
Check an npgated ``TimeLSTM`` against ``torch.nn.LSTM`` (five lines; the errors are ~1e-16):

>>> import numpy as np; from npgated.layers.lstm import TimeLSTM
>>> from npgated.interop.torch import to_torch, parity_report
>>> rng = np.random.default_rng(0); D, H = 5, 6
>>> lstm = TimeLSTM(rng.normal(size=(D, 4*H)), rng.normal(size=(H, 4*H)), rng.normal(size=4*H))
>>> assert max(parity_report(lstm, to_torch(lstm), rng.normal(size=(3, 4, D))).values()) < 1e-12

``parity_report`` compares the outputs, the final h and c, and the gradients w.r.t. the input
and every weight (torch's through autograd, mapped back through the layout above).
"""

from __future__ import annotations

import logging

import numpy as np

try:
    import torch
    from torch import nn
    from torch.nn import functional as F
except ImportError as exc:  # an optional dependency
    raise ImportError(
        "PyTorch is needed for npgated.interop.torch: pip install npgated[torch]"
    ) from exc

from npgated import backend
from npgated.gradcheck import rel_error
from npgated.layers.gru import TimeGRU
from npgated.layers.lstm import TimeLSTM
from npgated.layers.recurrent import RecurrentLayer
from npgated.layers.rnn import TimeRNN

__all__ = [
    "NpgatedTorchLM",
    "from_torch",
    "model_from_torch",
    "model_to_torch",
    "parity_report",
    "to_torch",
]

logger = logging.getLogger(__name__)

# kind -> (npgated Time layer, torch module class)
_KINDS = {
    "lstm": (TimeLSTM, nn.LSTM),
    "gru": (TimeGRU, nn.GRU),
    "rnn": (TimeRNN, nn.RNN),
}
_NUMPY_DTYPE = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}
_TORCH_DTYPE = {np.dtype(v): k for k, v in _NUMPY_DTYPE.items()}


# ---------------------------------------------------------------------------------------
# Kinds, options, dtypes
# ---------------------------------------------------------------------------------------
def _torch_kind(module) -> str:
    for kind, (_, torch_cls) in _KINDS.items():
        if isinstance(module, torch_cls):
            return kind
    raise TypeError(
        "expected a torch.nn.LSTM, torch.nn.GRU or torch.nn.RNN module, got "
        f"{type(module).__module__}.{type(module).__name__}"
    )


def _npgated_kind(layer) -> str:
    for kind, (np_cls, _) in _KINDS.items():
        if isinstance(layer, np_cls):
            return kind
    raise TypeError(
        f"expected npgated TimeLSTM, TimeGRU or TimeRNN layers, got {type(layer).__name__}"
    )


def _check_torch_options(module, kind: str) -> None:
    """Refuse, naming the option, what npgated's Time layers cannot compute."""
    name = f"torch.nn.{type(module).__name__}"
    if module.bidirectional:
        raise ValueError(
            f"{name} with bidirectional=True is not supported: npgated's Time layers run "
            "forward in time only (convert a bidirectional=False module)"
        )
    if getattr(module, "proj_size", 0):
        raise ValueError(
            f"{name} with proj_size={module.proj_size} is not supported: npgated's TimeLSTM "
            "has no output projection (use proj_size=0)"
        )
    if kind == "rnn" and module.nonlinearity != "tanh":
        raise ValueError(
            f"{name} with nonlinearity={module.nonlinearity!r} is not supported: npgated's "
            "TimeRNN uses tanh (nonlinearity='tanh')"
        )


def _numpy_dtype(torch_dtype, dtype=None) -> np.dtype:
    """The npgated dtype: ``dtype`` if given, else the module's own."""
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise ValueError(f"dtype must be a floating-point type, got {dtype}")
        return dtype
    if torch_dtype not in _NUMPY_DTYPE:
        raise TypeError(
            f"the module's parameters are {torch_dtype}, which NumPy has no dtype for: "
            "pass dtype=np.float32 (or np.float64)"
        )
    return np.dtype(_NUMPY_DTYPE[torch_dtype])


def _torch_dtype(dtype) -> torch.dtype:
    dtype = np.dtype(dtype)
    if dtype not in _TORCH_DTYPE:
        raise TypeError(f"no torch dtype for npgated parameters of dtype {dtype}")
    return _TORCH_DTYPE[dtype]


def _host(tensor) -> np.ndarray:
    """A host NumPy copy of a tensor, in float64 (exact for every torch float dtype)."""
    return tensor.detach().to(device="cpu", dtype=torch.float64).numpy().copy()


# ---------------------------------------------------------------------------------------
# One torch layer <-> one npgated Time layer
# ---------------------------------------------------------------------------------------
def _arrays_from_torch(module, k: int, kind: str, dtype) -> tuple:
    """Host ``(Wx, Wh, b)`` in npgated's layout from layer ``k`` of a torch module."""
    W_ih = _host(getattr(module, f"weight_ih_l{k}"))  # (kH, D)
    W_hh = _host(getattr(module, f"weight_hh_l{k}"))  # (kH, H)
    kH = W_ih.shape[0]
    if module.bias:
        b_ih = _host(getattr(module, f"bias_ih_l{k}"))
        b_hh = _host(getattr(module, f"bias_hh_l{k}"))
        b = np.stack([b_ih, b_hh]) if kind == "gru" else b_ih + b_hh
    else:  # bias=False: the same function with zero biases
        b = np.zeros((2, kH) if kind == "gru" else (kH,))
    Wx = np.ascontiguousarray(W_ih.T).astype(dtype)
    Wh = np.ascontiguousarray(W_hh.T).astype(dtype)
    return Wx, Wh, b.astype(dtype)


def _copy_into(param, array, name: str) -> None:
    """``param[...] = array`` for a torch parameter, checking the shape (copy_ broadcasts)."""
    if tuple(param.shape) != tuple(array.shape):
        raise ValueError(
            f"{name}: the torch parameter has shape {tuple(param.shape)}, the npgated array "
            f"{tuple(array.shape)}"
        )
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(array)))


def _fill_torch_layer(module, k: int, layer) -> None:
    """Copy an npgated Time layer's parameters into layer ``k`` of a torch module."""
    Wx, Wh, b = (backend.to_cpu(p) for p in layer.params)
    if isinstance(layer, TimeGRU):
        b_ih, b_hh = b[0], b[1]
    else:  # torch adds bias_ih and bias_hh: all of b in one, zeros in the other
        b_ih, b_hh = b, np.zeros_like(b)
    for name, a in (("weight_ih", Wx.T), ("weight_hh", Wh.T), ("bias_ih", b_ih), ("bias_hh", b_hh)):
        _copy_into(getattr(module, f"{name}_l{k}"), a, f"{name}_l{k}")


def from_torch(module, dtype=None, reset_after: bool = True) -> list:
    """npgated Time layers computing what a torch recurrent module computes.

    Parameters
    ----------
    module : torch.nn.LSTM, torch.nn.GRU or torch.nn.RNN (tanh)
        Any ``num_layers``, ``batch_first`` either way (npgated layers take (N, T, D)
        inputs), with or without biases (``bias=False`` maps to zero biases).
    dtype : NumPy float dtype, optional
        Dtype of the npgated parameters; default the module's (float16/32/64).
    reset_after : bool
        Must be True (the default): ``torch.nn.GRU`` is the ``reset_after=True`` GRU. Passing
        False raises, because no torch module computes the ``reset_after=False`` GRU.

    Returns
    -------
    layers : list of TimeLSTM, TimeGRU (``reset_after=True``) or TimeRNN
        One per torch layer, bottom first, parameters on the active npgated backend, with
        ``stateful=False`` (set ``layer.stateful = True`` for truncated BPTT). A stack runs
        as ``for layer in layers: xs = layer.forward(xs)``; the torch module's initial state
        ``h0[k]`` (and ``c0[k]``) goes to ``layers[k].set_state``.

    Raises
    ------
    TypeError
        For another kind of module (or a dtype NumPy lacks, such as bfloat16, without
        ``dtype``).
    ValueError
        Naming the unsupported option: ``bidirectional=True``, ``proj_size``,
        ``nonlinearity='relu'``, ``reset_after=False``.
    """
    kind = _torch_kind(module)
    _check_torch_options(module, kind)
    if kind == "gru" and not reset_after:
        raise ValueError(
            "reset_after=False is not supported: torch.nn.GRU computes the reset_after=True "
            "GRU (n = tanh(x Wx_n + b_in + r * (h Wh_n + b_hn))); no torch module computes "
            "the reset_after=False (Cho et al. / d2l) variant"
        )
    if module.num_layers > 1 and module.dropout > 0:
        logger.warning(
            "from_torch: the module's inter-layer dropout=%s is not converted (a list of Time "
            "layers has no dropout); insert TimeDropout layers between them if you need it",
            module.dropout,
        )
    dtype = _numpy_dtype(module.weight_ih_l0.dtype, dtype)
    layer_cls = _KINDS[kind][0]
    layers = []
    for k in range(module.num_layers):
        Wx, Wh, b = (backend.to_device(a) for a in _arrays_from_torch(module, k, kind, dtype))
        if kind == "gru":
            layers.append(TimeGRU(Wx, Wh, b, stateful=False, reset_after=True))
        else:
            layers.append(layer_cls(Wx, Wh, b, stateful=False))
    return layers


def _check_stack(layers) -> str:
    """Validate a list of Time layers for one torch module; return its kind."""
    if not layers:
        raise ValueError("need at least one recurrent layer")
    kinds = [_npgated_kind(layer) for layer in layers]
    if len(set(kinds)) > 1:
        names = ", ".join(type(layer).__name__ for layer in layers)
        raise ValueError(
            f"mixed cell kinds ({names}): a torch recurrent module stacks one kind of cell; "
            "convert each kind separately"
        )
    kind = kinds[0]
    for k, layer in enumerate(layers):
        if kind == "gru" and not layer.reset_after:
            raise ValueError(
                f"layer {k} is a TimeGRU with reset_after=False, which torch.nn.GRU cannot "
                "compute (torch's GRU is the reset_after=True variant): no torch equivalent"
            )
    H = layers[0].hidden_size
    for k in range(1, len(layers)):
        D_k, H_prev = layers[k].input_size, layers[k - 1].hidden_size
        if D_k != H_prev:
            raise ValueError(
                f"mismatched sizes: layer {k} has input size D = {D_k} but layer {k - 1} has "
                f"hidden size H = {H_prev}; consecutive layers must chain"
            )
        if layers[k].hidden_size != H:
            raise ValueError(
                f"mismatched sizes: layer {k} has hidden size H = {layers[k].hidden_size}, "
                f"layer 0 has H = {H}; a torch module has one hidden_size for all layers"
            )
    dtypes = {np.dtype(layer.dtype) for layer in layers}
    if len(dtypes) > 1:
        raise TypeError(f"the layers have different dtypes {sorted(map(str, dtypes))}")
    return kind


def to_torch(layers, batch_first: bool = True):
    """The torch module computing what a stack of npgated Time layers computes.

    Parameters
    ----------
    layers : TimeLSTM, TimeGRU (``reset_after=True``) or TimeRNN, or a list of them
        All of one kind, bottom first, sizes chaining (layer k + 1's D == layer k's H, one
        H for all, as torch requires).
    batch_first : bool
        Of the returned module (npgated itself is always batch first).

    Returns
    -------
    module : torch.nn.LSTM, torch.nn.GRU or torch.nn.RNN
        In the layers' dtype, on the CPU, ``num_layers = len(layers)``, ``bias=True``.
        LSTM/RNN: ``bias_ih = b``, ``bias_hh = 0`` (torch adds them, so the function is the
        same); GRU: ``bias_ih = b[0]``, ``bias_hh = b[1]``. Weights are copies.

    Raises
    ------
    ValueError
        Naming what cannot map: mixed cell kinds, a ``reset_after=False`` GRU, mismatched
        sizes between consecutive layers.
    TypeError
        For objects that are not Time layers.
    """
    if isinstance(layers, RecurrentLayer):
        layers = [layers]
    layers = list(layers)
    kind = _check_stack(layers)
    module = _KINDS[kind][1](
        input_size=layers[0].input_size,
        hidden_size=layers[0].hidden_size,
        num_layers=len(layers),
        bias=True,
        batch_first=batch_first,
        dtype=_torch_dtype(layers[0].dtype),
    )
    for k, layer in enumerate(layers):
        _fill_torch_layer(module, k, layer)
    return module


# ---------------------------------------------------------------------------------------
# Parity check
# ---------------------------------------------------------------------------------------
def _fresh_copy(layer):
    """A stateless layer sharing ``layer``'s parameter arrays, with its own gradients."""
    if isinstance(layer, TimeGRU):
        return TimeGRU(*layer.params, reset_after=layer.reset_after)
    return type(layer)(*layer.params)


def parity_report(layers, module, xs, seed: int = 0) -> dict:
    """Relative errors between an npgated stack and a torch module on one input.

    Runs both from zero initial state, then backpropagates one seeded random upstream
    gradient of the output. Neither side is changed: the npgated side runs on fresh layers
    that share the parameter arrays, the torch side uses ``torch.autograd.grad`` (no
    ``.grad`` is written).

    Parameters
    ----------
    layers : Time layer or list of them
        One per torch layer.
    module : torch.nn.LSTM, GRU or RNN
        Same weights (e.g. from :func:`to_torch` or :func:`from_torch`), no active dropout.
    xs : (N, T, D) array
        The input, batch first whatever ``module.batch_first`` says.
    seed : int
        Seeds the upstream gradient.

    Returns
    -------
    errors : dict
        ``||a - b|| / (||a|| + ||b||)`` for ``"hs"`` (top-layer outputs), ``"h"`` (final
        hidden states, all layers), ``"c"`` (LSTM cells), ``"dxs"``, and ``"dWx"``, ``"dWh"``,
        ``"db"`` (all layers; ``db`` only when the module has biases).
    """
    if isinstance(layers, RecurrentLayer):
        layers = [layers]
    kind = _torch_kind(module)
    _check_torch_options(module, kind)
    if _check_stack(list(layers)) != kind or len(layers) != module.num_layers:
        raise ValueError(
            f"the npgated stack ({len(layers)} x {type(layers[0]).__name__}) does not match "
            f"the {module.num_layers}-layer torch.nn.{type(module).__name__}"
        )
    if module.training and module.num_layers > 1 and module.dropout > 0:
        raise ValueError("the module's dropout is active: call module.eval() first")
    layers = [_fresh_copy(layer) for layer in layers]
    like = layers[0].params[0]
    dtype = np.dtype(like.dtype)
    xs_host = backend.to_cpu(xs).astype(dtype)
    dout = (
        backend.default_rng(seed)
        .standard_normal((*xs_host.shape[:2], layers[-1].hidden_size))
        .astype(dtype)
    )

    out = backend.to_device(xs_host, like=like)
    for layer in layers:
        out = layer.forward(out)
    d = backend.to_device(dout, like=like)
    for layer in reversed(layers):
        d = layer.backward(d)

    weight = module.weight_ih_l0
    x_t = torch.tensor(xs_host, dtype=weight.dtype, device=weight.device, requires_grad=True)
    out_t, state_t = module(x_t if module.batch_first else x_t.transpose(0, 1))
    if not module.batch_first:
        out_t = out_t.transpose(0, 1)
    h_t, c_t = state_t if kind == "lstm" else (state_t, None)
    names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if module.bias else ())
    tensors = [getattr(module, f"{n}_l{k}") for k in range(len(layers)) for n in names]
    loss = (out_t * torch.from_numpy(dout).to(out_t)).sum()
    grads = [_host(g) for g in torch.autograd.grad(loss, [x_t, *tensors])]

    def flat(arrays):
        return np.concatenate([backend.to_cpu(a).ravel() for a in arrays])

    errors = {
        "hs": rel_error(out, _host(out_t)),
        "h": rel_error(flat(layer.h for layer in layers), _host(h_t)),
    }
    if kind == "lstm":
        errors["c"] = rel_error(flat(layer.c for layer in layers), _host(c_t))
    errors["dxs"] = rel_error(d, grads[0])
    g = iter(grads[1:])
    dWx, dWh, db = [], [], []
    for _ in layers:
        dWx.append(next(g).T)  # dL/dWx = (dL/dweight_ih).T
        dWh.append(next(g).T)
        if module.bias:
            g_ih, g_hh = next(g), next(g)
            # LSTM/RNN: b = b_ih + b_hh, so dL/db = dL/db_ih (= dL/db_hh)
            db.append(np.stack([g_ih, g_hh]) if kind == "gru" else g_ih)
    errors["dWx"] = rel_error(flat(layer.grads[0] for layer in layers), flat(dWx))
    errors["dWh"] = rel_error(flat(layer.grads[1] for layer in layers), flat(dWh))
    if module.bias:
        errors["db"] = rel_error(flat(layer.grads[2] for layer in layers), flat(db))
    return errors


# ---------------------------------------------------------------------------------------
# Language models
# ---------------------------------------------------------------------------------------
def _lm_spec(config: dict) -> dict:
    """The architecture an ``Rnnlm``/``BetterRnnlm`` config describes (Rnnlm: 1 layer, no
    dropout, untied)."""
    cell = config.get("cell", "lstm")
    if cell not in _KINDS:
        raise ValueError(f"unknown cell {cell!r}; choose one of: {', '.join(_KINDS)}")
    if cell == "gru" and not config.get("reset_after", True):
        raise ValueError(
            "the model's GRU has reset_after=False, which torch.nn.GRU cannot compute (torch's "
            "GRU is the reset_after=True variant): no torch equivalent; train with "
            "reset_after=True to export"
        )
    return dict(
        V=int(config["vocab_size"]),
        D=int(config["wordvec_size"]),
        H=int(config["hidden_size"]),
        L=int(config.get("num_layers", 1)),
        p=float(config.get("dropout_ratio", 0.0)),
        variational=bool(config.get("variational", False)),
        tie=bool(config.get("tie_weights", False)),
        cell=cell,
    )


class _LMDropout(nn.Module):
    """Inverted dropout; ``variational``: one mask (N, 1, F) per sequence, reused over time
    (Gal & Ghahramani 2016), as npgated's ``TimeDropout(variational=True)``."""

    def __init__(self, p: float, variational: bool):
        super().__init__()
        self.p = p
        self.variational = variational

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if not self.variational:
            return F.dropout(x, self.p, training=True)
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0], 1, x.shape[2])).bernoulli_(keep) / keep
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}, variational={self.variational}"


class NpgatedTorchLM(nn.Module):
    """npgated's ``Rnnlm`` / ``BetterRnnlm`` as a torch ``nn.Module``.

    ``ids (N, T) -> embed -> drops[0] -> rnns[0] -> drops[1] -> ... -> rnns[L-1] -> drops[L]
    -> decoder -> logits (N, T, V)``, batch first. ``rnns`` holds one single-layer
    ``nn.LSTM``/``GRU``/``RNN`` per npgated layer so that dropout between them can be
    variational, as in npgated; ``decoder.weight`` *is* ``embed.weight`` when tied.

    Parameters
    ----------
    config : dict
        A model's ``config`` (``model.config``), kept as ``self.config`` for
        :func:`model_from_torch`.
    dtype : torch.dtype
        Of every parameter (the weights are initialised by torch; :func:`model_to_torch`
        overwrites them).
    """

    def __init__(self, config: dict, dtype=torch.float32):
        super().__init__()
        spec = _lm_spec(config)
        self.config = dict(config)
        self.cell = spec["cell"]
        V, D, H, L = spec["V"], spec["D"], spec["H"], spec["L"]
        if spec["tie"] and H != D:
            raise ValueError(f"tie_weights needs hidden_size == wordvec_size, got H={H}, D={D}")
        torch_cls = _KINDS[self.cell][1]
        self.embed = nn.Embedding(V, D, dtype=dtype)
        self.rnns = nn.ModuleList(
            torch_cls(D if k == 0 else H, H, batch_first=True, dtype=dtype) for k in range(L)
        )
        self.drops = nn.ModuleList(_LMDropout(spec["p"], spec["variational"]) for _ in range(L + 1))
        self.decoder = nn.Linear(H, V, dtype=dtype)
        if spec["tie"]:
            self.decoder.weight = self.embed.weight  # one Parameter (Press & Wolf 2016)

    def forward(self, xs, state=None):
        """
        Parameters
        ----------
        xs : (N, T) integer tensor (or array) of token ids
        state : optional
            LSTM: ``(h, c)``, each (L, N, H); GRU/RNN: ``h`` (L, N, H), as torch's stacked
            modules; None starts from zeros.

        Returns
        -------
        logits : (N, T, V) tensor
        state : the final state, in the format of ``state`` (detach it between windows
            for truncated BPTT).
        """
        xs = torch.as_tensor(xs, device=self.embed.weight.device).long()
        L = len(self.rnns)
        if state is None:
            per_layer = [None] * L
        elif self.cell == "lstm":
            h, c = state
            per_layer = [(h[k : k + 1], c[k : k + 1]) for k in range(L)]
        else:
            per_layer = [state[k : k + 1] for k in range(L)]
        x = self.drops[0](self.embed(xs))
        finals = []
        for k, rnn in enumerate(self.rnns):
            x, s = rnn(x, per_layer[k])
            finals.append(s)
            x = self.drops[k + 1](x)
        logits = self.decoder(x)
        if self.cell == "lstm":
            new_state = (torch.cat([s[0] for s in finals]), torch.cat([s[1] for s in finals]))
        else:
            new_state = torch.cat(finals)
        return logits, new_state

    def loss(self, xs, ts, state=None):
        """``(mean cross-entropy per target token, final state)``; targets ``-1`` ignored,
        as npgated's ``TimeSoftmaxWithLoss``."""
        logits, state = self(xs, state)
        ts = torch.as_tensor(ts, device=logits.device).long()
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ts.reshape(-1), ignore_index=-1
        )
        return loss, state


def _recurrent_layers(model, spec) -> list:
    names = [f"{spec['cell']}{k}" for k in range(1, spec["L"] + 1)]
    missing = [n for n in names if n not in model.layers]
    if missing:
        raise ValueError(f"the model has no layer(s) {missing} that its config describes")
    return [model.layers[n] for n in names]


def _assign(param, array, name: str) -> None:
    """npgated ``param[...] = array`` (host), checking the shape."""
    if tuple(param.shape) != tuple(array.shape):
        raise ValueError(
            f"{name}: shape {tuple(array.shape)} from torch does not match the model's "
            f"{tuple(param.shape)}"
        )
    param[...] = backend.to_device(array, like=param, dtype=param.dtype)


def model_to_torch(model) -> NpgatedTorchLM:
    """Export an npgated ``Rnnlm``/``BetterRnnlm`` to an equivalent torch module.

    Parameters
    ----------
    model : Rnnlm or BetterRnnlm
        GRU models must use ``reset_after=True``.

    Returns
    -------
    NpgatedTorchLM
        On the CPU, in the model's dtype, in the model's train/eval mode, with copies of its
        weights (tied when the model is) and its config. In eval mode and float64 its loss
        equals npgated's to rounding; dropout draws differ (torch's RNG).
    """
    spec = _lm_spec(model.config)
    embed, affine = model.layers["embed"], model.layers["affine"]
    cells = _recurrent_layers(model, spec)
    _check_stack(cells)
    tied = affine.params[0] is embed.params[0]
    if tied != spec["tie"]:
        raise ValueError(
            f"config says tie_weights={spec['tie']} but the output layer "
            f"{'shares' if tied else 'does not share'} the embedding matrix"
        )
    tlm = NpgatedTorchLM(model.config, dtype=_torch_dtype(model.dtype))
    _copy_into(tlm.embed.weight, backend.to_cpu(embed.params[0]), "embed.weight")
    for k, cell in enumerate(cells):
        _fill_torch_layer(tlm.rnns[k], 0, cell)
    if not tied:
        _copy_into(tlm.decoder.weight, backend.to_cpu(affine.params[0]).T, "decoder.weight")
    if affine.has_bias:
        _copy_into(tlm.decoder.bias, backend.to_cpu(affine.params[1]), "decoder.bias")
    else:
        with torch.no_grad():
            tlm.decoder.bias.zero_()
    return tlm.train(model.training)


def model_from_torch(torch_lm: NpgatedTorchLM, dtype=None, seed=None):
    """Import an :class:`NpgatedTorchLM` back into npgated (e.g. after fine-tuning in torch).

    Parameters
    ----------
    torch_lm : NpgatedTorchLM
        Its ``config`` rebuilds the model with :func:`npgated.models.rnnlm.build_model`.
    dtype : NumPy float dtype, optional
        Default the torch module's.
    seed : int, optional
        Seeds the model's dropout generators (the weights come from ``torch_lm``).

    Returns
    -------
    Rnnlm or BetterRnnlm
        On the active backend, in ``torch_lm``'s train/eval mode. ``model_to_torch`` then
        ``model_from_torch`` gives back identical parameters.
    """
    from npgated.models.rnnlm import build_model  # noqa: PLC0415 (models need every layer)

    if not isinstance(torch_lm, NpgatedTorchLM):
        raise TypeError(
            "model_from_torch reads the config stored on an NpgatedTorchLM (made by "
            f"model_to_torch or NpgatedTorchLM(config)), got {type(torch_lm).__name__}"
        )
    spec = _lm_spec(torch_lm.config)
    tied = torch_lm.decoder.weight is torch_lm.embed.weight
    if tied != spec["tie"]:
        raise ValueError(
            f"config says tie_weights={spec['tie']} but decoder.weight "
            f"{'is' if tied else 'is not'} embed.weight"
        )
    dtype = _numpy_dtype(torch_lm.embed.weight.dtype, dtype)
    model = build_model(torch_lm.config, dtype=dtype, seed=seed)
    embed, affine = model.layers["embed"], model.layers["affine"]
    _assign(embed.params[0], _host(torch_lm.embed.weight), "embed.weight")
    for k, cell in enumerate(_recurrent_layers(model, spec)):
        arrays = _arrays_from_torch(torch_lm.rnns[k], 0, spec["cell"], dtype)
        for name, p, a in zip(cell.param_names, cell.params, arrays):
            _assign(p, a, f"rnns.{k}.{name}")
    if not tied:
        _assign(affine.params[0], _host(torch_lm.decoder.weight).T, "decoder.weight")
    if affine.has_bias:
        _assign(affine.params[1], _host(torch_lm.decoder.bias), "decoder.bias")
    return model.train(torch_lm.training)
