"""Recurrent language models: the book's ``Rnnlm`` and the Zaremba-style ``BetterRnnlm``.

Both are a stack of Time layers read bottom to top::

    ids (N, T) -> TimeEmbedding -> [TimeDropout] -> cell_1 -> [TimeDropout] -> ... -> cell_L
               -> [TimeDropout] -> TimeAffine (H -> V) -> TimeSoftmaxWithLoss(targets (N, T))

``Rnnlm`` (DLfS2 ch. 6) has one recurrent layer and no dropout. ``BetterRnnlm`` follows
Zaremba, Sutskever & Vinyals (2014), "Recurrent Neural Network Regularization": several
layers with dropout between them and before the output, plus two later improvements:

- variational dropout (Gal & Ghahramani 2016, "A Theoretically Grounded Application of
  Dropout in Recurrent Neural Networks"): one mask per sequence and feature, reused at every
  time step (``variational=True``; ``False`` gives the book's per-step masks);
- weight tying (Press & Wolf 2016; Inan et al. 2016): the output projection uses the
  embedding matrix itself, logits = h @ E.T + b, which needs hidden size == embedding size.

Optional, all off by default, the regularizers of the recurrence that AWD-LSTM combines
(Merity, Keskar & Socher 2017, "Regularizing and Optimizing LSTM Language Models"):
recurrent dropout and weight drop inside every recurrent layer, embedding dropout (whole
word types), and AR / TAR penalties on the last recurrent layer's outputs.

The loss is the mean cross-entropy per target token; perplexity is its exponential.
The recurrent layers are stateful: state carries from one window to the next (truncated
BPTT); call ``reset_state()`` at the start of a new text.
"""

from __future__ import annotations

import numpy as np

from npgated import backend, checks, pipeline
from npgated.layers.activation_reg import ActivationRegularizer, TemporalActivationRegularizer
from npgated.layers.affine import TimeAffine, fuse_weight_and_bias
from npgated.layers.dropout import TimeDropout
from npgated.layers.embedding import TimeEmbedding
from npgated.layers.gru import TimeGRU
from npgated.layers.loss import TimeSoftmaxWithLoss
from npgated.layers.lstm import TimeLSTM
from npgated.layers.rnn import TimeRNN
from npgated.models.base import Model
from npgated.optim.base import check_range

CELLS = ("lstm", "gru", "rnn")
GATES = {"lstm": 4, "gru": 3, "rnn": 1}  # gate blocks per cell: Wx is (D, GATES[cell] * H)


def _check_cell(cell: str) -> str:
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; choose one of: {', '.join(CELLS)}")
    return cell


class _Init:
    """Host-side parameter initialisation from one seeded generator, then moved to the device.

    ``init="book"``: N(0, 1) / 100 for the embedding, N(0, 1) / sqrt(fan_in) for weight
    matrices (Xavier-like, as DLfS2), zeros for biases. A float ``s`` instead: U(-s, s) for
    every parameter, biases included (Zaremba et al. use s = 0.1 and 0.05).
    """

    def __init__(self, init, seed, dtype):
        if not (init == "book" or (isinstance(init, (int, float)) and init > 0)):
            raise ValueError(f"init must be 'book' or a positive float scale, got {init!r}")
        self.init = init
        self.rng = backend.default_rng(seed)
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"dtype must be a floating-point type, got {self.dtype}")

    def _finish(self, a):
        return backend.to_device(a.astype(self.dtype))

    def weight(self, shape, scale):
        if self.init == "book":
            return self._finish(self.rng.standard_normal(shape) * scale)
        return self._finish(self.rng.uniform(-self.init, self.init, shape))

    def bias(self, shape):
        if self.init == "book":
            return self._finish(np.zeros(shape))
        return self._finish(self.rng.uniform(-self.init, self.init, shape))


def _make_cell(cell, init: _Init, D, H, reset_after, **drop):
    """A stateful Time layer of ``cell``; ``drop``: recurrent_dropout, weight_drop, seed."""
    k = GATES[cell]
    Wx = init.weight((D, k * H), 1 / np.sqrt(D))
    Wh = init.weight((H, k * H), 1 / np.sqrt(H))
    if cell == "lstm":
        return TimeLSTM(Wx, Wh, init.bias((4 * H,)), stateful=True, **drop)
    if cell == "gru":
        b = init.bias((2, 3 * H) if reset_after else (3 * H,))
        return TimeGRU(Wx, Wh, b, stateful=True, reset_after=reset_after, **drop)
    return TimeRNN(Wx, Wh, init.bias((H,)), stateful=True, **drop)


def _owned_logits_loss():
    """The loss layer of a model: the logits it receives are the model's own intermediate
    result, so it may use them as its buffer (see TimeSoftmaxWithLoss.overwrite_input)."""
    loss = TimeSoftmaxWithLoss()
    loss.overwrite_input = True
    return loss


class LanguageModel(Model):
    """A sequential stack ending in a softmax loss: forward, backward, predict, generate."""

    def __init__(self, vocab_size, flat=None):
        super().__init__(flat=flat)
        self.vocab_size = checks.check_positive_int(vocab_size, "vocab_size")
        self._plan = None  # how the last forward ran the recurrent stack (npgated.pipeline)

    def _body(self):
        return [layer for name, layer in self.layers.items() if name != "loss"]

    def _through(self, layers, xs):
        """Token ids ``xs`` (N, T) through ``layers`` (the first ones of the body)."""
        checks.check_ids(xs, self.vocab_size, "xs", ndim=2)
        # the layers one after the other, the recurrent stack pipelined over chunks of the
        # window when that applies (npgated.pipeline: the same numbers)
        out, self._plan = pipeline.forward(layers, xs)
        return out

    def predict(self, xs):
        """Logits (N, T, V) for token ids ``xs`` (N, T); state carries as in ``forward``."""
        return self._through(self._body(), xs)

    def forward(self, xs, ts):
        """Mean cross-entropy per target token of the predictions for ``xs`` against ``ts``.

        Parameters
        ----------
        xs : (N, T) int array
            Input token ids (host or device).
        ts : (N, T) int array
            Target ids (the next tokens); ``-1`` entries are ignored.

        Returns
        -------
        loss : float-like scalar in the model's dtype.
        """
        if tuple(np.shape(xs)) != tuple(np.shape(ts)):
            raise ValueError(
                f"inputs xs {checks.shape_str(np.shape(xs))} and targets ts "
                f"{checks.shape_str(np.shape(ts))} must have the same shape (N, T)"
            )
        loss, body = self.layers["loss"], self._body()
        if (
            not self.training
            and isinstance(loss, TimeSoftmaxWithLoss)
            and isinstance(body[-1], TimeAffine)
        ):
            # evaluation: the loss straight from the output layer's input, block by block,
            # without the (N, T, V) logits (TimeSoftmaxWithLoss.forward_affine)
            return loss.forward_affine(self._through(body[:-1], xs), body[-1], ts)
        return loss.forward(self.predict(xs), ts)

    def backward(self, dout=1.0):
        """Backpropagate the loss through every layer; accumulates into ``grads``."""
        d = self.layers["loss"].backward(dout)
        return pipeline.backward(self._body(), d, self._plan)  # as the forward ran

    def generate(self, start_ids, length, temperature=1.0, top_k=None, skip_ids=(), seed=None):
        """Sample ``length`` tokens after ``start_ids``.

        See :func:`npgated.models.generation.generate`.
        """
        from npgated.models.generation import generate  # noqa: PLC0415 (avoids an import cycle)

        return generate(self, start_ids, length, temperature, top_k, skip_ids, seed)


class Rnnlm(LanguageModel):
    """The book's chapter-6 model: Embedding -> one recurrent layer -> Affine -> softmax loss.

    Parameters
    ----------
    vocab_size : int (V)
    wordvec_size : int (D)
    hidden_size : int (H)
    cell : {"lstm", "gru", "rnn"}
    seed : int, optional
        Seeds the initialisation (the only randomness of this model).
    dtype : float32 for training, float64 for gradient checks.
    init : "book" or float
        See :class:`_Init`.
    reset_after : bool
        GRU variant (True: PyTorch/cuDNN, exportable to torch).
    flat : bool or None
        One flat buffer for the parameters and one for the gradients (None: on unless
        ``NPGATED_FLAT=0``; see :mod:`npgated.flat`). Not part of ``config``.
    """

    def __init__(
        self,
        vocab_size=10000,
        wordvec_size=100,
        hidden_size=100,
        cell="lstm",
        seed=None,
        dtype=np.float32,
        init="book",
        reset_after=True,
        flat=None,
    ):
        super().__init__(vocab_size, flat=flat)
        V = self.vocab_size
        D = checks.check_positive_int(wordvec_size, "wordvec_size")
        H = checks.check_positive_int(hidden_size, "hidden_size")
        self.cell = _check_cell(cell)
        self.config = dict(
            model="Rnnlm",
            vocab_size=V,
            wordvec_size=D,
            hidden_size=H,
            cell=cell,
            init=init,
            reset_after=reset_after,
        )
        ini = _Init(init, seed, dtype)
        self.add_layer("embed", TimeEmbedding(ini.weight((V, D), 1 / 100)))
        self.add_layer(f"{cell}1", _make_cell(cell, ini, D, H, reset_after))
        # W and b as the two parts of one (H + 1, V) array: TimeAffine's one-GEMM bias path
        W, b = fuse_weight_and_bias(ini.weight((H, V), 1 / np.sqrt(H)), ini.bias((V,)))
        self.add_layer("affine", TimeAffine(W, b))
        self.add_layer("loss", _owned_logits_loss())
        self.collect_params()


class BetterRnnlm(LanguageModel):
    """Stacked recurrent LM with (variational) dropout and weight tying (Zaremba et al. 2014).

    Layers: embed, drop0, cell1, drop1, ..., cellL, [tar], dropL, [ar], affine (tied to
    embed), loss; ``tar`` and ``ar`` exist only when their weight is > 0.

    Parameters
    ----------
    vocab_size, wordvec_size, hidden_size : int (V, D, H)
    num_layers : int
        Number of stacked recurrent layers (L).
    dropout_ratio : float in [0, 1)
        Dropout after the embedding, between recurrent layers and before the output.
    variational : bool
        One mask per sequence and feature reused over time (Gal & Ghahramani 2016).
    tie_weights : bool
        Output projection uses the embedding matrix (requires hidden_size == wordvec_size).
    cell, seed, dtype, init, reset_after, flat : as in :class:`Rnnlm`. The seed also seeds every
        stochastic layer (each its own generator, spawned from the seed: the initialisation,
        drop0..dropL, then the recurrent layers 1..L, then the embedding, so models without
        the options below draw exactly what they drew before these existed).
    recurrent_dropout : float in [0, 1)
        Every recurrent layer: h_{t-1} -> m * h_{t-1} in the product with Wh only, one
        mask m (N, H) per window (Gal & Ghahramani 2016).
    weight_drop : float in [0, 1)
        Every recurrent layer: Wh -> Wh * M, one DropConnect mask per window (Merity et al.
        2017).
    embedding_dropout : float in [0, 1)
        Whole rows of the embedding dropped per word type per window (Gal & Ghahramani 2016).
    ar, tar : float >= 0
        Weights alpha, beta of activation regularization on the dropped outputs of the last
        recurrent layer and of temporal activation regularization on its raw outputs
        (Merity et al. 2017; :mod:`npgated.layers.activation_reg`). Their gradients join
        backward; :meth:`forward` still returns the cross-entropy alone, the penalty of the
        last forward is :attr:`penalty`.
    """

    def __init__(
        self,
        vocab_size=10000,
        wordvec_size=650,
        hidden_size=650,
        num_layers=2,
        dropout_ratio=0.5,
        variational=True,
        tie_weights=True,
        cell="lstm",
        seed=None,
        dtype=np.float32,
        init="book",
        reset_after=True,
        recurrent_dropout=0.0,
        weight_drop=0.0,
        embedding_dropout=0.0,
        ar=0.0,
        tar=0.0,
        flat=None,
    ):
        super().__init__(vocab_size, flat=flat)
        V = self.vocab_size
        D = checks.check_positive_int(wordvec_size, "wordvec_size")
        H = checks.check_positive_int(hidden_size, "hidden_size")
        L = checks.check_positive_int(num_layers, "num_layers")
        p = checks.check_ratio(dropout_ratio)
        self.cell = _check_cell(cell)
        if tie_weights and H != D:
            raise ValueError(
                f"weight tying needs hidden_size == wordvec_size (the output matrix is the "
                f"(V, D) embedding used as (H, V)), got hidden_size={H}, wordvec_size={D}; "
                "make them equal or pass tie_weights=False"
            )
        self.config = dict(
            model="BetterRnnlm",
            vocab_size=V,
            wordvec_size=D,
            hidden_size=H,
            num_layers=L,
            dropout_ratio=p,
            variational=bool(variational),
            tie_weights=bool(tie_weights),
            cell=cell,
            init=init,
            reset_after=reset_after,
            recurrent_dropout=checks.check_ratio(recurrent_dropout, "recurrent_dropout"),
            weight_drop=checks.check_ratio(weight_drop, "weight_drop"),
            embedding_dropout=checks.check_ratio(embedding_dropout, "embedding_dropout"),
            ar=check_range(ar, "ar", low=0.0),
            tar=check_range(tar, "tar", low=0.0),
        )
        # children 0 .. L+1 as before these options existed; the new ones appended
        seeds = np.random.SeedSequence(seed).spawn(2 * L + 3)
        ini = _Init(init, seeds[0], dtype)
        embed = self.add_layer(
            "embed",
            TimeEmbedding(
                ini.weight((V, D), 1 / 100),
                embedding_dropout=self.config["embedding_dropout"],
                seed=seeds[2 * L + 2],
            ),
        )
        self.add_layer("drop0", TimeDropout(p, variational=variational, seed=seeds[1]))
        for i in range(1, L + 1):
            self.add_layer(
                f"{cell}{i}",
                _make_cell(
                    cell,
                    ini,
                    D if i == 1 else H,
                    H,
                    reset_after,
                    recurrent_dropout=self.config["recurrent_dropout"],
                    weight_drop=self.config["weight_drop"],
                    seed=seeds[L + 1 + i],
                ),
            )
            if i == L and self.config["tar"] > 0:
                self.add_layer("tar", TemporalActivationRegularizer(self.config["tar"]))
            self.add_layer(f"drop{i}", TimeDropout(p, variational=variational, seed=seeds[i + 1]))
        if self.config["ar"] > 0:
            self.add_layer("ar", ActivationRegularizer(self.config["ar"]))
        if tie_weights:
            affine = TimeAffine.tied_to(embed, bias=True)
            if init != "book":
                affine.params[1][...] = ini.bias((V,))
        else:
            # W and b as the two parts of one (H + 1, V) array (the one-GEMM bias path)
            W, b = fuse_weight_and_bias(ini.weight((H, V), 1 / np.sqrt(H)), ini.bias((V,)))
            affine = TimeAffine(W, b)
        self.add_layer("affine", affine)
        self.add_layer("loss", _owned_logits_loss())
        self.collect_params()

    def dropout_layers(self):
        return [layer for name, layer in self.layers.items() if name.startswith("drop")]

    def stochastic_layers(self):
        """Every layer that draws masks from its own ``rng`` (dropout, recurrent, embedding)."""
        return [layer for layer in self.layers.values() if hasattr(layer, "rng")]

    def regularizers(self):
        """The AR / TAR layers (empty when ``ar`` and ``tar`` are 0)."""
        return [layer for name, layer in self.layers.items() if name in ("ar", "tar")]

    @property
    def penalty(self) -> float:
        """AR + TAR of the last training-mode forward (0.0 in eval mode or without them).

        The objective whose gradient :meth:`backward` computes is ``loss + penalty``.
        """
        return float(sum(layer.penalty for layer in self.regularizers()))

    def backward(self, dout=1.0):
        """Backpropagate ``dout * (loss + penalty)``; accumulates into ``grads``."""
        for layer in self.regularizers():
            layer.dpenalty = float(dout)
        return super().backward(dout)


def build_model(config: dict, dtype=np.float32, seed=None):
    """Build a model from its ``config`` dict (as stored in checkpoints).

    The encoder-decoders (``Seq2seq``, ``PeekySeq2seq``, ``AttentionSeq2seq``) are built by
    :func:`npgated.models.seq2seq.build_seq2seq`, so one call rebuilds any checkpoint's model.
    """
    config = dict(config)
    kind = config.pop("model", "Rnnlm")
    from npgated.models import seq2seq  # noqa: PLC0415 (seq2seq imports this module)

    if kind in seq2seq.MODELS:
        return seq2seq.build_seq2seq({"model": kind, **config}, dtype=dtype, seed=seed)
    classes = {"Rnnlm": Rnnlm, "BetterRnnlm": BetterRnnlm}
    if kind not in classes:
        raise ValueError(f"unknown model {kind!r}; expected one of {sorted(classes)}")
    return classes[kind](**config, dtype=dtype, seed=seed)
