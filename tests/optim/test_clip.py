"""Global-norm gradient clipping against a reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from npgated import backend
from npgated.optim import clip_grads, global_norm

SHAPES = [(3, 4), (5,), (2, 3, 2)]


def host_grads(rng, scale=1.0, dtype=np.float64):
    return [(scale * rng.standard_normal(s)).astype(dtype) for s in SHAPES]


def reference_norm(grads):
    return math.sqrt(sum(float(np.sum(np.asarray(g, dtype=np.float64) ** 2)) for g in grads))


def test_global_norm(xp_name, dev, rng):
    grads = host_grads(rng)
    norm = global_norm([dev(g) for g in grads])
    assert isinstance(norm, float)
    assert norm == pytest.approx(reference_norm(grads), rel=1e-12)
    assert global_norm([]) == 0.0


def test_clips_in_place_above_threshold(xp_name, dev, rng):
    grads = host_grads(rng, scale=3.0)
    norm_ref = reference_norm(grads)
    max_norm = norm_ref / 4
    device = [dev(g.copy()) for g in grads]
    ids = [id(g) for g in device]
    norm = clip_grads(device, max_norm)
    assert norm == pytest.approx(norm_ref, rel=1e-12)  # the norm before clipping
    assert [id(g) for g in device] == ids
    rate = max_norm / (norm_ref + 1e-6)
    for g, ref in zip(device, grads):
        assert backend.get_array_module(g) is backend.xp()
        np.testing.assert_allclose(backend.to_cpu(g), ref * rate, rtol=1e-12)
    assert global_norm(device) == pytest.approx(max_norm, rel=1e-6)
    assert global_norm(device) < max_norm


def test_no_op_under_threshold(xp_name, dev, rng):
    grads = host_grads(rng)
    device = [dev(g.copy()) for g in grads]
    norm = clip_grads(device, reference_norm(grads) * 1.01)
    assert norm == pytest.approx(reference_norm(grads))
    for g, ref in zip(device, grads):
        np.testing.assert_array_equal(backend.to_cpu(g), ref)
    assert clip_grads(device, math.inf) == pytest.approx(norm)  # measure only


def test_float32_stays_float32(xp_name, dev, rng):
    device = [dev(g) for g in host_grads(rng, scale=10.0, dtype=np.float32)]
    norm = clip_grads(device, 1.0)
    assert isinstance(norm, float) and norm > 1.0
    assert all(g.dtype == np.float32 for g in device)
    assert global_norm(device) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_non_finite_norm_is_returned_unscaled(bad, xp_name, dev, rng):
    grads = host_grads(rng)
    grads[1][2] = bad
    device = [dev(g.copy()) for g in grads]
    norm = clip_grads(device, 1.0)
    assert not math.isfinite(norm)
    for g, ref in zip(device, grads):
        np.testing.assert_array_equal(backend.to_cpu(g), ref)  # nothing scaled


def test_tied_gradient_counts_once(rng):
    # Two layers sharing one weight share one gradient buffer, listed once by the model.
    shared = rng.standard_normal((4, 3))
    other = rng.standard_normal(5)
    unique = [shared, other]
    assert global_norm(unique) == pytest.approx(reference_norm([shared, other]))
    # listing it twice (not deduplicated) would count it twice: the caller must dedupe
    assert global_norm([shared, other, shared]) > global_norm(unique)
    before = shared.copy()
    rate = 0.5 / (reference_norm(unique) + 1e-6)
    clip_grads(unique, 0.5)
    np.testing.assert_allclose(shared, before * rate, rtol=1e-12)  # scaled exactly once


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_bad_max_norm(bad):
    with pytest.raises(ValueError, match="max_norm"):
        clip_grads([np.ones(3)], bad)
