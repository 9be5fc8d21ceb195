"""Learning-rate schedules: the book's plateau rule and Zaremba et al.'s step decay."""

from __future__ import annotations

import json

import pytest

from npgated.training.schedule import (
    SCHEDULES,
    ConstantLR,
    DivideOnPlateau,
    StepDecay,
    make_schedule,
)


def run_epochs(schedule, lr, ppls):
    """The learning rate used during each epoch, as the training loop would apply it."""
    used = []
    for epoch, ppl in enumerate(ppls, start=1):
        used.append(lr)
        lr = schedule.step(epoch, lr, ppl)
    return used, lr


def test_constant():
    used, last = run_epochs(ConstantLR(), 0.5, [100.0, 120.0, 130.0])
    assert used == [0.5, 0.5, 0.5] and last == 0.5
    assert ConstantLR().step(1, 0.5) == 0.5  # no perplexity needed


def test_divide_on_plateau_like_the_book():
    schedule = DivideOnPlateau()
    ppls = [300.0, 200.0, 210.0, 205.0, 150.0, 150.0, 149.0]
    used, last = run_epochs(schedule, 20.0, ppls)
    # 210 and 205 do not beat 200: lr / 4 twice; 150 beats it; an equal 150 does not
    assert used == [20.0, 20.0, 20.0, 5.0, 1.25, 1.25, 1.25 / 4]
    assert last == 1.25 / 4
    assert schedule.best_ppl == 149.0


def test_divide_on_plateau_nan_and_missing_ppl():
    schedule = DivideOnPlateau(factor=2.0)
    assert schedule.step(1, 1.0, 100.0) == 1.0
    assert schedule.step(2, 1.0, float("nan")) == 0.5
    assert schedule.best_ppl == 100.0
    with pytest.raises(ValueError, match="val_ppl"):
        schedule.step(3, 1.0, None)


def test_divide_on_plateau_state_round_trip():
    a = DivideOnPlateau(factor=3.0)
    run_epochs(a, 1.0, [50.0, 40.0])
    state = json.loads(json.dumps(a.state_dict()))  # JSON-able, as in checkpoint metadata
    assert state == {"name": "plateau", "factor": 3.0, "best_ppl": 40.0}
    b = DivideOnPlateau()
    b.load_state_dict(state)
    assert b.factor == 3.0 and b.best_ppl == 40.0
    assert b.step(3, 1.0, 45.0) == a.step(3, 1.0, 45.0) == pytest.approx(1 / 3)


def test_step_decay_zaremba_small():
    schedule = StepDecay()  # start_epoch=4, factor=2
    used, _ = run_epochs(schedule, 1.0, [None] * 13)
    assert used[:4] == [1.0, 1.0, 1.0, 1.0]  # epochs 1-4 at the initial rate
    assert used[4:] == [0.5**k for k in range(1, 10)]  # epoch 5 at 0.5, ..., epoch 13 at 2**-9
    # closed form, and TensorFlow's lr_decay ** max(i + 1 - max_epoch, 0) with 0-based i
    for epoch, lr in enumerate(used, start=1):
        assert schedule.lr_at(epoch, 1.0) == lr
        assert lr == 0.5 ** max(epoch - 1 + 1 - 4, 0)


def test_step_decay_other_settings_and_state():
    schedule = make_schedule("step", start_epoch=1, factor=1.15)
    used, _ = run_epochs(schedule, 1.0, [None] * 3)
    assert used == pytest.approx([1.0, 1 / 1.15, 1 / 1.15**2])
    restored = StepDecay()
    restored.load_state_dict(schedule.state_dict())
    assert (restored.start_epoch, restored.factor) == (1, 1.15)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: DivideOnPlateau(factor=1.0), "factor must be"),
        (lambda: StepDecay(factor=0.5), "factor must be"),
        (lambda: StepDecay(start_epoch=0), "start_epoch"),
        (lambda: ConstantLR().step(0, 1.0), "1-based"),
        (lambda: ConstantLR().step(1, 0.0), "lr must be"),
        (lambda: StepDecay().load_state_dict({"name": "plateau"}), "'plateau'.*StepDecay"),
        (lambda: make_schedule("cosine"), "unknown schedule 'cosine'.*constant, plateau, step"),
    ],
)
def test_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_registry():
    assert set(SCHEDULES) == {"constant", "plateau", "step", "budget-linear"}
    assert isinstance(make_schedule("Plateau", factor=4.0), DivideOnPlateau)
    assert isinstance(make_schedule("constant"), ConstantLR)
    with pytest.raises(TypeError, match="takes: start_epoch, factor"):
        make_schedule("step", decay=0.5)
    assert "factor=4.0" in repr(DivideOnPlateau())


def test_budget_linear_decays_with_the_used_fraction():
    sched = make_schedule("budget-linear", final_ratio=0.05)
    assert sched.by_time
    assert sched.lr_at(0.0, 20.0) == 20.0
    assert sched.lr_at(0.25, 20.0) == pytest.approx(15.0)
    assert sched.lr_at(0.99, 20.0) == pytest.approx(1.0)  # floor: 0.05 * 20
    assert sched.lr_at(1.7, 20.0) == pytest.approx(1.0)  # past the budget: clipped
    assert sched.lr_at(-0.1, 20.0) == 20.0
    assert sched.step(3, 7.0, 100.0) == 7.0  # nothing per epoch
    other = make_schedule("budget-linear")
    other.load_state_dict(sched.state_dict())
    assert other.final_ratio == 0.05
    with pytest.raises(ValueError, match=r"final_ratio must be in \(0, 1\)"):
        make_schedule("budget-linear", final_ratio=0.0)
