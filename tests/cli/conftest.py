"""Fixtures of the CLI tests: the analysis verbs run on the tiny saved adapters of tests/analyze/conftest.py."""
from __future__ import annotations

import pytest
import torch

from tests.analyze.conftest import tiny  # noqa: F401  (the shared fixture, reachable from this package)


@pytest.fixture
def one_thread():
    """One torch thread for the tiny models of the analysis verbs (see tests/analyze/conftest.py); the other CLI
    tests keep the default thread count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
