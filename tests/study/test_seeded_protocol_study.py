"""A whole study under the protocol, end to end on a tiny random model: seeds, a dense curve on the dev set, a test
set scored on two saved checkpoints once each run has finished, declared verdict rules; then the findings read
it back with the right roles and seeds, and the report renders (what paper-smollm2-cpu-seeds does at 135M)."""
from __future__ import annotations

import json

import yaml

from lorank.report import build_report
from lorank.study import load_results, run_study
from tests.tinydata import make_trec_dir, save_tiny_model


def test_a_seeded_study_with_a_test_set_gives_findings_with_roles_and_seeds(tmp_path):
    dev = make_trec_dir(tmp_path / "dev", n_queries=5, n_cands=8)
    test = make_trec_dir(tmp_path / "held", n_queries=6, n_cands=8, seed=2, first_qid=700)
    model = save_tiny_model(tmp_path / "model")
    spec = {
        "name": "tiny-protocol", "models": [str(model)], "seeds": [1, 2],
        "train": {"data": [{"kind": "trec", "path": str(dev)}], "group_size": 4, "batch_queries": 1,
                  "max_steps": 4, "checkpoints": {"steps": "2,4"},
                  "eval": {"sets": [str(dev)], "depth": 8, "curve": {"every": 1, "depth": 4},
                           "test_sets": [str(test)], "test_steps": [2, 4]}},
        "lora": {"rank": 2, "alpha": 4, "dropout": 0.0},
        "grid": [{"rank": [2]}, {"components": ["mha", "mlp"]}],
        "report": {"reference": {"rank": 2, "components": "all"}, "test_sets": [str(test)]},
        "verdicts": {"equivalence_margin": 0.05, "recover_line": 0.8, "confirmatory": [1, 3, 5], "bootstrap": 500},
    }
    f = tmp_path / "spec.yaml"
    f.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    run_study(f, out)
    build_report(out)
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) == 6 and sum("-s1-" in r for r in runs) == 3 and sum("-s2-" in r for r in runs) == 3
    for r in runs:
        metrics = [json.loads(x) for x in (out / "runs" / r / "metrics.jsonl").read_text().splitlines()]
        assert sorted((m["step"], m["role"]) for m in metrics) == [(2, "dev"), (2, "test"), (4, "dev"), (4, "test")]
        curve = [json.loads(x) for x in (out / "runs" / r / "curve.jsonl").read_text().splitlines()]
        assert [c["step"] for c in curve] == [1, 2, 3, 4] and {c["role"] for c in curve} == {"dev"}
    df = load_results(out)
    assert set(df[df.source == "checkpoint"].role) == {"dev", "test"} and set(df[df.source == "curve"].role) == {"dev"}
    findings = json.loads((out / "findings.json").read_text())
    assert [f["finding"] for f in findings] == [1, 2, 3, 4, 5]
    for fi in findings:
        assert fi["role"] == "test" and fi["sets"] == ["held"] and fi["n_queries"] == 6
        assert fi["dev"]["sets"] == ["dev"] and fi["verdict_rules"]["equivalence_margin"] == 0.05
        assert fi["confirmatory"] == (fi["finding"] in (1, 3, 5))
    f1, f3 = findings[0], findings[2]
    # the tiny runs may or may not beat the first stage: either the gate says so, or the seeds are compared
    if f1["evidence"]["gate"]["passed"]:
        assert f3["n_seeds"] == 2 and set(f3["evidence"]["conditions"]["mha"]["seed_means"]) == {"s1", "s2"}
        assert "dev sets' dense curve (4 points)" in f1["reason"]
    else:
        assert "not significantly above BM25" in f1["reason"]
    gate = next(v for k, v in f1["p_values"].items() if k.startswith("gate"))
    assert gate["role"] == "test" and gate["n_seeds"] == [2, 1]
    assert (out / "report" / "index.html").is_file()
    # the conditions drawn per finding, seeds and CIs, dev and test side by side, and the seed-spread table
    cond = json.loads((out / "conditions.json").read_text())
    assert set(cond["figures"]) == {"1", "3", "5"}          # one rank only: no finding-2 figure
    for png in cond["figures"].values():
        assert (out / "report" / png.split("/report/")[-1]).stat().st_size > 10_000
    rows = {(c["label"], c["role"]): c for c in cond["conditions"]}
    assert set(rows) == {(c, r) for c in ("r2-all", "r2-mha", "r2-mlp") for r in ("dev", "test")}
    for c in rows.values():
        assert c["n_seeds"] == 2 and set(c["seed_means"]) == {"s1", "s2"} and c["ci95"][0] <= c["mean"] <= c["ci95"][1]
        assert c["n_queries"] == (6 if c["role"] == "test" else 5)
    html = (out / "report" / "index.html").read_text()
    assert "The seed spread of every condition" in html and "finding3_conditions.png" in html
    # a run still in training (its marker not written yet: stopped between sessions) has no final checkpoint: its
    # last evaluated one is not counted as a seed of its condition, nor marked final in results.csv
    import shutil

    from lorank.layout.study import STEP_MARKER

    part = tmp_path / "partial"
    shutil.copytree(out, part)
    training = next(r for r in runs if "-mha-s2-" in r)
    (part / "runs" / training / STEP_MARKER).unlink()
    build_report(part)
    cond = json.loads((part / "conditions.json").read_text())
    for c in cond["conditions"]:
        assert c["n_seeds"] == (1 if c["label"] == "r2-mha" else 2), c
        assert set(c["seed_means"]) == ({"s1"} if c["label"] == "r2-mha" else {"s1", "s2"})
    df = load_results(part)
    mine = df[(df.run_id == training) & (df.source == "checkpoint")]
    assert len(mine) == 4 and not mine["final"].any()  # kept, never final
    assert df[(df.run_id != training) & (df.source == "checkpoint")]["final"].sum() == 5 * 2  # dev + test each
