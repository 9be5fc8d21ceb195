"""Averaged SGD: the running mean against a direct mean of the iterates, the NT-ASGD trigger,
exact swapping, state round trips."""

from __future__ import annotations

import numpy as np
import pytest

from npgated import backend
from npgated.optim import ASGD, SGD, make_optimizer
from npgated.optim.asgd import nonmono_trigger

SHAPES = [(3, 4), (5,)]


def _params_and_grads(rng, n_steps):
    params = [rng.standard_normal(s) for s in SHAPES]
    steps = [[rng.standard_normal(s) for s in SHAPES] for _ in range(n_steps)]
    return params, steps


@pytest.mark.parametrize("switch_after", [0, 3])
def test_average_equals_direct_mean_of_iterates(xp_name, dev, rng, switch_after):
    params, steps = _params_and_grads(rng, n_steps=9)
    ps = [dev(p.copy()) for p in params]
    sgd_ps = [dev(p.copy()) for p in params]
    opt, sgd = ASGD(lr=0.3), SGD(lr=0.3)
    iterates = []
    for i, step in enumerate(steps):
        if i == switch_after:
            opt.start_averaging()
        opt.update(ps, [dev(g) for g in step])
        sgd.update(sgd_ps, [dev(g) for g in step])
        if i >= switch_after:
            iterates.append([backend.to_cpu(p).copy() for p in ps])
    assert opt.k == len(iterates) == len(steps) - switch_after
    for k, (p, q) in enumerate(zip(ps, sgd_ps)):  # the steps themselves are plain SGD
        np.testing.assert_array_equal(backend.to_cpu(p), backend.to_cpu(q))
        direct = np.mean([it[k] for it in iterates], axis=0)
        np.testing.assert_allclose(
            backend.to_cpu(opt.slots["ax"][k]), direct, rtol=1e-12, atol=1e-13
        )
        assert backend.get_array_module(opt.slots["ax"][k]) is backend.xp()


def test_no_average_before_the_switch(rng):
    params, steps = _params_and_grads(rng, n_steps=2)
    opt = ASGD(lr=0.1)
    for step in steps:
        opt.update(params, step)
    assert not opt.averaging and opt.k == 0 and not opt.has_average
    before = [p.copy() for p in params]
    with opt.averaged(params) as swapped:  # nothing to swap in yet
        assert swapped is False
        for p, b in zip(params, before):
            np.testing.assert_array_equal(p, b)
    opt.start_averaging()
    assert opt.averaging and not opt.has_average


def test_swap_is_exact_and_restored_after_an_error(xp_name, dev, rng):
    params, steps = _params_and_grads(rng, n_steps=4)
    ps = [dev(p.copy()) for p in params]
    opt = make_optimizer("asgd", lr=0.5)
    opt.start_averaging()
    for step in steps:
        opt.update(ps, [dev(g) for g in step])
    raw = [backend.to_cpu(p).copy() for p in ps]
    avg = [backend.to_cpu(a).copy() for a in opt.slots["ax"]]
    ids = [id(p) for p in ps]
    with opt.averaged(ps) as swapped:
        assert swapped is True
        for p, a in zip(ps, avg):
            np.testing.assert_array_equal(backend.to_cpu(p), a)
    for p, r in zip(ps, raw):
        np.testing.assert_array_equal(backend.to_cpu(p), r)
    with pytest.raises(KeyError), opt.averaged(ps):
        raise KeyError("evaluation failed")
    assert [id(p) for p in ps] == ids
    for p, r, a, b in zip(ps, raw, opt.slots["ax"], avg):
        np.testing.assert_array_equal(backend.to_cpu(p), r)
        np.testing.assert_array_equal(backend.to_cpu(a), b)
    with pytest.raises(ValueError, match="same list"):
        opt.swap_average(ps[:1])


@pytest.mark.parametrize("with_params", [True, False])
def test_state_round_trip_continues_the_same_average(rng, with_params):
    params, steps = _params_and_grads(rng, n_steps=7)
    a = ASGD(lr=0.2)
    ps_a = [p.copy() for p in params]
    for i, step in enumerate(steps[:4]):
        if i == 2:
            a.start_averaging()
        a.update(ps_a, step)
    state = a.state_dict()
    assert state["averaging"] is True and state["k"] == 2 and state["t"] == 4
    saved = dict(state, slots={s: [x.copy() for x in v] for s, v in state["slots"].items()})
    ps_b = [p.copy() for p in ps_a]
    b = ASGD()
    b.load_state_dict(saved, params=ps_b if with_params else None)
    for step in steps[4:]:
        a.update(ps_a, step)
        b.update(ps_b, step)
    assert (b.k, b.t, b.averaging) == (a.k, a.t, a.averaging) == (5, 7, True)
    for x, y in zip(a.slots["ax"] + ps_a, b.slots["ax"] + ps_b):
        np.testing.assert_array_equal(x, y)


def test_state_errors_and_old_state():
    a = ASGD(lr=0.1)
    p = [np.zeros(2)]
    a.update(p, [np.ones(2)])
    state = a.state_dict()
    with pytest.raises(ValueError, match="0 unless averaging"):
        ASGD().load_state_dict(dict(state, k=3, averaging=False))
    with pytest.raises(ValueError, match="true or false"):
        ASGD().load_state_dict(dict(state, averaging="yes"))
    legacy = {k: v for k, v in state.items() if k not in ("averaging", "k")}
    b = ASGD()
    b.load_state_dict(legacy)
    assert not b.averaging and b.k == 0


@pytest.mark.parametrize(
    "history, val, n, expected",
    [
        ([], 100.0, 1, False),  # too few epochs
        ([100.0], 120.0, 1, False),  # only the last n epochs exist
        ([100.0, 90.0], 95.0, 1, False),  # better than the best before the last n
        ([100.0, 90.0], 101.0, 1, True),  # worse than epoch 1
        ([100.0, 90.0, 80.0], 99.0, 2, False),
        ([100.0, 90.0, 80.0], 100.5, 2, True),  # a recent improvement does not postpone it
        ([100.0, 90.0, 80.0], 100.0, 2, False),  # equal is not worse
    ],
)
def test_nonmono_trigger(history, val, n, expected):
    assert nonmono_trigger(history, val, n) is expected


def test_nonmono_trigger_needs_n_at_least_one():
    with pytest.raises(ValueError, match=">= 1"):
        nonmono_trigger([1.0, 2.0], 3.0, 0)
