"""TimeSoftmaxWithLoss.forward_affine: the evaluation loss without the (N, T, V) logits.

It must give the loss of ``forward(head.forward(hs), ts)`` for every kind of output layer
(fused [W ; b], separate arrays, the tied transposed view, no bias), with ignored targets,
with rows large enough to need the shifted redo, in one thread and split over two.
"""

from __future__ import annotations

import numpy as np
import pytest

from npgated import parallel
from npgated.layers import loss as loss_module
from npgated.layers.affine import TimeAffine, fuse_weight_and_bias
from npgated.layers.embedding import TimeEmbedding
from npgated.layers.loss import TimeSoftmaxWithLoss


def _heads(rng, D, V, dtype):
    W = rng.standard_normal((D, V)).astype(dtype)
    b = rng.standard_normal(V).astype(dtype)
    E = rng.standard_normal((V, D)).astype(dtype)
    return {
        "fused": TimeAffine(*fuse_weight_and_bias(W, b)),
        "separate": TimeAffine(W.copy(), b.copy()),
        "tied": TimeAffine.tied_to(TimeEmbedding(E), bias=True),
        "no-bias": TimeAffine(W.copy(), None),
    }


@pytest.fixture(params=[1, 2], ids=["one-thread", "two-threads"])
def threads(request, monkeypatch):
    monkeypatch.setattr(loss_module, "_FUSED_BLOCK_ELEMENTS", 3 * 17)  # several blocks
    monkeypatch.setattr(loss_module, "_FUSED_MIN_ROWS", 1)
    if request.param == 2:
        monkeypatch.setattr(parallel, "MIN_ELEMENTS", 4)
    parallel.use_threads(request.param)
    yield request.param
    parallel.use_threads(1)


@pytest.mark.parametrize("kind", ["fused", "separate", "tied", "no-bias"])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_equals_the_loss_of_the_logits(threads, kind, dtype, tol):
    rng = np.random.default_rng(0)
    N, T, D, V = 4, 5, 6, 17
    head = _heads(rng, D, V, dtype)[kind]
    hs = rng.standard_normal((N, T, D)).astype(dtype)
    ts = rng.integers(0, V, (N, T))
    ts[1, 2] = ts[3, 0] = -1  # ignored targets
    loss = TimeSoftmaxWithLoss()
    loss.eval()
    expected = float(loss.forward(head.forward(hs), ts))
    got = float(loss.forward_affine(hs, head, ts))
    assert got == pytest.approx(expected, rel=tol, abs=tol)
    with pytest.raises(RuntimeError, match="keeps nothing for backward: call model.train"):
        loss.backward()  # nothing kept, and it says why


def test_large_logits_take_the_shifted_path(threads):
    rng = np.random.default_rng(1)
    N, T, D, V = 3, 4, 5, 17
    W = rng.standard_normal((D, V))
    W[:, 3] *= 400.0  # logits of column 3 reach the hundreds: exp overflows unshifted
    head = TimeAffine(W, np.zeros(V))
    hs = rng.standard_normal((N, T, D))
    ts = rng.integers(0, V, (N, T))
    loss = TimeSoftmaxWithLoss()
    loss.eval()
    logits = head.forward(hs).reshape(N * T, V)
    shift = logits.max(axis=1, keepdims=True)
    logp = logits - shift - np.log(np.exp(logits - shift).sum(axis=1, keepdims=True))
    expected = -logp[np.arange(N * T), ts.reshape(-1)].mean()
    assert np.abs(logits).max() > 200  # the test really needs the shift
    got = float(loss.forward_affine(hs, head, ts))
    assert np.isfinite(got)
    assert got == pytest.approx(expected, rel=1e-12)


def test_refuses_training_mode_and_bad_targets():
    rng = np.random.default_rng(2)
    head = TimeAffine(rng.standard_normal((3, 7)), np.zeros(7))
    hs = rng.standard_normal((2, 4, 3))
    loss = TimeSoftmaxWithLoss()
    with pytest.raises(RuntimeError, match="model.eval"):
        loss.forward_affine(hs, head, np.zeros((2, 4), dtype=np.int64))
    loss.eval()
    with pytest.raises(ValueError, match=r"ts must have shape \(N, T\) = \(2, 4\)"):
        loss.forward_affine(hs, head, np.zeros((4, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="out of range"):
        loss.forward_affine(hs, head, np.full((2, 4), 7, dtype=np.int64))
    with pytest.raises(ValueError, match=r"last dimension D = 3 \(the input size"):
        loss.forward_affine(hs[:, :, :2], head, np.zeros((2, 4), dtype=np.int64))


@pytest.mark.parametrize("model_kind", ["rnnlm", "better-tied"])
def test_models_evaluate_through_it_on_every_backend(xp_name, model_kind):
    """A model in eval mode takes the fused path; its loss equals the training-mode loss
    (dropout 0, same state) on numpy, the stand-in and cupy."""
    from npgated.models.rnnlm import BetterRnnlm, Rnnlm

    if model_kind == "rnnlm":
        model = Rnnlm(50, 6, 7, seed=0, dtype=np.float64)
    else:
        model = BetterRnnlm(50, 8, 8, seed=0, dtype=np.float64, dropout_ratio=0.0)
    rng = np.random.default_rng(5)
    xs, ts = rng.integers(0, 50, (3, 4)), rng.integers(0, 50, (3, 4))
    ts[0, 1] = -1
    model.train()
    expected = float(model.forward(xs, ts))
    model.reset_state()
    model.eval()
    calls = []
    fused = model.layers["loss"].forward_affine
    model.layers["loss"].forward_affine = lambda *a: calls.append(1) or fused(*a)
    got = float(model.forward(xs, ts))
    assert calls == [1]
    assert got == pytest.approx(expected, rel=1e-12)
