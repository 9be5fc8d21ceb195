"""Tests of npgated/interop/torch.py, layer level: from_torch, to_torch, parity_report.

Every recurrent Time layer against torch's autograd in float64 (outputs, final states and the
gradients w.r.t. the input, the initial states and every weight, mapped back through the
layout), exact round trips, the reset_after=False GRU against an independent d2l reference,
and the errors for what cannot map.
"""

from __future__ import annotations

import doctest
import importlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import npgated.interop.torch as nt  # noqa: E402  (after the importorskip)
from npgated import backend  # noqa: E402
from npgated.layers.gru import TimeGRU  # noqa: E402
from npgated.layers.lstm import TimeLSTM  # noqa: E402
from npgated.layers.rnn import TimeRNN  # noqa: E402

N, T, D, H = 3, 4, 5, 6
TOL = 1e-9
TORCH = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def rel(a, b) -> float:
    a = np.asarray(backend.to_cpu(a), dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(1e-300, np.linalg.norm(a) + np.linalg.norm(b)))


def t2n(t):
    return t.detach().numpy()


def make_torch(kind, num_layers, batch_first, seed=0, bias=True, dtype=torch.float64, **kw):
    """A torch module whose parameters are drawn from a seeded NumPy generator."""
    module = TORCH[kind](
        D, H, num_layers=num_layers, batch_first=batch_first, bias=bias, dtype=dtype, **kw
    )
    r = np.random.default_rng(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(r.standard_normal(tuple(p.shape)) * 0.5))
    return module


def make_layers(kind, num_layers, dtype=np.float64, seed=0, to_dev=None):
    """npgated Time layers with random parameters (GRU: reset_after=True)."""
    if to_dev is None:
        to_dev = lambda a, dtype: backend.to_device(a, dtype=dtype)  # noqa: E731
    r = np.random.default_rng(seed)
    k = GATES[kind]
    layers = []
    for i in range(num_layers):
        Din = D if i == 0 else H
        Wx = to_dev(r.standard_normal((Din, k * H)) * 0.5, dtype)
        Wh = to_dev(r.standard_normal((H, k * H)) * 0.5, dtype)
        if kind == "gru":
            layers.append(
                TimeGRU(Wx, Wh, to_dev(r.standard_normal((2, 3 * H)), dtype), reset_after=True)
            )
        else:
            cls = TimeLSTM if kind == "lstm" else TimeRNN
            layers.append(cls(Wx, Wh, to_dev(r.standard_normal(k * H), dtype)))
    return layers


# -- parity with torch autograd -------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_first"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_stack_matches_torch_autograd(kind, num_layers, batch_first):
    L, lstm = num_layers, kind == "lstm"
    module = make_torch(kind, L, batch_first)
    r = np.random.default_rng(1)
    xs = r.standard_normal((N, T, D))
    h0, c0 = r.standard_normal((L, N, H)), r.standard_normal((L, N, H))
    dout, dhT = r.standard_normal((N, T, H)), r.standard_normal((L, N, H))
    # The loss is sum(out * dout) + sum(h_T * dhT). A Time layer's backward takes no dL/dc_T
    # (truncated BPTT never sends one), so c_T's values are compared but it is not in the loss.

    # torch
    x_t = torch.tensor(xs, requires_grad=True)
    h0_t = torch.tensor(h0, requires_grad=True)
    c0_t = torch.tensor(c0, requires_grad=True)
    out_t, state_t = module(
        x_t if batch_first else x_t.transpose(0, 1), (h0_t, c0_t) if lstm else h0_t
    )
    if not batch_first:
        out_t = out_t.transpose(0, 1)
    hT_t, cT_t = state_t if lstm else (state_t, None)
    ((out_t * torch.from_numpy(dout)).sum() + (hT_t * torch.from_numpy(dhT)).sum()).backward()

    # npgated: chain the Time layers by hand; initial states through set_state
    layers = nt.from_torch(module)
    assert len(layers) == L
    x = xs
    for k, layer in enumerate(layers):
        assert layer.stateful is False
        layer.stateful = True
        layer.set_state(h0[k], c0[k] if lstm else None)
        x = layer.forward(x)
    d = dout.copy()
    for k in reversed(range(L)):
        d[:, -1] += dhT[k]  # h_T of layer k is its last output
        d = layers[k].backward(d)

    checks = {
        "hs": (x, t2n(out_t)),
        "h_T": (np.stack([layer.h for layer in layers]), t2n(hT_t)),
        "dxs": (d, t2n(x_t.grad)),
        "dh0": (np.stack([layer.dh for layer in layers]), t2n(h0_t.grad)),
    }
    if lstm:
        checks["c_T"] = (np.stack([layer.c for layer in layers]), t2n(cT_t))
        checks["dc0"] = (np.stack([layer.dc for layer in layers]), t2n(c0_t.grad))
    for k, layer in enumerate(layers):
        dWx, dWh, db = layer.grads
        g_ih = t2n(getattr(module, f"bias_ih_l{k}").grad)
        g_hh = t2n(getattr(module, f"bias_hh_l{k}").grad)
        checks[f"l{k}.dWx"] = (dWx, t2n(getattr(module, f"weight_ih_l{k}").grad).T)
        checks[f"l{k}.dWh"] = (dWh, t2n(getattr(module, f"weight_hh_l{k}").grad).T)
        if kind == "gru":
            checks[f"l{k}.db"] = (db, np.stack([g_ih, g_hh]))
        else:  # b = b_ih + b_hh: both torch biases get the same gradient, which is db
            assert rel(g_ih, g_hh) <= 1e-14
            checks[f"l{k}.db"] = (db, g_ih)
    for name, (a, b) in checks.items():
        assert a.shape == b.shape, f"{kind} {name}: shape {a.shape} vs torch {b.shape}"
        err = rel(a, b)
        assert err <= TOL, f"{kind} L={L} {name}: rel. error {err:.1e} vs torch"


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_bias_false_maps_to_zero_biases(kind):
    module = make_torch(kind, 2, True, bias=False)
    layers = nt.from_torch(module)
    for layer in layers:
        assert not np.any(layer.params[2])
        assert layer.params[2].shape == ((2, 3 * H) if kind == "gru" else (GATES[kind] * H,))
    report = nt.parity_report(layers, module, np.random.default_rng(2).standard_normal((N, T, D)))
    assert "db" not in report
    assert max(report.values()) <= TOL, report


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_parity_report_on_backend(kind, xp_name, dev):
    layers = make_layers(kind, 2, to_dev=dev)
    module = nt.to_torch(layers, batch_first=False)
    xs = dev(np.random.default_rng(3).standard_normal((N, T, D)))
    report = nt.parity_report(layers, module, xs)
    expected = {"hs", "h", "dxs", "dWx", "dWh", "db"} | ({"c"} if kind == "lstm" else set())
    assert set(report) == expected
    assert max(report.values()) <= TOL, report
    # the check leaves both sides untouched: no gradients, no state, no torch .grad
    assert all(not np.any(backend.to_cpu(g)) for layer in layers for g in layer.grads)
    assert all(layer.h is None for layer in layers)
    assert all(p.grad is None for p in module.parameters())


def test_docstring_example_runs():
    result = doctest.testmod(nt, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0, result


# -- round trips, dtypes, backends ----------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_npgated_torch_npgated_is_exact(kind, dtype, xp_name, dev):
    layers = make_layers(kind, 2, dtype=dtype, to_dev=dev)
    for batch_first in (True, False):
        module = nt.to_torch(layers, batch_first=batch_first)
        assert isinstance(module, TORCH[kind]) and module.batch_first is batch_first
        assert module.num_layers == 2 and module.weight_ih_l0.dtype == nt._torch_dtype(dtype)
        back = nt.from_torch(module)
        assert [type(layer) for layer in back] == [type(layer) for layer in layers]
        for a, b in zip(layers, back):
            if kind == "gru":
                assert b.reset_after is True
            for name, p, q in zip(a.param_names, a.params, b.params):
                assert backend.get_array_module(q) is backend.xp(), f"{name} not on {xp_name}"
                assert q.dtype == p.dtype and q.shape == p.shape
                np.testing.assert_array_equal(backend.to_cpu(q), backend.to_cpu(p), err_msg=name)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_torch_npgated_torch_same_function(kind):
    module = make_torch(kind, 2, batch_first=True)
    again = nt.to_torch(nt.from_torch(module))
    for name, p in module.named_parameters():
        q = getattr(again, name)
        if name.startswith("weight") or kind == "gru":
            assert torch.equal(q, p), name
    xs = torch.from_numpy(np.random.default_rng(4).standard_normal((N, T, D)))
    with torch.no_grad():
        assert torch.allclose(again(xs)[0], module(xs)[0], rtol=1e-12, atol=1e-14)
    if kind != "gru":  # bias_ih + bias_hh moved into bias_ih
        assert torch.equal(
            again.bias_ih_l1 + again.bias_hh_l1, module.bias_ih_l1 + module.bias_hh_l1
        )
        assert not again.bias_hh_l1.any()


def test_dtypes():
    m32 = make_torch("lstm", 1, True, dtype=torch.float32)
    assert nt.from_torch(m32)[0].dtype == np.float32
    m64 = make_torch("gru", 1, True)
    (layer,) = nt.from_torch(m64, dtype=np.float32)
    assert layer.dtype == np.float32
    np.testing.assert_array_equal(layer.params[0], t2n(m64.weight_ih_l0).T.astype(np.float32))
    with pytest.raises(TypeError, match="bfloat16.*dtype="):
        nt.from_torch(make_torch("rnn", 1, True).to(torch.bfloat16))
    (layer,) = nt.from_torch(make_torch("rnn", 1, True).to(torch.bfloat16), dtype=np.float32)
    assert layer.dtype == np.float32


def test_dropout_is_not_converted_and_logged(caplog):
    module = make_torch("lstm", 2, True, dropout=0.3)
    with caplog.at_level("WARNING", logger="npgated.interop.torch"):
        assert len(nt.from_torch(module)) == 2
    assert "dropout=0.3" in caplog.text
    with pytest.raises(ValueError, match="dropout is active"):
        nt.parity_report(nt.from_torch(module), module, np.zeros((N, T, D)))


# -- the GRU torch does not have --------------------------------------------------------------
def d2l_gru_forward(xs, h0, Wx, Wh, b):
    """GRU of Cho et al. 2014 as d2l.ai writes it (reset before the recurrent product).

    R_t = sigma(X_t W_xr + H_{t-1} W_hr + b_r)
    Z_t = sigma(X_t W_xz + H_{t-1} W_hz + b_z)
    H~_t = tanh(X_t W_xh + (R_t * H_{t-1}) W_hh + b_h)
    H_t = Z_t * H_{t-1} + (1 - Z_t) * H~_t
    """
    W_xr, W_xz, W_xh = Wx[:, :H], Wx[:, H : 2 * H], Wx[:, 2 * H :]
    W_hr, W_hz, W_hh = Wh[:, :H], Wh[:, H : 2 * H], Wh[:, 2 * H :]
    b_r, b_z, b_h = b[:H], b[H : 2 * H], b[2 * H :]
    sigma = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    state, outputs = h0, []
    for t in range(xs.shape[1]):
        X = xs[:, t]
        R = sigma(X @ W_xr + state @ W_hr + b_r)
        Z = sigma(X @ W_xz + state @ W_hz + b_z)
        H_tilde = np.tanh(X @ W_xh + (R * state) @ W_hh + b_h)
        state = Z * state + (1 - Z) * H_tilde
        outputs.append(state)
    return np.stack(outputs, axis=1), state


def test_reset_before_gru_matches_d2l_and_is_refused():
    r = np.random.default_rng(5)
    Wx, Wh = r.standard_normal((D, 3 * H)) * 0.5, r.standard_normal((H, 3 * H)) * 0.5
    b, xs, h0 = r.standard_normal(3 * H), r.standard_normal((N, T, D)), r.standard_normal((N, H))
    layer = TimeGRU(Wx, Wh, b, reset_after=False)
    layer.set_state(h0)
    hs = layer.forward(xs)
    hs_ref, h_ref = d2l_gru_forward(xs, h0, Wx, Wh, b)
    assert rel(hs, hs_ref) <= 1e-12 and rel(layer.h, h_ref) <= 1e-12
    with pytest.raises(ValueError, match="reset_after=False.*no torch equivalent"):
        nt.to_torch([layer])
    with pytest.raises(ValueError, match="reset_after=False"):
        nt.from_torch(make_torch("gru", 1, True), reset_after=False)


# -- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: torch.nn.LSTM(D, H, bidirectional=True), "bidirectional=True"),
        (lambda: torch.nn.GRU(D, H, num_layers=2, bidirectional=True), "bidirectional=True"),
        (lambda: torch.nn.LSTM(D, H, proj_size=2), "proj_size=2"),
        (lambda: torch.nn.RNN(D, H, nonlinearity="relu"), "nonlinearity='relu'"),
    ],
    ids=["bidirectional-lstm", "bidirectional-gru", "proj_size", "relu"],
)
def test_from_torch_refuses_unsupported_options(make, match):
    with pytest.raises(ValueError, match=match):
        nt.from_torch(make())


def test_from_torch_refuses_other_modules():
    with pytest.raises(TypeError, match="torch.nn.LSTM, torch.nn.GRU or torch.nn.RNN.*LSTMCell"):
        nt.from_torch(torch.nn.LSTMCell(D, H))


def test_to_torch_refuses_what_cannot_map():
    lstm, gru = make_layers("lstm", 2), make_layers("gru", 1)
    with pytest.raises(ValueError, match="mixed cell kinds.*TimeLSTM, TimeGRU"):
        nt.to_torch([lstm[0], gru[0]])
    # layer 1 expects D = H = 6 but gets layer 0 of hidden size 7
    r = np.random.default_rng(6)
    wide = TimeLSTM(r.standard_normal((D, 28)), r.standard_normal((7, 28)), np.zeros(28))
    with pytest.raises(
        ValueError,
        match="mismatched sizes: layer 1 has input size D = 6 but layer 0 has hidden size H = 7",
    ):
        nt.to_torch([wide, lstm[1]])
    # sizes chain but the hidden size changes (torch has one hidden_size)
    with pytest.raises(ValueError, match="mismatched sizes: layer 1 has hidden size H = 7"):
        nt.to_torch(
            [
                lstm[0],
                TimeLSTM(r.standard_normal((H, 28)), r.standard_normal((7, 28)), np.zeros(28)),
            ]
        )
    with pytest.raises(ValueError, match="at least one"):
        nt.to_torch([])
    with pytest.raises(TypeError, match="TimeLSTM, TimeGRU or TimeRNN"):
        nt.to_torch([object()])
    f32 = make_layers("lstm", 2, dtype=np.float32)
    with pytest.raises(TypeError, match="different dtypes"):
        nt.to_torch([lstm[0], f32[1]])


def test_missing_torch_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    monkeypatch.delitem(sys.modules, "npgated.interop.torch")
    with pytest.raises(ImportError, match=r"pip install npgated\[torch\]"):
        importlib.import_module("npgated.interop.torch")
    import npgated.interop  # noqa: F401  (the package itself never needs torch)
