"""Where the real shared data is, for module-level skip markers (../shared/data, or $LORANK_DATA)."""
from __future__ import annotations

from pathlib import Path

import pytest

from lorank.data import find_shared_data

_found = find_shared_data()
SHARED: Path = Path(_found) if _found is not None else Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data not found at {SHARED} (../shared/data)")
