"""One torch thread for the feature tests' tiny models (see tests/analyze/conftest.py); the LTR tests' tiny
adapters and TREC folders are in tests/ltr/conftest.py."""
from __future__ import annotations

from tests.analyze.conftest import one_thread  # noqa: F401  (autouse, package scope)


