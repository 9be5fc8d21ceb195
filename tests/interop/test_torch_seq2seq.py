"""The encoder-decoders against PyTorch: the same model built from nn.Embedding, nn.LSTM /
nn.GRU and nn.Linear (weights converted by npgated.interop.torch), loss and every gradient
through autograd, float64, relative error <= 1e-9."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import npgated.interop.torch as nt  # noqa: E402  (after the importorskip)
from npgated import backend  # noqa: E402
from npgated.gradcheck import rel_error  # noqa: E402
from npgated.models.seq2seq import AttentionSeq2seq, PeekySeq2seq, Seq2seq  # noqa: E402

CLASSES = {"Seq2seq": Seq2seq, "PeekySeq2seq": PeekySeq2seq, "AttentionSeq2seq": AttentionSeq2seq}
V, D, H = 13, 6, 8
N, T_ENC, T_ANS = 5, 7, 5


class TorchSeq2seq(torch.nn.Module):
    """The npgated model's architecture, written with torch modules."""

    def __init__(self, model):
        super().__init__()
        self.kind, self.cell = type(model).__name__, model.cell
        layers = model.layers

        def embedding(layer):
            return torch.nn.Embedding.from_pretrained(
                torch.from_numpy(backend.to_cpu(layer.params[0]).copy()), freeze=False
            )

        self.enc_embed = embedding(layers["encoder.embed"])
        self.dec_embed = embedding(layers["decoder.embed"])
        self.enc_rnn = nt.to_torch(layers[f"encoder.{self.cell}"])
        self.dec_rnn = nt.to_torch(layers[f"decoder.{self.cell}"])
        W, b = (backend.to_cpu(p) for p in layers["decoder.affine"].params)
        self.affine = torch.nn.Linear(*W.shape, dtype=torch.float64)
        with torch.no_grad():
            self.affine.weight.copy_(torch.from_numpy(W.T.copy()))
            self.affine.bias.copy_(torch.from_numpy(b.copy()))

    def forward(self, xs, ts):
        hs_enc, _ = self.enc_rnn(self.enc_embed(xs))  # zero initial state
        h = hs_enc[:, -1]
        state = h[None] if self.cell == "gru" else (h[None], torch.zeros_like(h)[None])
        es = self.dec_embed(ts[:, :-1])
        if self.kind == "PeekySeq2seq":
            peek = h[:, None].expand(-1, es.shape[1], -1)
            hs_dec, _ = self.dec_rnn(torch.cat([peek, es], dim=2), state)
            u = torch.cat([peek, hs_dec], dim=2)
        else:
            hs_dec, _ = self.dec_rnn(es, state)
            u = hs_dec
            if self.kind == "AttentionSeq2seq":
                a = torch.softmax(hs_dec @ hs_enc.transpose(1, 2), dim=2)
                u = torch.cat([a @ hs_enc, hs_dec], dim=2)
        scores = self.affine(u)
        return torch.nn.functional.cross_entropy(
            scores.reshape(-1, scores.shape[-1]), ts[:, 1:].reshape(-1)
        )

    def npgated_grads(self):
        """The gradients in npgated's names and layout."""

        def rnn(module, part):
            Wx, Wh = module.weight_ih_l0.grad.T, module.weight_hh_l0.grad.T
            # LSTM: b = bias_ih + bias_hh, so db = d bias_ih; GRU: b = [bias_ih; bias_hh]
            b = (
                torch.stack([module.bias_ih_l0.grad, module.bias_hh_l0.grad])
                if self.cell == "gru"
                else module.bias_ih_l0.grad
            )
            return {
                f"{part}.{self.cell}.Wx": Wx,
                f"{part}.{self.cell}.Wh": Wh,
                f"{part}.{self.cell}.b": b,
            }

        grads = {
            "encoder.embed.W": self.enc_embed.weight.grad,
            "decoder.embed.W": self.dec_embed.weight.grad,
            "decoder.affine.W": self.affine.weight.grad.T,
            "decoder.affine.b": self.affine.bias.grad,
            **rnn(self.enc_rnn, "encoder"),
            **rnn(self.dec_rnn, "decoder"),
        }
        return {k: v.numpy() for k, v in grads.items()}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("name", list(CLASSES))
def test_loss_and_gradients_match_pytorch(name, cell):
    model = CLASSES[name](V, D, H, cell=cell, seed=0, dtype=np.float64, init=0.3)
    rng = np.random.default_rng(1)
    xs, ts = rng.integers(0, V, (N, T_ENC)), rng.integers(0, V, (N, T_ANS))
    tm = TorchSeq2seq(model)
    loss_t = tm(torch.from_numpy(xs), torch.from_numpy(ts))
    loss_t.backward()
    model.zero_grads()
    loss = float(model.forward(xs, ts))
    model.backward()
    assert abs(loss - loss_t.detach().item()) <= 1e-9 * abs(loss)
    theirs = tm.npgated_grads()
    assert sorted(theirs) == sorted(model.param_names)
    for pname, _, grad in model.named_params():
        err = rel_error(grad, theirs[pname])
        assert err <= 1e-9, f"{name} ({cell}) d{pname}: {err:.1e}"
