"""Bridges to other frameworks (optional dependencies, imported on demand).

``npgated.interop.torch``
    Convert recurrent layers and language models between npgated and PyTorch in both
    directions (``from_torch``, ``to_torch``, ``model_to_torch``, ``model_from_torch``) and
    check that both compute the same numbers (``parity_report``). Needs PyTorch
    (``pip install npgated[torch]``); importing this package does not import it.

The conventions that make the conversion a transpose and a bias sum, not a reshuffle:
npgated's recurrent weights are ``Wx`` (D, kH) and ``Wh`` (H, kH) with the gate blocks in
PyTorch's order (LSTM i, f, g, o; GRU r, z, n), so ``weight_ih = Wx.T`` and
``weight_hh = Wh.T``.
"""
