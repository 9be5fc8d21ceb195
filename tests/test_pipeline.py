"""The pipelined recurrent stack computes the sequential numbers (npgated.pipeline).

Each case runs the same model, seeds and windows three ways: sequential (NPGATED_PIPELINE=0),
the chunks one after the other in this thread (=1, npgated's threads off), and the chunks on
two threads (=1, threads on). Compared in float64: the loss, every gradient, the gradient
w.r.t. the window's initial state (dh, dc), the state carried to the next window (TBPTT),
the masks every stochastic layer drew, the AR/TAR penalty and the eval-mode loss.
"""

from __future__ import annotations

import numpy as np
import pytest

from npgated import parallel, pipeline
from npgated.layers.recurrent import RecurrentLayer
from npgated.models.rnnlm import BetterRnnlm, Rnnlm

V, D, H = 17, 5, 6
N, T = 3, 7


@pytest.fixture
def threads():
    """``threads(n)`` switches npgated's threads for the test; restored afterwards."""
    previous = parallel.threads()
    yield parallel.use_threads
    parallel.use_threads(previous)


def _model(cell, L, width=D, **kw):
    kw = {
        "num_layers": L,
        "dropout_ratio": 0.3,
        "variational": False,
        "seed": 2,
        "dtype": np.float64,
        "cell": cell,
        "init": 0.5,
        **kw,
    }
    return BetterRnnlm(V, width, width, **kw)


def _run(model, windows=3):
    """Train-mode windows (state carried), then one eval window: what each produced."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(windows):
        xs, ts = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
        model.zero_grads()
        loss = float(model.forward(xs, ts))
        model.backward()
        recurrent = [layer for layer in model.layers.values() if isinstance(layer, RecurrentLayer)]
        record = {"loss": loss, "penalty": model.penalty}
        record.update({f"grad {n}": g.copy() for n, _, g in model.named_params()})
        for i, layer in enumerate(recurrent):
            record[f"dh{i}"] = layer.dh.copy()
            record[f"h{i}"] = layer.h.copy()
            if layer.has_cell:
                record[f"dc{i}"] = layer.dc.copy()
                record[f"c{i}"] = layer.c.copy()
            for kind, mask in zip(("m", "M"), layer.drop_masks):
                if mask is not None:
                    record[f"mask {kind}{i}"] = mask.copy()
        for name, layer in model.layers.items():
            if name.startswith("drop") and getattr(layer, "_window_mask", None) is not None:
                record[f"mask {name}"] = layer._window_mask.copy()
        out.append(record)
    model.eval()
    xs, ts = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
    out.append({"eval loss": float(model.forward(xs, ts)), "predict": model.predict(xs)})
    return out


def _three_ways(build, monkeypatch, threads):
    results, plans = [], []
    for mode, n in (("0", 1), ("1", 1), ("1", 2)):
        monkeypatch.setenv(pipeline.ENV_VAR, mode)
        threads(n)
        model = build()
        results.append(_run(model))
        plans.append(model._plan)
    return results, plans


def _assert_same(reference, other, what):
    for w, (a, b) in enumerate(zip(reference, other)):
        for key in a:
            if key.startswith("mask drop") and key not in b:
                continue  # sequential dropout keeps its mask in its cache, not _window_mask
            np.testing.assert_allclose(
                b[key], a[key], rtol=1e-12, atol=1e-14, err_msg=f"{what}: window {w}, {key}"
            )


@pytest.mark.parametrize(
    "cell,L,kw",
    [
        ("lstm", 2, {}),
        (
            "lstm",
            3,
            {
                "recurrent_dropout": 0.2,
                "weight_drop": 0.3,
                "embedding_dropout": 0.1,
                "ar": 1.0,
                "tar": 1.0,
            },
        ),
        ("gru", 2, {"recurrent_dropout": 0.2, "weight_drop": 0.3}),
        ("gru", 2, {"reset_after": False, "variational": True}),
        ("rnn", 3, {"weight_drop": 0.3, "tie_weights": False}),
    ],
)
def test_pipelined_stack_computes_the_sequential_numbers(cell, L, kw, monkeypatch, threads):
    (seq, serial, threaded), plans = _three_ways(
        lambda: _model(cell, L, **kw), monkeypatch, threads
    )
    assert plans[0] is None and plans[1] is not None and plans[2] is not None
    assert len(plans[2].stages) == L and len(plans[2].bounds) == min(T, 4 * L)
    _assert_same(seq, serial, f"{cell} x {L}, chunks in one thread")
    _assert_same(seq, threaded, f"{cell} x {L}, chunks on two threads")
    # the recurrent masks the pipeline drew once per window are the sequential draws
    assert any(k.startswith("mask") for k in serial[0])


def test_dropout_masks_between_the_layers_are_the_window_masks(monkeypatch, threads):
    """The dropout layer between two recurrent layers draws its (N, T, H) mask at the first
    chunk: the mask sequential forward draws for the whole window."""
    (seq, serial, _), _ = _three_ways(lambda: _model("lstm", 2), monkeypatch, threads)
    monkeypatch.setenv(pipeline.ENV_VAR, "0")
    model = _model("lstm", 2)
    rng = np.random.default_rng(7)
    model.forward(rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T)))
    sequential_mask = model.layers["drop1"].cache.mask
    np.testing.assert_array_equal(serial[0]["mask drop1"], sequential_mask)


def test_recorded_gradient_norms_cover_the_whole_window(monkeypatch, threads):
    norms = []
    for mode in ("0", "1"):
        monkeypatch.setenv(pipeline.ENV_VAR, mode)
        threads(2)
        model = _model("lstm", 2)
        for layer in model.layers.values():
            if isinstance(layer, RecurrentLayer):
                layer.record_grad_norms = True
        _run(model, windows=1)
        norms.append(
            [
                layer.grad_norms
                for layer in model.layers.values()
                if isinstance(layer, RecurrentLayer)
            ]
        )
    for a, b in zip(*norms):
        assert a.shape == (T,)
        np.testing.assert_allclose(b, a, rtol=1e-12)


def test_when_the_stack_is_pipelined(monkeypatch, threads):
    xs = np.zeros((N, T, D))
    stack = list(_model("lstm", 2).layers.values())
    monkeypatch.setenv(pipeline.ENV_VAR, "0")
    assert pipeline.plan(stack, xs) is None
    monkeypatch.setenv(pipeline.ENV_VAR, "1")
    threads(1)
    assert pipeline.plan(stack, xs) is not None  # on: whatever the threads and H
    assert pipeline.plan(stack, np.zeros((N, 1, D))) is None  # one step: one chunk
    assert pipeline.plan(list(Rnnlm(V, D, H).layers.values()), xs) is None  # one layer
    monkeypatch.delenv(pipeline.ENV_VAR)  # auto
    threads(2)
    assert pipeline.plan(stack, xs) is None  # H = 5 < MIN_HIDDEN
    x32 = np.zeros((N, T, 4), np.float32)
    for width, on in (
        (pipeline.MIN_HIDDEN, True),
        (pipeline.MAX_HIDDEN, True),
        (pipeline.MAX_HIDDEN + 1, False),
    ):
        wide = list(_model("lstm", 2, width=width, dtype=np.float32).layers.values())
        assert (pipeline.plan(wide, x32) is not None) == on, width
    narrow = list(_model("lstm", 2, width=pipeline.MIN_HIDDEN, dtype=np.float32).layers.values())
    threads(3)
    assert pipeline.plan(narrow, x32) is None  # more threads than stages: split instead
    threads(1)
    assert pipeline.plan(narrow, x32) is None  # no threads: no gain
    monkeypatch.setenv(pipeline.ENV_VAR, "maybe")
    with pytest.raises(ValueError, match="NPGATED_PIPELINE='maybe' is not a switch"):
        pipeline.mode()


def test_a_failing_stage_raises_without_hanging(monkeypatch, threads):
    monkeypatch.setenv(pipeline.ENV_VAR, "1")
    threads(2)
    model = _model("lstm", 2)
    lower = model.layers["lstm1"]
    real = lower.forward_chunk

    def failing(xs, t0, T):
        if t0 > 0:
            raise FloatingPointError("injected in chunk 2 of layer 1")
        return real(xs, t0, T)

    monkeypatch.setattr(lower, "forward_chunk", failing)
    rng = np.random.default_rng(0)
    with pytest.raises(FloatingPointError, match="injected"):
        model.forward(rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T)))


def test_chunks_out_of_order_are_refused():
    layer = _model("lstm", 2).layers["lstm1"]
    xs = np.zeros((N, 2, D))
    with pytest.raises(RuntimeError, match="run a window's chunks in order"):
        layer.forward_chunk(xs, 2, 4)
    layer.forward_chunk(xs, 0, 4)
    with pytest.raises(RuntimeError, match="run the chunks' backward in reverse order"):
        layer.backward_chunk(np.zeros((N, 2, D)), 0, 4)  # the window is not complete
    layer.forward_chunk(xs, 2, 4)
    with pytest.raises(RuntimeError, match="run the chunks' backward in reverse order"):
        layer.backward_chunk(np.zeros((N, 2, D)), 0, 4)  # the last chunk comes first
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.zeros((N, 4, D)))  # the chunks' caches are not a window's
    layer.backward_chunk(np.zeros((N, 2, D)), 2, 4)
    layer.backward_chunk(np.zeros((N, 2, D)), 0, 4)
