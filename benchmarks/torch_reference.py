"""PyTorch versions of the npgated language models, for the speed comparison only.

The benchmark (``benchmarks/bench.py``) trains these side by side with npgated's ``Rnnlm`` and
``BetterRnnlm``, each in its own process. The architectures match layer for layer::

    ids (N, T) -> nn.Embedding(V, D) -> [dropout] -> cell_1 -> [dropout] -> ... -> cell_L
               -> [dropout] -> nn.Linear(H, V) (weight = the embedding when tied) -> cross-entropy

with the recurrent layers as one single-layer ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` each
(``batch_first=True``), so that the dropout between them can be variational (one mask per
sequence and feature, broadcast over time, Gal & Ghahramani 2016) exactly as in npgated.
Every recurrent module still runs PyTorch's fused CPU kernel. The state is carried from one
window to the next and detached (truncated BPTT), and a training step is the same five steps
as npgated's loop: zero the gradients, forward, backward, clip by global norm, SGD update.

Torch is imported only here and in tests, never in the ``npgated`` package.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class SequenceDropout(nn.Module):
    """Inverted dropout on (N, T, F) activations; variational: one (N, 1, F) mask per batch."""

    def __init__(self, p: float, variational: bool = True):
        super().__init__()
        self.p = float(p)
        self.variational = bool(variational)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        if not self.variational:
            return F.dropout(x, self.p, training=True)
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0], 1, x.shape[2])).bernoulli_(keep).div_(keep)
        return x * mask


class TorchLM(nn.Module):
    """Embedding -> L recurrent layers with dropout between -> (tied) linear output.

    Parameters
    ----------
    vocab_size, wordvec_size, hidden_size : int (V, D, H)
    num_layers : int (L)
    dropout : float in [0, 1)
        After the embedding, between recurrent layers and before the output (0: no dropout
        modules at all, as in ``Rnnlm``).
    variational : bool
        One mask per sequence and feature, reused at every step.
    tie_weights : bool
        The output weight is the embedding matrix itself (needs H == D).
    cell : {"lstm", "gru", "rnn"}
        ``nn.GRU`` is the reset-after variant, npgated's default (``reset_after=True``).
    init : "book" or float
        ``"book"``: N(0, 1)/100 embedding, N(0, 1)/sqrt(fan_in) weights, zero biases; a float
        ``s``: U(-s, s) everywhere. Only the starting point differs between the two; the
        benchmark measures speed, not the learning curve.
    seed : int
    """

    def __init__(
        self,
        vocab_size,
        wordvec_size,
        hidden_size,
        num_layers=1,
        dropout=0.0,
        variational=True,
        tie_weights=False,
        cell="lstm",
        init="book",
        seed=0,
    ):
        super().__init__()
        if cell not in _CELLS:
            raise ValueError(f"unknown cell {cell!r}; choose one of {sorted(_CELLS)}")
        if tie_weights and hidden_size != wordvec_size:
            raise ValueError(
                f"tying needs hidden_size == wordvec_size, got {hidden_size} and {wordvec_size}"
            )
        torch.manual_seed(seed)
        V, D, H = vocab_size, wordvec_size, hidden_size
        self.cell = cell
        self.embed = nn.Embedding(V, D)
        self.rnns = nn.ModuleList(
            _CELLS[cell](D if i == 0 else H, H, num_layers=1, batch_first=True)
            for i in range(num_layers)
        )
        self.drops = (
            nn.ModuleList(SequenceDropout(dropout, variational) for _ in range(num_layers + 1))
            if dropout > 0
            else None
        )
        self.decoder = nn.Linear(H, V)
        if tie_weights:
            self.decoder.weight = self.embed.weight  # one Parameter, one gradient
        self._init(init)
        self.state = [None] * num_layers

    @torch.no_grad()
    def _init(self, init):
        if init == "book":
            nn.init.normal_(self.embed.weight, std=0.01)
            for p in self.parameters():
                if p is self.embed.weight:
                    continue
                if p.dim() == 1:
                    p.zero_()
                else:
                    nn.init.normal_(p, std=p.shape[1] ** -0.5)
        else:
            for p in self.parameters():
                nn.init.uniform_(p, -float(init), float(init))

    def reset_state(self):
        self.state = [None] * len(self.rnns)

    def _detach_state(self):
        # truncated BPTT: the carried state is a constant for the next window
        def detach(s):
            if s is None:
                return None
            return tuple(t.detach() for t in s) if isinstance(s, tuple) else s.detach()

        self.state = [detach(s) for s in self.state]

    def forward(self, xs):
        """Logits (N, T, V) for ids ``xs`` (N, T) int64; carries the recurrent state."""
        self._detach_state()
        h = self.embed(xs)
        if self.drops is not None:
            h = self.drops[0](h)
        for i, rnn in enumerate(self.rnns):
            h, self.state[i] = rnn(h, self.state[i])
            if self.drops is not None:
                h = self.drops[i + 1](h)
        return self.decoder(h)

    def loss(self, xs, ts):
        """Mean cross-entropy per target token (as npgated's ``model.forward(xs, ts)``)."""
        logits = self.forward(xs)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ts.reshape(-1))


class TorchTrainer:
    """One SGD training step and one evaluation step, the npgated loop in PyTorch.

    Parameters
    ----------
    model : TorchLM
    lr : float
    max_grad_norm : float
        Global-norm clip (0 disables it).
    """

    def __init__(self, model: TorchLM, lr: float, max_grad_norm: float):
        self.model = model
        self.max_grad_norm = float(max_grad_norm)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def train_step(self, xs, ts) -> float:
        """zero_grad -> forward -> backward -> clip -> update; returns the loss (a float)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=False)  # zero in place, as npgated does
        loss = self.model.loss(xs, ts)
        loss.backward()
        if self.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def eval_step(self, xs, ts):
        """Loss of one window in eval mode (dropout off), no autograd graph."""
        self.model.eval()
        return self.model.loss(xs, ts)


def build(config: dict, seed: int = 0) -> TorchLM:
    """A :class:`TorchLM` from the npgated model keyword arguments used by the benchmark.

    ``config`` has ``vocab_size, wordvec_size, hidden_size, cell`` and optionally
    ``num_layers, dropout_ratio, variational, tie_weights, init`` (the names of
    ``npgated.models.rnnlm.BetterRnnlm``).
    """
    return TorchLM(
        config["vocab_size"],
        config["wordvec_size"],
        config["hidden_size"],
        num_layers=config.get("num_layers", 1),
        dropout=config.get("dropout_ratio", 0.0),
        variational=config.get("variational", True),
        tie_weights=config.get("tie_weights", False),
        cell=config["cell"],
        init=config.get("init", "book"),
        seed=seed,
    )
