import numpy as np
import pytest

from npgated import backend, gradcheck
from npgated.layers.activation_reg import ActivationRegularizer, TemporalActivationRegularizer

N, T, H = 3, 4, 5
TOL = 1e-7


def _penalised_check(layer, hs, dout):
    """Check dhs against central differences of sum(forward(hs) * dout) + layer.penalty."""

    def loss():
        ys = layer.forward(hs)
        return gradcheck._host_float(ys * dout) + layer.penalty

    def analytic():
        layer.forward(hs)
        return {"xs": layer.backward(dout)}

    return gradcheck.check_gradients(loss, analytic, {"xs": hs})[0]


@pytest.mark.parametrize("cls", [ActivationRegularizer, TemporalActivationRegularizer])
@pytest.mark.parametrize("T_", [1, 2, T])
def test_gradient_of_penalised_output(xp_name, dev, rng, cls, T_):
    layer = cls(0.7)
    hs = dev(rng.standard_normal((N, T_, H)), dtype=np.float64)
    dout = dev(rng.standard_normal((N, T_, H)), dtype=np.float64)
    r = _penalised_check(layer, hs, dout)
    assert r.error <= TOL, f"{cls.__name__} dxs: {r}"


def test_penalty_values_against_direct_formulas(rng):
    hs = rng.standard_normal((N, T, H))
    ar, tar = ActivationRegularizer(2.0), TemporalActivationRegularizer(1.5)
    assert ar.forward(hs) is hs and tar.forward(hs) is hs  # identity forward
    ref_ar = (
        2.0
        * sum(hs[n, t, j] ** 2 for n in range(N) for t in range(T) for j in range(H))
        / (N * T * H)
    )
    ref_tar = (
        1.5
        * sum(
            (hs[n, t, j] - hs[n, t - 1, j]) ** 2
            for n in range(N)
            for t in range(1, T)
            for j in range(H)
        )
        / (N * (T - 1) * H)
    )
    assert ar.penalty == pytest.approx(ref_ar, rel=1e-12)
    assert tar.penalty == pytest.approx(ref_tar, rel=1e-12)
    # TAR ignores a constant offset over time; AR does not
    tar.forward(hs + 3.0)
    assert tar.penalty == pytest.approx(ref_tar, rel=1e-9)


def test_dpenalty_scales_only_the_penalty_gradient(rng):
    hs, dys = rng.standard_normal((N, T, H)), rng.standard_normal((N, T, H))
    for cls in (ActivationRegularizer, TemporalActivationRegularizer):
        layer = cls(0.5)
        layer.forward(hs)
        base = layer.backward(dys) - dys
        layer.dpenalty = 3.0
        layer.forward(hs)
        np.testing.assert_allclose(layer.backward(dys) - dys, 3.0 * base, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cls", [ActivationRegularizer, TemporalActivationRegularizer])
def test_eval_mode_and_zero_coefficient_are_identities(cls, rng):
    hs, dys = rng.standard_normal((N, T, H)), rng.standard_normal((N, T, H))
    for layer in (cls(1.0).eval(), cls(0.0)):
        assert layer.forward(hs) is hs
        assert layer.penalty == 0.0
        assert layer.backward(dys) is dys
    layer = cls(1.0)
    layer.forward(hs)
    assert layer.penalty > 0
    layer.eval()
    layer.forward(hs)
    assert layer.penalty == 0.0  # the last forward's penalty, not a stale one


def test_float32_stays_float32(xp_name, dev, rng):
    hs = dev(rng.standard_normal((N, T, H)), dtype=np.float32)
    for cls in (ActivationRegularizer, TemporalActivationRegularizer):
        layer = cls(1.0)
        layer.forward(hs)
        dhs = layer.backward(hs)
        assert dhs.dtype == np.float32
        assert backend.get_array_module(dhs) is backend.xp()


def test_errors(rng):
    with pytest.raises(ValueError, match=r"alpha must be in \[0, inf\]"):
        ActivationRegularizer(-1.0)
    with pytest.raises(ValueError, match=r"beta must be in"):
        TemporalActivationRegularizer(float("nan"))
    layer = TemporalActivationRegularizer(1.0)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((N, T, H)))
    with pytest.raises(ValueError, match=r"\(N, T, H\)"):
        layer.forward(np.zeros((N, H)))
    layer.forward(np.zeros((N, T, H)))
    with pytest.raises(ValueError, match="dys"):
        layer.backward(np.zeros((N, T + 1, H)))
