"""What every npgated model shares: named layers, unique parameters, train/eval, state.

A model is an ordered list of named layers. At construction it collects the parameters of
all its layers **once**, keeping each array the first time it is seen (a dict keyed by
``id``, O(P)), so a matrix shared by two layers (weight tying) appears once in ``params``,
once in ``grads`` (its single, shared gradient buffer), once in ``named_params()``, once in
clipping and once in the optimizer. This replaces the book's ``remove_duplicate``, which
compares every pair of parameters by value after each backward (O(P^2)).

Names are dotted, layer then parameter: ``"embed.W"``, ``"lstm1.Wx"``, ``"affine.b"``. They
key checkpoints, optimizer state and the PyTorch interop.
"""

from __future__ import annotations

import numpy as np

from npgated import backend, parallel


def _zero(block) -> None:
    block[...] = 0


class Model:
    """Base class for models built from npgated layers.

    Subclasses build their layers, register each with :meth:`add_layer` in forward order,
    then call :meth:`collect_params`.
    """

    def __init__(self):
        self.layers: dict[str, object] = {}
        self.params: list = []
        self.grads: list = []
        self._param_names: list[str] = []
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
        """Zero every (unique) gradient buffer in place; call before each backward."""
        for g in self.grads:
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
        return {name: layer.rng.bit_generator.state
                for name, layer in self.layers.items() if hasattr(layer, "rng")}

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
