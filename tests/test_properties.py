"""Property-based tests (hypothesis): shapes, gradients and id validation for random sizes."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npgated.gradcheck import check_layer
from npgated.layers.embedding import TimeEmbedding
from npgated.layers.gru import TimeGRU
from npgated.layers.lstm import TimeLSTM
from npgated.layers.rnn import TimeRNN

sizes = st.integers(min_value=1, max_value=4)
SETTINGS = dict(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _make(kind, D, H, rng, reset_after=False):
    k = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    Wx = rng.standard_normal((D, k * H)) * 0.5
    Wh = rng.standard_normal((H, k * H)) * 0.5
    if kind == "gru" and reset_after:
        return TimeGRU(
            Wx, Wh, rng.standard_normal((2, 3 * H)) * 0.1, stateful=True, reset_after=True
        )
    b = rng.standard_normal(k * H) * 0.1
    cls = {"rnn": TimeRNN, "lstm": TimeLSTM, "gru": TimeGRU}[kind]
    return cls(Wx, Wh, b, stateful=True)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru", "gru-reset-after"])
@settings(**SETTINGS)
@given(N=sizes, T=sizes, D=sizes, H=sizes, seed=st.integers(0, 2**16))
def test_recurrent_shapes_and_gradients(kind, N, T, D, H, seed):
    rng = np.random.default_rng(seed)
    cell = kind.split("-")[0]
    layer = _make(cell, D, H, rng, reset_after=kind.endswith("after"))
    xs = rng.standard_normal((N, T, D))
    state = {"h": rng.standard_normal((N, H))}
    if cell == "lstm":
        state["c"] = rng.standard_normal((N, H))
    layer.set_state(**state)
    hs = layer.forward(xs)
    assert hs.shape == (N, T, H) and hs.dtype == np.float64
    assert layer.h.shape == (N, H)
    wrt = ["xs", "Wx", "Wh", "b", "h0"] + (["c0"] if cell == "lstm" else [])
    for r in check_layer(layer, (xs,), wrt=wrt, state=state, seed=seed):
        assert r.error <= 1e-6, f"{kind} N={N} T={T} D={D} H={H} d{r.name}: {r}"


@settings(**SETTINGS)
@given(
    V=st.integers(1, 20),
    N=sizes,
    T=sizes,
    seed=st.integers(0, 2**16),
    bad=st.one_of(st.integers(-1000, -1), st.integers(20, 1000)),
)
def test_invalid_ids_always_raise(V, N, T, seed, bad):
    rng = np.random.default_rng(seed)
    layer = TimeEmbedding(rng.standard_normal((V, 3)))
    ids = rng.integers(0, V, (N, T))
    assert layer.forward(ids).shape == (N, T, 3)
    position = (int(rng.integers(N)), int(rng.integers(T)))
    value = bad if bad < 0 else V + bad  # always outside [0, V)
    ids[position] = value
    where = rf"\({position[0]}, {position[1]}\)"
    with pytest.raises(ValueError, match=rf"token id {value} at position {where}"):
        layer.forward(ids)
