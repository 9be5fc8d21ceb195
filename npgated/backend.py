"""The array backend: NumPy by default, CuPy on a GPU, and a stand-in for testing.

This module is the one place that knows which array library is active. Everything else
follows two rules (the Chainer idiom):

1. Code that *receives* arrays asks them where they live::

       xp = backend.get_array_module(xs)
       hs = xp.empty((N, T + 1, H), dtype=xs.dtype)

2. Code that *creates* arrays from nothing (parameter initialisation) builds them on the
   host with NumPy and moves them with ``to_device``, which reads the process-wide switch.

The switch is set with ``use("numpy" | "cupy" | "fake-cupy")`` or, before the first call,
with the environment variable ``NPGATED_BACKEND``. It is read when used, never at import.

``"fake-cupy"`` is test support, not a user feature: a NumPy-backed stand-in whose arrays
(:class:`FakeDeviceArray`) behave like CuPy's in the ways that break real GPU code. They
refuse to be mixed with plain NumPy arrays, and refuse NumPy functions CuPy lacks (for
example ``np.add.at``). The test-suite runs every layer on it so that CuPy-breaking
mistakes are caught on machines without a GPU.

Randomness never comes from global state: :func:`default_rng` returns a seeded host
``numpy.random.Generator``; stochastic layers draw from their own generator on the host and
move the draw to the device with :func:`to_device` (``like=`` the data), so that a seed gives
the same masks on every backend.
"""

from __future__ import annotations

import os
import types

import numpy as np

BACKENDS = ("numpy", "cupy", "fake-cupy")
_ENV_VAR = "NPGATED_BACKEND"

# The library's only mutable global: the name of the active backend (None = not chosen yet,
# read NPGATED_BACKEND on first use).
_active: str | None = None


class BackendError(RuntimeError):
    """The requested backend cannot be used on this machine."""


# ---------------------------------------------------------------------------------------
# The switch
# ---------------------------------------------------------------------------------------
def use(name: str) -> None:
    """Make ``name`` the active backend for arrays created from now on.

    Parameters
    ----------
    name : {"numpy", "cupy", "fake-cupy"}

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones).
    BackendError
        For ``"cupy"`` when CuPy is not installed or no GPU is usable.
    """
    global _active
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid backends are: {', '.join(BACKENDS)}")
    if name == "cupy":
        _import_cupy()  # raises a BackendError that says what is missing
    _active = name


def current() -> str:
    """The name of the active backend (reads ``NPGATED_BACKEND`` on first use)."""
    global _active
    if _active is None:
        name = os.environ.get(_ENV_VAR, "numpy").strip().lower() or "numpy"
        if name not in BACKENDS:
            raise ValueError(
                f"{_ENV_VAR}={name!r} is not a backend; valid backends are: {', '.join(BACKENDS)}"
            )
        use(name)
    return _active


def xp():
    """The array module of the active backend (``numpy``, ``cupy`` or the stand-in)."""
    name = current()
    if name == "cupy":
        return _import_cupy()
    if name == "fake-cupy":
        return fakecupy
    return np


def _import_cupy():
    try:
        import cupy  # noqa: PLC0415  (the only place CuPy is imported)
    except ImportError as exc:
        raise BackendError(
            "backend 'cupy' needs CuPy, which is not installed: "
            "run `pip install npgated[gpu]` (CUDA 12) or pick another backend "
            f"({exc})"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken
        raise BackendError(
            f"backend 'cupy': CuPy is installed but no usable GPU was found ({exc}); "
            "use backend 'numpy' on this machine"
        ) from None
    if count < 1:
        raise BackendError(
            "backend 'cupy': CuPy is installed but no GPU is visible "
            "(check CUDA_VISIBLE_DEVICES); use backend 'numpy' on this machine"
        )
    return cupy


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        _import_cupy()
    except BackendError:
        return False
    return True


# ---------------------------------------------------------------------------------------
# Where does an array live?
# ---------------------------------------------------------------------------------------
def get_array_module(*arrays):
    """The array module the given arrays belong to (NumPy, CuPy or the stand-in).

    Never imports CuPy: a CuPy array can only exist if CuPy was already imported.
    """
    for a in arrays:
        if isinstance(a, FakeDeviceArray):
            return fakecupy
        cls = type(a)
        if cls.__module__.startswith("cupy"):
            import cupy  # noqa: PLC0415  (already imported: a CuPy array exists)

            return cupy
    return np


def is_device_array(a) -> bool:
    """True for CuPy arrays and the stand-in's arrays."""
    return get_array_module(a) is not np


def to_cpu(a):
    """A host ``numpy.ndarray`` holding the values of ``a`` (a copy only when needed)."""
    if isinstance(a, FakeDeviceArray):
        return np.array(a.view(np.ndarray))
    if is_device_array(a):
        return a.get()
    return np.asarray(a)


def to_device(a, like=None, dtype=None):
    """``a`` as an array of the active backend (or of the backend ``like`` lives on).

    Parameters
    ----------
    a : array_like
        Host or device data.
    like : array, optional
        Put the result where this array lives instead of on the active backend.
    dtype : dtype, optional
        Convert to this dtype on the way.
    """
    mod = get_array_module(like) if like is not None else xp()
    if mod is np:
        return np.asarray(to_cpu(a), dtype=dtype)
    if mod is fakecupy:
        return fakecupy.asarray(to_cpu(a), dtype=dtype)
    return mod.asarray(a, dtype=dtype)


def default_rng(seed=None) -> np.random.Generator:
    """A seeded host random generator (``numpy.random.Generator``, PCG64).

    Used for initialisation, dropout masks, batching offsets and sampling; its
    ``bit_generator.state`` is what checkpoints save, so runs resume exactly.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def scatter_add(target, indices, values) -> None:
    """``target[indices[k]] += values[k]`` for every k, repeated indices summed. In place.

    Parameters
    ----------
    target : (V, D) array
    indices : (K,) integer array, on the same backend as ``target``
    values : (K, D) array

    Notes
    -----
    ``np.add.at`` handles repeated indices but was historically slow (numpy#5922; much
    faster since NumPy 1.25). CuPy spells it ``cupyx.scatter_add`` (newer releases also
    accept ``cupy.add.at``). This shim is the one place that chooses.

    On NumPy, a C-contiguous (V, D) target is updated through its flat (V * D,) view, with
    the flat positions ``indices[k] * D + j`` of every element: ``np.add.at`` has a fast path
    for one-dimensional operands only, and this is 5x faster than the row-wise call at
    (700, 650) values into (10,000, 650) (measured, NumPy 2.4).
    """
    mod = get_array_module(target)
    if mod is np:
        if target.ndim == 2 and target.flags.c_contiguous:
            D = target.shape[1]
            flat_positions = np.asarray(indices, dtype=np.intp)[:, None] * D + np.arange(D)
            np.add.at(
                target.reshape(-1), flat_positions.reshape(-1), np.asarray(values).reshape(-1)
            )
        else:
            np.add.at(target, indices, values)
    elif mod is fakecupy:
        fakecupy.scatter_add(target, indices, values)
    else:
        import cupyx  # noqa: PLC0415

        cupyx.scatter_add(target, indices, values)


# ---------------------------------------------------------------------------------------
# The stand-in for CuPy ("fake-cupy")
# ---------------------------------------------------------------------------------------
class MixedBackendError(TypeError):
    """A device array was combined with a host NumPy array (CuPy refuses this too)."""


class UnsupportedOnDeviceError(TypeError):
    """A NumPy function CuPy does not provide was applied to a device array."""


def _is_host_array(x) -> bool:
    # CuPy accepts Python and NumPy scalars (and 0-d arrays), but not host arrays.
    return isinstance(x, np.ndarray) and not isinstance(x, FakeDeviceArray) and x.ndim > 0


def _strip(x):
    """View a FakeDeviceArray (or a tuple/list of them) as plain ndarrays."""
    if isinstance(x, FakeDeviceArray):
        return x.view(np.ndarray)
    if isinstance(x, tuple):
        return tuple(_strip(v) for v in x)
    if isinstance(x, list):
        return [_strip(v) for v in x]
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items()}
    return x


def _wrap(x):
    """Wrap results (arrays, tuples of arrays) back into FakeDeviceArray."""
    if isinstance(x, np.ndarray) and not isinstance(x, FakeDeviceArray):
        return x.view(FakeDeviceArray)
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _refuse_host(args, what: str) -> None:
    for a in args:
        if isinstance(a, (tuple, list)):
            _refuse_host(a, what)
        elif _is_host_array(a):
            raise MixedBackendError(
                f"{what}: a device array was mixed with a host numpy.ndarray of shape "
                f"{a.shape}; move it first with backend.to_device(a, like=...) "
                "(CuPy refuses implicit host/device mixing)"
            )


# Module functions CuPy provides that npgated may call on device arrays. A NumPy function
# outside this set applied to a device array is refused, as CuPy would refuse it.
_CUPY_FUNCTIONS = frozenset(
    """
    abs absolute add all allclose amax amin any arange argmax argmin argsort around array
    array_equal asarray ascontiguousarray astype atleast_1d atleast_2d bincount broadcast_to
    ceil clip concatenate copy copyto count_nonzero cumsum diag diagonal divide dot einsum
    empty empty_like equal exp expand_dims eye flip floor full full_like isclose isfinite
    isinf isnan linspace log log1p logaddexp matmul max maximum mean min minimum moveaxis
    multiply negative nonzero ones ones_like outer power prod ravel reciprocal repeat reshape
    round shape sign sort split sqrt square squeeze stack std subtract sum swapaxes take
    take_along_axis tanh tile transpose tensordot tril triu unique var vstack hstack where
    zeros zeros_like cos sin sinh cosh expm1 float_power true_divide put_along_axis
    searchsorted pad argpartition partition cumprod diff fill_diagonal linalg
    """.split()
)

# Module attributes that are not functions of arrays (dtypes, constants) pass through.
_PASS_THROUGH = frozenset(
    """
    float16 float32 float64 int8 int16 int32 int64 uint8 bool_ intp dtype ndarray newaxis
    pi e inf nan finfo iinfo result_type promote_types can_cast issubdtype floating integer
    signedinteger number generic
    """.split()
)


class FakeDeviceArray(np.ndarray):
    """A NumPy array pretending to live on a GPU (see the module docstring).

    It behaves like a ``cupy.ndarray`` for what matters to portable code:
    operations with host ``numpy.ndarray`` operands raise :class:`MixedBackendError`,
    ``ufunc.at`` (``np.add.at``) raises :class:`UnsupportedOnDeviceError`, NumPy functions
    CuPy lacks raise, and ``.get()`` copies to the host.
    """

    __array_priority__ = 100

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if method == "at":
            raise UnsupportedOnDeviceError(
                f"np.{ufunc.__name__}.at on a device array: use backend.scatter_add "
                "(CuPy spells it cupyx.scatter_add)"
            )
        _refuse_host(inputs, f"np.{ufunc.__name__}")
        if out is not None:
            _refuse_host(out, f"np.{ufunc.__name__}(out=...)")
            kwargs["out"] = tuple(_strip(o) for o in out)
        result = getattr(ufunc, method)(*_strip(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        name = func.__name__
        if name not in _CUPY_FUNCTIONS:
            raise UnsupportedOnDeviceError(
                f"np.{name} applied to a device array: CuPy has no such function "
                "(or npgated does not expect to need it on the GPU)"
            )
        _refuse_host(args, f"np.{name}")
        _refuse_host(tuple(kwargs.values()), f"np.{name}")
        return _wrap(func(*_strip(args), **_strip(kwargs)))

    def __getitem__(self, index):
        _refuse_host(index if isinstance(index, tuple) else (index,), "indexing")
        return _wrap(np.ndarray.__getitem__(self.view(np.ndarray), _strip(index)))

    def __setitem__(self, index, value):
        _refuse_host(index if isinstance(index, tuple) else (index,), "indexing")
        _refuse_host((value,), "assignment")
        np.ndarray.__setitem__(self.view(np.ndarray), _strip(index), _strip(value))

    def get(self) -> np.ndarray:
        """Copy to a host ``numpy.ndarray`` (``cupy.ndarray.get``)."""
        return np.array(self.view(np.ndarray))

    def __reduce__(self):  # pickling a device array would silently move it
        raise TypeError("device arrays cannot be pickled; use backend.to_cpu first")


class _FakeCupyModule(types.ModuleType):
    """The stand-in's array module: NumPy's functions, returning FakeDeviceArray."""

    def __init__(self):
        super().__init__("fakecupy", "NumPy-backed stand-in for the cupy module (tests).")
        self.random = None  # device RNGs differ between NumPy and CuPy: draw on the host

    def __getattr__(self, name):
        if name in _PASS_THROUGH:
            return getattr(np, name)
        if name not in _CUPY_FUNCTIONS:
            raise AttributeError(
                f"fakecupy has no {name!r}: CuPy lacks it or npgated does not use it"
            )
        target = getattr(np, name)
        if isinstance(target, types.ModuleType):  # e.g. linalg
            return _FakeSubmodule(target)

        def device_function(*args, **kwargs):
            _refuse_host(args, f"fakecupy.{name}")
            _refuse_host(tuple(kwargs.values()), f"fakecupy.{name}")
            return _wrap(target(*_strip(args), **_strip(kwargs)))

        device_function.__name__ = name
        return device_function

    @staticmethod
    def asarray(a, dtype=None):
        """Host or device data to a device array (``cupy.asarray`` accepts both)."""
        if isinstance(a, FakeDeviceArray):
            return a if dtype is None or a.dtype == dtype else a.astype(dtype)
        return np.asarray(a, dtype=dtype).view(FakeDeviceArray)

    array = asarray

    @staticmethod
    def asnumpy(a) -> np.ndarray:
        return to_cpu(a)

    @staticmethod
    def get_array_module(*arrays):
        return get_array_module(*arrays)

    @staticmethod
    def scatter_add(target, indices, values) -> None:
        """``cupyx.scatter_add``: unbuffered ``target[indices] += values``."""
        _refuse_host((indices, values), "scatter_add")
        np.add.at(target.view(np.ndarray), _strip(indices), _strip(values))


class _FakeSubmodule:
    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        target = getattr(self._module, name)

        def device_function(*args, **kwargs):
            _refuse_host(args, f"fakecupy.{self._module.__name__}.{name}")
            return _wrap(target(*_strip(args), **_strip(kwargs)))

        return device_function


fakecupy = _FakeCupyModule()
