import numpy as np
import pytest

from npgated import backend, gradcheck
from npgated.layers.embedding import Embedding, TimeEmbedding

N, T, D, V = 3, 4, 5, 7
TOL = 1e-7
IDS_2D = np.array([[0, 3, 3, 6], [2, 2, 2, 0], [5, 1, 3, 4]])  # repeated ids on purpose


def dense_reference_dW(ids, dout, V):
    """dW = onehot(ids).T @ dout, built densely (what the layer must not do)."""
    onehot = np.eye(V)[ids.reshape(-1)]
    return onehot.T @ dout.reshape(ids.size, -1)


def test_embedding_forward_is_row_lookup(xp_name, dev, rng):
    W = rng.standard_normal((V, D))
    layer = Embedding(dev(W))
    ids = np.array([4, 0, 4])
    out = layer.forward(ids)
    assert backend.get_array_module(out) is backend.get_array_module(layer.params[0])
    np.testing.assert_array_equal(backend.to_cpu(out), W[ids])
    assert layer.param_names == ("W",)


def test_time_embedding_forward_host_and_device_ids(xp_name, dev, rng):
    W = rng.standard_normal((V, D))
    layer = TimeEmbedding(dev(W))
    for ids in (IDS_2D, dev(IDS_2D), IDS_2D.astype(np.int32)):
        out = layer.forward(ids)
        assert out.shape == (N, T, D)
        np.testing.assert_array_equal(backend.to_cpu(out), W[IDS_2D])


@pytest.mark.parametrize("cls, ids", [(Embedding, IDS_2D[1]), (TimeEmbedding, IDS_2D)])
def test_dW_matches_dense_one_hot_reference(xp_name, dev, rng, cls, ids):
    layer = cls(dev(rng.standard_normal((V, D))))
    dout = rng.standard_normal(ids.shape + (D,))
    layer.forward(ids)
    assert layer.backward(dev(dout)) is None
    np.testing.assert_allclose(
        backend.to_cpu(layer.grads[0]), dense_reference_dW(ids, dout, V), rtol=1e-12, atol=1e-14
    )
    # Rows that were not looked up are untouched (exactly zero).
    unused = sorted(set(range(V)) - set(ids.reshape(-1).tolist()))
    assert not backend.to_cpu(layer.grads[0])[unused].any()


def test_backward_accumulates(xp_name, dev, rng):
    layer = TimeEmbedding(dev(rng.standard_normal((V, D))))
    dout = rng.standard_normal((N, T, D))
    for _ in range(2):
        layer.forward(IDS_2D)
        layer.backward(dev(dout))
    np.testing.assert_allclose(
        backend.to_cpu(layer.grads[0]), 2 * dense_reference_dW(IDS_2D, dout, V), rtol=1e-12
    )


@pytest.mark.parametrize("ids", [IDS_2D, IDS_2D[:1], IDS_2D[:, :1]], ids=["NT", "N1", "T1"])
def test_time_embedding_gradcheck(xp_name, dev, rng, ids):
    layer = TimeEmbedding(dev(rng.standard_normal((V, D))))
    r = gradcheck.check_layer(layer, (ids,), wrt="W", seed=0)
    assert r.error <= TOL, f"TimeEmbedding dW: {r.error:.1e} at {r.worst_index}"


def test_float32_in_float32_out(xp_name, dev, rng):
    layer = TimeEmbedding(dev(rng.standard_normal((V, D)), dtype=np.float32))
    assert layer.forward(IDS_2D).dtype == np.float32
    layer.backward(dev(rng.standard_normal((N, T, D)), dtype=np.float32))
    assert layer.grads[0].dtype == np.float32
    layer.forward(IDS_2D)
    with pytest.raises(TypeError, match="float32"):
        layer.backward(dev(rng.standard_normal((N, T, D))))  # float64 dout


def test_float32_and_float64_gradients_agree(xp_name, dev, rng):
    W = rng.standard_normal((V, D))
    dout = rng.standard_normal((N, T, D))
    grads = {}
    for dtype in (np.float32, np.float64):
        layer = TimeEmbedding(dev(W, dtype=dtype))
        layer.forward(IDS_2D)
        layer.backward(dev(dout, dtype=dtype))
        grads[dtype] = backend.to_cpu(layer.grads[0])
    np.testing.assert_allclose(grads[np.float32], grads[np.float64], rtol=1e-4, atol=1e-5)


# -- errors ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[0, 1, 7, 2]]), r"token id 7 at position \(0, 2\).*\[0, 7\)"),
        (np.array([[0, -1, 2, 2]]), r"token id -1 at position \(0, 1\)"),
        (np.array([[0.0, 1.0, 2.0, 3.0]]), r"integer token ids"),
        (np.array([0, 1, 2]), r"2 dimensions"),
    ],
    ids=["too-large", "negative", "float", "rank"],
)
def test_bad_ids(xp_name, dev, rng, bad, match):
    layer = TimeEmbedding(dev(rng.standard_normal((V, D))))
    with pytest.raises(ValueError, match=match):
        layer.forward(bad)
    with pytest.raises(ValueError, match=match):
        layer.forward(dev(bad))


def test_embedding_ids_rank(xp_name, dev, rng):
    layer = Embedding(dev(rng.standard_normal((V, D))))
    with pytest.raises(ValueError, match=r"1 dimensions"):
        layer.forward(IDS_2D)


def test_constructor_errors(xp_name, dev, rng):
    with pytest.raises(ValueError, match=r"2 dimensions"):
        TimeEmbedding(dev(rng.standard_normal(V)))
    with pytest.raises(TypeError, match="floating-point"):
        TimeEmbedding(dev(np.ones((V, D), dtype=np.int64)))


@pytest.mark.parametrize("cls, ids", [(Embedding, IDS_2D[0]), (TimeEmbedding, IDS_2D)])
def test_backward_before_forward_and_twice(xp_name, dev, rng, cls, ids):
    layer = cls(dev(rng.standard_normal((V, D))))
    dout = dev(rng.standard_normal(ids.shape + (D,)))
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(dout)
    layer.forward(ids)
    layer.backward(dout)
    with pytest.raises(RuntimeError, match="twice"):
        layer.backward(dout)


def test_backward_shape_error(xp_name, dev, rng):
    layer = TimeEmbedding(dev(rng.standard_normal((V, D))))
    layer.forward(IDS_2D)
    with pytest.raises(ValueError, match=r"dout must have shape \(3, 4, 5\)"):
        layer.backward(dev(rng.standard_normal((N, T, D + 1))))
