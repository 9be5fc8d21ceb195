import math

import numpy as np
import pytest

from npgated import backend
from npgated import functional as F


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_matches_definition(xp_name, dev, rng, dtype):
    a = rng.uniform(-30, 30, size=(4, 50))
    s = F.sigmoid(dev(a, dtype=dtype))
    assert s.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(backend.to_cpu(s), 1.0 / (1.0 + np.exp(-a)), rtol=tol, atol=tol)


def test_sigmoid_finite_at_extremes(xp_name, dev):
    a = dev(np.array([-1e4, -800.0, 0.0, 800.0, 1e4]))
    s = backend.to_cpu(F.sigmoid(a))  # RuntimeWarnings are errors in this test-suite
    np.testing.assert_array_equal(s, [0.0, 0.0, 0.5, 1.0, 1.0])


def test_sigmoid_out_in_place(xp_name, dev, rng):
    a_host = rng.standard_normal(10)
    a = dev(a_host.copy())  # dev() does not copy on the numpy backend
    result = F.sigmoid(a, out=a)
    assert result is a
    np.testing.assert_allclose(backend.to_cpu(a), 1.0 / (1.0 + np.exp(-a_host)), rtol=1e-14)


def test_log_softmax_matches_definition(xp_name, dev, rng):
    a = rng.standard_normal((3, 6)) * 3
    expected = a - np.log(np.exp(a).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(backend.to_cpu(F.log_softmax(dev(a))), expected, rtol=1e-12)
    p = backend.to_cpu(F.softmax(dev(a)))
    np.testing.assert_allclose(p, np.exp(expected), rtol=1e-12)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_stable_at_extremes(xp_name, dev, dtype):
    a = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, 1e4]])
    logp = backend.to_cpu(F.log_softmax(dev(a, dtype=dtype)))
    assert logp.dtype == dtype and np.isfinite(logp).all()
    expected = [[0.0, -2e4, -1e4], [-math.log(3)] * 3, [-math.log(3)] * 3]
    np.testing.assert_allclose(logp, expected, rtol=1e-6)
    p = backend.to_cpu(F.softmax(dev(a, dtype=dtype)))
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-6)


def test_log_softmax_other_axis(xp_name, dev, rng):
    a = rng.standard_normal((4, 3))
    np.testing.assert_allclose(
        backend.to_cpu(F.log_softmax(dev(a), axis=0)),
        backend.to_cpu(F.log_softmax(dev(a.T), axis=-1)).T,
        rtol=1e-12,
    )


def test_cross_entropy_with_ignore_label(xp_name, dev, rng):
    logits = rng.standard_normal((6, 5))
    t = np.array([0, 4, -1, 2, -1, 4])
    loss = F.cross_entropy(dev(logits), dev(t), ignore_label=-1)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    kept = t != -1
    expected = -logp[np.flatnonzero(kept), t[kept]].mean()
    assert float(loss) == pytest.approx(expected, rel=1e-12)


def test_cross_entropy_all_ignored_is_zero(xp_name, dev, rng):
    loss = F.cross_entropy(dev(rng.standard_normal((3, 5))), dev(np.full(3, -1)))
    assert float(loss) == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_keeps_dtype_and_is_finite(xp_name, dev, dtype):
    logits = np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]])
    loss = F.cross_entropy(dev(logits, dtype=dtype), dev(np.array([1, 2])))
    assert loss.dtype == dtype
    assert float(loss) == pytest.approx((2e4 + math.log(3)) / 2, rel=1e-6)
