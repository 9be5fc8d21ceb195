import numpy as np
import pytest

from npgated import backend, gradcheck
from npgated.layers.dropout import keep_mask
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


# -- embedding dropout (whole word types, one (V, 1) mask per window) ------------------------
P_EMB = 0.4
SEED_EMB = 3  # with it the (V, 1) mask drops some ids of IDS_2D and keeps others


def emb_layer(dev, W, dtype=None, **kwargs):
    return TimeEmbedding(dev(W, dtype=dtype), embedding_dropout=P_EMB, **kwargs)


def frozen_mask(layer, seed=SEED_EMB):
    def hook():
        layer.rng = np.random.default_rng(seed)

    return hook


def test_embedding_dropout_gradcheck(xp_name, dev, rng):
    layer = emb_layer(dev, rng.standard_normal((V, D)))
    r = gradcheck.check_layer(layer, (IDS_2D,), wrt="W", before_forward=frozen_mask(layer), seed=0)
    assert r.error <= TOL, f"TimeEmbedding dW (embedding dropout): {r.error:.1e} at {r.worst_index}"
    kept = backend.to_cpu(layer.drop_mask)[IDS_2D.reshape(-1), 0]
    assert (kept == 0).any() and (kept > 0).any()  # the check saw dropped and kept words


def test_embedding_dropout_gradcheck_directional(xp_name, dev, rng):
    layer = emb_layer(dev, rng.standard_normal((V, D)))
    r = gradcheck.check_layer(
        layer, (IDS_2D,), wrt="W", before_forward=frozen_mask(layer), seed=0, directional=("W",)
    )
    assert r.directional and r.error <= TOL, f"directional dW: {r.error:.1e}"


def test_embedding_dropout_drops_whole_word_types(xp_name, dev, rng):
    W = rng.standard_normal((V, D))
    layer = emb_layer(dev, W, seed=SEED_EMB)
    out = backend.to_cpu(layer.forward(IDS_2D))
    mask = keep_mask(np.random.default_rng(SEED_EMB), (V, 1), P_EMB, W)  # drawn as documented
    np.testing.assert_array_equal(backend.to_cpu(layer.drop_mask), mask)
    assert set(np.unique(mask)) <= {0.0, 1 / (1 - P_EMB)}
    np.testing.assert_allclose(out, (W * mask)[IDS_2D], rtol=1e-15)
    dropped = mask[IDS_2D, 0] == 0
    assert dropped.any() and (~dropped).any()
    assert not out[dropped].any()  # every occurrence of a dropped word, at every position
    # Backward: dW = onehot(ids).T @ (dout * mask[ids]); dropped rows get nothing.
    dout = rng.standard_normal((N, T, D))
    layer.backward(dev(dout))
    dW = backend.to_cpu(layer.grads[0])
    np.testing.assert_allclose(
        dW, dense_reference_dW(IDS_2D, dout * mask[IDS_2D], V), rtol=1e-12, atol=1e-14
    )
    assert not dW[mask[:, 0] == 0].any()


def test_embedding_dropout_new_mask_per_window_same_seed_same_mask(xp_name, dev, rng):
    W = rng.standard_normal((V, D))
    a, b = emb_layer(dev, W, seed=5), emb_layer(dev, W, seed=5)
    a.forward(IDS_2D)
    b.forward(IDS_2D)
    first = backend.to_cpu(a.drop_mask)
    np.testing.assert_array_equal(first, backend.to_cpu(b.drop_mask))
    masks = [first]
    for _ in range(3):  # P(three more identical 7-entry masks) is negligible: the draw moves
        a.forward(IDS_2D)
        masks.append(backend.to_cpu(a.drop_mask))
    assert any(not np.array_equal(first, m) for m in masks[1:])


def test_embedding_dropout_eval_and_zero_ratio_are_the_plain_layer(xp_name, dev, rng):
    W = rng.standard_normal((V, D))
    dout = rng.standard_normal((N, T, D))
    plain = TimeEmbedding(dev(W))
    want = backend.to_cpu(plain.forward(IDS_2D))
    plain.backward(dev(dout))
    for layer in (
        emb_layer(dev, W, seed=1).eval(),
        TimeEmbedding(dev(W), embedding_dropout=0.0, seed=1),
    ):
        state = layer.rng.bit_generator.state
        np.testing.assert_array_equal(backend.to_cpu(layer.forward(IDS_2D)), want)
        assert layer.drop_mask is None and layer.rng.bit_generator.state == state
        layer.backward(dev(dout))
        np.testing.assert_array_equal(
            backend.to_cpu(layer.grads[0]), backend.to_cpu(plain.grads[0])
        )


def test_embedding_dropout_float32(xp_name, dev, rng):
    W = rng.standard_normal((V, D))
    dout = rng.standard_normal((N, T, D))
    results = {}
    for dtype in (np.float32, np.float64):
        layer = emb_layer(dev, W, dtype=dtype, seed=SEED_EMB)
        out = layer.forward(IDS_2D)
        layer.backward(dev(dout, dtype=dtype))
        arrays = (out, layer.drop_mask, layer.grads[0])
        assert all(a.dtype == dtype for a in arrays)
        results[dtype] = [backend.to_cpu(a) for a in arrays]
    for a32, a64 in zip(*results.values()):
        np.testing.assert_allclose(a32, a64, rtol=1e-5, atol=1e-6)


def test_embedding_dropout_bad_dout_keeps_the_mask(xp_name, dev, rng):
    W = rng.standard_normal((V, D))
    layer = emb_layer(dev, W, seed=SEED_EMB)
    layer.forward(IDS_2D)
    mask = backend.to_cpu(layer.drop_mask)
    with pytest.raises(ValueError, match="dout must have shape"):
        layer.backward(dev(rng.standard_normal((N, T, D + 1))))
    dout = rng.standard_normal((N, T, D))
    layer.backward(dev(dout))  # the retry still uses the forward's mask
    np.testing.assert_allclose(
        backend.to_cpu(layer.grads[0]),
        dense_reference_dW(IDS_2D, dout * mask[IDS_2D], V),
        rtol=1e-12,
    )


@pytest.mark.parametrize(
    "p, error, match",
    [
        (1.0, ValueError, r"embedding_dropout must be in \[0, 1\)"),
        (-0.5, ValueError, r"embedding_dropout must be in \[0, 1\)"),
        ("x", TypeError, r"embedding_dropout must be a number"),
    ],
)
def test_embedding_dropout_bad_ratio(rng, p, error, match):
    with pytest.raises(error, match=match):
        TimeEmbedding(rng.standard_normal((V, D)), embedding_dropout=p)


def test_embedding_dropout_repr_keyword_only_and_attributes(rng):
    W = rng.standard_normal((V, D))
    layer = TimeEmbedding(W, embedding_dropout=0.25, seed=0)
    assert "embedding_dropout=0.25" in repr(layer)
    assert "dropout" not in repr(TimeEmbedding(W))
    assert layer.batch_shard is None and isinstance(layer.rng, np.random.Generator)
    with pytest.raises(TypeError):
        TimeEmbedding(W, 0.25)
