"""One flat buffer for a model's parameters and one for its gradients (npgated.flat).

Every model test elsewhere runs with whatever ``NPGATED_FLAT`` says (on by default; the suite
also runs with it 0); these tests build both layouts side by side and hold them to the same
numbers: the views live in the buffers, a tied matrix is one slice, hand-built layers keep
their arrays, every optimizer's whole-buffer pass equals its per-array loop, clipping and
checkpoints agree, and layouts the model cannot flatten stay separate arrays.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from npgated import backend, flat, parallel
from npgated.layers.affine import TimeAffine
from npgated.layers.embedding import TimeEmbedding
from npgated.layers.loss import TimeSoftmaxWithLoss
from npgated.layers.lstm import TimeLSTM
from npgated.models.base import Model
from npgated.models.rnnlm import BetterRnnlm, Rnnlm
from npgated.optim import OPTIMIZERS, clip_grads, global_norm, make_optimizer
from npgated.optim import base as optim_base
from npgated.training.checkpoint import load_checkpoint, restore, save_checkpoint

V, D, H = 13, 6, 6


def _better(flat_on, **kw):
    kw = {"num_layers": 2, "dropout_ratio": 0.3, "seed": 4, "dtype": np.float64, **kw}
    return BetterRnnlm(V, D, H, flat=flat_on, **kw)


def _batch(seed=0, N=3, T=4):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))


def _grads_of_a_step(model, seed=0):
    model.zero_grads()
    model.forward(*_batch(seed))
    model.backward()


def _host(a):
    return backend.to_cpu(a)


@pytest.mark.parametrize(
    "build",
    [
        lambda f: Rnnlm(V, D, H, seed=1, flat=f),
        lambda f: _better(f, cell="gru", tie_weights=False, recurrent_dropout=0.2, weight_drop=0.2),
    ],
)
def test_every_param_and_grad_is_a_view_of_the_buffers(build, xp_name):
    model = build(True)
    (fb,) = model.flat_buffers
    assert fb.size == model.num_params() and fb.storage.size == fb.size + flat.SPARE
    assert flat.tiles(model.params, fb.params) and flat.tiles(model.grads, fb.grads)
    for name, p, _g in model.named_params():
        assert np.shares_memory(_host(p), _host(fb.params)) or xp_name != "numpy", name
    # the layers compute with the views: a change in the buffer reaches forward
    xs, ts = _batch()
    before = float(model.eval().forward(xs, ts))
    fb.params[...] = 0
    model.reset_state()
    assert float(model.forward(xs, ts)) == pytest.approx(np.log(V), rel=1e-6) != before
    # and backward writes into the gradient buffer
    model.train()
    _grads_of_a_step(model)
    assert float((fb.grads * fb.grads).sum()) > 0


def test_fused_output_layer_stays_fused_on_the_views():
    model = Rnnlm(V, D, H, seed=1, flat=True)
    affine = model.layers["affine"]
    assert affine.fused and model.flat_buffers
    W, b = affine.params
    assert flat.covering([W, b]) is not None  # [W ; b] one piece of the buffer
    reference = Rnnlm(V, D, H, seed=1, flat=False)
    xs, ts = _batch()
    for m in (model, reference):
        _grads_of_a_step(m)
    for (name, _, g), (_, _, r) in zip(model.named_params(), reference.named_params()):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-7, err_msg=name)


def test_tied_matrix_is_one_slice_with_one_gradient():
    model = _better(True)
    embed, affine = model.layers["embed"], model.layers["affine"]
    assert affine.params[0] is embed.params[0] and affine.grads[0] is embed.grads[0]
    assert model.param_names.count("embed.W") == 1 and "affine.W" not in model.param_names
    assert model.flat_buffers[0].size == model.num_params() == sum(p.size for p in model.params)
    # both uses accumulate into the one gradient view: the sum the separate layout computes
    reference = _better(False)
    for m in (model, reference):
        _grads_of_a_step(m)
    np.testing.assert_allclose(embed.grads[0], reference.layers["embed"].grads[0], rtol=1e-12)


def test_switch_keeps_separate_arrays(monkeypatch):
    assert _better(False).flat_buffers == []
    monkeypatch.setenv(flat.ENV_VAR, "0")
    model = _better(None)
    assert model.flat_buffers == [] and flat.covering(model.params) is None
    assert _better(True).flat_buffers  # the keyword wins over the environment
    monkeypatch.setenv(flat.ENV_VAR, "sometimes")
    with pytest.raises(ValueError, match="NPGATED_FLAT='sometimes' is not a switch"):
        _better(None)


def test_flat_and_separate_models_compute_the_same_numbers():
    a = _better(True, recurrent_dropout=0.2, weight_drop=0.3, embedding_dropout=0.1, ar=1, tar=1)
    b = _better(False, recurrent_dropout=0.2, weight_drop=0.3, embedding_dropout=0.1, ar=1, tar=1)
    for seed in range(2):  # two windows: the state carries
        losses = []
        for m in (a, b):
            m.zero_grads()
            losses.append(float(m.forward(*_batch(seed))))
            m.backward()
        assert losses[0] == pytest.approx(losses[1], rel=1e-13)
        for (name, _, g), (_, _, r) in zip(a.named_params(), b.named_params()):
            np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-15, err_msg=name)


class _HandBuilt(Model):
    """The book's way: layers built from arrays the caller keeps, registered by hand."""

    def __init__(self, book_tying=False, flat_on=True):
        super().__init__(flat=flat_on)
        rng = np.random.default_rng(0)
        E = rng.standard_normal((V, H)) / 10
        self.add_layer("embed", TimeEmbedding(E))
        self.add_layer(
            "lstm",
            TimeLSTM(
                rng.standard_normal((H, 4 * H)) / 3,
                rng.standard_normal((H, 4 * H)) / 3,
                np.zeros(4 * H),
                stateful=True,
            ),
        )
        W = E.T if book_tying else rng.standard_normal((H, V)) / 3  # the book: E.T, a view
        self.add_layer("affine", TimeAffine(W, np.zeros(V)))
        self.add_layer("loss", TimeSoftmaxWithLoss())
        self.collect_params()

    def forward(self, xs, ts):
        out = xs
        for name, layer in self.layers.items():
            out = layer.forward(out, ts) if name == "loss" else layer.forward(out)
        return out

    def backward(self):
        d = 1.0
        for layer in reversed(list(self.layers.values())):
            d = layer.backward(d)


def test_layers_built_by_hand_keep_their_arrays_until_a_model_flattens_them():
    rng = np.random.default_rng(0)
    Wx, Wh, b = rng.standard_normal((D, 4 * H)), rng.standard_normal((H, 4 * H)), np.zeros(4 * H)
    layer = TimeLSTM(Wx, Wh, b)
    assert layer.params[0] is Wx and layer.params[1] is Wh and layer.params[2] is b
    model = _HandBuilt()
    assert model.flat_buffers
    assert flat.tiles(model.params, model.flat_buffers[0].params)
    reference = _HandBuilt(flat_on=False)
    for m in (model, reference):
        m.zero_grads()
        m.forward(*_batch())
        m.backward()
    for (name, _, g), (_, _, r) in zip(model.named_params(), reference.named_params()):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-15, err_msg=name)


def test_book_tying_by_a_transposed_view_keeps_separate_arrays(caplog):
    with caplog.at_level(logging.INFO, logger="npgated.models.base"):
        model = _HandBuilt(book_tying=True)
    assert model.flat_buffers == []  # a copy would break E.T's sharing of E
    assert "share memory without being one array" in caplog.text
    E, W = model.layers["embed"].params[0], model.layers["affine"].params[0]
    assert np.shares_memory(E, W)


class _CachingLayer(TimeLSTM):
    """A layer that keeps a reference of its own to Wh (and no rebind that re-points it)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.my_Wh = self.params[1]


def test_a_layer_holding_old_memory_keeps_the_model_on_separate_arrays(caplog):
    class Model2(_HandBuilt):
        def __init__(self):
            Model.__init__(self, flat=True)
            rng = np.random.default_rng(0)
            self.add_layer("embed", TimeEmbedding(rng.standard_normal((V, H))))
            self.add_layer(
                "lstm",
                _CachingLayer(
                    rng.standard_normal((H, 4 * H)),
                    rng.standard_normal((H, 4 * H)),
                    np.zeros(4 * H),
                ),
            )
            self.add_layer("affine", TimeAffine(rng.standard_normal((H, V)), np.zeros(V)))
            self.add_layer("loss", TimeSoftmaxWithLoss())
            self.collect_params()

    with caplog.at_level(logging.WARNING, logger="npgated.models.base"):
        model = Model2()
    assert model.flat_buffers == []
    assert "lstm.my_Wh" in caplog.text
    lstm = model.layers["lstm"]
    assert lstm.params[1] is lstm.my_Wh  # every layer got its arrays back
    assert model.params[2] is lstm.params[1]


def _random_grads(model, seed):
    rng = np.random.default_rng(seed)
    for g in model.grads:
        g[...] = rng.standard_normal(g.shape)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_whole_buffer_step_equals_the_per_array_steps(name, monkeypatch):
    monkeypatch.setattr(optim_base, "WHOLE_BLOCK", 37)  # the whole buffers in many blocks
    models = [_better(True), _better(False)]
    opts = [make_optimizer(name) for _ in models]
    for step in range(4):
        if name == "asgd" and step == 2:
            for o in opts:
                o.start_averaging()
        for m, o in zip(models, opts):
            _random_grads(m, step)
            o.update(m.params, m.grads)
    for s in opts[0].slot_names:  # the flat model's slots tile one buffer too
        assert flat.covering(opts[0].slots[s]) is not None
        assert flat.covering(opts[1].slots[s]) is None
    for (pname, p, _), (_, q, _) in zip(models[0].named_params(), models[1].named_params()):
        np.testing.assert_allclose(p, q, rtol=1e-14, atol=1e-15, err_msg=f"{name} {pname}")
    for s in opts[0].slot_names:
        for a, b in zip(opts[0].slots[s], opts[1].slots[s]):
            np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15, err_msg=f"{name} {s}")
    if name == "asgd":
        with opts[0].averaged(models[0].params), opts[1].averaged(models[1].params):
            for p, q in zip(models[0].params, models[1].params):
                np.testing.assert_allclose(p, q, rtol=1e-14, atol=1e-15)


def test_whole_buffer_step_splits_over_threads_alike():
    model = _better(True)
    _random_grads(model, 0)
    params = [p.copy() for p in model.params]
    plain = make_optimizer("adam")
    plain.update(model.params, model.grads)
    expected = [p.copy() for p in model.params]
    for p, saved in zip(model.params, params):
        p[...] = saved
    previous = parallel.threads()
    parallel.use_threads(2)
    try:
        import npgated.parallel as par  # noqa: PLC0415

        old = par.MIN_ELEMENTS
        par.MIN_ELEMENTS = 16  # split even this small buffer
        try:
            make_optimizer("adam").update(model.params, model.grads)
        finally:
            par.MIN_ELEMENTS = old
    finally:
        parallel.use_threads(previous)
    for p, e in zip(model.params, expected):
        np.testing.assert_array_equal(p, e)  # element-wise: bit-identical


def test_clip_norm_is_the_per_array_norm():
    model = _better(True)
    _random_grads(model, 3)
    separate = [g.copy() for g in model.grads]
    assert flat.covering(separate) is None and flat.covering(model.grads) is not None
    assert global_norm(model.grads) == pytest.approx(global_norm(separate), rel=1e-13)
    norm = clip_grads(model.grads, 0.5)
    assert norm == pytest.approx(clip_grads(separate, 0.5), rel=1e-13)
    for g, s in zip(model.grads, separate):
        np.testing.assert_allclose(g, s, rtol=1e-13)
    assert global_norm(model.grads) == pytest.approx(0.5, rel=1e-5)


def test_zero_grads_is_one_fill_per_buffer(monkeypatch):
    calls = []
    real = parallel.each
    monkeypatch.setattr(
        parallel, "each", lambda fn, *a, **k: (calls.append(a[0].size), real(fn, *a, **k))
    )
    for model, expected in ((_better(True), 1), (_better(False), None)):
        _random_grads(model, 0)
        calls.clear()
        model.zero_grads()
        assert len(calls) == (expected or len(model.grads))
        assert all(not np.any(g) for g in model.grads)
    assert calls == [g.size for g in model.grads]


def test_checkpoint_round_trip_between_layouts(tmp_path):
    def build(f):
        return _better(f, dropout_ratio=0.0)

    original, opt = build(True), make_optimizer("adam", lr=0.01)
    for step in range(2):
        _grads_of_a_step(original, step)
        opt.update(original.params, original.grads)
    path = save_checkpoint(tmp_path / "a.npz", original, opt)

    def next_step(model, optimizer):
        model.reset_state()
        _grads_of_a_step(model, 5)
        optimizer.update(model.params, model.grads)
        return [p.copy() for p in model.params]

    expected = next_step(original, opt)
    for target_flat in (False, True):
        model, resumed = build(target_flat), make_optimizer("adam", lr=0.01)
        restore(model, load_checkpoint(path), resumed)
        got = next_step(model, resumed)  # the same update: parameters and slots came back
        assert (flat.covering(resumed.slots["m"]) is not None) == target_flat
        for name, p, q in zip(model.param_names, got, expected):
            np.testing.assert_allclose(p, q, rtol=1e-13, atol=1e-15, err_msg=name)
