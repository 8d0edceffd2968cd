"""What a report is about: a study directory read once (spec, plan, results table, first stage, reference
run, evaluation sets, the time it took), shared by every section builder of :mod:`lorank.report.build`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorank.data.sources import eval_label
from lorank.errors import ConfigError
from lorank.layout.study import SPEC, spec_file as study_spec_file
from lorank.report.page import read_json
from lorank.study.plan import build_plan
from lorank.study.spec import load_spec
from lorank.study.store import first_stage_rows, write_results
from lorank.study.timing import study_time


@dataclass
class ReportContext:
    study_dir: Path
    spec_file: Path
    spec: Any
    plan: Any
    out: Path  # STUDY_DIR/report
    results: Any  # the results table (pandas), as written to results.csv
    first_stage_rows: list[dict[str, Any]]
    first_stage: dict[str, dict[str, Any]]  # eval label -> BM25 on exactly the queries the checkpoints were evaluated on
    ref: Any  # the reference run (the "full adapter")
    set_names: dict[str, str]  # eval label -> the set's name in the train config
    eval_sets: list[str]
    main_set: str | None
    state: dict[str, Any]  # study_state.json
    compare_sets: list[str]  # eval labels the final checkpoints are compared on: report.findings_sets, else main_set
    compare_label: str | None  # "dl19+dl20" (pooled), or the one set's label
    time: dict[str, Any]  # the time the study took, each step's calls summed (time.json: lorank.study.timing)


def reference_run(plan: Any) -> Any:
    """The report's reference run: the one ``report.reference`` selects, else the first with components=all,
    else the first run."""
    return next((r for r in plan.runs if r.matches(plan.spec.report.reference)), None) or next(
        (r for r in plan.runs if r.axes.get("components") == "all"), plan.runs[0])


def load_context(study_dir: str | Path) -> ReportContext:
    """Read a study directory for its report; writes ``results.csv`` / ``results.parquet`` and ``time.json`` on
    the way."""
    study_dir = Path(study_dir)
    spec_file = study_spec_file(study_dir)
    if not study_dir.exists():
        raise ConfigError(f"{study_dir}: no such folder (a study directory, written by `lorank study SPEC.yaml -o "
                          "DIR`): check the path")
    if not spec_file.is_file():
        raise ConfigError(f"{study_dir} is not a study directory (no {SPEC}); run `lorank study SPEC.yaml -o DIR`")
    spec = load_spec(spec_file)
    plan = build_plan(spec, spec_file, check_data=False)
    out = study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    df = write_results(plan, study_dir, include_first_stage=False)
    fs_rows = first_stage_rows(plan)
    ref = reference_run(plan)
    set_names = {eval_label(s): s for r in plan.runs for s in r.train_config.get("eval", {}).get("sets", [])}
    eval_sets = list(set_names)
    train_mq = ref.train_config.get("eval", {}).get("max_queries")
    compare = [eval_label(x) for x in spec.report.findings_sets] or eval_sets[:1]
    return ReportContext(study_dir=study_dir, spec_file=spec_file, spec=spec, plan=plan, out=out, results=df,
                         first_stage_rows=fs_rows,
                         first_stage={r["eval_set"]: r for r in fs_rows if r.get("max_queries") == train_mq},
                         ref=ref, set_names=set_names, eval_sets=eval_sets,
                         main_set=eval_sets[0] if eval_sets else None,
                         state=read_json(study_dir / "study_state.json"), compare_sets=compare,
                         compare_label="+".join(compare) if compare else None, time=study_time(study_dir))
