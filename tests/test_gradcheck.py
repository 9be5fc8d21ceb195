import math

import numpy as np
import pytest

from npgated import backend, gradcheck
from npgated.layers.base import Layer


class Scale(Layer):
    """y = x * w (element-wise) + c; ``bug`` plants a mistake in the backward pass."""

    param_names = ("w", "c")

    def __init__(self, w, c, bug=None):
        super().__init__(w, c)
        self.bug = bug
        self.cache = None

    def forward(self, x):
        self.cache = x
        w, c = self.params
        return x * w + c

    def backward(self, dy):
        x = self._require_forward()
        self.cache = None
        w, _ = self.params
        if self.bug == "dw-scaled":
            self.grads[0] += 1.01 * (dy * x).sum(axis=0)
        elif self.bug == "dc-missing":
            pass
        else:
            self.grads[0] += (dy * x).sum(axis=0)
        if self.bug != "dc-missing":
            self.grads[1] += dy.sum(axis=0)
        if self.bug == "dx-transposed":
            return dy * w[::-1]
        return dy * w


def make_scale(dev, rng, bug=None):
    return Scale(dev(rng.standard_normal(5)), dev(rng.standard_normal(5)), bug=bug)


def test_rel_error_known_values(xp_name, dev):
    a = np.array([1.0, 0.0])
    assert gradcheck.rel_error(a, a) == 0.0
    assert gradcheck.rel_error(dev(a), dev(np.array([0.0, 1.0]))) == pytest.approx(
        math.sqrt(2) / 2, rel=1e-12
    )
    assert gradcheck.rel_error(np.array([1.0]), np.array([-1.0])) == pytest.approx(1.0)
    assert gradcheck.rel_error(np.zeros(3), np.zeros(3)) == 0.0  # no 0/0
    # Norm-wise: a tiny absolute difference on a near-zero entry does not dominate.
    assert gradcheck.rel_error(np.array([1.0, 1e-12]), np.array([1.0, 2e-12])) < 1e-12


def test_numerical_gradient_of_known_function(xp_name, dev, rng):
    x_host = rng.standard_normal((3, 4))
    x = dev(x_host.copy())

    def loss():
        return float(backend.to_cpu((x**3).sum() + (2.0 * x).sum()))

    g = gradcheck.numerical_gradient(loss, x)
    assert isinstance(g, np.ndarray) and g.shape == (3, 4) and g.dtype == np.float64
    np.testing.assert_allclose(g, 3 * x_host**2 + 2.0, rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(backend.to_cpu(x), x_host)  # restored after perturbation


def test_check_layer_passes_a_correct_layer(xp_name, dev, rng):
    layer = make_scale(dev, rng)
    x = dev(rng.standard_normal((4, 5)))
    results = gradcheck.check_layer(layer, (x,), seed=0)
    assert [r.name for r in results] == ["xs", "w", "c"]
    for r in results:
        assert r.error <= 1e-7, f"Scale d{r.name}: {r.error:.1e} at {r.worst_index}"
        assert r.ok(1e-7)


@pytest.mark.parametrize(
    "bug, name", [("dw-scaled", "w"), ("dc-missing", "c"), ("dx-transposed", "xs")]
)
def test_check_layer_catches_wrong_backward(xp_name, dev, rng, bug, name):
    layer = make_scale(dev, rng, bug=bug)
    x = dev(rng.standard_normal((4, 5)))
    r = gradcheck.check_layer(layer, (x,), wrt=name, seed=0)
    assert r.error > 1e-3, f"the planted bug {bug!r} went unnoticed: {r.error:.1e}"
    assert not r.ok(1e-7)
    assert r.worst_index is not None and len(r.worst_index) == (2 if name == "xs" else 1)
    assert r.analytic != pytest.approx(r.numeric)
    assert name in str(r)


def test_directional_check(xp_name, dev, rng):
    good, bad = make_scale(dev, rng), make_scale(dev, rng, bug="dw-scaled")
    x = dev(rng.standard_normal((4, 5)))
    for layer, should_pass in ((good, True), (bad, False)):
        w = layer.params[0]
        w_before = backend.to_cpu(w).copy()
        dy = dev(rng.standard_normal((4, 5)))

        def loss(layer=layer, dy=dy):
            return float(backend.to_cpu((layer.forward(x) * dy).sum()))

        def analytic(layer=layer, dy=dy):
            layer.zero_grads()
            layer.forward(x)
            layer.backward(dy)
            return {"w": layer.grads[0]}

        (r,) = gradcheck.check_gradients(loss, analytic, {"w": w}, directional=("w",))
        assert r.directional and r.worst_index is None
        assert (r.error <= 1e-7) is should_pass, f"directional: {r.error:.1e}"
        np.testing.assert_allclose(backend.to_cpu(w), w_before, atol=1e-15)


def test_check_layer_rejects_unknown_name(rng):
    layer = Scale(rng.standard_normal(5), rng.standard_normal(5))
    with pytest.raises(ValueError, match="cannot check 'Wq'"):
        gradcheck.check_layer(layer, (rng.standard_normal((2, 5)),), wrt="Wq")


def test_before_forward_is_called_every_evaluation(rng):
    layer = Scale(rng.standard_normal(5), rng.standard_normal(5))
    calls = []
    gradcheck.check_layer(
        layer, (rng.standard_normal((2, 5)),), wrt="c", before_forward=lambda: calls.append(1)
    )
    # One forward for dout, one for the analytic gradient, two per element of c.
    assert len(calls) == 2 + 2 * 5
