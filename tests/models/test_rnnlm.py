import numpy as np
import pytest

from npgated import backend
from npgated.gradcheck import check_model
from npgated.models.rnnlm import BetterRnnlm, Rnnlm, build_model

V, D, H = 11, 5, 6


def _batch(rng, N=2, T=3, V=V):
    return rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))


def _freeze(model, seed=100):
    def before():
        model.reset_state()
        droppers = model.dropout_layers() if hasattr(model, "dropout_layers") else []
        for i, layer in enumerate(droppers):
            layer.rng = np.random.default_rng(seed + i)

    return before


def _assert_ok(results, tol, what):
    for r in results:
        assert r.error <= tol, f"{what} d{r.name}: {r.error:.1e} at {r.worst_index} ({r})"


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_rnnlm_gradcheck(cell, xp_name, rng):
    model = Rnnlm(V, D, H, cell=cell, seed=0, dtype=np.float64, init=0.5)
    xs, ts = _batch(rng)
    _assert_ok(check_model(model, xs, ts, before_forward=_freeze(model)), 1e-6, f"Rnnlm[{cell}]")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_better_rnnlm_gradcheck_tied_dropout(cell, xp_name, rng):
    model = BetterRnnlm(
        V, H, H, num_layers=2, dropout_ratio=0.3, cell=cell, seed=0, dtype=np.float64, init=0.5
    )
    xs, ts = _batch(rng)
    results = check_model(model, xs, ts, before_forward=_freeze(model), directional=("embed.W",))
    _assert_ok(results, 1e-6, f"BetterRnnlm[{cell}]")
    # the tied matrix is checked once, by its first name
    assert [r.name for r in results].count("embed.W") == 1
    assert "affine.W" not in [r.name for r in results]


def test_better_rnnlm_untied_dense_check(rng):
    model = BetterRnnlm(
        V,
        D,
        H,
        num_layers=2,
        dropout_ratio=0.2,
        tie_weights=False,
        variational=False,
        seed=1,
        dtype=np.float64,
        init=0.5,
    )
    xs, ts = _batch(rng)
    _assert_ok(check_model(model, xs, ts, before_forward=_freeze(model)), 1e-6, "BetterRnnlm")


def test_stateful_second_window_gradcheck(rng):
    """Gradients on window 2 with the state carried from window 1 (TBPTT)."""
    model = Rnnlm(V, D, H, cell="lstm", seed=0, dtype=np.float64, init=0.5)
    x1, t1 = _batch(rng)
    x2, t2 = _batch(rng)
    model.reset_state()
    model.forward(x1, t1)
    carried = model.recurrent_state()
    assert set(carried) == {"lstm1.h", "lstm1.c"}

    def before():
        model.set_recurrent_state(carried)

    _assert_ok(check_model(model, x2, t2, before_forward=before), 1e-6, "Rnnlm window 2")


def test_tying_shares_one_array_and_counts_once():
    tied = BetterRnnlm(V, H, H, num_layers=1, dropout_ratio=0.0, seed=0)
    untied = BetterRnnlm(V, H, H, num_layers=1, dropout_ratio=0.0, tie_weights=False, seed=0)
    assert tied.layers["affine"].params[0] is tied.layers["embed"].params[0]
    assert tied.layers["affine"].grads[0] is tied.layers["embed"].grads[0]
    assert len(tied.params) == len(untied.params) - 1
    assert len({id(p) for p in tied.params}) == len(tied.params)
    assert tied.num_params() == untied.num_params() - V * H


def test_tying_needs_equal_sizes():
    with pytest.raises(ValueError, match="hidden_size=6, wordvec_size=5"):
        BetterRnnlm(V, 5, 6, tie_weights=True)


def test_named_params():
    model = BetterRnnlm(V, H, H, num_layers=2, dropout_ratio=0.5, cell="gru", seed=0)
    names = model.param_names
    assert names == [
        "embed.W",
        "gru1.Wx",
        "gru1.Wh",
        "gru1.b",
        "gru2.Wx",
        "gru2.Wh",
        "gru2.b",
        "affine.b",
    ]
    assert model.layers["gru1"].params[2].shape == (2, 3 * H)  # reset_after=True (PyTorch)


def test_dtype_and_backend(xp_name, rng):
    model = Rnnlm(V, D, H, seed=0)
    assert all(p.dtype == np.float32 for p in model.params)
    assert all(backend.get_array_module(p) is backend.xp() for p in model.params)
    xs, ts = _batch(rng)
    loss = model.forward(xs, ts)
    assert np.asarray(backend.to_cpu(loss)).dtype == np.float32
    model.backward()
    assert all(g.dtype == np.float32 for g in model.grads)


def test_same_seed_same_model_and_loss(rng):
    xs, ts = _batch(rng)
    a = BetterRnnlm(V, H, H, dropout_ratio=0.5, seed=3)
    b = BetterRnnlm(V, H, H, dropout_ratio=0.5, seed=3)
    assert float(a.forward(xs, ts)) == float(b.forward(xs, ts))
    c = BetterRnnlm(V, H, H, dropout_ratio=0.5, seed=4)
    assert float(a.forward(xs, ts)) != float(c.forward(xs, ts))


def test_eval_mode_is_deterministic(rng):
    model = BetterRnnlm(V, H, H, dropout_ratio=0.5, seed=0).eval()
    xs, ts = _batch(rng)
    model.reset_state()
    a = float(model.forward(xs, ts))
    model.reset_state()
    assert float(model.forward(xs, ts)) == a


def test_predict_shape_and_errors(rng):
    model = Rnnlm(V, D, H, seed=0)
    xs, ts = _batch(rng, N=3, T=4)
    assert model.predict(xs).shape == (3, 4, V)
    with pytest.raises(ValueError, match="same shape"):
        model.forward(xs, ts[:, :2])
    with pytest.raises(ValueError, match="out of range"):
        model.forward(xs + V, ts)
    with pytest.raises(ValueError, match="unknown cell"):
        Rnnlm(V, D, H, cell="transformer")


def test_build_model_roundtrip():
    model = BetterRnnlm(V, H, H, num_layers=2, seed=0)
    again = build_model(model.config, seed=0)
    assert again.param_names == model.param_names
    for p, q in zip(model.params, again.params):
        np.testing.assert_array_equal(backend.to_cpu(p), backend.to_cpu(q))


def test_training_lowers_loss(rng):
    """A few SGD steps on a repeated sentence lower the loss (the model can learn)."""
    from npgated.optim import SGD
    from npgated.optim.clip import clip_grads

    model = Rnnlm(V, 8, 8, seed=0)
    seq = np.tile(np.arange(V), 3)
    xs, ts = seq[None, :-1], seq[None, 1:]
    opt = SGD(lr=1.0)
    losses = []
    for _ in range(60):
        model.reset_state()
        model.zero_grads()
        losses.append(float(model.forward(xs, ts)))
        model.backward()
        clip_grads(model.grads, 5.0)
        opt.update(model.params, model.grads)
    assert losses[-1] < 0.5 * losses[0]


# -- regularizing the recurrence ------------------------------------------------------------
ALL_OPTIONS = dict(recurrent_dropout=0.3, weight_drop=0.25, embedding_dropout=0.2, ar=2.0, tar=1.0)


def _freeze_all(model, seed=200):
    """Every stochastic layer reseeded before each forward: the same masks every evaluation."""

    def before():
        model.reset_state()
        for i, layer in enumerate(model.stochastic_layers()):
            layer.rng = np.random.default_rng(seed + i)

    return before


class _Penalised:
    """The objective BetterRnnlm.backward differentiates: loss + penalty (AR + TAR)."""

    def __init__(self, model):
        self.model = model

    def forward(self, xs, ts):
        return self.model.forward(xs, ts) + self.model.penalty

    def __getattr__(self, name):
        return getattr(self.model, name)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_better_rnnlm_gradcheck_all_regularizers(cell, rng):
    model = BetterRnnlm(
        V,
        H,
        H,
        num_layers=2,
        dropout_ratio=0.2,
        cell=cell,
        seed=0,
        dtype=np.float64,
        init=0.5,
        **ALL_OPTIONS,
    )
    assert {"ar", "tar"} <= set(model.layers)
    xs, ts = _batch(rng, N=2, T=4)
    before = _freeze_all(model)
    before()
    model.forward(xs, ts)
    assert model.penalty > 0
    results = check_model(
        _Penalised(model), xs, ts, before_forward=before, directional=("embed.W",)
    )
    _assert_ok(results, 1e-6, f"BetterRnnlm[{cell}] with every regularizer")


def test_penalty_adds_to_the_objective_not_to_the_loss(rng):
    xs, ts = _batch(rng, N=2, T=4)
    plain = BetterRnnlm(V, H, H, dropout_ratio=0.0, seed=0, dtype=np.float64)
    reg = BetterRnnlm(V, H, H, dropout_ratio=0.0, seed=0, dtype=np.float64, ar=1.0, tar=1.0)
    assert float(plain.forward(xs, ts)) == float(reg.forward(xs, ts))  # same cross-entropy
    assert plain.penalty == 0.0 and reg.penalty > 0
    plain.backward()
    reg.backward()
    assert any(not np.array_equal(a, b) for a, b in zip(plain.grads, reg.grads))
    # backward(dout) scales the penalty's gradient with the loss's
    reg.zero_grads()
    reg.reset_state()
    reg.forward(xs, ts)
    reg.backward(2.0)
    doubled = [g.copy() for g in reg.grads]
    reg.zero_grads()
    reg.reset_state()
    reg.forward(xs, ts)
    reg.backward()
    for a, b in zip(doubled, reg.grads):
        np.testing.assert_allclose(a, 2.0 * b, rtol=1e-12, atol=1e-15)


def test_eval_mode_drops_nothing_and_has_no_penalty(rng):
    xs, ts = _batch(rng, N=2, T=4)
    reg = BetterRnnlm(V, H, H, dropout_ratio=0.3, seed=0, dtype=np.float64, **ALL_OPTIONS).eval()
    plain = BetterRnnlm(V, H, H, dropout_ratio=0.3, seed=0, dtype=np.float64).eval()
    states = {
        name: layer.rng.bit_generator.state
        for name, layer in reg.layers.items()
        if hasattr(layer, "rng")
    }
    np.testing.assert_allclose(reg.predict(xs), plain.predict(xs), rtol=1e-12, atol=1e-12)
    reg.reset_state()
    reg.forward(xs, ts)
    assert reg.penalty == 0.0
    assert states == {
        name: layer.rng.bit_generator.state
        for name, layer in reg.layers.items()
        if hasattr(layer, "rng")
    }  # nothing was drawn


def test_new_options_keep_existing_seeds_and_round_trip(rng):
    xs, ts = _batch(rng)
    old = BetterRnnlm(V, H, H, num_layers=2, dropout_ratio=0.4, seed=5)
    new = BetterRnnlm(V, H, H, num_layers=2, dropout_ratio=0.4, seed=5, tar=0.5)
    for p, q in zip(old.params, new.params):  # same initialisation
        np.testing.assert_array_equal(p, q)
    # the dropout layers draw the masks they drew before the options existed
    assert float(old.forward(xs, ts)) == float(new.forward(xs, ts))
    model = BetterRnnlm(V, H, H, num_layers=2, seed=0, **ALL_OPTIONS)
    assert {k: model.config[k] for k in ALL_OPTIONS} == ALL_OPTIONS
    again = build_model(model.config, seed=0)
    assert again.config == model.config and list(again.layers) == list(model.layers)
    assert again.layers["lstm1"].weight_drop == 0.25
    assert again.layers["embed"].embedding_dropout == 0.2
    # a config written before the options existed still builds (all off)
    legacy = {k: v for k, v in model.config.items() if k not in ALL_OPTIONS}
    assert build_model(legacy).config == dict(legacy, **dict.fromkeys(ALL_OPTIONS, 0.0))


def test_regularizer_errors():
    with pytest.raises(ValueError, match="recurrent_dropout"):
        BetterRnnlm(V, H, H, recurrent_dropout=1.0)
    with pytest.raises(ValueError, match=r"ar must be in \[0, inf\]"):
        BetterRnnlm(V, H, H, ar=-1.0)
