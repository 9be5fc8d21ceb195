"""Tests of npgated/interop/torch.py, model level: model_to_torch, model_from_torch.

An Rnnlm / BetterRnnlm exported to torch gives npgated's loss on real Penn Treebank windows
(eval mode, float64, the recurrent state carried from one window to the next), and imported
back gives identical parameters.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import npgated.interop.torch as nt  # noqa: E402  (after the importorskip)
from npgated import backend  # noqa: E402
from npgated.data.ptb import load_data  # noqa: E402
from npgated.models.rnnlm import BetterRnnlm, Rnnlm  # noqa: E402

V, D, H = 10000, 16, 16
N, T = 4, 12

MODELS = {
    "rnnlm-lstm": lambda **kw: Rnnlm(V, D, H, cell="lstm", **kw),
    "better-gru-tied": lambda **kw: BetterRnnlm(V, D, H, num_layers=2, cell="gru", **kw),
    "better-lstm-tied": lambda **kw: BetterRnnlm(V, D, H, num_layers=2, cell="lstm", **kw),
    "better-rnn-untied": lambda **kw: BetterRnnlm(
        V, D, 12, num_layers=2, cell="rnn", tie_weights=False, **kw
    ),
}


def make_model(name, dtype=np.float64):
    # init=0.1: U(-0.1, 0.1) for every parameter, biases included, so every bias is checked
    return MODELS[name](dtype=dtype, seed=0, init=0.1)


@pytest.fixture(scope="module")
def ptb_windows(ptb_dir):
    """Two consecutive (xs, ts) windows of N rows x T steps from the real PTB train split."""
    corpus, word_to_id, _ = load_data("train", ptb_dir)
    assert len(word_to_id) == V
    rows = corpus[: N * (2 * T + 1)].reshape(N, 2 * T + 1).astype(np.int64)
    return [(rows[:, s : s + T], rows[:, s + 1 : s + T + 1]) for s in (0, T)]


def assert_same_params(a, b):
    na, nb = a.named_params(), b.named_params()
    assert [n for n, _, _ in na] == [n for n, _, _ in nb]
    for (name, p, _), (_, q, _) in zip(na, nb):
        assert q.dtype == p.dtype and q.shape == p.shape, name
        np.testing.assert_array_equal(backend.to_cpu(q), backend.to_cpu(p), err_msg=name)


@pytest.mark.parametrize("name", list(MODELS))
def test_exported_model_gives_the_same_loss_on_ptb(name, ptb_windows):
    model = make_model(name).eval()
    tlm = nt.model_to_torch(model)
    assert isinstance(tlm, nt.NpgatedTorchLM) and not tlm.training
    assert tlm.embed.weight.dtype == torch.float64
    assert (tlm.decoder.weight is tlm.embed.weight) == model.config.get("tie_weights", False)
    state = None
    for xs, ts in ptb_windows:  # the second window starts from the carried state
        loss = float(model.forward(xs, ts))
        with torch.no_grad():
            loss_t, state = tlm.loss(torch.from_numpy(xs), torch.from_numpy(ts), state)
        assert abs(loss - float(loss_t)) <= 1e-10 * abs(loss), (name, loss, float(loss_t))
    # logits too, for a fresh window from zero state
    model.reset_state()
    with torch.no_grad():
        logits_t, _ = tlm(ptb_windows[0][0])
    logits = backend.to_cpu(model.predict(ptb_windows[0][0]))
    err = np.abs(logits - logits_t.numpy()).max() / np.abs(logits).max()
    assert err <= 1e-10, f"{name}: logits differ by {err:.1e}"


@pytest.mark.parametrize("name", list(MODELS))
def test_round_trip_gives_identical_parameters(name, xp_name):
    model = make_model(name)
    back = nt.model_from_torch(nt.model_to_torch(model))
    assert type(back) is type(model) and back.config == model.config
    assert_same_params(model, back)
    assert all(backend.get_array_module(p) is backend.xp() for p in back.params)
    if model.config.get("tie_weights"):
        assert back.layers["affine"].params[0] is back.layers["embed"].params[0]
        assert len(back.params) == len(model.params)


def test_changes_made_in_torch_come_back(xp_name):
    """Fine-tune in torch (here: one SGD step), import, export again: the same function."""
    model = BetterRnnlm(50, 8, 8, num_layers=2, cell="lstm", seed=0, init=0.1)
    tlm = nt.model_to_torch(model).train()
    loss, _ = tlm.loss(np.ones((2, 5), dtype=np.int64), np.zeros((2, 5), dtype=np.int64))
    loss.backward()
    with torch.no_grad():
        for p in tlm.parameters():
            p -= 0.5 * p.grad
    back = nt.model_from_torch(tlm)
    assert back.dtype == np.float32 and back.training
    assert not np.array_equal(back.to_host()["embed.W"], model.to_host()["embed.W"])
    again = dict(nt.model_to_torch(back).named_parameters())
    for name, p in tlm.named_parameters():
        if "bias_hh" in name:  # torch trained it; npgated holds b = bias_ih + bias_hh
            assert not again[name].any()
            p_ih = tlm.get_parameter(name.replace("bias_hh", "bias_ih"))
            q_ih = again[name.replace("bias_hh", "bias_ih")]
            assert torch.equal(q_ih, p_ih + p), name
        elif "bias_ih" not in name:
            assert torch.equal(again[name], p), name


def test_torch_dropout_is_variational_and_off_in_eval():
    model = BetterRnnlm(50, 8, 8, num_layers=1, dropout_ratio=0.5, cell="gru", seed=0)
    tlm = nt.model_to_torch(model)
    assert tlm.training  # mirrors the model's mode
    drop = tlm.drops[0]
    x = torch.ones(3, 7, 8)
    y = drop(x)
    assert set(torch.unique(y).tolist()) <= {0.0, 2.0}
    assert torch.equal(y, y[:, :1].expand_as(y))  # one mask per sequence, reused over time
    assert torch.equal(drop.eval()(x), x)


def test_model_errors():
    with pytest.raises(ValueError, match="reset_after=False"):
        nt.model_to_torch(Rnnlm(50, 8, 8, cell="gru", reset_after=False, seed=0))
    with pytest.raises(TypeError, match="NpgatedTorchLM"):
        nt.model_from_torch(torch.nn.LSTM(4, 4))
