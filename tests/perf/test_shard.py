"""Sharded scoring: 2 processes, each scoring its share of the queries, merge into the single-process run."""
from pathlib import Path

import pytest

from lorank.inference.shard import ScorerSpec, assign_queries, merge_parts, rerank_shard, shard_env, sharded_rerank
from tests.tinydata import make_trec_dir, save_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard")
    data = make_trec_dir(root / "data", n_queries=5, n_cands=9)
    model = save_tiny_model(root / "model")
    return root, data, model


def _read(path: Path) -> dict:
    out: dict = {}
    for line in path.read_text().splitlines():
        q, _, d, r, s, _ = line.split()
        out.setdefault(q, []).append((d, int(r), float(s)))
    return out


def test_assign_queries_is_balanced_deterministic_and_complete():
    run = {f"q{i}": list(range(10 + i)) for i in range(7)}
    shares = assign_queries(run, depth=12, world_size=3)
    assert sorted(q for s in shares for q in s) == sorted(run)
    loads = [sum(min(len(run[q]), 12) for q in s) for s in shares]
    assert max(loads) - min(loads) <= 12
    assert shares == assign_queries(dict(reversed(list(run.items()))), 12, 3)


def test_shard_env(monkeypatch):
    for k in ("LORANK_SHARD_RANK", "LORANK_SHARD_WORLD", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert shard_env() == (0, 1)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert shard_env() == (1, 2)
    monkeypatch.setenv("LORANK_SHARD_RANK", "2")
    monkeypatch.setenv("LORANK_SHARD_WORLD", "3")
    assert shard_env() == (2, 3)


def test_two_processes_merge_into_the_single_process_run(tiny):
    from lorank.data import load_trec_dl_dir
    from lorank.evaluation.trec_io import write_run
    from lorank.inference.runs import rerank_to_run

    root, data, model = tiny
    rs = load_trec_dl_dir(data)
    spec = ScorerSpec(model=str(model), head_init="random", dtype="fp32")
    depth = 6  # candidates below the depth keep their first-stage order underneath, in both runs
    rr = spec.build()
    single = write_run(root / "single.run", rerank_to_run(rr.scorer.rerank(rs.queries, rs.passages, rs.run, depth),
                                                          rs.run, depth))
    merged = sharded_rerank(spec, rs.queries, rs.passages, rs.run, root / "merged.run", depth=depth, processes=2)
    a, b = _read(single), _read(merged)
    assert list(a) == list(b)  # same queries, same order
    for q in a:
        assert [d for d, _, _ in a[q]] == [d for d, _, _ in b[q]], q  # same ranking
        assert max(abs(x[2] - y[2]) for x, y in zip(a[q], b[q])) < 1e-5
    assert not (root / "merged.run.parts").exists()  # parts removed after the merge


def test_in_process_ranks_resume_and_merge(tiny, tmp_path):
    """The torchrun path: each rank calls rerank_shard; a rank whose part is already written is not redone."""
    from lorank.data import load_trec_dl_dir

    root, data, model = tiny
    rs = load_trec_dl_dir(data)
    rr = ScorerSpec(model=str(model), dtype="fp32").build()
    out = tmp_path / "run.trec"
    assert rerank_shard(rr, rs.queries, rs.passages, rs.run, out, depth=9, rank=1, world_size=2) is None

    class Boom:
        def rerank(self, *a, **k):
            raise AssertionError("rank 1's part exists: it must not be scored again")

    assert rerank_shard(Boom(), rs.queries, rs.passages, rs.run, out, depth=9, rank=1, world_size=2) is None
    path = rerank_shard(rr, rs.queries, rs.passages, rs.run, out, depth=9, rank=0, world_size=2)
    assert path == out and len(out.read_text().splitlines()) == 5 * 9
    with pytest.raises(Exception, match="timed out"):
        merge_parts(tmp_path / "other.run", rs.run, 9, 2, timeout_s=0.2, poll_s=0.05)
