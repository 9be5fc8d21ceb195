"""The time budget (``time_budget``): training stops in time for validation and the test run.

The clock is simulated: every training forward costs 1 s and every evaluation window
0.1 s, so the assertions are about the stopping rule, not about this machine's speed.
"""

import json
import math

import pytest

from npgated.data import ptb
from npgated.training import loop
from npgated.training.config import TrainConfig, preset
from npgated.training.loop import Progress, RunClock, train

TRAIN_COST, EVAL_COST = 1.0, 0.1


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def corpora(synthetic_ptb):
    train_c, w2i, _ = ptb.load_data("train", synthetic_ptb)
    valid, _, _ = ptb.load_data("valid", synthetic_ptb)
    test, _, _ = ptb.load_data("test", synthetic_ptb)
    return train_c, valid, test, w2i


@pytest.fixture
def clock(monkeypatch):
    """A simulated clock advanced by the model's forward passes."""
    fake = FakeClock()
    real_build = loop.build_model

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        forward = model.forward

        def timed_forward(xs, ts):
            fake.now += TRAIN_COST if model.training else EVAL_COST
            return forward(xs, ts)

        model.forward = timed_forward
        return model

    monkeypatch.setattr(loop, "build_model", build)
    return fake


def _config(tmp_path, **kw):
    base = dict(
        model="Rnnlm",
        wordvec_size=8,
        hidden_size=8,
        batch_size=4,
        time_size=5,
        lr=1.0,
        max_grad_norm=1.0,
        epochs=50,
        log_interval=20,
        progress=False,
        run_dir=str(tmp_path / "run"),
        seed=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def _records(result):
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_training_stops_in_time_and_reports_test_ppl(tmp_path, corpora, clock):
    budget = 4.0  # minutes = 240 simulated seconds; an epoch is ~150 iterations = ~150 s
    start = clock.now
    result = train(_config(tmp_path, time_budget=budget), corpora, clock=clock)
    used = clock.now - start
    assert used <= 60 * budget  # everything, the test evaluation included, fits
    assert used >= 60 * budget - 15  # and the budget is not wasted
    assert result.progress.budget_stop and result.progress.epoch < 50
    assert math.isfinite(result.test_ppl)
    records = _records(result)
    valid = [r for r in records if r["kind"] == "valid"]
    assert len(valid) == 2 == result.progress.valid_passes  # epoch 1, and epoch 2 cut short
    assert all("elapsed" in r for r in records)
    elapsed = [r["elapsed"] for r in records]
    assert elapsed == sorted(elapsed) and elapsed[-1] <= 60 * budget
    (spent,) = [r for r in records if r["kind"] == "budget"]
    assert spent["stopped_on_budget"] and spent["left"] >= 0
    windows = loop.eval_window_count(corpora[1], 4, 5)
    assert spent["valid"] == pytest.approx(2 * EVAL_COST * windows)
    assert [r["kind"] for r in records][-2:] == ["test", "budget"]


def test_a_budget_smaller_than_an_epoch(tmp_path, corpora, clock):
    """Before any validation is measured the estimate is one training step per window."""
    start = clock.now
    result = train(_config(tmp_path, time_budget=1.0), corpora, clock=clock)
    assert clock.now - start <= 60.0
    assert result.progress.epoch == 2 and result.progress.valid_passes == 1
    assert 1 <= result.progress.total_iterations < 60
    assert math.isfinite(result.test_ppl)


def test_budget_linear_schedule_decays_with_the_clock(tmp_path, corpora, clock):
    cfg = _config(tmp_path, time_budget=3.0, schedule="budget-linear", lr=2.0, log_interval=5)
    result = train(cfg, corpora, clock=clock)
    lrs = [r["lr"] for r in _records(result) if r["kind"] == "train"]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] <= 2.0
    assert lrs[0] > 1.8 and lrs[-1] < 0.3  # from the initial rate towards the floor
    assert result.progress.budget_stop


def test_resumed_run_counts_the_time_already_spent(tmp_path, corpora, clock):
    cfg = _config(tmp_path, time_budget=4.0)
    first = train(cfg, corpora, stop_after=100, clock=clock)
    assert first.interrupted is not None
    spent = first.progress.elapsed
    assert spent >= 100 * TRAIN_COST
    clock.now += 1e6  # a long pause between the sessions does not count
    start = clock.now
    second = train(cfg, corpora, resume=True, clock=clock)
    assert second.progress.budget_stop
    assert spent + (clock.now - start) <= 240.0
    assert second.progress.elapsed == pytest.approx(spent + clock.now - start)
    # resuming a run that stopped on its budget, with a larger budget, trains on
    done = second.progress.total_iterations
    third = train(cfg.replace(time_budget=6.0), corpora, resume=True, clock=clock)
    assert third.progress.budget_stop and third.progress.total_iterations > done
    assert third.progress.elapsed <= 360.0


def test_run_clock_rule():
    fake = FakeClock()
    rc = RunClock(1.0, fake)  # 60 s
    rc.val_windows, rc.test_windows = 10, 20
    assert not rc.must_stop()  # nothing measured: at least one step
    rc.record_step(2.0)
    assert rc.estimates() == (20.0, 40.0)  # a training step per window until measured
    assert rc.must_stop()  # 0 + 2 + 20 + 40 + 4 > 60
    rc.record_valid(5.0)
    assert rc.estimates() == (5.0, 10.0)
    assert rc.reserve() == pytest.approx(5.0 + 10.0 + 4.0)
    fake.now += 38.0
    assert not rc.must_stop()  # 38 + 2 + 19 = 59
    fake.now += 1.5
    assert rc.must_stop()
    assert RunClock(None, fake).must_stop() is False
    resumed = RunClock(1.0, fake)
    resumed.resume(Progress(elapsed=30.0, valid_seconds=8.0, valid_passes=2))
    assert resumed.elapsed() == pytest.approx(30.0) and resumed.valid_seconds == 4.0


def test_run_clock_estimates_evaluation_from_the_forward_pass():
    """Before any validation pass, an evaluation window costs a training forward pass (the
    char-lstm showcase's 80 windows would otherwise be 80 whole steps: the budget was gone
    before training began)."""
    rc = RunClock(1.0, FakeClock())
    rc.val_windows, rc.test_windows = 10, 20
    rc.record_step(3.0, forward=1.0)
    rc.record_step(3.0, forward=0.5)
    assert rc.step_seconds == 3.0 and rc.estimates() == (7.5, 15.0)  # 0.75 s a window
    rc.record_valid(2.0)
    assert rc.estimates() == (2.0, 4.0)  # a measured pass replaces the estimate


def test_cpu_hour_preset_has_a_budget():
    assert preset("cpu-hour").time_budget == 60.0


def test_cpu_hour_preset_dry_run_end_to_end(tmp_path, synthetic_ptb, capsys):
    from npgated import cli
    from npgated.training.checkpoint import load_checkpoint

    run = tmp_path / "run"
    small = [
        "--wordvec-size",
        "16",
        "--hidden-size",
        "16",
        "--batch-size",
        "4",
        "--time-size",
        "5",
    ]  # the preset's recipe at test size (2 cores shared)
    code = cli.main(
        [
            "train",
            "--preset",
            "cpu-hour",
            "--dry-run",
            "--no-progress",
            *small,
            "--data-dir",
            str(synthetic_ptb),
            "--run-dir",
            str(run),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "test perplexity" in out and "time budget 3600 s" in out
    config = load_checkpoint(run / "last.npz").meta["config"]
    assert (
        config["recurrent_dropout"],
        config["weight_drop"],
        config["embedding_dropout"],
        config["ar"],
        config["tar"],
    ) == (0.15, 0.0, 0.05, 1.0, 1.0)
    assert json.loads((run / "config.json").read_text())["time_budget"] == 60.0


def test_cli_flags_round_trip_into_the_config():
    from npgated import cli

    args = cli.build_parser().parse_args(
        [
            "train",
            "--model",
            "BetterRnnlm",
            "--recurrent-dropout",
            "0.3",
            "--weight-drop",
            "0.4",
            "--embedding-dropout",
            "0.1",
            "--ar",
            "2",
            "--tar",
            "1",
            "--optimizer",
            "asgd",
            "--asgd-nonmono",
            "3",
            "--time-budget",
            "1.5",
            "--schedule",
            "budget-linear",
        ]
    )
    config = cli._config_from_args(args)
    assert (
        config.recurrent_dropout,
        config.weight_drop,
        config.embedding_dropout,
        config.ar,
        config.tar,
        config.optimizer,
        config.asgd_nonmono,
        config.time_budget,
        config.schedule,
    ) == (0.3, 0.4, 0.1, 2.0, 1.0, "asgd", 3, 1.5, "budget-linear")
    assert TrainConfig.from_dict(config.to_dict()) == config
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "--time-budget" in help_text and "--recurrent-dropout" in help_text
