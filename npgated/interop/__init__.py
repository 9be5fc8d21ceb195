"""Bridges to other frameworks (optional dependencies, imported on demand).

``npgated.interop.torch``
    Convert recurrent layers and language models between npgated and PyTorch in both
    directions (``from_torch``, ``to_torch``, ``model_to_torch``, ``model_from_torch``) and
    check that both compute the same numbers (``parity_report``). Needs PyTorch
    (``pip install npgated[torch]``); importing this package does not import it.

``npgated.interop.book``
    The trained weights of "Deep Learning from Scratch 2" in and out: a safe loader for the
    book's pickles (only NumPy's array reconstruction is admitted), ``model_from_book`` and
    ``model_to_book`` for its ``Rnnlm`` and tied 2-layer ``BetterRnnlm`` (LSTM gate blocks
    f, g, i, o in the book, i, f, g, o here). NumPy only.

The conventions that make the conversion a transpose and a bias sum, not a reshuffle:
npgated's recurrent weights are ``Wx`` (D, kH) and ``Wh`` (H, kH) with the gate blocks in
PyTorch's order (LSTM i, f, g, o; GRU r, z, n), so ``weight_ih = Wx.T`` and
``weight_hh = Wh.T``.
"""
