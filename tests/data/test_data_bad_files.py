"""Tiny hand-made bad files: each problem is a DataError naming file, line and problem,
and lenient mode skips and counts it."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from lorank.data import (
    DataReport,
    Passage,
    ReadReport,
    iter_beir_corpus,
    iter_beir_queries,
    iter_collection,
    iter_hardneg,
    iter_qrels,
    iter_queries,
    iter_rank_llm,
    iter_run,
    iter_tevatron,
    iter_top1000,
    iter_triples,
    load_beir,
    load_collection,
    load_qrels,
    load_queries,
    load_run,
    load_trec_dl_dir,
)
from lorank.errors import DataError


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def fails(reader, path: Path, line: int | None, *words: str, **kw) -> DataError:
    """Assert that reading `path` raises a DataError at `line` whose problem has `words`."""
    with pytest.raises(DataError) as info:
        list(reader(path, **kw))
    err = info.value
    assert err.path == str(path)
    assert err.line == line, err
    for w in words:
        assert w in err.problem, err
    assert str(path) in str(err) and (line is None or f":{line}:" in str(err))
    return err


# ------------------------------------------------------------------------------- column counts
@pytest.mark.parametrize(
    "reader, content, line",
    [
        (iter_queries, "1\tok\n2 no tab\n", 2),
        (iter_collection, "1\tok\n2\n", 2),
        (iter_collection, "1\ttitle\ttext\n2\tonly text\n", 2),
        (iter_collection, "1\n", 1),
        (iter_top1000, "1\t2\tq\tp\n1\t3\tq\n", 2),
        (iter_triples, "q\tp\tn\nq\tp\n", 2),
        (iter_run, "1 Q0 d1 1 2.5 t\n1 Q0 d2 2 2.0\n", 2),
        (iter_qrels, "1 0 d1 1\n1 0 d2 1 extra\n", 2),
        (iter_qrels, "query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\n", 3),
    ],
)
def test_wrong_column_count(tmp_path, reader, content, line):
    path = write(tmp_path, "f.txt", content)
    fails(reader, path, line, "wrong number of columns")


@pytest.mark.parametrize(
    "reader, content, field, expected",
    [
        (iter_queries, "1\tok\n2\ttoo\tmany\n", "text", "too\tmany"),
        (iter_collection, "1\tok\n2\ta passage\twith\tTABs\n", "text", "a passage\twith\tTABs"),
        (iter_collection, "1\ta\tb\tc\n2\tplain\n", "text", "plain"),
        (iter_collection, "1\ttitle\ttext\n2\tt\ttext\twith\tTABs\n", "text", "text\twith\tTABs"),
        (iter_top1000, "1\t2\tq\tp\n1\t3\tq\tp\twith tab\n", "text", "p\twith tab"),
        (iter_triples, "q\tp\tn\nq\tp\tn\tmore\n", "negative", "n\tmore"),
    ],
)
def test_tabs_in_the_last_column_are_text_and_counted(tmp_path, caplog, reader, content, field, expected):
    """A TAB inside the last column is part of its text, as other IR tools read it (NovelEval's
    collection.tsv has a passage with 24 TABs); such lines are counted in the report and logged once."""
    path = write(tmp_path, "f.tsv", content)
    report = DataReport(str(path))
    with caplog.at_level("WARNING", logger="lorank.data"):
        got = list(reader(path, report=report))
    assert len(got) == 2 and report.skipped == 0
    assert getattr(got[1], field) == expected
    assert report.text_tabs == 1 and report.text_tab_lines in ([2], [1])
    assert "TABs inside their last column" in report.summary()
    assert sum("held TABs inside the last column" in r.message for r in caplog.records) == 1


def test_noveleval_style_collection_with_24_tabs(tmp_path):
    """The NovelEval case: line 298 of a 2-column collection holds 24 TABs; every passage is read."""
    lines = [f"{i}\tpassage number {i}" for i in range(1, 298)]
    lines.append("298\t" + "\t".join(f"cell{j}" for j in range(24)))
    lines += [f"{i}\tpassage number {i}" for i in range(299, 311)]
    path = write(tmp_path, "collection.tsv", "\n".join(lines) + "\n")
    report = DataReport(str(path))
    got = {p.pid: p.text for p in iter_collection(path, report=report)}
    assert len(got) == 310 and got["298"].count("\t") == 23
    assert (report.text_tabs, report.text_tab_lines) == (1, [298])


def test_gzip_files_are_read(tmp_path):
    """A gzip-compressed qrels or run is decompressed as it is read, whatever its name."""
    import gzip

    qrels = tmp_path / "qrels.txt.gz"
    qrels.write_bytes(gzip.compress(b"1 0 d1 2\n1 0 d2 0\n"))
    assert len(list(iter_qrels(qrels))) == 2
    run = tmp_path / "run.trec"             # no .gz suffix: found by its magic bytes
    run.write_bytes(gzip.compress(b"1 Q0 d1 1 2.5 t\n1 Q0 d2 2 2.0 t\n"))
    assert [r.docid for r in iter_run(run)] == ["d1", "d2"]
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(b"1 0 d1 2\n" * 100)[:30])
    err = fails(iter_qrels, broken, 101, "gzip stream is broken")   # 100 lines decoded, then the cut
    assert "broken.gz" in str(err)


def test_qrels_three_columns_without_header_hint(tmp_path):
    err = fails(iter_qrels, write(tmp_path, "q.tsv", "1\td1\t1\n"), 1, "wrong number of columns")
    assert "query-id corpus-id score" in err.problem


# --------------------------------------------------------------------------------- encodings
@pytest.mark.parametrize(
    "reader, content, line",
    [
        (iter_queries, b"1\tok\n2\tbad \xff byte\n", 2),
        (iter_collection, b"1\tok\n2\tok\n3\t\xc3\x28\n", 3),
        (iter_run, b"1 Q0 d1 1 1.0 t\n1 Q0 d\xe9 2 0.5 t\n", 2),
        (iter_qrels, b"1 0 d\x80 1\n", 1),
        (iter_triples, b"q\tp\tn\xfe\n", 1),
        (iter_tevatron, b'{"query": "\xff"}\n', 1),
        (iter_beir_corpus, b'{"_id": "1", "text": "ok"}\n{"_id": "2", "text": "\xff"}\n', 2),
        (iter_rank_llm, b'[\n {"query": "q",\n  "hits": []},\n {"query": "\xff", "hits": []}\n]\n', 4),
    ],
)
def test_not_utf8(tmp_path, reader, content, line):
    fails(reader, write(tmp_path, "f", content), line, "not valid UTF-8", "0x")


def test_utf8_bom_is_dropped(tmp_path):
    path = write(tmp_path, "q.tsv", b"\xef\xbb\xbf1\tfirst\n2\tsecond\n")
    assert load_queries(path) == {"1": "first", "2": "second"}
    path = write(tmp_path, "r.json", b'\xef\xbb\xbf[{"query": {"text": "q", "qid": 7}, "hits": []}]')
    assert list(iter_rank_llm(path)) == []
    path = write(tmp_path, "c.jsonl", b'\xef\xbb\xbf{"_id": "1", "text": "t"}\n')
    assert [p.pid for p in iter_beir_corpus(path)] == ["1"]


def test_utf16_file_is_named(tmp_path):
    path = write(tmp_path, "q.tsv", "1\tquery\n".encode("utf-16"))
    fails(iter_queries, path, 1, "UTF-16")


def test_crlf_and_blank_lines(tmp_path):
    path = write(tmp_path, "q.tsv", "1\tfirst\r\n\r\n2\tsecond\r\n   \n")
    assert load_queries(path) == {"1": "first", "2": "second"}


# -------------------------------------------------------------------------------- empty texts
@pytest.mark.parametrize(
    "reader, content, line, what",
    [
        (iter_queries, "1\tok\n2\t\n", 2, "empty query text"),
        (iter_queries, "1\tok\n2\t   \n", 2, "empty query text"),
        (iter_queries, "\tno id\n", 1, "empty qid"),
        (iter_collection, "1\tok\n2\t\n", 2, "empty passage text"),
        (iter_collection, "1\t\t\n", 1, "empty passage text"),
        (iter_top1000, "1\t2\t\tpassage\n", 1, "empty query text"),
        (iter_triples, "q\tp\t \n", 1, "empty negative passage text"),
        (iter_beir_queries, '{"_id": "1", "text": ""}\n', 1, "empty query text"),
        (iter_beir_corpus, '{"_id": "1", "title": "", "text": " "}\n', 1, "empty passage text"),
        (iter_tevatron, '{"query": "", "positive_passages": []}\n', 1, "empty 'query'"),
        (iter_hardneg, '{"query": "q", "pos": ["p"], "neg": [""]}\n', 1, "empty neg[0]"),
        (iter_rank_llm, '[{"query": "q", "hits": [{"qid": 1, "docid": "d", "content": ""}]}]', 1, "empty 'content'"),
    ],
)
def test_empty_text(tmp_path, reader, content, line, what):
    fails(reader, write(tmp_path, "f", content), line, what)


def test_title_only_passage_is_not_empty(tmp_path):
    path = write(tmp_path, "c.tsv", "1\tA title\t\n")
    assert list(iter_collection(path)) == [Passage("1", "", "A title")]


# -------------------------------------------------------------------------------- duplicates
@pytest.mark.parametrize(
    "reader, content, line",
    [
        (iter_queries, "1\tsame\n2\tother\n1\tdifferent\n", 3),
        (iter_collection, "1\tsame\n1\tdifferent\n", 2),
        (iter_top1000, "1\t2\tq\tp\n1\t2\tq\tp2\n", 2),
        (iter_beir_corpus, '{"_id": "1", "text": "a"}\n{"_id": "1", "text": "b"}\n', 2),
        (iter_beir_queries, '{"_id": "1", "text": "a"}\n{"_id": "1", "text": "b"}\n', 2),
        (load_queries, "1\tsame\n1\tdifferent\n", 2),
        (load_collection, "1\tsame\n1\tdifferent\n", 2),
    ],
)
def test_duplicate_id_with_different_text(tmp_path, reader, content, line):
    fails(reader, write(tmp_path, "f", content), line, "duplicate", "'1'")


@pytest.mark.parametrize("loader", [load_queries, lambda p, **kw: {q.qid: q.text for q in iter_queries(p, **kw)}])
def test_exact_duplicate_is_counted_not_an_error(tmp_path, loader):
    path = write(tmp_path, "q.tsv", "1\tsame\n2\tx\n1\tsame\n1\tsame\n")
    report = DataReport(str(path))
    assert loader(path, report=report) == {"1": "same", "2": "x"}
    assert (report.read, report.skipped, report.duplicates) == (2, 0, 2)
    assert "2 exact duplicates" in report.summary()


def test_exact_duplicate_collection_and_qrels(tmp_path):
    report = DataReport("c")
    path = write(tmp_path, "c.tsv", "1\ta\n1\ta\n2\tb\n")
    assert [p.pid for p in iter_collection(path, report=report)] == ["1", "2"]
    assert report.duplicates == 1
    report = DataReport("q")
    path = write(tmp_path, "q.txt", "1 0 d1 2\n1 0 d1 2\n")
    assert load_qrels(path, report=report) == {"1": {"d1": 2}}
    assert (report.read, report.duplicates) == (1, 1)


def test_plain_read_report_works_too(tmp_path):
    report = ReadReport("q")
    path = write(tmp_path, "q.tsv", "1\tsame\n1\tsame\n2\t\n")
    assert load_queries(path, lenient=True, report=report) == {"1": "same"}
    assert (report.read, report.skipped) == (1, 1)


def test_qrels_judged_twice_with_different_grades(tmp_path):
    path = write(tmp_path, "q.txt", "1 0 d1 2\n1 0 d2 0\n1 0 d1 3\n")
    fails(iter_qrels, path, 3, "judged twice", "2 and 3")


def test_run_duplicate_docid(tmp_path):
    path = write(tmp_path, "r.run", "1 Q0 d1 1 2 t\n2 Q0 d1 1 2 t\n1 Q0 d1 2 1 t\n")
    fails(iter_run, path, 3, "duplicate docid 'd1'", "'1'")


# ---------------------------------------------------------------------------- runs and numbers
@pytest.mark.parametrize(
    "line_text, words",
    [
        ("1 Q0 d2 2 high t", ("score", "'high'", "not a number")),
        ("1 Q0 d2 2 nan t", ("score", "not a finite number")),
        ("1 Q0 d2 2 inf t", ("score", "not a finite number")),
        ("1 Q0 d2 two 1.0 t", ("rank", "'two'", "not an integer")),
        ("1 Q0 d2 1.5 1.0 t", ("rank", "not an integer")),
        ("1 Q0 d2 -1 1.0 t", ("rank", "negative")),
    ],
)
def test_run_bad_numbers(tmp_path, line_text, words):
    path = write(tmp_path, "r.run", f"1 Q0 d1 1 2.0 t\n{line_text}\n")
    fails(iter_run, path, 2, *words)


def test_qrels_bad_grade(tmp_path):
    fails(iter_qrels, write(tmp_path, "q.txt", "1 0 d1 relevant\n"), 1, "grade", "not an integer")


def test_run_unknown_docid_and_qid(tmp_path):
    path = write(tmp_path, "r.run", "1 Q0 d1 1 2 t\n1 Q0 d9 2 1 t\n")
    fails(iter_run, path, 2, "unknown docid 'd9'", known_docids={"d1"})
    fails(load_run, path, 2, "unknown docid 'd9'", known_docids={"d1": 0})
    fails(iter_run, path, 1, "unknown qid '1'", known_qids={"2"})


def test_qrels_unknown_qid(tmp_path):
    path = write(tmp_path, "q.txt", "1 0 d1 1\n7 0 d1 1\n")
    fails(iter_qrels, path, 2, "unknown qid '7'", known_qids={"1"})
    fails(load_qrels, path, 2, "unknown qid '7'", known_qids={"1": "q"})
    fails(iter_qrels, path, 1, "unknown docid 'd1'", known_docids=set())


def test_load_run_sorts_by_score_then_rank(tmp_path):
    path = write(tmp_path, "r.run", "1 Q0 a 3 1.0 t\n1 Q0 b 2 1.0 t\n1 Q0 c 1 5.0 t\n2 0 x 1 0 t\n")
    run = load_run(path)
    assert [e.docid for e in run["1"]] == ["c", "b", "a"]
    assert list(run) == ["1", "2"] and run["2"][0].tag == "t"


def test_ids_with_whitespace(tmp_path):
    fails(iter_queries, write(tmp_path, "q.tsv", "1 2\ttext\n"), 1, "qid '1 2' contains whitespace")


# ----------------------------------------------------------------------------------- JSON files
@pytest.mark.parametrize(
    "reader, content, line, words",
    [
        (iter_tevatron, '{"query": "q", "positive_passages": [{"text": "p"}]}\nnot json\n', 2, ("not valid JSON",)),
        (iter_tevatron, "[1, 2]\n", 1, ("expected an object",)),
        (iter_tevatron, '{"query": "q", "positive_passages": []}\n', 1, ("positive_passages", "empty")),
        (iter_tevatron, '{"query": "q", "positive_passages": [{"docid": "1"}]}\n', 1, ("missing",)),
        (iter_tevatron, '{"query": "q", "positive_passages": [{"text": 3}]}\n', 1, ("expected a string",)),
        (iter_hardneg, '{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1], "neg_scores": [1, 2]}\n',
         1, ("'neg_scores' has 2 scores", "'neg' has 1 passages")),
        (iter_hardneg, '{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1]}\n', 1, ("without",)),
        (iter_hardneg, '{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": ["x"], "neg_scores": [1]}\n',
         1, ("pos_scores[0]", "expected a number")),
        (iter_hardneg, '{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [NaN], "neg_scores": [1]}\n',
         1, ("finite",)),
        (iter_hardneg, '{"query": "q", "pos": ["\\ud800"], "neg": []}\n', 1, ("surrogate",)),
        (iter_beir_corpus, '{"text": "no id"}\n', 1, ("missing '_id'",)),
        (iter_beir_corpus, '{"_id": true, "text": "t"}\n', 1, ("'_id' is a JSON boolean",)),
    ],
)
def test_jsonl_problems(tmp_path, reader, content, line, words):
    fails(reader, write(tmp_path, "f.jsonl", content), line, *words)


def _rank_llm_doc(records: list) -> str:
    # one key per line, as rank_llm writes it (indent=2)
    return json.dumps(records, indent=2)


def test_rank_llm_problems_name_record_line_and_index(tmp_path):
    good = {"query": {"text": "q1", "qid": 1}, "hits": [{"qid": 1, "docid": "a", "rank": 1, "score": 2.0, "content": "x"}]}
    bad_hit = {"query": "q2", "hits": [
        {"qid": 2, "docid": "b", "rank": 1, "score": 2.0, "content": "y"},
        {"qid": 2, "docid": "c", "rank": "first", "score": 1.0, "content": "z"},
    ]}
    text = _rank_llm_doc([good, bad_hit])
    path = write(tmp_path, "r.json", text)
    start = text.splitlines().index("  {", 2) + 1  # line where the second record starts
    err = fails(iter_rank_llm, path, start, "record 1, hit 1", "'rank'", "expected an integer")
    assert start > 2
    report = DataReport(str(path))
    got = list(iter_rank_llm(path, lenient=True, report=report))
    assert [c.docid for c in got] == ["a", "b"] and (report.read, report.skipped) == (2, 1)
    assert err.problem in report.problems[0]


@pytest.mark.parametrize(
    "records, words",
    [
        ([{"query": "q", "hits": [{"docid": "a", "content": "x"}]}], ("no qid",)),
        ([{"query": {"text": "q", "qid": 1}, "hits": [{"qid": 2, "docid": "a", "content": "x"}]}], ("differs",)),
        ([{"hits": []}], ("missing 'query'",)),
        ([{"query": "q", "hits": {}}], ("'hits'", "expected a list")),
        ([{"query": "q", "hits": [{"qid": 1, "docid": "a", "content": "x"}, {"qid": 1, "docid": "a", "content": "x"}]}],
         ("duplicate docid 'a'",)),
        ("not a list", ("expected a JSON array",)),
    ],
)
def test_rank_llm_record_problems(tmp_path, records, words):
    fails(iter_rank_llm, write(tmp_path, "r.json", json.dumps(records)), 1, *words)


def test_rank_llm_broken_json_is_fatal_even_lenient(tmp_path):
    path = write(tmp_path, "r.json", '[\n{"query": "q", "hits": []},\n{"query": \n')
    fails(iter_rank_llm, path, 4, "not valid JSON", lenient=True)
    path = write(tmp_path, "r2.json", '[{"query": "q", "hits": []}] extra')
    fails(iter_rank_llm, path, 1, "extra data")


def test_rank_llm_jsonl_layout(tmp_path):
    line = {"query": {"text": "q", "qid": "5"}, "hits": [{"docid": 9, "rank": 1, "score": 1, "content": "c"}]}
    path = write(tmp_path, "r.jsonl", json.dumps(line) + "\n" + json.dumps(line).replace('"5"', '"6"') + "\n")
    got = list(iter_rank_llm(path))
    assert [(c.qid, c.docid, c.rank, c.score) for c in got] == [("5", "9", 1, 1.0), ("6", "9", 1, 1.0)]


# --------------------------------------------------------------------------------- collections
def test_collection_three_columns_and_headers(tmp_path):
    path = write(tmp_path, "c.tsv", "1\tTitle one\tText one\n2\t\tText two\n")
    got = list(iter_collection(path))
    assert [(p.pid, p.title, p.text) for p in got] == [("1", "Title one", "Text one"), ("2", "", "Text two")]
    path = write(tmp_path, "dpr.tsv", "id\ttext\ttitle\n1\tText one\tTitle one\n")
    assert [(p.pid, p.title, p.text) for p in iter_collection(path)] == [("1", "Title one", "Text one")]
    path = write(tmp_path, "h.tsv", "pid\ttext\n1\tT\n")
    assert load_collection(path)["1"].text == "T"


# ------------------------------------------------------------------------------- missing files
@pytest.mark.parametrize("reader", [iter_queries, iter_run, iter_rank_llm, iter_tevatron, load_qrels])
def test_missing_file_and_directory(tmp_path, reader):
    fails(reader, tmp_path / "nope.txt", None, "file not found")
    fails(reader, tmp_path, None, "is a directory")


# ------------------------------------------------------------------------------------ lenient
def test_lenient_skips_and_counts_every_case(tmp_path):
    lines = [
        b"1\tgood one",         # 1 good
        b"2 no tab",            # 2 wrong column count
        b"3\tbad \xff byte",    # 3 not UTF-8
        b"4\t",                 # 4 empty text
        b"1\tdifferent",        # 5 duplicate id, different text
        b"1\tgood one",         # 6 exact duplicate: counted, not skipped
        b"5\tgood five",        # 7 good
    ]
    path = write(tmp_path, "q.tsv", b"\n".join(lines) + b"\n")
    report = DataReport(str(path))
    got = list(iter_queries(path, lenient=True, report=report))
    assert [q.qid for q in got] == ["1", "5"]
    assert (report.read, report.skipped, report.duplicates) == (2, 4, 1)
    assert [p.split(":")[1] for p in report.problems] == ["2", "3", "4", "5"]
    with pytest.raises(DataError) as info:
        list(iter_queries(path))
    assert info.value.line == 2


def test_lenient_run_and_qrels(tmp_path):
    run = write(tmp_path, "r.run", "1 Q0 a 1 2 t\n1 Q0 b 2 x t\n1 Q0 zz 3 1 t\n9 Q0 a 1 1 t\n1 Q0 a 4 0 t\n1 Q0 c 5 0 t\n")
    report = DataReport(str(run))
    got = load_run(run, lenient=True, report=report, known_qids={"1"}, known_docids={"a", "b", "c"})
    assert [e.docid for e in got["1"]] == ["a", "c"]
    assert (report.read, report.skipped) == (2, 4)
    qrels = write(tmp_path, "q.txt", "1 0 a 1\n2 0 a 1\n1 0 a 0\n1 0 b\n")
    report = DataReport(str(qrels))
    assert load_qrels(qrels, lenient=True, report=report, known_qids={"1"}) == {"1": {"a": 1}}
    assert (report.read, report.skipped) == (1, 3)


def test_lenient_loader_warns(tmp_path, caplog):
    path = write(tmp_path, "q.tsv", "1\tok\n2\t\n")
    with caplog.at_level(logging.WARNING, logger="lorank.data"):
        assert load_queries(path, lenient=True) == {"1": "ok"}
    assert any("read 1, skipped 1" in r.getMessage() and r.name == "lorank.data" for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lorank.data"):
        load_queries(path, lenient=True, warn=False)
        load_queries(write(tmp_path, "ok.tsv", "1\tok\n"), lenient=True)
    assert not caplog.records


def test_lenient_jsonl(tmp_path):
    path = write(tmp_path, "t.jsonl", '{"query": "q", "positive_passages": [{"text": "p"}]}\n{bad\n[]\n'
                 '{"query": "q2", "query_id": 7, "positive_passages": [{"docid": "d", "title": "T", "text": "p"}],'
                 ' "negative_passages": [{"text": "n"}]}\n')
    report = DataReport(str(path))
    got = list(iter_tevatron(path, lenient=True, report=report))
    assert [g.qid for g in got] == [None, "7"] and got[1].negatives[0].text == "n"
    assert got[1].positives[0].title == "T" and (report.read, report.skipped) == (2, 2)


# ------------------------------------------------------------------------------ whole folders
def _dl_dir(tmp_path: Path, run: str, qrels: str = "1 0 a 1\n") -> Path:
    d = tmp_path / "set"
    write(d, "queries.tsv", "1\tquery one\n2\tquery two\n")
    write(d, "collection.tsv", "a\tpassage a\nb\tpassage b\n")
    write(d, "bm25.run", run)
    write(d, "qrels.txt", qrels)
    return d


def test_trec_dl_dir_checks_run_and_qrels(tmp_path):
    d = _dl_dir(tmp_path, "1 Q0 a 1 2 t\n1 Q0 b 2 1 t\n2 Q0 b 1 1 t\n")
    s = load_trec_dl_dir(d)
    assert s.name == "set" and [p.pid for p in s.candidates("1")] == ["a", "b"] and s.qids == ["1", "2"]
    with pytest.raises(KeyError):
        s.candidates("3")
    d = _dl_dir(tmp_path, "1 Q0 a 1 2 t\n1 Q0 zz 2 1 t\n")
    with pytest.raises(DataError) as info:
        load_trec_dl_dir(d)
    assert info.value.path == str(d / "bm25.run") and info.value.line == 2 and "zz" in info.value.problem
    d = _dl_dir(tmp_path, "1 Q0 a 1 2 t\n", qrels="1 0 a 1\n3 0 a 1\n")
    with pytest.raises(DataError) as info:
        load_trec_dl_dir(d)
    assert info.value.path == str(d / "qrels.txt") and info.value.line == 2 and "'3'" in info.value.problem


def test_beir_dir(tmp_path):
    d = tmp_path / "beir"
    write(d, "corpus.jsonl", '{"_id": "d1", "title": "T", "text": "x"}\n{"_id": "d2", "text": "y"}\n')
    write(d, "queries.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "b", "metadata": {}}\n')
    write(d, "qrels/test.tsv", "query-id\tcorpus-id\tscore\nq2\td1\t1\n")
    ds = load_beir(d)
    assert ds.queries == {"q2": "b"} and ds.qrels == {"q2": {"d1": 1}} and len(ds.corpus) == 2
    with pytest.raises(DataError, match="no qrels for split 'dev'"):
        load_beir(d, split="dev")
    write(d, "qrels/test.tsv", "query-id\tcorpus-id\tscore\nq3\td1\t1\n")
    with pytest.raises(DataError) as info:
        load_beir(d)
    assert info.value.line == 2 and "unknown qid 'q3'" in info.value.problem
    assert load_beir(d, lenient=True).qrels == {}
