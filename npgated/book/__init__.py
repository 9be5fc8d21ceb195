"""npgated's layers under the names, layouts and semantics of "Deep Learning from Scratch 2".

A reader's first experiment is to swap npgated's layers into the book's own scripts. npgated's
layers (:mod:`npgated.layers`) differ from the book's in two ways that change the mathematics
without any error: their LSTM gate blocks are in PyTorch's order (i, f, g, o; the book's are
f, g, i, o), and their ``backward`` *adds* to ``grads`` (the book's overwrites them, and its
trainers never zero gradients). This package gives the book's layers with the book's layout
and semantics, computed by npgated's layers:

    npgated.book.time_layers      the book's common/time_layers.py (and ``np``)
    npgated.book.layers           the book's common/layers.py (Affine, Embedding, ...)

Replace ``from common.time_layers import *`` by ``from npgated.book.time_layers import *`` in a
model file of the book (``ch06/rnnlm.py``, ``ch07/seq2seq.py``, ...), or run the book's
scripts unchanged with :mod:`npgated.book.shim` on ``PYTHONPATH``. ``docs/book.md`` has the
comparison with the book's own layers (losses and times).
"""
