"""Run the gradient checks of :mod:`npgated.testing` on code in a user's own file.

``npgated gradcheck my_layers.py:NAME`` and ``npgated exercise check`` load a Python file by
its path and find ``NAME`` in it:

* a **class** with the book's layer protocol is built with small random float64 arrays
  chosen from its constructor's signature (the rule below), and its ``forward``'s
  arguments are made the same way;
* a **function** taking no arguments is a factory: it returns ``(layer, inputs)`` or
  ``(layer, inputs, options)``, ``options`` a dict of :func:`npgated.testing.assert_gradients`
  keywords (``gates``, ``state``, ``wrt``, ``before_forward``, ``tol``);
* two functions, ``forward_fn,backward_fn``, are a pair of step functions, checked with
  :func:`npgated.testing.assert_step_backward` on arguments made by the same rule.

The rule for shapes (sizes N = 3, T = 4, D = 5, H = 6; k gate blocks: 4 when the name of the
class, one of its base classes or the function contains "lstm", 3 for "gru", else 1, or
``len(gates)`` when given):

=====================================  ====================
argument name                          shape
=====================================  ====================
``Wx``, ``W_x...`` (input weights)     (D, kH)
``Wh``, ``W_h...``, ``U...``           (H, kH)
``b...`` with recurrent weights        (kH,), or (2, kH) when the constructor's
                                       ``reset_after`` defaults to True
``W`` (an affine layer)                (D, H), its ``b...`` (H,)
``xs`` (forward)                       (N, T, D): a Time layer
``x``                                  (N, D)
``hs``                                 (N, T, H)
``h_prev``, ``prev_h``, ``h``, ``h0``  (N, H); likewise ``c...``
=====================================  ====================

A trailing digit is ignored (``Wx1``, ``b2``). Arguments with defaults keep them. A Time
layer with ``set_state`` starts every evaluation from a random ``h0`` (and ``c0`` when it
has a memory cell), whose gradients ``dh``/``dc`` are checked too. Anything else: the error
says which argument, and to give a factory instead.

The file is executed as ``python FILE`` would see it: its own folder is first on
``sys.path`` while it is imported (so that it can import the modules beside it), and not
afterwards.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
import zlib
from pathlib import Path

import numpy as np

SIZES = {"N": 3, "T": 4, "D": 5, "H": 6}


class UserCodeError(ValueError):
    """The target cannot be used as given (no such file or name, a shape the rule cannot
    infer): the CLI reports it in one line with exit code 2."""


def split_target(target: str):
    """``"path/my_layers.py:MyLSTM"`` -> (Path, "MyLSTM"); None when ``target`` is not of
    that form."""
    path, sep, name = target.rpartition(":")
    if not sep or not path.endswith(".py"):
        return None
    if not name:
        raise UserCodeError(
            f"{target}: name what to check after the colon, e.g. {path}:MyLSTM or {path}:make_layer"
        )
    return Path(path), name


def load_module(path):
    """Import the Python file at ``path`` as a fresh module (its folder on ``sys.path``
    only while it is imported) and return it."""
    path = Path(path)
    if not path.is_file():
        raise UserCodeError(f"{path}: no such file")
    resolved = path.resolve()
    name = (
        f"_npgated_user_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_"
        f"{zlib.crc32(str(resolved).encode()):08x}"
    )
    spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(spec)
    folder = str(resolved.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    sys.modules[name] = module  # dataclasses and NamedTuples look their module up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    return module


def find(module, name: str, path):
    obj = getattr(module, name, None)
    if obj is None:
        names = sorted(
            n
            for n, v in vars(module).items()
            if not n.startswith("_")
            and (inspect.isclass(v) or inspect.isfunction(v))
            and getattr(v, "__module__", None) == module.__name__
        )
        raise UserCodeError(f"{path} has no {name!r}; it defines: {', '.join(names) or 'nothing'}")
    return obj


# ---------------------------------------------------------------------------------------
# The shape rule
# ---------------------------------------------------------------------------------------
def gate_count(name: str, gates: str | None) -> int:
    if gates:
        return len(gates)
    low = name.lower()
    return 4 if "lstm" in low else 3 if "gru" in low else 1


def _base(name: str) -> str:
    return re.sub(r"\d+$", "", name)


def _kind(name: str) -> str | None:
    base = _base(name)
    if re.match(r"^(Wx|W_x|Wi|W_i)", base):
        return "input"
    if re.match(r"^(Wh|W_h|U)", base):
        return "recurrent"
    if base == "W":
        return "affine"
    if re.match(r"^b", base):
        return "bias"
    return None


def _shape_for(arg: str, kinds: set, k: int, reset_after: bool, owner: str):
    N, T, D, H = (SIZES[s] for s in "NTDH")
    kind = _kind(arg)
    if kind == "input":
        return (D, k * H)
    if kind == "recurrent":
        return (H, k * H)
    if kind == "affine":
        return (D, H)
    if kind == "bias":
        if {"input", "recurrent"} & kinds:
            return (2, k * H) if reset_after else (k * H,)
        if "affine" in kinds:
            return (H,)
    return _input_shape(arg, owner)


def _input_shape(arg: str, owner: str):
    N, T, D, H = (SIZES[s] for s in "NTDH")
    base = _base(arg)
    shapes = {"xs": (N, T, D), "x": (N, D), "hs": (N, T, H)}
    if base in shapes:
        return shapes[base]
    if re.match(r"^(h|c)(_prev|_next|0)?$|^prev_(h|c)$", base):
        return (N, H)
    raise UserCodeError(
        f"cannot infer the shape of {owner}'s argument {arg!r} from its name (the rule: Wx "
        "(D, kH), Wh (H, kH), b (kH,), W (D, H), xs (N, T, D), x (N, D), h_prev/c_prev (N, H); "
        "see npgated.usercode); write a factory instead -- def make_layer(): return layer, "
        "inputs -- and run npgated gradcheck FILE.py:make_layer"
    )


def _required(func, skip_self: bool):
    params = list(inspect.signature(func).parameters.values())
    if skip_self:
        params = params[1:]
    required = [
        p
        for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    defaults = {p.name: p.default for p in params if p.default is not p.empty}
    return [p.name for p in required], defaults


def _arrays(names, k, reset_after, owner, rng):
    kinds = {_kind(n) for n in names}
    return [rng.standard_normal(_shape_for(n, kinds, k, reset_after, owner)) * 0.5 for n in names]


def _shapes(names, arrays) -> str:
    return ", ".join(f"{n} {tuple(x.shape)}" for n, x in zip(names, arrays))


def build_layer(cls, *, gates=None, seed: int = 0):
    """``(layer, inputs, options, description)`` for a layer class, by the shape rule."""
    from npgated.testing import known_gates  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    names, defaults = _required(cls.__init__, skip_self=True)
    k = gate_count(" ".join(c.__name__ for c in cls.__mro__), gates)  # MyLSTM's subclasses too
    owner = f"{cls.__name__}.__init__"
    params = _arrays(names, k, bool(defaults.get("reset_after", False)), owner, rng)
    layer = cls(*params)
    if gates is None:
        gates = known_gates(layer)
        if gates is None and k == 1 and any(_kind(n) == "recurrent" for n in names):
            gates = ""
        k = len(gates) if gates else k
    in_names, _ = _required(layer.forward, skip_self=False)
    inputs = _arrays(in_names, k, False, f"{cls.__name__}.forward", rng)
    options = {"gates": gates}
    sequence = any(x.ndim >= 3 for x in inputs)
    described = [f"{n} {tuple(p.shape)}" for n, p in zip(names, params)]
    text = (
        f"built {cls.__name__}({', '.join(described)}) with random float64 arrays "
        f"(seed {seed}); forward({_shapes(in_names, inputs)})"
    )
    if sequence and hasattr(layer, "set_state"):
        H = SIZES["H"]
        state = {"h": rng.standard_normal((SIZES["N"], H)) * 0.5}
        has_cell = getattr(layer, "has_cell", None)
        if has_cell or (has_cell is None and k == 4):
            state["c"] = rng.standard_normal((SIZES["N"], H)) * 0.5
        options["state"] = state
        text += "; initial state " + ", ".join(f"{s}0" for s in state)
    return layer, tuple(inputs), options, text


def step_inputs(forward_fn, *, gates=None, seed: int = 0):
    """``(inputs, description)`` for a step forward function, by the shape rule."""
    rng = np.random.default_rng(seed)
    names, _ = _required(forward_fn, skip_self=False)
    k = gate_count(forward_fn.__name__, gates)
    inputs = _arrays(names, k, False, forward_fn.__name__, rng)
    text = (
        f"{forward_fn.__name__}({_shapes(names, inputs)}) with random float64 arrays (seed {seed})"
    )
    return tuple(inputs), text


def from_factory(factory):
    """``(layer, inputs, options)`` from a factory's return value, validated."""
    made = factory()
    if not isinstance(made, tuple) or len(made) not in (2, 3):
        raise UserCodeError(
            f"{factory.__name__}() must return (layer, inputs) or (layer, inputs, options), got "
            f"{type(made).__name__}"
        )
    layer, inputs = made[0], made[1]
    options = dict(made[2]) if len(made) == 3 else {}
    return layer, inputs, options


class UserCodeRaised(Exception):
    """The user's code raised while it was built or checked; ``text`` is the traceback."""

    def __init__(self, what: str, exc: BaseException):
        import traceback  # noqa: PLC0415

        self.what = what
        self.text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        super().__init__(f"{what} raised {type(exc).__name__}: {exc}")


def check_target(target: str, *, gates: str | None = None, seed: int = 0, tol: float = 1e-7):
    """Check ``FILE.py:NAME`` (a layer class, a factory, or ``forward_fn,backward_fn``).

    Returns
    -------
    (report, description) : (npgated.testing.GradientReport, str)

    Raises
    ------
    UserCodeError
        The target cannot be used (no such file or name, shapes not inferable, the
        protocol not followed).
    UserCodeRaised
        The user's code raised (the traceback is in its ``text``).
    """
    from npgated import testing  # noqa: PLC0415

    split = split_target(target)
    if split is None:
        raise UserCodeError(f"{target!r} is not FILE.py:NAME")
    path, name = split
    try:
        module = load_module(path)
    except UserCodeError:
        raise
    except Exception as exc:  # noqa: BLE001 (the user's file itself failed)
        raise UserCodeRaised(f"importing {path}", exc) from exc
    if "," in name:
        fwd_name, _, bwd_name = name.partition(",")
        forward_fn, backward_fn = find(module, fwd_name, path), find(module, bwd_name, path)
        inputs, text = step_inputs(forward_fn, gates=gates, seed=seed)
        try:
            report = testing.step_backward_report(
                forward_fn, backward_fn, inputs, gates=gates, tol=tol, seed=seed
            )
        except testing.ProtocolError as exc:
            raise UserCodeError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001
            raise UserCodeRaised(f"{fwd_name}/{bwd_name}", exc) from exc
        return report, text
    obj = find(module, name, path)
    try:
        if inspect.isclass(obj):
            layer, inputs, options, text = build_layer(obj, gates=gates, seed=seed)
        elif callable(obj):
            layer, inputs, options = from_factory(obj)
            text = f"{name}() built {type(layer).__name__}"
        else:
            raise UserCodeError(
                f"{path}:{name} is a {type(obj).__name__}, not a layer class or a factory function"
            )
    except UserCodeError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise UserCodeRaised(f"building {name}", exc) from exc
    if gates is not None:
        options["gates"] = gates
    options.setdefault("tol", tol)
    options.setdefault("seed", seed)
    try:
        report = testing.gradient_report(layer, inputs, **options)
    except testing.ProtocolError as exc:
        raise UserCodeError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001
        raise UserCodeRaised(f"{type(layer).__name__}", exc) from exc
    return report, text
