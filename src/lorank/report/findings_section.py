"""The report section "Findings vs the paper": the five findings of the paper tested on the study's numbers
(:mod:`lorank.report.findings`), written as ``STUDY_DIR/findings.json`` (beside ``results.csv``: the study's
results, where the report folder holds their presentation) and as a table; also as Markdown for a README
(``lorank findings STUDY_DIR --md FILE``)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lorank.atomic import atomic_write_json, atomic_write_text
from lorank.errors import ConfigError
from lorank.layout.run import trained_precisions
from lorank.layout.study import FINDINGS_FILE, SPEC, run_dir, spec_file as study_spec_file
from lorank.report.markdown_blocks import blocks, update_file
from lorank.mine.protocol import protocol_violations
from lorank.report.conditions import write_condition_figures
from lorank.report.context import reference_run
from lorank.report.findings import _sets, evaluate_findings, figures_text, findings_markdown, p_text, pooled
from lorank.report.findings_data import load_per_query
from lorank.report.findings_model import PerQuery, VerdictRules
from lorank.report.findings_rules import study_runs
from lorank.report.page import Section, fmt
from lorank.study.plan import build_plan
from lorank.study.spec import load_spec
from lorank.study.store import collect_rows

TITLE = "Findings vs the paper"
CONDITIONS_FILE = "conditions.json"  # the conditions' seed spreads and CIs behind the findings' figures
log = logging.getLogger(__name__)


def save_findings(study_dir: Path, findings: list[dict[str, Any]]) -> Path:
    """Write STUDY_DIR/findings.json; a copy an older lorank left in report/ is removed (it would go stale)."""
    study_dir = Path(study_dir)
    old = study_dir / "report" / FINDINGS_FILE
    if old.is_file():
        old.unlink()
        log.info("findings.json now lives at the study's top level: removed the old copy %s", old)
    return atomic_write_json(study_dir / FINDINGS_FILE, findings)


def test_sets(plan: Any) -> list[str]:
    """The study's test sets: ``report.test_sets``, else every set the runs score on their final checkpoint
    (``train.eval.test_sets``)."""
    return list(plan.spec.report.test_sets) or list(dict.fromkeys(
        s for r in plan.runs for s in r.train_config.get("eval", {}).get("test_sets", []) or []))


def findings_view(plan: Any, study_dir: Path) -> PerQuery | None:
    """The dev view the findings are tested on: the first evaluation set of the training runs, or the queries of
    ``report.findings_sets`` pooled (None: the runs evaluate on no set)."""
    sets = [s for r in plan.runs for s in r.train_config.get("eval", {}).get("sets", [])]
    if not sets:
        return None
    chosen = plan.spec.report.findings_sets or sets[:1]  # pooled: their queries together
    return pooled([load_per_query(plan, Path(study_dir), reference_run(plan), s) for s in chosen])


def findings_test_view(plan: Any, study_dir: Path) -> PerQuery | None:
    """The test view: the study's test sets pooled (None: the study has none)."""
    chosen = test_sets(plan)
    if not chosen:
        return None
    return pooled([load_per_query(plan, Path(study_dir), reference_run(plan), s, role="test") for s in chosen])


def protocol_notes(plan: Any) -> list[str]:
    """What the study's runs did against the evaluation protocol (an evaluation pool mined for negatives, ...)."""
    notes: list[str] = []
    for r in plan.runs:
        notes += [f"{r.run_id}: {v}" if len(plan.runs) == 1 else f"the training runs: {v}"
                  for v in protocol_violations(r.train_config)]
    for ext in getattr(plan, "adapters", {}).values():  # the dissected adapters' own training
        cfg = (getattr(ext, "training", None) or {}).get("config")
        if cfg:
            notes += [f"{ext.run_id} (dissected): {v}" for v in protocol_violations(cfg)]
    return list(dict.fromkeys(notes))


def precision_record(plan: Any, study_dir: Path) -> dict[str, Any]:
    """The precisions the study's runs trained in (``dtype: auto`` trains in bf16 on an AMX/AVX512-BF16 CPU and in
    fp32 on an AVX2 one, so a study resumed across machines can mix them): ``by_run`` (run id -> its precisions),
    ``precisions`` (all of them), ``mixed`` (more than one: the seed spread then holds the precision too), and
    ``unknown`` (runs with no record: not trained yet, or trained before lorank recorded it)."""
    by_run: dict[str, list[str]] = {}
    unknown: list[str] = []
    for r in plan.runs:
        dtypes, _ = trained_precisions(run_dir(study_dir, r.run_id))
        if dtypes:
            by_run[r.run_id] = dtypes
        else:
            unknown.append(r.run_id)
    every = sorted({d for ds in by_run.values() for d in ds})
    return {"by_run": by_run, "precisions": every, "mixed": len(every) > 1, "unknown": unknown}


def precision_note(record: dict[str, Any]) -> str:
    """One sentence on the runs' training precisions for the report ("" when no run has a record)."""
    runs = record.get("by_run") or {}
    if not runs:
        return ""
    if not record.get("mixed"):
        return f"Every run trained in {record['precisions'][0]} ({len(runs)} runs with a record)."
    groups: dict[str, list[str]] = {}
    for run_id, ds in runs.items():
        groups.setdefault("+".join(ds), []).append(run_id)
    return ("<b>Mixed training precision</b> (the runs were trained on different kinds of CPU; a difference between "
            "conditions or seeds can hold the precision too): "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(groups.items())) + ".")


_READ = object()  # a view argument not given: read it from the study folder


def study_findings(plan: Any, study_dir: Path, results: Any = None, view: PerQuery | None = None,
                   test_view: Any = _READ) -> list[dict[str, Any]]:
    """The five findings for a study directory ([] when no checkpoint is evaluated on any set), on
    :func:`findings_view` (or `view`, that view already read) and :func:`findings_test_view` (or `test_view`,
    already read: None when the study has no test set)."""
    import pandas as pd

    pq = view if view is not None else findings_view(plan, study_dir)
    if pq is None:
        return []
    if results is None:
        results = pd.DataFrame(collect_rows(plan, Path(study_dir)))
    rules = VerdictRules.from_dict(plan.spec.verdicts)
    if test_view is _READ:
        test_view = findings_test_view(plan, study_dir)
    out = evaluate_findings(results, pq, reference_run(plan).run_id, test=test_view, rules=rules)
    notes = protocol_notes(plan)
    precision = precision_record(plan, Path(study_dir))
    for f in out:
        f["verdict_rules"] = rules.to_dict()
        if notes:
            f["protocol_violations"] = notes
        f["training_precision"] = precision
    return out


def findings_section(plan: Any, study_dir: Path, results: Any = None, view: PerQuery | None = None) -> Section:
    """A :class:`lorank.report.page.Section`; writes ``STUDY_DIR/findings.json`` (and, through the conditions'
    figures, ``conditions.json``). The dev and test views are read once, for the findings and the figures."""
    import pandas as pd

    if results is None:
        results = pd.DataFrame(collect_rows(plan, Path(study_dir)))
    if view is None:
        view = findings_view(plan, study_dir)
    test_view = findings_test_view(plan, study_dir)
    findings = study_findings(plan, study_dir, results, view, test_view)
    save_findings(study_dir, findings)

    sec = Section(TITLE, "The paper's five findings (Mistral-7B, Llama-3.1-8B, Pythia-6.9B on MS MARCO, TREC DL19) "
                  "tested on this study's numbers (the rules: docs/protocol.md in the repository): a verdict is decided on the test sets (reported only, never used to choose) and the "
                  "same rules on the dev sets (which chose the recipe and checkpoint) are shown beside it; "
                  "'comparable' needs an equivalence test (TOST) within the declared margin, 'recovers' a "
                  "non-inferiority test against the declared line; the confirmatory tests are corrected together "
                  "across the study. If the reference adapter is not significantly above BM25, every verdict is "
                  "inconclusive: the differences are noise. Every figure is in the study folder's "
                  "<a href='../findings.json'>findings.json</a>.")
    if not findings:
        sec.text += " <span class='muted'>(no checkpoint evaluated yet)</span>"
        return sec
    notes = findings[0].get("protocol_violations") or []
    if notes:
        sec.text += (" <b>Protocol violations</b> (the figures they touch are not clean evidence): "
                     + "; ".join(notes) + ".")
    precision = precision_note(findings[0].get("training_precision") or {})
    if precision:
        sec.text += " " + precision
    sec.tables.append(("The five findings: the paper's claim, the verdict on the test sets, what the dev sets "
                       "alone give, the deciding figures and the confirmatory tests' study-wide adjusted p-values",
                       ["#", "the paper's claim", "verdict (test)", "on dev", "deciding figures",
                        "p-values (adjusted)", "rule"],
                       [[str(f["finding"]), f["claim"], f"{f['verdict']} ({_sets(f, 'test') or 'no test set'})",
                         f"{f.get('verdict_dev', '-')} ({_sets(f, 'dev')})", figures_text(f), p_text(f), f["rule"]]
                        for f in findings]))
    _conditions_part(sec, plan, study_dir, results, [v for v in (view, test_view) if v is not None])
    return sec


def _conditions_part(sec: Section, plan: Any, study_dir: Path, results: Any, views: list[PerQuery]) -> None:
    """The conditions drawn per finding (seeds as dots, 95% CIs, dev and test side by side) and the seed-spread
    table, into the report folder and ``STUDY_DIR/conditions.json``; `views`: dev first, then test."""
    line = VerdictRules.from_dict(plan.spec.verdicts).recover_line
    drawn = write_condition_figures(study_runs(results), reference_run(plan).run_id, views,
                                    Path(study_dir) / "report", recover_line=line)
    atomic_write_json(Path(study_dir) / CONDITIONS_FILE, drawn)
    captions = {"1": "Finding 1: the reference condition's quality across training (dev curve per seed; every saved "
                     "checkpoint's mean with its 95% CI on dev and, scored once training had finished, on test)",
                "2": "Finding 2: each rank's mean nDCG@10 at the final checkpoint, its seeds (grey dots) and 95% CI "
                     "(queries and seeds resampled), dev and test side by side; dashed: BM25",
                "3": "Finding 3: MHA-only, MLP-only and all projections, as for finding 2",
                "5": "Finding 5: the share of the full adapter's gain over BM25 that MLP-only keeps, with its 95% CI "
                     "and the declared line"}
    for n, png in drawn["figures"].items():
        sec.images.append((captions[n], Path(png)))
    rows = [[c["label"], c["role"], c["sets"], str(c["n_seeds"]), fmt(c["mean"]),
             f"[{fmt(c['ci95'][0], 3)}, {fmt(c['ci95'][1], 3)}]", fmt(c["sd"]), fmt(c["spread"]),
             ", ".join(f"{k} {fmt(v, 3)}" for k, v in c["seed_means"].items())] for c in drawn["conditions"]]
    if rows:
        sec.tables.append(("The seed spread of every condition at its final checkpoint: the mean over seeds, its "
                           "95% CI (queries and seeds resampled), the seeds' SD and range, each seed's mean",
                           ["condition", "role", "sets", "seeds", "nDCG@10", "95% CI", "SD", "range", "per seed"],
                           rows))


def write_findings(study_dir: str | Path, markdown: str | Path | None = None) -> tuple[list[dict[str, Any]], str]:
    """Compute the findings of a study directory, write ``STUDY_DIR/findings.json`` (and `markdown` when given);
    returns (findings, the Markdown table)."""
    study_dir = Path(study_dir)
    spec_file = study_spec_file(study_dir)
    if not study_dir.exists():
        raise ConfigError(f"{study_dir}: no such folder (a study directory, written by `lorank study SPEC.yaml -o "
                          "DIR`): check the path")
    if not spec_file.is_file():
        raise ConfigError(f"{study_dir} is not a study directory (no {SPEC}); run `lorank study SPEC.yaml -o DIR`")
    plan = build_plan(load_spec(spec_file), spec_file, check_data=False)
    findings = study_findings(plan, study_dir)
    save_findings(study_dir, findings)
    md = findings_markdown(findings, f"What the study finds ({plan.spec.name})")
    if markdown is not None:
        _write_markdown(Path(markdown), study_dir, md)
    return findings, md


def _write_markdown(path: Path, study_dir: Path, md: str) -> None:
    """A Markdown file with a generated findings block of this study (``<!-- lorank:findings DIR -->``, DIR relative
    to the file's folder) gets that block rewritten from findings.json; any other file is written with the table."""
    if path.is_file():
        mine = [(k, key) for k, key in blocks(path.read_text(encoding="utf-8"))
                if k == "findings" and (path.resolve().parent / key).resolve() == Path(study_dir).resolve()]
        if mine:
            update_file(path, only=mine[0])
            return
    atomic_write_text(path, md)
