"""Fixtures of the CLI tests: the analysis verbs run on the tiny saved adapters of tests/analyze/conftest.py."""
from __future__ import annotations

import pytest

from tests.analyze.conftest import one_torch_thread, tiny  # noqa: F401  (tiny: the shared fixture, reachable here)


@pytest.fixture
def one_thread():
    """One torch thread for the tiny models of the analysis verbs (see tests/analyze/conftest.py); the other CLI
    tests keep the default thread count."""
    with one_torch_thread():
        yield
