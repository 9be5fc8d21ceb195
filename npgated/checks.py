"""Input validation at the public boundaries: errors that teach.

Every public ``forward``/constructor calls these before touching the data, so a mistake is
reported as "what was wrong and how to fix it", never as a NumPy traceback from inside a
backward pass or, worse, a silent wrong answer (NumPy wraps negative indices; CuPy wraps
out-of-range ones).
"""

from __future__ import annotations

import numpy as np

from npgated import backend


def shape_str(shape) -> str:
    """``(3, 4)``, ``(18,)``: a shape written as Python writes tuples."""
    parts = [str(s) for s in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def check_shape(a, expected, name: str) -> None:
    """Raise ValueError unless ``a.shape`` matches ``expected`` (None entries match anything).

    The message states the expected and the actual shapes, e.g.
    ``Wx must have shape (D, 4H) = (5, 24), got (5, 20)``.
    """
    actual = tuple(a.shape)
    expected = tuple(expected)
    if len(actual) != len(expected) or any(
        e is not None and e != s for e, s in zip(expected, actual)
    ):
        want = shape_str("?" if e is None else e for e in expected)
        raise ValueError(f"{name} must have shape {want}, got {shape_str(actual)}")


def check_param_shape(a, expected, symbolic: str, name: str) -> None:
    """Like :func:`check_shape`, with the symbolic shape in the message (``"(D, 4H)"``)."""
    try:
        check_shape(a, expected, name)
    except ValueError:
        raise ValueError(
            f"{name} must have shape {symbolic} = {shape_str(expected)}, got {shape_str(a.shape)}"
        ) from None


def check_float(a, name: str, ndim: int | None = None, dtype=None, symbolic: str = "") -> None:
    """A floating-point array of rank ``ndim`` in ``dtype`` (the layer's parameter dtype)."""
    if not hasattr(a, "dtype") or not hasattr(a, "shape"):
        raise TypeError(f"{name} must be an array, got {type(a).__name__}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(
            f"{name} must have {ndim} dimensions {symbolic}, got shape {shape_str(a.shape)}"
        )
    if np.dtype(a.dtype).kind != "f":
        raise TypeError(f"{name} must be a floating-point array, got dtype {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {a.dtype} but the layer's parameters are {np.dtype(dtype)}: "
            f"convert with {name}.astype(np.{np.dtype(dtype).name}) (no silent casting)"
        )


def check_ids(ids, vocab_size: int, name: str = "ids", ignore_label=None, ndim=None) -> None:
    """Integer token ids in ``[0, vocab_size)`` (``ignore_label`` also allowed).

    Raises ValueError naming the first offending value, its position and the valid range.
    """
    if not hasattr(ids, "dtype"):
        raise TypeError(f"{name} must be an integer array, got {type(ids).__name__}")
    if np.dtype(ids.dtype).kind not in "iu":
        raise ValueError(
            f"{name} must hold integer token ids, got dtype {ids.dtype} "
            f"(convert with {name}.astype(np.int64))"
        )
    if ndim is not None and ids.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {shape_str(ids.shape)}")
    if ids.size == 0:
        return
    xp = backend.get_array_module(ids)
    bad = (ids < 0) | (ids >= vocab_size)
    if ignore_label is not None:
        bad &= ids != ignore_label
    if bool(bad.any()):
        position = tuple(int(i) for i in np.unravel_index(int(xp.argmax(bad)), ids.shape))
        value = int(ids[position])
        allowed = f"[0, {vocab_size})"
        if ignore_label is not None:
            allowed += f" or the ignore label {ignore_label}"
        raise ValueError(
            f"{name}: token id {value} at position {position} is out of range; "
            f"valid ids are {allowed} (vocabulary size {vocab_size})"
        )


def check_ratio(p, name: str = "dropout_ratio") -> float:
    """A probability in [0, 1)."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number in [0, 1), got {p!r}") from None
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {p}")
    return p


def check_positive_int(n, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return int(n)
