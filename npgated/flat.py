"""One flat buffer for a model's parameters and one for its gradients.

A model's parameters are a dozen or so arrays of very different sizes. Everything that
touches all of them alike -- zeroing the gradients, the global gradient norm, clipping, the
optimizer's element-wise update, the data-parallel Allreduce -- is the same operation on
each array in turn: a Python loop of small and large passes, and under MPI a copy of every
gradient into one contiguous buffer and back. If the arrays *are* consecutive pieces of one
buffer, each of those is one pass over that buffer.

So a model (:meth:`npgated.models.base.Model.collect_params`) allocates, per dtype, one
1-D buffer for the parameters and one for the gradients, copies every unique parameter and
gradient into its slice, and hands each layer **views** of the buffers in place of the
arrays it was built with::

    params buffer   [ embed.W | lstm1.Wx | lstm1.Wh | lstm1.b | ... | affine.W | affine.b ]
    grads buffer    [ d embed.W | ...                                         | spare (4) ]

The layer protocol is untouched: a layer's ``params`` and ``grads`` are still the arrays it
computes with, only now they are views; a layer built by hand (the book's way) keeps the
separate arrays it was given. A matrix shared by two layers (weight tying) is one array,
so it gets one slice and both layers get the same view (and the same gradient view).
Everything that reads the parameters by name -- checkpoints, the book and PyTorch
converters, :meth:`~npgated.models.base.Model.load_params` -- writes into the views in
place and is unchanged. The ``spare`` elements after the gradients are the data-parallel
exchange's four scalars (:mod:`npgated.distributed`): the gradients and the scalars the
ranks must agree on are reduced in place, in one Allreduce, with no packing.

Whole-buffer passes find the buffer from the arrays themselves (:func:`covering`): given
a list of arrays that are consecutive, C-contiguous pieces of one allocation, in order, it
returns the 1-D array they tile; for any other list it returns None and the caller loops
over the arrays as before. That is why the optimizers and :func:`npgated.optim.clip_grads`
keep their list interface and need no model: ``optimizer.update(model.params,
model.grads)`` is one pass when the lists tile buffers, the old loop otherwise.

When a model keeps separate arrays
----------------------------------
* The switch is off: ``NPGATED_FLAT=0`` in the environment, or ``flat=False`` for the model.
* Two of its parameters overlap in memory without being the same array (the book's tying,
  ``TimeAffine(E.T, b)``: ``E.T`` is a view of ``E``). Copies would break the sharing.
* After the views were handed out, something still holds a parameter's or gradient's old
  memory: a layer (or an object inside one) that kept a reference of its own that the
  model cannot re-point. The model then gives every layer its old arrays back and logs a
  warning naming the attribute; a layer class makes itself re-pointable by overriding
  :meth:`npgated.layers.base.Layer.rebind` (``TimeAffine`` does, for its fused ``[W ; b]``).

Copies of a model go through checkpoints (``named_params``): ``copy.deepcopy`` of views
makes separate arrays, and the copy would keep separate arrays that no longer tile its
buffers.
"""

from __future__ import annotations

import itertools
import logging
import os
import types

import numpy as np

from npgated import backend

logger = logging.getLogger(__name__)

__all__ = [
    "ENV_VAR",
    "SPARE",
    "FlatBuffers",
    "covering",
    "enabled",
    "layer_like",
    "overlapping",
    "stale_references",
    "tiles",
    "views_like",
    "zeros_like_all",
]

ENV_VAR = "NPGATED_FLAT"
SPARE = 4  # elements after the gradients in the gradient buffer (data parallel's scalars)


def enabled(flat: bool | None = None) -> bool:
    """Whether models use flat buffers: ``flat`` if given, else ``$NPGATED_FLAT`` (default on).

    Raises ValueError for a value of ``NPGATED_FLAT`` other than 0/1 (or no/yes, off/on,
    false/true).
    """
    if flat is not None:
        return bool(flat)
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in ("", "1", "yes", "on", "true"):
        return True
    if value in ("0", "no", "off", "false"):
        return False
    raise ValueError(
        f"{ENV_VAR}={value!r} is not a switch: set it to 0 (separate arrays per parameter) "
        "or 1 (one flat buffer per dtype, the default), or unset it"
    )


# ---------------------------------------------------------------------------------------
# where arrays live
# ---------------------------------------------------------------------------------------
def _address(a) -> int:
    """The address of ``a``'s first element (NumPy, the stand-in, CuPy)."""
    if isinstance(a, np.ndarray):  # NumPy and the stand-in (an ndarray subclass)
        return a.__array_interface__["data"][0]
    return a.data.ptr  # CuPy: a MemoryPointer


def _allocation(a):
    """The object that owns ``a``'s memory: every view of one buffer gives the same object."""
    if isinstance(a, np.ndarray):
        while isinstance(a.base, np.ndarray):  # the stand-in's views alternate types: walk
            a = a.base
        return a if a.base is None else a.base
    return a.data.mem  # CuPy: the Memory every view of one allocation points into


def _byte_range(a) -> tuple[int, int]:
    """``[low, high)``: the bytes ``a``'s elements may occupy (from its strides)."""
    low = high = _address(a)
    for n, s in zip(a.shape, a.strides):
        if s >= 0:
            high += (n - 1) * s
        else:
            low += (n - 1) * s
    return low, high + a.dtype.itemsize


def _is_array(x) -> bool:
    return isinstance(x, np.ndarray) or hasattr(x, "__cuda_array_interface__")


def covering(arrays):
    """The 1-D array of which ``arrays`` are the consecutive pieces, in order, or None.

    Parameters
    ----------
    arrays : sequence of arrays

    Returns
    -------
    (P,) array or None
        A view (never a copy) of the P elements of all ``arrays``, when every array is
        C-contiguous, they share one dtype, one backend and one allocation, and each starts
        right where the one before it ends (the layout :class:`FlatBuffers` makes). Else
        None: the caller works array by array.
    """
    arrays = list(arrays)
    if not arrays:
        return None
    first = arrays[0]
    if not _is_array(first):
        return None
    dtype, xp = first.dtype, backend.get_array_module(first)
    owner, end, total = _allocation(first), _address(first), 0
    for a in arrays:
        if a.dtype != dtype or not a.flags.c_contiguous or a.size == 0:
            return None
        if (
            backend.get_array_module(a) is not xp
            or _address(a) != end
            or _allocation(a) is not owner
        ):
            return None
        end += a.size * dtype.itemsize
        total += a.size
    if isinstance(first, np.ndarray):  # NumPy, and the stand-in keeps its type (subok)
        return np.lib.stride_tricks.as_strided(
            first, shape=(total,), strides=(dtype.itemsize,), subok=True
        )
    return xp.ndarray((total,), dtype=dtype, memptr=first.data)  # CuPy: a header, no copy


def overlapping(arrays) -> tuple[int, int] | None:
    """Indices ``(i, j)`` of two distinct arrays whose memory overlaps, or None.

    The same array object twice is not an overlap (a tied matrix); a transposed view of
    another array is.
    """
    spans, seen = [], set()
    for k, a in enumerate(arrays):
        if id(a) in seen or a.size == 0:
            continue
        seen.add(id(a))
        low, high = _byte_range(a)
        spans.append((low, high, k))
    spans.sort()
    for (_, high, i), (low, _, j) in itertools.pairwise(spans):
        if low < high:
            return (i, j)
    return None


# ---------------------------------------------------------------------------------------
# the buffers
# ---------------------------------------------------------------------------------------
class FlatBuffers:
    """One dtype's parameters and gradients, each copied into one flat buffer.

    Parameters
    ----------
    params, grads : lists of arrays
        Parallel lists (same shapes), one dtype, one backend; each parameter once.
    spare : int
        Elements reserved after the gradients (see :data:`SPARE`).

    Attributes
    ----------
    params : (P,) array
        Every parameter, in order.
    grads : (P,) array
        Every gradient, in order: the first P elements of ``storage``.
    storage : (P + spare,) array
        The gradient buffer itself (what data parallel reduces in place).
    spare : (spare,) array
        Its last elements.
    param_views, grad_views : lists of arrays
        Views of ``params`` / ``grads`` shaped like the arrays given, holding their values:
        what the layers get instead.
    size : int
        P.
    """

    def __init__(self, params, grads, spare: int = SPARE):
        params, grads = list(params), list(grads)
        xp = backend.get_array_module(params[0])
        dtype = params[0].dtype
        self.size = sum(int(p.size) for p in params)
        self.params = xp.empty(self.size, dtype=dtype)
        self.storage = xp.zeros(self.size + spare, dtype=dtype)
        self.grads, self.spare = self.storage[: self.size], self.storage[self.size :]
        self.param_views = views_like(self.params, params)
        self.grad_views = views_like(self.grads, params)
        for pv, gv, p, g in zip(self.param_views, self.grad_views, params, grads):
            pv[...] = p
            gv[...] = g

    def __repr__(self) -> str:
        return (
            f"FlatBuffers({len(self.param_views)} arrays, {self.size:,} "
            f"{self.params.dtype} elements)"
        )


# ---------------------------------------------------------------------------------------
# handing the views out, and checking nothing kept the old memory
# ---------------------------------------------------------------------------------------
_LEAVES = (str, bytes, int, float, complex, bool, type(None))


def _children(obj):
    """The objects directly inside ``obj`` worth visiting (attributes, items)."""
    if isinstance(obj, dict):
        return list(obj.items())
    if isinstance(obj, (list, tuple)):
        return list(enumerate(obj))
    if (
        hasattr(obj, "__dict__")
        and not isinstance(obj, (type, types.ModuleType))
        and (hasattr(obj, "params") or not callable(obj))
    ):  # not into functions, modules
        return list(vars(obj).items())
    return []


def _walk(roots, max_depth: int = 6):
    """``(path, object)`` for every object reachable from ``roots`` (``{name: object}``)
    through attributes, list/tuple items and dict values, each once, arrays as leaves."""
    seen = set()
    stack = [(name, obj, 0) for name, obj in reversed(list(roots.items()))]
    while stack:
        path, obj, depth = stack.pop()
        if isinstance(obj, _LEAVES) or id(obj) in seen:
            continue
        seen.add(id(obj))
        yield path, obj
        if _is_array(obj) or depth >= max_depth or isinstance(obj, np.random.Generator):
            continue
        for key, child in reversed(_children(obj)):
            sep = f"[{key!r}]" if isinstance(obj, (dict, list, tuple)) else f".{key}"
            stack.append((f"{path}{sep}", child, depth + 1))


def layer_like(roots):
    """Every object reachable from ``roots`` that holds ``params`` and ``grads`` lists:
    the layers and any layer inside one (the book's composite layers keep their parts)."""
    return [
        obj
        for _, obj in _walk(roots)
        if isinstance(getattr(obj, "params", None), list)
        and isinstance(getattr(obj, "grads", None), list)
    ]


def stale_references(roots, old_arrays, skip=()):
    """Paths of the arrays reachable from ``roots`` that overlap any of ``old_arrays``.

    Parameters
    ----------
    roots : dict ``{name: object}``
        Where to look (the model's layers, the model's own attributes).
    old_arrays : list of arrays
        The memory nothing should hold any more.
    skip : collection of ids
        Objects not to look into (the model's own ``params`` / ``grads`` lists).
    """
    spans = sorted(_byte_range(a) for a in old_arrays if a.size)
    if not spans:
        return []
    starts = [low for low, _ in spans]
    found = []
    for path, obj in _walk(roots):
        if id(obj) in skip or not _is_array(obj) or obj.size == 0:
            continue
        low, high = _byte_range(obj)
        k = int(np.searchsorted(starts, high)) - 1  # the last old span starting before high
        while k >= 0 and spans[k][1] > low:
            if spans[k][0] < high:
                found.append(path)
                break
            k -= 1
    return found


def views_like(buffer, arrays) -> list:
    """Views of the 1-D ``buffer``, consecutive, shaped like ``arrays`` (sizes must add up)."""
    out, start = [], 0
    for a in arrays:
        out.append(buffer[start : start + a.size].reshape(a.shape))
        start += a.size
    if start != buffer.size:
        raise ValueError(f"views_like: the arrays hold {start} elements, the buffer {buffer.size}")
    return out


def zeros_like_all(arrays) -> list:
    """Zero arrays shaped like ``arrays``: views of one new flat buffer when ``arrays`` tile
    one (:func:`covering`; an optimizer's slots then tile a buffer too), else one each."""
    whole = covering(arrays)
    if whole is None:
        return [backend.get_array_module(a).zeros_like(a) for a in arrays]
    return views_like(backend.get_array_module(whole).zeros_like(whole), arrays)


def tiles(arrays, buffer) -> bool:
    """True when ``arrays`` are the consecutive pieces of all of the 1-D ``buffer``."""
    arrays = list(arrays)
    whole = covering(arrays)
    return (
        whole is not None
        and whole.size == buffer.size
        and whole.dtype == buffer.dtype
        and _address(whole) == _address(buffer)
        and _allocation(arrays[0]) is _allocation(buffer)
    )
