"""Tiny adapters and TREC folders for the LTR tests (one torch thread: see tests/analyze/conftest.py)."""
from __future__ import annotations

import pytest

from tests.analyze.conftest import one_thread, save_adapter  # noqa: F401  (one_thread: autouse, package scope)
from tests.tinydata import make_trec_dir, save_tiny_model




@pytest.fixture(scope="session")
def tiny_ltr(tmp_path_factory):
    """A tiny model, one adapter (all projections, r=4), a training and a test TREC folder."""
    root = tmp_path_factory.mktemp("ltr")
    model = save_tiny_model(root / "model")
    adapter = save_adapter(model, root / "run" / "checkpoint-1", seed=3)
    train = make_trec_dir(root / "train", n_queries=10, n_cands=10, seed=1)
    test = make_trec_dir(root / "test", n_queries=6, n_cands=10, seed=2)
    return {"root": root, "model": model, "adapter": adapter, "train": train, "test": test}
