"""Point 6 of issue 8: hostile input. Every bad input gives DataError / ConfigError, never another exception:
hypothesis fuzz of the folder readers (the per-file readers are fuzzed in tests/data/test_data_fuzz.py) and
of the config parser (YAML text, bytes, structured values, --set overrides); very long passages, control
characters, RTL text, NUL bytes, template braces and empty queries end to end; a 1e6-candidate run read
and evaluated."""
from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lorank.config import read_yaml
from lorank.errors import ConfigError, DataError
from lorank.train.config import TrainConfig

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------- config parser
def _parse_yaml_text(data: bytes, overrides: dict | None = None) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.yaml"
        p.write_bytes(data)
        try:
            cfg = TrainConfig.from_yaml(p, overrides)
        except ConfigError as e:
            assert e.problems and all(isinstance(x, str) and x for x in e.problems)
            return
        assert isinstance(cfg, TrainConfig) and cfg.data


@FUZZ
@given(st.binary(max_size=300))
def test_config_any_bytes(data):
    _parse_yaml_text(data)


@FUZZ
@given(st.text(max_size=300))
def test_config_any_text(text):
    _parse_yaml_text(text.encode("utf-8", "surrogatepass"))


_yaml_piece = st.sampled_from([
    "model: x", "data: [{kind: trec, path: dl20}]", "data: []", "data: {}", "data: [{kind: hardneg, path: t.jsonl}]",
    "lora: {rank: 0}", "lora: {rank: 2, alpha: '8r'}", "lora: {alpha: '1.2.3r'}", "lora: {layers: '9-3'}",
    "lora: {layers: [1, -1]}", "lora: {layers: 99999999999999999999}", "lora: {dropout: .nan}", "lr: .inf",
    "lr: -1", "lr: 1e-4", "group_size: 1", "batch_queries: 0", "loss: nope", "loss: distill_kl",
    "checkpoints: {every: 0}", "checkpoints: {steps: '3,x'}", "checkpoints: {steps: 5}", "checkpoints: {steps: [0]}",
    "eval: {sets: [dl19], depth: -5}", "eval: {interpolate: [.nan]}", "input: {max_len: -1}", "max_steps: 1e999",
    "seed: 99999999999999999999999", "dtype: fp8", "output_dir: ../../etc", "data_root: \"\\0\"",
    "data: [{kind: trec, path: \"a\\0b\"}]", "foo: 1", "? [a, b]\n: 1", "&a x: *a", "x: !!binary AAAA",
    "x: !!python/object/apply:os.system ['true']", "- a\n- b", "a: &x [*x]", "'unterminated", "{", "\t: :",
    "data: [{kind: trec, path: dl20, depth: 1e400}]", "lora: {projections: {q: 1}}", "report_to: [1, 2]",
    "trust_remote_code: yes", "head_init: [yes_no]",
])


@FEW
@given(st.lists(_yaml_piece, min_size=1, max_size=6))
def test_config_yaml_made_of_plausible_and_bad_pieces(pieces):
    _parse_yaml_text("\n".join(pieces).encode())


_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=8,
)
_FIELDS = list(TrainConfig.model_fields)


@FUZZ
@given(st.dictionaries(st.sampled_from(_FIELDS + ["lora.rank", "eval.sets", "checkpoints.steps"]), _value,
                       max_size=6))
def test_config_structured_values(d):
    data = {"data": [{"kind": "trec", "path": "dl20"}]}
    for k, v in d.items():
        if "." in k:
            a, b = k.split(".")
            data.setdefault(a, {})
            if isinstance(data[a], dict):
                data[a][b] = v
        else:
            data[k] = v
    try:
        TrainConfig.from_dict(data)
    except ConfigError:
        pass


@FUZZ
@given(st.dictionaries(st.text(max_size=12), _value, max_size=4))
@example({"model.x": 1})  # into a string: was a TypeError
@example({"lora.rank.a": 1})
@example({"": 1, "a..b": 2, ".": 3})
def test_config_set_overrides(overrides):
    """``lorank train --set KEY=VALUE``: any key, any value."""
    _parse_yaml_text(b"data: [{kind: trec, path: dl20}]\nlora: {rank: 2}\n", overrides)


@pytest.mark.parametrize("text", [
    "data: " + "[" * 5000 + "]" * 5000,                                    # nesting deeper than the parser's stack
    "data: [{kind: trec, path: dl20}]\nlora: " + "{a: " * 3000 + "1" + "}" * 3000,
    "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]                  # an alias "billion laughs"
              + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
              + ["data: [{kind: trec, path: dl20}]", "report_to: *a8", "eval: {sets: *a8}"]),
])
def test_config_nesting_and_alias_bombs_are_config_errors(tmp_path, text):
    p = tmp_path / "bomb.yaml"
    p.write_text(text)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError):
        TrainConfig.from_yaml(p)
    assert time.perf_counter() - t0 < 5


def test_read_yaml_bad_paths(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path)  # a folder
    (tmp_path / "latin1.yaml").write_bytes("model: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        read_yaml(tmp_path / "latin1.yaml")
    with pytest.raises(ConfigError):
        read_yaml(str(tmp_path / "nul\x00.yaml"))


# --------------------------------------------------------------------------------------- folder readers
_cell = st.sampled_from(["q1", "q2", "d1", "d2", "0", "1", "2", "-1", "Q0", "1.5", "nan", "", " ", "x y", "\x00",
                         "\u202e", "\ufeff", "שלום", "{passage}", "\r"]) | st.text(max_size=5)
_file = st.lists(st.lists(_cell, max_size=7).map("\t".join), max_size=6).map("\n".join)


@FEW
@given(q=_file, c=_file, r=_file.map(lambda s: s.replace("\t", " ")), j=st.one_of(st.none(), _file),
       lenient=st.booleans())
def test_trec_dl_folder_reader(q, c, r, j, lenient):
    from lorank.data import load_trec_dl_dir

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "queries.tsv").write_bytes(q.encode("utf-8", "surrogatepass"))
        (root / "collection.tsv").write_bytes(c.encode("utf-8", "surrogatepass"))
        (root / "bm25.run").write_bytes(r.encode("utf-8", "surrogatepass"))
        if j is not None:
            (root / "qrels.txt").write_bytes(j.encode("utf-8", "surrogatepass"))
        try:
            rs = load_trec_dl_dir(root, lenient=lenient, warn=False)
        except DataError as e:
            assert e.problem
            return
        assert all(e.docid in rs.passages for es in rs.run.values() for e in es)


_jsonl = st.lists(st.dictionaries(st.sampled_from(["_id", "text", "title", "query", "id"]),
                                  st.none() | st.integers() | st.text(max_size=6), max_size=4), max_size=4).map(
    lambda rows: "\n".join(json.dumps(x) for x in rows))


@FEW
@given(corpus=_jsonl | st.text(max_size=40), queries=_jsonl | st.text(max_size=40), qrels=_file,
       split=st.sampled_from(["test", "dev"]))
def test_beir_folder_reader(corpus, queries, qrels, split):
    from lorank.data import load_beir

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "corpus.jsonl").write_text(corpus, encoding="utf-8", errors="surrogatepass")
        (root / "queries.jsonl").write_text(queries, encoding="utf-8", errors="surrogatepass")
        (root / "qrels").mkdir()
        (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels, encoding="utf-8",
                                                 errors="surrogatepass")
        try:
            load_beir(root, split=split)
        except DataError as e:
            assert e.problem


def test_missing_and_unreadable_inputs_are_data_errors(tmp_path):
    from lorank.data import load_collection, load_run, load_trec_dl_dir

    with pytest.raises(DataError):
        load_run(tmp_path / "nope.run")
    with pytest.raises(DataError):
        load_collection(tmp_path)  # a folder
    with pytest.raises(DataError):
        load_trec_dl_dir(tmp_path / "nope")
    (tmp_path / "queries.tsv").write_text("q1\tok\n")
    with pytest.raises(DataError, match="collection.tsv"):
        load_trec_dl_dir(tmp_path)


# ------------------------------------------------------------------------------------- hostile text
HOSTILE = {
    "long": "lorem ipsum dolor " * 20_000,                 # a 360 kB passage
    "control": "tab\u000bvt \x1b[31mred\x1b[0m bell\x07 nul\x00 del\x7f esc",
    "rtl": "שלום עולם مرحبا بالعالم \u202eevil\u202c",
    "zero-width": "a\u200bb\u200dc\ufeffd",
    "braces": "{passage} {query} {0} {__class__} %s %(x)s",
    "combining": "e\u0301" * 500 + "\U0001f600" * 200,
    "surrogate-free emoji": "👩\u200d👩\u200d👧" * 100,
}


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    qs = {f"q{i}": t[:300] for i, t in enumerate(HOSTILE.values())}
    docs = {f"p{i}": t for i, t in enumerate(HOSTILE.values())}
    (d / "queries.tsv").write_text("".join(f"{q}\t{t.replace(chr(9), ' ')}\n" for q, t in qs.items()))
    (d / "collection.tsv").write_text("".join(f"{p}\t{t.replace(chr(9), ' ')}\n" for p, t in docs.items()))
    (d / "bm25.run").write_text("".join(f"{q} Q0 {p} {r + 1} {10 - r} bm25\n" for q in qs
                                        for r, p in enumerate(docs)))
    (d / "qrels.txt").write_text("".join(f"{q} 0 p{i} 2\n" for i, q in enumerate(qs)))
    return d


def test_hostile_text_end_to_end(hostile_dir, trained_run, tmp_path):
    """Loaded, encoded within max_len, scored to finite numbers, written and read back as a TREC run."""
    from lorank.data import load_run, load_trec_dl_dir
    from lorank.reranker import Reranker
    from lorank.evaluation import evaluate, write_run
    from tests.reliability.conftest import one_thread

    rs = load_trec_dl_dir(hostile_dir)
    assert len(rs.passages["p0"].text) > 300_000
    with one_thread():
        rr = Reranker.from_adapter(trained_run, dtype="fp32", bf16=False)
        for q in rs.queries.values():
            assert 0 < len(rr.encoder.encode(q, HOSTILE["braces"])) <= rr.encoder.fmt.max_len
        for p in rs.passages.values():
            assert 0 < len(rr.encoder.encode(HOSTILE["rtl"], p.text, p.title)) <= rr.encoder.fmt.max_len
        run = rr.rerank(rs.queries, rs.passages, rs.run, depth=100)
    assert all(math.isfinite(s) for d in run.values() for s in d.values())
    write_run(tmp_path / "r.run", run)
    back = load_run(tmp_path / "r.run")
    assert {q: {e.docid for e in es} for q, es in back.items()} == {q: set(d) for q, d in run.items()}
    assert 0.0 <= evaluate(rs.qrels, run).aggregate["ndcg_cut_10"] <= 1.0


@pytest.mark.parametrize("line, problem", [
    ("q9\t\n", "empty query text"), ("q9\t   \n", "empty query text"), ("\tsome text\n", "empty qid"),
    ("q1\tduplicate with other text\n", "duplicate"),
])
def test_empty_or_conflicting_queries_name_file_and_line(hostile_dir, tmp_path, line, problem):
    from lorank.data import load_queries

    f = tmp_path / "queries.tsv"
    f.write_text((hostile_dir / "queries.tsv").read_text() + line)
    with pytest.raises(DataError) as e:
        load_queries(f)
    assert e.value.path == str(f) and e.value.line == len(HOSTILE) + 1 and problem in e.value.problem


def test_empty_query_string_scores_without_crashing(trained_run):
    from lorank.reranker import Reranker
    from tests.reliability.conftest import one_thread

    with one_thread():
        rr = Reranker.from_adapter(trained_run, dtype="fp32", bf16=False)
        s = rr.score("", ["", "a passage", HOSTILE["control"]])
    assert s.shape == (3,) and np.isfinite(s).all()


# ------------------------------------------------------------------------------- a 1e6-candidate run
def test_million_candidate_run_reads_and_evaluates(tmp_path):
    """1000 queries x 1000 candidates: read, checked and evaluated; the metrics are known in closed form."""
    from lorank.data import load_qrels, load_run
    from lorank.evaluation import evaluate

    nq, nd = 1000, 1000
    run_f, qrels_f = tmp_path / "big.run", tmp_path / "big.qrels"
    t0 = time.perf_counter()
    with open(run_f, "w") as fh:  # the relevant document of query q sits at rank (q % 10) + 1
        for q in range(nq):
            rel = q % 10
            fh.write("".join(f"q{q} Q0 {'r' if d == rel else 'd'}{q}_{d} {d + 1} {nd - d} bm25\n" for d in range(nd)))
    qrels_f.write_text("".join(f"q{q} 0 r{q}_{q % 10} 2\n" for q in range(nq)))
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = load_run(run_f)
    t_read = time.perf_counter() - t0
    assert sum(len(v) for v in run.values()) == nq * nd
    t0 = time.perf_counter()
    res = evaluate(load_qrels(qrels_f), run)
    t_eval = time.perf_counter() - t0
    # one relevant document per query at rank k = 1..10 (100 queries each): MRR@10 = mean(1/k),
    # nDCG@10 = mean(1/log2(k+1)), R@100 = 1, MAP = MRR
    ks = np.arange(1, 11)
    assert res.aggregate["recip_rank_10"] == pytest.approx(np.mean(1 / ks), abs=1e-9)
    assert res.aggregate["ndcg_cut_10"] == pytest.approx(np.mean(1 / np.log2(ks + 1)), abs=1e-9)
    assert res.aggregate["recall_100"] == pytest.approx(1.0)
    assert res.aggregate["map"] == pytest.approx(np.mean(1 / ks), abs=1e-9)
    print(f"\n1e6-candidate run: generated {t_gen:.1f} s, read {t_read:.1f} s, evaluated {t_eval:.1f} s")
    assert t_read + t_eval < 120
