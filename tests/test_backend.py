import numpy as np
import pytest

from npgated import backend


def test_default_is_numpy(monkeypatch):
    monkeypatch.setattr(backend, "_active", None)
    monkeypatch.delenv("NPGATED_BACKEND", raising=False)
    assert backend.current() == "numpy"
    assert backend.xp() is np


def test_env_variable_selects_backend(monkeypatch):
    monkeypatch.setattr(backend, "_active", None)
    monkeypatch.setenv("NPGATED_BACKEND", "fake-cupy")
    assert backend.current() == "fake-cupy"
    assert backend.xp() is backend.fakecupy


def test_env_variable_unknown(monkeypatch):
    monkeypatch.setattr(backend, "_active", None)
    monkeypatch.setenv("NPGATED_BACKEND", "jax")
    with pytest.raises(ValueError, match="numpy, cupy, fake-cupy"):
        backend.current()


def test_unknown_backend_lists_valid():
    with pytest.raises(ValueError, match="valid backends are: numpy, cupy, fake-cupy"):
        backend.use("tensorflow")


@pytest.mark.skipif(backend.cupy_available(), reason="CuPy with a GPU is present here")
def test_cupy_missing_says_how_to_fix():
    with pytest.raises(
        backend.BackendError, match=r"pip install npgated\[gpu\]|no usable GPU|no GPU"
    ):
        backend.use("cupy")
    assert backend.current() != "cupy"


def test_get_array_module_follows_data():
    a = np.zeros(3)
    d = backend.fakecupy.asarray(a)
    assert backend.get_array_module(a) is np
    assert backend.get_array_module(d) is backend.fakecupy
    assert backend.get_array_module(a, d) is backend.fakecupy


def test_to_cpu_and_to_device(xp_name):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    dev = backend.to_device(host)
    assert backend.get_array_module(dev) is backend.xp()
    back = backend.to_cpu(dev)
    assert type(back) is np.ndarray and back.dtype == np.float32
    np.testing.assert_array_equal(back, host)
    like = backend.to_device(host, like=dev, dtype=np.float64)
    assert backend.get_array_module(like) is backend.get_array_module(dev)
    assert like.dtype == np.float64


def test_scatter_add_repeated_indices(xp_name):
    target = backend.to_device(np.zeros((4, 2)))
    idx = backend.to_device(np.array([1, 3, 1, 1]))
    vals = backend.to_device(np.arange(8.0).reshape(4, 2))
    backend.scatter_add(target, idx, vals)
    expected = np.zeros((4, 2))
    for k, i in enumerate([1, 3, 1, 1]):
        expected[i] += np.arange(8.0).reshape(4, 2)[k]
    np.testing.assert_array_equal(backend.to_cpu(target), expected)


def test_default_rng_is_seeded_and_independent():
    a = backend.default_rng(5).random(4)
    b = backend.default_rng(5).random(4)
    np.testing.assert_array_equal(a, b)
    g = np.random.default_rng(1)
    assert backend.default_rng(g) is g


class TestFakeCupy:
    def setup_method(self):
        self.fc = backend.fakecupy
        self.d = self.fc.asarray(np.arange(6.0).reshape(2, 3))

    def test_results_stay_on_device(self):
        d = self.d
        for r in (
            d + 1.0,
            d @ d.T,
            d.sum(axis=0),
            d[0],
            d.T.copy(),
            np.tanh(d),
            self.fc.zeros((2,)),
        ):
            assert isinstance(r, backend.FakeDeviceArray)

    def test_refuses_mixing_with_host_arrays(self):
        with pytest.raises(backend.MixedBackendError, match="to_device"):
            self.d + np.ones((2, 3))
        with pytest.raises(backend.MixedBackendError):
            self.d[np.array([0, 1])]
        with pytest.raises(backend.MixedBackendError):
            self.d[0] = np.ones(3)

    def test_refuses_add_at(self):
        with pytest.raises(backend.UnsupportedOnDeviceError, match="scatter_add"):
            np.add.at(self.d, self.fc.asarray(np.array([0])), 1.0)

    def test_refuses_functions_cupy_lacks(self):
        with pytest.raises(backend.UnsupportedOnDeviceError):
            np.apply_along_axis(np.sum, 0, self.d)
        with pytest.raises(AttributeError):
            self.fc.apply_along_axis  # noqa: B018 (the attribute access itself must raise)

    def test_scalars_are_fine(self):
        assert float((self.d * np.float32(2.0)).sum()) == 30.0

    def test_get_copies_to_host(self):
        h = self.d.get()
        assert type(h) is np.ndarray
        np.testing.assert_array_equal(h, np.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("shape_kind", ["contiguous", "column-slice"])
def test_scatter_add_matches_add_at_on_contiguous_and_strided_targets(shape_kind):
    # The NumPy path updates a C-contiguous target through its flat view and falls back
    # to the row-wise np.add.at otherwise: both must equal the reference loop.
    rng = np.random.default_rng(3)
    base = rng.standard_normal((40, 12))
    target = base if shape_kind == "contiguous" else base[:, 2:9]
    ids = rng.integers(0, 40, 200)  # many repeats
    vals = rng.standard_normal((200, target.shape[1]))
    expected = target.copy()
    for k, i in enumerate(ids):
        expected[i] += vals[k]
    backend.scatter_add(target, ids, vals)
    np.testing.assert_allclose(target, expected, rtol=1e-12, atol=1e-12)
