"""The book's ``ch08/attention_layer.py``: npgated's attention layers, already its drop-in.

Replace, in the book's ``ch08/attention_seq2seq.py``, the line::

    from ch08.attention_layer import TimeAttention

by::

    from npgated.book.attention_layer import TimeAttention

(or run the book's scripts with :mod:`npgated.book.shim`). The four layers have no
parameters (``params = grads = []``), so the one semantic difference of npgated's layers --
``backward`` adding to ``grads`` instead of overwriting them -- does not arise, and
npgated's :mod:`npgated.layers.attention` already has the book's names, signatures and
return values:

==============================================  ==========================================
book                                            npgated (the same class)
==============================================  ==========================================
``AttentionWeight().forward(hs, h) -> a``       ``backward(da) -> (dhs, dh)``
``WeightSum().forward(hs, a) -> c``             ``backward(dc) -> (dhs, da)``
``Attention().forward(hs, h) -> c``             ``backward(dc) -> (dhs, dh)``; ``attention_weight``
``TimeAttention().forward(hs_enc, hs_dec)``     ``backward(dc) -> (dhs_enc, dhs_dec)``
==============================================  ==========================================

``TimeAttention`` computes all decoder steps in three batched products instead of the book's
loop over one ``Attention`` per step; its ``attention_weights`` is a (T_dec, N, T_enc) view
that indexes, iterates and converts (``np.array``) like the book's list of per-step (N,
T_enc) arrays, as ``ch08/visualize_attention.py`` reads it. The forwards also take an
optional ``mask`` / ``valid_lens`` for padded encoder positions, which the book has not.
"""

from __future__ import annotations

from npgated.layers.attention import (
    Attention,
    AttentionWeight,
    TimeAttention,
    WeightSum,
)

__all__ = ["Attention", "AttentionWeight", "TimeAttention", "WeightSum"]
