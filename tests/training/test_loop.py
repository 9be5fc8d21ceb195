import json
import math

import numpy as np
import pytest

from npgated import backend
from npgated.data import ptb
from npgated.training.checkpoint import load_checkpoint
from npgated.training.config import TrainConfig
from npgated.training.loop import TrainingDiverged, train


@pytest.fixture
def corpora(synthetic_ptb):
    folder = synthetic_ptb
    train_c, w2i, _ = ptb.load_data("train", folder)
    valid, _, _ = ptb.load_data("valid", folder)
    test, _, _ = ptb.load_data("test", folder)
    return train_c, valid, test, w2i


def _config(tmp_path, **kw):
    base = dict(
        model="BetterRnnlm",
        wordvec_size=16,
        hidden_size=16,
        num_layers=2,
        dropout=0.2,
        tie_weights=True,
        batch_size=4,
        time_size=5,
        lr=2.0,
        max_grad_norm=1.0,
        epochs=2,
        max_iters=25,
        schedule="plateau",
        log_interval=10,
        progress=False,
        run_dir=str(tmp_path / "run"),
        seed=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_training_lowers_perplexity_and_writes_run_dir(tmp_path, corpora):
    result = train(_config(tmp_path, epochs=3, max_iters=None), corpora)
    run = result.run_dir
    for name in ("config.json", "metrics.jsonl", "last.npz", "best.npz", "perplexity.png"):
        assert (run / name).stat().st_size > 0, name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [r["ppl"] for r in records if r["kind"] == "valid"]
    assert len(valid) == 3 and valid[-1] < valid[0]
    vocab = len(corpora[3])
    assert result.test_ppl < vocab / 2  # far better than uniform
    assert json.loads((run / "config.json").read_text())["hidden_size"] == 16


def test_same_seed_bit_identical(tmp_path, corpora):
    a = train(_config(tmp_path, run_dir=str(tmp_path / "a")), corpora)
    b = train(_config(tmp_path, run_dir=str(tmp_path / "b")), corpora)
    la = (a.run_dir / "metrics.jsonl").read_text()
    lb = (b.run_dir / "metrics.jsonl").read_text()

    def strip(text):
        timing = ("ms_per_batch", "elapsed")
        return [
            {k: v for k, v in json.loads(line).items() if k not in timing}
            for line in text.splitlines()
        ]

    assert strip(la) == strip(lb)


@pytest.mark.parametrize("stop_after", [7, 25, 31])
def test_resume_continues_exactly(tmp_path, corpora, stop_after):
    """Interrupted at iteration k (mid-epoch, at an epoch end, in epoch 2), then resumed."""
    full = train(_config(tmp_path, run_dir=str(tmp_path / "full")), corpora)
    cfg = _config(tmp_path, run_dir=str(tmp_path / "cut"))
    first = train(cfg, corpora, stop_after=stop_after)
    assert first.interrupted is not None
    second = train(cfg, corpora, resume=True)
    assert second.interrupted is None
    a = load_checkpoint(full.run_dir / "last.npz").params
    b = load_checkpoint(second.run_dir / "last.npz").params
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert full.test_ppl == second.test_ppl
    assert full.best_val_ppl == second.best_val_ppl


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path, corpora, monkeypatch):
    from npgated.training import loop

    cfg = _config(tmp_path, epochs=3)
    calls = {"n": 0}
    real_update = loop.make_optimizer

    def poisoned(name, lr):
        opt = real_update(name, lr)
        update = opt.update

        def update_then_poison(params, grads):
            update(params, grads)
            calls["n"] += 1
            if calls["n"] == 30:  # in epoch 2: a parameter becomes NaN mid-training
                params[1][0, 0] = np.nan

        opt.update = update_then_poison
        return opt

    monkeypatch.setattr(loop, "make_optimizer", poisoned)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, iteration 6 .*last finite loss"):
        train(cfg, corpora)
    ckpt = load_checkpoint(tmp_path / "run" / "last.npz")
    assert ckpt.meta["progress"]["epoch"] == 2  # written after epoch 1, never overwritten
    assert all(np.isfinite(a).all() for a in ckpt.params.values())


def test_plain_rnnlm_and_other_optimizers(tmp_path, corpora):
    for opt in ("adam", "momentum"):
        cfg = _config(
            tmp_path,
            model="Rnnlm",
            num_layers=1,
            dropout=0.0,
            tie_weights=False,
            optimizer=opt,
            lr=0.01 if opt == "adam" else 0.5,
            epochs=1,
            run_dir=str(tmp_path / opt),
            schedule="constant",
        )
        result = train(cfg, corpora)
        assert math.isfinite(result.test_ppl)


def test_fake_cupy_backend_trains(tmp_path, corpora):
    try:
        result = train(_config(tmp_path, backend="fake-cupy", epochs=1, max_iters=5), corpora)
    finally:
        backend.use("numpy")
    assert math.isfinite(result.test_ppl)


# -- NT-ASGD ---------------------------------------------------------------------------
def _asgd_config(tmp_path, **kw):
    return _config(
        tmp_path,
        **{
            **dict(
                model="Rnnlm",
                num_layers=1,
                dropout=0.0,
                tie_weights=False,
                optimizer="asgd",
                schedule="constant",
                epochs=3,
                max_iters=8,
                lr=2.0,
                asgd_nonmono=1,
            ),
            **kw,
        },
    )


def test_asgd_trigger_and_averaged_evaluation(tmp_path, corpora, monkeypatch):
    """Validation worse than the best before the last epoch switches averaging on; then
    validation, best.npz and the test run see the averaged weights, training the last iterate."""
    from npgated.training import loop

    ppls = iter([50.0, 40.0, 55.0, 30.0])  # epoch 3: 55 > 50, the best before the last 1
    seen = []

    def fake_eval(model, corpus, N, T):
        seen.append([backend.to_cpu(p).copy() for p in model.params])
        return next(ppls) if len(seen) <= 4 else 123.0

    monkeypatch.setattr(loop, "eval_perplexity", fake_eval)
    cfg = _asgd_config(tmp_path, epochs=4)
    result = train(cfg, corpora)
    records = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in records if r["kind"] == "asgd"] == [3]
    valid = [r for r in records if r["kind"] == "valid"]
    assert [r["averaged"] for r in valid] == [False, False, False, True]
    last = load_checkpoint(result.run_dir / "last.npz")
    best = load_checkpoint(result.run_dir / "best.npz")
    state = last.meta["optimizer"]
    assert state["averaging"] is True and state["k"] == 8  # epoch 4's iterates
    assert best.meta.get("averaged") is True and "optimizer" not in best.meta
    names = list(last.params)
    for name, evaluated in zip(names, seen[3]):  # epoch 4 validated the average ...
        np.testing.assert_array_equal(evaluated, last.optim_slots[name]["ax"], err_msg=name)
        np.testing.assert_array_equal(best.params[name], evaluated, err_msg=name)
    for name, tested in zip(names, seen[4]):  # ... and so did the test run (best.npz)
        np.testing.assert_array_equal(tested, best.params[name], err_msg=name)
    assert result.test_ppl == 123.0


def test_asgd_from_the_start_equals_a_direct_mean(tmp_path, corpora, monkeypatch):
    """asgd_nonmono = 0: the evaluated weights are the mean of every iterate of the run."""
    from npgated.training import loop

    iterates, seen = [], []
    real = loop.make_optimizer

    def recording(name, lr):
        opt = real(name, lr)
        update = opt.update

        def update_and_record(params, grads):
            update(params, grads)
            iterates.append([backend.to_cpu(p).astype(np.float64) for p in params])

        opt.update = update_and_record
        return opt

    def fake_eval(model, corpus, N, T):
        seen.append([backend.to_cpu(p).copy() for p in model.params])
        return 10.0

    monkeypatch.setattr(loop, "make_optimizer", recording)
    monkeypatch.setattr(loop, "eval_perplexity", fake_eval)
    train(_asgd_config(tmp_path, epochs=1, max_iters=6, asgd_nonmono=0, dtype="float64"), corpora)
    assert len(iterates) == 6
    for k, evaluated in enumerate(seen[0]):
        direct = np.mean([it[k] for it in iterates], axis=0)
        np.testing.assert_allclose(evaluated, direct, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("nonmono, stop_after", [(0, 5), (0, 20), (1, 5), (1, 12)])
def test_asgd_resume_continues_exactly(tmp_path, corpora, monkeypatch, nonmono, stop_after):
    """Interrupted before and after the switch to averaging, then resumed: bit for bit.

    ``nonmono=1`` with the trigger forced at the end of epoch 1 (this tiny corpus keeps
    improving): cut in epoch 1 (before the switch) or in epoch 2 (averaging)."""
    from npgated.training import loop

    monkeypatch.setattr(loop, "nonmono_trigger", lambda history, val, n: True)
    cfg = dict(epochs=3, asgd_nonmono=nonmono)
    full = train(_asgd_config(tmp_path, run_dir=str(tmp_path / "full"), **cfg), corpora)
    last = load_checkpoint(full.run_dir / "last.npz")
    assert last.meta["optimizer"]["averaging"] is True
    assert last.meta["optimizer"]["k"] == (24 if nonmono == 0 else 16)
    cut_cfg = _asgd_config(tmp_path, run_dir=str(tmp_path / "cut"), **cfg)
    assert train(cut_cfg, corpora, stop_after=stop_after).interrupted is not None
    second = train(cut_cfg, corpora, resume=True)
    again = load_checkpoint(second.run_dir / "last.npz")
    assert again.meta["optimizer"] == last.meta["optimizer"]
    for name in last.params:
        np.testing.assert_array_equal(last.params[name], again.params[name], err_msg=name)
        np.testing.assert_array_equal(
            last.optim_slots[name]["ax"], again.optim_slots[name]["ax"], err_msg=name
        )
    assert full.test_ppl == second.test_ppl and full.best_val_ppl == second.best_val_ppl


def test_resume_from_a_checkpoint_without_the_new_generators(tmp_path, corpora):
    """last.npz written before recurrent and embedding layers had generators still resumes
    (they draw nothing without their options); a dropout layer's state stays required."""
    full = train(_config(tmp_path, run_dir=str(tmp_path / "full")), corpora)
    cfg = _config(tmp_path, run_dir=str(tmp_path / "cut"))
    train(cfg, corpora, stop_after=7)
    path = tmp_path / "cut" / "last.npz"

    def rewrite(drop):
        with np.load(path, allow_pickle=False) as data:
            files = {k: data[k] for k in data.files}
        meta = json.loads(files["__meta__"].tobytes().decode())
        for name in drop:
            del meta["rng_states"][name]
        files["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        np.savez(path, **files)

    rewrite(["embed", "lstm1", "lstm2"])
    second = train(cfg, corpora, resume=True)
    a = load_checkpoint(full.run_dir / "last.npz").params
    b = load_checkpoint(second.run_dir / "last.npz").params
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    rewrite(["drop1"])  # the finished run's last.npz without a dropout layer's state
    with pytest.raises(ValueError, match="drop1"):
        train(cfg, corpora, resume=True)
