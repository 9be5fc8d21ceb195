"""Optimizers against plain-NumPy references of their equations, on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

from npgated import backend
from npgated.optim import (
    OPTIMIZERS,
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    Nesterov,
    RMSprop,
    make_optimizer,
)

SHAPES = [(3, 4), (5,), (2, 3, 2)]


# ---------------------------------------------------------------------------------------
# References: one step of each optimizer, straight from its equations, on host arrays
# ---------------------------------------------------------------------------------------
def ref_sgd(p, g, s, t, lr):
    return p - lr * g


def ref_momentum(p, g, s, t, lr, momentum):
    s["v"] = momentum * s.get("v", 0.0) - lr * g
    return p + s["v"]


def ref_nesterov(p, g, s, t, lr, momentum):
    # Nesterov in the shifted variables (the gradient is taken at the stored p)
    s["v"] = momentum * s.get("v", 0.0) - lr * g
    return p + momentum * s["v"] - lr * g


def ref_adagrad(p, g, s, t, lr, eps):
    s["h"] = s.get("h", 0.0) + g**2
    return p - lr * g / (np.sqrt(s["h"]) + eps)


def ref_rmsprop(p, g, s, t, lr, decay_rate, eps):
    s["h"] = decay_rate * s.get("h", 0.0) + (1 - decay_rate) * g**2
    return p - lr * g / (np.sqrt(s["h"]) + eps)


def ref_adam(p, g, s, t, lr, beta1, beta2, eps, eps_hat=False):
    if eps_hat:  # the paper's efficient form: eps added before the second correction
        eps = eps / np.sqrt(1 - beta2**t)
    s["m"] = beta1 * s.get("m", 0.0) + (1 - beta1) * g
    s["v"] = beta2 * s.get("v", 0.0) + (1 - beta2) * g**2
    m_hat = s["m"] / (1 - beta1**t)
    v_hat = s["v"] / (1 - beta2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)


CASES = {
    "sgd": (ref_sgd, {"lr": 0.1}),
    "momentum": (ref_momentum, {"lr": 0.1, "momentum": 0.8}),
    "nesterov": (ref_nesterov, {"lr": 0.1, "momentum": 0.7}),
    "adagrad": (ref_adagrad, {"lr": 0.2, "eps": 1e-7}),
    "rmsprop": (ref_rmsprop, {"lr": 0.05, "decay_rate": 0.9, "eps": 1e-7}),
    "adam": (ref_adam, {"lr": 0.01, "beta1": 0.8, "beta2": 0.95, "eps": 1e-8, "eps_hat": False}),
}


def random_params_and_grads(rng, n_steps, dtype=np.float64):
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(n_steps)]
    return params, grads


def to_host(arrays):
    return [backend.to_cpu(a) for a in arrays]


def run(opt, params, grad_steps, dev):
    """Step ``opt`` through host grads on the backend under test; returns device params."""
    ps = [dev(p.copy()) for p in params]  # dev() does not copy on numpy
    gs = [dev(np.zeros_like(p)) for p in params]
    for step in grad_steps:
        for g, host in zip(gs, step):
            g[...] = dev(host)  # the model fills its gradient buffers in place
        opt.update(ps, gs)
    return ps


# ---------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_matches_reference(name, xp_name, dev, rng):
    ref, hyper = CASES[name]
    params, grad_steps = random_params_and_grads(rng, n_steps=5)
    opt = make_optimizer(name, **hyper)
    ps = [dev(p.copy()) for p in params]
    refs = [p.copy() for p in params]
    states = [{} for _ in params]
    lr = hyper["lr"]
    for t, step in enumerate(grad_steps, start=1):
        if t == 4:  # a schedule changes lr between steps
            lr = opt.lr = hyper["lr"] / 2
        opt.update(ps, [dev(g) for g in step])
        kwargs = dict(hyper, lr=lr)
        refs = [ref(r, g, s, t, **kwargs) for r, g, s in zip(refs, step, states)]
    assert opt.t == 5
    for k, (p, r) in enumerate(zip(ps, refs)):
        assert backend.get_array_module(p) is backend.xp(), "param moved off its device"
        np.testing.assert_allclose(
            backend.to_cpu(p), r, rtol=1e-12, atol=1e-12, err_msg=f"{name} param {k}"
        )


@pytest.mark.parametrize("name", list(CASES))
def test_in_place_no_reallocation(name, xp_name, dev, rng):
    _, hyper = CASES[name]
    params, grad_steps = random_params_and_grads(rng, n_steps=3)
    ps = [dev(p.copy()) for p in params]
    ids = [id(p) for p in ps]
    opt = make_optimizer(name, **hyper)
    opt.update(ps, [dev(g) for g in grad_steps[0]])
    slot_ids = {s: [id(a) for a in arrays] for s, arrays in opt.slots.items()}
    for step in grad_steps[1:]:
        opt.update(ps, [dev(g) for g in step])
    assert [id(p) for p in ps] == ids
    assert {s: [id(a) for a in arrays] for s, arrays in opt.slots.items()} == slot_ids
    assert set(opt.slots) == set(OPTIMIZERS[name].slot_names)
    for arrays in opt.slots.values():
        assert len(arrays) == len(ps)
        assert all(backend.get_array_module(a) is backend.xp() for a in arrays)


@pytest.mark.parametrize("name", list(CASES))
def test_float32_stays_float32(name, xp_name, dev, rng):
    _, hyper = CASES[name]
    params, grad_steps = random_params_and_grads(rng, n_steps=3, dtype=np.float32)
    opt = make_optimizer(name, **hyper)
    ps = run(opt, params, grad_steps, dev)
    assert all(p.dtype == np.float32 for p in ps)
    assert all(a.dtype == np.float32 for arrays in opt.slots.values() for a in arrays)
    # and float32 follows float64 closely
    ref = run(
        make_optimizer(name, **hyper),
        [p.astype(np.float64) for p in params],
        [[g.astype(np.float64) for g in s] for s in grad_steps],
        dev,
    )
    for p, r in zip(ps, ref):
        np.testing.assert_allclose(backend.to_cpu(p), backend.to_cpu(r), rtol=1e-4, atol=1e-5)


def test_adam_minimises_a_quadratic(rng):
    a = rng.uniform(0.5, 5.0, size=(4, 3))
    c = rng.standard_normal((4, 3))
    p = np.zeros((4, 3))
    g = np.empty_like(p)
    opt = Adam(lr=0.05)
    loss0 = 0.5 * np.sum(a * (p - c) ** 2)
    for _ in range(1000):
        g[...] = a * (p - c)  # gradient of 0.5 * sum(a * (p - c)**2)
        opt.update([p], [g])
    assert 0.5 * np.sum(a * (p - c) ** 2) < 1e-6 * loss0
    np.testing.assert_allclose(p, c, atol=1e-3)


@pytest.mark.parametrize("name", ["momentum", "nesterov"])
def test_momentum_speeds_up_sgd_on_a_valley(name):
    # an ill-conditioned quadratic: momentum methods get further than SGD in 50 steps
    a = np.array([1.0, 0.01])

    def final_loss(opt):
        p = np.array([1.0, 1.0])
        for _ in range(50):
            opt.update([p], [a * p])
        return 0.5 * np.sum(a * p**2)

    assert final_loss(make_optimizer(name, lr=0.5)) < final_loss(SGD(lr=0.5))


# ---------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("with_params", [True, False])
def test_state_dict_round_trip(name, with_params, xp_name, dev, rng):
    _, hyper = CASES[name]
    params, grad_steps = random_params_and_grads(rng, n_steps=6)
    a = make_optimizer(name, **hyper)
    ps_a = run(a, params, grad_steps[:3], dev)
    a.lr = 0.5 * a.lr
    state = a.state_dict()
    assert state["name"] == name and state["t"] == 3
    assert state["hyper"] == dict(hyper, lr=hyper["lr"] / 2)
    # a checkpoint stores host arrays; a fresh process restores them
    saved = dict(state, slots={s: to_host(arrays) for s, arrays in state["slots"].items()})
    ps_b = [dev(p.copy()) for p in to_host(ps_a)]
    b = make_optimizer(name)  # default hyperparameters, replaced by the state's
    b.load_state_dict(saved, params=ps_b if with_params else None)
    assert b.hyper() == a.hyper() and b.t == 3
    assert b.state_dict()["hyper"] == state["hyper"]
    for step in grad_steps[3:]:
        a.update(ps_a, [dev(g) for g in step])
        b.update(ps_b, [dev(g) for g in step])
    for pa, pb in zip(ps_a, ps_b):
        assert backend.get_array_module(pb) is backend.xp()
        np.testing.assert_array_equal(backend.to_cpu(pa), backend.to_cpu(pb))
    for s in a.slots:
        for x, y in zip(a.slots[s], b.slots[s]):
            assert backend.get_array_module(y) is backend.xp()
            np.testing.assert_array_equal(backend.to_cpu(x), backend.to_cpu(y))


def test_state_dict_is_a_copy(rng):
    p, g = np.ones(3), np.ones(3)
    opt = Adam()
    opt.update([p], [g])
    state = opt.state_dict()
    opt.update([p], [g])
    assert state["t"] == 1
    np.testing.assert_allclose(state["slots"]["m"][0], 0.1)


def test_state_before_first_update():
    opt = Momentum(lr=0.1)
    state = opt.state_dict()
    assert state == {
        "name": "momentum",
        "hyper": {"lr": 0.1, "momentum": 0.9},
        "t": 0,
        "slots": {"v": []},
    }
    other = Momentum()
    other.load_state_dict(state, params=[np.zeros(2)])
    # a checkpoint written then stores no slot arrays at all, hence no slot names
    Momentum().load_state_dict(dict(state, slots={}))
    with pytest.raises(ValueError, match="slots"):
        Momentum().load_state_dict(dict(state, t=1, slots={}))
    p = np.zeros(2)
    other.update([p], [np.ones(2)])
    np.testing.assert_allclose(p, -0.1)


def test_load_state_dict_errors(rng):
    p = [np.zeros((2, 3)), np.zeros(4)]
    g = [np.ones((2, 3)), np.ones(4)]
    opt = Adam()
    opt.update(p, g)
    state = opt.state_dict()
    with pytest.raises(ValueError, match="'adam'.*Momentum"):
        Momentum().load_state_dict(state)
    with pytest.raises(ValueError, match="hyperparameters"):
        Adam().load_state_dict(dict(state, hyper={"lr": 0.1}))
    with pytest.raises(ValueError, match="slots"):
        Adam().load_state_dict(dict(state, slots={"m": state["slots"]["m"]}))
    with pytest.raises(ValueError, match="beta1 must be in"):
        Adam().load_state_dict(dict(state, hyper=dict(state["hyper"], beta1=1.5)))
    with pytest.raises(ValueError, match="2 arrays for slot 'm', but there are 3"):
        Adam().load_state_dict(state, params=p + [np.zeros(1)])
    bad = dict(state, slots={"m": state["slots"]["m"], "v": state["slots"]["v"][::-1]})
    with pytest.raises(ValueError, match=r"shape \(4,\), but parameter 0 has shape \(2, 3\)"):
        Adam().load_state_dict(bad, params=p)
    later = Adam()
    later.load_state_dict(bad)  # checked lazily, at the first update
    with pytest.raises(ValueError, match="slot 'v'"):
        later.update(p, g)
    with pytest.raises(ValueError, match="slot 'v'"):
        opt.load_state_dict(bad)  # checked against the state it already has
    with pytest.raises(ValueError, match="different lengths"):
        Adam().load_state_dict(dict(state, slots={"m": state["slots"]["m"], "v": []}))


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (SGD, {"lr": 0.0}, "lr must be in"),
        (SGD, {"lr": -1.0}, "lr must be in"),
        (SGD, {"lr": math.nan}, "lr must be in"),
        (Momentum, {"momentum": 1.0}, "momentum must be in"),
        (Nesterov, {"momentum": -0.1}, "momentum must be in"),
        (AdaGrad, {"eps": 0.0}, "eps must be in"),
        (RMSprop, {"decay_rate": 1.0}, "decay_rate must be in"),
        (Adam, {"beta1": 1.0}, "beta1 must be in"),
        (Adam, {"beta2": -0.5}, "beta2 must be in"),
    ],
)
def test_hyperparameter_ranges(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_lr_is_mutable_and_checked():
    opt = SGD(lr=1.0)
    opt.lr = 0.25
    assert opt.lr == 0.25 and opt.hyper() == {"lr": 0.25}
    with pytest.raises(ValueError, match="lr"):
        opt.lr = 0.0
    with pytest.raises(TypeError, match="lr must be a number"):
        opt.lr = "fast"


def test_parameter_list_must_not_change():
    opt = Momentum()
    p = [np.zeros((2, 2)), np.zeros(3)]
    opt.update(p, [np.ones((2, 2)), np.ones(3)])
    with pytest.raises(ValueError, match="parameters changed"):
        opt.update(p[:1], [np.ones((2, 2))])
    with pytest.raises(ValueError, match="parameters changed"):
        opt.update([np.zeros((2, 2)), np.zeros(4)], [np.ones((2, 2)), np.ones(4)])
    with pytest.raises(ValueError, match="2 params but 1 grads"):
        opt.update(p, [np.ones((2, 2))])
    with pytest.raises(ValueError, match=r"grads\[1\] has shape \(4,\)"):
        opt.update(p, [np.ones((2, 2)), np.ones(4)])
    with pytest.raises(ValueError, match="dtype float32"):
        opt.update(p, [np.ones((2, 2)), np.ones(3, dtype=np.float32)])


def test_registry_and_factory():
    assert set(OPTIMIZERS) == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "asgd"}
    assert isinstance(make_optimizer("Adam"), Adam)
    adam = {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "eps_hat": False}
    assert make_optimizer("adam").hyper() == adam
    assert make_optimizer("sgd", 1.0).lr == 1.0
    assert make_optimizer("rmsprop", lr=0.1, decay_rate=0.9).decay_rate == 0.9
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'.*sgd, momentum"):
        make_optimizer("lbfgs")
    with pytest.raises(TypeError, match="no hyperparameter.*momentum.*takes: lr"):
        make_optimizer("sgd", momentum=0.9)
    assert "lr=0.01" in repr(SGD())


def test_adam_eps_hat_is_eps_scaled_by_the_second_correction():
    """Adam(eps_hat=True) (the paper's efficient form, the book's Adam) equals plain Adam with
    eps / sqrt(1 - beta2 ** t) at every step t."""
    from npgated.optim.adam import Adam

    rng = np.random.default_rng(0)
    p1 = rng.normal(size=(4, 5))
    p2 = p1.copy()
    hat = Adam(lr=0.01, eps=1e-3, eps_hat=True)
    plain = Adam(lr=0.01, eps=1e-3)
    for t in range(1, 6):
        g = rng.normal(size=p1.shape) * 10.0 ** -rng.integers(0, 4, size=p1.shape)
        plain.eps = 1e-3 / np.sqrt(1.0 - plain.beta2**t)
        hat.update([p1], [g.copy()])
        plain.update([p2], [g.copy()])
        np.testing.assert_allclose(p1, p2, rtol=1e-12, atol=1e-15)
    assert not np.allclose(p1, rng.normal(size=p1.shape))
    with pytest.raises(TypeError):
        from npgated.optim import make_optimizer

        make_optimizer("sgd", 0.1, eps_hat=True)
