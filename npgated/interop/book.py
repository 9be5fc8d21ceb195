"""The book's trained weights in and out: "Deep Learning from Scratch 2" pickles, read safely.

Readers of DLfS2 (Koki Saitoh, O'Reilly Japan 2018) have the book's trained chapter-6 model as a
file, ``ch06/Rnnlm.pkl``, written by the book's ``BaseModel.save_params``. This module loads such a
file into an npgated model (:func:`model_from_book`), so a reader can evaluate and sample from the
very weights the book trained, and writes an npgated model back in the book's format
(:func:`model_to_book`), so weights trained here load into the book's code.

The format
----------
A Python pickle of a ``list`` of float16 NumPy arrays, in the order of the book model's
``params`` list:

=====  ==============  ===========  ==================================================
 #      book name       shape        npgated parameter
=====  ==============  ===========  ==================================================
 0      embed_W         (V, D)       ``embed.W``
 1      lstm_Wx         (D, 4H)      ``lstm1.Wx`` (gate blocks reordered, see below)
 2      lstm_Wh         (H, 4H)      ``lstm1.Wh`` (reordered)
 3      lstm_b          (4H,)        ``lstm1.b`` (reordered)
 4      affine_W        (H, V)       ``affine.W``
 5      affine_b        (V,)         ``affine.b``
=====  ==============  ===========  ==================================================

That is the book's ``Rnnlm`` (one LSTM layer, no tying). Its ``BetterRnnlm`` saves 9 arrays:
``embed_W``, ``lstm1_Wx, lstm1_Wh, lstm1_b``, ``lstm2_Wx, lstm2_Wh, lstm2_b``, ``affine_W``,
``affine_b``. That model ties its output matrix to the embedding (Press & Wolf 2016; Inan et al.
2016) with ``TimeAffine(embed_W.T, affine_b)``: its ``params`` list holds the transposed view
as well, so the file holds the tied matrix **twice**, the 8th array being a copy of
``embed_W.T`` (H, V) with H = D. npgated's tied ``BetterRnnlm`` holds that matrix once
(``embed.W``, shared by the output layer), so reading checks that the 8th array equals the
1st transposed, and writing saves it twice as the book does. The dropout ratio is not in the
file (it plays no part in evaluation); an imported ``BetterRnnlm`` gets the book's 0.5.

Gate order
----------
Both libraries pack the four LSTM gate blocks side by side along the last axis of ``Wx``
(D, 4H), ``Wh`` (H, 4H) and ``b`` (4H,), each block H wide, but in another order::

    book:     [ f | g | i | o ]      (forget, candidate, input, output)
    npgated:  [ i | f | g | o ]      (PyTorch/cuDNN's order)

so reading takes npgated's blocks (i, f, g, o) from the book's blocks (2, 0, 1, 3), and writing
takes the book's blocks (f, g, i, o) from npgated's blocks (1, 2, 0, 3) (:func:`gates_from_book`,
:func:`gates_to_book`). The equations are the same in both (``c = f * c_prev + g * i``,
``h = o * tanh(c)``), so nothing else changes. The conversion is a permutation: float16 ->
npgated -> float16 gives back the book's arrays bit for bit.

Safety
------
A pickle is a program: unpickling may call any importable function with any arguments
(``os.system`` included), so a weights file from the internet must never go through plain
``pickle.load``. :func:`load_book_pickle` unpickles with an ``Unpickler`` whose ``find_class``
admits only the three globals NumPy's array reconstruction needs (``_reconstruct`` under its
NumPy 1 and 2 module names, ``numpy.ndarray``, ``numpy.dtype``) and refuses every other one
with a :class:`BookFormatError` naming it, before anything is called. It then insists on a
list of floating-point ``numpy.ndarray``. This is the idea of ``torch.load(weights_only=True)``.
What cannot be prevented this way is a file that asks for huge arrays (memory); it cannot run
code. npgated's own checkpoints are ``.npz`` archives read with ``allow_pickle=False``.

Writing uses plain ``pickle.dump`` (protocol 3, the one of the book's file) of float16 arrays,
to a temporary file in the target folder that is ``os.replace``-d over the target, so a crash
never leaves half a file. float16 keeps about 3 decimal digits: a model written and read back
differs from the original by float16 rounding (relative 2**-11 at most), and values beyond
float16's range (65504) are refused.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from npgated import backend
from npgated.io import atomic_write

__all__ = [
    "BookFormatError",
    "book_ptb_vocabulary",
    "gates_from_book",
    "gates_to_book",
    "load_book_pickle",
    "model_from_book",
    "model_to_book",
]


class BookFormatError(ValueError):
    """A file is not (or a model cannot be written as) one of the book's weight pickles."""


# ---------------------------------------------------------------------------------------
# Safe reading
# ---------------------------------------------------------------------------------------
# NumPy's ndarray.__reduce__ names its reconstruction function; take the function object
# from NumPy itself, so the allow-list works on NumPy 1 ("numpy.core") and 2 ("numpy._core").
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # files written by NumPy 1
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # files written by NumPy 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays and plain containers; refuses every other global."""

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise BookFormatError(
                f"refused global {module}.{name}: the book's weight files are a list of NumPy "
                "arrays and need only NumPy's array reconstruction; this pickle asks for "
                "something else (nothing was executed). Do not open it with pickle.load"
            ) from None

    def persistent_load(self, pid):
        raise BookFormatError(
            "refused persistent id: the book's weight files are a plain list of NumPy arrays"
        )


def load_book_pickle(path) -> list[np.ndarray]:
    """Read a book weight pickle safely: a list of floating-point host arrays.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    list of numpy.ndarray
        In the file's order and dtype (float16 for the book's files).

    Raises
    ------
    FileNotFoundError
        No such file.
    BookFormatError
        The pickle asks for any global but NumPy's array reconstruction (naming it; nothing is
        executed), is truncated or corrupted, or holds anything but a list of float arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no book weight file at {path}")
    try:
        with open(path, "rb") as f:
            content = _ArrayOnlyUnpickler(f).load()
    except BookFormatError as exc:
        raise BookFormatError(f"{path}: {exc}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
    ) as exc:
        raise BookFormatError(
            f"{path} is not a readable pickle (truncated or corrupted?): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(content, list):
        raise BookFormatError(
            f"{path} holds a {type(content).__name__}, not a list of NumPy arrays: not one of "
            "the book's weight files (BaseModel.save_params writes a list)"
        )
    for k, a in enumerate(content):
        if type(a) is not np.ndarray:
            raise BookFormatError(
                f"{path}: item {k} of the list is a {type(a).__name__}, not a NumPy array: "
                "not one of the book's weight files"
            )
        if a.dtype.kind != "f":
            raise BookFormatError(
                f"{path}: array {k} has dtype {a.dtype}, not a floating-point type: not one of "
                "the book's weight files"
            )
    return content


# ---------------------------------------------------------------------------------------
# Gate order
# ---------------------------------------------------------------------------------------
_NPGATED_FROM_BOOK = (2, 0, 1, 3)  # npgated's i, f, g, o are the book's blocks 2, 0, 1, 3
_BOOK_FROM_NPGATED = (1, 2, 0, 3)  # the book's f, g, i, o are npgated's blocks 1, 2, 0, 3


def _permute_gate_blocks(a, order):
    G = a.shape[-1]
    if G % 4:
        raise BookFormatError(f"an LSTM array needs 4H columns, got {G} (not a multiple of 4)")
    H = G // 4
    return np.concatenate([a[..., k * H : (k + 1) * H] for k in order], axis=-1)


def gates_from_book(a: np.ndarray) -> np.ndarray:
    """Book gate order f, g, i, o -> npgated's i, f, g, o along the last axis (4H).

    Parameters
    ----------
    a : (D, 4H), (H, 4H) or (4H,) host array
        The book's ``Wx``, ``Wh`` or ``b``.

    Returns
    -------
    A new array of the same shape and dtype.
    """
    return _permute_gate_blocks(a, _NPGATED_FROM_BOOK)


def gates_to_book(a: np.ndarray) -> np.ndarray:
    """npgated's gate order i, f, g, o -> the book's f, g, i, o (undoes :func:`gates_from_book`)."""
    return _permute_gate_blocks(a, _BOOK_FROM_NPGATED)


# ---------------------------------------------------------------------------------------
# Layouts: book array k <-> npgated parameter
# ---------------------------------------------------------------------------------------
# (book name, npgated name, how: None = as is, "gates" = reorder the gate blocks,
#  "tied" = the transposed embedding, stored a second time)
_RNNLM_LAYOUT = (
    ("embed_W", "embed.W", None, "(V, D)"),
    ("lstm_Wx", "lstm1.Wx", "gates", "(D, 4H)"),
    ("lstm_Wh", "lstm1.Wh", "gates", "(H, 4H)"),
    ("lstm_b", "lstm1.b", "gates", "(4H,)"),
    ("affine_W", "affine.W", None, "(H, V)"),
    ("affine_b", "affine.b", None, "(V,)"),
)
_BETTER_LAYOUT = (
    ("embed_W", "embed.W", None, "(V, D)"),
    ("lstm1_Wx", "lstm1.Wx", "gates", "(D, 4H)"),
    ("lstm1_Wh", "lstm1.Wh", "gates", "(H, 4H)"),
    ("lstm1_b", "lstm1.b", "gates", "(4H,)"),
    ("lstm2_Wx", "lstm2.Wx", "gates", "(H, 4H)"),
    ("lstm2_Wh", "lstm2.Wh", "gates", "(H, 4H)"),
    ("lstm2_b", "lstm2.b", "gates", "(4H,)"),
    ("affine_W", "embed.W", "tied", "(H, V)"),
    ("affine_b", "affine.b", None, "(V,)"),
)
_LAYOUTS = {"Rnnlm": _RNNLM_LAYOUT, "BetterRnnlm": _BETTER_LAYOUT}


def _shape_of(symbolic: str, V: int, D: int, H: int) -> tuple:
    sizes = {"V": V, "D": D, "H": H, "4H": 4 * H}
    return tuple(sizes[s.strip()] for s in symbolic.strip("(,)").split(",") if s.strip())


def _infer(arrays, source) -> tuple[str, int, int, int]:
    """(model kind, V, D, H) of a book array list; BookFormatError if it fits neither model."""
    n = len(arrays)
    if n not in (6, 9):
        raise BookFormatError(
            f"{source} holds {n} arrays; the book's Rnnlm saves 6 (embed_W, lstm_Wx, lstm_Wh, "
            "lstm_b, affine_W, affine_b) and its tied 2-layer BetterRnnlm 9"
            + (
                "; 10 is one of its encoder-decoders (Seq2seq, PeekySeq2seq, AttentionSeq2seq): "
                "read it with npgated.interop.book_seq2seq"
                if n == 10
                else ""
            )
        )
    kind = "Rnnlm" if n == 6 else "BetterRnnlm"
    layout = _LAYOUTS[kind]
    E, Wx = arrays[0], arrays[1]
    if E.ndim != 2 or Wx.ndim != 2 or Wx.shape[1] % 4:
        raise BookFormatError(
            f"{source}: embed_W must be (V, D) and {layout[1][0]} (D, 4H), got "
            f"{E.shape} and {Wx.shape}: not one of the book's {kind} files"
        )
    V, D = E.shape
    H = Wx.shape[1] // 4
    for k, (book_name, _, _, symbolic) in enumerate(layout):
        expected = _shape_of(symbolic, V, D, H)
        if arrays[k].shape != expected:
            raise BookFormatError(
                f"{source}: array {k} ({book_name}) has shape {arrays[k].shape}, expected "
                f"{symbolic} = {expected} for V={V}, D={D}, H={H} (read from embed_W and "
                f"{layout[1][0]}): the shapes of this {kind}-sized file are inconsistent"
            )
    if kind == "BetterRnnlm" and not np.array_equal(arrays[7], arrays[0].T):
        raise BookFormatError(
            f"{source}: array 7 (affine_W) is not the transpose of array 0 (embed_W); the "
            "book's BetterRnnlm ties them and saves the same matrix twice, so this is not one "
            "of its files (npgated reads only the tied model)"
        )
    for k, a in enumerate(arrays):
        if not np.all(np.isfinite(a)):
            raise BookFormatError(
                f"{source}: array {k} ({layout[k][0]}) holds non-finite values (NaN or inf)"
            )
    return kind, V, D, H


def _layout_of(model) -> tuple:
    """The book layout for ``model``; BookFormatError for models the book cannot represent."""
    from npgated.models.rnnlm import BetterRnnlm, Rnnlm  # noqa: PLC0415 (import cycle)

    config = getattr(model, "config", {})
    if isinstance(model, BetterRnnlm):
        kind = "BetterRnnlm"
    elif isinstance(model, Rnnlm):
        kind = "Rnnlm"
    else:
        raise BookFormatError(
            f"the book's format holds its Rnnlm and BetterRnnlm only, not a {type(model).__name__}"
        )
    problems = []
    if config.get("cell") != "lstm":
        problems.append(f"cell={config.get('cell')!r} (the book's models are LSTMs)")
    if kind == "BetterRnnlm":
        if config.get("num_layers") != 2:
            problems.append(f"num_layers={config.get('num_layers')} (the book's has 2)")
        if not config.get("tie_weights"):
            problems.append("tie_weights=False (the book's ties the output to the embedding)")
    if problems:
        raise BookFormatError(
            f"this {kind} cannot be written in or read from the book's format: "
            + "; ".join(problems)
        )
    return _LAYOUTS[kind]


# ---------------------------------------------------------------------------------------
# Import and export
# ---------------------------------------------------------------------------------------
def model_from_book(path, model=None, dtype=np.float32):
    """Load one of the book's weight pickles into an npgated model.

    Parameters
    ----------
    path : str or Path
        The book's pickle (e.g. ``ch06/Rnnlm.pkl``): 6 arrays for ``Rnnlm``, 9 for the tied
        2-layer ``BetterRnnlm`` (see the module docstring).
    model : Rnnlm or BetterRnnlm, optional
        Load into this model (same class, LSTM cell, same V, D, H; BetterRnnlm: 2 layers,
        tied); its parameters are written in place and keep their dtype and device.
        Default: build the model the file describes.
    dtype : floating dtype
        dtype of a model built here (ignored when ``model`` is given).

    Returns
    -------
    model : Rnnlm or BetterRnnlm
        In eval mode, recurrent state reset. The LSTM gate blocks are converted from the
        book's f, g, i, o to npgated's i, f, g, o.

    Raises
    ------
    FileNotFoundError, BookFormatError
        A missing file, an unsafe or malformed pickle, arrays of the wrong count or
        inconsistent shapes, or a ``model`` that differs from the file (naming what differs).
    """
    arrays = load_book_pickle(path)
    kind, V, D, H = _infer(arrays, path)
    if model is None:
        from npgated.models.rnnlm import BetterRnnlm, Rnnlm  # noqa: PLC0415 (import cycle)

        if kind == "Rnnlm":
            model = Rnnlm(V, D, H, cell="lstm", seed=0, dtype=dtype)
        else:
            model = BetterRnnlm(
                V,
                D,
                H,
                num_layers=2,
                dropout_ratio=0.5,
                tie_weights=True,
                cell="lstm",
                seed=0,
                dtype=dtype,
            )
    layout = _layout_of(model)
    if len(layout) != len(arrays):
        raise BookFormatError(
            f"{path} holds the book's {kind} ({len(arrays)} arrays) but the model is a "
            f"{type(model).__name__} ({len(layout)} arrays in the book's format)"
        )
    current = {name: p for name, p, _ in model.named_params()}
    values = {}
    for k, (book_name, name, how, symbolic) in enumerate(layout):
        if how == "tied":  # the second copy of embed_W (checked equal by _infer)
            continue
        a = gates_from_book(arrays[k]) if how == "gates" else arrays[k]
        if name not in current:
            raise BookFormatError(f"the model has no parameter {name} for array {k} ({book_name})")
        if tuple(current[name].shape) != a.shape:
            raise BookFormatError(
                f"{path}: array {k} ({book_name}, {symbolic}) has shape {a.shape} but the "
                f"model's {name} is {tuple(current[name].shape)} (file: V={V}, D={D}, H={H}; "
                f"model: {_sizes_of(model)})"
            )
        values[name] = a
    model.load_params(values)  # in place: p[...] = value, arrays keep their identity
    model.eval()
    model.reset_state()
    return model


def _sizes_of(model) -> str:
    c = getattr(model, "config", {})
    return f"V={c.get('vocab_size')}, D={c.get('wordvec_size')}, H={c.get('hidden_size')}"


def model_to_book(model, path) -> Path:
    """Write ``model`` in the book's format: a pickle of a list of float16 arrays.

    Parameters
    ----------
    model : Rnnlm (LSTM) or BetterRnnlm (LSTM, 2 layers, tied)
    path : str or Path
        Target file, written atomically (a temporary file, then ``os.replace``).

    Returns
    -------
    Path of the written file.

    Raises
    ------
    BookFormatError
        A model the book cannot represent (GRU or RNN cells, a BetterRnnlm untied or with
        other than 2 layers), or values that float16 cannot hold (|x| > 65504, NaN, inf).
        Nothing is written then.
    """
    layout = _layout_of(model)
    host = {name: backend.to_cpu(p) for name, p, _ in model.named_params()}
    arrays = []
    for book_name, name, how, _ in layout:
        a = host[name]
        if how == "gates":
            a = gates_to_book(a)
        elif how == "tied":
            a = a.T
        with np.errstate(over="ignore"):  # an overflow is reported below, naming the array
            a16 = np.ascontiguousarray(a, dtype=np.float16)
        if not np.all(np.isfinite(a16)):
            worst = float(np.max(np.abs(a))) if np.all(np.isfinite(a)) else float("nan")
            raise BookFormatError(
                f"{name} ({book_name}) holds values float16 cannot represent (largest |x| "
                f"{worst:.4g}; float16 reaches 65504 and has no room for NaN/inf weights); "
                "nothing was written"
            )
        arrays.append(a16)
    return atomic_write(path, lambda f: pickle.dump(arrays, f, protocol=3))


def book_ptb_vocabulary(train_file) -> dict[str, int]:
    """The book's PTB vocabulary, built the way its ``dataset/ptb.py`` does.

    The whole of ``ptb.train.txt`` with every newline replaced by ``"<eos>"`` (no spaces
    added: every line of the file begins and ends with a space), split on whitespace; ids in
    order of first appearance. npgated's :func:`npgated.data.ptb.load_data` adds spaces
    around ``"<eos>"`` instead; on the real file both give the same 10,000 ids (a test
    compares them), which is what lets a book model run on npgated's corpus.

    Parameters
    ----------
    train_file : str or Path
        The ``ptb.train.txt`` file.

    Returns
    -------
    dict[str, int]
    """
    with open(train_file, encoding="utf-8") as f:
        words = f.read().replace("\n", "<eos>").strip().split()
    return {w: i for i, w in enumerate(dict.fromkeys(words))}
