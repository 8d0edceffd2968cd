"""The opening of the demo's report (lorank.report.opening): every takeaway is generated from the figures it is
given (change a figure and the sentence changes; significance words follow the tests), roles are named, and a
missing figure is said to be missing."""
from __future__ import annotations

import copy
from pathlib import Path

from lorank.report.opening import (committed_findings_section, committed_text, components_text, opening_sections,
                                   takeaways_section, vs_bm25_text, windows_text)


def _row(config: str, ndcg: float, rec: float | None, p: float | None, sig: bool | None, full: float = 0.6) -> dict:
    return {"config": config, "ndcg_cut_10": ndcg, "delta_ndcg_cut_10": round(ndcg - full, 4),
            "recovered_ndcg_cut_10": rec, "p_ndcg_cut_10": p, "significant_ndcg_cut_10": sig}


def figures() -> dict:
    return {
        "adapter": {"name": "reference", "folder": "adapters/x", "describe": "adapter reference (adapters/x)",
                    "there": True},
        "slice_vs_bm25": {"eval_set": "dl19", "role": "dev", "queries": 7, "depth": 13, "pairs": 91,
                          "test": "paired t-test", "per_query_ndcg_cut_10": {"q1": [0.2, 0.5], "q2": [0.6, 0.4],
                                                                             "q3": [0.3, 0.3]},
                          "tests": {"ndcg_cut_10": {"reranker": 0.6123, "bm25": 0.4567, "delta": 0.1556,
                                                    "ci95": [0.0712, 0.2346], "p": 0.00123, "significant": True,
                                                    "n_queries": 7},
                                    "recip_rank_10": {"reranker": 0.8, "bm25": 0.7, "delta": 0.1, "ci95": [-0.1, 0.3],
                                                      "p": 0.4, "significant": False, "n_queries": 7}}},
        "dissection": {
            "components": {"where": "DL19 (dev), 7 queries x top-13", "rows": [
                _row("full", 0.6, 100.0, None, None), _row("none", 0.25, 0.0, 2e-5, True),
                _row("mha-only", 0.59, 97.1, 0.61, False), _row("mlp-only", 0.48, 65.7, 0.012, True)]},
            "layer-windows": {"where": "DL19 (dev), 7 queries x top-11", "rows": [
                _row("full", 0.6, 100.0, None, None), _row("none", 0.25, 0.0, 2e-5, True),
                _row("only L0-10", 0.33, 22.9, 0.001, True), _row("only L5-15", 0.45, 57.1, 0.02, True),
                _row("only L10-20", 0.55, 85.7, 0.03, True)]}},
        "adapter_committed": [
            {"eval_set": "dl19", "role": "dev", "depth": 100, "first_stage": "bm25", "queries": 43, "reranker": 0.66,
             "baseline": 0.5, "delta": 0.16, "ci95": None, "p": 1e-6},
            {"eval_set": "dl22", "role": "test", "depth": 100, "first_stage": "bm25", "queries": 76,
             "reranker": 0.4321, "baseline": 0.2987, "delta": 0.1334, "ci95": [0.08, 0.18], "p": 2.5e-6}],
        "committed_studies": {
            "cpu": {"dir": "results/a", "exists": True, "state": {"name": "study-a"},
                    "findings": [{"finding": 1, "claim": "c1", "verdict": "inconclusive", "verdict_dev": "holds",
                                  "role": "dev", "sets": ["dl19"], "reason": "r1", "evidence": {}, "p_values": {}},
                                 {"finding": 2, "claim": "c2", "verdict": "inconclusive",
                                  "verdict_dev": "does not hold", "role": "dev", "sets": ["dl19"], "reason": "r2",
                                  "evidence": {}, "p_values": {}}]},
            "seeds": {"dir": "results/b", "exists": True, "findings": None,
                      "state": {"name": "study-b", "status": "interrupted", "updated": "2026-01-02T03:04:05",
                                "runs_done": 2, "runs_planned": 18, "seeds": 3}}},
        "smoke_training": [{"run_id": "r8-x", "label": "r8-all-s42", "max_steps": 9, "data": ["dl20"],
                            "eval": {"sets": ["dl19"], "depth": 10, "max_queries": 4}}],
    }


def test_the_reranker_takeaway_is_written_from_its_figures_with_roles():
    fig = figures()
    text = vs_bm25_text(fig)
    assert "beats BM25 significantly" in text
    for piece in ("0.612", "0.457", "+0.156", "+0.071 to +0.235", "p = 0.00123", "top-13", "first 7 judged DL19",
                  "dev", "DL22 over BM25: 0.432 against 0.299, +0.133, p = 2.5e-06", "test sets"):
        assert piece in text, piece
    worse = copy.deepcopy(fig)
    worse["slice_vs_bm25"]["tests"]["ndcg_cut_10"].update(delta=0.01, p=0.3, significant=False, reranker=0.467)
    assert "is not significantly different from BM25" in vs_bm25_text(worse) and "0.467" in vs_bm25_text(worse)
    worse["slice_vs_bm25"] = None
    assert "was not scored" in vs_bm25_text(worse)


def test_the_dissection_takeaways_follow_the_sweeps_tests():
    fig = figures()
    comp = components_text(fig)
    assert "keep 97%" in comp and "not significantly different" in comp and "0.61" in comp
    assert "keep 66%" in comp and "significantly below the full adapter" in comp and "0.012" in comp
    assert "cannot be told from the whole adapter" in comp
    win = windows_text(fig)
    assert "of the 3 11-layer windows" in win and "3 are significantly below" in win
    assert "no window carries the whole gain" in win and "this model's 21 layers" in win
    assert "L0-10 23%, L5-15 57%, L10-20 86%" in win and "the best is L10-20" in win and "layers 5-15" in win
    fig["dissection"]["layer-windows"]["rows"][-1].update(significant_ndcg_cut_10=False, p_ndcg_cut_10=0.2)
    win = windows_text(fig)
    assert "2 are significantly below" in win and "not shown below it here: L10-20" in win
    assert "no window carries" not in win
    fig["dissection"] = {}
    assert "has not run" in components_text(fig) and "has not run" in windows_text(fig)


def test_the_windows_takeaway_names_a_declared_target_window():
    fig = figures()
    assert "The paper's layers 5-15 are not the best window of this model's 21 layers." in windows_text(fig)
    rows = fig["dissection"]["layer-windows"]["rows"]
    rows[3]["config"] = "only L3-13"  # the study's declared window (verdicts.target_window), as dissection() gives it
    fig["dissection"]["layer-windows"]["target_window"] = [3, 13]
    win = windows_text(fig)
    assert "The paper's layers 5-15 (declared here: L3-13) are not the best window of this model's 21 layers." in win
    rows[3]["ndcg_cut_10"] = 0.7  # the declared window is the best: nothing to say about it
    assert "paper's layers" not in windows_text(fig)


def test_the_committed_studies_are_read_not_recomputed_and_a_running_one_says_so():
    fig = figures()
    done, running = committed_text(fig)
    assert "2 findings, decided on the test sets: all inconclusive" in done and "results/a" in done
    assert "alone, which chose its recipe: holds: 1; does not hold: 2." in done
    assert "still running" in running and "holds 2 of its 18 training runs" in running and "3 seeds" in running
    sec = committed_findings_section(fig)
    assert len(sec.tables) == 1 and [r[0] for r in sec.tables[0][2]] == ["1", "2"] and "still running" in sec.text


def test_the_opening_sections_render_with_the_per_query_figure(tmp_path: Path):
    fig = figures()
    take, ref = opening_sections(fig, tmp_path)
    assert take.title == "What to take away" and take.text.count("<li>") == 6
    assert takeaways_section(fig).text == take.text
    assert (tmp_path / "reference_vs_bm25.png").stat().st_size > 1000 and ref.images
    slice_table, committed = ref.tables
    assert [r[0] for r in slice_table[2]] == ["nDCG@10", "MRR@10 (rel ≥ 2)"] and "(dev)" in slice_table[0]
    assert [r[:2] for r in committed[2]] == [["dl19", "dev"], ["dl22", "test"]]
