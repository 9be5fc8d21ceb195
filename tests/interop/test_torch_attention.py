"""PyTorch parity of npgated/layers/attention.py and npgated/layers/bidirectional.py (float64).

Attention: the same equations written in torch here (autograd differentiates them), and torch's
own ``scaled_dot_product_attention`` with ``scale=1`` (the book's unscaled dot product), with
and without masks: the contexts, the weights and every gradient agree to 1e-9.

Bidirectional: ``TimeBiLSTM`` against ``torch.nn.LSTM(bidirectional=True)`` and ``TimeBiGRU
(reset_after=True)`` against ``torch.nn.GRU(bidirectional=True)``: the torch module's two
directions are copied into two unidirectional torch modules and converted with
``npgated.interop.torch.from_torch`` (which refuses a bidirectional module as a whole); the
outputs, final states and the gradients w.r.t. the input, the initial states and every weight
(mapped back through the layout) agree to 1e-9.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import npgated.interop.torch as nt  # noqa: E402  (after the importorskip)
from npgated.layers.attention import (  # noqa: E402
    Attention,
    AttentionWeight,
    TimeAttention,
    WeightSum,
)
from npgated.layers.bidirectional import TimeBiGRU, TimeBiLSTM  # noqa: E402

N, T_ENC, T_DEC, D, H = 3, 5, 4, 5, 6
TOL = 1e-9
LENS = np.array([3, 5, 1])
MASK = np.arange(T_ENC)[None, :] < LENS[:, None]


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(1e-300, np.linalg.norm(a) + np.linalg.norm(b)))


def t2n(t):
    return t.detach().numpy()


def leaf(a):
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


# -- attention written in torch -------------------------------------------------------------------
def torch_attention(hs_enc, hs_dec, mask=None):
    """The same equations in torch: S = Q K^T, masked softmax over the keys, C = A K."""
    S = hs_dec @ hs_enc.transpose(1, 2)
    if mask is not None:
        m = torch.as_tensor(mask)
        S = S.masked_fill(~(m[:, None, :] if m.dim() == 2 else m), float("-inf"))
    A = torch.softmax(S, dim=-1)
    return A @ hs_enc, A


MASKS = {
    "none": (None, {}),
    "mask": (MASK, {"mask": MASK}),
    "valid_lens": (MASK, {"valid_lens": LENS}),
}


@pytest.mark.parametrize("kind", list(MASKS))
def test_time_attention_matches_torch_autograd(rng, kind):
    torch_mask, kw = MASKS[kind]
    hs_enc, hs_dec = rng.standard_normal((N, T_ENC, H)), rng.standard_normal((N, T_DEC, H))
    dcs = rng.standard_normal((N, T_DEC, H))
    layer = TimeAttention()
    cs = layer.forward(hs_enc, hs_dec, **kw)
    dhs_enc, dhs_dec = layer.backward(dcs)

    te, td = leaf(hs_enc), leaf(hs_dec)
    tc, tA = torch_attention(te, td, torch_mask)
    tc.backward(torch.from_numpy(dcs))
    errors = {
        "cs": rel(cs, t2n(tc)),
        "weights": rel(layer.weights, t2n(tA)),
        "dhs_enc": rel(dhs_enc, t2n(te.grad)),
        "dhs_dec": rel(dhs_dec, t2n(td.grad)),
    }
    assert max(errors.values()) <= TOL, errors
    if torch_mask is not None:  # torch's masked gradient is exactly zero too
        assert np.all(t2n(te.grad)[~MASK] == 0) and np.all(dhs_enc[~MASK] == 0)


@pytest.mark.parametrize("per_step", [False, True], ids=["padding-mask", "per-step-mask"])
def test_time_attention_matches_scaled_dot_product_attention(rng, per_step):
    """torch's own kernel, unscaled (scale=1), boolean attn_mask True = take part."""
    F = torch.nn.functional
    mask = np.broadcast_to(MASK[:, None, :], (N, T_DEC, T_ENC)).copy()
    if per_step:
        mask[:2, 1, 0] = False  # sequence 2 has position 0 only: it keeps it
    hs_enc, hs_dec = rng.standard_normal((N, T_ENC, H)), rng.standard_normal((N, T_DEC, H))
    dcs = rng.standard_normal((N, T_DEC, H))
    layer = TimeAttention()
    cs = layer.forward(hs_enc, hs_dec, mask=mask if per_step else MASK)
    dhs_enc, dhs_dec = layer.backward(dcs)

    te, td = leaf(hs_enc), leaf(hs_dec)
    tc = F.scaled_dot_product_attention(td, te, te, attn_mask=torch.from_numpy(mask), scale=1.0)
    tc.backward(torch.from_numpy(dcs))
    errors = {
        "cs": rel(cs, t2n(tc)),
        "dhs_enc": rel(dhs_enc, t2n(te.grad)),
        "dhs_dec": rel(dhs_dec, t2n(td.grad)),
    }
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("masked", [False, True])
def test_single_query_layers_match_torch_autograd(rng, masked):
    hs, h = rng.standard_normal((N, T_ENC, H)), rng.standard_normal((N, H))
    kw = {"mask": MASK} if masked else {}
    dc, da = rng.standard_normal((N, H)), rng.standard_normal((N, T_ENC))

    # Attention
    att = Attention()
    c = att.forward(hs, h, **kw)
    dhs, dh = att.backward(dc)
    ths, th = leaf(hs), leaf(h)
    tc, tA = torch_attention(ths, th[:, None, :], MASK if masked else None)
    tc[:, 0].backward(torch.from_numpy(dc))
    errors = {
        "c": rel(c, t2n(tc)[:, 0]),
        "attention_weight": rel(att.attention_weight, t2n(tA)[:, 0]),
        "dhs": rel(dhs, t2n(ths.grad)),
        "dh": rel(dh, t2n(th.grad)),
    }
    assert max(errors.values()) <= TOL, errors

    # AttentionWeight alone
    aw = AttentionWeight()
    a = aw.forward(hs, h, **kw)
    dhs, dh = aw.backward(da)
    ths, th = leaf(hs), leaf(h)
    _, tA = torch_attention(ths, th[:, None, :], MASK if masked else None)
    tA[:, 0].backward(torch.from_numpy(da))
    errors = {
        "a": rel(a, t2n(tA)[:, 0]),
        "dhs": rel(dhs, t2n(ths.grad)),
        "dh": rel(dh, t2n(th.grad)),
    }
    assert max(errors.values()) <= TOL, errors

    # WeightSum alone (any weights)
    ws = WeightSum()
    c = ws.forward(hs, da)
    dhs, dweights = ws.backward(dc)
    ths, ta = leaf(hs), leaf(da)
    tc = (ta[:, :, None] * ths).sum(dim=1)
    tc.backward(torch.from_numpy(dc))
    errors = {
        "c": rel(c, t2n(tc)),
        "dhs": rel(dhs, t2n(ths.grad)),
        "da": rel(dweights, t2n(ta.grad)),
    }
    assert max(errors.values()) <= TOL, errors


# -- bidirectional ------------------------------------------------------------------------------
def make_bidirectional_torch(kind, seed=0):
    cls = torch.nn.LSTM if kind == "lstm" else torch.nn.GRU
    module = cls(D, H, batch_first=True, bidirectional=True, dtype=torch.float64)
    r = np.random.default_rng(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(r.standard_normal(tuple(p.shape)) * 0.5))
    return module


def directions(module):
    """Two unidirectional torch modules holding the forward and the reverse weights."""
    cls = type(module)
    out = []
    for suffix in ("", "_reverse"):
        uni = cls(D, H, batch_first=True, dtype=torch.float64)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(uni, f"{name}_l0").copy_(getattr(module, f"{name}_l0{suffix}"))
        out.append(uni)
    return out


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_bidirectional_matches_torch(rng, kind):
    module = make_bidirectional_torch(kind)
    (fwd,), (bwd,) = (nt.from_torch(uni) for uni in directions(module))
    if kind == "lstm":
        layer = TimeBiLSTM(*fwd.params, *bwd.params)
    else:
        layer = TimeBiGRU(*fwd.params, *bwd.params, reset_after=True)
    lstm = kind == "lstm"
    xs = rng.standard_normal((N, T_ENC, D))
    h0 = rng.standard_normal((2, N, H)) * 0.5
    c0 = rng.standard_normal((2, N, H)) * 0.5
    dhs = rng.standard_normal((N, T_ENC, 2 * H))

    layer.set_state(h0, c0 if lstm else None)
    hs = layer.forward(xs)
    dxs = layer.backward(dhs)

    txs, th0, tc0 = leaf(xs), leaf(h0), leaf(c0)
    out, state = module(txs, (th0, tc0) if lstm else th0)
    out.backward(torch.from_numpy(dhs))
    errors = {
        "hs": rel(hs, t2n(out)),
        "dxs": rel(dxs, t2n(txs.grad)),
        "h_n": rel(layer.h, t2n(state[0] if lstm else state)),
        "dh0": rel(layer.dh, t2n(th0.grad)),
    }
    if lstm:
        errors.update({"c_n": rel(layer.c, t2n(state[1])), "dc0": rel(layer.dc, t2n(tc0.grad))})
    for k, suffix in ((0, ""), (3, "_reverse")):
        dWx, dWh, db = layer.grads[k : k + 3]
        g = {
            name: t2n(getattr(module, f"{name}_l0{suffix}").grad)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        }
        errors[f"weight_ih_l0{suffix}"] = rel(dWx.T, g["weight_ih"])
        errors[f"weight_hh_l0{suffix}"] = rel(dWh.T, g["weight_hh"])
        if lstm:  # b = bias_ih + bias_hh: both torch biases get db
            errors[f"bias_ih_l0{suffix}"] = rel(db, g["bias_ih"])
            errors[f"bias_hh_l0{suffix}"] = rel(db, g["bias_hh"])
        else:  # b = stack([bias_ih, bias_hh])
            errors[f"bias_ih_l0{suffix}"] = rel(db[0], g["bias_ih"])
            errors[f"bias_hh_l0{suffix}"] = rel(db[1], g["bias_hh"])
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOL, f"{kind}: worst {worst} {errors[worst]:.1e}; all {errors}"
