"""The layer protocol, kept by every layer: ``params`` are the very arrays the constructor was
given, so an in-place write into one of them (the book's numerical_gradient, a student's
experiment, the book's ``TimeAffine(E.T, b)`` tying) reaches ``forward``.

And TimeAffine's fused ``[W ; b]`` path: taken exactly when W and b are the two parts of one
C-contiguous (D + 1, M) array, giving the same numbers and gradients as the plain path.
"""

from __future__ import annotations

import numpy as np
import pytest

from npgated import backend, gradcheck
from npgated.layers.affine import Affine, TimeAffine, fuse_weight_and_bias
from npgated.layers.dropout import Dropout, TimeDropout
from npgated.layers.embedding import Embedding, TimeEmbedding
from npgated.layers.gru import GRU, TimeGRU
from npgated.layers.loss import SoftmaxWithLoss, TimeSoftmaxWithLoss
from npgated.layers.lstm import LSTM, TimeLSTM
from npgated.layers.rnn import RNN, TimeRNN

N, T, D, H, V = 3, 4, 5, 6, 7
TOL = 1e-7


def _case(name, rng, dev):
    """(layer class, constructor arrays, constructor kwargs, forward inputs) for one layer."""

    def arr(*shape):
        return dev(rng.standard_normal(shape) * 0.5)

    x, xs, h0 = arr(N, D), arr(N, T, D), arr(N, H)
    ids, id_seq = dev(rng.integers(0, V, N)), dev(rng.integers(0, V, (N, T)))
    cases = {
        "Affine": (Affine, [arr(D, V), arr(V)], {}, (x,)),
        "TimeAffine": (TimeAffine, [arr(D, V), arr(V)], {}, (xs,)),
        "TimeAffine-fused": (TimeAffine, list(fuse_weight_and_bias(arr(D, V), arr(V))), {}, (xs,)),
        "TimeAffine-transposed": (TimeAffine, [arr(V, D), arr(V)], {"transposed": True}, (xs,)),
        "Embedding": (Embedding, [arr(V, D)], {}, (ids,)),
        "TimeEmbedding": (TimeEmbedding, [arr(V, D)], {}, (id_seq,)),
        "RNN": (RNN, [arr(D, H), arr(H, H), arr(H)], {}, (x, h0)),
        "TimeRNN": (TimeRNN, [arr(D, H), arr(H, H), arr(H)], {}, (xs,)),
        "LSTM": (LSTM, [arr(D, 4 * H), arr(H, 4 * H), arr(4 * H)], {}, (x, h0, arr(N, H))),
        "TimeLSTM": (TimeLSTM, [arr(D, 4 * H), arr(H, 4 * H), arr(4 * H)], {}, (xs,)),
        "GRU": (GRU, [arr(D, 3 * H), arr(H, 3 * H), arr(3 * H)], {}, (x, h0)),
        "GRU-reset_after": (
            GRU,
            [arr(D, 3 * H), arr(H, 3 * H), arr(2, 3 * H)],
            {"reset_after": True},
            (x, h0),
        ),
        "TimeGRU": (TimeGRU, [arr(D, 3 * H), arr(H, 3 * H), arr(3 * H)], {}, (xs,)),
        "TimeGRU-reset_after": (
            TimeGRU,
            [arr(D, 3 * H), arr(H, 3 * H), arr(2, 3 * H)],
            {"reset_after": True},
            (xs,),
        ),
    }
    return cases[name]


CASES = [
    "Affine",
    "TimeAffine",
    "TimeAffine-fused",
    "TimeAffine-transposed",
    "Embedding",
    "TimeEmbedding",
    "RNN",
    "TimeRNN",
    "LSTM",
    "TimeLSTM",
    "GRU",
    "GRU-reset_after",
    "TimeGRU",
    "TimeGRU-reset_after",
]


def _host_output(out):
    """forward's result on the host: LSTM's step returns (h, c)."""
    if isinstance(out, tuple):
        return np.concatenate([backend.to_cpu(o).ravel() for o in out])
    return backend.to_cpu(out)


@pytest.mark.parametrize("name", CASES)
def test_params_are_the_arrays_given(xp_name, dev, rng, name):
    cls, arrays, kwargs, _ = _case(name, rng, dev)
    layer = cls(*arrays, **kwargs)
    assert len(layer.params) == len(arrays) == len(layer.grads) == len(layer.param_names)
    for pname, p, a, g in zip(layer.param_names, layer.params, arrays, layer.grads):
        assert p is a, f"{name}.{pname}: params holds a different array than the one given"
        assert g.shape == a.shape and g.dtype == a.dtype, f"{name}.d{pname}"
        assert g is not a, f"{name}.d{pname} is the parameter itself"


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("name", CASES)
def test_an_in_place_write_reaches_forward(xp_name, dev, rng, name, index):
    cls, arrays, kwargs, inputs = _case(name, rng, dev)
    if index >= len(arrays):
        pytest.skip(f"{name} has {len(arrays)} constructor array(s)")
    layer = cls(*arrays, **kwargs)
    before = _host_output(layer.forward(*inputs))
    target = arrays[index]
    target *= 1.5  # in place, into the array the caller holds
    target += 0.25
    after = _host_output(layer.forward(*inputs))
    assert np.abs(after - before).max() > 1e-3, (
        f"{name}: writing into constructor array {index} did not change forward's output"
    )
    # and forward now computes exactly what a layer built from the new values computes
    fresh = cls(*(dev(backend.to_cpu(a).copy()) for a in arrays), **kwargs)
    np.testing.assert_allclose(
        after,
        _host_output(fresh.forward(*inputs)),
        rtol=1e-12,
        atol=1e-12,
        err_msg=f"{name} after an in-place write",
    )


@pytest.mark.parametrize("cls", [Dropout, TimeDropout, SoftmaxWithLoss, TimeSoftmaxWithLoss])
def test_layers_without_arrays_hold_no_params(cls):
    layer = cls()
    assert layer.params == [] and layer.grads == []


def test_tied_to_shares_the_embedding_array_and_gradient(xp_name, dev, rng):
    E = dev(rng.standard_normal((V, D)))
    embed = TimeEmbedding(E)
    head = TimeAffine.tied_to(embed)
    assert head.params[0] is E and head.grads[0] is embed.grads[0]
    assert not head.fused


# ---------------------------------------------------------------------------------------
# TimeAffine: the fused [W ; b] path exactly when it costs no copy
# ---------------------------------------------------------------------------------------
def _layouts(rng):
    """{name: (W, b, fused expected)}: the same values (D, V) and (V,) in different layouts."""
    W0, b0 = rng.standard_normal((D, V)), rng.standard_normal(V)

    def dev(a):
        return backend.to_device(a)

    out = {}
    buf = dev(np.vstack([W0, b0]))  # C-contiguous (D + 1, V)
    out["one buffer"] = (buf[:D], buf[D], True)
    out["fuse_weight_and_bias"] = (*fuse_weight_and_bias(dev(W0), dev(b0)), True)
    big = dev(np.vstack([rng.standard_normal((2, V)), W0, b0, rng.standard_normal((1, V))]))
    out["rows of a larger buffer"] = (big[2 : D + 2], big[D + 2], True)
    out["separate arrays"] = (dev(W0), dev(b0), False)
    out["W transposed view"] = (dev(np.ascontiguousarray(W0.T)).T, dev(b0), False)
    fortran = dev(np.asfortranarray(np.vstack([W0, b0])))
    out["Fortran-ordered buffer"] = (fortran[:D], fortran[D], False)
    gap = dev(np.vstack([W0, rng.standard_normal((1, V)), b0]))
    out["a row between W and b"] = (gap[:D], gap[D + 1], False)
    wide = dev(np.hstack([np.vstack([W0, b0]), rng.standard_normal((D + 1, 2))]))
    out["columns of a wider buffer"] = (wide[:, :V][:D], wide[D, :V], False)
    before = dev(np.vstack([b0, W0]))
    out["b before W"] = (before[1:], before[0], False)
    other = dev(np.vstack([W0, b0]))
    out["b from another buffer"] = (buf[:D], other[D], False)
    return out


LAYOUTS = [
    "one buffer",
    "fuse_weight_and_bias",
    "rows of a larger buffer",
    "separate arrays",
    "W transposed view",
    "Fortran-ordered buffer",
    "a row between W and b",
    "columns of a wider buffer",
    "b before W",
    "b from another buffer",
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fused_path_exactly_for_one_buffer(xp_name, rng, layout):
    W, b, expected = _layouts(rng)[layout]
    layer = TimeAffine(W, b)
    assert layer.fused is expected, f"{layout}: fused={layer.fused}, expected {expected}"
    assert layer.params[0] is W and layer.params[1] is b


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_gives_the_same_numbers(xp_name, rng, layout):
    layouts = _layouts(rng)
    xs = backend.to_device(rng.standard_normal((N, T, D)))
    dys = backend.to_device(rng.standard_normal((N, T, V)))
    results = {}
    for name in ("separate arrays", layout):
        W, b, _ = layouts[name]
        layer = TimeAffine(W, b)
        ys = layer.forward(xs)
        dxs = layer.backward(dys)
        results[name] = [backend.to_cpu(a) for a in (ys, dxs, *layer.grads)]
    for what, a, ref in zip(["ys", "dxs", "dW", "db"], results[layout], results["separate arrays"]):
        np.testing.assert_allclose(
            a,
            ref,
            rtol=1e-12,
            atol=1e-12,
            err_msg=f"TimeAffine {what}, {layout} vs separate arrays",
        )


@pytest.mark.parametrize("layout", ["one buffer", "separate arrays", "W transposed view"])
@pytest.mark.parametrize("wrt", ["xs", "W", "b"])
def test_both_paths_pass_the_gradient_check(xp_name, rng, layout, wrt):
    W, b, _ = _layouts(rng)[layout]
    layer = TimeAffine(W, b)
    xs = backend.to_device(rng.standard_normal((N, T, D)))
    r = gradcheck.check_layer(layer, (xs,), wrt=wrt, seed=0)
    assert r.error <= TOL, f"TimeAffine ({layout}) d{wrt}: {r.error:.1e} at {r.worst_index}"


def test_fused_gradients_are_views_of_one_buffer(rng):
    W, b = fuse_weight_and_bias(rng.standard_normal((D, V)), rng.standard_normal(V))
    layer = TimeAffine(W, b)
    dW, db = layer.grads
    assert dW.base is not None and dW.base is db.base
    assert not np.shares_memory(dW, W) and not np.shares_memory(db, b)
    layer.forward(rng.standard_normal((N, T, D)))
    layer.backward(rng.standard_normal((N, T, V)))
    assert np.abs(db).max() > 0 and np.abs(dW).max() > 0


def test_fuse_weight_and_bias_refuses_mismatched_shapes(rng):
    with pytest.raises(ValueError, match="b"):
        fuse_weight_and_bias(rng.standard_normal((D, V)), rng.standard_normal(V + 1))
