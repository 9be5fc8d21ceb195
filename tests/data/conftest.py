"""Data tests keep the PTB id cache out of the user's home: one temporary folder per session."""

from __future__ import annotations

import pytest

from npgated.data import ptb


@pytest.fixture(scope="session")
def _session_ids_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ptb-ids")


@pytest.fixture(autouse=True)
def _ids_cache_in_tmp(monkeypatch, _session_ids_cache):
    """Point ``NPGATED_PTB_CACHE`` at the session folder (a test may point it elsewhere)."""
    monkeypatch.setenv(ptb.CACHE_ENV_VAR, str(_session_ids_cache))
