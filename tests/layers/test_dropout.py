import numpy as np
import pytest

from npgated import backend, gradcheck
from npgated.layers.dropout import Dropout, TimeDropout

N, T, D = 3, 4, 5
TOL = 1e-7


def frozen(layer, seed=7):
    """A before_forward hook that reseeds the layer's generator: the same mask every call."""

    def reseed():
        layer.rng = np.random.default_rng(seed)

    return reseed


# -- masks -------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("variational", [False, True])
def test_kept_fraction_and_scaling(xp_name, dev, p, variational):
    layer = TimeDropout(p, variational=variational, seed=0)
    xs = dev(np.ones((40, 50, 60)))
    ys = backend.to_cpu(layer.forward(xs))
    kept = ys != 0
    np.testing.assert_allclose(ys[kept], 1.0 / (1.0 - p), rtol=1e-12)
    # Over 40*60 (variational) or 40*50*60 (independent) draws, 5 sigma is below 0.05.
    assert abs(kept.mean() - (1.0 - p)) < 0.05


def test_expected_value_is_preserved(xp_name, dev, rng):
    layer = Dropout(0.5, seed=1)
    x = rng.standard_normal((200, 300)) + 3.0
    y = backend.to_cpu(layer.forward(dev(x)))
    assert abs(y.mean() / x.mean() - 1.0) < 0.02


def test_variational_mask_constant_over_time(xp_name, dev):
    layer = TimeDropout(0.5, variational=True, seed=0)
    ys = backend.to_cpu(layer.forward(dev(np.ones((N, 6, 8)))))
    for t in range(1, 6):
        np.testing.assert_array_equal(ys[:, t], ys[:, 0])
    assert (ys == 0).any() and (ys != 0).any()


def test_independent_mask_varies_over_time(xp_name, dev):
    layer = TimeDropout(0.5, variational=False, seed=0)
    ys = backend.to_cpu(layer.forward(dev(np.ones((N, 6, 8)))))
    assert any((ys[:, t] != ys[:, 0]).any() for t in range(1, 6))


@pytest.mark.parametrize("variational", [False, True])
def test_same_seed_same_mask_on_every_backend_and_dtype(xp_name, dev, variational):
    xs = np.ones((N, T, D))
    host = TimeDropout(0.5, variational=variational, seed=3).forward(xs)
    for dtype in (np.float64, np.float32):
        layer = TimeDropout(0.5, variational=variational, seed=3)
        ys = layer.forward(dev(xs, dtype=dtype))
        assert ys.dtype == dtype
        assert backend.get_array_module(ys) is backend.xp()
        np.testing.assert_array_equal(backend.to_cpu(ys) != 0, host != 0)
    other = TimeDropout(0.5, variational=variational, seed=4).forward(xs)
    assert (other != host).any()


def test_successive_calls_draw_new_masks(xp_name, dev):
    layer = Dropout(0.5, seed=0)
    x = dev(np.ones((10, 10)))
    assert (backend.to_cpu(layer.forward(x)) != backend.to_cpu(layer.forward(x))).any()


# -- modes and identities ----------------------------------------------------------------
@pytest.mark.parametrize("cls", [Dropout, TimeDropout])
def test_eval_is_identity(xp_name, dev, rng, cls):
    layer = cls(0.5, seed=0).eval()
    xs = dev(rng.standard_normal((N, T, D)))
    np.testing.assert_array_equal(backend.to_cpu(layer.forward(xs)), backend.to_cpu(xs))
    dys = dev(rng.standard_normal((N, T, D)))
    np.testing.assert_array_equal(backend.to_cpu(layer.backward(dys)), backend.to_cpu(dys))
    layer.train()
    assert (backend.to_cpu(layer.forward(xs)) == 0).any()


def test_ratio_zero_is_identity(xp_name, dev, rng):
    layer = TimeDropout(0.0, variational=True, seed=0)
    xs = dev(rng.standard_normal((N, T, D)))
    np.testing.assert_array_equal(backend.to_cpu(layer.forward(xs)), backend.to_cpu(xs))
    dys = dev(rng.standard_normal((N, T, D)))
    np.testing.assert_array_equal(backend.to_cpu(layer.backward(dys)), backend.to_cpu(dys))


def test_backward_reuses_forward_mask(xp_name, dev, rng):
    layer = TimeDropout(0.5, seed=0)
    xs = rng.standard_normal((N, T, D))
    ys = backend.to_cpu(layer.forward(dev(xs)))
    dys = rng.standard_normal((N, T, D))
    dxs = backend.to_cpu(layer.backward(dev(dys)))
    np.testing.assert_allclose(dxs, dys * (ys / xs), rtol=1e-12)


def test_no_params():
    layer = TimeDropout(0.3)
    assert layer.params == [] and layer.grads == [] and layer.param_names == ()
    layer.zero_grads()


# -- gradient checks (frozen mask) -------------------------------------------------------
@pytest.mark.parametrize("shape", [(N, T), (1, T), (N, 1)], ids=["NT", "N1", "T1"])
@pytest.mark.parametrize("variational", [False, True])
def test_time_dropout_gradcheck(xp_name, dev, rng, shape, variational):
    layer = TimeDropout(0.4, variational=variational)
    xs = dev(rng.standard_normal(shape + (D,)))
    r = gradcheck.check_layer(layer, (xs,), wrt="xs", before_forward=frozen(layer), seed=0)
    assert r.error <= TOL, f"TimeDropout dxs: {r.error:.1e} at {r.worst_index}"


def test_dropout_gradcheck(xp_name, dev, rng):
    layer = Dropout(0.4)
    x = dev(rng.standard_normal((N, D)))
    r = gradcheck.check_layer(layer, (x,), wrt="xs", before_forward=frozen(layer), seed=0)
    assert r.error <= TOL, f"Dropout dxs: {r.error:.1e} at {r.worst_index}"


# -- errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_bad_ratio(p):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(p)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        TimeDropout(p, variational=True)


def test_input_errors(xp_name, dev, rng):
    layer = TimeDropout(0.5, seed=0)
    with pytest.raises(ValueError, match="3 dimensions"):
        layer.forward(dev(rng.standard_normal((N, D))))
    with pytest.raises(TypeError, match="floating-point"):
        layer.forward(dev(np.ones((N, T, D), dtype=np.int64)))
    layer.forward(dev(rng.standard_normal((N, T, D))))
    with pytest.raises(ValueError, match=r"dys must have shape \(3, 4, 5\)"):
        layer.backward(dev(rng.standard_normal((N, T + 1, D))))


def test_backward_dtype_must_match(xp_name, dev, rng):
    layer = TimeDropout(0.5, seed=0)
    layer.forward(dev(rng.standard_normal((N, T, D)), dtype=np.float32))
    with pytest.raises(TypeError, match="float32"):
        layer.backward(dev(rng.standard_normal((N, T, D))))


@pytest.mark.parametrize("training", [True, False])
def test_backward_before_forward_and_twice(xp_name, dev, rng, training):
    layer = TimeDropout(0.5, seed=0).train(training)
    dys = dev(rng.standard_normal((N, T, D)))
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(dys)
    layer.forward(dev(rng.standard_normal((N, T, D))))
    layer.backward(dys)
    with pytest.raises(RuntimeError, match="twice"):
        layer.backward(dys)
