import numpy as np
import pytest

from npgated import backend, gradcheck
from npgated.layers.affine import Affine, TimeAffine
from npgated.layers.embedding import TimeEmbedding

N, T, D, M, V = 3, 4, 5, 6, 7
TOL = 1e-7


def make_affine(dev, rng, bias=True, dtype=np.float64, cls=Affine):
    W = dev(rng.standard_normal((D, M)), dtype=dtype)
    b = dev(rng.standard_normal(M), dtype=dtype) if bias else None
    return cls(W, b)


# -- forward values ----------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_affine_forward_matches_numpy(xp_name, dev, rng, bias):
    layer = make_affine(dev, rng, bias)
    x = rng.standard_normal((N, D))
    y = layer.forward(dev(x))
    W = backend.to_cpu(layer.params[0])
    expected = x @ W + (backend.to_cpu(layer.params[1]) if bias else 0.0)
    np.testing.assert_allclose(backend.to_cpu(y), expected, rtol=1e-12, atol=1e-12)
    assert layer.param_names == (("W", "b") if bias else ("W",))
    assert len(layer.params) == len(layer.grads) == (2 if bias else 1)


@pytest.mark.parametrize("bias", [True, False])
def test_time_affine_forward_matches_per_step_loop(xp_name, dev, rng, bias):
    layer = make_affine(dev, rng, bias, cls=TimeAffine)
    xs = rng.standard_normal((N, T, D))
    ys = backend.to_cpu(layer.forward(dev(xs)))
    W = backend.to_cpu(layer.params[0])
    b = backend.to_cpu(layer.params[1]) if bias else np.zeros(M)
    assert ys.shape == (N, T, M)
    for t in range(T):
        np.testing.assert_allclose(ys[:, t], xs[:, t] @ W + b, rtol=1e-12, atol=1e-12)


def test_float32_in_float32_out(xp_name, dev, rng):
    layer = make_affine(dev, rng, dtype=np.float32, cls=TimeAffine)
    ys = layer.forward(dev(rng.standard_normal((N, T, D)), dtype=np.float32))
    assert ys.dtype == np.float32
    dxs = layer.backward(dev(rng.standard_normal((N, T, M)), dtype=np.float32))
    assert dxs.dtype == np.float32
    assert all(g.dtype == np.float32 for g in layer.grads)


# -- gradient checks ---------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_affine_gradcheck(xp_name, dev, rng, bias):
    layer = make_affine(dev, rng, bias)
    x = dev(rng.standard_normal((N, D)))
    for r in gradcheck.check_layer(layer, (x,), seed=0):
        assert r.error <= TOL, f"Affine d{r.name}: {r.error:.1e} at {r.worst_index}"


@pytest.mark.parametrize("shape", [(N, T), (1, T), (N, 1)], ids=["NT", "N1", "T1"])
@pytest.mark.parametrize("wrt", ["xs", "W", "b"])
def test_time_affine_gradcheck(xp_name, dev, rng, shape, wrt):
    layer = make_affine(dev, rng, cls=TimeAffine)
    xs = dev(rng.standard_normal(shape + (D,)))
    r = gradcheck.check_layer(layer, (xs,), wrt=wrt, seed=0)
    assert r.error <= TOL, f"TimeAffine d{wrt}: {r.error:.1e} at {r.worst_index}"


def test_backward_accumulates(xp_name, dev, rng):
    layer = make_affine(dev, rng, cls=TimeAffine)
    xs = dev(rng.standard_normal((N, T, D)))
    dys = dev(rng.standard_normal((N, T, M)))
    layer.forward(xs)
    layer.backward(dys)
    once = [backend.to_cpu(g).copy() for g in layer.grads]
    layer.forward(xs)
    layer.backward(dys)
    for g, g1 in zip(layer.grads, once):
        np.testing.assert_allclose(backend.to_cpu(g), 2 * g1, rtol=1e-12)
    layer.zero_grads()
    assert all(float(abs(backend.to_cpu(g)).max()) == 0.0 for g in layer.grads)


def test_float32_and_float64_gradients_agree(xp_name, dev, rng):
    W = rng.standard_normal((D, M))
    b = rng.standard_normal(M)
    xs = rng.standard_normal((N, T, D))
    dys = rng.standard_normal((N, T, M))
    results = {}
    for dtype in (np.float32, np.float64):
        layer = TimeAffine(dev(W, dtype=dtype), dev(b, dtype=dtype))
        layer.forward(dev(xs, dtype=dtype))
        dxs = layer.backward(dev(dys, dtype=dtype))
        results[dtype] = [backend.to_cpu(a) for a in (dxs, *layer.grads)]
    for a32, a64 in zip(results[np.float32], results[np.float64]):
        np.testing.assert_allclose(a32, a64, rtol=1e-4, atol=1e-4)


# -- tying -------------------------------------------------------------------------------
def test_tied_shares_weight_and_gradient_buffer(xp_name, dev, rng):
    emb = TimeEmbedding(dev(rng.standard_normal((V, D))))
    tied = TimeAffine.tied_to(emb)
    assert tied.params[0] is emb.params[0]
    assert tied.grads[0] is emb.grads[0]
    assert tied.transposed
    assert tied.param_names == ("W", "b")
    b = tied.params[1]
    assert b.shape == (V,) and b.dtype == emb.params[0].dtype
    assert backend.get_array_module(b) is backend.get_array_module(emb.params[0])
    assert float(abs(backend.to_cpu(b)).max()) == 0.0
    no_bias = TimeAffine.tied_to(emb, bias=False)
    assert no_bias.param_names == ("W",) and no_bias.params[0] is emb.params[0]


def test_tied_forward_is_hs_times_W_transposed(xp_name, dev, rng):
    emb = TimeEmbedding(dev(rng.standard_normal((V, D))))
    tied = TimeAffine.tied_to(emb)
    tied.params[1][...] = dev(rng.standard_normal(V))
    hs = rng.standard_normal((N, T, D))
    ys = backend.to_cpu(tied.forward(dev(hs)))
    W = backend.to_cpu(emb.params[0])
    b = backend.to_cpu(tied.params[1])
    assert ys.shape == (N, T, V)
    np.testing.assert_allclose(ys, hs @ W.T + b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("wrt", ["xs", "W", "b"])
def test_tied_gradcheck(xp_name, dev, rng, wrt):
    emb = TimeEmbedding(dev(rng.standard_normal((V, D))))
    tied = TimeAffine.tied_to(emb)
    tied.params[1][...] = dev(rng.standard_normal(V))
    hs = dev(rng.standard_normal((N, T, D)))
    r = gradcheck.check_layer(tied, (hs,), wrt=wrt, seed=0)
    assert r.error <= TOL, f"tied TimeAffine d{wrt}: {r.error:.1e} at {r.worst_index}"


def test_tied_embedding_and_output_gradients_sum(xp_name, dev, rng):
    """ids -> TimeEmbedding -> tied TimeAffine: dW is the sum of both uses of W."""
    emb = TimeEmbedding(dev(rng.standard_normal((V, D))))
    tied = TimeAffine.tied_to(emb)
    W = emb.params[0]
    ids = np.array([[0, 3, 3, 6], [2, 2, 2, 0], [5, 1, 3, 4]])  # repeated ids
    dys_host = rng.standard_normal((N, T, V))
    dys = dev(dys_host)

    def loss():
        return float(backend.to_cpu(tied.forward(emb.forward(ids)) * dys).sum())

    def analytic():
        emb.zero_grads()
        tied.zero_grads()
        tied.forward(emb.forward(ids))
        des = tied.backward(dys)
        assert emb.backward(des) is None
        return {"W": emb.grads[0], "b": tied.grads[1]}

    results = gradcheck.check_gradients(loss, analytic, {"W": W, "b": tied.params[1]})
    for r in results:
        assert r.error <= TOL, f"tied model d{r.name}: {r.error:.1e} at {r.worst_index}"

    # The two contributions, computed independently in plain NumPy, add up to dW.
    analytic()
    Wh = backend.to_cpu(W)
    es = Wh[ids]  # (N, T, D)
    out_part = dys_host.reshape(N * T, V).T @ es.reshape(N * T, D)  # (V, D)
    des = dys_host.reshape(N * T, V) @ Wh  # (N * T, D)
    onehot = np.eye(V)[ids.reshape(-1)]  # (N * T, V)
    emb_part = onehot.T @ des
    np.testing.assert_allclose(backend.to_cpu(emb.grads[0]), out_part + emb_part, rtol=1e-10)


# -- errors ------------------------------------------------------------------------------
def test_tied_hidden_size_must_equal_embedding_size(xp_name, dev, rng):
    emb = TimeEmbedding(dev(rng.standard_normal((V, D))))
    tied = TimeAffine.tied_to(emb)
    with pytest.raises(ValueError, match=r"D = 5.*got 6.*hidden size must equal the embedding"):
        tied.forward(dev(rng.standard_normal((N, T, D + 1))))


def test_tied_to_needs_embedding():
    with pytest.raises(TypeError, match="embedding"):
        TimeAffine.tied_to(object())


def test_constructor_errors(xp_name, dev, rng):
    with pytest.raises(ValueError, match=r"W must have 2 dimensions"):
        Affine(dev(rng.standard_normal((D, M, 1))))
    with pytest.raises(ValueError, match=r"b must have shape \(M,\) = \(6,\), got \(5,\)"):
        Affine(dev(rng.standard_normal((D, M))), dev(rng.standard_normal(D)))
    with pytest.raises(TypeError, match="float32"):
        Affine(dev(rng.standard_normal((D, M))), dev(rng.standard_normal(M), dtype=np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        Affine(dev(np.ones((D, M), dtype=np.int64)))


def test_input_errors(xp_name, dev, rng):
    layer = make_affine(dev, rng)
    with pytest.raises(TypeError, match="float32"):
        layer.forward(dev(rng.standard_normal((N, D)), dtype=np.float32))
    with pytest.raises(ValueError, match=r"2 dimensions"):
        layer.forward(dev(rng.standard_normal((N, T, D))))
    with pytest.raises(ValueError, match=r"last dimension D = 5.*got 4"):
        layer.forward(dev(rng.standard_normal((N, D - 1))))
    tlayer = make_affine(dev, rng, cls=TimeAffine)
    with pytest.raises(ValueError, match=r"3 dimensions"):
        tlayer.forward(dev(rng.standard_normal((N, D))))
    with pytest.raises(ValueError, match=r"last dimension D = 5.*got 7"):
        tlayer.forward(dev(rng.standard_normal((N, T, 7))))
    with pytest.raises(TypeError, match="floating-point"):
        tlayer.forward(dev(np.ones((N, T, D), dtype=np.int64)))


@pytest.mark.parametrize("cls", [Affine, TimeAffine])
def test_backward_before_forward_and_twice(xp_name, dev, rng, cls):
    layer = make_affine(dev, rng, cls=cls)
    shape = (N, D) if cls is Affine else (N, T, D)
    dshape = shape[:-1] + (M,)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(dev(rng.standard_normal(dshape)))
    layer.forward(dev(rng.standard_normal(shape)))
    layer.backward(dev(rng.standard_normal(dshape)))
    with pytest.raises(RuntimeError, match="twice"):
        layer.backward(dev(rng.standard_normal(dshape)))


def test_backward_shape_error(xp_name, dev, rng):
    layer = make_affine(dev, rng, cls=TimeAffine)
    layer.forward(dev(rng.standard_normal((N, T, D))))
    with pytest.raises(ValueError, match=r"dys must have shape"):
        layer.backward(dev(rng.standard_normal((N, T, M + 1))))
