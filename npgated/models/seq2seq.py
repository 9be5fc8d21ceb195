"""Encoder-decoders of the book's chapters 7 and 8: Seq2seq, PeekySeq2seq, AttentionSeq2seq.

An encoder reads a question, a decoder writes the answer one character at a time (Sutskever,
Vinyals & Le, "Sequence to Sequence Learning with Neural Networks", NeurIPS 2014; Cho et al.,
"Learning Phrase Representations using RNN Encoder-Decoder for Statistical Machine
Translation", EMNLP 2014). All three models are built from npgated's Time layers::

    encoder   xs (N, T_enc) -> TimeEmbedding (V, D) -> TimeLSTM/TimeGRU (D -> H)  from zeros
    decoder   ts[:, :-1]    -> TimeEmbedding (V, D) -> TimeLSTM/TimeGRU           from the
              encoder's last h (c = 0)  -> [TimeAttention] -> TimeAffine -> TimeSoftmaxWithLoss

and differ in what the decoder sees of the question:

``Seq2seq`` (DLfS2 ch. 7)
    only its initial state h = hs_enc[:, -1]; the output layer reads the decoder's states,
    ``W`` (H, V).
``PeekySeq2seq`` (DLfS2 ch. 7; the "peeky" decoder of Cho et al. 2014)
    h as well at every step, in front of the embedding in the recurrent layer's input and
    in front of the decoder state in the output layer's: ``Wx`` (H + D, kH) reads ``[h | e_t]``,
    ``W`` (2H, V) reads ``[h | hs_dec_t]``.
``AttentionSeq2seq`` (DLfS2 ch. 8; Bahdanau, Cho & Bengio, ICLR 2015, with the dot-product
score of Luong, Pham & Manning, EMNLP 2015)
    all encoder states: at every step a context ``c_t``, the attention-weighted sum of
    ``hs_enc``, goes in front of the decoder state into the output layer, ``W`` (2H, V) reads
    ``[c_t | hs_dec_t]`` (:class:`npgated.layers.attention.TimeAttention`).

Each order of concatenation is the book's, so the book's weights load unchanged
(:mod:`npgated.interop.book_seq2seq`). With ``cell="gru"`` the recurrent layers are GRUs
(:class:`~npgated.layers.gru.TimeGRU`, ``reset_after=True`` by default, as PyTorch); a GRU has
no memory cell, so the decoder starts from h alone.

Training is teacher forcing, as the book: the decoder reads the answer's characters
``ts[:, :-1]`` (starting with ``_``) and predicts ``ts[:, 1:]``; the loss is the mean
cross-entropy over the N * T_dec predictions.

Notation: N batch, T_enc question length, T_dec = ts.shape[1] - 1 answer length, V
characters, D embedding size, H hidden size, k gate blocks (4 LSTM, 3 GRU); h = the
encoder's last state (N, H); ``[a | b]`` concatenation along the last axis.

Forward (:meth:`Seq2seq.forward`)::

    F1  hs_enc = RNN_enc(E_enc[xs])                 from h_0 = c_0 = 0     (N, T_enc, H)
    F2  h = hs_enc[:, -1]
    F3  es = E_dec[ts[:, :-1]]                                             (N, T_dec, D)
    F4  hs_dec = RNN_dec(es)                        Seq2seq, Attention     (N, T_dec, H)
        hs_dec = RNN_dec([h | es])                  Peeky (h at every t: the layer's
                                                    static input, h @ Wx[:H] once)
        (initial state h_0 = h, c_0 = 0)
    F5  cs = TimeAttention(hs_enc, hs_dec)          Attention only         (N, T_dec, H)
    F6  u = hs_dec                                  Seq2seq                (N, T_dec, H)
        u = [h | hs_dec]                            Peeky                  (N, T_dec, 2H)
        u = [cs | hs_dec]                           Attention              (N, T_dec, 2H)
    F7  scores = u @ W + b                                                 (N, T_dec, V)
    F8  L = mean over n, t of -log softmax(scores[n, t])[ts[n, t + 1]]

Backward (:meth:`Seq2seq.backward`), each layer's own backward doing its part::

    B1  dscores = dL/dscores                        TimeSoftmaxWithLoss
    B2  du = dscores @ W.T (and dW, db)             TimeAffine
    B3  dhs_dec = du                                Seq2seq
        dh_peek = du[..., :H];  dhs_dec = du[..., H:]      Peeky
        dcs = du[..., :H];      dhs_dec = du[..., H:]      Attention
    B4  dhs_enc, dhs_dec += TimeAttention.backward(dcs)    Attention (both inputs of F5)
    B5  des = RNN_dec.backward(dhs_dec); dh_0 = RNN_dec.dh  (the initial state)
        Peeky: also dh_in = RNN_dec.dstatic = sum over t of d[h | e_t][..., :H]
    B6  E_dec gets des                              TimeEmbedding
    B7  dh = dh_0                                   Seq2seq
        dh = dh_0 + sum over t of dh_peek + dh_in   Peeky (h used at every t)
        dhs_enc[:, -1] += dh_0                      Attention (h_0 = hs_enc[:, -1])
    B8  dhs_enc = 0 except dhs_enc[:, -1] = dh      Seq2seq, Peeky
    B9  E_enc gets RNN_enc.backward(dhs_enc)        the encoder

Generation (:meth:`Seq2seq.generate`) is greedy or beam search, batched over the questions:
one decoder step per output character for all N questions (and all their beams) at once,
with the step functions of :mod:`npgated.layers.lstm` / :mod:`npgated.layers.gru`.
"""

from __future__ import annotations

import copy

import numpy as np

from npgated import backend, checks, parallel
from npgated.functional import log_softmax
from npgated.layers.affine import TimeAffine, fuse_weight_and_bias
from npgated.layers.attention import (
    TimeAttention,
    attention_scores,
    masked_softmax,
    weighted_sum,
)
from npgated.layers.embedding import TimeEmbedding
from npgated.layers.gru import TimeGRU, gru_step_forward
from npgated.layers.lstm import TimeLSTM, lstm_step_forward
from npgated.models.base import Model
from npgated.models.rnnlm import GATES, _Init, _owned_logits_loss

__all__ = [
    "CELLS",
    "MODELS",
    "AttentionSeq2seq",
    "PeekySeq2seq",
    "Seq2seq",
    "accuracy",
    "build_seq2seq",
    "seq2seq_accuracy",
]

CELLS = ("lstm", "gru")
MODELS = ("Seq2seq", "PeekySeq2seq", "AttentionSeq2seq")


def _recurrent(cell: str, init: _Init, D: int, H: int, reset_after: bool):
    """A Time layer of ``cell`` (D -> H), not stateful: every forward starts from zeros or
    from the state given by ``set_state``. Book init: N(0, 1) / sqrt(fan_in), zero bias."""
    k = GATES[cell]
    Wx = init.weight((D, k * H), 1 / np.sqrt(D))
    Wh = init.weight((H, k * H), 1 / np.sqrt(H))
    if cell == "lstm":
        return TimeLSTM(Wx, Wh, init.bias((4 * H,)), stateful=False)
    b = init.bias((2, 3 * H) if reset_after else (3 * H,))
    return TimeGRU(Wx, Wh, b, stateful=False, reset_after=reset_after)


class Seq2seq(Model):
    """The book's chapter-7 encoder-decoder (see the module docstring for the equations).

    Parameters
    ----------
    vocab_size : int (V)
        Characters of the task (the encoder and decoder share the vocabulary).
    wordvec_size : int (D)
        Embedding size (the book: 16).
    hidden_size : int (H)
        Hidden size of encoder and decoder (the book: 128 for addition, 256 for dates).
    cell : {"lstm", "gru"}
    seed : int, optional
        Seeds the initialisation (the model's only randomness).
    dtype : float32 for training, float64 for gradient checks.
    init : "book" or float
        "book": N(0, 1) / 100 for the embeddings, N(0, 1) / sqrt(fan_in) for the weight
        matrices, zero biases, as DLfS2; a float s: U(-s, s) for every parameter.
    reset_after : bool
        GRU variant (True: PyTorch/cuDNN's); ignored for LSTMs.

    Attributes
    ----------
    config : dict
        ``model, vocab_size, wordvec_size, hidden_size, cell, init, reset_after``: what
        :func:`build_seq2seq` (and checkpoints) rebuild the model from.
    attention_weights : (N, T_dec, T_enc) array or None
        :class:`AttentionSeq2seq` only: the weights of the last ``forward`` or ``generate``
        (for ``generate`` of the characters it produced, of the best beam), on the
        parameters' backend. None for the other models.

    Notes
    -----
    Layers, in forward order (parameter names ``"encoder.lstm.Wx"`` etc.; ``gru`` for
    ``cell="gru"``): ``encoder.embed``, ``encoder.lstm``, ``decoder.embed``, ``decoder.lstm``,
    [``decoder.attention``], ``decoder.affine``, ``loss``. The parameters are in the order of
    the book's ``params`` (and of its weight files).
    """

    peeky = False
    attentive = False

    def __init__(
        self,
        vocab_size,
        wordvec_size=16,
        hidden_size=128,
        cell="lstm",
        seed=None,
        dtype=np.float32,
        init="book",
        reset_after=True,
    ):
        super().__init__()
        V = self.vocab_size = checks.check_positive_int(vocab_size, "vocab_size")
        D = checks.check_positive_int(wordvec_size, "wordvec_size")
        H = checks.check_positive_int(hidden_size, "hidden_size")
        if cell not in CELLS:
            raise ValueError(
                f"unknown cell {cell!r} for an encoder-decoder; choose one of: {', '.join(CELLS)}"
            )
        self.cell = cell
        self.config = dict(
            model=type(self).__name__,
            vocab_size=V,
            wordvec_size=D,
            hidden_size=H,
            cell=cell,
            init=init,
            reset_after=bool(reset_after),
        )
        ini = _Init(init, seed, dtype)
        # in the book's order: encoder embed_W, Wx, Wh, b; decoder embed_W, Wx, Wh, b, W, b
        self.add_layer("encoder.embed", TimeEmbedding(ini.weight((V, D), 1 / 100)))
        self.add_layer(f"encoder.{cell}", _recurrent(cell, ini, D, H, reset_after))
        self.add_layer("decoder.embed", TimeEmbedding(ini.weight((V, D), 1 / 100)))
        D_dec = H + D if self.peeky else D  # Peeky: [h | e_t]
        self.add_layer(f"decoder.{cell}", _recurrent(cell, ini, D_dec, H, reset_after))
        if self.attentive:
            self.add_layer("decoder.attention", TimeAttention())
        H_out = 2 * H if (self.peeky or self.attentive) else H  # [h | hs_dec], [cs | hs_dec]
        W, b = fuse_weight_and_bias(ini.weight((H_out, V), 1 / np.sqrt(H_out)), ini.bias((V,)))
        self.add_layer("decoder.affine", TimeAffine(W, b))
        self.add_layer("loss", _owned_logits_loss())
        self.collect_params()
        self._attention_weights = None

    # -- sizes and layers -------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return self.config["hidden_size"]

    @property
    def wordvec_size(self) -> int:
        return self.config["wordvec_size"]

    def _layer(self, part: str, kind: str):
        return self.layers[f"{part}.{self.cell if kind == 'rnn' else kind}"]

    @property
    def attention_weights(self):
        """(N, T_dec, T_enc) weights of the last forward/generate (AttentionSeq2seq), or None."""
        return self._attention_weights

    # -- checks -----------------------------------------------------------------------------
    def _check_questions(self, xs):
        checks.check_ids(xs, self.vocab_size, "xs", ndim=2)
        if xs.shape[0] < 1 or xs.shape[1] < 1:
            raise ValueError(
                f"xs must hold at least one question of at least one character, "
                f"got shape {checks.shape_str(xs.shape)}"
            )

    # -- forward ----------------------------------------------------------------------------
    def _encode(self, xs):
        """F1, F2: all encoder states (N, T_enc, H), from zeros."""
        es = self._layer("encoder", "embed").forward(xs)  # F1
        return self._layer("encoder", "rnn").forward(es)  # F1

    def _decode(self, dec_xs, hs_enc):
        """F3-F6: the output layer's input u (N, T_dec, H or 2H)."""
        rnn = self._layer("decoder", "rnn")
        h = hs_enc[:, -1]  # F2
        es = self._layer("decoder", "embed").forward(dec_xs)  # F3
        rnn.set_state(h)  # F4  h_0 = h (c_0 = 0)
        if not self.peeky:
            return rnn.forward(es)  # F4, F6  u = hs_dec
        xp = backend.get_array_module(es)
        N, T, _ = es.shape
        # F4  RNN([h | e_t]): h is the layer's static input, its part of the input
        # projection (h @ Wx[:H]) computed once, not at every step (the layer's F0s)
        hs_dec = rnn.forward(es, static=h)
        peek = xp.broadcast_to(h[:, None, :], (N, T, h.shape[1]))  # h at every step
        return xp.concatenate((peek, hs_dec), axis=2)  # F6  [h | hs_dec]

    def forward(self, xs, ts):
        """Mean cross-entropy of the decoder's predictions of ``ts[:, 1:]`` (teacher forcing).

        Parameters
        ----------
        xs : (N, T_enc) int array
            Questions (host or device).
        ts : (N, 1 + T_dec) int array
            Answers, starting with the start symbol; the decoder reads ``ts[:, :-1]`` and
            is scored on ``ts[:, 1:]``.

        Returns
        -------
        loss : scalar in the model's dtype.
        """
        self._check_questions(xs)
        checks.check_ids(ts, self.vocab_size, "ts", ndim=2)
        if ts.shape[0] != xs.shape[0] or ts.shape[1] < 2:
            raise ValueError(
                f"ts must have shape (N, 1 + T_dec) with N = {xs.shape[0]} (as xs) and "
                f"T_dec >= 1 (the start symbol, then the answer), got "
                f"{checks.shape_str(ts.shape)}"
            )
        dec_xs, dec_ts = ts[:, :-1], ts[:, 1:]
        hs_enc = self._encode(xs)  # F1
        self._T_enc = hs_enc.shape[1]
        u = self._decode(dec_xs, hs_enc)  # F2-F6
        affine, loss = self.layers["decoder.affine"], self.layers["loss"]
        if not self.training:  # F7, F8 block by block, without the (N, T_dec, V) scores
            return loss.forward_affine(u, affine, dec_ts)
        return loss.forward(affine.forward(u), dec_ts)  # F7, F8

    # -- backward ---------------------------------------------------------------------------
    def _decode_backward(self, du):
        """B3-B8 for Seq2seq and Peeky: dL/dhs_enc (N, T_enc, H), zero but the last step."""
        rnn = self._layer("decoder", "rnn")
        H = self.hidden_size
        xp = backend.get_array_module(du)
        if self.peeky:
            dh_peek, dhs_dec = du[..., :H], du[..., H:]  # B3
        else:
            dh_peek, dhs_dec = None, du  # B3
        dxs = rnn.backward(dhs_dec)  # B5
        dhs_enc = xp.zeros((dxs.shape[0], self._T_enc, H), dtype=du.dtype)
        dh = dhs_enc[:, -1]  # B8  the only encoder state the decoder saw
        dh += rnn.dh  # B7
        self._layer("decoder", "embed").backward(dxs)  # B6  (Peeky: dxs is the e_t columns')
        if self.peeky:
            dh += dh_peek.sum(axis=1)  # B7  the output layer's use of h at every t
            dh += rnn.dstatic  # B7  the recurrent layer's, summed over t by the layer (B8s)
        return dhs_enc

    def backward(self, dout=1.0):
        """Backpropagate ``dout * loss`` through decoder and encoder; accumulates into ``grads``.

        Returns None (the questions are ids: no gradient).
        """
        d = self.layers["loss"].backward(dout)  # B1
        du = self.layers["decoder.affine"].backward(d)  # B2
        dhs_enc = self._decode_backward(du)  # B3-B8
        des = self._layer("encoder", "rnn").backward(dhs_enc)  # B9
        self._layer("encoder", "embed").backward(des)  # B9

    # -- generation -------------------------------------------------------------------------
    def _cell_step(self, x, h, c):
        """One step of the decoder's recurrent layer for rows x (B, D_dec), h, c (B, H)."""
        Wx, Wh, b = self._layer("decoder", "rnn").params
        if self.cell == "lstm":
            h, c, _ = lstm_step_forward(x, h, c, Wx, Wh, b)  # F4 (lstm.py's F1-F4)
            return h, c
        h, _ = gru_step_forward(
            x,
            h,
            Wx,
            Wh,
            b,  # F4 (gru.py's F0-F5)
            reset_after=self._layer("decoder", "rnn").reset_after,
        )
        return h, None

    def _step(self, ids, h, c, hs_enc):
        """One decoder step for B rows: ids (B,) -> scores (B, V), h, c, weights (B, T_enc).

        ``hs_enc`` (B, T_enc, H) are the encoder states of each row's question (only the last
        one, (B, 1, H), for the models without attention).
        """
        xp = backend.get_array_module(h)
        x = self._layer("decoder", "embed").params[0][ids]  # F3  (B, D)
        h_enc = hs_enc[:, -1]
        if self.peeky:
            x = xp.concatenate((h_enc, x), axis=1)  # F4  [h | e_t]
        h, c = self._cell_step(x, h, c)  # F4
        weights = None
        if self.attentive:
            a = masked_softmax(attention_scores(hs_enc, h[:, None, :]))  # F5 (B, 1, T_enc)
            u = xp.concatenate((weighted_sum(hs_enc, a)[:, 0], h), axis=1)  # F5, F6 [c | h]
            weights = a[:, 0]
        elif self.peeky:
            u = xp.concatenate((h_enc, h), axis=1)  # F6  [h | h_t]
        else:
            u = h  # F6
        W, b = self.layers["decoder.affine"].params
        return u @ W + b, h, c, weights  # F7

    def generate(self, xs, start_id, length, beam_size=None):
        """Answers to the questions ``xs``, all decoded at once (eval mode, no caches kept).

        Parameters
        ----------
        xs : (N, T_enc) int array
            Questions (reversed if the model was trained on reversed questions).
        start_id : int or (N,) int array
            The decoder's first input (the id of ``_``), one for all or one per question.
        length : int
            Characters to generate per question (the book: the answer's width).
        beam_size : int, optional
            None: greedy decoding, the most probable character at every step (the book's
            ``generate``). k >= 1: beam search with k beams per question, keeping the k
            partial answers of highest log-probability; returns the best complete one (every
            answer has ``length`` characters, there is no end symbol). ``beam_size=1`` gives
            the greedy answers.

        Returns
        -------
        (N, length) int64 host array
            The generated ids. ``attention_weights`` then holds the (N, length, T_enc)
            weights of these characters (AttentionSeq2seq).
        """
        self._check_questions(xs)
        length = checks.check_positive_int(length, "length")
        if beam_size is not None:
            beam_size = checks.check_positive_int(beam_size, "beam_size")
        like = self.params[0]
        N = xs.shape[0]
        starts = np.asarray(backend.to_cpu(start_id))
        if starts.ndim > 1 or (starts.ndim == 1 and starts.shape != (N,)):
            raise ValueError(
                f"start_id must be one id or one per question ({N},), got shape {starts.shape}"
            )
        starts = np.broadcast_to(starts, (N,)).astype(np.int64)
        checks.check_ids(starts, self.vocab_size, "start_id")
        was_training = self.training
        self.eval()
        try:
            hs_enc = self._encode(backend.to_device(xs, like=like))  # F1
            if not self.attentive:  # the decoder sees only the last state: keep only it
                hs_enc = hs_enc[:, -1:]
            starts = backend.to_device(starts, like=like)
            if beam_size is None:
                ids, weights = self._greedy(hs_enc, starts, length)
            else:
                ids, weights = self._beam(hs_enc, starts, length, beam_size)
        finally:
            self.train(was_training)
        self._attention_weights = weights if self.attentive else None
        return backend.to_cpu(ids).astype(np.int64)

    def _initial_c(self, h):
        if self.cell != "lstm":
            return None
        return backend.get_array_module(h).zeros_like(h)  # the decoder's c_0 = 0

    def _greedy(self, hs_enc, starts, length):
        xp = backend.get_array_module(hs_enc)
        N, T_enc, _ = hs_enc.shape
        h = hs_enc[:, -1]  # F2  the decoder's h_0
        c = self._initial_c(h)
        ids = starts
        out = xp.empty((N, length), dtype=np.int64)
        weights = xp.empty((N, length, T_enc), dtype=hs_enc.dtype) if self.attentive else None
        for t in range(length):  # one step for all N questions
            scores, h, c, w = self._step(ids, h, c, hs_enc)
            ids = scores.argmax(axis=1)  # the most probable character
            out[:, t] = ids
            if weights is not None:
                weights[:, t] = w
        return out, weights

    def _beam(self, hs_enc, starts, length, k):
        """Beam search, k beams per question: rows n * k ... n * k + k - 1 of every (N * k, .)
        array are the beams of question n, best first."""
        xp = backend.get_array_module(hs_enc)
        N, T_enc, _ = hs_enc.shape
        V = self.vocab_size
        hs_rep = xp.repeat(hs_enc, k, axis=0)  # (N * k, T_enc, H): a beam's question
        h = hs_rep[:, -1]
        c = self._initial_c(h)
        ids = xp.repeat(starts, k)
        # log-probabilities of the partial answers, in float64 whatever the model's dtype;
        # at first only beam 0 is alive (the k beams start identical)
        logp = xp.zeros((N, k), dtype=np.float64)
        logp[:, 1:] = -np.inf
        out = xp.zeros((N * k, length), dtype=np.int64)
        weights = xp.zeros((N * k, length, T_enc), dtype=hs_enc.dtype) if self.attentive else None
        first_row = (xp.arange(N, dtype=np.int64) * k)[:, None]  # (N, 1)
        for t in range(length):
            scores, h, c, w = self._step(ids, h, c, hs_rep)
            cand = logp.reshape(N * k, 1) + log_softmax(scores.astype(np.float64), axis=1)
            cand = cand.reshape(N, k * V)  # every beam's every continuation
            # the k best per question, best first; ties to the lower index (beam, then id)
            best = xp.argsort(-cand, axis=1, kind="stable")[:, :k]  # (N, k)
            logp = xp.take_along_axis(cand, best, axis=1)
            rows = (first_row + best // V).reshape(N * k)  # the beam each one continues
            ids = (best % V).reshape(N * k)
            h = h[rows]
            c = None if c is None else c[rows]
            out = out[rows]
            out[:, t] = ids
            if weights is not None:
                weights = weights[rows]
                weights[:, t] = w[rows]
        best_rows = first_row[:, 0]  # beam 0 of every question: the most probable answer
        return out[best_rows], (None if weights is None else weights[best_rows])


class PeekySeq2seq(Seq2seq):
    """The book's peeky encoder-decoder: the encoder's last state h enters every decoder step.

    The recurrent layer reads ``[h | e_t]`` (``Wx`` (H + D, kH)) and the output layer
    ``[h | hs_dec_t]`` (``W`` (2H, V)), the book's order (encoder state first). Parameters
    as :class:`Seq2seq`.
    """

    peeky = True


class AttentionSeq2seq(Seq2seq):
    """The book's chapter-8 encoder-decoder with attention over all encoder states.

    The decoder starts from the encoder's last state; at every step
    :class:`~npgated.layers.attention.TimeAttention` makes a context ``c_t`` from all
    encoder states and the output layer reads ``[c_t | hs_dec_t]`` (``W`` (2H, V)), the
    book's order (context first). ``attention_weights`` (N, T_dec, T_enc) holds the weights of
    the last forward or generate. Parameters as :class:`Seq2seq`.
    """

    attentive = True

    def _decode(self, dec_xs, hs_enc):
        """F2-F6 with attention: u = [cs | hs_dec] (N, T_dec, 2H)."""
        rnn = self._layer("decoder", "rnn")
        es = self._layer("decoder", "embed").forward(dec_xs)  # F3
        rnn.set_state(hs_enc[:, -1])  # F2, F4  h_0 = hs_enc[:, -1] (c_0 = 0)
        hs_dec = rnn.forward(es)  # F4
        attention = self.layers["decoder.attention"]
        cs = attention.forward(hs_enc, hs_dec)  # F5
        self._attention_weights = attention.weights
        return backend.get_array_module(cs).concatenate((cs, hs_dec), axis=2)  # F6 [cs | hs_dec]

    def _decode_backward(self, du):
        """B3-B7 with attention: dL/dhs_enc (N, T_enc, H) from the attention and from h_0."""
        rnn = self._layer("decoder", "rnn")
        H = self.hidden_size
        dcs, dhs_dec = du[..., :H], du[..., H:]  # B3
        dhs_enc, dhs_dec_att = self.layers["decoder.attention"].backward(dcs)  # B4
        des = rnn.backward(dhs_dec + dhs_dec_att)  # B4, B5
        self._layer("decoder", "embed").backward(des)  # B6
        dhs_enc[:, -1] += rnn.dh  # B7  h_0 = hs_enc[:, -1]
        return dhs_enc


_CLASSES = {"Seq2seq": Seq2seq, "PeekySeq2seq": PeekySeq2seq, "AttentionSeq2seq": AttentionSeq2seq}


def build_seq2seq(config: dict, dtype=np.float32, seed=None) -> Seq2seq:
    """Build an encoder-decoder from its ``config`` dict (as stored in checkpoints).

    Parameters
    ----------
    config : dict
        ``model`` (one of :data:`MODELS`), ``vocab_size``, ``wordvec_size``,
        ``hidden_size`` and optionally ``cell``, ``init``, ``reset_after`` (a model's
        ``config``).
    dtype, seed
        As the constructors'.
    """
    config = dict(config)
    kind = config.pop("model", None)
    if kind not in _CLASSES:
        raise ValueError(f"unknown encoder-decoder {kind!r}; expected one of: {', '.join(MODELS)}")
    return _CLASSES[kind](**config, dtype=dtype, seed=seed)


def seq2seq_accuracy(model, x, t, batch_size: int = 250, beam_size=None) -> tuple[int, int]:
    """The book's accuracy: answers generated from ``_`` that match in every character.

    As the book's ``eval_seq2seq`` for each question (greedy decoding from the start symbol
    ``t[:, 0]``, ``t.shape[1] - 1`` characters, an answer counts only if every character
    matches), ``batch_size`` questions at a time.

    Parameters
    ----------
    model : Seq2seq, PeekySeq2seq or AttentionSeq2seq
    x : (n, T_enc) int array
        Questions (reversed if the model reads them reversed).
    t : (n, 1 + T_dec) int array
        Answers with their start symbol.
    batch_size : int
        Questions decoded at once (memory: the encoder's gates are batch * T_enc * kH
        floats). Each batch is decoded alone, so the count does not depend on it; smaller
        batches keep a step's arrays in the caches (the book's date model on its 5,000
        test questions, one thread: 2.0-2.3 CPU s at 100-250 against 2.9-3.3 at 1,000,
        measured on a busy machine).
    beam_size : int, optional
        Beam search instead of greedy decoding (see :meth:`Seq2seq.generate`).

    Returns
    -------
    (correct, total) : tuple of int

    Notes
    -----
    With npgated's threads on (:func:`npgated.parallel.use_threads`, as ``npgated eval``
    runs) and a host model, the batches are shared out over the threads, each thread
    decoding its share with a copy of the model (``copy.deepcopy``: generation sets layer
    state and modes, so two threads never share one model) and each product in one BLAS
    call: the whole step runs in parallel instead of only its split products.
    """
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    x = np.asarray(backend.to_cpu(x))
    t = np.asarray(backend.to_cpu(t))
    if x.ndim != 2 or t.ndim != 2 or len(x) != len(t) or t.shape[1] < 2:
        raise ValueError(
            f"x (n, T_enc) and t (n, 1 + T_dec) with the same n and T_dec >= 1, "
            f"got {checks.shape_str(x.shape)} and {checks.shape_str(t.shape)}"
        )
    batches = [slice(s, s + batch_size) for s in range(0, len(x), batch_size)]
    # one contiguous share of the batches per thread (one share: threads off, or a device)
    shares = parallel.parts(len(batches), 1, model.params[0])
    models = [model] + [copy.deepcopy(model) for _ in shares[1:]]

    def correct_in(k):
        count = 0
        for rows in batches[shares[k]]:
            xs, ts = x[rows], t[rows]
            guess = models[k].generate(xs, ts[:, 0], ts.shape[1] - 1, beam_size=beam_size)
            count += int((guess == ts[:, 1:]).all(axis=1).sum())
        return count

    return sum(parallel.run(correct_in, range(len(shares)))), len(x)


accuracy = seq2seq_accuracy
"""Alias of :func:`seq2seq_accuracy`."""
