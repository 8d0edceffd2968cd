"""Across families: finished studies of different model families (SmolLM2-135M's 30 layers, Gemma 3 270M's 18, ...)
side by side, one column per family (``lorank families STUDY_DIR [STUDY_DIR ...] --out DIR``; issue 43).

Nothing is decided here. Each family's verdicts are its study's ``findings.json``, as ``lorank findings`` wrote it
under the rules that study declared (:mod:`lorank.report.findings`); a note says when the studies declare different
rules. Finding 4's layer window is declared per family (``verdicts.target_window``: 5-15 of 30 layers spans about
the depth of 3-9 of 18), so it is not counted as a rule that differs: the table names each family's.
Beside each verdict sit the figures it rests on or that the issue asks to compare, each with its role (dev or test),
its sets and its number of queries:

- the verdict-side figures of the findings themselves (the checkpoint curve's first and last point, the ranks' final
  nDCG@10, MHA/MLP trained separately, the recovered fraction of trained MLP-only): from ``findings.json``, on the
  view that decided the finding;
- the dissected adapter's ablations (the share of its gain that MHA-only and MLP-only keep, the best layer window and
  its normalised depth, up/gate against down, leave-one-layer-out, rank truncation): from the study's
  ``ablations.json`` files, the sets of one role pooled with each set weighted by its number of queries (as the
  findings pool per query).

A layer position is compared across depths as a fraction of the model's layers: a window L{lo}-{hi} spans
[lo / n_layers, (hi + 1) / n_layers] and its centre is (lo + hi + 1) / 2 / n_layers (0: the input, 1: the output).
``n_layers`` is the model's (its known shape or config.json), else the dissected adapter's (its weights analysis),
else a complete leave-one-layer-out sweep's. A sweep or finding a study did not run is written "not run", never left out."""
from __future__ import annotations

from dataclasses import dataclass, field
import json
from pathlib import Path
from typing import Any

from lorank.ablate.windows import PAPER_WINDOW, Window, config_window, paper_window_text, window_config, window_label
from lorank.atomic import atomic_write_json, atomic_write_text
from lorank.data.roles import role_of
from lorank.data.sources import eval_label
from lorank.errors import ConfigError
from lorank.layout.study import FINDINGS_FILE, SPEC, spec_file
from lorank.models.random_init import SHAPES
from lorank.plotting import pyplot, save_figure
from lorank.report.context import reference_run
from lorank.report.findings import CLAIMS, _sets
from lorank.report.findings_data import ablation_subject
from lorank.report.findings_model import VerdictRules
from lorank.study.plan import build_plan, model_config
from lorank.study.spec import load_spec
from lorank.study.store import finished_ablations

NOT_RUN = "not run"
JSON_FILE, MD_FILE, FIGURE = "families.json", "families.md", "layer_window_profiles.png"
UP_GATE, DOWN = ("up_proj", "gate_proj"), "down_proj"  # the projections finding 4 compares (Llama / Gemma names)
#: the row of finding 4's window: the paper's L5-15, or the window a family's study declares for it
PAPER_ROW = f"the paper's {window_label(PAPER_WINDOW)}"


@dataclass
class Family:
    """One finished study, read once: its findings and its dissected adapter's ablations pooled per role."""

    study_dir: Path
    name: str  # the study's name
    model: str  # the reference run's model
    n_layers: int
    n_layers_from: str  # where n_layers came from
    subject: str  # whose ablations: a run id or adapter:<name>
    findings: list[dict[str, Any]]
    #: role -> sweep -> config -> {"ndcg": pooled nDCG@10, "sets": [...], "n_queries": n}
    ablations: dict[str, dict[str, dict[str, dict[str, Any]]]] = field(default_factory=dict)
    shown: str = ""  # the folder as the tables name it (a README block: as its marker gives it)

    @property
    def label(self) -> str:
        return f"{self.model} ({self.n_layers} layers; {self.name})"

    @property
    def target_window(self) -> Window:
        """Finding 4's window, as the study's findings.json was decided under (the paper's 5-15 unless declared)."""
        return VerdictRules.from_dict(self.findings[0].get("verdict_rules") if self.findings else None).target_window


def _study(study_dir: Path) -> tuple[Any, list[dict[str, Any]]]:
    """(plan, findings) of a finished study; a clear error naming the folder or file that is missing."""
    if not study_dir.is_dir():
        raise ConfigError(f"{study_dir}: no such study folder (a finished study, e.g. a snapshot under results/): "
                          "check the path")
    if not spec_file(study_dir).is_file():
        raise ConfigError(f"{study_dir} is not a study directory (no {SPEC})")
    f = study_dir / FINDINGS_FILE
    if not f.is_file():
        raise ConfigError(f"{f} does not exist: run `lorank findings {study_dir}` first")
    return (build_plan(load_spec(spec_file(study_dir)), spec_file(study_dir), check_data=False),
            json.loads(f.read_text(encoding="utf-8")))


def pooled_ablations(plan: Any, study_dir: Path, subject: str) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """role -> sweep -> config -> pooled nDCG@10 over the sets of that role (each set weighted by its queries)."""
    per: dict[tuple[str, str, str], dict[str, tuple[int, float]]] = {}
    for _, _, data in finished_ablations(plan, study_dir, subject):
        label, role, q = eval_label(data.get("eval_set", "")), role_of(data.get("eval_set", "")), data.get("queries")
        for sweep, entry in data.get("sweeps", {}).items():
            for r in entry["rows"]:
                per.setdefault((role, sweep, r["config"]), {})[label] = (int(q or 1), float(r["ndcg_cut_10"]))
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for (role, sweep, config), by_set in per.items():
        n = sum(q for q, _ in by_set.values())
        out.setdefault(role, {}).setdefault(sweep, {})[config] = {
            "ndcg": round(sum(q * v for q, v in by_set.values()) / n, 4), "sets": list(by_set), "n_queries": n}
    return out


def _layers_from_sweep(ablations: dict[str, Any]) -> int | None:
    """The layer count a complete leave-one-layer-out sweep shows (without L0 ... without L{n-1})."""
    for sweeps in ablations.values():
        layers = sorted(int(c.removeprefix("without L")) for c in sweeps.get("layers-leave-one-out", {})
                        if c.startswith("without L"))
        if layers and layers == list(range(len(layers))):
            return len(layers)
    return None


def n_layers_of(plan: Any, study_dir: Path, subject: str, model: str, ablations: dict[str, Any]) -> tuple[int, str]:
    """(the dissected model's number of layers, where it came from): the model's known shape or its local
    config.json, else the adapter's weights analysis (its last LoRA layer + 1), else a complete leave-one-layer-out
    sweep; an error when none says."""
    if model in SHAPES:
        return int(SHAPES[model][1]["num_hidden_layers"]), f"the known shape of {model}"
    cfg = model_config(model) if Path(model).is_dir() else None
    if cfg is not None:
        return int(cfg.num_hidden_layers), f"{model}/config.json"
    for step in plan.steps:
        f = study_dir / step.out_dir / "weights.json"
        if step.kind == "analyze" and step.run_id == subject and step.payload.get("kind") == "weights" and f.is_file():
            n = json.loads(f.read_text(encoding="utf-8")).get("num_layers")
            if n:
                return int(n), f"the weights analysis ({step.out_dir}/weights.json)"
    n = _layers_from_sweep(ablations)
    if n:
        return n, f"the leave-one-layer-out sweep (L0 ... L{n - 1})"
    raise ConfigError(f"{study_dir}: the number of layers of {model} is unknown (not a known model shape, no "
                      f"config.json, no weights analysis of {subject}, no complete leave-one-layer-out sweep): the "
                      "layer windows cannot be placed on a normalised depth")


def read_family(study_dir: str | Path, shown: str | None = None) -> Family:
    """One finished study as a :class:`Family`; `shown`: its folder as the tables name it (default: as given)."""
    study_dir = Path(study_dir)
    return family_of(study_dir, *_study(study_dir), shown=shown)


def family_of(study_dir: Path, plan: Any, findings: list[dict[str, Any]], shown: str | None = None) -> Family:
    """The :class:`Family` of a study already read (its plan and findings, :func:`_study`)."""
    ref = reference_run(plan)
    subject = ablation_subject(plan, ref)
    ablations = pooled_ablations(plan, study_dir, subject)
    n, source = n_layers_of(plan, study_dir, subject, ref.model, ablations)
    return Family(study_dir, plan.spec.name, ref.model, n, source, subject, findings, ablations,
                  shown or str(study_dir))


def depth(lo: int, hi: int, n_layers: int) -> dict[str, float]:
    """The window L{lo}-{hi} of an n_layers model on the normalised depth axis: its centre and its extent."""
    return {"centre": round((lo + hi + 1) / 2 / n_layers, 4), "start": round(lo / n_layers, 4),
            "end": round((hi + 1) / n_layers, 4)}


def _share(x: float, full: float, none: float) -> float | None:
    """The share of the adapter's gain over LoRA off that a configuration keeps."""
    return None if full == none else round((x - none) / (full - none), 4)


def window_profile(fam: Family, role: str) -> list[dict[str, Any]]:
    """Every "only window" configuration of one role, by depth: layers, normalised depth, nDCG@10, share kept."""
    rows = fam.ablations.get(role, {}).get("layer-windows", {})
    full, none = rows.get("full"), rows.get("none")
    out = []
    for config, r in rows.items():
        span = config_window(config)
        if span is None:
            continue
        out.append({"config": config, "layers": list(span), **depth(*span, fam.n_layers), "ndcg": r["ndcg"],
                    "share": _share(r["ndcg"], full["ndcg"], none["ndcg"]) if full and none else None,
                    "role": role, "sets": r["sets"], "n_queries": r["n_queries"]})
    return sorted(out, key=lambda w: (w["centre"], w["layers"]))


def profile_role(fam: Family) -> str | None:
    """The role a family's layer-window profile is drawn on: test when it has one, else dev."""
    roles = [r for r in ("test", "dev", "ood") if fam.ablations.get(r, {}).get("layer-windows")]
    return roles[0] if roles else None


# -- the figures beside each verdict ---------------------------------------------------------------------------------

def _cell(text: str, role: str | None = None, sets: Any = None, n: Any = None) -> dict[str, Any]:
    """A table cell: a figure with its role, sets and number of queries (none for "not run")."""
    cell: dict[str, Any] = {"text": text}
    if role:
        cell.update(role=role, sets="+".join(sets) if isinstance(sets, list) else sets, n_queries=n)
    return cell


def _of_finding(f: dict[str, Any], text: str) -> dict[str, Any]:
    """A figure of the view that decided finding `f`."""
    return _cell(text, f.get("role"), f.get("sets"), f.get("n_queries"))


def _sweep(fam: Family, sweep: str) -> tuple[str, dict[str, dict[str, Any]]] | None:
    """(role, configurations) of one ablation sweep: the test sets' when it ran on them, else dev's; None: not run."""
    for role in ("test", "dev", "ood"):
        rows = fam.ablations.get(role, {}).get(sweep)
        if rows:
            return role, rows
    return None


def _of_sweep(role: str, rows: dict[str, dict[str, Any]], text: str) -> dict[str, Any]:
    first = next(iter(rows.values()))
    return _cell(text, role, first["sets"], first["n_queries"])


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _kept(rows: dict[str, dict[str, Any]], config: str) -> str:
    """'0.583 (94% of the gain)': a configuration's nDCG@10 and the share of the gain over LoRA off it keeps."""
    r, full, none = rows[config], rows.get("full"), rows.get("none")
    share = _share(r["ndcg"], full["ndcg"], none["ndcg"]) if full and none else None
    return f"{r['ndcg']:.3f} ({_pct(share)} of the gain)"


def _curve(fam: Family, f: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    ev = f["evidence"]
    if "ndcg_first" not in ev:
        return [("checkpoint curve of the reference run", _cell(NOT_RUN))]
    return [("checkpoint curve of the reference run", _of_finding(
        f, f"{ev['ndcg_first']:.3f} at step {ev['first_step']} -> {ev['ndcg_last']:.3f} at step {ev['last_step']}; "
           f"Spearman rho {ev.get('spearman_rho')} over the {ev.get('trend_source')}"))]


def _ranks(fam: Family, f: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    ev, out = f["evidence"], []
    means = ev.get("means")
    out.append(("final nDCG@10 by trained rank", _of_finding(f, ", ".join(f"{k} {v:.3f}" for k, v in means.items())
                                                             + f" (alpha {ev.get('tested_alpha_policy')})")
                if means else _cell(NOT_RUN)))
    sw = _sweep(fam, "rank-truncation")
    if sw is None:
        return out + [("rank truncation of the dissected adapter", _cell(NOT_RUN))]
    role, rows = sw
    ranks = sorted((c for c in rows if c.startswith("rank ")), key=lambda c: int(c.split()[1]))
    return out + [("rank truncation of the dissected adapter", _of_sweep(
        role, rows, ", ".join(f"{c} {_kept(rows, c)}" for c in ranks) + f"; full {rows['full']['ndcg']:.3f}"))]


def _components(fam: Family, f: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    ev = f["evidence"]
    trained = (_of_finding(f, f"all {ev['all']:.3f}, MHA {ev['mha']:.3f}, MLP {ev['mlp']:.3f}, {ev['baseline']} "
                              f"{ev[ev['baseline']]:.3f}")
               if str(ev.get("source", "")).startswith("trained") else _cell(NOT_RUN))
    sw = _sweep(fam, "components")
    if sw is None or not {"mha-only", "mlp-only"} <= set(sw[1]):
        return [("MHA-only / MLP-only trained separately", trained), ("MHA-only / MLP-only of the dissected "
                                                                      "adapter", _cell(NOT_RUN))]
    role, rows = sw
    return [("MHA-only / MLP-only trained separately", trained),
            ("MHA-only / MLP-only of the dissected adapter", _of_sweep(
                role, rows, f"MHA-only {_kept(rows, 'mha-only')}, MLP-only {_kept(rows, 'mlp-only')}; full "
                            f"{rows['full']['ndcg']:.3f}, LoRA off {rows['none']['ndcg']:.3f}"))]


def _window_text(w: dict[str, Any]) -> str:
    return (f"{w['config'].removeprefix('only ')}: {w['ndcg']:.3f} ({_pct(w['share'])} of the gain), depth "
            f"{w['centre']:.2f} (spans {w['start']:.2f}-{w['end']:.2f})")


def _layers(fam: Family) -> list[tuple[str, dict[str, Any]]]:
    role = profile_role(fam)
    wins = window_profile(fam, role) if role else []
    if not wins:
        out = [("best layer window (depth: centre / layers)", _cell(NOT_RUN)), (PAPER_ROW, _cell(NOT_RUN))]
    else:
        best = max(wins, key=lambda w: w["ndcg"])
        paper = next((w for w in wins if w["config"] == window_config(fam.target_window)), None)
        declared = "" if fam.target_window == PAPER_WINDOW else "declared here: "
        out = [("best layer window (depth: centre / layers)", _cell(_window_text(best), role, best["sets"],
                                                                    best["n_queries"])),
               (PAPER_ROW, _cell(declared + _window_text(paper), role, paper["sets"], paper["n_queries"])
                if paper else _cell(NOT_RUN))]
    sw = _sweep(fam, "layers-leave-one-out")
    if sw is None:
        return out + [("leave-one-layer-out: largest drop", _cell(NOT_RUN))]
    role, rows = sw
    full = rows["full"]["ndcg"]
    worst = min((c for c in rows if c.startswith("without L")), key=lambda c: rows[c]["ndcg"])
    i = int(worst.removeprefix("without L"))
    return out + [("leave-one-layer-out: largest drop", _of_sweep(
        role, rows, f"{worst} {rows[worst]['ndcg'] - full:+.4f} (depth {depth(i, i, fam.n_layers)['centre']:.2f})"))]


def _projections(fam: Family) -> list[tuple[str, dict[str, Any]]]:
    sw = _sweep(fam, "projections")
    out = []
    for how in ("only", "without"):
        label = f"{how} up/gate vs {how} down: nDCG@10 - full"
        names = [f"{how} {p}" for p in (*UP_GATE, DOWN)]
        if sw is None or not all(n in sw[1] for n in names):
            out.append((label, _cell(NOT_RUN)))
            continue
        role, rows = sw
        full = rows["full"]["ndcg"]
        out.append((label, _of_sweep(role, rows, ", ".join(f"{n} {rows[n]['ndcg'] - full:+.3f}" for n in names))))
    return out


def _recovered(fam: Family, f: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for src in ("trained", "inference-time"):
        e = f["evidence"].get(src)
        ci = (e or {}).get("fraction_ci95") or [None, None]
        out.append((f"MLP-only's share of the gain ({src})", _of_finding(
            f, f"{_pct(e['recovered_fraction'])} of the gain over {e['baseline']} (95% CI {_pct(ci[0])} to "
               f"{_pct(ci[1])}; line {_pct(f['evidence'].get('line'))})") if e else _cell(NOT_RUN)))
    return out


def finding_rows(fam: Family, number: int) -> list[tuple[str, dict[str, Any]]]:
    """The rows of one family's column for finding `number`: its verdict, what dev gives, the figures."""
    f = next((x for x in fam.findings if x.get("finding") == number), None)
    if f is None:
        return [("verdict (test)", _cell(NOT_RUN)), ("on dev", _cell(NOT_RUN))]
    dev = f.get("verdict_dev") or (f.get("dev") or {}).get("verdict") or "-"
    rows = [("verdict (test)", _cell(f"**{f['verdict']}** ({_sets(f, 'test') or 'no test set'})")),
            ("on dev", _cell(f"{dev} ({_sets(f, 'dev')})"))]
    figures = {1: lambda: _curve(fam, f), 2: lambda: _ranks(fam, f), 3: lambda: _components(fam, f),
               4: lambda: _layers(fam) + _projections(fam), 5: lambda: _recovered(fam, f)}
    return rows + figures.get(number, lambda: [])()


# -- the side-by-side table, its Markdown, the figure, the files -------------------------------------------------------

def families_table(fams: list[Family]) -> dict[str, Any]:
    """Per finding, one row per figure and one column per family (``cells``: family label -> cell); with the
    families, and whether their studies declare the same verdict rules."""
    labels = [f.label for f in fams]
    if len(set(labels)) < len(labels):
        raise ConfigError("two studies of the same model and name: " + ", ".join(str(f.study_dir) for f in fams))
    findings = []
    for number, claim in CLAIMS.items():
        rows: dict[str, dict[str, Any]] = {}
        for fam in fams:
            for label, cell in finding_rows(fam, number):
                rows.setdefault(label, {})[fam.label] = cell
        findings.append({"finding": number, "claim": claim, "rows": [
            {"figure": label, "cells": {lab: cells.get(lab, _cell(NOT_RUN)) for lab in labels}}
            for label, cells in rows.items()]})
    rules = {f.label: (f.findings[0].get("verdict_rules") if f.findings else None) for f in fams}
    # finding 4's window is declared per family (the same depth on models of different depths): not a rule that
    # differs
    shared = [{k: v for k, v in r.items() if k != "target_window"} if r else r for r in rules.values()]
    return {"families": [{"label": f.label, "study_dir": f.shown, "study": f.name, "model": f.model,
                          "n_layers": f.n_layers, "n_layers_from": f.n_layers_from, "dissected": f.subject,
                          "target_window": {"layers": list(f.target_window), **depth(*f.target_window, f.n_layers)}}
                         for f in fams],
            "same_rules": len({json.dumps(r, sort_keys=True) for r in shared}) <= 1, "rules": rules,
            "findings": findings}


def _text(cell: dict[str, Any]) -> str:
    t = cell["text"]
    if cell.get("role"):
        t += f" [{cell['role']}: {cell['sets']}, n={cell['n_queries']}]"
    return t.replace("|", "\\|").replace("\n", " ")


def column_names(fams: list[dict[str, Any]]) -> list[str]:
    """Each column's heading: the model, or the model and its study where one model has several studies (e.g. a
    single-seed study beside its seeded re-run)."""
    models = [f["model"] for f in fams]
    return [m if models.count(m) == 1 else f"{m} ({f['study']})" for m, f in zip(models, fams)]


def families_markdown(table: dict[str, Any]) -> str:
    """The side-by-side tables as Markdown: the families, then one table per finding."""
    fams = table["families"]
    lines = ["| family | study | layers (from) | dissected |", "|---|---|---|---|"]
    lines += [f"| {f['model']} | {f['study']} (`{f['study_dir']}`) | {f['n_layers']} ({f['n_layers_from']}) | "
              f"{f['dissected']} |" for f in fams]
    if not table["same_rules"]:
        lines += ["", "**The studies declare different verdict rules** (each verdict is under its own study's; "
                      "`families.json` lists them): the verdicts do not compare one to one."]
    windows = [tuple(f["target_window"]["layers"]) for f in fams]
    if any(w != PAPER_WINDOW for w in windows):
        lines += ["", f"Finding 4's window, declared per family (`verdicts.target_window`; "
                      f"{paper_window_text(PAPER_WINDOW)} of 32): " + "; ".join(
                          f"{name} {window_label(w)} of {f['n_layers']} layers (depth {f['target_window']['start']:.2f}"
                          f"-{f['target_window']['end']:.2f})" for name, w, f in zip(column_names(fams), windows, fams))
                  + "."]
    for f in table["findings"]:
        lines += ["", f"**Finding {f['finding']}**: {f['claim']}", "",
                  "| | " + " | ".join(column_names(fams)) + " |", "|---" * (len(fams) + 1) + "|"]
        lines += [f"| {r['figure']} | " + " | ".join(_text(r["cells"][x["label"]]) for x in fams) + " |"
                  for r in f["rows"]]
    return "\n".join(lines) + "\n"


def plot_profiles(fams: list[Family], path: str | Path) -> Path:
    """Each family's "only window" configurations against the window's normalised depth (centre / layers, the bar its
    extent), as the share of the full adapter's gain over LoRA off that the window keeps; one axis."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.6))
    names = column_names([{"model": Path(f.model).name, "study": f.name} for f in fams])
    for i, (fam, name) in enumerate(zip(fams, names)):
        role = profile_role(fam)
        wins = [w for w in (window_profile(fam, role) if role else []) if w["share"] is not None]
        if not wins:
            ax.plot([], [], " ", label=f"{name} ({fam.n_layers} layers): layer windows {NOT_RUN}")
            continue
        x, y = [w["centre"] for w in wins], [100 * w["share"] for w in wins]
        err = [[w["centre"] - w["start"] for w in wins], [w["end"] - w["centre"] for w in wins]]
        ax.errorbar(x, y, xerr=err, fmt="o-", color=f"C{i}", capsize=3, lw=1.2, elinewidth=2, alpha=0.7,
                    label=f"{name} ({fam.n_layers} layers; {role}: {'+'.join(wins[0]['sets'])}, "
                          f"n={wins[0]['n_queries']})")
        for w, xx, yy in zip(wins, x, y):
            ax.annotate(w["config"].removeprefix("only "), (xx, yy), xytext=(0, 6 if i % 2 == 0 else -6),
                        textcoords="offset points", ha="center", va="bottom" if i % 2 == 0 else "top", fontsize=7,
                        color=f"C{i}")  # one family's names above its points, the next one's below
    ax.axhline(100, color="grey", ls="--", lw=0.8)
    ax.text(0.005, 100, " full adapter", va="bottom", fontsize=7, color="grey")
    ax.axhline(0, color="grey", ls=":", lw=0.8)
    ax.text(0.005, 0, " LoRA off", va="bottom", fontsize=7, color="grey")
    ax.set_xlim(0, 1)
    ax.set_xlabel("depth in the model: window centre / number of layers (bar: the window's layers; 0 = input)")
    ax.set_ylabel("% of the full adapter's nDCG@10 gain kept")
    ax.set_title("LoRA kept on one layer window only, by normalised depth", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)


def write_families(study_dirs: list[str | Path], out: str | Path, markdown: str | Path | None = None
                   ) -> dict[str, Any]:
    """The Python twin of ``lorank families``: reads each finished study (one model family each) and writes
    ``OUT/families.json`` (the side-by-side table, the families and each one's layer-window profile),
    ``OUT/families.md`` (and `markdown`, when given) and ``OUT/layer_window_profiles.png``; returns the JSON's
    content."""
    if not study_dirs:
        raise ConfigError("no study folder given: name one finished study per model family")
    fams = [read_family(d) for d in study_dirs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = families_table(fams)
    table["profiles"] = {f.label: window_profile(f, profile_role(f)) if profile_role(f) else NOT_RUN for f in fams}
    table["figure"] = str(plot_profiles(fams, out / FIGURE))
    atomic_write_json(out / JSON_FILE, table)
    md = families_markdown(table)
    atomic_write_text(out / MD_FILE, md)
    if markdown is not None:
        atomic_write_text(Path(markdown), md)
    return table
