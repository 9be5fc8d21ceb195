import math

import numpy as np
import pytest

from npgated import backend, gradcheck
from npgated.layers.loss import SoftmaxWithLoss, TimeSoftmaxWithLoss

N, T, V = 3, 4, 7
TOL = 1e-7


def reference_loss_and_grad(xs, ts, ignore_label=-1):
    """Plain NumPy: mean over non-ignored targets of -log softmax, and its gradient."""
    x = xs.reshape(-1, xs.shape[-1]).astype(np.float64)
    t = ts.reshape(-1)
    keep = t != ignore_label
    K = keep.sum()
    z = x - x.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p = np.exp(logp)
    rows = np.flatnonzero(keep)
    loss = -logp[rows, t[rows]].sum() / max(K, 1)
    grad = p.copy()
    grad[rows, t[rows]] -= 1.0
    grad[~keep] = 0.0
    return loss, (grad / max(K, 1)).reshape(xs.shape)


def targets(rng, shape, n_ignored=2):
    ts = rng.integers(0, V, size=shape)
    flat = ts.reshape(-1)
    flat[rng.choice(flat.size, size=min(n_ignored, flat.size - 1), replace=False)] = -1
    return ts


# -- values ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, shape", [(SoftmaxWithLoss, (N,)), (TimeSoftmaxWithLoss, (N, T))])
def test_loss_and_gradient_match_numpy(xp_name, dev, rng, cls, shape):
    xs = rng.standard_normal(shape + (V,)) * 3
    ts = targets(rng, shape)
    xs_dev = dev(xs)
    xs_before = backend.to_cpu(xs_dev).copy()
    layer = cls()
    loss = layer.forward(xs_dev, ts)
    dxs = layer.backward(0.5)
    ref_loss, ref_grad = reference_loss_and_grad(xs, ts)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(backend.to_cpu(dxs), 0.5 * ref_grad, rtol=1e-10, atol=1e-15)
    assert dxs.shape == xs.shape
    np.testing.assert_array_equal(backend.to_cpu(xs_dev), xs_before)  # caller's logits intact


def test_uniform_logits_give_log_V(xp_name, dev):
    layer = TimeSoftmaxWithLoss()
    loss = layer.forward(dev(np.zeros((N, T, V))), np.zeros((N, T), dtype=np.int64))
    assert float(loss) == pytest.approx(math.log(V), rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finite_for_huge_logits(xp_name, dev, rng, dtype):
    xs = rng.choice([-1e4, 1e4], size=(N, T, V))
    ts = rng.integers(0, V, size=(N, T))
    layer = TimeSoftmaxWithLoss()
    loss = float(layer.forward(dev(xs, dtype=dtype), ts))
    dxs = backend.to_cpu(layer.backward())
    assert math.isfinite(loss) and np.isfinite(dxs).all()
    ref_loss, ref_grad = reference_loss_and_grad(xs, ts)
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    np.testing.assert_allclose(dxs, ref_grad, atol=1e-6)


def test_dtype_preserved_and_float32_agrees_with_float64(xp_name, dev, rng):
    xs = rng.standard_normal((N, T, V)) * 2
    ts = targets(rng, (N, T))
    out = {}
    for dtype in (np.float32, np.float64):
        layer = TimeSoftmaxWithLoss()
        loss = layer.forward(dev(xs, dtype=dtype), ts)
        assert loss.dtype == dtype and np.ndim(loss) == 0
        dxs = layer.backward()
        assert dxs.dtype == dtype
        out[dtype] = (float(loss), backend.to_cpu(dxs))
    assert out[np.float32][0] == pytest.approx(out[np.float64][0], rel=1e-5)
    np.testing.assert_allclose(out[np.float32][1], out[np.float64][1], atol=1e-6)


def test_all_targets_ignored(xp_name, dev, rng):
    layer = TimeSoftmaxWithLoss()
    loss = layer.forward(dev(rng.standard_normal((N, T, V))), np.full((N, T), -1))
    dxs = backend.to_cpu(layer.backward())
    assert float(loss) == 0.0
    assert not dxs.any()


def test_custom_ignore_label(xp_name, dev, rng):
    xs = rng.standard_normal((N, T, V))
    ts = rng.integers(0, V, size=(N, T))
    ts[0, :2] = 0
    layer = TimeSoftmaxWithLoss(ignore_label=0)
    loss = layer.forward(dev(xs), ts)
    dxs = layer.backward()
    ref_loss, ref_grad = reference_loss_and_grad(xs, ts, ignore_label=0)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(backend.to_cpu(dxs), ref_grad, atol=1e-14)
    none = TimeSoftmaxWithLoss(ignore_label=None)
    assert float(none.forward(dev(xs), ts)) == pytest.approx(reference_loss_and_grad(xs, ts)[0])


def test_eval_mode_drops_buffer_but_backward_still_works(xp_name, dev, rng):
    xs = rng.standard_normal((N, T, V))
    ts = targets(rng, (N, T))
    layer = TimeSoftmaxWithLoss().eval()
    loss = layer.forward(dev(xs), ts)
    assert layer.cache.exp is None
    dxs = layer.backward()
    ref_loss, ref_grad = reference_loss_and_grad(xs, ts)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(backend.to_cpu(dxs), ref_grad, atol=1e-14)


def test_training_backward_reuses_the_forward_buffer(xp_name, dev, rng):
    layer = TimeSoftmaxWithLoss()
    layer.forward(dev(rng.standard_normal((N, T, V))), targets(rng, (N, T)))
    buffer = layer.cache.exp
    assert buffer.shape == (N * T, V)
    dxs = layer.backward()
    assert dxs.base is buffer  # the gradient was written into the forward buffer


def test_device_targets_accepted(xp_name, dev, rng):
    xs = rng.standard_normal((N, T, V))
    ts = targets(rng, (N, T))
    layer = TimeSoftmaxWithLoss()
    assert float(layer.forward(dev(xs), dev(ts))) == pytest.approx(
        reference_loss_and_grad(xs, ts)[0], rel=1e-12
    )


def test_matches_torch_cross_entropy(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    xs = rng.standard_normal((N, T, V)) * 2
    ts = targets(rng, (N, T), n_ignored=3)
    layer = TimeSoftmaxWithLoss(ignore_label=-1)
    loss = layer.forward(xs, ts)
    dxs = layer.backward()
    logits = torch.tensor(xs.reshape(-1, V), dtype=torch.float64, requires_grad=True)
    ref = F.cross_entropy(logits, torch.tensor(ts.reshape(-1)), ignore_index=-1)
    ref.backward()
    assert float(loss) == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(dxs.reshape(-1, V), logits.grad.numpy(), rtol=1e-10, atol=1e-15)


# -- gradient checks ---------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(N, T), (1, T), (N, 1)], ids=["NT", "N1", "T1"])
def test_time_softmax_gradcheck(xp_name, dev, rng, shape):
    layer = TimeSoftmaxWithLoss()
    xs = dev(rng.standard_normal(shape + (V,)))
    ts = targets(rng, shape, n_ignored=1)
    r = gradcheck.check_layer(layer, (xs, ts), wrt="xs", seed=0)
    assert r.error <= TOL, f"TimeSoftmaxWithLoss dxs: {r.error:.1e} at {r.worst_index}"


@pytest.mark.parametrize("n", [N, 1])
def test_softmax_gradcheck(xp_name, dev, rng, n):
    layer = SoftmaxWithLoss()
    x = dev(rng.standard_normal((n, V)))
    t = targets(rng, (n,), n_ignored=1) if n > 1 else np.array([3])
    r = gradcheck.check_layer(layer, (x, t), wrt="xs", seed=0)
    assert r.error <= TOL, f"SoftmaxWithLoss dxs: {r.error:.1e} at {r.worst_index}"


# -- errors ------------------------------------------------------------------------------
def test_shape_mismatch_names_both_shapes(xp_name, dev, rng):
    layer = TimeSoftmaxWithLoss()
    with pytest.raises(ValueError, match=r"\(N, T\) = \(3, 4\).*\(3, 4, 7\).*got \(3, 5\)"):
        layer.forward(dev(rng.standard_normal((N, T, V))), np.zeros((N, T + 1), dtype=int))
    with pytest.raises(ValueError, match=r"3 dimensions"):
        layer.forward(dev(rng.standard_normal((N, V))), np.zeros(N, dtype=int))
    with pytest.raises(ValueError, match=r"\(N,\) = \(3,\).*got \(4,\)"):
        SoftmaxWithLoss().forward(dev(rng.standard_normal((N, V))), np.zeros(N + 1, dtype=int))


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (V, ValueError, r"token id 7 .*out of range"),
        (-2, ValueError, r"token id -2 .*ignore label -1"),
    ],
)
def test_bad_targets(xp_name, dev, rng, bad, exc, match):
    ts = np.zeros((N, T), dtype=np.int64)
    ts[1, 2] = bad
    with pytest.raises(exc, match=match):
        TimeSoftmaxWithLoss().forward(dev(rng.standard_normal((N, T, V))), ts)


def test_float_targets_and_int_logits(xp_name, dev, rng):
    layer = TimeSoftmaxWithLoss()
    with pytest.raises(ValueError, match="integer token ids"):
        layer.forward(dev(rng.standard_normal((N, T, V))), np.zeros((N, T)))
    with pytest.raises(TypeError, match="floating-point"):
        layer.forward(dev(np.zeros((N, T, V), dtype=np.int64)), np.zeros((N, T), dtype=int))
    with pytest.raises(TypeError, match="ignore_label"):
        TimeSoftmaxWithLoss(ignore_label=0.5)


@pytest.mark.parametrize("training", [True, False])
def test_backward_before_forward_and_twice(xp_name, dev, rng, training):
    layer = TimeSoftmaxWithLoss().train(training)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward()
    layer.forward(dev(rng.standard_normal((N, T, V))), targets(rng, (N, T)))
    layer.backward()
    with pytest.raises(RuntimeError, match="twice"):
        layer.backward()


@pytest.mark.parametrize("scale", [1.0, 1e4])  # unshifted fast path, and the shifted one
def test_overwrite_input_gives_the_same_loss_and_gradient(xp_name, dev, rng, scale):
    xs = rng.standard_normal((N, T, V)) * scale
    ts = rng.integers(0, V, (N, T))
    ts[0, 0] = -1
    plain = TimeSoftmaxWithLoss()
    loss = float(plain.forward(dev(xs), ts))
    grad = backend.to_cpu(plain.backward())
    fused = TimeSoftmaxWithLoss()
    fused.overwrite_input = True
    buffer = dev(xs.copy())
    assert float(fused.forward(buffer, ts)) == pytest.approx(loss, rel=1e-12)
    dxs = fused.backward()
    np.testing.assert_allclose(backend.to_cpu(dxs), grad, rtol=1e-12, atol=1e-15)
    assert np.isfinite(loss)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_blocks_with_mixed_scales_match_the_reference(
    xp_name, dev, rng, monkeypatch, training, dtype
):
    # Blocks of 2 rows (NumPy; one block on a device): blocks whose rows are all moderate
    # take the unshifted path, blocks with a huge row (overflow) or a row far below zero
    # (every exp underflows) the shifted one, in training and in the eval-only sums.
    from npgated.layers import loss as loss_module

    monkeypatch.setattr(loss_module, "_BLOCK_ELEMENTS", 2 * V)
    xs = rng.standard_normal((N, T, V)) * 2
    xs[0, 1] *= 1e3  # overflows exp unshifted
    xs[1, 2] -= 500.0  # every exp of the row underflows unshifted
    xs[2, 3] += 95.0  # exp overflows in float32 only
    ts = targets(rng, (N, T))
    layer = TimeSoftmaxWithLoss().train(training)
    layer.overwrite_input = True
    buffer = dev(xs.copy(), dtype=dtype)
    loss = float(layer.forward(buffer, ts))
    ref_loss, ref_grad = reference_loss_and_grad(xs, ts)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert loss == pytest.approx(ref_loss, rel=tol)
    if not training:  # eval computes the loss without touching the logits
        np.testing.assert_array_equal(backend.to_cpu(buffer), xs.astype(dtype))
    dxs = backend.to_cpu(layer.backward())
    np.testing.assert_allclose(dxs, ref_grad, atol=10 * tol)
