"""The book's encoder-decoder weights in and out (DLfS2 chapters 7-8), read safely.

The book's ``ch08/AttentionSeq2seq.pkl`` (and any ``Seq2seq`` / ``PeekySeq2seq`` its
``save_params`` writes) is the pickle format of :mod:`npgated.interop.book`: a list of float16
arrays in the order of the model's ``params``, LSTM gate blocks f, g, i, o. For the three
encoder-decoders that list is ten arrays, encoder then decoder:

=====  ==================  ===============================  ==========================
 #      book                shape                            npgated parameter
=====  ==================  ===============================  ==========================
 0      encoder embed_W     (V, D)                           ``encoder.embed.W``
 1      encoder lstm_Wx     (D, 4H)                          ``encoder.lstm.Wx`` (gates)
 2      encoder lstm_Wh     (H, 4H)                          ``encoder.lstm.Wh`` (gates)
 3      encoder lstm_b      (4H,)                            ``encoder.lstm.b`` (gates)
 4      decoder embed_W     (V, D)                           ``decoder.embed.W``
 5      decoder lstm_Wx     (D, 4H); Peeky (H + D, 4H)       ``decoder.lstm.Wx`` (gates)
 6      decoder lstm_Wh     (H, 4H)                          ``decoder.lstm.Wh`` (gates)
 7      decoder lstm_b      (4H,)                            ``decoder.lstm.b`` (gates)
 8      decoder affine_W    (H, V); Peeky, Attention (2H, V)  ``decoder.affine.W``
 9      decoder affine_b    (V,)                             ``decoder.affine.b``
=====  ==================  ===============================  ==========================

The class follows from the shapes (:func:`infer_book_seq2seq`): a decoder ``Wx`` with H + D
rows is the peeky decoder (it reads ``[h | e_t]``); otherwise an output matrix with 2H rows is
the attention decoder (it reads ``[c_t | h_t]``) and one with H rows the plain ``Seq2seq``.
V, D, H come from the encoder's embedding and ``Wx``. A file of another model (the chapter-6
``Rnnlm.pkl`` has 6 arrays) or with inconsistent shapes is refused with a
:class:`~npgated.interop.book.BookFormatError` saying what it is; so is a file whose V differs
from the task's vocabulary when that is given.

Reading converts the gate blocks to npgated's i, f, g, o (:func:`gates_from_book`); writing
(:func:`model_to_book`) converts them back and stores float16, so a file read and written again
is the book's file bit for bit. Only LSTM models exist in the book's format (a GRU model is
refused). The loader admits nothing but NumPy's array reconstruction
(:func:`~npgated.interop.book.load_book_pickle`).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from npgated import backend
from npgated.interop.book import BookFormatError, gates_from_book, gates_to_book, load_book_pickle
from npgated.training.checkpoint import atomic_write

__all__ = ["infer_book_seq2seq", "model_from_book", "model_to_book"]

# (book name, npgated name without the cell, gate blocks to reorder)
_LAYOUT = (
    ("encoder embed_W", "encoder.embed.W", False),
    ("encoder lstm_Wx", "encoder.lstm.Wx", True),
    ("encoder lstm_Wh", "encoder.lstm.Wh", True),
    ("encoder lstm_b", "encoder.lstm.b", True),
    ("decoder embed_W", "decoder.embed.W", False),
    ("decoder lstm_Wx", "decoder.lstm.Wx", True),
    ("decoder lstm_Wh", "decoder.lstm.Wh", True),
    ("decoder lstm_b", "decoder.lstm.b", True),
    ("decoder affine_W", "decoder.affine.W", False),
    ("decoder affine_b", "decoder.affine.b", False),
)


def infer_book_seq2seq(arrays, source="the file", vocab_size: int | None = None) -> dict:
    """The config (``model, vocab_size, wordvec_size, hidden_size, cell``) a book array list
    describes.

    Parameters
    ----------
    arrays : list of arrays
        As :func:`~npgated.interop.book.load_book_pickle` returns them.
    source : str
        Named in errors.
    vocab_size : int, optional
        The task's vocabulary size; a file with another V is refused.

    Raises
    ------
    BookFormatError
        Not ten arrays (naming what the count suggests), shapes that fit none of the three
        models, another V than ``vocab_size``, non-finite values.
    """
    n = len(arrays)
    if n != len(_LAYOUT):
        what = {
            6: " (that is the book's chapter-6 Rnnlm: load it with npgated import-book "
            "as a language model)",
            9: " (that is the book's BetterRnnlm, a language model)",
        }.get(n, "")
        raise BookFormatError(
            f"{source} holds {n} arrays{what}; the book's Seq2seq, PeekySeq2seq and "
            "AttentionSeq2seq save 10 (encoder embed_W, lstm_Wx, lstm_Wh, lstm_b; decoder "
            "embed_W, lstm_Wx, lstm_Wh, lstm_b, affine_W, affine_b)"
        )
    E, Wx = arrays[0], arrays[1]
    if E.ndim != 2 or Wx.ndim != 2 or Wx.shape[1] % 4:
        raise BookFormatError(
            f"{source}: the encoder's embed_W must be (V, D) and lstm_Wx (D, 4H), got "
            f"{E.shape} and {Wx.shape}: not one of the book's encoder-decoders"
        )
    V, D = E.shape
    H = Wx.shape[1] // 4
    dec_rows = arrays[5].shape[0] if arrays[5].ndim == 2 else None
    out_rows = arrays[8].shape[0] if arrays[8].ndim == 2 else None
    if dec_rows == H + D and H + D != D:
        model, D_dec, H_out = "PeekySeq2seq", H + D, 2 * H
    elif out_rows == 2 * H:
        model, D_dec, H_out = "AttentionSeq2seq", D, 2 * H
    else:
        model, D_dec, H_out = "Seq2seq", D, H
    expected = [
        (V, D),
        (D, 4 * H),
        (H, 4 * H),
        (4 * H,),
        (V, D),
        (D_dec, 4 * H),
        (H, 4 * H),
        (4 * H,),
        (H_out, V),
        (V,),
    ]
    for k, ((book_name, _, _), shape) in enumerate(zip(_LAYOUT, expected)):
        if arrays[k].shape != shape:
            raise BookFormatError(
                f"{source}: array {k} ({book_name}) has shape {arrays[k].shape}, expected "
                f"{shape} for the book's {model} with V={V}, D={D}, H={H} (read from the "
                "encoder's embed_W and lstm_Wx): not one of the book's encoder-decoders"
            )
    for k, a in enumerate(arrays):
        if not np.all(np.isfinite(a)):
            raise BookFormatError(f"{source}: array {k} ({_LAYOUT[k][0]}) holds NaN or inf")
    if vocab_size is not None and V != vocab_size:
        raise BookFormatError(
            f"{source} is a {model} for {V} characters, but the task's vocabulary has "
            f"{vocab_size} (addition: 13, date: 59): it was trained on another task"
        )
    return dict(model=model, vocab_size=V, wordvec_size=D, hidden_size=H, cell="lstm")


def model_from_book(path, vocab_size: int | None = None, dtype=np.float32):
    """Load one of the book's encoder-decoder pickles into a new npgated model.

    Parameters
    ----------
    path : str or Path
        E.g. the book's ``ch08/AttentionSeq2seq.pkl``.
    vocab_size : int, optional
        The task's vocabulary size (checked against the file's V).
    dtype : floating dtype of the model.

    Returns
    -------
    Seq2seq, PeekySeq2seq or AttentionSeq2seq
        In eval mode, LSTM gate blocks converted to i, f, g, o.

    Raises
    ------
    FileNotFoundError, BookFormatError
    """
    from npgated.models.seq2seq import build_seq2seq  # noqa: PLC0415 (models import interop lazily)

    arrays = load_book_pickle(path)
    config = infer_book_seq2seq(arrays, str(path), vocab_size)
    model = build_seq2seq(config, dtype=dtype, seed=0)
    model.load_params(
        {name: gates_from_book(a) if gates else a for (_, name, gates), a in zip(_LAYOUT, arrays)}
    )
    return model.eval()


def model_to_book(model, path) -> Path:
    """Write an encoder-decoder in the book's format (float16 list, gates f, g, i, o).

    Parameters
    ----------
    model : Seq2seq, PeekySeq2seq or AttentionSeq2seq with ``cell="lstm"``
    path : str or Path
        Written atomically.

    Raises
    ------
    BookFormatError
        A GRU model or another model class, or values float16 cannot hold (nothing is
        written then).
    """
    from npgated.models.seq2seq import Seq2seq  # noqa: PLC0415

    if not isinstance(model, Seq2seq):
        raise BookFormatError(
            f"not an encoder-decoder: {type(model).__name__} (use "
            "npgated.interop.book for the language models)"
        )
    if model.cell != "lstm":
        raise BookFormatError(
            f"the book's encoder-decoders are LSTMs; this one has "
            f"cell={model.cell!r} and cannot be written in its format"
        )
    host = {name: backend.to_cpu(p) for name, p, _ in model.named_params()}
    arrays = []
    for book_name, name, gates in _LAYOUT:
        a = gates_to_book(host[name]) if gates else host[name]
        with np.errstate(over="ignore"):  # reported below, naming the array
            a16 = np.ascontiguousarray(a, dtype=np.float16)
        if not np.all(np.isfinite(a16)):
            raise BookFormatError(
                f"{name} ({book_name}) holds values float16 cannot represent (|x| > 65504, "
                "NaN or inf); nothing was written"
            )
        arrays.append(a16)
    return atomic_write(path, lambda f: pickle.dump(arrays, f, protocol=3))
