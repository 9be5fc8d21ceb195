"""What every npgated model shares: named layers, unique parameters, train/eval, state.

A model is an ordered list of named layers. At construction it collects the parameters of
all its layers **once**, keeping each array the first time it is seen (a dict keyed by
``id``, O(P)), so a matrix shared by two layers (weight tying) appears once in ``params``,
once in ``grads`` (its single, shared gradient buffer), once in ``named_params()``, once in
clipping and once in the optimizer. This replaces the book's ``remove_duplicate``, which
compares every pair of parameters by value after each backward (O(P^2)).

Names are dotted, layer then parameter: ``"embed.W"``, ``"lstm1.Wx"``, ``"affine.b"``. They
key checkpoints, optimizer state and the PyTorch interop.

Flat buffers (:mod:`npgated.flat`, on unless ``NPGATED_FLAT=0`` or ``flat=False``): after
collecting, the model copies its unique parameters into one flat buffer per dtype and its
gradients into another, and gives every layer views of them in place of its arrays
(``layer.rebind``). Zeroing the gradients is then one fill, and clipping, the optimizers and
the data-parallel Allreduce each one pass over a buffer; names, shapes and values are
unchanged, so checkpoints and converters do not notice.
"""

from __future__ import annotations

import logging

import numpy as np

from npgated import backend, flat, parallel

logger = logging.getLogger(__name__)


def _zero(block) -> None:
    block[...] = 0


class Model:
    """Base class for models built from npgated layers.

    Subclasses build their layers, register each with :meth:`add_layer` in forward order,
    then call :meth:`collect_params`.

    Parameters
    ----------
    flat : bool or None
        Move the parameters and gradients into one flat buffer per dtype at
        :meth:`collect_params` (see the module docstring); None: ``$NPGATED_FLAT``, on
        unless it is 0.

    Attributes
    ----------
    flat_buffers : list of :class:`npgated.flat.FlatBuffers`
        One per dtype (and backend) of the parameters, in the order of ``params``; empty
        when the parameters are separate arrays.
    """

    def __init__(self, *, flat: bool | None = None):
        self.layers: dict[str, object] = {}
        self.params: list = []
        self.grads: list = []
        self._param_names: list[str] = []
        self.flat_buffers: list = []
        self._flat_wanted = flat
        self.training = True

    # -- construction -----------------------------------------------------------------
    def add_layer(self, name: str, layer):
        if name in self.layers:
            raise ValueError(f"a layer named {name!r} already exists")
        self.layers[name] = layer
        return layer

    def collect_params(self) -> None:
        """Gather the unique parameter arrays of all layers (shared arrays once)."""
        seen: dict[int, int] = {}
        self.params, self.grads, self._param_names = [], [], []
        for lname, layer in self.layers.items():
            for pname, p, g in zip(layer.param_names, layer.params, layer.grads):
                if id(p) in seen:
                    if self.grads[seen[id(p)]] is not g:
                        raise RuntimeError(
                            f"{lname}.{pname} shares its array with "
                            f"{self._param_names[seen[id(p)]]} but not its gradient buffer; "
                            "tie layers with TimeAffine.tied_to so both share one buffer"
                        )
                    continue
                seen[id(p)] = len(self.params)
                self.params.append(p)
                self.grads.append(g)
                self._param_names.append(f"{lname}.{pname}")
        self.flat_buffers = []
        if self.params and flat.enabled(self._flat_wanted):
            self._flatten()

    def _flatten(self) -> None:
        """Move the unique parameters and gradients into flat buffers, one per dtype and
        backend, and re-point every layer at views of them (:mod:`npgated.flat`).

        Leaves the separate arrays (and says why, in the log) when two parameters overlap
        in memory without being one array, or when, after re-pointing, something inside a
        layer still holds the old memory.
        """
        clash = flat.overlapping(self.params) or flat.overlapping(self.grads)
        if clash is not None:
            i, j = (self._param_names[k] for k in clash)
            logger.info(
                "separate parameter arrays: %s and %s share memory without being one "
                "array (e.g. TimeAffine(E.T, b)), which copies would break",
                i,
                j,
            )
            return
        groups: dict = {}  # (dtype, backend) -> indices into params, in order
        for k, p in enumerate(self.params):
            key = (np.dtype(p.dtype).str, backend.get_array_module(p).__name__)
            groups.setdefault(key, []).append(k)
        order = [k for ks in groups.values() for k in ks]  # each group's arrays together
        old_params, old_grads = list(self.params), list(self.grads)
        self.params = [old_params[k] for k in order]
        self.grads = [old_grads[k] for k in order]
        self._param_names = [self._param_names[k] for k in order]
        buffers, start = [], 0
        for ks in groups.values():
            stop = start + len(ks)
            buffers.append(flat.FlatBuffers(self.params[start:stop], self.grads[start:stop]))
            start = stop
        new_params = [v for fb in buffers for v in fb.param_views]
        new_grads = [v for fb in buffers for v in fb.grad_views]
        self._rebind_layers(self.params, new_params, new_grads)
        stale = flat.stale_references(
            {**self.layers, **self._own_attributes()}, old_params + old_grads
        )
        if stale:
            self._rebind_layers(new_params, self.params, self.grads)  # every layer as before
            logger.warning(
                "separate parameter arrays: %s still holds a parameter's or "
                "gradient's memory after the layers got views of the flat buffers "
                "(give its layer a rebind method that re-points it)",
                stale[0],
            )
            return
        self.params, self.grads, self.flat_buffers = new_params, new_grads, buffers

    def _rebind_layers(self, old_params, new_params, new_grads) -> None:
        """Every layer (and layer inside a layer) computes with the new arrays in place of
        the old ones (matched by identity)."""
        where = {id(p): k for k, p in enumerate(old_params)}
        for layer in flat.layer_like(self.layers):
            ks = [where.get(id(p)) for p in layer.params]
            if all(k is None for k in ks):
                continue
            ps = [p if k is None else new_params[k] for p, k in zip(layer.params, ks)]
            gs = [g if k is None else new_grads[k] for g, k in zip(layer.grads, ks)]
            if hasattr(layer, "rebind"):
                layer.rebind(ps, gs)
            else:  # a layer outside npgated's protocol class: its lists, in place
                layer.params[:], layer.grads[:] = ps, gs

    def _own_attributes(self) -> dict:
        """The model's attributes other than its layers and parameter lists (for the check
        that nothing kept a parameter's old memory)."""
        mine = ("layers", "params", "grads", "_param_names", "flat_buffers", "_flat_wanted")
        return {f"model.{k}": v for k, v in vars(self).items() if k not in mine}

    # -- parameters ---------------------------------------------------------------------
    def named_params(self):
        """``[(dotted_name, param, grad), ...]``, each unique array once."""
        return list(zip(self._param_names, self.params, self.grads))

    @property
    def param_names(self) -> list[str]:
        return list(self._param_names)

    def num_params(self) -> int:
        """Number of scalars in the unique parameters (a tied matrix counted once)."""
        return int(sum(int(np.prod(p.shape)) for p in self.params))

    def zero_grads(self) -> None:
        """Zero every (unique) gradient buffer in place; call before each backward.

        With flat buffers one fill per dtype, else one per array.
        """
        for g in [fb.grads for fb in self.flat_buffers] or self.grads:
            # a large buffer in flat blocks over npgated.parallel's threads (measured: 40 MB
            # of book-better's embedding gradient 5.8 -> 3.8 ms on 2 cores; 4 MB arrays gain
            # nothing, so blocks are >= 1 Mi elements)
            parallel.each(_zero, g, min_elements=1 << 20)

    @property
    def dtype(self):
        return self.params[0].dtype

    # -- modes and state ----------------------------------------------------------------
    def train(self, mode: bool = True):
        """Training mode for every layer (dropout active, caches kept); returns self."""
        self.training = bool(mode)
        for layer in self.layers.values():
            layer.train(mode)
        return self

    def eval(self):
        """Inference mode for every layer (dropout off); returns self."""
        return self.train(False)

    def reset_state(self) -> None:
        """Forget the recurrent state carried between windows (start of a new text)."""
        for layer in self.layers.values():
            if hasattr(layer, "reset_state"):
                layer.reset_state()

    def recurrent_state(self) -> dict:
        """``{"lstm1.h": host array, "lstm1.c": ...}``: the state carried to the next window."""
        state = {}
        for name, layer in self.layers.items():
            for attr in ("h", "c"):
                value = getattr(layer, attr, None) if hasattr(layer, "reset_state") else None
                if value is not None:
                    state[f"{name}.{attr}"] = backend.to_cpu(value).copy()
        return state

    def set_recurrent_state(self, state: dict) -> None:
        """Undo :meth:`recurrent_state`: the next forward starts from this state."""
        self.reset_state()
        for name, layer in self.layers.items():
            h = state.get(f"{name}.h")
            if h is None:
                continue
            like = layer.params[0]
            c = state.get(f"{name}.c")
            c = None if c is None else backend.to_device(c, like=like, dtype=like.dtype)
            layer.set_state(backend.to_device(h, like=like, dtype=like.dtype), c)

    def rng_states(self) -> dict:
        """``{layer name: bit-generator state}`` of every stochastic layer (JSON-friendly)."""
        return {
            name: layer.rng.bit_generator.state
            for name, layer in self.layers.items()
            if hasattr(layer, "rng")
        }

    def set_rng_states(self, states: dict) -> None:
        for name, layer in self.layers.items():
            if hasattr(layer, "rng"):
                if name not in states:
                    raise ValueError(f"no saved random-generator state for layer {name!r}")
                layer.rng.bit_generator.state = states[name]

    def to_host(self) -> dict:
        """``{dotted_name: host numpy array}`` copies of every parameter."""
        return {n: backend.to_cpu(p).copy() for n, p, _ in self.named_params()}

    def load_params(self, arrays: dict) -> None:
        """Copy ``{dotted_name: array}`` into the parameters in place, checking names and shapes."""
        expected = {n: p for n, p, _ in self.named_params()}
        missing = sorted(set(expected) - set(arrays))
        unexpected = sorted(set(arrays) - set(expected))
        if missing or unexpected:
            raise ValueError(
                "parameter names differ: "
                + (f"missing {missing}" if missing else "")
                + ("; " if missing and unexpected else "")
                + (f"unexpected {unexpected}" if unexpected else "")
            )
        for name, p in expected.items():
            a = arrays[name]
            if tuple(a.shape) != tuple(p.shape):
                raise ValueError(
                    f"parameter {name}: shape {tuple(a.shape)} does not match the model's "
                    f"{tuple(p.shape)}"
                )
        for name, p in expected.items():
            p[...] = backend.to_device(arrays[name], like=p, dtype=p.dtype)

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({n}): {layer!r}" for n, layer in self.layers.items())
        return f"{type(self).__name__}(\n{inner}\n)  # {self.num_params():,} parameters"
