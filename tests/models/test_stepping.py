"""The allocation-free sampling path: Stepper (npgated.models.stepping) and Sampler.

(a) the stepper's logits equal ``model.predict`` on the whole sequence, every step;
(b) the recurrent state is handed over as documented;
(c) after a warm-up, steps and draws allocate no NumPy data buffer;
(d) the sampler draws from ``next_token_distribution``'s distribution;
(e) same seed, same text.
"""

import ctypes
import platform
import tracemalloc
from contextlib import contextmanager

import numpy as np
import pytest

from npgated import backend
from npgated.layers.affine import TimeAffine
from npgated.models.generation import Sampler, generate, next_token_distribution
from npgated.models.rnnlm import BetterRnnlm, Rnnlm
from npgated.models.stepping import Stepper, unsupported_reason

V = 17

# every recurrent cell, one layer and two (tied, with the eval-mode identities around them)
MODELS = {
    "lstm": lambda dtype: Rnnlm(V, 5, 6, cell="lstm", seed=0, dtype=dtype, init=0.4),
    "gru-reset-after": lambda dtype: Rnnlm(V, 5, 6, cell="gru", seed=0, dtype=dtype, init=0.4),
    "gru-reset-before": lambda dtype: Rnnlm(
        V, 5, 6, cell="gru", reset_after=False, seed=0, dtype=dtype, init=0.4
    ),
    "rnn": lambda dtype: Rnnlm(V, 5, 6, cell="rnn", seed=0, dtype=dtype, init=0.4),
    "2-layer-tied-lstm": lambda dtype: BetterRnnlm(
        V,
        6,
        6,
        num_layers=2,
        dropout_ratio=0.5,
        seed=0,
        dtype=dtype,
        init=0.4,
        recurrent_dropout=0.2,
        weight_drop=0.2,
        embedding_dropout=0.1,
        ar=1.0,
        tar=1.0,
    ),
    "2-layer-tied-gru": lambda dtype: BetterRnnlm(
        V, 6, 6, num_layers=2, cell="gru", seed=0, dtype=dtype, init=0.4
    ),
    "2-layer-tied-rnn": lambda dtype: BetterRnnlm(
        V, 6, 6, num_layers=2, cell="rnn", seed=0, dtype=dtype, init=0.4
    ),
    "3-layer-untied-gru-reset-before": lambda dtype: BetterRnnlm(
        V,
        4,
        6,
        num_layers=3,
        cell="gru",
        reset_after=False,
        tie_weights=False,
        seed=0,
        dtype=dtype,
        init=0.4,
    ),
}


def _tokens(n=12, seed=3):
    return np.random.default_rng(seed).integers(0, V, n)


def _stepped(model, tokens):
    """The stepper's logits for every token, from a fresh state: (T, V) on the host."""
    model.eval()
    model.reset_state()
    stepper = Stepper(model)
    stepper.load_state()
    return np.stack([backend.to_cpu(stepper.step(int(t))).copy() for t in tokens])


def _predicted(model, tokens):
    model.eval()
    model.reset_state()
    return backend.to_cpu(model.predict(backend.to_device(tokens[None]))[0])


# ---------------------------------------------------------------------------------------
# (a) the same logits as predict
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_stepper_logits_equal_predict_float64(name, xp_name):
    model = MODELS[name](np.float64)
    tokens = _tokens()
    got, want = _stepped(model, tokens), _predicted(model, tokens)
    err = np.abs(got - want).max()
    assert err <= 1e-12, f"{name}: stepper vs predict differ by {err:.1e}"


@pytest.mark.parametrize("name", ["lstm", "gru-reset-before", "2-layer-tied-gru"])
def test_stepper_float32_stays_float32_and_close(name):
    model = MODELS[name](np.float32)
    tokens = _tokens()
    got = _stepped(model, tokens)
    assert Stepper(model).logits.dtype == np.float32
    np.testing.assert_allclose(got, _predicted(model, tokens), rtol=1e-5, atol=1e-5)


def test_in_place_parameter_change_reaches_the_stepper():
    model = MODELS["2-layer-tied-lstm"](np.float64)
    model.eval()
    stepper = Stepper(model)
    for p in model.params:
        p *= 1.5  # in place: the stepper reads these very arrays
    stepper.load_state()
    got = np.stack([stepper.step(int(t)).copy() for t in _tokens()])
    np.testing.assert_allclose(got, _predicted(model, _tokens()), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------
# (b) the state
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["2-layer-tied-lstm", "gru-reset-after", "rnn"])
def test_state_handed_over_from_the_prompt_and_back(name):
    model = MODELS[name](np.float64)
    model.eval()
    tokens = _tokens(15)
    want = _predicted(model, tokens)
    # the prompt by predict, then the stepper from the layers' state ...
    model.reset_state()
    model.predict(tokens[None, :5])
    before = {k: v.copy() for k, v in model.recurrent_state().items()}
    stepper = Stepper(model)
    stepper.load_state()
    got = [stepper.step(int(t)).copy() for t in tokens[5:10]]
    # ... the layers keep the prompt's state until store_state ...
    for k, v in model.recurrent_state().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    # ... after which predict continues where the stepper stopped
    stepper.store_state()
    rest = model.predict(tokens[None, 10:])[0]
    err = np.abs(np.concatenate([np.stack(got), rest]) - want[5:]).max()
    assert err <= 1e-12, f"{name}: {err:.1e}"


def test_generate_leaves_the_state_reset_and_the_mode_restored():
    model = MODELS["2-layer-tied-lstm"](np.float32)
    model.train()
    generate(model, [1, 2], 10, seed=0)
    assert model.training
    assert model.recurrent_state() == {}  # every layer's h and c are None


def test_load_state_refuses_a_batch_state():
    model = MODELS["lstm"](np.float64)
    model.eval()
    model.predict(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="advances one sequence"):
        Stepper(model).load_state()


def test_stepper_refuses_training_mode_bad_tokens_and_unknown_layers():
    model = MODELS["lstm"](np.float64)
    with pytest.raises(RuntimeError, match="model.eval"):
        Stepper(model)
    model.eval()
    with pytest.raises(ValueError, match=r"token id 17 is out of range; valid ids are \[0, 17\)"):
        Stepper(model).step(V)
    model.layers["affine"].__class__ = type("MyAffine", (TimeAffine,), {})
    assert "not a TimeAffine" in unsupported_reason(model)
    with pytest.raises(TypeError, match="use model.predict"):
        Stepper(model)


# ---------------------------------------------------------------------------------------
# (c) no NumPy buffer per step
# ---------------------------------------------------------------------------------------
class _Counter:
    """Counts every NumPy data allocation, freed or not: a PyDataMem handler (NEP 49).

    ``tracemalloc`` only shows blocks still alive at a snapshot, so it cannot see a
    temporary that a step allocates and frees. NumPy (>= 1.22) lets a process install its
    own allocator for new arrays (``PyDataMem_SetHandler``, C-API slot 304, ABI-stable);
    this one forwards to ``PyMem_Raw*`` and counts the calls. Arrays keep the handler that
    allocated them, so the callbacks live as long as the process.
    """

    MALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    CALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t)
    REALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    FREE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    _installed = None

    def __init__(self):
        api = ctypes.pythonapi
        for name, res, args in (
            ("PyMem_RawMalloc", ctypes.c_void_p, [ctypes.c_size_t]),
            ("PyMem_RawCalloc", ctypes.c_void_p, [ctypes.c_size_t, ctypes.c_size_t]),
            ("PyMem_RawRealloc", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t]),
            ("PyMem_RawFree", None, [ctypes.c_void_p]),
            ("PyCapsule_GetName", ctypes.c_char_p, [ctypes.py_object]),
            ("PyCapsule_GetPointer", ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]),
            (
                "PyCapsule_New",
                ctypes.py_object,
                [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p],
            ),
        ):
            getattr(api, name).restype, getattr(api, name).argtypes = res, args
        self.sizes = []

        def malloc(ctx, size):
            self.sizes.append(size)
            return api.PyMem_RawMalloc(size)

        def calloc(ctx, nelem, elsize):
            self.sizes.append(nelem * elsize)
            return api.PyMem_RawCalloc(nelem, elsize)

        def realloc(ctx, ptr, size):
            self.sizes.append(size)
            return api.PyMem_RawRealloc(ptr, size)

        def free(ctx, ptr, size):
            api.PyMem_RawFree(ptr)

        class Allocator(ctypes.Structure):
            _fields_ = [
                ("ctx", ctypes.c_void_p),
                ("malloc", self.MALLOC),
                ("calloc", self.CALLOC),
                ("realloc", self.REALLOC),
                ("free", self.FREE),
            ]

        class Handler(ctypes.Structure):
            _fields_ = [
                ("name", ctypes.c_char * 127),
                ("version", ctypes.c_uint8),
                ("allocator", Allocator),
            ]

        self._callbacks = (
            self.MALLOC(malloc),
            self.CALLOC(calloc),
            self.REALLOC(realloc),
            self.FREE(free),
        )
        self._handler = Handler(b"npgated_test_counter", 1, Allocator(None, *self._callbacks))
        self._capsule = api.PyCapsule_New(ctypes.addressof(self._handler), b"mem_handler", None)
        from numpy._core import _multiarray_umath  # noqa: PLC0415

        table = _multiarray_umath._ARRAY_API
        slots = ctypes.cast(
            api.PyCapsule_GetPointer(table, api.PyCapsule_GetName(table)),
            ctypes.POINTER(ctypes.c_void_p),
        )
        self._set_handler = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.py_object)(slots[304])

    @classmethod
    def get(cls):
        if platform.python_implementation() != "CPython":
            pytest.skip("the allocation counter needs CPython's ctypes.pythonapi")
        if cls._installed is None:
            try:
                cls._installed = cls()
            except (ImportError, AttributeError, ValueError) as exc:
                pytest.skip(f"cannot install a NumPy allocation handler here: {exc}")
        return cls._installed

    @contextmanager
    def counting(self):
        self.sizes.clear()
        previous = self._set_handler(self._capsule)
        try:
            yield self.sizes
        finally:
            self._set_handler(previous)


def test_counter_counts_numpy_allocations():
    counter = _Counter.get()
    with counter.counting() as sizes:
        a = np.empty(10)
    from numpy._core.multiarray import get_handler_name  # noqa: PLC0415

    assert get_handler_name(a) == "npgated_test_counter" and sizes == [80]
    a[...] = 1
    with counter.counting() as sizes:
        a += a
        b = a + a
    assert sizes == [80] and b.sum() == 40  # b is new, a += a is in place


def _ready(name, dtype, **sampling):
    model = MODELS[name](dtype)
    model.eval()
    stepper = Stepper(model)
    stepper.load_state()
    sampler = Sampler(V, seed=0, **sampling)
    token = 1
    for _ in range(2):  # warm-up: every buffer and lazy initialisation happens here
        token = sampler.draw(stepper.step(token))
    return model, stepper, sampler, token


def _run(stepper, sampler, token, steps=100):
    for _ in range(steps):
        token = sampler.draw(stepper.step(token))
    return token


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_steps_and_draws_allocate_no_numpy_buffer(name, dtype):
    counter = _Counter.get()
    model, stepper, sampler, token = _ready(name, dtype, temperature=0.7, skip_ids=[0, 3])
    with counter.counting() as sizes:
        _run(stepper, sampler, token)
    assert sizes == [], f"{name}: {len(sizes)} NumPy allocations in 100 steps, sizes {sizes[:8]}"
    # the counter sees what the predict path allocates: the check above can fail
    with counter.counting() as sizes:
        model.predict(np.array([[token]]))
    assert len(sizes) > 3


def test_top_k_allocates_only_the_partition_index():
    """ndarray.partition copies its (1,) index array: one 8-byte buffer per draw, no (V,)."""
    counter = _Counter.get()
    _, stepper, sampler, token = _ready("2-layer-tied-lstm", np.float32, top_k=5)
    with counter.counting() as sizes:
        _run(stepper, sampler, token)
    assert len(sizes) <= 100 and max(sizes, default=0) <= 64, sizes[:8]


def test_tracemalloc_sees_no_numpy_buffer_left_by_the_steps():
    """NumPy's tracemalloc domain before and after: no buffer left alive by the steps.

    tracemalloc sees live blocks only, so this catches what a step keeps (a growing cache),
    not the temporaries it frees again; those are the counter's (tests above).
    """
    _, stepper, sampler, token = _ready("2-layer-tied-lstm", np.float32, skip_ids=[0])
    only_numpy = [tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(only_numpy)
        _run(stepper, sampler, token)
        after = tracemalloc.take_snapshot().filter_traces(only_numpy)
    finally:
        tracemalloc.stop()
    grown = [s for s in after.compare_to(before, "traceback") if s.count_diff or s.size_diff]
    assert grown == [], grown[:3]


# ---------------------------------------------------------------------------------------
# (d) the sampler
# ---------------------------------------------------------------------------------------
LOGITS = np.array([0.3, -1.0, 2.0, 0.0, 1.2, -0.4, 0.9, 2.0])


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"temperature": 0.5},
        {"temperature": 3.0, "skip_ids": [2, 7]},
        {"top_k": 3},
        {"top_k": 2, "skip_ids": [2]},
        {"top_k": 20},
        {"top_k": 1, "temperature": 0.9},
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sampler_weights_are_next_token_distribution(options, dtype):
    logits = LOGITS.astype(dtype)
    w = Sampler(len(logits), **options).prepare(logits)
    np.testing.assert_allclose(
        w / w.sum(), next_token_distribution(logits, **options), rtol=1e-12, atol=1e-15
    )


def _frequencies(options, draws=20_000, seed=7):
    sampler = Sampler(len(LOGITS), seed=seed, **options)
    ids = [sampler.draw(LOGITS) for _ in range(draws)]
    return np.bincount(ids, minlength=len(LOGITS)) / draws, draws


@pytest.mark.parametrize("options", [{}, {"temperature": 2.0, "skip_ids": [1, 4]}, {"top_k": 4}])
def test_draws_follow_next_token_distribution(options):
    freq, n = _frequencies(options)
    p = next_token_distribution(LOGITS, **options)
    assert np.all(freq[p == 0] == 0), "a token of probability 0 was drawn"
    keep = p > 0
    chi2 = n * ((freq[keep] - p[keep]) ** 2 / p[keep]).sum()
    # <= 7 degrees of freedom: P(chi2 > 30) < 1e-4 for a correct sampler
    assert chi2 < 30, f"chi-square {chi2:.1f}: frequencies {freq.round(4)} vs p {p.round(4)}"


def test_skip_top_k_and_cold_temperature():
    freq, _ = _frequencies({"skip_ids": [2, 7, 4]}, draws=2_000)
    assert freq[[2, 7, 4]].sum() == 0
    freq, _ = _frequencies({"top_k": 3}, draws=2_000)  # ties at 2.0: tokens 2, 7, then 4
    assert set(np.flatnonzero(freq)) == {2, 4, 7}
    freq, _ = _frequencies({"temperature": 1e-3, "skip_ids": [2]}, draws=500)
    assert freq[7] == 1.0  # greedy: the largest remaining logit every time


def test_sampler_errors():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        Sampler(5, temperature=0)
    with pytest.raises(ValueError, match="removes every token"):
        Sampler(3, skip_ids=[0, 1, 2])
    with pytest.raises(ValueError, match=r"skip_ids must be in \[0, 3\)"):
        Sampler(3, skip_ids=[3])
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        Sampler(3, top_k=0)
    with pytest.raises(ValueError, match=r"logits must have shape \(3,\)"):
        Sampler(3).draw(np.zeros(4))
    with pytest.raises(ValueError, match="not finite"):
        Sampler(3).draw(np.array([0.0, np.nan, 1.0]))


# ---------------------------------------------------------------------------------------
# (e) same seed, same text
# ---------------------------------------------------------------------------------------
def _reference_generate(model, prompt, length, seed, **options):
    """generate() written with model.predict for every token: the readable reference."""
    sampler = Sampler(model.vocab_size, seed=seed, **options)
    model.eval()
    model.reset_state()
    out = list(prompt)
    logits = model.predict(np.asarray([prompt]))[0, -1]
    for _ in range(length):
        out.append(sampler.draw(logits))
        logits = model.predict(np.asarray([[out[-1]]]))[0, -1]
    model.reset_state()
    return out


@pytest.mark.parametrize("name", ["2-layer-tied-lstm", "gru-reset-before"])
def test_same_seed_same_text_as_the_predict_path(name, xp_name):
    model = MODELS[name](np.float64)
    options = {"temperature": 0.9, "top_k": 10, "skip_ids": [0]}
    text = generate(model, [1, 2], 40, seed=11, **options)
    assert text == generate(model, [1, 2], 40, seed=11, **options)
    assert text == _reference_generate(model, [1, 2], 40, seed=11, **options)
    assert text != generate(model, [1, 2], 40, seed=12, **options)


def test_same_text_on_every_backend():
    texts = []
    for name in ("numpy", "fake-cupy"):
        previous = backend.current()
        backend.use(name)
        try:
            texts.append(generate(MODELS["2-layer-tied-gru"](np.float64), [4], 30, seed=2))
        finally:
            backend.use(previous)
    assert texts[0] == texts[1]


def test_unknown_layer_falls_back_to_predict_with_the_same_draws():
    model = MODELS["rnn"](np.float64)
    stepped = generate(model, [3], 25, seed=5)
    model.layers["affine"].__class__ = type("MyAffine", (TimeAffine,), {})
    assert unsupported_reason(model) is not None
    assert generate(model, [3], 25, seed=5) == stepped
