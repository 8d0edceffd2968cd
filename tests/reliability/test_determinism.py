"""Point 3 of issue 8: the same config and seed twice give bit-identical weights and scores on CPU;
evaluation does not depend on the order of its input."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorank.evaluation import evaluate, evaluate_files, write_run
from tests.reliability.conftest import adapter_tensors, assert_bit_identical, one_thread, train_here, write_config


def test_same_config_and_seed_twice_is_bit_identical(tiny, trained_run, tmp_path):
    """A second run of the trained_run config (another process state, another folder) gives the same bits."""
    cfg = write_config(tmp_path / "again.yaml", tiny, tmp_path / "again", max_steps=4, every=2, eval_sets=False)
    train_here(cfg)
    for step in (2, 4):
        assert_bit_identical(adapter_tensors(trained_run / f"checkpoint-{step}"),
                             adapter_tensors(tmp_path / "again" / f"checkpoint-{step}"))


def test_scores_are_bit_identical_across_loads_and_calls(tiny, trained_run):
    from lorank.data import load_trec_dl_dir
    from lorank.reranker import Reranker

    rs = load_trec_dl_dir(tiny["data"])
    with one_thread():
        a = Reranker.from_adapter(trained_run, dtype="fp32", bf16=False)
        b = Reranker.from_adapter(trained_run, dtype="fp32", bf16=False)
        sa, sb, sa2 = (r.scorer.rerank(rs.queries, rs.passages, rs.run, depth=12) for r in (a, b, a))
    assert sa == sb == sa2  # dicts of floats: exact equality


def test_scores_do_not_depend_on_input_order(tiny, trained_run):
    """Shuffled pairs get the same scores (batches are length-sorted, so composition changes only padding)."""
    from lorank.data import load_trec_dl_dir
    from lorank.reranker import Reranker

    rs = load_trec_dl_dir(tiny["data"])
    pairs = [(rs.queries[q], rs.passages[e.docid].text, "") for q in rs.run for e in rs.run[q]]
    perm = list(range(len(pairs)))
    random.Random(3).shuffle(perm)
    with one_thread():
        rr = Reranker.from_adapter(trained_run, dtype="fp32", bf16=False)
        ref = rr.scorer.score_pairs(pairs)
        shuffled = rr.scorer.score_pairs([pairs[i] for i in perm])
        small = type(rr.scorer)(rr.model, rr.encoder, rr.scorer.pad_id, batch_tokens=64, bf16=False).score_pairs(pairs)
    np.testing.assert_array_equal(shuffled, ref[perm])
    np.testing.assert_allclose(small, ref, rtol=0, atol=1e-5)  # other batch sizes: equal to float tolerance


def _shuffled_copy(src: Path, dst: Path, seed: int) -> Path:
    lines = src.read_text().splitlines()
    random.Random(seed).shuffle(lines)
    dst.write_text("\n".join(lines) + "\n")
    return dst


def test_evaluation_is_independent_of_line_order(tiny, tmp_path):
    run, qrels = tiny["data"] / "bm25.run", tiny["data"] / "qrels.txt"
    ref = evaluate_files(qrels, [run], per_query=True)
    for seed in range(5):
        r = _shuffled_copy(run, tmp_path / f"r{seed}.run", seed)
        q = _shuffled_copy(qrels, tmp_path / f"q{seed}.txt", seed + 100)
        got = evaluate_files(q, [r], per_query=True)
        a, b = next(iter(ref.results.values())), next(iter(got.results.values()))
        assert a.aggregate == b.aggregate and a.per_query == b.per_query


_doc = st.sampled_from([f"d{i}" for i in range(12)])
_score = st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0])  # few values: many ties
_run = st.dictionaries(st.sampled_from(["q1", "q2", "q3"]), st.dictionaries(_doc, _score, min_size=1), min_size=1)
_qrels = st.dictionaries(st.sampled_from(["q1", "q2", "q3"]), st.dictionaries(_doc, st.integers(0, 3), min_size=1),
                         min_size=1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=_run, qrels=_qrels, seed=st.integers(0, 2**16))
def test_metrics_do_not_depend_on_dict_or_file_order_even_with_ties(run, qrels, seed, tmp_path_factory):
    rng = random.Random(seed)

    def shuffled(d):
        items = list(d.items())
        rng.shuffle(items)
        return {k: (shuffled(v) if isinstance(v, dict) else v) for k, v in items}

    a = evaluate(qrels, run)
    b = evaluate(shuffled(qrels), shuffled(run))
    assert a.aggregate == b.aggregate and a.per_query == b.per_query
    # and through a TREC file written from the shuffled run (ties broken by docid, trec_eval's rule)
    d = tmp_path_factory.mktemp("ev")
    write_run(d / "r.run", shuffled(run))
    from lorank.data import load_run

    c = evaluate(qrels, load_run(d / "r.run"))
    assert c.aggregate == a.aggregate


@pytest.mark.parametrize("depth", [5, 12])
def test_checkpoint_metrics_do_not_depend_on_run_order(tiny, trained_run, depth):
    """Reranking a first-stage run whose queries and entries come in another order gives the same metrics."""
    from lorank.data import load_trec_dl_dir
    from lorank.reranker import Reranker

    rs = load_trec_dl_dir(tiny["data"])
    rng = random.Random(depth)
    qids = list(rs.run)
    rng.shuffle(qids)
    # same ranking (entries sorted by score), other dict order; same passages dict in another order
    run2 = {q: rs.run[q] for q in qids}
    passages2 = dict(sorted(rs.passages.items(), key=lambda kv: rng.random()))
    with one_thread():
        rr = Reranker.from_adapter(trained_run, dtype="fp32", bf16=False)
        a = rr.rerank(rs.queries, rs.passages, rs.run, depth=depth)
        b = rr.rerank(rs.queries, passages2, run2, depth=depth)
    assert evaluate(rs.qrels, a).aggregate == evaluate(rs.qrels, b).aggregate
