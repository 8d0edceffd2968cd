"""The report section of ``analyses: [{kind: ltr}]`` steps: the LTR comparison table and the importance plot."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from lorank.report.page import SIG, Section, fmt, safe_name
from lorank.report.subjects import dissects_note, subject_text


def ltr_section(plan: Any, study_dir: Path, out: Path) -> Section | None:
    """A :class:`lorank.report.page.Section` for every finished ltr step (None when the study has none)."""
    steps = [s for s in plan.steps if s.kind == "analyze" and s.payload.get("kind") == "ltr"]
    if not steps:
        return None
    sec = Section("Latent features for learning to rank",
                  "LambdaMART (LightGBM lambdarank) trained on the first-stage BM25 score, the reranker's score and "
                  "the latent LoRA activations A x (and their norms) of the adapted projections at the last token, "
                  "tuned on held-out training queries (split by query), evaluated on the test queries. "
                  f"{SIG} = p < 0.05 (paired t-test over queries, Holm-corrected per measure).")
    missing = 0
    for step in steps:
        d = study_dir / step.out_dir
        f = d / "ltr.json"
        if not f.is_file():
            missing += 1
            continue
        res = json.loads(f.read_text(encoding="utf-8"))

        def vs(r: dict[str, Any], base: str) -> tuple[str, str]:
            c = (r.get(f"vs_{base}") or {}).get("ndcg_cut_10")
            if c is None:
                return "", ""
            return fmt(c["delta"]) + (SIG if c["significant"] else ""), fmt(c["p_holm"], 3)

        body = []
        for r in res["rows"]:
            sig = (r.get("vs_BM25") or {}).get("ndcg_cut_10", {}).get("significant")
            body.append([r["row"], str(r.get("features", "-")), fmt(r.get("ndcg_cut_10")) + (SIG if sig else ""),
                         fmt(r.get("recip_rank_10")), *vs(r, "BM25"), *vs(r, "reranker")])
        t = res.get("training", {})
        who = subject_text(plan, step.run_id)
        sec.tables.append((f"{who}: train {res.get('train_set')} ({t.get('train_queries')} + "
                           f"{t.get('valid_queries')} tuning queries), test {res.get('test_set')} "
                           f"({res['test']['judged_queries']} queries)",
                           ["row", "features", "nDCG@10", "MRR@10", "Δ nDCG@10 vs BM25", "p (Holm)",
                            "Δ nDCG@10 vs reranker", "p (Holm)"], body))
        groups = [(r["row"], r["importance"]["by_group"]) for r in res["rows"] if r["kind"] == "ltr"]
        names = sorted({g for _, bg in groups for g in bg})
        if groups:
            sec.tables.append((f"{who}: share of the split gain by feature group", ["row", *names],
                               [[row, *(fmt(bg.get(n, 0.0), 3) for n in names)] for row, bg in groups]))
        for s in res.get("skipped_rows", []):
            sec.text += f"<br>skipped row {s['row']}: {s['reason']}"
        png = d / "ltr_importance.png"
        if png.is_file():
            dst = out / f"ltr_{safe_name(step.run_id)}_importance.png"
            shutil.copyfile(png, dst)
            sec.images.append((f"ltr — {who}: gain importance by layer and projection", dst))
    sec.text += dissects_note(plan, [s.run_id for s in steps])
    if missing:
        sec.text += f" <span class='muted'>({missing} ltr step(s) not run yet)</span>"
    return sec
