"""Shared fixtures: the backend under test, seeded generators, the PTB data directory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from npgated import backend

_BACKEND_PARAMS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("fake-cupy", id="fake-cupy"),
    pytest.param(
        "cupy",
        id="cupy",
        marks=[
            pytest.mark.cupy,
            pytest.mark.skipif(
                not backend.cupy_available(), reason="CuPy with a usable GPU is not available"
            ),
        ],
    ),
]


@pytest.fixture(params=_BACKEND_PARAMS)
def xp_name(request):
    """Run the test once per backend: numpy, the fake-cupy stand-in, and cupy if present.

    The active backend is switched for the duration of the test and restored afterwards.
    """
    previous = backend.current()
    backend.use(request.param)
    yield request.param
    backend.use(previous)


@pytest.fixture
def dev(xp_name):
    """Move host arrays to the backend under test: ``dev(np_array)``."""

    def to_dev(a, dtype=None):
        return backend.to_device(np.asarray(a), dtype=dtype)

    return to_dev


@pytest.fixture
def rng():
    """A seeded host generator; tests never draw from global ``np.random``."""
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def ptb_dir():
    """The shared PTB directory (``NPGATED_DATA_DIR`` or ``../shared/data/ptb``); skip if absent."""
    env = os.environ.get("NPGATED_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptb")
    for path in candidates:
        if (path / "ptb.train.txt").is_file():
            return path
    pytest.skip("PTB data not found: set NPGATED_DATA_DIR to the folder with ptb.train.txt")
