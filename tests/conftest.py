"""Fixtures shared by the whole test suite."""
from __future__ import annotations

from pathlib import Path

import pytest

from lorank.data import find_shared_data


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder `../shared/data`; tests that need it skip when it is absent."""
    path = find_shared_data()
    if path is None:
        pytest.skip("../shared/data not found: real-data tests need the shared data folder beside the repo")
    return path
