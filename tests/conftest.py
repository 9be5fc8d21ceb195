"""Shared fixtures: the backend under test, seeded generators, the PTB data directory."""

from __future__ import annotations

import logging
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


@pytest.fixture(scope="session")
def book_dir():
    """The folder with the book's trained ``Rnnlm.pkl``: ``book/`` next to the PTB folder
    (``$NPGATED_DATA_DIR/../book`` or ``../shared/data/book``); skip if absent."""
    env = os.environ.get("NPGATED_DATA_DIR")
    candidates = [Path(env).parent / "book"] if env else []
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "book")
    for path in candidates:
        if (path / "Rnnlm.pkl").is_file():
            return path
    pytest.skip(
        "the book's Rnnlm.pkl not found: expected in a book/ folder next to the PTB "
        "folder of NPGATED_DATA_DIR (../shared/data/book)"
    )


@pytest.fixture(scope="session")
def book_file():
    """``book_file(name)``: the path of one of the book's chapter 7-8 files (``addition.txt``,
    ``date.txt``, ``AttentionSeq2seq.pkl``) in ``$NPGATED_BOOK_DATA_DIR``, ``book/`` next to
    the PTB folder of ``$NPGATED_DATA_DIR``, or ``../shared/data/book``; skips if absent."""
    candidates = [Path(os.environ[v]) for v in ("NPGATED_BOOK_DATA_DIR",) if os.environ.get(v)]
    if os.environ.get("NPGATED_DATA_DIR"):
        candidates.append(Path(os.environ["NPGATED_DATA_DIR"]).parent / "book")
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "book")

    def find(name: str) -> Path:
        for folder in candidates:
            if (folder / name).is_file():
                return folder / name
        pytest.skip(f"the book's {name} not found in {', '.join(map(str, candidates))}")

    return find


def write_synthetic_ptb(folder, n_train=3000, n_eval=600, seed=0) -> Path:
    """Write ptb.{train,valid,test}.txt with a learnable grammar of 20 words."""
    rng = np.random.default_rng(seed)
    subjects, verbs, objects = (
        ["the cat", "a dog", "my bird"],
        ["sees", "eats", "likes"],
        ["fish", "the ball", "a bone", "seeds"],
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def sentences(n_words):
        lines, count = [], 0
        while count < n_words:
            s = f"{subjects[rng.integers(3)]} {verbs[rng.integers(3)]} {objects[rng.integers(4)]}"
            if rng.random() < 0.3:
                s += " and then sleeps"
            lines.append(f" {s} ")
            count += len(s.split()) + 1
        return "\n".join(lines) + "\n"

    (folder / "ptb.train.txt").write_text(sentences(n_train))
    (folder / "ptb.valid.txt").write_text(sentences(n_eval))
    (folder / "ptb.test.txt").write_text(sentences(n_eval))
    return folder


@pytest.fixture
def synthetic_ptb(tmp_path):
    """A folder with small synthetic ptb.{train,valid,test}.txt files (20-word grammar)."""
    return write_synthetic_ptb(tmp_path / "synthetic_ptb")


_MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)


def write_synthetic_book_tasks(folder, n_lines=1000, seed=0) -> Path:
    """Write addition.txt and date.txt in the book's format (question, ``_``, answer; fixed
    widths 7 + 1 + 4 and 29 + 1 + 10, spaces padding both), ``n_lines`` lines each."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for _ in range(n_lines):
        a, b = (int(v) for v in rng.integers(0, 1000, size=2))
        lines.append(f"{a}+{b}".ljust(7) + "_" + str(a + b).ljust(4))
    (folder / "addition.txt").write_text("\n".join(lines) + "\n")
    lines = []
    for _ in range(n_lines):
        y, m, d = int(rng.integers(1970, 2030)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
        question = (
            f"{_MONTHS[m - 1]} {d}, {y}",
            f"{m}/{d}/{y % 100:02d}",
            f"{d} {_MONTHS[m - 1][:3].upper()} {y}",
        )[int(rng.integers(3))]
        lines.append(question.ljust(29) + "_" + f"{y}-{m:02d}-{d:02d}")
    (folder / "date.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def synthetic_book_data(tmp_path_factory):
    """A folder with small synthetic addition.txt and date.txt in the book's format."""
    return write_synthetic_book_tasks(tmp_path_factory.mktemp("book_tasks"))


@pytest.fixture(autouse=True)
def _threads_off():
    """Every test starts and ends with npgated's threads off (npgated.parallel's switch)."""
    from npgated import parallel  # noqa: PLC0415

    parallel.use_threads(1)
    yield
    parallel.use_threads(1)


@pytest.fixture(autouse=True)
def _npgated_logger_restored():
    """The "npgated" logger as the test found it. ``npgated.cli.main`` configures it for a
    process (a handler on the sys.stdout of the moment, ``propagate = False``); a test that
    runs the CLI in-process would otherwise leave it so, and a later test's ``caplog`` (on
    the root logger) would see nothing while records went to a closed captured stream."""
    logger = logging.getLogger("npgated")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.fixture(scope="session")
def _session_ids_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ptb-ids")


@pytest.fixture(autouse=True)
def _ids_cache_in_tmp(monkeypatch, _session_ids_cache):
    """The PTB id cache (npgated.data.ptb) and the corpus id cache (npgated.data.corpus) of
    every test, and of the commands they start, are temporary folders of the session, never
    the user's home (a test may point them elsewhere)."""
    monkeypatch.setenv("NPGATED_PTB_CACHE", str(_session_ids_cache))
    monkeypatch.setenv(
        "NPGATED_CORPUS_CACHE",
        str(_session_ids_cache.with_name(_session_ids_cache.name + "-corpus")),
    )


@pytest.fixture
def benchmarks(monkeypatch):
    """``benchmarks(name)``: a module of benchmarks/ imported as bench.py imports it.

    benchmarks/ is a folder of scripts, not a package: ``python benchmarks/bench.py`` puts it on
    ``sys.path`` and its modules import each other by name. The test does the same for its own
    duration and then forgets those modules, so their short names leave no trace.
    """
    import importlib  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    yield importlib.import_module
    for name in set(sys.modules) - before:
        if Path(getattr(sys.modules[name], "__file__", None) or "/").parent == folder:
            del sys.modules[name]
