"""One torch thread for the feature tests' tiny models (see tests/analyze/conftest.py); the LTR tests' tiny
adapters and TREC folders are in tests/ltr/conftest.py."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
